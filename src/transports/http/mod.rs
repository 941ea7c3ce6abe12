//! The HTTP interface (axum): ingest, query API, metrics and health on one port.
//!
//! # Layout
//! - this file: the shared state, the routes of each role, request counting.
//! - [`ingest`]: `POST` of sales and tweets (JSON object, array or NDJSON).
//! - [`query`]: KPIs, rankings and monitored prices through the read cache.
//! - [`stream`]: `/v1/stream/kpis`, server-sent events of KPI snapshots.
//! - [`page`]: `/`, the live KPI page (embedded assets) that reads the stream.
//! - [`ops`]: `/metrics`, `/healthz`, `/readyz`, `/openapi.json`.
//! - [`api`]: the OpenAPI document, generated from the handlers' annotations.
//! - [`error`]: `ApiError`, the one error answer.
//! - [`gate`]: authentication and rate limits on the ingest and query routes.

pub mod api;
pub mod error;
pub mod gate;
pub mod ingest;
pub mod ops;
pub mod page;
pub mod query;
pub mod stream;

use crate::config::HttpConfig;
use crate::gateway::{Gateway, Scope};
use crate::readiness::Probe;
use crate::shutdown::Shutdown;
use crate::transports::{answer_by, AnswerBy};
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use error::ApiError;
use flujo_actors::event::Kind;
use flujo_actors::metrics::HTTP_REQUESTS;
use flujo_actors::receiver::ReceiverPool;
use flujo_actors::store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// Longest time to answer a request (`deadlines.request_ms`); the KPI stream
    /// is exempt.
    pub request_deadline: Duration,
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

/// Answers 503 when a request is not answered within `request_deadline`, except
/// the endless KPI stream. A JSON error rather than tower-http's `TimeoutLayer`,
/// whose answer has an empty body.
async fn request_deadline(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    if req.uri().path() == stream::PATH {
        return next.run(req).await;
    }
    let deadline = state.request_deadline;
    let arrived = tokio::time::Instant::now();
    req.extensions_mut()
        .insert(AnswerBy(answer_by(arrived, deadline)));
    match tokio::time::timeout_at(arrived + deadline, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no answer within the request deadline of {} ms (deadlines.request_ms)",
                deadline.as_millis()
            ),
        )
        .retry_after(1)
        .into_response(),
    }
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

/// The gateway's middleware for routes that need `scope`.
fn gated(
    router: OpenApiRouter<Arc<AppState>>,
    gateway: &Arc<Gateway>,
    scope: Scope,
) -> OpenApiRouter<Arc<AppState>> {
    let gate = gate::Gate {
        gateway: gateway.clone(),
        scope,
    };
    router.route_layer(middleware::from_fn_with_state(gate, gate::check))
}

/// Ingest routes (receiver role): the versioned paths, their built-in aliases
/// (`/purchase`, `/input`) and the configured ones, each described in the document,
/// behind the gateway (scope `ingest`).
pub fn ingest_routes(http: &HttpConfig, gateway: &Arc<Gateway>) -> OpenApiRouter<Arc<AppState>> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(ingest::post_sales))
        .routes(routes!(ingest::post_tweets));
    for (kind, path, builtin, aliases) in [
        (Kind::Sale, "/v1/sales", "/purchase", &http.sales_paths),
        (Kind::Tweet, "/v1/tweets", "/input", &http.tweet_paths),
    ] {
        let aliases = std::iter::once(builtin).chain(aliases.iter().map(String::as_str));
        for alias in aliases {
            router = router.route(alias, ingest::route(kind));
            api::add_alias(router.get_openapi_mut(), path, alias);
        }
    }
    gated(router, gateway, Scope::Ingest)
}

/// Query routes (consumer role): the query API, the KPI stream and the page behind
/// the gateway (scope `query`); the page's static files stay open.
pub fn query_routes(gateway: &Arc<Gateway>) -> OpenApiRouter<Arc<AppState>> {
    let router = OpenApiRouter::new()
        .routes(routes!(page::index))
        .routes(routes!(stream::kpi_stream))
        .routes(routes!(query::sales_kpis))
        .routes(routes!(query::tweet_kpis))
        .routes(routes!(query::product_ranking))
        .routes(routes!(query::location_ranking))
        .routes(routes!(query::monitored_prices));
    let mut router = gated(router, gateway, Scope::Query);
    // The page's static files are not part of the API description, and hold no data.
    for (path, route) in page::asset_routes() {
        router = router.route(path, route);
    }
    router
}

/// The HTTP application of a process and the OpenAPI document describing it.
pub struct HttpApp {
    /// Every route of the process, ready to serve.
    pub router: Router,
    /// The description of this process's own routes (its roles').
    pub doc: utoipa::openapi::OpenApi,
}

/// Operations routes (every process): metrics, health, readiness, the document.
fn ops_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::openapi))
}

/// The description of the whole API, every role's routes (with the configured
/// alias paths) and `gateway`'s security and limits: what `GET /openapi.json`
/// serves in every process, so one document describes a deployment whichever role
/// answers it.
pub fn full_document(http: &HttpConfig, gateway: &Arc<Gateway>) -> utoipa::openapi::OpenApi {
    let mut doc = OpenApiRouter::<Arc<AppState>>::with_openapi(api::base())
        .merge(ingest_routes(http, gateway))
        .merge(query_routes(gateway))
        .merge(ops_routes())
        .into_openapi();
    gate::describe(&mut doc, gateway);
    doc
}

/// The HTTP application of a process: operations always, plus `routes` (ingest
/// and/or query, per role, from [`ingest_routes`] and [`query_routes`]).
/// `/openapi.json` serves `full` (see [`full_document`]); [`HttpApp::doc`]
/// describes this process's own routes, with `gateway`'s security and limits.
pub fn app(
    state: Arc<AppState>,
    routes: OpenApiRouter<Arc<AppState>>,
    full: &utoipa::openapi::OpenApi,
    gateway: &Gateway,
) -> HttpApp {
    let (router, mut doc) = OpenApiRouter::with_openapi(api::base())
        .merge(routes)
        .merge(ops_routes())
        .split_for_parts();
    gate::describe(&mut doc, gateway);
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(api::Document::new(full)))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_deadline,
        ))
        .layer(middleware::from_fn(count_requests))
        .with_state(state);
    HttpApp { router, doc }
}

/// Paths the application defines itself; aliases may not reuse them.
pub use crate::config::BUILTIN_PATHS;
