//! The HTTP interface (axum): ingest, query API, metrics and health on one port.

pub mod error;
pub mod ingest;
pub mod ops;
pub mod query;

use crate::config::HttpConfig;
use crate::shutdown::Shutdown;
use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use flujo_actors::metrics::HTTP_REQUESTS;
use flujo_actors::publisher::Sink;
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
    /// Entry point of the pipeline.
    pub receivers: ReceiverPool,
    /// Where the query API reads.
    pub store: Arc<dyn Store>,
    /// Sinks checked by `/readyz`.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// Read cache of the query API.
    pub cache: query::ReadCache,
    /// Ingest limits.
    pub limits: Limits,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Makes `/readyz` fail while draining.
    pub shutdown: Shutdown,
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

/// The whole HTTP application.
pub fn app(state: Arc<AppState>, http: &HttpConfig) -> Router {
    let mut router = Router::new()
        .route("/v1/sales", post(ingest::sales))
        .route("/v1/tweets", post(ingest::tweets))
        .route("/v1/kpis/sales", get(query::sales_kpis))
        .route("/v1/kpis/tweets", get(query::tweet_kpis))
        .route("/v1/rankings/products", get(query::product_ranking))
        .route("/v1/rankings/locations", get(query::location_ranking))
        .route(
            "/v1/sales/monitored/{category}/prices",
            get(query::monitored_prices),
        )
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    for path in &http.sales_paths {
        router = router.route(path, post(ingest::sales));
    }
    for path in &http.tweet_paths {
        router = router.route(path, post(ingest::tweets));
    }
    router
        .fallback(not_found)
        .layer(middleware::from_fn(count_requests))
        .with_state(state)
}

/// Paths the application defines itself; aliases may not reuse them.
pub const BUILTIN_PATHS: &[&str] = &[
    "/v1/sales",
    "/v1/tweets",
    "/v1/kpis/sales",
    "/v1/kpis/tweets",
    "/v1/rankings/products",
    "/v1/rankings/locations",
    "/metrics",
    "/healthz",
    "/readyz",
];
