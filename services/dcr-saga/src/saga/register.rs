//! Registration (RFC 7591) of a requested client, and what records its outcome: the failure,
//! the settings, the obtained client in `dcr_requests`, and the discard of a client that cannot
//! be recorded.

use super::*;

impl Saga {
    #[tracing::instrument(skip_all, fields(application_id = %id.0, request_version = e.version, trace_id = %trace_id(e)), err(Display))]
    pub(super) async fn register(
        &self,
        e: &StoredEvent,
        id: ApplicationId,
    ) -> Result<(), SagaError> {
        let key = format!("{}:{}", id.0, e.version);
        let Loaded {
            app,
            version,
            obtained,
            in_flight,
        } = self.loader.load(id, &key).await?;
        let mut loaded = (app.clone(), version);
        let Some(app) = app else { return Ok(()) };
        // Attempts of this request whose outcome is unknown (recorded earlier or now): proven
        // or not once it succeeds.
        let mut suspect = app.open_suspicions(e.version).is_some();
        let current = app.registration.as_ref().is_some_and(|r| {
            r.request_version == e.version && r.state == RegistrationState::Registering
        });
        if !current {
            tracing::debug!("request already answered or superseded");
            return Ok(());
        }
        let meta = self.metadata(e);
        let registry = self.registry(app.environment.as_str()).await?;
        let Some(provider) = registry.resolve(app.provider_id.as_deref()).cloned() else {
            let failure = ProviderFailure {
                error: "provider_not_found".into(),
                error_description: Some(match &app.provider_id {
                    Some(p) => format!("no client registration provider {p:?} in this environment"),
                    None => "the environment has no default client registration provider".into(),
                }),
            };
            return self.fail(id, e.version, None, failure, &meta).await;
        };
        // A client obtained earlier for this request (recorded), or a fresh one (not yet).
        let (client, fresh) = match obtained {
            Some(client) => (client, None),
            None => {
                let settings = self.settings(app.environment.as_str(), &provider).await?;
                let metadata = match client_metadata(&app, &provider) {
                    Ok(m) => m,
                    Err(error) => {
                        let failure = failure_of(&error);
                        return self
                            .fail(id, e.version, Some(&provider), failure, &meta)
                            .await;
                    }
                };
                // The same key on every attempt: a provider that honours it gives back the
                // client an attempt whose answer was lost created.
                let idempotency_key = e.event_id.to_string();
                // Each attempt whose answer was lost is recorded before the next one.
                let mut first_attempt = app
                    .suspected_orphans
                    .iter()
                    .filter(|s| s.request_version == e.version)
                    .map(|s| s.attempt)
                    .max()
                    .unwrap_or(0);
                let noted = AtomicBool::new(false);
                // An attempt a saga that died left in flight: its answer, if any, was lost.
                if let Some((attempt, started_at)) = in_flight {
                    let lost = LostAttempt {
                        attempt,
                        started_at,
                        ended_at: chrono::Utc::now(),
                        error: "the saga stopped while the attempt was in flight".into(),
                    };
                    self.note_unknown(id, e, &app, &provider, lost, &meta)
                        .await?;
                    noted.store(true, Ordering::Relaxed);
                    first_attempt = first_attempt.max(attempt);
                }
                let answer = self
                    .with_retries_noting(
                        app.environment.as_str(),
                        &provider,
                        first_attempt,
                        |attempt, started_at| self.mark_attempt(&key, attempt, started_at),
                        || {
                            self.client.register_idempotent(
                                &settings,
                                &metadata,
                                Some(&idempotency_key),
                            )
                        },
                        |lost| {
                            noted.store(true, Ordering::Relaxed);
                            self.note_unknown(id, e, &app, &provider, lost, &meta)
                        },
                    )
                    .await?;
                if noted.load(Ordering::Relaxed) {
                    // The stream moved on: what is recorded next is decided on its new state.
                    loaded = apps::load(&self.commands, id).await?;
                    suspect = true;
                }
                match answer {
                    Ok(client) => (Stored::from(&client), Some(client)),
                    Err(error) => {
                        let failure = failure_of(&error);
                        return self
                            .fail(id, e.version, Some(&provider), failure, &meta)
                            .await;
                    }
                }
            }
        };
        let parsed = ClientId::parse(&client.client_id);
        let mut loaded = Some(loaded);
        match (fresh, &parsed, &loaded) {
            // The usual case: recorded and registered together with the other answers
            // in flight (group commit).
            (Some(fresh), Ok(client_id), Some((Some(app), version))) => {
                let obtained = Obtained {
                    key: key.clone(),
                    id,
                    provider_id: provider.id.clone(),
                    client: fresh,
                    request_version: e.version,
                    issued: issued(&provider, client_id.clone(), &client),
                    loaded: (app.clone(), *version),
                    meta: meta.clone(),
                };
                if self.recorder.record(obtained).await? == Outcome::Registered {
                    metrics::counter!("appreg_dcr_registrations_total", "outcome" => "registered")
                        .increment(1);
                    if suspect {
                        self.prove(id, e, app, &provider, &client, &meta).await?;
                    }
                    return Ok(());
                }
                // Recorded but not appended: decided again alone, on a fresh load.
                loaded = None;
            }
            (Some(fresh), _, _) => self.record_obtained(&key, id, &provider, &fresh).await?,
            (None, _, _) => {}
        }
        let client_id = match parsed {
            Ok(c) => c,
            Err((_, message)) => {
                // Not a client_id appreg can hold (its rules for client_id): give it back.
                let reason =
                    format!("the provider issued a client_id appreg cannot hold: {message}");
                self.discard(id, &provider, &client, &reason, &meta).await?;
                self.mark(&key, "DISCARDED").await?;
                let failure = ProviderFailure {
                    error: "invalid_client_id".into(),
                    error_description: Some(reason),
                };
                return self
                    .fail(id, e.version, Some(&provider), failure, &meta)
                    .await;
            }
        };
        let issued = issued(&provider, client_id, &client);
        let recorded = apps::execute_from(&self.commands, id, loaded, &meta, |app| {
            app.register_dcr_client(e.version, issued.clone())
        })
        .await;
        match recorded {
            Ok(_) => {
                metrics::counter!("appreg_dcr_registrations_total", "outcome" => "registered")
                    .increment(1);
                if suspect {
                    self.prove(id, e, &app, &provider, &client, &meta).await?;
                }
                Ok(())
            }
            Err(
                reason @ (CommandError::Domain(_)
                | CommandError::ClientIdTaken(_)
                | CommandError::NoApplication),
            ) => {
                tracing::warn!(%reason, client_id = client.client_id.as_str(), "the obtained client cannot be recorded; deleting it at the provider");
                self.discard(id, &provider, &client, &reason.to_string(), &meta)
                    .await?;
                self.mark(&key, "DISCARDED").await?;
                Ok(())
            }
            Err(other) => Err(other.into()),
        }
    }

    pub(super) async fn fail(
        &self,
        id: ApplicationId,
        request_version: i64,
        provider: Option<&Provider>,
        failure: ProviderFailure,
        meta: &serde_json::Value,
    ) -> Result<(), SagaError> {
        tracing::warn!(error = %failure.error, "registration failed");
        metrics::counter!("appreg_dcr_registrations_total", "outcome" => "failed").increment(1);
        self.unmark_attempt(&format!("{}:{}", id.0, request_version))
            .await?;
        let provider_id = provider.map(|p| p.id.clone());
        match apps::execute(&self.commands, id, meta, |app| {
            app.fail_dcr_registration(request_version, provider_id.clone(), failure.clone())
        })
        .await
        {
            Ok(_) | Err(CommandError::Domain(_)) | Err(CommandError::NoApplication) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// The provider settings with their secret from the vault (cached while the provider's
    /// recorded definition, which carries its secret's fingerprint, is unchanged).
    pub(super) async fn settings(
        &self,
        environment: &str,
        p: &Provider,
    ) -> Result<ProviderSettings, SagaError> {
        let key = (environment.to_string(), p.id.clone());
        let cached = self
            .settings_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .filter(|(known, _)| known == p)
            .map(|(_, settings)| settings.clone());
        if let Some(settings) = cached {
            return Ok(settings);
        }
        let kind = secret_kind(&p.mode);
        let secret = self
            .vault
            .get(&provider_owner(environment, &p.id), kind)
            .await?
            .ok_or_else(|| SagaError::SecretMissing {
                provider: p.id.clone(),
                kind: kind.to_string(),
            })?;
        let settings = settings_of(p, secret);
        self.settings_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, (p.clone(), settings.clone()));
        Ok(settings)
    }

    /// Keeps what the provider issued before anything else, in one transaction: the secrets in
    /// the vault, the rest in `dcr_requests`.
    pub(super) async fn record_obtained(
        &self,
        key: &str,
        id: ApplicationId,
        provider: &Provider,
        client: &RegisteredClient,
    ) -> Result<(), SagaError> {
        let rows = recorder::rows_of(&self.vault, key, id, &provider.id, client);
        recorder::write_obtained(&self.db, &[rows], &mut Kept::new()).await?;
        Ok(())
    }

    pub(super) async fn mark(&self, key: &str, state: &str) -> Result<(), SagaError> {
        let now = chrono::Utc::now().to_rfc3339();
        with_pool!(&self.db, pool => sqlx::query("UPDATE dcr_requests SET state = $1, updated_at = $2 WHERE request_key = $3")
            .bind(state)
            .bind(&now)
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Deletes a client that no application will hold; records an orphan when the provider
    /// offers no deletion or refuses it.
    pub(super) async fn discard(
        &self,
        id: ApplicationId,
        provider: &Provider,
        client: &Stored,
        reason: &str,
        meta: &serde_json::Value,
    ) -> Result<(), SagaError> {
        let owner = secret_owner(id);
        let token = self.vault.get(&owner, "registration_access_token").await?;
        let handle = RegistrationHandle {
            client_id: client.client_id.as_str().to_string(),
            registration_client_uri: client.registration_client_uri.clone(),
            registration_access_token: token,
        };
        self.discard_handle(id, provider, &handle, reason, meta)
            .await
    }

    /// [`Saga::discard`] of the client `handle` names (with its own registration access token).
    pub(super) async fn discard_handle(
        &self,
        id: ApplicationId,
        provider: &Provider,
        handle: &RegistrationHandle,
        reason: &str,
        meta: &serde_json::Value,
    ) -> Result<(), SagaError> {
        let environment = meta
            .get("environment")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let deleted = match self.settings(&environment, provider).await {
            Ok(settings) => {
                let _slot = self.bulkheads.enter(&environment, &provider.id).await;
                self.client.delete(&settings, handle).await
            }
            Err(e) => Err(ProviderError::Invalid(e.to_string())),
        };
        match deleted {
            Ok(()) => {
                metrics::counter!("appreg_dcr_discarded_clients_total").increment(1);
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, client_id = handle.client_id.as_str(), "cannot delete the client at the provider: recording an orphan");
                metrics::counter!("appreg_dcr_orphans_total").increment(1);
                let (provider_id, client_id) = (provider.id.clone(), handle.client_id.clone());
                let why = format!("{reason}; deletion failed: {error}");
                apps::execute(&self.commands, id, meta, |app| {
                    Ok(app.record_orphan(provider_id.clone(), client_id.clone(), why.clone()))
                })
                .await
                .map(|_| ())
                .map_err(SagaError::from)
            }
        }
    }
}
