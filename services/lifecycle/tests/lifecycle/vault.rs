//! Issue #20, item 9: the vault keeps no API key of an ended subscription. Every key revoked
//! (a subscription closed by a member, or ended by an archive) loses its sealed value in the
//! vault; the other secrets of the application stay. On PostgreSQL and SQLite.

use super::helpers::*;
use appreg_secrets::{Keyring, MasterKey, SecretStore};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;

async fn revoked_keys_leave_the_vault(t: TestDb) {
    appreg_secrets::store::migrate(&t.db).await.unwrap();
    let keyring = Keyring::new(
        MasterKey::generate("k1", &mut rand::rngs::OsRng).unwrap(),
        vec![],
    )
    .unwrap();
    let vault = SecretStore::new(t.db.clone(), Arc::new(keyring));
    let (id, subs) = populated(&t).await;
    // The key values the api sealed when it issued them (owner `api-keys/<application>`).
    let owner = format!("api-keys/{}", id.0);
    let app = t.app(id).await;
    let keys: Vec<String> = app
        .subscriptions
        .iter()
        .flat_map(|s| s.api_keys.iter().map(|k| k.id.clone()))
        .collect();
    assert_eq!(keys.len(), 4, "two renewed, one paused, one closed before");
    for key in &keys {
        vault
            .put(&owner, key, &SecretString::from(format!("apk_{key}")))
            .await
            .unwrap();
    }
    let client_owner = format!("application/{}", id.0);
    vault
        .put(&client_owner, "client_secret", &SecretString::from("cs"))
        .await
        .unwrap();

    t.archive(id, "req-archive").await;
    let manager = t.start(Duration::ZERO);
    t.wait_idle().await;
    let started = std::time::Instant::now();
    for key in &keys {
        while vault.get(&owner, key).await.unwrap().is_some() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the key {key} of an ended subscription ({:?}) is still in the vault",
                subs.open()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(vault
        .get(&client_owner, "client_secret")
        .await
        .unwrap()
        .is_some());
    manager.stop().await;
}

#[tokio::test]
async fn revoked_keys_leave_the_vault_on_postgres() {
    revoked_keys_leave_the_vault(TestDb::postgres().await).await;
}

#[tokio::test]
async fn revoked_keys_leave_the_vault_on_sqlite() {
    revoked_keys_leave_the_vault(TestDb::sqlite().await).await;
}
