//! From a provider as the events record it (`appreg_domain::provider`) to the settings the
//! provider client needs, with the secret from the vault (see [`crate::vault`] for where it is).

use crate::provider::{
    InitialAccessTokenMode as Mode, ProviderSettings, RenewMethod, RenewSettings,
};
use appreg_domain::provider::{HttpMethod, InitialAccessTokenMode, Provider, RenewClientSecret};
use appreg_domain::HttpUrl;
use secrecy::SecretString;

/// The provider client's settings from a provider's parts and its secret.
pub fn settings_from(
    discovery_endpoint: &HttpUrl,
    mode: &InitialAccessTokenMode,
    secret: SecretString,
    software_id: Option<&str>,
    renew: &RenewClientSecret,
    allow_cross_origin_endpoints: bool,
) -> ProviderSettings {
    ProviderSettings {
        discovery_endpoint: discovery_endpoint.as_str().to_string(),
        initial_access_token: match mode {
            InitialAccessTokenMode::ClientCredentials {
                client_id, scopes, ..
            } => Mode::ClientCredentials {
                client_id: client_id.clone(),
                client_secret: secret,
                scopes: scopes.clone(),
            },
            InitialAccessTokenMode::InitialAccessToken { .. } => {
                Mode::InitialAccessToken { token: secret }
            }
        },
        software_id: software_id.map(str::to_string),
        renew_client_secret: RenewSettings {
            enabled: renew.enabled,
            endpoint_template: renew
                .endpoint
                .clone()
                .unwrap_or_else(|| RenewSettings::default().endpoint_template),
            method: match renew.method {
                HttpMethod::Post => RenewMethod::Post,
                HttpMethod::Put => RenewMethod::Put,
                HttpMethod::Patch => RenewMethod::Patch,
            },
        },
        allow_cross_origin_endpoints,
    }
}

/// The settings of a recorded provider.
pub fn settings_of(p: &Provider, secret: SecretString) -> ProviderSettings {
    settings_from(
        &p.discovery_endpoint,
        &p.mode,
        secret,
        p.software_id.as_deref(),
        &p.renew_client_secret,
        p.allow_cross_origin_endpoints,
    )
}
