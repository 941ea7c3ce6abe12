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
//! - `kafka_three_roles_survive_consumer_sigkill`, `rabbitmq_…`: router, consumer and
//!   receiver as three processes; while a client sends, the consumer is SIGKILLed
//!   (just after it resumed from a SIGSTOP with a backlog), a second one is started
//!   and SIGKILLed a moment later, a third one must end with every KPI exact.
//! - `valkey_restart_mid_stream`: `--role all` on Kafka with a Valkey of its own
//!   (AOF, fsync always) SIGKILLed mid-stream and restarted on the same port: the
//!   process stays up, `/readyz` names the store while it is down and is 200 after.
//! - `receiver_durable_202_means_on_the_bus`: receiver and router only, the router
//!   SIGKILLed and restarted mid-stream, then both SIGKILLed: every sale answered 202
//!   is on the topic, and a consumer started only then applies every event.
//! - `kafka_topic_holds_every_202d_sale_as_canonical_json_keyed_by_category`: a plain
//!   rdkafka client finds every sale answered 202, in every input form, as canonical
//!   JSON keyed by its category, in send order within the category.

mod common;

use common::{
    close, encode, http_client, random_sale, random_tweet, sale_json, status_json, tweet_json,
    wait_until, Encoding, Sale, SaleForm, SalesTruth, TestServer, Tweet, TweetStats, TweetsTruth,
    CATEGORIES, SALE_FORMS,
};
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
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

const HINT: &str = "start the test services with `scripts/services.sh up`";

/// Upper bound of a whole test (the Kafka SIGKILL test takes about 100 s, the others
/// well under a minute, on an idle machine).
const TEST_TIMEOUT: Duration = Duration::from_secs(170);
/// How long the consumer may take to apply everything once the client finished
/// (a consumer group that lost members waits for their session timeout).
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

fn kafka_brokers() -> String {
    std::env::var("FLUJO_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn valkey_url() -> String {
    std::env::var("FLUJO_TEST_VALKEY_URL").unwrap_or_else(|_| "redis://127.0.0.1:6380".into())
}

fn amqp_url() -> String {
    std::env::var("FLUJO_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The `--store` flag's form of a Redis URL: `valkey://HOST:PORT`.
fn store_flag(url: &str) -> String {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("valkey://"))
        .unwrap_or(url);
    format!("valkey://{rest}")
}

/// Fails (never skips) when no Kafka broker answers.
async fn require_kafka() {
    let brokers = kafka_brokers();
    let probe = brokers.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &probe)
            .create()
            .map_err(|e| e.to_string())?;
        client
            .fetch_metadata(None, Duration::from_secs(15))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .expect("Kafka probe task");
    if let Err(e) = answer {
        panic!(
            "no Kafka broker answers at {brokers} ({e}); {HINT} \
             (or point FLUJO_TEST_KAFKA_BROKERS at one)"
        );
    }
}

fn redis_connection(url: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))
}

/// Fails (never skips) when Valkey does not answer PING.
async fn require_valkey() {
    let url = valkey_url();
    let probe = url.clone();
    let pong = tokio::task::spawn_blocking(move || {
        redis_connection(&probe).and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
    })
    .await
    .expect("Valkey probe task");
    if let Err(e) = pong {
        panic!("Valkey at {url} is not reachable ({e}); {HINT} (or set FLUJO_TEST_VALKEY_URL)");
    }
}

/// Fails (never skips) when RabbitMQ does not accept a connection.
async fn require_rabbitmq() {
    let url = amqp_url();
    let connect = lapin::Connection::connect(&url, lapin::ConnectionProperties::default());
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(connection)) => {
            let _ = connection.close(200, "OK".into()).await;
        }
        Ok(Err(e)) => panic!(
            "RabbitMQ is unreachable at {} ({e}); {HINT} (or set FLUJO_TEST_AMQP_URL)",
            flujo::components::mask_url_password(&url)
        ),
        Err(_) => panic!(
            "RabbitMQ at {} did not answer within 10 s; {HINT} (or set FLUJO_TEST_AMQP_URL)",
            flujo::components::mask_url_password(&url)
        ),
    }
}

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
        [
            ("FLUJO__KAFKA__SALES_TOPIC", &self.sales_topic),
            ("FLUJO__KAFKA__TWEETS_TOPIC", &self.tweets_topic),
            ("FLUJO__KAFKA__GROUP_ID", &self.group),
            ("FLUJO__RABBITMQ__SALES_QUEUE", &self.sales_queue),
            ("FLUJO__RABBITMQ__TWEETS_QUEUE", &self.tweets_queue),
            ("FLUJO__VALKEY__PREFIX", &self.prefix),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }
}

/// Deletes what a test left on the shared services when dropped (also when the test
/// failed): Valkey keys under its prefix and its RabbitMQ queues.
/// Declare it before the processes, so it runs after they were killed.
#[derive(Default)]
struct Cleanup {
    keys: Option<(String, String)>,
    queues: Option<(String, Vec<String>)>,
}

impl Cleanup {
    fn new(names: &Names, keys: bool, queues: bool) -> Cleanup {
        Cleanup {
            keys: keys.then(|| (valkey_url(), names.prefix.clone())),
            queues: queues.then(|| {
                (
                    amqp_url(),
                    vec![names.sales_queue.clone(), names.tweets_queue.clone()],
                )
            }),
        }
    }
}

fn delete_keys(url: &str, prefix: &str) -> redis::RedisResult<()> {
    let mut con = redis_connection(url)?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)?;
        if !keys.is_empty() {
            redis::cmd("UNLINK").arg(&keys).query::<()>(&mut con)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some((url, prefix)) = self.keys.take() {
            let _ = delete_keys(&url, &prefix);
        }
        let Some((url, queues)) = self.queues.take() else {
            return;
        };
        // A runtime of its own: Drop cannot await, and may run while panicking.
        let deleting = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let connect =
                    lapin::Connection::connect(&url, lapin::ConnectionProperties::default());
                let Ok(Ok(connection)) =
                    tokio::time::timeout(Duration::from_secs(10), connect).await
                else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    for queue in queues {
                        let delete = channel.queue_delete(
                            queue.as_str().into(),
                            lapin::options::QueueDeleteOptions::default(),
                        );
                        let _ = tokio::time::timeout(Duration::from_secs(5), delete).await;
                    }
                    let _ = channel.close(200, "OK".into()).await;
                }
                let _ = connection.close(200, "OK".into()).await;
            });
        });
        let _ = deleting.join();
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
    let resp = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /readyz: {e}"));
    status_json(resp).await
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

/// `flujo_events_duplicate_total` by kind: redelivered events the dedup ignored.
async fn duplicates(server: &TestServer) -> Vec<String> {
    server
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("flujo_events_duplicate_total"))
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

fn valkey_server_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("FLUJO_TEST_VALKEY_SERVER") {
        return path.into();
    }
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("valkey-server"))
            .find(|p| p.is_file())
    }) {
        return path;
    }
    let services = std::env::var_os("FLUJO_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".services"));
    find_file(&services.join("venv"), "valkey-server", 8).unwrap_or_else(|| {
        panic!(
            "valkey-server not found (FLUJO_TEST_VALKEY_SERVER, PATH, {}): {HINT}, \
             which installs it",
            services.display()
        )
    })
}

fn find_file(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let kind = entry.file_type().ok()?;
        if kind.is_file() && entry.file_name() == name {
            return Some(path);
        }
        if kind.is_dir() {
            subdirs.push(path);
        }
    }
    if depth == 0 {
        return None;
    }
    subdirs.iter().find_map(|d| find_file(d, name, depth - 1))
}

/// A `valkey-server` child with AOF (`appendfsync always`) in a temporary directory,
/// on a fixed port across restarts; killed when dropped.
struct OwnValkey {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnValkey {
    fn start() -> OwnValkey {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = OwnValkey {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temporary directory"),
        };
        server.spawn();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and directory; waits for PONG.
    fn spawn(&mut self) {
        let child = Command::new(valkey_server_bin())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn valkey-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let pong = redis_connection(&self.url())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.as_deref() == Ok("PONG") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "own valkey-server on port {} did not start: {pong:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown, no final AOF rewrite.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnValkey {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------------------------
// Workload and client
// ---------------------------------------------------------------------------------

/// The events of one HTTP request.
#[derive(Debug, Clone)]
enum Payload {
    Sales(Vec<Sale>, SaleForm),
    Tweets(Vec<Tweet>, bool),
}

/// One request of the workload, sent once the client's gate reached `phase`.
#[derive(Debug, Clone)]
struct Req {
    payload: Payload,
    /// The JSON of each event as the client sends it.
    bodies: Vec<Value>,
    phase: usize,
    encoding: Encoding,
}

impl Req {
    fn new(payload: Payload, encoding: Encoding) -> Req {
        let bodies = match &payload {
            Payload::Sales(v, form) => v.iter().map(|s| sale_json(s, *form)).collect(),
            Payload::Tweets(v, seed) => v.iter().map(|t| tweet_json(t, *seed)).collect(),
        };
        Req {
            payload,
            bodies,
            phase: 0,
            encoding,
        }
    }

    fn path(&self) -> &'static str {
        match self.payload {
            Payload::Sales(..) => "/v1/sales",
            Payload::Tweets(..) => "/v1/tweets",
        }
    }

    fn ids(&self) -> Vec<&str> {
        match &self.payload {
            Payload::Sales(v, _) => v.iter().map(|s| s.id.as_str()).collect(),
            Payload::Tweets(v, _) => v.iter().map(|t| t.id.as_str()).collect(),
        }
    }
}

/// What a test sends: one sale per category first (alone, each answered 202 before
/// anything else is sent, so the monitored product is well defined), then requests
/// of `BATCH` events in phases.
struct Workload {
    firsts: Vec<Sale>,
    reqs: Vec<Req>,
}

impl Workload {
    /// `sales` sales and `tweets` tweets in requests of `BATCH`, shuffled, split into
    /// phases by the cumulative fractions `cuts` (e.g. `[0.3, 0.65]` = three phases).
    fn new(label: &str, sales: usize, tweets: usize, cuts: &[f64]) -> Workload {
        let seed: u64 = rand::rng().random();
        println!("{label}: workload seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let firsts: Vec<Sale> = CATEGORIES
            .iter()
            .map(|c| random_sale(&mut rng, format!("{tag}-first-{c}"), c, &monitored(c)))
            .collect();
        let mut all_sales = Vec::with_capacity(sales);
        for i in 0..sales {
            let ci = rng.random_range(0..CATEGORIES.len());
            let c = CATEGORIES[ci];
            let product = match rng.random_range(0..10) {
                0 => monitored(c),
                1..=3 => format!("SHARED-{}", rng.random_range(0..6)),
                _ => format!("{}-{:02}", &c[..3].to_uppercase(), rng.random_range(0..15)),
            };
            all_sales.push(random_sale(&mut rng, format!("{tag}-s{i:05}"), c, &product));
        }
        // A third of the tweets in the seeds' form (`municipality`, capitalised
        // weather, whole numbers), in requests of their own.
        let (mut seed_tweets, mut plain_tweets) = (Vec::new(), Vec::new());
        for i in 0..tweets {
            let seed_form = i.is_multiple_of(3);
            let t = random_tweet(&mut rng, format!("{tag}-t{i:05}"), &LOCATIONS, seed_form);
            if seed_form {
                seed_tweets.push(t);
            } else {
                plain_tweets.push(t);
            }
        }
        let encoding = |i: usize| {
            if i.is_multiple_of(2) {
                Encoding::Array
            } else {
                Encoding::Ndjson
            }
        };
        let mut reqs = Vec::new();
        for (i, chunk) in all_sales.chunks(BATCH).enumerate() {
            let form = SALE_FORMS[i % SALE_FORMS.len()];
            reqs.push(Req::new(Payload::Sales(chunk.to_vec(), form), encoding(i)));
        }
        for (seed, group) in [(true, seed_tweets), (false, plain_tweets)] {
            for (i, chunk) in group.chunks(BATCH).enumerate() {
                reqs.push(Req::new(
                    Payload::Tweets(chunk.to_vec(), seed),
                    encoding(i + 1),
                ));
            }
        }
        reqs.shuffle(&mut rng);
        let n = reqs.len();
        for (i, req) in reqs.iter_mut().enumerate() {
            req.phase = cuts
                .iter()
                .filter(|&&cut| i as f64 >= cut * n as f64)
                .count();
        }
        Workload { firsts, reqs }
    }

    fn empty() -> Workload {
        Workload {
            firsts: Vec::new(),
            reqs: Vec::new(),
        }
    }

    /// Ids of the sales answered 202: the first ones and those of accepted requests.
    fn accepted_sale_ids(&self, flow: &Flow) -> HashSet<String> {
        let mut ids: HashSet<String> = self.firsts.iter().map(|s| s.id.clone()).collect();
        for &i in flow.accepted.lock().expect("flow").iter() {
            if let Payload::Sales(v, _) = &self.reqs[i].payload {
                ids.extend(v.iter().map(|s| s.id.clone()));
            }
        }
        ids
    }

    /// Requests in each phase.
    fn per_phase(&self) -> Vec<usize> {
        let phases = self.reqs.iter().map(|r| r.phase).max().unwrap_or(0) + 1;
        let mut n = vec![0; phases];
        for r in &self.reqs {
            n[r.phase] += 1;
        }
        n
    }
}

/// The monitored product of category `c` (the first product sent in it).
fn monitored(c: &str) -> String {
    format!("MON-{c}")
}

/// Shared state of a running client: the phase gate and its progress.
struct Flow {
    gate: watch::Sender<usize>,
    /// Requests answered 202, per phase.
    done: Vec<AtomicUsize>,
    /// Requests per phase.
    total: Vec<usize>,
    /// 429/503 answers (each retried with the same ids).
    refused: AtomicUsize,
    /// Set while a dependency of the receiver is known to be down.
    down: AtomicBool,
    /// Requests sent while `down` and answered 202 before it was cleared.
    accepted_while_down: Mutex<Vec<usize>>,
    /// Indices of the requests answered 202, in answer order.
    accepted: Mutex<Vec<usize>>,
}

impl Flow {
    fn new(work: &Workload) -> Arc<Flow> {
        let total = work.per_phase();
        Arc::new(Flow {
            gate: watch::channel(0).0,
            done: total.iter().map(|_| AtomicUsize::new(0)).collect(),
            total,
            refused: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            accepted_while_down: Mutex::new(Vec::new()),
            accepted: Mutex::new(Vec::new()),
        })
    }

    fn open(&self, phase: usize) {
        self.gate.send_replace(phase);
    }

    fn done(&self, phase: usize) -> usize {
        self.done[phase].load(Ordering::SeqCst)
    }

    /// Waits until at least `fraction` of `phase`'s requests were answered 202.
    async fn reached(&self, phase: usize, fraction: f64, within: Duration) {
        let want = ((self.total[phase] as f64 * fraction).ceil() as usize).min(self.total[phase]);
        let ok = wait_until(within, || async { self.done(phase) >= want }).await;
        assert!(
            ok,
            "the client got {} of {want} answers of phase {phase} within {within:?}",
            self.done(phase)
        );
    }
}

/// POSTs `req` until it is answered 202, retrying 429/503 with the same ids.
async fn send_until_accepted(http: &reqwest::Client, base: &str, req: &Req, flow: &Flow, i: usize) {
    let (content_type, body) = encode(&req.bodies, req.encoding);
    let ids = req.ids();
    let deadline = Instant::now() + SEND_DEADLINE;
    let mut pause = Duration::from_millis(50);
    loop {
        let down_before = flow.down.load(Ordering::SeqCst);
        let resp = http
            .post(format!("{base}{}", req.path()))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {}: {e}", req.path()));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match status {
            StatusCode::ACCEPTED => {
                let answer: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("202 body is not JSON ({e}): {text}"));
                assert_eq!(answer["accepted"], json!(ids.len()), "{text}");
                assert_eq!(answer["ids"], json!(ids), "client ids must be echoed");
                if down_before && flow.down.load(Ordering::SeqCst) {
                    flow.accepted_while_down.lock().expect("flow").push(i);
                }
                return;
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                flow.refused.fetch_add(1, Ordering::SeqCst);
                assert!(
                    Instant::now() < deadline,
                    "POST {} refused for {SEND_DEADLINE:?}; last answer {status}: {text}",
                    req.path()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(400));
            }
            _ => panic!("POST {}: unexpected {status}: {text}", req.path()),
        }
    }
}

/// Sends every first sale alone, each after the previous one was answered 202.
async fn send_firsts(receiver: &TestServer, work: &Workload) {
    for s in &work.firsts {
        let req = Req::new(
            Payload::Sales(vec![s.clone()], SaleForm::English),
            Encoding::Object,
        );
        let flow = Flow::new(&Workload::empty());
        let base = format!("http://{}", receiver.addr);
        send_until_accepted(&receiver.client, &base, &req, &flow, 0).await;
    }
}

/// Sends the workload's requests with `CLIENT_TASKS` tasks; a request of phase `p`
/// waits until the gate is at `p` or beyond.
fn spawn_client(
    receiver: &TestServer,
    work: Arc<Workload>,
    flow: Arc<Flow>,
) -> tokio::task::JoinHandle<()> {
    let base = format!("http://{}", receiver.addr);
    tokio::spawn(async move {
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..CLIENT_TASKS)
            .map(|_| {
                let (base, work, flow, next) =
                    (base.clone(), work.clone(), flow.clone(), next.clone());
                tokio::spawn(async move {
                    let http = http_client();
                    let mut gate = flow.gate.subscribe();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(req) = work.reqs.get(i) else { break };
                        gate.wait_for(|&open| open >= req.phase)
                            .await
                            .expect("gate sender alive");
                        send_until_accepted(&http, &base, req, &flow, i).await;
                        flow.accepted.lock().expect("flow").push(i);
                        flow.done[req.phase].fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for task in tasks {
            if let Err(e) = task.await {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    })
}

/// Waits for the client, re-raising its panic.
async fn join_client(client: tokio::task::JoinHandle<()>) {
    if let Err(e) = client.await {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Ground truth of everything answered 202: the first sales, then every accepted
/// request.
fn truth(work: &Workload, flow: &Flow) -> (SalesTruth, TweetsTruth) {
    let mut sales = SalesTruth::default();
    let mut tweets = TweetsTruth::default();
    for s in &work.firsts {
        sales.apply(s);
    }
    for &i in flow.accepted.lock().expect("flow").iter() {
        match &work.reqs[i].payload {
            Payload::Sales(v, _) => v.iter().for_each(|s| {
                sales.apply(s);
            }),
            Payload::Tweets(v, _) => v.iter().for_each(|t| {
                tweets.apply(t);
            }),
        }
    }
    (sales, tweets)
}

// ---------------------------------------------------------------------------------
// Checking every KPI
// ---------------------------------------------------------------------------------

/// Pages through a ranking `limit` items at a time and checks every page and total.
async fn assert_pages<T>(
    server: &TestServer,
    base: &str,
    want: &[T],
    limit: usize,
    check: impl Fn(&str, &Value, &T),
) {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut offset = 0;
    loop {
        let path = format!("{base}{sep}limit={limit}&offset={offset}");
        let page = server.get_ok(&path).await;
        assert_eq!(page["total"], json!(want.len()), "{path}: {page}");
        let items = page["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: no items: {page}"));
        let expected = &want[offset.min(want.len())..(offset + limit).min(want.len())];
        assert_eq!(items.len(), expected.len(), "{path}: {page}");
        for (i, (item, exp)) in items.iter().zip(expected).enumerate() {
            check(&format!("{path} item {i}"), item, exp);
        }
        if offset + limit >= want.len() {
            break;
        }
        offset += limit;
    }
}

fn prices_of(what: &str, v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: prices is not an array: {v}"))
        .iter()
        .map(|p| {
            p.as_f64()
                .unwrap_or_else(|| panic!("{what}: not a number: {p}"))
        })
        .collect()
}

fn same_floats(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(*x, *y))
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Products by quantity descending, ties by product id descending: the order the
/// stores document (`actors/src/store.rs`, a Valkey sorted set read with
/// `ZREVRANGE`); SPEC only says "by quantity descending".
fn product_ranking(sales: &SalesTruth, category: Option<&str>) -> Vec<(String, u64)> {
    let mut items = sales.ranking(category);
    items.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    items
}

/// Locations by count descending, ties by location descending (as above).
fn location_ranking(tweets: &TweetsTruth) -> Vec<(String, TweetStats)> {
    let mut items = tweets.ranking();
    items.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| b.0.cmp(&a.0)));
    items
}

/// Compares every KPI of the query API with the ground truth: sales and tweets KPIs,
/// product rankings (global and per category, every page), the location ranking
/// (every page) and each monitored product's price stream (in the order of
/// `stream_order` when the bus defines it, else as a multiset).
async fn assert_every_kpi(
    consumer: &TestServer,
    sales: &SalesTruth,
    tweets: &TweetsTruth,
    stream_order: Option<&HashMap<String, Vec<f64>>>,
) {
    sales.assert_kpis(&consumer.get_ok("/v1/kpis/sales").await);
    tweets.assert_kpis(&consumer.get_ok("/v1/kpis/tweets").await);

    let product_check = |what: &str, item: &Value, want: &(String, u64)| {
        assert_eq!(
            item["product_id"].as_str(),
            Some(want.0.as_str()),
            "{what}: {item}"
        );
        assert_eq!(item["quantity"].as_u64(), Some(want.1), "{what}: {item}");
    };
    let global = product_ranking(sales, None);
    assert_pages(
        consumer,
        "/v1/rankings/products",
        &global,
        17,
        product_check,
    )
    .await;
    for c in CATEGORIES {
        let want = product_ranking(sales, Some(c));
        let base = format!("/v1/rankings/products?category={c}");
        assert_pages(consumer, &base, &want, 9, product_check).await;
    }

    let locations = location_ranking(tweets);
    let location_check = |what: &str, item: &Value, want: &(String, TweetStats)| {
        assert_eq!(
            item["location"].as_str(),
            Some(want.0.as_str()),
            "{what}: {item}"
        );
        want.1.assert_matches(what, item);
    };
    assert_pages(
        consumer,
        "/v1/rankings/locations",
        &locations,
        5,
        location_check,
    )
    .await;

    for c in CATEGORIES {
        let (product, want) = sales.monitored_prices(c, 1000);
        assert!(
            want.len() < 1000,
            "the test keeps every price in the stream"
        );
        let path = format!("/v1/sales/monitored/{c}/prices?limit=1000");
        let body = consumer.get_ok(&path).await;
        assert_eq!(body["product_id"].as_str(), product.as_deref(), "{path}");
        let got = prices_of(&path, &body["prices"]);
        assert!(
            same_floats(&sorted(&got), &sorted(&want)),
            "{path}: the prices differ from the {} sales of {product:?} answered 202:\n\
             got  {got:?}\nwant {want:?}",
            want.len()
        );
        if let Some(order) = stream_order {
            let on_bus = &order[c];
            assert!(
                same_floats(on_bus, &got),
                "{path}: not in the order of the {c} partition (newest last):\n\
                 got    {got:?}\non bus {on_bus:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// A plain Kafka reader, independent of flujo's source
// ---------------------------------------------------------------------------------

/// One message as a plain `BaseConsumer` reads it.
#[derive(Debug)]
struct Plain {
    partition: i32,
    offset: i64,
    key: Option<String>,
    json: Value,
}

/// Reads `topic` from the beginning of every partition with a plain `BaseConsumer`
/// (manual assignment, no group) up to the high watermarks it had when the reading
/// began (or until it was quiet for 10 s, or `within` passed). Returns the messages in
/// (partition, offset) order, and the ids of `want` it never saw.
async fn read_topic(
    topic: &str,
    want: HashSet<String>,
    within: Duration,
) -> (Vec<Plain>, HashSet<String>) {
    let (brokers, topic) = (kafka_brokers(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("plain-{}", uuid::Uuid::now_v7()))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "20")
            .create()
            .expect("plain consumer");
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("topic metadata");
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len())
            .unwrap_or_else(|| panic!("{topic} is not in the broker's metadata"));
        assert!(partitions > 0, "{topic} has no partitions");
        let mut tpl = TopicPartitionList::new();
        // Per partition, the offset after the last message to read.
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .expect("partition");
            let (_, high) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("watermarks of {topic} partition {p}: {e}"));
            ends.insert(p, high);
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + within;
        let mut missing = want;
        let mut out = Vec::new();
        let mut next: BTreeMap<i32, i64> = ends.keys().map(|&p| (p, 0)).collect();
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline
            && quiet_since.elapsed() < Duration::from_secs(10)
            && next.iter().any(|(p, n)| *n < ends[p])
        {
            let Some(result) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = result.unwrap_or_else(|e| panic!("plain consumer of {topic}: {e}"));
            quiet_since = Instant::now();
            next.insert(m.partition(), m.offset() + 1);
            let payload = m.payload().unwrap_or_default();
            let json: Value = serde_json::from_slice(payload).unwrap_or_else(|e| {
                panic!(
                    "{topic} partition {} offset {}: not JSON ({e}): {:?}",
                    m.partition(),
                    m.offset(),
                    String::from_utf8_lossy(payload)
                )
            });
            if let Some(id) = json["id"].as_str() {
                missing.remove(id);
            }
            out.push(Plain {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                json,
            });
        }
        out.sort_by_key(|m| (m.partition, m.offset));
        (out, missing)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Reads the sales topic, checks every sale answered 202 is there (else `Err`), and
/// returns the price stream of each category's monitored product in the order a
/// consumer applies it: partition order, first occurrence of each id.
///
/// Runs in a task of its own (the topic is complete once the client is done), so the
/// reading overlaps the wait for the consumer; await it with [`join`].
fn stream_order_on_bus(
    topic: &str,
    work: &Workload,
    flow: &Flow,
    sales: &SalesTruth,
) -> tokio::task::JoinHandle<Result<HashMap<String, Vec<f64>>, String>> {
    let want = work.accepted_sale_ids(flow);
    let monitored: HashMap<String, String> = sales
        .monitored
        .iter()
        .map(|(c, (p, _))| ((*c).to_owned(), p.clone()))
        .collect();
    tokio::spawn(read_stream_order(topic.to_owned(), want, monitored))
}

async fn read_stream_order(
    topic: String,
    want: HashSet<String>,
    monitored: HashMap<String, String>,
) -> Result<HashMap<String, Vec<f64>>, String> {
    let topic = topic.as_str();
    let n = want.len();
    let (messages, missing) = read_topic(topic, want, Duration::from_secs(60)).await;
    if !missing.is_empty() {
        return Err(format!(
            "{} of the {n} sales answered 202 are not on {topic}, e.g. {:?}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        ));
    }
    let mut seen = HashSet::new();
    let mut order: HashMap<String, Vec<f64>> = HashMap::new();
    for m in &messages {
        let id = m.json["id"].as_str().expect("id").to_owned();
        if !seen.insert(id) {
            continue;
        }
        let c = m.json["category"].as_str().expect("category");
        let product = monitored
            .get(c)
            .unwrap_or_else(|| panic!("category {c} of {}", m.json));
        if m.json["product_id"].as_str() == Some(product.as_str()) {
            order
                .entry(c.to_owned())
                .or_default()
                .push(m.json["price"].as_f64().expect("price"));
        }
    }
    Ok(order)
}

// ---------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------

/// Awaits a task, re-raising its panic.
async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    task.await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Runs a test body within `TEST_TIMEOUT` (dropping it, and so killing its child
/// processes, when it takes longer).
async fn bounded<F: Future<Output = ()>>(name: &str, body: F) {
    let started = Instant::now();
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish within {TEST_TIMEOUT:?}"));
    println!("{name}: passed in {:?}", started.elapsed());
}

/// How long after the second SIGKILL the third consumer starts: on Kafka, until the
/// dead consumers' group members are past their session timeout (librdkafka's
/// default `session.timeout.ms`, 45 s; flujo does not set it), so it joins a group of
/// its own members only; on RabbitMQ, at once.
///
/// Starting it at once on Kafka can trip a bug of the test broker, tansu 0.6.0
/// (`tansu-broker` `src/coordinator/group/administrator.rs`): when the group's leader
/// misses its heartbeats while the group is forming, `missed_heartbeat` drops it and
/// clears the leader (`state.leader.take()`), and `Inner<_, Forming>::sync` then takes
/// the next follower's SyncGroup (librdkafka followers send an empty assignment list)
/// for the leader's: the generation forms with no assignment at all, the live
/// consumers hold no partition (`partitions assigned ... partitions=[]`) and no
/// rebalance ever follows (seen in about one of four restarts right after a kill). A
/// real Kafka broker makes followers wait for the leader's assignment.
fn rejoin_pause(bus: Bus) -> Duration {
    match bus {
        Bus::Kafka => Duration::from_secs(47),
        Bus::Rabbitmq => Duration::ZERO,
    }
}

/// Router, consumer and receiver as three processes over `bus`; the consumer is
/// SIGKILLed twice while a client sends, and the third one must end with every KPI
/// exact.
async fn three_roles_survive_consumer_sigkill(bus: Bus) {
    let label = match bus {
        Bus::Kafka => "kafka-kill",
        Bus::Rabbitmq => "rabbit-kill",
    };
    let t0 = Instant::now();
    let log = |what: &str| println!("{label} {:>7.2?}: {what}", t0.elapsed());
    match bus {
        Bus::Kafka => require_kafka().await,
        Bus::Rabbitmq => require_rabbitmq().await,
    }
    require_valkey().await;
    let names = Names::new(label);
    let _cleanup = Cleanup::new(&names, true, bus == Bus::Rabbitmq);
    let envs = names.envs();
    let store = store_flag(&valkey_url());

    let router = start(&envs, router_args(bus)).await;
    let mut consumer1 = start(&envs, consumer_args(bus, &store)).await;
    let receiver = start(&envs, receiver_args(&router)).await;
    wait_ready(&consumer1, "consumer", READY_TIMEOUT).await;
    wait_ready(&receiver, "receiver", READY_TIMEOUT).await;
    log("three roles up");

    let work = Arc::new(Workload::new(label, 2500, 1500, &[0.4, 0.7]));
    send_firsts(&receiver, &work).await;
    let flow = Flow::new(&work);
    let client = spawn_client(&receiver, work.clone(), flow.clone());
    log(&format!(
        "first sales accepted; client sends {} requests in phases {:?}",
        work.reqs.len(),
        flow.total
    ));

    // Kill 1: as soon as the consumer has applied some of phase 0, it is frozen
    // (SIGSTOP) while the client sends the rest of phase 0, so a backlog builds up;
    // then it is resumed and SIGKILLed as soon as it stored its first batch of that
    // backlog: with the next delivery in hand, and maybe that batch not committed
    // yet, so the next consumer gets them again and must not count them twice.
    let firsts = work.firsts.len() as u64;
    let applying = wait_until(Duration::from_secs(30), || async {
        counts(&consumer1)
            .await
            .is_some_and(|(s, t)| s > firsts && t > 0)
    })
    .await;
    assert!(
        applying,
        "consumer 1 applied nothing within 30 s: {:?}\n{}",
        counts(&consumer1).await,
        tail(&consumer1, 30)
    );
    let applied = counts(&consumer1).await;
    signal(&consumer1, "STOP");
    let frozen_at = flow.done(0);
    flow.reached(0, 1.0, Duration::from_secs(60)).await;
    signal(&consumer1, "CONT");
    let resumed = Instant::now();
    let before = loop {
        let now = counts(&consumer1).await;
        if now != applied {
            break now;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(30),
            "consumer 1 applied nothing within 30 s of SIGCONT (counts {now:?}):\n{}",
            tail(&consumer1, 30)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    consumer1.kill9();
    flow.open(1);
    log(&format!(
        "consumer 1 frozen at counts {applied:?} (client at {frozen_at}/{} of phase 0), \
         resumed once phase 0 was sent, SIGKILLed at {before:?}",
        flow.total[0]
    ));

    // Kill 2: a moment after the second consumer started (on Kafka it is still
    // joining the group, which waits for the first one's session to expire; on
    // RabbitMQ it is already consuming what the first one left).
    let mut consumer2 = start(&envs, consumer_args(bus, &store)).await;
    log("consumer 2 started");
    tokio::time::sleep(Duration::from_secs(2)).await;
    flow.reached(1, 0.5, Duration::from_secs(60)).await;
    let at = counts(&consumer2).await;
    consumer2.kill9();
    flow.open(2);
    log(&format!(
        "consumer 2 SIGKILLed at counts {at:?}, client at {}/{} of phase 1",
        flow.done(1),
        flow.total[1]
    ));

    let pause = rejoin_pause(bus);
    if !pause.is_zero() {
        log(&format!(
            "waiting {pause:?} for the dead members' sessions to expire"
        ));
        tokio::time::sleep(pause).await;
    }
    let mut consumer3 = start(&envs, consumer_args(bus, &store)).await;
    log("consumer 3 started");
    join_client(client).await;
    let (sales, tweets) = truth(&work, &flow);
    log(&format!(
        "client done: {} sales and {} tweets answered 202, {} answers 429/503 retried",
        sales.total.count,
        tweets.total.count,
        flow.refused.load(Ordering::SeqCst)
    ));
    let order =
        (bus == Bus::Kafka).then(|| stream_order_on_bus(&names.sales_topic, &work, &flow, &sales));

    let context = || {
        format!(
            "consumers were SIGKILLed twice; consumer 1 stderr (tail):\n{}\n\
             consumer 2 stderr (tail):\n{}",
            tail(&consumer1, 15),
            tail(&consumer2, 15),
        )
    };
    wait_applied(
        &mut consumer3,
        sales.total.count,
        tweets.total.count,
        CONVERGE_TIMEOUT,
        &context,
    )
    .await;
    log(&format!(
        "consumer 3 counts every event answered 202; its log:\n{}",
        tail(&consumer3, 8)
    ));
    let order = match order {
        Some(task) => Some(join(task).await.unwrap_or_else(|e| panic!("{e}"))),
        None => None,
    };
    assert_every_kpi(&consumer3, &sales, &tweets, order.as_ref()).await;
    // Still exact a moment later: nothing arrives late and counts twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sales.assert_kpis(&consumer3.get_ok("/v1/kpis/sales").await);
    tweets.assert_kpis(&consumer3.get_ok("/v1/kpis/tweets").await);
    log(&format!(
        "every KPI matches the ground truth; consumer 3 skipped as duplicates: {:?}",
        duplicates(&consumer3).await
    ));
    drop((router, receiver));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_three_roles_survive_consumer_sigkill() {
    bounded(
        "kafka_three_roles_survive_consumer_sigkill",
        three_roles_survive_consumer_sigkill(Bus::Kafka),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_three_roles_survive_consumer_sigkill() {
    bounded(
        "rabbitmq_three_roles_survive_consumer_sigkill",
        three_roles_survive_consumer_sigkill(Bus::Rabbitmq),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valkey_restart_mid_stream() {
    bounded("valkey_restart_mid_stream", async {
        let label = "valkey-restart";
        let t0 = Instant::now();
        let log = |what: &str| println!("{label} {:>7.2?}: {what}", t0.elapsed());
        require_kafka().await;
        let names = Names::new(label);
        let _cleanup = Cleanup::new(&names, false, false);
        let mut valkey = tokio::task::spawn_blocking(OwnValkey::start)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let mut args = vec!["--role".to_owned(), "all".to_owned()];
        args.extend(bus_args(Bus::Kafka));
        args.extend(["--store".to_owned(), store_flag(&valkey.url())]);
        let mut flujo = start(&names.envs(), args).await;
        wait_ready(&flujo, "flujo", READY_TIMEOUT).await;
        log(&format!(
            "flujo up, own valkey-server on port {}",
            valkey.port
        ));

        let work = Arc::new(Workload::new(label, 2000, 1500, &[0.3, 0.6]));
        send_firsts(&flujo, &work).await;
        let flow = Flow::new(&work);
        let client = spawn_client(&flujo, work.clone(), flow.clone());

        flow.reached(0, 0.5, Duration::from_secs(60)).await;
        let firsts = work.firsts.len() as u64;
        let applying = wait_until(Duration::from_secs(30), || async {
            counts(&flujo)
                .await
                .is_some_and(|(s, t)| s > firsts && t > 0)
        })
        .await;
        assert!(
            applying,
            "nothing applied within 30 s: {}",
            tail(&flujo, 30)
        );
        let before = counts(&flujo).await;
        valkey.kill9();
        let down_at = Instant::now();
        flow.open(1);
        log(&format!(
            "valkey SIGKILLed at counts {before:?}, client at {}/{} of phase 0",
            flow.done(0),
            flow.total[0]
        ));

        // While Valkey is down (at least 2 s, and until readiness has named it; the
        // client sends phase 1 meanwhile), the process stays up and /readyz fails
        // naming the store.
        let mut named: Option<Value> = None;
        let mut polls = 0;
        while down_at.elapsed() < Duration::from_secs(2) || named.is_none() {
            assert!(
                down_at.elapsed() < Duration::from_secs(30),
                "/readyz did not name the store as failing within 30 s of the Valkey outage"
            );
            assert_running(&mut flujo, "during the Valkey outage").await;
            let (status, body) = readyz(&flujo).await;
            polls += 1;
            let names_store = body["failing"].as_array().is_some_and(|f| {
                f.iter()
                    .any(|e| e.as_str().is_some_and(|e| e.starts_with("store:valkey")))
            });
            if status == StatusCode::SERVICE_UNAVAILABLE
                && names_store
                && body["checks"]["store:valkey"] != json!("ok")
            {
                named.get_or_insert(body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        log(&format!(
            "/readyz during the outage ({polls} polls): {}",
            named.as_ref().expect("named")
        ));
        let mut valkey = tokio::task::spawn_blocking(move || {
            valkey.spawn();
            valkey
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        flow.open(2);
        log(&format!(
            "valkey restarted after {:?} down, client at {}/{} of phase 1",
            down_at.elapsed(),
            flow.done(1),
            flow.total[1]
        ));
        wait_ready(&flujo, "flujo after the Valkey restart", READY_TIMEOUT).await;
        log("/readyz is 200 again");

        join_client(client).await;
        let (sales, tweets) = truth(&work, &flow);
        log(&format!(
            "client done: {} sales and {} tweets answered 202, {} answers 429/503 retried",
            sales.total.count,
            tweets.total.count,
            flow.refused.load(Ordering::SeqCst)
        ));
        let order = stream_order_on_bus(&names.sales_topic, &work, &flow, &sales);
        let context = || "Valkey was SIGKILLed and restarted".to_owned();
        wait_applied(
            &mut flujo,
            sales.total.count,
            tweets.total.count,
            CONVERGE_TIMEOUT,
            &context,
        )
        .await;
        let order = join(order).await.unwrap_or_else(|e| panic!("{e}"));
        assert_every_kpi(&flujo, &sales, &tweets, Some(&order)).await;
        wait_ready(&flujo, "flujo at the end", READY_TIMEOUT).await;
        let (_, body) = readyz(&flujo).await;
        assert_eq!(body["checks"]["store:valkey"], json!("ok"), "{body}");
        let metrics = flujo.metrics().await;
        let restarts: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("flujo_actor_restarts_total"))
            .collect();
        log(&format!(
            "every KPI matches; actor restarts: {restarts:?}; skipped as duplicates: {:?}",
            duplicates(&flujo).await
        ));
        valkey.kill9();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receiver_durable_202_means_on_the_bus() {
    bounded("receiver_durable_202_means_on_the_bus", async {
        let label = "durable";
        let t0 = Instant::now();
        let log = |what: &str| println!("{label} {:>7.2?}: {what}", t0.elapsed());
        require_kafka().await;
        require_valkey().await;
        let names = Names::new(label);
        let _cleanup = Cleanup::new(&names, true, false);
        let envs = names.envs();

        // No consumer: the router and a receiver only.
        let mut router = start(&envs, router_args(Bus::Kafka)).await;
        let grpc = router.listener("grpc");
        let mut receiver = start(&envs, receiver_args(&router)).await;
        wait_ready(&receiver, "receiver", READY_TIMEOUT).await;
        log("router and receiver up, no consumer");

        let work = Arc::new(Workload::new(label, 1200, 800, &[0.4, 0.6]));
        send_firsts(&receiver, &work).await;
        let flow = Flow::new(&work);
        let client = spawn_client(&receiver, work.clone(), flow.clone());

        // The router dies mid-stream (SIGKILL) and comes back on the same address:
        // what the receiver answers 202 meanwhile cannot be on the bus, so it must
        // answer 503 (the client retries those with the same ids).
        flow.reached(0, 0.5, Duration::from_secs(60)).await;
        router.kill9();
        flow.down.store(true, Ordering::SeqCst);
        flow.open(1);
        log(&format!(
            "router SIGKILLed, client at {}/{} of phase 0",
            flow.done(0),
            flow.total[0]
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        flow.down.store(false, Ordering::SeqCst);
        let refused = flow.refused.load(Ordering::SeqCst);
        let mut args = vec![
            "--http".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--grpc".to_owned(),
            grpc.to_string(),
        ];
        args.extend(router_args(Bus::Kafka));
        let router2 = spawn_flujo(&envs, args, true).await;
        flow.open(2);
        log(&format!(
            "router restarted on {grpc}; while it was down: {refused} answers 429/503, \
             {} requests answered 202",
            flow.accepted_while_down.lock().expect("flow").len()
        ));

        join_client(client).await;
        // Nothing of the receiver or router survives: what was answered 202 must be
        // in Kafka already.
        receiver.kill9();
        drop(router2);
        let (sales, tweets) = truth(&work, &flow);
        let down_202: Vec<usize> = flow.accepted_while_down.lock().expect("flow").clone();
        let down_events: usize = down_202.iter().map(|&i| work.reqs[i].ids().len()).sum();
        log(&format!(
            "client done: {} sales and {} tweets answered 202 ({} requests while the router \
             was down); receiver and router SIGKILLed",
            sales.total.count,
            tweets.total.count,
            down_202.len()
        ));

        let context = || {
            format!(
                "{} requests ({down_events} events) were answered 202 by the receiver while \
                 the router was down (SIGKILLed): a durable 202 must mean every sink \
                 confirmed the batch; receiver stderr (tail):\n{}",
                down_202.len(),
                tail(&receiver, 15)
            )
        };
        // First the bus itself, read by a plain Kafka client: every sale answered 202.
        let order = stream_order_on_bus(&names.sales_topic, &work, &flow, &sales);
        let order = join(order)
            .await
            .unwrap_or_else(|e| panic!("{e}: {}", context()));
        log("every sale answered 202 is on the sales topic");
        // Then a consumer started only now applies every event answered 202.
        let mut consumer =
            start(&envs, consumer_args(Bus::Kafka, &store_flag(&valkey_url()))).await;
        log("consumer started");
        wait_applied(
            &mut consumer,
            sales.total.count,
            tweets.total.count,
            Duration::from_secs(60),
            &context,
        )
        .await;
        assert_every_kpi(&consumer, &sales, &tweets, Some(&order)).await;
        assert!(
            down_202.is_empty(),
            "{} requests were answered 202 while the router was down: {}",
            down_202.len(),
            context()
        );
        log(&format!(
            "every event answered 202 was applied; every KPI matches; skipped as \
             duplicates: {:?}",
            duplicates(&consumer).await
        ));
    })
    .await;
}

/// Where a sale's `ts` comes from.
enum Stamp {
    /// The client sent this one.
    Client(i64),
    /// The receiver stamped it between these two instants (ms since the epoch).
    Receiver(i64, i64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_topic_holds_every_202d_sale_as_canonical_json_keyed_by_category() {
    bounded(
        "kafka_topic_holds_every_202d_sale_as_canonical_json_keyed_by_category",
        async {
            let label = "plain";
            require_kafka().await;
            let names = Names::new(label);
            let _cleanup = Cleanup::new(&names, false, false);
            let envs = names.envs();
            let router = start(&envs, router_args(Bus::Kafka)).await;
            let receiver = start(&envs, receiver_args(&router)).await;
            wait_ready(&receiver, "receiver", READY_TIMEOUT).await;

            // One sequential client (so the order within a category is known), every
            // sale form, half of the requests with client timestamps.
            let mut rng = StdRng::seed_from_u64(rand::rng().random());
            let tag = uuid::Uuid::now_v7().simple().to_string();
            let now_ms = || {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock")
                    .as_millis() as i64
            };
            // id → (sale, client ts, or the window the receiver stamped it in)
            let mut sent: HashMap<String, (Sale, Stamp)> = HashMap::new();
            let mut order: Vec<String> = Vec::new();
            let flow = Flow::new(&Workload::empty());
            let http = http_client();
            let base = format!("http://{}", receiver.addr);
            for b in 0..12 {
                let form = SALE_FORMS[b % SALE_FORMS.len()];
                let with_ts = b.is_multiple_of(2);
                let sales: Vec<Sale> = (0..BATCH)
                    .map(|i| {
                        let c = CATEGORIES[rng.random_range(0..4)];
                        let product = format!("P-{}", rng.random_range(0..20));
                        random_sale(&mut rng, format!("{tag}-{b:02}-{i:02}"), c, &product)
                    })
                    .collect();
                let mut req = Req::new(Payload::Sales(sales.clone(), form), Encoding::Ndjson);
                if with_ts {
                    for (i, body) in req.bodies.iter_mut().enumerate() {
                        body["ts"] = json!(1_700_000_000_000i64 + (b * BATCH + i) as i64);
                    }
                }
                let before = now_ms();
                send_until_accepted(&http, &base, &req, &flow, b).await;
                let after = now_ms();
                for (i, s) in sales.into_iter().enumerate() {
                    let ts = if with_ts {
                        Stamp::Client(1_700_000_000_000i64 + (b * BATCH + i) as i64)
                    } else {
                        Stamp::Receiver(before, after)
                    };
                    order.push(s.id.clone());
                    sent.insert(s.id.clone(), (s, ts));
                }
            }
            let refused = flow.refused.load(Ordering::SeqCst);

            let want: HashSet<String> = sent.keys().cloned().collect();
            let (messages, missing) =
                read_topic(&names.sales_topic, want, Duration::from_secs(45)).await;
            assert!(
                missing.is_empty(),
                "{} of {} sales answered 202 are not on {}: {:?}",
                missing.len(),
                sent.len(),
                names.sales_topic,
                missing.iter().take(10).collect::<Vec<_>>()
            );
            let mut partition_of: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
            let mut first_seen: Vec<String> = Vec::new();
            let mut copies: HashMap<&str, usize> = HashMap::new();
            for m in &messages {
                let id = m.json["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("message without id: {}", m.json));
                let (sale, ts) = sent
                    .get(id)
                    .unwrap_or_else(|| panic!("a message nobody sent: {}", m.json));
                let mut want = json!({
                    "id": sale.id, "category": sale.category, "product_id": sale.product_id,
                    "price": sale.price, "quantity": sale.quantity,
                });
                match ts {
                    Stamp::Client(ts) => want["ts"] = json!(ts),
                    Stamp::Receiver(before, after) => {
                        let got = m.json["ts"]
                            .as_i64()
                            .unwrap_or_else(|| panic!("no integer ts: {}", m.json));
                        assert!(
                            (before - 1..=after + 1).contains(&got),
                            "ts {got} stamped outside the request ({before}..{after}): {}",
                            m.json
                        );
                        want["ts"] = json!(got);
                    }
                }
                assert_eq!(m.json, want, "canonical JSON of sale {id}");
                let fields: BTreeSet<&str> = m
                    .json
                    .as_object()
                    .expect("object")
                    .keys()
                    .map(String::as_str)
                    .collect();
                assert_eq!(
                    fields,
                    BTreeSet::from(["id", "ts", "category", "product_id", "price", "quantity"]),
                    "exactly the canonical fields"
                );
                assert_eq!(
                    m.key.as_deref(),
                    Some(sale.category),
                    "key of sale {id} (partition {} offset {})",
                    m.partition,
                    m.offset
                );
                partition_of
                    .entry(sale.category.to_owned())
                    .or_default()
                    .insert(m.partition);
                let n = copies.entry(id).or_default();
                *n += 1;
                if *n == 1 {
                    first_seen.push(id.to_owned());
                }
            }
            // Copies of a sale can only come from retries (the client's, after a
            // 429/503, or the producer's: `kafka.idempotence` is off by default); they
            // are shown, not failed, since consumers dedup by id.
            let duplicates = copies.values().filter(|&&n| n > 1).count();
            for (c, partitions) in &partition_of {
                assert_eq!(partitions.len(), 1, "key {c} spread over {partitions:?}");
            }
            // Within a category, the order the client sent (one request at a time).
            for c in CATEGORIES {
                let sent_order: Vec<&String> = order
                    .iter()
                    .filter(|id| sent[*id].0.category == c)
                    .collect();
                let on_topic: Vec<&String> = first_seen
                    .iter()
                    .filter(|id| sent[*id].0.category == c)
                    .collect();
                assert_eq!(on_topic, sent_order, "order within {c}");
            }
            println!(
                "plain reader: {} messages for {} sales, {duplicates} duplicates, {refused} \
                 refusals, partitions per category {partition_of:?}",
                messages.len(),
                sent.len()
            );
            drop((router, receiver));
        },
    )
    .await;
}
