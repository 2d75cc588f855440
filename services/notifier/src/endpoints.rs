//! The endpoints' state and their opened signing secrets, kept in memory so that an attempt
//! costs no database round trip for them. An environment's entry is dropped when the ingest
//! sees an event of its `webhooks-<env>` stream ([`Endpoints::forget`]: an endpoint created,
//! changed, deleted or disabled), when this process disables an endpoint, and after [`TTL`]
//! at the latest (the dispatcher may run in another instance than the ingest that sees the
//! changes). Secrets are held as [`SecretString`] (wiped when dropped), never logged.

use appreg_commands::{Commands, LoadError};
use appreg_domain::webhook::{Webhook, WebhookRegistry};
use appreg_secrets::{SecretStore, VaultStoreError};
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest an environment's endpoints are used without being read again.
pub(crate) const TTL: Duration = Duration::from_secs(2);

struct Entry {
    registry: Arc<WebhookRegistry>,
    loaded: Instant,
    /// Opened signing secrets, by endpoint id.
    secrets: HashMap<String, SecretString>,
}

pub(crate) struct Endpoints {
    commands: Commands,
    vault: SecretStore,
    envs: Mutex<HashMap<String, Entry>>,
    /// Bumped by every [`Endpoints::forget`]: a read begun before one is not kept.
    generation: AtomicU64,
}

impl Endpoints {
    pub fn new(commands: Commands, vault: SecretStore) -> Self {
        Endpoints {
            commands,
            vault,
            envs: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    fn envs(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.envs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The endpoints of environment `env`.
    pub async fn registry(&self, env: &str) -> Result<Arc<WebhookRegistry>, LoadError> {
        if let Some(entry) = self.envs().get(env).filter(|e| e.loaded.elapsed() < TTL) {
            return Ok(entry.registry.clone());
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let registry = self
            .commands
            .load::<WebhookRegistry>(&WebhookRegistry::stream_id(env))
            .await?
            .state;
        let mut envs = self.envs();
        if self.generation.load(Ordering::SeqCst) == generation {
            envs.insert(
                env.to_string(),
                Entry {
                    registry: registry.clone(),
                    loaded: Instant::now(),
                    secrets: HashMap::new(),
                },
            );
        }
        Ok(registry)
    }

    /// Endpoint `wid` of `env` if it exists and is enabled.
    pub async fn enabled(&self, env: &str, wid: &str) -> Result<Option<Webhook>, LoadError> {
        Ok(self
            .registry(env)
            .await?
            .webhooks
            .get(wid)
            .filter(|w| w.enabled)
            .cloned())
    }

    /// The signing secret of endpoint `wid` of `env` (None: the vault has none).
    pub async fn secret(
        &self,
        env: &str,
        wid: &str,
    ) -> Result<Option<SecretString>, VaultStoreError> {
        if let Some(secret) = self.envs().get(env).and_then(|e| e.secrets.get(wid)) {
            return Ok(Some(secret.clone()));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let (owner, kind) = appreg_secrets::store::webhook_secret_slot(wid);
        let secret = self.vault.get(&owner, kind).await?;
        if let Some(secret) = &secret {
            let mut envs = self.envs();
            if self.generation.load(Ordering::SeqCst) == generation {
                if let Some(entry) = envs.get_mut(env) {
                    entry.secrets.insert(wid.to_string(), secret.clone());
                }
            }
        }
        Ok(secret)
    }

    /// Drops what is known of `env`'s endpoints: read again at the next use.
    pub fn forget(&self, env: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.envs().remove(env);
    }
}
