//! The read model's queries: lists, profiles, environments and single applications.

use super::*;
use appreg_domain::subscription::{Subscription, SubscriptionStatus};
use chrono::{DateTime, Utc};

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
        self.list_filtered(env, member, status, &AppFilter::default(), limit, offset)
            .await
    }

    /// A page of applications like [`ReadModel::list`], narrowed and ordered by `filter`; the
    /// total counts every application the filter keeps. Ties of the order are broken by id, so
    /// pages neither repeat nor skip an application.
    pub async fn list_filtered(
        &self,
        env: &str,
        member: Option<&str>,
        status: &str,
        filter: &AppFilter<'_>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Application>, i64), ReadModelError> {
        // The name and type are read from the document (JSON functions differ per backend).
        let (name, app_type) = if self.db.is_postgres() {
            // Byte order, as SQLite's: the same order on both backends, whatever the database's
            // collation.
            (
                "lower(a.doc::jsonb->>'name') COLLATE \"C\"",
                "(a.doc::jsonb->>'type')",
            )
        } else {
            (
                "lower(json_extract(a.doc, '$.name'))",
                "json_extract(a.doc, '$.type')",
            )
        };
        let mut from = String::from("FROM rm_applications a ");
        if member.is_some() {
            from.push_str(
                "JOIN rm_application_members m ON m.application_id = a.id AND m.environment = a.environment AND m.user_id = $3 ",
            );
        }
        from.push_str("WHERE a.environment = $1 AND a.status = $2");
        let mut next = if member.is_some() { 4 } else { 3 };
        let mut param = |clause: &str| {
            let s = clause.replace('?', &format!("${next}"));
            next += 1;
            s
        };
        let prefix = filter.name_prefix.map(like_prefix);
        if prefix.is_some() {
            from.push_str(&param(&format!(" AND {name} LIKE ? ESCAPE '\\'")));
        }
        if filter.app_type.is_some() {
            from.push_str(&param(&format!(" AND {app_type} = ?")));
        }
        let order = match filter.sort {
            AppSort::CreatedAt => "a.created_at, a.id".to_string(),
            AppSort::CreatedAtDesc => "a.created_at DESC, a.id DESC".to_string(),
            AppSort::Name => format!("{name}, a.id"),
        };
        let page_sql = format!(
            "SELECT a.doc {from} ORDER BY {order} {}",
            param("LIMIT ?") + " " + &param("OFFSET ?")
        );
        let count_sql = format!("SELECT COUNT(*) {from}");
        let (docs, total): (Vec<String>, i64) = with_pool!(&self.db, pool => {
            let mut page = sqlx::query_scalar(&page_sql).bind(env).bind(status);
            let mut count = sqlx::query_scalar(&count_sql).bind(env).bind(status);
            if let Some(user) = member {
                page = page.bind(user);
                count = count.bind(user);
            }
            if let Some(p) = &prefix {
                page = page.bind(p.clone());
                count = count.bind(p.clone());
            }
            if let Some(t) = filter.app_type {
                page = page.bind(t);
                count = count.bind(t);
            }
            let docs = page.bind(limit).bind(offset).fetch_all(pool).await.map_err(db_err)?;
            let total = count.fetch_one(pool).await.map_err(db_err)?;
            (docs, total)
        });
        let apps = docs
            .iter()
            .map(|d| parse_doc(d))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((apps, total))
    }

    /// Users first seen in an environment whose id or name starts with `prefix` (case
    /// aside; ASCII letters only on SQLite), by name then id, at most `limit`: (id, name,
    /// email). The environment's rows are read through the primary key's prefix.
    pub async fn find_users(
        &self,
        env: &str,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<(String, Option<String>, Option<String>)>, ReadModelError> {
        let pattern = like_prefix(prefix);
        with_pool!(&self.db, pool => sqlx::query_as(
            "SELECT user_id, name, email FROM rm_users WHERE environment = $1 \
             AND (lower(user_id) LIKE $2 ESCAPE '\\' OR lower(coalesce(name, '')) LIKE $2 ESCAPE '\\') \
             ORDER BY lower(coalesce(name, user_id)), user_id LIMIT $3",
        )
        .bind(env)
        .bind(&pattern)
        .bind(limit)
        .fetch_all(pool)
        .await)
        .map_err(db_err)
    }

    /// The users of an environment after `after` in id order, at most `limit`: (id, name,
    /// email) as stored (personal values sealed: the api opens them).
    pub async fn users_after(
        &self,
        env: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, Option<String>, Option<String>)>, ReadModelError> {
        with_pool!(&self.db, pool => sqlx::query_as(
            "SELECT user_id, name, email FROM rm_users WHERE environment = $1 AND user_id > $2 \
             ORDER BY user_id LIMIT $3",
        )
        .bind(env)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await)
        .map_err(db_err)
    }

    /// The environments a user was seen in (at most 10,000).
    pub async fn user_environments(&self, user: &str) -> Result<Vec<String>, ReadModelError> {
        with_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT environment FROM rm_users WHERE user_id = $1 ORDER BY environment LIMIT 10000",
        )
        .bind(user)
        .fetch_all(pool)
        .await)
        .map_err(db_err)
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

    /// The environment's queue of subscriptions awaiting a decision: a page of its active
    /// applications' PENDING subscriptions, oldest request first (ties by subscription id), each
    /// with its application, and their total. Only the documents of applications with a pending
    /// subscription (the `pending_subscriptions` column) are read.
    pub async fn pending_subscriptions(
        &self,
        env: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<(Application, Subscription)>, i64), ReadModelError> {
        let docs: Vec<String> = with_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT doc FROM rm_applications \
             WHERE environment = $1 AND status = 'ACTIVE' AND pending_subscriptions > 0",
        )
        .bind(env)
        .fetch_all(pool)
        .await)
        .map_err(db_err)?;
        let apps = docs
            .iter()
            .map(|d| parse_doc(d))
            .collect::<Result<Vec<_>, _>>()?;
        let mut queue: Vec<(&DateTime<Utc>, &str, &Application, &Subscription)> = apps
            .iter()
            .flat_map(|app| {
                app.subscriptions
                    .iter()
                    .filter(|s| s.status == SubscriptionStatus::Pending)
                    .map(move |s| (&s.created_at, s.id.as_str(), app, s))
            })
            .collect();
        queue.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let total = i64::try_from(queue.len()).unwrap_or(i64::MAX);
        let items = queue
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(0))
            .take(usize::try_from(limit).unwrap_or(0))
            .map(|(_, _, app, sub)| (app.clone(), sub.clone()))
            .collect();
        Ok((items, total))
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

/// What a list of applications keeps and how it is ordered ([`ReadModel::list_filtered`]).
#[derive(Debug, Clone, Default)]
pub struct AppFilter<'a> {
    /// Names starting with this, case aside (ASCII letters only on SQLite).
    pub name_prefix: Option<&'a str>,
    /// The application type (`simple`, `browser`…).
    pub app_type: Option<&'a str>,
    pub sort: AppSort,
}

/// The order of a list of applications; ties broken by id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AppSort {
    /// Oldest first (the default).
    #[default]
    CreatedAt,
    /// Newest first.
    CreatedAtDesc,
    /// By name, case aside.
    Name,
}

/// The `LIKE` pattern of a prefix, lower case, its wildcards escaped with `\`.
fn like_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}
