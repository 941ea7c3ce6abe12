//! The shared brokers and store of the integration tests (`scripts/services.sh up`):
//! their addresses from `FLUJO_TEST_*` variables, probes that fail (never skip) when
//! one does not answer, and Valkey key helpers for tests that write under a prefix.

use rdkafka::consumer::BaseConsumer;
use rdkafka::ClientConfig;
use std::time::Duration;

/// What a developer runs to get the services.
pub const SERVICES_HINT: &str = "start the test services with `scripts/services.sh up`";

/// Kafka bootstrap servers: `FLUJO_TEST_KAFKA_BROKERS`, default `127.0.0.1:9092`.
pub fn kafka_brokers() -> String {
    std::env::var("FLUJO_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The shared Valkey: `FLUJO_TEST_VALKEY_URL`, default `redis://127.0.0.1:6380`.
pub fn valkey_url() -> String {
    std::env::var("FLUJO_TEST_VALKEY_URL").unwrap_or_else(|_| "redis://127.0.0.1:6380".into())
}

/// RabbitMQ: `FLUJO_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    std::env::var("FLUJO_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A name no other test (or run) uses: `{label}-{uuid v7}`.
pub fn unique_name(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::now_v7().simple())
}

/// The `--store` flag's form of a Redis URL: `valkey://HOST:PORT`.
pub fn store_flag(url: &str) -> String {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("valkey://"))
        .unwrap_or(url);
    format!("valkey://{rest}")
}

/// Fails (never skips) when no Kafka broker answers a metadata request within
/// `within`.
pub async fn require_kafka(within: Duration) {
    let brokers = kafka_brokers();
    let probe = brokers.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &probe)
            .create()
            .map_err(|e| e.to_string())?;
        rdkafka::consumer::Consumer::fetch_metadata(&client, None, within)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .expect("Kafka probe task");
    if let Err(e) = answer {
        panic!(
            "no Kafka broker answers at {brokers} ({e}); {SERVICES_HINT} \
             (or point FLUJO_TEST_KAFKA_BROKERS at one)"
        );
    }
}

/// A blocking connection to `url`, bounded in time.
pub fn redis_connection(url: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))
}

/// Fails (never skips) when the shared Valkey does not answer PING.
pub async fn require_valkey() {
    let url = valkey_url();
    let probe = url.clone();
    let pong = tokio::task::spawn_blocking(move || {
        redis_connection(&probe).and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
    })
    .await
    .expect("Valkey probe task");
    if let Err(e) = pong {
        panic!(
            "Valkey at {url} is not reachable ({e}); {SERVICES_HINT} (or set FLUJO_TEST_VALKEY_URL)"
        );
    }
}

/// Fails (never skips) when RabbitMQ does not accept a connection within 10 s.
pub async fn require_rabbitmq() {
    let url = amqp_url();
    let connect = lapin::Connection::connect(&url, lapin::ConnectionProperties::default());
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(connection)) => {
            let _ = connection.close(200, "OK".into()).await;
        }
        Ok(Err(e)) => panic!(
            "RabbitMQ is unreachable at {} ({e}); {SERVICES_HINT} (or set FLUJO_TEST_AMQP_URL)",
            flujo::components::mask_url_password(&url)
        ),
        Err(_) => panic!(
            "RabbitMQ at {} did not answer within 10 s; {SERVICES_HINT} (or set FLUJO_TEST_AMQP_URL)",
            flujo::components::mask_url_password(&url)
        ),
    }
}

/// Every key matching `pattern` (SCAN, so a busy server is not blocked).
pub fn scan_keys(con: &mut redis::Connection, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(con)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// Every key under `prefix` on the server at `url`.
pub fn keys_under(url: &str, prefix: &str) -> redis::RedisResult<Vec<String>> {
    scan_keys(&mut redis_connection(url)?, &format!("{prefix}*"))
}

/// Deletes every key under `prefix` on the server at `url`.
pub fn delete_keys(url: &str, prefix: &str) -> redis::RedisResult<()> {
    let keys = keys_under(url, prefix)?;
    let mut con = redis_connection(url)?;
    for chunk in keys.chunks(500) {
        redis::cmd("UNLINK").arg(chunk).query::<()>(&mut con)?;
    }
    Ok(())
}

/// Deletes every key under its prefix when dropped, even when the test failed.
pub struct KeysGuard {
    /// The server.
    pub url: String,
    /// The prefix the test wrote under.
    pub prefix: String,
}

impl Drop for KeysGuard {
    fn drop(&mut self) {
        let _ = delete_keys(&self.url, &self.prefix);
    }
}

/// Deletes RabbitMQ queues when dropped, even when the test failed.
pub struct QueueCleanup {
    /// The broker.
    pub url: String,
    /// The queues the test declared.
    pub queues: Vec<String>,
}

impl Drop for QueueCleanup {
    fn drop(&mut self) {
        let url = self.url.clone();
        let queues = std::mem::take(&mut self.queues);
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

/// `url` with its host and port replaced by `addr` (kept: scheme, user info, path),
/// to send a client through a proxy a test owns.
pub fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (userinfo, rest) = match rest.split_once('@') {
        Some((u, r)) => (format!("{u}@"), r),
        None => (String::new(), rest),
    };
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("{scheme}://{userinfo}{addr}{path}")
}

/// The address of the RabbitMQ broker an AMQP URL names (resolved), for the tests
/// that put a proxy of their own in front of it.
pub async fn amqp_broker_addr(url: &str) -> std::net::SocketAddr {
    let uri: lapin::uri::AMQPUri = url.parse().expect("AMQP URL");
    let host = format!("{}:{}", uri.authority.host, uri.authority.port);
    tokio::net::lookup_host(host)
        .await
        .expect("resolve broker")
        .next()
        .expect("an address")
}
