//! The settings of browsers' access to the api (`[api]`): the origins allowed by CORS
//! (`api.cors_allowed_origins`) and the lifetime of event-stream tickets (`api.sse_ticket_ttl_ms`).
//! What this module must never do: accept an origin that is not exactly `scheme://host[:port]`
//! (a path, a query, credentials or a wildcard would make the list mean something else than it
//! says).

use crate::{Config, ConfigError};
use serde::{Deserialize, Deserializer};

/// Longest lifetime of an event-stream ticket, in milliseconds.
pub const MAX_SSE_TICKET_TTL_MS: u64 = 60_000;

pub(crate) fn default_sse_ticket_ttl_ms() -> u64 {
    30_000
}

/// A list of origins: a TOML array, or one comma-separated string (an environment variable).
pub(crate) fn origin_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    Ok(match List::deserialize(d)? {
        List::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        List::Many(v) => v,
    })
}

/// `origin` in its serialized form (`scheme://host[:port]`, lower case, no default port), or
/// why it is not an origin.
pub fn parse_origin(origin: &str) -> Result<String, String> {
    let url = url::Url::parse(origin).map_err(|e| format!("{origin:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{origin:?}: the scheme is http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{origin:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{origin:?} carries credentials"));
    }
    // `Url` adds the root path: only an origin written without one (or with `/` alone) is one.
    let rest = origin.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let has_path = rest.find('/').is_some_and(|i| &rest[i..] != "/");
    if has_path || url.query().is_some() || url.fragment().is_some() || rest.contains(['?', '#']) {
        return Err(format!(
            "{origin:?} is not an origin: scheme://host[:port], no path, query or fragment"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

impl Config {
    /// The allowed origins of `cors_allowed_origins`, each checked and normalised.
    ///
    /// # Errors
    /// One that is not `scheme://host[:port]`, named in the message.
    pub fn cors_origins(&self) -> Result<Vec<String>, ConfigError> {
        self.api
            .cors_allowed_origins
            .iter()
            .map(|o| {
                parse_origin(o).map_err(|m| ConfigError(format!("api.cors_allowed_origins: {m}")))
            })
            .collect()
    }

    /// The lifetime of an event-stream ticket (`sse_ticket_ttl_ms`).
    ///
    /// # Errors
    /// 0, or more than [`MAX_SSE_TICKET_TTL_MS`].
    pub fn sse_ticket_ttl(&self) -> Result<std::time::Duration, ConfigError> {
        if self.api.sse_ticket_ttl_ms == 0 || self.api.sse_ticket_ttl_ms > MAX_SSE_TICKET_TTL_MS {
            return Err(ConfigError(format!(
                "api.sse_ticket_ttl_ms is between 1 and {MAX_SSE_TICKET_TTL_MS} (got {})",
                self.api.sse_ticket_ttl_ms
            )));
        }
        Ok(std::time::Duration::from_millis(self.api.sse_ticket_ttl_ms))
    }

    /// Allows the api's own origin as a browser sees it when it listens on `listen`
    /// (`appreg dev`, whose portal is served by the api): `http://<listen>`, and
    /// `http://localhost:<port>` when `listen` is a loopback address.
    pub fn allow_own_origin(&mut self) {
        let Ok(addr) = self.api.listen.parse::<std::net::SocketAddr>() else {
            self.api
                .cors_allowed_origins
                .push(format!("http://{}", self.api.listen));
            return;
        };
        let own = format!("http://{addr}");
        let mut origins = vec![own];
        if addr.ip().is_loopback() {
            origins.push(format!("http://localhost:{}", addr.port()));
        }
        for o in origins {
            if !self.api.cors_allowed_origins.contains(&o) {
                self.api.cors_allowed_origins.push(o);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(
            parse_origin("https://Portal.example.com").unwrap(),
            "https://portal.example.com"
        );
        assert_eq!(
            parse_origin("http://localhost:8080").unwrap(),
            "http://localhost:8080"
        );
        assert_eq!(
            parse_origin("https://portal.example.com:443/").unwrap(),
            "https://portal.example.com"
        );
        for bad in [
            "portal.example.com",
            "https://portal.example.com/app",
            "https://portal.example.com?x=1",
            "https://user:pw@portal.example.com",
            "ftp://portal.example.com",
            "*",
            "null",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_and_ticket_lifetime_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert!(c.api.cors_allowed_origins.is_empty());
            assert_eq!(c.api.sse_ticket_ttl_ms, 30_000);
            jail.set_env(
                "APPREG_API__CORS_ALLOWED_ORIGINS",
                "https://a.example.com, http://localhost:3000",
            );
            jail.set_env("APPREG_API__SSE_TICKET_TTL_MS", "60001");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                c.cors_origins().map_err(|e| e.to_string())?,
                ["https://a.example.com", "http://localhost:3000"]
            );
            assert!(c.sse_ticket_ttl().is_err(), "at most 60 s");
            jail.set_env(
                "APPREG_API__CORS_ALLOWED_ORIGINS",
                "https://a.example.com/path",
            );
            let c = Config::load(None).map_err(|e| e.to_string())?;
            let refused = c.cors_origins().unwrap_err().to_string();
            assert!(refused.contains("cors_allowed_origins"), "{refused}");
            jail.create_file(
                "appreg.toml",
                "[api]\ncors_allowed_origins = [\"https://b.example.com\"]\n",
            )?;
            jail.set_env("APPREG_API__CORS_ALLOWED_ORIGINS", "");
            let c = Config::load(Some(std::path::Path::new("appreg.toml")))
                .map_err(|e| e.to_string())?;
            assert!(
                c.api.cors_allowed_origins.is_empty(),
                "the environment wins"
            );
            Ok(())
        });
    }

    #[test]
    fn dev_allows_its_own_origin() {
        let mut c = Config::defaults();
        c.api.listen = "127.0.0.1:8080".into();
        c.allow_own_origin();
        assert_eq!(
            c.api.cors_allowed_origins,
            ["http://127.0.0.1:8080", "http://localhost:8080"]
        );
        c.allow_own_origin();
        assert_eq!(c.api.cors_allowed_origins.len(), 2);
        assert!(c.cors_origins().is_ok());
    }
}
