//! Group commit: concurrent appends to different streams share one transaction.
//!
//! Requests queue their decided appends; a writer takes whatever has queued (at most
//! `max_batch`, one request per stream) and writes it with one `append_batch` — or, when no
//! request of the batch claims or releases anything, with one `append_each`: the requests are
//! then independent, and PostgreSQL writes them in one autocommit statement (one round trip,
//! no explicit transaction), each request still all or nothing on its own. A lone request at
//! low load finds an idle writer and is written at once, alone, so its latency does not grow;
//! under load the requests that arrive while a batch is being written form the next one. A
//! refused batch (a version conflict or a taken claim in any of its requests) wrote nothing, and
//! each of its requests is then appended on its own, so each gets its own answer — never a lost
//! or doubled command. An answer goes back only once the transaction holding its events has
//! committed.

use appreg_eventstore::{AppendError, AppendRequest, Appended, EventStore};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

type Reply = oneshot::Sender<Result<Appended, AppendError>>;

struct Queued {
    request: AppendRequest,
    reply: Reply,
}

/// The queue in front of the group-commit writers. Cloning shares it. The writers stop when
/// every clone is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Queued>,
}

struct Shared {
    store: Arc<dyn EventStore>,
    queue: Mutex<(mpsc::UnboundedReceiver<Queued>, VecDeque<Queued>)>,
    max_batch: usize,
}

impl GroupCommit {
    /// Starts `writers` writer tasks (each writes one batch at a time) on the current runtime.
    pub fn start(store: Arc<dyn EventStore>, writers: usize, max_batch: usize) -> GroupCommit {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            store,
            queue: Mutex::new((rx, VecDeque::new())),
            max_batch: max_batch.max(1),
        });
        for _ in 0..writers.max(1) {
            tokio::spawn(writer(shared.clone()));
        }
        GroupCommit { queue: tx }
    }

    /// Appends `request` in the next batch; answers once it has committed (or failed).
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(queued)) = self.queue.send(Queued { request, reply }) {
            // No writer left (the runtime is shutting down): nothing was written.
            return Err(AppendError::Backend(
                appreg_eventstore::StoreError::Corrupt(format!(
                    "group commit stopped before the append to {}",
                    queued.request.stream_id
                )),
            ));
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(AppendError::Backend(
                appreg_eventstore::StoreError::Corrupt(
                    "the group-commit writer stopped during the append".into(),
                ),
            )),
        }
    }
}

/// Takes the next batch: waits for one request, then whatever else is queued, one per stream
/// (a second request of a stream waits for a later batch: a batch may hold a stream only once).
async fn next_batch(shared: &Shared) -> Option<Vec<Queued>> {
    let mut guard = shared.queue.lock().await;
    let (rx, held) = &mut *guard;
    let mut batch = Vec::new();
    let mut streams = HashSet::new();
    let mut deferred = VecDeque::new();
    while let Some(q) = held.pop_front() {
        if batch.len() < shared.max_batch && streams.insert(q.request.stream_id.clone()) {
            batch.push(q);
        } else {
            deferred.push_back(q);
        }
    }
    if batch.is_empty() {
        batch.push(rx.recv().await?);
        streams.insert(batch[0].request.stream_id.clone());
    }
    while batch.len() < shared.max_batch {
        match rx.try_recv() {
            Ok(q) => {
                if streams.insert(q.request.stream_id.clone()) {
                    batch.push(q);
                } else {
                    deferred.push_back(q);
                }
            }
            Err(_) => break,
        }
    }
    *held = deferred;
    Some(batch)
}

async fn writer(shared: Arc<Shared>) {
    while let Some(batch) = next_batch(&shared).await {
        write(shared.store.as_ref(), batch).await;
    }
}

async fn write(store: &dyn EventStore, mut batch: Vec<Queued>) {
    metrics::histogram!("appreg_group_commit_batch_size").record(batch.len() as f64);
    if batch.len() == 1 {
        let Some(q) = batch.pop() else { return };
        let result = store.append(q.request).await;
        let _ = q.reply.send(result);
        return;
    }
    if batch
        .iter()
        .all(|q| q.request.claims.is_empty() && q.request.releases.is_empty())
    {
        // Without claims the requests are independent: one `append_each` (on PostgreSQL one
        // autocommit INSERT), each request all or nothing on its own, with its own answer.
        let (requests, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|q| (q.request, q.reply)).unzip();
        for (reply, result) in replies.into_iter().zip(store.append_each(requests).await) {
            let _ = reply.send(result);
        }
        return;
    }
    let requests = batch.iter().map(|q| q.request.clone()).collect();
    match store.append_batch(requests).await {
        Ok(appended) => {
            for (q, appended) in batch.into_iter().zip(appended) {
                let _ = q.reply.send(Ok(appended));
            }
        }
        Err(error) => {
            // Nothing of the batch was written: each request on its own, so one refused
            // request cannot refuse the others, and each gets its own answer.
            tracing::debug!(%error, size = batch.len(), "batch refused, appending one by one");
            metrics::counter!("appreg_group_commit_fallbacks_total").increment(1);
            let appends = batch.into_iter().map(|q| async move {
                let result = store.append(q.request).await;
                let _ = q.reply.send(result);
            });
            futures::future::join_all(appends).await;
        }
    }
}
