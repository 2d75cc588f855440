//! Issue 16, item 1: "invisible orphans". A registration attempt whose answer is lost after the
//! provider created the client is retried; with a provider that ignores `Idempotency-Key` the
//! extra clients were seen by no one. Each such attempt is now recorded
//! (`DcrAttemptOutcomeUnknown`), listed for administrators
//! (`/client-registration-providers/{id}/suspected-orphans`), and cleared only when a replay
//! probe proves the provider honours the key (`DcrAttemptSuspicionsCleared`).

use super::*;
use appreg_test_support::oidc::Options;

/// Waits until the saga's checkpoint is past the application's last registration request: the
/// request was handled completely (the replay probe and its cleanup included).
async fn saga_passed(system: &System, id: &str) {
    let Database::Postgres(pool) = &system.db else {
        unreachable!()
    };
    let started = Instant::now();
    loop {
        let passed: bool = sqlx::query_scalar(
            "SELECT COALESCE(bool_and((c.tx, c.pos) >= (e.tx_id, e.position)), false) \
             FROM events e JOIN saga_checkpoints c ON c.name = 'dcr-saga' \
             WHERE e.stream_id = $1 AND e.event_type = 'DcrRegistrationRequested'",
        )
        .bind(format!("application-{id}"))
        .fetch_one(pool)
        .await
        .unwrap();
        if passed {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the saga did not pass the request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The event types of an application's history, oldest first, with their data.
async fn history(system: &System, token: &str, id: &str) -> Vec<(String, Value)> {
    let (status, page) = system
        .call(
            reqwest::Method::GET,
            &format!("applications/{id}/history?limit=1000"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_string(), e["data"].clone()))
        .collect()
}

/// Every event's data and metadata, as text.
async fn all_events_text(system: &System) -> String {
    let Database::Postgres(pool) = &system.db else {
        unreachable!()
    };
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT data::text || metadata::text FROM events ORDER BY position")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.concat()
}

async fn orphans(system: &System, token: &str, provider: &str, query: &str) -> (u16, Value) {
    system
        .call(
            reqwest::Method::GET,
            &format!("client-registration-providers/{provider}/suspected-orphans{query}"),
            token,
            None,
        )
        .await
}

/// Creates a backend-to-backend application while the provider creates the client and then
/// answers 500, twice; returns its id once the saga handled it completely.
async fn register_through_two_lost_answers(
    system: &System,
    oidc: &OidcProvider,
    token: &str,
) -> (String, Value) {
    oidc.faults(&[Fault::CreatedThen500, Fault::CreatedThen500])
        .await;
    let id = system
        .create(
            token,
            json!({"name": "Orphan-prone", "type": "backend_to_backend"}),
        )
        .await;
    let app = system.settled(token, &id).await;
    assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
    saga_passed(system, &id).await;
    (id, app)
}

fn assert_unknown_attempts(events: &[(String, Value)], key: &str) -> Vec<Value> {
    let unknown: Vec<Value> = events
        .iter()
        .filter(|(t, _)| t == "DcrAttemptOutcomeUnknown")
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(unknown.len(), 2, "{events:#?}");
    for (n, d) in unknown.iter().enumerate() {
        assert_eq!(d["attempt"], n as u64 + 1, "{d}");
        assert_eq!(d["idempotency_key"], key, "{d}");
        assert_eq!(d["client_name"], "Orphan-prone", "{d}");
        assert!(d["started_at"].as_str() <= d["ended_at"].as_str(), "{d}");
        assert!(d["error"].as_str().unwrap().contains("500"), "{d}");
    }
    // Recorded before the attempt that succeeded: both precede the registration.
    let position = |t: &str| events.iter().position(|(e, _)| e == t).unwrap();
    let last_unknown = events
        .iter()
        .rposition(|(e, _)| e == "DcrAttemptOutcomeUnknown")
        .unwrap();
    assert!(
        last_unknown < position("DcrClientRegistered"),
        "{events:#?}"
    );
    unknown
}

/// The id of the application's registration request (its event id: the Idempotency-Key sent).
async fn request_key(system: &System, id: &str) -> String {
    let Database::Postgres(pool) = &system.db else {
        unreachable!()
    };
    let key: uuid::Uuid = sqlx::query_scalar(
        "SELECT event_id FROM events WHERE stream_id = $1 AND event_type = 'DcrRegistrationRequested' \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(format!("application-{id}"))
    .fetch_one(pool)
    .await
    .unwrap();
    key.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_ignores_the_key_leaves_suspected_orphans_listed() {
    let oidc = OidcProvider::start_with(Mode::fixed_token(), Options { idempotency: false });
    let system = System::start().await;
    system.enable_dcr().await;
    let (provider, provider_secret) = system.add_provider(&oidc).await;
    let admin = system.token("root", true);
    let alice = system.token("alice", false);

    let (id, app) = register_through_two_lost_answers(&system, &oidc, &alice).await;
    let client_id = app["client_id"].as_str().unwrap().to_string();
    // Three clients at the provider: the application's and the two the lost answers created.
    // The replay probe's client (the provider answered it with a fourth id) was deleted.
    let clients = oidc.clients().await;
    assert_eq!(clients.len(), 3, "{clients:?}");
    assert!(clients.contains(&client_id));

    let key = request_key(&system, &id).await;
    let events = history(&system, &alice, &id).await;
    assert_unknown_attempts(&events, &key);
    assert!(
        !events
            .iter()
            .any(|(t, _)| t == "DcrAttemptSuspicionsCleared"),
        "not proven: {events:#?}"
    );
    assert!(
        !events.iter().any(|(t, _)| t == "OrphanClientDetected"),
        "the probe's client was deleted: {events:#?}"
    );

    let (status, page) = orphans(&system, &admin, &provider, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 2, "{page}");
    assert_eq!(page["provider_id"], provider.as_str());
    let items = page["items"].as_array().unwrap();
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item["application_id"], id.as_str(), "{item}");
        assert_eq!(item["attempt"], n as u64 + 1, "{item}");
        assert_eq!(item["client_name"], "Orphan-prone", "{item}");
        assert_eq!(item["idempotency_key"], key.as_str(), "{item}");
        assert_eq!(item["status"], "OPEN", "{item}");
        assert!(item["cleared_client_id"].is_null(), "{item}");
        let (started, ended) = (
            chrono::DateTime::parse_from_rfc3339(item["started_at"].as_str().unwrap()).unwrap(),
            chrono::DateTime::parse_from_rfc3339(item["ended_at"].as_str().unwrap()).unwrap(),
        );
        assert!(started <= ended, "{item}");
    }
    // Paged: one per page, the total stays.
    let (status, first) = orphans(&system, &admin, &provider, "?size=1&page=2").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["total"], 2);
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    assert_eq!(first["items"][0]["attempt"], 2);
    // No secret in the events or the list: not the provider's, not the application's.
    let (_, credentials) = system
        .call(
            reqwest::Method::GET,
            &format!("applications/{id}/credentials"),
            &alice,
            None,
        )
        .await;
    let client_secret = credentials["client_secret"].as_str().unwrap().to_string();
    let text = all_events_text(&system).await + &page.to_string();
    for secret in [&provider_secret, &client_secret] {
        assert!(!text.contains(secret.as_str()), "a secret leaked");
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_honours_the_key_clears_the_suspicions() {
    let oidc = OidcProvider::start(Mode::fixed_token());
    let system = System::start().await;
    system.enable_dcr().await;
    let (provider, _) = system.add_provider(&oidc).await;
    let admin = system.token("root", true);
    let alice = system.token("alice", false);

    let (id, app) = register_through_two_lost_answers(&system, &oidc, &alice).await;
    let client_id = app["client_id"].as_str().unwrap().to_string();
    assert_eq!(oidc.clients().await, vec![client_id.clone()]);

    let key = request_key(&system, &id).await;
    let events = history(&system, &alice, &id).await;
    assert_unknown_attempts(&events, &key);
    let cleared: Vec<&Value> = events
        .iter()
        .filter(|(t, _)| t == "DcrAttemptSuspicionsCleared")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(cleared.len(), 1, "{events:#?}");
    assert_eq!(cleared[0]["attempts"], json!([1, 2]));
    assert_eq!(cleared[0]["client_id"], client_id.as_str());
    assert_eq!(cleared[0]["proof"], "IDEMPOTENT_REPLAY");
    assert_eq!(cleared[0]["provider_id"], provider.as_str());

    // Nothing open; all of them, cleared, on request.
    let (status, page) = orphans(&system, &admin, &provider, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 0, "{page}");
    let (status, page) = orphans(&system, &admin, &provider, "?status=ALL").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 2, "{page}");
    for item in page["items"].as_array().unwrap() {
        assert_eq!(item["status"], "CLEARED", "{item}");
        assert_eq!(item["cleared_client_id"], client_id.as_str(), "{item}");
    }

    // The probe changed nothing at the provider: the recorded secret still works.
    let (status, credentials) = system
        .call(
            reqwest::Method::GET,
            &format!("applications/{id}/credentials"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 200, "{credentials}");
    let token = oidc
        .token(
            &client_id,
            credentials["client_secret"].as_str().unwrap(),
            None,
        )
        .await;
    assert!(token.is_ok(), "{token:?}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_is_for_the_environments_administrators_only() {
    let oidc = OidcProvider::start(Mode::fixed_token());
    let system = System::start().await;
    system.enable_dcr().await;
    let (provider, _) = system.add_provider(&oidc).await;
    let admin = system.token("root", true);
    let alice = system.token("alice", false);

    // Not an administrator: 403.
    let (status, body) = orphans(&system, &alice, &provider, "").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("permission.admin_only")),
        "{body}"
    );
    // An unknown provider: 404.
    let (status, body) = orphans(&system, &admin, "no-such-provider", "").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("provider.not_found")),
        "{body}"
    );
    // Bad parameters: 422 naming each.
    let (status, body) = orphans(&system, &admin, &provider, "?status=CLOSED&size=0").await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["status", "size"], "{body}");
    // Another environment's provider: 404 there.
    let response = system
        .client
        .post(format!("{}/v1/environments", system.base))
        .bearer_auth(&admin)
        .json(&json!({"id": "OTHER", "name": "Other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let response = system
        .client
        .get(format!(
            "{}/v1/environments/OTHER/client-registration-providers/{provider}/suspected-orphans",
            system.base
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("provider.not_found")),
        "{body}"
    );
    system.stop().await;
}

/// A request that ends failed keeps its suspicions open; an answer that says nothing was taken
/// (429) is no suspicion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_keeps_its_suspicions_open() {
    let oidc = OidcProvider::start(Mode::fixed_token());
    let system = System::start().await;
    system.enable_dcr().await;
    let (provider, _) = system.add_provider(&oidc).await;
    let admin = system.token("root", true);
    let alice = system.token("alice", false);

    // saga_config(): 4 attempts.
    oidc.faults(&[
        Fault::Status(429),
        Fault::Status(503),
        Fault::Status(502),
        Fault::Status(500),
    ])
    .await;
    let id = system
        .create(
            &alice,
            json!({"name": "Down", "type": "backend_to_backend"}),
        )
        .await;
    let app = system.settled(&alice, &id).await;
    assert_eq!(app["registration"]["state"], "REGISTRATION_FAILED", "{app}");
    saga_passed(&system, &id).await;
    let events = history(&system, &alice, &id).await;
    let attempts: Vec<u64> = events
        .iter()
        .filter(|(t, _)| t == "DcrAttemptOutcomeUnknown")
        .map(|(_, d)| d["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [2, 3, 4], "the 429 is not recorded: {events:#?}");
    assert!(!events
        .iter()
        .any(|(t, _)| t == "DcrAttemptSuspicionsCleared"));
    let (status, page) = orphans(&system, &admin, &provider, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 3, "{page}");
    oidc.clear_faults().await;
    system.stop().await;
}

/// The saga killed while an attempt is in flight (the provider created the client, its answer
/// held back), with a provider that ignores the key: the restarted saga records that attempt
/// as unknown before it registers again, so the extra client is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_in_flight_when_the_saga_died_is_a_suspected_orphan() {
    let oidc = OidcProvider::start_with(Mode::fixed_token(), Options { idempotency: false });
    let mut system = System::start().await;
    system.enable_dcr().await;
    let (provider, _) = system.add_provider(&oidc).await;
    let admin = system.token("root", true);
    let alice = system.token("alice", false);
    oidc.faults(&[Fault::CreatedThenDelay(Duration::from_millis(3000))])
        .await;
    let id = system
        .create(
            &alice,
            json!({"name": "Orphan-prone", "type": "backend_to_backend"}),
        )
        .await;
    let started = Instant::now();
    while oidc.clients().await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the provider never created the client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = chrono::Utc::now();
    system.kill_saga().await;
    system.start_saga().await;
    let app = system.settled(&alice, &id).await;
    assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
    saga_passed(&system, &id).await;
    // The lost attempt's client and the application's.
    let clients = oidc.clients().await;
    assert_eq!(clients.len(), 2, "{clients:?}");
    let events = history(&system, &alice, &id).await;
    let unknown: Vec<&Value> = events
        .iter()
        .filter(|(t, _)| t == "DcrAttemptOutcomeUnknown")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(unknown.len(), 1, "{events:#?}");
    assert_eq!(unknown[0]["attempt"], 1);
    assert!(
        unknown[0]["error"]
            .as_str()
            .unwrap()
            .contains("saga stopped"),
        "{}",
        unknown[0]
    );
    let started_at =
        chrono::DateTime::parse_from_rfc3339(unknown[0]["started_at"].as_str().unwrap()).unwrap();
    assert!(started_at <= killed_at, "{}", unknown[0]);
    let (status, page) = orphans(&system, &admin, &provider, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["items"][0]["attempt"], 1, "{page}");
    oidc.clear_faults().await;
    system.stop().await;
}
