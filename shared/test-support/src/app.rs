//! `spawn_app`: the real api, built by its own crate (`appreg_api::service`), on a random
//! loopback port over a test's database, trusting a development key generated for the test.

use appreg_api::service::ServiceError;
use appreg_api::AppState;
use appreg_auth::{Authenticator, DevKey};
use appreg_config::Config;
use appreg_eventstore::Database;
use appreg_worker::service::Start;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The configuration tests start from: the defaults, no default application (they have their
/// own tests; elsewhere they would only add noise) and a master key generated for the run
/// (`label` is its key id).
pub fn config(label: &str) -> Config {
    let mut config = Config::defaults();
    config.api.default_application = false;
    config.secrets_master_key = Some(
        appreg_secrets::MasterKey::generate(label, &mut rand::rngs::OsRng)
            .expect("a master key")
            .to_config_string(),
    );
    config
}

/// A running api.
pub struct TestApi {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its state (event store, vault…), shared with the running server.
    pub state: AppState,
    /// Stops it (in-flight requests drained).
    pub shutdown: CancellationToken,
    /// The server's task.
    pub handle: JoinHandle<Result<(), ServiceError>>,
}

impl TestApi {
    /// Migrates `db` for the api, then serves the api of `config` on it, on a random loopback
    /// port, trusting the tokens of `key`.
    pub async fn start(db: &Database, config: &Config, key: &DevKey) -> TestApi {
        appreg_api::migrate(db).await.expect("the api's migrations");
        let mut config = config.clone();
        config.api.listen = "127.0.0.1:0".into();
        let auth = Authenticator::dev(key, &config.auth.role_claim);
        let api = appreg_api::service::build_with(&config, &Start::shared(db), auth)
            .await
            .expect("the api");
        let base = format!("http://{}", api.local_addr().expect("its address"));
        let state = api.state().clone();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(api.run(shutdown.clone()));
        TestApi {
            base,
            state,
            shutdown,
            handle,
        }
    }
}
