//! Throw-away databases for tests (of this crate and of the crates built on it).
//!
//! Every test gets a database of its own, so tests can run in parallel (cargo-nextest runs each
//! in its own process). A missing PostgreSQL server is a failure, never a skip: these helpers
//! panic with a message saying what to start.

use sqlx::{Connection, Executor, PgConnection, Row};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// The environment variable naming the PostgreSQL server (any database on it) for tests.
pub const TEST_DATABASE_URL_ENV: &str = "APPREG_TEST_DATABASE_URL";

/// The server used when [`TEST_DATABASE_URL_ENV`] is unset.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Prefix of the databases made by [`fresh_postgres_url`].
const TEST_DATABASE_PREFIX: &str = "appreg_t_";

/// Test databases older than this are dropped by later test runs.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Creates a new, empty database `appreg_t_<uuid>` on the test server and returns its URL.
///
/// # Panics
/// If the server is unreachable or refuses to create the database.
pub async fn fresh_postgres_url() -> String {
    let admin_url = std::env::var(TEST_DATABASE_URL_ENV)
        .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_string());
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "cannot connect to the test PostgreSQL server at {admin_url} ({error}); start \
             PostgreSQL or point {TEST_DATABASE_URL_ENV} at one"
            )
        });
    drop_stale_databases(&mut admin).await;

    // A v7 UUID starts with its creation time, which lets later runs find stale databases.
    let name = format!("{TEST_DATABASE_PREFIX}{}", Uuid::now_v7().simple());
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap_or_else(|error| panic!("cannot create test database {name}: {error}"));
    if let Err(error) = admin.close().await {
        tracing::debug!(%error, "closing the admin connection failed");
    }
    with_database(&admin_url, &name)
}

/// Drops the test databases that earlier runs left behind (best effort: errors are ignored).
async fn drop_stale_databases(admin: &mut PgConnection) {
    let Ok(rows) = sqlx::query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
        .bind(TEST_DATABASE_PREFIX)
        .fetch_all(&mut *admin)
        .await
    else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    for row in rows {
        let Ok(name) = row.try_get::<String, _>(0) else {
            continue;
        };
        let Some(created) = name
            .strip_prefix(TEST_DATABASE_PREFIX)
            .and_then(|id| Uuid::try_parse(id).ok())
            .and_then(|id| id.get_timestamp())
        else {
            continue;
        };
        let (secs, nanos) = created.to_unix();
        if now.saturating_sub(Duration::new(secs, nanos)) > STALE_AFTER {
            let drop = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
            if let Err(error) = admin.execute(drop.as_str()).await {
                tracing::debug!(%error, %name, "could not drop a stale test database");
            }
        }
    }
}

/// `url` with its database (path) replaced by `database`, keeping user, host and parameters.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{database}?{query}"),
        None => format!("{root}/{database}"),
    }
}

/// A temporary SQLite database file, deleted (with its WAL and shared-memory files) on drop.
#[derive(Debug)]
pub struct SqliteFile {
    path: PathBuf,
}

impl SqliteFile {
    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A URL for a new SQLite database file under the temporary directory (created on first
/// connection), and the guard that deletes it. Keep the guard alive as long as the database.
pub fn fresh_sqlite_url() -> (SqliteFile, String) {
    let path = std::env::temp_dir().join(format!(
        "{TEST_DATABASE_PREFIX}{}.sqlite3",
        Uuid::now_v7().simple()
    ));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    (SqliteFile { path }, url)
}

/// The generic plan PostgreSQL makes for `sql` (its parameters of `types`, e.g. `text[]`), as
/// `EXPLAIN` prints it for the arguments `args` (SQL literals): the plan a long-lived connection
/// caches once it ran a statement five times, and then keeps whatever the arguments and however
/// the tables grow (with no statistics, tables are planned as the few pages they had then).
///
/// # Panics
/// If the statement cannot be prepared or explained.
pub async fn generic_plan(pool: &sqlx::PgPool, sql: &str, types: &str, args: &str) -> String {
    let mut conn = pool.acquire().await.expect("a connection");
    conn.execute("SET plan_cache_mode = force_generic_plan")
        .await
        .expect("plan_cache_mode set");
    conn.execute(format!("PREPARE appreg_generic_plan({types}) AS {sql}").as_str())
        .await
        .unwrap_or_else(|error| panic!("cannot prepare {sql}: {error}"));
    let lines: Vec<String> =
        sqlx::query_scalar(&format!("EXPLAIN EXECUTE appreg_generic_plan({args})"))
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|error| panic!("cannot explain {sql}: {error}"));
    conn.execute("DEALLOCATE appreg_generic_plan; RESET plan_cache_mode")
        .await
        .expect("deallocated");
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://h:5432", "t3"),
            "postgresql://h:5432/t3"
        );
        assert_eq!(
            with_database("postgres://h?x=1", "t4"),
            "postgres://h/t4?x=1"
        );
    }

    #[test]
    fn sqlite_files_are_unique_and_removed() {
        let (a, url_a) = fresh_sqlite_url();
        let (b, url_b) = fresh_sqlite_url();
        assert_ne!(url_a, url_b);
        assert!(url_a.starts_with("sqlite://") && url_a.ends_with("?mode=rwc"));
        std::fs::write(a.path(), b"x").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        drop(b);
    }
}
