//! Folding the event store's log into the read model: the log from the model's checkpoint up to
//! what a batch of messages claims (each claim confirmed against the log first), or, after a
//! silence, up to the log's visible head. Database failures of a batch are retried without end;
//! nothing is skipped.

use crate::counters::Metrics;
use crate::message::Claim;
use crate::{Interrupted, ProjectorConfig};
use appreg_eventstore::{EventStore, LogPosition, StoredEvent};
use appreg_readmodel::{Mark, ReadModel, ReadModelError};
use std::collections::{BTreeMap, HashMap};
use tracing::Instrument;

/// A claim of the batch, with where it came from (for the log line of a forged one).
pub(crate) struct Claimed {
    pub(crate) sequence: u64,
    pub(crate) subject: String,
    pub(crate) claim: Claim,
}

/// The span of one batch: its size and end, and the `trace_id` of the requests its events come
/// from (one, or a list; with OTLP export, the span's parent or links).
fn batch_span(events: &[StoredEvent], last_sequence: u64) -> tracing::Span {
    let span = tracing::info_span!(
        "projector_batch",
        projection = appreg_readmodel::PROJECTION,
        events = events.len(),
        last_sequence,
        last_position = %events.last().map(|e| e.position).unwrap_or_default(),
        trace_id = tracing::field::Empty,
    );
    appreg_telemetry::trace::follow_batch(
        &span,
        events.iter().filter_map(|e| {
            e.metadata
                .get("traceparent")
                .and_then(serde_json::Value::as_str)
        }),
    );
    span
}

/// Confirms the batch's claims against the event store and folds the store's log, from the
/// model's checkpoint up to the batch's last claimed position, page by page: one read of the
/// store for a batch of the relay's messages. A claim is confirmed when the log holds an event
/// at its position with its event id; the others are counted and logged as forged. Claims at or
/// below the checkpoint (redeliveries) are checked with one more read, [`EventStore::read_at`].
pub(crate) async fn fold_confirmed(
    read: &ReadModel,
    store: &dyn EventStore,
    claims: Vec<Claimed>,
    mark: &Mark,
    config: &ProjectorConfig,
    metrics: &Metrics,
) {
    let mut cursor = read.position();
    let (mut applied_before, mut pending) = (Vec::new(), BTreeMap::new());
    for c in claims {
        if c.claim.position > cursor {
            pending
                .entry(c.claim.position)
                .or_insert_with(Vec::new)
                .push(c);
        } else {
            applied_before.push(c);
        }
    }
    for chunk in applied_before.chunks(appreg_eventstore::MAX_POSITIONS_PER_READ) {
        let positions: Vec<LogPosition> = chunk.iter().map(|c| c.claim.position).collect();
        let stored = retry_db(config, metrics, || async {
            store
                .read_at(&positions)
                .await
                .map_err(ReadModelError::from)
        })
        .await;
        let ids: HashMap<LogPosition, String> = stored
            .iter()
            .map(|e| (e.position, e.event_id.to_string()))
            .collect();
        for c in chunk {
            if ids.get(&c.claim.position) != Some(&c.claim.event_id) {
                forged(c, metrics);
            }
        }
    }
    let page_size = i64::try_from(config.batch).unwrap_or(500);
    while let Some(&target) = pending.keys().next_back() {
        let mut page = retry_db(config, metrics, || async {
            store
                .read_log(cursor, page_size)
                .await
                .map_err(ReadModelError::from)
        })
        .await;
        let end_of_log = page.len() < config.batch;
        // Up to the last claim: later events come with their own messages.
        page.retain(|e| e.position <= target);
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        let ids: HashMap<LogPosition, String> = page
            .iter()
            .map(|e| (e.position, e.event_id.to_string()))
            .collect();
        let reached: Vec<LogPosition> = pending.range(..=last).map(|(p, _)| *p).collect();
        for position in reached {
            for c in pending.remove(&position).unwrap_or_default() {
                if ids.get(&position) != Some(&c.claim.event_id) {
                    forged(&c, metrics);
                }
            }
        }
        let span = batch_span(&page, u64::try_from(mark.sequence).unwrap_or(0));
        apply(read, &page, mark, config, metrics)
            .instrument(span)
            .await;
        metrics.events.increment(page.len() as u64);
        cursor = last;
        if end_of_log {
            break;
        }
    }
    // Not in the log (a position in between its events, or beyond its head): no relay
    // published these.
    for c in pending.into_values().flatten() {
        forged(&c, metrics);
    }
}

/// Folds the log past the model's checkpoint when no message came for [`ProjectorConfig::silence`]
/// though the log moved on: the messages are signals, and a silent stream (a relay down for
/// long, a consumer JetStream stopped delivering to) must not freeze the read model. Reads the
/// checkpoint first (another instance may have moved it), then the log page by page to its
/// visible head; the consumer's stored sequence is left as it is (the messages of these events,
/// when they come, are redeliveries for the checkpoint). Logs a warning and counts
/// `appreg_projector_catch_ups_total` when it folded something.
pub(crate) async fn catch_up(
    read: &ReadModel,
    store: &dyn EventStore,
    config: &ProjectorConfig,
    metrics: &Metrics,
) -> Result<(), Interrupted> {
    let mut cursor = read.refresh_position().await?;
    let page_size = i64::try_from(config.batch).unwrap_or(500);
    let mut folded = 0usize;
    loop {
        let page = store
            .read_log(cursor, page_size)
            .await
            .map_err(ReadModelError::from)?;
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        read.apply_marked(&page, None).await?;
        metrics.events.increment(page.len() as u64);
        folded += page.len();
        cursor = last;
        if page.len() < config.batch {
            break;
        }
    }
    if folded > 0 {
        metrics.catch_ups.increment(1);
        tracing::warn!(
            events = folded,
            silence_s = config.silence.as_secs(),
            "projector: no message for a while though the log moved on; folded the log directly"
        );
    }
    Ok(())
}

/// Counts and logs a message the event store does not confirm (its body is never read).
fn forged(c: &Claimed, metrics: &Metrics) {
    metrics.forged.increment(1);
    tracing::error!(
        sequence = c.sequence,
        subject = %c.subject,
        claimed_position = %c.claim.position,
        claimed_event_id = %c.claim.event_id,
        "projector: skipping a message the event store does not confirm (not published by a relay)"
    );
}

/// Runs a database operation until it succeeds, with back-off (never skipping anything).
pub(crate) async fn retry_db<T, F, Fut>(
    config: &ProjectorConfig,
    metrics: &Metrics,
    mut attempt: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ReadModelError>>,
{
    let mut delay = config.retry_min;
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(e) => {
                metrics.errors.increment(1);
                tracing::error!(error = %e, "projector: a database operation failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(config.retry_max);
            }
        }
    }
}

/// Applies a page of the log, retrying database failures until they pass (never skipping it).
async fn apply(
    read: &ReadModel,
    events: &[StoredEvent],
    mark: &Mark,
    config: &ProjectorConfig,
    metrics: &Metrics,
) {
    retry_db(config, metrics, || read.apply_marked(events, Some(mark))).await;
}
