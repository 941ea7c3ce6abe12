//! [`KafkaSink`]: publishes each batch to the topic of its kind and returns once
//! every message is acknowledged (`acks=all`).

use super::admin::check_topics;
use super::{client_config, create, KafkaConfig, KafkaSetupError, LogContext, NAME};
use crate::components::wire::{self, RECEIVED_AT_HEADER};
use crate::components::Opaque;
use flujo_actors::messages::Batch;
use flujo_actors::publisher::{Sink, SinkError};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::time::{Duration, Instant};

/// How long `publish` waits for room in a full local producer queue before failing
/// (the queue holds `queue.buffering.max.messages`; full = the broker is too slow).
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(10);
/// Pause between two attempts to enqueue into a full local producer queue.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Publishes batches to Kafka: each event to the topic of its kind, as canonical
/// JSON, keyed by product (sales) or location (tweets).
#[derive(Debug)]
pub struct KafkaSink {
    producer: Opaque<FutureProducer<LogContext>>,
    config: KafkaConfig,
}

impl KafkaSink {
    /// A producer (`acks=all`, lz4; idempotent when `kafka.idempotence`) for the
    /// configured brokers. Without idempotence one request is in flight per broker,
    /// so a retry cannot reorder the messages of a key. Does not
    /// wait for the broker: one that is down makes `ready()` and `publish` fail, not
    /// this. Must be called inside a tokio runtime. Messages time out after the
    /// default durable-ack deadline (see [`KafkaSink::with_message_timeout`]).
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaSetupError> {
        Self::with_message_timeout(config, flujo_actors::publisher::DEFAULT_DEADLINE)
    }

    /// As [`KafkaSink::new`], with a message not acknowledged within
    /// `message_timeout` failing (librdkafka `message.timeout.ms`, set to the
    /// durable-ack deadline: its default of 5 min would hold a durable client, and
    /// retry behind its back, that long).
    pub fn with_message_timeout(
        config: &KafkaConfig,
        message_timeout: Duration,
    ) -> Result<Self, KafkaSetupError> {
        let mut client = client_config(config)?;
        client
            .set("enable.idempotence", config.idempotence.to_string())
            .set(
                "max.in.flight.requests.per.connection",
                if config.idempotence { "5" } else { "1" },
            )
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", config.linger_ms.to_string())
            // Large batches per partition request, and room for many in flight:
            // throughput comes from batching, latency is bounded by linger.ms.
            .set("batch.num.messages", "10000")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "200000")
            .set(
                "message.timeout.ms",
                message_timeout.as_millis().max(1).to_string(),
            )
            // Same key → same partition as the Java client (murmur2).
            .set("partitioner", "murmur2_random");
        let producer = create(config, client, LogContext).map_err(KafkaSetupError::Client)?;
        Ok(KafkaSink {
            producer: Opaque(producer),
            config: config.clone(),
        })
    }

    /// Enqueues one message, waiting for room while the local queue is full.
    async fn enqueue(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        received_at: &str,
    ) -> Result<DeliveryFuture, SinkError> {
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: RECEIVED_AT_HEADER,
            value: Some(received_at),
        });
        let mut record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        let mut full_since: Option<Instant> = None;
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    let since = *full_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= QUEUE_FULL_WAIT {
                        return Err(SinkError(format!(
                            "kafka producer queue full for {}s (broker too slow or down)",
                            QUEUE_FULL_WAIT.as_secs()
                        )));
                    }
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((e, _)) => return Err(SinkError(format!("kafka enqueue to {topic}: {e}"))),
            }
        }
    }
}

#[tonic::async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn publish(&self, batch: Batch) -> Result<(), SinkError> {
        let received_at = batch.received_at_ms.to_string();
        let topic = self.config.topic(batch.kind());
        let payloads = wire::encode_events(&batch.events)
            .map_err(|e| SinkError(format!("encoding event: {e}")))?;
        let keys = wire::partition_keys(&batch.events);
        // Enqueue everything first (librdkafka batches and pipelines the requests),
        // then wait for every acknowledgement.
        let mut deliveries = Vec::with_capacity(payloads.len());
        for (payload, key) in payloads.iter().zip(keys) {
            deliveries.push(self.enqueue(topic, key, payload, &received_at).await?);
        }
        let total = deliveries.len();
        let mut failed = 0usize;
        let mut first_error = None;
        for delivery in deliveries {
            let error = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => "producer shut down before delivery".to_owned(),
            };
            failed += 1;
            first_error.get_or_insert(error);
        }
        match first_error {
            None => Ok(()),
            Some(error) => Err(SinkError(format!(
                "kafka: {failed} of {total} messages not acknowledged: {error}"
            ))),
        }
    }

    async fn ready(&self) -> Result<(), SinkError> {
        let producer = self.producer.clone();
        let topics = [
            self.config.sales_topic.clone(),
            self.config.tweets_topic.clone(),
        ];
        tokio::task::spawn_blocking(move || check_topics(producer.client(), &topics))
            .await
            .map_err(|e| SinkError(format!("kafka readiness check: {e}")))?
            .map_err(SinkError)
    }
}
