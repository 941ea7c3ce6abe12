//! Publisher: one per sink. Puts batches on its sink (the in-process memory bus
//! here; Kafka and RabbitMQ are further `Sink` implementations) and answers once the
//! sink confirmed.

use crate::breaker::Breaker;
use crate::mailbox::Mailbox;
use crate::messages::{Batch, PipelineError, Publish};
use crate::metrics::{EVENTS_PUBLISHED, EVENTS_PUBLISH_FAILED, PUBLISH_DURATION};
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The publishers' mailbox (`actor="publisher"`).
pub const MAILBOX: Mailbox = Mailbox("publisher");

/// A failure of a sink.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where a publisher puts batches.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Short name used as the `sink` label (`memory`, `kafka`, `rabbitmq`).
    fn name(&self) -> &'static str;
    /// Puts the batch on the sink; returns once the sink confirmed it.
    async fn publish(&self, batch: Batch) -> Result<(), SinkError>;
    /// Checks that the sink can take batches (readiness).
    async fn ready(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// How long a publisher waits for its sink by default (the durable-ack deadline).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// Publishes batches to one sink, through its circuit breaker and within a deadline.
pub struct Publisher {
    sink: Arc<dyn Sink>,
    breaker: Arc<Breaker>,
    deadline: Duration,
}

impl Publisher {
    /// A publisher for `sink` with a breaker of default settings and the default
    /// deadline.
    pub fn new(sink: Arc<dyn Sink>) -> Self {
        let breaker = Breaker::new(sink.name(), Default::default());
        Self::guarded(sink, breaker, DEFAULT_DEADLINE)
    }

    /// A publisher for `sink` that asks `breaker` before each publish, reports each
    /// outcome to it, and gives up on a publish after `deadline` (a timeout, the
    /// outcome unknown).
    pub fn guarded(sink: Arc<dyn Sink>, breaker: Arc<Breaker>, deadline: Duration) -> Self {
        Publisher {
            sink,
            breaker,
            deadline,
        }
    }

    /// Puts `batch` on the sink; resolves once the sink confirmed it.
    fn publish(&self, batch: Batch) -> impl Future<Output = Result<(), PipelineError>> + 'static {
        let (sink, breaker, deadline) = (self.sink.clone(), self.breaker.clone(), self.deadline);
        async move {
            let (kind, n) = (batch.kind().as_str(), batch.events.len() as u64);
            let name = sink.name();
            let permit = match breaker.try_acquire() {
                Ok(permit) => permit,
                Err(refused) => {
                    metrics::counter!(EVENTS_PUBLISH_FAILED, "kind" => kind, "sink" => name)
                        .increment(n);
                    return Err(PipelineError::CircuitOpen(refused));
                }
            };
            let started = Instant::now();
            let result = match tokio::time::timeout(deadline, sink.publish(batch)).await {
                Ok(result) => result,
                Err(_) => {
                    breaker.record(permit, Err("no confirmation within the deadline"));
                    metrics::histogram!(PUBLISH_DURATION, "sink" => name)
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!(EVENTS_PUBLISH_FAILED, "kind" => kind, "sink" => name)
                        .increment(n);
                    tracing::warn!(
                        sink = name,
                        deadline_ms = deadline.as_millis() as u64,
                        "publish timed out; outcome unknown"
                    );
                    return Err(PipelineError::Timeout {
                        sink: name,
                        after: deadline,
                    });
                }
            };
            breaker.record(
                permit,
                result.as_ref().map(|_| ()).map_err(|e| e.0.as_str()),
            );
            metrics::histogram!(PUBLISH_DURATION, "sink" => name)
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    metrics::counter!(EVENTS_PUBLISHED, "kind" => kind, "sink" => name)
                        .increment(n);
                    Ok(())
                }
                Err(e) => {
                    metrics::counter!(EVENTS_PUBLISH_FAILED, "kind" => kind, "sink" => name)
                        .increment(n);
                    tracing::warn!(sink = name, error = %e, "publish failed");
                    Err(PipelineError::SinkUnavailable {
                        sink: name,
                        reason: e.0,
                    })
                }
            }
        }
    }
}

crate::pass_batches_on!(Publisher, Publish, publish);
