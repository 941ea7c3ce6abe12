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
use flujo_actors::event::protobuf::{raw_sale, raw_tweet};
use flujo_actors::event::{RawBatch, RawSale, RawTweet, ValidationError};
use flujo_actors::messages::{IngestError, Transport};
use flujo_actors::metrics::INGEST_DURATION;
use flujo_actors::receiver::ReceiverPool;
use futures::future::{self, BoxFuture};
use futures::{stream, FutureExt, Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
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
}

impl GrpcGate {
    /// The interceptor of `gateway`.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        GrpcGate { gateway }
    }
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
            let token = credential(request.metadata()).map_err(|e| {
                crate::gateway::record_auth_failure(TRANSPORT, &e);
                refusal_status(Refusal::Auth(e))
            })?;
            self.gateway
                .authenticate(TRANSPORT, Scope::Ingest, token)
                .map_err(|e| refusal_status(Refusal::Auth(e)))?
        } else {
            None
        };
        let client = client_key(identity.as_ref(), peer);
        request.extensions_mut().insert(Client(client.into()));
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

    async fn publish(&self, batch: RawBatch) -> Result<Response<Ack>, Status> {
        let started = Instant::now();
        let result = self.check_and_ingest(batch).await;
        metrics::histogram!(INGEST_DURATION, "transport" => Transport::Grpc.as_str())
            .record(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }

    async fn check_and_ingest(&self, batch: RawBatch) -> Result<Ack, Status> {
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
        let accepted = self
            .receivers
            .ingest_batch(batch, Transport::Grpc)
            .await
            .map_err(status_of)?;
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
        e @ IngestError::OutcomeUnknown { .. } => {
            let mut status = Status::unavailable(e.to_string());
            if let IngestError::OutcomeUnknown { ids, .. } = e {
                let meta = status.metadata_mut();
                meta.insert("flujo-outcome", MetadataValue::from_static("unknown"));
                // Ids may hold any character: a JSON array, as binary metadata.
                if let Ok(json) = serde_json::to_vec(&ids) {
                    meta.insert_bin("flujo-ids-bin", MetadataValue::from_bytes(&json));
                }
            }
            status
        }
    }
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
        self.admit(&request)?;
        let sales = request.into_inner().sales;
        self.publish(RawBatch::Sales(sales.into_iter().map(raw_sale).collect()))
            .await
    }

    async fn publish_tweets(&self, request: Request<TweetBatch>) -> Result<Response<Ack>, Status> {
        self.admit(&request)?;
        let tweets = request.into_inner().tweets;
        self.publish(RawBatch::Tweets(
            tweets.into_iter().map(raw_tweet).collect(),
        ))
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
