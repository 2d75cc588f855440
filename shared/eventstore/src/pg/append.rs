//! One append: its attempt and retry, the statements inside its transaction, the version
//! conflict of a failed guard, and the claim and error helpers shared with batches (and the
//! SQLite adapter).

use super::*;

impl PgEventStore {
    pub(super) async fn try_append(
        &self,
        request: &AppendRequest,
        claims: &[&Claim],
        releases: &[&Claim],
    ) -> Result<Appended, AppendError> {
        if claims.is_empty() && releases.is_empty() && self.commit_delay.is_none() {
            // Without claims an append is one INSERT statement, atomic on its own: run it
            // outside an explicit transaction, one round trip instead of three.
            let mut conn = self.conns.get().await.map_err(StoreError::from)?;
            return match append_in(&mut conn, request, claims, releases).await {
                Ok(appended) => {
                    conn.keep();
                    Ok(appended)
                }
                Err(failure) => {
                    drop(conn);
                    self.failed(request, failure).await
                }
            };
        }
        let mut conn = self.conns.get().await.map_err(StoreError::from)?;
        let mut tx = conn.begin().await.map_err(StoreError::from)?;
        let failure = match append_in(&mut tx, request, claims, releases).await {
            Ok(appended) => {
                self.test_delay().await;
                tx.commit().await.map_err(StoreError::from)?;
                conn.keep();
                return Ok(appended);
            }
            Err(failure) => failure,
        };
        self.test_delay().await;
        // Best effort: a failed ROLLBACK leaves the connection to sqlx, which closes it.
        if let Err(error) = tx.rollback().await {
            tracing::debug!(%error, "rollback of a failed append failed");
        }
        self.failed(request, failure).await
    }

    /// The error of a failed append (after its rollback).
    pub(super) async fn failed(
        &self,
        request: &AppendRequest,
        failure: Failure,
    ) -> Result<Appended, AppendError> {
        match failure {
            Failure::Append(error) => Err(error),
            Failure::VersionRace => {
                let actual = sqlx::query_scalar::<_, i64>(CURRENT_VERSION)
                    .bind(&request.stream_id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(StoreError::from)?;
                Err(AppendError::VersionConflict {
                    stream_id: request.stream_id.clone(),
                    expected: request.expected_version,
                    actual,
                })
            }
        }
    }
}

/// The conflict of a request whose version guard failed, with the stream's actual version.
pub(super) async fn version_conflict(tx: &mut PgConnection, request: &AppendRequest) -> Failure {
    match sqlx::query_scalar::<_, i64>(CURRENT_VERSION)
        .bind(&request.stream_id)
        .fetch_one(&mut *tx)
        .await
    {
        Ok(actual) => Failure::Append(AppendError::VersionConflict {
            stream_id: request.stream_id.clone(),
            expected: request.expected_version,
            actual,
        }),
        Err(error) => error.into(),
    }
}

/// The statements of one append, inside `tx` (see the module doc for their order).
async fn append_in(
    tx: &mut PgConnection,
    request: &AppendRequest,
    claims: &[&Claim],
    releases: &[&Claim],
) -> Result<Appended, Failure> {
    let events = &request.events;
    let rows = sqlx::query(INSERT_EVENTS)
        .bind(&request.stream_id)
        .bind(&request.stream_type)
        .bind(request.expected_version)
        .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.event_type.clone())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.schema_version).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.data.clone()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.metadata.clone())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await
        .map_err(|error| match unique_violation(&error) {
            Some("events_stream_version_key") => Failure::VersionRace,
            Some("events_pkey") => Failure::Append(StoreError::DuplicateEventId.into()),
            _ => Failure::from(error),
        })?;

    if rows.is_empty() {
        return Err(version_conflict(tx, request).await);
    }
    let mut last = (0i64, LogPosition::START);
    for row in &rows {
        let version: i64 = row.try_get("version")?;
        if version > last.0 {
            let position = LogPosition {
                tx: row.try_get("tx_id")?,
                pos: row.try_get("position")?,
            };
            last = (version, position);
        }
    }

    if !releases.is_empty() {
        sqlx::query(RELEASE_CLAIMS)
            .bind(releases.iter().map(|c| c.scope.clone()).collect::<Vec<_>>())
            .bind(releases.iter().map(|c| c.value.clone()).collect::<Vec<_>>())
            .bind(&request.stream_id)
            .execute(&mut *tx)
            .await?;
    }

    if !claims.is_empty() {
        let taken = sqlx::query(TAKE_CLAIMS)
            .bind(claims.iter().map(|c| c.scope.clone()).collect::<Vec<_>>())
            .bind(claims.iter().map(|c| c.value.clone()).collect::<Vec<_>>())
            .bind(&request.stream_id)
            .fetch_all(&mut *tx)
            .await?;
        if taken.len() != claims.len() {
            let taken = taken
                .iter()
                .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?)))
                .collect::<Result<HashSet<_>, sqlx::Error>>()?;
            if let Some(claim) = claims
                .iter()
                .find(|c| !taken.contains(&(c.scope.clone(), c.value.clone())))
            {
                return Err(Failure::Append(AppendError::ClaimTaken {
                    scope: claim.scope.clone(),
                    value: claim.value.clone(),
                }));
            }
        }
    }

    Ok(Appended {
        version: last.0,
        position: last.1,
    })
}

/// Claims sorted and deduplicated: a consistent lock order across appenders, and no row
/// affected twice by one `INSERT … ON CONFLICT`.
pub(crate) fn sorted_unique(claims: &[Claim]) -> Vec<&Claim> {
    let mut sorted: Vec<&Claim> = claims.iter().collect();
    sorted.sort_by(|a, b| (&a.scope, &a.value).cmp(&(&b.scope, &b.value)));
    sorted.dedup();
    sorted
}

/// The checks of a batch before anything is sent: at least one request, each with events
/// (`Empty`), no stream twice (`DuplicateStream`).
pub(crate) fn check_batch(requests: &[AppendRequest]) -> Result<(), AppendError> {
    if requests.is_empty() {
        return Err(AppendError::Empty);
    }
    let mut streams = HashSet::with_capacity(requests.len());
    for request in requests {
        if request.events.is_empty() {
            return Err(AppendError::Empty);
        }
        if !streams.insert(request.stream_id.as_str()) {
            return Err(AppendError::DuplicateStream {
                stream_id: request.stream_id.clone(),
            });
        }
    }
    Ok(())
}

/// The claims of a batch with their streams, sorted by `(scope, value)` across the batch (one
/// lock order for all appenders) and deduplicated. Two streams of the batch claiming the same
/// value is a `ClaimTaken` (one `INSERT … ON CONFLICT` cannot affect a row twice).
pub(crate) fn batch_claims(requests: &[AppendRequest]) -> Result<Vec<(&Claim, &str)>, AppendError> {
    let mut claims: Vec<(&Claim, &str)> = requests
        .iter()
        .flat_map(|r| r.claims.iter().map(move |c| (c, r.stream_id.as_str())))
        .collect();
    claims.sort_by(|a, b| (&a.0.scope, &a.0.value, a.1).cmp(&(&b.0.scope, &b.0.value, b.1)));
    claims.dedup();
    if let Some(pair) = claims.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(AppendError::ClaimTaken {
            scope: pair[0].0.scope.clone(),
            value: pair[0].0.value.clone(),
        });
    }
    Ok(claims)
}

/// The releases of a batch with their streams, sorted and deduplicated.
pub(crate) fn batch_releases(requests: &[AppendRequest]) -> Vec<(&Claim, &str)> {
    let mut releases: Vec<(&Claim, &str)> = requests
        .iter()
        .flat_map(|r| r.releases.iter().map(move |c| (c, r.stream_id.as_str())))
        .collect();
    releases.sort_by(|a, b| (&a.0.scope, &a.0.value, a.1).cmp(&(&b.0.scope, &b.0.value, b.1)));
    releases.dedup();
    releases
}

/// The constraint a unique violation is about (None for any other error).
pub(super) fn unique_violation(error: &sqlx::Error) -> Option<&str> {
    error
        .as_database_error()
        .filter(|e| e.kind() == ErrorKind::UniqueViolation)
        .and_then(|e| e.constraint())
}

/// Deadlock victim or serialisation failure: the transaction was rolled back and may be retried.
pub(super) fn is_transient(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}
