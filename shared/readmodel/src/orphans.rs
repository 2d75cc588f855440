//! The suspected-orphans table (`rm_suspected_orphans`): one row per DCR registration attempt
//! whose outcome is unknown (`DcrAttemptOutcomeUnknown`), `OPEN` until a
//! `DcrAttemptSuspicionsCleared` names it (`CLEARED`, with the proven client_id). Written by the
//! projector's fold (`write_fresh!`) and by the rebuild's replay, read by the administrators' list.

use super::*;
use std::collections::BTreeMap;

/// A suspicion not yet cleared.
pub const OPEN: &str = "OPEN";
/// A suspicion proven to be the application's own client.
pub const CLEARED: &str = "CLEARED";

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspectedOrphan {
    pub environment: String,
    pub provider_id: String,
    pub application_id: String,
    pub request_version: i64,
    pub attempt: i64,
    pub idempotency_key: String,
    pub client_name: String,
    /// RFC 3339 (microseconds, UTC).
    pub started_at: String,
    pub ended_at: String,
    pub error: String,
    /// [`OPEN`] or [`CLEARED`].
    pub status: String,
    pub cleared_client_id: Option<String>,
}

/// The columns, in the order of [`SuspectedOrphan`]'s fields.
pub(crate) const COLUMNS: &str =
    "environment, provider_id, application_id, request_version, attempt, \
     idempotency_key, client_name, started_at, ended_at, error, status, cleared_client_id";

type Row = (
    String,
    String,
    String,
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
);

impl From<Row> for SuspectedOrphan {
    fn from(r: Row) -> Self {
        SuspectedOrphan {
            environment: r.0,
            provider_id: r.1,
            application_id: r.2,
            request_version: r.3,
            attempt: r.4,
            idempotency_key: r.5,
            client_name: r.6,
            started_at: r.7,
            ended_at: r.8,
            error: r.9,
            status: r.10,
            cleared_client_id: r.11,
        }
    }
}

/// What an application event changes in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Insert(SuspectedOrphan),
    Clear {
        environment: String,
        provider_id: String,
        application_id: String,
        request_version: i64,
        attempts: Vec<i64>,
        client_id: String,
    },
}

/// Whether an event type may change the table (cheap test before decoding).
pub(crate) fn concerns(event_type: &str) -> bool {
    matches!(
        event_type,
        "DcrAttemptOutcomeUnknown" | "DcrAttemptSuspicionsCleared"
    )
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The change an event of application `application_id` (of `environment`) makes, if any.
pub(crate) fn change(
    application_id: &str,
    environment: &str,
    event: &ApplicationEvent,
) -> Option<Change> {
    match event {
        ApplicationEvent::DcrAttemptOutcomeUnknown(e) => Some(Change::Insert(SuspectedOrphan {
            environment: environment.to_string(),
            provider_id: e.provider_id.clone(),
            application_id: application_id.to_string(),
            request_version: e.request_version,
            attempt: i64::from(e.attempt),
            idempotency_key: e.idempotency_key.clone(),
            client_name: e.client_name.as_str().to_string(),
            started_at: time(&e.started_at),
            ended_at: time(&e.ended_at),
            error: e.error.clone(),
            status: OPEN.to_string(),
            cleared_client_id: None,
        })),
        ApplicationEvent::DcrAttemptSuspicionsCleared(e) => Some(Change::Clear {
            environment: environment.to_string(),
            provider_id: e.provider_id.clone(),
            application_id: application_id.to_string(),
            request_version: e.request_version,
            attempts: e.attempts.iter().map(|a| i64::from(*a)).collect(),
            client_id: e.client_id.as_str().to_string(),
        }),
        _ => None,
    }
}

/// The table's key of a row.
pub(crate) type Key = (String, String, String, i64, i64);

/// Applies a change to rows kept in memory (the rebuild's replay).
pub(crate) fn apply_in_memory(rows: &mut BTreeMap<Key, SuspectedOrphan>, change: Change) {
    match change {
        Change::Insert(row) => {
            let key = (
                row.environment.clone(),
                row.provider_id.clone(),
                row.application_id.clone(),
                row.request_version,
                row.attempt,
            );
            rows.entry(key).or_insert(row);
        }
        Change::Clear {
            environment,
            provider_id,
            application_id,
            request_version,
            attempts,
            client_id,
        } => {
            for attempt in attempts {
                let key = (
                    environment.clone(),
                    provider_id.clone(),
                    application_id.clone(),
                    request_version,
                    attempt,
                );
                if let Some(row) = rows.get_mut(&key) {
                    row.status = CLEARED.to_string();
                    row.cleared_client_id = Some(client_id.clone());
                }
            }
        }
    }
}

/// The statements that apply a change to the table `table` (portable SQL), with their binds.
pub(crate) fn statements(table: &str, change: &Change) -> Vec<(String, Vec<Bind>)> {
    match change {
        Change::Insert(r) => vec![(
            format!(
                "INSERT INTO {table} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (environment, provider_id, application_id, request_version, attempt) DO NOTHING"
            ),
            vec![
                Bind::Text(r.environment.clone()),
                Bind::Text(r.provider_id.clone()),
                Bind::Text(r.application_id.clone()),
                Bind::Int(r.request_version),
                Bind::Int(r.attempt),
                Bind::Text(r.idempotency_key.clone()),
                Bind::Text(r.client_name.clone()),
                Bind::Text(r.started_at.clone()),
                Bind::Text(r.ended_at.clone()),
                Bind::Text(r.error.clone()),
                Bind::Text(r.status.clone()),
                Bind::Null,
            ],
        )],
        Change::Clear {
            environment,
            provider_id,
            application_id,
            request_version,
            attempts,
            client_id,
        } => attempts
            .iter()
            .map(|attempt| {
                (
                    format!(
                        "UPDATE {table} SET status = '{CLEARED}', cleared_client_id = $1 \
                         WHERE environment = $2 AND provider_id = $3 AND application_id = $4 \
                         AND request_version = $5 AND attempt = $6"
                    ),
                    vec![
                        Bind::Text(client_id.clone()),
                        Bind::Text(environment.clone()),
                        Bind::Text(provider_id.clone()),
                        Bind::Text(application_id.clone()),
                        Bind::Int(*request_version),
                        Bind::Int(*attempt),
                    ],
                )
            })
            .collect(),
    }
}

/// A bound value of [`statements`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
    Null,
}

impl ReadModel {
    /// A page of a provider's suspected orphans in an environment, oldest attempt first: the
    /// open ones, or all (`all`). With the total.
    pub async fn suspected_orphans(
        &self,
        env: &str,
        provider_id: &str,
        all: bool,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SuspectedOrphan>, i64), ReadModelError> {
        let filter = if all {
            String::new()
        } else {
            format!(" AND status = '{OPEN}'")
        };
        let (rows, total): (Vec<Row>, i64) = with_pool!(self.database(), pool => {
            let rows = sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM rm_suspected_orphans WHERE environment = $1 AND provider_id = $2{filter} \
                 ORDER BY started_at, application_id, request_version, attempt LIMIT $3 OFFSET $4"
            ))
            .bind(env).bind(provider_id).bind(limit).bind(offset)
            .fetch_all(pool).await.map_err(db_err)?;
            let total = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM rm_suspected_orphans WHERE environment = $1 AND provider_id = $2{filter}"
            ))
            .bind(env).bind(provider_id)
            .fetch_one(pool).await.map_err(db_err)?;
            (rows, total)
        });
        Ok((rows.into_iter().map(SuspectedOrphan::from).collect(), total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appreg_domain::application::{
        CreateApplication, DcrAttemptOutcomeUnknown, Policy, SuspicionProof,
    };
    use appreg_domain::dcr::IssuedClient;
    use appreg_domain::{
        ApplicationName, ApplicationType, ClientId, DomainError, EnvironmentId, UserId,
    };
    use appreg_eventstore::{AppendRequest, NewEvent};

    /// Appends what `decide` decides on the application's current state (folded here).
    async fn decide(
        store: &dyn EventStore,
        id: ApplicationId,
        state: &mut (Option<Application>, i64),
        decide: impl FnOnce(Option<&Application>) -> Result<Vec<ApplicationEvent>, DomainError>,
    ) {
        let events = decide(state.0.as_ref()).unwrap();
        let at = chrono::Utc::now();
        let new = events
            .iter()
            .map(|e| NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: e.event_type().into(),
                schema_version: e.schema_version(),
                data: e.data(),
                metadata: serde_json::json!({"environment": "DEFAULT"}),
                recorded_at: at,
            })
            .collect();
        store
            .append(AppendRequest {
                stream_id: id.stream_id(),
                stream_type: APPLICATION_STREAM.into(),
                expected_version: state.1,
                events: new,
                claims: vec![],
                releases: vec![],
            })
            .await
            .unwrap();
        for e in &events {
            state.1 += 1;
            state.0 = Application::evolve(state.0.take(), e, at, state.1);
        }
    }

    fn lost(request_version: i64, attempt: u32) -> DcrAttemptOutcomeUnknown {
        let at = chrono::Utc::now();
        DcrAttemptOutcomeUnknown {
            request_version,
            provider_id: "idp".into(),
            idempotency_key: format!("key-{request_version}"),
            attempt,
            client_name: ApplicationName::parse("b2b").unwrap(),
            started_at: at,
            ended_at: at,
            error: "registration: HTTP 500 server_error".into(),
        }
    }

    /// Two applications: one with two lost attempts then cleared, one with one left open. The
    /// projector and a rebuild give the same rows; the list filters and pages them.
    async fn projected_and_rebuilt(db: Database) {
        db.migrate().await.unwrap();
        crate::migrate(&db).await.unwrap();
        let store = db.event_store().await.unwrap();
        let policy = Policy {
            settings: appreg_domain::ClientRegistrationSettings {
                dcr_enabled: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut ids = vec![];
        for n in 0..2u128 {
            let id = ApplicationId(uuid::Uuid::from_u128(n + 1));
            let mut state = (None, 0);
            let cmd = CreateApplication {
                id,
                environment: EnvironmentId::default_env(),
                name: ApplicationName::parse("b2b").unwrap(),
                description: None,
                domain: None,
                app_type: ApplicationType::BackendToBackend,
                client_id: None,
                redirect_uris: vec![],
                grant_types: vec![],
                client_uri: None,
                logo_uri: None,
                provider_id: None,
                owner: UserId::parse("alice").unwrap(),
            };
            decide(&*store, id, &mut state, |_| {
                Application::create(cmd, &policy)
            })
            .await;
            let request = state.1;
            decide(&*store, id, &mut state, |a| {
                a.unwrap().record_unknown_attempt(lost(request, 1))
            })
            .await;
            if n == 0 {
                decide(&*store, id, &mut state, |a| {
                    a.unwrap().record_unknown_attempt(lost(request, 2))
                })
                .await;
                let client = ClientId::parse("kc-1").unwrap();
                decide(&*store, id, &mut state, |a| {
                    a.unwrap().register_dcr_client(
                        request,
                        IssuedClient {
                            provider_id: "idp".into(),
                            client_id: client.clone(),
                            client_secret_fingerprint: None,
                            client_secret_expires_at: None,
                        },
                    )
                })
                .await;
                decide(&*store, id, &mut state, |a| {
                    a.unwrap()
                        .clear_suspicions(request, client, SuspicionProof::IdempotentReplay)
                })
                .await;
            }
            ids.push(id.0.to_string());
        }
        let read = ReadModel::new(db.clone()).await.unwrap();
        // Read below PostgreSQL's cluster-wide visibility horizon: wait until every append is
        // under it, whatever other tests hold open on the server.
        let committed = store.last_committed().await.unwrap();
        while store.head().await.unwrap() < committed {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let events = store.read_log(LogPosition::START, 1000).await.unwrap();
        read.apply(&events).await.unwrap();

        let (open, total) = read
            .suspected_orphans("DEFAULT", "idp", false, 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 1);
        assert_eq!(open[0].application_id, ids[1]);
        assert_eq!((open[0].attempt, open[0].status.as_str()), (1, OPEN));
        let (all, total) = read
            .suspected_orphans("DEFAULT", "idp", true, 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 3);
        let cleared: Vec<_> = all.iter().filter(|o| o.status == CLEARED).collect();
        assert_eq!(cleared.len(), 2);
        assert!(cleared
            .iter()
            .all(|o| o.application_id == ids[0] && o.cleared_client_id.as_deref() == Some("kc-1")));
        let (page, total) = read
            .suspected_orphans("DEFAULT", "idp", true, 1, 2)
            .await
            .unwrap();
        assert_eq!((page.len(), total), (1, 3));
        // Another provider or environment: nothing.
        assert_eq!(
            read.suspected_orphans("DEFAULT", "other", true, 10, 0)
                .await
                .unwrap()
                .1,
            0
        );
        assert_eq!(
            read.suspected_orphans("OTHER", "idp", true, 10, 0)
                .await
                .unwrap()
                .1,
            0
        );

        let before = checksum(&db).await.unwrap();
        crate::rebuild(&db, |_| {}).await.unwrap();
        assert_eq!(checksum(&db).await.unwrap(), before, "rebuilt alike");
        let (again, _) = read
            .suspected_orphans("DEFAULT", "idp", true, 10, 0)
            .await
            .unwrap();
        assert_eq!(again, all);
    }

    #[tokio::test]
    async fn projected_and_rebuilt_sqlite() {
        let (_file, url) = appreg_test_support::postgres::fresh_sqlite_url();
        projected_and_rebuilt(Database::connect(&url, 2).await.unwrap()).await;
    }

    #[tokio::test]
    async fn projected_and_rebuilt_postgres() {
        let url = appreg_test_support::postgres::fresh_postgres_url().await;
        projected_and_rebuilt(Database::connect(&url, 4).await.unwrap()).await;
    }
}
