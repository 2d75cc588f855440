//! What the benchmark programs (`services/appreg/benches`) share: the PostgreSQL server they
//! create their databases on, a throw-away database per step, and the load average they print
//! beside their figures.

/// The server the benchmarks create databases on: `APPREG_BENCH_DATABASE_URL`, default
/// `postgres://postgres@127.0.0.1:5432/postgres` (a database of a server where it may create
/// others).
pub fn server_url() -> String {
    std::env::var("APPREG_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The machine's load average as `/proc/loadavg` tells it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A fresh database `<prefix>_<uuid>` on [`server_url`]: its name and URL. Panics when
/// PostgreSQL cannot be reached (a benchmark without its database has nothing to measure).
pub async fn fresh_database(prefix: &str) -> (String, String) {
    let url = server_url();
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("PostgreSQL is required for the benchmark");
    let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (base, _) = url.rsplit_once('/').unwrap();
    (name.clone(), format!("{base}/{name}"))
}

/// Drops the database `name` of [`fresh_database`] (best effort: a benchmark that measured
/// does not fail on its clean-up).
pub async fn drop_database(name: &str) {
    if let Ok(admin) = sqlx::PgPool::connect(&server_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
        admin.close().await;
    }
}
