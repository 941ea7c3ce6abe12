//! The HTTP baseline of `loadtest/bench.sh`: the least an ingest endpoint can do.
//!
//! An axum server that answers `POST /v1/sales` and `POST /v1/tweets` the way flujo
//! does on the wire (a JSON object, a JSON array or NDJSON in, `202 {"accepted": N,
//! "ids": [...]}` out) after parsing the body as JSON, but without validation,
//! actors, bus or store. `flujo loadgen` drives it like flujo, so the ratio of the two
//! throughputs is what the pipeline costs over bare HTTP and JSON.
//!
//! ```sh
//! cargo run --release --example baseline_http -- 127.0.0.1:0   # prints `baseline listening http=ADDR`
//! ```

/// The same allocator as flujo, so the ratio measures the pipeline, not the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// Parses the body like flujo's ingest does (object, array or NDJSON) and answers
/// 202 with the number of events and their ids.
async fn ingest(headers: HeaderMap, body: Bytes) -> Response {
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-ndjson"));
    let events: Result<Vec<Value>, serde_json::Error> = if ndjson {
        body.split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(serde_json::from_slice)
            .collect()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(list)) => Ok(list),
            Ok(one) => Ok(vec![one]),
            Err(e) => Err(e),
        }
    };
    match events {
        Ok(events) if !events.is_empty() => {
            let ids: Vec<&Value> = events.iter().map(|e| &e["id"]).collect();
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({ "accepted": events.len(), "ids": ids })),
            )
                .into_response()
        }
        Ok(_) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "empty batch" })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let app = Router::new()
        .route("/v1/sales", post(ingest))
        .route("/v1/tweets", post(ingest))
        .route("/purchase", post(ingest))
        .route("/input", post(ingest))
        .layer(axum::extract::DefaultBodyLimit::max(4 << 20));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("baseline listening http={}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
