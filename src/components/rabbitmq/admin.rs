//! Connections and queues: [`connect`] opens a named connection, [`declare_queues`]
//! declares the durable queues at start, [`reach`] is the one-shot check of `flujo
//! validate`.

use super::{RabbitConfig, RabbitError};
use crate::components::{mask_url_password, ReachError};
use flujo_actors::event::Kind;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connect, Connection, ConnectionProperties};
use std::time::Duration;

/// Longest wait for a TCP connection plus AMQP handshake and setup.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a graceful close.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a connection named `name` (shown in RabbitMQ's management UI and
/// `rabbitmqctl list_connections client_properties`); over TLS for an `amqps://`
/// URL, trusting `rabbitmq.ca_file` besides the system's CAs.
pub async fn connect(config: &RabbitConfig, name: &str) -> Result<Connection, RabbitError> {
    let properties = ConnectionProperties::default().with_connection_name(name.to_owned().into());
    let tls = config.tls_config().map_err(RabbitError::Tls)?;
    let runtime = lapin::runtime::default_runtime().map_err(|e| RabbitError::amqp(config, e))?;
    crate::components::install_crypto_provider();
    let connecting = config
        .url
        .as_str()
        .connect_with_config(properties, tls, runtime);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(result) => result.map_err(|e| RabbitError::amqp(config, e)),
        Err(_) => Err(RabbitError::Timeout(mask_url_password(&config.url))),
    }
}

/// Declares the sales and tweets queues (durable) when missing, on a connection of
/// its own. Used at start by both halves of the bus.
pub async fn declare_queues(config: &RabbitConfig) -> Result<(), RabbitError> {
    let connection = connect(config, "flujo declare").await?;
    let result = declare_on(&connection, config).await;
    close_quietly(&connection).await;
    result
}

/// Declares both queues on `connection`. A queue that already exists with other
/// arguments (say, a quorum queue made by an operator) is used as it is.
pub(super) async fn declare_on(
    connection: &Connection,
    config: &RabbitConfig,
) -> Result<(), RabbitError> {
    let err = |e| RabbitError::amqp(config, e);
    for kind in Kind::ALL {
        let queue = config.queue(kind);
        let channel = connection.create_channel().await.map_err(err)?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(_) => {
                let _ = channel.close(200, "OK".into()).await;
            }
            Err(e) => {
                // The failed declare closed that channel; look with a passive one.
                let channel = connection.create_channel().await.map_err(err)?;
                let passive = QueueDeclareOptions::durable().passive();
                match channel
                    .queue_declare(queue.into(), passive, FieldTable::default())
                    .await
                {
                    Ok(_) => {
                        tracing::warn!(queue, error = %e, "queue exists with other arguments; using it as it is");
                        let _ = channel.close(200, "OK".into()).await;
                    }
                    Err(_) => return Err(err(e)),
                }
            }
        }
    }
    Ok(())
}

/// Connects once (named `flujo validate`) and looks at the queues passively
/// (nothing is declared): which exist and how many messages they hold (`flujo
/// run` declares missing ones). Bound the call with a timeout.
pub async fn reach(config: &RabbitConfig) -> Result<String, ReachError> {
    // The caller names the URL; the error says only what went wrong.
    let unreachable = |e: RabbitError| {
        ReachError::Unreachable(match e {
            RabbitError::Amqp { source, .. } => source.to_string(),
            RabbitError::Timeout(_) => "connection timed out".to_owned(),
            RabbitError::Tls(why) => why,
        })
    };
    let connection = connect(config, "flujo validate")
        .await
        .map_err(unreachable)?;
    let mut queues = Vec::new();
    for kind in Kind::ALL {
        let queue = config.queue(kind);
        let channel = match connection.create_channel().await {
            Ok(channel) => channel,
            Err(e) => {
                close_quietly(&connection).await;
                return Err(ReachError::Unreachable(
                    RabbitError::amqp(config, e).to_string(),
                ));
            }
        };
        let passive = QueueDeclareOptions::durable().passive();
        match channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
        {
            Ok(found) => {
                queues.push(format!(
                    "queue {queue} holds {} messages",
                    found.message_count()
                ));
                let _ = channel.close(200, "OK".into()).await;
            }
            // A passive declare of a missing queue closes its channel (404).
            Err(_) => queues.push(format!("queue {queue} missing (flujo run declares it)")),
        }
    }
    close_quietly(&connection).await;
    Ok(queues.join(", "))
}

pub(super) async fn close_quietly(connection: &Connection) {
    if connection.status().connected() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "OK".into())).await;
    }
}
