//! E-mail notifications: which members get a mail for an application event (those whose
//! notification settings name its hook), what it says, and the mailer that sends the recorded
//! mails over SMTP (`lettre`), retrying with the webhooks' back-off.

use crate::{now_ms, NotifierConfig};
use appreg_domain::subscription::Hook;
use appreg_domain::Application;
use appreg_eventstore::{Database, StoredEvent};
use appreg_notify::mails::{self, Mail, NewMail};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Mails sent per round.
const BATCH: i64 = 100;

/// Why the mailer cannot be set up (the URL is never shown: it may hold credentials).
#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error("notifier.smtp_url is not a usable SMTP URL")]
    Url(#[source] lettre::transport::smtp::Error),
    #[error("notifier.mail_from is not an address: {0}")]
    From(#[source] lettre::address::AddressError),
}

/// The mails `e` calls for, given its application's state: one per member whose settings name
/// the event's hook. `API_KEY_EXPIRING` is due `expiring_days` before the renewed key's end.
pub(crate) fn mails_of(
    e: &StoredEvent,
    app: &Application,
    expiring_days: i64,
    now: i64,
) -> Vec<NewMail> {
    let Some(hook) = Hook::for_event(&e.event_type) else {
        return Vec::new();
    };
    let text = |key: &str| {
        e.data
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let subscription = text("subscription_id");
    let (what, send_after) = match hook {
        Hook::ApiKeyExpiring => {
            let ends = e
                .data
                .get("expires_at")
                .and_then(|v| v.as_str())
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            let Some(ends) = ends else {
                return Vec::new();
            };
            let due = ends.timestamp_millis() - expiring_days * 86_400_000;
            (
                format!(
                    "an API key of the subscription {subscription} expires at {}",
                    ends.to_rfc3339()
                ),
                due.min(ends.timestamp_millis()),
            )
        }
        other => (
            format!(
                "the subscription {subscription} is now {}",
                other
                    .as_str()
                    .trim_start_matches("SUBSCRIPTION_")
                    .to_lowercase()
            ),
            now,
        ),
    };
    let subject = format!("[appreg] {}: {what}", app.name.as_str());
    let body = format!(
        "Application {} ({}): {what}.\r\n\r\nYou get this mail because your notification settings of this application name {}.\r\n",
        app.name.as_str(),
        app.id,
        hook.as_str()
    );
    app.notifications
        .iter()
        .filter(|(_, setting)| setting.hooks.contains(&hook))
        .map(|(member, setting)| NewMail {
            event_id: e.event_id.to_string(),
            member: member.to_string(),
            hook: hook.as_str().to_string(),
            // Sealed with the member's data key (opened only when sent): no address at rest.
            recipient: setting.email.as_str().to_string(),
            subject: subject.clone(),
            body: body.clone(),
            send_after,
        })
        .collect()
}

/// Sends the recorded mails.
pub(crate) struct Mailer {
    pub db: Database,
    /// Opens the sealed recipients (the members' data keys).
    pub keys: appreg_secrets::PersonalKeys,
    pub transport: AsyncSmtpTransport<Tokio1Executor>,
    pub from: Mailbox,
    pub config: NotifierConfig,
    pub wake: Arc<Notify>,
}

impl Mailer {
    /// The SMTP transport of `url` and the sender `from`.
    pub fn transport(
        url: &SecretString,
        from: &str,
        config: &NotifierConfig,
    ) -> Result<(AsyncSmtpTransport<Tokio1Executor>, Mailbox), MailSetupError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(MailSetupError::Url)?
            .timeout(Some(config.timeout))
            .build();
        let from = from.parse().map_err(MailSetupError::From)?;
        Ok((transport, from))
    }

    /// Sends due mails until `stop` fires.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            match mails::due(&self.db, now_ms(), BATCH).await {
                Ok(due) => {
                    for mail in &due {
                        self.send(mail).await;
                    }
                }
                Err(error) => tracing::warn!(%error, "notifier: due mails could not be read"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// The mail's address: the recipient opened with the member's data key (`None`: the member
    /// was erased, or the address cannot be opened; a legacy plaintext address as it is).
    async fn address(&self, mail: &Mail) -> Result<Option<String>, ()> {
        if !appreg_domain::personal::is_sealed(&mail.recipient) {
            return Ok(Some(mail.recipient.clone()));
        }
        self.keys
            .open(
                &mail.member,
                appreg_domain::personal::FIELD_EMAIL,
                &mail.recipient,
            )
            .await
            .map_err(|error| {
                tracing::warn!(%error, "notifier: a mail's recipient could not be opened");
            })
    }

    async fn send(&self, mail: &Mail) {
        let sent = match self.address(mail).await {
            // Erased: nothing to send, ever.
            Ok(None) => Err(true),
            Ok(Some(address)) => match self.message(mail, &address) {
                Some(message) => self.transport.send(message).await.map(|_| ()).map_err(|e| {
                    tracing::warn!(error = %e, "notifier: a mail was not accepted by the SMTP server");
                    false
                }),
                None => Err(false),
            },
            Err(()) => Err(false),
        };
        let now = now_ms();
        let (status, after, outcome) = match sent {
            Ok(()) => ("SENT", now, "sent"),
            Err(true) => ("FAILED", now, "erased"),
            Err(false) => {
                let retry_for =
                    i64::try_from(self.config.retry_for.as_millis()).unwrap_or(i64::MAX);
                if now.saturating_sub(mail.created_at) >= retry_for {
                    ("FAILED", now, "failed")
                } else {
                    let pause = crate::dispatch::backoff(&self.config, mail.attempt);
                    ("PENDING", now.saturating_add(pause), "retry")
                }
            }
        };
        if let Err(error) = mails::record(&self.db, mail, status, after, now).await {
            tracing::warn!(%error, "notifier: a mail's attempt could not be recorded");
            return;
        }
        metrics::counter!("appreg_notifier_mails_total", "outcome" => outcome).increment(1);
    }

    fn message(&self, mail: &Mail, address: &str) -> Option<Message> {
        let to: Mailbox = address.parse().ok()?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .ok()
    }
}
