//! The JetStream stream: its definition, its creation, and where the relay resumes in it.
//!
//! The definition is `deploy/nats/APPREG_EVENTS.json` (the NATS server's own stream-config JSON,
//! so `nats stream add --config` accepts it too), embedded in the binary; only its name and
//! subjects are replaced by the configured stream name and `<prefix>.>`.
//!
//! The stream itself is the relay's only checkpoint: its last message carries the log position
//! of the last event JetStream stored (`Appreg-Position`). Nothing is kept elsewhere, so a NATS
//! server that lost acknowledged messages (it syncs to disk every 2 minutes by default) is simply
//! refilled from PostgreSQL.

use crate::envelope;
use crate::{RelayConfig, RelayError};
use appreg_eventstore::LogPosition;
use async_nats::jetstream::stream::{Config, LastRawMessageErrorKind, StorageType, Stream};
use async_nats::jetstream::Context;
use std::time::Duration;

/// The stream definition shipped in `deploy/`.
pub const DEFINITION: &str = include_str!("../../../deploy/nats/APPREG_EVENTS.json");

/// The shortest duplicate window that covers a publish retried after its ack was lost.
pub const MIN_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How far back from the stream's end resuming looks for a message published by a relay (other
/// messages have no business in the relay's subjects, but must not wedge it).
const MAX_FOREIGN_MESSAGES: u64 = 1000;

/// The stream configuration for `config`: the shipped definition, renamed.
pub fn definition(config: &RelayConfig) -> Result<Config, RelayError> {
    let mut stream: Config = serde_json::from_str(DEFINITION)
        .map_err(|e| RelayError::Config(format!("bad stream definition: {e}")))?;
    stream.name = config.stream.clone();
    stream.subjects = vec![format!("{}.>", config.subject_prefix)];
    if stream.storage != StorageType::File {
        return Err(RelayError::Config(
            "the stream must use file storage".into(),
        ));
    }
    if stream.duplicate_window < MIN_DUPLICATE_WINDOW {
        return Err(RelayError::Config(
            "the stream's duplicate window must be at least 2 minutes".into(),
        ));
    }
    Ok(stream)
}

/// Creates the stream, or updates it to the definition. Errors are transient from the relay's
/// point of view (NATS down, not yet a JetStream server) and retried by the caller.
pub async fn ensure(js: &Context, config: &Config) -> Result<Stream, async_nats::Error> {
    js.create_or_update_stream(config.clone()).await?;
    Ok(js.get_stream(&config.name).await?)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy};

    #[test]
    fn the_shipped_definition_is_durable_unlimited_and_deduplicating() {
        let config = RelayConfig {
            stream: "T_EVENTS".into(),
            subject_prefix: "t.appreg".into(),
            ..RelayConfig::default()
        };
        let stream = definition(&config).unwrap();
        assert_eq!(stream.name, "T_EVENTS");
        assert_eq!(stream.subjects, vec!["t.appreg.>".to_string()]);
        assert_eq!(stream.storage, StorageType::File);
        assert!(stream.duplicate_window >= MIN_DUPLICATE_WINDOW);
        assert_eq!(stream.retention, RetentionPolicy::Limits);
        assert_eq!(stream.discard, DiscardPolicy::Old);
        assert_eq!(
            (stream.max_messages, stream.max_bytes, stream.max_age),
            (-1, -1, Duration::ZERO)
        );
        assert_eq!(
            (stream.max_messages_per_subject, stream.max_consumers),
            (-1, -1)
        );
        assert!(stream.max_message_size <= 0);
        // The default deployment's names.
        let default = definition(&RelayConfig::default()).unwrap();
        assert_eq!(default.name, "APPREG_EVENTS");
        assert_eq!(default.subjects, vec!["appreg.>".to_string()]);
        let raw: serde_json::Value = serde_json::from_str(DEFINITION).unwrap();
        assert_eq!(raw["name"], "APPREG_EVENTS");
        assert_eq!(raw["subjects"][0], "appreg.>");
    }
}
