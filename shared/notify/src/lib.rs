//! Webhook deliveries, shared by the two processes that touch them: `appreg notifier`, which
//! records one delivery per (endpoint, event) and sends it, and the api, whose delivery log
//! (`GET /webhooks/{wid}/deliveries`) reads them and whose `_retry` schedules one again.
//!
//! - [`deliveries`]: the `webhook_deliveries` table (PostgreSQL and SQLite) and every query on it.
//! - [`signature`]: the `webhook-id` of a delivery and the Standard Webhooks signature.
//! - [`mails`]: the notifier's e-mails, one per (event, member) (`notifier_mails`).
//!
//! This crate decides nothing about which endpoint receives which event (the notifier does) and
//! never opens a secret itself: the caller passes the signing secret it got from the vault.

pub mod deliveries;
pub mod mails;
pub mod signature;

use appreg_eventstore::{Database, StoreError};

/// Applies the deliveries' and the mails' migrations (and the notifier's checkpoint table).
pub async fn migrate(db: &Database) -> Result<(), StoreError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    match db {
        Database::Postgres(pool) => migrator.run(pool).await.map_err(sqlx::Error::from)?,
        Database::Sqlite(pool) => migrator.run(pool).await.map_err(sqlx::Error::from)?,
    }
    Ok(())
}
