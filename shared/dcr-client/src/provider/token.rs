//! The initial access token of a registration: the fixed token, or a cached
//! `client_credentials` token of an admin client.

use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, RequestTokenError, Scope, TokenResponse, TokenUrl};

use super::*;

impl ProviderClient {
    /// The bearer token of a registration request: the fixed token, or a `client_credentials`
    /// token cached until 30 s before it expires.
    pub async fn initial_access_token(
        &self,
        settings: &ProviderSettings,
    ) -> Result<SecretString, ProviderError> {
        self.initial_access_token_inner(settings, true).await
    }

    pub(super) async fn initial_access_token_inner(
        &self,
        settings: &ProviderSettings,
        use_cache: bool,
    ) -> Result<SecretString, ProviderError> {
        let (client_id, client_secret, scopes) = match &settings.initial_access_token {
            InitialAccessTokenMode::InitialAccessToken { token } => {
                if token.expose_secret().trim().is_empty() {
                    return Err(ProviderError::Invalid(
                        "the initial access token is empty".into(),
                    ));
                }
                return Ok(token.clone());
            }
            InitialAccessTokenMode::ClientCredentials {
                client_id,
                client_secret,
                scopes,
            } => (client_id, client_secret, scopes),
        };
        let discovery = self.discover(settings).await?;
        let token_endpoint = discovery.token_endpoint.clone().ok_or_else(|| {
            ProviderError::Unsupported(format!(
                "the provider {} advertises no token_endpoint",
                discovery.issuer
            ))
        })?;
        let key = TokenKey {
            token_endpoint: token_endpoint.clone(),
            client_id: client_id.clone(),
            scopes: scopes.join(" "),
            secret_hash: {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                client_secret.expose_secret().hash(&mut h);
                h.finish()
            },
        };
        if use_cache {
            if let Some(t) = self
                .tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
            {
                if Instant::now() < t.valid_until {
                    return Ok(t.token.clone());
                }
            }
        }
        let result = self
            .client_credentials(&token_endpoint, client_id, client_secret, scopes)
            .await;
        let (token, expires_in) = match result {
            Ok(t) => t,
            Err(e) => {
                self.forget_discovery(settings);
                return Err(e);
            }
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match expires_in.and_then(|e| e.checked_sub(TOKEN_MARGIN)) {
            Some(ttl) if !ttl.is_zero() => {
                tokens.insert(
                    key,
                    CachedToken {
                        token: token.clone(),
                        valid_until: Instant::now() + ttl,
                    },
                );
            }
            _ => {
                tokens.remove(&key);
            }
        }
        Ok(token)
    }

    pub(super) fn forget_token(&self, settings: &ProviderSettings) {
        if let InitialAccessTokenMode::ClientCredentials { client_id, .. } =
            &settings.initial_access_token
        {
            self.tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|k, _| &k.client_id != client_id);
        }
    }

    /// A `client_credentials` grant with `client_secret_basic`: the request and its answer are
    /// `oauth2`'s, sent through [`oidc::Outbound`]. An error answer is classified from its
    /// status and body, whatever the crate made of it.
    pub(super) async fn client_credentials(
        &self,
        token_endpoint: &str,
        client_id: &str,
        client_secret: &SecretString,
        scopes: &[String],
    ) -> Result<(SecretString, Option<Duration>), ProviderError> {
        const WHAT: &str = "token request";
        let token_url = TokenUrl::new(token_endpoint.trim().to_string()).map_err(|_| {
            ProviderError::Invalid(format!(
                "{WHAT}: {token_endpoint:?} is not an absolute http(s) URL"
            ))
        })?;
        let oauth = BasicClient::new(ClientId::new(client_id.to_string()))
            .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_string()))
            .set_auth_type(AuthType::BasicAuth)
            .set_token_uri(token_url);
        let request = oauth
            .exchange_client_credentials()
            .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())));
        let http = oidc::Outbound::new(self, WHAT, TOKEN_CAP, exposed(&[client_secret]), None);
        match request.request_async(&http).await {
            Ok(answer) => Ok((
                SecretString::from(answer.access_token().secret().to_string()),
                answer.expires_in(),
            )),
            Err(RequestTokenError::Request(e)) => Err(e),
            Err(_) => match http.last_answer() {
                Some((status, body)) if !status.is_success() => Err(error::from_status(
                    status.as_u16(),
                    &body,
                    WHAT,
                    &exposed(&[client_secret]),
                )),
                _ => Err(ProviderError::Invalid(format!(
                    "{WHAT}: the answer is no token (access_token, token_type)"
                ))),
            },
        }
    }

    // ----- RFC 7591 registration -----------------------------------------------------------
}
