//! RabbitMQ as the bus: [`RabbitSink`] publishes batches with publisher confirms to
//! durable queues (one per event kind), [`RabbitSource`] consumes one queue with
//! manual acks and a prefetch window, acking a batch only once it was stored.
//!
//! On the wire every event is one persistent message (`delivery_mode = 2`,
//! `content_type = application/json`) on the default exchange, routing key = queue,
//! whose body is the event's canonical JSON (English field names, `id` and `ts`
//! included) and whose header `flujo-received-at` carries the batch's receive time
//! (ms since the epoch, for end-to-end latency).
//!
//! Both halves keep their own connection and reconnect with exponential backoff when
//! it is lost: the sink answers `publish` with an error at once while it is down (the
//! ingest transports turn that into 503) and recovers in the background; the source
//! resumes consuming, and RabbitMQ redelivers what was not acked (flujo deduplicates
//! by event id, so a redelivery never counts twice).

use crate::config::mask_url_password;
use flujo_actors::consumer::{Delivery, Source, SourceError};
use flujo_actors::event::{now_ms, Events, Kind, Sale, Tweet};
use flujo_actors::messages::Batch;
use flujo_actors::metrics::{CONSUMER_LAG, EVENTS_REJECTED};
use flujo_actors::publisher::{Sink, SinkError};
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The `sink`/`source` label of this bus.
const NAME: &str = "rabbitmq";
/// Message header holding the batch's receive time (ms since the epoch).
pub const RECEIVED_AT_HEADER: &str = "flujo-received-at";
/// Content type of every message.
pub const CONTENT_TYPE: &str = "application/json";
/// AMQP delivery mode of a persistent message.
const PERSISTENT: u8 = 2;
/// Longest wait for a TCP connection plus AMQP handshake and setup.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the broker to confirm one batch.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a graceful close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the sink's supervisor looks at its connection without being asked.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// How often a source refreshes the queue-depth gauge.
const LAG_INTERVAL: Duration = Duration::from_secs(1);
/// Delivery tags take the low 48 bits of a commit token, the channel generation the
/// high 16 (2^48 deliveries on one channel is years at a million messages a second).
const TAG_BITS: u32 = 48;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

/// RabbitMQ settings (config section `[rabbitmq]`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RabbitConfig {
    /// AMQP URL, `amqp://user:password@host:port/vhost` (vhost `/` is `%2f`); TLS
    /// (`amqps://`) is not built in. The password is masked when shown.
    pub url: String,
    /// Queue that carries sales (declared durable at start when missing).
    pub sales_queue: String,
    /// Queue that carries tweets (declared durable at start when missing).
    pub tweets_queue: String,
    /// Consumer prefetch: unacked messages RabbitMQ may have in flight to one
    /// consumer. Keep it at least `batch_max` (twice is good: the next batch fills
    /// while the previous one is being stored).
    pub prefetch: u16,
    /// Most messages (events) a consumer gathers into one batch.
    pub batch_max: usize,
    /// How long a consumer waits for more messages after the first one of a batch, in ms.
    pub batch_linger_ms: u64,
}

impl Default for RabbitConfig {
    fn default() -> Self {
        RabbitConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            sales_queue: "sales".into(),
            tweets_queue: "tweets".into(),
            prefetch: 1000,
            batch_max: 500,
            batch_linger_ms: 5,
        }
    }
}

impl fmt::Debug for RabbitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitConfig")
            .field("url", &mask_url_password(&self.url))
            .field("sales_queue", &self.sales_queue)
            .field("tweets_queue", &self.tweets_queue)
            .field("prefetch", &self.prefetch)
            .field("batch_max", &self.batch_max)
            .field("batch_linger_ms", &self.batch_linger_ms)
            .finish()
    }
}

impl RabbitConfig {
    /// The queue that carries events of `kind`.
    pub fn queue(&self, kind: Kind) -> &str {
        match kind {
            Kind::Sale => &self.sales_queue,
            Kind::Tweet => &self.tweets_queue,
        }
    }

    /// Checks the values a broker would refuse or that make no sense, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.url.starts_with("amqp://") {
            return Err(format!(
                "rabbitmq.url must be an amqp:// URL (amqps:// is not supported), got {}",
                mask_url_password(&self.url)
            ));
        }
        if self.url.parse::<lapin::uri::AMQPUri>().is_err() {
            return Err(format!(
                "rabbitmq.url is not a valid AMQP URL: {}",
                mask_url_password(&self.url)
            ));
        }
        for (key, queue) in [
            ("rabbitmq.sales_queue", &self.sales_queue),
            ("rabbitmq.tweets_queue", &self.tweets_queue),
        ] {
            if queue.is_empty() || queue.len() > 255 || queue.starts_with("amq.") {
                return Err(format!(
                    "{key} must be 1-255 bytes and not start with `amq.`, got {queue:?}"
                ));
            }
        }
        if self.sales_queue == self.tweets_queue {
            return Err("rabbitmq.sales_queue and rabbitmq.tweets_queue must differ".into());
        }
        if self.prefetch == 0 {
            return Err("rabbitmq.prefetch must be at least 1".into());
        }
        if self.batch_max == 0 {
            return Err("rabbitmq.batch_max must be at least 1".into());
        }
        Ok(())
    }
}

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
}

impl RabbitError {
    fn amqp(config: &RabbitConfig, source: lapin::Error) -> Self {
        RabbitError::Amqp {
            url: mask_url_password(&config.url),
            source,
        }
    }
}

/// Opens a connection named `name` (shown in RabbitMQ's management UI and
/// `rabbitmqctl list_connections client_properties`).
pub async fn connect(config: &RabbitConfig, name: &str) -> Result<Connection, RabbitError> {
    let properties = ConnectionProperties::default().with_connection_name(name.to_owned().into());
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(&config.url, properties),
    )
    .await
    {
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
async fn declare_on(connection: &Connection, config: &RabbitConfig) -> Result<(), RabbitError> {
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

async fn close_quietly(connection: &Connection) {
    if connection.status().connected() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "OK".into())).await;
    }
}

/// Exponential backoff with jitter, 100 ms doubling up to 5 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Backoff { next: Self::MIN }
    }

    fn reset(&mut self) {
        self.next = Self::MIN;
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(Self::MAX);
        // Up to +50 % jitter, so many clients do not reconnect in lockstep.
        let jitter = rand::random::<f64>() * 0.5;
        base.mul_f64(1.0 + jitter)
    }
}

// ---------------------------------------------------------------------------------
// Sink
// ---------------------------------------------------------------------------------

/// A connection with a confirm-mode channel, as the sink uses it.
struct SinkLink {
    connection: Connection,
    channel: Channel,
}

impl SinkLink {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

struct SinkShared {
    config: RabbitConfig,
    connection_name: String,
    link: Mutex<Option<Arc<SinkLink>>>,
    last_error: Mutex<String>,
    wake: Notify,
    supervisor_started: AtomicBool,
    stop: CancellationToken,
}

impl SinkShared {
    fn current_link(&self) -> Option<Arc<SinkLink>> {
        self.link.lock().ok().and_then(|link| link.clone())
    }

    fn set_link(&self, new: Option<Arc<SinkLink>>) {
        if let Ok(mut link) = self.link.lock() {
            *link = new;
        }
    }

    fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|_| "unknown".into())
    }

    fn set_last_error(&self, error: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }

    /// Forgets `failed` (if it is still the current link) and wakes the supervisor.
    fn link_failed(&self, failed: &Arc<SinkLink>, error: String) {
        if let Ok(mut link) = self.link.lock() {
            if link.as_ref().is_some_and(|l| Arc::ptr_eq(l, failed)) {
                *link = None;
            }
        }
        self.set_last_error(error);
        self.wake.notify_one();
    }

    fn unavailable(&self) -> SinkError {
        SinkError(format!("rabbitmq unavailable: {}", self.last_error()))
    }
}

/// Publishes batches to RabbitMQ with publisher confirms: every event becomes one
/// persistent JSON message on the durable queue of its kind, and `publish` returns
/// only once the broker confirmed every message of the batch.
///
/// The connection is opened and kept by a background task (started by the first
/// `publish`, `ready` or `wait_ready`, on the Tokio runtime of that call) that
/// reconnects with backoff whenever it is lost and re-declares the queues. While it
/// is down, `publish` fails at once. Dropping the sink closes the connection.
pub struct RabbitSink {
    shared: Arc<SinkShared>,
}

impl fmt::Debug for RabbitSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitSink")
            .field("config", &self.shared.config)
            .field("connected", &self.shared.current_link().is_some())
            .finish()
    }
}

impl RabbitSink {
    /// A sink for `config`; connects in the background (no I/O here).
    pub fn new(config: RabbitConfig) -> Self {
        Self::with_connection_name(config, "flujo publisher")
    }

    /// Like [`RabbitSink::new`], naming the connection as shown by the broker.
    pub fn with_connection_name(config: RabbitConfig, name: impl Into<String>) -> Self {
        RabbitSink {
            shared: Arc::new(SinkShared {
                config,
                connection_name: name.into(),
                link: Mutex::new(None),
                last_error: Mutex::new("not connected yet".into()),
                wake: Notify::new(),
                supervisor_started: AtomicBool::new(false),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RabbitConfig {
        &self.shared.config
    }

    /// Waits until the sink is connected or `timeout` passed.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), SinkError> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.ready_link().map(drop);
            if result.is_ok() || Instant::now() >= deadline {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ensure_supervisor(&self) {
        if !self.shared.supervisor_started.swap(true, Ordering::SeqCst) {
            tokio::spawn(supervise_sink(self.shared.clone()));
        }
    }

    /// The usable link, or an error at once (waking the supervisor to reconnect).
    fn link(&self) -> Result<Arc<SinkLink>, SinkError> {
        self.ensure_supervisor();
        match self.shared.current_link() {
            Some(link) if link.usable() => Ok(link),
            Some(link) => {
                self.shared
                    .link_failed(&link, "connection or channel closed".into());
                Err(self.shared.unavailable())
            }
            None => {
                self.shared.wake.notify_one();
                Err(self.shared.unavailable())
            }
        }
    }

    /// The link if it can take messages now: connected and not blocked by a
    /// resource alarm.
    fn ready_link(&self) -> Result<Arc<SinkLink>, SinkError> {
        let link = self.link()?;
        if link.connection.status().blocked() {
            return Err(SinkError(
                "rabbitmq blocked publishing (resource alarm: memory or disk)".into(),
            ));
        }
        Ok(link)
    }

    async fn publish_on(
        &self,
        link: &Arc<SinkLink>,
        queue: &str,
        bodies: Vec<Vec<u8>>,
        properties: BasicProperties,
    ) -> Result<(), SinkError> {
        let lost = |e: lapin::Error| {
            let error = format!("publish to {queue} failed: {e}");
            self.shared.link_failed(link, error.clone());
            SinkError(format!("rabbitmq: {error}"))
        };
        // Pipelined: queue every message for the wire first, then collect the
        // confirms. The first poll of `basic_publish` registers the confirm and
        // queues the frames synchronously, so polling each once, in order, keeps the
        // batch's order on the queue without waiting for the socket per message.
        let options = BasicPublishOptions {
            // An unroutable message (queue deleted) comes back instead of being
            // dropped silently.
            mandatory: true,
            immediate: false,
        };
        let mut sending = Vec::with_capacity(bodies.len());
        for body in &bodies {
            let mut send = Box::pin(link.channel.basic_publish(
                "".into(),
                queue.into(),
                options,
                body,
                properties.clone(),
            ));
            match futures::poll!(send.as_mut()) {
                Poll::Ready(Err(e)) => return Err(lost(e)),
                Poll::Ready(Ok(confirm)) => sending.push(Sending::Queued(confirm)),
                Poll::Pending => sending.push(Sending::Writing(send)),
            }
        }
        let mut confirms = Vec::with_capacity(sending.len());
        for send in sending {
            confirms.push(match send {
                Sending::Queued(confirm) => confirm,
                Sending::Writing(send) => send.await.map_err(lost)?,
            });
        }
        let mut unroutable = 0usize;
        let mut nacked = 0usize;
        for confirm in confirms {
            match confirm.await.map_err(lost)? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => unroutable += 1,
                Confirmation::Nack(_) => nacked += 1,
                Confirmation::NotRequested => {
                    return Err(SinkError(
                        "rabbitmq: channel is not in confirm mode".to_owned(),
                    ))
                }
            }
        }
        if unroutable > 0 {
            // The queue is gone (deleted by someone): declare it again for the retry.
            if let Err(e) = declare_on(&link.connection, &self.shared.config).await {
                tracing::warn!(error = %e, "re-declaring queues failed");
            }
            return Err(SinkError(format!(
                "rabbitmq: {unroutable} of {} messages unroutable: queue {queue} is missing (re-declared)",
                bodies.len()
            )));
        }
        if nacked > 0 {
            return Err(SinkError(format!(
                "rabbitmq: broker refused (nacked) {nacked} of {} messages on {queue}",
                bodies.len()
            )));
        }
        Ok(())
    }
}

/// One message of a batch on its way out.
enum Sending<F> {
    /// Handed to the connection; the confirm is pending.
    Queued(PublisherConfirm),
    /// Still being handed to the connection.
    Writing(Pin<Box<F>>),
}

impl Drop for RabbitSink {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

#[tonic::async_trait]
impl Sink for RabbitSink {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn publish(&self, batch: Batch) -> Result<(), SinkError> {
        if batch.events.is_empty() {
            return Ok(());
        }
        let queue = self.shared.config.queue(batch.kind()).to_owned();
        let bodies = encode_events(&batch.events)
            .map_err(|e| SinkError(format!("cannot encode event as JSON: {e}")))?;
        let link = self.ready_link()?;
        let mut headers = FieldTable::default();
        headers.insert(
            RECEIVED_AT_HEADER.into(),
            AMQPValue::LongLongInt(batch.received_at_ms),
        );
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(CONTENT_TYPE.into())
            .with_headers(headers);
        let n = bodies.len();
        match tokio::time::timeout(
            CONFIRM_TIMEOUT,
            self.publish_on(&link, &queue, bodies, properties),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(SinkError(format!(
                "rabbitmq: no confirm for {n} messages on {queue} within {}s",
                CONFIRM_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn ready(&self) -> Result<(), SinkError> {
        self.ready_link().map(drop)
    }
}

/// The canonical JSON of every event of the batch, in order.
pub fn encode_events(events: &Events) -> Result<Vec<Vec<u8>>, serde_json::Error> {
    match events {
        Events::Sales(sales) => sales.iter().map(serde_json::to_vec).collect(),
        Events::Tweets(tweets) => tweets.iter().map(serde_json::to_vec).collect(),
    }
}

async fn open_sink_link(config: &RabbitConfig, name: &str) -> Result<SinkLink, RabbitError> {
    let connection = connect(config, name).await?;
    declare_on(&connection, config).await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| RabbitError::amqp(config, e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| RabbitError::amqp(config, e))?;
    Ok(SinkLink {
        connection,
        channel,
    })
}

/// Keeps the sink connected until it is dropped.
async fn supervise_sink(shared: Arc<SinkShared>) {
    let mut backoff = Backoff::new();
    let mut was_down = false;
    loop {
        let healthy = shared.current_link().is_some_and(|l| l.usable());
        if !healthy {
            if let Some(old) = shared.current_link() {
                shared.link_failed(&old, "connection or channel closed".into());
            }
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT * 2,
                open_sink_link(&shared.config, &shared.connection_name),
            );
            let result = tokio::select! {
                _ = shared.stop.cancelled() => break,
                r = attempt => r.unwrap_or_else(|_| Err(RabbitError::Timeout(mask_url_password(&shared.config.url)))),
            };
            match result {
                Ok(link) => {
                    if was_down {
                        tracing::info!(sink = NAME, "reconnected to rabbitmq");
                    } else {
                        tracing::info!(sink = NAME, "connected to rabbitmq");
                    }
                    shared.set_link(Some(Arc::new(link)));
                    backoff.reset();
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(sink = NAME, error = %e, ?delay, "rabbitmq unavailable; retrying");
                    shared.set_last_error(e.to_string());
                    was_down = true;
                    tokio::select! {
                        _ = shared.stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
        if let Some(link) = shared.current_link().filter(|l| !l.usable()) {
            shared.link_failed(&link, "connection or channel closed".into());
        }
        if shared.current_link().is_none() {
            tracing::warn!(sink = NAME, error = %shared.last_error(), "lost rabbitmq connection; reconnecting");
            was_down = true;
        }
    }
    if let Some(link) = shared.current_link() {
        close_quietly(&link.connection).await;
    }
    shared.set_link(None);
}

// ---------------------------------------------------------------------------------
// Source
// ---------------------------------------------------------------------------------

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
            backoff: Backoff::new(),
            lag_checked: None,
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
                }
                Err(e) => {
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
        let mut sales = Vec::new();
        let mut tweets = Vec::new();
        let mut received_at: Option<i64> = None;
        let mut last_tag = None;
        for delivery in deliveries {
            let decoded = match self.kind {
                Kind::Sale => serde_json::from_slice::<Sale>(&delivery.data).map(|s| sales.push(s)),
                Kind::Tweet => {
                    serde_json::from_slice::<Tweet>(&delivery.data).map(|t| tweets.push(t))
                }
            };
            match decoded {
                Ok(()) => {
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
                    metrics::counter!(EVENTS_REJECTED, "kind" => kind, "transport" => NAME, "reason" => "undecodable")
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
        let events = match self.kind {
            Kind::Sale => Events::Sales(sales),
            Kind::Tweet => Events::Tweets(tweets),
        };
        Some(Delivery {
            batch: Batch {
                events: Arc::new(events),
                received_at_ms: received_at.unwrap_or_else(now_ms),
                admitted: None,
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

    #[test]
    fn config_defaults_and_checks() {
        let config = RabbitConfig::default();
        assert_eq!(config.queue(Kind::Sale), "sales");
        assert_eq!(config.queue(Kind::Tweet), "tweets");
        assert!(config.validate().is_ok());
        assert!(!format!("{config:?}").contains("guest:guest"));
        let bad = RabbitConfig {
            tweets_queue: "sales".into(),
            ..RabbitConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = RabbitConfig {
            url: "amqps://h/".into(),
            ..RabbitConfig::default()
        };
        assert!(bad.validate().expect_err("amqps").contains("rabbitmq.url"));
        let parsed: RabbitConfig =
            serde_json::from_str(r#"{"prefetch": 10}"#).expect("partial config");
        assert_eq!((parsed.prefetch, parsed.batch_max), (10, 500));
        assert!(serde_json::from_str::<RabbitConfig>(r#"{"prefetc": 10}"#).is_err());
    }

    #[test]
    fn backoff_grows_to_a_cap() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Backoff::MIN && first <= Backoff::MIN.mul_f64(1.5));
        for _ in 0..20 {
            assert!(b.next_delay() <= Backoff::MAX.mul_f64(1.5));
        }
        b.reset();
        assert!(b.next_delay() <= Backoff::MIN.mul_f64(1.5));
    }
}
