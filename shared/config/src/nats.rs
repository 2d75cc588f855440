//! The NATS servers of `nats_url`: the one parser every process that connects to NATS uses
//! (the relay, the projector, `appreg nats setup`, `appreg dev`).
//!
//! `nats_url` is one URL or a comma-separated list (`nats://nats-1:4222,nats://nats-2:4222`,
//! spaces around the commas allowed). Credentials may be in the URLs (`nats://user:password@host`,
//! or `nats://token@host`) or in `nats_credentials`, never in both: the NATS client
//! authenticates with one set for every server of the list (the client library ignores
//! credentials written in a URL, so they are taken out here and given to it explicitly).
//!
//! A malformed entry is an error naming it, with its credentials replaced by `***`; the list is
//! never used in part. Nothing here connects anywhere.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// The port of a NATS URL that names none.
pub const DEFAULT_PORT: u16 = 4222;

/// How the client authenticates, for every server of the list.
#[derive(Debug, Clone)]
pub enum NatsAuth {
    UserPassword {
        user: String,
        password: SecretString,
    },
    Token(SecretString),
}

impl NatsAuth {
    /// `user:password`, or a token (no colon).
    fn parse(text: &str) -> NatsAuth {
        match text.split_once(':') {
            Some((user, password)) => NatsAuth::UserPassword {
                user: user.to_string(),
                password: SecretString::from(password.to_string()),
            },
            None => NatsAuth::Token(SecretString::from(text.to_string())),
        }
    }

    fn same_as(&self, other: &NatsAuth) -> bool {
        match (self, other) {
            (
                NatsAuth::UserPassword { user, password },
                NatsAuth::UserPassword {
                    user: u,
                    password: p,
                },
            ) => user == u && password.expose_secret() == p.expose_secret(),
            (NatsAuth::Token(a), NatsAuth::Token(b)) => a.expose_secret() == b.expose_secret(),
            _ => false,
        }
    }
}

/// The parsed `nats_url` (and `nats_credentials`): the servers' URLs without credentials, and
/// the credentials apart. `Display` shows the URLs only.
#[derive(Debug, Clone)]
pub struct NatsServers {
    urls: Vec<String>,
    auth: Option<NatsAuth>,
}

/// Why `nats_url` (or `nats_credentials`) cannot be used. The message never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid nats_url: {0}")]
pub struct NatsUrlError(String);

impl NatsServers {
    /// Parses `list` (one URL or a comma-separated list) and the optional `credentials`
    /// (`user:password`, or a token).
    ///
    /// # Errors
    /// An empty list or entry, an entry that is not a `nats://` or `tls://` URL of a host (with
    /// an optional port, no path, query or fragment), entries carrying different credentials,
    /// or credentials both in the URLs and in `credentials`. The message names the entry
    /// (`entry 2 of 3 "nats://***@nats-2:42x2"`), its credentials redacted.
    pub fn parse(
        list: &str,
        credentials: Option<&SecretString>,
    ) -> Result<NatsServers, NatsUrlError> {
        if list.trim().is_empty() {
            return Err(NatsUrlError("no NATS server given".into()));
        }
        let entries: Vec<&str> = list.split(',').map(str::trim).collect();
        let total = entries.len();
        let mut urls = Vec::with_capacity(total);
        // The credentials of the first entry that has some, and its number.
        let mut in_urls: Option<(usize, NatsAuth)> = None;
        for (i, entry) in entries.iter().enumerate() {
            let n = i + 1;
            let fail = |why: &str| {
                NatsUrlError(format!("entry {n} of {total} {:?}: {why}", redact(entry)))
            };
            let (url, auth) = parse_entry(entry).map_err(|why| fail(&why))?;
            if let Some(auth) = auth {
                match &in_urls {
                    None => in_urls = Some((n, auth)),
                    Some((first, seen)) if !seen.same_as(&auth) => {
                        return Err(fail(&format!(
                            "other credentials than entry {first} (the client authenticates \
                             with one set for every server)"
                        )));
                    }
                    Some(_) => {}
                }
            }
            urls.push(url);
        }
        let auth = match (in_urls, credentials) {
            (Some(_), Some(_)) => {
                return Err(NatsUrlError(
                    "credentials both in the URLs and in nats_credentials: give them once".into(),
                ))
            }
            (Some((_, auth)), None) => Some(auth),
            (None, Some(c)) if c.expose_secret().is_empty() => {
                return Err(NatsUrlError("nats_credentials is empty".into()))
            }
            (None, Some(c)) => Some(NatsAuth::parse(c.expose_secret())),
            (None, None) => None,
        };
        Ok(NatsServers { urls, auth })
    }

    /// The servers, as `scheme://host:port` (no credentials).
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    pub fn auth(&self) -> Option<&NatsAuth> {
        self.auth.as_ref()
    }
}

impl fmt::Display for NatsServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.urls.join(","))
    }
}

/// One entry: its URL without credentials, and the credentials it carries.
fn parse_entry(entry: &str) -> Result<(String, Option<NatsAuth>), String> {
    if entry.is_empty() {
        return Err("empty (a comma too many?)".into());
    }
    if entry.chars().any(char::is_whitespace) {
        return Err("contains white space".into());
    }
    // `host:port` alone is a nats:// URL, as for the NATS tools (`nats-1:4222` would otherwise
    // parse as a URL of scheme `nats-1`).
    let text = if entry.contains("://") {
        entry.to_string()
    } else {
        format!("nats://{entry}")
    };
    let url = url::Url::parse(&text).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "nats" | "tls") {
        return Err(format!(
            "scheme {:?}, expected nats:// or tls://",
            url.scheme()
        ));
    }
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h,
        _ => return Err("no host".into()),
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err("a NATS server URL has no path, query or fragment".into());
    }
    let port = url.port().unwrap_or(DEFAULT_PORT);
    if port == 0 {
        return Err("port 0".into());
    }
    let decode = |s: &str| -> Result<String, String> {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| "credentials that are not UTF-8 once decoded".to_string())
    };
    let auth = match (url.username(), url.password()) {
        ("", None) => None,
        ("", Some(_)) => return Err("a password without a user".into()),
        (token, None) => Some(NatsAuth::Token(SecretString::from(decode(token)?))),
        (user, Some(password)) => Some(NatsAuth::UserPassword {
            user: decode(user)?,
            password: SecretString::from(decode(password)?),
        }),
    };
    Ok((format!("{}://{host}:{port}", url.scheme()), auth))
}

/// `entry` with whatever precedes its host's `@` (a user and password, or a token) replaced by
/// `***`: `nats://u:p@h:4222` → `nats://***@h:4222`. Works on malformed entries too (the last
/// `@` ends the credentials, so a password holding `@` or `/` is hidden whole).
pub fn redact(entry: &str) -> String {
    let start = entry.find("://").map_or(0, |i| i + 3);
    match entry.rfind('@') {
        Some(at) if at >= start => format!("{}***{}", &entry[..start], &entry[at..]),
        _ => entry.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &str) -> Result<NatsServers, NatsUrlError> {
        NatsServers::parse(list, None)
    }

    fn error(list: &str) -> String {
        parse(list).unwrap_err().to_string()
    }

    #[test]
    fn one_server_and_the_documented_lists() {
        assert_eq!(
            parse("nats://127.0.0.1:4222").unwrap().urls(),
            ["nats://127.0.0.1:4222"]
        );
        let cluster = [
            "nats://nats-1:4222",
            "nats://nats-2:4222",
            "nats://nats-3:4222",
        ];
        // compose.yaml's list; and with spaces, a trailing path slash, default ports, bare
        // host:port and tls.
        for list in [
            "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222",
            "nats://nats-1:4222, nats://nats-2:4222 ,  nats://nats-3:4222 ",
            " nats://nats-1 ,nats://nats-2:4222/,nats-3:4222",
        ] {
            let servers = parse(list).unwrap();
            assert_eq!(servers.urls(), cluster, "{list}");
            assert!(servers.auth().is_none());
            assert_eq!(servers.to_string(), cluster.join(","));
        }
        assert_eq!(
            parse("tls://nats.example.com:7422,nats://[::1]:4223")
                .unwrap()
                .urls(),
            ["tls://nats.example.com:7422", "nats://[::1]:4223"]
        );
    }

    #[test]
    fn credentials_in_the_urls_are_taken_out() {
        let servers = parse("nats://app:s3cr%40t@nats-1:4222, nats://app:s3cr%40t@nats-2").unwrap();
        assert_eq!(servers.urls(), ["nats://nats-1:4222", "nats://nats-2:4222"]);
        let Some(NatsAuth::UserPassword { user, password }) = servers.auth() else {
            panic!("user and password expected");
        };
        assert_eq!((user.as_str(), password.expose_secret()), ("app", "s3cr@t"));
        // In one URL only: used for all of them.
        let servers = parse("nats://nats-1:4222,nats://app:pw@nats-2:4222").unwrap();
        assert!(matches!(
            servers.auth(),
            Some(NatsAuth::UserPassword { .. })
        ));
        // A token.
        let servers = parse("nats://t0k3n@nats-1,nats://nats-2").unwrap();
        let Some(NatsAuth::Token(token)) = servers.auth() else {
            panic!("a token expected");
        };
        assert_eq!(token.expose_secret(), "t0k3n");
        // Neither Display nor Debug shows them.
        let shown = format!("{servers} {servers:?}");
        assert!(!shown.contains("t0k3n"), "{shown}");
    }

    #[test]
    fn credentials_in_nats_credentials() {
        let creds = SecretString::from("app:pw:with:colons".to_string());
        let servers = NatsServers::parse("nats://a:4222,nats://b:4222", Some(&creds)).unwrap();
        let Some(NatsAuth::UserPassword { user, password }) = servers.auth() else {
            panic!("user and password expected");
        };
        assert_eq!(
            (user.as_str(), password.expose_secret()),
            ("app", "pw:with:colons")
        );
        let token = SecretString::from("t0k3n".to_string());
        let servers = NatsServers::parse("nats://a", Some(&token)).unwrap();
        assert!(matches!(servers.auth(), Some(NatsAuth::Token(_))));
        // Not in both places; not empty.
        let e = NatsServers::parse("nats://u:pw@a", Some(&token))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("both in the URLs and in nats_credentials"),
            "{e}"
        );
        assert!(!e.contains("pw") && !e.contains("t0k3n"), "{e}");
        let empty = SecretString::from(String::new());
        assert!(NatsServers::parse("nats://a", Some(&empty)).is_err());
    }

    #[test]
    fn a_malformed_entry_is_named_with_its_credentials_redacted() {
        // The failure: a bad port in the second of three entries.
        let e = error("nats://nats-1:4222,nats://app:hunter2@nats-2:42x22,nats://nats-3:4222");
        assert_eq!(
            e,
            "invalid nats_url: entry 2 of 3 \"nats://***@nats-2:42x22\": not a URL (invalid port number)"
        );
        for (list, named, why) in [
            ("nats://a:4222,,nats://b:4222", "entry 2 of 3 \"\"", "empty"),
            ("nats://a:4222,nats://b:4222,", "entry 3 of 3 \"\"", "empty"),
            ("nats://a:4222 nats://b:4222", "entry 1 of 1", "white space"),
            ("nats://a:4222;nats://b:4222", "entry 1 of 1", "not a URL"),
            (
                "http://a:4222,nats://b",
                "entry 1 of 2 \"http://a:4222\"",
                "scheme \"http\"",
            ),
            ("nats://a:99999", "entry 1 of 1", "invalid port number"),
            ("nats://a:0", "entry 1 of 1", "port 0"),
            ("nats://:4222", "entry 1 of 1", "not a URL"),
            ("nats://a:4222/stream", "entry 1 of 1", "no path"),
            ("nats://a:4222?x=1", "entry 1 of 1", "no path, query"),
            (
                "nats://:pw@a:4222",
                "entry 1 of 1 \"nats://***@a:4222\"",
                "password without a user",
            ),
            (
                "nats://u:pw@a,nats://v:pw@b",
                "entry 2 of 2 \"nats://***@b\"",
                "other credentials than entry 1",
            ),
            (
                "nats://u:pw@a,nats://u:other@b",
                "entry 2 of 2",
                "other credentials",
            ),
            (
                "nats://tok@a,nats://u:tok@b",
                "entry 2 of 2",
                "other credentials",
            ),
        ] {
            let e = error(list);
            assert!(e.contains(named) && e.contains(why), "{list}: {e}");
            assert!(
                !e.contains("pw") && !e.contains("other@") && !e.contains("tok@"),
                "{list}: {e}"
            );
        }
        assert_eq!(error(""), "invalid nats_url: no NATS server given");
        assert_eq!(error("  "), "invalid nats_url: no NATS server given");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("nats://user:pass@h:4222"), "nats://***@h:4222");
        assert_eq!(redact("nats://t0k3n@h"), "nats://***@h");
        assert_eq!(redact("nats://u:p@ss/w@rd@h:4222"), "nats://***@h:4222");
        assert_eq!(redact("u:p@h:4222"), "***@h:4222");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
        assert_eq!(redact(""), "");
    }
}
