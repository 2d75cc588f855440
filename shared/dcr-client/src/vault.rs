//! Where the secrets of DCR live in the vault (`appreg_secrets::SecretStore`): the owner and
//! kind under which the api stores a provider's secret and the saga an application's client
//! secret and registration access token. They are keys of stored data: never change them.

use appreg_domain::provider::InitialAccessTokenMode;
use appreg_domain::ApplicationId;

/// The vault kind of a provider's secret in a mode.
pub fn secret_kind(mode: &InitialAccessTokenMode) -> &'static str {
    match mode {
        InitialAccessTokenMode::ClientCredentials { .. } => "client_secret",
        InitialAccessTokenMode::InitialAccessToken { .. } => "initial_access_token",
    }
}

/// The vault owner of a provider's secrets.
pub fn provider_owner(environment: &str, provider_id: &str) -> String {
    format!("provider/{environment}/{provider_id}")
}

/// The owner of an application's secrets in the vault.
pub fn secret_owner(id: ApplicationId) -> String {
    format!("application/{}", id.0)
}
