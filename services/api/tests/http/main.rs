//! HTTP tests of the api: the real router and projector on a random port, the real database
//! (PostgreSQL and SQLite), real signed tokens. Every scenario runs on both backends.

mod helpers;

mod applications;
mod archive;
mod auth;
mod consistency;
mod environments;
mod event_limits;
mod events;
mod history;
mod listing;
mod members;
mod permissions;
mod projection;
mod providers;
mod races;
mod rebuild;
mod settings;
mod subscriptions;
mod system;
mod tenancy;
mod tracing;
mod users;
mod validation;
