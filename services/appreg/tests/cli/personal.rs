//! `appreg migrate`'s one rewrite of the log: events recorded before personal data was sealed
//! (plaintext names and e-mail addresses, schema version 1) are rewritten sealed, once; the
//! rewrite is recorded; the database holds the plaintext nowhere afterwards (pg_dump), and the
//! vault's key opens what it sealed.

use super::EXE;
use appreg_eventstore::{AppendRequest, Database, NewEvent};
use std::process::Command;

const NAME: &str = "Legacy Plaintext-Wombat";
const EMAIL: &str = "wombat.legacy5531@example.org";

fn migrate(db_url: &str, key: Option<&str>) -> String {
    let mut command = Command::new(EXE);
    command
        .args(["migrate", "--database-url", db_url])
        .env_remove("APPREG_SECRETS_MASTER_KEY");
    if let Some(key) = key {
        command.env("APPREG_SECRETS_MASTER_KEY", key);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn pg_dump(db_url: &str) -> String {
    let out = Command::new("pg_dump")
        .args(["--no-owner", "--dbname", db_url])
        .output()
        .expect("pg_dump must be installed (postgresql-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn migrate_seals_the_plaintext_of_older_events_once() {
    let db_url = appreg_test_support::postgres::fresh_postgres_url().await;
    // Without the vault's key: the tables, and nothing rewritten or recorded.
    assert!(migrate(&db_url, None).contains("not sealed yet"));
    let db = Database::connect(&db_url, 2).await.unwrap();
    let store = db.event_store().await.unwrap();
    // What an older appreg wrote: a first visit in plaintext, version 1.
    let metadata = serde_json::json!({"environment": "DEFAULT", "actor": "wombat",
        "actor_name": NAME, "actor_admin": false, "correlation_id": "c", "causation_id": "c",
        "at": "2026-01-01T00:00:00Z"});
    store
        .append(AppendRequest {
            stream_id: "user-DEFAULT/wombat".into(),
            stream_type: "user".into(),
            expected_version: 0,
            events: vec![NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: "UserFirstSeen".into(),
                schema_version: 1,
                data: serde_json::json!({"user": "wombat", "name": NAME, "email": EMAIL,
                    "admin": false, "default_application": null}),
                metadata,
                recorded_at: chrono::Utc::now(),
            }],
            claims: vec![],
            releases: vec![],
        })
        .await
        .unwrap();
    assert!(pg_dump(&db_url).contains(NAME));

    let key = appreg_secrets::MasterKey::generate("k1", &mut rand::rngs::OsRng).unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key.to_config_string()).to_string();
    let out = migrate(&db_url, Some(&key));
    assert!(out.contains("1 event(s) rewritten"), "{out}");
    let dump = pg_dump(&db_url);
    assert!(
        !dump.contains(NAME) && !dump.contains(EMAIL),
        "plaintext left"
    );
    assert!(
        dump.contains("personal-data-sealed"),
        "the rewrite is recorded"
    );

    // The same event, sealed, in version 2; the key opens it.
    let events = store
        .read_stream("user-DEFAULT/wombat", 0, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].schema_version, 2);
    let keyring = appreg_secrets::Keyring::parse(&key, []).unwrap();
    let keys = appreg_secrets::PersonalKeys::new(appreg_secrets::SecretStore::new(
        db.clone(),
        std::sync::Arc::new(keyring),
    ));
    let open = |value: &serde_json::Value, field: &'static str| {
        let keys = keys.clone();
        let value = value.as_str().unwrap().to_string();
        async move { keys.open("wombat", field, &value).await.unwrap() }
    };
    assert_eq!(
        open(&events[0].data["name"], "name").await.as_deref(),
        Some(NAME)
    );
    assert_eq!(
        open(&events[0].data["email"], "email").await.as_deref(),
        Some(EMAIL)
    );
    assert_eq!(
        open(&events[0].metadata["actor_name"], "name")
            .await
            .as_deref(),
        Some(NAME)
    );
    // The read model was rebuilt from the sealed log.
    let row: (Option<String>,) =
        sqlx::query_as("SELECT name FROM rm_users WHERE user_id = 'wombat'")
            .fetch_one(match &db {
                Database::Postgres(pool) => pool,
                Database::Sqlite(_) => unreachable!(),
            })
            .await
            .unwrap();
    assert!(row.0.unwrap().starts_with("pd1."));

    // Once: a second run rewrites nothing.
    let out = migrate(&db_url, Some(&key));
    assert!(out.contains("the log's rewrite is recorded"), "{out}");
}
