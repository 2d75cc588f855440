//! Every event of the corpus against its schema; envelope and metadata against theirs; and a few
//! payloads the schemas must refuse, so they are known to be precise.

use crate::corpus::{all_event_types, at, corpus, Sample};
use crate::{errors, load_schema, schema_root, validator};
use appreg_domain::application::ApplicationEvent;
use appreg_domain::catalogue::CatalogueEvent;
use appreg_domain::environment::{EnvironmentEvent, UserEvent};
use appreg_domain::provider::ProviderEvent;
use appreg_domain::webhook::WebhookEvent;
use appreg_domain::{DomainEvent, SettingsEvent};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

fn schema_path(event_type: &str, schema_version: i32) -> String {
    format!("events/{event_type}/v{schema_version}.json")
}

/// Decodes a sample with the decoder of its stream type and encodes it again.
fn round_trip(s: &Sample) -> Value {
    fn again<E: DomainEvent>(s: &Sample) -> Value {
        let e = E::decode(s.event_type, s.schema_version, s.data.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", s.case));
        assert_eq!(e.event_type(), s.event_type, "{}", s.case);
        e.data()
    }
    match s.stream_type {
        "application" => again::<ApplicationEvent>(s),
        "settings" => again::<SettingsEvent>(s),
        "environment" => again::<EnvironmentEvent>(s),
        "user" => again::<UserEvent>(s),
        "providers" => again::<ProviderEvent>(s),
        "catalogue" => again::<CatalogueEvent>(s),
        "webhooks" => again::<WebhookEvent>(s),
        other => panic!("unknown stream type {other}"),
    }
}

#[test]
fn every_event_of_the_corpus_validates_against_its_schema() {
    let mut validators = BTreeMap::new();
    let mut failures = Vec::new();
    let samples = corpus();
    for s in &samples {
        let path = schema_path(s.event_type, s.schema_version);
        let v = validators
            .entry(path.clone())
            .or_insert_with(|| validator(&path));
        let problems = errors(v, &s.data);
        if !problems.is_empty() {
            failures.push(format!("{} ({path}): {}\n{problems}", s.case, s.data));
        }
        assert_eq!(
            round_trip(s),
            s.data,
            "{}: decode/encode changed the payload",
            s.case
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(samples.len() > 40, "the corpus shrank to {}", samples.len());
}

#[test]
fn the_corpus_covers_every_event_type_and_every_type_has_a_schema() {
    let known: BTreeSet<&str> = all_event_types().into_iter().collect();
    let covered: BTreeSet<&str> = corpus().iter().map(|s| s.event_type).collect();
    assert_eq!(covered, known, "event types without a sample in the corpus");

    let dirs: BTreeSet<String> = std::fs::read_dir(schema_root().join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let known: BTreeSet<String> = known.into_iter().map(String::from).collect();
    assert_eq!(
        dirs, known,
        "proto-schemas/events/ must have one directory per event type, and no other"
    );
}

#[test]
fn every_schema_file_is_a_valid_draft_2020_12_schema() {
    for path in crate::lock::schema_files() {
        let schema = load_schema(&path);
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{path}"
        );
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{path} is not a valid schema: {e}");
        }
        validator(&path);
    }
}

/// The metadata the api writes (services/api/src/commands.rs `metadata`).
fn api_metadata(actor: &str, actor_name: Option<&str>, admin: bool, correlation: &str) -> Value {
    json!({
        "environment": "DEFAULT",
        "actor": actor,
        "actor_name": actor_name,
        "actor_admin": admin,
        "correlation_id": correlation,
        "causation_id": correlation,
        "at": at(0),
    })
}

/// The body the relay publishes (shared/worker/src/envelope.rs `Envelope::new`).
fn envelope(s: &Sample, version: i64, metadata: Value) -> Value {
    json!({
        "event_id": "0190f0c8-6d1a-7c7e-8a51-0a2c7e6b1d2f",
        "stream_id": s.stream_id,
        "stream_type": s.stream_type,
        "version": version,
        "type": s.event_type,
        "schema_version": s.schema_version,
        "at": at(version),
        "metadata": metadata,
        "data": s.data,
    })
}

#[test]
fn envelopes_and_metadata_validate() {
    let envelope_schema = validator("envelope/v1.json");
    let metadata_schema = validator("metadata/v1.json");
    let metadatas = [
        api_metadata(
            "alice",
            Some("Alice"),
            false,
            "0190f0c8-6d1a-7c7e-8a51-0a2c7e6b1d2f",
        ),
        api_metadata("ünïcødé user", None, true, "caller-chosen-id_42"),
        {
            let mut m = api_metadata("bob", None, false, "x");
            m["traceparent"] = json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
            m["something_new"] = json!({"producers": "may add fields"});
            m
        },
    ];
    for (i, s) in corpus().iter().enumerate() {
        let metadata = metadatas[i % metadatas.len()].clone();
        let problems = errors(&metadata_schema, &metadata);
        assert!(problems.is_empty(), "metadata {metadata}:\n{problems}");
        let body = envelope(s, i as i64 + 1, metadata);
        let problems = errors(&envelope_schema, &body);
        assert!(
            problems.is_empty(),
            "{}: envelope {body}:\n{problems}",
            s.case
        );
    }
}

/// Mutations of valid payloads that the schemas must refuse.
#[test]
fn the_schemas_refuse_what_the_domain_never_emits() {
    let samples = corpus();
    let first = |event_type: &str, case_part: &str| -> Value {
        samples
            .iter()
            .find(|s| s.event_type == event_type && s.case.contains(case_part))
            .unwrap_or_else(|| panic!("no {event_type} sample like {case_part:?}"))
            .data
            .clone()
    };
    let with = |mut v: Value, pointer: &str, value: Value| -> Value {
        *v.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("{pointer}")) = value;
        v
    };
    let insert = |mut v: Value, key: &str, value: Value| -> Value {
        v.as_object_mut().unwrap().insert(key.to_string(), value);
        v
    };
    let without = |mut v: Value, key: &str| -> Value {
        v.as_object_mut().unwrap().remove(key).unwrap();
        v
    };
    // Adds `key` to the object at `pointer`.
    let insert_in = |mut v: Value, pointer: &str, key: &str, value: Value| -> Value {
        v.pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("{pointer}"))
            .insert(key.to_string(), value);
        v
    };
    let web = first("ApplicationCreated", "full web");
    let simple = first("ApplicationCreated", "minimal simple");
    let b2b = first("ApplicationCreated", "minimal backend_to_backend");
    let registered = first("DcrClientRegistered", "secret that expires");
    let reg_failed = first("DcrRegistrationFailed", "no provider");
    let orphan = first("OrphanClientDetected", "orphan");
    let unknown = first("DcrAttemptOutcomeUnknown", "outcome unknown");
    let cleared = first("DcrAttemptSuspicionsCleared", "idempotent replay");
    let update_requested = first("DcrClientUpdateRequested", "redirect URIs");
    let update_failed = first("DcrClientUpdateFailed", "multi-byte");
    let renewed = first("ClientSecretRenewed", "with an expiry");
    let renewal_failed = first("ClientSecretRenewalFailed", "refused");
    let deleted = first("DcrClientDeleted", "archive");
    let provider_created = first("ProviderCreated", "every optional field");
    let cc_created = first("ProviderCreated", "first, minimal");
    let provider_updated = first("ProviderUpdated", "every field");
    let provider_deleted = first("ProviderDeleted", "non-default");
    let sub_created = first("SubscriptionCreated", "API_KEY AUTO");
    let sub_accepted = first("SubscriptionAccepted", "API_KEY AUTO");
    let sub_rejected = first("SubscriptionRejected", "multi-byte reason");
    let sub_rejected_by_archive = first("SubscriptionRejected", "archive step");
    let sub_closed = first("SubscriptionClosed", "close API_KEY MANUAL");
    let sub_reopened = first("SubscriptionReopened", "reopened");
    let key_issued = first("ApiKeyIssued", "API_KEY AUTO");
    let key_renewed = first("ApiKeyRenewed", "renew the key");
    let key_revoked = first("ApiKeyRevoked", "revoke the renewed key");
    let notifications = first("NotificationSettingsUpdated", "every hook");
    let notifications_removed = first("NotificationSettingsUpdated", "none (removed)");
    let notifications_deleted = first("NotificationSettingsDeleted", "archive step");
    let api_created = first("ApiCreated", "multi-byte");
    let plan_created = first("PlanCreated", "plan ApiKey Auto");
    let plan_closed = first("PlanClosed", "plan closed");
    let webhook_created = first("WebhookCreated", "application, full");
    let webhook_disabled = first("WebhookDisabled", "410");
    let bad: Vec<(&str, &str, Value)> = vec![
        (
            "ApplicationCreated",
            "unknown field",
            insert(web.clone(), "extra", json!(1)),
        ),
        (
            "ApplicationCreated",
            "missing name",
            without(web.clone(), "name"),
        ),
        (
            "ApplicationCreated",
            "empty name",
            with(web.clone(), "/name", json!("")),
        ),
        (
            "ApplicationCreated",
            "untrimmed name",
            with(web.clone(), "/name", json!(" a")),
        ),
        (
            "ApplicationCreated",
            "201 characters",
            with(web.clone(), "/name", json!("a".repeat(201))),
        ),
        (
            "ApplicationCreated",
            "unknown type",
            with(web.clone(), "/type", json!("spa")),
        ),
        (
            "ApplicationCreated",
            "OAuth app with a client_id",
            with(web.clone(), "/client_id", json!("mine")),
        ),
        (
            "ApplicationCreated",
            "OAuth app without oauth",
            with(web.clone(), "/oauth", json!(null)),
        ),
        (
            "ApplicationCreated",
            "simple app with oauth",
            with(simple.clone(), "/oauth", web["oauth"].clone()),
        ),
        (
            "ApplicationCreated",
            "simple app with a provider",
            with(simple.clone(), "/provider_id", json!("p")),
        ),
        (
            "ApplicationCreated",
            "unknown grant",
            with(web.clone(), "/oauth/grant_types/0", json!("device_code")),
        ),
        (
            "ApplicationCreated",
            "grant not allowed for web",
            with(
                web.clone(),
                "/oauth/grant_types/0",
                json!("client_credentials"),
            ),
        ),
        (
            "ApplicationCreated",
            "web without authorization_code",
            with(web.clone(), "/oauth/grant_types", json!(["implicit"])),
        ),
        (
            "ApplicationCreated",
            "b2b with a redirect URI",
            with(
                b2b.clone(),
                "/oauth/redirect_uris",
                json!(["https://a.example/cb"]),
            ),
        ),
        (
            "ApplicationCreated",
            "web without redirect URI",
            with(web.clone(), "/oauth/redirect_uris", json!([])),
        ),
        (
            "ApplicationCreated",
            "redirect URI with a fragment",
            with(
                web.clone(),
                "/oauth/redirect_uris/0",
                json!("https://a.example/cb#f"),
            ),
        ),
        (
            "ApplicationCreated",
            "relative redirect URI",
            with(web.clone(), "/oauth/redirect_uris/0", json!("/cb")),
        ),
        (
            "ApplicationCreated",
            "logo_uri not http",
            with(web.clone(), "/oauth/logo_uri", json!("ftp://a.example/x")),
        ),
        (
            "ApplicationCreated",
            "logo_uri null",
            with(web.clone(), "/oauth/logo_uri", json!(null)),
        ),
        (
            "ApplicationCreated",
            "unknown response type",
            with(web.clone(), "/oauth/response_types/0", json!("none")),
        ),
        (
            "ApplicationCreated",
            "id not a UUID",
            with(web.clone(), "/id", json!("app-1")),
        ),
        (
            "ApplicationCreated",
            "bad environment",
            with(web.clone(), "/environment", json!("a.b")),
        ),
        (
            "ApplicationCreated",
            "primary owner with a control character",
            with(web.clone(), "/primary_owner", json!("a\u{7}")),
        ),
        (
            "ApplicationUpdated",
            "nothing changed",
            with(
                first("ApplicationUpdated", "name, description"),
                "/changed",
                json!([]),
            ),
        ),
        (
            "ApplicationUpdated",
            "unknown changed field",
            with(
                first("ApplicationUpdated", "name, description"),
                "/changed/0",
                json!("type"),
            ),
        ),
        (
            "MemberAdded",
            "added as PRIMARY_OWNER",
            with(
                first("MemberAdded", "OWNER"),
                "/role",
                json!("PRIMARY_OWNER"),
            ),
        ),
        (
            "MemberAdded",
            "lower-case role",
            with(first("MemberAdded", "OWNER"), "/role", json!("owner")),
        ),
        (
            "MemberRoleChanged",
            "same role",
            with(
                first("MemberRoleChanged", "USER -> OWNER"),
                "/to",
                json!("USER"),
            ),
        ),
        (
            "PrimaryOwnershipTransferred",
            "former owner stays primary",
            with(
                first("PrimaryOwnershipTransferred", "non-member"),
                "/former_owner_role",
                json!("PRIMARY_OWNER"),
            ),
        ),
        ("ApplicationArchived", "missing field", json!({})),
        (
            "ClientRegistrationSettingsUpdated",
            "missing type flag",
            without(
                first("ClientRegistrationSettingsUpdated", "DCR on"),
                "dcr_enabled",
            ),
        ),
        (
            "ClientRegistrationSettingsUpdated",
            "string flag",
            with(
                first("ClientRegistrationSettingsUpdated", "DCR on"),
                "/allowed_types/web",
                json!("true"),
            ),
        ),
        (
            "EnvironmentCreated",
            "empty name",
            with(first("EnvironmentCreated", "prod"), "/name", json!("")),
        ),
        (
            "UserFirstSeen",
            "default application not a UUID",
            with(
                first("UserFirstSeen", "plain"),
                "/default_application",
                json!("x"),
            ),
        ),
        (
            "UserFirstSeen",
            "name over 200 characters",
            with(
                first("UserFirstSeen", "plain"),
                "/name",
                json!("n".repeat(201)),
            ),
        ),
        (
            "DcrRegistrationRequested",
            "empty provider id",
            json!({"provider_id": ""}),
        ),
        (
            "DcrClientRegistered",
            "unknown field (a secret)",
            insert(registered.clone(), "client_secret", json!("s3cret")),
        ),
        (
            "DcrClientRegistered",
            "client_id with a space",
            with(registered.clone(), "/client_id", json!("a b")),
        ),
        (
            "DcrClientRegistered",
            "client_id of 256 characters",
            with(registered.clone(), "/client_id", json!("k".repeat(256))),
        ),
        (
            "DcrClientRegistered",
            "null client_id",
            with(registered.clone(), "/client_id", json!(null)),
        ),
        (
            "DcrClientRegistered",
            "fingerprint of the whole digest",
            with(
                registered.clone(),
                "/client_secret_fingerprint",
                json!(format!("sha256:{}", "a".repeat(64))),
            ),
        ),
        (
            "DcrClientRegistered",
            "upper-case fingerprint",
            with(
                registered.clone(),
                "/client_secret_fingerprint",
                json!("sha256:BA7816BF8F01CFEA"),
            ),
        ),
        (
            "DcrClientRegistered",
            "the secret itself as fingerprint",
            with(
                registered.clone(),
                "/client_secret_fingerprint",
                json!("s3cret"),
            ),
        ),
        (
            "DcrClientRegistered",
            "expiry not a date-time",
            with(
                registered.clone(),
                "/client_secret_expires_at",
                json!("tomorrow"),
            ),
        ),
        (
            "DcrClientRegistered",
            "request version 0",
            with(registered.clone(), "/request_version", json!(0)),
        ),
        (
            "DcrClientRegistered",
            "request version as a string",
            with(registered.clone(), "/request_version", json!("2")),
        ),
        (
            "DcrClientRegistered",
            "empty provider id",
            with(registered.clone(), "/provider_id", json!("")),
        ),
        (
            "DcrClientRegistered",
            "provider id of 101 characters",
            with(registered.clone(), "/provider_id", json!("p".repeat(101))),
        ),
        (
            "DcrClientRegistered",
            "missing expiry",
            without(registered.clone(), "client_secret_expires_at"),
        ),
        (
            "DcrRegistrationFailed",
            "empty error",
            with(reg_failed.clone(), "/error", json!("")),
        ),
        (
            "DcrRegistrationFailed",
            "error of 256 characters",
            with(reg_failed.clone(), "/error", json!("e".repeat(256))),
        ),
        (
            "DcrRegistrationFailed",
            "error description of 4001 characters",
            with(
                reg_failed.clone(),
                "/error_description",
                json!("d".repeat(4001)),
            ),
        ),
        (
            "DcrRegistrationFailed",
            "null error",
            with(reg_failed.clone(), "/error", json!(null)),
        ),
        (
            "DcrRegistrationFailed",
            "empty provider id",
            with(reg_failed.clone(), "/provider_id", json!("")),
        ),
        (
            "DcrAttemptOutcomeUnknown",
            "attempt 0",
            with(unknown.clone(), "/attempt", json!(0)),
        ),
        (
            "DcrAttemptOutcomeUnknown",
            "empty idempotency key",
            with(unknown.clone(), "/idempotency_key", json!("")),
        ),
        (
            "DcrAttemptOutcomeUnknown",
            "error of 501 characters",
            with(unknown.clone(), "/error", json!("e".repeat(501))),
        ),
        (
            "DcrAttemptOutcomeUnknown",
            "a time that is no date-time",
            with(unknown.clone(), "/started_at", json!("yesterday")),
        ),
        (
            "DcrAttemptOutcomeUnknown",
            "a name with a newline",
            with(unknown.clone(), "/client_name", json!("a\nb")),
        ),
        (
            "DcrAttemptOutcomeUnknown",
            "a secret-looking extra field",
            insert(unknown.clone(), "client_secret", json!("s")),
        ),
        (
            "DcrAttemptOutcomeUnknown",
            "no ended_at",
            without(unknown.clone(), "ended_at"),
        ),
        (
            "DcrAttemptSuspicionsCleared",
            "no attempt",
            with(cleared.clone(), "/attempts", json!([])),
        ),
        (
            "DcrAttemptSuspicionsCleared",
            "an unknown proof",
            with(cleared.clone(), "/proof", json!("GUESSED")),
        ),
        (
            "DcrAttemptSuspicionsCleared",
            "empty client_id",
            with(cleared.clone(), "/client_id", json!("")),
        ),
        (
            "OrphanClientDetected",
            "null provider id",
            with(orphan.clone(), "/provider_id", json!(null)),
        ),
        (
            "OrphanClientDetected",
            "empty client_id",
            with(orphan.clone(), "/client_id", json!("")),
        ),
        (
            "OrphanClientDetected",
            "reason of 4001 characters",
            with(orphan.clone(), "/reason", json!("r".repeat(4001))),
        ),
        (
            "DcrClientUpdateRequested",
            "nothing changed",
            with(update_requested.clone(), "/changed", json!([])),
        ),
        (
            "DcrClientUpdateRequested",
            "a field the provider does not hold",
            with(update_requested.clone(), "/changed/0", json!("description")),
        ),
        (
            "DcrClientUpdateRequested",
            "the same field twice",
            with(
                update_requested.clone(),
                "/changed",
                json!(["redirect_uris", "redirect_uris"]),
            ),
        ),
        ("DcrClientUpdated", "missing request version", json!({})),
        (
            "DcrClientUpdated",
            "negative request version",
            json!({"request_version": -1}),
        ),
        (
            "DcrClientUpdateFailed",
            "unknown field",
            insert(update_failed.clone(), "provider_id", json!("p")),
        ),
        (
            "DcrClientUpdateFailed",
            "error of 256 characters",
            with(update_failed.clone(), "/error", json!("e".repeat(256))),
        ),
        (
            "ClientSecretRenewalRequested",
            "any field",
            json!({"request_version": 3}),
        ),
        (
            "ClientSecretRenewed",
            "no fingerprint",
            with(renewed.clone(), "/client_secret_fingerprint", json!(null)),
        ),
        (
            "ClientSecretRenewed",
            "short fingerprint",
            with(
                renewed.clone(),
                "/client_secret_fingerprint",
                json!("sha256:0123"),
            ),
        ),
        (
            "ClientSecretRenewed",
            "expiry without a time zone",
            with(
                renewed.clone(),
                "/client_secret_expires_at",
                json!("2026-11-27T12:00:00"),
            ),
        ),
        (
            "ClientSecretRenewalFailed",
            "missing error description",
            without(renewal_failed.clone(), "error_description"),
        ),
        (
            "ClientSecretRenewalFailed",
            "empty error",
            with(renewal_failed.clone(), "/error", json!("")),
        ),
        (
            "DcrClientDeleted",
            "null client_id",
            with(deleted.clone(), "/client_id", json!(null)),
        ),
        (
            "DcrClientDeleted",
            "client_id with a control character",
            with(deleted.clone(), "/client_id", json!("a\u{7}")),
        ),
        (
            "DcrClientDeleted",
            "missing provider id",
            without(deleted.clone(), "provider_id"),
        ),
        (
            "ProviderCreated",
            "unknown field",
            insert(provider_created.clone(), "extra", json!(1)),
        ),
        (
            "ProviderCreated",
            "a client secret in the mode",
            insert_in(
                cc_created.clone(),
                "/provider/mode",
                "client_secret",
                json!("s3cret"),
            ),
        ),
        (
            "ProviderCreated",
            "a client secret in the provider",
            insert_in(
                provider_created.clone(),
                "/provider",
                "client_secret",
                json!("s3cret"),
            ),
        ),
        (
            "ProviderCreated",
            "an initial access token in the provider",
            insert_in(
                provider_created.clone(),
                "/provider",
                "initial_access_token",
                json!("eyJhbGciOi"),
            ),
        ),
        (
            "ProviderCreated",
            "the token itself in the mode",
            insert_in(
                provider_created.clone(),
                "/provider/mode",
                "token",
                json!("eyJhbGciOi"),
            ),
        ),
        (
            "ProviderCreated",
            "the token instead of its fingerprint",
            with(
                provider_created.clone(),
                "/provider/mode",
                json!({"initial_access_token_type": "INITIAL_ACCESS_TOKEN", "token": "eyJhbGciOi"}),
            ),
        ),
        (
            "ProviderCreated",
            "upper-case fingerprint",
            with(
                provider_created.clone(),
                "/provider/mode/token_fingerprint",
                json!("sha256:FEDCBA9876543210"),
            ),
        ),
        (
            "ProviderCreated",
            "fingerprint of the whole digest",
            with(
                cc_created.clone(),
                "/provider/mode/client_secret_fingerprint",
                json!(format!("sha256:{}", "a".repeat(64))),
            ),
        ),
        (
            "ProviderCreated",
            "the secret itself as fingerprint",
            with(
                cc_created.clone(),
                "/provider/mode/client_secret_fingerprint",
                json!("s3cret"),
            ),
        ),
        (
            "ProviderCreated",
            "null fingerprint",
            with(
                cc_created.clone(),
                "/provider/mode/client_secret_fingerprint",
                json!(null),
            ),
        ),
        (
            "ProviderCreated",
            "client credentials without the fingerprint",
            with(
                cc_created.clone(),
                "/provider/mode",
                without(
                    cc_created["provider"]["mode"].clone(),
                    "client_secret_fingerprint",
                ),
            ),
        ),
        (
            "ProviderCreated",
            "initial access token mode with a client_id",
            insert_in(
                provider_created.clone(),
                "/provider/mode",
                "client_id",
                json!("appreg"),
            ),
        ),
        (
            "ProviderCreated",
            "unknown initial access token type",
            with(
                provider_created.clone(),
                "/provider/mode/initial_access_token_type",
                json!("initial_access_token"),
            ),
        ),
        (
            "ProviderCreated",
            "client_id only whitespace",
            with(cc_created.clone(), "/provider/mode/client_id", json!("  ")),
        ),
        (
            "ProviderCreated",
            "scope with a space",
            with(cc_created.clone(), "/provider/mode/scopes/0", json!("a b")),
        ),
        (
            "ProviderCreated",
            "51 scopes",
            with(
                cc_created.clone(),
                "/provider/mode/scopes",
                json!(vec!["s"; 51]),
            ),
        ),
        (
            "ProviderCreated",
            "empty name",
            with(provider_created.clone(), "/provider/name", json!("")),
        ),
        (
            "ProviderCreated",
            "name of 2 characters",
            with(provider_created.clone(), "/provider/name", json!("ab")),
        ),
        (
            "ProviderCreated",
            "name of 201 characters",
            with(
                provider_created.clone(),
                "/provider/name",
                json!("é".repeat(201)),
            ),
        ),
        (
            "ProviderCreated",
            "untrimmed name",
            with(provider_created.clone(), "/provider/name", json!("abc ")),
        ),
        (
            "ProviderCreated",
            "discovery endpoint not http",
            with(
                provider_created.clone(),
                "/provider/discovery_endpoint",
                json!("ftp://idp.example/x"),
            ),
        ),
        (
            "ProviderCreated",
            "relative discovery endpoint",
            with(
                provider_created.clone(),
                "/provider/discovery_endpoint",
                json!("/.well-known/openid-configuration"),
            ),
        ),
        (
            "ProviderCreated",
            "discovery endpoint of 2001 characters",
            with(
                provider_created.clone(),
                "/provider/discovery_endpoint",
                json!(format!("https://a.example/{}", "x".repeat(1983))),
            ),
        ),
        (
            "ProviderCreated",
            "method GET",
            with(
                provider_created.clone(),
                "/provider/renew_client_secret/method",
                json!("GET"),
            ),
        ),
        (
            "ProviderCreated",
            "lower-case method",
            with(
                provider_created.clone(),
                "/provider/renew_client_secret/method",
                json!("put"),
            ),
        ),
        (
            "ProviderCreated",
            "renewal enabled without an endpoint",
            with(
                provider_created.clone(),
                "/provider/renew_client_secret/endpoint",
                json!(null),
            ),
        ),
        (
            "ProviderCreated",
            "relative renewal endpoint",
            with(
                provider_created.clone(),
                "/provider/renew_client_secret/endpoint",
                json!("/clients/{client_id}/secret"),
            ),
        ),
        (
            "ProviderCreated",
            "renewal endpoint starting with the client_id",
            with(
                provider_created.clone(),
                "/provider/renew_client_secret/endpoint",
                json!("{client_id}/secret"),
            ),
        ),
        (
            "ProviderCreated",
            "missing default",
            with(
                provider_created.clone(),
                "/provider",
                without(provider_created["provider"].clone(), "default"),
            ),
        ),
        (
            "ProviderCreated",
            "empty id",
            with(provider_created.clone(), "/provider/id", json!("")),
        ),
        (
            "ProviderCreated",
            "id of 101 characters",
            with(
                provider_created.clone(),
                "/provider/id",
                json!("p".repeat(101)),
            ),
        ),
        (
            "ProviderCreated",
            "empty software_id",
            with(provider_created.clone(), "/provider/software_id", json!("")),
        ),
        (
            "ProviderUpdated",
            "a client secret in the mode",
            insert_in(
                provider_updated.clone(),
                "/provider/mode",
                "client_secret",
                json!("s3cret"),
            ),
        ),
        (
            "ProviderUpdated",
            "empty name",
            with(provider_updated.clone(), "/provider/name", json!("")),
        ),
        (
            "ProviderUpdated",
            "short fingerprint",
            with(
                provider_updated.clone(),
                "/provider/mode/client_secret_fingerprint",
                json!("sha256:0123"),
            ),
        ),
        (
            "ProviderUpdated",
            "the provider without its wrapper",
            provider_updated["provider"].clone(),
        ),
        ("ProviderDeleted", "empty id", json!({"id": ""})),
        ("ProviderDeleted", "missing id", json!({})),
        (
            "ProviderDeleted",
            "a secret along",
            insert(provider_deleted.clone(), "client_secret", json!("s3cret")),
        ),
        (
            "SubscriptionCreated",
            "a KEYLESS plan",
            with(sub_created.clone(), "/security", json!("KEYLESS")),
        ),
        (
            "SubscriptionCreated",
            "lower-case validation",
            with(sub_created.clone(), "/validation", json!("auto")),
        ),
        (
            "SubscriptionCreated",
            "unknown field (a status)",
            insert(sub_created.clone(), "status", json!("ACCEPTED")),
        ),
        (
            "SubscriptionCreated",
            "missing plan",
            without(sub_created.clone(), "plan_id"),
        ),
        (
            "SubscriptionCreated",
            "empty subscription id",
            with(sub_created.clone(), "/subscription_id", json!("")),
        ),
        (
            "SubscriptionCreated",
            "subscription id with a space",
            with(sub_created.clone(), "/subscription_id", json!("a b")),
        ),
        (
            "SubscriptionAccepted",
            "the key along",
            insert(sub_accepted.clone(), "key", json!("apk_0123456789")),
        ),
        (
            "SubscriptionAccepted",
            "null subscription id",
            with(sub_accepted.clone(), "/subscription_id", json!(null)),
        ),
        (
            "SubscriptionRejected",
            "empty reason",
            with(sub_rejected.clone(), "/reason", json!("")),
        ),
        (
            "SubscriptionRejected",
            "untrimmed reason",
            with(sub_rejected.clone(), "/reason", json!("no ")),
        ),
        (
            "SubscriptionRejected",
            "reason of 1001 characters",
            with(sub_rejected.clone(), "/reason", json!("r".repeat(1001))),
        ),
        (
            "SubscriptionRejected",
            "tab in the reason",
            with(sub_rejected.clone(), "/reason", json!("a\tb")),
        ),
        (
            "SubscriptionRejected",
            "archive version 0",
            with(
                sub_rejected_by_archive.clone(),
                "/archive_version",
                json!(0),
            ),
        ),
        (
            "SubscriptionRejected",
            "archive version as text",
            with(
                sub_rejected_by_archive.clone(),
                "/archive_version",
                json!("7"),
            ),
        ),
        (
            "SubscriptionRejected",
            "missing archive version",
            without(sub_rejected.clone(), "archive_version"),
        ),
        (
            "SubscriptionClosed",
            "missing archive version",
            without(sub_closed.clone(), "archive_version"),
        ),
        (
            "SubscriptionClosed",
            "a reason",
            insert(sub_closed.clone(), "reason", json!("closed")),
        ),
        ("SubscriptionPaused", "missing subscription id", json!({})),
        (
            "SubscriptionResumed",
            "subscription id with a control character",
            json!({"subscription_id": "a\u{7}"}),
        ),
        (
            "SubscriptionReopened",
            "no restore version",
            with(sub_reopened.clone(), "/restore_version", json!(null)),
        ),
        (
            "SubscriptionReopened",
            "restore version 0",
            with(sub_reopened.clone(), "/restore_version", json!(0)),
        ),
        (
            "ApiKeyIssued",
            "the key itself",
            insert(key_issued.clone(), "key", json!("apk_0123456789abcdef")),
        ),
        (
            "ApiKeyIssued",
            "upper-case hash",
            with(
                key_issued.clone(),
                "/key_hash",
                json!(key_issued["key_hash"].as_str().unwrap().to_uppercase()),
            ),
        ),
        (
            "ApiKeyIssued",
            "hash of 63 digits",
            with(key_issued.clone(), "/key_hash", json!("a".repeat(63))),
        ),
        (
            "ApiKeyIssued",
            "empty prefix",
            with(key_issued.clone(), "/prefix", json!("")),
        ),
        (
            "ApiKeyIssued",
            "prefix of 33 characters",
            with(key_issued.clone(), "/prefix", json!("p".repeat(33))),
        ),
        (
            "ApiKeyIssued",
            "missing key id",
            without(key_issued.clone(), "key_id"),
        ),
        (
            "ApiKeyRenewed",
            "expiry without a time zone",
            with(
                key_renewed.clone(),
                "/expires_at",
                json!("2026-11-27T12:00:00"),
            ),
        ),
        (
            "ApiKeyRenewed",
            "no expiry",
            with(key_renewed.clone(), "/expires_at", json!(null)),
        ),
        (
            "ApiKeyRevoked",
            "missing key id",
            without(key_revoked.clone(), "key_id"),
        ),
        (
            "ApiKeyRevoked",
            "negative archive version",
            with(key_revoked.clone(), "/archive_version", json!(-1)),
        ),
        (
            "NotificationSettingsUpdated",
            "hooks without an address",
            with(notifications.clone(), "/email", json!(null)),
        ),
        (
            "NotificationSettingsUpdated",
            "an address without hooks",
            with(
                notifications_removed.clone(),
                "/email",
                json!("judy@example.com"),
            ),
        ),
        (
            "NotificationSettingsUpdated",
            "address without a dot in the domain",
            with(notifications.clone(), "/email", json!("ivan@example")),
        ),
        (
            "NotificationSettingsUpdated",
            "untrimmed address",
            with(notifications.clone(), "/email", json!(" ivan@example.org")),
        ),
        (
            "NotificationSettingsUpdated",
            "two @",
            with(notifications.clone(), "/email", json!("ivan@a@example.org")),
        ),
        (
            "NotificationSettingsUpdated",
            "unknown hook",
            with(
                notifications.clone(),
                "/hooks/0",
                json!("SUBSCRIPTION_CREATED"),
            ),
        ),
        (
            "NotificationSettingsUpdated",
            "a hook twice",
            with(
                notifications.clone(),
                "/hooks",
                json!(["API_KEY_EXPIRING", "API_KEY_EXPIRING"]),
            ),
        ),
        (
            "NotificationSettingsUpdated",
            "missing user",
            without(notifications.clone(), "user"),
        ),
        (
            "NotificationSettingsDeleted",
            "the deleted settings along",
            insert(notifications_deleted.clone(), "user", json!("ivan")),
        ),
        (
            "NotificationSettingsDeleted",
            "missing archive version",
            json!({}),
        ),
        (
            "ApiCreated",
            "empty description",
            with(api_created.clone(), "/description", json!("")),
        ),
        (
            "ApiCreated",
            "untrimmed name",
            with(api_created.clone(), "/name", json!(" Weather")),
        ),
        (
            "ApiCreated",
            "name of 201 characters",
            with(api_created.clone(), "/name", json!("é".repeat(201))),
        ),
        (
            "ApiCreated",
            "line break in the description",
            with(api_created.clone(), "/description", json!("a\nb")),
        ),
        (
            "ApiCreated",
            "missing id",
            without(api_created.clone(), "id"),
        ),
        (
            "PlanCreated",
            "created closed",
            with(plan_created.clone(), "/plan/status", json!("CLOSED")),
        ),
        (
            "PlanCreated",
            "unknown security",
            with(plan_created.clone(), "/plan/security", json!("BASIC")),
        ),
        (
            "PlanCreated",
            "empty name",
            with(plan_created.clone(), "/plan/name", json!("")),
        ),
        (
            "PlanCreated",
            "unknown field in the plan",
            insert_in(plan_created.clone(), "/plan", "price", json!(0)),
        ),
        (
            "PlanCreated",
            "the plan without its wrapper",
            plan_created["plan"].clone(),
        ),
        (
            "PlanClosed",
            "missing plan id",
            without(plan_closed.clone(), "plan_id"),
        ),
        (
            "PlanClosed",
            "empty api id",
            with(plan_closed.clone(), "/api_id", json!("")),
        ),
        (
            "WebhookCreated",
            "a URL with user information",
            with(
                webhook_created.clone(),
                "/url",
                json!("https://u:p@hooks.example/in"),
            ),
        ),
        (
            "WebhookCreated",
            "a URL with a fragment",
            with(
                webhook_created.clone(),
                "/url",
                json!("https://hooks.example/in#x"),
            ),
        ),
        (
            "WebhookCreated",
            "a URL over 2,048 bytes",
            with(
                webhook_created.clone(),
                "/url",
                json!(format!("https://hooks.example/{}", "p".repeat(2048 - 21))),
            ),
        ),
        (
            "WebhookCreated",
            "the signing secret itself",
            insert(webhook_created.clone(), "secret", json!("whsec_AAAA")),
        ),
        (
            "WebhookCreated",
            "a secret instead of its fingerprint",
            with(
                webhook_created.clone(),
                "/secret_fingerprint",
                json!("whsec_AAAA"),
            ),
        ),
        (
            "WebhookCreated",
            "a repeated event type",
            with(
                webhook_created.clone(),
                "/event_types",
                json!(["MemberAdded", "MemberAdded"]),
            ),
        ),
        (
            "WebhookDisabled",
            "another reason",
            with(webhook_disabled.clone(), "/reason", json!("TIRED")),
        ),
    ];
    let mut accepted = Vec::new();
    for (event_type, case, data) in bad {
        if validator(&schema_path(event_type, 1)).is_valid(&data) {
            accepted.push(format!("{event_type}: {case}: {data}"));
        }
    }
    assert!(accepted.is_empty(), "accepted:\n{}", accepted.join("\n"));

    let envelope_schema = validator("envelope/v1.json");
    let good = envelope(&samples[0], 1, api_metadata("a", None, false, "c"));
    for (case, body) in [
        ("no data", without(good.clone(), "data")),
        ("version 0", with(good.clone(), "/version", json!(0))),
        (
            "at not a date-time",
            with(good.clone(), "/at", json!("yesterday")),
        ),
        (
            "event_id not a UUID",
            with(good.clone(), "/event_id", json!("1")),
        ),
    ] {
        assert!(
            !envelope_schema.is_valid(&body),
            "envelope accepted: {case}"
        );
    }
    let metadata_schema = validator("metadata/v1.json");
    for (case, metadata) in [
        (
            "no environment",
            without(api_metadata("a", None, false, "c"), "environment"),
        ),
        (
            "correlation id with a space",
            api_metadata("a", None, false, "a b"),
        ),
        (
            "at not a date-time",
            with(api_metadata("a", None, false, "c"), "/at", json!("now")),
        ),
        (
            "bad traceparent",
            insert(
                api_metadata("a", None, false, "c"),
                "traceparent",
                json!("00-xyz"),
            ),
        ),
    ] {
        assert!(
            !metadata_schema.is_valid(&metadata),
            "metadata accepted: {case}"
        );
    }
}

/// No event schema has room for a secret: every object is closed, and no property is a secret
/// (only fingerprints of secrets are).
#[test]
fn no_event_schema_has_a_secret_field() {
    const SECRETS: [&str; 5] = [
        "client_secret",
        "initial_access_token",
        "token",
        "registration_access_token",
        "secret",
    ];
    fn walk(path: &str, at: &str, v: &Value, found: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    for key in props.keys() {
                        if SECRETS.contains(&key.as_str()) {
                            found.push(format!("{path}: property {key} at {at}"));
                        }
                    }
                }
                // Every object a payload has (those with their required fields, not the
                // conditions on them) is closed.
                let is_object =
                    map.get("type") == Some(&json!("object")) && map.contains_key("required");
                if is_object && map.get("additionalProperties") != Some(&json!(false)) {
                    found.push(format!("{path}: open object at {at}"));
                }
                for (k, child) in map {
                    walk(path, &format!("{at}/{k}"), child, found);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(path, &format!("{at}/{i}"), child, found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    for path in crate::lock::schema_files() {
        if path.starts_with("events/") {
            walk(&path, "", &load_schema(&path), &mut found);
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The AsyncAPI document has one message per event type, referencing the type's newest schema.
#[test]
fn the_asyncapi_document_names_every_event_type() {
    let text = std::fs::read_to_string(schema_root().join("asyncapi.yaml")).unwrap();
    assert!(text.contains("asyncapi: 2.6.0"));
    for s in corpus() {
        for needle in [
            format!("#/components/messages/{}\"", s.event_type),
            format!("\n    {}:\n      name: {}\n", s.event_type, s.event_type),
            format!("$ref: \"{}\"", schema_path(s.event_type, s.schema_version)),
            format!("- {}\n", s.event_type),
        ] {
            assert!(text.contains(&needle), "asyncapi.yaml lacks {needle:?}");
        }
    }
}

/// The sealed versions refuse what the domain never emits since: plaintext personal data.
#[test]
fn the_sealed_versions_refuse_plaintext_personal_data() {
    let samples = corpus();
    let first = |event_type: &str, case_part: &str| -> Value {
        samples
            .iter()
            .find(|s| s.event_type == event_type && s.case.contains(case_part))
            .unwrap_or_else(|| panic!("no {event_type} sample like {case_part:?}"))
            .data
            .clone()
    };
    let with = |mut v: Value, key: &str, value: &str| -> Value {
        v[key] = json!(value);
        v
    };
    let seen = first("UserFirstSeen", "plain");
    let notify = first("NotificationSettingsUpdated", "every hook");
    let seen_v2 = validator("events/UserFirstSeen/v2.json");
    let notify_v2 = validator("events/NotificationSettingsUpdated/v2.json");
    assert!(seen_v2.is_valid(&seen) && notify_v2.is_valid(&notify));
    for data in [
        with(seen.clone(), "name", "Alice"),
        with(seen.clone(), "email", "alice@example.com"),
        with(seen, "name", "pd1."),
    ] {
        assert!(!seen_v2.is_valid(&data), "accepted {data}");
    }
    assert!(!notify_v2.is_valid(&with(notify, "email", "ivan@example.org")));
}
