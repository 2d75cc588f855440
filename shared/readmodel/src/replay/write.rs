//! Writing the replay's rows: COPY text per table, one transaction per batch, the keys and
//! indexes built after the load, and the users, environments, parked events and checkpoint.

use super::*;

/// One write transaction of a table, its rows as COPY text.
#[derive(Default)]
pub(super) struct Rows {
    /// Rows of applications without a row yet (applications), or every membership row.
    pub(super) fresh: String,
    /// Rows of applications written before (applications: upserted).
    pub(super) again: String,
    /// Applications written before (members: their rows are replaced).
    pub(super) again_ids: Vec<String>,
}

/// Users, environments and parked events not yet written, and the checkpoint.
pub(super) struct Others {
    pub(super) users: String,
    pub(super) environments: String,
    /// Every suspected orphan (at the end of the log only).
    pub(super) orphans: String,
    pub(super) parked: Vec<Parked>,
    /// Users erased (environment, user): their row keeps no name or e-mail.
    pub(super) erased: Vec<(String, String)>,
    pub(super) checkpoint: Option<LogPosition>,
}

/// Writes the rows of one table.
pub(super) trait Writer {
    async fn write(&self, tx: &mut PgConnection, rows: Rows) -> Result<(), ReadModelError>;
}

pub(super) struct AppRows(pub(super) Tables);

impl Writer for AppRows {
    async fn write(&self, tx: &mut PgConnection, rows: Rows) -> Result<(), ReadModelError> {
        let t = &self.0;
        copy_in(
            tx,
            &format!(
                "COPY {} (id, environment, status, created_at, doc, pending_subscriptions) FROM STDIN",
                t.applications
            ),
            rows.fresh,
        )
        .await?;
        if rows.again.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "CREATE TEMP TABLE rm_rebuild_stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP",
            t.applications
        ))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        copy_in(
            tx,
            "COPY rm_rebuild_stage (id, environment, status, created_at, doc, pending_subscriptions) FROM STDIN",
            rows.again,
        )
        .await?;
        sqlx::query(&format!(
            "INSERT INTO {} (id, environment, status, created_at, doc, pending_subscriptions) \
             SELECT id, environment, status, created_at, doc, pending_subscriptions FROM rm_rebuild_stage \
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc, \
             pending_subscriptions = excluded.pending_subscriptions",
            t.applications
        ))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

pub(super) struct MemberRows(pub(super) Tables);

impl Writer for MemberRows {
    async fn write(&self, tx: &mut PgConnection, rows: Rows) -> Result<(), ReadModelError> {
        let t = &self.0;
        if !rows.again_ids.is_empty() {
            sqlx::query(&format!(
                "DELETE FROM {} WHERE application_id = ANY($1)",
                t.members
            ))
            .bind(&rows.again_ids)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        copy_in(
            tx,
            &format!(
                "COPY {} (application_id, user_id, environment, role) FROM STDIN",
                t.members
            ),
            rows.fresh,
        )
        .await
    }
}

/// Writes each batch of rows in a transaction of its own, in order, on one connection; stops
/// at the first failure. Returns the connection.
pub(super) async fn write_rows(
    mut conn: PoolConnection<Postgres>,
    mut batches: tokio::sync::mpsc::Receiver<Rows>,
    writer: impl Writer,
) -> Result<PoolConnection<Postgres>, ReadModelError> {
    while let Some(rows) = batches.recv().await {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(db_err)?;
        // Nothing here must survive a crash before the swap, whose commit is durable (and
        // makes every earlier commit durable with it).
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        writer.write(&mut tx, rows).await?;
        tx.commit().await.map_err(db_err)?;
    }
    Ok(conn)
}

/// Once every row is in: the applications' and members' keys (unless `keyed`) and secondary
/// indexes, built by two connections taking the next index as they become free (largest
/// first; two indexes of one table can be built at once), then each table's key constraint
/// and statistics.
pub(super) async fn finish_tables(
    t: &Tables,
    keyed: bool,
    connections: [PoolConnection<Postgres>; 2],
) -> Result<(), ReadModelError> {
    let [[apps_key, apps_constraint], [members_key, members_constraint]] = t.key_ddl();
    let [apps_index, members_index, users_index] = t.index_ddl();
    let mut indexes = vec![members_index, apps_index, users_index];
    if !keyed {
        indexes.insert(1, members_key);
        indexes.push(apps_key);
    }
    let queue = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        indexes,
    )));
    let builders = connections.map(|mut conn| {
        let queue = queue.clone();
        tokio::spawn(async move {
            loop {
                let next = queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .pop_front();
                let Some(ddl) = next else {
                    return Ok::<_, ReadModelError>(conn);
                };
                let t0 = Instant::now();
                sqlx::query(&ddl)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                tracing::debug!(ddl, seconds = t0.elapsed().as_secs_f64(), "rebuild index");
            }
        })
    });
    let mut conns = Vec::with_capacity(2);
    for builder in builders {
        conns.push(builder.await.map_err(ReadModelError::internal)?);
    }
    let conns: Vec<PoolConnection<Postgres>> = conns.into_iter().collect::<Result<_, _>>()?;
    let per_table = [
        (apps_constraint, vec![t.applications, t.environments]),
        (members_constraint, vec![t.members, t.users]),
    ];
    let finishers = conns
        .into_iter()
        .zip(per_table)
        .map(|(mut conn, (constraint, tables))| {
            tokio::spawn(async move {
                if !keyed {
                    sqlx::query(&constraint)
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                }
                for table in tables {
                    let t0 = Instant::now();
                    sqlx::query(&format!("ANALYZE {table}"))
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    tracing::debug!(
                        table,
                        seconds = t0.elapsed().as_secs_f64(),
                        "rebuild analyze"
                    );
                }
                Ok::<_, ReadModelError>(())
            })
        });
    let finishers: Vec<_> = finishers.collect();
    for finisher in finishers {
        finisher.await.map_err(ReadModelError::internal)??;
    }
    Ok(())
}

/// Users, environments, parked events and the checkpoint.
pub(super) async fn write_others(
    tx: &mut PgConnection,
    t: &Tables,
    others: Others,
) -> Result<(), ReadModelError> {
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    copy_in(
        tx,
        &format!(
            "COPY {} (environment, user_id, name, email, first_seen) FROM STDIN",
            t.users
        ),
        others.users,
    )
    .await?;
    for (env, user) in &others.erased {
        sqlx::query(&format!(
            "UPDATE {} SET name = NULL, email = NULL WHERE environment = $1 AND user_id = $2",
            t.users
        ))
        .bind(env)
        .bind(user)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    }
    copy_in(
        tx,
        &format!("COPY {} (id, name, created_at) FROM STDIN", t.environments),
        others.environments,
    )
    .await?;
    copy_in(
        tx,
        &format!(
            "COPY {} ({}) FROM STDIN",
            t.orphans,
            crate::orphans::COLUMNS
        ),
        others.orphans,
    )
    .await?;
    if !others.parked.is_empty() {
        let now = chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        for p in &others.parked {
            sqlx::query(
                "INSERT INTO rm_parked (projection, event_id, stream_id, version, event_type, tx, pos, reason, attempts, parked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (projection, event_id) DO NOTHING",
            )
            .bind(t.checkpoint)
            .bind(p.event_id.to_string())
            .bind(&p.stream_id)
            .bind(p.version)
            .bind(&p.event_type)
            .bind(p.position.tx)
            .bind(p.position.pos)
            .bind(&p.reason)
            .bind(i64::from(p.attempts))
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tracing::warn!(
            projection = t.checkpoint,
            parked = others.parked.len(),
            "events parked"
        );
        metrics::counter!("appreg_projection_parked_total", "projection" => t.checkpoint)
            .increment(others.parked.len() as u64);
    }
    if let Some(position) = others.checkpoint {
        sqlx::query(UPSERT_CHECKPOINT)
            .bind(t.checkpoint)
            .bind(position.tx)
            .bind(position.pos)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

/// Appends one row in COPY's text format (`None` is NULL).
/// The COPY text of the suspected orphans' rows.
pub(super) fn orphan_rows(
    rows: std::collections::BTreeMap<crate::orphans::Key, crate::orphans::SuspectedOrphan>,
) -> String {
    let mut out = String::new();
    for o in rows.into_values() {
        let (version, attempt) = (o.request_version.to_string(), o.attempt.to_string());
        row(
            &mut out,
            &[
                Some(&o.environment),
                Some(&o.provider_id),
                Some(&o.application_id),
                Some(&version),
                Some(&attempt),
                Some(&o.idempotency_key),
                Some(&o.client_name),
                Some(&o.started_at),
                Some(&o.ended_at),
                Some(&o.error),
                Some(&o.status),
                o.cleared_client_id.as_deref(),
            ],
        );
    }
    out
}

pub(super) fn row(out: &mut String, fields: &[Option<&str>]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match field {
            None => out.push_str("\\N"),
            Some(s) => escape(out, s),
        }
    }
    out.push('\n');
}

pub(super) fn escape(out: &mut String, s: &str) {
    if !s
        .bytes()
        .any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t'))
    {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

pub(super) async fn copy_in(
    conn: &mut PgConnection,
    statement: &str,
    data: String,
) -> Result<(), ReadModelError> {
    if data.is_empty() {
        return Ok(());
    }
    let mut copy = conn.copy_in_raw(statement).await.map_err(db_err)?;
    copy.send(data.into_bytes()).await.map_err(db_err)?;
    copy.finish().await.map_err(db_err)?;
    Ok(())
}
