//! [`RabbitSource`]: consumes one queue with manual acks, acking a batch only once it
//! was stored, and reconnects by itself.

use super::admin::{close_quietly, connect, declare_on, CLOSE_TIMEOUT, CONNECT_TIMEOUT};
use super::{RabbitConfig, RabbitError, NAME};
use crate::components::mask_url_password;
use crate::components::wire::{self, RECEIVED_AT_HEADER};
use flujo_actors::backoff::Backoff;
use flujo_actors::consumer::{Delivery, Source, SourceError, SourceReadiness};
use flujo_actors::event::{now_ms, Kind};
use flujo_actors::messages::Batch;
use flujo_actors::metrics::{CONSUMER_LAG, EVENTS_REJECTED, UNDECODABLE};
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often a source refreshes the queue-depth gauge.
const LAG_INTERVAL: Duration = Duration::from_secs(1);
/// Delivery tags take the low 48 bits of a commit token, the channel generation the
/// high 16 (2^48 deliveries on one channel is years at a million messages a second).
const TAG_BITS: u32 = 48;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

/// A connection consuming one queue.
struct SourceLink {
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    generation: u16,
    /// Highest delivery tag acked with `multiple` (acking it again would be an
    /// "unknown delivery tag" error that closes the channel).
    acked_up_to: u64,
}

/// Consumes one queue (one event kind) with manual acks: `next` gathers up to
/// `batch_max` messages (waiting up to `batch_linger_ms` after the first), and
/// `commit` acks them all at once (`multiple = true`) after the batch was stored.
///
/// When the connection is lost, `next` reconnects with backoff and resumes;
/// RabbitMQ redelivers what was not acked. A commit token names the channel it was
/// delivered on: committing a token of a channel that is gone is a no-op (those
/// messages are redelivered, and deduplicated by id). `next` returns `None` only
/// once the cancellation token given at construction is cancelled.
pub struct RabbitSource {
    config: RabbitConfig,
    kind: Kind,
    connection_name: String,
    cancel: CancellationToken,
    link: Option<SourceLink>,
    generation: u16,
    backoff: Backoff,
    lag_checked: Option<Instant>,
    health: Arc<LinkHealth>,
}

/// What readiness sees of a source's connection: up, or down and why.
#[derive(Debug)]
struct LinkHealth(Mutex<Result<(), String>>);

impl LinkHealth {
    fn set(&self, state: Result<(), String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
}

#[tonic::async_trait]
impl SourceReadiness for LinkHealth {
    async fn ready(&self) -> Result<(), SourceError> {
        let state = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        state.map_err(|e| SourceError(format!("rabbitmq unavailable: {e}")))
    }
}

impl fmt::Debug for RabbitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitSource")
            .field("queue", &self.config.queue(self.kind))
            .field("generation", &self.generation)
            .field("connected", &self.link.is_some())
            .finish()
    }
}

/// Why gathering a batch stopped without one.
enum Interrupted {
    /// The cancellation token fired.
    Cancelled,
    /// The channel or consumer ended; reconnect.
    Lost(String),
}

impl RabbitSource {
    /// A source reading the queue of `kind`; connects on the first `next` (no I/O here).
    pub fn new(config: RabbitConfig, kind: Kind, cancel: CancellationToken) -> Self {
        let name = format!("flujo consumer {}", config.queue(kind));
        Self::with_connection_name(config, kind, cancel, name)
    }

    /// Like [`RabbitSource::new`], naming the connection as shown by the broker.
    pub fn with_connection_name(
        config: RabbitConfig,
        kind: Kind,
        cancel: CancellationToken,
        name: impl Into<String>,
    ) -> Self {
        RabbitSource {
            config,
            kind,
            connection_name: name.into(),
            cancel,
            link: None,
            generation: 0,
            backoff: Backoff::reconnect(),
            lag_checked: None,
            health: Arc::new(LinkHealth(Mutex::new(Err("not connected yet".into())))),
        }
    }

    /// The queue this source reads.
    pub fn queue(&self) -> &str {
        self.config.queue(self.kind)
    }

    /// Counts the channels this source opened (wrapping): it changes on every
    /// reconnect, and is the generation commit tokens carry.
    pub fn channel_generation(&self) -> u16 {
        self.generation
    }

    /// True while the source holds a usable connection.
    pub fn is_connected(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.connection.status().connected() && l.channel.status().connected())
    }

    async fn open(&mut self) -> Result<SourceLink, RabbitError> {
        let config = &self.config;
        let err = |e| RabbitError::amqp(config, e);
        let connection = connect(config, &self.connection_name).await?;
        declare_on(&connection, config).await?;
        let channel = connection.create_channel().await.map_err(err)?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await
            .map_err(err)?;
        let consumer = channel
            .basic_consume(
                config.queue(self.kind).into(),
                ShortString::from(""),
                BasicConsumeOptions {
                    no_ack: false,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        self.generation = self.generation.wrapping_add(1);
        Ok(SourceLink {
            connection,
            channel,
            consumer,
            generation: self.generation,
            acked_up_to: 0,
        })
    }

    /// Connects with backoff; `false` when cancelled first.
    async fn ensure_link(&mut self) -> bool {
        let mut was_down = false;
        while self.link.is_none() {
            let cancel = self.cancel.clone();
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT * 2, self.open());
            let result = tokio::select! {
                _ = cancel.cancelled() => return false,
                r = attempt => r.unwrap_or_else(|_| Err(RabbitError::Timeout(mask_url_password(&self.config.url)))),
            };
            match result {
                Ok(link) => {
                    let queue = self.queue();
                    if was_down || link.generation > 1 {
                        tracing::info!(source = NAME, queue, "consuming again after reconnect");
                    } else {
                        tracing::info!(source = NAME, queue, "consuming");
                    }
                    self.link = Some(link);
                    self.health.set(Ok(()));
                }
                Err(e) => {
                    self.health.set(Err(e.to_string()));
                    let delay = self.backoff.next_delay();
                    tracing::warn!(source = NAME, queue = self.queue(), error = %e, ?delay, "rabbitmq unavailable; retrying");
                    was_down = true;
                    tokio::select! {
                        _ = cancel.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        true
    }

    async fn drop_link(&mut self, reason: &str) {
        self.health.set(Err(reason.to_owned()));
        if let Some(link) = self.link.take() {
            tracing::warn!(
                source = NAME,
                queue = self.queue(),
                reason,
                "rabbitmq consumer lost; reconnecting"
            );
            close_quietly(&link.connection).await;
        }
    }

    async fn shut_down(&mut self) {
        self.health.set(Err("source closed".into()));
        if let Some(link) = self.link.take() {
            // Prefetched but unreturned messages go back to the queue.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, link.channel.close(200, "OK".into())).await;
            close_quietly(&link.connection).await;
        }
    }

    /// Gathers the raw deliveries of one batch on the current link.
    async fn gather(&mut self) -> Result<Vec<AmqpDelivery>, Interrupted> {
        use futures::StreamExt;
        let Some(link) = self.link.as_mut() else {
            return Err(Interrupted::Lost("not connected".into()));
        };
        let first = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(Interrupted::Cancelled),
            item = link.consumer.next() => item,
        };
        let mut deliveries = vec![take_delivery(first)?];
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.batch_linger_ms);
        let batch_max = self.config.batch_max.max(1);
        while deliveries.len() < batch_max {
            match tokio::time::timeout_at(deadline, link.consumer.next()).await {
                Ok(item) => deliveries.push(take_delivery(item)?),
                Err(_) => break,
            }
        }
        Ok(deliveries)
    }

    /// Decodes the deliveries into a batch; undecodable messages are acked away.
    async fn decode(&mut self, deliveries: Vec<AmqpDelivery>) -> Option<Delivery> {
        let mut events = Vec::with_capacity(deliveries.len());
        let mut received_at: Option<i64> = None;
        let mut last_tag = None;
        for delivery in deliveries {
            match wire::decode(self.kind, &delivery.data) {
                Ok(event) => {
                    events.push(event);
                    last_tag = Some(delivery.delivery_tag);
                    if let Some(at) = received_at_of(&delivery.properties) {
                        received_at = Some(received_at.map_or(at, |min| min.min(at)));
                    }
                }
                Err(e) => {
                    let kind = self.kind.as_str();
                    tracing::error!(
                        source = NAME,
                        queue = self.queue(),
                        kind,
                        delivery_tag = delivery.delivery_tag,
                        error = %e,
                        body = %String::from_utf8_lossy(&delivery.data[..delivery.data.len().min(256)]),
                        "undecodable message; acking it away"
                    );
                    metrics::counter!(EVENTS_REJECTED, "kind" => kind, "transport" => NAME, "reason" => UNDECODABLE)
                        .increment(1);
                    // Acked on its own (not `multiple`): earlier messages of this batch
                    // are not stored yet.
                    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                        tracing::warn!(source = NAME, error = %e, "could not ack undecodable message");
                    }
                }
            }
        }
        let tag = last_tag?;
        let generation = self.link.as_ref().map_or(0, |l| l.generation);
        Some(Delivery {
            batch: Batch {
                events: Arc::new(wire::events_of(self.kind, events)),
                received_at_ms: received_at.unwrap_or_else(now_ms),
                admitted: None,
                positions: None,
            },
            token: encode_token(generation, tag),
        })
    }

    /// Refreshes the queue-depth gauge at most once per `LAG_INTERVAL`.
    async fn report_lag(&mut self) {
        if self
            .lag_checked
            .is_some_and(|at| at.elapsed() < LAG_INTERVAL)
        {
            return;
        }
        self.lag_checked = Some(Instant::now());
        let Some(link) = self.link.as_ref() else {
            return;
        };
        let passive = QueueDeclareOptions::durable().passive();
        let queue = self.config.queue(self.kind);
        if let Ok(q) = link
            .channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
        {
            metrics::gauge!(CONSUMER_LAG, "source" => NAME, "kind" => self.kind.as_str())
                .set(f64::from(q.message_count()));
        }
    }
}

fn take_delivery(
    item: Option<Result<AmqpDelivery, lapin::Error>>,
) -> Result<AmqpDelivery, Interrupted> {
    match item {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(e)) => Err(Interrupted::Lost(e.to_string())),
        None => Err(Interrupted::Lost("consumer cancelled by the broker".into())),
    }
}

/// The `flujo-received-at` header of a message, if it has one.
pub fn received_at_of(properties: &BasicProperties) -> Option<i64> {
    let value = properties
        .headers()
        .as_ref()?
        .inner()
        .get(RECEIVED_AT_HEADER)?;
    match value {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        _ => None,
    }
}

fn encode_token(generation: u16, tag: u64) -> u64 {
    (u64::from(generation) << TAG_BITS) | (tag & TAG_MASK)
}

fn decode_token(token: u64) -> (u16, u64) {
    ((token >> TAG_BITS) as u16, token & TAG_MASK)
}

#[tonic::async_trait]
impl Source for RabbitSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn readiness(&self) -> Arc<dyn SourceReadiness> {
        self.health.clone()
    }

    async fn next(&mut self) -> Option<Delivery> {
        loop {
            if self.cancel.is_cancelled() || !self.ensure_link().await {
                self.shut_down().await;
                return None;
            }
            match self.gather().await {
                Ok(deliveries) => {
                    self.backoff.reset();
                    self.report_lag().await;
                    if let Some(delivery) = self.decode(deliveries).await {
                        return Some(delivery);
                    }
                    // Every message was undecodable (and acked away): wait for more.
                }
                Err(Interrupted::Cancelled) => {
                    self.shut_down().await;
                    return None;
                }
                Err(Interrupted::Lost(reason)) => {
                    // What was gathered is unacked on a dead channel: redelivered.
                    self.drop_link(&reason).await;
                    let delay = self.backoff.next_delay();
                    tokio::select! {
                        _ = self.cancel.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn commit(&mut self, token: u64) -> Result<(), SourceError> {
        let (generation, tag) = decode_token(token);
        let Some(link) = self.link.as_mut().filter(|l| l.generation == generation) else {
            tracing::debug!(
                source = NAME,
                queue = self.queue(),
                generation,
                "commit of a closed channel's delivery; RabbitMQ redelivers it"
            );
            return Ok(());
        };
        if tag <= link.acked_up_to {
            return Ok(()); // Committed already.
        }
        match link
            .channel
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await
        {
            Ok(()) => link.acked_up_to = tag,
            Err(e) => {
                // The channel died after delivery: the messages are redelivered (and
                // deduplicated by id), so this is not the consumer's failure.
                let reason = format!("ack failed: {e}");
                self.drop_link(&reason).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_generation_and_tag() {
        for (generation, tag) in [(1, 1), (7, 123_456), (u16::MAX, TAG_MASK)] {
            assert_eq!(
                decode_token(encode_token(generation, tag)),
                (generation, tag)
            );
        }
        assert_ne!(encode_token(1, 5), encode_token(2, 5));
    }
}
