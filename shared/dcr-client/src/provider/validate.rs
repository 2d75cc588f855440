//! The live check of a provider record, and the origin rules of its endpoints: the token,
//! registration and renewal endpoints the credentials go to must be on the discovery endpoint's
//! origin unless the record allows other origins (which only an organisation administrator may
//! set). Refusals here happen before anything is sent.

use super::{
    outbound, Discovery, InitialAccessTokenMode, ProviderClient, ProviderError, ProviderSettings,
};

impl ProviderClient {
    /// The live check of a provider record (create/update): discovery answers and advertises a
    /// registration endpoint; in client-credentials mode a token is obtained; the renewal
    /// template, when enabled, expands to a URL. Fetches fresh (no cache) and refreshes the
    /// caches. The error's `Display` is a human-readable reason.
    pub async fn validate(&self, settings: &ProviderSettings) -> Result<(), ProviderError> {
        let url = settings.discovery_endpoint.trim();
        outbound::http_url(url, "the discovery endpoint")?;
        // Whatever went wrong (refused, timed out, not HTTP, too large, not a document), one
        // answer: the details are in tracing, so this cannot be used to scan ports.
        let discovery = self.fetch_discovery(url).await.map_err(|e| match e {
            e @ (ProviderError::Unsupported(_)
            | ProviderError::PrivateAddress(_)
            | ProviderError::CrossOrigin(_)) => e,
            other => {
                tracing::info!(error = %other, "the discovery endpoint gave no usable document");
                ProviderError::Invalid(
                    "the discovery endpoint gave no usable OpenID Connect discovery document"
                        .into(),
                )
            }
        })?;
        check_endpoints(settings, &discovery)?;
        let renew = &settings.renew_client_secret;
        if renew.enabled {
            let url = renew.expand(&discovery.registration_endpoint, "client-id")?;
            outbound::check_origin(
                url_of(settings),
                settings.allow_cross_origin_endpoints,
                "secret renewal endpoint",
                &url,
            )?;
        }
        let InitialAccessTokenMode::ClientCredentials { client_id, .. } =
            &settings.initial_access_token
        else {
            return self
                .initial_access_token_inner(settings, false)
                .await
                .map(drop);
        };
        self.initial_access_token_inner(settings, false)
            .await
            .map(drop)
            .map_err(|e| match e {
                e @ ProviderError::Rejected { .. } => ProviderError::Invalid(format!(
                    "the client {client_id:?} cannot obtain a token from the token endpoint: {e}"
                )),
                e @ (ProviderError::Unsupported(_)
                | ProviderError::PrivateAddress(_)
                | ProviderError::CrossOrigin(_)) => e,
                other => {
                    tracing::info!(error = %other, "the token endpoint gave no usable answer");
                    ProviderError::Invalid("the token endpoint gave no usable answer".into())
                }
            })
    }
}

/// The secret renewal endpoint of enabled renewal on another origin than the discovery endpoint
/// (without a request: `{registration_endpoint}` stands for the discovery endpoint's origin,
/// where the registration endpoint must be) is refused unless the settings allow other origins.
/// [`ProviderClient::renew_secret`] checks the URL it calls again.
pub fn check_renewal_origin(settings: &ProviderSettings) -> Result<(), ProviderError> {
    let renew = &settings.renew_client_secret;
    if !renew.enabled || settings.allow_cross_origin_endpoints {
        return Ok(());
    }
    let discovery = outbound::http_url(url_of(settings), "discovery")?;
    let url = renew.expand(&discovery.origin().ascii_serialization(), "client-id")?;
    outbound::check_origin(url_of(settings), false, "secret renewal endpoint", &url)
}

pub(super) fn url_of(settings: &ProviderSettings) -> &str {
    settings.discovery_endpoint.trim()
}

/// Refuses a discovery document whose endpoints the settings would send credentials to
/// (registration; token in client-credentials mode) are off the discovery endpoint's origin,
/// unless the settings allow other origins.
pub(super) fn check_endpoints(
    settings: &ProviderSettings,
    discovery: &Discovery,
) -> Result<(), ProviderError> {
    let allow = settings.allow_cross_origin_endpoints;
    outbound::check_origin(
        url_of(settings),
        allow,
        "registration_endpoint",
        &discovery.registration_endpoint,
    )?;
    if let (InitialAccessTokenMode::ClientCredentials { .. }, Some(token)) =
        (&settings.initial_access_token, &discovery.token_endpoint)
    {
        outbound::check_origin(url_of(settings), allow, "token_endpoint", token)?;
    }
    Ok(())
}
