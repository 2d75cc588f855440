//! `appreg notifier` (`[notifier]` in the file, `APPREG_NOTIFIER__*` in the environment): how
//! webhooks are delivered.

use secrecy::SecretString;
use serde::Deserialize;

/// `[notifier]`.
#[derive(Debug, Clone, Deserialize)]
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
    /// The SMTP server e-mail notifications go through: `smtp://host:port` (plain, or
    /// `?tls=required` for STARTTLS), `smtps://host:port` (TLS); credentials in the URL
    /// (`smtp://user:password@host`). A secret: never printed. Unset: no e-mail is sent.
    pub smtp_url: Option<SecretString>,
    /// The sender of the notifications (`appreg <noreply@example.com>`).
    pub mail_from: String,
    /// `API_KEY_EXPIRING` is sent this many days before a renewed key's end of validity (at
    /// once if that is nearer).
    pub api_key_expiring_days: u32,
    /// The notifier's durable JetStream consumer (PostgreSQL; one active instance consumes).
    pub consumer: String,
    /// JetStream redelivers a message not acknowledged within this time, in milliseconds.
    pub ack_wait_ms: u64,
    /// No message for this long (milliseconds) while the event log moved on: the notifier
    /// handles the log itself.
    pub catch_up_after_ms: u64,
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
            smtp_url: None,
            mail_from: "appreg <appreg@localhost>".into(),
            api_key_expiring_days: 7,
            consumer: "appreg-notifier".into(),
            ack_wait_ms: 30_000,
            catch_up_after_ms: 10_000,
        }
    }
}
