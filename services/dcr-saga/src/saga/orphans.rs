//! Suspected orphans: a registration attempt whose answer was lost (a 5xx, a timeout or a reset
//! after sending) may have created a client at the provider. Each one is recorded
//! (`DcrAttemptOutcomeUnknown`) before the next attempt; once the request succeeds, the
//! registration is sent once more with the same `Idempotency-Key` (the replay probe): the same
//! client_id back proves the provider honours the key — every attempt created that very client —
//! and the suspicions are cleared (`DcrAttemptSuspicionsCleared`); another client_id proves it
//! does not: the probe's client is deleted at once (or recorded as an orphan) and the suspicions
//! stay open, for an administrator to look for at the provider.

use super::*;
use appreg_domain::application::{DcrAttemptOutcomeUnknown, SuspicionProof};

impl Saga {
    /// Marks attempt `attempt` of the request `key` in flight (`dcr_attempts`), before it is
    /// sent: a saga that dies before the answer leaves the mark behind.
    pub(super) async fn mark_attempt(
        &self,
        key: &str,
        attempt: u32,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), SagaError> {
        // With the other requests' marks (one statement, one commit).
        self.marks.mark(key, attempt, started_at).await
    }

    /// Drops the in-flight mark of the request `key` (it failed; an obtained client's is dropped
    /// with its `dcr_requests` row).
    pub(super) async fn unmark_attempt(&self, key: &str) -> Result<(), SagaError> {
        with_pool!(&self.db, pool => sqlx::query("DELETE FROM dcr_attempts WHERE request_key = $1")
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Records an attempt of the request `e` whose outcome is unknown.
    pub(super) async fn note_unknown(
        &self,
        id: ApplicationId,
        e: &StoredEvent,
        app: &Application,
        provider: &Provider,
        lost: LostAttempt,
        meta: &serde_json::Value,
    ) -> Result<(), SagaError> {
        tracing::warn!(attempt = lost.attempt, error = %lost.error, "a registration attempt's outcome is unknown: recording a suspected orphan");
        let attempt = DcrAttemptOutcomeUnknown {
            request_version: e.version,
            provider_id: provider.id.clone(),
            idempotency_key: e.event_id.to_string(),
            attempt: lost.attempt,
            client_name: app.name.clone(),
            started_at: lost.started_at,
            ended_at: lost.ended_at,
            error: lost.error,
        };
        let recorded = apps::execute(&self.commands, id, meta, |app| {
            app.record_unknown_attempt(attempt.clone())
        })
        .await;
        match recorded {
            Ok(_) => Ok(()),
            // No longer the current request (superseded, answered meanwhile): the saga stops
            // acting on it anyway.
            Err(CommandError::Domain(reason)) => {
                tracing::info!(%reason, "the unknown attempt was not recorded");
                Ok(())
            }
            Err(other) => Err(other.into()),
        }
    }

    /// The replay probe, after the request `e` obtained (and recorded) the client `obtained`
    /// with suspicions open.
    pub(super) async fn prove(
        &self,
        id: ApplicationId,
        e: &StoredEvent,
        app: &Application,
        provider: &Provider,
        obtained: &Stored,
        meta: &serde_json::Value,
    ) -> Result<(), SagaError> {
        // Recorded as the application's client_id, so it parses.
        let Ok(client_id) = ClientId::parse(&obtained.client_id) else {
            return Ok(());
        };
        let client_id = &client_id;
        let environment = app.environment.as_str();
        let settings = self.settings(environment, provider).await?;
        let metadata = match client_metadata(app, provider) {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "no replay probe: the client's metadata cannot be built");
                metrics::counter!("appreg_dcr_replay_probes_total", "outcome" => "failed")
                    .increment(1);
                return Ok(());
            }
        };
        let key = e.event_id.to_string();
        let answer = {
            let _slot = self.bulkheads.enter(environment, &provider.id).await;
            self.client
                .register_idempotent(&settings, &metadata, Some(&key))
                .await
        };
        match answer {
            Ok(probe) if probe.client_id == client_id.as_str() => {
                metrics::counter!("appreg_dcr_replay_probes_total", "outcome" => "honoured")
                    .increment(1);
                tracing::info!(
                    "the provider honours Idempotency-Key: clearing the suspected orphans"
                );
                let probe_secret = probe
                    .client_secret
                    .as_ref()
                    .map(appreg_secrets::fingerprint);
                if probe_secret != obtained.secret_fingerprint {
                    // A provider that honours the key by issuing the client again rather than
                    // answering the first answer again: the recorded secret may be void now.
                    tracing::error!("the replay probe got the client with another secret: the recorded secret may no longer work");
                    metrics::counter!("appreg_dcr_replay_probe_secret_changes_total").increment(1);
                }
                let cleared = apps::execute(&self.commands, id, meta, |app| {
                    app.clear_suspicions(
                        e.version,
                        client_id.clone(),
                        SuspicionProof::IdempotentReplay,
                    )
                })
                .await;
                ignore_refusals(cleared)
            }
            Ok(probe) => {
                metrics::counter!("appreg_dcr_replay_probes_total", "outcome" => "ignored")
                    .increment(1);
                tracing::warn!(
                    probe_client_id = probe.client_id.as_str(),
                    "the provider ignores Idempotency-Key: the suspected orphans stay open; deleting the probe's client"
                );
                self.discard_handle(
                    id,
                    provider,
                    &probe.handle(),
                    "the client of a replay probe (the provider ignores Idempotency-Key)",
                    meta,
                )
                .await
            }
            Err(error) => {
                metrics::counter!("appreg_dcr_replay_probes_total", "outcome" => "failed")
                    .increment(1);
                // The suspicions stay open. A probe whose own answer was lost may have left one
                // more client: that one is in the logs only.
                tracing::warn!(%error, outcome_unknown = error.outcome_unknown(), "the replay probe failed: the suspected orphans stay open");
                Ok(())
            }
        }
    }
}
