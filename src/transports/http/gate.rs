//! The gateway on HTTP: a middleware on the ingest routes (scope `ingest`) and on
//! the query routes, the KPI stream and the page (scope `query`), and the security
//! scheme and 401/403/429 answers it adds to the OpenAPI document.
//!
//! - Credentials: `Authorization: Bearer <JWT or API key>`, or `X-API-Key: <key>`.
//! - 401 with `WWW-Authenticate: Bearer realm="flujo"` (and `error="invalid_token"`
//!   for a bad or expired one, RFC 6750); 403 with `error="insufficient_scope"`.
//! - 429 with `Retry-After`, `RateLimit-Limit`, `RateLimit-Remaining: 0` and
//!   `RateLimit-Reset`; every answer of a limited route carries `RateLimit-Limit`
//!   and `RateLimit-Remaining`.
//!
//! The page's static assets, `/metrics`, `/healthz`, `/readyz` and `/openapi.json`
//! are not behind it.

use super::error::ApiError;
use crate::gateway::{record_auth_failure, AuthError, Gateway, Refusal, Scope};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response as DocResponse, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{OpenApi, Ref, RefOr};

/// The header an API key may come in instead of `Authorization: Bearer`.
pub const API_KEY_HEADER: &str = "x-api-key";
/// `RateLimit-Limit`: the client's burst.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`: requests left in the burst now.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: seconds until a request passes again.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

const TRANSPORT: &str = "http";

/// What the middleware of one group of routes checks.
#[derive(Clone)]
pub struct Gate {
    /// The process's gateway.
    pub gateway: Arc<Gateway>,
    /// The scope the routes need.
    pub scope: Scope,
}

/// The credential of a request and the header it came in: `Authorization: Bearer
/// …` or `X-API-Key`; another `Authorization` scheme is an error.
fn credential(headers: &HeaderMap) -> Result<Option<(&'static str, &str)>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value
            .to_str()
            .map_err(|_| AuthError::Invalid("the Authorization header is not text".into()))?;
        let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
            return Err(AuthError::Invalid(
                "send `Authorization: Bearer <token>`".into(),
            ));
        }
        return Ok(Some(("Authorization", rest.trim())));
    }
    match headers.get(API_KEY_HEADER) {
        Some(value) => value
            .to_str()
            .map(|key| Some(("X-API-Key", key)))
            .map_err(|_| AuthError::Invalid("the X-API-Key header is not text".into())),
        None => Ok(None),
    }
}

/// The middleware: checks the credential (when authentication is on) and the
/// client's allowance (when the scope is limited) before the handler runs.
pub async fn check(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let gateway = &gate.gateway;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (field, token) = if gateway.auth_enabled() {
        match credential(req.headers()) {
            Ok(Some((field, token))) => (field, Some(token)),
            Ok(None) => ("Authorization", None),
            Err(e) => {
                record_auth_failure(TRANSPORT, &e);
                let refused = gateway.refuse_auth(TRANSPORT, gate.scope, peer, e);
                let refused = refusal(refused, gate.scope, "Authorization");
                return drained(req, refused).await;
            }
        }
    } else {
        ("Authorization", None)
    };
    match gateway.admit(TRANSPORT, gate.scope, token, peer) {
        Ok(admitted) => {
            let mut response = next.run(req).await;
            if let Some((limit, remaining)) = admitted.rate {
                let headers = response.headers_mut();
                headers.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
                headers.insert(RATELIMIT_REMAINING, HeaderValue::from(remaining));
            }
            response
        }
        Err(r) => drained(req, refusal(r, gate.scope, field)).await,
    }
}

/// Most bytes of a refused request's body read before the refusal is sent.
const DRAIN_MAX: usize = 4 * 1024 * 1024;
/// Longest wait for them.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `refused`, sent once the request's body is in (read and thrown away, up to
/// [`DRAIN_MAX`] bytes and [`DRAIN_WAIT`]; a body announced larger is not waited
/// for) when the request came over HTTP/2: answering first ends the stream with
/// `RST_STREAM` while the client still sends, which some clients (curl with
/// nghttp2 1.52, Debian 12's) report as a stream error instead of the answer.
/// Nothing is kept: a refused client costs no memory.
async fn drained(req: Request, refused: Response) -> Response {
    use futures::StreamExt;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if req.version() != axum::http::Version::HTTP_2 || announced.is_some_and(|n| n > DRAIN_MAX) {
        return refused;
    }
    let mut chunks = req.into_body().into_data_stream();
    let discard = async {
        let mut read = 0;
        while let Some(Ok(chunk)) = chunks.next().await {
            read += chunk.len();
            if read > DRAIN_MAX {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_WAIT, discard).await;
    refused
}

/// `error_description` may not hold `"` or `\` (RFC 6750 §3).
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '"' || c == '\\' || !c.is_ascii() || c.is_ascii_control() {
                '\''
            } else {
                c
            }
        })
        .collect()
}

/// The 401, 403 or 429 answer of a refusal.
fn refusal(r: Refusal, scope: Scope, field: &str) -> Response {
    match r {
        Refusal::Auth(e) => {
            let (status, challenge) = match &e {
                AuthError::Missing => (
                    StatusCode::UNAUTHORIZED,
                    r#"Bearer realm="flujo""#.to_owned(),
                ),
                AuthError::Forbidden(s) => (
                    StatusCode::FORBIDDEN,
                    format!(r#"Bearer realm="flujo", error="insufficient_scope", scope="{s}""#),
                ),
                AuthError::Invalid(_) | AuthError::Expired => (
                    StatusCode::UNAUTHORIZED,
                    format!(
                        r#"Bearer realm="flujo", error="invalid_token", error_description="{}""#,
                        quoted(&e.to_string())
                    ),
                ),
            };
            let mut error = ApiError::new(status, e.to_string());
            error.field = Some(field.to_owned());
            let mut response = error.into_response();
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            response
        }
        Refusal::Limited {
            limit,
            retry_after_secs,
        } => {
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "rate limit of {scope} requests for this client reached; retry in {retry_after_secs} s"
                ),
            )
            .retry_after(retry_after_secs)
            .into_response();
            let headers = response.headers_mut();
            headers.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
            headers.insert(RATELIMIT_REMAINING, HeaderValue::from(0));
            headers.insert(RATELIMIT_RESET, HeaderValue::from(retry_after_secs));
            response
        }
    }
}

/// The scope an operation of the document needs, by its tag.
fn scope_of(op: &Operation) -> Option<Scope> {
    let tags = op.tags.as_deref().unwrap_or_default();
    Scope::ALL
        .into_iter()
        .find(|s| tags.iter().any(|t| t == s.as_str()))
}

fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        ))
        .description(Some(description))
        .build()
}

fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    )
}

fn challenge_header() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(
            "`Bearer realm=\"flujo\"`, with `error` and `error_description` or `scope` (RFC 6750).",
        ))
        .build()
}

fn add_limit_headers(response: &mut DocResponse, refused: bool) {
    response.headers.insert(
        "RateLimit-Limit".into(),
        RefOr::T(integer_header(
            "Requests a client may send at once (its burst).",
        )),
    );
    response.headers.insert(
        "RateLimit-Remaining".into(),
        RefOr::T(integer_header("Requests left in the client's burst now.")),
    );
    if refused {
        response.headers.insert(
            "RateLimit-Reset".into(),
            RefOr::T(integer_header("Seconds until the client may send again.")),
        );
        response.headers.insert(
            "Retry-After".into(),
            RefOr::T(integer_header("Seconds to wait before retrying.")),
        );
    }
}

/// Describes the gateway in `doc`: with authentication on, the `bearer` and
/// `apiKey` security schemes and a 401 and a 403 on every ingest and query
/// operation; with a limit on a scope, its 429 and the `RateLimit-*` headers.
pub fn describe(doc: &mut OpenApi, gateway: &Gateway) {
    let auth = gateway.auth_enabled();
    if auth {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or API key")
                    .description(Some(
                        "A JWT (HS256, RS256 or ES256) whose `scope` claim holds `ingest` and/or `query`, or an API key.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key from `auth.api_keys_file`.",
            ))),
        );
    }
    for item in doc.paths.paths.values_mut() {
        for op in [item.get.as_mut(), item.post.as_mut()]
            .into_iter()
            .flatten()
        {
            let Some(scope) = scope_of(op) else { continue };
            if auth {
                op.security = Some(vec![
                    SecurityRequirement::new("bearer", [scope.as_str()]),
                    SecurityRequirement::new("apiKey", [scope.as_str()]),
                ]);
                op.responses.responses.insert(
                    "401".into(),
                    RefOr::T(
                        error_response("No credential, or a bad or expired one.")
                            .header("WWW-Authenticate", challenge_header())
                            .build(),
                    ),
                );
                op.responses.responses.insert(
                    "403".into(),
                    RefOr::T(
                        error_response(&format!("The credential lacks the `{scope}` scope."))
                            .header("WWW-Authenticate", challenge_header())
                            .build(),
                    ),
                );
            }
            if gateway.limiter(scope).is_some() {
                let limited = op
                    .responses
                    .responses
                    .entry("429".into())
                    .or_insert_with(|| {
                        RefOr::T(
                            error_response(
                                "This client is over its rate limit; retry after `Retry-After` seconds.",
                            )
                            .build(),
                        )
                    });
                if let RefOr::T(response) = limited {
                    add_limit_headers(response, true);
                }
                for (code, response) in op.responses.responses.iter_mut() {
                    let own = ["401", "403", "429"].contains(&code.as_str());
                    if let (false, RefOr::T(response)) = (own, response) {
                        add_limit_headers(response, false);
                    }
                }
            }
        }
    }
}
