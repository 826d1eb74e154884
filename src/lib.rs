//! sagaflow: a durable saga processor on RabbitMQ and Postgres.
pub mod messages;
pub mod saga;
