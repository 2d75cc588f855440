//! One active instance per database and lock name: a PostgreSQL session advisory lock.
//!
//! The lock lives on a dedicated connection held for as long as the instance is active: when the
//! process dies, its connection closes and PostgreSQL releases the lock at once; a standby tries
//! again every `retry` and takes over. The holder pings its connection at the same interval
//! ([`Leadership::lost`]) and stops working as soon as the ping fails (the lock may have gone
//! with the connection). The relay takes it per stream, the DCR saga as `saga:dcr`, the
//! lifecycle process manager as `lifecycle`; none of them relies on it alone for exactness (the
//! relay's messages carry `Nats-Expected-Last-Sequence` and `Nats-Msg-Id`, the reactors decide
//! every step on the current state with an expected version).
//!
//! # The lock keys never change
//! The key is a 64-bit hash of `appreg-relay/<name>` (the lock was the relay's first). The prefix
//! stays for every name, the saga's and the process manager's included: during a rolling upgrade
//! an instance of the old version and one of the new must contend for the same key, or both
//! would be active at once.

use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The advisory lock key of `name`: a 64-bit hash computed by PostgreSQL (see the module doc:
/// the prefix must never change).
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('appreg-relay/' || $1, 0))";

/// Server-side keepalives of the lock session (no-ops over a Unix socket).
const KEEPALIVES: &str = "SELECT set_config('tcp_keepalives_idle', '5', false), \
     set_config('tcp_keepalives_interval', '1', false), \
     set_config('tcp_keepalives_count', '3', false)";

/// The session that holds the lock; dropping it closes the connection, which releases the lock.
#[derive(Debug)]
pub struct Leadership {
    conn: PgConnection,
}

impl Leadership {
    /// Waits until this process holds the lock, trying every `retry`; `None` if `shutdown` fires
    /// first. Connection errors are logged and retried.
    pub async fn acquire(
        pool: &PgPool,
        name: &str,
        retry: Duration,
        shutdown: &CancellationToken,
    ) -> Option<Leadership> {
        let mut conn: Option<PgConnection> = None;
        let mut announced = false;
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            if conn.is_none() {
                match PgConnection::connect_with(pool.connect_options().as_ref()).await {
                    Ok(mut c) => {
                        // An instance whose host vanishes (rather than a process that dies, whose
                        // socket the kernel closes) is noticed by the server within ~8 s.
                        if let Err(error) = sqlx::query(KEEPALIVES).execute(&mut c).await {
                            tracing::debug!(%error, lock = name, "cannot set TCP keepalives");
                        }
                        conn = Some(c);
                    }
                    Err(error) => {
                        tracing::warn!(%error, lock = name, "cannot connect to PostgreSQL for the lock");
                    }
                }
            }
            if let Some(mut c) = conn.take() {
                match sqlx::query_scalar::<_, bool>(TRY_LOCK)
                    .bind(name)
                    .fetch_one(&mut c)
                    .await
                {
                    Ok(true) => return Some(Leadership { conn: c }),
                    Ok(false) => {
                        if !announced {
                            tracing::info!(lock = name, "standby; another instance holds the lock");
                            announced = true;
                        }
                        conn = Some(c);
                    }
                    Err(error) => {
                        // The connection is dropped; the next try connects again.
                        tracing::warn!(%error, lock = name, "advisory lock attempt failed");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(retry) => {}
            }
        }
    }

    /// Resolves when the lock may have been lost (its connection stopped answering).
    pub async fn lost(&mut self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            match tokio::time::timeout(every.max(Duration::from_secs(1)) * 2, self.conn.ping())
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "lost the lock connection");
                    return;
                }
                Err(_) => {
                    tracing::error!("the lock connection stopped answering");
                    return;
                }
            }
        }
    }

    /// Releases the lock (closing its connection).
    pub async fn release(self) {
        if let Err(error) = self.conn.close().await {
            tracing::debug!(%error, "closing the lock connection failed");
        }
    }
}

/// Runs `active` whenever this process holds the lock `name` (on PostgreSQL; with `pool` `None`,
/// the embedded SQLite mode, a single process needs no lock and is active at once), until
/// `shutdown` fires.
///
/// `active` gets a token that is cancelled when `shutdown` fires or when the lock may have been
/// lost (its connection stopped answering): it must then stop working and return. After a loss
/// the process stands by and contends for the lock again. `retry` is how often a standby tries
/// the lock and how often the holder checks its connection. `label` names the process in logs.
pub async fn lead<F, Fut>(
    label: &str,
    pool: Option<&PgPool>,
    name: &str,
    retry: Duration,
    shutdown: &CancellationToken,
    mut active: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let mut leadership = match pool {
            Some(pool) => match Leadership::acquire(pool, name, retry, shutdown).await {
                Some(leadership) => Some(leadership),
                None => return,
            },
            None => None,
        };
        let stop = shutdown.child_token();
        {
            let active = active(stop.clone());
            tokio::pin!(active);
            let lost = async {
                match leadership.as_mut() {
                    Some(l) => l.lost(retry).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut active => {}
                () = lost => {
                    tracing::error!("{label}: stepping down, the lock may be lost");
                    stop.cancel();
                    active.await;
                }
            }
        }
        if let Some(leadership) = leadership {
            leadership.release().await;
        }
        if shutdown.is_cancelled() {
            tracing::info!("{label}: stopped");
            return;
        }
    }
}
