//! Connections kept checked out between uses, so that they skip the pool's test.
//!
//! sqlx tests every connection that goes back into its pool with a round trip (a Sync message
//! and PostgreSQL's ReadyForQuery). Most uses are one statement or one short transaction, so in
//! the DCR benchmark that test was about two round trips in five (1.1 per registration; 0.02–0.1
//! with the connections kept). Two ways to skip it:
//! - [`Conns`]: the store keeps up to a quarter of the pool's connections after use and hands
//!   them to its next callers. They go back to the pool when the pool is being closed (so that
//!   `close` does not wait for them) and when the store is dropped.
//! - [`Kept`]: a task that writes batches one after the other keeps its connection while more
//!   work comes within [`Kept::IDLE`], and gives it back to the pool once it is idle.
//!
//! A connection whose use failed is never kept: it goes back to the pool, whose test closes it
//! if it is broken. What sqlx's test also does, sending what a cancelled use left queued (the
//! ROLLBACK of a dropped transaction), the next statement on a kept connection does first.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, Postgres};
use sqlx::PgConnection;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The connections a store keeps between its uses.
pub(crate) struct Conns {
    pool: PgPool,
    idle: Mutex<Vec<PoolConnection<Postgres>>>,
    /// At most this many are kept (a quarter of the pool: the rest serves everyone else).
    keep: usize,
}

impl Conns {
    pub fn new(pool: PgPool) -> Arc<Conns> {
        let keep = usize::try_from(pool.options().get_max_connections() / 4).unwrap_or(0);
        Arc::new(Conns {
            pool,
            idle: Mutex::new(Vec::new()),
            keep,
        })
    }

    /// A kept connection, or one of the pool's.
    pub async fn get(&self) -> Result<Lease<'_>, sqlx::Error> {
        let kept = self.lock().pop();
        let conn = match kept {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(Lease {
            conn: Some(conn),
            home: self,
        })
    }

    /// Gives every kept connection back to the pool (it is being closed).
    pub fn release_all(&self) {
        let idle = std::mem::take(&mut *self.lock());
        drop(idle);
    }

    fn put(&self, conn: PoolConnection<Postgres>) {
        if self.pool.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < self.keep {
            idle.push(conn);
        }
        // Otherwise dropped after the lock: back to the pool.
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PoolConnection<Postgres>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Conns {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.lock());
        if tokio::runtime::Handle::try_current().is_err() {
            // Returning a connection to its pool needs a runtime: without one, close them.
            for conn in idle {
                drop(conn.detach());
            }
        }
    }
}

/// A connection lent by [`Conns`]: back to the pool when dropped, kept by [`Lease::keep`].
pub(crate) struct Lease<'a> {
    conn: Option<PoolConnection<Postgres>>,
    home: &'a Conns,
}

impl Lease<'_> {
    /// The use succeeded: the connection is kept for the store's next caller.
    pub fn keep(mut self) {
        if let Some(conn) = self.conn.take() {
            self.home.put(conn);
        }
    }
}

impl std::ops::Deref for Lease<'_> {
    type Target = PgConnection;

    #[allow(clippy::expect_used)] // invariant: only `keep` takes it, consuming the lease
    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("a lease holds its connection")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    #[allow(clippy::expect_used)] // invariant: only `keep` takes it, consuming the lease
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a lease holds its connection")
    }
}

/// The connection of a task that writes batches one after the other (see the module doc).
#[derive(Default)]
pub struct Kept {
    conn: Option<PoolConnection<Postgres>>,
}

impl Kept {
    /// How long a task keeps its connection without work.
    pub const IDLE: Duration = Duration::from_millis(20);

    pub fn new() -> Kept {
        Kept::default()
    }

    /// The kept connection, or one of `pool`'s. Once `pool` is being closed, none is kept (its
    /// `close` waits for every connection checked out).
    pub async fn get(&mut self, pool: &PgPool) -> Result<&mut PgConnection, sqlx::Error> {
        let kept = self.conn.take().filter(|_| !pool.is_closed());
        let conn = match kept {
            Some(conn) => conn,
            None => pool.acquire().await?,
        };
        Ok(&mut **self.conn.insert(conn))
    }

    /// After a use: the connection is kept if the use succeeded, otherwise it goes back to the
    /// pool (which tests it).
    pub fn used(&mut self, ok: bool) {
        if !ok {
            self.conn = None;
        }
    }

    /// Whether a connection is kept.
    pub fn holds(&self) -> bool {
        self.conn.is_some()
    }

    /// Gives the connection back to the pool (the task is idle).
    pub fn release(&mut self) {
        self.conn = None;
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if tokio::runtime::Handle::try_current().is_err() {
                drop(conn.detach());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::PgPoolOptions;

    async fn pool(max: u32) -> PgPool {
        let url = appreg_test_support::postgres::fresh_postgres_url().await;
        PgPoolOptions::new()
            .max_connections(max)
            .connect(&url)
            .await
            .expect("PostgreSQL is required for this test")
    }

    async fn backend(conn: &mut PgConnection) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    /// Given a store's kept connections, when a use succeeds, then the next caller gets the same
    /// connection; when a use fails, then it goes back to the pool; at most a quarter of the
    /// pool is kept; and closing the pool gives the kept ones back (close does not wait for them).
    #[tokio::test]
    async fn a_successful_use_is_kept_a_failed_one_is_not_and_close_takes_them_back() {
        let pool = pool(8).await;
        let conns = Conns::new(pool.clone());
        let mut a = conns.get().await.unwrap();
        let first = backend(&mut a).await;
        a.keep();
        let mut b = conns.get().await.unwrap();
        assert_eq!(
            backend(&mut b).await,
            first,
            "the kept connection is lent again"
        );
        assert!(sqlx::query("SELECT nonsense")
            .execute(&mut *b)
            .await
            .is_err());
        drop(b);
        assert!(conns.lock().is_empty(), "a failed use is not kept");

        let leases: Vec<Lease<'_>> = futures::future::join_all((0..4).map(|_| conns.get()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        for lease in leases {
            lease.keep();
        }
        assert_eq!(conns.lock().len(), 2, "a quarter of a pool of 8");

        let close = pool.close_event();
        let closing = tokio::spawn({
            let pool = pool.clone();
            async move { pool.close().await }
        });
        close.await;
        conns.release_all();
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .expect("close does not wait for kept connections once given back")
            .unwrap();
    }

    /// Given a task's kept connection, when uses succeed, then it stays the same connection;
    /// when one fails or the task releases it, then the next use takes one from the pool; once
    /// the pool is being closed, the kept connection is given back.
    #[tokio::test]
    async fn a_task_keeps_its_connection_until_a_failure_a_release_or_the_pools_close() {
        let pool = pool(2).await;
        let mut kept = Kept::new();
        let first = backend(kept.get(&pool).await.unwrap()).await;
        kept.used(true);
        assert!(kept.holds());
        assert_eq!(backend(kept.get(&pool).await.unwrap()).await, first);
        let failed = sqlx::query("SELECT nonsense")
            .execute(kept.get(&pool).await.unwrap())
            .await;
        kept.used(failed.is_ok());
        assert!(!kept.holds(), "a failed use gives the connection back");
        kept.get(&pool).await.unwrap();
        kept.used(true);
        kept.release();
        assert!(!kept.holds());
        // Once the pool is being closed, the kept connection is given back, not used.
        kept.get(&pool).await.unwrap();
        kept.used(true);
        let closing = tokio::spawn({
            let pool = pool.clone();
            async move { pool.close().await }
        });
        pool.close_event().await;
        assert!(matches!(
            kept.get(&pool).await,
            Err(sqlx::Error::PoolClosed)
        ));
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .expect("close does not wait for a task's connection once it was given back")
            .unwrap();
    }
}
