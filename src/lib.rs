//! sagaflow: a durable saga processor on RabbitMQ and Postgres.
//!
//! Services start sagas by publishing an event; coordinators keep each saga's state,
//! history and outgoing messages in Postgres (one transaction per batch: a
//! transactional outbox); workers run the activities idempotently; failed steps are
//! retried through RabbitMQ delay queues and undone by compensations in reverse.
//!
//! # Layout
//! - [`saga`] — the pure core: definitions ([`saga::definition`]), the state
//!   ([`saga::state`]), the machine `(def, state, event, now) -> decision`
//!   ([`saga::machine`]) and retry maths ([`saga::retry`]). No I/O.
//! - [`messages`] — the wire contract (JSON bodies).
//! - [`store`] — all SQL: sagas and history, outbox, ledger, schedules, counters.
//! - [`broker`] — all AMQP: names and topology, confirmed publishing, consumption
//!   (one intake that settles each delivery exactly once), connecting.
//! - [`coordinator`] — batches of inputs -> one transaction -> ack; outbox relay and
//!   sweeper; wake-up scan; dead tasks as failed attempts; the stuck-saga reconciler.
//! - [`health`] — a process's own liveness, readiness and probe server.
//! - [`worker`] — the activity runtime and its public API.
//! - [`scheduler`] — cron schedules; their administration is [`scheduler::admin`].
//! - [`client`] — starting sagas, signals, cancels, operator actions.
//! - [`operator`], [`dead_letters`], [`api`], [`cli`] — the operator surface:
//!   checked operator actions on sagas, dead-letter inspection and replay, the HTTP
//!   API (its OpenAPI document generated from the routes) and the command line.
//! - [`demo`], [`bench`](mod@bench), [`launch`], [`runtime`], [`config`] — the rest.
//!
//! # Glossary
//! - **definition**: a named, versioned list of steps (`sagas/*.toml`).
//! - **saga**: one run of a definition, identified by a string id.
//! - **step**: `activity` (with optional compensation), `sleep`, `sleep_until`, `wait`.
//! - **task**: one attempt chain of one activity for one step (action or
//!   compensation); each attempt is one message; its `idempotency_key` is
//!   `<saga>:<step>:<kind>`.
//! - **event**: what happens to a saga (a result, a wake-up, a signal, a cancel).
//! - **command**: what the machine asks for (dispatch a task, publish an outcome).
//! - **history**: the append-only audit trail of a saga.
//! - **outbox**: messages committed with the state change that caused them.
//! - **ledger**: the workers' record of completed tasks, by idempotency key.
//! - **no-answer deadline**: the coordinator's deadline of an attempt that never
//!   reports `started` (`start_to_close` + 5 min after scheduling).
//! - **generation**: how often an operator resumed a saga; part of the idempotency
//!   keys of the steps it re-runs.
//! - **stuck**: not finished, no timer, nothing in flight, not waiting for a signal.
//! - **dead letter**: a message the broker or a consumer set aside with a reason, in
//!   `<ns>.dlq.<activity>` or `<ns>.dlq.coordinator`; the operator lists, replays or
//!   purges them (`sagaflow dead-letters …`).
//! - **operator action**: `retry`, `resume_at`, `skip` or `compensate` on one saga,
//!   checked against the saga as stored before it is sent (`sagaflow sagas …`).
//! - **schedule administration**: adding, pausing, resuming, triggering and deleting
//!   cron schedules (`sagaflow schedules …`).
pub mod api;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod coordinator;
pub mod dead_letters;
pub mod demo;
pub mod health;
pub mod launch;
pub mod messages;
pub mod operator;
pub mod runtime;
pub mod saga;
pub mod scheduler;
pub mod store;
pub mod worker;
