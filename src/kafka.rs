//! The Kafka bus: [`KafkaSink`] publishes batches to the topic of their kind,
//! [`KafkaSource`] reads one topic in a consumer group and commits only what the
//! aggregator has stored; [`ensure_topics`] creates the topics at start.
//!
//! On the wire a message is the event as canonical JSON (the serde form of
//! [`Sale`]/[`Tweet`]: English field names, `id` and `ts` included), keyed by the
//! sale's category or the tweet's location (so the order within a category or
//! location is kept), with the header [`RECEIVED_AT_HEADER`] carrying the batch's
//! receive time in ms since the epoch, as decimal text (end-to-end latency).
//!
//! # Delivery guarantees
//! - The producer is idempotent with `acks=all`; `publish` returns only once every
//!   message of the batch is acknowledged, so a durable 202 means "in Kafka".
//! - The consumer never auto-commits. A [`Delivery`]'s token names the highest offset
//!   per partition it holds; [`Source::commit`] commits exactly those (+1), and the
//!   consumer actor calls it only after the aggregator stored the batch. A crash
//!   between store and commit redelivers the batch; the aggregator dedups by id.
//! - Rebalances are served only while [`Source::next`] polls the consumer, so between
//!   a delivery and its commit no partition is taken away by librdkafka (the group
//!   waits up to `max.poll.interval.ms` for this member to rejoin). Messages gathered
//!   for a delivery whose partition is revoked while the delivery is still being
//!   gathered are dropped from it (the partition's new owner reads them again), and a
//!   token whose partitions were revoked since is committed without them.

use flujo_actors::consumer::{Delivery, Source, SourceError};
use flujo_actors::event::{now_ms, Events, Kind, Sale, Tweet};
use flujo_actors::messages::Batch;
use flujo_actors::metrics::CONSUMER_LAG;
use flujo_actors::publisher::{Sink, SinkError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The `sink`/`source` label of this bus.
const NAME: &str = "kafka";

/// Header carrying the batch's receive time (ms since the epoch, decimal text).
pub const RECEIVED_AT_HEADER: &str = "flujo-received-at";

/// How long a message may wait for its acknowledgement before `publish` fails
/// (librdkafka `message.timeout.ms`; its default of 5 min would hold a durable
/// client that long).
const MESSAGE_TIMEOUT_MS: u32 = 30_000;
/// How long `publish` waits for room in a full local producer queue before failing
/// (the queue holds `queue.buffering.max.messages`; full = the broker is too slow).
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(10);
/// Pause between two attempts to enqueue into a full local producer queue.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);
/// Bound of the readiness metadata request.
const READY_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound of the topic-creation requests.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the consumer computes its lag (librdkafka statistics interval).
const LAG_INTERVAL_MS: u32 = 1_000;
/// Pause after a consumer error, so a persistent error does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(200);
/// A persistent consumer error is logged at most this often (else at debug level).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// Attempts of a commit that failed with a transient error, before giving up.
const COMMIT_ATTEMPTS: u32 = 3;
/// Deliveries kept awaiting their commit; older ones are forgotten (redelivered).
const MAX_OUTSTANDING: usize = 64;

/// The `[kafka]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated `host:port` (librdkafka `bootstrap.servers`).
    pub brokers: String,
    /// Topic that carries sales.
    pub sales_topic: String,
    /// Topic that carries tweets.
    pub tweets_topic: String,
    /// Partitions of a topic created at start (an existing topic is left as it is).
    pub partitions: i32,
    /// Replication factor of a topic created at start.
    pub replication: i32,
    /// Consumer group of the consumer role; every consumer process joins it.
    pub group_id: String,
    /// Idempotent producer (`enable.idempotence`): a broker-side guard against
    /// duplicates from producer retries. Off by default because tansu 0.6, the
    /// broker the tests run on, panics on some idempotent produce requests
    /// (tansu-storage lite.rs:503) and then stops serving; turn it on with a real
    /// Kafka. flujo's consumers dedup by event id either way, so a retried message
    /// is never counted twice.
    pub idempotence: bool,
    /// How long the producer waits to fill a batch before sending it, in ms
    /// (librdkafka `linger.ms`; higher = fewer, larger requests).
    pub linger_ms: u32,
    /// Most messages handed to the aggregator in one delivery.
    pub batch_max: usize,
    /// How long the consumer keeps gathering a delivery after its first message, in ms.
    pub poll_linger_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            sales_topic: "sales".into(),
            tweets_topic: "tweets".into(),
            partitions: 3,
            replication: 1,
            group_id: "flujo-consumer".into(),
            idempotence: false,
            linger_ms: 5,
            batch_max: 1000,
            poll_linger_ms: 5,
        }
    }
}

impl KafkaConfig {
    /// The topic that carries events of `kind`.
    pub fn topic(&self, kind: Kind) -> &str {
        match kind {
            Kind::Sale => &self.sales_topic,
            Kind::Tweet => &self.tweets_topic,
        }
    }

    /// Checks the values; the error names the offending key (`kafka.KEY`).
    pub fn check(&self) -> Result<(), String> {
        let bad = |key: &str, why: &str| Err(format!("kafka.{key}: {why}"));
        if self.brokers.trim().is_empty() {
            return bad("brokers", "must name at least one host:port");
        }
        for (key, topic) in [
            ("sales_topic", &self.sales_topic),
            ("tweets_topic", &self.tweets_topic),
        ] {
            let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if topic.is_empty() || topic.len() > 249 || !topic.chars().all(legal) {
                return bad(key, "must be 1-249 characters of [a-zA-Z0-9._-]");
            }
        }
        if self.sales_topic == self.tweets_topic {
            return bad("tweets_topic", "must differ from kafka.sales_topic");
        }
        if self.partitions < 1 {
            return bad("partitions", "must be at least 1");
        }
        if self.replication < 1 {
            return bad("replication", "must be at least 1");
        }
        if self.group_id.trim().is_empty() {
            return bad("group_id", "must not be empty");
        }
        if self.linger_ms > 900_000 {
            return bad("linger_ms", "must be at most 900000");
        }
        if self.batch_max < 1 {
            return bad("batch_max", "must be at least 1");
        }
        Ok(())
    }
}

/// A Kafka client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// librdkafka refused the client configuration or could not start the client.
    #[error("kafka client: {0}")]
    Client(#[source] KafkaError),
    /// The topic-creation request failed as a whole (e.g. the broker is unreachable).
    #[error("kafka admin request to {brokers}: {source}")]
    Admin {
        /// The bootstrap brokers asked.
        brokers: String,
        /// What went wrong.
        #[source]
        source: KafkaError,
    },
    /// The broker refused to create a topic.
    #[error("creating kafka topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
}

fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "flujo");
    config
}

/// Creates the sales and tweets topics when missing, with the configured partitions
/// and replication. A topic that already exists is left as it is. Call inside a
/// tokio runtime.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<LogContext> = client_config(&config.brokers)
        .create_with_context(LogContext)
        .map_err(KafkaSetupError::Client)?;
    let topics: Vec<NewTopic<'_>> = [&config.sales_topic, &config.tweets_topic]
        .into_iter()
        .map(|name| {
            NewTopic::new(
                name,
                config.partitions,
                TopicReplication::Fixed(config.replication),
            )
        })
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|source| KafkaSetupError::Admin {
            brokers: config.brokers.clone(),
            source,
        })?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, partitions = config.partitions, "created topic"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic, "topic exists")
            }
            Err((topic, code)) => return Err(KafkaSetupError::CreateTopic { topic, code }),
        }
    }
    Ok(())
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

/// Publishes batches to Kafka: each event to the topic of its kind, as canonical
/// JSON, keyed by category (sales) or location (tweets).
pub struct KafkaSink {
    producer: FutureProducer<LogContext>,
    sales_topic: String,
    tweets_topic: String,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("sales_topic", &self.sales_topic)
            .field("tweets_topic", &self.tweets_topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// A producer (`acks=all`, lz4; idempotent when `kafka.idempotence`) for the
    /// configured brokers. Without idempotence one request is in flight per broker,
    /// so a retry cannot reorder the messages of a key. Does not
    /// wait for the broker: one that is down makes `ready()` and `publish` fail, not
    /// this. Must be called inside a tokio runtime.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaSetupError> {
        let producer = client_config(&config.brokers)
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
            .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
            // Same key → same partition as the Java client (murmur2).
            .set("partitioner", "murmur2_random")
            .create_with_context(LogContext)
            .map_err(KafkaSetupError::Client)?;
        Ok(KafkaSink {
            producer,
            sales_topic: config.sales_topic.clone(),
            tweets_topic: config.tweets_topic.clone(),
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

/// Canonical JSON of one event.
fn to_json<T: Serialize>(event: &T) -> Result<Vec<u8>, SinkError> {
    serde_json::to_vec(event).map_err(|e| SinkError(format!("encoding event: {e}")))
}

#[tonic::async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn publish(&self, batch: Batch) -> Result<(), SinkError> {
        let received_at = batch.received_at_ms.to_string();
        let mut deliveries = Vec::with_capacity(batch.events.len());
        // Enqueue everything first (librdkafka batches and pipelines the requests),
        // then wait for every acknowledgement.
        match &*batch.events {
            Events::Sales(sales) => {
                for sale in sales {
                    let payload = to_json(sale)?;
                    let key = sale.category.as_str();
                    deliveries.push(
                        self.enqueue(&self.sales_topic, key, &payload, &received_at)
                            .await?,
                    );
                }
            }
            Events::Tweets(tweets) => {
                for tweet in tweets {
                    let payload = to_json(tweet)?;
                    deliveries.push(
                        self.enqueue(&self.tweets_topic, &tweet.location, &payload, &received_at)
                            .await?,
                    );
                }
            }
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
        let topics = [self.sales_topic.clone(), self.tweets_topic.clone()];
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(None, READY_TIMEOUT)
                .map_err(|e| SinkError(format!("kafka broker not answering: {e}")))?;
            for topic in &topics {
                let found = metadata.topics().iter().any(|t| {
                    t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                });
                if !found {
                    return Err(SinkError(format!("kafka topic {topic} is missing")));
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| SinkError(format!("kafka readiness check: {e}")))?
    }
}

// ---------------------------------------------------------------------------------
// Consumer lag, summed over every live Kafka source of the process.

static LAG_SLOTS: AtomicU64 = AtomicU64::new(0);
static LAGS: Mutex<BTreeMap<u64, i64>> = Mutex::new(BTreeMap::new());

/// Records the lag of one source (`None` = the source is gone) and publishes the
/// sum over all sources as `flujo_consumer_lag_events{source="kafka"}`.
fn report_lag(slot: u64, lag: Option<i64>) {
    let mut lags = LAGS.lock().unwrap_or_else(|p| p.into_inner());
    match lag {
        Some(lag) => lags.insert(slot, lag),
        None => lags.remove(&slot),
    };
    let total: i64 = lags.values().sum();
    metrics::gauge!(CONSUMER_LAG, "source" => NAME).set(total as f64);
}

/// The part of librdkafka's statistics JSON the lag needs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Stats {
    topics: HashMap<String, TopicStats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TopicStats {
    partitions: HashMap<String, PartitionStats>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct PartitionStats {
    partition: i32,
    desired: bool,
    hi_offset: i64,
    lo_offset: i64,
    app_offset: i64,
    committed_offset: i64,
}

impl Default for PartitionStats {
    fn default() -> Self {
        PartitionStats {
            partition: -1,
            desired: false,
            hi_offset: -1,
            lo_offset: -1,
            app_offset: -1,
            committed_offset: -1,
        }
    }
}

/// Σ(high watermark − position) over the partitions this consumer is assigned. The
/// position is the offset after the last message handed to the application, else
/// the committed offset, else the low watermark (where `earliest` starts).
fn lag_of(stats: &Stats, topic: &str) -> Option<i64> {
    let partitions = &stats.topics.get(topic)?.partitions;
    let lag = partitions
        .values()
        .filter(|p| p.partition >= 0 && p.desired && p.hi_offset >= 0)
        .filter_map(|p| {
            let position = [p.app_offset, p.committed_offset, p.lo_offset]
                .into_iter()
                .find(|&o| o >= 0)?;
            Some((p.hi_offset - position).max(0))
        })
        .sum();
    Some(lag)
}

// ---------------------------------------------------------------------------------
// Consumer.

/// What the rebalance callback and the source share.
#[derive(Debug, Default)]
struct GroupState {
    /// Bumped at every revocation.
    epoch: u64,
    /// Partition → epoch of its last revocation.
    revoked_at: HashMap<i32, u64>,
    /// Partition → next offset to commit, for batches stored whose commit has not
    /// been confirmed yet (it failed transiently). Empty between deliveries in normal
    /// operation, since the consumer commits right after each store.
    pending: BTreeMap<i32, i64>,
    /// Last computed lag of this consumer.
    lag: Option<i64>,
    /// When a consumer error was last logged as a warning.
    last_error_log: Option<Instant>,
}

/// The consumer's context: rebalance handling, lag from statistics, logs.
struct SourceContext {
    topic: String,
    lag_slot: u64,
    state: Arc<Mutex<GroupState>>,
}

fn lock(state: &Mutex<GroupState>) -> MutexGuard<'_, GroupState> {
    // The state stays consistent at every await-free step; a panic elsewhere does
    // not invalidate it.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(topic = %self.topic, error = %error, "librdkafka: {reason}");
    }

    fn stats_raw(&self, statistics: &[u8]) {
        let stats: Stats = match serde_json::from_slice(statistics) {
            Ok(stats) => stats,
            Err(e) => {
                tracing::debug!(error = %e, "unreadable librdkafka statistics");
                return;
            }
        };
        let lag = lag_of(&stats, &self.topic).unwrap_or(0);
        lock(&self.state).lag = Some(lag);
        report_lag(self.lag_slot, Some(lag));
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                // Offsets of stored batches whose commit is still owed must be
                // committed now, while this member owns the partitions; afterwards
                // the new owner would read those batches again. In normal operation
                // there are none: rebalances are served only inside `next()`, and the
                // consumer actor commits each delivery right after storing it, before
                // it calls `next()` again.
                let owed = {
                    let mut state = lock(&self.state);
                    state.epoch += 1;
                    let epoch = state.epoch;
                    let mut owed = TopicPartitionList::new();
                    for &p in &revoked {
                        state.revoked_at.insert(p, epoch);
                        if let Some(next) = state.pending.remove(&p) {
                            // A valid offset always fits; an invalid one is skipped.
                            let _ = owed.add_partition_offset(&self.topic, p, Offset::Offset(next));
                        }
                    }
                    owed
                };
                tracing::info!(topic = %self.topic, partitions = ?revoked, "partitions revoked");
                if owed.count() > 0 {
                    if consumer.assignment_lost() {
                        tracing::warn!(topic = %self.topic, "assignment lost; stored offsets not committed, their messages will be redelivered");
                    } else if let Err(e) = consumer.commit(&owed, CommitMode::Sync) {
                        tracing::warn!(topic = %self.topic, error = %e, "commit on revoke failed; those messages will be redelivered");
                    }
                }
            }
            Rebalance::Assign(tpl) => {
                let assigned: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(topic = %self.topic, partitions = ?assigned, "partitions assigned");
            }
            Rebalance::Error(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "rebalance error")
            }
        }
    }
}

/// A delivery handed out and not yet committed.
#[derive(Debug)]
struct Outstanding {
    /// Revocation epoch when the delivery was complete.
    epoch: u64,
    /// Partition → next offset to commit (highest offset of the delivery + 1).
    offsets: BTreeMap<i32, i64>,
}

/// One decoded message.
enum Decoded {
    Sale(Sale),
    Tweet(Tweet),
}

/// A delivery being gathered.
struct Gathering {
    /// Until when more messages are awaited.
    deadline: tokio::time::Instant,
    epoch: u64,
    messages: usize,
    events: Vec<(i32, Decoded)>,
    offsets: BTreeMap<i32, i64>,
    received_at: BTreeMap<i32, i64>,
}

/// Reads one topic (one event kind) in the consumer group. Hands out deliveries of
/// up to `batch_max` events and commits a delivery's offsets only when told to.
///
/// `next()` is cancellation safe: a delivery being gathered when its future is
/// dropped is kept and handed out by the next call.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<SourceContext>>,
    state: Arc<Mutex<GroupState>>,
    kind: Kind,
    topic: String,
    batch_max: usize,
    poll_linger: Duration,
    stop: CancellationToken,
    next_token: u64,
    outstanding: BTreeMap<u64, Outstanding>,
    gathering: Option<Gathering>,
    lag_slot: u64,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("kind", &self.kind)
            .field("topic", &self.topic)
            .field("outstanding", &self.outstanding.len())
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// A consumer of the topic of `kind` in group `config.group_id`, starting at the
    /// group's committed offsets (`earliest` when none). `next()` returns `None` once
    /// `stop` is cancelled. Must be called inside a tokio runtime; the topic should
    /// exist ([`ensure_topics`]).
    pub fn new(
        config: &KafkaConfig,
        kind: Kind,
        stop: CancellationToken,
    ) -> Result<Self, KafkaSetupError> {
        let topic = config.topic(kind).to_owned();
        let state = Arc::new(Mutex::new(GroupState::default()));
        let lag_slot = LAG_SLOTS.fetch_add(1, Ordering::Relaxed);
        let context = SourceContext {
            topic: topic.clone(),
            lag_slot,
            state: state.clone(),
        };
        let consumer: StreamConsumer<SourceContext> = client_config(&config.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", LAG_INTERVAL_MS.to_string())
            .create_with_context(context)
            .map_err(KafkaSetupError::Client)?;
        consumer
            .subscribe(&[&topic])
            .map_err(KafkaSetupError::Client)?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            state,
            kind,
            topic,
            batch_max: config.batch_max.max(1),
            poll_linger: Duration::from_millis(config.poll_linger_ms),
            stop,
            next_token: 0,
            outstanding: BTreeMap::new(),
            gathering: None,
            lag_slot,
        })
    }

    /// The topic this source reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// This source's last computed lag (Σ high watermark − position over its
    /// assigned partitions), refreshed about every second while `next()` polls;
    /// `None` before the first statistics arrived.
    pub fn lag(&self) -> Option<i64> {
        lock(&self.state).lag
    }

    /// Decodes one message into `gathering`; an undecodable one is logged and
    /// skipped, but its offset still counts, so it cannot block its partition.
    fn take(&self, gathering: &mut Gathering, message: &BorrowedMessage<'_>) {
        let (partition, offset) = (message.partition(), message.offset());
        gathering.messages += 1;
        let next = gathering.offsets.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        let decoded = match message.payload() {
            None => Err("empty payload".to_owned()),
            Some(bytes) => match self.kind {
                Kind::Sale => serde_json::from_slice(bytes)
                    .map(Decoded::Sale)
                    .map_err(|e| e.to_string()),
                Kind::Tweet => serde_json::from_slice(bytes)
                    .map(Decoded::Tweet)
                    .map_err(|e| e.to_string()),
            },
        };
        match decoded {
            Ok(event) => {
                if let Some(at) = received_at(message) {
                    let min = gathering.received_at.entry(partition).or_insert(at);
                    *min = (*min).min(at);
                }
                gathering.events.push((partition, event));
            }
            Err(error) => tracing::error!(
                topic = %self.topic, partition, offset, %error,
                "undecodable message skipped"
            ),
        }
    }

    /// Drops from `gathering` what was read from partitions revoked since it was
    /// last checked: their new owner reads those messages again.
    fn drop_revoked(&self, gathering: &mut Gathering) {
        let state = lock(&self.state);
        if state.epoch == gathering.epoch {
            return;
        }
        let since = gathering.epoch;
        let revoked = |p: &i32| state.revoked_at.get(p).is_some_and(|&at| at > since);
        gathering.events.retain(|(p, _)| !revoked(p));
        gathering.offsets.retain(|p, _| !revoked(p));
        gathering.received_at.retain(|p, _| !revoked(p));
        gathering.epoch = state.epoch;
    }

    /// Logs a consumer error: a warning, unless one was logged recently.
    fn log_error(&self, error: &KafkaError) {
        let warn = {
            let mut state = lock(&self.state);
            let due = state
                .last_error_log
                .is_none_or(|at| at.elapsed() >= ERROR_LOG_EVERY);
            if due {
                state.last_error_log = Some(Instant::now());
            }
            due
        };
        if warn {
            tracing::warn!(topic = %self.topic, %error, "kafka consumer error");
        } else {
            tracing::debug!(topic = %self.topic, %error, "kafka consumer error");
        }
    }

    /// Waits for the first message (or `stop`); `None` when stopped.
    async fn first(&self) -> Option<Gathering> {
        loop {
            let received = tokio::select! {
                biased;
                () = self.stop.cancelled() => return None,
                received = self.consumer.recv() => received,
            };
            let mut gathering = Gathering {
                deadline: tokio::time::Instant::now() + self.poll_linger,
                epoch: lock(&self.state).epoch,
                messages: 0,
                events: Vec::new(),
                offsets: BTreeMap::new(),
                received_at: BTreeMap::new(),
            };
            match received {
                Ok(message) => {
                    self.take(&mut gathering, &message);
                    return Some(gathering);
                }
                Err(e) => {
                    self.log_error(&e);
                    tokio::select! {
                        () = self.stop.cancelled() => return None,
                        () = tokio::time::sleep(ERROR_PAUSE) => {}
                    }
                }
            }
        }
    }

    /// Gathers a delivery: the first message, then more for at most `poll_linger`.
    /// The delivery being gathered lives in `self` across every await, so dropping
    /// the future (e.g. in a `select!`) loses nothing: the next call goes on with it.
    async fn gather(&mut self) -> Option<Gathering> {
        if self.gathering.is_none() {
            let first = self.first().await?;
            self.gathering = Some(first);
        }
        loop {
            let gathering = self.gathering.as_ref()?;
            if gathering.messages >= self.batch_max {
                break;
            }
            let deadline = gathering.deadline;
            let received = tokio::time::timeout_at(deadline, self.consumer.recv()).await;
            let mut gathering = self.gathering.take()?;
            self.drop_revoked(&mut gathering);
            let done = match received {
                Ok(Ok(message)) => {
                    self.take(&mut gathering, &message);
                    false
                }
                Ok(Err(e)) => {
                    self.log_error(&e);
                    false
                }
                Err(_) => true,
            };
            self.gathering = Some(gathering);
            if done {
                break;
            }
        }
        let mut gathering = self.gathering.take()?;
        self.drop_revoked(&mut gathering);
        Some(gathering)
    }

    /// Commits `offsets` (partition → next offset); the error says whether it is
    /// worth retrying.
    async fn commit_offsets(&self, offsets: &BTreeMap<i32, i64>) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (&partition, &next) in offsets {
            tpl.add_partition_offset(&self.topic, partition, Offset::Offset(next))?;
        }
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|_| KafkaError::Canceled)?
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        report_lag(self.lag_slot, None);
    }
}

/// A commit refused because this member no longer owns the partitions (the group
/// rebalanced or dropped it); its messages go to the new owner.
fn lost_ownership(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::AssignmentLost
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::State
        )
    )
}

#[tonic::async_trait]
impl Source for KafkaSource {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let gathering = self.gather().await?;
            if gathering.offsets.is_empty() {
                continue; // everything gathered was revoked meanwhile
            }
            let token = self.next_token;
            self.next_token += 1;
            self.outstanding.insert(
                token,
                Outstanding {
                    epoch: gathering.epoch,
                    offsets: gathering.offsets,
                },
            );
            while self.outstanding.len() > MAX_OUTSTANDING {
                if let Some((old, _)) = self.outstanding.pop_first() {
                    tracing::warn!(topic = %self.topic, token = old, "delivery never committed; it will be redelivered after a restart or rebalance");
                }
            }
            if gathering.events.is_empty() {
                // Only undecodable messages: nothing to store, so move past them now.
                if let Err(e) = self.commit(token).await {
                    tracing::warn!(topic = %self.topic, error = %e, "commit of skipped messages failed");
                }
                continue;
            }
            let received_at_ms = gathering
                .received_at
                .values()
                .copied()
                .min()
                .unwrap_or_else(now_ms);
            let events = match self.kind {
                Kind::Sale => Events::Sales(
                    gathering
                        .events
                        .into_iter()
                        .filter_map(|(_, e)| match e {
                            Decoded::Sale(s) => Some(s),
                            Decoded::Tweet(_) => None,
                        })
                        .collect(),
                ),
                Kind::Tweet => Events::Tweets(
                    gathering
                        .events
                        .into_iter()
                        .filter_map(|(_, e)| match e {
                            Decoded::Tweet(t) => Some(t),
                            Decoded::Sale(_) => None,
                        })
                        .collect(),
                ),
            };
            return Some(Delivery {
                batch: Batch {
                    events: Arc::new(events),
                    received_at_ms,
                    admitted: None,
                },
                token,
            });
        }
    }

    async fn commit(&mut self, token: u64) -> Result<(), SourceError> {
        let Some(delivery) = self.outstanding.remove(&token) else {
            tracing::warn!(topic = %self.topic, token, "commit of an unknown delivery ignored");
            return Ok(());
        };
        // Owed offsets: this delivery's, minus partitions revoked since it was
        // handed out, plus earlier ones whose commit failed transiently.
        let offsets = {
            let mut state = lock(&self.state);
            for (&partition, &next) in &delivery.offsets {
                let revoked = state
                    .revoked_at
                    .get(&partition)
                    .is_some_and(|&at| at > delivery.epoch);
                if revoked {
                    tracing::info!(topic = %self.topic, partition, "partition revoked before commit; its messages go to the new owner");
                    continue;
                }
                let owed = state.pending.entry(partition).or_insert(next);
                *owed = (*owed).max(next);
            }
            state.pending.clone()
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.commit_offsets(&offsets).await;
            let code = result.as_ref().err().and_then(|e| e.rdkafka_error_code());
            match result {
                Ok(()) => {}
                Err(_) if code == Some(RDKafkaErrorCode::NoOffset) => {}
                Err(e) if lost_ownership(code) => {
                    tracing::warn!(topic = %self.topic, error = %e, "commit refused after a group change; those messages will be redelivered to their new owner");
                }
                Err(e) if attempt < COMMIT_ATTEMPTS => {
                    tracing::debug!(topic = %self.topic, error = %e, attempt, "commit failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    continue;
                }
                Err(e) => {
                    // Kept pending: retried with the next commit, or on revoke.
                    return Err(SourceError(format!(
                        "kafka commit on {} failed: {e}",
                        self.topic
                    )));
                }
            }
            // Done with these offsets (committed, or no longer ours to commit).
            let mut state = lock(&self.state);
            for (partition, next) in offsets {
                if state
                    .pending
                    .get(&partition)
                    .is_some_and(|&owed| owed <= next)
                {
                    state.pending.remove(&partition);
                }
            }
            return Ok(());
        }
    }
}

/// The receive time carried by a message's header, if any.
fn received_at(message: &BorrowedMessage<'_>) -> Option<i64> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == RECEIVED_AT_HEADER)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_checks() {
        let c = KafkaConfig::default();
        assert_eq!(c.brokers, "127.0.0.1:9092");
        assert_eq!(
            (c.topic(Kind::Sale), c.topic(Kind::Tweet)),
            ("sales", "tweets")
        );
        assert_eq!(c.check(), Ok(()));
        let bad = KafkaConfig {
            partitions: 0,
            ..KafkaConfig::default()
        };
        assert!(bad.check().expect_err("bad").contains("kafka.partitions"));
        let bad = KafkaConfig {
            tweets_topic: "sales".into(),
            ..KafkaConfig::default()
        };
        assert!(bad.check().expect_err("bad").contains("kafka.tweets_topic"));
        let bad = KafkaConfig {
            sales_topic: "a b".into(),
            ..KafkaConfig::default()
        };
        assert!(bad.check().expect_err("bad").contains("kafka.sales_topic"));
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let parsed: KafkaConfig =
            serde_json::from_str(r#"{"brokers":"k:9092","batch_max":5}"#).expect("valid");
        assert_eq!((parsed.brokers.as_str(), parsed.batch_max), ("k:9092", 5));
        assert_eq!(parsed.group_id, "flujo-consumer");
        let err = serde_json::from_str::<KafkaConfig>(r#"{"broker":"k"}"#).expect_err("typo");
        assert!(err.to_string().contains("broker"), "{err}");
    }

    #[test]
    fn lag_sums_assigned_partitions() {
        let stats: Stats = serde_json::from_str(
            r#"{"topics":{"s":{"partitions":{
                "0":{"partition":0,"desired":true,"hi_offset":10,"lo_offset":0,"app_offset":4,"committed_offset":2},
                "1":{"partition":1,"desired":true,"hi_offset":7,"lo_offset":0,"app_offset":-1001,"committed_offset":5},
                "2":{"partition":2,"desired":true,"hi_offset":3,"lo_offset":1,"app_offset":-1001,"committed_offset":-1001},
                "3":{"partition":3,"desired":false,"hi_offset":99,"lo_offset":0,"app_offset":0,"committed_offset":0},
                "-1":{"partition":-1,"desired":false,"hi_offset":-1}
            }}}}"#,
        )
        .expect("stats");
        assert_eq!(lag_of(&stats, "s"), Some(6 + 2 + 2));
        assert_eq!(lag_of(&stats, "other"), None);
    }

    #[test]
    fn ownership_errors_are_recognised() {
        assert!(lost_ownership(Some(RDKafkaErrorCode::IllegalGeneration)));
        assert!(lost_ownership(Some(RDKafkaErrorCode::RebalanceInProgress)));
        assert!(!lost_ownership(Some(RDKafkaErrorCode::NotCoordinator)));
        assert!(!lost_ownership(None));
    }
}
