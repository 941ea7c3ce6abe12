//! Shared helpers of the integration tests: a real `flujo run` process per test, HTTP
//! helpers, and an independent ground truth for the KPIs written from SPEC.md's
//! "Aggregates" section (plain f64 sums and hash maps, nothing from the server code).

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the server may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the pipeline may take to apply what it accepted.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound of any single HTTP request of the tests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The canonical categories, in code order (1–4).
pub const CATEGORIES: [&str; 4] = ["electronics", "clothing", "home", "beauty"];
/// The seeds' Spanish category names, in code order.
pub const SPANISH_CATEGORIES: [&str; 4] = ["Electronica", "Ropa", "Hogar", "Belleza"];
/// The weathers a tweet may report.
pub const WEATHERS: [&str; 6] = ["sunny", "cloudy", "rainy", "foggy", "snowy", "stormy"];

/// The `flujo` binary under test.
pub fn flujo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_flujo")
}

/// A `Command` for the binary that does not inherit configuration from the test's
/// environment (`FLUJO_*`, `RUST_LOG`) and runs in `dir`, so no stray `flujo.toml` or
/// variable changes what is tested.
pub fn flujo_command(dir: &Path) -> Command {
    let mut cmd = Command::new(flujo_bin());
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("FLUJO") || name == "RUST_LOG" {
            cmd.env_remove(&key);
        }
    }
    cmd.current_dir(dir);
    cmd
}

/// A `flujo run` process bound to 127.0.0.1 port 0, killed on drop.
pub struct TestServer {
    child: Child,
    /// Process id, for signals.
    pub pid: u32,
    /// Where the HTTP interface listens.
    pub addr: SocketAddr,
    /// Every address of the listening line, by name (`http`, `grpc`, `tcp`).
    pub listening: BTreeMap<String, SocketAddr>,
    /// A client with a request timeout and no proxy.
    pub client: reqwest::Client,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// A client for talking to a local server: bounded in time, never through a proxy.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("build the HTTP client")
}

impl TestServer {
    /// Starts `flujo run` with every listener on 127.0.0.1 port 0 and these environment
    /// variables.
    pub fn start(envs: &[(&str, &str)]) -> TestServer {
        TestServer::start_with_args(envs, &[])
    }

    /// Like [`TestServer::start`], with extra arguments after `run`.
    pub fn start_with_args(envs: &[(&str, &str)], args: &[&str]) -> TestServer {
        let mut all = vec![
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--tcp",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        TestServer::start_bare(envs, &all)
    }

    /// `flujo run` with exactly `args` (no listener flags added: they choose every
    /// address, e.g. to bind a port a killed process held) and these environment
    /// variables.
    pub fn start_bare(envs: &[(&str, &str)], args: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary working directory");
        let mut cmd = flujo_command(dir.path());
        cmd.arg("run")
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the flujo binary");
        let pid = child.id();

        // Both pipes are drained for the whole life of the process so it never
        // blocks on a full pipe.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err_pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { break };
                lock(&sink).push(line);
            }
        });
        let out_pipe = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let listening = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("flujo listening ") {
                        break parse_listening(rest);
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "flujo did not print its listening line within {START_TIMEOUT:?} \
                         (exit: {status:?}); stderr:\n{}",
                        lock(&stderr).join("\n")
                    );
                }
            }
        };
        let addr = *listening
            .get("http")
            .unwrap_or_else(|| panic!("no http= in the listening line: {listening:?}"));
        TestServer {
            child,
            pid,
            addr,
            listening,
            client: http_client(),
            stderr,
            _dir: dir,
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The address of the listening line named `name` (`http`, `grpc`, `tcp`).
    pub fn listener(&self, name: &str) -> SocketAddr {
        *self
            .listening
            .get(name)
            .unwrap_or_else(|| panic!("no {name}= in the listening line: {:?}", self.listening))
    }

    /// Where the gRPC interface listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listener("grpc")
    }

    /// Where the TCP line interface listens.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.listener("tcp")
    }

    /// `http://GRPC_ADDR`, the URI a tonic channel connects to.
    pub fn grpc_uri(&self) -> String {
        format!("http://{}", self.grpc_addr())
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        lock(&self.stderr).join("\n")
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => return None,
            }
        }
    }

    /// Sends SIGKILL (`kill -9`: no shutdown, no drain) and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as an orchestrator would.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed: {status}", self.pid);
    }

    /// POSTs `body` with `content_type` (none when `None`).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POSTs events in `encoding`; one object requires exactly one event.
    pub async fn post_events(
        &self,
        path: &str,
        events: &[Value],
        encoding: Encoding,
    ) -> reqwest::Response {
        let (ct, body) = encode(events, encoding);
        self.post_raw(path, Some(ct), body).await
    }

    /// POSTs events and insists on a 202, returning the ids it answered.
    pub async fn send_ok(&self, path: &str, events: &[Value], encoding: Encoding) -> Vec<String> {
        let resp = self.post_events(path, events, encoding).await;
        let (status, body) = status_json(resp).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "POST {path} ({encoding:?}, {} events): {body}",
            events.len()
        );
        assert_eq!(body["accepted"], json!(events.len()), "{body}");
        let ids: Vec<String> = body["ids"]
            .as_array()
            .unwrap_or_else(|| panic!("`ids` is not an array: {body}"))
            .iter()
            .map(|v| v.as_str().expect("ids are strings").to_owned())
            .collect();
        assert_eq!(ids.len(), events.len(), "{body}");
        for (event, id) in events.iter().zip(&ids) {
            if let Some(sent) = event.get("id").and_then(Value::as_str) {
                assert_eq!(id, sent, "a client id must be echoed");
            }
        }
        ids
    }

    /// GET `path`, bypassing the read cache (`Cache-Control: no-cache`).
    pub async fn get_fresh(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(self.url(path))
            .header(reqwest::header::CACHE_CONTROL, "no-cache")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        status_json(resp).await
    }

    /// GET `path` as a plain client would (the read cache may answer).
    pub async fn get_plain(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        status_json(resp).await
    }

    /// GET `path` (fresh) and insist on a 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get_fresh(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.text().await.expect("metrics body")
    }

    /// Asserts the process still serves `/healthz`.
    pub async fn assert_alive(&self) {
        let resp = self
            .client
            .get(self.url("/healthz"))
            .send()
            .await
            .expect("GET /healthz: the server must still be up");
        assert_eq!(resp.status(), StatusCode::OK, "/healthz");
    }

    /// Waits until `/v1/kpis/sales` counts exactly `n` sales (never more) and returns it.
    pub async fn wait_sales(&self, n: u64) -> Value {
        self.wait_count("/v1/kpis/sales", &["total", "count"], n)
            .await
    }

    /// Waits until `/v1/kpis/tweets` counts exactly `n` tweets (never more) and returns it.
    pub async fn wait_tweets(&self, n: u64) -> Value {
        self.wait_count("/v1/kpis/tweets", &["total", "count"], n)
            .await
    }

    async fn wait_count(&self, path: &str, pointer: &[&str], n: u64) -> Value {
        let deadline = Instant::now() + APPLY_TIMEOUT;
        loop {
            let body = self.get_ok(path).await;
            let count = pointer
                .iter()
                .fold(&body, |v, k| &v[*k])
                .as_u64()
                .unwrap_or_else(|| panic!("{path}: no count in {body}"));
            assert!(count <= n, "{path}: counts {count}, more than the {n} sent");
            if count == n {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: count never reached {n} within {APPLY_TIMEOUT:?}; last answer {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the pipeline holds no admitted-but-unapplied event (`flujo_inflight_events 0`).
    pub async fn wait_idle(&self) {
        let ok = wait_until(APPLY_TIMEOUT, || async {
            metric_value(&self.metrics().await, "flujo_inflight_events", &[]) == Some(0.0)
        })
        .await;
        assert!(ok, "flujo_inflight_events never went back to 0");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http=ADDR grpc=ADDR ...` → addresses by name.
fn parse_listening(rest: &str) -> BTreeMap<String, SocketAddr> {
    rest.split_whitespace()
        .map(|pair| {
            let (name, addr) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("bad listening line part {pair:?}"));
            let addr = addr
                .parse::<SocketAddr>()
                .unwrap_or_else(|e| panic!("bad address in listening line {pair:?}: {e}"));
            (name.to_owned(), addr)
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls `check` every 50 ms until it holds or `within` passed.
pub async fn wait_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Status and JSON body of a response (panics when the body is not JSON).
pub async fn status_json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("read the response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// How a batch is put in a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON object (exactly one event).
    Object,
    /// A JSON array.
    Array,
    /// NDJSON, `\n` line ends.
    Ndjson,
    /// NDJSON with CRLF line ends, blank lines and a trailing newline.
    NdjsonCrlf,
}

/// Content-Type and body for `events` in `encoding`.
pub fn encode(events: &[Value], encoding: Encoding) -> (&'static str, String) {
    match encoding {
        Encoding::Object => {
            assert_eq!(events.len(), 1, "an object body holds one event");
            ("application/json", events[0].to_string())
        }
        Encoding::Array => ("application/json", Value::from(events.to_vec()).to_string()),
        Encoding::Ndjson => (
            "application/x-ndjson",
            events
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Encoding::NdjsonCrlf => {
            let mut body = String::from("\r\n");
            for (i, e) in events.iter().enumerate() {
                body.push_str(&e.to_string());
                body.push_str("\r\n");
                if i % 3 == 0 {
                    body.push_str("\r\n   \r\n");
                }
            }
            ("application/x-ndjson", body)
        }
    }
}

/// A value of one Prometheus sample, `labels` matched exactly (order-insensitive).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let mut found: Vec<(String, String)> = label_text
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            let mut want: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            found.sort();
            want.sort();
            (found == want).then(|| value.parse().ok()).flatten()
        })
}

// ---------------------------------------------------------------------------
// Float comparison
// ---------------------------------------------------------------------------

/// True when `a` and `b` agree to 1e-9 relative (SPEC: "Floating sums must match a
/// reference computed in f64 to 1e-9 relative").
pub fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Asserts a JSON number is `expected` to 1e-9 relative, or `null` when `None`.
pub fn assert_num(what: &str, actual: &Value, expected: Option<f64>) {
    match expected {
        None => assert!(actual.is_null(), "{what}: expected null, got {actual}"),
        Some(e) => {
            let a = actual
                .as_f64()
                .unwrap_or_else(|| panic!("{what}: expected {e}, got {actual}"));
            assert!(close(a, e), "{what}: expected {e}, got {a}");
        }
    }
}

/// Asserts a JSON integer equals `expected`.
pub fn assert_int(what: &str, actual: &Value, expected: u64) {
    assert_eq!(actual.as_u64(), Some(expected), "{what}: got {actual}");
}

// ---------------------------------------------------------------------------
// Events and their JSON forms
// ---------------------------------------------------------------------------

/// A sale as the tests know it (canonical category name).
#[derive(Debug, Clone, PartialEq)]
pub struct Sale {
    /// Client id.
    pub id: String,
    /// Canonical category name.
    pub category: &'static str,
    /// Product id.
    pub product_id: String,
    /// Unit price.
    pub price: f64,
    /// Units sold.
    pub quantity: u64,
}

/// A tweet as the tests know it (canonical weather name).
#[derive(Debug, Clone, PartialEq)]
pub struct Tweet {
    /// Client id.
    pub id: String,
    /// City or municipality.
    pub location: String,
    /// Canonical weather name.
    pub weather: &'static str,
    /// °C.
    pub temperature: f64,
    /// %.
    pub humidity: f64,
}

/// The ways clients spell a sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleForm {
    /// `category` (English name), `product_id`, `price`, `quantity`.
    English,
    /// The seeds' `categoria` 1–4, `producto_id`, `precio`, `cantidad_vendida`.
    SeedCodes,
    /// English fields, Spanish category names (Electronica, Ropa, Hogar, Belleza).
    SpanishNames,
    /// Spanish fields with Spanish category names, upper-cased.
    SeedNames,
}

/// Every sale form.
pub const SALE_FORMS: [SaleForm; 4] = [
    SaleForm::English,
    SaleForm::SeedCodes,
    SaleForm::SpanishNames,
    SaleForm::SeedNames,
];

fn category_index(category: &str) -> usize {
    CATEGORIES
        .iter()
        .position(|c| *c == category)
        .unwrap_or_else(|| panic!("not a category: {category}"))
}

/// The JSON a client in `form` sends for `s` (with its id).
pub fn sale_json(s: &Sale, form: SaleForm) -> Value {
    let i = category_index(s.category);
    match form {
        SaleForm::English => json!({
            "id": s.id, "category": s.category, "product_id": s.product_id,
            "price": s.price, "quantity": s.quantity,
        }),
        SaleForm::SeedCodes => json!({
            "id": s.id, "categoria": i + 1, "producto_id": s.product_id,
            "precio": s.price, "cantidad_vendida": s.quantity,
        }),
        SaleForm::SpanishNames => json!({
            "id": s.id, "category": SPANISH_CATEGORIES[i], "product_id": s.product_id,
            "price": s.price, "quantity": s.quantity,
        }),
        SaleForm::SeedNames => json!({
            "id": s.id, "categoria": SPANISH_CATEGORIES[i].to_uppercase(),
            "producto_id": s.product_id, "precio": s.price, "cantidad_vendida": s.quantity,
        }),
    }
}

/// The JSON of `t`: canonical, or the seeds' form (`municipality`, capitalised
/// weather; integer temperature and humidity when they are whole numbers).
pub fn tweet_json(t: &Tweet, seed_form: bool) -> Value {
    if seed_form {
        let num = |x: f64| {
            if x.fract() == 0.0 {
                json!(x as i64)
            } else {
                json!(x)
            }
        };
        let mut weather = t.weather.to_owned();
        weather[..1].make_ascii_uppercase();
        json!({
            "id": t.id, "municipality": t.location, "weather": weather,
            "temperature": num(t.temperature), "humidity": num(t.humidity),
            "text": format!("{} en {}", weather, t.location),
        })
    } else {
        json!({
            "id": t.id, "location": t.location, "weather": t.weather,
            "temperature": t.temperature, "humidity": t.humidity,
        })
    }
}

/// A random price with cents, 0.01–2,000.00.
pub fn random_price(rng: &mut StdRng) -> f64 {
    rng.random_range(1..=200_000) as f64 / 100.0
}

/// A random sale of `product_id` in `category`.
pub fn random_sale(rng: &mut StdRng, id: String, category: &'static str, product: &str) -> Sale {
    Sale {
        id,
        category,
        product_id: product.to_owned(),
        price: random_price(rng),
        quantity: rng.random_range(1..=25),
    }
}

/// A random tweet from one of `locations`; whole temperature and humidity when `whole`.
pub fn random_tweet(rng: &mut StdRng, id: String, locations: &[&str], whole: bool) -> Tweet {
    let (temperature, humidity) = if whole {
        (
            rng.random_range(-20..=45) as f64,
            rng.random_range(0..=100) as f64,
        )
    } else {
        (
            rng.random_range(-900..=600) as f64 / 10.0,
            rng.random_range(0..=1000) as f64 / 10.0,
        )
    };
    Tweet {
        id,
        location: (*locations.choose(rng).expect("locations")).to_owned(),
        weather: WEATHERS.choose(rng).expect("weathers"),
        temperature,
        humidity,
    }
}

// ---------------------------------------------------------------------------
// Ground truth (SPEC "Aggregates")
// ---------------------------------------------------------------------------

/// Sales aggregates of one scope.
#[derive(Debug, Clone, Default)]
pub struct SaleStats {
    /// Number of sales.
    pub count: u64,
    /// Σ quantity.
    pub quantity_sum: u64,
    /// Σ unit price.
    pub price_sum: f64,
    /// Σ price × quantity.
    pub revenue: f64,
    /// Lowest price.
    pub price_min: Option<f64>,
    /// Highest price.
    pub price_max: Option<f64>,
}

impl SaleStats {
    fn add(&mut self, s: &Sale) {
        self.count += 1;
        self.quantity_sum += s.quantity;
        self.price_sum += s.price;
        self.revenue += s.price * s.quantity as f64;
        self.price_min = Some(self.price_min.map_or(s.price, |m| m.min(s.price)));
        self.price_max = Some(self.price_max.map_or(s.price, |m| m.max(s.price)));
    }

    /// Asserts a K object of `/v1/kpis/sales` matches.
    pub fn assert_matches(&self, what: &str, k: &Value) {
        let avg = |sum: f64| (self.count > 0).then(|| sum / self.count as f64);
        assert_int(&format!("{what}.count"), &k["count"], self.count);
        assert_int(
            &format!("{what}.quantity_sum"),
            &k["quantity_sum"],
            self.quantity_sum,
        );
        assert_num(
            &format!("{what}.price_sum"),
            &k["price_sum"],
            Some(self.price_sum),
        );
        assert_num(
            &format!("{what}.revenue"),
            &k["revenue"],
            Some(self.revenue),
        );
        assert_num(
            &format!("{what}.avg_quantity"),
            &k["avg_quantity"],
            avg(self.quantity_sum as f64),
        );
        assert_num(
            &format!("{what}.avg_price"),
            &k["avg_price"],
            avg(self.price_sum),
        );
        assert_num(
            &format!("{what}.price_min"),
            &k["price_min"],
            self.price_min,
        );
        assert_num(
            &format!("{what}.price_max"),
            &k["price_max"],
            self.price_max,
        );
    }
}

/// Ground truth of every sales aggregate, fed in the order the server applies.
#[derive(Debug, Default)]
pub struct SalesTruth {
    seen: HashSet<String>,
    /// All sales.
    pub total: SaleStats,
    /// Per canonical category.
    pub by_category: BTreeMap<&'static str, SaleStats>,
    /// Per category: the first product seen and its prices in that category.
    pub monitored: HashMap<&'static str, (String, Vec<f64>)>,
    quantity: HashMap<String, u64>,
    quantity_by_category: HashMap<&'static str, HashMap<String, u64>>,
}

impl SalesTruth {
    /// Applies `s` unless its id was already applied; true when it counted.
    pub fn apply(&mut self, s: &Sale) -> bool {
        if !self.seen.insert(s.id.clone()) {
            return false;
        }
        self.total.add(s);
        self.by_category.entry(s.category).or_default().add(s);
        *self.quantity.entry(s.product_id.clone()).or_default() += s.quantity;
        *self
            .quantity_by_category
            .entry(s.category)
            .or_default()
            .entry(s.product_id.clone())
            .or_default() += s.quantity;
        let (product, prices) = self
            .monitored
            .entry(s.category)
            .or_insert_with(|| (s.product_id.clone(), Vec::new()));
        if *product == s.product_id {
            prices.push(s.price);
        }
        true
    }

    /// Products by quantity descending, ties by product id descending.
    pub fn ranking(&self, category: Option<&str>) -> Vec<(String, u64)> {
        let empty = HashMap::new();
        let source = match category {
            None => &self.quantity,
            Some(c) => self.quantity_by_category.get(c).unwrap_or(&empty),
        };
        let mut items: Vec<(String, u64)> = source.iter().map(|(p, q)| (p.clone(), *q)).collect();
        items.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        items
    }

    /// The monitored product of `category` and its newest `limit` prices, newest last.
    pub fn monitored_prices(&self, category: &str, limit: usize) -> (Option<String>, Vec<f64>) {
        match self.monitored.get(category) {
            None => (None, Vec::new()),
            Some((p, prices)) => {
                let kept = prices.len().min(1000).min(limit);
                (Some(p.clone()), prices[prices.len() - kept..].to_vec())
            }
        }
    }

    /// Asserts the whole `/v1/kpis/sales` answer matches.
    pub fn assert_kpis(&self, kpis: &Value) {
        self.total.assert_matches("total", &kpis["total"]);
        let categories = kpis["categories"]
            .as_object()
            .unwrap_or_else(|| panic!("no categories object: {kpis}"));
        let mut names: Vec<&str> = categories.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut want = CATEGORIES.to_vec();
        want.sort_unstable();
        assert_eq!(names, want, "every category is present");
        for c in CATEGORIES {
            let k = &categories[c];
            self.by_category
                .get(c)
                .cloned()
                .unwrap_or_default()
                .assert_matches(c, k);
            let monitored = self.monitored.get(c).map(|(p, _)| p.as_str());
            assert_eq!(
                k["monitored_product"].as_str(),
                monitored,
                "{c}.monitored_product: {k}"
            );
        }
    }
}

/// Tweet aggregates of one scope.
#[derive(Debug, Clone, Default)]
pub struct TweetStats {
    /// Number of tweets.
    pub count: u64,
    /// Σ temperature.
    pub temperature_sum: f64,
    /// Σ humidity.
    pub humidity_sum: f64,
    /// Lowest temperature.
    pub temperature_min: Option<f64>,
    /// Highest temperature.
    pub temperature_max: Option<f64>,
}

impl TweetStats {
    fn add(&mut self, t: &Tweet) {
        self.count += 1;
        self.temperature_sum += t.temperature;
        self.humidity_sum += t.humidity;
        self.temperature_min = Some(
            self.temperature_min
                .map_or(t.temperature, |m| m.min(t.temperature)),
        );
        self.temperature_max = Some(
            self.temperature_max
                .map_or(t.temperature, |m| m.max(t.temperature)),
        );
    }

    /// Asserts an object with count, averages and min/max matches.
    pub fn assert_matches(&self, what: &str, k: &Value) {
        let avg = |sum: f64| (self.count > 0).then(|| sum / self.count as f64);
        assert_int(&format!("{what}.count"), &k["count"], self.count);
        assert_num(
            &format!("{what}.avg_temperature"),
            &k["avg_temperature"],
            avg(self.temperature_sum),
        );
        assert_num(
            &format!("{what}.avg_humidity"),
            &k["avg_humidity"],
            avg(self.humidity_sum),
        );
        assert_num(
            &format!("{what}.temperature_min"),
            &k["temperature_min"],
            self.temperature_min,
        );
        assert_num(
            &format!("{what}.temperature_max"),
            &k["temperature_max"],
            self.temperature_max,
        );
    }
}

/// Ground truth of every tweet aggregate.
#[derive(Debug, Default)]
pub struct TweetsTruth {
    seen: HashSet<String>,
    /// All tweets.
    pub total: TweetStats,
    /// Count per canonical weather.
    pub by_weather: BTreeMap<&'static str, u64>,
    /// Per location.
    pub by_location: HashMap<String, TweetStats>,
}

impl TweetsTruth {
    /// Applies `t` unless its id was already applied; true when it counted.
    pub fn apply(&mut self, t: &Tweet) -> bool {
        if !self.seen.insert(t.id.clone()) {
            return false;
        }
        self.total.add(t);
        *self.by_weather.entry(t.weather).or_default() += 1;
        self.by_location
            .entry(t.location.clone())
            .or_default()
            .add(t);
        true
    }

    /// Locations by count descending, ties by name descending.
    pub fn ranking(&self) -> Vec<(String, TweetStats)> {
        let mut items: Vec<(String, TweetStats)> = self
            .by_location
            .iter()
            .map(|(l, s)| (l.clone(), s.clone()))
            .collect();
        items.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| b.0.cmp(&a.0)));
        items
    }

    /// Asserts the whole `/v1/kpis/tweets` answer matches.
    pub fn assert_kpis(&self, kpis: &Value) {
        self.total.assert_matches("total", &kpis["total"]);
        let weather = kpis["weather"]
            .as_object()
            .unwrap_or_else(|| panic!("no weather object: {kpis}"));
        for w in WEATHERS {
            assert_int(
                &format!("weather.{w}"),
                &weather
                    .get(w)
                    .cloned()
                    .unwrap_or_else(|| panic!("weather.{w} missing: {kpis}")),
                self.by_weather.get(w).copied().unwrap_or(0),
            );
        }
        assert_eq!(weather.len(), WEATHERS.len(), "only known weathers: {kpis}");
    }
}

// ---------------------------------------------------------------------------
// TCP line client and bounded child processes
// ---------------------------------------------------------------------------

/// Upper bound of waiting for one answer line over TCP.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of the newline-delimited TCP interface over a raw `TcpStream`.
pub struct LineClient {
    reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl LineClient {
    /// Connects to `addr` (bounded in time).
    pub async fn connect(addr: SocketAddr) -> LineClient {
        let stream =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .unwrap_or_else(|_| panic!("connecting to tcp://{addr} timed out"))
                .unwrap_or_else(|e| panic!("connect to tcp://{addr}: {e}"));
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        LineClient {
            reader: tokio::io::BufReader::new(read),
            writer: write,
        }
    }

    /// Writes `bytes` as they are.
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        tokio::time::timeout(LINE_TIMEOUT, self.writer.write_all(bytes))
            .await
            .expect("writing to the TCP interface timed out")
            .expect("write to the TCP interface");
    }

    /// Writes `line` and a `\n`.
    pub async fn send(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.write_raw(&bytes).await;
    }

    /// Closes the writing half (the server sees end of input).
    pub async fn shutdown_write(&mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.writer.shutdown().await;
    }

    /// The next answer line without its `\n`, or `None` at end of stream. Panics when
    /// none comes within [`LINE_TIMEOUT`] or the line does not end with exactly `\n`.
    pub async fn try_read_line(&mut self) -> Option<String> {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        let n = tokio::time::timeout(LINE_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("no answer line within {LINE_TIMEOUT:?}"))
            .expect("read an answer line");
        if n == 0 {
            return None;
        }
        let text = line
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("answer line without its newline: {line:?}"));
        assert!(!text.contains('\r'), "an answer line holds a CR: {line:?}");
        Some(text.to_owned())
    }

    /// The next answer line; panics at end of stream.
    pub async fn read_line(&mut self) -> String {
        self.try_read_line()
            .await
            .expect("the server closed the connection instead of answering")
    }

    /// Writes `bytes` while reading `n` answer lines at the same time (so neither
    /// side waits on a full socket buffer), and returns the answers.
    pub async fn pipeline(&mut self, bytes: &[u8], n: usize) -> Vec<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let (reader, writer) = (&mut self.reader, &mut self.writer);
        let write = async {
            writer
                .write_all(bytes)
                .await
                .expect("write to the TCP interface");
        };
        let read = async {
            let mut answers = Vec::with_capacity(n);
            for i in 0..n {
                let mut line = String::new();
                let got = reader
                    .read_line(&mut line)
                    .await
                    .expect("read an answer line");
                assert!(got > 0, "the server closed after {i} of {n} answers");
                let text = line
                    .strip_suffix('\n')
                    .unwrap_or_else(|| panic!("answer line without its newline: {line:?}"));
                assert!(!text.contains('\r'), "an answer line holds a CR: {line:?}");
                answers.push(text.to_owned());
            }
            answers
        };
        let within = LINE_TIMEOUT * 2;
        tokio::time::timeout(within, async { tokio::join!(write, read).1 })
            .await
            .unwrap_or_else(|_| panic!("{n} pipelined answers did not come within {within:?}"))
    }

    /// Sends `line` and returns its answer.
    pub async fn request(&mut self, line: &str) -> String {
        self.send(line).await;
        self.read_line().await
    }
}

/// Runs `cmd` to completion with piped output, killing it (and failing) after `within`.
pub fn output_within(mut cmd: Command, within: Duration) -> std::process::Output {
    use std::io::Read;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + within;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out.join().unwrap_or_default();
                let stderr = err.join().unwrap_or_default();
                panic!(
                    "{cmd:?} did not finish within {within:?}; stdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                );
            }
        }
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Asserts a JSON array of numbers is exactly `want`, in order; on a difference,
/// names the first position that differs and shows the neighbourhood.
pub fn assert_same_order(what: &str, got: &Value, want: &[f64]) {
    let got: Vec<f64> = got
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not an array: {got}"))
        .iter()
        .map(|v| {
            v.as_f64()
                .unwrap_or_else(|| panic!("{what}: not a number: {v}"))
        })
        .collect();
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let window = |v: &[f64]| v[first.saturating_sub(2)..(first + 6).min(v.len())].to_vec();
    panic!(
        "{what}: {} values (want {}), first difference at position {first}: \
         got …{:?}…, want …{:?}…",
        got.len(),
        want.len(),
        window(&got),
        window(want)
    );
}

/// Asserts a product ranking page holds exactly the `(product_id, quantity)` items of
/// `want`, by quantity descending, and its `total`. SPEC does not order ties, so
/// items of equal quantity may come in any order.
pub fn assert_product_ranking(page: &Value, want: &[(String, u64)], what: &str) {
    let items = page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no items: {page}"));
    assert_eq!(page["total"], json!(want.len()), "{what}: {page}");
    let quantity = |v: &Value| {
        v["quantity"]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: no quantity in {v}"))
    };
    assert!(
        items.windows(2).all(|w| quantity(&w[0]) >= quantity(&w[1])),
        "{what}: not by quantity descending: {page}"
    );
    let mut got: Vec<(String, u64)> = items
        .iter()
        .map(|v| {
            let id = v["product_id"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no product_id in {v}"));
            (id.to_owned(), quantity(v))
        })
        .collect();
    let mut want = want.to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{what}");
}
