//! The JetStream stream: its definition, and its creation or update (`appreg nats setup` and the
//! relay at start); the comparison of settings that the set-up of consumers uses too.
//!
//! The definition is `deploy/nats/APPREG_EVENTS.json` (the NATS server's own stream-config JSON,
//! so `nats stream add --config` accepts it too), embedded in the binary; only its name and
//! subjects are replaced by the configured stream name and `<prefix>.>`.

use async_nats::jetstream::stream::{Config, StorageType, Stream};
use async_nats::jetstream::Context;
use std::time::Duration;

/// The stream definition shipped in `deploy/`.
pub const DEFINITION: &str = include_str!("../../../deploy/nats/APPREG_EVENTS.json");

/// The shortest duplicate window that covers a publish retried after its ack was lost.
pub const MIN_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Why the shipped definition cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("bad stream definition: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the stream must use file storage")]
    NotFileStorage,
    #[error("the stream's duplicate window must be at least 2 minutes")]
    DuplicateWindowTooShort,
}

/// The configuration of the stream `name` holding the subjects `<subject_prefix>.>`: the
/// shipped definition, renamed.
pub fn definition(name: &str, subject_prefix: &str) -> Result<Config, DefinitionError> {
    let mut stream: Config = serde_json::from_str(DEFINITION)?;
    stream.name = name.to_string();
    stream.subjects = vec![format!("{subject_prefix}.>")];
    if stream.storage != StorageType::File {
        return Err(DefinitionError::NotFileStorage);
    }
    if stream.duplicate_window < MIN_DUPLICATE_WINDOW {
        return Err(DefinitionError::DuplicateWindowTooShort);
    }
    Ok(stream)
}

/// Creates the stream, or updates it to the definition (keeping the replicas of an existing
/// stream, see [`ensure_replicas`]). Errors are transient from the relay's point of view (NATS
/// down, not yet a JetStream server) and retried by the caller.
pub async fn ensure(js: &Context, config: &Config) -> Result<Stream, async_nats::Error> {
    Ok(ensure_replicas(js, config, None).await?.0)
}

/// What making sure of a stream or a consumer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// It did not exist and was created.
    Created,
    /// It existed with other settings (`name: current → wanted`) and was updated.
    Updated(Vec<String>),
    /// It existed with the wanted settings: nothing was sent.
    Unchanged,
}

impl std::fmt::Display for Ensured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ensured::Created => f.write_str("created"),
            Ensured::Updated(changes) => write!(f, "updated ({})", changes.join(", ")),
            Ensured::Unchanged => f.write_str("unchanged"),
        }
    }
}

/// Creates the stream, or updates it when its settings differ from `config`, and says which
/// (`appreg nats setup` and the relay at start share it). `replicas`: the replicas to set, or
/// `None` to keep those of an existing stream and take the definition's for a new one — scaling
/// a stream is the operator's choice (`appreg nats setup --replicas 3` on a cluster), which a
/// relay starting with the single-node definition must not undo.
pub async fn ensure_replicas(
    js: &Context,
    config: &Config,
    replicas: Option<usize>,
) -> Result<(Stream, Ensured), async_nats::Error> {
    use async_nats::jetstream::context::GetStreamErrorKind;
    use async_nats::jetstream::ErrorCode;
    let mut wanted = config.clone();
    match js.get_stream(&config.name).await {
        Ok(stream) => {
            let current = stream.cached_info().config.clone();
            wanted.num_replicas = replicas.unwrap_or(current.num_replicas);
            let definition_keys: Vec<String> =
                serde_json::from_str::<serde_json::Value>(DEFINITION)
                    .ok()
                    .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
                    .unwrap_or_default();
            let changes = changed_settings(
                &serde_json::to_value(&wanted)?,
                &serde_json::to_value(&current)?,
                &definition_keys,
            );
            if changes.is_empty() {
                return Ok((stream, Ensured::Unchanged));
            }
            js.update_stream(&wanted).await?;
            Ok((
                js.get_stream(&config.name).await?,
                Ensured::Updated(changes),
            ))
        }
        Err(error)
            if matches!(error.kind(), GetStreamErrorKind::JetStream(e)
                if e.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            if let Some(replicas) = replicas {
                wanted.num_replicas = replicas;
            }
            js.create_stream(wanted).await?;
            Ok((js.get_stream(&config.name).await?, Ensured::Created))
        }
        Err(error) => Err(error.into()),
    }
}

/// The settings named in `wanted` (a stream's or consumer's configuration as the server's JSON)
/// or in `also` whose value in `current` differs, as `name: current → wanted`. A setting absent
/// on one side counts as its default (`false`, `0`, `""`, empty, `null`); settings neither side
/// names (those a newer server fills in) are not compared.
pub fn changed_settings(
    wanted: &serde_json::Value,
    current: &serde_json::Value,
    also: &[String],
) -> Vec<String> {
    use serde_json::Value;
    fn blank(v: Option<&Value>) -> bool {
        match v {
            None | Some(Value::Null) | Some(Value::Bool(false)) => true,
            Some(Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(_) => false,
        }
    }
    let mut keys: Vec<&str> = wanted
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.extend(also.iter().map(String::as_str));
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (w, c) = (wanted.get(key), current.get(key));
            let same = w == c || (blank(w) && blank(c));
            let show = |v: Option<&Value>| v.map_or_else(|| "-".to_string(), Value::to_string);
            (!same).then(|| format!("{key}: {} → {}", show(c), show(w)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy};

    #[test]
    fn the_shipped_definition_is_durable_unlimited_and_deduplicating() {
        let stream = definition("T_EVENTS", "t.appreg").unwrap();
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
        let default = definition("APPREG_EVENTS", "appreg").unwrap();
        assert_eq!(default.name, "APPREG_EVENTS");
        assert_eq!(default.subjects, vec!["appreg.>".to_string()]);
        let raw: serde_json::Value = serde_json::from_str(DEFINITION).unwrap();
        assert_eq!(raw["name"], "APPREG_EVENTS");
        assert_eq!(raw["subjects"][0], "appreg.>");
    }
}
