//! Property tests: random command sequences decided and folded keep the aggregate's invariants;
//! random creations are accepted exactly when an independent statement of the rules says so.

use crate::support::*;
use appreg_domain::application::claim_changes;
use appreg_domain::*;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use std::collections::HashSet;

const CASES: u32 = 256;

/// How a redirect URI of the pool relates to the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UriKind {
    Https,
    Loopback,
    Http,
    Custom,
}

const URI_POOL: [(&str, UriKind); 8] = [
    ("https://a.example/cb", UriKind::Https),
    ("https://b.example/cb?x=1", UriKind::Https),
    ("http://localhost:8080/cb", UriKind::Loopback),
    ("http://127.0.0.1/cb", UriKind::Loopback),
    ("http://[::1]:3000/cb", UriKind::Loopback),
    ("http://c.example/cb", UriKind::Http),
    ("myapp://cb", UriKind::Custom),
    ("com.example.app:/oauth2redirect", UriKind::Custom),
];

/// The URIs every redirecting type accepts under every policy.
const SAFE_URIS: [&str; 5] = [
    "https://a.example/cb",
    "https://b.example/cb?x=1",
    "http://localhost:8080/cb",
    "http://127.0.0.1/cb",
    "http://[::1]:3000/cb",
];

const NAMES: [&str; 4] = ["Weather", "Weather 2", "  Météo  ", "天気"];
const TEXTS: [&str; 3] = ["", "some text", "other"];
const CLIENT_IDS: [&str; 3] = ["cid-a", "cid-b", "クライアント"];
const HTTP_URLS: [&str; 2] = ["https://app.example", "http://app.example/logo.png"];
const USERS: [&str; 4] = ["alice", "root", "ops", "olivia"];

fn kind_of(u: &RedirectUri) -> UriKind {
    URI_POOL.iter().find(|(s, _)| *s == u.as_str()).unwrap().1
}

fn arb_type() -> impl Strategy<Value = ApplicationType> {
    select(ApplicationType::ALL.to_vec())
}

fn arb_patch<T: Clone + std::fmt::Debug + 'static>(
    values: Vec<T>,
    keep_weight: u32,
) -> impl Strategy<Value = Patch<T>> {
    prop_oneof![
        keep_weight => Just(Patch::Keep),
        1 => Just(Patch::Clear),
        2 => select(values).prop_map(Patch::Set),
    ]
}

fn all_of<T: Clone>(list: &[&str], parse: impl Fn(&str) -> T) -> Vec<T> {
    list.iter().map(|s| parse(s)).collect()
}

/// A creation that the rules accept under `policy()` with either http setting.
fn arb_valid_create() -> impl Strategy<Value = CreateApplication> {
    arb_type().prop_flat_map(|t| {
        let allowed = t.allowed_grant_types().to_vec();
        let n = allowed.len();
        (
            select(NAMES.to_vec()),
            prop::option::of(select(CLIENT_IDS.to_vec())),
            prop::option::of(select(TEXTS.to_vec())),
            prop::collection::vec(select(SAFE_URIS.to_vec()), 1..5),
            subsequence(allowed, 0..=n),
            prop::option::of(select(HTTP_URLS.to_vec())),
            select(USERS.to_vec()),
        )
            .prop_map(move |(n, c, d, u, mut g, cu, owner)| {
                if !g.is_empty() {
                    for m in t.mandatory_grant_types() {
                        if !g.contains(m) {
                            g.push(*m);
                        }
                    }
                }
                CreateApplication {
                    name: name(n),
                    description: d.map(text),
                    client_id: c.filter(|_| !t.is_oauth()).map(cid),
                    redirect_uris: if t.requires_redirect_uris() {
                        uris(&u)
                    } else {
                        vec![]
                    },
                    grant_types: g,
                    client_uri: cu.filter(|_| t.is_oauth()).map(url),
                    owner: user(owner),
                    ..create_cmd(t)
                }
            })
    })
}

/// Any update: every value valid on its own, the combination often invalid for the type.
fn arb_any_update() -> impl Strategy<Value = UpdateApplication> {
    let uri_pool: Vec<&str> = URI_POOL.iter().map(|(s, _)| *s).collect();
    (
        prop::option::of(select(NAMES.to_vec())),
        arb_patch(all_of(&TEXTS, text), 2),
        arb_patch(all_of(&TEXTS, text), 2),
        arb_patch(all_of(&CLIENT_IDS, cid), 4),
        prop::option::of(prop::collection::vec(select(uri_pool), 0..4)),
        prop::option::of(subsequence(GrantType::ALL.to_vec(), 0..=3)),
        arb_patch(all_of(&HTTP_URLS, url), 3),
        arb_patch(all_of(&HTTP_URLS, url), 3),
    )
        .prop_map(
            |(n, description, domain, client_id, u, g, client_uri, logo_uri)| UpdateApplication {
                name: n.map(name),
                description,
                domain,
                client_id,
                redirect_uris: u.map(|u| uris(&u)),
                grant_types: g,
                client_uri,
                logo_uri,
            },
        )
}

/// An update the rules accept for an active application of type `t`.
fn arb_valid_update(t: ApplicationType) -> impl Strategy<Value = UpdateApplication> {
    let allowed = t.allowed_grant_types().to_vec();
    let n = allowed.len();
    (
        prop::option::of(select(NAMES.to_vec())),
        arb_patch(all_of(&TEXTS, text), 2),
        arb_patch(all_of(&TEXTS, text), 2),
        arb_patch(all_of(&CLIENT_IDS, cid), 2),
        prop::option::of(prop::collection::vec(select(SAFE_URIS.to_vec()), 1..4)),
        prop::option::of(subsequence(allowed, 0..=n)),
        arb_patch(all_of(&HTTP_URLS, url), 2),
        arb_patch(all_of(&HTTP_URLS, url), 2),
    )
        .prop_map(
            move |(n, description, domain, client_id, u, g, client_uri, logo_uri)| {
                let oauth = t.is_oauth();
                UpdateApplication {
                    name: n.map(name),
                    description,
                    domain,
                    client_id: if oauth { Patch::Keep } else { client_id },
                    redirect_uris: u.filter(|_| t.requires_redirect_uris()).map(|u| uris(&u)),
                    grant_types: g.filter(|_| oauth).map(|mut g| {
                        if !g.is_empty() {
                            for m in t.mandatory_grant_types() {
                                if !g.contains(m) {
                                    g.push(*m);
                                }
                            }
                        }
                        g
                    }),
                    client_uri: if oauth { client_uri } else { Patch::Keep },
                    logo_uri: if oauth { logo_uri } else { Patch::Clear },
                }
            },
        )
}

fn arb_command(t: ApplicationType) -> impl Strategy<Value = Command> {
    prop_oneof![
        5 => arb_valid_update(t).prop_map(Command::Update),
        2 => arb_any_update().prop_map(Command::Update),
        2 => Just(Command::Archive),
        2 => select(USERS.to_vec()).prop_map(|u| Command::Restore(admin(u))),
        1 => select(USERS.to_vec()).prop_map(|u| Command::Restore(member(u))),
    ]
}

/// A valid creation, then commands for an application of its type.
fn arb_scenario() -> impl Strategy<Value = (CreateApplication, Vec<Command>)> {
    arb_valid_create().prop_flat_map(|c| {
        let t = c.app_type;
        (Just(c), prop::collection::vec(arb_command(t), 0..24))
    })
}

/// The invariants of one state.
fn check_invariants(
    app: &Application,
    version: i64,
    held: &HashSet<UniqueClaim>,
) -> Result<(), TestCaseError> {
    let t = app.app_type;
    // Primary owner: at most one, exactly one while ACTIVE.
    let po = primary_owners(app);
    prop_assert!(po.len() <= 1, "primary owners {po:?}");
    match app.status {
        ApplicationStatus::Active => {
            prop_assert_eq!(po.len(), 1, "an active application without primary owner");
            prop_assert_eq!(app.primary_owner(), po.first());
        }
        // The archive dropped the primary-owner link.
        ApplicationStatus::Archived => prop_assert_eq!(app.primary_owner(), None),
    }
    // OAuth settings.
    if t.is_oauth() {
        prop_assert_eq!(&app.client_id, &None);
        prop_assert!(app.registration.is_some());
        let o = app
            .oauth
            .as_ref()
            .expect("an OAuth application without OAuth settings");
        if app.status == ApplicationStatus::Active {
            for m in t.mandatory_grant_types() {
                prop_assert!(o.grant_types.contains(m), "{t:?} lacks {m:?}: {o:?}");
            }
            for g in &o.grant_types {
                prop_assert!(t.allowed_grant_types().contains(g), "{t:?} has {g:?}");
            }
        }
        prop_assert!(!o.grant_types.is_empty());
        prop_assert!(o.grant_types.windows(2).all(|w| w[0] < w[1]), "{o:?}");
        if t.requires_redirect_uris() {
            prop_assert!((1..=20).contains(&o.redirect_uris.len()), "{o:?}");
        } else {
            prop_assert!(o.redirect_uris.is_empty());
        }
        let distinct: HashSet<_> = o.redirect_uris.iter().collect();
        prop_assert_eq!(distinct.len(), o.redirect_uris.len());
        for u in &o.redirect_uris {
            let k = kind_of(u);
            prop_assert!(
                k != UriKind::Custom || t == ApplicationType::Native,
                "{u:?}"
            );
        }
        // Response types are always the computed ones.
        prop_assert_eq!(&o.response_types, &ResponseType::for_grants(&o.grant_types));
    } else {
        prop_assert_eq!(&app.oauth, &None);
        prop_assert_eq!(&app.registration, &None);
    }
    // Version.
    prop_assert_eq!(app.version, version);
    prop_assert_eq!(app.updated_at, t_at(version));
    // The claim held is the state's.
    let expected: HashSet<UniqueClaim> = app.client_id_claim().into_iter().collect();
    prop_assert_eq!(held, &expected);
    Ok(())
}

fn t_at(version: i64) -> chrono::DateTime<chrono::Utc> {
    t(version)
}

/// Decides `cmd` against `state`, checks what the decision must be, folds the events.
fn step(
    policy: &Policy,
    state: &mut Option<Application>,
    version: &mut i64,
    held: &mut HashSet<UniqueClaim>,
    log: &mut Vec<ApplicationEvent>,
    cmd: Command,
) -> Result<(), TestCaseError> {
    let before = state.clone();
    let result = decide(before.as_ref(), cmd.clone(), policy);
    let status = before.as_ref().map(|a| a.status);
    // The outcome the rules dictate, where they dictate one.
    match (&cmd, status, &result) {
        (Command::Create(c), None, r) => {
            prop_assert!(r.is_ok(), "a valid creation was refused: {r:?}");
            let n = r.as_ref().unwrap().len();
            prop_assert_eq!(n, if c.app_type.is_oauth() { 2 } else { 1 });
        }
        (Command::Update(_), Some(ApplicationStatus::Archived), r) => {
            prop_assert_eq!(
                r.as_ref().map_err(DomainError::code),
                Err("application.archived")
            );
        }
        (Command::Update(_), Some(ApplicationStatus::Active), Err(e)) => {
            prop_assert_eq!(e.code(), "validation.failed");
        }
        (Command::Update(_), Some(ApplicationStatus::Active), Ok(events)) => {
            prop_assert!(events.len() <= 1);
            if let [ApplicationEvent::ApplicationUpdated(u)] = events.as_slice() {
                prop_assert!(!u.changed.is_empty());
            }
        }
        (Command::Archive, Some(ApplicationStatus::Active), r) => {
            let former = before.as_ref().unwrap().primary_owner().cloned();
            prop_assert_eq!(r, &Ok(vec![archived(former)]));
        }
        (Command::Archive, Some(ApplicationStatus::Archived), r) => {
            prop_assert_eq!(r, &Err(DomainError::Archived));
        }
        (Command::Restore(a), Some(_), Err(DomainError::AdminOnly)) => prop_assert!(!a.admin),
        (Command::Restore(a), Some(ApplicationStatus::Active), r) if a.admin => {
            prop_assert_eq!(r, &Err(DomainError::NotArchived));
        }
        (Command::Restore(a), Some(ApplicationStatus::Archived), r) if a.admin => {
            let app = before.as_ref().unwrap();
            let mut expected = vec![restored(a.user.clone())];
            // No saga answers here: an OAuth application is still registering, and asks again.
            if let Some(reg) = &app.registration {
                expected.push(ApplicationEvent::DcrRegistrationRequested(
                    appreg_domain::application::DcrRegistrationRequested {
                        provider_id: app.provider_id.clone(),
                        attempt: reg.attempt + 1,
                        reason: appreg_domain::application::RegistrationReason::Restored,
                    },
                ));
            }
            prop_assert_eq!(r, &Ok(expected));
        }
        (cmd, status, r) => prop_assert!(false, "unexpected {cmd:?} on {status:?}: {r:?}"),
    }
    let Ok(events) = result else {
        return Ok(());
    };

    let (after, v) = fold(before.clone(), *version, &events);
    prop_assert_eq!(v, *version + events.len() as i64);
    let (claim, release) = claim_changes(before.as_ref(), after.as_ref());
    for r in release {
        prop_assert!(held.remove(&r), "released {r:?}, which was not held");
    }
    for c in claim {
        prop_assert!(held.insert(c.clone()), "claimed {c:?} twice");
    }
    let app = after
        .clone()
        .expect("no application after a successful decision");
    check_invariants(&app, v, held)?;
    if let Command::Restore(a) = &cmd {
        prop_assert_eq!(app.role_of(&a.user), Some(Role::PrimaryOwner));
    }

    // Deciding the same update again changes nothing.
    if let Command::Update(u) = &cmd {
        prop_assert_eq!(app.update(u.clone(), policy), Ok(vec![]));
    }

    log.extend(events);
    *state = after;
    *version = v;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_command_sequences_keep_the_invariants(
        (create, commands) in arb_scenario(),
        allow_http in any::<bool>(),
    ) {
        let policy = Policy { allow_http_redirect_uris: allow_http, ..policy() };
        let mut state = None;
        let mut version = 0;
        let mut held = HashSet::new();
        let mut log = Vec::new();
        step(&policy, &mut state, &mut version, &mut held, &mut log, Command::Create(create))?;
        for cmd in commands {
            step(&policy, &mut state, &mut version, &mut held, &mut log, cmd)?;
        }
        // The log, stored and read back, rebuilds the same state.
        prop_assert_eq!(log.len() as i64, version);
        let replayed: Vec<ApplicationEvent> = log
            .iter()
            .map(|e| ApplicationEvent::decode(e.event_type(), e.schema_version(), e.data()).unwrap())
            .collect();
        prop_assert_eq!(&replayed, &log);
        let (rebuilt, v) = fold(None, 0, &replayed);
        prop_assert_eq!(v, version);
        prop_assert_eq!(rebuilt, state);
    }
}

// --- Creation against an independent statement of the rules -----------------------------

#[derive(Debug, Clone)]
struct RawCreate {
    t: ApplicationType,
    client_id: bool,
    uris: Vec<usize>,
    grants: Vec<GrantType>,
    client_uri: bool,
    allowed_types: [bool; 5],
    dcr_enabled: bool,
    allow_http: bool,
}

fn arb_raw_create() -> impl Strategy<Value = RawCreate> {
    (
        arb_type(),
        prop::bool::weighted(0.2),
        prop_oneof![Just(vec![]), prop::collection::vec(0..URI_POOL.len(), 1..5),],
        prop_oneof![
            Just(vec![]),
            prop::collection::vec(select(GrantType::ALL.to_vec()), 1..4),
        ],
        prop::bool::weighted(0.2),
        prop::array::uniform5(prop::bool::weighted(0.95)),
        prop::bool::weighted(0.9),
        any::<bool>(),
    )
        .prop_map(
            |(t, client_id, uris, grants, client_uri, allowed_types, dcr_enabled, allow_http)| {
                RawCreate {
                    t,
                    client_id,
                    uris,
                    grants,
                    client_uri,
                    allowed_types,
                    dcr_enabled,
                    allow_http,
                }
            },
        )
}

/// DESIGN §1, restated: is this creation acceptable?
fn design_accepts(r: &RawCreate) -> bool {
    use ApplicationType::*;
    let type_on = r.allowed_types[ApplicationType::ALL.iter().position(|t| *t == r.t).unwrap()];
    if !type_on || (r.t != Simple && !r.dcr_enabled) {
        return false;
    }
    if r.t == Simple {
        return r.uris.is_empty() && r.grants.is_empty() && !r.client_uri;
    }
    if r.client_id {
        return false;
    }
    let redirecting = matches!(r.t, Browser | Web | Native);
    let uris_ok = if redirecting {
        !r.uris.is_empty()
            && r.uris.iter().all(|i| match URI_POOL[*i].1 {
                UriKind::Https | UriKind::Loopback => true,
                UriKind::Http => r.allow_http,
                UriKind::Custom => r.t == Native,
            })
    } else {
        r.uris.is_empty()
    };
    let (allowed, mandatory): (&[GrantType], &[GrantType]) = match r.t {
        Browser => (&[AC, IMPLICIT], &[]),
        Web => (&[AC, RT, IMPLICIT], &[AC]),
        Native => (&[AC, RT, PASSWORD, IMPLICIT], &[AC]),
        BackendToBackend => (&[CC], &[CC]),
        Simple => unreachable!(),
    };
    let grants_ok = r.grants.is_empty()
        || (r.grants.iter().all(|g| allowed.contains(g))
            && mandatory.iter().all(|m| r.grants.contains(m)));
    uris_ok && grants_ok
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn creation_is_accepted_exactly_when_the_rules_allow_it(r in arb_raw_create()) {
        let [simple, browser, web, native, backend_to_backend] = r.allowed_types;
        let policy = Policy {
            settings: ClientRegistrationSettings {
                allowed_types: AllowedTypes { simple, browser, web, native, backend_to_backend },
                dcr_enabled: r.dcr_enabled,
            },
            allow_http_redirect_uris: r.allow_http,
        };
        let raw_uris: Vec<&str> = r.uris.iter().map(|i| URI_POOL[*i].0).collect();
        let cmd = CreateApplication {
            client_id: r.client_id.then(|| cid("chosen")),
            redirect_uris: uris(&raw_uris),
            grant_types: r.grants.clone(),
            client_uri: r.client_uri.then(|| url("https://app.example")),
            ..create_cmd(r.t)
        };
        let result = Application::create(cmd, &policy);
        prop_assert_eq!(result.is_ok(), design_accepts(&r), "{:?}", result);
        match result {
            Err(DomainError::Invalid(errors)) => prop_assert!(!errors.is_empty()),
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
            Ok(events) => {
                let (state, _) = fold(None, 0, &events);
                let app = state.unwrap();
                if let Some(o) = &app.oauth {
                    // Deduplicated in order; grants sorted, defaults when none.
                    let mut want_uris: Vec<&str> = Vec::new();
                    for u in &raw_uris {
                        if !want_uris.contains(u) {
                            want_uris.push(u);
                        }
                    }
                    prop_assert_eq!(&o.redirect_uris, &uris(&want_uris));
                    let mut want: Vec<GrantType> = if r.grants.is_empty() {
                        r.t.default_grant_types().to_vec()
                    } else {
                        r.grants.clone()
                    };
                    want.sort();
                    want.dedup();
                    prop_assert_eq!(&o.grant_types, &want);
                    prop_assert_eq!(&o.response_types, &ResponseType::for_grants(&want));
                }
            }
        }
    }
}
