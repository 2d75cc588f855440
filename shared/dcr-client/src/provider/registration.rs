//! Registration (RFC 7591), its management (RFC 7592 read / update / delete) and client secret
//! renewal.

use openidconnect::registration::ClientRegistrationError;
use openidconnect::{AccessToken, RegistrationUrl};

use super::*;

impl ProviderClient {
    /// Registers a client (RFC 7591). `software_id` of the settings is added when the
    /// metadata has none. In client-credentials mode a `401` (token expired or revoked early)
    /// is retried once with a fresh token: nothing was created.
    pub async fn register(
        &self,
        settings: &ProviderSettings,
        metadata: &ClientMetadata,
    ) -> Result<RegisteredClient, ProviderError> {
        self.register_idempotent(settings, metadata, None).await
    }

    /// [`Self::register`] with an `Idempotency-Key` (the same for every attempt of one request):
    /// a provider that honours it answers a repeated attempt with the client the first one
    /// created, so an answer lost after the provider created the client (a 5xx, a reset) leaves
    /// no second client behind. Providers that ignore the header are unaffected.
    pub async fn register_idempotent(
        &self,
        settings: &ProviderSettings,
        metadata: &ClientMetadata,
        idempotency_key: Option<&str>,
    ) -> Result<RegisteredClient, ProviderError> {
        let request = oidc::registration_request(metadata, settings.software_id.as_deref())?;
        if let Err(refused) = self.pkce_available(settings, metadata).await {
            self.forget_discovery(settings);
            return Err(refused);
        }
        let result = self
            .register_once(settings, &request, idempotency_key)
            .await;
        let result = match result {
            Err(ProviderError::Rejected { status: 401, .. })
                if matches!(
                    settings.initial_access_token,
                    InitialAccessTokenMode::ClientCredentials { .. }
                ) =>
            {
                self.forget_token(settings);
                self.register_once(settings, &request, idempotency_key)
                    .await
            }
            other => other,
        };
        if result.is_err() {
            self.forget_discovery(settings);
        }
        result
    }

    /// A public client that uses the authorization code (a browser or native app) must use PKCE
    /// with S256 (RFC 8252 §8.1, RFC 9700 §2.1.1): a provider whose discovery document lists
    /// its `code_challenge_methods_supported` without `S256` is refused before anything is sent
    /// ([`ProviderError::Unsupported`]). A provider that lists none cannot be checked and is
    /// used (whether it enforces PKCE is its own setting; oidc-provider does by default).
    async fn pkce_available(
        &self,
        settings: &ProviderSettings,
        metadata: &ClientMetadata,
    ) -> Result<(), ProviderError> {
        let public_code = metadata.token_endpoint_auth_method == TokenEndpointAuthMethod::None
            && metadata
                .grant_types
                .iter()
                .any(|g| g == "authorization_code");
        if !public_code {
            return Ok(());
        }
        let discovery = self.discover(settings).await?;
        match &discovery.code_challenge_methods_supported {
            Some(methods) if !methods.iter().any(|m| m == "S256") => {
                Err(ProviderError::Unsupported(format!(
                    "the provider offers no PKCE with S256 (code_challenge_methods_supported: {}), which a public client needs (RFC 8252 §8.1)",
                    if methods.is_empty() { "none".to_string() } else { methods.join(", ") }
                )))
            }
            _ => Ok(()),
        }
    }

    /// One registration: the crate's request, with the initial access token, sent through
    /// [`oidc::Outbound`] (with the `Idempotency-Key`); the answer read with the crate's types, or
    /// by our own parser where they refuse it (see `oidc`).
    pub(super) async fn register_once(
        &self,
        settings: &ProviderSettings,
        request: &oidc::RegistrationRequest,
        idempotency_key: Option<&str>,
    ) -> Result<RegisteredClient, ProviderError> {
        const WHAT: &str = "registration";
        let discovery = self.discover(settings).await?;
        let token = self.initial_access_token(settings).await?;
        let endpoint = RegistrationUrl::new(discovery.registration_endpoint.trim().to_string())
            .map_err(|_| {
                ProviderError::Invalid(format!(
                    "{WHAT}: the registration_endpoint is not an absolute http(s) URL"
                ))
            })?;
        let request = request
            .clone()
            .set_initial_access_token(Some(AccessToken::new(token.expose_secret().to_string())));
        let secrets = exposed(&[&token]);
        let http = oidc::Outbound::new(self, WHAT, DOCUMENT_CAP, secrets.clone(), idempotency_key);
        let result = request.register_async(&endpoint, &http).await;
        let answer = http.last_answer();
        match (result, answer) {
            (Ok(typed), Some((_, body))) => oidc::registered(typed, &body, WHAT),
            (Err(ClientRegistrationError::Request(e)), _) => Err(e),
            (Err(e), Some((status, body))) => {
                if status.is_success() {
                    // Not a secret: the crate's reading error names a field path only.
                    let path = match &e {
                        ClientRegistrationError::Parse(p) => p.path().to_string(),
                        _ => String::new(),
                    };
                    tracing::info!(
                        status = status.as_u16(),
                        path,
                        "the registration answer is read by appreg's own parser"
                    );
                }
                oidc::unread_answer(status, &body, WHAT, &secrets)
            }
            (_, None) => Err(ProviderError::Invalid(format!(
                "{WHAT}: the request cannot be built"
            ))),
        }
    }

    // ----- RFC 7592 management -------------------------------------------------------------

    pub(super) fn management<'a>(
        handle: &'a RegistrationHandle,
        what: &str,
    ) -> Result<(&'a str, &'a SecretString), ProviderError> {
        let uri = handle.registration_client_uri.as_deref().ok_or_else(|| {
            ProviderError::Unsupported(format!(
                "{what}: the provider gave no registration_client_uri for client {}",
                handle.client_id
            ))
        })?;
        let token = handle.registration_access_token.as_ref().ok_or_else(|| {
            ProviderError::Unsupported(format!(
                "{what}: the provider gave no registration access token for client {}",
                handle.client_id
            ))
        })?;
        Ok((uri, token))
    }

    /// Reads the client's current registration (RFC 7592 GET).
    pub async fn read(
        &self,
        settings: &ProviderSettings,
        handle: &RegistrationHandle,
    ) -> Result<RegisteredClient, ProviderError> {
        const WHAT: &str = "client read";
        let _ = settings;
        let (uri, token) = Self::management(handle, WHAT)?;
        let (_, answer) = self
            .send_json(Method::GET, uri, Some(token), None, WHAT)
            .await?;
        let mut client = RegisteredClient::from_json(answer, WHAT)?;
        client.registration_access_token = client
            .registration_access_token
            .or_else(|| handle.registration_access_token.clone());
        client.registration_client_uri = client
            .registration_client_uri
            .or_else(|| handle.registration_client_uri.clone());
        Ok(client)
    }

    /// Replaces the client's metadata (RFC 7592 PUT, the full metadata with `client_id`).
    /// The answer's `registration_access_token` is the rotated one (the old token when the
    /// provider does not rotate): the caller must store it, the old one may be dead.
    pub async fn update(
        &self,
        settings: &ProviderSettings,
        handle: &RegistrationHandle,
        metadata: &ClientMetadata,
    ) -> Result<RegisteredClient, ProviderError> {
        const WHAT: &str = "client update";
        let (uri, token) = Self::management(handle, WHAT)?;
        let mut body = oidc::request_body(&oidc::registration_request(
            metadata,
            settings.software_id.as_deref(),
        )?);
        body.insert("client_id".into(), Value::String(handle.client_id.clone()));
        let (_, answer) = self
            .send_json(Method::PUT, uri, Some(token), Some(&body), WHAT)
            .await?;
        let mut client = RegisteredClient::from_json(answer, WHAT)?;
        if client.client_id != handle.client_id {
            return Err(ProviderError::Invalid(format!(
                "{WHAT}: the provider answered for another client"
            )));
        }
        client.registration_access_token = client
            .registration_access_token
            .or_else(|| handle.registration_access_token.clone());
        client.registration_client_uri = client
            .registration_client_uri
            .or_else(|| handle.registration_client_uri.clone());
        Ok(client)
    }

    /// Deletes the client (RFC 7592 DELETE). [`ProviderError::Unsupported`] without a
    /// `registration_client_uri`.
    pub async fn delete(
        &self,
        settings: &ProviderSettings,
        handle: &RegistrationHandle,
    ) -> Result<(), ProviderError> {
        const WHAT: &str = "client deletion";
        let _ = settings;
        let (uri, token) = Self::management(handle, WHAT)?;
        self.send_json(Method::DELETE, uri, Some(token), None, WHAT)
            .await?;
        Ok(())
    }

    /// Renews the client secret through the configured endpoint: the template expanded, the
    /// configured method, the registration access token as bearer. Prefer
    /// [`Self::renew_secret_at`], which also checks that the token goes back where it was issued.
    pub async fn renew_secret(
        &self,
        settings: &ProviderSettings,
        client_id: &str,
        registration_access_token: &SecretString,
    ) -> Result<RenewedSecret, ProviderError> {
        self.renew_secret_inner(settings, client_id, registration_access_token, None)
            .await
    }

    /// [`Self::renew_secret`] for a registered client: the renewal endpoint must also be on the
    /// origin of the client's `registration_client_uri` (where its registration access token
    /// was issued), unless the settings allow other origins. So a provider record moved to
    /// another discovery endpoint never sends the clients' old tokens to the new server.
    pub async fn renew_secret_at(
        &self,
        settings: &ProviderSettings,
        handle: &RegistrationHandle,
    ) -> Result<RenewedSecret, ProviderError> {
        let token = handle.registration_access_token.as_ref().ok_or_else(|| {
            ProviderError::Unsupported("the provider gave no registration access token".into())
        })?;
        self.renew_secret_inner(
            settings,
            &handle.client_id,
            token,
            handle.registration_client_uri.as_deref(),
        )
        .await
    }

    pub(super) async fn renew_secret_inner(
        &self,
        settings: &ProviderSettings,
        client_id: &str,
        registration_access_token: &SecretString,
        issued_at: Option<&str>,
    ) -> Result<RenewedSecret, ProviderError> {
        const WHAT: &str = "secret renewal";
        let renew = &settings.renew_client_secret;
        if !renew.enabled {
            return Err(ProviderError::Unsupported(
                "client secret renewal is not enabled for this provider".into(),
            ));
        }
        let registration_endpoint = if renew.endpoint_template.contains("{registration_endpoint}") {
            self.discover(settings).await?.registration_endpoint
        } else {
            String::new()
        };
        let url = renew.expand(&registration_endpoint, client_id)?;
        outbound::check_origin(
            &settings.discovery_endpoint,
            settings.allow_cross_origin_endpoints,
            "secret renewal endpoint",
            &url,
        )?;
        if let Some(issued_at) = issued_at {
            // The token's own origin stands where the discovery endpoint does above.
            outbound::check_origin(
                issued_at,
                settings.allow_cross_origin_endpoints,
                "secret renewal endpoint (the registration access token's provider)",
                &url,
            )?;
        }
        let result = self
            .send_json(
                renew.method.http(),
                &url,
                Some(registration_access_token),
                None,
                WHAT,
            )
            .await;
        let (_, answer) = match result {
            Ok(a) => a,
            Err(e) => {
                self.forget_discovery(settings);
                return Err(e);
            }
        };
        let client = RegisteredClient::from_json(answer, WHAT)?;
        let client_secret = client.client_secret.ok_or_else(|| {
            ProviderError::Invalid(format!("{WHAT}: the answer has no client_secret"))
        })?;
        Ok(RenewedSecret {
            client_secret,
            client_secret_expires_at: client.client_secret_expires_at,
            registration_access_token: client.registration_access_token,
        })
    }
}
