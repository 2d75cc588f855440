//! Personal data (crypto-shredding): names and e-mail addresses are sealed in the log and the
//! read model (a byte scan of the whole database finds them nowhere, even before an erasure),
//! opened for the readers allowed to see them, and unreadable everywhere once the user is erased
//! (`POST /v1/users/{user}/_erase`): no answer carries them, the database holds them nowhere, and
//! the user's applications stay intact and auditable.

use crate::helpers::{Resp, TestApp};
use crate::on_both;
use serde_json::{json, Value};

const NAME: &str = "Zyxwvut Erasable-Quokka";
const EMAIL: &str = "zyx.quokka7781@example.org";
const NOTIFY_EMAIL: &str = "quokka.alerts7781@example.net";

/// Every byte the database holds: a `pg_dump` of the test's PostgreSQL database, or the SQLite
/// file and its write-ahead log. Fails (never skips) when `pg_dump` cannot run.
fn database_bytes(app: &TestApp) -> Vec<u8> {
    if let Some(rest) = app.url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap();
        let mut bytes = std::fs::read(path).expect("the SQLite file");
        for suffix in ["-wal", "-journal"] {
            if let Ok(more) = std::fs::read(format!("{path}{suffix}")) {
                bytes.extend(more);
            }
        }
        assert!(bytes.len() > 10_000, "the SQLite file is implausibly small");
        return bytes;
    }
    let out = std::process::Command::new("pg_dump")
        .arg("--no-owner")
        .arg("--dbname")
        .arg(&app.url)
        .output()
        .expect("pg_dump must be installed (postgresql-client)");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("COPY public.events"),
        "pg_dump did not dump the event log"
    );
    out.stdout
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Asserts that none of the personal values is in `bytes`.
fn assert_nowhere(bytes: &[u8], what: &str) {
    for value in [
        NAME,
        EMAIL,
        NOTIFY_EMAIL,
        "Zyxwvut",
        "quokka7781",
        "alerts7781",
    ] {
        assert!(!contains(bytes, value), "{value:?} found in {what}");
    }
}

/// The answers a test received, kept for the byte scan.
#[derive(Default)]
struct Answers(Vec<u8>);

impl Answers {
    fn keep(&mut self, r: Resp) -> Resp {
        self.0.extend(r.body.to_string().as_bytes());
        for (name, value) in &r.headers {
            self.0.extend(name.as_str().as_bytes());
            self.0.extend(value.as_bytes());
        }
        r
    }
}

fn item<'a>(items: &'a Value, event_type: &str) -> &'a Value {
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == event_type)
        .unwrap_or_else(|| panic!("no {event_type} in {items}"))
}

async fn an_erased_user_is_unreadable_everywhere_and_their_applications_stay(app: TestApp) {
    let admin = app.token("org-admin", true);
    let mut claims = app.claims("quokka", false);
    claims.name = Some(NAME.into());
    claims.email = Some(EMAIL.into());
    let quokka = app.sign(claims);
    let id = app
        .create_simple_in("DEFAULT", &quokka, "Kept application")
        .await;
    let app_path = format!("applications/{id}");
    app.put(
        &format!("{app_path}/notifications"),
        &quokka,
        json!({"hooks": ["SUBSCRIPTION_CLOSED"], "email": NOTIFY_EMAIL}),
    )
    .await
    .assert_status(200);
    app.post(
        &format!("{app_path}/members"),
        &quokka,
        json!({"user": "otto", "role": "OWNER"}),
    )
    .await
    .assert_status(201);

    // Sealed at rest: the database holds neither the name nor an address.
    assert_nowhere(&database_bytes(&app), "the database before the erasure");
    // Opened for the readers allowed to see them.
    let members = app.get(&format!("{app_path}/members"), &admin).await;
    let me = members.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "quokka")
        .cloned()
        .unwrap();
    assert_eq!(
        (me["name"].as_str(), me["email"].as_str()),
        (Some(NAME), Some(EMAIL))
    );
    let audit = app.get("audit?limit=1000", &admin).await;
    audit.assert_status(200);
    let seen = item(&audit.body["items"], "UserFirstSeen");
    assert_eq!(seen["data"]["name"], NAME, "{seen}");
    assert_eq!(seen["data"]["email"], EMAIL);
    assert_eq!(seen["metadata"]["actor_name"], NAME);
    let notifications = app.get(&format!("{app_path}/notifications"), &quokka).await;
    assert_eq!(notifications.body["items"][0]["email"], NOTIFY_EMAIL);
    let history = app.get(&format!("{app_path}/history"), &quokka).await;
    assert_eq!(
        item(&history.body["items"], "NotificationSettingsUpdated")["data"]["email"],
        NOTIFY_EMAIL
    );

    // From here on, every answer is kept for the scan.
    let mut answers = Answers::default();
    // Not an organisation administrator: 403, also for themself; an unknown user: 404.
    let otto = app.token("otto", false);
    answers
        .keep(app.post("/v1/users/quokka/_erase", &otto, json!({})).await)
        .assert_problem(403, "permission.organisation_admin_only");
    answers
        .keep(
            app.post("/v1/users/quokka/_erase", &quokka, json!({}))
                .await,
        )
        .assert_problem(403, "permission.organisation_admin_only");
    let env_admin = app.admin_of("env-admin", &["DEFAULT"]);
    answers
        .keep(
            app.post("/v1/users/quokka/_erase", &env_admin, json!({}))
                .await,
        )
        .assert_problem(403, "permission.organisation_admin_only");
    answers
        .keep(
            app.post("/v1/users/nobody-at-all/_erase", &admin, json!({}))
                .await,
        )
        .assert_problem(404, "user.not_found");
    answers
        .keep(app.get("/v1/users/nobody-at-all", &admin).await)
        .assert_problem(404, "user.not_found");

    let before = app.event_count().await;
    let erased = answers.keep(app.post("/v1/users/quokka/_erase", &admin, json!({})).await);
    erased.assert_status(202);
    let erased_at = erased.body["erased_at"].as_str().unwrap().to_string();
    assert_eq!(erased.body["id"], "quokka");
    assert_eq!(erased.body["environments"], json!(["DEFAULT"]));
    // UserErased (on the user's stream), and the notification settings deleted, through the
    // command path.
    app.assert_appended(before, 1, "an erasure").await;
    assert_eq!(app.count_events_of_type("UserErased").await, 1);
    // Idempotent: the same answer, nothing appended.
    let again = answers.keep(app.post("/v1/users/quokka/_erase", &admin, json!({})).await);
    again.assert_status(202);
    assert_eq!(again.body["erased_at"], erased_at.as_str());
    app.assert_unchanged(before + 1, "a second erasure").await;
    assert_eq!(app.count_events_of_type("UserErased").await, 1);
    let token = erased
        .header("x-consistency-token")
        .expect("a consistency token");

    let record = answers.keep(app.get("/v1/users/quokka", &admin).await);
    record.assert_status(200);
    assert_eq!(record.body["erased_at"], erased_at.as_str());

    // The read model dropped the profile; the settings are gone.
    let members = answers.keep(
        app.send(
            app.request(
                reqwest::Method::GET,
                &format!("{app_path}/members"),
                Some(&admin),
            )
            .header("x-consistency-token", &token),
        )
        .await,
    );
    let me = members.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "quokka")
        .cloned()
        .unwrap();
    assert_eq!(
        me,
        json!({"user": "quokka", "name": null, "email": null, "role": "PRIMARY_OWNER"})
    );
    let notifications = answers.keep(app.get(&format!("{app_path}/notifications"), &admin).await);
    assert_eq!(notifications.body["items"], json!([]));
    let users = answers.keep(app.get("users?q=quokka", &admin).await);
    assert_eq!(users.body["items"], json!([{"id": "quokka", "name": null}]));
    let users = answers.keep(app.get("users?q=zyx", &admin).await);
    assert_eq!(users.body["items"], json!([]));

    // The audit trail keeps the subject id and says `erased: true`.
    let audit = answers.keep(app.get("audit?limit=1000", &admin).await);
    let seen = item(&audit.body["items"], "UserFirstSeen");
    assert_eq!(seen["data"]["user"], "quokka");
    assert_eq!(seen["data"]["erased"], true);
    assert_eq!(seen["data"]["name"], Value::Null);
    assert_eq!(seen["metadata"]["actor"], "quokka");
    assert_eq!(seen["metadata"]["actor_name"], Value::Null);
    assert_eq!(seen["metadata"]["erased"], true);
    let gone = item(&audit.body["items"], "UserErased");
    assert_eq!(gone["data"], json!({"user": "quokka", "erased": true}));
    assert_eq!(gone["metadata"]["actor"], "org-admin");

    // The application is intact and auditable: its state, its members and its whole history.
    let kept = answers.keep(app.get(&app_path, &admin).await);
    kept.assert_status(200);
    assert_eq!(kept.body["name"], "Kept application");
    assert_eq!(kept.body["owner"]["id"], "quokka");
    assert_eq!(kept.body["owner"]["name"], Value::Null);
    let history = answers.keep(app.get(&format!("{app_path}/history"), &admin).await);
    let items = history.body["items"].as_array().unwrap();
    let types: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "ApplicationCreated",
            "NotificationSettingsUpdated",
            "MemberAdded",
            "NotificationSettingsUpdated"
        ]
    );
    assert_eq!(items[0]["actor"], "quokka");
    assert_eq!(items[1]["data"]["user"], "quokka");
    assert_eq!(items[1]["data"]["email"], Value::Null);
    assert_eq!(items[1]["data"]["erased"], true);
    assert_eq!(items[3]["data"]["hooks"], json!([]));
    assert_eq!(items[3]["actor"], "org-admin");
    // The other owner still works with it.
    answers
        .keep(
            app.put(&app_path, &otto, json!({"name": "Renamed by Otto"}))
                .await,
        )
        .assert_status(200);

    assert_nowhere(&answers.0, "the answers after the erasure");
    assert_nowhere(&database_bytes(&app), "the database after the erasure");
}

on_both!(an_erased_user_is_unreadable_everywhere_and_their_applications_stay);
