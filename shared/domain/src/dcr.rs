//! The decisions about an OAuth application's client at its provider (Dynamic Client
//! Registration, RFC 7591/7592): the saga's answers, a retry, a secret renewal, a deletion, an
//! orphan. Pure, like the rest of the aggregate: the saga calls the provider and turns what it
//! got into one of these commands; the store appends what they decide.

use crate::application::{
    Application, ApplicationEvent, ApplicationStatus, ClientOperationFailed, ClientOperationKind,
    ClientSecretRenewalRequested, ClientSecretRenewed, DcrClientDeleted, DcrClientRegistered,
    DcrClientUpdateRequested, DcrClientUpdated, DcrRegistrationFailed, DcrRegistrationRequested,
    OperationState, OrphanClientDetected, RegistrationReason, RegistrationState,
    CHANGED_AUTH_METHOD,
};
use crate::error::DomainError;
use crate::values::ClientId;
use crate::ApplicationType;
use chrono::{DateTime, Utc};

/// What the provider issued for a registration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedClient {
    pub provider_id: String,
    pub client_id: ClientId,
    pub client_secret_fingerprint: Option<String>,
    pub client_secret_expires_at: Option<DateTime<Utc>>,
}

/// Why a request failed at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderFailure {
    pub error: String,
    pub error_description: Option<String>,
}

/// At most this many characters of a provider's `error` are recorded.
pub const MAX_ERROR: usize = 255;
/// At most this many characters of a provider's `error_description`, or of an orphan's reason.
pub const MAX_ERROR_DESCRIPTION: usize = 4000;
/// The `error` recorded when the provider gave none.
pub const UNKNOWN_ERROR: &str = "unknown_error";

/// The first `max` characters of `s`: what a provider sends is recorded forever, and the
/// published schemas bound it.
fn bounded(mut s: String, max: usize) -> String {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
    }
    s
}

impl ProviderFailure {
    /// The failure as recorded: `error` 1 to [`MAX_ERROR`] characters, `error_description` at
    /// most [`MAX_ERROR_DESCRIPTION`].
    fn bounded(self) -> Self {
        let error = if self.error.is_empty() {
            UNKNOWN_ERROR.to_string()
        } else {
            bounded(self.error, MAX_ERROR)
        };
        ProviderFailure {
            error,
            error_description: self
                .error_description
                .map(|d| bounded(d, MAX_ERROR_DESCRIPTION)),
        }
    }
}

impl Application {
    fn oauth(&self) -> Result<(), DomainError> {
        if !self.app_type.is_oauth() {
            return Err(DomainError::NotOAuth);
        }
        Ok(())
    }

    fn registration_state(&self) -> Option<(RegistrationState, i64)> {
        self.registration
            .as_ref()
            .map(|r| (r.state, r.request_version))
    }

    /// The saga's answer: the provider issued a client for the request at `request_version`.
    /// Answering the same request again with the same client decides nothing (a redelivery); an
    /// answer to an older request, or for an archived application, is refused — the saga then
    /// deletes the client it obtained (or records an orphan).
    pub fn register_dcr_client(
        &self,
        request_version: i64,
        issued: IssuedClient,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        self.oauth()?;
        match self.registration_state() {
            Some((RegistrationState::Registered, v))
                if v == request_version && self.client_id.as_ref() == Some(&issued.client_id) =>
            {
                return Ok(vec![]);
            }
            Some((RegistrationState::Registering, v)) if v == request_version => {}
            _ => return Err(DomainError::StaleRequest),
        }
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        Ok(vec![ApplicationEvent::DcrClientRegistered(
            DcrClientRegistered {
                request_version,
                provider_id: issued.provider_id,
                client_id: issued.client_id,
                client_secret_fingerprint: issued.client_secret_fingerprint,
                client_secret_expires_at: issued.client_secret_expires_at,
            },
        )])
    }

    /// The saga's answer: the provider refused the request (or stayed unreachable). A repeated
    /// answer decides nothing; an answer to an older request is refused.
    pub fn fail_dcr_registration(
        &self,
        request_version: i64,
        provider_id: Option<String>,
        failure: ProviderFailure,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        let failure = failure.bounded();
        self.oauth()?;
        match self.registration_state() {
            Some((RegistrationState::RegistrationFailed, v)) if v == request_version => Ok(vec![]),
            Some((RegistrationState::Registering, v)) if v == request_version => {
                Ok(vec![ApplicationEvent::DcrRegistrationFailed(
                    DcrRegistrationFailed {
                        request_version,
                        provider_id,
                        error: failure.error,
                        error_description: failure.error_description,
                    },
                )])
            }
            _ => Err(DomainError::StaleRequest),
        }
    }

    /// `_retry_registration`: only after a failed registration of an active application.
    pub fn retry_registration(&self) -> Result<Vec<ApplicationEvent>, DomainError> {
        self.oauth()?;
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        let Some(r) = &self.registration else {
            return Err(DomainError::RegistrationNotFailed);
        };
        if r.state != RegistrationState::RegistrationFailed {
            return Err(DomainError::RegistrationNotFailed);
        }
        Ok(vec![ApplicationEvent::DcrRegistrationRequested(
            DcrRegistrationRequested {
                provider_id: self.provider_id.clone(),
                attempt: r.attempt.saturating_add(1),
                reason: RegistrationReason::Retry,
            },
        )])
    }

    /// The registered client's provider, when the application is active and registered.
    fn registered(&self) -> Result<&crate::application::Registration, DomainError> {
        self.oauth()?;
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        match &self.registration {
            Some(r) if r.state == RegistrationState::Registered && !r.client_deleted => Ok(r),
            _ => Err(DomainError::NotRegistered),
        }
    }

    /// `_renew_secret`: an active, registered OAuth application with no operation in progress.
    /// (Whether the provider allows renewal is checked by the caller, which knows the provider.)
    pub fn request_secret_renewal(&self) -> Result<Vec<ApplicationEvent>, DomainError> {
        let r = self.registered()?;
        if r.operation
            .as_ref()
            .is_some_and(|o| o.state == OperationState::Pending)
        {
            return Err(DomainError::OperationPending);
        }
        Ok(vec![ApplicationEvent::ClientSecretRenewalRequested(
            ClientSecretRenewalRequested {},
        )])
    }

    /// The pending operation of `kind` requested at `request_version`, if it is the current one.
    fn pending(
        &self,
        kind: ClientOperationKind,
        request_version: i64,
    ) -> Result<bool, DomainError> {
        self.oauth()?;
        let op = self
            .registration
            .as_ref()
            .and_then(|r| r.operation.as_ref());
        match op {
            Some(o) if o.kind == kind && o.request_version == request_version => {
                Ok(o.state == OperationState::Pending)
            }
            _ => Err(DomainError::StaleRequest),
        }
    }

    /// The saga's answer to a renewal: the new secret is in the vault.
    pub fn complete_secret_renewal(
        &self,
        request_version: i64,
        client_secret_fingerprint: String,
        client_secret_expires_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        if !self.pending(ClientOperationKind::RenewSecret, request_version)? {
            return Ok(vec![]);
        }
        Ok(vec![ApplicationEvent::ClientSecretRenewed(
            ClientSecretRenewed {
                request_version,
                client_secret_fingerprint,
                client_secret_expires_at,
            },
        )])
    }

    /// The saga's answer to a renewal that failed.
    pub fn fail_secret_renewal(
        &self,
        request_version: i64,
        failure: ProviderFailure,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        let failure = failure.bounded();
        if !self.pending(ClientOperationKind::RenewSecret, request_version)? {
            return Ok(vec![]);
        }
        Ok(vec![ApplicationEvent::ClientSecretRenewalFailed(
            ClientOperationFailed {
                request_version,
                error: failure.error,
                error_description: failure.error_description,
            },
        )])
    }

    /// The saga's answer to a client update.
    pub fn complete_client_update(
        &self,
        request_version: i64,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        if !self.pending(ClientOperationKind::Update, request_version)? {
            return Ok(vec![]);
        }
        Ok(vec![ApplicationEvent::DcrClientUpdated(DcrClientUpdated {
            request_version,
            client_secret_removed: false,
        })])
    }

    /// The saga's answer to a client update after which the provider holds the client as a
    /// public one (`token_endpoint_auth_method: none`) and the secret is gone from the vault:
    /// the application has no client secret any more.
    pub fn complete_client_update_as_public(
        &self,
        request_version: i64,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        if !self.pending(ClientOperationKind::Update, request_version)? {
            return Ok(vec![]);
        }
        let had_secret = self
            .registration
            .as_ref()
            .is_some_and(|r| r.client_secret_fingerprint.is_some());
        Ok(vec![ApplicationEvent::DcrClientUpdated(DcrClientUpdated {
            request_version,
            client_secret_removed: had_secret,
        })])
    }

    /// A native application registered as a confidential client (before appreg registered
    /// native apps as public clients, RFC 8252 §8.4) is to become a public one: an RFC 7592
    /// update with `token_endpoint_auth_method: none`. Nothing to do for another type, an
    /// archived or unregistered application, or a client that holds no secret;
    /// [`DomainError::OperationPending`] while another operation on the client is in progress
    /// (asked again later).
    pub fn request_public_client(&self) -> Result<Vec<ApplicationEvent>, DomainError> {
        if self.app_type != ApplicationType::Native || self.status == ApplicationStatus::Archived {
            return Ok(vec![]);
        }
        let Some(r) = self.registration.as_ref() else {
            return Ok(vec![]);
        };
        if r.state != RegistrationState::Registered
            || r.client_deleted
            || r.client_secret_fingerprint.is_none()
        {
            return Ok(vec![]);
        }
        if r.operation
            .as_ref()
            .is_some_and(|o| o.state == OperationState::Pending)
        {
            return Err(DomainError::OperationPending);
        }
        Ok(vec![ApplicationEvent::DcrClientUpdateRequested(
            DcrClientUpdateRequested {
                changed: vec![CHANGED_AUTH_METHOD.to_string()],
            },
        )])
    }

    /// The saga's answer to a client update the provider refused (shown on the application;
    /// Gravitee swallows it).
    pub fn fail_client_update(
        &self,
        request_version: i64,
        failure: ProviderFailure,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        let failure = failure.bounded();
        if !self.pending(ClientOperationKind::Update, request_version)? {
            return Ok(vec![]);
        }
        Ok(vec![ApplicationEvent::DcrClientUpdateFailed(
            ClientOperationFailed {
                request_version,
                error: failure.error,
                error_description: failure.error_description,
            },
        )])
    }

    /// The saga deleted the archived application's client at its provider.
    pub fn record_client_deleted(&self) -> Result<Vec<ApplicationEvent>, DomainError> {
        self.oauth()?;
        // Restored meanwhile: the client stays (the saga must not have deleted it).
        if self.status != ApplicationStatus::Archived {
            return Err(DomainError::NotArchived);
        }
        let Some(r) = &self.registration else {
            return Err(DomainError::NotRegistered);
        };
        if r.client_deleted {
            return Ok(vec![]);
        }
        let (Some(provider_id), Some(client_id)) = (&r.provider_id, &self.client_id) else {
            return Err(DomainError::NotRegistered);
        };
        Ok(vec![ApplicationEvent::DcrClientDeleted(DcrClientDeleted {
            provider_id: provider_id.clone(),
            client_id: client_id.clone(),
        })])
    }

    /// A client the saga obtained for this application but could not record, and could not
    /// delete at the provider.
    pub fn record_orphan(
        &self,
        provider_id: String,
        client_id: String,
        reason: String,
    ) -> Vec<ApplicationEvent> {
        vec![ApplicationEvent::OrphanClientDetected(
            OrphanClientDetected {
                provider_id,
                client_id: bounded(client_id, ClientId::MAX),
                reason: bounded(reason, MAX_ERROR_DESCRIPTION),
            },
        )]
    }
}
