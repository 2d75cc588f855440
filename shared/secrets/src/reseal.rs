//! Re-sealing under the current master key, so that a previous key can be removed from the
//! configuration (`secrets_previous_keys`) after a rotation.
//!
//! [`SecretStore::reseal`] walks the vault in (owner, kind) order, a page at a time; every value
//! sealed under another key than the current one is opened (with the previous key it names) and
//! sealed again under the current key. The row is replaced only if it still holds what was read
//! (a compare-and-set on `sealed`), so a value written meanwhile is never overwritten with an
//! older one. Idempotent and resumable: values already under the current key are skipped, and a
//! run stopped half-way is simply run again. A value whose key is unknown (configured nowhere)
//! is counted and left as it is: the previous key it needs must not be removed yet.

use crate::store::{SecretStore, VaultStoreError};
use crate::Sealed;
use appreg_eventstore::Database;

/// What a re-seal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResealSummary {
    /// Values sealed again under the current key now.
    pub resealed: u64,
    /// Values already under the current key.
    pub current: u64,
    /// Values changed by another writer during the run (they are under the current key, since
    /// every writer seals with it).
    pub raced: u64,
    /// Values that could not be opened (a key configured nowhere, or damaged): still under an
    /// old key.
    pub failed: u64,
}

impl ResealSummary {
    /// Whether no value needs a previous key any more (they can be removed).
    pub fn complete(&self) -> bool {
        self.failed == 0
    }
}

const PAGE: i64 = 500;

macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

impl SecretStore {
    /// Re-seals every value not sealed under the current master key (see the module's doc).
    pub async fn reseal(&self) -> Result<ResealSummary, VaultStoreError> {
        let mut summary = ResealSummary::default();
        let mut after = (String::new(), String::new());
        loop {
            let page: Vec<(String, String, String)> = with_pool!(self.db(), pool => sqlx::query_as(
                "SELECT owner, kind, sealed FROM vault_secrets \
                 WHERE owner > $1 OR (owner = $1 AND kind > $2) ORDER BY owner, kind LIMIT $3",
            )
            .bind(&after.0)
            .bind(&after.1)
            .bind(PAGE)
            .fetch_all(pool)
            .await)?;
            let Some((owner, kind, _)) = page.last() else {
                return Ok(summary);
            };
            after = (owner.clone(), kind.clone());
            for (owner, kind, text) in page {
                let fresh = match Sealed::parse(&text) {
                    Ok(sealed) if !self.keyring().needs_reseal(&sealed) => {
                        summary.current += 1;
                        continue;
                    }
                    Ok(sealed) => self.reseal_one(&owner, &kind, &sealed),
                    Err(error) => Err(VaultStoreError::Malformed {
                        owner: owner.clone(),
                        kind: kind.clone(),
                        error,
                    }),
                };
                let fresh = match fresh {
                    Ok(fresh) => fresh,
                    Err(error) => {
                        tracing::error!(%error, "a vault value cannot be re-sealed");
                        summary.failed += 1;
                        continue;
                    }
                };
                let replaced = with_pool!(self.db(), pool => sqlx::query(
                    "UPDATE vault_secrets SET sealed = $1 WHERE owner = $2 AND kind = $3 AND sealed = $4",
                )
                .bind(&fresh)
                .bind(&owner)
                .bind(&kind)
                .bind(&text)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
                if replaced == 1 {
                    summary.resealed += 1;
                } else {
                    summary.raced += 1;
                }
            }
        }
    }

    /// `sealed` opened and sealed again under the current key (same owner binding).
    fn reseal_one(
        &self,
        owner: &str,
        kind: &str,
        sealed: &Sealed,
    ) -> Result<String, VaultStoreError> {
        let aad = format!("{owner}/{kind}").into_bytes();
        let secret = self
            .keyring()
            .open(sealed, &aad)
            .map_err(|error| VaultStoreError::Open {
                owner: owner.to_string(),
                kind: kind.to_string(),
                error,
            })?;
        Ok(self.keyring().seal(&secret, &aad).to_compact())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Keyring, MasterKey};
    use secrecy::{ExposeSecret, SecretString};
    use std::sync::Arc;

    fn key(id: &str) -> (MasterKey, SecretString) {
        let key = MasterKey::generate(id, &mut rand::rngs::OsRng).unwrap();
        let config = key.to_config_string();
        (key, config)
    }

    fn parse(config: &SecretString) -> MasterKey {
        MasterKey::parse(config.expose_secret()).unwrap()
    }

    /// Values sealed under k1 and k2, k3 made current with both as previous keys: a re-seal
    /// moves everything under k3 (a second run changes nothing), after which a keyring of k3
    /// alone opens every value.
    async fn rotation(db: Database) {
        db.migrate().await.unwrap();
        crate::store::migrate(&db).await.unwrap();
        let (k1, c1) = key("k1");
        let (k2, c2) = key("k2");
        let (_, c3) = key("k3");
        let v1 = SecretStore::new(db.clone(), Arc::new(Keyring::new(k1, vec![]).unwrap()));
        for i in 0..700 {
            let owner = format!("application/{i:04}");
            v1.put(
                &owner,
                "client_secret",
                &SecretString::from(format!("s-{i}")),
            )
            .await
            .unwrap();
        }
        let v2 = SecretStore::new(
            db.clone(),
            Arc::new(Keyring::new(k2, vec![parse(&c1)]).unwrap()),
        );
        v2.put(
            "provider/DEFAULT/p",
            "client_secret",
            &SecretString::from("p"),
        )
        .await
        .unwrap();
        let v3 = SecretStore::new(
            db.clone(),
            Arc::new(Keyring::new(parse(&c3), vec![parse(&c2), parse(&c1)]).unwrap()),
        );
        let summary = v3.reseal().await.unwrap();
        assert_eq!(
            summary,
            ResealSummary {
                resealed: 701,
                ..Default::default()
            }
        );
        assert!(summary.complete());
        let again = v3.reseal().await.unwrap();
        assert_eq!((again.resealed, again.current), (0, 701));

        // The previous keys removed: everything still opens.
        let only = SecretStore::new(
            db.clone(),
            Arc::new(Keyring::new(parse(&c3), vec![]).unwrap()),
        );
        let got = only.get("application/0699", "client_secret").await.unwrap();
        assert_eq!(got.unwrap().expose_secret(), "s-699");
        let got = only
            .get("provider/DEFAULT/p", "client_secret")
            .await
            .unwrap();
        assert_eq!(got.unwrap().expose_secret(), "p");

        // A value under a key configured nowhere is counted and left alone.
        let (k9, _) = key("k9");
        let v9 = SecretStore::new(db.clone(), Arc::new(Keyring::new(k9, vec![]).unwrap()));
        v9.put("application/x", "client_secret", &SecretString::from("x"))
            .await
            .unwrap();
        let summary = only.reseal().await.unwrap();
        assert_eq!((summary.failed, summary.current), (1, 701));
        assert!(!summary.complete());
    }

    #[tokio::test]
    async fn rotation_postgres() {
        let url = appreg_test_support::postgres::fresh_postgres_url().await;
        rotation(Database::connect(&url, 2).await.unwrap()).await;
    }

    #[tokio::test]
    async fn rotation_sqlite() {
        let (_file, url) = appreg_test_support::postgres::fresh_sqlite_url();
        rotation(Database::connect(&url, 2).await.unwrap()).await;
    }
}
