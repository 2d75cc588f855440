//! The one way any appreg process runs a command: load the aggregate, decide, append the events
//! with the expected version and the uniqueness claims the new state needs, retry on a
//! concurrent change. The api, the DCR saga, the lifecycle process manager and the CLI all call
//! [`Commands::execute`]; none of them appends an aggregate's events another way.
//!
//! A command's cost does not grow with its stream's history:
//! - recent aggregates stay in a bounded cache ([`cache::AggregateCache`]) with their version;
//! - a cold load reads the stream's snapshot and folds only the events after it; snapshots are
//!   written every `snapshot_every` events, outside the append's transaction, and one of another
//!   shape ([`Aggregate::SNAPSHOT_SCHEMA`]) or that does not decode is ignored;
//! - a cached or snapshotted state is never trusted to decide: the append's expected version is
//!   the guard, and a command that lost the race reads the events it missed and decides again. A
//!   refusal or a no-op decided on a cached state is confirmed against the stream's tail first,
//!   so a stale cache can never refuse what the current state allows;
//! - appends of concurrent commands on different streams share transactions ([`group`]).
//!
//! This crate knows the domain's aggregates and the event store's port; it never knows HTTP,
//! NATS, or who issued the command (the caller passes the events' metadata).

pub mod aggregate;
pub mod cache;
mod error;
pub mod group;

pub use aggregate::{Aggregate, ApplicationState};
pub use cache::AggregateCache;
pub use error::{CommandError, LoadError};
pub use group::GroupCommit;

pub use appreg_config::CommandSettings;
use appreg_domain::{DomainEvent, UniqueClaim};
use appreg_eventstore::{
    AppendError, AppendRequest, Appended, Claim, EventStore, NewEvent, Snapshot, StoredEvent,
};
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// An aggregate's state and the stream version it includes.
#[derive(Debug)]
pub struct Loaded<A> {
    pub state: Arc<A>,
    pub version: i64,
}

impl<A> Clone for Loaded<A> {
    fn clone(&self) -> Self {
        Loaded {
            state: self.state.clone(),
            version: self.version,
        }
    }
}

/// Where a command's first decision starts.
pub enum Start<A> {
    /// A freshly generated stream id: nothing to read; the append's expected version 0 guards it.
    New,
    /// The cached state if any (checked by the append), else a load.
    Current,
    /// A state the caller has just loaded.
    Loaded(Loaded<A>),
}

/// What a command did.
#[derive(Debug)]
pub struct Executed<A> {
    /// The state after the command.
    pub state: Arc<A>,
    pub version: i64,
    /// None: the decision produced no event.
    pub appended: Option<Appended>,
}

/// The command path. Cloning shares it (store, cache, group commit).
#[derive(Clone)]
pub struct Commands {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    cache: AggregateCache,
    group: Option<GroupCommit>,
    settings: CommandSettings,
    /// Snapshot problems already logged, by stream type (logged once per process).
    warned: Mutex<HashSet<(&'static str, &'static str)>>,
}

const PAGE: i64 = 1000;

/// The time of a command, at the precision the event store keeps (microseconds).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Domain events as the store takes them: a fresh id each, the same metadata and time.
pub fn new_events<E: DomainEvent>(
    events: &[E],
    metadata: &serde_json::Value,
    at: DateTime<Utc>,
) -> Vec<NewEvent> {
    events
        .iter()
        .map(|e| NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: e.event_type().to_string(),
            schema_version: e.schema_version(),
            data: e.data(),
            metadata: metadata.clone(),
            recorded_at: at,
        })
        .collect()
}

/// The store's claims for the domain's.
pub fn to_claims(claims: Vec<UniqueClaim>) -> Vec<Claim> {
    claims
        .into_iter()
        .map(|c| Claim {
            scope: c.scope,
            value: c.value,
        })
        .collect()
}

/// Folds stored events into a state (each decoded, upcast if older).
pub fn fold<A: Aggregate>(
    state: &mut A,
    events: &[StoredEvent],
) -> Result<(), CommandError<std::convert::Infallible>> {
    for e in events {
        let event = A::decode(&e.event_type, e.schema_version, e.data.clone()).map_err(|err| {
            CommandError::Corrupt {
                stream_id: e.stream_id.clone(),
                message: format!("event {}: {err}", e.event_id),
            }
        })?;
        state.apply(&event, e.recorded_at, e.version);
    }
    Ok(())
}

/// The append that records `events` decided on `before` at `version`, and the state after it.
pub fn append_request<A: Aggregate>(
    stream_id: &str,
    before: &A,
    version: i64,
    events: &[A::Event],
    metadata: &serde_json::Value,
) -> (AppendRequest, A) {
    let at = now();
    let mut after = before.clone();
    for (i, e) in events.iter().enumerate() {
        after.apply(e, at, version + 1 + i as i64);
    }
    let (claims, releases) = before.claim_changes(&after);
    let request = AppendRequest {
        stream_id: stream_id.to_string(),
        stream_type: A::STREAM_TYPE.into(),
        expected_version: version,
        events: new_events(events, metadata, at),
        claims: to_claims(claims),
        releases: to_claims(releases),
    };
    (request, after)
}

impl Commands {
    /// The command path over `store`. Starts the group-commit writers (if any) on the current
    /// Tokio runtime.
    pub fn new(store: Arc<dyn EventStore>, settings: CommandSettings) -> Commands {
        let group = (settings.group_commit_writers > 0).then(|| {
            GroupCommit::start(
                store.clone(),
                settings.group_commit_writers,
                settings.max_batch,
            )
        });
        Commands {
            inner: Arc::new(Inner {
                store,
                cache: AggregateCache::new(settings.cache_mib.saturating_mul(1 << 20)),
                group,
                settings,
                warned: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    pub fn cache(&self) -> &AggregateCache {
        &self.inner.cache
    }

    pub fn settings(&self) -> &CommandSettings {
        &self.inner.settings
    }

    /// Appends through the group commit (when on): for events decided outside an aggregate.
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        match &self.inner.group {
            Some(group) => group.append(request).await,
            None => self.inner.store.append(request).await,
        }
    }

    /// An aggregate's current state: never older than what was committed before the call (the
    /// cached or snapshotted state, then the events after it).
    pub async fn load<A: Aggregate>(&self, stream_id: &str) -> Result<Loaded<A>, LoadError> {
        match self.inner.cache.get::<A>(stream_id) {
            Some((state, version)) => {
                metrics::counter!("appreg_command_cache_total", "result" => "hit").increment(1);
                Ok(self
                    .catch_up(stream_id, Loaded { state, version }, true)
                    .await?
                    .0)
            }
            None => {
                metrics::counter!("appreg_command_cache_total", "result" => "miss").increment(1);
                self.load_cold(stream_id).await
            }
        }
    }

    /// The cached state if any, else a load: for deciding (the append checks the version).
    async fn cached_or_load<A: Aggregate>(
        &self,
        stream_id: &str,
    ) -> Result<(Loaded<A>, bool), LoadError> {
        match self.inner.cache.get::<A>(stream_id) {
            Some((state, version)) => {
                metrics::counter!("appreg_command_cache_total", "result" => "hit").increment(1);
                Ok((Loaded { state, version }, false))
            }
            None => {
                metrics::counter!("appreg_command_cache_total", "result" => "miss").increment(1);
                Ok((self.load_cold(stream_id).await?, true))
            }
        }
    }

    /// From the snapshot (if usable) and the events after it.
    async fn load_cold<A: Aggregate>(&self, stream_id: &str) -> Result<Loaded<A>, LoadError> {
        let mut start = Loaded {
            state: Arc::new(A::default()),
            version: 0,
        };
        if self.inner.settings.snapshot_every > 0 {
            if let Some(snapshot) = self.inner.store.read_snapshot(stream_id).await? {
                match self.decode_snapshot::<A>(&snapshot) {
                    Some(state) => {
                        start = Loaded {
                            state: Arc::new(state),
                            version: snapshot.version,
                        }
                    }
                    None => metrics::counter!(
                        "appreg_snapshots_ignored_total", "stream_type" => A::STREAM_TYPE
                    )
                    .increment(1),
                }
            }
        }
        let from = start.version;
        let (loaded, _) = self.catch_up(stream_id, start, false).await?;
        if loaded.version - from >= self.inner.settings.snapshot_every.max(1)
            && self.inner.settings.snapshot_every > 0
        {
            self.write_snapshot(stream_id, &loaded, None);
        }
        Ok(loaded)
    }

    fn decode_snapshot<A: Aggregate>(&self, snapshot: &Snapshot) -> Option<A> {
        if snapshot.schema_version != A::SNAPSHOT_SCHEMA {
            self.warn_once(A::STREAM_TYPE, "shape", || {
                tracing::warn!(
                    stream_type = A::STREAM_TYPE,
                    stream_id = %snapshot.stream_id,
                    found = snapshot.schema_version,
                    expected = A::SNAPSHOT_SCHEMA,
                    "ignoring snapshots of another shape; the streams are folded and snapshotted anew"
                )
            });
            return None;
        }
        match serde_json::from_slice(&snapshot.data) {
            Ok(state) => Some(state),
            Err(error) => {
                self.warn_once(A::STREAM_TYPE, "decode", || {
                    tracing::warn!(
                        stream_type = A::STREAM_TYPE,
                        stream_id = %snapshot.stream_id,
                        %error,
                        "ignoring a snapshot that does not decode; the stream is folded instead"
                    )
                });
                None
            }
        }
    }

    fn warn_once(&self, stream_type: &'static str, what: &'static str, log: impl FnOnce()) {
        let first = self
            .inner
            .warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((stream_type, what));
        if first {
            log();
        }
    }

    /// Folds the events after `loaded.version`; true if there were any. Caches the result
    /// (`cached`: `loaded` is the cache's entry, which then stays as it is if nothing changed).
    async fn catch_up<A: Aggregate>(
        &self,
        stream_id: &str,
        loaded: Loaded<A>,
        cached: bool,
    ) -> Result<(Loaded<A>, bool), LoadError> {
        let mut version = loaded.version;
        let mut state: Option<A> = None;
        loop {
            let page = self
                .inner
                .store
                .read_stream(stream_id, version, PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            version = last.version;
            let st = state.get_or_insert_with(|| A::clone(&loaded.state));
            fold(st, &page)?;
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        match state {
            None => {
                if loaded.version > 0 && !cached {
                    self.remember(stream_id, &loaded, None);
                }
                Ok((loaded, false))
            }
            Some(state) => {
                let loaded = Loaded {
                    state: Arc::new(state),
                    version,
                };
                self.remember(stream_id, &loaded, None);
                Ok((loaded, true))
            }
        }
    }

    /// Caches a state; `serialized`: its JSON if the caller has it.
    fn remember<A: Aggregate>(
        &self,
        stream_id: &str,
        loaded: &Loaded<A>,
        serialized: Option<usize>,
    ) {
        if self.inner.cache.capacity() == 0 {
            return;
        }
        let len = match serialized {
            Some(len) => len,
            None => serialized_len(loaded.state.as_ref()),
        };
        self.inner.cache.put(
            stream_id,
            loaded.state.clone(),
            loaded.version,
            AggregateCache::weight_of(len),
        );
    }

    /// Writes a snapshot in the background (a failure only costs a longer load later).
    fn write_snapshot<A: Aggregate>(
        &self,
        stream_id: &str,
        loaded: &Loaded<A>,
        bytes: Option<Vec<u8>>,
    ) {
        let data = match bytes {
            Some(bytes) => bytes,
            None => match serde_json::to_vec(loaded.state.as_ref()) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::warn!(%error, stream_id, "snapshot not serialisable");
                    return;
                }
            },
        };
        let snapshot = Snapshot {
            stream_id: stream_id.to_string(),
            schema_version: A::SNAPSHOT_SCHEMA,
            version: loaded.version,
            data,
        };
        let store = self.inner.store.clone();
        tokio::spawn(async move {
            match store.write_snapshot(&snapshot).await {
                Ok(()) => metrics::counter!(
                    "appreg_snapshots_written_total", "stream_type" => A::STREAM_TYPE
                )
                .increment(1),
                Err(error) => {
                    tracing::warn!(%error, stream_id = %snapshot.stream_id, "snapshot not written")
                }
            }
        });
    }

    /// Runs a command on the stream `stream_id`: `decide` sees the current state and returns
    /// the events to append (none: nothing to do). Decides again on the current state after a
    /// lost race, at most `retries` times.
    // Refusals are the callers' answers, not failures: logged at debug (callers log their failures).
    #[tracing::instrument(
        skip_all,
        fields(stream_id, expected_version),
        err(level = "debug", Display)
    )]
    pub async fn execute<A, E, F>(
        &self,
        stream_id: &str,
        start: Start<A>,
        metadata: &serde_json::Value,
        mut decide: F,
    ) -> Result<Executed<A>, CommandError<E>>
    where
        A: Aggregate,
        E: std::fmt::Display,
        F: FnMut(&A) -> Result<Vec<A::Event>, E>,
    {
        let started = Instant::now();
        let tries = self.inner.settings.retries.max(1);
        // `fresh`: the state was read from the store during this command (not only cached).
        let (mut loaded, mut fresh) = match start {
            Start::New => (
                Loaded {
                    state: Arc::new(A::default()),
                    version: 0,
                },
                true,
            ),
            Start::Loaded(loaded) => (loaded, true),
            Start::Current => self
                .cached_or_load(stream_id)
                .await
                .map_err(LoadError::widen)?,
        };
        let mut attempt = 0;
        let result = loop {
            let decided = decide(&loaded.state);
            let events = match decided {
                Ok(events) if !events.is_empty() => events,
                other => {
                    if !fresh {
                        // Confirm a refusal or a no-op on the current state.
                        let (current, changed) = self
                            .catch_up(stream_id, loaded, true)
                            .await
                            .map_err(LoadError::widen)?;
                        loaded = current;
                        fresh = true;
                        if changed {
                            continue;
                        }
                    }
                    break match other {
                        Ok(_) => Ok(Executed {
                            state: loaded.state.clone(),
                            version: loaded.version,
                            appended: None,
                        }),
                        Err(e) => Err(CommandError::Rejected(e)),
                    };
                }
            };
            attempt += 1;
            tracing::Span::current().record("expected_version", loaded.version);
            let (request, after) = append_request(
                stream_id,
                loaded.state.as_ref(),
                loaded.version,
                &events,
                metadata,
            );
            let n = request.events.len() as i64;
            match self.append(request).await {
                Ok(appended) => {
                    let after = Loaded {
                        state: Arc::new(after),
                        version: appended.version,
                    };
                    self.after_append(stream_id, &after, n);
                    break Ok(Executed {
                        state: after.state,
                        version: after.version,
                        appended: Some(appended),
                    });
                }
                Err(AppendError::VersionConflict { .. }) if attempt < tries => {
                    tracing::debug!(attempt, "version conflict, deciding again");
                    metrics::counter!("appreg_command_conflicts_total").increment(1);
                    let (current, _) = self
                        .catch_up(stream_id, loaded, false)
                        .await
                        .map_err(LoadError::widen)?;
                    loaded = current;
                    fresh = true;
                }
                Err(AppendError::VersionConflict { .. }) => {
                    self.inner.cache.remove(stream_id);
                    break Err(CommandError::Conflict { tries });
                }
                Err(AppendError::ClaimTaken { scope, value }) => {
                    break Err(CommandError::ClaimTaken { scope, value })
                }
                Err(AppendError::Backend(e)) => break Err(CommandError::Store(e)),
                Err(e @ (AppendError::Empty | AppendError::DuplicateStream { .. })) => {
                    break Err(CommandError::Store(appreg_eventstore::StoreError::Corrupt(
                        e.to_string(),
                    )))
                }
            }
        };
        metrics::histogram!("appreg_command_path_seconds", "stream_type" => A::STREAM_TYPE)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Caches the state after an append of `n` events, and snapshots it when the append
    /// crossed a multiple of `snapshot_every`.
    fn after_append<A: Aggregate>(&self, stream_id: &str, after: &Loaded<A>, n: i64) {
        let every = self.inner.settings.snapshot_every;
        let snapshot_due = every > 0 && after.version / every > (after.version - n) / every;
        if snapshot_due {
            match serde_json::to_vec(after.state.as_ref()) {
                Ok(bytes) => {
                    self.remember(stream_id, after, Some(bytes.len()));
                    self.write_snapshot(stream_id, after, Some(bytes));
                }
                Err(_) => self.inner.cache.remove(stream_id),
            }
        } else {
            self.remember(stream_id, after, None);
        }
    }

    /// Forgets a cached state (after an append made outside [`Commands::execute`]).
    pub fn forget(&self, stream_id: &str) {
        self.inner.cache.remove(stream_id);
    }
}

/// The length of a state's JSON form, without building it.
fn serialized_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX / 8,
    }
}
