//! A real `flujo run` process per test, listening on 127.0.0.1 port 0, and the HTTP
//! helpers the tests talk to it with.

use super::assertions::metric_value;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::bodies::{encode, Encoding};

/// The flags that put every listener of `flujo run` on a free loopback port.
pub const LOOPBACK_PORTS: [&str; 6] = [
    "--http",
    "127.0.0.1:0",
    "--grpc",
    "127.0.0.1:0",
    "--tcp",
    "127.0.0.1:0",
];
/// How long the server may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the pipeline may take to apply what it accepted.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound of any single HTTP request of the tests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// `http`, or `https` once [`TestServer::over_tls`].
    scheme: &'static str,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// A client for talking to a local server: bounded in time, never through a proxy.
pub fn http_client() -> reqwest::Client {
    client_builder().build().expect("build the HTTP client")
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
}

/// Like [`http_client`], trusting only the CA certificates of `ca` (a PEM file).
pub fn https_client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("read the CA file");
    let mut builder = client_builder().tls_built_in_root_certs(false);
    for cert in reqwest::Certificate::from_pem_bundle(&pem).expect("PEM certificates") {
        builder = builder.add_root_certificate(cert);
    }
    builder.build().expect("build the HTTPS client")
}

impl TestServer {
    /// Starts `flujo run` with every listener on 127.0.0.1 port 0 and these environment
    /// variables.
    pub fn start(envs: &[(&str, &str)]) -> TestServer {
        TestServer::start_with_args(envs, &[])
    }

    /// A server for tests of the order of events: no read cache, and mailboxes large
    /// enough that no event is refused as backpressure (a refused event would have to
    /// be resent, out of order by the client's own doing).
    pub fn start_for_order() -> TestServer {
        TestServer::start(&[
            ("FLUJO__QUERY__CACHE_TTL_MS", "0"),
            ("FLUJO__PIPELINE__MAILBOX_CAPACITY", "100000"),
        ])
    }

    /// Like [`TestServer::start`], with extra arguments after `run`.
    pub fn start_with_args(envs: &[(&str, &str)], args: &[&str]) -> TestServer {
        let mut all = LOOPBACK_PORTS.to_vec();
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
            scheme: "http",
            stderr,
            _dir: dir,
        }
    }

    /// Talks to the HTTP listener over TLS from now on (`https://`), trusting only
    /// the CA certificates of `ca`.
    pub fn over_tls(mut self, ca: &Path) -> TestServer {
        self.client = https_client(ca);
        self.scheme = "https";
        self
    }

    /// `http://ADDR{path}` (`https://` after [`TestServer::over_tls`]).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
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

    /// GET `path` as a plain client would (the read cache may answer): the response,
    /// or the error of a server that does not answer.
    pub async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.client.get(self.url(path)).send().await
    }

    /// GET `path` as a plain client would (the read cache may answer).
    pub async fn get_plain(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.get(path).await;
        status_json(resp.unwrap_or_else(|e| panic!("GET {path}: {e}"))).await
    }

    /// GET `path` (fresh) and insist on a 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get_fresh(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let resp = self.get("/metrics").await.expect("GET /metrics");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.text().await.expect("metrics body")
    }

    /// Asserts the process still serves `/healthz`.
    pub async fn assert_alive(&self) {
        let resp = self.get("/healthz").await;
        let resp = resp.expect("GET /healthz: the server must still be up");
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
