//! One active relay per database and stream: a PostgreSQL session advisory lock.
//!
//! The lock lives on a dedicated connection held for as long as the relay is active: when the
//! process dies, its connection closes and PostgreSQL releases the lock at once; a standby tries
//! every [`RelayConfig::lock_retry_interval`](crate::RelayConfig) and takes over. The holder pings
//! its connection at the same interval and stops publishing as soon as the ping fails (the lock
//! may have gone with the connection). Even if two relays ever published at once, the stream
//! stays exact: every message carries `Nats-Expected-Last-Sequence` and `Nats-Msg-Id`.

use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The advisory lock key of the relays of `stream`: a 64-bit hash computed by PostgreSQL.
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
        stream: &str,
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
                        // A relay whose host vanishes (rather than a process that dies, whose
                        // socket the kernel closes) is noticed by the server within ~8 s.
                        if let Err(error) = sqlx::query(KEEPALIVES).execute(&mut c).await {
                            tracing::debug!(%error, "relay: cannot set TCP keepalives");
                        }
                        conn = Some(c);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "relay: cannot connect to PostgreSQL for the lock");
                    }
                }
            }
            if let Some(c) = conn.as_mut() {
                match sqlx::query_scalar::<_, bool>(TRY_LOCK)
                    .bind(stream)
                    .fetch_one(&mut *c)
                    .await
                {
                    Ok(true) => {
                        return Some(Leadership {
                            conn: conn.take().expect("connected"),
                        })
                    }
                    Ok(false) => {
                        if !announced {
                            tracing::info!(stream, "relay: standby; another relay is active");
                            announced = true;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "relay: advisory lock attempt failed");
                        conn = None;
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
                    tracing::error!(%error, "relay: lost the lock connection");
                    return;
                }
                Err(_) => {
                    tracing::error!("relay: the lock connection stopped answering");
                    return;
                }
            }
        }
    }

    /// Releases the lock (closing its connection).
    pub async fn release(self) {
        if let Err(error) = self.conn.close().await {
            tracing::debug!(%error, "relay: closing the lock connection failed");
        }
    }
}
