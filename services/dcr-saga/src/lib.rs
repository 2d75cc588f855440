//! The DCR saga: reacts to `*Requested` events and talks to the environment's client
//! registration provider (RFC 7591 registration, RFC 7592 management, secret renewal).
//!
//! - [`provider`]: the HTTP client for a DCR provider (discovery, initial access tokens,
//!   register / update / delete / renew) and the OpenID Connect metadata mapping.
//! - [`testing`]: a real `oidc-provider` (npm) started on a free loopback port, for tests.

pub mod apps;
mod loader;
pub mod provider;
mod recorder;
pub mod run;
pub mod saga;
pub mod settings;
pub mod testing;

pub use run::{migrate, run};
pub use saga::{Saga, SagaConfig, SagaError};
