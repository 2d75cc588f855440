//! The read model's queries: lists, profiles, environments and single applications.

use super::*;

impl ReadModel {
    /// A page of applications of an environment with a status: all of them (`member: None`,
    /// administrators) or those the user is a member of. Oldest first.
    pub async fn list(
        &self,
        env: &str,
        member: Option<&str>,
        status: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Application>, i64), ReadModelError> {
        let (docs, total): (Vec<String>, i64) = match member {
            Some(user) => with_pool!(&self.db, pool => {
                let docs = sqlx::query_scalar(
                    "SELECT a.doc FROM rm_applications a JOIN rm_application_members m ON m.application_id = a.id \
                     WHERE m.environment = $1 AND m.user_id = $2 AND a.status = $3 ORDER BY a.created_at, a.id LIMIT $4 OFFSET $5",
                )
                .bind(env).bind(user).bind(status).bind(limit).bind(offset)
                .fetch_all(pool).await.map_err(db_err)?;
                let total = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM rm_applications a JOIN rm_application_members m ON m.application_id = a.id \
                     WHERE m.environment = $1 AND m.user_id = $2 AND a.status = $3",
                )
                .bind(env).bind(user).bind(status)
                .fetch_one(pool).await.map_err(db_err)?;
                (docs, total)
            }),
            None => with_pool!(&self.db, pool => {
                let docs = sqlx::query_scalar(
                    "SELECT doc FROM rm_applications WHERE environment = $1 AND status = $2 ORDER BY created_at, id LIMIT $3 OFFSET $4",
                )
                .bind(env).bind(status).bind(limit).bind(offset)
                .fetch_all(pool).await.map_err(db_err)?;
                let total = sqlx::query_scalar("SELECT COUNT(*) FROM rm_applications WHERE environment = $1 AND status = $2")
                    .bind(env).bind(status)
                    .fetch_one(pool).await.map_err(db_err)?;
                (docs, total)
            }),
        };
        let apps = docs
            .iter()
            .map(|d| parse_doc(d))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((apps, total))
    }

    /// A user's profile (name, email) in an environment, once first seen.
    pub async fn user_profile(
        &self,
        env: &str,
        user: &str,
    ) -> Result<Option<(Option<String>, Option<String>)>, ReadModelError> {
        with_pool!(&self.db, pool => sqlx::query_as("SELECT name, email FROM rm_users WHERE environment = $1 AND user_id = $2")
            .bind(env)
            .bind(user)
            .fetch_optional(pool)
            .await)
        .map_err(db_err)
    }

    /// Every environment (id, name), `DEFAULT` first.
    pub async fn environments(&self) -> Result<Vec<(String, String)>, ReadModelError> {
        let rows: Vec<(String, String)> = with_pool!(&self.db, pool => sqlx::query_as("SELECT id, name FROM rm_environments ORDER BY id LIMIT 10000")
            .fetch_all(pool)
            .await)
        .map_err(db_err)?;
        let mut out = vec![(
            appreg_domain::EnvironmentId::DEFAULT.to_string(),
            "Default environment".to_string(),
        )];
        out.extend(rows);
        Ok(out)
    }

    /// Whether an application of the environment (active or archived) names the provider or
    /// holds a client it issued. Reads the documents (`"provider_id":"<id>"` appears in a
    /// document exactly then: ids are UUIDs, documents compact JSON).
    pub async fn uses_provider(
        &self,
        env: &str,
        provider_id: &str,
    ) -> Result<bool, ReadModelError> {
        let pattern = format!("%\"provider_id\":\"{provider_id}\"%");
        let n: i64 = with_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM rm_applications WHERE environment = $1 AND doc LIKE $2",
        )
        .bind(env)
        .bind(&pattern)
        .fetch_one(pool)
        .await)
        .map_err(db_err)?;
        Ok(n > 0)
    }

    /// One application's row, if projected.
    pub async fn get(&self, id: ApplicationId) -> Result<Option<Application>, ReadModelError> {
        let doc: Option<String> = with_pool!(&self.db, pool => sqlx::query_scalar("SELECT doc FROM rm_applications WHERE id = $1")
            .bind(id.0.to_string())
            .fetch_optional(pool)
            .await)
        .map_err(db_err)?;
        doc.as_deref().map(parse_doc).transpose()
    }
}
