//! A corpus of events, each decided by the domain itself (plus, marked as such, the few payloads
//! the Rust types allow but no decision emits today), with the stream it belongs to.

use appreg_domain::application::{
    ApplicationArchived, ApplicationEvent, DcrAttemptOutcomeUnknown, PrimaryOwnershipTransferred,
    SuspicionProof,
};
use appreg_domain::catalogue::{
    Catalogue, CatalogueEvent, PlanDefinition, PlanSecurity, PlanValidation, CATALOGUE_STREAM,
};
use appreg_domain::dcr::{IssuedClient, ProviderFailure};
use appreg_domain::environment::{
    clip_profile, create_environment, environment_stream, erase_user, first_seen, user_stream,
    EnvironmentEvent, UserEvent,
};
use appreg_domain::provider::{
    HttpMethod, InitialAccessTokenMode, ProviderDefinition, ProviderEvent, ProviderRegistry,
    RenewClientSecret,
};
use appreg_domain::subscription::{Hook, NewApiKey, NotificationSettingsDeleted};
use appreg_domain::webhook::{
    DisabledReason, RawWebhook, WebhookDefinition, WebhookEvent, WebhookRegistry, WebhookScope,
    WEBHOOK_STREAM,
};
use appreg_domain::*;
use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// One event as the event store keeps it: its stream, type, schema version and payload.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What the sample shows (for failure messages).
    pub case: String,
    pub stream_id: String,
    pub stream_type: &'static str,
    pub event_type: &'static str,
    pub schema_version: i32,
    pub data: serde_json::Value,
}

fn sample<E: DomainEvent>(
    case: &str,
    stream_id: &str,
    stream_type: &'static str,
    event: &E,
) -> Sample {
    Sample {
        case: case.to_string(),
        stream_id: stream_id.to_string(),
        stream_type,
        event_type: event.event_type(),
        schema_version: event.schema_version(),
        data: event.data(),
    }
}

pub fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn env(s: &str) -> EnvironmentId {
    EnvironmentId::parse(s).unwrap()
}

fn uri(s: &str) -> RedirectUri {
    RedirectUri::parse(s).unwrap()
}

fn url(s: &str) -> HttpUrl {
    HttpUrl::parse(s).unwrap()
}

fn text(s: &str) -> BoundedText {
    BoundedText::parse(s, 4000).unwrap()
}

fn admin(s: &str) -> Actor {
    Actor {
        user: user(s),
        admin: true,
    }
}

pub fn at(n: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_795_000_000 + n, 123_456_000).unwrap()
}

/// Every type on and DCR on: every application type can be created.
fn policy() -> Policy {
    Policy {
        settings: ClientRegistrationSettings {
            allowed_types: AllowedTypes::default(),
            dcr_enabled: true,
        },
        allow_http_redirect_uris: false,
    }
}

fn create(n: u128, app_type: ApplicationType, owner: &str) -> CreateApplication {
    CreateApplication {
        id: ApplicationId(Uuid::from_u128(
            0x0190_f0c8_6d1a_7c7e_8a51_0000_0000_0000 + n,
        )),
        environment: EnvironmentId::default_env(),
        name: ApplicationName::parse(&format!("App {n}")).unwrap(),
        description: None,
        domain: None,
        app_type,
        client_id: None,
        redirect_uris: if app_type.requires_redirect_uris() {
            vec![uri("https://app.example.com/callback")]
        } else {
            vec![]
        },
        grant_types: vec![],
        client_uri: None,
        logo_uri: None,
        provider_id: None,
        owner: user(owner),
    }
}

/// Folds and records the events of one application stream as they are decided.
struct Stream {
    state: Option<Application>,
    stream_id: String,
    version: i64,
    out: Vec<Sample>,
}

impl Stream {
    fn new(cmd: CreateApplication, case: &str) -> Self {
        let mut stream = Stream {
            state: None,
            stream_id: cmd.id.stream_id(),
            version: 0,
            out: vec![],
        };
        let events = Application::create(cmd, &policy()).expect(case);
        stream.apply(case, events);
        stream
    }

    fn apply(&mut self, case: &str, events: Vec<ApplicationEvent>) {
        assert!(!events.is_empty(), "{case}: decided no event");
        for event in events {
            self.version += 1;
            self.state =
                Application::evolve(self.state.take(), &event, at(self.version), self.version);
            self.out
                .push(sample(case, &self.stream_id, "application", &event));
        }
    }

    fn app(&self) -> &Application {
        self.state.as_ref().unwrap()
    }

    /// The stream version of the current registration request.
    fn request(&self) -> i64 {
        self.app().registration.as_ref().unwrap().request_version
    }

    /// The stream version of the current operation on the client (update, secret renewal).
    fn operation(&self) -> i64 {
        let registration = self.app().registration.as_ref().unwrap();
        registration.operation.as_ref().unwrap().request_version
    }

    fn decide(
        &mut self,
        case: &str,
        decide: impl FnOnce(&Application) -> Result<Vec<ApplicationEvent>, DomainError>,
    ) {
        let events = decide(self.app()).unwrap_or_else(|e| panic!("{case}: {e:?}"));
        self.apply(case, events);
    }

    /// Runs a process manager's steps (of an archive or a restore) until none is left.
    fn steps(&mut self, case: &str, step: impl Fn(&Application) -> Option<Vec<ApplicationEvent>>) {
        while let Some(events) = step(self.app()) {
            self.apply(case, events);
        }
    }
}

fn application_samples() -> Vec<Sample> {
    let mut out = Vec::new();
    let pol = policy();

    // Every type, minimal: no optional field, default grant types.
    for (n, t) in ApplicationType::ALL.into_iter().enumerate() {
        let s = Stream::new(
            create(n as u128, t, "alice"),
            &format!("minimal {}", t.as_str()),
        );
        out.extend(s.out);
    }

    // Every OAuth type with every allowed grant, several (and repeated) redirect URIs, both URLs,
    // a named provider and a description and domain.
    for (n, t) in ApplicationType::ALL.into_iter().enumerate() {
        if !t.is_oauth() {
            continue;
        }
        let mut cmd = create(10 + n as u128, t, "alice@example.com");
        cmd.description = Some(text("Ünïcødé description\nwith a line break"));
        cmd.domain = Some(text("example.com"));
        cmd.grant_types = t.allowed_grant_types().iter().rev().copied().collect();
        cmd.grant_types.extend(t.mandatory_grant_types());
        if t.requires_redirect_uris() {
            cmd.redirect_uris = vec![
                uri("https://app.example.com/callback?x=1"),
                uri("http://localhost:8080/cb"),
                uri("http://127.0.0.1/cb"),
                uri("http://[::1]:9000/cb"),
                uri("https://app.example.com/callback?x=1"),
            ];
        }
        if t == ApplicationType::Native {
            cmd.redirect_uris
                .push(uri("com.example.app:/oauth2redirect"));
        }
        cmd.client_uri = Some(url("https://app.example.com/"));
        cmd.logo_uri = Some(url("http://cdn.example.com/logo.png#v2"));
        cmd.provider_id = Some("keycloak-main".into());
        out.extend(Stream::new(cmd, &format!("full {}", t.as_str())).out);
    }

    // Simple with everything a simple application can have; a long multi-byte name.
    let mut cmd = create(20, ApplicationType::Simple, "ünïcødé user");
    cmd.name = ApplicationName::parse(&format!("  {}  ", "é".repeat(200))).unwrap();
    cmd.description = Some(text(""));
    cmd.domain = Some(text("a.example"));
    cmd.client_id = Some(ClientId::parse("my-client_id:1/ü").unwrap());
    let mut simple = Stream::new(cmd, "simple with client_id");

    // Updates of a simple application: name, description cleared, domain set, client_id changed
    // then cleared.
    simple.decide("update simple: name, description, domain, client_id", |a| {
        a.update(
            UpdateApplication {
                name: Some(ApplicationName::parse("Renamed").unwrap()),
                description: Patch::Clear,
                domain: Patch::Set(text("b.example")),
                client_id: Patch::Set(ClientId::parse("other").unwrap()),
                ..Default::default()
            },
            &pol,
        )
    });
    simple.decide("update simple: client_id cleared", |a| {
        a.update(
            UpdateApplication {
                client_id: Patch::Clear,
                ..Default::default()
            },
            &pol,
        )
    });
    // Members: added as OWNER and USER, role changed both ways, removed, ownership transferred.
    simple.decide("member added OWNER", |a| {
        a.add_member(user("bob"), Role::Owner)
    });
    simple.decide("member added USER", |a| {
        a.add_member(user("carol.c@example.org"), Role::User)
    });
    simple.decide("role USER -> OWNER", |a| {
        a.change_member_role(user("carol.c@example.org"), Role::Owner)
    });
    simple.decide("role OWNER -> USER", |a| {
        a.change_member_role(user("bob"), Role::User)
    });
    simple.decide("member removed (USER)", |a| a.remove_member(user("bob")));
    simple.decide("member removed (OWNER)", |a| {
        a.remove_member(user("carol.c@example.org"))
    });
    simple.decide("transfer to a non-member, former owner USER", |a| {
        a.transfer_ownership(&admin("root"), user("dave"), Role::User)
    });
    simple.decide("transfer by the owner, former owner OWNER", |a| {
        a.transfer_ownership(
            &Actor {
                user: user("dave"),
                admin: false,
            },
            user("ünïcødé user"),
            Role::Owner,
        )
    });
    simple.decide("archive", |a| a.archive());
    simple.decide("restore", |a| a.restore(&admin("root")));
    out.extend(simple.out);

    // Updates of OAuth applications: URIs, grants, client_uri cleared, logo_uri set.
    let mut web = Stream::new(create(30, ApplicationType::Web, "erin"), "web for updates");
    web.decide("update web: redirect_uris, grant_types, logo_uri", |a| {
        a.update(
            UpdateApplication {
                redirect_uris: Some(vec![
                    uri("https://a.example/cb"),
                    uri("https://b.example/cb"),
                ]),
                grant_types: Some(vec![
                    GrantType::AuthorizationCode,
                    GrantType::RefreshToken,
                    GrantType::Implicit,
                ]),
                logo_uri: Patch::Set(url("https://a.example/logo.svg")),
                client_uri: Patch::Set(url("https://a.example")),
                ..Default::default()
            },
            &pol,
        )
    });
    web.decide("update web: client_uri cleared, name and domain", |a| {
        a.update(
            UpdateApplication {
                name: Some(ApplicationName::parse("Web 2").unwrap()),
                domain: Patch::Set(text("web.example")),
                client_uri: Patch::Clear,
                ..Default::default()
            },
            &pol,
        )
    });
    web.decide("archive web", |a| a.archive());
    web.decide("restore web", |a| a.restore(&admin("root")));
    out.extend(web.out);

    let mut b2b = Stream::new(
        create(31, ApplicationType::BackendToBackend, "frank"),
        "b2b for updates",
    );
    b2b.decide("update backend_to_backend: description", |a| {
        a.update(
            UpdateApplication {
                description: Patch::Set(text("machine to machine")),
                ..Default::default()
            },
            &pol,
        )
    });
    out.extend(b2b.out);

    // What the types allow but no decision emits today: an archive or a transfer of an
    // application without a primary owner.
    let stream = "application-0190f0c8-6d1a-7c7e-8a51-0a2c7e6b1d2f";
    out.push(sample(
        "type-level: archive without a primary owner",
        stream,
        "application",
        &ApplicationEvent::ApplicationArchived(ApplicationArchived {
            former_primary_owner: None,
        }),
    ));
    out.push(sample(
        "type-level: transfer without a former owner",
        stream,
        "application",
        &ApplicationEvent::PrimaryOwnershipTransferred(PrimaryOwnershipTransferred {
            from: None,
            to: user("x"),
            former_owner_role: Role::User,
        }),
    ));
    out
}

fn issued(
    provider: &str,
    client_id: &str,
    fingerprint: Option<&str>,
    expires: Option<i64>,
) -> IssuedClient {
    IssuedClient {
        provider_id: provider.to_string(),
        client_id: ClientId::parse(client_id).unwrap(),
        client_secret_fingerprint: fingerprint.map(String::from),
        client_secret_expires_at: expires.map(at),
    }
}

fn failure(error: &str, description: Option<&str>) -> ProviderFailure {
    ProviderFailure {
        error: error.to_string(),
        error_description: description.map(String::from),
    }
}

/// An attempt of the request at `v` (provider "p") whose answer was lost.
fn unknown(v: i64, attempt: u32, error: &str) -> DcrAttemptOutcomeUnknown {
    DcrAttemptOutcomeUnknown {
        request_version: v,
        provider_id: "p".into(),
        idempotency_key: "0190f0c8-6d1a-7c7e-8a51-0a2c7e6b1d2f".into(),
        attempt,
        client_name: ApplicationName::parse("heidi's app").unwrap(),
        started_at: at(100 + i64::from(attempt)),
        ended_at: at(130 + i64::from(attempt)),
        error: error.into(),
    }
}

/// The client's life at its provider, every answer decided as the DCR saga would get it decided.
fn dcr_samples() -> Vec<Sample> {
    let mut out = Vec::new();
    let pol = policy();

    // A web application with a named provider: registered (a secret that expires), its secret
    // renewed then a renewal refused, OAuth updates accepted then refused, archived with its
    // client deleted, restored (registered anew), and an orphan.
    let mut cmd = create(40, ApplicationType::Web, "grace");
    cmd.provider_id = Some("keycloak-main".into());
    let mut web = Stream::new(cmd, "dcr web");
    let v = web.request();
    web.decide("dcr: registered with a secret that expires", |a| {
        a.register_dcr_client(
            v,
            issued(
                "keycloak-main",
                "0190f0c8-6d1a-7c7e-8a51-0a2c7e6b1d2f",
                Some("sha256:ba7816bf8f01cfea"),
                Some(86_400),
            ),
        )
    });
    web.decide("dcr: secret renewal requested", |a| {
        a.request_secret_renewal()
    });
    let v = web.operation();
    web.decide("dcr: secret renewed, no expiry", |a| {
        a.complete_secret_renewal(v, "sha256:0123456789abcdef".into(), None)
    });
    web.decide("dcr: secret renewal requested again", |a| {
        a.request_secret_renewal()
    });
    let v = web.operation();
    web.decide("dcr: secret renewal refused, no description", |a| {
        a.fail_secret_renewal(v, failure("invalid_client_metadata", None))
    });
    web.decide("dcr: secret renewal requested a third time", |a| {
        a.request_secret_renewal()
    });
    let v = web.operation();
    web.decide("dcr: secret renewed with an expiry", |a| {
        a.complete_secret_renewal(v, "sha256:fedcba9876543210".into(), Some(at(999_999)))
    });
    web.decide("dcr: update of redirect URIs and description", |a| {
        a.update(
            UpdateApplication {
                redirect_uris: Some(vec![uri("https://new.example/cb")]),
                description: Patch::Set(text("now registered")),
                ..Default::default()
            },
            &pol,
        )
    });
    let v = web.operation();
    web.decide("dcr: client update accepted", |a| {
        a.complete_client_update(v)
    });
    web.decide("dcr: update of every provider field", |a| {
        a.update(
            UpdateApplication {
                name: Some(ApplicationName::parse("Wéb renamed").unwrap()),
                redirect_uris: Some(vec![uri("https://other.example/cb")]),
                grant_types: Some(vec![GrantType::AuthorizationCode, GrantType::RefreshToken]),
                client_uri: Patch::Set(url("https://other.example")),
                logo_uri: Patch::Set(url("https://other.example/logo.png")),
                ..Default::default()
            },
            &pol,
        )
    });
    let v = web.operation();
    web.decide("dcr: client update refused, multi-byte description", |a| {
        a.fail_client_update(
            v,
            failure(
                "invalid_redirect_uri",
                Some("redirect_uri refusée: « https »\nligne 2"),
            ),
        )
    });
    web.decide("dcr: update of logo_uri cleared", |a| {
        a.update(
            UpdateApplication {
                logo_uri: Patch::Clear,
                ..Default::default()
            },
            &pol,
        )
    });
    let v = web.operation();
    web.decide(
        "dcr: client update refused, provider said nothing, long description",
        |a| a.fail_client_update(v, failure("", Some(&"x".repeat(5000)))),
    );
    web.decide("dcr: archive", |a| a.archive());
    web.decide("dcr: client deleted at the archive", |a| {
        a.record_client_deleted()
    });
    web.decide("dcr: restore registers anew", |a| a.restore(&admin("root")));
    let v = web.request();
    web.decide("dcr: registered again, no secret", |a| {
        a.register_dcr_client(v, issued("keycloak-main", "ünïcødé-client/2", None, None))
    });
    web.decide("dcr: orphan", |a| {
        Ok(a.record_orphan(
            "keycloak-main".into(),
            "stale client with spaces".into(),
            "the answer was for an earlier request and the provider offers no deletion".into(),
        ))
    });
    web.decide("dcr: orphan, over-long id and reason", |a| {
        Ok(a.record_orphan("p".repeat(100), "c".repeat(300), "r".repeat(5000)))
    });
    out.extend(web.out);

    // A backend-to-backend application on the default provider: refused (no provider named,
    // then a named one), retried twice, registered.
    let mut b2b = Stream::new(
        create(41, ApplicationType::BackendToBackend, "heidi"),
        "dcr b2b",
    );
    let v = b2b.request();
    b2b.decide("dcr: registration failed, no provider", |a| {
        a.fail_dcr_registration(
            v,
            None,
            failure(
                "no_provider",
                Some("the environment has no default provider"),
            ),
        )
    });
    b2b.decide("dcr: retry", |a| a.retry_registration());
    let v = b2b.request();
    b2b.decide("dcr: registration failed again, no description", |a| {
        a.fail_dcr_registration(v, Some("a".repeat(100)), failure(&"e".repeat(300), None))
    });
    b2b.decide("dcr: second retry", |a| a.retry_registration());
    let v = b2b.request();
    b2b.decide("dcr: attempt outcome unknown", |a| {
        a.record_unknown_attempt(unknown(v, 1, "registration: HTTP 500 server_error"))
    });
    b2b.decide(
        "dcr: attempt outcome unknown, no error text, long key, multi-byte name",
        |a| {
            a.record_unknown_attempt(DcrAttemptOutcomeUnknown {
                idempotency_key: "k".repeat(200),
                client_name: ApplicationName::parse("Nœud « b2b »").unwrap(),
                error: String::new(),
                ..unknown(v, 2, "")
            })
        },
    );
    b2b.decide("dcr: attempt outcome unknown, over-long error", |a| {
        a.record_unknown_attempt(unknown(v, 3, &"é".repeat(900)))
    });
    b2b.decide("dcr: registered after retries, long client_id", |a| {
        a.register_dcr_client(
            v,
            issued(
                "p",
                &"k".repeat(255),
                Some("sha256:ffffffffffffffff"),
                Some(0),
            ),
        )
    });
    b2b.decide("dcr: suspicions cleared by an idempotent replay", |a| {
        a.clear_suspicions(
            v,
            ClientId::parse(&"k".repeat(255)).unwrap(),
            SuspicionProof::IdempotentReplay,
        )
    });
    out.extend(b2b.out);

    // A native application registered as a confidential client (before native applications
    // were public clients) is moved to a public one: the update and its answer.
    let mut native = Stream::new(create(42, ApplicationType::Native, "ivan"), "dcr native");
    let v = native.request();
    native.decide("dcr: native registered with a secret", |a| {
        a.register_dcr_client(
            v,
            issued("p", "native-client", Some("sha256:0123456789abcdef"), None),
        )
    });
    native.decide("dcr: native client to become public", |a| {
        a.request_public_client()
    });
    let v = native.operation();
    native.decide("dcr: native client now public, secret removed", |a| {
        a.complete_client_update_as_public(v)
    });
    out.extend(native.out);
    out
}

fn settings_samples() -> Vec<Sample> {
    let stream = ClientRegistrationSettings::stream_id("DEFAULT");
    let mut out = Vec::new();
    let current = ClientRegistrationSettings::default();
    let dcr_on = ClientRegistrationSettings {
        dcr_enabled: true,
        ..current
    };
    let only_simple = ClientRegistrationSettings {
        allowed_types: AllowedTypes {
            simple: true,
            browser: false,
            web: false,
            native: false,
            backend_to_backend: false,
        },
        dcr_enabled: false,
    };
    let nothing = ClientRegistrationSettings {
        allowed_types: AllowedTypes {
            simple: false,
            browser: false,
            web: false,
            native: false,
            backend_to_backend: false,
        },
        dcr_enabled: true,
    };
    for (case, from, to) in [
        ("settings: DCR on", current, dcr_on),
        ("settings: simple only", dcr_on, only_simple),
        ("settings: no type", only_simple, nothing),
    ] {
        for e in from.decide_update(to).unwrap() {
            out.push(sample(case, &stream, "settings", &e));
        }
    }
    out
}

fn environment_samples() -> Vec<Sample> {
    let mut out = Vec::new();
    for (id, name) in [
        ("prod", "  Production  "),
        ("a_B-9", "ü"),
        ("x", &"n".repeat(100)),
    ] {
        let id = env(id);
        for e in create_environment(id.clone(), name, false).unwrap() {
            let EnvironmentEvent::EnvironmentCreated(_) = &e;
            out.push(sample(
                &format!("environment {id}"),
                &environment_stream(&id),
                "environment",
                &e,
            ));
        }
    }
    out
}

fn user_samples() -> Vec<Sample> {
    let mut out = Vec::new();
    let new_app = Uuid::from_u128(0x0190_f0c8_6d1a_7c7e_8a51_0a2c_7e6b_1d2f);
    /// case, user, name, email, admin, default application enabled
    type Case = (
        &'static str,
        &'static str,
        Option<String>,
        Option<String>,
        bool,
        bool,
    );
    let cases: [Case; 5] = [
        (
            "user: plain, default application",
            "alice",
            Some("Alice".into()),
            Some("alice@example.com".into()),
            false,
            true,
        ),
        (
            "user: admin gets no default application",
            "root",
            None,
            None,
            true,
            true,
        ),
        (
            "user: feature off",
            "bob",
            Some(String::new()),
            None,
            false,
            false,
        ),
        (
            "user: long profile clipped",
            "carol",
            Some("é".repeat(300)),
            Some(format!("{}@x.example", "c".repeat(300))),
            false,
            true,
        ),
        (
            "user: awkward id",
            "user with spaces.and*dots>",
            None,
            Some("not an email".into()),
            false,
            true,
        ),
    ];
    let environment = EnvironmentId::default_env();
    for (case, id, name, email, is_admin, enabled) in cases {
        // The edge clips the profile, then seals it.
        let seal = |v: Option<String>| v.map(|v| sealed(&clip_profile(&v)));
        let e = first_seen(
            user(id),
            seal(name),
            seal(email),
            is_admin,
            enabled,
            new_app,
        );
        out.push(sample(
            case,
            &user_stream(&environment, &user(id)),
            "user",
            &e,
        ));
    }
    for (case, id, erased) in [
        ("user: erased", "alice", false),
        ("user: erased again", "alice", true),
    ] {
        for e in erase_user(user(id), erased) {
            out.push(sample(
                case,
                &user_stream(&environment, &user(id)),
                "user",
                &e,
            ));
        }
    }
    out
}

/// A stand-in for a value the vault sealed (`pd1.<base64url>`): deterministic, like the vault's
/// sealing; the domain only carries it.
pub fn sealed(value: &str) -> Personal {
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    Personal::sealed(format!("pd1.s{hex}")).expect("a sealed form")
}

/// Folds and records the events of one environment's provider registry as they are decided.
struct Providers {
    state: ProviderRegistry,
    stream_id: String,
    out: Vec<Sample>,
}

impl Providers {
    fn new(environment: &str) -> Self {
        Providers {
            state: ProviderRegistry::default(),
            stream_id: ProviderRegistry::stream_id(environment),
            out: vec![],
        }
    }

    fn decide(
        &mut self,
        case: &str,
        decide: impl FnOnce(&ProviderRegistry) -> Result<Vec<ProviderEvent>, DomainError>,
    ) {
        let events = decide(&self.state).unwrap_or_else(|e| panic!("{case}: {e:?}"));
        assert!(!events.is_empty(), "{case}: decided no event");
        for event in events {
            self.state.evolve(&event);
            self.out
                .push(sample(case, &self.stream_id, "providers", &event));
        }
    }
}

/// A CLIENT_CREDENTIALS provider, no optional field, renewal off.
fn minimal_provider(name: &str) -> ProviderDefinition {
    ProviderDefinition {
        name: name.to_string(),
        description: None,
        discovery_endpoint: url("https://idp.example.com/.well-known/openid-configuration"),
        mode: InitialAccessTokenMode::ClientCredentials {
            client_id: "appreg".into(),
            scopes: vec!["dcr".into()],
            client_secret_fingerprint: "sha256:0123456789abcdef".into(),
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

/// The client registration providers of two environments, as an administrator manages them:
/// two providers created (the first becomes the default), the second made the default, one
/// updated, providers deleted (the last one of an environment, the default, too).
fn provider_samples() -> Vec<Sample> {
    let mut out = Vec::new();
    let mut reg = Providers::new("DEFAULT");
    reg.decide("providers: first, minimal, becomes the default", |r| {
        r.create(
            "keycloak-main".into(),
            minimal_provider("  Keycloak main  "),
        )
    });
    reg.decide(
        "providers: second, initial access token, every optional field",
        |r| {
            r.create(
                "0190f0c8-6d1a-7c7e-8a51-0a2c7e6b1d2f".into(),
                ProviderDefinition {
                    name: "Ünïcødé IdP\twith a tab".into(),
                    description: Some("Fournisseur « principal »\nligne 2".into()),
                    discovery_endpoint: url(
                        "HTTP://127.0.0.1:8080/realms/ü/.well-known/openid-configuration?x=1#f",
                    ),
                    mode: InitialAccessTokenMode::InitialAccessToken {
                        token_fingerprint: "sha256:fedcba9876543210".into(),
                    },
                    software_id: Some("appreg ü".into()),
                    renew_client_secret: RenewClientSecret {
                        enabled: true,
                        endpoint: Some(
                            "{registration_endpoint}/renew-secret?id={client_id}".into(),
                        ),
                        method: HttpMethod::Put,
                    },
                    delete_client_on_archive: true,
                    default: false,
                    allow_cross_origin_endpoints: true,
                },
            )
        },
    );
    reg.decide(
        "providers: third, no scopes, renewal off with an endpoint, longest name",
        |r| {
            let mut def = minimal_provider(&"é".repeat(200));
            def.mode = InitialAccessTokenMode::ClientCredentials {
                client_id: " a client id with spaces ".into(),
                scopes: vec![],
                client_secret_fingerprint: "sha256:ffffffffffffffff".into(),
            };
            def.renew_client_secret = RenewClientSecret {
                enabled: false,
                endpoint: Some("https://idp.example.com/clients/{client_id}/secret".into()),
                method: HttpMethod::Patch,
            };
            def.description = Some(String::new());
            r.create("p".repeat(100), def)
        },
    );
    reg.decide("providers: the second made the default", |r| {
        let mut def = definition(r, "0190f0c8-6d1a-7c7e-8a51-0a2c7e6b1d2f");
        def.default = true;
        r.update("0190f0c8-6d1a-7c7e-8a51-0a2c7e6b1d2f", def)
    });
    let mut def = definition(&reg.state, "keycloak-main");
    def.name = "KEYCLOAK main (renamed)".into();
    def.description = Some("now with a description".into());
    def.mode = InitialAccessTokenMode::ClientCredentials {
        client_id: "appreg-2".into(),
        scopes: (0..50).map(|i| format!("scope:{i}")).collect(),
        client_secret_fingerprint: "sha256:ba7816bf8f01cfea".into(),
    };
    def.software_id = Some("s".repeat(255));
    def.renew_client_secret = RenewClientSecret {
        enabled: true,
        endpoint: Some("http://idp.example.com/{client_id}".into()),
        method: HttpMethod::Post,
    };
    reg.decide("providers: the first updated, every field", |r| {
        r.update("keycloak-main", def)
    });
    reg.decide("providers: a non-default one deleted", |r| {
        r.delete(&"p".repeat(100), false)
    });
    out.extend(reg.out);

    let mut single = Providers::new("a_B-9");
    single.decide("providers: created as the default", |r| {
        let mut def = minimal_provider("One");
        def.default = true;
        r.create("only".into(), def)
    });
    single.decide("providers: the only one (the default) deleted", |r| {
        r.delete("only", false)
    });
    out.extend(single.out);
    out
}

/// The current definition of provider `id` in `r` (to update it).
fn definition(r: &ProviderRegistry, id: &str) -> ProviderDefinition {
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

/// Folds and records the events of one environment's catalogue as they are decided.
struct CatalogueStream {
    state: Catalogue,
    stream_id: String,
    out: Vec<Sample>,
}

impl CatalogueStream {
    fn decide(
        &mut self,
        case: &str,
        decide: impl FnOnce(&Catalogue) -> Result<Vec<CatalogueEvent>, DomainError>,
    ) {
        let events = decide(&self.state).unwrap_or_else(|e| panic!("{case}: {e:?}"));
        assert!(!events.is_empty(), "{case}: decided no event");
        for event in events {
            self.state.evolve(&event);
            self.out
                .push(sample(case, &self.stream_id, CATALOGUE_STREAM, &event));
        }
    }
}

/// Id `n` as appreg generates them (a UUIDv7).
fn id(n: u128) -> String {
    Uuid::from_u128(0x0190_f0c8_6d1a_7c7e_8a51_0000_0000_0000 + n).to_string()
}

/// The catalogue of the DEFAULT environment: APIs with and without description, a plan of
/// every security and validation, one closed. Returned with its events, to subscribe to.
fn catalogue() -> (Catalogue, Vec<Sample>) {
    let mut c = CatalogueStream {
        state: Catalogue::default(),
        stream_id: Catalogue::stream_id("DEFAULT"),
        out: vec![],
    };
    c.decide("catalogue: API, no description", |c| {
        c.create_api(id(0xa1), "Weather", None)
    });
    c.decide(
        "catalogue: API, multi-byte, longest name, description",
        |c| {
            c.create_api(
                id(0xa2),
                &format!("  {}  ", "é".repeat(200)),
                Some("  Prévisions « météo »  "),
            )
        },
    );
    c.decide("catalogue: API, longest description", |c| {
        c.create_api("api-3".into(), "Maps", Some(&"d".repeat(4000)))
    });
    let securities = [
        PlanSecurity::Keyless,
        PlanSecurity::ApiKey,
        PlanSecurity::Jwt,
        PlanSecurity::Oauth2,
    ];
    for (n, security) in securities.into_iter().enumerate() {
        for (m, validation) in [PlanValidation::Auto, PlanValidation::Manual]
            .into_iter()
            .enumerate()
        {
            let plan = id(0xb0 + 2 * n as u128 + m as u128);
            c.decide(
                &format!("catalogue: plan {security:?} {validation:?}"),
                |c| {
                    c.create_plan(
                        &id(0xa1),
                        plan,
                        PlanDefinition {
                            name: format!(" {security:?} {validation:?} "),
                            security,
                            validation,
                        },
                    )
                },
            );
        }
    }
    c.decide("catalogue: plan with the longest name", |c| {
        c.create_plan(
            &id(0xa2),
            "plan-ü".into(),
            PlanDefinition {
                name: "ü".repeat(200),
                security: PlanSecurity::ApiKey,
                validation: PlanValidation::Auto,
            },
        )
    });
    c.decide("catalogue: plan closed", |c| {
        c.close_plan(&id(0xa2), "plan-ü")
    });
    (c.state, c.out)
}

/// The plan of the catalogue with this security and validation.
fn plan_of(
    c: &Catalogue,
    security: PlanSecurity,
    validation: PlanValidation,
) -> appreg_domain::catalogue::Plan {
    c.apis
        .iter()
        .flat_map(|a| &a.plans)
        .find(|p| p.security == security && p.validation == validation)
        .unwrap()
        .clone()
}

/// Key `n` as the api generates it: the value stays in the vault; its id, prefix and SHA-256.
fn api_key(n: u128) -> NewApiKey {
    let value = format!("apk_{}", Uuid::from_u128(0x5eed_0000 + n).simple());
    NewApiKey {
        id: id(0xc0 + n),
        prefix: value[..8].to_string(),
        hash: Sha256::digest(value.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    }
}

/// An application's subscriptions, keys and notification settings through every decision:
/// subscribed to every kind of plan, accepted, rejected (with and without a reason), paused,
/// resumed, closed, keys renewed and revoked, settings set and removed, archived (the process
/// manager closes, rejects, revokes and deletes), restored (it reopens), accepted again.
fn subscription_samples(c: &Catalogue) -> Vec<Sample> {
    use PlanSecurity::*;
    use PlanValidation::*;
    let mut out = Vec::new();
    let mut cmd = create(50, ApplicationType::Simple, "ivan");
    cmd.client_id = Some(ClientId::parse("subscriber-ü").unwrap());
    let mut app = Stream::new(cmd, "subscriptions: app");
    let sub = |n: u128| id(0xd0 + n);
    app.decide("subscribe API_KEY AUTO: accepted, key issued", |a| {
        a.subscribe(sub(1), &plan_of(c, ApiKey, Auto), &api_key(1))
    });
    app.decide("subscribe API_KEY MANUAL: pending", |a| {
        a.subscribe(sub(2), &plan_of(c, ApiKey, Manual), &api_key(0))
    });
    app.decide("accept API_KEY MANUAL: key issued", |a| {
        a.accept_subscription(&sub(2), &api_key(2))
    });
    app.decide("subscribe JWT MANUAL: pending", |a| {
        a.subscribe(sub(3), &plan_of(c, Jwt, Manual), &api_key(0))
    });
    app.decide("reject JWT MANUAL with a multi-byte reason", |a| {
        a.reject_subscription(&sub(3), Some(" Pas pour la « prod »\nsorry "))
    });
    app.decide("subscribe JWT MANUAL again: pending", |a| {
        a.subscribe(sub(4), &plan_of(c, Jwt, Manual), &api_key(0))
    });
    app.decide("accept JWT MANUAL: no key", |a| {
        a.accept_subscription(&sub(4), &api_key(0))
    });
    app.decide("subscribe JWT AUTO: accepted", |a| {
        a.subscribe(sub(5), &plan_of(c, Jwt, Auto), &api_key(0))
    });
    app.decide("subscribe OAUTH2 AUTO: accepted", |a| {
        a.subscribe(sub(6), &plan_of(c, Oauth2, Auto), &api_key(0))
    });
    app.decide("subscribe OAUTH2 MANUAL: pending", |a| {
        a.subscribe(sub(7), &plan_of(c, Oauth2, Manual), &api_key(0))
    });
    app.decide("reject OAUTH2 MANUAL without a reason", |a| {
        a.reject_subscription(&sub(7), None)
    });
    app.decide("subscribe OAUTH2 MANUAL again: pending", |a| {
        a.subscribe(sub(8), &plan_of(c, Oauth2, Manual), &api_key(0))
    });
    app.decide("reject with the longest reason", |a| {
        a.reject_subscription(&sub(8), Some(&"r".repeat(1000)))
    });
    app.decide("pause API_KEY AUTO", |a| a.pause_subscription(&sub(1)));
    app.decide("resume API_KEY AUTO", |a| a.resume_subscription(&sub(1)));
    app.decide("renew the key: the old one in its grace period", |a| {
        a.renew_api_key(&sub(1), &api_key(3), at(100), chrono::Duration::days(7))
    });
    app.decide("revoke the renewed key", |a| {
        a.revoke_api_key(&sub(1), &api_key(1).id)
    });
    app.decide("close API_KEY MANUAL: its key revoked", |a| {
        a.close_subscription(&sub(2))
    });
    app.decide("close JWT AUTO: no key", |a| a.close_subscription(&sub(5)));
    app.decide("notifications: every hook", |a| {
        a.update_notifications(
            user("ivan"),
            Hook::ALL.into_iter().collect(),
            Some(sealed("ivan.ü@exämple.org")),
        )
    });
    app.decide("notifications: one hook, another member", |a| {
        a.update_notifications(
            user("judy"),
            [Hook::ApiKeyExpiring].into_iter().collect(),
            Some(sealed("judy@example.com")),
        )
    });
    app.decide("notifications: none (removed)", |a| {
        a.update_notifications(user("judy"), Default::default(), None)
    });
    // Open at the archive: API_KEY AUTO accepted (its new key), JWT MANUAL paused, OAUTH2 AUTO
    // accepted, OAUTH2 MANUAL pending.
    app.decide("pause JWT MANUAL", |a| a.pause_subscription(&sub(4)));
    app.decide("subscribe OAUTH2 MANUAL a third time: pending", |a| {
        a.subscribe(sub(9), &plan_of(c, Oauth2, Manual), &api_key(0))
    });
    app.decide("subscriptions: archive", |a| a.archive());
    let archive = app.version;
    app.steps(
        "archive step: closed, rejected, keys revoked, settings deleted",
        |a| a.next_archive_step(archive),
    );
    app.decide("subscriptions: restore", |a| a.restore(&admin("root")));
    let restore = app.version;
    app.steps("restore step: reopened", |a| a.next_restore_step(restore));
    app.decide("accepted again after the restore: a new key", |a| {
        a.accept_subscription(&sub(1), &api_key(4))
    });
    out.extend(app.out);

    // What the types allow but no decision emits today: settings deleted by no archive.
    out.push(sample(
        "type-level: notification settings deleted without an archive",
        &id(0x50),
        "application",
        &ApplicationEvent::NotificationSettingsDeleted(NotificationSettingsDeleted {
            archive_version: None,
        }),
    ));
    out
}

/// The webhook endpoints of the DEFAULT environment: environment-wide and an application's,
/// minimal and full (the longest URL, a description, a filter), updated, disabled by a 410,
/// enabled again, deleted.
fn webhook_samples() -> Vec<Sample> {
    let stream_id = WebhookRegistry::stream_id("DEFAULT");
    let mut state = WebhookRegistry::default();
    let mut out = vec![];
    let mut decide =
        |case: &str,
         decide: &dyn Fn(&WebhookRegistry) -> Result<Vec<WebhookEvent>, DomainError>| {
            let events = decide(&state).unwrap_or_else(|e| panic!("{case}: {e:?}"));
            assert!(!events.is_empty(), "{case}: decided no event");
            for event in events {
                state.evolve(&event);
                out.push(sample(case, &stream_id, WEBHOOK_STREAM, &event));
            }
        };
    let definition =
        |url: &str, types: &[&str], description: Option<&str>, scope: &WebhookScope| {
            let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
            WebhookDefinition::parse(
                RawWebhook {
                    url: Some(url),
                    event_types: &types,
                    enabled: true,
                    description,
                },
                scope,
                true,
            )
            .unwrap()
        };
    let env = WebhookScope::Environment;
    let app = WebhookScope::Application(id(0xd0));
    let longest = format!("https://hooks.example/{}", "p".repeat(2048 - 22));
    let (w1, w2) = (id(0xe1), id(0xe2));
    decide("webhook: environment, minimal", &|r| {
        r.create(
            w1.clone(),
            &env,
            definition("https://hooks.example/in", &[], None, &env),
            "sha256:0123456789abcdef".into(),
        )
    });
    decide("webhook: application, full", &|r| {
        r.create(
            w2.clone(),
            &app,
            definition(
                &longest,
                &["MemberAdded", "ApplicationUpdated"],
                Some(" Équipe « ops » "),
                &app,
            ),
            "sha256:fedcba9876543210".into(),
        )
    });
    decide("webhook: updated to loopback http, every event", &|r| {
        r.update(
            &w1,
            &env,
            definition(
                "http://127.0.0.1:8081/hook?x=1",
                &["PlanCreated", "WebhookCreated"],
                Some("local"),
                &env,
            ),
        )
    });
    decide("webhook: disabled by a 410", &|r| {
        r.disable(&w2, DisabledReason::Gone)
    });
    decide("webhook: deleted", &|r| r.delete(&w1, &env));
    out
}

/// The whole corpus.
pub fn corpus() -> Vec<Sample> {
    let mut out = application_samples();
    out.extend(dcr_samples());
    out.extend(settings_samples());
    out.extend(environment_samples());
    out.extend(user_samples());
    out.extend(provider_samples());
    let (catalogue, samples) = catalogue();
    out.extend(samples);
    out.extend(subscription_samples(&catalogue));
    out.extend(webhook_samples());
    out
}

/// Every event type of the domain. The exhaustive matches fail to compile when a variant is
/// added, so a new event cannot go without a schema and a place in the corpus.
pub fn all_event_types() -> Vec<&'static str> {
    fn application(e: &ApplicationEvent) -> &'static str {
        match e {
            ApplicationEvent::ApplicationCreated(_)
            | ApplicationEvent::DcrRegistrationRequested(_)
            | ApplicationEvent::ApplicationUpdated(_)
            | ApplicationEvent::ApplicationArchived(_)
            | ApplicationEvent::ApplicationRestored(_)
            | ApplicationEvent::MemberAdded(_)
            | ApplicationEvent::MemberRoleChanged(_)
            | ApplicationEvent::MemberRemoved(_)
            | ApplicationEvent::PrimaryOwnershipTransferred(_)
            | ApplicationEvent::DcrClientRegistered(_)
            | ApplicationEvent::DcrRegistrationFailed(_)
            | ApplicationEvent::OrphanClientDetected(_)
            | ApplicationEvent::DcrAttemptOutcomeUnknown(_)
            | ApplicationEvent::DcrAttemptSuspicionsCleared(_)
            | ApplicationEvent::DcrClientUpdateRequested(_)
            | ApplicationEvent::DcrClientUpdated(_)
            | ApplicationEvent::DcrClientUpdateFailed(_)
            | ApplicationEvent::ClientSecretRenewalRequested(_)
            | ApplicationEvent::ClientSecretRenewed(_)
            | ApplicationEvent::ClientSecretRenewalFailed(_)
            | ApplicationEvent::DcrClientDeleted(_)
            | ApplicationEvent::SubscriptionCreated(_)
            | ApplicationEvent::SubscriptionAccepted(_)
            | ApplicationEvent::SubscriptionRejected(_)
            | ApplicationEvent::SubscriptionPaused(_)
            | ApplicationEvent::SubscriptionResumed(_)
            | ApplicationEvent::SubscriptionClosed(_)
            | ApplicationEvent::SubscriptionReopened(_)
            | ApplicationEvent::ApiKeyIssued(_)
            | ApplicationEvent::ApiKeyRenewed(_)
            | ApplicationEvent::ApiKeyRevoked(_)
            | ApplicationEvent::NotificationSettingsUpdated(_)
            | ApplicationEvent::NotificationSettingsDeleted(_) => e.event_type(),
        }
    }
    fn settings(e: &SettingsEvent) -> &'static str {
        match e {
            SettingsEvent::ClientRegistrationSettingsUpdated(_) => e.event_type(),
        }
    }
    fn environment(e: &EnvironmentEvent) -> &'static str {
        match e {
            EnvironmentEvent::EnvironmentCreated(_) => e.event_type(),
        }
    }
    fn user_event(e: &UserEvent) -> &'static str {
        match e {
            UserEvent::UserFirstSeen(_) | UserEvent::UserErased(_) => e.event_type(),
        }
    }
    fn provider(e: &ProviderEvent) -> &'static str {
        match e {
            ProviderEvent::ProviderCreated(_)
            | ProviderEvent::ProviderUpdated(_)
            | ProviderEvent::ProviderDeleted(_) => e.event_type(),
        }
    }
    fn catalogue(e: &CatalogueEvent) -> &'static str {
        match e {
            CatalogueEvent::ApiCreated(_)
            | CatalogueEvent::PlanCreated(_)
            | CatalogueEvent::PlanClosed(_) => e.event_type(),
        }
    }
    fn webhook(e: &WebhookEvent) -> &'static str {
        match e {
            WebhookEvent::WebhookCreated(_)
            | WebhookEvent::WebhookUpdated(_)
            | WebhookEvent::WebhookDeleted(_)
            | WebhookEvent::WebhookDisabled(_) => e.event_type(),
        }
    }
    let _ = (
        application,
        settings,
        environment,
        user_event,
        provider,
        catalogue,
        webhook,
    );
    vec![
        "ApplicationCreated",
        "DcrRegistrationRequested",
        "ApplicationUpdated",
        "ApplicationArchived",
        "ApplicationRestored",
        "MemberAdded",
        "MemberRoleChanged",
        "MemberRemoved",
        "PrimaryOwnershipTransferred",
        "DcrClientRegistered",
        "DcrRegistrationFailed",
        "OrphanClientDetected",
        "DcrAttemptOutcomeUnknown",
        "DcrAttemptSuspicionsCleared",
        "DcrClientUpdateRequested",
        "DcrClientUpdated",
        "DcrClientUpdateFailed",
        "ClientSecretRenewalRequested",
        "ClientSecretRenewed",
        "ClientSecretRenewalFailed",
        "DcrClientDeleted",
        "ClientRegistrationSettingsUpdated",
        "EnvironmentCreated",
        "UserFirstSeen",
        "UserErased",
        "ProviderCreated",
        "ProviderUpdated",
        "ProviderDeleted",
        "SubscriptionCreated",
        "SubscriptionAccepted",
        "SubscriptionRejected",
        "SubscriptionPaused",
        "SubscriptionResumed",
        "SubscriptionClosed",
        "SubscriptionReopened",
        "ApiKeyIssued",
        "ApiKeyRenewed",
        "ApiKeyRevoked",
        "NotificationSettingsUpdated",
        "NotificationSettingsDeleted",
        "ApiCreated",
        "PlanCreated",
        "PlanClosed",
        "WebhookCreated",
        "WebhookUpdated",
        "WebhookDeleted",
        "WebhookDisabled",
    ]
}
