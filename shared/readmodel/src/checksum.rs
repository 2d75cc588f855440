//! A checksum of the live read model, to compare two databases or a model before and after a
//! rebuild.

use super::*;

/// Row counts and a digest of every row of the live read model: two databases (or one before
/// and after a rebuild) hold the same model exactly when their checksums are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub applications: i64,
    pub members: i64,
    pub users: i64,
    pub environments: i64,
    /// SHA-256 over every row of the four tables and of the suspected orphans, in key order.
    pub digest: String,
}

/// The [`Checksum`] of the live tables.
pub async fn checksum(db: &Database) -> Result<Checksum, ReadModelError> {
    use sha2::{Digest, Sha256};
    let queries = [
        "SELECT id || '|' || environment || '|' || status || '|' || created_at || '|' || doc FROM rm_applications ORDER BY id",
        "SELECT application_id || '|' || user_id || '|' || environment || '|' || role FROM rm_application_members ORDER BY application_id, user_id",
        "SELECT environment || '|' || user_id || '|' || COALESCE(name, '') || '|' || COALESCE(email, '') || '|' || first_seen FROM rm_users ORDER BY environment, user_id",
        "SELECT id || '|' || name || '|' || created_at FROM rm_environments ORDER BY id",
        "SELECT environment || '|' || provider_id || '|' || application_id || '|' || request_version || '|' || attempt \
         || '|' || idempotency_key || '|' || client_name || '|' || started_at || '|' || ended_at || '|' || error \
         || '|' || status || '|' || COALESCE(cleared_client_id, '') FROM rm_suspected_orphans \
         ORDER BY environment, provider_id, application_id, request_version, attempt",
    ];
    let mut hasher = Sha256::new();
    let mut counts = [0i64; 5];
    for (i, sql) in queries.iter().enumerate() {
        let rows: Vec<String> =
            with_pool!(db, pool => sqlx::query_scalar(sql).fetch_all(pool).await)
                .map_err(db_err)?;
        counts[i] = rows.len() as i64;
        hasher.update(format!("table {i}\n"));
        for row in rows {
            hasher.update(row.as_bytes());
            hasher.update(b"\n");
        }
    }
    let digest = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Checksum {
        applications: counts[0],
        members: counts[1],
        users: counts[2],
        environments: counts[3],
        digest,
    })
}
