//! Everything that speaks AMQP: connections, topology, publishing with confirms,
//! batched consumption. The only module that imports lapin.

pub mod consumer;
pub mod inspect;
pub mod publisher;
pub mod topology;

use lapin::{Connection, ConnectionProperties};

pub use publisher::{Outgoing, PublishError, Publisher};
pub use topology::Names;

/// Opens a connection named for the management UI.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.to_string().into());
    Connection::connect(url, props).await
}
