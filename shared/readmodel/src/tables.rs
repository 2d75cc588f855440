//! The read model's table sets ([`Tables`]): the live one ([`LIVE`]) the api reads and the
//! shadow one ([`SHADOW`]) a rebuild fills, and the statements built from them.

use super::*;

/// A set of read-model tables, by name: the live set the api reads, or the shadow set a rebuild
/// fills. Every statement that writes the model is built from one of these. Checkpoints of
/// both sets are rows of `rm_checkpoints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    pub applications: &'static str,
    pub members: &'static str,
    pub users: &'static str,
    pub environments: &'static str,
    /// Suspected orphans of DCR registrations (`DcrAttemptOutcomeUnknown`).
    pub orphans: &'static str,
    /// The set's row in `rm_checkpoints`.
    pub checkpoint: &'static str,
    /// Index names (PostgreSQL keeps an index's name when its table is renamed, so the shadow
    /// set's indexes are named apart and renamed at the swap).
    pub applications_index: &'static str,
    pub members_index: &'static str,
    pub users_index: &'static str,
}

/// The tables the api serves from (created by the migrations).
pub const LIVE: Tables = Tables {
    applications: "rm_applications",
    members: "rm_application_members",
    users: "rm_users",
    environments: "rm_environments",
    orphans: "rm_suspected_orphans",
    checkpoint: CHECKPOINT,
    applications_index: "rm_applications_env_status",
    members_index: "rm_application_members_user",
    users_index: "rm_users_user",
};

/// The tables a rebuild replays into before the swap.
pub const SHADOW: Tables = Tables {
    applications: "rm_applications_rebuild",
    members: "rm_application_members_rebuild",
    users: "rm_users_rebuild",
    environments: "rm_environments_rebuild",
    orphans: "rm_suspected_orphans_rebuild",
    checkpoint: "applications_rebuild",
    applications_index: "rm_applications_rebuild_env_status",
    members_index: "rm_application_members_rebuild_user",
    users_index: "rm_users_rebuild_user",
};

impl Tables {
    pub(crate) fn all(&self) -> [&'static str; 5] {
        [
            self.applications,
            self.members,
            self.users,
            self.environments,
            self.orphans,
        ]
    }

    /// The set's secondary indexes, as in the migrations.
    pub(crate) fn index_ddl(&self) -> [String; 3] {
        [
            format!(
                "CREATE INDEX {} ON {} (environment, status, created_at, id)",
                self.applications_index, self.applications
            ),
            format!(
                "CREATE INDEX {} ON {} (environment, user_id)",
                self.members_index, self.members
            ),
            // A user's environments (`GET /users/{user}`, an erasure), whatever their number.
            format!(
                "CREATE INDEX {} ON {} (user_id)",
                self.users_index, self.users
            ),
        ]
    }

    /// The set's DDL: the same columns, keys and indexes as the migrations (portable SQL).
    pub(crate) fn ddl(&self) -> Vec<String> {
        let mut ddl = self.tables_ddl(true);
        ddl.extend(self.index_ddl());
        ddl
    }

    /// The set's tables; without `keys`, the applications and members tables have no primary
    /// key yet (a PostgreSQL rebuild adds them with [`Tables::key_ddl`] once the rows are in:
    /// one sort each instead of one index insert per row).
    pub(crate) fn tables_ddl(&self, keys: bool) -> Vec<String> {
        let (id, members_key) = if keys {
            (
                "id TEXT PRIMARY KEY",
                ", PRIMARY KEY (application_id, user_id)",
            )
        } else {
            ("id TEXT NOT NULL", "")
        };
        vec![
            format!(
                "CREATE TABLE {} ({id}, environment TEXT NOT NULL, status TEXT NOT NULL, \
                 created_at TEXT NOT NULL, doc TEXT NOT NULL, \
                 pending_subscriptions INTEGER NOT NULL DEFAULT 0)",
                self.applications
            ),
            format!(
                "CREATE TABLE {} (application_id TEXT NOT NULL, user_id TEXT NOT NULL, environment TEXT NOT NULL, \
                 role TEXT NOT NULL{members_key})",
                self.members
            ),
            format!(
                "CREATE TABLE {} (environment TEXT NOT NULL, user_id TEXT NOT NULL, name TEXT, email TEXT, \
                 first_seen TEXT NOT NULL, PRIMARY KEY (environment, user_id))",
                self.users
            ),
            format!(
                "CREATE TABLE {} (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL)",
                self.environments
            ),
            // Always with its key (few rows; the list reads a prefix of it).
            format!(
                "CREATE TABLE {} (environment TEXT NOT NULL, provider_id TEXT NOT NULL, \
                 application_id TEXT NOT NULL, request_version BIGINT NOT NULL, attempt BIGINT NOT NULL, \
                 idempotency_key TEXT NOT NULL, client_name TEXT NOT NULL, started_at TEXT NOT NULL, \
                 ended_at TEXT NOT NULL, error TEXT NOT NULL, status TEXT NOT NULL, cleared_client_id TEXT, \
                 PRIMARY KEY (environment, provider_id, application_id, request_version, attempt))",
                self.orphans
            ),
        ]
    }

    /// The primary keys `tables_ddl(false)` leaves out, the applications' and the members'
    /// (PostgreSQL), each as its unique index (named `<table>_pkey`, as an inline key's), then
    /// the constraint that makes it the primary key: the index can be built beside the
    /// table's other index (two `CREATE INDEX` do not block each other; `ADD PRIMARY KEY`
    /// would).
    pub(crate) fn key_ddl(&self) -> [[String; 2]; 2] {
        let key = |table: &str, columns: &str| {
            [
                format!("CREATE UNIQUE INDEX {table}_pkey ON {table} ({columns})"),
                format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY USING INDEX {table}_pkey"
                ),
            ]
        };
        [
            key(self.applications, "id"),
            key(self.members, "application_id, user_id"),
        ]
    }
}
