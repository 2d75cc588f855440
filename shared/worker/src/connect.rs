//! Connecting a service process: its database (opened and migrated by the service) and its NATS
//! client.

use appreg_config::{NatsAuth, NatsServers};
use secrecy::ExposeSecret;

/// Why a service cannot connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot open the database {url}")]
    Database {
        /// The URL, its password redacted ([`redact`]).
        url: String,
        #[source]
        source: appreg_eventstore::StoreError,
    },
    #[error("cannot migrate the database ({what})")]
    Migrate {
        what: &'static str,
        #[source]
        source: appreg_eventstore::StoreError,
    },
    #[error("cannot open the event store")]
    EventStore(#[source] appreg_eventstore::StoreError),
    #[error("cannot connect to NATS at {servers}")]
    Nats {
        servers: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Opens a pool of `max` connections on `url` (not migrated: each service migrates what it owns).
///
/// # Errors
/// The database cannot be reached; the message shows the URL without its password.
pub async fn open(url: &str, max: u32) -> Result<appreg_eventstore::Database, ConnectError> {
    appreg_eventstore::Database::connect(url, max)
        .await
        .map_err(|source| ConnectError::Database {
            url: redact(url),
            source,
        })
}

/// Applies a migration, naming it in the error.
///
/// # Errors
/// The migration failed.
pub async fn migrate<F>(what: &'static str, migration: F) -> Result<(), ConnectError>
where
    F: std::future::Future<Output = Result<(), appreg_eventstore::StoreError>>,
{
    migration
        .await
        .map_err(|source| ConnectError::Migrate { what, source })
}

/// The event store over `db` (on PostgreSQL, with its background LISTEN/NOTIFY tasks).
///
/// # Errors
/// Its listener cannot be started.
pub async fn event_store(
    db: &appreg_eventstore::Database,
) -> Result<std::sync::Arc<dyn appreg_eventstore::EventStore>, ConnectError> {
    db.event_store().await.map_err(ConnectError::EventStore)
}

/// Hides the password of a database URL in messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The client options for `servers` (parsed by `Config::nats_servers`): the client's name,
/// its inbox prefix `_INBOX.<name>` (the replies to its requests come there; the deployment's
/// NATS users may subscribe to their own prefix only, `deploy/nats/accounts.conf`), and the
/// credentials, which the client uses for every server of the list (it ignores credentials
/// written in a URL, hence taken out by the parser).
pub fn nats_options(servers: &NatsServers, name: &str) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .custom_inbox_prefix(format!("_INBOX.{name}"));
    match servers.auth() {
        None => options,
        Some(NatsAuth::UserPassword { user, password }) => {
            options.user_and_password(user.clone(), password.expose_secret().to_string())
        }
        Some(NatsAuth::Token(token)) => options.token(token.expose_secret().to_string()),
    }
}

/// A NATS client on every server of the list. Connecting never fails for an unreachable
/// server: the client keeps retrying in the background (moving to another server of the list
/// when one is gone), and the services work once NATS answers.
///
/// # Errors
/// The client cannot be set up at all.
pub async fn nats(servers: &NatsServers, name: &str) -> Result<async_nats::Client, ConnectError> {
    nats_options(servers, name)
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempts| {
            std::time::Duration::from_millis(100 * attempts.min(10) as u64)
        })
        .connect(servers.urls().to_vec())
        .await
        .map_err(|source| ConnectError::Nats {
            servers: servers.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        use super::redact;
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact("sqlite://./data/appreg.db"),
            "sqlite://./data/appreg.db"
        );
    }
}
