//! NATS subjects of events, and the reversible escaping of their tokens.
//!
//! An event is published on `<prefix>.<environment>.<stream_type>.<stream_id>.<EventType>`.
//! NATS splits subjects on `.`, treats `*` and `>` as wildcards and forbids whitespace, so a token
//! taken from data (a user stream id looks like `user-DEFAULT/alice@example.com`) is escaped:
//!
//! - every byte of the token's UTF-8 outside the printable ASCII range `!`..=`~` (so space,
//!   control characters and every non-ASCII byte), and the four bytes `.` `*` `>` `%`, become
//!   `%XX` (two upper-case hex digits);
//! - the empty token becomes `%` alone (an escaped non-empty token never is `%` alone, since a
//!   literal `%` becomes `%25`).
//!
//! Everything else stays as it is, so ordinary ids stay readable and subscribers can filter on
//! them (`appreg.DEFAULT.application.>`); `user-DEFAULT/alice@example.com` becomes
//! `user-DEFAULT/alice@example%2Ecom`. [`unescape_token`] inverts [`escape_token`] exactly.
//! This module must never produce a token that is empty, contains a separator or a wildcard, or
//! that two different inputs share.

use std::fmt::Write;

/// Whether `byte` is kept as is in a token.
fn is_plain(byte: u8) -> bool {
    matches!(byte, b'!'..=b'~') && !matches!(byte, b'.' | b'*' | b'>' | b'%')
}

/// The subject token for `raw` (see the module doc).
pub fn escape_token(raw: &str) -> String {
    if raw.is_empty() {
        return "%".to_string();
    }
    let mut out = String::with_capacity(raw.len());
    for &byte in raw.as_bytes() {
        if is_plain(byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Why a token is not the output of [`escape_token`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an escaped subject token: {0:?}")]
pub struct BadToken(pub String);

/// The original text of an escaped token.
pub fn unescape_token(token: &str) -> Result<String, BadToken> {
    let bad = || BadToken(token.to_string());
    if token == "%" {
        return Ok(String::new());
    }
    if token.is_empty() {
        return Err(bad());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = token.get(i + 1..i + 3).ok_or_else(bad)?;
                let byte = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
                // Only what escape_token escapes may appear escaped (one spelling per input).
                if is_plain(byte) || hex.bytes().any(|b| b.is_ascii_lowercase()) {
                    return Err(bad());
                }
                out.push(byte);
                i += 3;
            }
            byte if is_plain(byte) => {
                out.push(byte);
                i += 1;
            }
            _ => return Err(bad()),
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Whether `prefix` is usable as the first tokens of every subject: dot-separated tokens, none
/// empty, no wildcard, no whitespace.
pub fn is_valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && token
                    .bytes()
                    .all(|b| matches!(b, b'!'..=b'~') && b != b'*' && b != b'>')
        })
}

/// The subject of one event: `<prefix>.<environment>.<stream_type>.<stream_id>.<event_type>`,
/// every part after the prefix escaped.
pub fn event_subject(
    prefix: &str,
    environment: &str,
    stream_type: &str,
    stream_id: &str,
    event_type: &str,
) -> String {
    format!(
        "{prefix}.{}.{}.{}.{}",
        escape_token(environment),
        escape_token(stream_type),
        escape_token(stream_id),
        escape_token(event_type)
    )
}

/// The four parts of an event subject, unescaped: what [`event_subject`] was given after the
/// prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectParts {
    pub environment: String,
    pub stream_type: String,
    pub stream_id: String,
    pub event_type: String,
}

/// Splits and unescapes a subject made by [`event_subject`] with `prefix`.
pub fn parse_event_subject(prefix: &str, subject: &str) -> Result<SubjectParts, BadToken> {
    let bad = || BadToken(subject.to_string());
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .ok_or_else(bad)?;
    let tokens: Vec<&str> = rest.split('.').collect();
    let [environment, stream_type, stream_id, event_type] = tokens[..] else {
        return Err(bad());
    };
    Ok(SubjectParts {
        environment: unescape_token(environment)?,
        stream_type: unescape_token(stream_type)?,
        stream_id: unescape_token(stream_id)?,
        event_type: unescape_token(event_type)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWKWARD: &[&str] = &[
        "",
        "%",
        "%%",
        "%25",
        "%41",
        ".",
        "..",
        "*",
        ">",
        "a.b",
        "a b",
        " ",
        "\t\n\r",
        "user-DEFAULT/alice@example.com",
        "user-DEFAULT/first.last@example.com",
        "ünïcødé ☃",
        "tab\there",
        "star*gt>dot.pct%",
        "\u{7f}\u{0}",
        "application-0190f0c8-6d1a-7c7e-8a51-0a2c7e6b1d2f",
    ];

    fn valid_token(token: &str) -> bool {
        !token.is_empty()
            && token != "*"
            && token != ">"
            && token
                .bytes()
                .all(|b| matches!(b, b'!'..=b'~') && !matches!(b, b'.' | b'*' | b'>'))
    }

    #[test]
    fn ordinary_ids_stay_readable() {
        assert_eq!(escape_token("DEFAULT"), "DEFAULT");
        assert_eq!(escape_token("ApplicationCreated"), "ApplicationCreated");
        assert_eq!(escape_token("user-DEFAULT/alice"), "user-DEFAULT/alice");
        assert_eq!(
            escape_token("user-DEFAULT/alice@example.com"),
            "user-DEFAULT/alice@example%2Ecom"
        );
        assert_eq!(escape_token(""), "%");
        assert_eq!(escape_token("%"), "%25");
        assert_eq!(escape_token("a b*>"), "a%20b%2A%3E");
        assert_eq!(escape_token("é"), "%C3%A9");
    }

    #[test]
    fn awkward_ids_round_trip_into_valid_tokens() {
        for raw in AWKWARD {
            let token = escape_token(raw);
            assert!(valid_token(&token), "{raw:?} -> {token:?}");
            assert_eq!(unescape_token(&token).as_deref(), Ok(*raw), "{token:?}");
        }
    }

    #[test]
    fn escaping_is_injective() {
        let mut seen = std::collections::HashMap::new();
        for raw in AWKWARD {
            if let Some(other) = seen.insert(escape_token(raw), *raw) {
                panic!("{raw:?} and {other:?} share a token");
            }
        }
    }

    #[test]
    fn only_escaped_spellings_are_accepted() {
        for token in [
            "", "%4", "%zz", "%41", "%2e", "a.b", "a b", "%C3", "é", "*", "%%",
        ] {
            assert!(unescape_token(token).is_err(), "{token:?}");
        }
    }

    #[test]
    fn subjects_round_trip() {
        for raw in AWKWARD {
            let subject = event_subject("t.appreg", raw, "user", raw, "UserSeen");
            assert_eq!(subject.split('.').count(), 6, "{subject}");
            assert!(subject.split('.').all(valid_token), "{subject}");
            let parts = parse_event_subject("t.appreg", &subject).unwrap();
            assert_eq!(
                parts,
                SubjectParts {
                    environment: raw.to_string(),
                    stream_type: "user".into(),
                    stream_id: raw.to_string(),
                    event_type: "UserSeen".into(),
                }
            );
        }
        assert!(parse_event_subject("appreg", "other.a.b.c.d").is_err());
        assert!(parse_event_subject("appreg", "appreg.a.b.c").is_err());
        assert!(parse_event_subject("appreg", "appregx.a.b.c.d").is_err());
    }

    #[test]
    fn prefixes() {
        for ok in ["appreg", "test.run-1", "a_b"] {
            assert!(is_valid_prefix(ok), "{ok}");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "a.*", "a.>", "a b", "a*b", "é"] {
            assert!(!is_valid_prefix(bad), "{bad}");
        }
    }
}
