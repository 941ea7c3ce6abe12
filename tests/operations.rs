//! Operations: health, readiness, Prometheus metrics (checked with `promtool`), and
//! configuration from file, environment and flags.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::*;

#[tokio::test]
async fn healthz_and_readyz() {
    let server = TestServer::start(&[]);
    let (status, body) = server.get_plain("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.get_plain("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.is_object(), "readyz answers a JSON object: {body}");
    assert_eq!(body["status"], json!("ready"), "{body}");
}

/// Some sales of every category (plus duplicates) and tweets of every weather.
async fn traffic(server: &TestServer) -> (u64, u64, u64) {
    let sales: Vec<Value> = (0..40)
        .map(|i| {
            json!({"id": format!("s-{i}"), "category": CATEGORIES[i % 4],
                   "product_id": format!("P{}", i % 5), "price": 2.5, "quantity": 2})
        })
        .collect();
    server.send_ok("/v1/sales", &sales, Encoding::Array).await;
    server
        .send_ok("/purchase", &sales[..10], Encoding::Ndjson)
        .await;
    let tweets: Vec<Value> = (0..30)
        .map(|i| {
            json!({"id": format!("t-{i}"), "location": "Mixco", "weather": WEATHERS[i % 6],
                   "temperature": 20, "humidity": 50})
        })
        .collect();
    server
        .send_ok("/v1/tweets", &tweets, Encoding::Ndjson)
        .await;
    let bad = json!({"category": "toys", "product_id": "P", "price": 1, "quantity": 1});
    let resp = server
        .post_events("/v1/sales", &[bad], Encoding::Object)
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    server.wait_sales(40).await;
    server.wait_tweets(30).await;
    server.wait_idle().await;
    (40, 10, 30)
}

#[tokio::test]
async fn metrics_cover_the_pipeline_and_the_business() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let (sales, duplicates, tweets) = traffic(&server).await;
    // Counters are updated right after the store; give them a moment to agree.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = server.metrics().await;
        let value = |kind, name| metric_value(&text, name, &[("kind", kind)]);
        if value("sale", "flujo_events_applied_total") == Some(sales as f64)
            && value("sale", "flujo_events_duplicate_total") == Some(duplicates as f64)
            && value("tweet", "flujo_events_applied_total") == Some(tweets as f64)
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "applied/duplicate counters do not match:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let received = metric_value(
        &text,
        "flujo_events_received_total",
        &[("kind", "sale"), ("transport", "http")],
    );
    assert!(
        received >= Some((sales + duplicates) as f64),
        "flujo_events_received_total{{kind=sale,transport=http}} = {received:?}\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("flujo_ingest_duration_seconds_bucket{")),
        "ingest latency histogram missing:\n{text}"
    );
    for c in CATEGORIES {
        assert_eq!(
            metric_value(&text, "flujo_sales_total", &[("category", c)]),
            Some((sales / 4) as f64),
            "flujo_sales_total{{category={c}}}\n{text}"
        );
    }
    for w in WEATHERS {
        assert_eq!(
            metric_value(&text, "flujo_tweets_total", &[("weather", w)]),
            Some((tweets / 6) as f64),
            "flujo_tweets_total{{weather={w}}}\n{text}"
        );
    }
    // Restarts may be absent (no actor failed), but never non-zero here.
    for line in text
        .lines()
        .filter(|l| l.starts_with("flujo_actor_restarts_total"))
    {
        assert!(line.ends_with(" 0"), "unexpected restart: {line}");
    }
    // Every sample is a flujo_ metric.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            line.starts_with("flujo_"),
            "metric outside the namespace: {line}"
        );
    }
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let promtool = Command::new("promtool").arg("--version").output();
    if promtool.is_err() {
        panic!(
            "promtool is not on PATH: run scripts/test.sh (the project's test script), \
             which installs it (Debian: apt-get install prometheus)"
        );
    }
    let server = TestServer::start(&[]);
    traffic(&server).await;
    let text = server.metrics().await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the binary to completion (at most 20 s) in a fresh directory.
fn run_flujo(args: &[&str], envs: &[(&str, &str)], dir: &std::path::Path) -> Output {
    let mut child = flujo_command(dir)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flujo");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "flujo {args:?} did not exit within 20 s; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// `flujo run` with a bad configuration must exit non-zero, naming the key. Every
/// listener is on port 0 unless `envs` or `args` set its address (a flag would
/// override a bad env value).
fn assert_refused(envs: &[(&str, &str)], args: &[&str], names: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all = vec!["run"];
    for (flag, env) in [
        ("--http", "FLUJO__HTTP__ADDR"),
        ("--grpc", "FLUJO__GRPC__ADDR"),
        ("--tcp", "FLUJO__TCP__ADDR"),
    ] {
        if !envs.iter().any(|(k, _)| *k == env) {
            all.extend([flag, "127.0.0.1:0"]);
        }
    }
    all.extend_from_slice(args);
    let out = run_flujo(&all, envs, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "flujo run {args:?} with {envs:?} must fail; stderr:\n{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "it must not start listening"
    );
    assert!(
        names.iter().any(|n| stderr.contains(n)),
        "stderr must name the key as one of {names:?}:\n{stderr}"
    );
}

#[test]
fn a_bad_env_value_fails_naming_the_key() {
    assert_refused(
        &[("FLUJO__HTTP__ADDR", "nope")],
        &[],
        &["http.addr", "FLUJO__HTTP__ADDR"],
    );
    assert_refused(
        &[("FLUJO__QUERY__CACHE_TTL_MS", "soon")],
        &[],
        &["query.cache_ttl_ms", "FLUJO__QUERY__CACHE_TTL_MS"],
    );
}

#[test]
fn an_unknown_env_key_fails_naming_it() {
    assert_refused(
        &[("FLUJO__HTTP__NOPE", "1")],
        &[],
        &["http.nope", "FLUJO__HTTP__NOPE"],
    );
}

#[test]
fn unusable_values_fail_naming_the_key() {
    assert_refused(
        &[("FLUJO__PIPELINE__MAX_INFLIGHT_EVENTS", "10")],
        &[],
        &["pipeline.max_inflight_events"],
    );
    assert_refused(
        &[("FLUJO__SHUTDOWN__DEADLINE_SECS", "0")],
        &[],
        &["shutdown.deadline_secs"],
    );
    assert_refused(
        &[
            ("FLUJO__DEADLINES__REQUEST_MS", "2000"),
            ("FLUJO__DEADLINES__DURABLE_ACK_MS", "1800"),
        ],
        &[],
        &["deadlines.durable_ack_ms"],
    );
    assert_refused(
        &[
            ("FLUJO__BREAKER__FAILURE_THRESHOLD", "0"),
            ("FLUJO__BREAKER__OPEN_MS", "5"),
        ],
        &[],
        &["breaker.failure_threshold", "breaker.open_ms"],
    );
    assert_refused(&[], &["--config", "/nonexistent/flujo.toml"], &["--config"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[query]\ncache_ttl_ms = \"soon\"\n").expect("write config");
    assert_refused(
        &[],
        &["--config", file.to_str().expect("utf-8 path")],
        &["query.cache_ttl_ms", "cache_ttl_ms"],
    );
}

/// The TOML `flujo config` prints.
fn config_toml(args: &[&str], envs: &[(&str, &str)], dir: &std::path::Path) -> toml::Table {
    let mut all = vec!["config"];
    all.extend_from_slice(args);
    let out = run_flujo(&all, envs, dir);
    assert!(
        out.status.success(),
        "flujo config failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("flujo config does not print TOML ({e}):\n{text}"))
}

fn key<'a>(t: &'a toml::Table, section: &str, name: &str) -> &'a toml::Value {
    t.get(section)
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("no {section}.{name} in {t:?}"))
}

#[test]
fn config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let defaults = config_toml(&[], &[], dir.path());
    assert_eq!(
        key(&defaults, "http", "addr").as_str(),
        Some("0.0.0.0:8080")
    );
    assert_eq!(
        key(&defaults, "query", "cache_ttl_ms").as_integer(),
        Some(1000)
    );

    let env = config_toml(
        &[],
        &[
            ("FLUJO__QUERY__CACHE_TTL_MS", "1234"),
            ("FLUJO__SHUTDOWN__DEADLINE_SECS", "7"),
            ("FLUJO__HTTP__ADDR", "127.0.0.1:4444"),
        ],
        dir.path(),
    );
    assert_eq!(key(&env, "query", "cache_ttl_ms").as_integer(), Some(1234));
    assert_eq!(key(&env, "shutdown", "deadline_secs").as_integer(), Some(7));
    assert_eq!(key(&env, "http", "addr").as_str(), Some("127.0.0.1:4444"));
}

#[test]
fn file_then_env_then_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("custom.toml");
    std::fs::write(
        &file,
        "[http]\naddr = \"127.0.0.1:3333\"\nmax_batch_events = 50\n\
         [query]\ncache_ttl_ms = 4321\n[shutdown]\ndeadline_secs = 3\n",
    )
    .expect("write config");
    let path = file.to_str().expect("utf-8 path");

    let from_file = config_toml(&["--config", path], &[], dir.path());
    assert_eq!(
        key(&from_file, "query", "cache_ttl_ms").as_integer(),
        Some(4321)
    );
    assert_eq!(
        key(&from_file, "http", "max_batch_events").as_integer(),
        Some(50)
    );
    assert_eq!(
        key(&from_file, "http", "addr").as_str(),
        Some("127.0.0.1:3333")
    );

    let env = [
        ("FLUJO__QUERY__CACHE_TTL_MS", "99"),
        ("FLUJO__HTTP__ADDR", "127.0.0.1:4444"),
    ];
    let layered = config_toml(
        &["--config", path, "--http", "127.0.0.1:5555"],
        &env,
        dir.path(),
    );
    assert_eq!(
        key(&layered, "query", "cache_ttl_ms").as_integer(),
        Some(99),
        "env beats file"
    );
    assert_eq!(
        key(&layered, "shutdown", "deadline_secs").as_integer(),
        Some(3),
        "file beats default"
    );
    assert_eq!(
        key(&layered, "http", "addr").as_str(),
        Some("127.0.0.1:5555"),
        "flag beats env"
    );

    // ./flujo.toml is read when no --config is given.
    std::fs::write(
        dir.path().join("flujo.toml"),
        "[query]\ncache_ttl_ms = 77\n",
    )
    .expect("write");
    let local = config_toml(&[], &[], dir.path());
    assert_eq!(key(&local, "query", "cache_ttl_ms").as_integer(), Some(77));
}

#[tokio::test]
async fn run_uses_the_config_file_and_the_flag_beats_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("flujo.toml");
    std::fs::write(
        &file,
        "[http]\nmax_batch_events = 3\nsales_paths = [\"/api/sales\"]\n",
    )
    .expect("write config");
    // The env asks for a port the flag (always given by TestServer) overrides.
    let server = TestServer::start_with_args(
        &[("FLUJO__HTTP__ADDR", "127.0.0.1:1")],
        &["--config", file.to_str().expect("utf-8 path")],
    );
    assert_ne!(
        server.addr.port(),
        1,
        "the --http flag beats FLUJO__HTTP__ADDR"
    );

    let one = json!({"category": 1, "product_id": "P", "price": 1, "quantity": 1});
    server
        .send_ok("/api/sales", std::slice::from_ref(&one), Encoding::Object)
        .await;
    server
        .send_ok("/purchase", std::slice::from_ref(&one), Encoding::Object)
        .await;
    let resp = server
        .post_events("/v1/sales", &vec![one; 4], Encoding::Array)
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "max_batch_events = 3 from the file applies"
    );
}

#[tokio::test]
async fn configured_alias_paths_add_to_the_seeds_paths() {
    // SPEC: /purchase and /input exist "so the seeds' existing clients work unchanged;
    // further alias paths are configurable" -- configuring more must not remove them.
    let server = TestServer::start(&[
        ("FLUJO__HTTP__TWEET_PATHS", "[\"/tweet\", \"/api/tweets\"]"),
        ("FLUJO__HTTP__SALES_PATHS", "[\"/api/sales\"]"),
    ]);
    let tweet =
        json!({"municipality": "Mixco", "weather": "sunny", "temperature": 20, "humidity": 50});
    let sale = json!({"categoria": 2, "producto_id": "P", "precio": 3, "cantidad_vendida": 1});
    server
        .send_ok("/tweet", std::slice::from_ref(&tweet), Encoding::Object)
        .await;
    server
        .send_ok(
            "/api/tweets",
            std::slice::from_ref(&tweet),
            Encoding::Object,
        )
        .await;
    server
        .send_ok("/api/sales", std::slice::from_ref(&sale), Encoding::Object)
        .await;
    server.send_ok("/input", &[tweet], Encoding::Object).await;
    server.send_ok("/purchase", &[sale], Encoding::Object).await;
}
