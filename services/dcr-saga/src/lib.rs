//! The DCR saga: reacts to `*Requested` events and talks to the environment's client
//! registration provider (RFC 7591 registration, RFC 7592 management, secret renewal) through
//! the provider client of `appreg_dcr_client`.

pub mod apps;
mod batch;
mod bulkhead;
mod loader;
mod marks;
pub mod public_clients;
mod recorder;
pub mod run;
pub mod saga;
pub mod service;

pub use run::{migrate, parked, retry_parked, run};
pub use saga::{Saga, SagaConfig, SagaError};
