//! Where the relay resumes in the stream.
//!
//! The stream itself is the relay's only checkpoint: its last message carries the log position
//! of the last event JetStream stored (`Appreg-Position`). Nothing is kept elsewhere, so a NATS
//! server that lost acknowledged messages (it syncs to disk every 2 minutes by default) is simply
//! refilled from PostgreSQL.
//!
//! Anyone allowed to publish on the stream's subjects could append a message of their own, so a
//! message's position is trusted only once the event store confirms it: the store holds an event
//! at that position, below its visibility horizon (never beyond its head), with the message's
//! `Nats-Msg-Id` as event id and the message's subject. Other messages are counted
//! (`appreg_relay_untrusted_messages_total`), logged, and passed over: resuming looks further
//! back. Candidates are checked in growing groups (1, 2, 4 … 64 messages) with one read of the
//! store per group, so the usual case — the last message is the relay's — costs one read.

use appreg_eventstore::{EventStore, LogPosition, StoreError};
use appreg_worker::envelope;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use std::collections::HashMap;

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

/// A message that claims to be the relay's.
struct Candidate {
    sequence: u64,
    subject: String,
    event_id: Option<String>,
    position: LogPosition,
}

/// Reads the stream from its end back to the last message published by a relay (as confirmed by
/// `store`, see the module doc) and returns where to continue. An empty stream, or one without
/// any confirmed message, resumes from the start of the log.
pub async fn resume(
    stream: &mut Stream,
    store: &dyn EventStore,
    subject_prefix: &str,
) -> Result<Resume, ResumeError> {
    let nats = |e: async_nats::Error| ResumeError::Nats(e);
    let state = stream
        .info()
        .await
        .map_err(|e| nats(e.into()))?
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
    let mut sequence = state.last_sequence;
    let mut group_size = 1;
    while sequence >= lowest && sequence > 0 {
        // The next group of candidates, newest first.
        let mut group = Vec::with_capacity(group_size);
        while group.len() < group_size && sequence >= lowest && sequence > 0 {
            match stream.get_raw_message(sequence).await {
                Ok(message) => match envelope::position(Some(&message.headers)) {
                    Some(position) => group.push(Candidate {
                        sequence,
                        subject: message.subject.to_string(),
                        event_id: message
                            .headers
                            .get(envelope::MSG_ID_HEADER)
                            .map(|v| v.as_str().to_string()),
                        position,
                    }),
                    None => {
                        resume.untrusted += 1;
                        tracing::warn!(
                            sequence,
                            subject = %message.subject,
                            "relay: a message without Appreg-Position in the stream; looking further back"
                        );
                    }
                },
                // Deleted (or lost) in the middle of the stream.
                Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {}
                Err(error) => return Err(nats(error.into())),
            }
            sequence -= 1;
        }
        group_size = (group_size * 2).min(MAX_GROUP);
        if group.is_empty() {
            continue;
        }
        let positions: Vec<LogPosition> = group.iter().map(|c| c.position).collect();
        let stored: HashMap<LogPosition, _> = store
            .read_at(&positions)
            .await?
            .into_iter()
            .map(|e| (e.position, e))
            .collect();
        for candidate in group {
            let confirmed = stored.get(&candidate.position).is_some_and(|event| {
                candidate.event_id.as_deref() == Some(event.event_id.to_string().as_str())
                    && candidate.subject == envelope::subject(subject_prefix, event)
            });
            if confirmed {
                resume.position = candidate.position;
                return Ok(resume);
            }
            resume.untrusted += 1;
            tracing::error!(
                sequence = candidate.sequence,
                subject = %candidate.subject,
                claimed_position = %candidate.position,
                "relay: a message in the stream that the event store does not confirm (not published by a relay); looking further back"
            );
        }
    }
    if lowest > state.first_sequence {
        return Err(ResumeError::NoRelayMessage);
    }
    Ok(resume)
}
