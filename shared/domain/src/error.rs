//! Domain errors. Each carries a stable code that the HTTP edge maps to a status; the messages
//! are safe to show to the caller (they never contain secrets or internals).

use serde::Serialize;

/// One invalid field of a command, with a stable code and a precise message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

/// Collects every invalid field, so a caller learns all of them at once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn add(
        &mut self,
        field: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.0.push(FieldError {
            field: field.into(),
            code,
            message: message.into(),
        });
    }
    /// Records a parse result's error under `field` and returns the value, if any.
    pub fn take<T>(&mut self, field: &str, result: Result<T, (&'static str, String)>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err((code, message)) => {
                self.add(field, code, message);
                None
            }
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_result(self) -> Result<(), DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Invalid(self))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid input")]
    Invalid(FieldErrors),
    #[error("the application is archived")]
    Archived,
    #[error("the application is not archived")]
    NotArchived,
    #[error("the application does not exist")]
    NotFound,
    #[error("missing permission {0}")]
    Forbidden(String),
    #[error("only an environment administrator may do this")]
    AdminOnly,
    #[error("the user is already a member")]
    MemberExists,
    #[error("the user is not a member")]
    MemberNotFound,
    #[error("the primary owner cannot be removed or given another role; transfer the ownership")]
    PrimaryOwnerImmutable,
    #[error("the user is already the primary owner")]
    AlreadyPrimaryOwner,
    #[error("the environment exists")]
    EnvironmentExists,
    #[error("the application has the most members it may have")]
    TooManyMembers,
    #[error("a simple application has no OAuth client")]
    NotOAuth,
    #[error("the application's client is not registered at the provider")]
    NotRegistered,
    #[error("the application's client registration has not failed")]
    RegistrationNotFailed,
    #[error("the provider's answer is for an earlier request of this application")]
    StaleRequest,
    #[error("an operation on the application's client is still in progress")]
    OperationPending,
    #[error("the environment has the most providers it may have")]
    TooManyProviders,
    #[error("no such client registration provider")]
    ProviderNotFound,
    #[error("applications still use this provider")]
    ProviderInUse,
    #[error("the default provider cannot be deleted while others exist; make another one the default first")]
    ProviderIsDefault,
    #[error("no such API")]
    ApiNotFound,
    #[error("no such plan")]
    PlanNotFound,
    #[error("the catalogue has the most APIs, or the API the most plans, it may have")]
    CatalogueLimit,
    #[error("a keyless plan needs no subscription")]
    PlanKeyless,
    #[error("the plan is closed")]
    PlanClosed,
    #[error("JWT and OAuth2 plans need an application with a client_id")]
    ClientIdRequired,
    #[error("the application already has an open subscription to this plan")]
    SubscriptionExists,
    #[error("the application has the most subscriptions it may have")]
    TooManySubscriptions,
    #[error("no such subscription")]
    SubscriptionNotFound,
    #[error("{0}")]
    SubscriptionTransition(String),
    #[error("the subscription's plan does not use API keys")]
    NotApiKeyPlan,
    #[error("no such API key")]
    ApiKeyNotFound,
    #[error("the subscription has the most API keys it may have")]
    TooManyApiKeys,
    #[error("no such webhook")]
    WebhookNotFound,
    #[error("the environment has the most webhooks it may have, or the application")]
    TooManyWebhooks,
}

impl DomainError {
    /// The stable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Invalid(_) => "validation.failed",
            DomainError::Archived => "application.archived",
            DomainError::NotArchived => "application.not_archived",
            DomainError::NotFound => "application.not_found",
            DomainError::Forbidden(_) => "permission.denied",
            DomainError::AdminOnly => "permission.admin_only",
            DomainError::MemberExists => "member.exists",
            DomainError::MemberNotFound => "member.not_found",
            DomainError::PrimaryOwnerImmutable => "member.primary_owner",
            DomainError::AlreadyPrimaryOwner => "member.already_primary_owner",
            DomainError::EnvironmentExists => "environment.exists",
            DomainError::TooManyMembers => "member.limit",
            DomainError::NotOAuth => "application.not_oauth",
            DomainError::NotRegistered => "application.registration.not_registered",
            DomainError::RegistrationNotFailed => "application.registration.not_failed",
            DomainError::StaleRequest => "application.registration.stale_request",
            DomainError::OperationPending => "application.registration.pending",
            DomainError::TooManyProviders => "provider.limit",
            DomainError::ProviderNotFound => "provider.not_found",
            DomainError::ProviderInUse => "provider.in_use",
            DomainError::ProviderIsDefault => "provider.is_default",
            DomainError::ApiNotFound => "api.not_found",
            DomainError::PlanNotFound => "plan.not_found",
            DomainError::CatalogueLimit => "catalogue.limit",
            DomainError::PlanKeyless => "subscription.plan_keyless",
            DomainError::PlanClosed => "subscription.plan_closed",
            DomainError::ClientIdRequired => "subscription.client_id_required",
            DomainError::SubscriptionExists => "subscription.exists",
            DomainError::TooManySubscriptions => "subscription.limit",
            DomainError::SubscriptionNotFound => "subscription.not_found",
            DomainError::SubscriptionTransition(_) => "subscription.transition",
            DomainError::NotApiKeyPlan => "subscription.not_api_key",
            DomainError::ApiKeyNotFound => "api_key.not_found",
            DomainError::TooManyApiKeys => "api_key.limit",
            DomainError::WebhookNotFound => "webhook.not_found",
            DomainError::TooManyWebhooks => "webhook.limit",
        }
    }
}
