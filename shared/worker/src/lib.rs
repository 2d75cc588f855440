//! What the background processes share: the leader lock that keeps one instance of a process
//! active per database, the checkpointed follower of the event log, and what an event looks like
//! on NATS JetStream (the stream, the subjects, the envelope and its headers).
//!
//! - [`lock`]: a PostgreSQL session advisory lock held on a dedicated connection
//!   ([`Leadership`]), and [`lead`], which runs a process while it holds it; the relay, the DCR
//!   saga and the lifecycle process manager use it.
//! - [`follower`]: leader + checkpoint + tail of the log, handing events to a [`Handler`] (the
//!   DCR saga and the lifecycle process manager), and [`parked`]: the events it parked after
//!   repeated failures, listed and retried by operators.
//! - [`consumer`]: a durable JetStream pull consumer feeding a [`Handler`] with the events the
//!   store confirms (the notifier in production), and the creation or update of a consumer.
//! - [`stream`]: the JetStream stream's definition and its creation or update ([`Ensured`]), and
//!   the comparison of settings that consumers' set-up uses too.
//! - [`supervise`]: background tasks restarted with back-off when they die, their state for
//!   `/readyz` and `/healthz`.
//! - [`subject`]: the subject of an event and the reversible escaping of its tokens.
//! - [`envelope`]: the one body ([`Envelope`]) and the headers of an event message; the api's
//!   Server-Sent Events carry the same body.
//!
//! - [`connect`]: a service's database pool and NATS client; [`probes`]: its metrics listener
//!   (`/metrics`, `/healthz`, `/readyz`) and checkpoint-lag gauges.
//!
//! This crate never writes to the event store (only a follower's checkpoint row) and never
//! decides anything about an event: it is plumbing that the processes compose.

pub mod connect;
pub mod consumer;
pub mod envelope;
pub mod follower;
#[cfg(test)]
mod follower_tests;
pub mod lock;
pub mod parked;
pub mod probes;
pub mod service;
pub mod stream;
pub mod subject;
pub mod supervise;

pub use envelope::Envelope;
pub use follower::{follow, Checkpoint, FollowerConfig, Handler, Outcome};
pub use lock::{lead, Leadership};
pub use parked::Parking;
pub use stream::Ensured;
pub use supervise::{RestartPolicy, Supervisor};
