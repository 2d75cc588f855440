//! The vault's table: sealed secrets by owner and kind, in the same database as the event store
//! (PostgreSQL or SQLite). Each value is sealed with associated data `<owner>/<kind>`, so a row
//! copied to another owner does not open.

use crate::{fingerprint, Keyring, Sealed, VaultError};
use appreg_eventstore::{Database, StoreError};
use secrecy::SecretString;
use std::sync::Arc;

/// Why a vault read or write failed. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum VaultStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored secret of {owner}/{kind} cannot be opened: {error}")]
    Open {
        owner: String,
        kind: String,
        error: VaultError,
    },
    #[error("a stored secret of {owner}/{kind} is malformed: {error}")]
    Malformed {
        owner: String,
        kind: String,
        error: crate::SealedParseError,
    },
}

impl From<sqlx::Error> for VaultStoreError {
    fn from(e: sqlx::Error) -> Self {
        VaultStoreError::Store(StoreError::from(e))
    }
}

/// Applies the vault's migration.
pub async fn migrate(db: &Database) -> Result<(), StoreError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    match db {
        Database::Postgres(pool) => migrator.run(pool).await?,
        Database::Sqlite(pool) => migrator.run(pool).await?,
    }
    Ok(())
}

/// Sealed secrets in the database, opened with a keyring.
#[derive(Clone)]
pub struct SecretStore {
    db: Database,
    keyring: Arc<Keyring>,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

fn aad(owner: &str, kind: &str) -> Vec<u8> {
    format!("{owner}/{kind}").into_bytes()
}

macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

/// The vault owner of an application's API keys (one secret per key id, the kind). A key of
/// stored data: never change it.
pub fn api_key_owner(application_id: impl std::fmt::Display) -> String {
    format!("api-keys/{application_id}")
}

/// The vault slot (owner, kind) of a webhook endpoint's signing secret. A key of stored data:
/// never change it.
pub fn webhook_secret_slot(webhook_id: &str) -> (String, &'static str) {
    (format!("webhooks/{webhook_id}"), "signing_secret")
}

/// Deletes one stored secret without opening anything (no keyring needed): what a process that
/// only purges (the lifecycle process manager, for revoked API keys) uses. Idempotent.
pub async fn purge(db: &Database, owner: &str, kind: &str) -> Result<u64, VaultStoreError> {
    Ok(with_pool!(db, pool => sqlx::query(
        "DELETE FROM vault_secrets WHERE owner = $1 AND kind = $2",
    )
    .bind(owner)
    .bind(kind)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?)
}

impl SecretStore {
    pub fn new(db: Database, keyring: Arc<Keyring>) -> Self {
        SecretStore { db, keyring }
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The statement that stores a sealed row (binds: owner, kind, sealed, fingerprint,
    /// updated_at), for callers that write it inside their own transaction.
    pub const UPSERT: &'static str = "INSERT INTO vault_secrets (owner, kind, sealed, fingerprint, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (owner, kind) DO UPDATE SET sealed = excluded.sealed, fingerprint = excluded.fingerprint, \
         updated_at = excluded.updated_at";

    /// A secret sealed for `owner`/`kind` and its fingerprint: the values of [`Self::UPSERT`].
    pub fn seal(&self, owner: &str, kind: &str, secret: &SecretString) -> (String, String) {
        (
            self.keyring.seal(secret, &aad(owner, kind)).to_compact(),
            fingerprint(secret),
        )
    }

    /// Seals and stores (or replaces) a secret; returns its fingerprint.
    pub async fn put(
        &self,
        owner: &str,
        kind: &str,
        secret: &SecretString,
    ) -> Result<String, VaultStoreError> {
        let (sealed, fp) = self.seal(owner, kind, secret);
        let now = chrono::Utc::now().to_rfc3339();
        with_pool!(&self.db, pool => sqlx::query(Self::UPSERT)
        .bind(owner)
        .bind(kind)
        .bind(&sealed)
        .bind(&fp)
        .bind(&now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(fp)
    }

    /// Opens a stored secret, if there is one.
    pub async fn get(
        &self,
        owner: &str,
        kind: &str,
    ) -> Result<Option<SecretString>, VaultStoreError> {
        let row: Option<String> = with_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT sealed FROM vault_secrets WHERE owner = $1 AND kind = $2",
        )
        .bind(owner)
        .bind(kind)
        .fetch_optional(pool)
        .await)?;
        let Some(text) = row else { return Ok(None) };
        self.open_text(owner, kind, &text).map(Some)
    }

    /// Opens the sealed text of a row of `owner`/`kind`.
    pub(crate) fn open_text(
        &self,
        owner: &str,
        kind: &str,
        text: &str,
    ) -> Result<SecretString, VaultStoreError> {
        let sealed = Sealed::parse(text).map_err(|error| VaultStoreError::Malformed {
            owner: owner.to_string(),
            kind: kind.to_string(),
            error,
        })?;
        self.keyring
            .open(&sealed, &aad(owner, kind))
            .map_err(|error| VaultStoreError::Open {
                owner: owner.to_string(),
                kind: kind.to_string(),
                error,
            })
    }

    /// The fingerprint of a stored secret, without opening it.
    pub async fn fingerprint_of(
        &self,
        owner: &str,
        kind: &str,
    ) -> Result<Option<String>, VaultStoreError> {
        Ok(with_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT fingerprint FROM vault_secrets WHERE owner = $1 AND kind = $2",
        )
        .bind(owner)
        .bind(kind)
        .fetch_optional(pool)
        .await)?)
    }

    /// Deletes one secret (nothing if there is none).
    pub async fn delete(&self, owner: &str, kind: &str) -> Result<u64, VaultStoreError> {
        Ok(with_pool!(&self.db, pool => sqlx::query(
            "DELETE FROM vault_secrets WHERE owner = $1 AND kind = $2",
        )
        .bind(owner)
        .bind(kind)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?)
    }

    /// Deletes every secret of an owner (purging is a delete of rows, never a rewrite of history).
    pub async fn delete_owner(&self, owner: &str) -> Result<u64, VaultStoreError> {
        Ok(
            with_pool!(&self.db, pool => sqlx::query("DELETE FROM vault_secrets WHERE owner = $1")
            .bind(owner)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;
    use secrecy::ExposeSecret;

    async fn round_trip(db: Database) {
        db.migrate().await.unwrap();
        migrate(&db).await.unwrap();
        let old = MasterKey::generate("k1", &mut rand::rngs::OsRng).unwrap();
        let old_config = old.to_config_string();
        let keyring = Arc::new(Keyring::new(old, vec![]).unwrap());
        let store = SecretStore::new(db.clone(), keyring.clone());
        let secret = SecretString::from("s3cr3t-value");
        let fp = store
            .put("application/1", "client_secret", &secret)
            .await
            .unwrap();
        assert_eq!(fp, fingerprint(&secret));
        let got = store
            .get("application/1", "client_secret")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.expose_secret(), "s3cr3t-value");
        assert!(store
            .get("application/2", "client_secret")
            .await
            .unwrap()
            .is_none());
        // Stored sealed: the plaintext is nowhere in the table.
        let dump: Vec<String> = match &db {
            Database::Postgres(p) => {
                sqlx::query_scalar("SELECT sealed || fingerprint FROM vault_secrets")
                    .fetch_all(p)
                    .await
                    .unwrap()
            }
            Database::Sqlite(p) => {
                sqlx::query_scalar("SELECT sealed || fingerprint FROM vault_secrets")
                    .fetch_all(p)
                    .await
                    .unwrap()
            }
        };
        assert!(dump.iter().all(|row| !row.contains("s3cr3t")));
        // A row copied to another owner does not open.
        let copy = "INSERT INTO vault_secrets (owner, kind, sealed, fingerprint, updated_at) \
                    SELECT 'application/2', kind, sealed, fingerprint, updated_at FROM vault_secrets";
        match &db {
            Database::Postgres(p) => sqlx::query(copy).execute(p).await.map(|_| ()).unwrap(),
            Database::Sqlite(p) => sqlx::query(copy).execute(p).await.map(|_| ()).unwrap(),
        }
        assert!(matches!(
            store.get("application/2", "client_secret").await,
            Err(VaultStoreError::Open {
                error: VaultError::WrongAad,
                ..
            })
        ));
        // After a key rotation the old value still opens; a replaced one is sealed anew.
        let rotated = Arc::new(
            Keyring::new(
                MasterKey::generate("k2", &mut rand::rngs::OsRng).unwrap(),
                vec![MasterKey::parse(old_config.expose_secret()).unwrap()],
            )
            .unwrap(),
        );
        let store = SecretStore::new(db.clone(), rotated);
        assert!(store
            .get("application/1", "client_secret")
            .await
            .unwrap()
            .is_some());
        store
            .put("application/1", "client_secret", &SecretString::from("new"))
            .await
            .unwrap();
        assert_eq!(
            store
                .get("application/1", "client_secret")
                .await
                .unwrap()
                .unwrap()
                .expose_secret(),
            "new"
        );
        assert_eq!(store.delete_owner("application/1").await.unwrap(), 1);
        assert!(store
            .get("application/1", "client_secret")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn round_trip_postgres() {
        let url = appreg_test_support::postgres::fresh_postgres_url().await;
        round_trip(Database::connect(&url, 2).await.unwrap()).await;
    }

    #[tokio::test]
    async fn round_trip_sqlite() {
        let (_file, url) = appreg_test_support::postgres::fresh_sqlite_url();
        round_trip(Database::connect(&url, 2).await.unwrap()).await;
    }
}
