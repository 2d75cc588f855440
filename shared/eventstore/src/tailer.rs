//! Following the log: the one way read models and reactors consume events.
//!
//! A [`LogTailer`] reads [`EventStore::read_log`] page by page from a checkpoint, and when it has
//! caught up waits for a wake-up or a poll interval, whichever comes first. Wake-ups are only
//! hints (on PostgreSQL one may arrive before the event is below the visibility horizon, or be
//! lost with a dropped LISTEN connection), so the poll interval is what guarantees progress.
//!
//! The tailer must never skip an event nor return one twice: it relies on `read_log`'s
//! commit-safe order, never jumps over positions on its own, and advances its checkpoint only
//! when it hands a batch out.

use crate::{EventStore, LogPosition, StoreError, StoredEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Default pause between two reads of a caught-up tailer without wake-up.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Follows the log from a checkpoint, batch by batch.
pub struct LogTailer {
    store: Arc<dyn EventStore>,
    position: LogPosition,
    batch_size: i64,
    poll_interval: Duration,
    /// Least time between a read that came back short (caught up) and the next read.
    min_interval: Duration,
    last_short_read: Option<tokio::time::Instant>,
    wakeups: watch::Receiver<u64>,
    /// Only these event types' payloads are read ([`EventStore::read_log_of_types`]); all
    /// when `None`.
    payload_types: Option<Vec<String>>,
}

impl std::fmt::Debug for LogTailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogTailer")
            .field("position", &self.position)
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl LogTailer {
    /// A tailer returning the events strictly after `from`, at most `batch_size` (at least 1) at
    /// a time.
    pub fn new(store: Arc<dyn EventStore>, from: LogPosition, batch_size: i64) -> Self {
        let wakeups = store.wakeups();
        LogTailer {
            store,
            position: from,
            batch_size: batch_size.max(1),
            poll_interval: DEFAULT_POLL_INTERVAL,
            min_interval: Duration::ZERO,
            last_short_read: None,
            wakeups,
            payload_types: None,
        }
    }

    /// Sets the longest wait between two reads when no wake-up comes (default 200 ms).
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Sets the least time between a read that found the tailer caught up and the next read
    /// (default none). Under a steady stream of appends, wake-ups then gather events into
    /// fewer, larger batches instead of one read per append.
    pub fn with_min_interval(mut self, min_interval: Duration) -> Self {
        self.min_interval = min_interval;
        self
    }

    /// Reads the payloads (`data`, `metadata`) of the events of `types` only; the others come
    /// with JSON null ones ([`EventStore::read_log_of_types`]), for a reader that passes them
    /// over.
    pub fn with_payloads_of(mut self, types: &[&str]) -> Self {
        self.payload_types = Some(types.iter().map(|t| (*t).to_string()).collect());
        self
    }

    /// The checkpoint: the position of the last event returned (or the starting position).
    pub fn position(&self) -> LogPosition {
        self.position
    }

    /// The next non-empty batch after the checkpoint, waiting as long as it takes; the checkpoint
    /// moves to its last event.
    ///
    /// Cancel-safe: if the future is dropped, no event is lost (the checkpoint moves only when
    /// a batch is returned).
    pub async fn next_batch(&mut self) -> Result<Vec<StoredEvent>, StoreError> {
        loop {
            // Mark the current wake-up as seen *before* reading, so that an append committed
            // during the read still wakes the wait below.
            if let Some(at) = self.last_short_read {
                tokio::time::sleep_until(at + self.min_interval).await;
            }
            self.wakeups.borrow_and_update();
            let batch = match &self.payload_types {
                None => self.store.read_log(self.position, self.batch_size).await?,
                Some(types) => {
                    self.store
                        .read_log_of_types(self.position, self.batch_size, types)
                        .await?
                }
            };
            self.last_short_read = ((batch.len() as i64) < self.batch_size
                && !self.min_interval.is_zero())
            .then(tokio::time::Instant::now);
            if let Some(last) = batch.last() {
                self.position = last.position;
                return Ok(batch);
            }
            match tokio::time::timeout(self.poll_interval, self.wakeups.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                // The store is gone: no more wake-ups, keep polling.
                Ok(Err(_)) => tokio::time::sleep(self.poll_interval).await,
            }
        }
    }
}
