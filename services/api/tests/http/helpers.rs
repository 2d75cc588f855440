//! `spawn_app`: the real api router and projector on a random port, over a fresh database
//! (a new PostgreSQL database per test, or a new SQLite file), with tokens signed by a key
//! generated for the test.

use appreg_auth::{DevClaims, DevKey};
use appreg_config::Config;
use appreg_eventstore::{Database, EventStore};
use appreg_test_support::postgres::{fresh_postgres_url, fresh_sqlite_url, SqliteFile};
use serde_json::Value;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn EventStore>,
    pub db: Database,
    /// The database's URL and the configuration this instance runs with.
    pub url: String,
    pub config: Config,
    key: DevKey,
    pkcs8: Vec<u8>,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Result<(), appreg_api::service::ServiceError>>>,
    _sqlite: Option<SqliteFile>,
}

/// A response: status, headers and the JSON body (Null when empty or not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    /// The problem's stable code.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    /// The fields named by a validation problem.
    pub fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["field"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// The (field, code) pairs of a validation problem, in order.
    pub fn field_errors(&self) -> Vec<(String, String)> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["field"].as_str().unwrap_or("").to_string(),
                            e["code"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Asserts a 422 `validation.failed` listing exactly these (field, code) pairs, in order,
    /// each with a message.
    #[track_caller]
    pub fn assert_invalid(&self, expected: &[(&str, &str)]) -> &Self {
        self.assert_problem(422, "validation.failed");
        let got = self.field_errors();
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(f, c)| (f.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, want, "unexpected field errors; body: {}", self.body);
        for e in self.body["errors"].as_array().unwrap() {
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "every field error has a message; body: {}",
                self.body
            );
        }
        self
    }
    /// Asserts a 422 `validation.failed` naming exactly these fields (codes not checked).
    #[track_caller]
    pub fn assert_invalid_fields(&self, fields: &[&str]) -> &Self {
        self.assert_problem(422, "validation.failed");
        assert_eq!(
            self.fields(),
            fields,
            "unexpected invalid fields; body: {}",
            self.body
        );
        self
    }
    /// The problem's detail.
    pub fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or("")
    }
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> &Self {
        self.assert_status(status);
        assert_eq!(self.code(), code, "unexpected code; body: {}", self.body);
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json"),
            "problems are application/problem+json"
        );
        assert_eq!(self.body["status"].as_u64(), Some(status as u64));
        assert!(
            self.body["title"].is_string()
                && self.body["detail"].is_string()
                && self.body["type"].is_string()
        );
        self
    }
}

pub async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    let (url, sqlite) = match backend {
        Backend::Postgres => (fresh_postgres_url().await, None),
        Backend::Sqlite => {
            let (file, url) = fresh_sqlite_url();
            (url, Some(file))
        }
    };
    let mut config = appreg_test_support::app::config("test");
    configure(&mut config);
    let (_, pkcs8) = appreg_test_support::tokens::fresh_key();
    start(url, config, pkcs8, sqlite).await
}

/// Another api instance on the same database and signing key (as a second replica behind a
/// load balancer), with `configure` applied to the first one's configuration.
pub async fn spawn_peer(of: &TestApp, configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = of.config.clone();
    configure(&mut config);
    start(of.url.clone(), config, of.pkcs8.clone(), None).await
}

async fn start(url: String, config: Config, pkcs8: Vec<u8>, sqlite: Option<SqliteFile>) -> TestApp {
    let key = DevKey::from_pkcs8(pkcs8.clone()).unwrap();
    let db = Database::connect(&url, 16).await.expect("database");
    let api = appreg_test_support::app::TestApi::start(&db, &config, &key).await;
    TestApp {
        base: api.base,
        client: reqwest::Client::new(),
        store: api.state.store().clone(),
        db,
        url,
        config,
        key,
        pkcs8,
        shutdown: api.shutdown,
        handle: Some(api.handle),
        _sqlite: sqlite,
    }
}

impl TestApp {
    /// A token for `sub`; `admin` adds the administrator role.
    pub fn token(&self, sub: &str, admin: bool) -> String {
        self.sign(self.claims(sub, admin))
    }

    /// The claims `token` signs, for tests that alter them.
    pub fn claims(&self, sub: &str, admin: bool) -> DevClaims {
        appreg_test_support::tokens::claims(sub, admin, 600)
    }

    /// A token for `sub` that administers exactly `envs` (the `admin_environments` claim;
    /// `"*"`: every environment), without the administrator role.
    pub fn admin_of(&self, sub: &str, envs: &[&str]) -> String {
        let mut claims = self.claims(sub, false);
        claims.admin_environments = envs.iter().map(|e| e.to_string()).collect();
        self.sign(claims)
    }

    /// Creates environment `env` through `POST /v1/environments`, as an organisation
    /// administrator.
    pub async fn create_environment_http(&self, env: &str) {
        let admin = self.token("org-admin", true);
        self.post(
            "/v1/environments",
            &admin,
            serde_json::json!({ "id": env, "name": format!("{env} environment") }),
        )
        .await
        .assert_status(201);
    }

    /// Creates a simple application in environment `env` as `token`'s user and returns its id.
    pub async fn create_simple_in(&self, env: &str, token: &str, name: &str) -> String {
        let r = self
            .post(
                &format!("/v1/environments/{env}/applications"),
                token,
                serde_json::json!({ "name": name, "type": "simple" }),
            )
            .await;
        r.assert_status(201);
        r.body["id"].as_str().unwrap().to_string()
    }

    /// The public key the api trusts, as a JWK.
    pub fn jwk(&self) -> jsonwebtoken::jwk::Jwk {
        self.key.jwk()
    }

    pub fn sign(&self, claims: DevClaims) -> String {
        appreg_test_support::tokens::sign(&self.key, &claims)
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{}", self.base, path)
        } else {
            format!("{}/v1/environments/DEFAULT/{}", self.base, path)
        }
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        let r = request.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
        }
    }

    /// A request builder for `method path` with `token` (none: no Authorization header).
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let r = self.client.request(method, self.url(path));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// GET with query parameters (encoded).
    pub async fn get_query(&self, path: &str, token: &str, query: &[(&str, &str)]) -> Resp {
        self.send(
            self.client
                .get(self.url(path))
                .bearer_auth(token)
                .query(query),
        )
        .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(self.client.get(self.url(path)).bearer_auth(token))
            .await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(
            self.client
                .post(self.url(path))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }
    pub async fn post_raw(
        &self,
        path: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Resp {
        self.send(
            self.client
                .post(self.url(path))
                .bearer_auth(token)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(
            self.client
                .put(self.url(path))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.send(self.client.delete(self.url(path)).bearer_auth(token))
            .await
    }

    /// Creates a simple application as `token`'s user and returns its id.
    pub async fn create_simple(&self, token: &str, name: &str, client_id: Option<&str>) -> String {
        let mut body = serde_json::json!({ "name": name, "type": "simple" });
        if let Some(c) = client_id {
            body["client_id"] = c.into();
        }
        let r = self.post("applications", token, body).await;
        r.assert_status(201);
        r.body["id"].as_str().unwrap().to_string()
    }

    /// Enables DCR in DEFAULT (as an administrator).
    pub async fn enable_dcr(&self) {
        let admin = self.token("root", true);
        let body = serde_json::json!({
            "allowed_types": { "simple": true, "browser": true, "web": true, "native": true, "backend_to_backend": true },
            "dcr_enabled": true
        });
        self.put("settings/client-registration", &admin, body)
            .await
            .assert_status(200);
        self.add_provider_fixture("DEFAULT").await;
    }

    /// Records a client registration provider in `env` directly in the event store (the api
    /// would validate it live against a real provider: the DCR tests do that; here no saga runs,
    /// so the provider is never called). Returns its id.
    pub async fn add_provider_fixture(&self, env: &str) -> String {
        use appreg_domain::provider::*;
        use appreg_domain::DomainEvent;
        let stream = ProviderRegistry::stream_id(env);
        let existing = self.store.read_stream(&stream, 0, 1000).await.unwrap();
        let mut registry = ProviderRegistry::default();
        for e in &existing {
            registry.evolve(
                &ProviderEvent::decode(&e.event_type, e.schema_version, e.data.clone()).unwrap(),
            );
        }
        let id = uuid::Uuid::now_v7().to_string();
        let events = registry
            .create(
                id.clone(),
                ProviderDefinition {
                    name: format!("Fixture provider {}", &id[..8]),
                    description: None,
                    discovery_endpoint: appreg_domain::HttpUrl::parse(
                        "https://idp.example/.well-known/openid-configuration",
                    )
                    .unwrap(),
                    mode: InitialAccessTokenMode::InitialAccessToken {
                        token_fingerprint: "sha256:0123456789abcdef".into(),
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
                },
            )
            .unwrap();
        let now =
            chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros()).unwrap();
        self.store
            .append(appreg_eventstore::AppendRequest {
                stream_id: stream,
                stream_type: "providers".into(),
                expected_version: existing.len() as i64,
                events: events
                    .iter()
                    .map(|e| appreg_eventstore::NewEvent {
                        event_id: uuid::Uuid::now_v7(),
                        event_type: e.event_type().into(),
                        schema_version: e.schema_version(),
                        data: e.data(),
                        metadata: serde_json::json!({"environment": env, "actor": "fixture", "correlation_id": "fixture", "causation_id": "fixture", "at": now}),
                        recorded_at: now,
                    })
                    .collect(),
                claims: vec![],
                releases: vec![],
            })
            .await
            .unwrap();
        id
    }

    /// The number of events committed to the log, counted in the table itself: exact at once,
    /// whatever the log readers' visibility horizon (other transactions of the PostgreSQL
    /// cluster can hold `read_log` back for a while).
    /// The number of events of the commands under test: every stream but the users' (a user's
    /// first authenticated request records `UserFirstSeen`, whatever the request then does).
    pub async fn event_count(&self) -> usize {
        let n: i64 = match &self.db {
            Database::Postgres(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE stream_type <> 'user'")
                    .fetch_one(pool)
                    .await
            }
            Database::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE stream_type <> 'user'")
                    .fetch_one(pool)
                    .await
            }
        }
        .expect("count events");
        usize::try_from(n).unwrap()
    }

    /// The number of committed events of one type (every stream), counted in the table itself.
    pub async fn count_events_of_type(&self, event_type: &str) -> usize {
        let sql = "SELECT COUNT(*) FROM events WHERE event_type = $1";
        let n: i64 = match &self.db {
            Database::Postgres(pool) => {
                sqlx::query_scalar(sql)
                    .bind(event_type)
                    .fetch_one(pool)
                    .await
            }
            Database::Sqlite(pool) => {
                sqlx::query_scalar(sql)
                    .bind(event_type)
                    .fetch_one(pool)
                    .await
            }
        }
        .expect("count events of a type");
        usize::try_from(n).unwrap()
    }

    /// Asserts that exactly `n` events were appended since `before` (an `event_count`); returns
    /// the new count.
    pub async fn assert_appended(&self, before: usize, n: usize, what: &str) -> usize {
        let now = self.event_count().await;
        assert_eq!(now, before + n, "{what}: expected {n} new event(s)");
        now
    }

    /// Asserts that no event was appended since `before` (an `event_count`).
    pub async fn assert_unchanged(&self, before: usize, what: &str) {
        let now = self.event_count().await;
        assert_eq!(now, before, "{what}: no event may be appended");
    }

    /// Every event of one stream (for assertions on what a command appended).
    pub async fn stream(&self, stream_id: &str) -> Vec<appreg_eventstore::StoredEvent> {
        self.store.read_stream(stream_id, 0, 10_000).await.unwrap()
    }

    /// Makes environment `env` exist, as the environment commands of a later issue will: an
    /// event on the stream `environment-<env>`.
    pub async fn create_environment(&self, env: &str) {
        let now = chrono::Utc::now();
        self.store
            .append(appreg_eventstore::AppendRequest {
                stream_id: format!("environment-{env}"),
                stream_type: "environment".into(),
                expected_version: 0,
                events: vec![appreg_eventstore::NewEvent {
                    event_id: uuid::Uuid::now_v7(),
                    event_type: "EnvironmentCreated".into(),
                    schema_version: 1,
                    data: serde_json::json!({ "id": env, "name": env }),
                    metadata: serde_json::json!({
                        "environment": env, "actor": "test", "correlation_id": "test",
                        "causation_id": "test", "at": chrono::Utc::now(),
                    }),
                    recorded_at: now,
                }],
                claims: vec![],
                releases: vec![],
            })
            .await
            .expect("create environment");
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs async scenarios `fn(TestApp)` against both backends, as two tests each, with the
/// configuration changed by `$configure` (a `FnOnce(&mut Config)`).
#[macro_export]
macro_rules! on_both_with {
    ($configure:expr; $($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[allow(unused_imports)]
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::helpers::checked($crate::helpers::spawn_with($crate::helpers::Backend::Postgres, $configure).await, super::$scenario).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::helpers::checked($crate::helpers::spawn_with($crate::helpers::Backend::Sqlite, $configure).await, super::$scenario).await;
                }
            }
        )*
    };
}

/// Runs a scenario, then checks that every event it left in the store matches the published
/// schema of its type and version, and its metadata the metadata schema (proto-schemas/).
pub async fn checked<Fut: std::future::Future<Output = ()>>(
    mut app: TestApp,
    scenario: impl FnOnce(TestApp) -> Fut,
) {
    let db = app.db.clone();
    let file = app._sqlite.take();
    scenario(app).await;
    assert_events_match_schemas(&db).await;
    drop(file);
}

pub async fn assert_events_match_schemas(db: &Database) {
    appreg_test_support::schemas::assert_events_match_schemas(db).await;
}

/// Runs an async scenario `fn(TestApp)` against both backends, as two tests; afterwards every
/// event it appended must match its schema.
#[macro_export]
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::helpers::checked($crate::helpers::spawn($crate::helpers::Backend::Postgres).await, super::$scenario).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::helpers::checked($crate::helpers::spawn($crate::helpers::Backend::Sqlite).await, super::$scenario).await;
                }
            }
        )*
    };
}
