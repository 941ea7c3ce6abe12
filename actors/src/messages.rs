//! Messages between the actors, and the batch that travels through them.

use crate::admission::Admitted;
use crate::event::{Events, Kind, RawBatch, Refusal, ValidationError};
use crate::mailbox::Queued;
use crate::store::{Applied, Positions, StoreError};
use crate::{aggregator, publisher, receiver, router};
use actix::Message;
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
    /// Where the events sit in their source, when it has offsets (Kafka).
    pub positions: Option<Arc<Positions>>,
}

impl Batch {
    /// Kind of the events.
    pub fn kind(&self) -> Kind {
        self.events.kind()
    }

    /// The batch split by source stream (Kafka partition), each part with its own
    /// events in their order and their positions: parts touch disjoint positions, so
    /// they may be applied concurrently. A batch of one stream, or without positions,
    /// stays whole. The events are moved, not copied, when nothing else holds them.
    pub fn by_stream(self) -> Vec<Batch> {
        let Some(positions) = self.positions.clone() else {
            return vec![self];
        };
        // Positions that do not name a stream for every event stay whole: the store
        // checks them (and refuses a misfit) as one batch.
        if positions.streams.len() < 2
            || positions.offsets.len() != self.events.len()
            || positions.check(self.events.len()).is_err()
        {
            return vec![self];
        }
        let events = Arc::try_unwrap(self.events).unwrap_or_else(|shared| (*shared).clone());
        let part = |events, offsets: Vec<(u32, i64)>, stream: &String| Batch {
            events: Arc::new(events),
            received_at_ms: self.received_at_ms,
            admitted: self.admitted.clone(),
            positions: Some(Arc::new(Positions {
                streams: vec![stream.clone()],
                offsets,
            })),
        };
        match events {
            Events::Sales(v) => split_by_stream(v, &positions)
                .map(|(s, (v, o))| part(Events::Sales(v), o, s))
                .collect(),
            Events::Tweets(v) => split_by_stream(v, &positions)
                .map(|(s, (v, o))| part(Events::Tweets(v), o, s))
                .collect(),
        }
    }
}

/// `items` (one per entry of `positions.offsets`) grouped by stream, in order, each
/// with its offsets renumbered to its single stream (index 0); empty groups left out.
#[allow(clippy::type_complexity)]
fn split_by_stream<T>(
    items: Vec<T>,
    positions: &Positions,
) -> impl Iterator<Item = (&String, (Vec<T>, Vec<(u32, i64)>))> {
    let mut parts: Vec<(Vec<T>, Vec<(u32, i64)>)> = positions
        .streams
        .iter()
        .map(|_| (Vec::new(), Vec::new()))
        .collect();
    for (item, &(stream, offset)) in items.into_iter().zip(&positions.offsets) {
        let part = &mut parts[stream as usize];
        part.0.push(item);
        part.1.push((0, offset));
    }
    positions
        .streams
        .iter()
        .zip(parts)
        .filter(|(_, (items, _))| !items.is_empty())
}

/// Receiver ← transport: a batch of one kind to validate and route.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ingest {
    /// The events as the transport decoded them.
    pub batch: RawBatch,
    /// Arrival transport (metrics).
    pub transport: Transport,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<Accepted, IngestError>>,
    /// Whether a bad event refuses the whole batch or only itself.
    pub refusal: Refusal,
    /// Counts the message in the receiver's mailbox depth.
    pub(crate) queued: Queued,
    /// When the transport handed the batch over: a batch waits for room in the
    /// pipeline at most `admission_wait` from then, however long it queued.
    pub(crate) sent_at: tokio::time::Instant,
    /// When the transport must have its answer (its request deadline, less the time
    /// to write the answer): a durable batch still unconfirmed then is answered as
    /// an unknown outcome with its ids, and a batch not admitted by then is refused
    /// before anything is published. `None`: only the durable-ack deadline applies.
    pub answer_by: Option<tokio::time::Instant>,
}

impl Ingest {
    /// A batch for a receiver, answered on `reply`.
    pub fn new(
        batch: RawBatch,
        transport: Transport,
        reply: oneshot::Sender<Result<Accepted, IngestError>>,
    ) -> Self {
        Ingest {
            batch,
            transport,
            reply,
            refusal: Refusal::WholeBatch,
            queued: receiver::MAILBOX.enqueue(),
            sent_at: tokio::time::Instant::now(),
            answer_by: None,
        }
    }

    /// The same message to be answered by `answer_by` (see [`Ingest::answer_by`]).
    pub fn answering_by(self, answer_by: Option<tokio::time::Instant>) -> Self {
        Ingest { answer_by, ..self }
    }

    /// The same message with bad events refused one by one (see [`Refusal`]).
    pub fn refusing(self, refusal: Refusal) -> Self {
        Ingest { refusal, ..self }
    }
}

/// A batch accepted per the ack mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Ids of the accepted events, in batch order.
    pub ids: Vec<String>,
    /// The bad events refused one by one ([`Refusal::EachEvent`]; always empty
    /// otherwise): `ids` holds the others, in order.
    pub refused: Vec<ValidationError>,
}

impl Accepted {
    /// The answer to each event of the batch, in order: its id, or why it was refused.
    pub fn per_event(self) -> Vec<Result<String, ValidationError>> {
        let mut refused = self.refused.into_iter().peekable();
        let mut ids = self.ids.into_iter();
        let mut answers = Vec::new();
        loop {
            if refused.peek().is_some_and(|r| r.index == answers.len()) {
                answers.push(Err(refused.next().expect("peeked")));
            } else if let Some(id) = ids.next() {
                answers.push(Ok(id));
            } else if let Some(r) = refused.next() {
                answers.push(Err(r));
            } else {
                return answers;
            }
        }
    }
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
    /// A sink's circuit breaker is open: nothing was published to it; retry after
    /// `retry_after_secs` (HTTP 503 + `Retry-After`, gRPC UNAVAILABLE).
    #[error("{message}")]
    CircuitOpen {
        /// What is open, naming the sink.
        message: String,
        /// Whole seconds until the breaker lets a probe through.
        retry_after_secs: u64,
    },
    /// Publishing began but did not confirm within the durable-ack deadline (or
    /// failed half-way): the events may or may not be on the bus. Resending them
    /// with these `ids` is idempotent (the consumers' id window applies each once).
    #[error("outcome unknown: {reason}; resend the same events with the same ids")]
    OutcomeUnknown {
        /// What went wrong.
        reason: String,
        /// The ids stamped on the batch's accepted events, in order.
        ids: Vec<String>,
        /// The events refused one by one ([`Refusal::EachEvent`]), as in [`Accepted`].
        refused: Vec<ValidationError>,
    },
    /// The batch is larger than the pipeline can ever hold.
    #[error("{0}")]
    TooLarge(String),
}

/// A message that carries one batch, counted in its destination's mailbox depth
/// from `new` until the handler takes the batch out (or the message is dropped).
macro_rules! batch_message {
    ($(#[$doc:meta])* $name:ident, $mailbox:expr, $result:literal) => {
        $(#[$doc])*
        #[derive(Debug, Message)]
        #[rtype(result = $result)]
        pub struct $name {
            batch: Batch,
            _queued: Queued,
        }

        impl $name {
            /// The message, counted in its destination's mailbox depth until taken.
            pub fn new(batch: Batch) -> Self {
                $name {
                    batch,
                    _queued: $mailbox.enqueue(),
                }
            }

            /// Takes the batch out of the mailbox (it stops counting as queued).
            pub fn into_batch(self) -> Batch {
                self.batch
            }
        }
    };
}

batch_message!(
    /// Router ← receiver: send this batch to the sinks of its kind.
    Route,
    router::MAILBOX,
    "Result<(), PipelineError>"
);

batch_message!(
    /// Publisher ← router: put this batch on the sink.
    Publish,
    publisher::MAILBOX,
    "Result<(), PipelineError>"
);

batch_message!(
    /// Aggregator ← consumer: apply this batch to the store.
    Apply,
    aggregator::MAILBOX,
    "Result<Applied, StoreError>"
);

/// Makes `$actor` an actor (in a plain `actix::Context`) that handles `$message`
/// by passing its batch on: the handler takes the batch out of the message (so it
/// stops counting in the mailbox depth) and answers with the `'static` future
/// `self.$method(batch)`, which resolves once the next stage confirmed the batch.
#[macro_export]
macro_rules! pass_batches_on {
    ($actor:ty, $message:ty, $method:ident) => {
        impl ::actix::Actor for $actor {
            type Context = ::actix::Context<Self>;
        }

        impl ::actix::Handler<$message> for $actor {
            type Result =
                ::actix::ResponseFuture<::std::result::Result<(), $crate::messages::PipelineError>>;

            fn handle(&mut self, msg: $message, _: &mut Self::Context) -> Self::Result {
                ::std::boxed::Box::pin(self.$method(msg.into_batch()))
            }
        }
    };
}

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
    /// The sink's circuit breaker is open; nothing was sent to it.
    #[error("{0}")]
    CircuitOpen(crate::breaker::Refused),
    /// The sink did not confirm within the durable-ack deadline; the batch may or
    /// may not be on it.
    #[error("{sink} did not confirm within {} ms", after.as_millis())]
    Timeout {
        /// Sink name (or `the pipeline`, for the receiver's own backstop).
        sink: &'static str,
        /// The deadline that passed.
        after: std::time::Duration,
    },
    /// Another sink of the batch's kind confirmed it while this one refused it: the
    /// batch is on some buses already, so the outcome is unknown to the client.
    #[error("{0}; another sink of this kind already has the batch")]
    Partial(Box<PipelineError>),
}

impl PipelineError {
    /// True when nothing of the batch can have been published by this failure
    /// (refused before publishing began); false when the outcome is unknown.
    pub fn nothing_published(&self) -> bool {
        !matches!(
            self,
            PipelineError::SinkUnavailable { .. }
                | PipelineError::Timeout { .. }
                | PipelineError::Partial(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FieldError;

    fn bad(index: usize) -> ValidationError {
        ValidationError {
            index,
            error: FieldError {
                field: None,
                message: format!("bad {index}"),
            },
        }
    }

    fn sale(id: &str) -> crate::event::Sale {
        crate::event::Sale {
            id: id.into(),
            ts: 1,
            category: crate::event::Category::Home,
            product_id: "P".into(),
            price: 1.0,
            quantity: 1,
        }
    }

    fn batch(ids: &[&str], positions: Option<Positions>) -> Batch {
        Batch {
            events: Arc::new(Events::Sales(ids.iter().map(|id| sale(id)).collect())),
            received_at_ms: 7,
            admitted: None,
            positions: positions.map(Arc::new),
        }
    }

    /// A part: its streams, its event ids, its offsets.
    type Part = (Vec<String>, Vec<String>, Vec<(u32, i64)>);

    fn parts(batch: Batch) -> Vec<Part> {
        batch
            .by_stream()
            .into_iter()
            .map(|b| {
                let p = b.positions.as_deref().cloned().unwrap_or_default();
                (p.streams, b.events.ids(), p.offsets)
            })
            .collect()
    }

    #[test]
    fn a_batch_splits_by_stream_keeping_each_streams_order() {
        let positions = Positions {
            streams: vec!["p0".into(), "p1".into(), "p2".into()],
            offsets: vec![(1, 10), (0, 5), (1, 11), (0, 6), (1, 12)],
        };
        let got = parts(batch(&["a", "b", "c", "d", "e"], Some(positions)));
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                (s(&["p0"]), s(&["b", "d"]), vec![(0, 5), (0, 6)]),
                (
                    s(&["p1"]),
                    s(&["a", "c", "e"]),
                    vec![(0, 10), (0, 11), (0, 12)]
                ),
            ],
            "p2 has no event, so no part"
        );
        // One stream, no positions, or positions that do not fit: whole.
        let one = Positions {
            streams: vec!["p0".into()],
            offsets: vec![(0, 1), (0, 2)],
        };
        assert_eq!(parts(batch(&["a", "b"], Some(one))).len(), 1);
        assert_eq!(parts(batch(&["a", "b"], None)).len(), 1);
        let misfit = Positions {
            streams: vec!["p0".into(), "p1".into()],
            offsets: vec![(0, 1), (5, 2)],
        };
        let whole = parts(batch(&["a", "b"], Some(misfit)));
        assert_eq!(whole.len(), 1, "the store refuses it whole");
        assert_eq!(whole[0].1, ["a", "b"]);
    }

    #[test]
    fn per_event_puts_each_refusal_at_its_position() {
        let accepted = Accepted {
            ids: vec!["b".into(), "d".into()],
            refused: vec![bad(0), bad(2), bad(4), bad(5)],
        };
        let answers: Vec<_> = accepted
            .per_event()
            .into_iter()
            .map(|a| a.unwrap_or_else(|e| e.error.message))
            .collect();
        assert_eq!(answers, ["bad 0", "b", "bad 2", "d", "bad 4", "bad 5"]);
        let none = Accepted {
            ids: vec!["a".into()],
            refused: Vec::new(),
        };
        assert_eq!(none.per_event(), vec![Ok("a".to_owned())]);
    }
}
