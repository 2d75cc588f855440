//! The projector loop: tails the event store into the read model.

use super::*;

/// Tails the event store into the read model until `cancel` fires. A batch that fails to apply
/// is retried with back-off; it is never skipped.
pub async fn run_projector(
    read: Arc<ReadModel>,
    store: Arc<dyn EventStore>,
    cancel: CancellationToken,
) {
    let mut tailer = LogTailer::new(store, read.position(), BATCH).with_min_interval(GATHER);
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            batch = tailer.next_batch() => batch,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "projector cannot read the log; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        let mut delay = Duration::from_millis(50);
        loop {
            match read.apply(&batch).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "projector cannot apply a batch; retrying");
                    metrics::counter!("appreg_projection_errors_total", "projection" => CHECKPOINT)
                        .increment(1);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        metrics::counter!("appreg_projected_events_total", "projection" => CHECKPOINT)
            .increment(batch.len() as u64);
    }
}
