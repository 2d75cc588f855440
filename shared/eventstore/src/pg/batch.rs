//! Batches of appends ([`EventStore::append_batch`] and [`EventStore::append_each`]): one
//! autocommit `INSERT` for independent appends, or one transaction for a whole batch.

use super::*;

impl PgEventStore {
    /// Independent appends without claims or releases in one autocommit `INSERT` (see
    /// [`EventStore::append_each`]): a stream whose guard failed wrote nothing and gets its
    /// `VersionConflict`. `None` when the statement failed as a whole (a unique violation, a
    /// duplicate event id, a lost connection): it wrote nothing, and the caller appends one by one.
    pub(super) async fn insert_each(
        &self,
        requests: &[AppendRequest],
    ) -> Option<Vec<Result<Appended, AppendError>>> {
        let inserted = {
            let mut conn = match self.conns.get().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::debug!(%error, "no connection for a grouped insert");
                    return None;
                }
            };
            match insert_batch_events(&mut conn, requests).await {
                Ok(inserted) => {
                    conn.keep();
                    inserted
                }
                Err(failure) => {
                    tracing::debug!(?failure, "grouped insert refused; appending one by one");
                    return None;
                }
            }
        };
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            answers.push(match inserted.get(&request.stream_id) {
                Some((count, last)) if *count == request.events.len() => Ok(*last),
                Some(_) => Err(StoreError::Corrupt(format!(
                    "a grouped insert wrote part of the events of {}",
                    request.stream_id
                ))
                .into()),
                // The guard held for none of this stream's rows: nothing of it was written.
                None => self.failed(request, Failure::VersionRace).await,
            });
        }
        Some(answers)
    }

    /// One attempt of a batch, in an explicit transaction (committed or rolled back here).
    pub(super) async fn try_append_batch(
        &self,
        requests: &[AppendRequest],
        claims: &[(&Claim, &str)],
        releases: &[(&Claim, &str)],
    ) -> Result<Vec<Appended>, Failure> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await?;
        let result = append_batch_in(&mut tx, requests, claims, releases).await;
        self.test_delay().await;
        match result {
            Ok(appended) => {
                tx.commit().await?;
                conn.keep();
                Ok(appended)
            }
            Err(failure) => {
                // Best effort: a failed ROLLBACK leaves the connection to sqlx, which closes it.
                if let Err(error) = tx.rollback().await {
                    tracing::debug!(%error, "rollback of a failed batch failed");
                }
                Err(failure)
            }
        }
    }

    /// The conflict behind a unique violation of a batch (after its rollback): the first
    /// request whose stream is no longer at its expected version.
    pub(super) async fn batch_conflict(&self, requests: &[AppendRequest]) -> AppendError {
        let streams: Vec<&str> = requests.iter().map(|r| r.stream_id.as_str()).collect();
        let actual = match sqlx::query_as::<_, (String, i64)>(CURRENT_VERSIONS)
            .bind(&streams)
            .fetch_all(&self.pool)
            .await
        {
            Ok(rows) => rows,
            Err(error) => return StoreError::from(error).into(),
        };
        requests
            .iter()
            .zip(actual)
            .find(|(request, (_, actual))| *actual != request.expected_version)
            .map_or_else(
                || {
                    // Versions only grow and a stream appears once per batch, so a violation of
                    // events_stream_version_key leaves one stream past its expected version.
                    StoreError::Corrupt(
                        "a batch hit a version race, yet every stream is at its expected version"
                            .to_string(),
                    )
                    .into()
                },
                |(request, (_, actual))| AppendError::VersionConflict {
                    stream_id: request.stream_id.clone(),
                    expected: request.expected_version,
                    actual,
                },
            )
    }
}

/// Per stream: the rows a batch's `INSERT` wrote, and the version and position of its last event.
type Inserted = HashMap<String, (usize, Appended)>;

/// The one `INSERT` of the events of all `requests`, each row guarded by its own stream's
/// expected version (a stream's rows share one snapshot: all of them pass or none does).
async fn insert_batch_events(
    conn: &mut PgConnection,
    requests: &[AppendRequest],
) -> Result<Inserted, Failure> {
    let total: usize = requests.iter().map(|r| r.events.len()).sum();
    let mut event_ids = Vec::with_capacity(total);
    let mut stream_ids = Vec::with_capacity(total);
    let mut stream_types = Vec::with_capacity(total);
    let mut expected = Vec::with_capacity(total);
    let mut indexes = Vec::with_capacity(total);
    let mut event_types = Vec::with_capacity(total);
    let mut schema_versions = Vec::with_capacity(total);
    let mut data = Vec::with_capacity(total);
    let mut metadata = Vec::with_capacity(total);
    let mut recorded_at = Vec::with_capacity(total);
    for request in requests {
        for (index, event) in (1i64..).zip(&request.events) {
            event_ids.push(event.event_id);
            stream_ids.push(request.stream_id.as_str());
            stream_types.push(request.stream_type.as_str());
            expected.push(request.expected_version);
            indexes.push(index);
            event_types.push(event.event_type.as_str());
            schema_versions.push(event.schema_version);
            data.push(event.data.clone());
            metadata.push(event.metadata.clone());
            recorded_at.push(event.recorded_at);
        }
    }
    let rows = sqlx::query(INSERT_BATCH_EVENTS)
        .bind(event_ids)
        .bind(stream_ids)
        .bind(stream_types)
        .bind(expected)
        .bind(indexes)
        .bind(event_types)
        .bind(schema_versions)
        .bind(data)
        .bind(metadata)
        .bind(recorded_at)
        .fetch_all(&mut *conn)
        .await
        .map_err(|error| match unique_violation(&error) {
            Some("events_stream_version_key") => Failure::VersionRace,
            Some("events_pkey") => Failure::Append(StoreError::DuplicateEventId.into()),
            _ => Failure::from(error),
        })?;

    let mut inserted: Inserted = HashMap::with_capacity(requests.len());
    for row in &rows {
        let version: i64 = row.try_get("version")?;
        let (count, last) = inserted.entry(row.try_get("stream_id")?).or_insert((
            0,
            Appended {
                version: 0,
                position: LogPosition::START,
            },
        ));
        *count += 1;
        if version > last.version {
            *last = Appended {
                version,
                position: LogPosition {
                    tx: row.try_get("tx_id")?,
                    pos: row.try_get("position")?,
                },
            };
        }
    }
    Ok(inserted)
}

/// The statements of a batch, inside `tx`: the same steps as an append (see the module doc),
/// each sent once for all requests.
async fn append_batch_in(
    tx: &mut PgConnection,
    requests: &[AppendRequest],
    claims: &[(&Claim, &str)],
    releases: &[(&Claim, &str)],
) -> Result<Vec<Appended>, Failure> {
    let inserted = insert_batch_events(tx, requests).await?;
    let mut appended = Vec::with_capacity(requests.len());
    for request in requests {
        match inserted.get(&request.stream_id) {
            Some((count, last)) if *count == request.events.len() => appended.push(*last),
            // The guard held for none of this stream's rows (they share one snapshot).
            _ => return Err(version_conflict(tx, request).await),
        }
    }

    if !releases.is_empty() {
        let (scopes, values, streams) = claim_columns(releases);
        sqlx::query(RELEASE_BATCH_CLAIMS)
            .bind(scopes)
            .bind(values)
            .bind(streams)
            .execute(&mut *tx)
            .await?;
    }

    if !claims.is_empty() {
        let (scopes, values, streams) = claim_columns(claims);
        let taken = sqlx::query(TAKE_BATCH_CLAIMS)
            .bind(scopes)
            .bind(values)
            .bind(streams)
            .fetch_all(&mut *tx)
            .await?;
        if taken.len() != claims.len() {
            let taken = taken
                .iter()
                .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?)))
                .collect::<Result<HashSet<_>, sqlx::Error>>()?;
            if let Some((claim, _)) = claims
                .iter()
                .find(|(c, _)| !taken.contains(&(c.scope.clone(), c.value.clone())))
            {
                return Err(Failure::Append(AppendError::ClaimTaken {
                    scope: claim.scope.clone(),
                    value: claim.value.clone(),
                }));
            }
        }
    }

    Ok(appended)
}

/// The scope, value and stream columns of a batch's (claim, stream) pairs, for `UNNEST`.
fn claim_columns<'a>(pairs: &[(&'a Claim, &'a str)]) -> (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>) {
    (
        pairs.iter().map(|(c, _)| c.scope.as_str()).collect(),
        pairs.iter().map(|(c, _)| c.value.as_str()).collect(),
        pairs.iter().map(|(_, s)| *s).collect(),
    )
}
