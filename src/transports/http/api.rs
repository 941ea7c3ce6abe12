//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers.
//!
//! Every route is registered through [`utoipa_axum`]'s `OpenApiRouter` together with
//! its `#[utoipa::path]` annotation, so a route cannot exist without its description.
//! The document a process serves at `GET /openapi.json` describes exactly the routes
//! that process serves (its roles, its configured alias paths). The request-body
//! schemas below describe the canonical event fields; the parser itself is
//! hand-written (`flujo_actors::event::json`) and also accepts the seeds' aliases.

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use flujo_actors::event::{Category, Weather};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{HttpMethod, OpenApi};
use utoipa::{OpenApi as _, ToSchema};

/// The document's fixed parts: title, version, tags and the shared schemas.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "flujo",
        description = "Ingest sales and weather tweets, query their live KPIs, and operate the process. \
            Each process serves the routes of its roles: ingest on receivers, queries on consumers, \
            operations everywhere.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    tags(
        (name = "ingest", description = "Send events (receiver role)."),
        (name = "query", description = "Read KPIs and rankings (consumer role)."),
        (name = "operations", description = "Metrics, health, readiness, this document.")
    ),
    components(schemas(ErrorBody, super::stream::Snapshot))
)]
struct ApiDoc;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, naming the problem.
    pub error: String,
    /// Position of the offending event in the batch, when one event is at fault.
    pub index: Option<usize>,
    /// The offending field or query parameter, when one is at fault.
    pub field: Option<String>,
    /// Ingest answered 503 with the outcome unknown (publishing began, no
    /// confirmation within the deadline): the ids stamped on the batch's events, in
    /// order. Resend the same events with these ids; each is counted once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    /// With `ids`: what to do (`resend the same events with these ids`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}

/// A sale, as `POST /v1/sales` takes it (canonical names; the seeds' Spanish names
/// `categoria`, `producto_id`, `precio`, `cantidad_vendida` are accepted too).
/// Unknown fields are refused; `null` counts as absent.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleIn {
    /// Event id; a UUIDv7 is made when absent. Resending an id already applied
    /// changes nothing.
    #[schema(min_length = 1, max_length = 128)]
    pub id: Option<String>,
    /// Milliseconds since the epoch; the receive time when absent.
    #[schema(minimum = 0)]
    pub ts: Option<i64>,
    /// The category; any case, the seeds' Spanish names (`Electronica`, `Ropa`,
    /// `Hogar`, `Belleza`) and 1–4 in this order are accepted too.
    pub category: Category,
    /// Product id.
    #[schema(min_length = 1, max_length = 64, example = "P-1001")]
    pub product_id: String,
    /// Unit price; price × quantity must be a finite number (the documented
    /// maximum keeps it so for any quantity).
    #[schema(exclusive_minimum = 0, maximum = 1e300, example = 19.99)]
    pub price: f64,
    /// Units sold (`3.0` counts as 3).
    #[schema(minimum = 1, maximum = 1_000_000, example = 2)]
    pub quantity: u64,
    /// When given, it must name this endpoint's kind.
    #[schema(pattern = "^sale$")]
    pub kind: Option<String>,
}

/// A weather tweet, as `POST /v1/tweets` takes it (`municipality` is accepted for
/// `location`). Unknown fields are refused; `null` counts as absent.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TweetIn {
    /// Event id; a UUIDv7 is made when absent. Resending an id already applied
    /// changes nothing.
    #[schema(min_length = 1, max_length = 128)]
    pub id: Option<String>,
    /// Milliseconds since the epoch; the receive time when absent.
    #[schema(minimum = 0)]
    pub ts: Option<i64>,
    /// City or municipality.
    #[schema(min_length = 1, max_length = 64, example = "Mixco")]
    pub location: String,
    /// The weather (any case).
    pub weather: Weather,
    /// Degrees Celsius.
    #[schema(minimum = -90, maximum = 60, example = 24.5)]
    pub temperature: f64,
    /// Relative humidity, percent.
    #[schema(minimum = 0, maximum = 100, example = 61)]
    pub humidity: f64,
    /// Optional text.
    #[schema(max_length = 280)]
    pub text: Option<String>,
    /// When given, it must name this endpoint's kind.
    #[schema(pattern = "^tweet$")]
    pub kind: Option<String>,
}

/// One sale or an array of sales.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SalesBody {
    /// One event.
    One(SaleIn),
    /// A batch, accepted or refused whole.
    Many(SaleBatch),
}

/// One tweet or an array of tweets.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TweetsBody {
    /// One event.
    One(TweetIn),
    /// A batch, accepted or refused whole.
    Many(TweetBatch),
}

/// The answer of `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// The answer of `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not ready`.
    pub status: String,
    /// Every dependency by name (`store:valkey`, `sink:kafka`, …): `ok` or the error.
    pub checks: BTreeMap<String, String>,
    /// One line per failing dependency.
    pub failing: Vec<String>,
}

/// The base document, before routes are added.
pub fn base() -> OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// Describes `alias` as a copy of `path`'s operations (configured alias paths of the
/// ingest routes), each with its own operation id.
pub fn add_alias(doc: &mut OpenApi, path: &str, alias: &str) {
    let Some(item) = doc.paths.paths.get(path).cloned() else {
        return;
    };
    let mut copy = item;
    for op in operations_mut(&mut copy) {
        if let Some(id) = &op.operation_id {
            op.operation_id = Some(format!("{id}_at_{}", slug(alias)));
        }
        op.summary = Some(format!("Alias of {path}"));
    }
    doc.paths.paths.insert(alias.to_owned(), copy);
}

fn slug(path: &str) -> String {
    path.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .trim_matches('_')
        .to_owned()
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Every documented (path, method, statuses) of `doc`: what `/metrics` exports at
/// zero for `flujo_http_requests_total{route, status}` from start-up.
pub fn routes_and_statuses(doc: &OpenApi) -> Vec<(String, Vec<u16>)> {
    doc.paths
        .paths
        .iter()
        .map(|(path, item)| {
            let mut statuses: Vec<u16> =
                [(HttpMethod::Get, &item.get), (HttpMethod::Post, &item.post)]
                    .into_iter()
                    .filter_map(|(_, op)| op.as_ref())
                    .flat_map(|op| op.responses.responses.keys())
                    .filter_map(|code| code.parse().ok())
                    .collect();
            statuses.sort_unstable();
            statuses.dedup();
            (path.clone(), statuses)
        })
        .collect()
}

/// The document rendered once, served as `application/json`.
#[derive(Clone)]
pub struct Document(Bytes);

impl Document {
    /// Renders `doc`.
    pub fn new(doc: &OpenApi) -> Self {
        // An OpenApi value always serializes: it is plain data with string keys.
        Document(Bytes::from(doc.to_pretty_json().unwrap_or_default()))
    }
}

impl IntoResponse for Document {
    fn into_response(self) -> Response {
        let mut r = self.0.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}

/// A batch of sales: at least one, at most `http.max_batch_events`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(min_items = 1)]
pub struct SaleBatch(pub Vec<SaleIn>);

/// A batch of tweets: at least one, at most `http.max_batch_events`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(min_items = 1)]
pub struct TweetBatch(pub Vec<TweetIn>);

#[cfg(test)]
mod tests {
    use super::*;
    use flujo_actors::event::{MAX_ID_CHARS, MAX_NAME_CHARS, MAX_QUANTITY, MAX_TEXT_CHARS};
    use serde_json::Value;

    fn schema<T: utoipa::PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap_or_default()
    }

    /// The request schemas repeat the parser's limits as numbers (utoipa takes only
    /// literals): this keeps the two equal.
    #[test]
    fn documented_limits_are_the_parsers() {
        let sale = schema::<SaleIn>();
        let tweet = schema::<TweetIn>();
        let at = |s: &Value, field: &str, key: &str| s["properties"][field][key].as_f64();
        let n = |v: usize| Some(v as f64);
        assert_eq!(at(&sale, "id", "maxLength"), n(MAX_ID_CHARS));
        assert_eq!(at(&tweet, "id", "maxLength"), n(MAX_ID_CHARS));
        assert_eq!(at(&sale, "product_id", "maxLength"), n(MAX_NAME_CHARS));
        assert_eq!(at(&tweet, "location", "maxLength"), n(MAX_NAME_CHARS));
        assert_eq!(at(&tweet, "text", "maxLength"), n(MAX_TEXT_CHARS));
        assert_eq!(at(&sale, "quantity", "maximum"), Some(MAX_QUANTITY as f64));
        assert_eq!(sale["additionalProperties"], Value::Bool(false));
    }
}
