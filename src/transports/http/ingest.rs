//! `POST /v1/sales`, `POST /v1/tweets` and their alias paths: one JSON object, a
//! JSON array or NDJSON; the batch is accepted or refused whole.

use super::api::{ErrorBody, SalesBody, TweetsBody};
use super::error::ApiError;
use super::AppState;
use crate::transports::AnswerBy;
use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{post, MethodRouter};
use axum::{Extension, Json};
use flujo_actors::event::body::{self, Encoding};
use flujo_actors::event::{Kind, RawBatch};
use flujo_actors::messages::Transport;
use flujo_actors::metrics::INGEST_DURATION;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// The 202 answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestAccepted {
    /// Events accepted.
    pub accepted: usize,
    /// Their ids, in request order.
    pub ids: Vec<String>,
}

/// The body's encoding, from its `Content-Type` (415 for any other type).
fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let unsupported = |got: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported Content-Type `{got}`; send application/json (an object or an array) \
                 or application/x-ndjson (one object per line)"
            ),
        )
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported("(none)"));
    };
    let text = value.to_str().map_err(|_| unsupported("(not text)"))?;
    Encoding::of_content_type(text).ok_or_else(|| unsupported(text))
}

/// Decodes the body into one raw event per event (400 naming the problem).
fn decode(body: &[u8], encoding: Encoding, kind: Kind) -> Result<RawBatch, ApiError> {
    body::decode_events(body, encoding, kind)
        .map(RawBatch::Decoded)
        .map_err(|e| match e.index {
            Some(index) => ApiError::bad_event(index, e.message),
            None => ApiError::new(StatusCode::BAD_REQUEST, e.message),
        })
}

/// Handles one ingest request for `kind`, answered by `answer_by` when the
/// request deadline set it.
pub async fn ingest(
    state: Arc<AppState>,
    answer_by: Option<Extension<AnswerBy>>,
    kind: Kind,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<IngestAccepted>), ApiError> {
    let started = Instant::now();
    let answer_by = answer_by.map(|Extension(AnswerBy(by))| by);
    let result = accept(&state, answer_by, kind, &headers, body).await;
    metrics::histogram!(INGEST_DURATION, "transport" => Transport::Http.as_str())
        .record(started.elapsed().as_secs_f64());
    result
}

async fn accept(
    state: &AppState,
    answer_by: Option<tokio::time::Instant>,
    kind: Kind,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<IngestAccepted>), ApiError> {
    let limit = state.limits.max_body_bytes;
    // The body is read before any refusal is answered, so that the refusal reaches
    // HTTP/2 clients still sending (see the gate's `drained`).
    let bytes = to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::body_too_large(limit))?;
    let encoding = encoding(headers)?;
    for coding in headers.get_all(header::CONTENT_ENCODING) {
        let coding = coding.to_str().unwrap_or("(not text)").trim();
        if !coding.eq_ignore_ascii_case("identity") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding `{coding}`; send the body uncompressed"),
            ));
        }
    }
    let batch = decode(&bytes, encoding, kind)?;
    if batch.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty batch: send at least one event",
        ));
    }
    let max = state.limits.max_batch_events;
    if batch.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "batch of {} events exceeds the limit of {max}; split it",
                batch.len()
            ),
        ));
    }
    let receivers = state.receivers()?;
    // The answer's ids must still be written before the cut: about 200 ns of JSON
    // per id (200 ms for the largest batch, 2 ms for the default's 10,000).
    let writing = std::time::Duration::from_nanos(200 * batch.len() as u64);
    let accepted = match answer_by.map(|by| by.checked_sub(writing).unwrap_or(by)) {
        Some(by) => receivers.answering_by(by),
        None => receivers.clone(),
    }
    .ingest_batch(batch, Transport::Http)
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(IngestAccepted {
            accepted: accepted.ids.len(),
            ids: accepted.ids,
        }),
    ))
}

/// `POST /v1/sales`: one sale, an array of sales, or NDJSON.
#[utoipa::path(
    post,
    path = "/v1/sales",
    tag = "ingest",
    operation_id = "post_sales",
    request_body(
        description = "One sale (a JSON object), a batch (a JSON array), or NDJSON (one object per line). \
            A batch is accepted or refused whole.",
        content(
            (SalesBody = "application/json"),
            (String = "application/x-ndjson")
        )
    ),
    responses(
        (status = 202, description = "Accepted: every event of the batch, with its id.", body = IngestAccepted),
        (status = 400, description = "Bad JSON, an empty batch, or a bad event (`index`, `field`).", body = ErrorBody),
        (status = 413, description = "Body over `http.max_body_bytes` or batch over `http.max_batch_events`.", body = ErrorBody),
        (status = 415, description = "Content-Type other than JSON or NDJSON, or a Content-Encoding other than identity.", body = ErrorBody),
        (status = 429, description = "The pipeline is full; retry after `Retry-After` seconds with the same ids.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 503, description = "A sink is down or the process is draining; retry with the same ids.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")))
    )
)]
pub async fn post_sales(
    State(state): State<Arc<AppState>>,
    answer_by: Option<Extension<AnswerBy>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<IngestAccepted>), ApiError> {
    ingest(state, answer_by, Kind::Sale, headers, body).await
}

/// `POST /v1/tweets`: one tweet, an array of tweets, or NDJSON.
#[utoipa::path(
    post,
    path = "/v1/tweets",
    tag = "ingest",
    operation_id = "post_tweets",
    request_body(
        description = "One tweet (a JSON object), a batch (a JSON array), or NDJSON (one object per line). \
            A batch is accepted or refused whole.",
        content(
            (TweetsBody = "application/json"),
            (String = "application/x-ndjson")
        )
    ),
    responses(
        (status = 202, description = "Accepted: every event of the batch, with its id.", body = IngestAccepted),
        (status = 400, description = "Bad JSON, an empty batch, or a bad event (`index`, `field`).", body = ErrorBody),
        (status = 413, description = "Body over `http.max_body_bytes` or batch over `http.max_batch_events`.", body = ErrorBody),
        (status = 415, description = "Content-Type other than JSON or NDJSON, or a Content-Encoding other than identity.", body = ErrorBody),
        (status = 429, description = "The pipeline is full; retry after `Retry-After` seconds with the same ids.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 503, description = "A sink is down or the process is draining; retry with the same ids.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")))
    )
)]
pub async fn post_tweets(
    State(state): State<Arc<AppState>>,
    answer_by: Option<Extension<AnswerBy>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<IngestAccepted>), ApiError> {
    ingest(state, answer_by, Kind::Tweet, headers, body).await
}

/// The `POST` route that ingests events of `kind` (alias paths).
pub fn route(kind: Kind) -> MethodRouter<Arc<AppState>> {
    post(
        move |State(state): State<Arc<AppState>>,
              answer_by: Option<Extension<AnswerBy>>,
              headers: HeaderMap,
              body: Body| { ingest(state, answer_by, kind, headers, body) },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_errors_are_400_and_name_the_line() {
        let err =
            decode(b"{\"a\":1}\n{oops\n", Encoding::Ndjson, Kind::Sale).expect_err("bad line");
        assert_eq!((err.status, err.index), (StatusCode::BAD_REQUEST, Some(1)));
        assert!(err.error.contains("line 2"), "{}", err.error);
        let err = decode(b"7", Encoding::Json, Kind::Sale).expect_err("scalar");
        assert_eq!((err.status, err.index), (StatusCode::BAD_REQUEST, None));
    }

    #[test]
    fn content_types() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().expect("header"));
            encoding(&h)
        };
        assert_eq!(with("application/json; charset=utf-8"), Ok(Encoding::Json));
        assert_eq!(
            with("text/plain").expect_err("415").status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            encoding(&HeaderMap::new()).expect_err("415").status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
