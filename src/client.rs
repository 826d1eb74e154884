//! A small client for services and the CLI: start sagas, send signals and cancels.
//! Every publish is confirmed and mandatory, so "ok" means the broker has it.
//!
//! A message over `[limits]` is refused here, before it is published, with the same
//! reason the coordinator would dead-letter it with.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::broker::{self, topology, Names, Outgoing, Publisher};
use crate::config::{LimitError, Limits};
use crate::messages::{SagaEvent, StartEvent, StartSignal};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Broker(#[from] broker::Error),
    /// Refused locally: the coordinator would dead-letter it.
    #[error("{0}")]
    Limit(#[from] LimitError),
}

/// A connection that publishes start events, signals and cancels.
pub struct Client {
    conn: broker::Connection,
    publisher: Publisher,
    names: Names,
    limits: Limits,
}

/// Options of one start.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub id: Option<String>,
    pub delay: Option<String>,
    pub start_at: Option<DateTime<Utc>>,
    pub version: Option<u32>,
    /// The W3C trace context to start the saga's trace under (sent as the
    /// `traceparent` header); the coordinator starts a new trace without one.
    pub traceparent: Option<String>,
}

/// The body of one start event, refused as the coordinator would refuse it (checks in
/// its order, so the reason is the same).
fn start_body(
    limits: &Limits,
    saga: &str,
    input: &Value,
    o: &StartOptions,
    signal: Option<&StartSignal>,
) -> Result<Vec<u8>, LimitError> {
    // An id chosen here, not by the coordinator, makes a redelivered start idempotent.
    let id =
        o.id.clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let e = StartEvent {
        saga: Some(saga.to_string()),
        id: Some(id),
        input: input.clone(),
        delay: o.delay.clone(),
        start_at: o.start_at,
        version: o.version,
        signal: signal.cloned(),
        parent: None,
    };
    let body = serde_json::to_vec(&e).expect("start event serialises");
    limits.check_message("start body", &body)?;
    limits.check_id("id", e.id.as_deref().unwrap_or_default())?;
    limits.check_payload("start input", input)?;
    if let Some(s) = signal {
        limits.check_payload("signal payload", &s.payload)?;
    }
    Ok(body)
}

/// The body of a message to `<ns>.signals` (signal, cancel, operator action), refused
/// as the coordinator would refuse it: the body, the saga id, then its payload.
fn control_body(
    limits: &Limits,
    saga_id: &str,
    body: &Value,
    payload: Option<(&str, &Value)>,
) -> Result<String, LimitError> {
    let body = body.to_string();
    limits.check_message("signal body", body.as_bytes())?;
    limits.check_id("saga_id", saga_id)?;
    if let Some((what, v)) = payload {
        limits.check_payload(what, v)?;
    }
    Ok(body)
}

impl Client {
    /// Connects and declares the exchanges (so a client may start before a coordinator).
    /// Messages are held to the default `[limits]`; see [`Client::with_limits`].
    pub async fn connect(amqp_url: &str, namespace: &str) -> Result<Client, ClientError> {
        let conn = broker::connect(amqp_url, "sagaflow-client").await?;
        let names = Names::new(namespace);
        topology::declare_exchanges(&conn, &names).await?;
        let publisher = Publisher::open(&conn).await?;
        Ok(Client {
            conn,
            publisher,
            names,
            limits: Limits::default(),
        })
    }

    /// Holds outgoing messages to `limits` (those of the coordinators, `settings.limits`).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Publishes start events for `(saga, input, options)` in one confirmed batch.
    pub async fn start_many(
        &self,
        starts: &[(String, Value, StartOptions)],
    ) -> Result<(), ClientError> {
        let bodies = starts
            .iter()
            .map(|(saga, input, o)| start_body(&self.limits, saga, input, o, None))
            .collect::<Result<Vec<_>, _>>()?;
        let exchange = self.names.start();
        let msgs: Vec<Outgoing> = starts
            .iter()
            .zip(&bodies)
            .map(|((saga, _, o), body)| Outgoing {
                exchange: &exchange,
                routing_key: saga,
                body,
                mandatory: true,
                headers: broker::trace_headers(o.traceparent.as_deref()),
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

    /// Signal-with-start: starts `saga` with `input` unless a saga with `opts.id`
    /// exists, then delivers the signal `name`, in one coordinator transaction (so the
    /// signal can neither be lost before the start nor start a second saga).
    pub async fn signal_with_start(
        &self,
        saga: &str,
        input: Value,
        opts: StartOptions,
        name: &str,
        payload: Value,
    ) -> Result<(), ClientError> {
        let signal = StartSignal {
            name: name.to_string(),
            payload,
        };
        let body = start_body(&self.limits, saga, &input, &opts, Some(&signal))?;
        let exchange = self.names.start();
        let msg = Outgoing {
            exchange: &exchange,
            routing_key: saga,
            body: &body,
            mandatory: true,
            headers: broker::trace_headers(opts.traceparent.as_deref()),
        };
        self.publisher.publish_all_or_fail(&[msg]).await?;
        Ok(())
    }

    /// Sends a named signal to a saga.
    pub async fn signal(
        &self,
        saga_id: &str,
        name: &str,
        payload: Value,
    ) -> Result<(), ClientError> {
        let body = json!({"saga_id": saga_id, "signal": name, "payload": payload});
        let exchange = self.names.signals();
        self.control(&exchange, saga_id, body, Some(("signal payload", &payload)))
            .await
    }

    /// Sends an operator action (retry, resume_at, skip, compensate) to a saga,
    /// decided when the saga stood at `issued_for` (`IssuedFor::of` the stored state;
    /// the coordinator refuses it if the saga moved on meanwhile), on behalf of `actor`
    /// (an API token's name, `cli:<user>`), which the saga's history records.
    pub async fn operate(
        &self,
        saga_id: &str,
        action: &crate::saga::machine::OperatorAction,
        issued_for: &crate::saga::machine::IssuedFor,
        actor: &str,
    ) -> Result<(), ClientError> {
        let output = match action {
            crate::saga::machine::OperatorAction::Skip { output } => Some(("skip output", output)),
            _ => None,
        };
        self.limits.check_id("actor", actor)?;
        let body = json!({"saga_id": saga_id, "operator": action, "issued_for": issued_for,
            "actor": actor});
        let exchange = self.names.operator();
        self.control(&exchange, saga_id, body, output).await
    }

    /// Asks a saga to stop and undo its completed steps.
    pub async fn cancel(&self, saga_id: &str, reason: &str) -> Result<(), ClientError> {
        let body = json!({"saga_id": saga_id, "cancel": true, "reason": reason});
        let exchange = self.names.signals();
        self.control(&exchange, saga_id, body, None).await
    }

    /// Publishes a message to `exchange` (`<ns>.signals` or `<ns>.operator`) once it
    /// passed the coordinator's checks.
    async fn control(
        &self,
        exchange: &str,
        saga_id: &str,
        body: Value,
        payload: Option<(&str, &Value)>,
    ) -> Result<(), ClientError> {
        let body = control_body(&self.limits, saga_id, &body, payload)?;
        let msg = Outgoing {
            exchange,
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

    /// Watches the saga events of the definition `saga` from now on: subscribe before
    /// starting a saga, so its terminal event cannot be missed.
    pub async fn watch(&self, saga: &str) -> Result<Watch, ClientError> {
        Ok(Watch(
            broker::Subscription::saga_events(&self.conn, &self.names, saga).await?,
        ))
    }

    /// Whether the connection and the publishing channel are still open (readiness
    /// checks, reconnecting): a publish the broker refused closed the channel.
    pub fn is_connected(&self) -> bool {
        self.conn.is_connected() && self.publisher.is_open()
    }

    /// The connection, for read-only inspection (passive queue declares).
    pub fn connection(&self) -> &broker::Connection {
        &self.conn
    }

    pub async fn close(self) {
        self.conn.close("bye").await;
    }
}

/// A subscription to one definition's saga events (see [`Client::watch`]).
pub struct Watch(broker::Subscription);

impl Watch {
    /// The terminal event of saga `id`, or `None` when `within` passed first.
    pub async fn ended(&mut self, id: &str, within: std::time::Duration) -> Option<SagaEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let body = self.0.next_before(deadline).await?;
            match serde_json::from_slice::<SagaEvent>(&body) {
                Ok(e) if e.saga_id == id => return Some(e),
                _ => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits {
            payload_bytes: 16,
            message_bytes: 120,
            json_depth: 4,
            id_bytes: 8,
        }
    }

    fn opts(id: &str) -> StartOptions {
        StartOptions {
            id: Some(id.into()),
            ..Default::default()
        }
    }

    #[test]
    fn starts_over_a_limit_are_refused_with_the_coordinators_reason() {
        let l = small();
        let body = start_body(&l, "order", &json!({"k": "01234567"}), &opts("o-1"), None).unwrap();
        let parsed: StartEvent = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.id.as_deref(), Some("o-1"));
        let err =
            start_body(&l, "order", &json!({"k": "0123456789"}), &opts("o-1"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "start input is 18 bytes; limits.payload_bytes is 16"
        );
        let err = start_body(&l, "order", &json!([[[[1]]]]), &opts("o-1"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "start body is nested more than 4 levels deep; limits.json_depth is 4"
        );
        let err = start_body(&l, "order", &json!({}), &opts("123456789"), None).unwrap_err();
        assert_eq!(err.to_string(), "`id` is 9 bytes; limits.id_bytes is 8");
        let long = "x".repeat(200);
        let err = start_body(&l, "order", &json!(long), &opts("o-1"), None).unwrap_err();
        assert!(
            err.to_string().contains("limits.message_bytes is 120"),
            "{err}"
        );
    }

    #[test]
    fn signals_and_skips_over_a_limit_are_refused() {
        let l = small();
        let big = json!({"k": "0123456789"});
        let body = json!({"saga_id": "s", "signal": "go", "payload": big});
        let err = control_body(&l, "s", &body, Some(("signal payload", &big))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "signal payload is 18 bytes; limits.payload_bytes is 16"
        );
        let err = control_body(&l, "s", &body, Some(("skip output", &big))).unwrap_err();
        assert!(
            err.to_string().starts_with("skip output is 18 bytes"),
            "{err}"
        );
        let cancel = json!({"saga_id": "s", "cancel": true, "reason": "x".repeat(200)});
        let err = control_body(&l, "s", &cancel, None).unwrap_err();
        assert!(err.to_string().starts_with("signal body is "), "{err}");
        let ok = json!({"saga_id": "s", "cancel": true});
        assert_eq!(control_body(&l, "s", &ok, None).unwrap(), ok.to_string());
        assert!(control_body(&l, "", &ok, None).is_err());
    }
}
