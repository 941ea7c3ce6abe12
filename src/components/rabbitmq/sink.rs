//! [`RabbitSink`]: publishes batches with publisher confirms on a connection that a
//! background task keeps open.

use super::admin::{close_quietly, connect, declare_on, CONNECT_TIMEOUT};
use super::{RabbitConfig, RabbitError, NAME};
use crate::components::mask_url_password;
use crate::components::wire::{self, CONTENT_TYPE, RECEIVED_AT_HEADER};
use flujo_actors::backoff::Backoff;
use flujo_actors::messages::Batch;
use flujo_actors::publisher::{Sink, SinkError};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// AMQP delivery mode of a persistent message.
const PERSISTENT: u8 = 2;
/// Longest wait for the broker to confirm one batch.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the sink's supervisor looks at its connection without being asked.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

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
        let bodies = wire::encode_events(&batch.events)
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
    let mut backoff = Backoff::reconnect();
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
