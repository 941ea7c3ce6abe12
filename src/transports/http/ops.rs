//! Operations endpoints: `/metrics`, `/healthz`, `/readyz`.

use super::AppState;
use crate::readiness::check_all;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flujo_actors::metrics::READY;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut r = st.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `GET /healthz`: the process is alive and serving HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when every dependency answers, else 503 naming the failing ones.
pub async fn readyz(State(st): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let mut checks = Map::new();
    let mut failing = Vec::new();
    if st.shutdown.is_triggered() {
        failing.push("shutdown: draining".to_owned());
    }
    for (name, result) in check_all(&st.probes).await {
        match result {
            Ok(()) => {
                checks.insert(name, json!("ok"));
            }
            Err(e) => {
                failing.push(format!("{name}: {e}"));
                checks.insert(name, json!(e));
            }
        }
    }
    let ready = failing.is_empty();
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": checks,
        "failing": failing,
    });
    (status, Json(body))
}
