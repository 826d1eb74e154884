//! sagaflow: a durable saga processor on RabbitMQ and Postgres.
//!
//! Services start sagas by publishing an event; coordinators keep each saga's state,
//! history and outgoing messages in Postgres (one transaction per batch: a
//! transactional outbox); workers run the activities idempotently; failed steps are
//! retried through RabbitMQ delay queues and undone by compensations in reverse.
//!
//! What an embedder uses: [`worker`] (register handlers, run them), [`client`] (start
//! sagas, send signals and cancels), [`saga`] (definitions and the pure machine),
//! [`messages`] (the wire contract) and [`config`]. The rest is public so a deployment
//! can run a coordinator, the scheduler or the API in-process and so the integration
//! tests can drive them; the command line, the demo and the benchmarks ([`cli`],
//! [`tools`]) sit behind the default `tools` feature.
//!
//! The module map, the glossary and the life of one saga (which file handles each hop
//! from start event to terminal event) are in `docs/architecture.md`, the one place
//! they are kept.
#![deny(unsafe_code)]

pub mod api;
pub mod broker;
#[cfg(feature = "tools")]
pub mod cli;
pub mod client;
pub mod config;
pub mod coordinator;
pub mod dead_letters;
pub mod health;
pub mod hops;
pub mod messages;
pub mod operator;
pub mod redact;
pub mod runtime;
pub mod saga;
pub mod scheduler;
pub mod store;
pub mod telemetry;
#[cfg(feature = "tools")]
pub mod tools;
pub mod traceparent;
pub mod versions;
pub mod worker;
