//! Wake-ups: the LISTEN task that forwards other processes' notifications and the coalescing
//! task that NOTIFYs after local appends (see the module doc of `pg`).

use super::*;

pub(crate) fn bump(wakeups: &watch::Sender<u64>) {
    wakeups.send_modify(|n| *n = n.wrapping_add(1));
}

/// Forwards notifications (from any process) to the watch channel until aborted.
pub(super) async fn listen_loop(mut listener: PgListener, wakeups: Arc<watch::Sender<u64>>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => bump(&wakeups),
            Ok(None) => {
                // The connection was lost and re-established: notifications may have been lost.
                tracing::warn!("LISTEN connection lost and re-established");
                bump(&wakeups);
            }
            Err(error) => {
                tracing::warn!(%error, "LISTEN connection failed; retrying");
                bump(&wakeups);
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}

/// Shortest interval between two NOTIFYs of one store.
const NOTIFY_PACE: Duration = Duration::from_millis(2);

/// Issues one NOTIFY per burst of local appends, outside their transactions, until aborted.
pub(super) async fn notify_loop(conns: Arc<Conns>, notifier: Arc<Notify>) {
    loop {
        notifier.notified().await;
        let sent = match conns.get().await {
            Ok(mut conn) => {
                let sent = sqlx::query("SELECT pg_notify($1, '')")
                    .bind(NOTIFY_CHANNEL)
                    .execute(&mut *conn)
                    .await;
                if sent.is_ok() {
                    conn.keep();
                }
                sent
            }
            Err(error) => Err(error),
        };
        match sent {
            // Pace the NOTIFYs (at most one per NOTIFY_PACE): appends made meanwhile share the
            // next one, so a busy writer sends hundreds a second, not thousands.
            Ok(_) => tokio::time::sleep(NOTIFY_PACE).await,
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::warn!(%error, "NOTIFY failed; other processes will see the append on their next poll");
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}
