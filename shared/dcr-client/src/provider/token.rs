//! The initial access token of a registration: the fixed token, or a cached
//! `client_credentials` token of an admin client.

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

    /// A `client_credentials` grant with `client_secret_basic`.
    pub(super) async fn client_credentials(
        &self,
        token_endpoint: &str,
        client_id: &str,
        client_secret: &SecretString,
        scopes: &[String],
    ) -> Result<(SecretString, Option<Duration>), ProviderError> {
        const WHAT: &str = "token request";
        let secrets = exposed(&[client_secret]);
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let request = self
            .http
            .post(token_endpoint)
            .header(
                header::AUTHORIZATION,
                basic_auth(client_id, client_secret.expose_secret()),
            )
            .header(header::ACCEPT, "application/json")
            .form(&form);
        let (status, body) = self
            .exchange(request, token_endpoint, WHAT, TOKEN_CAP, &secrets)
            .await?;
        if !status.is_success() {
            return Err(error::from_status(status.as_u16(), &body, WHAT, &secrets));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            ProviderError::Invalid(format!("{WHAT}: the answer has no access_token"))
        })?;
        let expires_in = answer.expires_in.and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
        Ok((
            SecretString::from(answer.access_token),
            expires_in.map(Duration::from_secs),
        ))
    }

    // ----- RFC 7591 registration -----------------------------------------------------------
}
