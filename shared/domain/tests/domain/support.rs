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
