//! The gRPC interface (tonic): `flujo.v1.Ingest` with the same validation and ack
//! semantics as HTTP, plus the standard health and reflection services.
//!
//! Typed messages become the actors' raw events ([`RawSale`], [`RawTweet`]) with no
//! JSON in between, and go through the same receiver and the same rules as JSON, so
//! a rule or an error message never differs by transport.
//!
//! The gateway: [`GrpcGate`], an interceptor on `flujo.v1.Ingest` only (health and
//! reflection stay open), checks the `authorization: Bearer …` (or `x-api-key`)
//! metadata: `UNAUTHENTICATED` or `PERMISSION_DENIED`. The rate limit counts a
//! unary call as one request and each event of a `Stream` as one:
//! `RESOURCE_EXHAUSTED` with a `retry-after` metadata entry (seconds).

use crate::gateway::{client_key, AuthError, Gateway, Refusal, Scope};
use crate::transports::{answer_by, AnswerBy};
use flujo_actors::event::protobuf::{raw_sale, raw_tweet};
use flujo_actors::event::{RawBatch, RawSale, RawTweet, ValidationError};
use flujo_actors::messages::{IngestError, Transport};
use flujo_actors::metrics::INGEST_DURATION;
use flujo_actors::receiver::ReceiverPool;
use futures::future::{self, BoxFuture};
use futures::{stream, FutureExt, Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Response, Status, Streaming};

/// Code generated from `proto/flujo/v1/ingest.proto` (the `flujo-proto` crate), and
/// the descriptors that reflection serves.
pub mod proto {
    pub use flujo_proto::v1::*;
    pub use flujo_proto::FILE_DESCRIPTOR_SET;
}

use proto::ingest_server::{Ingest, IngestServer};
use proto::{event, Ack, Event, SaleBatch, TweetBatch};

const TRANSPORT: &str = Transport::Grpc.as_str();

/// The client a call comes from (the token's `sub`, the API key's name or the peer
/// IP), as [`GrpcGate`] found it: the key of its rate limit.
#[derive(Debug, Clone)]
pub struct Client(pub Arc<str>);

/// The gateway on gRPC: checks the credential of every `flujo.v1.Ingest` call and
/// names its client for the rate limit.
#[derive(Clone)]
pub struct GrpcGate {
    gateway: Arc<Gateway>,
    deadline: Duration,
}

impl GrpcGate {
    /// The interceptor of `gateway`, for a server that cuts calls at `deadline`
    /// (`deadlines.request_ms`; a shorter `grpc-timeout` from the client wins).
    pub fn new(gateway: Arc<Gateway>, deadline: Duration) -> Self {
        GrpcGate { gateway, deadline }
    }
}

/// The client's deadline from its `grpc-timeout` header (an integer of at most 8
/// digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`), when it sent a valid one.
fn client_timeout(meta: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = meta.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The credential in `authorization: Bearer …` or `x-api-key`.
fn credential(meta: &tonic::metadata::MetadataMap) -> Result<Option<&str>, AuthError> {
    if let Some(value) = meta.get("authorization") {
        let text = value
            .to_str()
            .map_err(|_| AuthError::Invalid("authorization metadata is not text".into()))?;
        let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
            return Err(AuthError::Invalid(
                "send `authorization: Bearer <token>`".into(),
            ));
        }
        return Ok(Some(rest.trim()));
    }
    match meta.get("x-api-key") {
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| AuthError::Invalid("x-api-key metadata is not text".into())),
        None => Ok(None),
    }
}

/// The status of a refusal at the gate.
pub fn refusal_status(r: Refusal) -> Status {
    match r {
        Refusal::Auth(e @ AuthError::Forbidden(_)) => Status::permission_denied(e.to_string()),
        Refusal::Auth(AuthError::Missing) => Status::unauthenticated(
            "no credential: send `authorization: Bearer <token>` (or `x-api-key: <key>`) metadata",
        ),
        Refusal::Auth(e) => Status::unauthenticated(e.to_string()),
        Refusal::Limited {
            retry_after_secs, ..
        } => {
            let mut status = Status::resource_exhausted(format!(
                "rate limit of ingest requests for this client reached; retry in {retry_after_secs} s"
            ));
            status
                .metadata_mut()
                .insert("retry-after", MetadataValue::from(retry_after_secs));
            status
        }
    }
}

impl Interceptor for GrpcGate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let identity = if self.gateway.auth_enabled() {
            let refuse =
                |e| refusal_status(self.gateway.refuse_auth(TRANSPORT, Scope::Ingest, peer, e));
            let token = credential(request.metadata()).map_err(|e| {
                crate::gateway::record_auth_failure(TRANSPORT, &e);
                refuse(e)
            })?;
            self.gateway
                .authenticate(TRANSPORT, Scope::Ingest, token)
                .map_err(refuse)?
        } else {
            None
        };
        let client = client_key(identity.as_ref(), peer);
        request.extensions_mut().insert(Client(client.into()));
        // The server cuts the call at the shorter of its deadline and the client's;
        // the pipeline answers just before, with the ids of an unknown outcome.
        let deadline = client_timeout(request.metadata())
            .map_or(self.deadline, |client| client.min(self.deadline));
        request
            .extensions_mut()
            .insert(AnswerBy(answer_by(tokio::time::Instant::now(), deadline)));
        Ok(request)
    }
}

/// The `flujo.v1.Ingest` service.
#[derive(Clone)]
pub struct IngestService {
    receivers: ReceiverPool,
    max_batch_events: usize,
    gateway: Arc<Gateway>,
}

impl IngestService {
    /// A service feeding `receivers`, refusing batches over `max_batch_events`, its
    /// callers' rates limited by `gateway`.
    pub fn new(receivers: ReceiverPool, max_batch_events: usize, gateway: Arc<Gateway>) -> Self {
        IngestService {
            receivers,
            max_batch_events,
            gateway,
        }
    }

    /// Takes one request of the caller off its allowance.
    fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.gateway.limiter(Scope::Ingest).is_none() {
            return Ok(());
        }
        let client = match request.extensions().get::<Client>() {
            Some(c) => c.0.to_string(),
            None => client_key(None, request.remote_addr().map(|a| a.ip())),
        };
        self.gateway
            .limit(TRANSPORT, Scope::Ingest, &client)
            .map(|_| ())
            .map_err(refusal_status)
    }

    /// The tonic server for this service (4 MiB message limit, as HTTP).
    pub fn into_server(self) -> IngestServer<Self> {
        IngestServer::new(self)
    }

    /// Ingests a unary call's batch, answered by the call's [`AnswerBy`].
    async fn publish<T>(
        &self,
        request: Request<T>,
        batch: impl FnOnce(T) -> RawBatch,
    ) -> Result<Response<Ack>, Status> {
        self.admit(&request)?;
        let answer_by = request.extensions().get::<AnswerBy>().map(|a| a.0);
        let batch = batch(request.into_inner());
        let started = Instant::now();
        let result = self.check_and_ingest(batch, answer_by).await;
        metrics::histogram!(INGEST_DURATION, "transport" => Transport::Grpc.as_str())
            .record(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }

    async fn check_and_ingest(
        &self,
        batch: RawBatch,
        answer_by: Option<tokio::time::Instant>,
    ) -> Result<Ack, Status> {
        if batch.is_empty() {
            return Err(Status::invalid_argument(
                "empty batch: send at least one event",
            ));
        }
        if batch.len() > self.max_batch_events {
            return Err(Status::invalid_argument(format!(
                "batch of {} events exceeds the limit of {}; split it",
                batch.len(),
                self.max_batch_events
            )));
        }
        let receivers = match answer_by {
            Some(by) => self.receivers.answering_by(by),
            None => self.receivers.clone(),
        };
        let first_unidentified = batch.first_unidentified();
        let accepted = receivers
            .ingest_batch(batch, Transport::Grpc)
            .await
            .map_err(|e| match e {
                IngestError::OutcomeUnknown { reason, ids, .. } => {
                    unknown_outcome(&reason, &ids, first_unidentified)
                }
                e => status_of(e),
            })?;
        Ok(Ack {
            accepted: accepted.ids.len() as u32,
            ids: accepted.ids,
            ..Ack::default()
        })
    }
}

/// Maps an ingest refusal to its gRPC status; a bad event also carries
/// `flujo-index` and `flujo-field` metadata.
pub fn status_of(e: IngestError) -> Status {
    match e {
        IngestError::Invalid(v) => {
            let mut status =
                Status::invalid_argument(format!("event {}: {}", v.index, v.error.message));
            let meta = status.metadata_mut();
            meta.insert("flujo-index", MetadataValue::from(v.index as u64));
            if let Some(field) = v.error.field.as_deref().and_then(|f| f.parse().ok()) {
                meta.insert("flujo-field", field);
            }
            status
        }
        IngestError::Backpressure(m) | IngestError::TooLarge(m) => Status::resource_exhausted(m),
        IngestError::Unavailable(m) => Status::unavailable(m),
        IngestError::CircuitOpen {
            message,
            retry_after_secs,
        } => {
            let mut status = Status::unavailable(message);
            status
                .metadata_mut()
                .insert("retry-after", MetadataValue::from(retry_after_secs));
            status
        }
        IngestError::OutcomeUnknown { reason, ids, .. } => unknown_outcome(&reason, &ids, None),
    }
}

/// Most bytes of ids (as a JSON array) listed in `flujo-ids-bin`: gRPC clients
/// refuse responses whose metadata passes 8 KiB (gRPC C-core's and Java's
/// default), and the binary value travels base64-encoded.
const IDS_METADATA_MAX: usize = 4 * 1024;

/// `UNAVAILABLE` for a batch whose outcome is unknown: `flujo-outcome: unknown`,
/// the ids as a JSON array in `flujo-ids-bin` when they fit in
/// [`IDS_METADATA_MAX`], and, when flujo stamped ids (`first_unidentified` is the
/// first event sent without one), the first of them in `flujo-id-base`: the events
/// sent without an id got it and its successors, in order (+1 each, as 128-bit
/// integers), so a client can resend with the same ids however large the batch.
fn unknown_outcome(reason: &str, ids: &[String], first_unidentified: Option<usize>) -> Status {
    let base = first_unidentified.and_then(|i| ids.get(i));
    let how = match base {
        Some(_) => "resend the same events with the same ids: yours, and on the events you sent without one, in order, flujo-id-base, +1, +2, …",
        None => "resend the same events with the same ids",
    };
    let mut status = Status::unavailable(format!("outcome unknown: {reason}; {how}"));
    let meta = status.metadata_mut();
    meta.insert("flujo-outcome", MetadataValue::from_static("unknown"));
    if let Some(base) = base.and_then(|b| MetadataValue::try_from(b.as_str()).ok()) {
        meta.insert("flujo-id-base", base);
    }
    // Ids may hold any character: a JSON array, as binary metadata.
    if let Ok(json) = serde_json::to_vec(ids) {
        if json.len() <= IDS_METADATA_MAX {
            meta.insert_bin("flujo-ids-bin", MetadataValue::from_bytes(&json));
        }
    }
    status
}

/// The refusal of one stream event, as its Ack.
fn refused_ack(status: Status) -> Ack {
    Ack {
        error: status.message().to_owned(),
        code: code_name(status.code()).to_owned(),
        field: status
            .metadata()
            .get("flujo-field")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        ..Ack::default()
    }
}

/// The Ack of one accepted stream event.
fn accepted_ack(id: String) -> Ack {
    Ack {
        accepted: 1,
        ids: vec![id],
        ..Ack::default()
    }
}

/// A run of stream events of one kind, coalesced into one batch.
enum Run {
    Sales(Vec<RawSale>),
    Tweets(Vec<RawTweet>),
}

/// The answers to stream events read together, in order. Each run of events of one
/// kind goes to the receiver as one batch in which a bad event is refused alone;
/// the runs are sent in order (`join_all` polls them in order), so the events of a
/// stream keep theirs.
async fn ack_events(
    service: IngestService,
    events: Vec<Event>,
    client: Option<Arc<str>>,
) -> Vec<Ack> {
    let mut runs: Vec<BoxFuture<'static, Vec<Ack>>> = Vec::new();
    let mut current: Option<Run> = None;
    for event in events {
        if let Some(client) = &client {
            if let Err(refused) = service.gateway.limit(TRANSPORT, Scope::Ingest, client) {
                if let Some(run) = current.take() {
                    runs.push(ingest_run(service.clone(), run).boxed());
                }
                runs.push(future::ready(vec![refused_ack(refusal_status(refused))]).boxed());
                continue;
            }
        }
        let next = match (event.event, current.as_mut()) {
            (Some(event::Event::Sale(s)), Some(Run::Sales(v))) => {
                v.push(raw_sale(s));
                continue;
            }
            (Some(event::Event::Tweet(t)), Some(Run::Tweets(v))) => {
                v.push(raw_tweet(t));
                continue;
            }
            (Some(event::Event::Sale(s)), _) => Some(Run::Sales(vec![raw_sale(s)])),
            (Some(event::Event::Tweet(t)), _) => Some(Run::Tweets(vec![raw_tweet(t)])),
            (None, _) => None,
        };
        if let Some(run) = std::mem::replace(&mut current, next) {
            runs.push(ingest_run(service.clone(), run).boxed());
        }
        if current.is_none() {
            let status = Status::invalid_argument("event holds neither a sale nor a tweet");
            runs.push(future::ready(vec![refused_ack(status)]).boxed());
        }
    }
    if let Some(run) = current {
        runs.push(ingest_run(service.clone(), run).boxed());
    }
    future::join_all(runs).await.concat()
}

/// The Acks of a run of stream events of one kind, ingested as one batch.
async fn ingest_run(service: IngestService, run: Run) -> Vec<Ack> {
    let batch = match run {
        Run::Sales(v) => RawBatch::Sales(v),
        Run::Tweets(v) => RawBatch::Tweets(v),
    };
    let started = Instant::now();
    let outcomes = service.receivers.ingest_each(batch, Transport::Grpc).await;
    metrics::histogram!(INGEST_DURATION, "transport" => Transport::Grpc.as_str())
        .record(started.elapsed().as_secs_f64());
    outcomes
        .into_iter()
        .map(|one| match one {
            Ok(id) => accepted_ack(id),
            // Each event is answered alone: its position is 0 in its own answer.
            Err(IngestError::Invalid(e)) => {
                refused_ack(status_of(IngestError::Invalid(ValidationError {
                    index: 0,
                    ..e
                })))
            }
            Err(e) => refused_ack(status_of(e)),
        })
        .collect()
}

pub use flujo_proto::code_name;

/// Reads of one stream (each up to [`COALESCE_MAX`] events) processed at once;
/// answers still come back in order.
const STREAM_WINDOW: usize = 16;
/// Stream events coalesced into one batch at most.
const COALESCE_MAX: usize = 1_000;

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn publish_sales(&self, request: Request<SaleBatch>) -> Result<Response<Ack>, Status> {
        self.publish(request, |b| {
            RawBatch::Sales(b.sales.into_iter().map(raw_sale).collect())
        })
        .await
    }

    async fn publish_tweets(&self, request: Request<TweetBatch>) -> Result<Response<Ack>, Status> {
        self.publish(request, |b| {
            RawBatch::Tweets(b.tweets.into_iter().map(raw_tweet).collect())
        })
        .await
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send + 'static>>;

    async fn stream(
        &self,
        request: Request<Streaming<Event>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        // One receiver per stream: its events keep their order.
        let service = IngestService {
            receivers: self.receivers.pin(),
            max_batch_events: self.max_batch_events,
            gateway: self.gateway.clone(),
        };
        // Each event counts against the caller's rate limit, when there is one.
        let client: Option<Arc<str>> = self.gateway.limiter(Scope::Ingest).map(|_| {
            match request.extensions().get::<Client>() {
                Some(c) => c.0.clone(),
                None => client_key(None, request.remote_addr().map(|a| a.ip())).into(),
            }
        });
        // The events the stream has ready are read together and coalesced.
        let acks = request
            .into_inner()
            .ready_chunks(self.max_batch_events.clamp(1, COALESCE_MAX))
            .map(move |chunk| {
                let service = service.clone();
                let client = client.clone();
                async move {
                    let mut events = Vec::with_capacity(chunk.len());
                    let mut failed = None;
                    for item in chunk {
                        match item {
                            Ok(event) => events.push(event),
                            Err(status) => {
                                failed = Some(status);
                                break;
                            }
                        }
                    }
                    let acks = ack_events(service, events, client)
                        .await
                        .into_iter()
                        .map(Ok);
                    stream::iter(acks.chain(failed.map(Err)))
                }
            })
            .buffered(STREAM_WINDOW)
            .flatten();
        Ok(Response::new(Box::pin(acks)))
    }
}
