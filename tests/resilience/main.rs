//! Broker faults against a real `flujo run` with `ack = "durable"`: the broker
//! frozen, then killed, then back. While the sink's circuit breaker is open, ingest
//! answers 503 with `Retry-After` fast (p99 under 100 ms) and `/readyz` fails at
//! once; flujo recovers by itself once the broker is back; every event answered 202
//! is counted exactly once, including those the client resent with the ids of an
//! "outcome unknown" 503.
//!
//! - Kafka: a private tansu of the test's own (the shared one on 9092 is never
//!   stopped), SIGSTOPped, SIGKILLed and started again on the same port and storage.
//! - RabbitMQ: the shared broker behind a TCP proxy of the test's own, which stops
//!   moving bytes (frozen), then drops every connection and refuses new ones
//!   (killed), then lets them through again.

mod broker;
mod client;
#[path = "../support/mod.rs"]
mod support;

use broker::{FaultProxy, Tansu};
use client::Client;
use reqwest::StatusCode;
use std::time::{Duration, Instant};
use support::*;

/// The durable-ack deadline of these tests: short, so a frozen broker fails fast.
const DURABLE_ACK_MS: &str = "1000";
/// How long a breaker stays open: long enough to measure many refusals.
const OPEN_MS: &str = "2000";
/// How long the breaker may take to open once the broker froze.
const OPEN_WITHIN: Duration = Duration::from_secs(20);
/// How long flujo may take to recover once the broker is back.
const RECOVER_WITHIN: Duration = Duration::from_secs(30);
/// Requests measured while the breaker is open.
const MEASURED: usize = 300;

/// The settings every scenario runs with (`FLUJO__…`).
fn resilience_envs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("FLUJO__DEADLINES__DURABLE_ACK_MS", DURABLE_ACK_MS),
        ("FLUJO__DEADLINES__REQUEST_MS", "5000"),
        ("FLUJO__BREAKER__FAILURE_THRESHOLD", "3"),
        ("FLUJO__BREAKER__OPEN_MS", OPEN_MS),
        ("FLUJO__BREAKER__HALF_OPEN_PROBES", "1"),
        ("FLUJO__QUERY__CACHE_TTL_MS", "0"),
    ]
}

/// What the scenario does to the broker.
trait Fault {
    /// Stops the broker answering, its connections left open.
    fn freeze(&mut self);
    /// Takes the broker away altogether: connections dropped, new ones refused.
    fn kill(&mut self);
    /// Brings the broker back.
    fn revive(&mut self);
}

impl Fault for Tansu {
    fn freeze(&mut self) {
        self.signal("STOP");
    }
    fn kill(&mut self) {
        self.kill9();
    }
    fn revive(&mut self) {
        self.spawn();
    }
}

impl Fault for FaultProxy {
    fn freeze(&mut self) {
        self.set(broker::Mode::Frozen);
    }
    fn kill(&mut self) {
        self.set(broker::Mode::Cut);
    }
    fn revive(&mut self) {
        self.set(broker::Mode::Open);
    }
}

/// `p`-quantile of `samples` (sorted in place).
fn quantile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i]
}

/// `/readyz`: its status, body and how long it took.
async fn readyz(server: &TestServer) -> (StatusCode, serde_json::Value, Duration) {
    let started = Instant::now();
    let (status, body) = status_json(server.get("/readyz").await.expect("GET /readyz")).await;
    (status, body, started.elapsed())
}

fn circuit_state(metrics: &str, sink: &str) -> Option<f64> {
    metric_value(metrics, "flujo_circuit_state", &[("sink", sink)])
}

/// The scenario: traffic, freeze, breaker open (fast 503s, `/readyz` failing at
/// once, the gauge at 2), kill, revive, recovery, then every event counted once.
async fn broker_outage(server: &TestServer, fault: &mut dyn Fault, sink: &str) {
    let log = |what: &str| eprintln!("[{sink}] {what}");
    let ready = wait_until(Duration::from_secs(30), || async {
        readyz(server).await.0 == StatusCode::OK
    })
    .await;
    assert!(ready, "flujo never got ready: {}", server.stderr());
    let metrics = server.metrics().await;
    assert_eq!(
        circuit_state(&metrics, sink),
        Some(0.0),
        "flujo_circuit_state{{sink={sink}}} exported at 0 from the start"
    );

    let mut client = Client::new(server);
    for _ in 0..10 {
        let answer = client.send_new(5).await;
        assert_eq!(answer, StatusCode::ACCEPTED, "healthy broker: 202");
    }
    log("healthy: 10 batches accepted");

    // Frozen: the first requests wait out the durable-ack deadline and come back
    // 503 with the ids ("outcome unknown"); after a few the breaker opens.
    fault.freeze();
    let frozen_at = Instant::now();
    // gRPC and TCP say so too, each with its ids (two of the failures in a row).
    // A small gRPC batch gets its ids listed; a large one (too many ids for the
    // metadata) the first stamped id, from which the client works out the others.
    client.grpc_unknown_outcome(3).await;
    client.grpc_unknown_outcome(2_000).await;
    client.tcp_unknown_outcome().await;
    log("gRPC and TCP: outcome unknown, with the ids");
    let mut opened = false;
    while frozen_at.elapsed() < OPEN_WITHIN {
        client.send_new(5).await;
        if client.last_was_circuit_open() {
            opened = true;
            break;
        }
    }
    assert!(
        opened,
        "the breaker did not open within {OPEN_WITHIN:?} of the freeze; answers: {:?}",
        client.answers()
    );
    log(&format!(
        "breaker open {:?} after the freeze; {} outcome-unknown answers so far",
        frozen_at.elapsed(),
        client.unknown_outcomes()
    ));
    assert!(
        client.unknown_outcomes() > 0,
        "requests in flight when the broker froze are answered 'outcome unknown' with their ids"
    );

    // While open: /readyz fails at once, naming the sink; the gauge says 2.
    let (status, body, took) = readyz(server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "/readyz: {body}");
    let check = body.to_string();
    assert!(
        check.contains(&format!("sink:{sink}")) && check.contains("circuit open"),
        "/readyz names the open sink: {body}"
    );
    assert!(
        took < Duration::from_millis(500),
        "/readyz took {took:?} while the breaker is open"
    );
    let metrics = server.metrics().await;
    assert_eq!(circuit_state(&metrics, sink), Some(2.0), "gauge while open");

    // Many requests while open: fast 503s with Retry-After. Half-open probes in
    // between wait out the deadline; they are not refusals and are left out.
    let mut refusals = Vec::new();
    let window = Instant::now();
    while refusals.len() < MEASURED && window.elapsed() < Duration::from_secs(60) {
        let started = Instant::now();
        client.send_new(5).await;
        if client.last_was_circuit_open() {
            refusals.push(started.elapsed());
        }
    }
    assert!(
        refusals.len() >= MEASURED,
        "only {} fast refusals in a minute",
        refusals.len()
    );
    let p99 = quantile(&mut refusals, 0.99);
    log(&format!(
        "{} refusals while open: p50 {:?}, p99 {:?}",
        refusals.len(),
        quantile(&mut refusals, 0.5),
        p99
    ));
    assert!(
        p99 < Duration::from_millis(100),
        "p99 of the 503s while open is {p99:?}"
    );

    // Killed, then back: flujo recovers by itself (no restart).
    fault.kill();
    for _ in 0..20 {
        client.send_new(5).await;
    }
    log("broker killed");
    fault.revive();
    let back_at = Instant::now();
    let mut recovered = false;
    while back_at.elapsed() < RECOVER_WITHIN {
        if client.send_new(5).await == StatusCode::ACCEPTED {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recovered,
        "no 202 within {RECOVER_WITHIN:?} of the broker's return; answers: {:?}\n{}",
        &client.answers()[client.answers().len().saturating_sub(10)..],
        server.stderr()
    );
    log(&format!(
        "recovered {:?} after the return",
        back_at.elapsed()
    ));
    let closed = wait_until(RECOVER_WITHIN, || async {
        readyz(server).await.0 == StatusCode::OK
            && circuit_state(&server.metrics().await, sink) == Some(0.0)
    })
    .await;
    assert!(closed, "/readyz and the gauge did not recover");

    // The client resends what was refused (same ids for the unknown outcomes)
    // until everything is accepted; each event is then counted exactly once.
    client.resend_all(Duration::from_secs(60)).await;
    log(&format!(
        "{} events accepted, {} of them resent with the ids of an unknown outcome",
        client.accepted_events(),
        client.resent_with_ids()
    ));
    assert!(
        client.resent_with_ids() > 0,
        "some events were resent with their ids"
    );
    let kpis = server.wait_sales(client.accepted_events() as u64).await;
    assert_eq!(
        kpis["total"]["count"].as_u64(),
        Some(client.accepted_events() as u64)
    );
    // Still exact a moment later: nothing late arrives twice.
    server.wait_idle().await;
    server.wait_sales(client.accepted_events() as u64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_frozen_then_killed_fast_503s_recovery_and_no_double_count() {
    let mut tansu = Tansu::start();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let brokers = tansu.addr().to_string();
    let (sales, tweets) = (format!("r-{id}-sales"), format!("r-{id}-tweets"));
    let mut envs = resilience_envs();
    envs.extend([
        ("FLUJO__KAFKA__BROKERS", brokers.as_str()),
        ("FLUJO__KAFKA__SALES_TOPIC", sales.as_str()),
        ("FLUJO__KAFKA__TWEETS_TOPIC", tweets.as_str()),
        ("FLUJO__KAFKA__PARTITIONS", "1"),
    ]);
    let server = TestServer::start_with_args(&envs, &["--bus", "kafka", "--ack", "durable"]);
    tokio::time::timeout(
        Duration::from_secs(240),
        broker_outage(&server, &mut tansu, "kafka"),
    )
    .await
    .expect("the scenario ends within 4 minutes");
}

/// The shared RabbitMQ behind a fault proxy of the test's own, with queues of the
/// test's own (deleted when the cleanup drops): the proxy, the cleanup, and the
/// settings that point flujo at them.
async fn proxied_rabbitmq(prefix: &str) -> (FaultProxy, QueueCleanup, Vec<(&'static str, String)>) {
    require_rabbitmq().await;
    let proxy = FaultProxy::start(amqp_broker_addr(&amqp_url()).await).await;
    let url = proxy.url(&amqp_url());
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (sales, tweets) = (
        format!("{prefix}-{id}-sales"),
        format!("{prefix}-{id}-tweets"),
    );
    let cleanup = QueueCleanup {
        url: amqp_url(),
        queues: vec![sales.clone(), tweets.clone()],
    };
    let envs = vec![
        ("FLUJO__RABBITMQ__URL", url),
        ("FLUJO__RABBITMQ__SALES_QUEUE", sales),
        ("FLUJO__RABBITMQ__TWEETS_QUEUE", tweets),
    ];
    (proxy, cleanup, envs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_frozen_then_cut_fast_503s_recovery_and_no_double_count() {
    let (mut proxy, _cleanup, rabbit) = proxied_rabbitmq("r").await;
    let mut envs = resilience_envs();
    envs.extend(rabbit.iter().map(|(k, v)| (*k, v.as_str())));
    let server = TestServer::start_with_args(&envs, &["--bus", "rabbitmq", "--ack", "durable"]);
    tokio::time::timeout(
        Duration::from_secs(240),
        broker_outage(&server, &mut proxy, "rabbitmq"),
    )
    .await
    .expect("the scenario ends within 4 minutes");
}

/// A request not answered within `deadlines.request_ms` (here a body that stalls
/// half-way) gets a JSON 503 naming the deadline; the endless KPI stream is exempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_deadline_answers_a_stalled_request_but_not_the_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(&[
        ("FLUJO__DEADLINES__REQUEST_MS", "1000"),
        ("FLUJO__DEADLINES__DURABLE_ACK_MS", "500"),
        ("FLUJO__QUERY__STREAM_INTERVAL_MS", "200"),
    ]);
    let mut raw = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let head = "POST /v1/sales HTTP/1.1\r\nHost: flujo\r\nContent-Type: application/json\r\n\
                Content-Length: 200\r\n\r\n[{\"category\":";
    raw.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer))
        .await
        .expect("answered within 10 s")
        .expect("read");
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("no answer within the request deadline of 1000 ms"),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );

    // The stream stays open past the deadline and keeps sending snapshots.
    let mut stream = server
        .get("/v1/stream/kpis")
        .await
        .expect("GET /v1/stream/kpis");
    assert_eq!(stream.status(), StatusCode::OK);
    let opened = Instant::now();
    let mut late_events = 0;
    while opened.elapsed() < Duration::from_millis(2500) {
        let chunk = tokio::time::timeout(Duration::from_secs(2), stream.chunk())
            .await
            .expect("the stream sends within 2 s")
            .expect("read the stream")
            .expect("the stream is not over");
        if opened.elapsed() > Duration::from_millis(1200)
            && String::from_utf8_lossy(&chunk).contains("event: kpis")
        {
            late_events += 1;
        }
    }
    assert!(late_events > 0, "no snapshot after the request deadline");
}

/// A receiver-only process whose router is not up yet: the forward sends the batch
/// again, with backoff and the same ids, until the router answers within the
/// durable-ack deadline, so the client gets 202 instead of an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forward_to_a_router_that_is_not_up_yet_is_retried_with_the_same_ids() {
    require_kafka(Duration::from_secs(10)).await;
    let router_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let router_grpc = format!("127.0.0.1:{router_port}");
    let router_url = format!("http://{router_grpc}");
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (sales, tweets) = (format!("r-{id}-sales"), format!("r-{id}-tweets"));
    let brokers = kafka_brokers();
    let envs: Vec<(String, String)> = [
        ("FLUJO__KAFKA__BROKERS", brokers.as_str()),
        ("FLUJO__KAFKA__SALES_TOPIC", sales.as_str()),
        ("FLUJO__KAFKA__TWEETS_TOPIC", tweets.as_str()),
        ("FLUJO__KAFKA__PARTITIONS", "1"),
        ("FLUJO__DEADLINES__DURABLE_ACK_MS", "20000"),
        ("FLUJO__DEADLINES__REQUEST_MS", "25000"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    let env_refs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let receiver = TestServer::start_with_args(
        &env_refs,
        &[
            "--role",
            "receiver",
            "--bus",
            "kafka",
            "--ack",
            "durable",
            "--router-url",
            &router_url,
        ],
    );
    let body = r#"[{"category":"home","product_id":"F1","price":2.5,"quantity":1}]"#;
    let post = receiver
        .client
        .post(receiver.url("/v1/sales"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send();
    // The router comes up while the request waits.
    let router = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(500));
        let env_refs: Vec<(&str, &str)> =
            envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        TestServer::start_bare(
            &env_refs,
            &[
                "--role",
                "router",
                "--bus",
                "kafka",
                "--grpc",
                &router_grpc,
                "--http",
                "127.0.0.1:0",
            ],
        )
    });
    let (answer, router) = tokio::join!(post, router);
    let _router = router.expect("the router starts");
    let (status, answer) = status_json(answer.expect("POST answers")).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the forward retried until the router was up: {answer}\n{}",
        receiver.stderr()
    );
    assert_eq!(answer["accepted"], 1);
}

/// Time spent before publishing (a slow upload) or a client's own shorter
/// `grpc-timeout` never turns an unknown outcome into a bare cut: with the broker
/// frozen, the pipeline answers just before the request's deadline, with the ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_short_by_its_deadline_still_gets_its_ids() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut proxy, _cleanup, rabbit) = proxied_rabbitmq("d").await;
    let mut envs: Vec<(&str, &str)> = rabbit.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.extend([
        ("FLUJO__DEADLINES__REQUEST_MS", "1500"),
        ("FLUJO__DEADLINES__DURABLE_ACK_MS", "1000"),
        ("FLUJO__BREAKER__FAILURE_THRESHOLD", "1000"),
    ]);
    let server = TestServer::start_with_args(&envs, &["--bus", "rabbitmq", "--ack", "durable"]);
    let ready = wait_until(Duration::from_secs(30), || async {
        readyz(&server).await.0 == StatusCode::OK
    })
    .await;
    assert!(ready, "flujo never got ready: {}", server.stderr());
    proxy.freeze();

    // HTTP: the body takes 800 ms to arrive, so the durable-ack deadline (1 s after
    // publishing began) would pass after the request deadline (1.5 s).
    let mut raw = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let body = r#"[{"category":"home","product_id":"S1","price":1.0,"quantity":1},{"id":"mine-1","category":"home","product_id":"S2","price":1.0,"quantity":1}]"#;
    let (first, rest) = body.split_at(20);
    let head = format!(
        "POST /v1/sales HTTP/1.1\r\nHost: flujo\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    );
    let started = Instant::now();
    raw.write_all(head.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(800)).await;
    raw.write_all(rest.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer))
        .await
        .expect("answered within 10 s")
        .expect("read");
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let json: serde_json::Value =
        serde_json::from_str(answer.split_once("\r\n\r\n").map_or("", |(_, b)| b))
            .unwrap_or_else(|e| panic!("a JSON body ({e}): {answer}"));
    let ids = json["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("ids: {json}"));
    assert_eq!(ids.len(), 2, "{json}");
    assert_eq!(ids[1], "mine-1", "{json}");
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}, past the request deadline"
    );

    // gRPC: the client's own 700 ms deadline is shorter than the durable-ack
    // deadline; flujo answers before it, with the ids.
    let mut grpc = flujo_proto::v1::ingest_client::IngestClient::connect(server.grpc_uri())
        .await
        .expect("connect to the gRPC port");
    let mut request = tonic::Request::new(flujo_proto::v1::SaleBatch {
        sales: vec![flujo_proto::v1::Sale {
            category: 3, // CATEGORY_HOME
            product_id: "G1".into(),
            price: 2.0,
            quantity: 1,
            ..Default::default()
        }],
    });
    request.set_timeout(Duration::from_millis(700));
    let status = grpc
        .publish_sales(request)
        .await
        .expect_err("a frozen broker cannot confirm");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("flujo-outcome")
            .and_then(|v| v.to_str().ok()),
        Some("unknown"),
        "{status:?}"
    );
    assert!(
        status.metadata().get("flujo-id-base").is_some(),
        "{status:?}"
    );
    proxy.revive();
}
