//! `appreg vault reseal` (issue #20, item 9): after a master-key rotation (the new key current,
//! the old one in `secrets_previous_keys`), every value of the vault is sealed again under the
//! current key, so that the old key can be removed; running it again changes nothing.

use super::EXE;
use appreg_eventstore::Database;
use appreg_secrets::{Keyring, MasterKey, SecretStore};
use secrecy::{ExposeSecret, SecretString};
use std::process::Command;
use std::sync::Arc;

fn reseal(url: &str, current: &SecretString, previous: &[&SecretString]) -> (bool, String) {
    let previous: Vec<String> = previous
        .iter()
        .map(|k| format!("\"{}\"", k.expose_secret()))
        .collect();
    let out = Command::new(EXE)
        .args(["vault", "reseal"])
        .env("APPREG_DATABASE_URL", url)
        .env("APPREG_SECRETS_MASTER_KEY", current.expose_secret())
        .env(
            "APPREG_SECRETS_PREVIOUS_KEYS",
            format!("[{}]", previous.join(",")),
        )
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn vault_reseal_moves_every_value_to_the_current_key() {
    let url = appreg_test_support::postgres::fresh_postgres_url().await;
    let db = Database::connect(&url, 2).await.unwrap();
    db.migrate().await.unwrap();
    appreg_secrets::store::migrate(&db).await.unwrap();
    let old = MasterKey::generate("k2025", &mut rand::rngs::OsRng).unwrap();
    let old_config = old.to_config_string();
    let new_config = MasterKey::generate("k2026", &mut rand::rngs::OsRng)
        .unwrap()
        .to_config_string();
    let before = SecretStore::new(db.clone(), Arc::new(Keyring::new(old, vec![]).unwrap()));
    for i in 0..3 {
        before
            .put(
                &format!("application/{i}"),
                "client_secret",
                &SecretString::from(format!("secret-{i}")),
            )
            .await
            .unwrap();
    }

    let (ok, out) = reseal(&url, &new_config, &[&old_config]);
    assert!(ok, "{out}");
    assert!(out.contains("3 value(s) re-sealed under k2026"), "{out}");
    assert!(out.contains("the previous keys can be removed"), "{out}");
    assert!(!out.contains("secret-"), "no secret printed: {out}");
    let (ok, out) = reseal(&url, &new_config, &[&old_config]);
    assert!(
        ok && out.contains("0 value(s) re-sealed under k2026, 3 already"),
        "{out}"
    );

    // The old key removed from the configuration: every value still opens.
    let after = SecretStore::new(
        db.clone(),
        Arc::new(
            Keyring::new(
                MasterKey::parse(new_config.expose_secret()).unwrap(),
                vec![],
            )
            .unwrap(),
        ),
    );
    let got = after.get("application/2", "client_secret").await.unwrap();
    assert_eq!(got.unwrap().expose_secret(), "secret-2");
    db.close().await;
}
