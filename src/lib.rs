//! sagaflow: a durable saga processor on RabbitMQ and Postgres.
pub mod api;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod coordinator;
pub mod demo;
pub mod dlq;
pub mod launch;
pub mod messages;
pub mod ops;
pub mod runtime;
pub mod saga;
pub mod scheduler;
pub mod store;
pub mod worker;
