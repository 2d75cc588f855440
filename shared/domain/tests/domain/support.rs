//! The given/when/then harness and fixtures.
//!
//! ```text
//! given([created_event(...)]).when(archive()).then([archived(...)]);
//! given([]).when(create(cmd)).then_field_errors(&[("type", "type.dcr_disabled")]);
//! ```
//!
//! `given` folds the events with `Application::evolve` (versions 1, 2, …, fixed times); `when`
//! decides one command against the folded state; `then*` check the decision and fold its events
//! on top, so a test can look at the resulting state and the uniqueness claims it needs.

#![allow(dead_code)]

use appreg_domain::application::{
    claim_changes, ApplicationArchived, ApplicationCreated, ApplicationRestored,
    ApplicationUpdated, DcrRegistrationRequested,
};
use appreg_domain::*;
use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// A fixed instant, `n` seconds after 2024-01-01T00:00:00Z.
pub fn t(n: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_704_067_200 + n, 0).unwrap()
}

pub const APP: ApplicationId =
    ApplicationId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001));

pub fn env() -> EnvironmentId {
    EnvironmentId::default_env()
}

pub fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

/// The creator and primary owner of the fixtures' application.
pub fn alice() -> UserId {
    user("alice")
}

pub fn member(s: &str) -> Actor {
    Actor {
        user: user(s),
        admin: false,
    }
}

pub fn admin(s: &str) -> Actor {
    Actor {
        user: user(s),
        admin: true,
    }
}

pub fn name(s: &str) -> ApplicationName {
    ApplicationName::parse(s).unwrap()
}

pub fn text(s: &str) -> BoundedText {
    BoundedText::parse(s, 4000).unwrap()
}

pub fn cid(s: &str) -> ClientId {
    ClientId::parse(s).unwrap()
}

pub fn uri(s: &str) -> RedirectUri {
    RedirectUri::parse(s).unwrap()
}

pub fn uris(list: &[&str]) -> Vec<RedirectUri> {
    list.iter().map(|s| uri(s)).collect()
}

pub fn url(s: &str) -> HttpUrl {
    HttpUrl::parse(s).unwrap()
}

pub use appreg_domain::GrantType::{
    AuthorizationCode as AC, ClientCredentials as CC, Implicit as IMPLICIT, Password as PASSWORD,
    RefreshToken as RT,
};

pub const OAUTH_TYPES: [ApplicationType; 4] = [
    ApplicationType::Browser,
    ApplicationType::Web,
    ApplicationType::Native,
    ApplicationType::BackendToBackend,
];

/// The policy most tests run under: every type allowed, DCR on, http only for loopback.
pub fn policy() -> Policy {
    Policy {
        settings: ClientRegistrationSettings {
            allowed_types: AllowedTypes::default(),
            dcr_enabled: true,
        },
        allow_http_redirect_uris: false,
    }
}

/// A valid creation of an application of type `t` by alice: a redirect URI for the types that
/// need one, default grants (none given), no optional field.
pub fn create_cmd(t: ApplicationType) -> CreateApplication {
    CreateApplication {
        id: APP,
        environment: env(),
        name: name("Weather"),
        description: None,
        domain: None,
        app_type: t,
        client_id: None,
        redirect_uris: if t.requires_redirect_uris() {
            uris(&["https://app.example/callback"])
        } else {
            vec![]
        },
        grant_types: vec![],
        client_uri: None,
        logo_uri: None,
        provider_id: None,
        owner: alice(),
    }
}

/// A simple application with a self-chosen client_id.
pub fn create_simple_with_client_id(client_id: &str) -> CreateApplication {
    CreateApplication {
        client_id: Some(cid(client_id)),
        ..create_cmd(ApplicationType::Simple)
    }
}

/// The `ApplicationCreated` a valid command decides, given the normalised OAuth settings.
pub fn created_from(cmd: &CreateApplication, oauth: Option<OAuthSettings>) -> ApplicationEvent {
    ApplicationEvent::ApplicationCreated(ApplicationCreated {
        id: cmd.id,
        environment: cmd.environment.clone(),
        name: cmd.name.clone(),
        description: cmd.description.clone(),
        domain: cmd.domain.clone(),
        app_type: cmd.app_type,
        client_id: cmd.client_id.clone(),
        oauth,
        provider_id: cmd.provider_id.clone(),
        primary_owner: cmd.owner.clone(),
    })
}

/// OAuth settings as the aggregate stores them (response types computed from the grants).
pub fn oauth(redirect_uris: &[&str], grants: &[GrantType]) -> OAuthSettings {
    OAuthSettings {
        redirect_uris: uris(redirect_uris),
        grant_types: grants.to_vec(),
        response_types: ResponseType::for_grants(grants),
        client_uri: None,
        logo_uri: None,
    }
}

/// The events that create the fixture application of type `t` (what `create_cmd(t)` decides).
pub fn created(t: ApplicationType) -> Vec<ApplicationEvent> {
    Application::create(create_cmd(t), &policy()).unwrap()
}

pub fn dcr_requested(provider_id: Option<&str>) -> ApplicationEvent {
    ApplicationEvent::DcrRegistrationRequested(DcrRegistrationRequested {
        provider_id: provider_id.map(String::from),
        attempt: 1,
        reason: appreg_domain::application::RegistrationReason::Created,
    })
}

pub fn archived(former_primary_owner: Option<UserId>) -> ApplicationEvent {
    ApplicationEvent::ApplicationArchived(ApplicationArchived {
        former_primary_owner,
    })
}

pub fn restored(primary_owner: UserId) -> ApplicationEvent {
    ApplicationEvent::ApplicationRestored(ApplicationRestored { primary_owner })
}

pub fn updated(e: ApplicationUpdated) -> ApplicationEvent {
    ApplicationEvent::ApplicationUpdated(e)
}

// ---------------------------------------------------------------------------------------------
// The harness.

/// A command against the application aggregate.
#[derive(Debug, Clone)]
pub enum Command {
    Create(CreateApplication),
    Update(UpdateApplication),
    Archive,
    Restore(Actor),
}

pub fn create(cmd: CreateApplication) -> Command {
    Command::Create(cmd)
}

pub fn update(cmd: UpdateApplication) -> Command {
    Command::Update(cmd)
}

pub fn archive() -> Command {
    Command::Archive
}

pub fn restore_by(actor: Actor) -> Command {
    Command::Restore(actor)
}

/// Decides `cmd` against `state` (the one place that maps commands onto the aggregate).
pub fn decide(
    state: Option<&Application>,
    cmd: Command,
    policy: &Policy,
) -> Result<Vec<ApplicationEvent>, DomainError> {
    match (cmd, state) {
        (Command::Create(c), None) => Application::create(c, policy),
        (Command::Create(_), Some(_)) => panic!("create against an existing application"),
        (_, None) => Err(DomainError::NotFound),
        (Command::Update(u), Some(app)) => app.update(u, policy),
        (Command::Archive, Some(app)) => app.archive(),
        (Command::Restore(actor), Some(app)) => app.restore(&actor),
    }
}

/// Folds `events` onto `state`, the first one at `version + 1`; event `n` happens at `t(n)`.
pub fn fold(
    mut state: Option<Application>,
    mut version: i64,
    events: &[ApplicationEvent],
) -> (Option<Application>, i64) {
    for e in events {
        version += 1;
        state = Application::evolve(state, e, t(version), version);
    }
    (state, version)
}

/// The state folded from past events, and the policy the next command is decided under.
#[derive(Debug, Clone)]
pub struct Given {
    pub state: Option<Application>,
    pub version: i64,
    pub policy: Policy,
}

pub fn given(events: impl IntoIterator<Item = ApplicationEvent>) -> Given {
    let events: Vec<_> = events.into_iter().collect();
    let (state, version) = fold(None, 0, &events);
    Given {
        state,
        version,
        policy: policy(),
    }
}

impl Given {
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Adds a member (the member commands are not part of the aggregate yet).
    pub fn with_member(mut self, who: &str, role: Role) -> Self {
        self.state
            .as_mut()
            .expect("a member of no application")
            .members
            .insert(user(who), role);
        self
    }

    pub fn state(&self) -> &Application {
        self.state.as_ref().expect("no application was given")
    }

    /// Decides with any decision function of the aggregate (the DCR saga's answers, a retry, a
    /// renewal…) against the given application.
    pub fn when_app(
        self,
        decide: impl FnOnce(&Application) -> Result<Vec<ApplicationEvent>, DomainError>,
    ) -> When {
        let result = decide(self.state());
        When {
            before: self.state,
            version: self.version,
            result,
        }
    }

    pub fn when(self, cmd: Command) -> When {
        let result = decide(self.state.as_ref(), cmd, &self.policy);
        When {
            before: self.state,
            version: self.version,
            result,
        }
    }
}

/// A decision, not yet checked.
#[derive(Debug)]
pub struct When {
    before: Option<Application>,
    version: i64,
    pub result: Result<Vec<ApplicationEvent>, DomainError>,
}

impl When {
    /// The decision succeeded with exactly `expected`.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = ApplicationEvent>) -> Then {
        let expected: Vec<_> = expected.into_iter().collect();
        let then = self.then_ok();
        assert_eq!(then.events, expected, "decided events");
        then
    }

    /// The decision succeeded with no event.
    #[track_caller]
    pub fn then_nothing(self) -> Then {
        self.then([])
    }

    /// The decision succeeded, whatever its events.
    #[track_caller]
    pub fn then_ok(self) -> Then {
        let events = match self.result {
            Ok(events) => events,
            Err(e) => panic!("expected events, got error {}: {e:?}", e.code()),
        };
        let (after, version) = fold(self.before.clone(), self.version, &events);
        Then {
            before: self.before,
            after,
            version,
            events,
        }
    }

    /// The decision failed with the error of stable code `code`.
    #[track_caller]
    pub fn then_error(self, code: &str) -> DomainError {
        match self.result {
            Ok(events) => panic!("expected error {code}, got events {events:#?}"),
            Err(e) => {
                assert_eq!(e.code(), code, "error code of {e:?}");
                e
            }
        }
    }

    /// The decision failed validation with exactly these `(field, code)` errors, in any order.
    #[track_caller]
    pub fn then_field_errors(self, expected: &[(&str, &str)]) -> FieldErrors {
        let e = self.then_error("validation.failed");
        let DomainError::Invalid(errors) = e else {
            unreachable!()
        };
        let mut got: Vec<(String, String)> = errors
            .0
            .iter()
            .map(|f| (f.field.clone(), f.code.to_string()))
            .collect();
        let mut want: Vec<(String, String)> = expected
            .iter()
            .map(|(f, c)| (f.to_string(), c.to_string()))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "field errors {errors:#?}");
        for f in &errors.0 {
            assert!(!f.message.is_empty(), "{f:?} has no message");
        }
        errors
    }
}

/// A successful decision, with its events folded on top of the given state.
#[derive(Debug)]
pub struct Then {
    pub before: Option<Application>,
    pub after: Option<Application>,
    pub version: i64,
    pub events: Vec<ApplicationEvent>,
}

impl Then {
    pub fn state(&self) -> &Application {
        self.after
            .as_ref()
            .expect("no application after the decision")
    }

    /// `(claim, release)` as the store would get them with these events.
    pub fn claims(&self) -> (Vec<UniqueClaim>, Vec<UniqueClaim>) {
        claim_changes(self.before.as_ref(), self.after.as_ref())
    }

    /// The `ApplicationUpdated` decided, if that is the only event.
    #[track_caller]
    pub fn updated(&self) -> &ApplicationUpdated {
        match self.events.as_slice() {
            [ApplicationEvent::ApplicationUpdated(u)] => u,
            other => panic!("expected one ApplicationUpdated, got {other:#?}"),
        }
    }
}

pub fn claim(env: &str, value: &str) -> UniqueClaim {
    UniqueClaim {
        scope: format!("client_id/{env}"),
        value: value.to_string(),
    }
}

pub fn primary_owners(app: &Application) -> Vec<UserId> {
    app.members
        .iter()
        .filter(|(_, r)| **r == Role::PrimaryOwner)
        .map(|(u, _)| u.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Catalogue, subscriptions, API keys and notification settings.

pub use appreg_domain::catalogue::{Plan, PlanSecurity, PlanStatus, PlanValidation};
use appreg_domain::subscription as s;
pub use appreg_domain::subscription::{
    ApiKey, Hook, NewApiKey, Subscription, SubscriptionStatus, ARCHIVED_REASON,
};

/// The API every fixture plan belongs to.
pub const API: &str = "api-weather";

/// A published plan of [`API`].
pub fn plan(id: &str, security: PlanSecurity, validation: PlanValidation) -> Plan {
    Plan {
        id: id.to_string(),
        api_id: API.to_string(),
        name: format!("Plan {id}"),
        security,
        validation,
        status: PlanStatus::Published,
    }
}

pub fn closed_plan(id: &str, security: PlanSecurity, validation: PlanValidation) -> Plan {
    Plan {
        status: PlanStatus::Closed,
        ..plan(id, security, validation)
    }
}

/// The plans of most tests, by security and validation.
pub fn api_key_auto() -> Plan {
    plan("p-key-auto", PlanSecurity::ApiKey, PlanValidation::Auto)
}
pub fn api_key_manual() -> Plan {
    plan("p-key-manual", PlanSecurity::ApiKey, PlanValidation::Manual)
}
pub fn jwt_auto() -> Plan {
    plan("p-jwt-auto", PlanSecurity::Jwt, PlanValidation::Auto)
}
pub fn jwt_manual() -> Plan {
    plan("p-jwt-manual", PlanSecurity::Jwt, PlanValidation::Manual)
}
pub fn oauth2_auto() -> Plan {
    plan("p-oauth2-auto", PlanSecurity::Oauth2, PlanValidation::Auto)
}
pub fn oauth2_manual() -> Plan {
    plan(
        "p-oauth2-manual",
        PlanSecurity::Oauth2,
        PlanValidation::Manual,
    )
}
pub fn keyless() -> Plan {
    plan("p-keyless", PlanSecurity::Keyless, PlanValidation::Auto)
}

/// Every plan that can be subscribed to: each security but KEYLESS, each validation.
pub fn subscribable_plans() -> Vec<Plan> {
    vec![
        api_key_auto(),
        api_key_manual(),
        jwt_auto(),
        jwt_manual(),
        oauth2_auto(),
        oauth2_manual(),
    ]
}

/// Key `n` as the caller generates it (the value itself stays in the vault): a distinct id,
/// prefix and hash for every `n`.
pub fn key(n: u32) -> NewApiKey {
    NewApiKey {
        id: format!("key-{n}"),
        prefix: format!("apk_{n:04}"),
        hash: format!("{n:064x}"),
    }
}

/// A simple application with a client_id (`weather-cid`), created at version 1: it may subscribe
/// to every plan.
pub fn app_with_client_id() -> Vec<ApplicationEvent> {
    Application::create(create_simple_with_client_id("weather-cid"), &policy()).unwrap()
}

/// A simple application without client_id: only API_KEY plans.
pub fn app_without_client_id() -> Vec<ApplicationEvent> {
    created(ApplicationType::Simple)
}

pub fn sub_created(id: &str, plan: &Plan) -> ApplicationEvent {
    ApplicationEvent::SubscriptionCreated(s::SubscriptionCreated {
        subscription_id: id.to_string(),
        api_id: plan.api_id.clone(),
        plan_id: plan.id.clone(),
        security: plan.security,
        validation: plan.validation,
    })
}

pub fn sub_accepted(id: &str) -> ApplicationEvent {
    ApplicationEvent::SubscriptionAccepted(s::SubscriptionAccepted {
        subscription_id: id.to_string(),
    })
}

pub fn sub_rejected(
    id: &str,
    reason: Option<&str>,
    archive_version: Option<i64>,
) -> ApplicationEvent {
    ApplicationEvent::SubscriptionRejected(s::SubscriptionRejected {
        subscription_id: id.to_string(),
        reason: reason.map(String::from),
        archive_version,
    })
}

pub fn sub_paused(id: &str) -> ApplicationEvent {
    ApplicationEvent::SubscriptionPaused(s::SubscriptionPaused {
        subscription_id: id.to_string(),
    })
}

pub fn sub_resumed(id: &str) -> ApplicationEvent {
    ApplicationEvent::SubscriptionResumed(s::SubscriptionResumed {
        subscription_id: id.to_string(),
    })
}

pub fn sub_closed(id: &str, archive_version: Option<i64>) -> ApplicationEvent {
    ApplicationEvent::SubscriptionClosed(s::SubscriptionClosed {
        subscription_id: id.to_string(),
        archive_version,
    })
}

pub fn sub_reopened(id: &str, restore_version: i64) -> ApplicationEvent {
    ApplicationEvent::SubscriptionReopened(s::SubscriptionReopened {
        subscription_id: id.to_string(),
        restore_version,
    })
}

pub fn key_issued(sub: &str, key: &NewApiKey) -> ApplicationEvent {
    ApplicationEvent::ApiKeyIssued(s::ApiKeyIssued {
        subscription_id: sub.to_string(),
        key_id: key.id.clone(),
        prefix: key.prefix.clone(),
        key_hash: key.hash.clone(),
    })
}

pub fn key_renewed(sub: &str, key_id: &str, expires_at: DateTime<Utc>) -> ApplicationEvent {
    ApplicationEvent::ApiKeyRenewed(s::ApiKeyRenewed {
        subscription_id: sub.to_string(),
        key_id: key_id.to_string(),
        expires_at,
    })
}

pub fn key_revoked(sub: &str, key_id: &str, archive_version: Option<i64>) -> ApplicationEvent {
    ApplicationEvent::ApiKeyRevoked(s::ApiKeyRevoked {
        subscription_id: sub.to_string(),
        key_id: key_id.to_string(),
        archive_version,
    })
}

pub fn hooks(list: &[Hook]) -> std::collections::BTreeSet<Hook> {
    list.iter().copied().collect()
}

/// A stand-in for a value the edge sealed: deterministic, like the vault's sealing (the domain
/// only carries and compares it).
pub fn sealed(value: &str) -> Personal {
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    Personal::sealed(format!("pd1.s{hex}")).expect("a sealed form")
}

pub fn notifications_updated(who: &str, list: &[Hook], email: Option<&str>) -> ApplicationEvent {
    ApplicationEvent::NotificationSettingsUpdated(s::NotificationSettingsUpdated {
        user: user(who),
        hooks: hooks(list),
        email: email.map(sealed),
    })
}

pub fn notifications_deleted(archive_version: Option<i64>) -> ApplicationEvent {
    ApplicationEvent::NotificationSettingsDeleted(s::NotificationSettingsDeleted {
        archive_version,
    })
}

/// `events` with more appended.
pub fn and(
    mut events: Vec<ApplicationEvent>,
    more: impl IntoIterator<Item = ApplicationEvent>,
) -> Vec<ApplicationEvent> {
    events.extend(more);
    events
}

/// The subscription `id` of `app`.
#[track_caller]
pub fn sub<'a>(app: &'a Application, id: &str) -> &'a Subscription {
    app.subscription(id)
        .unwrap_or_else(|| panic!("no subscription {id} in {:#?}", app.subscriptions))
}

/// The key `key_id` of subscription `sub_id`.
#[track_caller]
pub fn api_key<'a>(app: &'a Application, sub_id: &str, key_id: &str) -> &'a ApiKey {
    sub(app, sub_id)
        .api_keys
        .iter()
        .find(|k| k.id == key_id)
        .unwrap_or_else(|| panic!("no key {key_id} on {sub_id}"))
}

/// The subscriptions open for `plan_id`.
pub fn open_for(app: &Application, plan_id: &str) -> usize {
    app.subscriptions
        .iter()
        .filter(|s| s.plan_id == plan_id && s.status.is_open())
        .count()
}

pub fn subscription_claim(id: &str) -> UniqueClaim {
    UniqueClaim {
        scope: s::SUBSCRIPTION_SCOPE.to_string(),
        value: id.to_string(),
    }
}

pub fn key_claim(key: &NewApiKey) -> UniqueClaim {
    UniqueClaim {
        scope: s::API_KEY_SCOPE.to_string(),
        value: key.hash.clone(),
    }
}

/// An application's log, decided one command at a time (a longer story than given/when/then).
#[derive(Debug, Clone)]
pub struct Story {
    pub log: Vec<ApplicationEvent>,
    pub state: Option<Application>,
    pub version: i64,
}

impl Story {
    pub fn new(events: impl IntoIterator<Item = ApplicationEvent>) -> Self {
        let mut story = Story {
            log: vec![],
            state: None,
            version: 0,
        };
        story.apply(events.into_iter().collect());
        story
    }

    pub fn app(&self) -> &Application {
        self.state.as_ref().expect("no application")
    }

    /// Folds `events` (event `n` at `t(n)`) and returns them.
    pub fn apply(&mut self, events: Vec<ApplicationEvent>) -> Vec<ApplicationEvent> {
        let (state, version) = fold(self.state.take(), self.version, &events);
        self.state = state;
        self.version = version;
        self.log.extend(events.iter().cloned());
        events
    }

    /// Decides with `f`, which must succeed, and folds the events.
    #[track_caller]
    pub fn run(
        &mut self,
        f: impl FnOnce(&Application) -> Result<Vec<ApplicationEvent>, DomainError>,
    ) -> Vec<ApplicationEvent> {
        let events = f(self.app()).unwrap_or_else(|e| panic!("{}: {e:?}", e.code()));
        self.apply(events)
    }

    /// Decides with `f`, which must fail with `code`; nothing is folded.
    #[track_caller]
    pub fn refuse(
        &self,
        code: &str,
        f: impl FnOnce(&Application) -> Result<Vec<ApplicationEvent>, DomainError>,
    ) {
        match f(self.app()) {
            Ok(events) => panic!("expected {code}, got {events:#?}"),
            Err(e) => assert_eq!(e.code(), code, "{e:?}"),
        }
    }

    /// The stream version the next event gets.
    pub fn next_version(&self) -> i64 {
        self.version + 1
    }

    /// Runs a process manager's steps (`step` is `next_archive_step` or `next_restore_step` of
    /// one archive or restore) until it has nothing left to do; returns each step's events.
    #[track_caller]
    pub fn run_steps(
        &mut self,
        step: impl Fn(&Application) -> Option<Vec<ApplicationEvent>>,
    ) -> Vec<Vec<ApplicationEvent>> {
        let mut steps = Vec::new();
        while let Some(events) = step(self.app()) {
            assert!(!events.is_empty(), "a step without events never ends");
            assert!(steps.len() < 10_000, "the process manager does not finish");
            steps.push(self.apply(events));
        }
        steps
    }

    /// Archives, then runs the archive's steps to the end; returns the archive's version and
    /// the steps' events.
    #[track_caller]
    pub fn archive_fully(&mut self) -> (i64, Vec<Vec<ApplicationEvent>>) {
        self.run(|a| a.archive());
        let v = self.version;
        (v, self.run_steps(|a| a.next_archive_step(v)))
    }

    /// Restores (by `root`), then runs the restore's steps to the end.
    #[track_caller]
    pub fn restore_fully(&mut self) -> (i64, Vec<Vec<ApplicationEvent>>) {
        let events = self.run(|a| a.restore(&admin("root")));
        let v = self.version - events.len() as i64 + 1;
        (v, self.run_steps(|a| a.next_restore_step(v)))
    }
}
