//! Where the relay resumes in the stream.
//!
//! The stream itself is the relay's only checkpoint: its last message carries the log position
//! of the last event JetStream stored (`Appreg-Position`). Nothing is kept elsewhere, so a NATS
//! server that lost acknowledged messages (it syncs to disk every 2 minutes by default) is simply
//! refilled from PostgreSQL.
//!
//! Anyone allowed to publish on the stream's subjects could append a message of their own, so a
//! message's position is trusted only once the event store confirms it:
//!
//! 1. the store holds an event at that position, below its visibility horizon (never beyond its
//!    head), with the message's `Nats-Msg-Id` as event id and the message's subject;
//! 2. and the log right after the next older message that passes 1 (the anchor; the log's start
//!    when there is none) is covered, without a gap, by the messages newer than the anchor that
//!    pass 1: the relay publishes the log in order, so what it has published is a prefix of the
//!    log. It resumes after the longest covered prefix. An exact copy of an event the relay has
//!    not published yet is not part of that prefix, and cannot make the relay skip the events
//!    before it; when the relay reaches the copied event, JetStream de-duplicates it (the ack
//!    names the copy's earlier sequence), the relay resumes from the stream once more, and the
//!    copy then counts as published (the stream holds it), so nothing is published twice.
//!
//! Other messages are counted (`appreg_relay_untrusted_messages_total`), logged, and passed
//! over: resuming looks further back. Candidates are checked in growing groups (1, 2, 4 … 64
//! messages) with one read of the store per group, so the usual case — the last two messages are
//! the relay's — costs three reads (two groups and the check of 2).

use appreg_eventstore::{EventStore, LogPosition, StoreError};
use appreg_worker::envelope;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use std::collections::{HashMap, HashSet, VecDeque};

/// How far back from the stream's end resuming looks for a message published by a relay (other
/// messages have no business in the relay's subjects, but must not wedge it).
const MAX_FOREIGN_MESSAGES: u64 = 1000;

/// The largest group of messages checked against the store with one read.
const MAX_GROUP: usize = 64;

/// Where publishing continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The stream's last sequence: the next message must follow it.
    pub last_sequence: u64,
    /// The log position of the last event in the stream (START if none).
    pub position: LogPosition,
    /// Messages passed over because the store did not confirm them.
    pub untrusted: u64,
}

/// Why the resume point could not be found (the relay retries).
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("NATS: {0}")]
    Nats(#[source] async_nats::Error),
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error(
        "none of the last {MAX_FOREIGN_MESSAGES} messages of the stream was published by a relay"
    )]
    NoRelayMessage,
}

/// A message whose event the store holds (step 1 of the module doc).
struct Candidate {
    sequence: u64,
    subject: String,
    position: LogPosition,
}

/// Walks the stream from its end back to `lowest`, yielding the messages that pass step 1.
struct Walker<'a> {
    stream: &'a mut Stream,
    store: &'a dyn EventStore,
    subject_prefix: &'a str,
    lowest: u64,
    sequence: u64,
    group_size: usize,
    confirmed: VecDeque<Candidate>,
    untrusted: u64,
}

impl Walker<'_> {
    fn exhausted(&self) -> bool {
        self.sequence < self.lowest || self.sequence == 0
    }

    /// The next older message that passes step 1, if any within the window.
    async fn next(&mut self) -> Result<Option<Candidate>, ResumeError> {
        loop {
            if let Some(c) = self.confirmed.pop_front() {
                return Ok(Some(c));
            }
            if self.exhausted() {
                return Ok(None);
            }
            self.read_group().await?;
        }
    }

    /// Reads the next group of messages (newest first) and keeps those the store confirms.
    async fn read_group(&mut self) -> Result<(), ResumeError> {
        // (sequence, subject, event id, position) of each message with a position.
        let mut group = Vec::with_capacity(self.group_size);
        while group.len() < self.group_size && !self.exhausted() {
            let sequence = self.sequence;
            self.sequence -= 1;
            let message = match self.stream.get_raw_message(sequence).await {
                Ok(message) => message,
                // Deleted (or lost) in the middle of the stream.
                Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
                Err(error) => return Err(ResumeError::Nats(error.into())),
            };
            match envelope::position(Some(&message.headers)) {
                Some(position) => group.push((
                    sequence,
                    message.subject.to_string(),
                    message
                        .headers
                        .get(envelope::MSG_ID_HEADER)
                        .map(|v| v.as_str().to_string()),
                    position,
                )),
                None => {
                    self.untrusted += 1;
                    tracing::warn!(
                        sequence,
                        subject = %message.subject,
                        "relay: a message without Appreg-Position in the stream; looking further back"
                    );
                }
            }
        }
        self.group_size = (self.group_size * 2).min(MAX_GROUP);
        if group.is_empty() {
            return Ok(());
        }
        let positions: Vec<LogPosition> = group.iter().map(|c| c.3).collect();
        let stored: HashMap<LogPosition, _> = self
            .store
            .read_at(&positions)
            .await?
            .into_iter()
            .map(|e| (e.position, e))
            .collect();
        for (sequence, subject, event_id, position) in group {
            let confirmed = stored.get(&position).is_some_and(|event| {
                event_id.as_deref() == Some(event.event_id.to_string().as_str())
                    && subject == envelope::subject(self.subject_prefix, event)
            });
            if confirmed {
                self.confirmed.push_back(Candidate {
                    sequence,
                    subject,
                    position,
                });
            } else {
                self.untrusted += 1;
                tracing::error!(
                    sequence,
                    %subject,
                    claimed_position = %position,
                    "relay: a message in the stream that the event store does not confirm (not published by a relay); looking further back"
                );
            }
        }
        Ok(())
    }
}

/// Reads the stream from its end back to the last message published by a relay (as confirmed by
/// `store`, see the module doc) and returns where to continue. An empty stream, or one without
/// any confirmed message, resumes from the start of the log.
pub async fn resume(
    stream: &mut Stream,
    store: &dyn EventStore,
    subject_prefix: &str,
) -> Result<Resume, ResumeError> {
    let state = stream
        .info()
        .await
        .map_err(|e| ResumeError::Nats(e.into()))?
        .state
        .clone();
    let mut resume = Resume {
        last_sequence: state.last_sequence,
        position: LogPosition::START,
        untrusted: 0,
    };
    if state.messages == 0 {
        return Ok(resume);
    }
    let lowest = state
        .first_sequence
        .max(state.last_sequence.saturating_sub(MAX_FOREIGN_MESSAGES));
    let whole_stream = lowest <= state.first_sequence;
    let mut walker = Walker {
        stream,
        store,
        subject_prefix,
        lowest,
        sequence: state.last_sequence,
        group_size: 1,
        confirmed: VecDeque::new(),
        untrusted: 0,
    };
    // Positions of the confirmed messages newer than the anchor being tried.
    let mut newer: HashSet<LogPosition> = HashSet::new();
    let mut current = walker.next().await?;
    while let Some(candidate) = current {
        newer.insert(candidate.position);
        let older = walker.next().await?;
        // The anchor: the next older confirmed message (or the log's start).
        let after = match &older {
            Some(older) => older.position,
            None if whole_stream => LogPosition::START,
            // Its predecessor is beyond the window: it cannot be checked.
            None => break,
        };
        // The log right after the anchor, as far as the newer messages cover it without a gap:
        // the relay has published exactly that far (copies of later events, out of order, are
        // in the stream already and are de-duplicated when the relay reaches them).
        let limit = i64::try_from(newer.len()).unwrap_or(i64::MAX);
        let covered = store
            .read_log(after, limit)
            .await?
            .iter()
            .take_while(|e| newer.contains(&e.position))
            .map(|e| e.position)
            .last();
        if let Some(position) = covered {
            resume.position = position;
            resume.untrusted = walker.untrusted;
            return Ok(resume);
        }
        walker.untrusted += 1;
        tracing::error!(
            sequence = candidate.sequence,
            subject = %candidate.subject,
            claimed_position = %candidate.position,
            "relay: a copy of a stored event that the relay has not reached yet (the log after the stream's previous relay message is not covered); looking further back"
        );
        current = older;
    }
    resume.untrusted = walker.untrusted;
    if !whole_stream {
        return Err(ResumeError::NoRelayMessage);
    }
    Ok(resume)
}
