//! Folding the subscription, key and notification events into the application's state.

use super::*;

/// Folds a subscription, key or notification event into the application.
pub(crate) fn evolve(app: &mut Application, event: &ApplicationEvent, at: DateTime<Utc>) {
    fn with<F: FnOnce(&mut Subscription)>(
        app: &mut Application,
        id: &str,
        at: DateTime<Utc>,
        f: F,
    ) {
        if let Some(s) = app.subscriptions.iter_mut().find(|s| s.id == id) {
            f(s);
            s.updated_at = at;
        }
    }
    match event {
        ApplicationEvent::SubscriptionCreated(e) => {
            app.subscriptions.push(Subscription {
                id: e.subscription_id.clone(),
                api_id: e.api_id.clone(),
                plan_id: e.plan_id.clone(),
                security: e.security,
                validation: e.validation,
                status: SubscriptionStatus::Pending,
                reason: None,
                created_at: at,
                updated_at: at,
                ended_by_archive: None,
                api_keys: vec![],
            });
        }
        ApplicationEvent::SubscriptionAccepted(e) => with(app, &e.subscription_id, at, |s| {
            s.status = SubscriptionStatus::Accepted;
        }),
        ApplicationEvent::SubscriptionRejected(e) => with(app, &e.subscription_id, at, |s| {
            s.status = SubscriptionStatus::Rejected;
            s.reason = e.reason.clone();
            s.ended_by_archive = e.archive_version;
        }),
        ApplicationEvent::SubscriptionPaused(e) => with(app, &e.subscription_id, at, |s| {
            s.status = SubscriptionStatus::Paused;
        }),
        ApplicationEvent::SubscriptionResumed(e) => with(app, &e.subscription_id, at, |s| {
            s.status = SubscriptionStatus::Accepted;
        }),
        ApplicationEvent::SubscriptionClosed(e) => with(app, &e.subscription_id, at, |s| {
            s.status = SubscriptionStatus::Closed;
            s.ended_by_archive = e.archive_version;
        }),
        ApplicationEvent::SubscriptionReopened(e) => with(app, &e.subscription_id, at, |s| {
            s.status = SubscriptionStatus::Pending;
            s.reason = None;
            s.ended_by_archive = None;
        }),
        ApplicationEvent::ApiKeyIssued(e) => with(app, &e.subscription_id, at, |s| {
            s.api_keys.push(ApiKey {
                id: e.key_id.clone(),
                prefix: e.prefix.clone(),
                hash: e.key_hash.clone(),
                created_at: at,
                expires_at: None,
                revoked_at: None,
            });
        }),
        ApplicationEvent::ApiKeyRenewed(e) => with(app, &e.subscription_id, at, |s| {
            if let Some(k) = s.api_keys.iter_mut().find(|k| k.id == e.key_id) {
                k.expires_at = Some(e.expires_at);
            }
        }),
        ApplicationEvent::ApiKeyRevoked(e) => with(app, &e.subscription_id, at, |s| {
            if let Some(k) = s.api_keys.iter_mut().find(|k| k.id == e.key_id) {
                k.revoked_at.get_or_insert(at);
            }
        }),
        ApplicationEvent::NotificationSettingsUpdated(e) => match &e.email {
            Some(email) if !e.hooks.is_empty() => {
                app.notifications.insert(
                    e.user.clone(),
                    NotificationSetting {
                        hooks: e.hooks.clone(),
                        email: email.clone(),
                    },
                );
            }
            _ => {
                app.notifications.remove(&e.user);
            }
        },
        ApplicationEvent::NotificationSettingsDeleted(_) => app.notifications.clear(),
        _ => {}
    }
}
