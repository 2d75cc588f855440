//! The verification keys of the trusted issuer: the development key, or an external issuer's
//! JWKS kept between requests.
//!
//! The JWKS is fetched by one request at a time (single flight) and no lock is held across the
//! HTTP call: a verification whose key is known never waits for a fetch. Keys older than
//! `max_age` are refreshed in the background while they stay in use; a token naming an unknown
//! key makes the keys be fetched again at most once per `unknown_kid_interval`; when the
//! endpoint fails, the last good keys stay in use until `max_age + stale_if_error`, logged and
//! counted, and failed fetches are retried at most once per `retry_interval`. What this module
//! must never do: trust keys it did not fetch from the configured URL, or let a token choose a
//! key by guessing (a token without `kid` is accepted only when the issuer publishes exactly one
//! key).

use crate::{AuthError, JwksSettings, JwksStats};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Largest JWKS document read, in bytes (an issuer publishes a few keys).
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Where the verification keys come from.
pub(crate) enum Keys {
    /// A fixed set (the development key).
    Static(JwkSet),
    /// An external issuer's JWKS.
    Remote(RemoteKeys),
}

impl Keys {
    /// The key that verifies a token naming `kid`.
    pub(crate) async fn key_for(&self, kid: Option<&str>) -> Result<Jwk, AuthError> {
        match self {
            Keys::Static(keys) => {
                select(keys, kid)?.ok_or_else(|| AuthError::Invalid("unknown signing key".into()))
            }
            Keys::Remote(remote) => remote.key_for(kid).await,
        }
    }

    pub(crate) fn stats(&self) -> JwksStats {
        match self {
            Keys::Static(_) => JwksStats::default(),
            Keys::Remote(remote) => remote.shared.stats(),
        }
    }
}

/// The key of `keys` named `kid`; a token without `kid` only when there is exactly one key
/// (with several, the first key would be a guess, and an order the issuer never promised).
fn select(keys: &JwkSet, kid: Option<&str>) -> Result<Option<Jwk>, AuthError> {
    match kid {
        Some(kid) => Ok(keys
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned()),
        None => match keys.keys.as_slice() {
            [only] => Ok(Some(only.clone())),
            _ => Err(AuthError::Invalid(
                "the token names no key (kid) and the issuer publishes several".into(),
            )),
        },
    }
}

/// An external issuer's keys, fetched from its JWKS URL.
pub(crate) struct RemoteKeys {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    client: reqwest::Client,
    settings: JwksSettings,
    state: Mutex<State>,
    /// Held by the one fetch in flight, never by a reader of the keys.
    flight: Arc<tokio::sync::Mutex<()>>,
    fetches: AtomicU64,
    failures: AtomicU64,
    stale_uses: AtomicU64,
}

#[derive(Clone)]
struct State {
    /// The last keys fetched successfully.
    keys: Arc<JwkSet>,
    /// When they were fetched.
    fetched_at: Option<Instant>,
    /// When the last fetch started (successful or not).
    attempted_at: Option<Instant>,
    /// Whether the last finished fetch failed.
    failed: bool,
    /// Fetches finished so far: a request that waited for the fetch in flight sees it change.
    generation: u64,
}

impl RemoteKeys {
    pub(crate) fn new(url: String, settings: JwksSettings) -> Result<RemoteKeys, AuthError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AuthError::KeysUnavailable(e.to_string()))?;
        Ok(RemoteKeys {
            shared: Arc::new(Shared {
                url,
                client,
                settings,
                state: Mutex::new(State {
                    keys: Arc::new(JwkSet { keys: vec![] }),
                    fetched_at: None,
                    attempted_at: None,
                    failed: false,
                    generation: 0,
                }),
                flight: Arc::new(tokio::sync::Mutex::new(())),
                fetches: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                stale_uses: AtomicU64::new(0),
            }),
        })
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<Jwk, AuthError> {
        let shared = &self.shared;
        let mut st = shared.snapshot();
        if !shared.usable(&st) {
            // Nothing to verify with: wait for a fetch (the one in flight, or a new one).
            shared.fetch_after(st.generation).await?;
            st = shared.snapshot();
            if !shared.usable(&st) {
                return Err(AuthError::KeysUnavailable(
                    "no keys of the issuer could be fetched".into(),
                ));
            }
        } else if shared.due(&st) {
            shared.stale_uses.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("appreg_jwks_stale_keys_total").increment(1);
            self.refresh_in_background();
        }
        if let Some(key) = select(&st.keys, kid)? {
            return Ok(key);
        }
        // An unknown key: perhaps the issuer rotated its keys, perhaps a forgery. The keys are
        // fetched again at most once per interval, and a failure is no outage (the keys in use
        // are good): the token is refused.
        let recently = st
            .attempted_at
            .is_some_and(|t| t.elapsed() < shared.settings.unknown_kid_interval);
        if recently {
            return Err(AuthError::Invalid("unknown signing key".into()));
        }
        if let Err(e) = shared.fetch_after(st.generation).await {
            tracing::info!(error = %e, "a token names an unknown key, and the keys cannot be fetched again");
        }
        select(&shared.snapshot().keys, kid)?
            .ok_or_else(|| AuthError::Invalid("unknown signing key".into()))
    }

    /// Starts a refresh of keys past `max_age`, unless one is in flight or one failed less
    /// than `retry_interval` ago. Requests go on with the keys they have meanwhile.
    fn refresh_in_background(&self) {
        let Ok(guard) = self.shared.flight.clone().try_lock_owned() else {
            return;
        };
        let st = self.shared.snapshot();
        if !self.shared.due(&st) || self.shared.retry_too_soon(&st) {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let _flight = guard;
            let _ = shared.fetch().await;
        });
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self) -> State {
        self.lock().clone()
    }

    /// Keys that may still verify tokens (fetched less than `max_age + stale_if_error` ago).
    fn usable(&self, st: &State) -> bool {
        let limit = self.settings.max_age + self.settings.stale_if_error;
        st.fetched_at.is_some_and(|t| t.elapsed() <= limit)
    }

    /// Keys past `max_age` (or none).
    fn due(&self, st: &State) -> bool {
        st.fetched_at
            .is_none_or(|t| t.elapsed() > self.settings.max_age)
    }

    fn retry_too_soon(&self, st: &State) -> bool {
        st.failed
            && st
                .attempted_at
                .is_some_and(|t| t.elapsed() < self.settings.retry_interval)
    }

    /// Fetches the keys unless a fetch finished since `generation` was read (the caller waited
    /// for it) or the last one failed less than `retry_interval` ago.
    async fn fetch_after(&self, generation: u64) -> Result<(), AuthError> {
        let _flight = self.flight.lock().await;
        let st = self.snapshot();
        if st.generation != generation {
            return Ok(());
        }
        if self.retry_too_soon(&st) {
            return Err(AuthError::KeysUnavailable(
                "the last fetch of the issuer's keys failed moments ago".into(),
            ));
        }
        self.fetch().await
    }

    /// One fetch of the JWKS; the caller holds `flight`.
    async fn fetch(&self) -> Result<(), AuthError> {
        self.lock().attempted_at = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = self.download().await;
        let mut st = self.lock();
        st.generation += 1;
        match result {
            Ok(keys) => {
                metrics::counter!("appreg_jwks_fetches_total", "result" => "ok").increment(1);
                st.keys = Arc::new(keys);
                st.fetched_at = Some(Instant::now());
                st.failed = false;
                Ok(())
            }
            Err(reason) => {
                metrics::counter!("appreg_jwks_fetches_total", "result" => "error").increment(1);
                self.failures.fetch_add(1, Ordering::Relaxed);
                st.failed = true;
                let age = st.fetched_at.map(|t| t.elapsed().as_secs());
                let usable = self.usable(&st);
                drop(st);
                if usable {
                    tracing::warn!(%reason, keys_age_seconds = age, "the issuer's keys cannot be fetched; the last good keys stay in use");
                } else {
                    tracing::error!(%reason, keys_age_seconds = age, "the issuer's keys cannot be fetched, and none are usable: tokens cannot be verified");
                }
                Err(AuthError::KeysUnavailable(reason))
            }
        }
    }

    async fn download(&self) -> Result<JwkSet, String> {
        let mut response = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.without_url().to_string())?;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| e.without_url().to_string())?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let keys: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        if keys.keys.is_empty() {
            return Err("the JWKS holds no key".into());
        }
        Ok(keys)
    }

    fn stats(&self) -> JwksStats {
        JwksStats {
            fetches: self.fetches.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            stale_uses: self.stale_uses.load(Ordering::Relaxed),
        }
    }
}
