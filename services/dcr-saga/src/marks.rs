//! Group commit of the in-flight marks (`dcr_attempts`): before each call of a provider the
//! request's attempt is marked, durably, so that a saga that dies before the answer leaves the
//! mark behind (the attempt is then recorded as one whose outcome is unknown). The requests in
//! flight hand their marks to one task, which writes whatever has queued up meanwhile in one
//! statement and one commit, and answers each after the commit: no call is sent before its
//! mark is durable.

use crate::batch::{self, Queue};
use crate::saga::SagaError;
use appreg_eventstore::{Database, Kept};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most marks written by one statement.
const MAX_BATCH: usize = 256;

const UPSERT: &str = "\
INSERT INTO dcr_attempts (request_key, attempt, started_at)
SELECT m.key, m.attempt, m.started_at
FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS m(key, attempt, started_at)
ON CONFLICT (request_key) DO UPDATE SET attempt = excluded.attempt, started_at = excluded.started_at";

const UPSERT_ONE: &str = "\
INSERT INTO dcr_attempts (request_key, attempt, started_at) VALUES ($1, $2, $3) \
ON CONFLICT (request_key) DO UPDATE SET attempt = excluded.attempt, started_at = excluded.started_at";

struct Mark {
    key: String,
    attempt: i64,
    started_at: String,
    reply: oneshot::Sender<Result<(), Arc<SagaError>>>,
}

pub(crate) struct Marks {
    queue: Queue<Mark>,
    db: Database,
}

impl Marks {
    pub fn new(db: Database) -> Self {
        Marks {
            queue: Queue::new(),
            db,
        }
    }

    /// Marks attempt `attempt` of the request `key` in flight, started at `started_at`;
    /// returns once the mark is committed.
    pub async fn mark(
        &self,
        key: &str,
        attempt: u32,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), SagaError> {
        let (reply, answer) = oneshot::channel();
        let mark = Mark {
            key: key.to_string(),
            attempt: i64::from(attempt),
            started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            reply,
        };
        let stopped = || SagaError::Stopped("in-flight marks");
        if !self
            .queue
            .send(mark, |receiver| batches(receiver, self.db.clone()))
        {
            return Err(stopped());
        }
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(SagaError::Batch)
    }
}

async fn batches(mut receiver: mpsc::UnboundedReceiver<Mark>, db: Database) {
    let mut kept = Kept::new();
    while let Some(mut marks) = batch::next(&mut receiver, MAX_BATCH, &mut kept).await {
        // A request whose handler is gone (the saga stepped down) sends nothing: no mark.
        marks.retain(|m| !m.reply.is_closed());
        if marks.is_empty() {
            continue;
        }
        // One row per request (a statement may not change a row twice): its latest mark.
        let mut latest: HashMap<&str, usize> = HashMap::new();
        for (i, m) in marks.iter().enumerate() {
            latest.insert(m.key.as_str(), i);
        }
        let mut rows: Vec<&Mark> = latest.into_values().map(|i| &marks[i]).collect();
        rows.sort_by_key(|m| m.key.as_str());
        let written = write(&db, &rows, &mut kept)
            .await
            .map_err(|e| Arc::new(e.into()));
        for mark in marks {
            let _ = mark.reply.send(written.clone());
        }
    }
}

async fn write(db: &Database, rows: &[&Mark], kept: &mut Kept) -> Result<(), sqlx::Error> {
    match db {
        Database::Postgres(pool) => {
            let written = sqlx::query(UPSERT)
                .bind(rows.iter().map(|m| m.key.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|m| m.attempt).collect::<Vec<_>>())
                .bind(
                    rows.iter()
                        .map(|m| m.started_at.as_str())
                        .collect::<Vec<_>>(),
                )
                .execute(kept.get(pool).await?)
                .await;
            kept.used(written.is_ok());
            written?;
        }
        Database::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            for m in rows {
                sqlx::query(UPSERT_ONE)
                    .bind(&m.key)
                    .bind(m.attempt)
                    .bind(&m.started_at)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use appreg_test_support::postgres::{fresh_postgres_url, fresh_sqlite_url};

    async fn marked(db: &Database) -> Vec<(String, i64)> {
        let sql = "SELECT request_key, attempt FROM dcr_attempts ORDER BY request_key";
        match db {
            Database::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
            Database::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        }
    }

    /// Given marks queued together, one request's twice (its next attempt), when they are
    /// written, then each caller is answered once they are committed, with each request's latest
    /// mark — on PostgreSQL in one statement, which may not change a row twice.
    #[tokio::test]
    async fn marks_queued_together_are_written_together_each_requests_latest() {
        let (_file, sqlite) = fresh_sqlite_url();
        for url in [fresh_postgres_url().await, sqlite] {
            let db = Database::connect(&url, 4).await.unwrap();
            crate::migrate(&db).await.unwrap();
            let marks = Marks::new(db.clone());
            let at = chrono::Utc::now();
            // Queued before the batching task runs (this runtime has one thread).
            let (a, b, a_again, c) = tokio::join!(
                marks.mark("a:1", 1, at),
                marks.mark("b:1", 1, at),
                marks.mark("a:1", 2, at),
                marks.mark("c:1", 1, at),
            );
            for answer in [a, b, a_again, c] {
                answer.unwrap();
            }
            assert_eq!(
                marked(&db).await,
                [("a:1".into(), 2), ("b:1".into(), 1), ("c:1".into(), 1)],
                "{url}"
            );
            // A later attempt of a marked request moves its mark.
            marks.mark("b:1", 3, at).await.unwrap();
            assert_eq!(marked(&db).await[1], ("b:1".into(), 3));
            // A mark whose request was given up before it was written (the saga stepped down)
            // is not written: that attempt is never sent.
            let mut gone = Box::pin(marks.mark("gone:1", 1, at));
            tokio::select! {
                biased;
                _ = &mut gone => panic!("answered before the batching task ran"),
                () = std::future::ready(()) => {}
            }
            drop(gone);
            marks.mark("kept:1", 1, at).await.unwrap();
            let keys: Vec<String> = marked(&db).await.into_iter().map(|(k, _)| k).collect();
            assert_eq!(keys, ["a:1", "b:1", "c:1", "kept:1"], "{url}");
            db.close().await;
        }
    }
}
