//! `appreg notifier` (`[notifier]` in the file, `APPREG_NOTIFIER__*` in the environment): how
//! webhooks are delivered.

use serde::{Deserialize, Serialize};

/// `[notifier]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifierSettings {
    /// Longest wait for a receiver's answer, in milliseconds; then the attempt failed.
    pub timeout_ms: u64,
    /// Pause before the first retry, in milliseconds, doubled after each failed attempt (±20%).
    pub retry_first_ms: u64,
    /// Longest pause between two attempts, in milliseconds.
    pub retry_max_ms: u64,
    /// A delivery still failing this long (seconds) after it was recorded ends as FAILED.
    pub retry_for_seconds: u64,
    /// Attempts in flight to one endpoint at once (deliveries of different applications; those of
    /// one application go one after another, in order).
    pub endpoint_concurrency: usize,
    /// Attempts in flight in all.
    pub max_in_flight: usize,
    /// How often due deliveries are looked for, in milliseconds (new events wake the
    /// dispatcher at once).
    pub poll_ms: u64,
}

impl Default for NotifierSettings {
    fn default() -> Self {
        NotifierSettings {
            timeout_ms: 10_000,
            retry_first_ms: 5_000,
            retry_max_ms: 3_600_000,
            retry_for_seconds: 86_400,
            endpoint_concurrency: 4,
            max_in_flight: 256,
            poll_ms: 500,
        }
    }
}
