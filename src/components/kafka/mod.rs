//! The Kafka bus: [`KafkaSink`] publishes batches to the topic of their kind,
//! [`KafkaSource`] reads one topic (in a consumer group, or on partitions it takes
//! itself), resumes at the positions stored with the KPIs and commits only what
//! the aggregator has stored; [`ensure_topics`] creates the topics at start.
//!
//! On the wire a message is the event as canonical JSON ([`super::wire`]), keyed by
//! the sale's `product_id` or the tweet's location (so a kind spreads over every
//! partition, and the order within a product or location is kept), with the header [`RECEIVED_AT_HEADER`] carrying the batch's
//! receive time in ms since the epoch, as decimal text (end-to-end latency).
//!
//! # Layout
//! - `config`: [`KafkaConfig`], the `[kafka]` section and its checks.
//! - `admin`: topic creation ([`ensure_topics`]), the metadata readiness check and
//!   [`reach`].
//! - `sink`: [`KafkaSink`], the idempotent-capable producer.
//! - `source`: [`KafkaSource`], the consumer that commits after store.
//! - `lag`: consumer lag from librdkafka's statistics.
//! - `security`: TLS, SASL and `kafka.options` ([`SecurityProtocol`],
//!   [`SaslMechanism`], [`KafkaOptions`]).
//!
//! # Delivery guarantees
//! - The producer uses `acks=all` (and is idempotent with `kafka.idempotence`);
//!   `publish` returns only once every
//!   message of the batch is acknowledged, so a durable 202 means "in Kafka".
//! - The consumer never auto-commits. A [`Delivery`]'s token names the highest offset
//!   per partition it holds; [`Source::commit`] commits exactly those (+1),
//!   asynchronously (the group's offsets serve lag monitoring; positions in the
//!   store are what a consumer resumes from), and the consumer actor calls it only
//!   after the aggregator stored the batch. Every
//!   delivery carries its events' offsets, which the store writes with the KPIs
//!   (`kafka:{group}:{topic}:{partition}` → next offset) and checks: a crash
//!   between store and commit redelivers the batch, and the store skips it.
//! - A partition given to a source (by `kafka.assignment`: all, K/N, or the
//!   group's coordinator) resumes at the store's position: the source reads it
//!   and seeks there before handing out more, and drops messages below it.
//! - Rebalances are served only while [`Source::next`] polls the consumer, so between
//!   a delivery and its commit no partition is taken away by librdkafka (the group
//!   waits up to `max.poll.interval.ms` for this member to rejoin). Messages gathered
//!   for a delivery whose partition is revoked while the delivery is still being
//!   gathered are dropped from it (the partition's new owner reads them again), and a
//!   token whose partitions were revoked since is committed without them.

mod admin;
mod config;
mod lag;
mod security;
mod sink;
mod source;

pub use super::wire::RECEIVED_AT_HEADER;
pub use admin::{ensure_topics, reach, spawn_topic_creation, KafkaSetupError};
pub use config::{Assignment, KafkaConfig};
pub use security::{KafkaOptions, SaslMechanism, SecurityProtocol, SASL_PASSWORD_ENV};
pub use sink::KafkaSink;
pub use source::KafkaSource;

#[cfg(doc)]
use flujo_actors::consumer::{Delivery, Source};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::KafkaError;

/// The `sink`/`source` label of this bus.
const NAME: &str = "kafka";

/// The settings every flujo Kafka client shares: the brokers and how to reach
/// them (TLS, SASL). Fails only when the SASL password cannot be read.
fn client_config(config: &KafkaConfig) -> Result<ClientConfig, KafkaSetupError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", "flujo");
    config
        .apply_security(&mut client)
        .map_err(KafkaSetupError::Settings)?;
    Ok(client)
}

/// Creates a client from `client` with `kafka.options` applied last (so they win
/// over flujo's tuning).
fn create<C, T>(config: &KafkaConfig, mut client: ClientConfig, context: C) -> Result<T, KafkaError>
where
    C: ClientContext,
    T: FromClientConfigAndContext<C>,
{
    config.apply_options(&mut client);
    client.create_with_context(context)
}

/// Routes librdkafka's logs and errors to `tracing`.
#[derive(Debug, Clone, Copy, Default)]
struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, "librdkafka: {reason}");
    }
}

fn log_librdkafka(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(facility = fac, "librdkafka: {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(facility = fac, "librdkafka: {message}"),
    }
}
