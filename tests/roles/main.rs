//! Fault tests of flujo run as one role per process, with real brokers in between
//! (SPEC "Actors and roles", "On the bus", "Store"): consumers killed with SIGKILL
//! while events flow, Valkey killed and restarted, routers killed behind a receiver,
//! and an independent Kafka client reading what flujo put on the bus.
//!
//! Services (`scripts/services.sh up`): Kafka at `FLUJO_TEST_KAFKA_BROKERS`
//! (default `127.0.0.1:9092`), Valkey at `FLUJO_TEST_VALKEY_URL` (default
//! `redis://127.0.0.1:6380`), RabbitMQ at `FLUJO_TEST_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). A test whose service does not answer
//! fails (never skips). `valkey_restart_mid_stream` runs a `valkey-server` of its own
//! (`FLUJO_TEST_VALKEY_SERVER`, the `PATH`, or the one under `.services/venv`).
//!
//! Every test uses its own random topics, consumer group, queues and key prefix, so
//! the tests can run concurrently and against services that hold older data; queues
//! and keys are deleted at the end (best effort; topics are left, as in the other
//! Kafka tests), and every child process is killed when its handle is dropped, also
//! when the test fails.
//!
//! The ground truth is computed from the events the receiver answered 202 (the
//! client sets every id, retries 429/503 with the same ids); every KPI of the query
//! API must match it exactly (counts equal, floats to 1e-9 relative): no event lost,
//! none counted twice. The KPIs compared: sales total and per category (with each
//! category's monitored product, made well defined by sending one sale per category
//! alone first), tweets total and per weather, product rankings (global and per
//! category) and the location ranking, every page, and each monitored product's price
//! stream (on Kafka in the exact order of its partition, read by a plain client).
//!
//! - `kafka_three_roles_survive_consumer_sigkill`, `kafka_static_member_…`,
//!   `rabbitmq_…`: router, consumer and receiver as three processes; while a client
//!   sends, the consumer is SIGKILLed (just after it resumed from a SIGSTOP with a
//!   backlog), a second one is started at once and SIGKILLed a moment later, a
//!   third one started at once must end with every KPI exact. On Kafka the id
//!   window is off: the positions stored with the KPIs alone keep them exact.
//! - `kafka_every_role_sigkilled_and_restarted_at_once`, `rabbitmq_…`: while a
//!   client sends, the router, then the receiver, then the consumer is SIGKILLed
//!   and started again at once on the same address; the client retries refused
//!   requests and lost answers with the same ids; every KPI must end exact.
//! - `valkey_restart_mid_stream`: `--role all` on Kafka with a Valkey of its own
//!   (AOF, fsync always) SIGKILLed mid-stream and restarted on the same port: the
//!   process stays up, `/readyz` names the store while it is down and is 200 after.
//! - `receiver_durable_202_means_on_the_bus`: receiver and router only, the router
//!   SIGKILLed and restarted mid-stream, then both SIGKILLed: every sale answered 202
//!   is on the topic, and a consumer started only then applies every event.
//! - `kafka_three_consumers_on_a_valkey_cluster_survive_a_kill`: three consumers
//!   (`K/3`) on six partitions and a three-master Valkey Cluster of the test's own;
//!   one consumer SIGKILLed mid-stream and started again at once; every KPI exact on
//!   every consumer, every consumer applied events, every node holds keys.
//! - `kafka_consumers_scale_up_and_down_on_a_valkey_cluster`: while a client
//!   sends, one consumer is replaced by three (`K/3`), then the three are SIGKILLed
//!   and replaced by two (`K/2`); every KPI exact on both last consumers.
//! - `kafka_topic_holds_every_202d_sale_as_canonical_json_keyed_by_product`: a plain
//!   rdkafka client finds every sale answered 202, in every input form, as canonical
//!   JSON keyed by its product, in send order within the product, over several
//!   partitions.

mod checks;
mod consumer_sigkill;
mod every_role_sigkill;
mod on_the_bus;
mod scale_out;
#[path = "../support/mod.rs"]
mod support;
mod valkey_restart;
mod workload;

#[allow(unused_imports)]
use checks::*;
#[allow(unused_imports)]
use workload::*;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::*;
use tokio::sync::watch;

/// Upper bound of a whole test (the Kafka SIGKILL test takes about 100 s, the others
/// well under a minute, on an idle machine).
const TEST_TIMEOUT: Duration = Duration::from_secs(170);
/// How long the consumer may take to apply everything once the client finished.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one batch may keep being refused with 429/503 before the test fails.
const SEND_DEADLINE: Duration = Duration::from_secs(60);
/// How long a process may take to be ready (a loaded broker answers slowly).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Events per HTTP request.
const BATCH: usize = 50;
/// Client tasks sending at the same time.
const CLIENT_TASKS: usize = 4;

const LOCATIONS: [&str; 24] = [
    "Guatemala",
    "Mixco",
    "Villa Nueva",
    "Quetzaltenango",
    "Escuintla",
    "Cobán",
    "Antigua Guatemala",
    "Huehuetenango",
    "Chimaltenango",
    "Petén",
    "San José",
    "Santa Tecla",
    "León",
    "Tegucigalpa",
    "San Pedro Sula",
    "Managua",
    "Cartago",
    "Heredia",
    "Alajuela",
    "Puerto Barrios",
    "Zacapa",
    "Jalapa",
    "Sololá",
    "Retalhuleu",
];

// ---------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------

/// Topic, queue, group and key-prefix names of one test, unique per run.
struct Names {
    sales_topic: String,
    tweets_topic: String,
    group: String,
    sales_queue: String,
    tweets_queue: String,
    prefix: String,
}

impl Names {
    fn new(label: &str) -> Names {
        let id = uuid::Uuid::now_v7().simple().to_string();
        Names {
            sales_topic: format!("roles-{label}-{id}-sales"),
            tweets_topic: format!("roles-{label}-{id}-tweets"),
            group: format!("roles-{label}-{id}"),
            sales_queue: format!("roles-{label}-{id}-sales"),
            tweets_queue: format!("roles-{label}-{id}-tweets"),
            prefix: format!("roles-{label}-{id}:"),
        }
    }

    /// The environment every process of the test gets.
    fn envs(&self) -> Vec<(String, String)> {
        let var = |section: &str, key: &str, value: &String| {
            (format!("FLUJO__{section}__{key}"), value.clone())
        };
        vec![
            var("KAFKA", "SALES_TOPIC", &self.sales_topic),
            var("KAFKA", "TWEETS_TOPIC", &self.tweets_topic),
            var("KAFKA", "GROUP_ID", &self.group),
            var("RABBITMQ", "SALES_QUEUE", &self.sales_queue),
            var("RABBITMQ", "TWEETS_QUEUE", &self.tweets_queue),
            var("VALKEY", "PREFIX", &self.prefix),
        ]
    }
}

/// Deletes what a test left on the shared services when dropped (also when the test
/// failed): Valkey keys under its prefix and its RabbitMQ queues.
/// Declare it before the processes, so it runs after they were killed.
struct Cleanup {
    _keys: Option<KeysGuard>,
    _queues: Option<QueueCleanup>,
}

impl Cleanup {
    fn new(names: &Names, keys: bool, queues: bool) -> Cleanup {
        Cleanup {
            _keys: keys.then(|| KeysGuard {
                url: valkey_url(),
                prefix: names.prefix.clone(),
            }),
            _queues: queues.then(|| QueueCleanup {
                url: amqp_url(),
                queues: vec![names.sales_queue.clone(), names.tweets_queue.clone()],
            }),
        }
    }
}

// ---------------------------------------------------------------------------------
// flujo processes
// ---------------------------------------------------------------------------------

/// The bus between router and consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bus {
    Kafka,
    Rabbitmq,
}

fn bus_args(bus: Bus) -> Vec<String> {
    match bus {
        Bus::Kafka => vec![
            "--bus".into(),
            "kafka".into(),
            "--kafka".into(),
            kafka_brokers(),
        ],
        Bus::Rabbitmq => vec![
            "--bus".into(),
            "rabbitmq".into(),
            "--amqp".into(),
            amqp_url(),
        ],
    }
}

fn router_args(bus: Bus) -> Vec<String> {
    let mut args = vec!["--role".to_owned(), "router".to_owned()];
    args.extend(bus_args(bus));
    args
}

fn consumer_args(bus: Bus, store: &str) -> Vec<String> {
    let mut args = vec!["--role".to_owned(), "consumer".to_owned()];
    args.extend(bus_args(bus));
    args.extend(["--store".to_owned(), store.to_owned()]);
    args
}

/// A receiver-only process forwarding to `router`, with the default ack mode.
fn receiver_args(router: &TestServer) -> Vec<String> {
    vec![
        "--role".into(),
        "receiver".into(),
        "--router-url".into(),
        format!("grpc://{}", router.listener("grpc")),
    ]
}

/// Starts `flujo run` off the async runtime (start-up blocks until the listening
/// line). With `bare`, `args` name every listener address themselves.
async fn spawn_flujo(envs: &[(String, String)], args: Vec<String>, bare: bool) -> TestServer {
    let envs = envs.to_vec();
    tokio::task::spawn_blocking(move || {
        let e: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        if bare {
            TestServer::start_bare(&e, &a)
        } else {
            TestServer::start_with_args(&e, &a)
        }
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

async fn start(envs: &[(String, String)], args: Vec<String>) -> TestServer {
    spawn_flujo(envs, args, false).await
}

/// Prints a progress line of the test `label`, with the time since this was called.
fn progress(label: &str) -> impl Fn(&str) + '_ {
    let t0 = Instant::now();
    move |what| println!("{label} {:>7.2?}: {what}", t0.elapsed())
}

/// The last `n` lines of a process's stderr, for failure messages.
fn tail(server: &TestServer, n: usize) -> String {
    let all = server.stderr();
    let lines: Vec<&str> = all.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fails, with the process's exit status and the tail of its stderr, when it has
/// exited (a failed dependency must never kill the process).
async fn assert_running(server: &mut TestServer, when: &str) {
    if let Some(status) = server.wait_exit(Duration::ZERO).await {
        panic!(
            "flujo exited {when} ({status}); stderr (tail):\n{}",
            tail(server, 40)
        );
    }
}

/// Sends `kill -SIG` to the process (`STOP`, `CONT`).
fn signal(server: &TestServer, sig: &str) {
    let status = Command::new("kill")
        .args([format!("-{sig}"), server.pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {}: {status}", server.pid);
}

/// `GET /readyz`: status and body.
async fn readyz(server: &TestServer) -> (StatusCode, Value) {
    let resp = server.get("/readyz").await;
    status_json(resp.unwrap_or_else(|e| panic!("GET /readyz: {e}"))).await
}

/// Waits until `/readyz` answers 200, or fails naming what is not ready.
async fn wait_ready(server: &TestServer, what: &str, within: Duration) {
    let last = Mutex::new(Value::Null);
    let ready = wait_until(within, || async {
        let (status, body) = readyz(server).await;
        *last.lock().expect("last") = body;
        status == StatusCode::OK
    })
    .await;
    assert!(
        ready,
        "{what} not ready within {within:?}: {}",
        last.lock().expect("last")
    );
}

/// Sales and tweets counted by the query API (bypassing the read cache); `None`
/// while the API does not answer 200.
async fn counts(server: &TestServer) -> Option<(u64, u64)> {
    let (s, sales) = server.get_fresh("/v1/kpis/sales").await;
    let (t, tweets) = server.get_fresh("/v1/kpis/tweets").await;
    if s != StatusCode::OK || t != StatusCode::OK {
        return None;
    }
    Some((
        sales["total"]["count"].as_u64().expect("sales count"),
        tweets["total"]["count"].as_u64().expect("tweets count"),
    ))
}

/// Waits (at most 30 s) until `server` applied more sales than the first ones (sent
/// alone, one per category) and some tweets.
async fn wait_applying(server: &TestServer, firsts: u64, who: &str) {
    let applying = wait_until(Duration::from_secs(30), || async {
        counts(server)
            .await
            .is_some_and(|(s, t)| s > firsts && t > 0)
    })
    .await;
    assert!(
        applying,
        "{who} applied nothing within 30 s: {:?}\n{}",
        counts(server).await,
        tail(server, 30)
    );
}

/// Like [`counts`], but a process that stopped answering fails the test with its
/// exit status and the tail of its stderr.
async fn counts_of_running(server: &mut TestServer) -> Option<(u64, u64)> {
    let probe = server
        .client
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    if probe.is_err() {
        let exited = server.wait_exit(Duration::from_secs(1)).await;
        panic!(
            "the consumer stopped answering ({}); exit: {exited:?}; stderr (tail):\n{}",
            probe.err().map(|e| e.to_string()).unwrap_or_default(),
            tail(server, 40)
        );
    }
    counts(server).await
}

/// `flujo_events_duplicate_total` and `flujo_events_replayed_total` by kind: events
/// skipped by id and by position.
async fn duplicates(server: &TestServer) -> Vec<String> {
    server
        .metrics()
        .await
        .lines()
        .filter(|l| {
            l.starts_with("flujo_events_duplicate_total")
                || l.starts_with("flujo_events_replayed_total")
        })
        .map(str::to_owned)
        .collect()
}

/// Waits until the consumer counts exactly `sales` sales and `tweets` tweets,
/// failing at once when it counts more (an event counted twice).
async fn wait_applied(
    consumer: &mut TestServer,
    sales: u64,
    tweets: u64,
    within: Duration,
    context: &dyn Fn() -> String,
) {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        if let Some((s, t)) = counts_of_running(consumer).await {
            assert!(
                s <= sales && t <= tweets,
                "the consumer counts {s} sales and {t} tweets, more than the {sales} and \
                 {tweets} answered 202: an event was counted twice"
            );
            if (s, t) == (sales, tweets) {
                return;
            }
            last = Some((s, t));
        }
        assert!(
            Instant::now() < deadline,
            "the consumer did not apply every event answered 202 within {within:?}: \
             counts {last:?}, want ({sales}, {tweets}); {}\nconsumer stderr (tail):\n{}",
            context(),
            tail(consumer, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------
// valkey-server of the test's own
// ---------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------
// Workload and client
// ---------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------
// Checking every KPI
// ---------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------
// A plain Kafka reader, independent of flujo's source
// ---------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------
