//! One trigger (an `ApplicationArchived` or `ApplicationRestored` of the log) handled to the end:
//! step after step, each decided by the domain on the application's current state and appended
//! with its expected version, until the domain has nothing left to do.

use crate::{LifecycleConfig, ACTOR};
use appreg_commands::Commands;
use appreg_commands::{Aggregate, ApplicationState, CommandError, Start};
use appreg_domain::application::{Application, ApplicationEvent};
use appreg_domain::subscription::MAX_SUBSCRIPTIONS;
use appreg_domain::{ApplicationId, DomainEvent};
use appreg_eventstore::{EventStore, StoredEvent};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// More steps than any archive or restore can take (one per subscription, one per subscription
/// with keys left, the notification settings): past it the domain is not making progress.
const MAX_STEPS: usize = 2 * MAX_SUBSCRIPTIONS + 2;

/// What a trigger asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerKind {
    /// End the open subscriptions and delete the notification settings.
    Archive,
    /// Reopen the subscriptions the undone archive ended.
    Restore,
}

impl TriggerKind {
    /// The `kind` label of the metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            TriggerKind::Archive => "archive",
            TriggerKind::Restore => "restore",
        }
    }
}

/// An event of the log the process manager acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    pub kind: TriggerKind,
    pub application_id: ApplicationId,
    /// The stream version of the trigger: what the domain's steps name the archive (restore) by.
    pub version: i64,
}

/// The trigger an event is, if any.
pub fn trigger(e: &StoredEvent) -> Option<Trigger> {
    if e.stream_type != ApplicationState::STREAM_TYPE {
        return None;
    }
    let kind = match e.event_type.as_str() {
        "ApplicationArchived" => TriggerKind::Archive,
        "ApplicationRestored" => TriggerKind::Restore,
        _ => return None,
    };
    let application_id = e
        .stream_id
        .strip_prefix("application-")
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .map(ApplicationId)?;
    Some(Trigger {
        kind,
        application_id,
        version: e.version,
    })
}

/// How far a trigger was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Nothing is left to do for it (`steps` were recorded now; 0 for a stale or replayed one).
    Done { steps: usize },
    /// Shutdown came first; `steps` were recorded, the rest is done when it is handled again.
    Interrupted { steps: usize },
}

/// A trigger of an application the log does not have.
#[derive(Debug, thiserror::Error)]
#[error("the application does not exist")]
pub struct NoApplication;

/// Why a trigger could not be handled now (it is retried, never skipped).
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Command(#[from] CommandError<NoApplication>),
    #[error("the domain asked for more than {MAX_STEPS} steps; it is not making progress")]
    Runaway,
    /// A revoked key's value could not be deleted from the vault.
    #[error("vault: {0}")]
    Vault(#[from] appreg_secrets::VaultStoreError),
}

/// The metadata of the events of a step caused by `trigger`: its `event_id` as causation, its
/// correlation id (its own event id if it has none), environment and trace context.
pub fn metadata(trigger: &StoredEvent) -> serde_json::Value {
    let correlation = trigger
        .metadata
        .get("correlation_id")
        .filter(|c| c.is_string())
        .cloned()
        .unwrap_or_else(|| trigger.event_id.to_string().into());
    let mut m = serde_json::json!({
        "environment": trigger.metadata.get("environment").cloned().unwrap_or_default(),
        "actor": ACTOR,
        "correlation_id": correlation,
        "causation_id": trigger.event_id.to_string(),
        "at": chrono::Utc::now(),
    });
    if let Some(tp) = trigger.metadata.get("traceparent") {
        m["traceparent"] = tp.clone();
    }
    m
}

/// Handles one event of the log to the end (others than triggers are ignored): records the
/// trigger's steps one append at a time, pausing [`LifecycleConfig::step_pause`] after each,
/// until the domain has none left or `stop` fires.
pub async fn handle(
    config: &LifecycleConfig,
    store: &Arc<dyn EventStore>,
    e: &StoredEvent,
    stop: &CancellationToken,
) -> Result<Handled, LifecycleError> {
    match trigger(e) {
        // With OTLP export, the trigger's span is a child of the event's (its traceparent).
        Some(t) => {
            steps(config, store, e, t, stop)
                .instrument(appreg_telemetry::trace::event_span(traceparent(e)))
                .await
        }
        None => Ok(Handled::Done { steps: 0 }),
    }
}

/// The W3C trace context of the request a trigger comes from (its metadata's), if any.
fn traceparent(e: &StoredEvent) -> Option<&str> {
    e.metadata
        .get("traceparent")
        .and_then(serde_json::Value::as_str)
}

#[tracing::instrument(
    skip_all,
    fields(
        application_id = %t.application_id,
        trigger_id = %e.event_id,
        kind = t.kind.as_str(),
        trigger_version = t.version,
        correlation_id = e.metadata.get("correlation_id").and_then(|c| c.as_str()).unwrap_or(""),
        trace_id = %appreg_telemetry::trace::trace_id(traceparent(e)),
    ),
    err(Display)
)]
async fn steps(
    config: &LifecycleConfig,
    store: &Arc<dyn EventStore>,
    e: &StoredEvent,
    t: Trigger,
    stop: &CancellationToken,
) -> Result<Handled, LifecycleError> {
    let settings = appreg_commands::CommandSettings {
        group_commit_writers: 0,
        ..config.commands.clone()
    };
    let commands = Commands::new(store.clone(), settings);
    let decide = |app: &Application| -> Vec<ApplicationEvent> {
        match t.kind {
            TriggerKind::Archive => app.next_archive_step(t.version),
            TriggerKind::Restore => app.next_restore_step(t.version),
        }
        .unwrap_or_default()
    };
    let mut steps = 0;
    loop {
        if stop.is_cancelled() {
            return Ok(Handled::Interrupted { steps });
        }
        if steps >= MAX_STEPS {
            return Err(LifecycleError::Runaway);
        }
        let mut decided = Vec::new();
        let executed = commands
            .execute::<ApplicationState, NoApplication, _>(
                &t.application_id.stream_id(),
                Start::Current,
                &metadata(e),
                |state| {
                    decided = decide(state.0.as_ref().ok_or(NoApplication)?);
                    Ok(decided.clone())
                },
            )
            .await;
        let recorded = match executed {
            Ok(executed) if executed.appended.is_some() => decided.clone(),
            Ok(_) => Vec::new(),
            Err(CommandError::Rejected(NoApplication)) => {
                tracing::warn!("lifecycle: the trigger's application does not exist");
                Vec::new()
            }
            Err(error) => return Err(error.into()),
        };
        if recorded.is_empty() {
            if steps > 0 {
                tracing::info!(steps, "lifecycle: done");
            } else {
                tracing::debug!("lifecycle: nothing to do");
            }
            return Ok(Handled::Done { steps });
        }
        steps += 1;
        metrics::counter!("appreg_lifecycle_steps_total", "kind" => t.kind.as_str()).increment(1);
        tracing::debug!(
            step = steps,
            events = ?recorded.iter().map(|e| e.event_type()).collect::<Vec<_>>(),
            "lifecycle: step recorded"
        );
        if !config.step_pause.is_zero() {
            tokio::select! {
                _ = stop.cancelled() => return Ok(Handled::Interrupted { steps }),
                _ = tokio::time::sleep(config.step_pause) => {}
            }
        }
    }
}
