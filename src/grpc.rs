//! The gRPC interface (tonic): `flujo.v1.Ingest` with the same validation and ack
//! semantics as HTTP, plus the standard health and reflection services.
//!
//! Events are turned into the same JSON objects the HTTP API takes and go through
//! the same receiver, so a rule or an error message never differs by transport.

use flujo_actors::event::{Category, Kind, Weather};
use flujo_actors::messages::{IngestError, Transport};
use flujo_actors::metrics::INGEST_DURATION;
use flujo_actors::receiver::ReceiverPool;
use futures::{Stream, StreamExt};
use serde_json::{Map, Number, Value};
use std::pin::Pin;
use std::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

/// Code generated from `proto/flujo/v1/ingest.proto` (the `flujo-proto` crate), and
/// the descriptors that reflection serves.
pub mod proto {
    pub use flujo_proto::v1::*;
    pub use flujo_proto::FILE_DESCRIPTOR_SET;
}

use proto::ingest_server::{Ingest, IngestServer};
use proto::{event, Ack, Event, Sale, SaleBatch, Tweet, TweetBatch};

/// The `flujo.v1.Ingest` service.
#[derive(Clone)]
pub struct IngestService {
    receivers: ReceiverPool,
    max_batch_events: usize,
}

impl IngestService {
    /// A service feeding `receivers`, refusing batches over `max_batch_events`.
    pub fn new(receivers: ReceiverPool, max_batch_events: usize) -> Self {
        IngestService {
            receivers,
            max_batch_events,
        }
    }

    /// The tonic server for this service (4 MiB message limit, as HTTP).
    pub fn into_server(self) -> IngestServer<Self> {
        IngestServer::new(self)
    }

    async fn publish(&self, kind: Kind, objects: Vec<Value>) -> Result<Response<Ack>, Status> {
        let started = Instant::now();
        let result = self.check_and_ingest(kind, objects).await;
        metrics::histogram!(INGEST_DURATION, "transport" => Transport::Grpc.as_str())
            .record(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }

    async fn check_and_ingest(&self, kind: Kind, objects: Vec<Value>) -> Result<Ack, Status> {
        if objects.is_empty() {
            return Err(Status::invalid_argument(
                "empty batch: send at least one event",
            ));
        }
        if objects.len() > self.max_batch_events {
            return Err(Status::invalid_argument(format!(
                "batch of {} events exceeds the limit of {}; split it",
                objects.len(),
                self.max_batch_events
            )));
        }
        let accepted = self
            .receivers
            .ingest(kind, objects, Transport::Grpc)
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
    }
}

/// A JSON number, or a string naming a non-finite value (refused by validation).
fn number(x: f64) -> Value {
    Number::from_f64(x).map_or_else(|| Value::String(x.to_string()), Value::Number)
}

/// Fields shared by both kinds: absent `id` ("") and `ts` (0) are left to the receiver.
fn common(id: String, ts: i64) -> Map<String, Value> {
    let mut m = Map::new();
    if !id.is_empty() {
        m.insert("id".into(), Value::String(id));
    }
    if ts != 0 {
        m.insert("ts".into(), Value::from(ts));
    }
    m
}

/// The sale as the JSON object the receiver validates.
pub fn sale_object(s: Sale) -> Value {
    let mut m = common(s.id, s.ts);
    match s.category {
        0 => {}
        code => {
            let value = Category::from_code(code.into())
                .map_or_else(|| Value::from(code), |c| Value::from(c.as_str()));
            m.insert("category".into(), value);
        }
    }
    m.insert("product_id".into(), Value::String(s.product_id));
    m.insert("price".into(), number(s.price));
    m.insert("quantity".into(), Value::from(s.quantity));
    Value::Object(m)
}

/// The tweet as the JSON object the receiver validates.
pub fn tweet_object(t: Tweet) -> Value {
    let mut m = common(t.id, t.ts);
    m.insert("location".into(), Value::String(t.location));
    match t.weather {
        0 => {}
        code => {
            let value = usize::try_from(code - 1)
                .ok()
                .and_then(|i| Weather::ALL.get(i))
                .map_or_else(|| Value::from(code), |w| Value::from(w.as_str()));
            m.insert("weather".into(), value);
        }
    }
    m.insert("temperature".into(), number(t.temperature));
    m.insert("humidity".into(), number(t.humidity));
    if !t.text.is_empty() {
        m.insert("text".into(), Value::String(t.text));
    }
    Value::Object(m)
}

/// One stream event's answer: accepted, or refused with the reason in the Ack.
async fn ack_event(service: IngestService, event: Event) -> Ack {
    let (kind, object) = match event.event {
        Some(event::Event::Sale(s)) => (Kind::Sale, sale_object(s)),
        Some(event::Event::Tweet(t)) => (Kind::Tweet, tweet_object(t)),
        None => {
            return Ack {
                error: "event holds neither a sale nor a tweet".into(),
                code: "INVALID_ARGUMENT".into(),
                ..Ack::default()
            }
        }
    };
    match service.publish(kind, vec![object]).await {
        Ok(ack) => ack.into_inner(),
        Err(status) => Ack {
            error: status.message().to_owned(),
            code: code_name(status.code()).to_owned(),
            field: status
                .metadata()
                .get("flujo-field")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            ..Ack::default()
        },
    }
}

pub use flujo_proto::code_name;

/// Events of one stream processed at once; answers still come back in order.
const STREAM_WINDOW: usize = 64;

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn publish_sales(&self, request: Request<SaleBatch>) -> Result<Response<Ack>, Status> {
        let objects = request
            .into_inner()
            .sales
            .into_iter()
            .map(sale_object)
            .collect();
        self.publish(Kind::Sale, objects).await
    }

    async fn publish_tweets(&self, request: Request<TweetBatch>) -> Result<Response<Ack>, Status> {
        let objects = request
            .into_inner()
            .tweets
            .into_iter()
            .map(tweet_object)
            .collect();
        self.publish(Kind::Tweet, objects).await
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
        };
        let acks = request
            .into_inner()
            .map(move |event| {
                let service = service.clone();
                async move {
                    match event {
                        Ok(event) => Ok(ack_event(service, event).await),
                        Err(status) => Err(status),
                    }
                }
            })
            .buffered(STREAM_WINDOW);
        Ok(Response::new(Box::pin(acks)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn protos_become_the_http_objects() {
        let s = Sale {
            id: String::new(),
            ts: 0,
            category: 3,
            product_id: "P".into(),
            price: 2.5,
            quantity: 4,
        };
        assert_eq!(
            sale_object(s),
            json!({"category":"home","product_id":"P","price":2.5,"quantity":4})
        );
        let bad = Sale {
            category: 9,
            price: f64::NAN,
            ..Sale::default()
        };
        let v = sale_object(bad);
        assert_eq!(
            (v["category"].clone(), v["price"].clone()),
            (json!(9), json!("NaN"))
        );
        let t = Tweet {
            id: "t1".into(),
            ts: 5,
            location: "Mixco".into(),
            weather: 6,
            temperature: -1.0,
            humidity: 50.0,
            text: String::new(),
        };
        assert_eq!(
            tweet_object(t),
            json!({"id":"t1","ts":5,"location":"Mixco","weather":"stormy","temperature":-1.0,"humidity":50.0})
        );
        assert!(tweet_object(Tweet::default()).get("weather").is_none());
    }
}
