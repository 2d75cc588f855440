//! Given/when/then tests of every rule of the appreg domain (DESIGN §1).
//!
//! One integration-test binary; each module covers one part of the domain. `support` holds the
//! small given/when/then harness and the fixtures (fixed ids, users and times: no clock, no
//! randomness outside the property tests' seeded strategies).

mod support;

mod api_keys;
mod archive_restore;
mod authorize;
mod catalogue;
mod claims;
mod create;
mod dcr;
mod events;
mod lifecycle;
mod notifications;
mod orphans;
mod properties;
mod provider;
mod settings;
mod subscription_properties;
mod subscriptions;
mod update;
mod values;
mod webhooks;
