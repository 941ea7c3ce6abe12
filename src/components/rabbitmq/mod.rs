//! RabbitMQ as the bus: [`RabbitSink`] publishes batches with publisher confirms to
//! durable queues (one per event kind), [`RabbitSource`] consumes one queue with
//! manual acks and a prefetch window, acking a batch only once it was stored.
//!
//! On the wire every event is one persistent message (`delivery_mode = 2`,
//! `content_type = application/json`) on the default exchange, routing key = queue,
//! whose body is the event's canonical JSON ([`super::wire`]) and whose header
//! `flujo-received-at` carries the batch's receive time (ms since the epoch, for
//! end-to-end latency).
//!
//! Both halves keep their own connection and reconnect with exponential backoff when
//! it is lost: the sink answers `publish` with an error at once while it is down (the
//! ingest transports turn that into 503) and recovers in the background; the source
//! resumes consuming, and RabbitMQ redelivers what was not acked (flujo deduplicates
//! by event id, so a redelivery never counts twice).
//!
//! # Layout
//! - `config`: [`RabbitConfig`], the `[rabbitmq]` section and its checks.
//! - `admin`: named connections, the durable queues ([`declare_queues`]) and
//!   [`reach`].
//! - `sink`: [`RabbitSink`], confirmed publishing on a supervised connection.
//! - `source`: [`RabbitSource`], acked consuming with a prefetch window.

mod admin;
mod config;
mod sink;
mod source;

pub use super::wire::{CONTENT_TYPE, RECEIVED_AT_HEADER};
pub use admin::{connect, declare_queues, reach};
pub use config::RabbitConfig;
pub use sink::RabbitSink;
pub use source::{received_at_of, RabbitSource};

use crate::components::mask_url_password;

/// The `sink`/`source` label of this bus.
const NAME: &str = "rabbitmq";

/// A failure talking to RabbitMQ.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RabbitError {
    /// The broker or the connection to it failed.
    #[error("rabbitmq at {url}: {source}")]
    Amqp {
        /// The URL, password masked.
        url: String,
        /// What lapin reported.
        source: lapin::Error,
    },
    /// Connecting (TCP, handshake and setup) took longer than allowed.
    #[error("rabbitmq at {0}: connection timed out")]
    Timeout(String),
    /// The TLS settings cannot be used (the CA file is unreadable).
    #[error("rabbitmq TLS settings: {0}")]
    Tls(String),
}

impl RabbitError {
    fn amqp(config: &RabbitConfig, source: lapin::Error) -> Self {
        RabbitError::Amqp {
            url: mask_url_password(&config.url),
            source,
        }
    }
}
