//! Everything that speaks AMQP: connections, topology, publishing with confirms,
//! batched consumption. The only module that imports lapin: the rest of the crate
//! holds a [`Connection`] and gets a [`broker::Error`](Error) back, so a change of
//! AMQP client, or of how a failure is reported, stays in this directory.

pub mod browse;
pub mod consumer;
pub mod endpoint;
pub mod inspect;
mod names;
pub mod publisher;
mod settlement;
pub mod subscription;
mod teardown;
pub mod topology;

use std::time::Duration;

use lapin::{ConnectionProperties, ErrorKind};

use crate::redact;

pub use names::Names;
pub use publisher::{trace_headers, Outgoing, PublishError, Publisher};
pub use subscription::Subscription;

/// How long opening a connection may take, TCP and AMQP handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The AMQP heartbeat asked for when the URL names none (RabbitMQ's default is 60 s).
/// A process that stops answering (SIGSTOP, a frozen VM) keeps every message it has
/// prefetched until the broker declares it dead after two missed heartbeats; at 5 s
/// its inputs go to another consumer within about 10-15 s instead of 2 minutes.
pub const HEARTBEAT_SECS: u16 = 5;

/// A broker failure, as the rest of the crate sees it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection could not be opened; says what to fix.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A message was not safely handed over (returned, refused, not confirmed).
    /// Transparent, as are the others: a log line shows the cause once.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The broker, or the link to it, failed an operation (a declaration, a consume,
    /// an ack): the connection or channel is gone and must be rebuilt.
    /// (The cause is in the message, not repeated as a source.)
    #[error("amqp: {0}")]
    Amqp(lapin::Error),
}

impl From<lapin::Error> for Error {
    fn from(e: lapin::Error) -> Self {
        Error::Amqp(e)
    }
}

impl Error {
    /// Whether the broker refused this user the operation (AMQP 403 `ACCESS_REFUSED`:
    /// its `configure`, `write` or `read` permission does not match the name). The
    /// broker closes the channel, not the connection; a publish reports it through
    /// its confirm.
    pub fn is_access_refused(&self) -> bool {
        let e = match self {
            Error::Amqp(e) | Error::Publish(PublishError::Amqp(e)) => e,
            _ => return false,
        };
        matches!(e.kind(), ErrorKind::ProtocolError(p) if p.get_id() == 403)
    }
}

/// A broker result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An open AMQP connection. What is done with it goes through this module's
/// functions ([`Publisher::open`], [`consumer::Intake::open`], [`topology`], [`inspect`]).
pub struct Connection(lapin::Connection);

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Connection {
    /// Whether the connection is still open (readiness checks, reconnecting).
    pub fn is_connected(&self) -> bool {
        self.0.status().connected()
    }

    /// Closes the connection; unacked deliveries go back to their queues. Best effort:
    /// a connection that is already gone is closed.
    pub async fn close(&self, why: &str) {
        let _ = self.0.close(200, why.into()).await;
    }

    /// A fresh channel, for work that needs one of its own.
    pub(crate) async fn channel(&self) -> Result<lapin::Channel> {
        Ok(self.0.create_channel().await?)
    }
}

/// Why a connection could not be opened, said so an operator knows what to fix.
/// `url` is the configured URL with its password hidden ([`redact::url`]), and every
/// cause is a [`Cause`]: lapin's error with the URL's secrets taken out of its text.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("RabbitMQ URL {url}: {reason}")]
    Url {
        url: String,
        #[source]
        reason: endpoint::UrlError,
    },
    #[error(
        "RabbitMQ at {url} refused the connection (not running, or wrong host/port): {source}"
    )]
    Refused {
        url: String,
        #[source]
        source: Cause,
    },
    #[error("RabbitMQ at {url} did not finish the AMQP handshake within {after:?} (it accepted TCP; a broker out of file handles or memory does this, and so does a TLS port given an amqp:// URL)")]
    HandshakeTimeout { url: String, after: Duration },
    #[error("RabbitMQ at {url} refused the credentials (user or password): {source}")]
    Authentication {
        url: String,
        #[source]
        source: Cause,
    },
    #[error("RabbitMQ at {url}: the vhost does not exist or the user may not use it: {source}")]
    Vhost {
        url: String,
        #[source]
        source: Cause,
    },
    #[error("RabbitMQ at {url}: {source}")]
    Other {
        url: String,
        #[source]
        source: Cause,
    },
}

/// A lapin error met while connecting, as it may be shown: its text with every secret
/// of the URL hidden ([`redact::text_knowing`]), because lapin's messages may quote
/// the URL. The error itself is kept for code that inspects it ([`Cause::lapin`]);
/// `Display`, `Debug` and the source chain show only the redacted text.
pub struct Cause {
    shown: String,
    // Boxed: every `broker::Error` would otherwise carry lapin's error inline.
    error: Box<lapin::Error>,
}

impl Cause {
    fn new(error: lapin::Error, url: &str) -> Cause {
        Cause {
            shown: redact::text_knowing(&error.to_string(), url),
            error: Box::new(error),
        }
    }

    /// lapin's error, for matching on its kind. Do not show it: its text may hold
    /// the URL's password.
    pub fn lapin(&self) -> &lapin::Error {
        &self.error
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cause").field(&self.shown).finish()
    }
}

/// No source: lapin's sources are in the text already (`IO error: <io error>`), and
/// handing them out would show them unredacted.
impl std::error::Error for Cause {}

/// Opens a connection named for the management UI, within [`CONNECT_TIMEOUT`].
///
/// `amqp://` or `amqps://` (TLS, always verified; the CA and a client certificate
/// come from the URL's `cacertfile`, `certfile`, `keyfile`: see [`endpoint`]).
/// Errors never show the password.
pub async fn connect(url: &str, name: &str) -> Result<Connection> {
    connect_within(url, name, CONNECT_TIMEOUT).await
}

async fn connect_within(url: &str, name: &str, limit: Duration) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.to_string().into());
    let shown = redact::url(url);
    let endpoint::Endpoint { uri, tls } =
        endpoint::parse(url, HEARTBEAT_SECS).map_err(|reason| ConnectError::Url {
            url: shown.clone(),
            reason,
        })?;
    let runtime = lapin::runtime::default_runtime().map_err(|e| ConnectError::Other {
        url: shown.clone(),
        source: Cause::new(e, url),
    })?;
    let connecting = lapin::Connection::connect_uri_with_config(uri, props, tls, runtime);
    match tokio::time::timeout(limit, connecting).await {
        Err(_) => Err(ConnectError::HandshakeTimeout {
            url: shown,
            after: limit,
        }
        .into()),
        Ok(Ok(conn)) => Ok(Connection(conn)),
        Ok(Err(source)) => Err(classify(shown, Cause::new(source, url)).into()),
    }
}

fn classify(url: String, source: Cause) -> ConnectError {
    match source.lapin().kind() {
        ErrorKind::IOError(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            ConnectError::Refused { url, source }
        }
        ErrorKind::ProtocolError(e) if e.get_id() == 403 => {
            ConnectError::Authentication { url, source }
        }
        ErrorKind::ProtocolError(e) if e.get_id() == 530 => ConnectError::Vhost { url, source },
        _ => ConnectError::Other { url, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        // Port 1 on loopback: nothing listens there.
        let e = connect("amqp://guest:guest@127.0.0.1:1/%2f", "t")
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Connect(ConnectError::Refused { .. })),
            "{e}"
        );
        assert!(!e.to_string().contains("guest:guest"), "{e}");
        assert!(
            e.to_string().contains("amqp://guest:***@127.0.0.1:1/%2f"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_listener_that_never_answers_the_handshake_times_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let url = format!("amqp://127.0.0.1:{port}/%2f");
        let e = connect_within(&url, "t", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Connect(ConnectError::HandshakeTimeout { .. })),
            "{e}"
        );
        drop(l);
    }
}
