//! Supervision of a process's background tasks (the api's inline projector and lag gauges, a
//! worker's loop): a task that dies — a panic, an error, or an end before the shutdown — is
//! logged with its reason, counted (`appreg_task_deaths_total{task}`), and restarted with
//! exponential back-off. While a task is not running, [`Supervisor::not_ready`] names it, so
//! `/readyz` goes red; a task that keeps dying ([`RestartPolicy::give_up_after`] times in a row,
//! each run shorter than [`RestartPolicy::healthy_after`]) is given up and
//! [`Supervisor::not_alive`] names it, so `/healthz` goes red and the orchestrator restarts the
//! process.
//!
//! Only tasks that are safe to start again are supervised this way (each resumes from its own
//! checkpoint or state). The reasons it returns are for probes: they name the task and how it
//! died, never the panic message or error text (those go to the log).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// When and how often a dead task is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Pause before the first restart; doubled after each death in a row.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Deaths in a row after which the task is given up (the process is then not alive).
    pub give_up_after: u32,
    /// A run that lasted this long resets the count of deaths in a row.
    pub healthy_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            give_up_after: 8,
            healthy_after: Duration::from_secs(60),
        }
    }
}

/// What a supervised task is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Running,
    /// Dead, to be restarted after a pause.
    Restarting {
        how: &'static str,
        deaths: u32,
    },
    /// Dead too often: given up.
    Failed {
        how: &'static str,
        deaths: u32,
    },
    /// Ended with the shutdown.
    Finished,
}

/// The tasks of a process and their states; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Supervisor {
    policy: RestartPolicy,
    tasks: Arc<Mutex<BTreeMap<&'static str, TaskState>>>,
    #[cfg(feature = "test-hooks")]
    faults: Arc<Mutex<std::collections::HashMap<&'static str, Arc<tokio::sync::Notify>>>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("policy", &self.policy)
            .field("tasks", &self.states())
            .finish()
    }
}

impl Supervisor {
    pub fn new(policy: RestartPolicy) -> Self {
        Supervisor {
            policy,
            ..Default::default()
        }
    }

    /// Every task and its state.
    pub fn states(&self) -> BTreeMap<&'static str, TaskState> {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, name: &'static str, state: TaskState) {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, state);
    }

    /// Why the process is not ready: the tasks that are dead now (restarting or given up).
    pub fn not_ready(&self) -> Vec<String> {
        self.states()
            .into_iter()
            .filter_map(|(name, state)| match state {
                TaskState::Restarting { how, deaths } => Some(format!(
                    "the task {name} {how} ({deaths} time(s) in a row); restarting"
                )),
                TaskState::Failed { how, deaths } => Some(format!(
                    "the task {name} {how} ({deaths} times in a row) and was given up"
                )),
                TaskState::Running | TaskState::Finished => None,
            })
            .collect()
    }

    /// Why the process is not alive: the tasks given up.
    pub fn not_alive(&self) -> Vec<String> {
        self.states()
            .into_iter()
            .filter_map(|(name, state)| match state {
                TaskState::Failed { how, deaths } => Some(format!(
                    "the task {name} {how} ({deaths} times in a row) and was given up"
                )),
                _ => None,
            })
            .collect()
    }

    /// Runs `make()` as the task `name` until `shutdown` fires, starting it again (after the
    /// policy's pause) whenever it panics, fails or ends before the shutdown.
    pub fn spawn<F, Fut, E>(
        &self,
        name: &'static str,
        shutdown: CancellationToken,
        mut make: F,
    ) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let this = self.clone();
        this.set(name, TaskState::Running);
        tokio::spawn(async move {
            let policy = this.policy;
            let mut deaths: u32 = 0;
            let mut delay = policy.first_delay;
            loop {
                this.set(name, TaskState::Running);
                let started = Instant::now();
                let run = this.run(name, make());
                let how = match run.await {
                    _ if shutdown.is_cancelled() => {
                        this.set(name, TaskState::Finished);
                        return;
                    }
                    Ok(Ok(())) => {
                        tracing::error!(task = name, "a supervised task ended before the shutdown");
                        "ended"
                    }
                    Ok(Err(error)) => {
                        tracing::error!(task = name, %error, "a supervised task failed");
                        "failed"
                    }
                    Err(join) => {
                        let message = panic_message(join);
                        tracing::error!(task = name, panic = %message, "a supervised task panicked");
                        "panicked"
                    }
                };
                metrics::counter!("appreg_task_deaths_total", "task" => name).increment(1);
                if started.elapsed() >= policy.healthy_after {
                    deaths = 0;
                    delay = policy.first_delay;
                }
                deaths = deaths.saturating_add(1);
                if deaths >= policy.give_up_after.max(1) {
                    tracing::error!(
                        task = name,
                        deaths,
                        "a supervised task keeps dying: given up"
                    );
                    this.set(name, TaskState::Failed { how, deaths });
                    return;
                }
                this.set(name, TaskState::Restarting { how, deaths });
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        this.set(name, TaskState::Finished);
                        return;
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(policy.max_delay);
                tracing::warn!(task = name, deaths, "restarting a supervised task");
            }
        })
    }

    /// One run of a task, in its own tokio task (so that a panic is caught).
    fn run<Fut, E>(&self, _name: &'static str, run: Fut) -> JoinHandle<Result<(), E>>
    where
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Send + 'static,
    {
        #[cfg(feature = "test-hooks")]
        {
            let fault = self.fault(_name);
            tokio::spawn(async move {
                tokio::select! {
                    result = run => result,
                    _ = fault.notified() => panic!("a fault injected by a test"),
                }
            })
        }
        #[cfg(not(feature = "test-hooks"))]
        tokio::spawn(run)
    }

    #[cfg(feature = "test-hooks")]
    fn fault(&self, name: &'static str) -> Arc<tokio::sync::Notify> {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name)
            .or_default()
            .clone()
    }

    /// Test hook (feature `test-hooks`, never in production builds): makes the current run of
    /// the task `name` panic.
    #[cfg(feature = "test-hooks")]
    pub fn inject_panic(&self, name: &'static str) {
        self.fault(name).notify_one();
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    if !join.is_panic() {
        return "cancelled".into();
    }
    let payload = join.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that fails is restarted after the pause (not ready meanwhile); one that keeps
    /// failing is given up (not alive); a shutdown ends the tasks quietly.
    #[tokio::test]
    async fn dead_tasks_are_restarted_then_given_up() {
        let supervisor = Supervisor::new(RestartPolicy {
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_millis(200),
            give_up_after: 3,
            healthy_after: Duration::from_secs(60),
        });
        let shutdown = CancellationToken::new();
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = runs.clone();
        supervisor.spawn("failing", shutdown.clone(), move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err::<(), _>("broken") }
        });
        let quiet = shutdown.clone();
        supervisor.spawn("quiet", shutdown.clone(), move || {
            let quiet = quiet.clone();
            async move {
                quiet.cancelled().await;
                Ok::<_, String>(())
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reasons = supervisor.not_ready();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].contains("the task failing failed"),
            "{reasons:?}"
        );
        assert!(supervisor.not_alive().is_empty());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
        let dead = supervisor.not_alive();
        assert!(dead[0].contains("given up"), "{dead:?}");
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(supervisor.states()["quiet"], TaskState::Finished);
    }
}
