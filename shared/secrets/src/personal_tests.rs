use super::*;
use crate::{Keyring, MasterKey};

fn key(byte: u8) -> DataKey {
    DataKey::from_bytes(&[byte; 32]).unwrap()
}

#[test]
fn a_sealed_value_opens_for_its_subject_and_field_only() {
    let k = key(7);
    let sealed = k.seal("alice", "name", "Alice Liddell").unwrap();
    assert!(is_sealed(&sealed), "{sealed}");
    assert!(!sealed.contains("Alice"));
    assert_eq!(k.open("alice", "name", &sealed).unwrap(), "Alice Liddell");
    assert!(matches!(
        k.open("bob", "name", &sealed),
        Err(PersonalError::Tampered)
    ));
    assert!(matches!(
        k.open("alice", "email", &sealed),
        Err(PersonalError::Tampered)
    ));
    assert!(matches!(
        key(8).open("alice", "name", &sealed),
        Err(PersonalError::Tampered)
    ));
    assert!(matches!(
        k.open("alice", "name", "pd1.AAAA"),
        Err(PersonalError::Malformed)
    ));
    assert!(matches!(
        k.open("alice", "name", "Alice"),
        Err(PersonalError::Malformed)
    ));
}

#[test]
fn sealing_is_deterministic_per_value_and_differs_between_values() {
    let k = key(7);
    let a = k.seal("alice", "email", "a@example.org").unwrap();
    assert_eq!(a, k.seal("alice", "email", "a@example.org").unwrap());
    assert_ne!(a, k.seal("alice", "email", "b@example.org").unwrap());
    assert_ne!(a, k.seal("carol", "email", "a@example.org").unwrap());
    assert_ne!(a, key(9).seal("alice", "email", "a@example.org").unwrap());
}

#[test]
fn an_altered_value_does_not_open() {
    let k = key(7);
    let sealed = k.seal("alice", "name", "Alice").unwrap();
    let mut bytes = URL_SAFE_NO_PAD
        .decode(sealed.strip_prefix(SEALED_PREFIX).unwrap())
        .unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let altered = format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
    assert!(matches!(
        k.open("alice", "name", &altered),
        Err(PersonalError::Tampered)
    ));
    // The nonce of another plaintext: GCM under the same key fails too.
    let mut swapped = bytes.clone();
    swapped[0] ^= 1;
    let swapped = format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&swapped));
    assert!(k.open("alice", "name", &swapped).is_err());
}

async fn lifecycle(db: Database) {
    db.migrate().await.unwrap();
    crate::store::migrate(&db).await.unwrap();
    let keyring =
        Arc::new(Keyring::new(MasterKey::generate("k1", &mut OsRng).unwrap(), vec![]).unwrap());
    let keys = PersonalKeys::new(SecretStore::new(db.clone(), keyring.clone()));
    assert!(!keys.has_key("alice").await.unwrap());
    assert_eq!(keys.open("alice", "name", "pd1.AAAA").await.unwrap(), None);
    // Concurrent first seals agree on one key.
    let racing = PersonalKeys::new(SecretStore::new(db.clone(), keyring.clone()));
    let (a, b) = tokio::join!(
        keys.seal("alice", "name", "Alice"),
        racing.seal("alice", "name", "Alice")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    // Another process (an empty cache) opens it from the vault.
    let other = PersonalKeys::new(SecretStore::new(db.clone(), keyring.clone()));
    assert_eq!(
        other.open("alice", "name", &a).await.unwrap().as_deref(),
        Some("Alice")
    );
    assert_eq!(keys.erased_at("alice").await.unwrap(), None);
    let first = keys.erase("alice").await.unwrap();
    assert_eq!(keys.open("alice", "name", &a).await.unwrap(), None);
    assert!(!keys.has_key("alice").await.unwrap());
    // Idempotent: the first erasure's time stays.
    assert_eq!(keys.erase("alice").await.unwrap(), first);
    assert_eq!(keys.erased_at("alice").await.unwrap(), Some(first));
    // What the user gives afterwards is sealed under a new key; the old values stay shut.
    let again = keys.seal("alice", "name", "Alice").await.unwrap();
    assert_ne!(again, a);
    assert!(matches!(
        keys.open("alice", "name", &a).await,
        Err(PersonalError::Tampered)
    ));
}

#[tokio::test]
async fn keys_are_made_once_opened_anywhere_and_erased_postgres() {
    let url = appreg_test_support::postgres::fresh_postgres_url().await;
    lifecycle(Database::connect(&url, 4).await.unwrap()).await;
}

#[tokio::test]
async fn keys_are_made_once_opened_anywhere_and_erased_sqlite() {
    let (_file, url) = appreg_test_support::postgres::fresh_sqlite_url();
    lifecycle(Database::connect(&url, 4).await.unwrap()).await;
}

#[test]
fn the_remembered_value_is_the_one_sealing_gives_and_only_for_its_own_input() {
    let k = key(7);
    let first = k.seal("alice", "name", "Alice").unwrap();
    // From the memo: the same text as sealing anew.
    assert_eq!(k.seal("alice", "name", "Alice").unwrap(), first);
    assert_eq!(k.seal_now("alice", "name", "Alice").unwrap(), first);
    // Another user, field or value is never answered from it.
    for (user, field, value) in [
        ("bob", "name", "Alice"),
        ("alice", "email", "Alice"),
        ("alice", "name", "Alicia"),
    ] {
        let other = k.seal(user, field, value).unwrap();
        assert_ne!(other, first);
        assert_eq!(other, k.seal_now(user, field, value).unwrap());
    }
}
