//! The client of a DCR provider (an OpenID Connect provider offering RFC 7591 registration and
//! RFC 7592 management), what it needs from a provider as the events record it, and where the
//! secrets of DCR live in the vault. The api (validating a provider live) and the DCR saga
//! (registering clients) both use it.
//!
//! - [`provider`]: the HTTP client (discovery, initial access tokens, register / update / delete /
//!   renew) and the OpenID Connect metadata mapping.
//! - [`settings`]: a recorded provider and its secret → the client's [`provider::ProviderSettings`].
//! - [`vault`]: the vault owners and kinds of providers' and applications' secrets.
//!
//! Its test harnesses (the real `oidc-provider`, a recording HTTP server) are in
//! `appreg-test-support`.
//!
//! This crate never reads or writes the event store or the vault itself: callers pass the
//! secrets in and store what comes back.

pub mod provider;
pub mod settings;
pub mod vault;
