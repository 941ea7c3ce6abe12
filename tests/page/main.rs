//! The live KPI page at `/` and its stream `/v1/stream/kpis`, as a user sees them:
//!
//! - `page_files_are_embedded_and_locked_down`: `/` and every file it names are
//!   served by the process itself, with a `default-src 'self'` policy.
//! - `stream_carries_what_was_sent` (memory store) and
//!   `stream_carries_what_was_sent_with_valkey`: the first `kpis` event holds exactly
//!   the KPIs, rankings and price streams of what was sent; later events move with
//!   more events, and health shows throughput, latency, lag and readiness.
//! - `streams_beyond_the_cap_are_refused`: 503 past `query.max_streams`, and a
//!   stream closed by its client frees its place.
//! - `open_streams_end_at_shutdown`: an open stream does not hold up SIGTERM.
//! - `chromium_shows_the_counts_sent_and_moves`: headless Chromium on `/` shows the
//!   counts just sent, then the new ones after more are sent, having requested
//!   nothing but the process's own URLs and logged no error.

mod browser;
mod sse;
#[path = "../support/mod.rs"]
mod support;

use browser::Browser;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sse::KpiStream;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// A fast stream for the tests: a snapshot every 200 ms.
const FAST: (&str, &str) = ("FLUJO__QUERY__STREAM_INTERVAL_MS", "200");
/// How long a stream may take to show what was applied.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// Where the tweets come from.
const PLACES: [&str; 3] = ["Antigua", "Mixco", "Zacapa"];
/// Newest prices per category a snapshot carries.
const PRICES_PER_CATEGORY: usize = 100;

/// What the tests sent, as the store should count it.
#[derive(Default)]
struct Sent {
    truth: DedupTruth,
}

impl Sent {
    /// Sends round `r`: `sales` sales over the four categories and five products,
    /// `tweets` tweets from three places, and waits until all are applied.
    async fn round(&mut self, server: &TestServer, r: usize, sales: usize, tweets: usize) {
        let sales: Vec<Sale> = (0..sales)
            .map(|i| {
                let n = r * 1000 + i;
                sale(
                    &format!("page-s-{r}-{i}"),
                    CATEGORIES[i % 4],
                    &format!("P{}", n % 5),
                    1.25 * (1 + n % 17) as f64,
                    (1 + i % 3) as u64,
                )
            })
            .collect();
        let tweets: Vec<Tweet> = (0..tweets)
            .map(|i| {
                tweet(
                    &format!("page-t-{r}-{i}"),
                    PLACES[(r + i) % 3],
                    WEATHERS[i % 6],
                    10.0 + (i % 20) as f64,
                    40.0 + (i % 50) as f64,
                )
            })
            .collect();
        let bodies: Vec<Value> = sales
            .iter()
            .map(|s| sale_json(s, SaleForm::English))
            .collect();
        server.send_ok("/v1/sales", &bodies, Encoding::Array).await;
        let bodies: Vec<Value> = tweets.iter().map(|t| tweet_json(t, false)).collect();
        server.send_ok("/v1/tweets", &bodies, Encoding::Array).await;
        for s in &sales {
            self.truth.apply_sale(s);
        }
        for t in &tweets {
            self.truth.apply_tweet(t);
        }
        server.wait_sales(self.truth.sales.count).await;
        server.wait_tweets(self.truth.tweets.count).await;
    }

    fn events(&self) -> u64 {
        self.truth.sales.count + self.truth.tweets.count
    }

    /// Asserts a snapshot holds exactly what was sent.
    fn assert_snapshot(&self, snap: &Value) {
        let truth = &self.truth;
        assert_eq!(snap["error"], Value::Null, "{snap}");
        assert_sales_kpis(truth, &snap["sales"]);
        assert_tweets_kpis(truth, &snap["tweets"]);
        assert_product_ranking(&snap["products"], &truth.product_ranking(None), "products");
        let locations = truth.location_ranking();
        assert_eq!(snap["locations"]["total"], json!(locations.len()), "{snap}");
        for (i, want) in locations.iter().enumerate() {
            assert_location_item("locations", &snap["locations"]["items"][i], want);
        }
        for c in CATEGORIES {
            let (product, prices) = truth.monitored_prices(c, PRICES_PER_CATEGORY);
            let got = &snap["prices"][c];
            assert_eq!(got["product_id"].as_str(), product.as_deref(), "{c}: {got}");
            assert_same_order(&format!("prices of {c}"), &got["prices"], &prices);
        }
        let health = &snap["health"];
        assert_eq!(health["ready"], json!(true), "{health}");
        assert_eq!(health["failing"], json!([]), "{health}");
    }

    /// What the page should show for what was sent, by `data-testid`.
    fn page_texts(&self) -> BTreeMap<String, String> {
        let truth = &self.truth;
        let money = |x: f64| format!("${x:.2}");
        let mut want = BTreeMap::new();
        let mut put = |id: String, text: String| want.insert(id, text);
        put("sales-count-total".into(), truth.sales.count.to_string());
        put("sales-revenue-total".into(), money(truth.sales.revenue));
        for c in CATEGORIES {
            let agg = truth.sales_by_category.get(c).cloned().unwrap_or_default();
            put(format!("sales-count-{c}"), agg.count.to_string());
            put(format!("sales-quantity-{c}"), agg.quantity_sum.to_string());
            put(format!("sales-revenue-{c}"), money(agg.revenue));
            let (product, prices) = truth.monitored_prices(c, PRICES_PER_CATEGORY);
            let product = product.unwrap_or_else(|| "—".into());
            put(format!("monitored-product-{c}"), product.clone());
            put(format!("price-product-{c}"), product);
            put(format!("price-points-{c}"), prices.len().to_string());
            let last = prices.last().map_or_else(|| "—".into(), |p| money(*p));
            put(format!("price-last-{c}"), last);
        }
        put("tweets-count-total".into(), truth.tweets.count.to_string());
        for w in WEATHERS {
            let n = truth.weather.get(w).copied().unwrap_or(0);
            put(format!("weather-count-{w}"), n.to_string());
        }
        let products = truth.product_ranking(None);
        put("products-total".into(), products.len().to_string());
        for (i, (product, quantity)) in products.iter().enumerate().take(10) {
            put(format!("product-ranking-{}-id", i + 1), product.clone());
            put(
                format!("product-ranking-{}-quantity", i + 1),
                quantity.to_string(),
            );
        }
        let locations = truth.location_ranking();
        put("locations-total".into(), locations.len().to_string());
        for (i, (location, agg)) in locations.iter().enumerate().take(10) {
            put(format!("location-ranking-{}-name", i + 1), location.clone());
            put(
                format!("location-ranking-{}-count", i + 1),
                agg.count.to_string(),
            );
        }
        put("health-ready".into(), "ready".into());
        want
    }
}

/// The stream's story on `server`: the first event holds what was sent before it
/// opened; after a second round, events carry the new counts and the health of a
/// pipeline that just applied events.
async fn stream_tells_two_rounds(server: &TestServer) {
    let mut sent = Sent::default();
    sent.round(server, 1, 40, 24).await;
    let mut stream = KpiStream::open(server).await;
    let first = stream.next_kpis(STREAM_TIMEOUT).await;
    sent.assert_snapshot(&first);
    assert!(first["at_ms"].as_u64().is_some_and(|t| t > 0), "{first}");

    sent.round(server, 2, 20, 12).await;
    let total = sent.events();
    let moved = stream
        .kpis_until(STREAM_TIMEOUT, |s| {
            s["sales"]["total"]["count"].as_u64().unwrap_or(0)
                + s["tweets"]["total"]["count"].as_u64().unwrap_or(0)
                == total
        })
        .await;
    sent.assert_snapshot(&moved);
    let health = &moved["health"];
    // The 32 events of round 2 were applied within the window of this snapshot.
    let rate = health["events_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput after two readings: {health}"));
    assert!(rate > 0.0, "{health}");
    let p99 = health["p99_latency_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("no p99 with events applied in the window: {health}"));
    assert!(p99 > 0.0 && p99 <= 10.0, "{health}");
    assert!(
        health["consumer_lag"].is_number(),
        "the memory bus reports its lag: {health}"
    );
}

#[tokio::test]
async fn stream_carries_what_was_sent() {
    let server = TestServer::start(&[FAST]);
    stream_tells_two_rounds(&server).await;
}

#[tokio::test]
async fn stream_carries_what_was_sent_with_valkey() {
    require_valkey().await;
    let url = valkey_url();
    let prefix = format!("{}:", unique_name("page"));
    let _keys = KeysGuard {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let store = store_flag(&url);
    let server = TestServer::start_with_args(
        &[FAST, ("FLUJO__VALKEY__PREFIX", &prefix)],
        &["--store", &store],
    );
    stream_tells_two_rounds(&server).await;
}

#[tokio::test]
async fn streams_beyond_the_cap_are_refused() {
    let server = TestServer::start(&[FAST, ("FLUJO__QUERY__MAX_STREAMS", "2")]);
    let mut first = KpiStream::open(&server).await;
    let mut second = KpiStream::open(&server).await;
    first.next_kpis(STREAM_TIMEOUT).await;
    second.next_kpis(STREAM_TIMEOUT).await;

    let refused = server.get("/v1/stream/kpis").await.expect("GET");
    assert_eq!(
        refused
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .map(|v| v.as_bytes()),
        Some(&b"5"[..]),
        "{:?}",
        refused.headers()
    );
    let (status, body) = status_json(refused).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("query.max_streams"), "{body}");

    // The second stream still flows, and closing the first frees its place.
    second.next_kpis(STREAM_TIMEOUT).await;
    drop(first);
    let freed = wait_until(STREAM_TIMEOUT, || async {
        server
            .get("/v1/stream/kpis")
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(freed, "a closed stream never freed its place");
}

#[tokio::test]
async fn open_streams_end_at_shutdown() {
    let mut server = TestServer::start(&[FAST]);
    let mut stream = KpiStream::open(&server).await;
    stream.next_kpis(STREAM_TIMEOUT).await;
    server.sigterm();
    // The server ends the stream (whatever snapshots were under way come first)...
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream.next_event(Duration::from_secs(10)).await.is_some() {
        assert!(Instant::now() < deadline, "the stream did not end");
    }
    // ... and the process exits cleanly, well within its 20 s drain deadline: an
    // open stream would hold the HTTP server's graceful shutdown until then.
    let status = server
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("an open stream held up the shutdown\n{}", server.stderr()));
    assert!(status.success(), "{status}\n{}", server.stderr());
}

#[tokio::test]
async fn page_files_are_embedded_and_locked_down() {
    let server = TestServer::start(&[]);
    let get = |path: &'static str| {
        let server = &server;
        async move {
            let r = server
                .get(path)
                .await
                .unwrap_or_else(|e| panic!("GET {path}: {e}"));
            assert_eq!(r.status(), StatusCode::OK, "GET {path}");
            let header = |name| {
                r.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let (ct, csp) = (header("content-type"), header("content-security-policy"));
            let nosniff = header("x-content-type-options");
            (ct, csp, nosniff, r.text().await.expect("body"))
        }
    };
    let (ct, csp, nosniff, html) = get("/").await;
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(
        csp.split(';').any(|d| d.trim() == "default-src 'self'"),
        "{csp}"
    );
    assert_eq!(nosniff, "nosniff");

    // Every file the page names is one of this process's paths, and is served.
    let mut named = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let target = part.split('"').next().unwrap_or_default();
            assert!(
                target.starts_with('/') && !target.starts_with("//"),
                "the page names {target:?}, not a path of this process"
            );
            named.push(target.to_owned());
        }
    }
    named.sort();
    assert_eq!(
        named,
        ["/assets/icon.svg", "/assets/page.css", "/assets/page.js"],
        "{html}"
    );
    for (path, want) in [
        ("/assets/page.js", "text/javascript"),
        ("/assets/page.css", "text/css"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let (ct, _, nosniff, body) = get(path).await;
        assert!(ct.starts_with(want), "{path}: {ct}");
        assert_eq!(nosniff, "nosniff", "{path}");
        // The only URL in the files is the SVG namespace, which is a name, not a request.
        let urls = body.matches("http").count();
        let svg_ns = body.matches("http://www.w3.org/2000/svg").count();
        assert_eq!(urls, svg_ns, "{path} names a URL elsewhere");
    }
}

#[tokio::test]
async fn chromium_shows_the_counts_sent_and_moves() {
    let server = TestServer::start(&[FAST]);
    let mut browser = Browser::open(&server.url("/"));
    let mut sent = Sent::default();

    sent.round(&server, 1, 40, 24).await;
    browser.expect(&sent.page_texts());

    sent.round(&server, 2, 20, 12).await;
    browser.expect(&sent.page_texts());
    // The pipeline just applied events: the health cards show numbers.
    let seen = browser.command(
        json!({"read": ["health-throughput", "health-p99", "connection-state"]}),
        Duration::from_secs(10),
    );
    assert_eq!(seen["seen"]["connection-state"], json!("live"), "{seen}");
    assert!(
        seen["seen"]["health-p99"]
            .as_str()
            .is_some_and(|t| t.ends_with(" ms")),
        "{seen}"
    );

    if let Some(path) = std::env::var_os("FLUJO_TEST_PAGE_SCREENSHOT") {
        let path = path.to_string_lossy().into_owned();
        let shot = browser.command(json!({ "screenshot": path }), Duration::from_secs(30));
        assert_eq!(shot["ok"], json!(true), "{shot}");
    }

    let loaded = browser.command(json!({"requests": true}), Duration::from_secs(10));
    let origin = server.url("/");
    let urls = loaded["urls"].as_array().expect("urls");
    assert!(urls.len() >= 3, "the page, its script and style: {loaded}");
    for url in urls {
        let url = url.as_str().unwrap_or_default();
        assert!(
            url.starts_with(&origin),
            "the page requested {url}: {loaded}"
        );
    }
    assert_eq!(
        loaded["console"],
        json!([]),
        "the browser logged warnings or errors"
    );
}
