//! Messages between the actors, and the batch that travels through them.

use crate::admission::Admitted;
use crate::event::{Events, Kind, ValidationError};
use crate::store::{Applied, StoreError};
use actix::Message;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The ingest transport an event arrived by (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP (axum).
    Http,
    /// gRPC (tonic).
    Grpc,
    /// Newline-delimited TCP.
    Tcp,
}

impl Transport {
    /// Label value: `http`, `grpc` or `tcp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
            Transport::Tcp => "tcp",
        }
    }
}

/// When the receiver answers a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After every sink confirmed the batch.
    Durable,
    /// Once the batch is in the router's mailbox (lowest latency; lossy on crash).
    Accepted,
}

/// A validated batch on its way through the pipeline.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The events, all of one kind.
    pub events: Arc<Events>,
    /// When the receiver accepted it, ms since the epoch (end-to-end latency).
    pub received_at_ms: i64,
    /// Room held in the pipeline until the last copy of the batch is dropped.
    pub admitted: Option<Arc<Admitted>>,
}

impl Batch {
    /// Kind of the events.
    pub fn kind(&self) -> Kind {
        self.events.kind()
    }
}

/// Receiver ← transport: a batch of JSON objects of one kind to validate and route.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ingest {
    /// Kind the endpoint accepts.
    pub kind: Kind,
    /// The decoded JSON values, one per event.
    pub objects: Vec<Value>,
    /// Arrival transport (metrics).
    pub transport: Transport,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<Accepted, IngestError>>,
}

/// A batch accepted per the ack mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Ids of the events, in batch order.
    pub ids: Vec<String>,
}

/// Why a batch was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// An event is malformed; nothing of the batch was taken.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The pipeline is full; retry shortly (HTTP 429, gRPC RESOURCE_EXHAUSTED).
    #[error("{0}")]
    Backpressure(String),
    /// A sink or the next stage is down (HTTP 503, gRPC UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// The batch is larger than the pipeline can ever hold.
    #[error("{0}")]
    TooLarge(String),
}

/// Router ← receiver: send this batch to the sinks of its kind.
#[derive(Message)]
#[rtype(result = "Result<(), PipelineError>")]
pub struct Route(pub Batch);

/// Publisher ← router: put this batch on the sink.
#[derive(Message)]
#[rtype(result = "Result<(), PipelineError>")]
pub struct Publish(pub Batch);

/// Aggregator ← consumer: apply this batch to the store.
#[derive(Message)]
#[rtype(result = "Result<Applied, StoreError>")]
pub struct Apply(pub Batch);

/// A failure between stages.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PipelineError {
    /// A sink refused or could not be reached.
    #[error("sink {sink} unavailable: {reason}")]
    SinkUnavailable {
        /// Sink name.
        sink: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// No sink is configured for this kind.
    #[error("no sink routes {0} events")]
    NoRoute(Kind),
    /// The next stage is full; retry shortly.
    #[error("{0}")]
    Backpressure(String),
    /// An actor's mailbox is closed (the actor stopped).
    #[error("{0} is not running")]
    Stopped(&'static str),
}
