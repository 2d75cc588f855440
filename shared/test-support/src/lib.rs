//! What appreg's tests and benchmarks share. A dev-dependency only: no production crate depends
//! on it, and no production crate ships a test harness.
//!
//! - [`bench`]: the benchmark programs' databases and load average.
//! - [`postgres`]: a throw-away database per test on the test server (never a skip).
//! - [`nats`]: private `nats-server` processes on free ports (with the deployment's accounts),
//!   and checks of what the relay published.
//! - [`oidc`]: the real OpenID Connect provider of `tests/oidc-provider` (npm `oidc-provider`),
//!   started on a free port, with its fault injection.
//! - [`python`]: virtualenvs of the pinned Python tools the tests drive.
//! - [`settle`]: waiting for a whole system to settle, and the applications its log holds.
//! - [`recorder`]: a loopback HTTP server that records what it receives and answers what a test
//!   tells it (a hostile or broken "provider").
//! - [`tokens`]: development tokens signed with a key generated for the run.
//! - [`schemas`] (feature `schemas`): the published JSON Schemas, and the check that every
//!   stored event matches its own.
//! - [`app`] (feature `app`): the real api on a random port over a test's database.

// Test code: a harness that cannot do its job fails the test at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "app")]
pub mod app;
pub mod bench;
pub mod nats;
pub mod oidc;
pub mod postgres;
pub mod python;
pub mod recorder;
#[cfg(feature = "schemas")]
pub mod schemas;
pub mod settle;
pub mod tokens;
