//! `appreg_events_appended_total{stream_type}`: an [`EventStore`] that counts what it appends.

use appreg_eventstore::{
    AppendError, AppendRequest, Appended, Claim, EventStore, LogFilter, LogPosition, Snapshot,
    StoreError, StoredEvent,
};
use std::sync::Arc;

/// Counts the events of every successful append, by stream type, and delegates everything.
pub struct CountingStore {
    inner: Arc<dyn EventStore>,
}

/// `store`, counting its appends (wrap each process's store once).
pub fn count_appends(store: Arc<dyn EventStore>) -> Arc<dyn EventStore> {
    Arc::new(CountingStore { inner: store })
}

#[async_trait::async_trait]
impl EventStore for CountingStore {
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let stream_type = request.stream_type.clone();
        let n = request.events.len() as u64;
        let appended = self.inner.append(request).await?;
        metrics::counter!("appreg_events_appended_total", "stream_type" => stream_type)
            .increment(n);
        Ok(appended)
    }

    async fn append_batch(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<Appended>, AppendError> {
        let counts: Vec<(String, u64)> = requests
            .iter()
            .map(|r| (r.stream_type.clone(), r.events.len() as u64))
            .collect();
        let appended = self.inner.append_batch(requests).await?;
        for (stream_type, n) in counts {
            metrics::counter!("appreg_events_appended_total", "stream_type" => stream_type)
                .increment(n);
        }
        Ok(appended)
    }

    async fn append_each(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<Appended, AppendError>> {
        let counts: Vec<(String, u64)> = requests
            .iter()
            .map(|r| (r.stream_type.clone(), r.events.len() as u64))
            .collect();
        let answers = self.inner.append_each(requests).await;
        for ((stream_type, n), answer) in counts.into_iter().zip(&answers) {
            if answer.is_ok() {
                metrics::counter!("appreg_events_appended_total", "stream_type" => stream_type)
                    .increment(n);
            }
        }
        answers
    }

    async fn read_streams(&self, stream_ids: &[String]) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read_streams(stream_ids).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner
            .read_stream(stream_id, after_version, limit)
            .await
    }

    async fn read_environment_log(
        &self,
        after: LogPosition,
        filter: &LogFilter,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read_environment_log(after, filter, limit).await
    }

    async fn read_log(
        &self,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read_log(after, limit).await
    }

    async fn read_log_of_types(
        &self,
        after: LogPosition,
        limit: i64,
        types: &[String],
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read_log_of_types(after, limit, types).await
    }

    async fn read_at(&self, positions: &[LogPosition]) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read_at(positions).await
    }

    async fn head(&self) -> Result<LogPosition, StoreError> {
        self.inner.head().await
    }

    async fn last_committed(&self) -> Result<LogPosition, StoreError> {
        self.inner.last_committed().await
    }

    async fn claim_holder(&self, claim: &Claim) -> Result<Option<String>, StoreError> {
        self.inner.claim_holder(claim).await
    }

    async fn read_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        self.inner.read_snapshot(stream_id).await
    }

    async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.inner.write_snapshot(snapshot).await
    }

    fn wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.wakeups()
    }
}
