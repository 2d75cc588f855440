//! Decisions on subscriptions, API keys and notification settings, and the archive's and
//! restore's steps.

use super::*;

impl Application {
    pub fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions.iter().find(|s| s.id == id)
    }

    fn subscription_or_404(&self, id: &str) -> Result<&Subscription, DomainError> {
        self.subscription(id)
            .ok_or(DomainError::SubscriptionNotFound)
    }

    /// Decide subscribing to `plan`. An AUTO plan is accepted at once (and an API_KEY plan's
    /// key issued: `key` is used only then).
    pub fn subscribe(
        &self,
        subscription_id: String,
        plan: &Plan,
        key: &NewApiKey,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        if plan.security == PlanSecurity::Keyless {
            return Err(DomainError::PlanKeyless);
        }
        if plan.status == PlanStatus::Closed {
            return Err(DomainError::PlanClosed);
        }
        if plan.security.needs_client_id() && self.client_id.is_none() {
            return Err(DomainError::ClientIdRequired);
        }
        if self
            .subscriptions
            .iter()
            .any(|s| s.plan_id == plan.id && s.status.is_open())
        {
            return Err(DomainError::SubscriptionExists);
        }
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(DomainError::TooManySubscriptions);
        }
        let mut events = vec![ApplicationEvent::SubscriptionCreated(SubscriptionCreated {
            subscription_id: subscription_id.clone(),
            api_id: plan.api_id.clone(),
            plan_id: plan.id.clone(),
            security: plan.security,
            validation: plan.validation,
        })];
        if plan.validation == PlanValidation::Auto {
            events.extend(accepted(&subscription_id, plan.security, key));
        }
        Ok(events)
    }

    /// Decide accepting a pending subscription (an API_KEY plan's key issued with `key`).
    pub fn accept_subscription(
        &self,
        id: &str,
        key: &NewApiKey,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        let sub = self.subscription_or_404(id)?;
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        if sub.status != SubscriptionStatus::Pending {
            return Err(transition(sub, "accepted"));
        }
        if sub.security.needs_client_id() && self.client_id.is_none() {
            return Err(DomainError::ClientIdRequired);
        }
        Ok(accepted(id, sub.security, key))
    }

    /// Decide rejecting a pending subscription, with an optional reason.
    pub fn reject_subscription(
        &self,
        id: &str,
        reason: Option<&str>,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        let sub = self.subscription_or_404(id)?;
        let reason = parse_reason(reason)?;
        if sub.status != SubscriptionStatus::Pending {
            return Err(transition(sub, "rejected"));
        }
        Ok(vec![ApplicationEvent::SubscriptionRejected(
            SubscriptionRejected {
                subscription_id: id.to_string(),
                reason,
                archive_version: None,
            },
        )])
    }

    pub fn pause_subscription(&self, id: &str) -> Result<Vec<ApplicationEvent>, DomainError> {
        let sub = self.subscription_or_404(id)?;
        if sub.status != SubscriptionStatus::Accepted {
            return Err(transition(sub, "paused"));
        }
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        Ok(vec![ApplicationEvent::SubscriptionPaused(
            SubscriptionPaused {
                subscription_id: id.to_string(),
            },
        )])
    }

    pub fn resume_subscription(&self, id: &str) -> Result<Vec<ApplicationEvent>, DomainError> {
        let sub = self.subscription_or_404(id)?;
        if sub.status != SubscriptionStatus::Paused {
            return Err(transition(sub, "resumed"));
        }
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        Ok(vec![ApplicationEvent::SubscriptionResumed(
            SubscriptionResumed {
                subscription_id: id.to_string(),
            },
        )])
    }

    /// Decide closing an accepted or paused subscription; its keys are revoked with it.
    pub fn close_subscription(&self, id: &str) -> Result<Vec<ApplicationEvent>, DomainError> {
        let sub = self.subscription_or_404(id)?;
        if sub.status == SubscriptionStatus::Pending {
            // The consumer withdraws a request nobody has validated yet: it is rejected, with
            // the reason `withdrawn` (what Gravitee does); it never had a key.
            return Ok(vec![ApplicationEvent::SubscriptionRejected(
                SubscriptionRejected {
                    subscription_id: id.to_string(),
                    reason: Some(WITHDRAWN_REASON.to_string()),
                    archive_version: None,
                },
            )]);
        }
        if !matches!(
            sub.status,
            SubscriptionStatus::Accepted | SubscriptionStatus::Paused
        ) {
            return Err(transition(sub, "closed"));
        }
        let mut events = vec![ApplicationEvent::SubscriptionClosed(SubscriptionClosed {
            subscription_id: id.to_string(),
            archive_version: None,
        })];
        events.extend(revoke_all(sub, None));
        Ok(events)
    }

    /// Decide renewing a subscription's key: a new key is issued; the keys valid now stay valid
    /// for `grace` (an earlier end of validity is kept).
    pub fn renew_api_key(
        &self,
        id: &str,
        key: &NewApiKey,
        now: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        let sub = self.subscription_or_404(id)?;
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        if sub.security != PlanSecurity::ApiKey {
            return Err(DomainError::NotApiKeyPlan);
        }
        if !matches!(
            sub.status,
            SubscriptionStatus::Accepted | SubscriptionStatus::Paused
        ) {
            return Err(transition(sub, "given a new key"));
        }
        if sub.api_keys.len() >= MAX_KEYS {
            return Err(DomainError::TooManyApiKeys);
        }
        let until = now + grace;
        let mut events: Vec<ApplicationEvent> = sub
            .api_keys
            .iter()
            .filter(|k| k.valid_at(now) && k.expires_at.is_none_or(|t| t > until))
            .map(|k| {
                ApplicationEvent::ApiKeyRenewed(ApiKeyRenewed {
                    subscription_id: id.to_string(),
                    key_id: k.id.clone(),
                    expires_at: until,
                })
            })
            .collect();
        events.push(issue(id, key));
        Ok(events)
    }

    /// Decide revoking a key at once; a revoked key stays revoked (nothing to do).
    pub fn revoke_api_key(
        &self,
        id: &str,
        key_id: &str,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        let sub = self.subscription_or_404(id)?;
        let key = sub
            .api_keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or(DomainError::ApiKeyNotFound)?;
        if key.revoked_at.is_some() {
            return Ok(vec![]);
        }
        Ok(vec![ApplicationEvent::ApiKeyRevoked(ApiKeyRevoked {
            subscription_id: id.to_string(),
            key_id: key_id.to_string(),
            archive_version: None,
        })])
    }

    /// Decide a member's notification settings (no hooks: none wanted, the setting removed).
    /// The address comes sealed from the edge, which checked its form ([`parse_email`]) first.
    pub fn update_notifications(
        &self,
        user: UserId,
        hooks: BTreeSet<Hook>,
        email: Option<Personal>,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        let email = if hooks.is_empty() {
            None
        } else {
            let mut errors = FieldErrors::new();
            if email.is_none() {
                errors.add(
                    "email",
                    "notification.email.required",
                    "email is required when hooks are chosen",
                );
            }
            errors.into_result()?;
            email
        };
        let current = self.notifications.get(&user);
        let unchanged = match (current, &email) {
            (None, None) => true,
            (Some(c), Some(e)) => c.hooks == hooks && &c.email == e,
            _ => false,
        };
        if unchanged {
            return Ok(vec![]);
        }
        Ok(vec![ApplicationEvent::NotificationSettingsUpdated(
            NotificationSettingsUpdated { user, hooks, email },
        )])
    }

    /// The archive process manager's next step for the archive recorded at `archive_version`:
    /// the first open subscription closed (accepted, paused; its keys revoked) or rejected
    /// (pending), then the notification settings deleted. `None` when nothing is left, or when
    /// the application is no longer in that archive (restored since).
    pub fn next_archive_step(&self, archive_version: i64) -> Option<Vec<ApplicationEvent>> {
        if self.status != ApplicationStatus::Archived
            || self.archived_version != Some(archive_version)
        {
            return None;
        }
        let version = Some(archive_version);
        if let Some(sub) = self.subscriptions.iter().find(|s| s.status.is_open()) {
            if sub.status == SubscriptionStatus::Pending {
                return Some(vec![ApplicationEvent::SubscriptionRejected(
                    SubscriptionRejected {
                        subscription_id: sub.id.clone(),
                        reason: Some(ARCHIVED_REASON.to_string()),
                        archive_version: version,
                    },
                )]);
            }
            let mut events = vec![ApplicationEvent::SubscriptionClosed(SubscriptionClosed {
                subscription_id: sub.id.clone(),
                archive_version: version,
            })];
            events.extend(revoke_all(sub, version));
            return Some(events);
        }
        // Keys still valid on an ended subscription (none are, unless an older log says so).
        if let Some(sub) = self
            .subscriptions
            .iter()
            .find(|s| s.api_keys.iter().any(|k| k.revoked_at.is_none()))
        {
            return Some(revoke_all(sub, version));
        }
        if !self.notifications.is_empty() {
            return Some(vec![ApplicationEvent::NotificationSettingsDeleted(
                NotificationSettingsDeleted {
                    archive_version: version,
                },
            )]);
        }
        None
    }

    /// The restore process manager's next step for the restore recorded at `restore_version`:
    /// the first subscription an archive ended and no restore reopened yet goes back to PENDING,
    /// unless a later subscription to its plan superseded it (or the plan has an open one).
    /// Besides the undone archive's, that is what an earlier archive ended when its restore was
    /// overtaken by this archive before its steps ran (archive, restore, archive again at once):
    /// restoring undoes both. `None` when nothing is left, or when the application was archived
    /// again since.
    pub fn next_restore_step(&self, restore_version: i64) -> Option<Vec<ApplicationEvent>> {
        if self.status != ApplicationStatus::Active
            || self.restored_version != Some(restore_version)
        {
            return None;
        }
        self.archived_version?;
        let subs = &self.subscriptions;
        let sub = subs.iter().enumerate().find_map(|(i, s)| {
            let superseded = subs[i + 1..].iter().any(|o| o.plan_id == s.plan_id);
            let open = subs
                .iter()
                .any(|o| o.plan_id == s.plan_id && o.status.is_open());
            (s.ended_by_archive.is_some() && !superseded && !open).then_some(s)
        })?;
        Some(vec![ApplicationEvent::SubscriptionReopened(
            SubscriptionReopened {
                subscription_id: sub.id.clone(),
                restore_version,
            },
        )])
    }

    /// Claims of subscription ids and key hashes that `self` holds and `before` did not.
    pub fn index_claims(&self, before: Option<&Application>) -> Vec<UniqueClaim> {
        let mut claims = Vec::new();
        for sub in &self.subscriptions {
            let old = before.and_then(|b| b.subscription(&sub.id));
            if old.is_none() {
                claims.push(UniqueClaim {
                    scope: SUBSCRIPTION_SCOPE.to_string(),
                    value: sub.id.clone(),
                });
            }
            for key in &sub.api_keys {
                if !old.is_some_and(|o| o.api_keys.iter().any(|k| k.id == key.id)) {
                    claims.push(UniqueClaim {
                        scope: API_KEY_SCOPE.to_string(),
                        value: key.hash.clone(),
                    });
                }
            }
        }
        claims
    }
}
