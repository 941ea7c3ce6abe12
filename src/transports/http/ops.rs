//! Operations endpoints: `/metrics`, `/healthz`, `/readyz`.

use super::api::{Document, Health, Readiness};
use super::AppState;
use crate::readiness::evaluate;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    description = "Every flujo metric in the Prometheus text format; the series are listed from start-up at zero.",
    responses((status = 200, description = "Prometheus text exposition 0.0.4.", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut r = st.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `GET /healthz`: the process is alive and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    description = "Liveness: the process serves HTTP.",
    responses((status = 200, description = "Alive.", body = Health))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when every dependency answers, else 503 naming the failing ones.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    description = "Readiness: every dependency of this process (store, sinks, sources, remote router) answers, \
        and the process is not draining.",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Not ready; `failing` names each failing dependency.", body = Readiness)
    )
)]
pub async fn readyz(State(st): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    readiness(&st).await
}

/// Runs every readiness check and sets `flujo_ready`; the `/readyz` answer.
pub async fn readiness(st: &AppState) -> (StatusCode, Json<Value>) {
    let readiness = evaluate(&st.probes, &st.shutdown).await;
    let checks: Map<String, Value> = readiness
        .checks
        .into_iter()
        .map(|(name, result)| (name, result.map_or_else(|e| json!(e), |()| json!("ok"))))
        .collect();
    let ready = readiness.failing.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": checks,
        "failing": readiness.failing,
    });
    (status, Json(body))
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    description = "The OpenAPI 3.1 description of the whole HTTP API, every role's routes: \
        a process answers those of its roles (ingest on receivers, queries on consumers) and 404 to the others.",
    responses((status = 200, description = "This document.", body = Object))
)]
pub async fn openapi(Extension(doc): Extension<Document>) -> Document {
    doc
}
