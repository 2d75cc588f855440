//! Opening the database behind the event store, from a URL.
//!
//! This module exists so that the rest of appreg chooses its backend with one configuration value
//! (`postgres://…` in production, `sqlite:…` in embedded mode) and gets a connection pool, the
//! embedded migrations and an [`EventStore`] for it. It must never hold domain knowledge nor open
//! a backend that the URL did not name.

use crate::{EventStore, PgEventStore, SqliteEventStore, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// A connection pool to one of the supported backends.
#[derive(Debug, Clone)]
pub enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Database {
    /// Opens a pool for `url`: `postgres://` or `postgresql://` for PostgreSQL, `sqlite:` for
    /// SQLite (the file is created if missing; WAL journal, `synchronous=NORMAL`, 5 s busy
    /// timeout, foreign keys on). Any other scheme is [`StoreError::UnsupportedUrl`].
    ///
    /// One connection is opened eagerly, so an unreachable database fails here.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Database, StoreError> {
        let max_connections = max_connections.max(1);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                // A broken connection surfaces as an error on use; pinging on every acquire
                // would add a round trip to every append and read.
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            Ok(Database::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .connect_with(options)
                .await?;
            Ok(Database::Sqlite(pool))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// Whether this is the PostgreSQL backend.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }

    /// Runs the embedded migrations of this backend. Idempotent: applied migrations are skipped.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // Other components keep their own migrations in the same database (the api's read
        // models), so versions this set does not know are expected.
        match self {
            Database::Postgres(pool) => {
                let mut m = sqlx::migrate!("./migrations/postgres");
                m.set_ignore_missing(true);
                m.run(pool).await?
            }
            Database::Sqlite(pool) => {
                let mut m = sqlx::migrate!("./migrations/sqlite");
                m.set_ignore_missing(true);
                m.run(pool).await?
            }
        }
        Ok(())
    }

    /// Builds the event store adapter over this pool. On PostgreSQL this starts the background
    /// tasks of the adapter (LISTEN for other processes' appends, coalesced NOTIFY of ours); they
    /// stop when the returned store is dropped.
    pub async fn event_store(&self) -> Result<Arc<dyn EventStore>, StoreError> {
        Ok(match self {
            Database::Postgres(pool) => Arc::new(PgEventStore::new(pool.clone()).await?),
            Database::Sqlite(pool) => Arc::new(SqliteEventStore::new(pool.clone())),
        })
    }

    /// Closes the pool, waiting for checked-out connections to be returned.
    pub async fn close(&self) {
        match self {
            Database::Postgres(pool) => pool.close().await,
            Database::Sqlite(pool) => pool.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn other_schemes_are_unsupported() {
        for url in ["mysql://localhost/db", "http://x", "", "sqlite"] {
            assert!(
                matches!(
                    Database::connect(url, 1).await,
                    Err(StoreError::UnsupportedUrl)
                ),
                "{url}"
            );
        }
    }
}
