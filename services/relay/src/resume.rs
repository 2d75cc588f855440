//! Where the relay resumes in the stream.
//!
//! The stream itself is the relay's only checkpoint: its last message carries the log position
//! of the last event JetStream stored (`Appreg-Position`). Nothing is kept elsewhere, so a NATS
//! server that lost acknowledged messages (it syncs to disk every 2 minutes by default) is simply
//! refilled from PostgreSQL.

use appreg_eventstore::LogPosition;
use appreg_worker::envelope;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};

/// How far back from the stream's end resuming looks for a message published by a relay (other
/// messages have no business in the relay's subjects, but must not wedge it).
const MAX_FOREIGN_MESSAGES: u64 = 1000;

/// Where publishing continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The stream's last sequence: the next message must follow it.
    pub last_sequence: u64,
    /// The log position of the last event in the stream (START if none).
    pub position: LogPosition,
}

/// Reads the stream's last message (the last one published by a relay) and returns where to
/// continue. An empty stream resumes from the start of the log.
pub async fn resume(stream: &mut Stream) -> Result<Resume, async_nats::Error> {
    let state = stream.info().await?.state.clone();
    let mut resume = Resume {
        last_sequence: state.last_sequence,
        position: LogPosition::START,
    };
    if state.messages == 0 {
        return Ok(resume);
    }
    let lowest = state
        .first_sequence
        .max(state.last_sequence.saturating_sub(MAX_FOREIGN_MESSAGES));
    let mut sequence = state.last_sequence;
    while sequence >= lowest && sequence > 0 {
        match stream.get_raw_message(sequence).await {
            Ok(message) => match envelope::position(Some(&message.headers)) {
                Some(position) => {
                    resume.position = position;
                    return Ok(resume);
                }
                None => tracing::warn!(
                    sequence,
                    subject = %message.subject,
                    "a message without Appreg-Position in the relay's stream; looking further back"
                ),
            },
            // Deleted (or lost) in the middle of the stream.
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            Err(error) => return Err(error.into()),
        }
        sequence -= 1;
    }
    if lowest > state.first_sequence {
        return Err(format!(
            "none of the last {MAX_FOREIGN_MESSAGES} messages of the stream was published by a relay"
        )
        .into());
    }
    Ok(resume)
}
