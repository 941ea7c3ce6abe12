//! The query API: KPIs, rankings and the monitored price streams, read from the
//! store through a short-lived read cache. `Cache-Control: no-cache` bypasses it.

use super::api::ErrorBody;
use super::error::ApiError;
use super::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flujo_actors::event::Category;
use flujo_actors::metrics::{QUERY_CACHE_HITS, QUERY_CACHE_MISSES};
use flujo_actors::store::{
    LocationRank, MonitoredPrices, ProductRank, Ranking, SalesKpis, TweetKpis,
};
use flujo_actors::store::{Page, Store, StoreError};
use moka::future::Cache;
use serde::Serialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 10;
/// Largest page size.
pub const MAX_LIMIT: usize = 1000;

/// Rendered answers keyed by path and query, kept for the configured TTL.
///
/// When an answer expires, the first request reads the store and every request for
/// the same key meanwhile waits for that one read (moka's `try_get_with`), so an
/// expiry never sends all waiting clients to the store at once.
#[derive(Clone)]
pub struct ReadCache {
    cache: Option<Cache<String, Bytes>>,
}

impl ReadCache {
    /// A cache keeping answers for `ttl`; a zero TTL disables it.
    pub fn new(ttl: Duration) -> Self {
        let cache = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .time_to_live(ttl)
                .max_capacity(10_000)
                .build()
        });
        ReadCache { cache }
    }

    /// The cached answer for `key`, or a fresh one from `read` (cached for next
    /// time). `bypass` reads the store whatever the cache holds, and refreshes it.
    async fn get_or_read<T, F>(&self, key: String, bypass: bool, read: F) -> Result<Bytes, ApiError>
    where
        T: Serialize,
        F: Future<Output = Result<T, StoreError>>,
    {
        let Some(cache) = &self.cache else {
            return render(read).await;
        };
        if bypass {
            let bytes = render(read).await?;
            cache.insert(key, bytes.clone()).await;
            return Ok(bytes);
        }
        let mut read_here = false;
        let answer = cache
            .try_get_with(key, async {
                read_here = true;
                render(read).await
            })
            .await
            .map_err(|e| ApiError::clone(&e));
        if !read_here {
            metrics::counter!(QUERY_CACHE_HITS).increment(1);
        }
        answer
    }
}

/// Reads the store (a cache miss) and renders the answer as JSON.
async fn render<T: Serialize>(
    read: impl Future<Output = Result<T, StoreError>>,
) -> Result<Bytes, ApiError> {
    metrics::counter!(QUERY_CACHE_MISSES).increment(1);
    let value = read.await?;
    let bytes = serde_json::to_vec(&value).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render answer: {e}"),
        )
    })?;
    Ok(Bytes::from(bytes))
}

/// What every query handler reads: the shared state, the raw query string, and
/// whether the client asked for a fresh answer.
pub struct QueryRequest {
    state: Arc<AppState>,
    raw: Option<String>,
    bypass: bool,
}

impl FromRequestParts<Arc<AppState>> for QueryRequest {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(QueryRequest {
            state: state.clone(),
            raw: parts.uri.query().map(str::to_owned),
            bypass: bypass_cache(&parts.headers),
        })
    }
}

impl QueryRequest {
    /// The query parameters, refusing any not in `allowed`.
    fn params(&self, allowed: &[&str]) -> Result<Params, ApiError> {
        Params::parse(self.raw.as_deref(), allowed)
    }

    /// The cache key of `path` with this request's query string.
    fn key(&self, path: &str) -> String {
        match &self.raw {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        }
    }

    /// The answer for `key` from the read cache or, through `read`, from the store.
    async fn answer<T, F, Fut>(&self, key: String, read: F) -> Result<Response, ApiError>
    where
        T: Serialize,
        F: FnOnce(Arc<dyn Store>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let store = self.state.store()?;
        let cache = &self.state.cache;
        let body = cache.get_or_read(key, self.bypass, read(store)).await?;
        Ok(json(body))
    }
}

fn json(bytes: Bytes) -> Response {
    let mut r = bytes.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn bypass_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .map(|d| d.trim().to_ascii_lowercase())
                .any(|d| d == "no-cache" || d == "no-store" || d == "max-age=0")
        })
}

/// Query parameters, refusing unknown and repeated ones.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                let expected = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Err(ApiError::bad_field(
                    &k,
                    format!("unknown query parameter `{k}`; expected: {expected}"),
                ));
            }
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(ApiError::bad_field(
                    &k,
                    format!("query parameter `{k}` is given twice"),
                ));
            }
        }
        Ok(Params(map))
    }

    fn number(
        &self,
        name: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ApiError> {
        let Some(text) = self.0.get(name) else {
            return Ok(default);
        };
        match text.parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_field(
                name,
                format!("`{name}` must be an integer from {min} to {max}, got `{text}`"),
            )),
        }
    }

    fn limit(&self) -> Result<usize, ApiError> {
        self.number("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    }

    fn page(&self) -> Result<Page, ApiError> {
        Ok(Page {
            limit: self.limit()?,
            offset: self.number("offset", 0, 0, usize::MAX)?,
        })
    }

    fn category(&self) -> Result<Option<Category>, ApiError> {
        self.0
            .get("category")
            .filter(|c| !c.is_empty())
            .map(|c| category(c))
            .transpose()
    }
}

fn category(text: &str) -> Result<Category, ApiError> {
    Category::from_name(text).ok_or_else(|| {
        ApiError::bad_field(
            "category",
            format!("unknown category `{text}`; expected electronics, clothing, home or beauty"),
        )
    })
}

/// `GET /v1/kpis/sales`.
#[utoipa::path(
    get,
    path = "/v1/kpis/sales",
    tag = "query",
    description = "Sales KPIs, in all and per category (count, units, revenue, averages, min/max price, monitored product).",
    params(("Cache-Control" = Option<String>, Header, description = "`no-cache` reads the store, bypassing the read cache.")),
    responses(
        (status = 200, description = "The sales KPIs.", body = SalesKpis),
        (status = 400, description = "An unknown, repeated or out-of-range query parameter (`field` names it).", body = ErrorBody),
        (status = 503, description = "The store does not answer; retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")))
    )
)]
pub async fn sales_kpis(q: QueryRequest) -> Result<Response, ApiError> {
    q.params(&[])?;
    q.answer("/v1/kpis/sales".into(), |store| async move {
        store.sales_kpis().await
    })
    .await
}

/// `GET /v1/kpis/tweets`.
#[utoipa::path(
    get,
    path = "/v1/kpis/tweets",
    tag = "query",
    description = "Weather-tweet KPIs: count, temperature and humidity averages and extremes, count per weather.",
    params(("Cache-Control" = Option<String>, Header, description = "`no-cache` reads the store, bypassing the read cache.")),
    responses(
        (status = 200, description = "The tweet KPIs.", body = TweetKpis),
        (status = 400, description = "An unknown, repeated or out-of-range query parameter (`field` names it).", body = ErrorBody),
        (status = 503, description = "The store does not answer; retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")))
    )
)]
pub async fn tweet_kpis(q: QueryRequest) -> Result<Response, ApiError> {
    q.params(&[])?;
    q.answer("/v1/kpis/tweets".into(), |store| async move {
        store.tweet_kpis().await
    })
    .await
}

/// `GET /v1/rankings/products?category=&limit=&offset=`.
#[utoipa::path(
    get,
    path = "/v1/rankings/products",
    tag = "query",
    description = "Products by units sold, most first; in all or within one category.",
    params(
        ("category" = Option<Category>, Query, description = "Rank within this category; absent or empty means all."),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Items per page (default 10)."),
        ("offset" = Option<usize>, Query, minimum = 0, description = "Items skipped (default 0)."),
        ("Cache-Control" = Option<String>, Header, description = "`no-cache` reads the store, bypassing the read cache.")
    ),
    responses(
        (status = 200, description = "One page of the ranking.", body = Ranking<ProductRank>),
        (status = 400, description = "An unknown, repeated or out-of-range query parameter (`field` names it).", body = ErrorBody),
        (status = 503, description = "The store does not answer; retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")))
    )
)]
pub async fn product_ranking(q: QueryRequest) -> Result<Response, ApiError> {
    let params = q.params(&["category", "limit", "offset"])?;
    let (category, page) = (params.category()?, params.page()?);
    q.answer(q.key("/v1/rankings/products"), |store| async move {
        store.product_ranking(category, page).await
    })
    .await
}

/// `GET /v1/rankings/locations?limit=&offset=`.
#[utoipa::path(
    get,
    path = "/v1/rankings/locations",
    tag = "query",
    description = "Locations by number of tweets, most first, with their aggregates.",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Items per page (default 10)."),
        ("offset" = Option<usize>, Query, minimum = 0, description = "Items skipped (default 0)."),
        ("Cache-Control" = Option<String>, Header, description = "`no-cache` reads the store, bypassing the read cache.")
    ),
    responses(
        (status = 200, description = "One page of the ranking.", body = Ranking<LocationRank>),
        (status = 400, description = "An unknown, repeated or out-of-range query parameter (`field` names it).", body = ErrorBody),
        (status = 503, description = "The store does not answer; retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")))
    )
)]
pub async fn location_ranking(q: QueryRequest) -> Result<Response, ApiError> {
    let page = q.params(&["limit", "offset"])?.page()?;
    q.answer(q.key("/v1/rankings/locations"), |store| async move {
        store.location_ranking(page).await
    })
    .await
}

/// `GET /v1/sales/monitored/{category}/prices?limit=`.
#[utoipa::path(
    get,
    path = "/v1/sales/monitored/{category}/prices",
    tag = "query",
    description = "The price stream of the category's monitored product (the product of its earliest sale by (ts, id)): its newest prices by (ts, id), newest last.",
    params(
        ("category" = Category, Path, description = "The category."),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Newest prices wanted (default 10)."),
        ("Cache-Control" = Option<String>, Header, description = "`no-cache` reads the store, bypassing the read cache.")
    ),
    responses(
        (status = 200, description = "The monitored product and its newest prices.", body = MonitoredPrices),
        (status = 400, description = "An unknown, repeated or out-of-range query parameter (`field` names it).", body = ErrorBody),
        (status = 503, description = "The store does not answer; retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")))
    )
)]
pub async fn monitored_prices(
    Path(name): Path<String>,
    q: QueryRequest,
) -> Result<Response, ApiError> {
    let limit = q.params(&["limit"])?.limit()?;
    let category = category(&name)?;
    let key = format!(
        "/v1/sales/monitored/{}/prices?limit={limit}",
        category.as_str()
    );
    q.answer(key, |store| async move {
        store.monitored_prices(category, limit).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_validate_and_page() {
        let p = Params::parse(
            Some("limit=5&offset=10&category=Hogar"),
            &["category", "limit", "offset"],
        )
        .expect("valid");
        assert_eq!(
            p.page().expect("page"),
            Page {
                limit: 5,
                offset: 10
            }
        );
        assert_eq!(p.category().expect("cat"), Some(Category::Home));
        let defaults = Params::parse(None, &["limit", "offset"]).expect("empty");
        assert_eq!(
            defaults.page().expect("page"),
            Page {
                limit: 10,
                offset: 0
            }
        );
        for (q, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=abc", "limit"),
            ("offset=-1", "offset"),
            ("limti=3", "limti"),
            ("limit=1&limit=2", "limit"),
        ] {
            let err = Params::parse(Some(q), &["limit", "offset"])
                .and_then(|p| p.page())
                .expect_err(q);
            assert_eq!(
                (err.status, err.field.as_deref()),
                (StatusCode::BAD_REQUEST, Some(field)),
                "{q}"
            );
        }
        let p = Params::parse(Some("category=toys"), &["category"]).expect("parses");
        assert_eq!(
            p.category().expect_err("bad").field.as_deref(),
            Some("category")
        );
    }

    /// The documented page bounds are the parser's (utoipa takes only literals).
    #[test]
    fn documented_limits_are_the_parsers() {
        let doc = utoipa_axum::router::OpenApiRouter::<Arc<AppState>>::new()
            .routes(utoipa_axum::routes!(product_ranking))
            .routes(utoipa_axum::routes!(monitored_prices))
            .into_openapi();
        let doc = serde_json::to_value(doc).unwrap_or_default();
        for path in [
            "/v1/rankings/products",
            "/v1/sales/monitored/{category}/prices",
        ] {
            let params = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let limit = params.iter().find(|p| p["name"] == "limit");
            let limit = limit.map(|p| &p["schema"]);
            assert_eq!(
                limit.and_then(|s| s["maximum"].as_f64()),
                Some(MAX_LIMIT as f64),
                "{path}"
            );
            let text = limit
                .map(|_| doc["paths"][path].to_string())
                .unwrap_or_default();
            assert!(text.contains(&format!("default {DEFAULT_LIMIT}")), "{path}");
        }
    }

    #[test]
    fn cache_control_bypass() {
        let mut h = HeaderMap::new();
        assert!(!bypass_cache(&h));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        assert!(bypass_cache(&h));
    }
}
