//! Client registration providers (`provider.rs`): one registry per environment, exactly one
//! default once there is a provider, names unique ignoring case, at most `MAX_PROVIDERS`, and
//! deletions that never leave applications or the other providers without a default.
//!
//! The registry has its own small given/when/then harness: `given` folds provider events with
//! `ProviderRegistry::evolve`, `when` decides against the folded registry, `then*` check the
//! decision and fold its events on top.

use appreg_domain::provider::{
    HttpMethod, InitialAccessTokenMode, Provider, ProviderCreated, ProviderDefinition,
    ProviderDeleted, ProviderEvent, ProviderRegistry, ProviderUpdated, RenewClientSecret,
    MAX_PROVIDERS,
};
use appreg_domain::{DomainError, FieldErrors, HttpUrl};

// --- Harness -------------------------------------------------------------------------------

struct Given {
    registry: ProviderRegistry,
}

fn given(events: impl IntoIterator<Item = ProviderEvent>) -> Given {
    let mut registry = ProviderRegistry::default();
    for e in events {
        registry.evolve(&e);
    }
    Given { registry }
}

impl Given {
    fn when(
        self,
        decide: impl FnOnce(&ProviderRegistry) -> Result<Vec<ProviderEvent>, DomainError>,
    ) -> When {
        let result = decide(&self.registry);
        When {
            before: self.registry,
            result,
        }
    }
}

struct When {
    before: ProviderRegistry,
    result: Result<Vec<ProviderEvent>, DomainError>,
}

impl When {
    #[track_caller]
    fn then_ok(self) -> Then {
        let events = match self.result {
            Ok(events) => events,
            Err(e) => panic!("expected events, got error {}: {e:?}", e.code()),
        };
        let mut after = self.before;
        for e in &events {
            after.evolve(e);
        }
        Then { after, events }
    }

    #[track_caller]
    fn then(self, expected: impl IntoIterator<Item = ProviderEvent>) -> Then {
        let expected: Vec<_> = expected.into_iter().collect();
        let then = self.then_ok();
        assert_eq!(then.events, expected, "decided events");
        then
    }

    #[track_caller]
    fn then_nothing(self) -> Then {
        self.then([])
    }

    #[track_caller]
    fn then_error(self, code: &str) -> DomainError {
        match self.result {
            Ok(events) => panic!("expected error {code}, got events {events:#?}"),
            Err(e) => {
                assert_eq!(e.code(), code, "error code of {e:?}");
                e
            }
        }
    }

    #[track_caller]
    fn then_field_errors(self, expected: &[(&str, &str)]) -> FieldErrors {
        let DomainError::Invalid(errors) = self.then_error("validation.failed") else {
            unreachable!()
        };
        let mut got: Vec<(String, String)> = errors
            .0
            .iter()
            .map(|f| (f.field.clone(), f.code.to_string()))
            .collect();
        let mut want: Vec<(String, String)> = expected
            .iter()
            .map(|(f, c)| (f.to_string(), c.to_string()))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "field errors {errors:#?}");
        for f in &errors.0 {
            assert!(!f.message.is_empty(), "{f:?} has no message");
        }
        errors
    }
}

struct Then {
    after: ProviderRegistry,
    events: Vec<ProviderEvent>,
}

impl Then {
    /// The ids of the default providers after the decision (one, or none when empty).
    fn defaults(&self) -> Vec<&str> {
        defaults(&self.after)
    }
}

fn defaults(r: &ProviderRegistry) -> Vec<&str> {
    r.providers
        .values()
        .filter(|p| p.default)
        .map(|p| p.id.as_str())
        .collect()
}

// --- Fixtures ------------------------------------------------------------------------------

const FINGERPRINT: &str = "sha256:0123456789abcdef";

fn url(s: &str) -> HttpUrl {
    HttpUrl::parse(s).unwrap()
}

/// A valid CLIENT_CREDENTIALS provider named `name`, renewal off, not asked to be the default.
fn def(name: &str) -> ProviderDefinition {
    ProviderDefinition {
        name: name.to_string(),
        description: None,
        discovery_endpoint: url("https://idp.example/.well-known/openid-configuration"),
        mode: InitialAccessTokenMode::ClientCredentials {
            client_id: "appreg".into(),
            scopes: vec!["dcr".into()],
            client_secret_fingerprint: FINGERPRINT.into(),
        },
        software_id: None,
        renew_client_secret: RenewClientSecret {
            enabled: false,
            endpoint: None,
            method: HttpMethod::Post,
        },
        delete_client_on_archive: false,
        default: false,
        allow_cross_origin_endpoints: false,
    }
}

fn as_default(mut d: ProviderDefinition) -> ProviderDefinition {
    d.default = true;
    d
}

fn renewal(d: ProviderDefinition, enabled: bool, endpoint: Option<&str>) -> ProviderDefinition {
    ProviderDefinition {
        renew_client_secret: RenewClientSecret {
            enabled,
            endpoint: endpoint.map(String::from),
            method: HttpMethod::Put,
        },
        ..d
    }
}

/// The provider `def(name)` decides, with id `id`.
fn provider(id: &str, name: &str, default: bool) -> Provider {
    let d = def(name);
    Provider {
        id: id.to_string(),
        name: name.trim().to_string(),
        description: d.description,
        discovery_endpoint: d.discovery_endpoint,
        mode: d.mode,
        software_id: d.software_id,
        renew_client_secret: d.renew_client_secret,
        delete_client_on_archive: d.delete_client_on_archive,
        default,
        allow_cross_origin_endpoints: d.allow_cross_origin_endpoints,
    }
}

fn created(id: &str, name: &str, default: bool) -> ProviderEvent {
    ProviderEvent::ProviderCreated(ProviderCreated {
        provider: provider(id, name, default),
    })
}

fn updated(p: Provider) -> ProviderEvent {
    ProviderEvent::ProviderUpdated(ProviderUpdated { provider: p })
}

fn deleted(id: &str) -> ProviderEvent {
    ProviderEvent::ProviderDeleted(ProviderDeleted { id: id.to_string() })
}

/// `a` "Alpha" (the default) and `b` "Beta".
fn two() -> Vec<ProviderEvent> {
    vec![created("a", "Alpha", true), created("b", "Beta", false)]
}

/// The definition of provider `id` as the registry holds it (to submit it again, changed).
fn current(events: &[ProviderEvent], id: &str) -> ProviderDefinition {
    let r = given(events.to_vec()).registry;
    let p = &r.providers[id];
    ProviderDefinition {
        name: p.name.clone(),
        description: p.description.clone(),
        discovery_endpoint: p.discovery_endpoint.clone(),
        mode: p.mode.clone(),
        software_id: p.software_id.clone(),
        renew_client_secret: p.renew_client_secret.clone(),
        delete_client_on_archive: p.delete_client_on_archive,
        default: p.default,
        allow_cross_origin_endpoints: p.allow_cross_origin_endpoints,
    }
}

// --- The stream ----------------------------------------------------------------------------

#[test]
fn providers_live_in_one_stream_per_environment() {
    assert_eq!(ProviderRegistry::stream_id("DEFAULT"), "providers-DEFAULT");
    assert_eq!(ProviderRegistry::stream_id("acme"), "providers-acme");
}

// --- The default ---------------------------------------------------------------------------

#[test]
fn the_first_provider_becomes_the_default() {
    let then = given([])
        .when(|r| r.create("a".into(), def("  Alpha  ")))
        .then([created("a", "Alpha", true)]);
    assert_eq!(then.defaults(), ["a"]);
    assert_eq!(then.after.resolve(None).map(|p| p.id.as_str()), Some("a"));
}

#[test]
fn a_second_provider_is_not_the_default_unless_asked() {
    let then = given([created("a", "Alpha", true)])
        .when(|r| r.create("b".into(), def("Beta")))
        .then([created("b", "Beta", false)]);
    assert_eq!(then.defaults(), ["a"]);
}

#[test]
fn a_new_provider_created_as_default_unsets_the_previous_one() {
    let then = given([created("a", "Alpha", true)])
        .when(|r| r.create("b".into(), as_default(def("Beta"))))
        .then([created("b", "Beta", true)]);
    // One event: folding it makes `a` non-default.
    assert_eq!(then.defaults(), ["b"]);
    assert!(!then.after.providers["a"].default);
}

#[test]
fn making_another_provider_the_default_unsets_the_first() {
    let then = given(two())
        .when(|r| r.update("b", as_default(def("Beta"))))
        .then([updated(provider("b", "Beta", true))]);
    assert_eq!(then.defaults(), ["b"]);
    assert_eq!(then.after.providers["a"], provider("a", "Alpha", false));
    assert_eq!(then.after.resolve(None).map(|p| p.id.as_str()), Some("b"));
}

#[test]
fn evolve_keeps_exactly_one_default_whatever_the_order() {
    let mut events = two();
    events.push(created("c", "Gamma", true));
    events.push(updated(provider("a", "Alpha", true)));
    events.push(updated(provider("b", "Beta", true)));
    let r = given(events).registry;
    assert_eq!(defaults(&r), ["b"]);
    assert_eq!(r.providers.len(), 3);
}

#[test]
fn the_default_cannot_be_unset_directly() {
    given(two())
        .when(|r| r.update("a", def("Alpha")))
        .then_field_errors(&[("default", "provider.default.required")]);
    // Even alone, the default stays the default.
    given([created("a", "Alpha", true)])
        .when(|r| r.update("a", def("Alpha renamed")))
        .then_field_errors(&[("default", "provider.default.required")]);
}

#[test]
fn the_default_can_be_updated_while_staying_the_default() {
    let mut d = as_default(def("Alpha"));
    d.description = Some("main".into());
    let mut p = provider("a", "Alpha", true);
    p.description = Some("main".into());
    let then = given(two()).when(|r| r.update("a", d)).then([updated(p)]);
    assert_eq!(then.defaults(), ["a"]);
}

// --- Names ---------------------------------------------------------------------------------

#[test]
fn names_are_unique_ignoring_case_at_creation() {
    for name in ["Alpha", "ALPHA", "  alpha ", "aLpHa"] {
        given(two())
            .when(|r| r.create("c".into(), def(name)))
            .then_field_errors(&[("name", "provider.name.exists")]);
    }
    // Not only ASCII letters have a case.
    given([created("a", "Überwald IdP", true)])
        .when(|r| r.create("c".into(), def("ÜBERWALD idp")))
        .then_field_errors(&[("name", "provider.name.exists")]);
    given([created("a", "Élysée", true)])
        .when(|r| r.create("c".into(), def("élysée")))
        .then_field_errors(&[("name", "provider.name.exists")]);
    // A different name is fine.
    given(two())
        .when(|r| r.create("c".into(), def("Alpha 2")))
        .then([created("c", "Alpha 2", false)]);
}

#[test]
fn names_are_unique_ignoring_case_at_update() {
    given(two())
        .when(|r| r.update("b", def("alpha")))
        .then_field_errors(&[("name", "provider.name.exists")]);
    given([
        created("a", "Überwald IdP", true),
        created("b", "Beta", false),
    ])
    .when(|r| r.update("b", def("überwald IDP")))
    .then_field_errors(&[("name", "provider.name.exists")]);
    // A provider may change the case of its own name.
    given(two())
        .when(|r| r.update("b", def("BETA")))
        .then([updated(provider("b", "BETA", false))]);
}

#[test]
fn a_name_has_3_to_200_characters_once_trimmed() {
    for name in ["", "ab", "  ab  ", &"é".repeat(201)] {
        given([])
            .when(|r| r.create("a".into(), def(name)))
            .then_field_errors(&[("name", "name.length")]);
    }
    for name in ["abc", &"é".repeat(200)] {
        given([])
            .when(|r| r.create("a".into(), def(name)))
            .then_ok();
    }
}

// --- Update and delete of unknown providers -------------------------------------------------

#[test]
fn an_unknown_provider_cannot_be_updated_or_deleted() {
    given(two())
        .when(|r| r.update("nope", def("Gamma")))
        .then_error("provider.not_found");
    given(two())
        .when(|r| r.delete("nope", false))
        .then_error("provider.not_found");
    given([])
        .when(|r| r.update("a", def("Alpha")))
        .then_error("provider.not_found");
}

#[test]
fn an_update_that_changes_nothing_decides_no_event() {
    let events = two();
    for id in ["a", "b"] {
        let same = current(&events, id);
        given(events.clone())
            .when(|r| r.update(id, same))
            .then_nothing();
    }
    // The name is compared trimmed, as it is stored.
    given(two())
        .when(|r| r.update("b", def("  Beta ")))
        .then_nothing();
}

#[test]
fn an_update_replaces_the_whole_definition() {
    let mut d = def("Beta");
    d.mode = InitialAccessTokenMode::InitialAccessToken {
        token_fingerprint: "sha256:fedcba9876543210".into(),
    };
    d.software_id = Some("appreg".into());
    d.delete_client_on_archive = true;
    let then = given(two()).when(|r| r.update("b", d.clone())).then_ok();
    let p = &then.after.providers["b"];
    assert_eq!(p.mode, d.mode);
    assert_eq!(p.software_id.as_deref(), Some("appreg"));
    assert!(p.delete_client_on_archive && !p.default);
    assert_eq!(then.events, [updated(p.clone())]);
}

// --- Delete --------------------------------------------------------------------------------

#[test]
fn a_provider_in_use_cannot_be_deleted() {
    for id in ["a", "b"] {
        given(two())
            .when(|r| r.delete(id, true))
            .then_error("provider.in_use");
    }
    given([created("a", "Alpha", true)])
        .when(|r| r.delete("a", true))
        .then_error("provider.in_use");
}

#[test]
fn the_default_cannot_be_deleted_while_others_exist() {
    given(two())
        .when(|r| r.delete("a", false))
        .then_error("provider.is_default");
    // Once another one is the default, it can.
    let mut events = two();
    events.push(updated(provider("b", "Beta", true)));
    let then = given(events)
        .when(|r| r.delete("a", false))
        .then([deleted("a")]);
    assert_eq!(then.defaults(), ["b"]);
}

#[test]
fn a_provider_that_is_not_the_default_can_be_deleted() {
    let then = given(two())
        .when(|r| r.delete("b", false))
        .then([deleted("b")]);
    assert_eq!(then.after.providers.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(then.defaults(), ["a"]);
}

#[test]
fn the_only_provider_can_be_deleted_and_the_next_one_is_the_default() {
    let then = given([created("a", "Alpha", true)])
        .when(|r| r.delete("a", false))
        .then([deleted("a")]);
    assert!(then.after.providers.is_empty());
    assert_eq!(then.after.resolve(None), None);
    // Its name is free again, and the next provider becomes the default.
    given([created("a", "Alpha", true), deleted("a")])
        .when(|r| r.create("b".into(), def("alpha")))
        .then([created("b", "alpha", true)]);
}

// --- Limit ---------------------------------------------------------------------------------

fn many(n: usize) -> Vec<ProviderEvent> {
    (0..n)
        .map(|i| created(&format!("p{i}"), &format!("Provider {i}"), i == 0))
        .collect()
}

#[test]
fn an_environment_has_at_most_50_providers() {
    assert_eq!(MAX_PROVIDERS, 50);
    given(many(49))
        .when(|r| r.create("last".into(), def("Last")))
        .then_ok();
    given(many(50))
        .when(|r| r.create("one-more".into(), def("One more")))
        .then_error("provider.limit");
    // The limit is checked first: even a valid default-to-be is refused.
    given(many(50))
        .when(|r| r.create("one-more".into(), as_default(def("x"))))
        .then_error("provider.limit");
    // Deleting one makes room again.
    let mut events = many(50);
    events.push(deleted("p7"));
    given(events)
        .when(|r| r.create("one-more".into(), def("One more")))
        .then_ok();
    // Updates are not limited.
    given(many(50))
        .when(|r| r.update("p3", def("Renamed")))
        .then_ok();
}

// --- Secret renewal ------------------------------------------------------------------------

#[test]
fn an_enabled_renewal_needs_an_endpoint() {
    given([])
        .when(|r| r.create("a".into(), renewal(def("Alpha"), true, None)))
        .then_field_errors(&[("renew_client_secret.endpoint", "renew.endpoint.required")]);
    given(two())
        .when(|r| r.update("b", renewal(def("Beta"), true, None)))
        .then_field_errors(&[("renew_client_secret.endpoint", "renew.endpoint.required")]);
    // Disabled, it needs none.
    given([])
        .when(|r| r.create("a".into(), renewal(def("Alpha"), false, None)))
        .then_ok();
}

#[test]
fn the_renewal_endpoint_is_an_absolute_http_url_template() {
    let long = format!("https://idp.example/{}", "x".repeat(1981));
    assert_eq!(long.len(), 2001);
    for bad in [
        "",
        "/clients/{client_id}/secret",
        "{client_id}/secret",
        "idp.example/{client_id}",
        "ftp://idp.example/{client_id}",
        "https:///clients/{client_id}",
        "https://",
        "https://idp.example/a b",
        "https://idp.example/\u{7}",
        "javascript:alert(1)",
        &long,
    ] {
        for enabled in [true, false] {
            given([])
                .when(|r| r.create("a".into(), renewal(def("Alpha"), enabled, Some(bad))))
                .then_field_errors(&[("renew_client_secret.endpoint", "renew.endpoint.invalid")]);
        }
        given(two())
            .when(|r| r.update("b", renewal(def("Beta"), true, Some(bad))))
            .then_field_errors(&[("renew_client_secret.endpoint", "renew.endpoint.invalid")]);
    }
    for good in [
        "{registration_endpoint}/secret",
        "{registration_endpoint}",
        "https://idp.example/clients/{client_id}/secret",
        "http://localhost:8080/{client_id}?renew=1",
        &long[..2000],
    ] {
        let then = given([])
            .when(|r| r.create("a".into(), renewal(def("Alpha"), true, Some(good))))
            .then_ok();
        let renew = &then.after.providers["a"].renew_client_secret;
        assert_eq!(renew.endpoint.as_deref(), Some(good));
        assert_eq!((renew.enabled, renew.method), (true, HttpMethod::Put));
    }
}

// --- Resolve -------------------------------------------------------------------------------

#[test]
fn resolve_gives_the_default_or_the_named_provider() {
    let r = given(two()).registry;
    assert_eq!(r.resolve(None).map(|p| p.id.as_str()), Some("a"));
    assert_eq!(r.resolve(Some("b")).map(|p| p.id.as_str()), Some("b"));
    assert_eq!(r.resolve(Some("a")).map(|p| p.id.as_str()), Some("a"));
    assert_eq!(r.resolve(Some("nope")), None);
    assert_eq!(ProviderRegistry::default().resolve(None), None);
    // After the default moved.
    let mut events = two();
    events.push(updated(provider("b", "Beta", true)));
    let r = given(events).registry;
    assert_eq!(r.resolve(None).map(|p| p.id.as_str()), Some("b"));
}

// --- Secrets -------------------------------------------------------------------------------

#[test]
fn events_carry_fingerprints_never_secrets() {
    let mut d = def("Alpha");
    d.mode = InitialAccessTokenMode::InitialAccessToken {
        token_fingerprint: "sha256:fedcba9876543210".into(),
    };
    let then = given([created("b", "Beta", true)])
        .when(|r| r.create("a".into(), d))
        .then_ok();
    for e in then.events.iter().chain(&two()) {
        let text = serde_json::to_string(e).unwrap();
        for secret in ["\"client_secret\"", "\"initial_access_token\"", "\"token\""] {
            assert!(!text.contains(secret), "{text} has {secret}");
        }
    }
}
