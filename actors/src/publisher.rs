//! Publisher: one per sink. Puts batches on its sink (the in-process memory bus
//! here; Kafka and RabbitMQ are further `Sink` implementations) and answers once the
//! sink confirmed.

use crate::mailbox::Mailbox;
use crate::messages::{Batch, PipelineError, Publish};
use crate::metrics::{EVENTS_PUBLISHED, EVENTS_PUBLISH_FAILED, PUBLISH_DURATION};
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

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

/// Publishes batches to one sink.
pub struct Publisher {
    sink: Arc<dyn Sink>,
}

impl Publisher {
    /// A publisher for `sink`.
    pub fn new(sink: Arc<dyn Sink>) -> Self {
        Publisher { sink }
    }

    /// Puts `batch` on the sink; resolves once the sink confirmed it.
    fn publish(&self, batch: Batch) -> impl Future<Output = Result<(), PipelineError>> + 'static {
        let sink = self.sink.clone();
        async move {
            let (kind, n) = (batch.kind().as_str(), batch.events.len() as u64);
            let started = Instant::now();
            let result = sink.publish(batch).await;
            let name = sink.name();
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
