//! Receiver: validates what a transport decoded, stamps `id`/`ts`, admits the batch
//! into the pipeline and hands it to the router, answering per the ack mode.
//!
//! Receivers are stateless, so a process runs a pool of them, one per arbiter
//! (thread); `ReceiverPool` spreads batches over them and refuses at once when every
//! mailbox is full.

use crate::admission::{Admission, AdmitError, Admitted};
use crate::breaker::Breakers;
use crate::event::{now_ms, Events, Kind, RawBatch, ReceiveStamp, Refusal, ValidationError};
use crate::mailbox::Mailbox;
use crate::messages::{
    Accepted, AckMode, Batch, Ingest, IngestError, PipelineError, Route, Transport,
};
use crate::metrics::{ADMISSION_WAITS, EVENTS_RECEIVED, EVENTS_REJECTED};
use actix::prelude::*;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long after the durable-ack deadline a receiver stops waiting for the router
/// (whose publishers time out at the deadline itself, naming their sink).
pub const BACKSTOP_GRACE: Duration = Duration::from_millis(250);

/// The receivers' mailbox (`actor="receiver"`).
pub const MAILBOX: Mailbox = Mailbox("receiver");

/// How long a batch waits for room in a full pipeline before it is refused (429,
/// `RESOURCE_EXHAUSTED`, `err busy`), unless its request's deadline comes first.
pub const DEFAULT_ADMISSION_WAIT: Duration = Duration::from_millis(1000);

/// Validates and admits batches, then routes them.
pub struct Receiver {
    router: Recipient<Route>,
    admission: Admission,
    ack: AckMode,
    breakers: Breakers,
    deadline: Duration,
    admission_wait: Duration,
}

/// A validated batch on its way into the pipeline, with what its answer needs.
struct Pending {
    events: Events,
    refused: Vec<ValidationError>,
    kind: Kind,
    transport: Transport,
    reply: oneshot::Sender<Result<Accepted, IngestError>>,
    answer_by: Option<tokio::time::Instant>,
}

impl Receiver {
    /// A receiver that routes to `router` (the local router actor, or a forwarder to
    /// a remote one), admitting through `admission`.
    pub fn new(router: Recipient<Route>, admission: Admission, ack: AckMode) -> Self {
        Receiver {
            router,
            admission,
            ack,
            breakers: Breakers::default(),
            deadline: crate::publisher::DEFAULT_DEADLINE,
            admission_wait: DEFAULT_ADMISSION_WAIT,
        }
    }

    /// The same receiver letting a batch wait for room when the pipeline is full,
    /// up to `wait` after the transport handed it over, before refusing it; zero
    /// refuses at once. While a batch waits, this receiver takes no other batch (so
    /// a connection's batches keep their order); the next ones queue in its bounded
    /// mailbox.
    pub fn with_admission_wait(self, wait: Duration) -> Self {
        Receiver {
            admission_wait: wait,
            ..self
        }
    }

    /// The same receiver refusing at once (503) the batches of a kind whose sink's
    /// breaker is open, before admitting them (both ack modes).
    pub fn with_breakers(self, breakers: Breakers) -> Self {
        Receiver { breakers, ..self }
    }

    /// The same receiver answering a durable batch within `deadline`: past it, the
    /// outcome is unknown and the client gets the ids to resend.
    pub fn with_deadline(self, deadline: Duration) -> Self {
        Receiver { deadline, ..self }
    }
}

impl Actor for Receiver {
    type Context = Context<Self>;
}

fn reject(kind: Kind, transport: Transport, reason: &'static str, events: usize) {
    metrics::counter!(EVENTS_REJECTED, "kind" => kind.as_str(), "transport" => transport.as_str(), "reason" => reason)
        .increment(events as u64);
}

impl Handler<Ingest> for Receiver {
    type Result = ();

    fn handle(&mut self, msg: Ingest, ctx: &mut Self::Context) {
        let Ingest {
            batch,
            transport,
            reply,
            refusal,
            queued,
            sent_at,
            answer_by,
        } = msg;
        drop(queued);
        let kind = batch.kind();
        metrics::counter!(EVENTS_RECEIVED, "kind" => kind.as_str(), "transport" => transport.as_str())
            .increment(batch.len() as u64);
        let mut stamp = ReceiveStamp::now();
        let (events, refused) = match refusal {
            Refusal::WholeBatch => {
                let n = batch.len();
                match batch.validate(&mut stamp) {
                    Ok(events) => (events, Vec::new()),
                    Err(e) => {
                        reject(kind, transport, "invalid", n);
                        let _ = reply.send(Err(IngestError::Invalid(e)));
                        return;
                    }
                }
            }
            Refusal::EachEvent => batch.validate_each(&mut stamp),
        };
        if !refused.is_empty() {
            reject(kind, transport, "invalid", refused.len());
        }
        let n = events.len();
        if n == 0 {
            let _ = reply.send(Ok(Accepted {
                ids: Vec::new(),
                refused,
            }));
            return;
        }
        if answer_by.is_some_and(|by| by <= tokio::time::Instant::now()) {
            // The transport's deadline passed before the batch got here (a slow
            // upload, full mailboxes): nothing is published, so a plain retry is safe.
            reject(kind, transport, "unavailable", n);
            let _ = reply.send(Err(IngestError::Unavailable(
                "the request deadline passed before the batch was admitted; nothing was published, retry".into(),
            )));
            return;
        }
        if let Some(open) = self.open_sink(kind) {
            reject(kind, transport, "unavailable", n);
            let _ = reply.send(Err(open));
            return;
        }
        let pending = Pending {
            events,
            refused,
            kind,
            transport,
            reply,
            answer_by,
        };
        match self.admission.try_admit(n) {
            Err(AdmitError::Full { .. }) if !self.admission_wait.is_zero() => {
                // Wait for room, counted from when the transport handed the batch
                // over (time queued behind other waiting batches included), and
                // never past the request's own deadline. The receiver takes its
                // next batch only once this one is admitted or refused, so the
                // batches of a pinned connection keep their order.
                metrics::counter!(ADMISSION_WAITS).increment(1);
                let mut until = sent_at + self.admission_wait;
                if let Some(by) = answer_by {
                    until = until.min(by);
                }
                let admission = self.admission.clone();
                ctx.wait(
                    async move { admission.admit_by(n, until).await }
                        .into_actor(self)
                        .map(move |admitted, receiver, _| receiver.route(pending, admitted)),
                );
            }
            admitted => self.route(pending, admitted),
        }
    }
}

impl Receiver {
    /// The refusal of a batch of `kind` while one of its sinks' breakers is open.
    fn open_sink(&self, kind: Kind) -> Option<IngestError> {
        self.breakers
            .refusal(kind)
            .map(|open| IngestError::CircuitOpen {
                message: open.to_string(),
                retry_after_secs: open.retry_after_secs(),
            })
    }

    /// Sends an admitted batch to the router and answers per the ack mode, or
    /// answers why it was not admitted.
    fn route(&mut self, pending: Pending, admitted: Result<Admitted, AdmitError>) {
        let Pending {
            events,
            refused,
            kind,
            transport,
            reply,
            answer_by,
        } = pending;
        let n = events.len();
        let admitted = match admitted {
            Ok(a) => a,
            Err(e) => {
                let (reason, err) = match e {
                    AdmitError::Full { .. } => {
                        ("backpressure", IngestError::Backpressure(e.to_string()))
                    }
                    AdmitError::TooLarge(_) => ("too_large", IngestError::TooLarge(e.to_string())),
                    AdmitError::Closed => {
                        ("shutting_down", IngestError::Unavailable(e.to_string()))
                    }
                };
                reject(kind, transport, reason, n);
                let _ = reply.send(Err(err));
                return;
            }
        };
        if answer_by.is_some_and(|by| by <= tokio::time::Instant::now()) {
            // Room came, but only after the request's deadline (the transport has
            // given up on the answer): nothing is published, so a retry is safe.
            reject(kind, transport, "unavailable", n);
            let _ = reply.send(Err(IngestError::Unavailable(
                "the request deadline passed while the batch waited for room in the pipeline; nothing was published, retry".into(),
            )));
            return;
        }
        if reply.is_closed() {
            // The client is gone (it gave up while the batch waited): it never
            // sees an answer and may resend, so nothing is published.
            reject(kind, transport, "unavailable", n);
            return;
        }
        if let Some(open) = self.open_sink(kind) {
            // Checked again: the sink's breaker may have opened while the batch
            // waited for room.
            reject(kind, transport, "unavailable", n);
            let _ = reply.send(Err(open));
            return;
        }
        let ids = events.ids();
        let batch = Batch {
            events: Arc::new(events),
            received_at_ms: now_ms(),
            admitted: Some(Arc::new(admitted)),
            positions: None,
        };
        match self.ack {
            AckMode::Accepted => {
                let outcome = match self.router.try_send(Route::new(batch)) {
                    Ok(()) => Ok(Accepted { ids, refused }),
                    Err(SendError::Full(_)) => {
                        reject(kind, transport, "backpressure", n);
                        Err(IngestError::Backpressure(
                            "router mailbox full; retry shortly".into(),
                        ))
                    }
                    Err(SendError::Closed(_)) => {
                        reject(kind, transport, "unavailable", n);
                        Err(IngestError::Unavailable("router is not running".into()))
                    }
                };
                let _ = reply.send(outcome);
            }
            AckMode::Durable => {
                let route = self.router.send(Route::new(batch));
                let deadline = self.deadline;
                // A task of its own, not of this actor's context: a batch waiting
                // for room (`ctx.wait`) must not hold back the answers of batches
                // already in the pipeline, whose settling makes that room.
                actix::spawn(async move {
                    // The publishers give up at the deadline and say which sink;
                    // this is the backstop (a full mailbox on the way, a remote
                    // router that does not answer), brought forward to the
                    // transport's own deadline so that its answer carries the ids.
                    let started = tokio::time::Instant::now();
                    let mut backstop = started + deadline + BACKSTOP_GRACE;
                    if let Some(by) = answer_by {
                        backstop = backstop.min(by);
                    }
                    let routed = match tokio::time::timeout_at(backstop, route).await {
                        Ok(routed) => routed,
                        Err(_) => Ok(Err(PipelineError::Timeout {
                            sink: "the pipeline",
                            after: started.elapsed(),
                        })),
                    };
                    let outcome = match routed {
                        Ok(Ok(())) => Ok(Accepted { ids, refused }),
                        Ok(Err(PipelineError::Backpressure(m))) => {
                            reject(kind, transport, "backpressure", n);
                            Err(IngestError::Backpressure(m))
                        }
                        Ok(Err(PipelineError::CircuitOpen(open))) => {
                            reject(kind, transport, "unavailable", n);
                            Err(IngestError::CircuitOpen {
                                message: open.to_string(),
                                retry_after_secs: open.retry_after_secs(),
                            })
                        }
                        Ok(Err(e)) if !e.nothing_published() => {
                            reject(kind, transport, "unavailable", n);
                            Err(IngestError::OutcomeUnknown {
                                reason: e.to_string(),
                                ids,
                                refused,
                            })
                        }
                        Ok(Err(e)) => {
                            reject(kind, transport, "unavailable", n);
                            Err(IngestError::Unavailable(e.to_string()))
                        }
                        Err(_) => {
                            reject(kind, transport, "unavailable", n);
                            Err(IngestError::Unavailable("router is not running".into()))
                        }
                    };
                    let _ = reply.send(outcome);
                });
            }
        }
    }
}

/// A pool of receivers spread over arbiters; the entry point of every transport.
#[derive(Clone)]
pub struct ReceiverPool {
    receivers: Arc<[Addr<Receiver>]>,
    next: Arc<AtomicUsize>,
    answer_by: Option<tokio::time::Instant>,
}

impl ReceiverPool {
    /// A pool over already started receivers (at least one).
    pub fn new(receivers: Vec<Addr<Receiver>>) -> Self {
        ReceiverPool {
            receivers: receivers.into(),
            next: Arc::new(AtomicUsize::new(0)),
            answer_by: None,
        }
    }

    /// A pool of one receiver, taken in turn from this pool: what a connection or a
    /// stream uses so that its events reach the router in the order they came
    /// (receivers run on different threads and would otherwise overtake each other).
    /// A full mailbox then answers backpressure rather than using another receiver.
    pub fn pin(&self) -> ReceiverPool {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.receivers.len();
        ReceiverPool {
            receivers: Arc::from(vec![self.receivers[i].clone()]),
            next: Arc::new(AtomicUsize::new(0)),
            answer_by: None,
        }
    }

    /// The same pool for one request that must be answered by `answer_by` (its
    /// transport's deadline): a durable batch not confirmed by then is answered as
    /// an unknown outcome with its ids, so the transport never cuts an answer that
    /// would have carried them.
    pub fn answering_by(&self, answer_by: tokio::time::Instant) -> ReceiverPool {
        ReceiverPool {
            answer_by: Some(answer_by),
            ..self.clone()
        }
    }

    /// Validates, admits and routes a batch of decoded JSON objects of one kind
    /// (HTTP decodes straight into raw events and calls [`Self::ingest_batch`]).
    pub async fn ingest(
        &self,
        kind: Kind,
        objects: Vec<Value>,
        transport: Transport,
    ) -> Result<Accepted, IngestError> {
        self.ingest_batch(RawBatch::Json { kind, objects }, transport)
            .await
    }

    /// Validates, admits and routes a batch as a transport decoded it (JSON values
    /// or typed raw events); a bad event refuses the whole batch.
    pub async fn ingest_batch(
        &self,
        batch: RawBatch,
        transport: Transport,
    ) -> Result<Accepted, IngestError> {
        self.send(batch, transport, Refusal::WholeBatch).await
    }

    /// Validates, admits and routes the events a transport coalesced into one batch
    /// but answers one by one: the outcome of each event, in order (its id, or why
    /// it was refused). A bad event is refused alone; the others go on together.
    pub async fn ingest_each(
        &self,
        batch: RawBatch,
        transport: Transport,
    ) -> Vec<Result<String, IngestError>> {
        let n = batch.len();
        match self.send(batch, transport, Refusal::EachEvent).await {
            Ok(accepted) => accepted
                .per_event()
                .into_iter()
                .map(|one| one.map_err(IngestError::Invalid))
                .collect(),
            Err(IngestError::OutcomeUnknown {
                reason,
                ids,
                refused,
            }) => Accepted { ids, refused }
                .per_event()
                .into_iter()
                .map(|one| match one {
                    Ok(id) => Err(IngestError::OutcomeUnknown {
                        reason: reason.clone(),
                        ids: vec![id],
                        refused: Vec::new(),
                    }),
                    Err(e) => Err(IngestError::Invalid(e)),
                })
                .collect(),
            Err(e) => vec![Err(e); n],
        }
    }

    async fn send(
        &self,
        batch: RawBatch,
        transport: Transport,
        refusal: Refusal,
    ) -> Result<Accepted, IngestError> {
        let (tx, rx) = oneshot::channel();
        let mut msg = Ingest::new(batch, transport, tx)
            .refusing(refusal)
            .answering_by(self.answer_by);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.receivers.len();
        for i in 0..n {
            match self.receivers[(start + i) % n].try_send(msg) {
                Ok(()) => {
                    return rx.await.unwrap_or_else(|_| {
                        Err(IngestError::Unavailable("receiver stopped".into()))
                    });
                }
                Err(SendError::Full(m)) | Err(SendError::Closed(m)) => msg = m,
            }
        }
        let kind = msg.batch.kind();
        reject(kind, transport, "backpressure", msg.batch.len());
        Err(IngestError::Backpressure(
            "every receiver mailbox is full; retry shortly".into(),
        ))
    }
}
