//! Folding an application's events into its state.

use super::*;

impl Application {
    /// Fold one event. `None` before the first event; an event that cannot apply to the state is
    /// ignored (the log is the truth; decide never produces such a sequence).
    pub fn evolve(
        state: Option<Application>,
        event: &ApplicationEvent,
        at: DateTime<Utc>,
        version: i64,
    ) -> Option<Application> {
        let mut app = match (state, event) {
            (None, ApplicationEvent::ApplicationCreated(e)) => {
                let mut members = BTreeMap::new();
                members.insert(e.primary_owner.clone(), Role::PrimaryOwner);
                return Some(Application {
                    id: e.id,
                    environment: e.environment.clone(),
                    name: e.name.clone(),
                    description: e.description.clone(),
                    domain: e.domain.clone(),
                    app_type: e.app_type,
                    status: ApplicationStatus::Active,
                    client_id: e.client_id.clone(),
                    oauth: e.oauth.clone(),
                    provider_id: e.provider_id.clone(),
                    registration: None,
                    members,
                    subscriptions: vec![],
                    notifications: BTreeMap::new(),
                    suspected_orphans: vec![],
                    archived_version: None,
                    restored_version: None,
                    created_at: at,
                    updated_at: at,
                    version,
                });
            }
            (None, _) => return None,
            (Some(app), _) => app,
        };
        match event {
            ApplicationEvent::ApplicationCreated(_) => {}
            ApplicationEvent::DcrRegistrationRequested(e) => {
                app.registration = Some(Registration {
                    state: RegistrationState::Registering,
                    error: None,
                    error_description: None,
                    request_version: version,
                    attempt: e.attempt,
                    provider_id: None,
                    client_secret_fingerprint: None,
                    client_secret_expires_at: None,
                    client_deleted: false,
                    operation: None,
                });
                app.client_id = None;
            }
            ApplicationEvent::DcrClientRegistered(e) => {
                if let Some(r) = app.registration.as_mut() {
                    r.state = RegistrationState::Registered;
                    r.provider_id = Some(e.provider_id.clone());
                    r.client_secret_fingerprint = e.client_secret_fingerprint.clone();
                    r.client_secret_expires_at = e.client_secret_expires_at;
                    r.error = None;
                    r.error_description = None;
                }
                app.client_id = Some(e.client_id.clone());
            }
            ApplicationEvent::DcrRegistrationFailed(e) => {
                if let Some(r) = app.registration.as_mut() {
                    r.state = RegistrationState::RegistrationFailed;
                    r.error = Some(e.error.clone());
                    r.error_description = e.error_description.clone();
                }
            }
            ApplicationEvent::OrphanClientDetected(_) => {}
            ApplicationEvent::DcrAttemptOutcomeUnknown(e) => {
                let known = app
                    .suspected_orphans
                    .iter()
                    .any(|s| s.request_version == e.request_version && s.attempt == e.attempt);
                if !known {
                    app.suspected_orphans.push(SuspectedOrphan {
                        request_version: e.request_version,
                        attempt: e.attempt,
                        provider_id: e.provider_id.clone(),
                    });
                }
            }
            ApplicationEvent::DcrAttemptSuspicionsCleared(e) => {
                app.suspected_orphans.retain(|s| {
                    s.request_version != e.request_version || !e.attempts.contains(&s.attempt)
                });
            }
            ApplicationEvent::DcrClientUpdateRequested(_) => {
                set_operation(
                    &mut app,
                    ClientOperationKind::Update,
                    OperationState::Pending,
                    version,
                    None,
                );
            }
            ApplicationEvent::DcrClientUpdated(e) => {
                set_operation(
                    &mut app,
                    ClientOperationKind::Update,
                    OperationState::Done,
                    e.request_version,
                    None,
                );
                if e.client_secret_removed {
                    if let Some(r) = app.registration.as_mut() {
                        r.client_secret_fingerprint = None;
                        r.client_secret_expires_at = None;
                    }
                }
            }
            ApplicationEvent::DcrClientUpdateFailed(e) => {
                set_operation(
                    &mut app,
                    ClientOperationKind::Update,
                    OperationState::Failed,
                    e.request_version,
                    Some(e),
                );
            }
            ApplicationEvent::ClientSecretRenewalRequested(_) => {
                set_operation(
                    &mut app,
                    ClientOperationKind::RenewSecret,
                    OperationState::Pending,
                    version,
                    None,
                );
            }
            ApplicationEvent::ClientSecretRenewed(e) => {
                set_operation(
                    &mut app,
                    ClientOperationKind::RenewSecret,
                    OperationState::Done,
                    e.request_version,
                    None,
                );
                if let Some(r) = app.registration.as_mut() {
                    r.client_secret_fingerprint = Some(e.client_secret_fingerprint.clone());
                    r.client_secret_expires_at = e.client_secret_expires_at;
                }
            }
            ApplicationEvent::ClientSecretRenewalFailed(e) => {
                set_operation(
                    &mut app,
                    ClientOperationKind::RenewSecret,
                    OperationState::Failed,
                    e.request_version,
                    Some(e),
                );
            }
            ApplicationEvent::DcrClientDeleted(_) => {
                if let Some(r) = app.registration.as_mut() {
                    r.client_deleted = true;
                    r.client_secret_fingerprint = None;
                    r.client_secret_expires_at = None;
                }
                app.client_id = None;
            }
            ApplicationEvent::ApplicationUpdated(e) => {
                app.name = e.name.clone();
                app.description = e.description.clone();
                app.domain = e.domain.clone();
                app.client_id = e.client_id.clone();
                app.oauth = e.oauth.clone();
            }
            ApplicationEvent::ApplicationArchived(_) => {
                app.status = ApplicationStatus::Archived;
                app.archived_version = Some(version);
                app.members.retain(|_, r| *r != Role::PrimaryOwner);
            }
            ApplicationEvent::ApplicationRestored(e) => {
                app.status = ApplicationStatus::Active;
                app.restored_version = Some(version);
                app.members.retain(|_, r| *r != Role::PrimaryOwner);
                app.members
                    .insert(e.primary_owner.clone(), Role::PrimaryOwner);
            }
            ApplicationEvent::MemberAdded(e) => {
                app.members.insert(e.user.clone(), e.role);
            }
            ApplicationEvent::MemberRoleChanged(e) => {
                app.members.insert(e.user.clone(), e.to);
            }
            ApplicationEvent::MemberRemoved(e) => {
                app.members.remove(&e.user);
                // A former member is told nothing more.
                app.notifications.remove(&e.user);
            }
            ApplicationEvent::PrimaryOwnershipTransferred(e) => {
                if let Some(former) = &e.from {
                    app.members.insert(former.clone(), e.former_owner_role);
                }
                app.members.retain(|_, r| *r != Role::PrimaryOwner);
                app.members.insert(e.to.clone(), Role::PrimaryOwner);
            }
            other => sub::evolve(&mut app, other, at),
        }
        app.updated_at = at;
        app.version = version;
        Some(app)
    }
}
