//! `GET /`: the live KPI page. Plain HTML, CSS and JavaScript (hand-drawn SVG
//! charts, no framework), embedded in the binary from `page/` and fed by
//! [`super::stream`] through `EventSource`: the page makes no request anywhere but
//! to the process that served it, and its Content-Security-Policy says so.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use std::sync::Arc;

use super::AppState;

/// Every resource of the page may come from this origin only; no inline script or
/// style, no frames, no forms.
pub const CONTENT_SECURITY_POLICY_VALUE: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's files: path, content type and body.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("page/index.html"),
    ),
    (
        "/assets/page.js",
        "text/javascript; charset=utf-8",
        include_str!("page/page.js"),
    ),
    (
        "/assets/page.css",
        "text/css; charset=utf-8",
        include_str!("page/page.css"),
    ),
    (
        "/assets/icon.svg",
        "image/svg+xml",
        include_str!("page/icon.svg"),
    ),
];

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Small files: revalidate, so an upgraded process serves its own page.
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the page itself.
#[utoipa::path(
    get,
    path = "/",
    tag = "query",
    description = "The live KPI page: sales, tweets, rankings, price streams and pipeline health, \
        updated from `/v1/stream/kpis`. Its assets are served under `/assets/`.",
    responses((status = 200, description = "The page.", body = String, content_type = "text/html"))
)]
pub async fn index() -> Response {
    // The first asset is the page.
    let (_, content_type, body) = ASSETS[0];
    asset(content_type, body)
}

/// The routes of the page's other files (`/assets/…`); `/` is [`index`].
pub fn asset_routes() -> impl Iterator<Item = (&'static str, MethodRouter<Arc<AppState>>)> {
    ASSETS
        .iter()
        .filter(|(path, _, _)| *path != "/")
        .map(|&(path, content_type, body)| {
            let route = get(move || async move { asset(content_type, body) });
            (path, route)
        })
}
