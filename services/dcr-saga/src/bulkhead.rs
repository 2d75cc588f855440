//! Per-provider bulkheads: each provider (environment, provider id) has its own budget of calls
//! in flight ([`crate::SagaConfig::provider_concurrency`]). A request waits only for a slot of
//! its own provider, so a provider that hangs (each call held until its timeout, then retried)
//! holds its own slots and nothing else: the saga's window of requests in flight is much larger
//! than one provider's budget, and the other providers' requests proceed.
//!
//! A request waits here holding no database connection and no transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) struct Bulkheads {
    per_provider: usize,
    slots: Mutex<HashMap<(String, String), Arc<Semaphore>>>,
}

impl Bulkheads {
    pub(crate) fn new(per_provider: usize) -> Self {
        Bulkheads {
            per_provider: per_provider.max(1),
            slots: Mutex::default(),
        }
    }

    /// A slot of the provider `provider_id` of `environment`, waiting for one if its budget is
    /// spent. Held until the provider call (with its retries) is over.
    pub(crate) async fn enter(
        &self,
        environment: &str,
        provider_id: &str,
    ) -> Option<OwnedSemaphorePermit> {
        let semaphore = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((environment.to_string(), provider_id.to_string()))
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_provider)))
            .clone();
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Some(permit);
        }
        metrics::counter!("appreg_dcr_bulkhead_waits_total").increment(1);
        tracing::debug!(
            provider_id,
            "the provider's budget of calls in flight is spent; waiting"
        );
        // Never closed: an error is impossible (and would only let the call through).
        semaphore.acquire_owned().await.ok()
    }
}
