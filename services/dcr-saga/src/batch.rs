//! The saga's batching tasks ([`crate::loader`], [`crate::marks`], [`crate::recorder`]):
//! requests in flight queue their jobs; one task takes whatever has queued up while it handled
//! the previous batch and answers it with a few statements. Under load a batch holds many
//! requests, so the statements and commits per request fall with the rate; alone, a request is a
//! batch of one. While busy, each task keeps its PostgreSQL connection between batches
//! ([`Kept`]: no pool round trip per batch).

use appreg_eventstore::Kept;
use std::sync::OnceLock;
use tokio::sync::mpsc;

/// The queue of one batching task, started on first use.
pub(crate) struct Queue<J> {
    jobs: OnceLock<mpsc::UnboundedSender<J>>,
}

impl<J: Send + 'static> Queue<J> {
    pub fn new() -> Self {
        Queue {
            jobs: OnceLock::new(),
        }
    }

    /// Queues `job`, spawning `task` (given the queue's receiving end) on first use; `false`
    /// when the task is gone (the saga is stopping).
    pub fn send<T, F>(&self, job: J, task: T) -> bool
    where
        T: FnOnce(mpsc::UnboundedReceiver<J>) -> F,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let jobs = self.jobs.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(task(receiver));
            sender
        });
        jobs.send(job).is_ok()
    }
}

/// The next batch: waits for a job, then takes the others already queued, `max` at most;
/// `None` once every sender is gone. The task's kept connection goes back to the pool once no
/// job came for [`Kept::IDLE`].
pub(crate) async fn next<J>(
    receiver: &mut mpsc::UnboundedReceiver<J>,
    max: usize,
    kept: &mut Kept,
) -> Option<Vec<J>> {
    let first = wait(receiver, kept).await?;
    let mut jobs = vec![first];
    while jobs.len() < max {
        match receiver.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    Some(jobs)
}

/// The next job (`None` once every sender is gone); the kept connection goes back to the pool
/// once none came for [`Kept::IDLE`].
pub(crate) async fn wait<J>(
    receiver: &mut mpsc::UnboundedReceiver<J>,
    kept: &mut Kept,
) -> Option<J> {
    if kept.holds() {
        match tokio::time::timeout(Kept::IDLE, receiver.recv()).await {
            Ok(job) => return job,
            Err(_) => kept.release(),
        }
    }
    receiver.recv().await
}
