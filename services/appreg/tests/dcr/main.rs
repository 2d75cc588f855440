//! Dynamic Client Registration end to end: the api and the DCR saga (in process, on a fresh
//! PostgreSQL database) against a real OpenID Connect provider (npm `oidc-provider`, started on a
//! free port), in both initial-access-token modes. Every application type reaches REGISTERED, the
//! client exists at the provider with the right grant types and redirect URIs, and its
//! credentials work there; provider faults are retried, refusals shown, lost answers leave no
//! second client; and no secret leaks into events or responses other than `/credentials`.

use appreg_auth::DevKey;
use appreg_config::Config;
use appreg_dcr_client::provider::{ProviderClient, RegistrationHandle};
use appreg_eventstore::Database;
use appreg_test_support::oidc::{Fault, Mode, OidcProvider};
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod bulkhead;
mod consumers;
mod native;
mod orphans;

struct System {
    base: String,
    client: reqwest::Client,
    db: Database,
    key: DevKey,
    vault: appreg_secrets::SecretStore,
    shutdown: CancellationToken,
    saga_stop: CancellationToken,
    saga: Option<tokio::task::JoinHandle<()>>,
    config: Config,
    db_url: String,
}

fn saga_config() -> appreg_dcr_saga::SagaConfig {
    appreg_dcr_saga::SagaConfig {
        attempts: 4,
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        concurrency: 8,
        ..Default::default()
    }
}

impl System {
    async fn start() -> System {
        let mut system = System::start_without_saga().await;
        system.start_saga().await;
        system
    }

    /// The api alone (the saga is started by the test, in process or as `appreg dcr-saga`).
    async fn start_without_saga() -> System {
        let url = appreg_test_support::postgres::fresh_postgres_url().await;
        let config = appreg_test_support::app::config("e2e");
        let db = Database::connect(&url, 16).await.unwrap();
        let (key, _) = appreg_test_support::tokens::fresh_key();
        let api = appreg_test_support::app::TestApi::start(&db, &config, &key).await;
        appreg_dcr_saga::migrate(&db).await.unwrap();
        let vault = api.state.vault().clone();
        let (base, shutdown) = (api.base, api.shutdown);
        System {
            base,
            client: reqwest::Client::new(),
            db,
            key,
            vault,
            shutdown,
            saga_stop: CancellationToken::new(),
            saga: None,
            config,
            db_url: url,
        }
    }

    /// `appreg dcr-saga` as a process on the same database and master key.
    fn saga_process(&self) -> std::process::Child {
        use secrecy::ExposeSecret;
        std::process::Command::new(env!("CARGO_BIN_EXE_appreg"))
            .arg("dcr-saga")
            .env("APPREG_DATABASE_URL", &self.db_url)
            .env(
                "APPREG_SECRETS_MASTER_KEY",
                self.config
                    .secrets_master_key
                    .as_ref()
                    .unwrap()
                    .expose_secret(),
            )
            .env("APPREG_LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap()
    }

    async fn start_saga(&mut self) {
        self.start_saga_with(saga_config()).await;
    }

    async fn start_saga_with(&mut self, config: appreg_dcr_saga::SagaConfig) {
        let window = config.concurrency;
        let keyring = appreg_api::state::keyring(&self.config).unwrap();
        let vault = appreg_secrets::SecretStore::new(self.db.clone(), Arc::new(keyring));
        let store = self.db.event_store().await.unwrap();
        let saga = Arc::new(appreg_dcr_saga::Saga::new(
            self.db.clone(),
            store.clone(),
            vault,
            ProviderClient::new().unwrap(),
            config,
        ));
        self.saga_stop = CancellationToken::new();
        self.saga = Some(tokio::spawn(appreg_dcr_saga::run(
            saga,
            self.db.clone(),
            store,
            window,
            self.saga_stop.clone(),
        )));
    }

    /// Kills the saga task at once (as a crash would: no graceful end).
    async fn kill_saga(&mut self) {
        if let Some(task) = self.saga.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn token(&self, sub: &str, admin: bool) -> String {
        appreg_test_support::tokens::token(&self.key, sub, admin, 3600)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/environments/DEFAULT/{path}", self.base)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn enable_dcr(&self) {
        let admin = self.token("root", true);
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                "settings/client-registration",
                &admin,
                Some(json!({"allowed_types": {"simple": true, "browser": true, "web": true, "native": true, "backend_to_backend": true}, "dcr_enabled": true})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Registers the OIDC provider as the environment's (default) provider.
    async fn add_provider(&self, oidc: &OidcProvider) -> (String, String) {
        let admin = self.token("root", true);
        let mut body = json!({
            "name": "Test OIDC provider",
            "discovery_endpoint": oidc.discovery_url(),
            "renew_client_secret": {"enabled": true, "endpoint": "{registration_endpoint}/{client_id}/renew_secret", "method": "POST"},
        });
        let secret = match oidc.mode() {
            Mode::InitialAccessToken(token) => {
                body["initial_access_token_type"] = json!("INITIAL_ACCESS_TOKEN");
                body["initial_access_token"] = json!(token);
                token.clone()
            }
            Mode::ClientCredentials {
                admin_client_id,
                admin_client_secret,
            } => {
                body["initial_access_token_type"] = json!("CLIENT_CREDENTIALS");
                body["client_id"] = json!(admin_client_id);
                body["client_secret"] = json!(admin_client_secret);
                body["scopes"] = json!(["dcr"]);
                admin_client_secret.clone()
            }
        };
        let (status, created) = self
            .call(
                reqwest::Method::POST,
                "client-registration-providers",
                &admin,
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        assert!(
            !created.to_string().contains(&secret),
            "a provider's secret is never returned"
        );
        assert_eq!(created["default"], true);
        (created["id"].as_str().unwrap().to_string(), secret)
    }

    async fn create(&self, token: &str, body: Value) -> String {
        let (status, created) = self
            .call(reqwest::Method::POST, "applications", token, Some(body))
            .await;
        assert_eq!(status, 202, "{created}");
        assert_eq!(created["registration"]["state"], "REGISTERING");
        created["id"].as_str().unwrap().to_string()
    }

    /// Waits until the application's registration leaves REGISTERING.
    async fn settled(&self, token: &str, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let (status, app) = self
                .call(
                    reqwest::Method::GET,
                    &format!("applications/{id}"),
                    token,
                    None,
                )
                .await;
            assert_eq!(status, 200, "{app}");
            if app["registration"]["state"] != "REGISTERING" {
                return app;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "still registering: {app}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        self.kill_saga().await;
        assert_events_match_schemas(&self.db).await;
        self.shutdown.cancel();
        self.db.close().await;
    }
}

/// Every event the scenario stored (the api's, the saga's, the providers') matches its
/// published JSON Schema, data and metadata.
async fn assert_events_match_schemas(db: &Database) {
    assert!(appreg_test_support::schemas::assert_events_match_schemas(db).await > 0);
}

fn types() -> Vec<(&'static str, Value, Vec<&'static str>)> {
    vec![
        (
            "browser",
            json!({"name": "SPA", "type": "browser", "redirect_uris": ["https://spa.example/cb"]}),
            vec!["authorization_code"],
        ),
        (
            "web",
            json!({"name": "Portal", "type": "web", "redirect_uris": ["https://web.example/cb"], "grant_types": ["authorization_code", "refresh_token"]}),
            vec!["authorization_code", "refresh_token"],
        ),
        (
            "native",
            json!({"name": "Mobile", "type": "native", "redirect_uris": ["com.example.app:/cb"]}),
            vec!["authorization_code"],
        ),
        (
            "backend_to_backend",
            json!({"name": "Batch", "type": "backend_to_backend"}),
            vec!["client_credentials"],
        ),
    ]
}

/// Everything every appreg crate logs, at debug level, for the leak check.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn capture_logs() -> CapturedLogs {
    let logs = CapturedLogs::default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(logs.clone())
        .json()
        .try_init();
    logs
}

/// Every type reaches REGISTERED; the client exists at the provider with the right metadata;
/// its credentials work there. The events also go through the relay to a private NATS, and
/// every log line is captured, for the leak check.
async fn every_type_registers(mode: Mode) {
    let logs = capture_logs();
    let oidc = OidcProvider::start(mode);
    let system = System::start().await;
    let nats = appreg_test_support::nats::NatsServer::start();
    let relay_config = appreg_relay::RelayConfig {
        stream: "DCR_EVENTS".into(),
        subject_prefix: "dcr.appreg".into(),
        ..appreg_relay::RelayConfig::default()
    };
    let pool = match &system.db {
        Database::Postgres(p) => p.clone(),
        Database::Sqlite(_) => unreachable!(),
    };
    let nats_client = async_nats::connect(nats.url()).await.unwrap();
    tokio::spawn(appreg_relay::run(
        relay_config.clone(),
        system.db.event_store().await.unwrap(),
        Some(pool),
        nats_client.clone(),
        system.shutdown.clone(),
    ));
    system.enable_dcr().await;
    let (_, provider_secret) = system.add_provider(&oidc).await;
    let alice = system.token("alice", false);
    let mut issued = Vec::new();
    for (kind, body, grants) in types() {
        let id = system.create(&alice, body.clone()).await;
        let app = system.settled(&alice, &id).await;
        assert_eq!(app["registration"]["state"], "REGISTERED", "{kind}: {app}");
        let client_id = app["client_id"].as_str().unwrap().to_string();
        assert!(
            oidc.clients().await.contains(&client_id),
            "{kind}: the client exists at the provider"
        );

        // The provider's own view of the client (RFC 7592 read with the stored token).
        let owner = format!("application/{id}");
        let handle = RegistrationHandle {
            client_id: client_id.clone(),
            registration_client_uri: Some(format!("{}/{client_id}", oidc.registration_endpoint())),
            registration_access_token: system
                .vault
                .get(&owner, "registration_access_token")
                .await
                .unwrap(),
        };
        let there = ProviderClient::new()
            .unwrap()
            .read(&oidc.settings(), &handle)
            .await
            .unwrap();
        assert_eq!(
            there.strings("grant_types"),
            grants,
            "{kind}: grant types at the provider"
        );
        let uris: Vec<String> = body["redirect_uris"]
            .as_array()
            .map(|a| a.iter().map(|u| u.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        assert_eq!(
            there.strings("redirect_uris"),
            uris,
            "{kind}: redirect URIs at the provider"
        );

        let (status, credentials) = system
            .call(
                reqwest::Method::GET,
                &format!("applications/{id}/credentials"),
                &alice,
                None,
            )
            .await;
        assert_eq!(status, 200, "{credentials}");
        assert_eq!(credentials["client_id"], client_id.as_str());
        let secret = credentials["client_secret"].as_str().map(str::to_string);
        match kind {
            "browser" | "native" => {
                // Public clients (a SPA; a native app, RFC 8252 §8.4): no secret, and the
                // provider holds them so (it then requires PKCE of them).
                assert!(secret.is_none(), "{kind}: a public client (PKCE)");
                assert_eq!(
                    there.metadata["token_endpoint_auth_method"], "none",
                    "{kind}: auth method at the provider"
                );
            }
            "backend_to_backend" => {
                let token = oidc
                    .token(&client_id, secret.as_deref().unwrap(), None)
                    .await;
                assert!(
                    token.is_ok(),
                    "the issued secret obtains a client_credentials token: {token:?}"
                );
            }
            _ => {
                // The secret authenticates (the grant is refused, not the client)…
                let refused = oidc
                    .token(&client_id, secret.as_deref().unwrap(), None)
                    .await
                    .unwrap_err();
                assert!(
                    !refused.to_string().contains("invalid_client"),
                    "{kind}: {refused}"
                );
                // …and a wrong secret does not.
                let wrong = oidc
                    .token(&client_id, "wrong-secret", None)
                    .await
                    .unwrap_err();
                assert!(
                    wrong.to_string().contains("invalid_client"),
                    "{kind}: {wrong}"
                );
            }
        }
        if let Some(s) = secret {
            issued.push(s);
        }
    }
    // A USER member cannot read the credentials (DEFINITION[U] only).
    let bob = system.token("bob", false);
    let id = system
        .create(
            &alice,
            json!({"name": "Shared", "type": "backend_to_backend"}),
        )
        .await;
    system.settled(&alice, &id).await;
    let (status, _) = system
        .call(
            reqwest::Method::POST,
            &format!("applications/{id}/members"),
            &alice,
            Some(json!({"user": "bob"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = system
        .call(
            reqwest::Method::GET,
            &format!("applications/{id}/credentials"),
            &bob,
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");

    assert_no_leak(&system, &issued, &provider_secret).await;

    // The NATS stream holds every event, and no secret.
    let js = async_nats::jetstream::new(nats_client);
    let store = system.db.event_store().await.unwrap();
    let events = appreg_test_support::nats::all_events(store.as_ref()).await;
    appreg_test_support::nats::wait_for_messages(
        &js,
        "DCR_EVENTS",
        events.len() as u64,
        Duration::from_secs(20),
    )
    .await;
    let stream = js.get_stream("DCR_EVENTS").await.unwrap();
    let mut published = String::new();
    for seq in 1..=events.len() as u64 {
        let m = stream.get_raw_message(seq).await.unwrap();
        published.push_str(&String::from_utf8_lossy(&m.payload));
        published.push_str(&format!("{:?}", m.headers));
    }
    assert!(published.contains("DcrClientRegistered"));
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(logged.contains("dcr"), "logs were captured");
    for secret in issued.iter().chain(std::iter::once(&provider_secret)) {
        assert!(
            !published.contains(secret.as_str()),
            "a secret appears in the NATS stream"
        );
        assert!(
            !logged.contains(secret.as_str()),
            "a secret appears in the logs"
        );
    }
    system.stop().await;
}

/// No secret value in the events, nor in what the api answers outside `/credentials`.
async fn assert_no_leak(system: &System, secrets: &[String], provider_secret: &str) {
    let pool = match &system.db {
        Database::Postgres(p) => p,
        Database::Sqlite(_) => unreachable!(),
    };
    let events: Vec<String> = sqlx::query_scalar("SELECT data::text || metadata::text FROM events")
        .fetch_all(pool)
        .await
        .unwrap();
    let read_models: Vec<String> = sqlx::query_scalar("SELECT doc FROM rm_applications")
        .fetch_all(pool)
        .await
        .unwrap();
    let alice = system.token("alice", false);
    let admin = system.token("root", true);
    let (_, list) = system
        .call(reqwest::Method::GET, "applications?size=100", &admin, None)
        .await;
    let mut bodies = vec![list.to_string()];
    for app in list["items"].as_array().unwrap() {
        let id = app["id"].as_str().unwrap();
        bodies.push(
            system
                .call(
                    reqwest::Method::GET,
                    &format!("applications/{id}"),
                    &alice,
                    None,
                )
                .await
                .1
                .to_string(),
        );
        bodies.push(
            system
                .call(
                    reqwest::Method::GET,
                    &format!("applications/{id}/history"),
                    &admin,
                    None,
                )
                .await
                .1
                .to_string(),
        );
    }
    bodies.push(
        system
            .call(
                reqwest::Method::GET,
                "client-registration-providers",
                &admin,
                None,
            )
            .await
            .1
            .to_string(),
    );
    let mut all = secrets.to_vec();
    all.push(provider_secret.to_string());
    for secret in &all {
        for (what, texts) in [
            ("events", &events),
            ("read models", &read_models),
            ("responses", &bodies),
        ] {
            assert!(
                !texts.iter().any(|t| t.contains(secret.as_str())),
                "a secret appears in the {what}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_registers_with_a_fixed_initial_access_token() {
    every_type_registers(Mode::fixed_token()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_registers_with_client_credentials() {
    every_type_registers(Mode::client_credentials()).await;
}

/// 5xx twice, then success → REGISTERED after retries; a permanent 4xx → REGISTRATION_FAILED
/// with the provider's error, then `_retry_registration` succeeds; an answer lost after the
/// client was created leaves exactly one client; unreachable → failed after the bounded retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_faults() {
    let oidc = OidcProvider::start(Mode::fixed_token());
    let system = System::start().await;
    system.enable_dcr().await;
    system.add_provider(&oidc).await;
    let alice = system.token("alice", false);

    oidc.faults(&[Fault::Status(503), Fault::Status(502)]).await;
    let id = system
        .create(
            &alice,
            json!({"name": "Flaky", "type": "backend_to_backend"}),
        )
        .await;
    let app = system.settled(&alice, &id).await;
    assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");

    // The provider refuses (a web client with implicit needs https redirect URIs there).
    let id = system
        .create(&alice, json!({"name": "Refused", "type": "web", "redirect_uris": ["http://localhost:3000/cb"], "grant_types": ["authorization_code", "implicit"]}))
        .await;
    let app = system.settled(&alice, &id).await;
    assert_eq!(app["registration"]["state"], "REGISTRATION_FAILED", "{app}");
    assert_eq!(
        app["registration"]["error"], "invalid_redirect_uri",
        "{app}"
    );
    assert!(app["registration"]["error_description"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    let (status, body) = system
        .call(
            reqwest::Method::POST,
            &format!("applications/{id}/_retry_registration"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let app = system.settled(&alice, &id).await;
    assert_eq!(
        app["registration"]["state"], "REGISTRATION_FAILED",
        "refused again: {app}"
    );
    // Not failed (registered, or registering) → 409.
    let registered = system
        .create(
            &alice,
            json!({"name": "Fine", "type": "backend_to_backend"}),
        )
        .await;
    system.settled(&alice, &registered).await;
    let (status, body) = system
        .call(
            reqwest::Method::POST,
            &format!("applications/{registered}/_retry_registration"),
            &alice,
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("application.registration.not_failed")),
        "{body}"
    );

    // Created, then 500: the retry (same Idempotency-Key) gets the same client.
    let before = oidc.clients().await.len();
    oidc.faults(&[Fault::CreatedThen500]).await;
    let id = system
        .create(
            &alice,
            json!({"name": "Lost answer", "type": "backend_to_backend"}),
        )
        .await;
    let app = system.settled(&alice, &id).await;
    assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
    let after = oidc.clients().await;
    assert_eq!(
        after.len(),
        before + 1,
        "exactly one client for one application: {after:?}"
    );
    assert!(after.contains(&app["client_id"].as_str().unwrap().to_string()));

    // Unreachable through every attempt → failed, with the reason.
    oidc.faults(&[
        Fault::Status(503),
        Fault::Status(503),
        Fault::Status(503),
        Fault::Status(503),
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
    assert_eq!(
        app["registration"]["error"], "provider_unavailable",
        "{app}"
    );
    oidc.clear_faults().await;
    system.stop().await;
}

/// The saga killed after the provider created the client but before its answer arrived, then
/// restarted: the application is registered with exactly one client (the retry carries the same
/// Idempotency-Key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_killed_mid_flight_leaves_one_client() {
    let oidc = OidcProvider::start(Mode::fixed_token());
    let mut system = System::start().await;
    system.enable_dcr().await;
    system.add_provider(&oidc).await;
    let alice = system.token("alice", false);
    let before = oidc.clients().await.len();
    oidc.faults(&[Fault::CreatedThenDelay(Duration::from_millis(3000))])
        .await;
    let id = system
        .create(
            &alice,
            json!({"name": "Interrupted", "type": "backend_to_backend"}),
        )
        .await;
    // Killed while the client exists at the provider and its answer is held back.
    let started = Instant::now();
    while oidc.clients().await.len() == before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the provider never created the client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    system.kill_saga().await;
    system.start_saga().await;
    let app = system.settled(&alice, &id).await;
    assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
    let after = oidc.clients().await;
    assert_eq!(after.len(), before + 1, "exactly one client: {after:?}");

    // A saga that replays the whole log (its checkpoint reset) calls no provider again.
    system.kill_saga().await;
    let pool = match &system.db {
        Database::Postgres(p) => p.clone(),
        Database::Sqlite(_) => unreachable!(),
    };
    sqlx::query("DELETE FROM saga_checkpoints")
        .execute(&pool)
        .await
        .unwrap();
    system.start_saga().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (tx, pos): (i64, i64) = sqlx::query_as("SELECT tx, pos FROM saga_checkpoints")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(tx > 0 || pos > 0, "the saga replayed the log");
    assert_eq!(
        oidc.clients().await,
        after,
        "no side effect during the replay"
    );
    system.stop().await;
}

/// `appreg dcr-saga` as a process, SIGKILLed after the provider created the client but before
/// its answer arrived, then started again: exactly one client, and the application REGISTERED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_process_sigkilled_mid_flight_leaves_one_client() {
    let oidc = OidcProvider::start(Mode::fixed_token());
    let system = System::start_without_saga().await;
    system.enable_dcr().await;
    system.add_provider(&oidc).await;
    let alice = system.token("alice", false);
    let mut saga = system.saga_process();
    let before = oidc.clients().await.len();
    oidc.faults(&[Fault::CreatedThenDelay(Duration::from_millis(5000))])
        .await;
    let id = system
        .create(
            &alice,
            json!({"name": "Interrupted", "type": "backend_to_backend"}),
        )
        .await;
    let started = Instant::now();
    while oidc.clients().await.len() == before {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the provider never created the client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-KILL", &saga.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = saga.wait();
    let mut restarted = system.saga_process();
    let app = system.settled(&alice, &id).await;
    assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
    let after = oidc.clients().await;
    assert_eq!(after.len(), before + 1, "exactly one client: {after:?}");
    assert!(after.contains(&app["client_id"].as_str().unwrap().to_string()));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &restarted.id().to_string()])
        .status();
    let exit = restarted.wait().unwrap();
    assert!(
        exit.success(),
        "appreg dcr-saga stops cleanly on SIGTERM: {exit}"
    );
    system.stop().await;
}

/// Providers: live validation, write-only secrets, one default, deletion refused while used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_are_validated_live_and_protected() {
    let oidc = OidcProvider::start(Mode::client_credentials());
    let system = System::start().await;
    system.enable_dcr().await;
    let admin = system.token("root", true);
    let alice = system.token("alice", false);
    let (status, body) = system
        .call(
            reqwest::Method::GET,
            "client-registration-providers",
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // Discovery that does not answer.
    let (status, body) = system
        .call(reqwest::Method::POST, "client-registration-providers", &admin, Some(json!({
            "name": "Nowhere", "discovery_endpoint": "http://127.0.0.1:9/.well-known/openid-configuration",
            "initial_access_token_type": "INITIAL_ACCESS_TOKEN", "initial_access_token": "x"})))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["errors"][0]["code"], "provider.validation_failed",
        "{body}"
    );
    // Wrong client credentials: no token.
    let (status, body) = system
        .call(reqwest::Method::POST, "client-registration-providers", &admin, Some(json!({
            "name": "Wrong secret", "discovery_endpoint": oidc.discovery_url(),
            "initial_access_token_type": "CLIENT_CREDENTIALS", "client_id": "nobody", "client_secret": "nothing", "scopes": ["dcr"]})))
        .await;
    assert_eq!(status, 422, "{body}");
    // Missing secret, short name.
    let (status, body) = system
        .call(reqwest::Method::POST, "client-registration-providers", &admin, Some(json!({
            "name": "ab", "discovery_endpoint": oidc.discovery_url(), "initial_access_token_type": "CLIENT_CREDENTIALS", "client_id": "x"})))
        .await;
    assert_eq!(status, 422, "{body}");
    let (id, secret) = system.add_provider(&oidc).await;
    // An update without the secret keeps it (still validates live), and never returns it.
    let (status, updated) = system
        .call(reqwest::Method::PUT, &format!("client-registration-providers/{id}"), &admin, Some(json!({
            "name": "Renamed provider", "discovery_endpoint": oidc.discovery_url(),
            "initial_access_token_type": "CLIENT_CREDENTIALS",
            "client_id": match oidc.mode() { Mode::ClientCredentials { admin_client_id, .. } => admin_client_id.clone(), _ => unreachable!() },
            "scopes": ["dcr"], "default": true})))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], "Renamed provider");
    assert!(!updated.to_string().contains(&secret));
    // Used by an application → 409.
    let app = system
        .create(
            &alice,
            json!({"name": "User of the provider", "type": "backend_to_backend"}),
        )
        .await;
    let registered = system.settled(&alice, &app).await;
    assert_eq!(
        registered["registration"]["state"], "REGISTERED",
        "{registered}"
    );
    let deleted = system
        .call(
            reqwest::Method::DELETE,
            &format!("client-registration-providers/{id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(deleted.0, 409, "{}", deleted.1);
    assert_eq!(deleted.1["code"], "provider.in_use");
    system.stop().await;
}

/// Waits until the application's last client operation leaves PENDING.
async fn operation_settled(system: &System, token: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let (_, app) = system
            .call(
                reqwest::Method::GET,
                &format!("applications/{id}"),
                token,
                None,
            )
            .await;
        let state = &app["registration"]["operation"]["state"];
        if state == "DONE" || state == "FAILED" {
            return app;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "operation still pending: {app}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Update reaches the provider (RFC 7592, the rotated token kept); renewal makes the old secret
/// fail and the new one work; refusals of `_renew_secret`; with `delete_client_on_archive`, the
/// archive deletes the client at the provider and the restore registers a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_renewal_archive_and_restore() {
    let oidc = OidcProvider::start(Mode::fixed_token());
    let system = System::start().await;
    system.enable_dcr().await;
    let (provider_id, _) = system.add_provider(&oidc).await;
    let alice = system.token("alice", false);
    let admin = system.token("root", true);

    let id = system
        .create(
            &alice,
            json!({"name": "Portal", "type": "web", "redirect_uris": ["https://web.example/cb"]}),
        )
        .await;
    let app = system.settled(&alice, &id).await;
    assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
    let client_id = app["client_id"].as_str().unwrap().to_string();
    let read_at_provider = || async {
        let handle = RegistrationHandle {
            client_id: client_id.clone(),
            registration_client_uri: Some(format!("{}/{client_id}", oidc.registration_endpoint())),
            registration_access_token: system
                .vault
                .get(&format!("application/{id}"), "registration_access_token")
                .await
                .unwrap(),
        };
        ProviderClient::new()
            .unwrap()
            .read(&oidc.settings(), &handle)
            .await
            .unwrap()
    };

    // Update: new redirect URIs and name reach the provider.
    let (status, body) = system
        .call(reqwest::Method::PUT, &format!("applications/{id}"), &alice, Some(json!({"name": "Portal 2", "redirect_uris": ["https://web.example/cb", "https://web.example/cb2"]})))
        .await;
    assert_eq!(status, 200, "{body}");
    let app = operation_settled(&system, &alice, &id).await;
    assert_eq!(app["registration"]["operation"]["kind"], "UPDATE");
    assert_eq!(app["registration"]["operation"]["state"], "DONE", "{app}");
    let there = read_at_provider().await;
    assert_eq!(
        there.strings("redirect_uris"),
        ["https://web.example/cb", "https://web.example/cb2"]
    );
    assert_eq!(there.metadata["client_name"], "Portal 2");

    // Renewal: the old secret fails, the new one works.
    let (_, old) = system
        .call(
            reqwest::Method::GET,
            &format!("applications/{id}/credentials"),
            &alice,
            None,
        )
        .await;
    let old_secret = old["client_secret"].as_str().unwrap().to_string();
    let old_fingerprint = app["registration"]["client_secret_fingerprint"].clone();
    let (status, body) = system
        .call(
            reqwest::Method::POST,
            &format!("applications/{id}/_renew_secret"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let app = operation_settled(&system, &alice, &id).await;
    assert_eq!(app["registration"]["operation"]["kind"], "RENEW_SECRET");
    assert_eq!(app["registration"]["operation"]["state"], "DONE", "{app}");
    assert_ne!(
        app["registration"]["client_secret_fingerprint"],
        old_fingerprint
    );
    let (_, new) = system
        .call(
            reqwest::Method::GET,
            &format!("applications/{id}/credentials"),
            &alice,
            None,
        )
        .await;
    let new_secret = new["client_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, old_secret);
    let old_refused = oidc.token(&client_id, &old_secret, None).await.unwrap_err();
    assert!(
        old_refused.to_string().contains("invalid_client"),
        "{old_refused}"
    );
    let new_accepted = oidc.token(&client_id, &new_secret, None).await.unwrap_err();
    assert!(
        !new_accepted.to_string().contains("invalid_client"),
        "{new_accepted}"
    );

    // Refusals of _renew_secret.
    let simple = {
        let (status, body) = system
            .call(
                reqwest::Method::POST,
                "applications",
                &alice,
                Some(json!({"name": "Simple", "type": "simple"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    };
    let (status, body) = system
        .call(
            reqwest::Method::POST,
            &format!("applications/{simple}/_renew_secret"),
            &alice,
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("application.not_oauth")),
        "{body}"
    );
    oidc.faults(&[Fault::Delay(Duration::from_millis(1500))])
        .await;
    let registering = system
        .create(
            &alice,
            json!({"name": "Slow", "type": "backend_to_backend"}),
        )
        .await;
    let (status, body) = system
        .call(
            reqwest::Method::POST,
            &format!("applications/{registering}/_renew_secret"),
            &alice,
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("application.registration.not_registered")),
        "{body}"
    );
    system.settled(&alice, &registering).await;

    // Provider with delete_client_on_archive and renewal off.
    let (status, body) = system
        .call(reqwest::Method::PUT, &format!("client-registration-providers/{provider_id}"), &admin, Some(json!({
            "name": "Test OIDC provider", "discovery_endpoint": oidc.discovery_url(),
            "initial_access_token_type": "INITIAL_ACCESS_TOKEN", "delete_client_on_archive": true, "default": true})))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = system
        .call(
            reqwest::Method::POST,
            &format!("applications/{id}/_renew_secret"),
            &alice,
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("provider.renewal_disabled")),
        "{body}"
    );

    // Archive: the client is deleted at the provider.
    let (status, body) = system
        .call(
            reqwest::Method::DELETE,
            &format!("applications/{id}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = system
        .call(
            reqwest::Method::POST,
            &format!("applications/{id}/_renew_secret"),
            &admin,
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("application.archived")),
        "{body}"
    );
    let started = Instant::now();
    while oidc.clients().await.contains(&client_id)
        || system
            .vault
            .get(&format!("application/{id}"), "client_secret")
            .await
            .unwrap()
            .is_some()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the archived application's client was not deleted, or its secrets not purged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Restore: a new client.
    let (status, body) = system
        .call(
            reqwest::Method::POST,
            &format!("applications/{id}/_restore"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let app = system.settled(&admin, &id).await;
    assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
    let new_client = app["client_id"].as_str().unwrap().to_string();
    assert_ne!(new_client, client_id);
    assert!(oidc.clients().await.contains(&new_client));
    system.stop().await;
}

/// A burst of registrations is recorded by group commit: several applications'
/// `DcrClientRegistered` in one transaction. An application changed between the saga's load and
/// its record makes the batch append fail; nothing of it is appended and each request is decided
/// again alone: registered on the new state, with exactly one client per application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_recorded_in_batches() {
    let oidc = OidcProvider::start(Mode::fixed_token());
    let system = System::start().await;
    system.enable_dcr().await;
    system.add_provider(&oidc).await;
    let alice = system.token("alice", false);
    let pool = match &system.db {
        Database::Postgres(p) => p.clone(),
        Database::Sqlite(_) => unreachable!(),
    };
    let before = oidc.clients().await.len();

    // A burst: 40 creates, 8 at a time.
    let ids: Vec<String> = futures::stream::iter(0..40)
        .map(|i| {
            let (system, alice) = (&system, &alice);
            async move {
                system
                    .create(
                        alice,
                        json!({"name": format!("Burst {i}"), "type": "backend_to_backend"}),
                    )
                    .await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for id in &ids {
        let app = system.settled(&alice, id).await;
        assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
    }
    let (registered, transactions): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT tx_id) FROM events WHERE event_type = 'DcrClientRegistered'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(registered, 40);
    assert!(
        transactions < registered,
        "answers in flight together are appended together ({registered} events in {transactions} transactions)"
    );
    assert_eq!(oidc.clients().await.len(), before + 40);

    // The provider holds the next answers a while; meanwhile one application gains a member, so
    // the version the saga loaded is stale when it records.
    oidc.faults(&[Fault::Delay(Duration::from_millis(1500))])
        .await;
    let changed = system
        .create(
            &alice,
            json!({"name": "Changed meanwhile", "type": "backend_to_backend"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = system
        .call(
            reqwest::Method::POST,
            &format!("applications/{changed}/members"),
            &alice,
            Some(json!({"user": "bob", "role": "USER"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let app = system.settled(&alice, &changed).await;
    assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
    let types: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM events WHERE stream_id = $1 ORDER BY version")
            .bind(format!("application-{changed}"))
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        types,
        [
            "ApplicationCreated",
            "DcrRegistrationRequested",
            "MemberAdded",
            "DcrClientRegistered"
        ],
        "registered after the change, once"
    );
    assert_eq!(oidc.clients().await.len(), before + 41);
    oidc.clear_faults().await;
    system.stop().await;
}
