//! `appreg notifier`: delivers an environment's events to its webhook endpoints, signed per the
//! Standard Webhooks specification (API.md "Webhooks and e-mail", DESIGN.md "Notifier").
//!
//! Three tasks, each active in one instance per database (PostgreSQL advisory locks):
//!
//! - **ingest** ([`ingest`]): on PostgreSQL, a durable JetStream consumer
//!   ([`appreg_worker::consumer`], `notifier.consumer`) whose messages are confirmed against
//!   the event store; on SQLite (`appreg dev`), a checkpointed follower of the event log
//!   ([`appreg_worker::follower`]). For each event it records one delivery per endpoint that
//!   should receive it (`webhook_deliveries`, [`appreg_notify::deliveries`], one statement per
//!   event), keyed by the `webhook-id` derived from (endpoint, event): a redelivery or a replay
//!   records nothing twice; a message is acknowledged once its deliveries are recorded. The new
//!   ones are handed straight to the dispatcher. An environment's endpoint receives every event
//!   of the environment its filter names; an application's, the events of that application that
//!   every role among its members may read ([`appreg_domain::permissions::role_may_read`], the
//!   rule of `GET /events`). An endpoint receives the events recorded from its creation on.
//! - **dispatch** ([`dispatch`]): one worker per endpoint working from the endpoint's queue in
//!   memory ([`queue`]), so a slow or dead endpoint only ever holds up its own queue; at most
//!   `endpoint_concurrency` attempts in flight per endpoint, the deliveries of one application
//!   one after another in stream order. An attempt times out after `timeout_ms`; 2xx is
//!   delivered; 410 disables the endpoint (through the command path, `WebhookDisabled`) and
//!   fails what it had pending; anything else is retried with doubling back-off for
//!   `retry_for_seconds`, then FAILED. Attempts are written in batches; the database stays the
//!   record, read back when the dispatcher becomes active and polled for what no queue holds.
//!   The endpoints' state and opened signing secrets are kept in memory ([`endpoints`]).
//!
//! - **mail** ([`mail`], with `notifier.smtp_url`): the ingest also records, for an
//!   application event with a notification hook, one mail per member whose settings name it
//!   (`notifier_mails`, keyed by (event, member): a replay or a restart sends nothing twice;
//!   `API_KEY_EXPIRING` due `api_key_expiring_days` before the renewed key's end); a mailer
//!   sends them over SMTP with `lettre`, retried like the webhooks.
//!
//! Delivery is at least once: a notifier killed between a receiver's answer and its record sends
//! that delivery again, with the same `webhook-id`. It never logs, stores or sends a signing
//! secret (it keeps the opened ones in memory only, as `SecretString`), and never decides an
//! endpoint's state itself (the domain does, through the command path).

mod dispatch;
mod endpoints;
mod erased;
mod ingest;
mod mail;
mod queue;
pub mod service;

pub use ingest::IngestError;
pub use mail::MailSetupError;

use std::time::Duration;

/// The `actor` of the events the notifier records (an endpoint disabled after a 410).
pub const ACTOR: &str = "notifier";
/// The name of the notifier's row in `notifier_checkpoints`.
pub const CHECKPOINT: &str = "notifier";

/// How the notifier works.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub timeout: Duration,
    pub retry_first: Duration,
    pub retry_max: Duration,
    pub retry_for: Duration,
    pub endpoint_concurrency: usize,
    pub max_in_flight: usize,
    pub poll: Duration,
    /// Days before a renewed key's end its `API_KEY_EXPIRING` mail is sent.
    pub api_key_expiring_days: i64,
    /// Whether webhooks on loopback, private or otherwise non-public addresses are called
    /// (`outbound_allow_private`; [`appreg_outbound`]).
    pub allow_private: bool,
    /// The command path's settings (no group commit: the notifier appends rarely).
    pub commands: appreg_commands::CommandSettings,
}

impl NotifierConfig {
    /// The notifier's settings of the shared configuration (`[notifier]`, `[commands]`).
    pub fn from_config(config: &appreg_config::Config) -> Self {
        let n = &config.notifier;
        NotifierConfig {
            timeout: Duration::from_millis(n.timeout_ms.max(1)),
            retry_first: Duration::from_millis(n.retry_first_ms.max(1)),
            retry_max: Duration::from_millis(n.retry_max_ms.max(1)),
            retry_for: Duration::from_secs(n.retry_for_seconds),
            endpoint_concurrency: n.endpoint_concurrency.max(1),
            max_in_flight: n.max_in_flight.max(1),
            poll: Duration::from_millis(n.poll_ms.max(10)),
            api_key_expiring_days: i64::from(n.api_key_expiring_days),
            allow_private: config.outbound_allow_private,
            commands: appreg_commands::CommandSettings {
                group_commit_writers: 0,
                ..config.command_settings()
            },
        }
    }
}

/// Applies the notifier's migrations: its deliveries and checkpoint, and the vault's (whose
/// signing secrets it opens).
pub async fn migrate(
    db: &appreg_eventstore::Database,
) -> Result<(), appreg_eventstore::StoreError> {
    appreg_secrets::store::migrate(db).await?;
    appreg_notify::migrate(db).await
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
