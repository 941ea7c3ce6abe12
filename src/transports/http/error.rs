//! The one HTTP error type: a status and `{"error", "index", "field"}`, plus
//! `Retry-After` where retrying makes sense.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flujo_actors::event::ValidationError;
use flujo_actors::messages::IngestError;
use flujo_actors::store::StoreError;
use serde::Serialize;

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Status code (4xx or 5xx).
    pub status: StatusCode,
    /// What went wrong, naming the problem.
    pub error: String,
    /// Position of the offending event in the batch, when one event is at fault.
    pub index: Option<usize>,
    /// The offending field or parameter, when one is at fault.
    pub field: Option<String>,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u64>,
    /// The ids of the batch's events when the outcome is unknown: resend them.
    pub ids: Option<Vec<String>>,
    /// The request body was left unread, so the connection cannot carry another
    /// request: answer with `Connection: close` so the client does not reuse it.
    pub close_connection: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    index: Option<usize>,
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ids: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<&'static str>,
}

/// What an "outcome unknown" answer tells the client to do.
pub const RESEND_ADVICE: &str = "resend the same events with these ids";

impl ApiError {
    /// An error with only a status and a message.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            index: None,
            field: None,
            retry_after: None,
            ids: None,
            close_connection: false,
        }
    }

    /// 413 for a body over the limit, which was not read to its end.
    pub fn body_too_large(limit: usize) -> Self {
        ApiError {
            close_connection: true,
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {limit} bytes; split the batch"),
            )
        }
    }

    /// 400 about one parameter or field.
    pub fn bad_field(field: &str, error: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.to_owned()),
            ..ApiError::new(StatusCode::BAD_REQUEST, error)
        }
    }

    /// 400 about one event of the batch.
    pub fn bad_event(index: usize, error: impl Into<String>) -> Self {
        ApiError {
            index: Some(index),
            ..ApiError::new(StatusCode::BAD_REQUEST, error)
        }
    }

    /// The same error, telling the client it may retry after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError {
            field: e.error.field.clone(),
            ..ApiError::bad_event(e.index, format!("event {}: {}", e.index, e.error.message))
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Invalid(v) => v.into(),
            IngestError::Backpressure(m) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, m).retry_after(1)
            }
            IngestError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m).retry_after(1)
            }
            IngestError::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            IngestError::CircuitOpen {
                message,
                retry_after_secs,
            } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
                .retry_after(retry_after_secs),
            e @ IngestError::OutcomeUnknown { .. } => {
                let message = e.to_string();
                let IngestError::OutcomeUnknown { ids, .. } = e else {
                    unreachable!("matched above")
                };
                ApiError {
                    ids: Some(ids),
                    ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(1)
                }
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).retry_after(1)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.error,
            index: self.index,
            field: self.field.as_deref(),
            ids: self.ids.as_deref(),
            retry: self.ids.is_some().then_some(RESEND_ADVICE),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.close_connection {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
