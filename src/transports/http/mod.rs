//! The HTTP interface (axum): ingest, query API, metrics and health on one port.
//!
//! # Layout
//! - this file: the shared state, the routes of each role, request counting.
//! - [`ingest`]: `POST` of sales and tweets (JSON object, array or NDJSON).
//! - [`query`]: KPIs, rankings and monitored prices through the read cache.
//! - [`stream`]: `/v1/stream/kpis`, server-sent events of KPI snapshots.
//! - [`page`]: `/`, the live KPI page (embedded assets) that reads the stream.
//! - [`ops`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`error`]: `ApiError`, the one error answer.

pub mod error;
pub mod ingest;
pub mod ops;
pub mod page;
pub mod query;
pub mod stream;

use crate::config::HttpConfig;
use crate::readiness::Probe;
use crate::shutdown::Shutdown;
use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use error::ApiError;
use flujo_actors::event::Kind;
use flujo_actors::metrics::HTTP_REQUESTS;
use flujo_actors::receiver::ReceiverPool;
use flujo_actors::store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// Request-size limits of ingest.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body, in bytes.
    pub max_body_bytes: usize,
    /// Most events per request.
    pub max_batch_events: usize,
}

/// What the handlers share.
pub struct AppState {
    /// Entry point of the pipeline (receiver role).
    pub receivers: Option<ReceiverPool>,
    /// Where the query API reads (consumer role).
    pub store: Option<Arc<dyn Store>>,
    /// Dependencies checked by `/readyz`.
    pub probes: Vec<Arc<dyn Probe>>,
    /// Read cache of the query API.
    pub cache: query::ReadCache,
    /// Snapshots for `/v1/stream/kpis` (consumer role).
    pub feed: Option<stream::KpiFeed>,
    /// Ingest limits.
    pub limits: Limits,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Makes `/readyz` fail while draining.
    pub shutdown: Shutdown,
}

impl AppState {
    /// The receivers, in a process that runs the receiver role.
    pub fn receivers(&self) -> Result<&ReceiverPool, ApiError> {
        self.receivers.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "this process does not run the receiver role",
            )
        })
    }

    /// The store, in a process that runs the consumer role.
    pub fn store(&self) -> Result<Arc<dyn Store>, ApiError> {
        self.store.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "this process does not run the consumer role",
            )
        })
    }
}

/// Counts every answer by matched route and status.
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    metrics::counter!(HTTP_REQUESTS, "route" => route, "status" => response.status().as_u16().to_string())
        .increment(1);
    response
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
}

/// Ingest routes (receiver role): the versioned paths and their configured aliases.
pub fn ingest_routes(http: &HttpConfig) -> Router<Arc<AppState>> {
    let mut router = Router::new();
    for (kind, builtin, aliases) in [
        (Kind::Sale, ["/v1/sales", "/purchase"], &http.sales_paths),
        (Kind::Tweet, ["/v1/tweets", "/input"], &http.tweet_paths),
    ] {
        let paths = builtin
            .into_iter()
            .chain(aliases.iter().map(String::as_str));
        for path in paths {
            router = router.route(path, ingest::route(kind));
        }
    }
    router
}

/// Query routes (consumer role): the query API, the KPI stream and the page.
pub fn query_routes() -> Router<Arc<AppState>> {
    let mut router = Router::new();
    for (path, route) in page::routes() {
        router = router.route(path, route);
    }
    router
        .route("/v1/stream/kpis", get(stream::kpi_stream))
        .route("/v1/kpis/sales", get(query::sales_kpis))
        .route("/v1/kpis/tweets", get(query::tweet_kpis))
        .route("/v1/rankings/products", get(query::product_ranking))
        .route("/v1/rankings/locations", get(query::location_ranking))
        .route(
            "/v1/sales/monitored/{category}/prices",
            get(query::monitored_prices),
        )
}

/// The HTTP application of a process: operations always, plus `routes` (ingest
/// and/or query, per role).
pub fn app(state: Arc<AppState>, routes: Router<Arc<AppState>>) -> Router {
    routes
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(count_requests))
        .with_state(state)
}

/// Paths the application defines itself; aliases may not reuse them.
pub use crate::config::BUILTIN_PATHS;
