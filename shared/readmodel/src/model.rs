//! [`ReadModel`]: the handle on the live read model, its position, the write-side cache of
//! client registration settings, and the entry points that apply events. Its queries are in
//! `queries`.

use super::*;

mod queries;
pub use queries::{AppFilter, AppSort};

pub struct ReadModel {
    db: Database,
    position: watch::Sender<LogPosition>,
    /// Each environment's client registration settings and their stream version, read on every
    /// create: kept current by this process's writes and by the projector (other instances'
    /// writes), never moved back to an older version.
    settings: std::sync::RwLock<HashMap<String, (ClientRegistrationSettings, i64)>>,
    /// Kept by another process (`appreg projector`): this one only follows its checkpoint
    /// ([`ReadModel::follow_checkpoint`]) and caches no settings (it sees no settings event).
    external: bool,
    policy: RetryPolicy,
}

pub(crate) fn db_err(e: sqlx::Error) -> ReadModelError {
    ReadModelError::from(appreg_eventstore::StoreError::from(e))
}

pub(crate) fn parse_doc(doc: &str) -> Result<Application, ReadModelError> {
    serde_json::from_str(doc)
        .map_err(|e| ReadModelError::internal(format!("read model document: {e}")))
}

impl ReadModel {
    pub async fn new(db: Database) -> Result<ReadModel, ReadModelError> {
        let row: Option<(i64, i64)> = with_pool!(&db, pool => sqlx::query_as("SELECT tx, pos FROM rm_checkpoints WHERE name = $1")
            .bind(CHECKPOINT)
            .fetch_optional(pool)
            .await)
        .map_err(db_err)?;
        let start = match row {
            Some((tx, pos)) => LogPosition { tx, pos },
            None => LogPosition::START,
        };
        Ok(ReadModel {
            db,
            position: watch::Sender::new(start),
            settings: Default::default(),
            external: false,
            policy: RetryPolicy::default(),
        })
    }

    /// A read model kept by another process: run [`ReadModel::follow_checkpoint`] to see it move.
    pub async fn external(db: Database) -> Result<ReadModel, ReadModelError> {
        let mut read = ReadModel::new(db).await?;
        read.external = true;
        Ok(read)
    }

    /// The database the model lives in.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Whether another process keeps this model.
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// Sets how poison events are retried before they are parked.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Reads the stored checkpoint and moves [`ReadModel::position`] forward to it.
    pub async fn refresh_position(&self) -> Result<LogPosition, ReadModelError> {
        let row: Option<(i64, i64)> = with_pool!(&self.db, pool => sqlx::query_as("SELECT tx, pos FROM rm_checkpoints WHERE name = $1")
            .bind(CHECKPOINT)
            .fetch_optional(pool)
            .await)
        .map_err(db_err)?;
        let stored = row
            .map(|(tx, pos)| LogPosition { tx, pos })
            .unwrap_or(LogPosition::START);
        self.advance(stored);
        Ok(self.position())
    }

    fn advance(&self, to: LogPosition) {
        self.position.send_if_modified(|p| {
            if *p < to {
                *p = to;
                true
            } else {
                false
            }
        });
    }

    /// Follows the checkpoint another process writes, until `cancel` fires: woken by the
    /// projector's notifications on PostgreSQL, and polled every `poll` in any case.
    pub async fn follow_checkpoint(self: Arc<Self>, poll: Duration, cancel: CancellationToken) {
        let mut listener = match &self.db {
            Database::Postgres(pool) => {
                match sqlx::postgres::PgListener::connect_with(pool).await {
                    Ok(mut l) => match l.listen(NOTIFY_CHANNEL).await {
                        Ok(()) => Some(l),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot listen for read-model notifications; polling");
                            None
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for read-model notifications; polling");
                        None
                    }
                }
            }
            Database::Sqlite(_) => None,
        };
        loop {
            if let Err(e) = self.refresh_position().await {
                tracing::warn!(error = %e, "cannot read the read-model checkpoint");
            }
            let woken = async {
                match listener.as_mut() {
                    Some(l) => {
                        let _ = l.try_recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = woken => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// The log position the read model includes.
    pub fn position(&self) -> LogPosition {
        *self.position.borrow()
    }

    /// The cached settings of an environment, if known.
    pub fn cached_settings(&self, env: &str) -> Option<(ClientRegistrationSettings, i64)> {
        if self.external {
            return None;
        }
        let cache = self
            .settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.get(env).copied()
    }

    /// Remembers an environment's settings at a version, unless a newer one is known.
    pub fn remember_settings(&self, env: &str, settings: ClientRegistrationSettings, version: i64) {
        let mut cache = self
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache.get(env) {
            Some((_, known)) if *known >= version => {}
            _ => {
                cache.insert(env.to_string(), (settings, version));
            }
        }
    }

    /// Applies a settings event to the cache: the next version is folded in; after a gap the
    /// entry is dropped (the next read loads it from the event store).
    fn follow_settings(&self, e: &StoredEvent) {
        let Some(env) = e.stream_id.strip_prefix("settings-") else {
            return;
        };
        let mut cache = self
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((settings, version)) = cache.get_mut(env) else {
            return;
        };
        if e.version <= *version {
            return;
        }
        match SettingsEvent::decode(&e.event_type, e.schema_version, e.data.clone()) {
            Ok(event) if e.version == *version + 1 => {
                settings.evolve(&event);
                *version = e.version;
            }
            _ => {
                cache.remove(env);
            }
        }
    }

    /// Waits until the read model includes `target`; false after `timeout`.
    pub async fn wait_for(&self, target: LogPosition, timeout: Duration) -> bool {
        let mut rx = self.position.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Applies a batch of events in one transaction, with the checkpoint.
    pub async fn apply(&self, events: &[StoredEvent]) -> Result<(), ReadModelError> {
        self.apply_marked(events, None).await
    }

    /// Applies a batch of events in one transaction, with the checkpoint and, when given, the
    /// consumer's [`Mark`].
    pub async fn apply_marked(
        &self,
        events: &[StoredEvent],
        mark: Option<&Mark>,
    ) -> Result<(), ReadModelError> {
        if events.is_empty() {
            return Ok(());
        }
        for e in events.iter().filter(|e| e.stream_type == SETTINGS_STREAM) {
            self.follow_settings(e);
        }
        let applied = apply_parking(&self.db, &LIVE, events, self.policy, mark).await?;
        self.advance(applied);
        Ok(())
    }
}
