//! Settings of the DCR saga (`[dcr]` in the file, `APPREG_DCR__*` in the environment).

use serde::{Deserialize, Serialize};

/// How the DCR saga shares its work between providers, retries a provider's failing calls, and
/// when it gives up on a request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct DcrSettings {
    /// Requests in flight at the same time (read from the log, not yet finished). Keep it well
    /// above `provider_concurrency`: a hanging provider's requests then never fill it.
    pub max_in_flight: usize,
    /// Calls in flight to one provider: its bulkhead. A provider that hangs holds this many
    /// calls and no more; the other providers' requests proceed.
    pub provider_concurrency: usize,
    /// Failed tries of a request (the database, the vault or the command path failing every
    /// time) before it is parked (`appreg saga parked`, `appreg saga retry`); 0: never.
    pub park_after: u32,
    /// Calls of the provider per request, in all (5xx, timeouts, resets); at least 1.
    pub attempts: u32,
    /// First pause between two calls of the provider, in milliseconds; doubled each time (±25%
    /// jitter) up to `max_delay_ms`.
    pub first_delay_ms: u64,
    /// Longest pause between two calls of the provider, in milliseconds.
    pub max_delay_ms: u64,
}

impl Default for DcrSettings {
    fn default() -> Self {
        DcrSettings {
            max_in_flight: 256,
            provider_concurrency: 16,
            park_after: 10,
            attempts: 5,
            first_delay_ms: 2000,
            max_delay_ms: 60_000,
        }
    }
}
