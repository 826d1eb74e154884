//! A small client for services and the CLI: start sagas, send signals and cancels.
//! Every publish is confirmed and mandatory, so "ok" means the broker has it.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::broker::{topology, Names, Outgoing, PublishError, Publisher};
use crate::messages::StartEvent;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Connect(#[from] crate::broker::ConnectError),
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
}

/// A connection that publishes start events, signals and cancels.
pub struct Client {
    conn: lapin::Connection,
    publisher: Publisher,
    names: Names,
}

/// Options of one start.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub id: Option<String>,
    pub delay: Option<String>,
    pub start_at: Option<DateTime<Utc>>,
    pub version: Option<u32>,
}

impl Client {
    /// Connects and declares the exchanges (so a client may start before a coordinator).
    pub async fn connect(amqp_url: &str, namespace: &str) -> Result<Client, ClientError> {
        let conn = crate::broker::connect(amqp_url, "sagaflow-client").await?;
        let names = Names::new(namespace);
        let ch = conn.create_channel().await?;
        topology::declare_exchanges(&ch, &names).await?;
        let publisher = Publisher::open(&conn).await?;
        Ok(Client {
            conn,
            publisher,
            names,
        })
    }

    /// Publishes start events for `(saga, input, options)` in one confirmed batch.
    pub async fn start_many(
        &self,
        starts: &[(String, Value, StartOptions)],
    ) -> Result<(), ClientError> {
        let bodies: Vec<Vec<u8>> = starts
            .iter()
            .map(|(saga, input, o)| {
                // An id chosen here, not by the coordinator, makes a redelivered start idempotent.
                let id =
                    o.id.clone()
                        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                let e = StartEvent {
                    saga: Some(saga.clone()),
                    id: Some(id),
                    input: input.clone(),
                    delay: o.delay.clone(),
                    start_at: o.start_at,
                    version: o.version,
                };
                serde_json::to_vec(&e).expect("start event serialises")
            })
            .collect();
        let exchange = self.names.start();
        let msgs: Vec<Outgoing> = starts
            .iter()
            .zip(&bodies)
            .map(|((saga, _, _), body)| Outgoing {
                exchange: &exchange,
                routing_key: saga,
                body,
                mandatory: true,
                headers: None,
            })
            .collect();
        self.publisher.publish_all_or_fail(&msgs).await?;
        Ok(())
    }

    pub async fn start(
        &self,
        saga: &str,
        input: Value,
        options: StartOptions,
    ) -> Result<(), ClientError> {
        self.start_many(&[(saga.to_string(), input, options)]).await
    }

    /// Sends a named signal to a saga.
    pub async fn signal(
        &self,
        saga_id: &str,
        name: &str,
        payload: Value,
    ) -> Result<(), ClientError> {
        self.control(json!({"saga_id": saga_id, "signal": name, "payload": payload}))
            .await
    }

    /// Sends an operator action (retry, resume_at, skip, compensate) to a saga.
    /// Sends an operator action decided when the saga stood at `issued_for`
    /// (`IssuedFor::of` the stored state); the coordinator refuses it if the saga
    /// moved on meanwhile.
    pub async fn operate(
        &self,
        saga_id: &str,
        action: &crate::saga::machine::OperatorAction,
        issued_for: &crate::saga::machine::IssuedFor,
    ) -> Result<(), ClientError> {
        self.control(json!({"saga_id": saga_id, "operator": action, "issued_for": issued_for}))
            .await
    }

    /// Asks a saga to stop and undo its completed steps.
    pub async fn cancel(&self, saga_id: &str, reason: &str) -> Result<(), ClientError> {
        self.control(json!({"saga_id": saga_id, "cancel": true, "reason": reason}))
            .await
    }

    async fn control(&self, body: Value) -> Result<(), ClientError> {
        let body = body.to_string();
        let exchange = self.names.signals();
        let msg = Outgoing {
            exchange: &exchange,
            routing_key: "",
            body: body.as_bytes(),
            mandatory: true,
            headers: None,
        };
        self.publisher.publish_all_or_fail(&[msg]).await?;
        Ok(())
    }

    /// Publishes raw bytes (tests use it to send malformed messages).
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
    ) -> Result<(), ClientError> {
        let msg = Outgoing {
            exchange,
            routing_key,
            body,
            mandatory: true,
            headers: None,
        };
        self.publisher.publish_all_or_fail(&[msg]).await?;
        Ok(())
    }

    /// Whether the underlying connection is still open (readiness checks, reconnecting).
    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }

    /// The connection, for read-only inspection (passive queue declares).
    pub fn connection(&self) -> &lapin::Connection {
        &self.conn
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}
