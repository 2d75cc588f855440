//! The application lifecycle process manager: finishes what an archive or a restore starts.
//!
//! `ArchiveApplication` and `RestoreApplication` only change an application's status (one event,
//! decided at once for the caller). Ending its subscriptions (accepted and paused ones closed,
//! pending ones rejected, their API keys revoked), deleting its notification settings, and at a
//! restore reopening exactly the subscriptions that the undone archive ended, is the work of this
//! crate: it tails the event log for `ApplicationArchived` / `ApplicationRestored` and, one append
//! per step, records [`Application::next_archive_step`] / [`Application::next_restore_step`]
//! until they have nothing left.
//!
//! - **Exactly once, by state.** Each step is decided on the application's current state and
//!   appended with that state's version as the expected version ([`appreg_commands`]): a
//!   step done before a crash is never done again, a concurrent change makes the step be decided
//!   anew, and a stale trigger (an archive that a restore already undid, a restore followed by a
//!   new archive) finds nothing to do. Replaying the whole log appends nothing.
//! - **Every step names its cause**: `causation_id` is the archive's (restore's) `event_id`;
//!   `correlation_id`, `environment` and `traceparent` are copied from it; `actor` is
//!   [`ACTOR`]. That is how an audit trail (and a restore) tells what an archive did.
//! - **In log order, never skipped.** Triggers are handled one after another; the checkpoint
//!   (`lifecycle_checkpoints`) only moves past a trigger once all its steps are recorded; a
//!   trigger that fails (database down) is retried with back-off. One instance is active per
//!   database (a PostgreSQL advisory lock); a standby takes over when it dies.
//!
//! It must never decide anything itself (every decision is the domain's), write to an
//! application other than the trigger's, append without an expected version, or see an API
//! key's value (revoking needs only the key's id).
//!
//! [`Application::next_archive_step`]: appreg_domain::application::Application::next_archive_step
//! [`Application::next_restore_step`]: appreg_domain::application::Application::next_restore_step

mod process;
mod run;
pub mod service;

pub use process::{handle, metadata, trigger, Handled, LifecycleError, Trigger, TriggerKind};
pub use run::{checkpoint, migrate, run, set_checkpoint, CHECKPOINT};

use std::time::Duration;

/// The `actor` of the events the process manager records.
pub const ACTOR: &str = "lifecycle";

/// How the process manager works.
#[derive(Debug, Clone, Default)]
pub struct LifecycleConfig {
    /// A pause after each step (default none). Tests use it to stop the process between two
    /// steps; in production it spreads the appends of a large archive.
    pub step_pause: Duration,
    /// The command path's settings (its group commit is not used: one step at a time).
    pub commands: appreg_commands::CommandSettings,
}
