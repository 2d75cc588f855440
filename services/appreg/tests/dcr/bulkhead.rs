//! Issue #20, item 7: one provider must not stall DCR for the others, and a request the saga
//! cannot handle (a `SagaError` every time) must not block the saga's checkpoint forever.
//!
//! - A real HTTP server on loopback serves a discovery document whose registration endpoint
//!   never answers (a hanging provider); the real oidc-provider is a second provider of the same
//!   environment. Requests for the hanging one fill its own slots only: the good provider's
//!   registrations complete promptly meanwhile.
//! - A provider whose secret is missing from the vault makes every try of a request fail with a
//!   `SagaError`: after the configured number of tries the request is parked (the checkpoint
//!   moves past it), `appreg saga parked` lists it, and once the secret is back `appreg saga
//!   retry` handles it: the application is registered.

use super::*;

/// A provider whose discovery answers and whose registration endpoint accepts the request and
/// never answers. Runs until the test ends.
async fn hanging_provider() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let discovery = appreg_test_support::recorder::discovery_document(
        &base,
        &format!("{base}/token"),
        &format!("{base}/reg"),
    );
    let counted = hits.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let d = discovery.clone();
                async move { axum::Json(d) }
            }),
        )
        .route(
            "/reg",
            axum::routing::post(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async {
                    futures::future::pending::<()>().await;
                    ""
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("{base}/.well-known/openid-configuration"), hits)
}

impl System {
    /// Adds a provider in INITIAL_ACCESS_TOKEN mode; returns its id.
    async fn add_token_provider(&self, name: &str, discovery: &str, token: &str) -> String {
        let admin = self.token("root", true);
        let (status, created) = self
            .call(
                reqwest::Method::POST,
                "client-registration-providers",
                &admin,
                Some(json!({
                    "name": name,
                    "discovery_endpoint": discovery,
                    "initial_access_token_type": "INITIAL_ACCESS_TOKEN",
                    "initial_access_token": token,
                })),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_string()
    }

    async fn state_of(&self, token: &str, id: &str) -> Value {
        let (status, app) = self
            .call(
                reqwest::Method::GET,
                &format!("applications/{id}"),
                token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{app}");
        app
    }

    /// `appreg <args>` on the test's database and master key: (success, stdout, stderr).
    fn appreg(&self, args: &[&str]) -> (bool, String, String) {
        use secrecy::ExposeSecret;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_appreg"))
            .args(args)
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
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Ten registrations stuck at a hanging provider; the other provider's registrations, requested
/// after them, complete within seconds while the hanging ones are still REGISTERING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_does_not_stall_the_others() {
    let oidc = OidcProvider::start(Mode::fixed_token());
    let Mode::InitialAccessToken(good_token) = oidc.mode().clone() else {
        unreachable!()
    };
    let (hanging_discovery, hits) = hanging_provider().await;
    let mut system = System::start_without_saga().await;
    system
        .start_saga_with(appreg_dcr_saga::SagaConfig {
            concurrency: 64,
            provider_concurrency: 2,
            ..saga_config()
        })
        .await;
    system.enable_dcr().await;
    let good = system
        .add_token_provider("Good provider", &oidc.discovery_url(), &good_token)
        .await;
    let hanging = system
        .add_token_provider("Hanging provider", &hanging_discovery, "iat-hanging")
        .await;
    let alice = system.token("alice", false);

    let mut stuck = Vec::new();
    for i in 0..10 {
        stuck.push(
            system
                .create(
                    &alice,
                    json!({"name": format!("Stuck {i}"), "type": "backend_to_backend", "provider_id": hanging}),
                )
                .await,
        );
    }
    // The hanging provider holds its requests.
    let started = Instant::now();
    while hits.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let mut fine = Vec::new();
    for i in 0..3 {
        fine.push(
            system
                .create(
                    &alice,
                    json!({"name": format!("Fine {i}"), "type": "backend_to_backend", "provider_id": good}),
                )
                .await,
        );
    }
    for id in &fine {
        loop {
            let app = system.state_of(&alice, id).await;
            if app["registration"]["state"] != "REGISTERING" {
                assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the good provider's registration waits behind the hanging provider: {app}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The hanging provider's requests are still waiting on it (on its own slots), and the
    // checkpoint (the low-water mark of the requests in flight) has not passed the first one,
    // although later requests are done.
    let app = system.state_of(&alice, &stuck[0]).await;
    assert_eq!(app["registration"]["state"], "REGISTERING", "{app}");
    assert!(saga_checkpoint(&system.db).await < request_position(&system.db, &stuck[0]).await);
    assert!(
        hits.load(std::sync::atomic::Ordering::SeqCst) <= 2,
        "at most the hanging provider's budget is in flight there"
    );
    system.stop().await;
}

/// The event position of an application's registration request.
async fn request_position(db: &Database, id: &str) -> (i64, i64) {
    let Database::Postgres(pool) = db else {
        unreachable!()
    };
    sqlx::query_as(
        "SELECT tx_id, position FROM events WHERE stream_id = $1 AND event_type = 'DcrRegistrationRequested' \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(format!("application-{id}"))
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn saga_checkpoint(db: &Database) -> (i64, i64) {
    let Database::Postgres(pool) = db else {
        unreachable!()
    };
    sqlx::query_as("SELECT tx, pos FROM saga_checkpoints WHERE name = 'dcr-saga'")
        .fetch_optional(pool)
        .await
        .unwrap()
        .unwrap_or((0, 0))
}

/// A request failing with a SagaError every time (its provider's token is gone from the vault)
/// is parked after the configured tries; the checkpoint passes it; the CLI lists it; once the
/// token is back, `appreg saga retry` registers the application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_request_is_parked_listed_and_retried() {
    let oidc = OidcProvider::start(Mode::fixed_token());
    let Mode::InitialAccessToken(token) = oidc.mode().clone() else {
        unreachable!()
    };
    let mut system = System::start_without_saga().await;
    system
        .start_saga_with(appreg_dcr_saga::SagaConfig {
            park_after: 3,
            ..saga_config()
        })
        .await;
    system.enable_dcr().await;
    let provider = system
        .add_token_provider("Provider", &oidc.discovery_url(), &token)
        .await;
    let owner = appreg_dcr_client::vault::provider_owner("DEFAULT", &provider);
    system
        .vault
        .delete(&owner, "initial_access_token")
        .await
        .unwrap();
    let alice = system.token("alice", false);
    let poisoned = system
        .create(
            &alice,
            json!({"name": "Poisoned", "type": "backend_to_backend"}),
        )
        .await;
    let at = request_position(&system.db, &poisoned).await;
    // Parked after its tries: the checkpoint moves past the request.
    let started = Instant::now();
    while saga_checkpoint(&system.db).await < at {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the saga's checkpoint stays before the failing request"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out, err) = system.appreg(&["saga", "parked"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("application-{poisoned}")), "{out}");
    assert!(out.contains("DcrRegistrationRequested"), "{out}");
    assert!(out.contains("not in the vault"), "{out}");
    assert!(!out.contains(&token), "no secret in the listing");

    // Still failing: the retry keeps it parked and says so.
    let (ok, out, _) = system.appreg(&["saga", "retry"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("0 parked requests handled, 1 still parked"),
        "{out}"
    );

    // The cause fixed: the retry handles it.
    system
        .vault
        .put(
            &owner,
            "initial_access_token",
            &secrecy::SecretString::from(token.clone()),
        )
        .await
        .unwrap();
    let (ok, out, err) = system.appreg(&["saga", "retry"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("1 parked requests handled, 0 still parked"),
        "{out}"
    );
    let app = system.state_of(&alice, &poisoned).await;
    assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
    let (ok, out, _) = system.appreg(&["saga", "parked"]);
    assert!(ok && out.contains("no parked requests"), "{out}");
    system.stop().await;
}
