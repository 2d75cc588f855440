//! Suspected orphans: registration attempts whose outcome is unknown (RFC 7591 defines no
//! idempotency; most providers ignore `Idempotency-Key`). The saga records each such attempt
//! before it tries again, and clears them when it proves that the provider created no other
//! client for them. Pure, like the rest of the aggregate: times are passed in.

use crate::application::{
    Application, ApplicationEvent, DcrAttemptOutcomeUnknown, DcrAttemptSuspicionsCleared,
    RegistrationState, SuspicionProof,
};
use crate::error::{DomainError, FieldErrors};
use crate::values::ClientId;

/// At most this many characters of an unknown attempt's error are recorded.
pub const MAX_ATTEMPT_ERROR: usize = 500;
/// An `Idempotency-Key` has 1 to this many characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// The first `max` characters of `s`.
fn bounded(mut s: String, max: usize) -> String {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
    }
    s
}

impl Application {
    /// The saga's record of an attempt of the current registration request whose answer was
    /// lost. Recording the same attempt again decides nothing; an attempt of a request that is
    /// not the current REGISTERING one is refused (the saga no longer acts on it).
    pub fn record_unknown_attempt(
        &self,
        attempt: DcrAttemptOutcomeUnknown,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        if !self.app_type.is_oauth() {
            return Err(DomainError::NotOAuth);
        }
        let known = self
            .suspected_orphans
            .iter()
            .any(|s| s.request_version == attempt.request_version && s.attempt == attempt.attempt);
        if known {
            return Ok(vec![]);
        }
        let current = self.registration.as_ref().is_some_and(|r| {
            r.request_version == attempt.request_version
                && r.state == RegistrationState::Registering
        });
        if !current {
            return Err(DomainError::StaleRequest);
        }
        let mut errors = FieldErrors::new();
        if attempt.attempt == 0 {
            errors.add("attempt", "attempt.invalid", "attempts count from 1");
        }
        let key_len = attempt.idempotency_key.chars().count();
        if key_len == 0 || key_len > MAX_IDEMPOTENCY_KEY {
            errors.add(
                "idempotency_key",
                "idempotency_key.invalid",
                format!("an idempotency key has 1 to {MAX_IDEMPOTENCY_KEY} characters"),
            );
        }
        if attempt.provider_id.is_empty()
            || attempt.provider_id.len() > crate::application::MAX_PROVIDER_ID
        {
            errors.add(
                "provider_id",
                "provider_id.invalid",
                "a provider id has 1 to 100 bytes",
            );
        }
        if attempt.ended_at < attempt.started_at {
            errors.add(
                "ended_at",
                "ended_at.before_start",
                "an attempt cannot end before it started",
            );
        }
        errors.into_result()?;
        let error = if attempt.error.is_empty() {
            crate::dcr::UNKNOWN_ERROR.to_string()
        } else {
            bounded(attempt.error, MAX_ATTEMPT_ERROR)
        };
        Ok(vec![ApplicationEvent::DcrAttemptOutcomeUnknown(
            DcrAttemptOutcomeUnknown { error, ..attempt },
        )])
    }

    /// The open suspicions of the request at `request_version` (their attempt numbers, in the
    /// order recorded) and the provider they were sent to.
    pub fn open_suspicions(&self, request_version: i64) -> Option<(String, Vec<u32>)> {
        let open: Vec<_> = self
            .suspected_orphans
            .iter()
            .filter(|s| s.request_version == request_version)
            .collect();
        let first = open.first()?;
        Some((
            first.provider_id.clone(),
            open.iter().map(|s| s.attempt).collect(),
        ))
    }

    /// The saga proved (`proof`) that every attempt of the request at `request_version` created
    /// `client_id` and nothing else: their suspicions are closed. Nothing open: nothing to decide.
    pub fn clear_suspicions(
        &self,
        request_version: i64,
        client_id: ClientId,
        proof: SuspicionProof,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        if !self.app_type.is_oauth() {
            return Err(DomainError::NotOAuth);
        }
        let Some((provider_id, attempts)) = self.open_suspicions(request_version) else {
            return Ok(vec![]);
        };
        Ok(vec![ApplicationEvent::DcrAttemptSuspicionsCleared(
            DcrAttemptSuspicionsCleared {
                request_version,
                provider_id,
                attempts,
                client_id,
                proof,
            },
        )])
    }
}
