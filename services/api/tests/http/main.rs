//! HTTP tests of the api: the real router and projector on a random port, the real database
//! (PostgreSQL and SQLite), real signed tokens. Every scenario runs on both backends.

mod helpers;

mod applications;
mod archive;
mod audit;
mod auth;
mod browsers;
mod consistency;
mod directory;
mod environments;
mod erasure;
mod event_limits;
mod events;
mod history;
mod list_filters;
mod listing;
mod members;
mod past_state;
mod permissions;
mod portal;
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
mod webhooks;
