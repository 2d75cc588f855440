//! The management of a registered client: RFC 7592 update after a settings change, secret
//! renewal, and deletion at archive.

use super::*;

impl Saga {
    /// RFC 7592 PUT of the full metadata after an OAuth settings change; the rotated
    /// registration access token replaces the old one; a failure is recorded and shown. A
    /// client registered with a secret that is now public (a native application moved to
    /// `token_endpoint_auth_method: none`) loses its secret: deleted from the vault before
    /// `DcrClientUpdated` says so.
    #[tracing::instrument(skip_all, fields(application_id = %id.0, request_version = e.version, trace_id = %trace_id(e)), err(Display))]
    pub(super) async fn update(&self, e: &StoredEvent, id: ApplicationId) -> Result<(), SagaError> {
        let (app, _) = apps::load(&self.commands, id).await?;
        let Some(app) = app else { return Ok(()) };
        if !pending(&app, ClientOperationKind::Update, e.version) {
            return Ok(());
        }
        let meta = self.metadata(e);
        let outcome = match self.issuer_of(&app).await? {
            Err(failure) => Err(failure),
            Ok((provider, settings)) => match client_metadata(&app, &provider) {
                Err(error) => Err(failure_of(&error)),
                Ok(metadata) => {
                    let handle = self.handle_of(&app).await?;
                    match self
                        .with_retries(app.environment.as_str(), &provider, || {
                            self.client.update(&settings, &handle, &metadata)
                        })
                        .await
                    {
                        Ok(updated) => {
                            if let Some(token) = &updated.registration_access_token {
                                self.vault
                                    .put(&secret_owner(id), "registration_access_token", token)
                                    .await?;
                            }
                            // Public at the provider: it holds the client with the auth
                            // method `none` (a secret it may still echo is of no use to a
                            // public client, and is not kept).
                            let public = metadata.token_endpoint_auth_method
                                == TokenEndpointAuthMethod::None
                                && updated
                                    .metadata
                                    .get("token_endpoint_auth_method")
                                    .and_then(|m| m.as_str())
                                    == Some("none");
                            if public {
                                self.vault
                                    .delete(&secret_owner(id), "client_secret")
                                    .await?;
                            }
                            Ok(public)
                        }
                        Err(error) => Err(failure_of(&error)),
                    }
                }
            },
        };
        let version = e.version;
        let result = apps::execute(&self.commands, id, &meta, |app| match &outcome {
            Ok(true) => app.complete_client_update_as_public(version),
            Ok(false) => app.complete_client_update(version),
            Err(failure) => app.fail_client_update(version, failure.clone()),
        })
        .await;
        ignore_refusals(result)
    }

    /// Secret renewal through the provider's endpoint; the new secret goes to the vault, its
    /// fingerprint into `ClientSecretRenewed`.
    #[tracing::instrument(skip_all, fields(application_id = %id.0, request_version = e.version, trace_id = %trace_id(e)), err(Display))]
    pub(super) async fn renew(&self, e: &StoredEvent, id: ApplicationId) -> Result<(), SagaError> {
        let (app, _) = apps::load(&self.commands, id).await?;
        let Some(app) = app else { return Ok(()) };
        if !pending(&app, ClientOperationKind::RenewSecret, e.version) {
            return Ok(());
        }
        let meta = self.metadata(e);
        let outcome = match self.issuer_of(&app).await? {
            Err(failure) => Err(failure),
            Ok((provider, settings)) => {
                let handle = self.handle_of(&app).await?;
                match &handle.registration_access_token {
                    None => Err(ProviderFailure {
                        error: "renewal_unsupported".into(),
                        error_description: Some(
                            "the provider gave no registration access token".into(),
                        ),
                    }),
                    Some(_) => match self
                        .with_retries(app.environment.as_str(), &provider, || {
                            self.client.renew_secret_at(&settings, &handle)
                        })
                        .await
                    {
                        Ok(renewed) => {
                            let owner = secret_owner(id);
                            let fingerprint = self
                                .vault
                                .put(&owner, "client_secret", &renewed.client_secret)
                                .await?;
                            if let Some(token) = &renewed.registration_access_token {
                                self.vault
                                    .put(&owner, "registration_access_token", token)
                                    .await?;
                            }
                            let expires = renewed
                                .client_secret_expires_at
                                .filter(|t| *t > 0)
                                .and_then(|t| chrono::DateTime::from_timestamp(t, 0));
                            Ok((fingerprint, expires))
                        }
                        Err(error) => Err(failure_of(&error)),
                    },
                }
            }
        };
        let version = e.version;
        let result = apps::execute(&self.commands, id, &meta, |app| match &outcome {
            Ok((fingerprint, expires)) => {
                app.complete_secret_renewal(version, fingerprint.clone(), *expires)
            }
            Err(failure) => app.fail_secret_renewal(version, failure.clone()),
        })
        .await;
        ignore_refusals(result)
    }

    /// With the provider's `delete_client_on_archive`: the archived application's client is
    /// deleted at the provider (RFC 7592) and its secrets purged; a restore registers a new one.
    #[tracing::instrument(skip_all, fields(application_id = %id.0, trace_id = %trace_id(e)), err(Display))]
    pub(super) async fn delete_at_archive(
        &self,
        e: &StoredEvent,
        id: ApplicationId,
    ) -> Result<(), SagaError> {
        let (app, _) = apps::load(&self.commands, id).await?;
        let Some(app) = app else { return Ok(()) };
        let registered = app
            .registration
            .as_ref()
            .is_some_and(|r| r.state == RegistrationState::Registered && !r.client_deleted);
        if app.status != ApplicationStatus::Archived || !registered {
            return Ok(());
        }
        let Ok((provider, settings)) = self.issuer_of(&app).await? else {
            return Ok(());
        };
        if !provider.delete_client_on_archive {
            return Ok(());
        }
        let handle = self.handle_of(&app).await?;
        match self
            .with_retries(app.environment.as_str(), &provider, || {
                self.client.delete(&settings, &handle)
            })
            .await
        {
            // Gone already (a deletion whose answer was lost): its token is refused.
            Ok(())
            | Err(ProviderError::Rejected {
                status: 401 | 404, ..
            }) => {}
            Err(error) => {
                tracing::error!(%error, "cannot delete the archived application's client at the provider");
                metrics::counter!("appreg_dcr_delete_failures_total").increment(1);
                return Ok(());
            }
        }
        let meta = self.metadata(e);
        let result =
            apps::execute(&self.commands, id, &meta, |app| app.record_client_deleted()).await;
        ignore_refusals(result)?;
        self.vault.delete_owner(&secret_owner(id)).await?;
        Ok(())
    }

    pub(super) fn metadata(&self, e: &StoredEvent) -> serde_json::Value {
        let mut m = serde_json::json!({
            "environment": e.metadata.get("environment").cloned().unwrap_or_default(),
            "actor": "dcr-saga",
            "correlation_id": e.metadata.get("correlation_id").cloned().unwrap_or_default(),
            "causation_id": e.event_id.to_string(),
            "at": chrono::Utc::now(),
        });
        if let Some(tp) = e.metadata.get("traceparent") {
            m["traceparent"] = tp.clone();
        }
        m
    }
}
