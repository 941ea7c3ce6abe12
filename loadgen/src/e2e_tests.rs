//! End-to-end tests of `flujo loadgen` against a small fake server speaking
//! the ingest and query contract over real HTTP/1.1 on a local port.
//!
//! The fake aggregates with [`Truth`] and [`expected`] (so these tests check
//! the plumbing — scheduling, retries, paging, wire shapes, exit codes — not
//! the arithmetic, which the unit tests cover), dedups by id like the real
//! server, and can misbehave on purpose: push back with 429, reject
//! everything, or lose events after acknowledging them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::api::{MonitoredPrices, Snapshot};
use super::expected::expected;
use super::fixtures::line_server;
use super::generate::{Batch, KindMix, Sale, Tweet, CATEGORIES, LOCATIONS, WEATHERS};
use super::load::{lock, Rate};
use super::report::{Report, EXIT_OK, EXIT_REQUEST_FAILURES, EXIT_VERIFY_FAILED};
use super::transport::Transport;
use super::truth::Truth;
use super::{execute, LoadgenArgs};

/// How the fake server behaves.
#[derive(Default, Clone, Copy)]
struct Behaviour {
    /// Answer every n-th POST with 429 (Retry-After: 0) before storing.
    throttle_every: Option<u64>,
    /// Answer every POST with this status.
    fail_with: Option<u16>,
    /// Acknowledge, but do not store, every n-th new event.
    lose_every: Option<u64>,
    /// Largest page the ranking endpoints return (exercises paging).
    page_cap: usize,
}

#[derive(Default)]
struct FakeState {
    truth: Truth,
    seen: HashSet<String>,
    posts: u64,
    new_events: u64,
    no_cache_gets: u64,
    gets: u64,
}

struct Fake {
    behaviour: Behaviour,
    state: Mutex<FakeState>,
}

async fn start(behaviour: Behaviour) -> (String, Arc<Fake>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fake = Arc::new(Fake {
        behaviour,
        state: Mutex::new(FakeState::default()),
    });
    let f = fake.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, f.clone()));
        }
    });
    (format!("http://{addr}"), fake)
}

async fn serve(stream: TcpStream, fake: Arc<Fake>) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        let mut no_cache = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let (name, value) = (name.to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            }
            if name == "cache-control" && value == "no-cache" {
                no_cache = true;
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let (status, extra, payload) = fake.handle(&method, &target, &body, no_cache);
        let text = payload.to_string();
        let mut out = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n",
            text.len()
        );
        out.push_str(&text);
        if reader.get_mut().write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn page<T: serde::Serialize>(total: u64, items: &[T], query: &str, cap: usize) -> Value {
    let offset: usize = query_param(query, "offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: usize = query_param(query, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let items: Vec<&T> = items.iter().skip(offset).take(limit.min(cap)).collect();
    json!({"total": total, "items": items})
}

fn static_of(list: &[&'static str], v: &Value) -> &'static str {
    let s = v.as_str().unwrap_or("");
    list.iter().copied().find(|x| *x == s).unwrap_or("?")
}

impl Fake {
    fn handle(
        &self,
        method: &str,
        target: &str,
        body: &[u8],
        no_cache: bool,
    ) -> (u16, String, Value) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if method == "POST" {
            return self.ingest(path, body);
        }
        let mut st = lock(&self.state);
        st.gets += 1;
        st.no_cache_gets += u64::from(no_cache);
        let e = expected(&Snapshot::default(), &st.truth);
        let cap = self.behaviour.page_cap.max(1);
        let out = match path {
            "/v1/kpis/sales" => serde_json::to_value(&e.sales).unwrap_or_default(),
            "/v1/kpis/tweets" => serde_json::to_value(&e.tweets).unwrap_or_default(),
            "/v1/rankings/products" => {
                let r = match query_param(query, "category") {
                    Some(c) => e.products_by_category.get(c).cloned().unwrap_or_default(),
                    None => e.products.clone(),
                };
                page(r.total, &r.items, query, cap)
            }
            "/v1/rankings/locations" => page(e.locations.total, &e.locations.items, query, cap),
            p if p.starts_with("/v1/sales/monitored/") => {
                let category = p.split('/').nth(4).unwrap_or("");
                let product = st.truth.first_product.get(category).cloned();
                let prices = product
                    .as_ref()
                    .map(|p| st.truth.prices_of(category, p))
                    .unwrap_or_default();
                let prices = prices[prices.len().saturating_sub(1000)..].to_vec();
                serde_json::to_value(MonitoredPrices {
                    product_id: product,
                    prices,
                })
                .unwrap_or_default()
            }
            _ => return (404, String::new(), json!({"error": "not found"})),
        };
        (200, String::new(), out)
    }

    fn ingest(&self, path: &str, body: &[u8]) -> (u16, String, Value) {
        let mut st = lock(&self.state);
        st.posts += 1;
        if let Some(status) = self.behaviour.fail_with {
            return (status, String::new(), json!({"error": "nope"}));
        }
        if self
            .behaviour
            .throttle_every
            .is_some_and(|n| st.posts.is_multiple_of(n))
        {
            return (
                429,
                "retry-after: 0\r\n".to_string(),
                json!({"error": "slow down"}),
            );
        }
        let events: Vec<Value> = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(v)) => v,
            Ok(v) => vec![v],
            Err(_) => body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .filter_map(|l| serde_json::from_slice(l).ok())
                .collect(),
        };
        let mut ids = Vec::new();
        for v in &events {
            let id = v["id"].as_str().unwrap_or("").to_string();
            ids.push(id.clone());
            if !st.seen.insert(id.clone()) {
                continue;
            }
            st.new_events += 1;
            if self
                .behaviour
                .lose_every
                .is_some_and(|n| st.new_events.is_multiple_of(n))
            {
                continue;
            }
            let batch = if path == "/v1/sales" {
                Batch::Sales(vec![Sale {
                    id,
                    ts: v["ts"].as_i64().unwrap_or(0),
                    category: static_of(&CATEGORIES, &v["category"]),
                    product_id: v["product_id"].as_str().unwrap_or("").to_string(),
                    price: v["price"].as_f64().unwrap_or(0.0),
                    quantity: v["quantity"].as_u64().unwrap_or(0),
                }])
            } else {
                Batch::Tweets(vec![Tweet {
                    id,
                    location: static_of(&LOCATIONS, &v["location"]).to_owned(),
                    weather: static_of(&WEATHERS, &v["weather"]),
                    temperature: v["temperature"].as_f64().unwrap_or(0.0),
                    humidity: v["humidity"].as_f64().unwrap_or(0.0),
                    text: None,
                }])
            };
            st.truth.add_batch(&batch);
        }
        (
            202,
            String::new(),
            json!({"accepted": events.len(), "ids": ids}),
        )
    }
}

fn args(target: &str) -> LoadgenArgs {
    LoadgenArgs {
        target: target.to_string(),
        query: None,
        ca_file: None,
        kind: KindMix::Mixed,
        rate: Rate::PerSecond(2000.0),
        duration: 0.5,
        concurrency: 16,
        batch: 3,
        ndjson: false,
        transport: None,
        seed: 1,
        verify: true,
        json: false,
        timeout: 1.0,
    }
}

/// A correct fake that answers every 7th POST with 429 and returns ranking pages
/// of at most `page_cap` entries.
async fn start_throttled(page_cap: usize) -> (String, Arc<Fake>) {
    start(Behaviour {
        throttle_every: Some(7),
        page_cap,
        ..Behaviour::default()
    })
    .await
}

/// Runs loadgen with `a` and asserts that `--verify` passed.
async fn execute_verified(a: &LoadgenArgs) -> Report {
    let report = execute(a).await.expect("run");
    let verify = report.verify.clone().expect("verified");
    assert!(verify.ok, "{:?}", verify.differences);
    assert_eq!(report.exit_code(), EXIT_OK);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_against_a_correct_server_with_backpressure() {
    let (url, fake) = start_throttled(7).await;
    let report = execute_verified(&args(&url)).await;
    assert_eq!(report.errors, 0);
    assert!(report.retries > 0, "429s are retried");
    // 2000 events/s × 0.5 s = 1000 events, in 334 batches of 3.
    assert!((999..=1002).contains(&report.events), "{}", report.events);
    let st = lock(&fake.state);
    assert_eq!(
        st.truth.sales.count + st.truth.tweets.count,
        report.events + 4
    );
    assert!(
        st.gets > 0 && st.no_cache_gets == st.gets,
        "every GET bypasses the cache"
    );
}

/// A TCP ingest front for `fake`: every line goes through [`Fake::ingest`]
/// on its own (so a throttled line is answered `err busy` while the others
/// of its batch are stored), answered `ok <id>` or `err ...`.
async fn start_tcp(fake: Arc<Fake>) -> String {
    let addr = line_server(
        || {},
        move |line| {
            let mut v: Value = serde_json::from_str(line).unwrap_or_default();
            let path = match v.as_object_mut().and_then(|m| m.remove("kind")) {
                Some(k) if k == "sale" => "/v1/sales",
                _ => "/v1/tweets",
            };
            let (status, _, body) = fake.ingest(path, v.to_string().as_bytes());
            Some(match status {
                202 => format!("ok {}", body["ids"][0].as_str().unwrap_or("")),
                429 => "err busy: slow down".to_string(),
                _ => format!("err {}", body["error"]),
            })
        },
    )
    .await;
    format!("tcp://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_transport_verifies_through_the_query_url() {
    let (url, fake) = start_throttled(50).await;
    let target = start_tcp(fake.clone()).await;
    let mut a = args(&target);
    a.transport = Some(Transport::Tcp);
    a.query = Some(url);
    a.batch = 10;
    let report = execute_verified(&a).await;
    assert!(report.retries > 0, "busy lines are resent");
    let st = lock(&fake.state);
    assert_eq!(
        st.seen.len() as u64,
        report.events + 4,
        "nothing stored twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_accounts_for_earlier_data() {
    let (url, _fake) = start(Behaviour {
        page_cap: 5,
        ..Behaviour::default()
    })
    .await;
    let mut first = args(&url);
    first.kind = KindMix::Sales;
    first.batch = 1;
    first.ndjson = true;
    let report = execute(&first).await.expect("first run");
    assert_eq!(report.exit_code(), EXIT_OK, "{:?}", report.verify);
    // Same seed again: same data, new ids, on top of the first run's state.
    let mut second = args(&url);
    second.rate = Rate::Max;
    second.duration = 0.2;
    let report = execute(&second).await.expect("second run");
    assert_eq!(report.exit_code(), EXIT_OK, "{:?}", report.verify);
    assert!(report.events > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_lost_events() {
    let (url, _fake) = start(Behaviour {
        lose_every: Some(50),
        page_cap: 1000,
        ..Behaviour::default()
    })
    .await;
    let mut a = args(&url);
    a.timeout = 0.6;
    let report = execute(&a).await.expect("run");
    assert_eq!(report.exit_code(), EXIT_VERIFY_FAILED);
    let verify = report.verify.expect("verified");
    assert!(verify
        .differences
        .iter()
        .any(|d| d.field == "count" && d.path.ends_with("total")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_are_errors_by_status() {
    let (url, fake) = start(Behaviour {
        fail_with: Some(400),
        ..Behaviour::default()
    })
    .await;
    let mut a = args(&url);
    a.verify = false;
    a.duration = 0.2;
    let report = execute(&a).await.expect("run");
    assert_eq!(report.exit_code(), EXIT_REQUEST_FAILURES);
    assert_eq!(report.events, 0);
    assert_eq!(report.errors_by_status.get("400"), Some(&report.requests));
    assert_eq!(report.retries, 0, "a 400 is not retried");
    assert_eq!(lock(&fake.state).posts, report.requests);
    assert_eq!(report.latency_ms.p99, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_fails_without_verify_and_errors_with_it() {
    // A port nobody listens on.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let mut a = args(&url);
    assert!(execute(&a).await.is_err(), "no baseline, no verify");
    a.verify = false;
    a.duration = 0.05;
    a.timeout = 0.2;
    let report = execute(&a).await.expect("run");
    assert_eq!(report.exit_code(), EXIT_REQUEST_FAILURES);
    assert!(report.errors_by_status.contains_key("connect"));
}
