//! The RabbitMQ bus against a real broker (`FLUJO_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`; start one with `scripts/services.sh up`).
//! Every test uses queues of its own, with random names, and deletes them at the end.

use actix::{Arbiter, Supervisor};
use flujo::components::rabbitmq::{
    RabbitConfig, RabbitSink, RabbitSource, CONTENT_TYPE, RECEIVED_AT_HEADER,
};
use flujo_actors::aggregator::Aggregator;
use flujo_actors::consumer::{Consumer, Delivery, Source};
use flujo_actors::event::{Category, Events, Kind, Sale, Tweet, Weather};
use flujo_actors::messages::{Batch, Publish};
use flujo_actors::publisher::{Publisher, Sink};
use flujo_actors::store::{MemoryStore, Store};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Upper bound of a whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound of one wait for a delivery, a connection or a confirm.
const WAIT: Duration = Duration::from_secs(30);

fn amqp_url() -> String {
    std::env::var("FLUJO_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn unique(label: &str) -> String {
    format!("flujo-test-{label}-{}", uuid::Uuid::now_v7().simple())
}

/// A configuration with queues of its own.
fn test_config(label: &str) -> RabbitConfig {
    let id = unique(label);
    RabbitConfig {
        url: amqp_url(),
        sales_queue: format!("{id}-sales"),
        tweets_queue: format!("{id}-tweets"),
        ..RabbitConfig::default()
    }
}

/// Runs a test body with a time limit, after checking that RabbitMQ answers.
async fn run_test<F: Future<Output = ()>>(body: F) {
    // `RUST_LOG=flujo=debug cargo test --test rabbitmq -- --nocapture` shows the
    // reconnects.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let url = amqp_url();
    let shown = flujo::components::mask_url_password(&url);
    let probe = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await;
    match probe {
        Ok(Ok(connection)) => {
            let _ = connection.close(200, "OK".into()).await;
        }
        Ok(Err(e)) => panic!(
            "RabbitMQ is unreachable at {shown} ({e}); run `scripts/services.sh up` \
             (or set FLUJO_TEST_AMQP_URL)"
        ),
        Err(_) => panic!(
            "RabbitMQ at {shown} did not answer within 10 s; run `scripts/services.sh up` \
             (or set FLUJO_TEST_AMQP_URL)"
        ),
    }
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out");
}

/// Deletes the test's queues when dropped, even when the test failed.
struct QueueCleanup {
    url: String,
    queues: Vec<String>,
}

impl QueueCleanup {
    fn new(config: &RabbitConfig) -> Self {
        QueueCleanup {
            url: config.url.clone(),
            queues: vec![config.sales_queue.clone(), config.tweets_queue.clone()],
        }
    }
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
                let connect = Connection::connect(&url, ConnectionProperties::default());
                let Ok(Ok(connection)) =
                    tokio::time::timeout(Duration::from_secs(10), connect).await
                else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    for queue in queues {
                        let delete = channel
                            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default());
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

fn sales(prefix: &str, n: usize) -> Vec<Sale> {
    (0..n)
        .map(|i| Sale {
            id: format!("{prefix}-{i}"),
            ts: 1_700_000_000_000 + i as i64,
            category: Category::ALL[i % 4],
            product_id: format!("P{}", i % 7),
            price: 1.25 + i as f64,
            quantity: 1 + (i as u64 % 5),
        })
        .collect()
}

fn tweets(prefix: &str, n: usize) -> Vec<Tweet> {
    (0..n)
        .map(|i| Tweet {
            id: format!("{prefix}-{i}"),
            ts: 1_700_000_000_000 + i as i64,
            location: format!("City {}", i % 3),
            weather: Weather::ALL[i % 6],
            temperature: -10.5 + i as f64,
            humidity: (i % 100) as f64,
            text: (i % 2 == 0).then(|| format!("tweet número {i}")),
        })
        .collect()
}

fn batch(events: Events, received_at_ms: i64) -> Batch {
    Batch {
        events: Arc::new(events),
        received_at_ms,
        admitted: None,
    }
}

fn ids(events: &Events) -> Vec<String> {
    events.ids()
}

async fn ready_sink(config: &RabbitConfig, name: &str) -> RabbitSink {
    let sink = RabbitSink::with_connection_name(config.clone(), name);
    sink.wait_ready(WAIT).await.expect("sink connects");
    sink
}

async fn next_delivery(source: &mut RabbitSource) -> Delivery {
    tokio::time::timeout(WAIT, source.next())
        .await
        .expect("a delivery within the wait")
        .expect("source still open")
}

/// Reads (and commits) deliveries until `n` events arrived.
async fn read_events(source: &mut RabbitSource, n: usize) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    let mut seen = 0;
    while seen < n {
        let delivery = next_delivery(source).await;
        seen += delivery.batch.events.len();
        source.commit(delivery.token).await.expect("commit");
        deliveries.push(delivery);
    }
    assert_eq!(seen, n, "more events than published");
    deliveries
}

fn all_sales(deliveries: &[Delivery]) -> Vec<Sale> {
    deliveries
        .iter()
        .flat_map(|d| match d.batch.events.as_ref() {
            Events::Sales(s) => s.clone(),
            Events::Tweets(_) => panic!("tweets on the sales queue"),
        })
        .collect()
}

fn all_tweets(deliveries: &[Delivery]) -> Vec<Tweet> {
    deliveries
        .iter()
        .flat_map(|d| match d.batch.events.as_ref() {
            Events::Tweets(t) => t.clone(),
            Events::Sales(_) => panic!("sales on the tweets queue"),
        })
        .collect()
}

/// Ready messages in `queue` (passive declare).
async fn ready_messages(url: &str, queue: &str) -> u32 {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable().passive(),
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    let _ = connection.close(200, "OK".into()).await;
    q.message_count()
}

/// Each delivery's `received_at_ms` is the earliest of its events' batches.
fn check_received_at(deliveries: &[Delivery], received_at: &HashMap<String, i64>) {
    for d in deliveries {
        let min = ids(&d.batch.events)
            .iter()
            .map(|id| received_at[id])
            .min()
            .expect("non-empty delivery");
        assert_eq!(d.batch.received_at_ms, min);
        assert!(d.batch.admitted.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_keeps_events_order_and_receive_time() {
    run_test(async {
        let config = RabbitConfig {
            batch_max: 4,
            ..test_config("roundtrip")
        };
        let _cleanup = QueueCleanup::new(&config);
        let sink = ready_sink(&config, &unique("roundtrip-sink")).await;
        assert_eq!(sink.name(), "rabbitmq");
        sink.ready().await.expect("ready");

        let mut sent_sales = Vec::new();
        let mut sent_tweets = Vec::new();
        let mut received_at = HashMap::new();
        for (i, n) in [3usize, 5, 1].into_iter().enumerate() {
            let s = sales(&format!("s{i}"), n);
            let at = 1_700_000_100_000 + i as i64 * 1000;
            for e in &s {
                received_at.insert(e.id.clone(), at);
            }
            sent_sales.extend(s.clone());
            sink.publish(batch(Events::Sales(s), at))
                .await
                .expect("sales confirmed");
        }
        for (i, n) in [2usize, 6].into_iter().enumerate() {
            let t = tweets(&format!("t{i}"), n);
            let at = 1_700_000_200_000 + i as i64 * 1000;
            for e in &t {
                received_at.insert(e.id.clone(), at);
            }
            sent_tweets.extend(t.clone());
            sink.publish(batch(Events::Tweets(t), at))
                .await
                .expect("tweets confirmed");
        }
        // An empty batch is a no-op.
        sink.publish(batch(Events::Sales(vec![]), 1))
            .await
            .expect("empty batch");

        let cancel = CancellationToken::new();
        let mut sale_source = RabbitSource::new(config.clone(), Kind::Sale, cancel.clone());
        assert_eq!(sale_source.name(), "rabbitmq");
        assert_eq!(sale_source.queue(), config.sales_queue);
        let deliveries = read_events(&mut sale_source, sent_sales.len()).await;
        assert!(
            deliveries.iter().all(|d| d.batch.events.len() <= 4),
            "batch_max"
        );
        assert_eq!(all_sales(&deliveries), sent_sales, "exact sales, in order");
        check_received_at(&deliveries, &received_at);

        let mut tweet_source = RabbitSource::new(config.clone(), Kind::Tweet, cancel.clone());
        let deliveries = read_events(&mut tweet_source, sent_tweets.len()).await;
        assert_eq!(
            all_tweets(&deliveries),
            sent_tweets,
            "exact tweets, in order"
        );
        check_received_at(&deliveries, &received_at);

        // Cancelled (and so no longer consuming): `next` ends instead of waiting for messages.
        cancel.cancel();
        let end = tokio::time::timeout(WAIT, sale_source.next()).await;
        assert!(matches!(end, Ok(None)), "next() ends once cancelled");
        let end = tokio::time::timeout(WAIT, tweet_source.next()).await;
        assert!(matches!(end, Ok(None)), "next() ends once cancelled");

        // On the wire: persistent canonical JSON with the receive-time header.
        let raw = sales("raw", 1);
        sink.publish(batch(Events::Sales(raw.clone()), 42))
            .await
            .expect("confirmed");
        let connection = Connection::connect(&config.url, ConnectionProperties::default())
            .await
            .expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        let got = channel
            .basic_get(
                config.sales_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic_get")
            .expect("a message is waiting");
        let props = &got.delivery.properties;
        assert_eq!(*props.delivery_mode(), Some(2), "persistent");
        assert_eq!(
            props.content_type().as_ref().map(|c| c.as_str()),
            Some(CONTENT_TYPE)
        );
        let header = props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(RECEIVED_AT_HEADER).cloned());
        assert_eq!(header, Some(AMQPValue::LongLongInt(42)));
        let body: Value = serde_json::from_slice(&got.delivery.data).expect("JSON body");
        let keys: HashSet<&str> = body
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            HashSet::from(["id", "ts", "category", "product_id", "price", "quantity"])
        );
        assert_eq!(body["id"], "raw-0");
        assert_eq!(body["category"], "electronics");
        assert_eq!(
            body,
            serde_json::to_value(&raw[0]).expect("canonical JSON"),
            "the body is the canonical JSON"
        );
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acked_before_commit() {
    run_test(async {
        let config = test_config("commit");
        let _cleanup = QueueCleanup::new(&config);
        let sink = ready_sink(&config, &unique("commit-sink")).await;
        let sent = sales("c", 5);
        sink.publish(batch(Events::Sales(sent.clone()), 7))
            .await
            .expect("confirmed");

        // Read, then drop the source without committing: everything comes again.
        let mut first = RabbitSource::new(config.clone(), Kind::Sale, CancellationToken::new());
        let delivery = next_delivery(&mut first).await;
        assert_eq!(all_sales(std::slice::from_ref(&delivery)), sent);
        drop(first);

        let mut second = RabbitSource::new(config.clone(), Kind::Sale, CancellationToken::new());
        let mut again = Vec::new();
        while again.len() < sent.len() {
            let d = next_delivery(&mut second).await;
            again.extend(all_sales(std::slice::from_ref(&d)));
            if again.len() == sent.len() {
                second.commit(d.token).await.expect("commit");
            }
        }
        assert_eq!(again, sent, "redelivered after a drop without commit");
        drop(second);

        // Committed: a new source gets nothing, and the queue is empty.
        let mut third = RabbitSource::new(config.clone(), Kind::Sale, CancellationToken::new());
        let nothing = tokio::time::timeout(Duration::from_millis(1500), third.next()).await;
        assert!(nothing.is_err(), "committed messages must not come again");
        drop(third);
        let deadline = Instant::now() + Duration::from_secs(2);
        while ready_messages(&config.url, &config.sales_queue).await != 0 {
            assert!(Instant::now() < deadline, "queue not empty after commit");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_acked_away() {
    run_test(async {
        let config = test_config("poison");
        let _cleanup = QueueCleanup::new(&config);
        let sink = ready_sink(&config, &unique("poison-sink")).await;
        let good_a = sales("a", 2);
        let good_b = sales("b", 2);
        sink.publish(batch(Events::Sales(good_a.clone()), 10))
            .await
            .expect("confirmed");
        // Garbage and a tweet on the sales queue, between two good batches.
        let connection = Connection::connect(&config.url, ConnectionProperties::default())
            .await
            .expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        let tweet = serde_json::to_vec(&tweets("x", 1)[0]).expect("json");
        for body in [
            b"not json".as_slice(),
            tweet.as_slice(),
            b"{\"id\":1}".as_slice(),
        ] {
            channel
                .basic_publish(
                    "".into(),
                    config.sales_queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await
                .expect("publish garbage");
        }
        let _ = connection.close(200, "OK".into()).await;
        sink.publish(batch(Events::Sales(good_b.clone()), 20))
            .await
            .expect("confirmed");

        let mut source = RabbitSource::new(config.clone(), Kind::Sale, CancellationToken::new());
        let deliveries = read_events(&mut source, 4).await;
        let got = all_sales(&deliveries);
        assert_eq!(got, [good_a, good_b].concat());
        drop(source);
        let deadline = Instant::now() + Duration::from_secs(3);
        while ready_messages(&config.url, &config.sales_queue).await != 0 {
            assert!(Instant::now() < deadline, "garbage left in the queue");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_confirmed_in_one_go() {
    run_test(async {
        let config = test_config("large");
        let _cleanup = QueueCleanup::new(&config);
        let sink = ready_sink(&config, &unique("large-sink")).await;
        let sent = sales("big", 5000);
        let started = Instant::now();
        tokio::time::timeout(WAIT, sink.publish(batch(Events::Sales(sent.clone()), 5)))
            .await
            .expect("5,000 confirms within the wait")
            .expect("confirmed");
        eprintln!("5,000 events confirmed in {:?}", started.elapsed());
        assert_eq!(ready_messages(&config.url, &config.sales_queue).await, 5000);
        let mut source = RabbitSource::new(config.clone(), Kind::Sale, CancellationToken::new());
        let deliveries = read_events(&mut source, sent.len()).await;
        assert!(deliveries
            .iter()
            .all(|d| d.batch.events.len() <= config.batch_max));
        assert_eq!(all_sales(&deliveries), sent);
    })
    .await;
}

/// A TCP proxy in front of RabbitMQ that the test can take down (dropping every
/// open connection and refusing new ones) and bring back.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    epoch: watch::Sender<u64>,
    stop: CancellationToken,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let (epoch, _) = watch::channel(0u64);
        let stop = CancellationToken::new();
        let (up2, epoch2, stop2) = (up.clone(), epoch.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop2.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut killed = epoch2.subscribe();
                let stop3 = stop2.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = killed.changed() => {}
                        _ = stop3.cancelled() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            epoch,
            stop,
        }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by the proxy's.
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("scheme");
        let (userinfo, rest) = match rest.split_once('@') {
            Some((u, r)) => (format!("{u}@"), r),
            None => (String::new(), rest),
        };
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        format!("{scheme}://{userinfo}{}{path}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The broker's address from an AMQP URL.
async fn broker_addr(url: &str) -> SocketAddr {
    let uri: lapin::uri::AMQPUri = url.parse().expect("AMQP URL");
    let host = format!("{}:{}", uri.authority.host, uri.authority.port);
    tokio::net::lookup_host(host)
        .await
        .expect("resolve broker")
        .next()
        .expect("an address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_and_source_survive_a_lost_connection() {
    run_test(async {
        let base = test_config("outage");
        let _cleanup = QueueCleanup::new(&base);
        let proxy = Proxy::start(broker_addr(&base.url).await).await;
        let config = RabbitConfig {
            url: proxy.url(&base.url),
            ..base.clone()
        };
        let sink = ready_sink(&config, &unique("outage-sink")).await;
        let mut source = RabbitSource::new(config.clone(), Kind::Tweet, CancellationToken::new());

        // Before: a committed batch, then one read but not committed.
        let a = tweets("a", 3);
        sink.publish(batch(Events::Tweets(a.clone()), 1))
            .await
            .expect("confirmed");
        let got = read_events(&mut source, a.len()).await;
        assert_eq!(all_tweets(&got), a);
        let c = tweets("c", 4);
        sink.publish(batch(Events::Tweets(c.clone()), 2))
            .await
            .expect("confirmed");
        // Read all of c without committing (it may take several deliveries).
        let mut pending = Vec::new();
        while all_tweets(&pending).len() < c.len() {
            pending.push(next_delivery(&mut source).await);
        }
        assert_eq!(all_tweets(&pending), c);
        let pending = pending.pop().expect("a delivery");

        // Down: publishing fails promptly, readiness says so, the commit of the
        // pending delivery cannot take effect (its channel is gone).
        proxy.down();
        let deadline = Instant::now() + WAIT;
        loop {
            let d = tweets("d-lost", 1);
            let result = tokio::time::timeout(
                Duration::from_secs(5),
                sink.publish(batch(Events::Tweets(d), 3)),
            )
            .await
            .expect("publish answers promptly while down");
            if result.is_err() {
                break;
            }
            assert!(Instant::now() < deadline, "sink never noticed the outage");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..3 {
            let result = tokio::time::timeout(
                Duration::from_secs(5),
                sink.publish(batch(Events::Tweets(tweets("d-lost", 1)), 3)),
            )
            .await
            .expect("publish answers promptly while down");
            let err = result.expect_err("publish fails while RabbitMQ is unreachable");
            assert!(err.0.contains("rabbitmq"), "{err}");
        }
        assert!(sink.ready().await.is_err(), "not ready while down");
        tokio::time::sleep(Duration::from_millis(200)).await;
        source
            .commit(pending.token)
            .await
            .expect("commit is a no-op");

        // The source keeps trying while down and resumes once RabbitMQ is back.
        let reader = tokio::spawn(async move {
            let mut deliveries = Vec::new();
            let mut tweets_seen = Vec::new();
            while tweets_seen.len() < 7 {
                let d = tokio::time::timeout(Duration::from_secs(60), source.next())
                    .await
                    .expect("a delivery after recovery")
                    .expect("open");
                tweets_seen.extend(all_tweets(std::slice::from_ref(&d)));
                source.commit(d.token).await.expect("commit");
                deliveries.push(d);
            }
            (source, tweets_seen)
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!reader.is_finished(), "nothing can be read while down");
        proxy.up();

        sink.wait_ready(WAIT)
            .await
            .expect("the sink recovers on its own");
        let d = tweets("d", 3);
        sink.publish(batch(Events::Tweets(d.clone()), 4))
            .await
            .expect("publishes again after recovery");
        let (mut source, seen) = tokio::time::timeout(Duration::from_secs(90), reader)
            .await
            .expect("reader finishes")
            .expect("reader ok");
        // The uncommitted batch comes again (first), then the new one; "d-lost"
        // events may or may not have reached the queue before the outage.
        let seen: Vec<Tweet> = seen
            .into_iter()
            .filter(|t| !t.id.starts_with("d-lost"))
            .collect();
        let mut expected = c.clone();
        expected.extend(d.clone());
        if seen.len() < expected.len() {
            let more = read_events(&mut source, expected.len() - seen.len()).await;
            let mut all = seen.clone();
            all.extend(all_tweets(&more));
            let all: Vec<Tweet> = all
                .into_iter()
                .filter(|t| !t.id.starts_with("d-lost"))
                .collect();
            assert_eq!(all, expected);
        } else {
            assert_eq!(seen, expected, "redelivered batch, then the new one");
        }

        // The stale token of the old channel is still a no-op (acking it on the new
        // channel would close it), and the new channel keeps working.
        let generation = source.channel_generation();
        assert!(generation > 1, "the source reconnected");
        source.commit(pending.token).await.expect("stale commit");
        let e = tweets("e", 2);
        sink.publish(batch(Events::Tweets(e.clone()), 5))
            .await
            .expect("confirmed");
        let mut tail = Vec::new();
        while !e.iter().all(|t| tail.contains(t)) {
            let got = next_delivery(&mut source).await;
            tail.extend(all_tweets(std::slice::from_ref(&got)));
            source.commit(got.token).await.expect("commit");
            // Committing twice is harmless (a second ack would close the channel).
            source.commit(got.token).await.expect("commit again");
        }
        assert!(tail.iter().all(|t| e.contains(t)), "only e is left");
        let f = tweets("f", 1);
        sink.publish(batch(Events::Tweets(f.clone()), 6))
            .await
            .expect("confirmed");
        let got = next_delivery(&mut source).await;
        assert_eq!(
            all_tweets(std::slice::from_ref(&got)),
            f,
            "same channel still works"
        );
        assert!(source.is_connected());
        assert_eq!(
            source.channel_generation(),
            generation,
            "no reconnect after the stale and the double commits"
        );
    })
    .await;
}

/// `rabbitmqctl` pids of the connections whose client properties contain `name`.
fn broker_connections(name: &str) -> Option<Vec<String>> {
    let output = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "--silent"])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    // One line per connection: `<pid>\t<client properties as an Erlang term>`.
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.starts_with('<') && line.contains(name))
            .filter_map(|line| line.split('\t').next().map(str::to_owned))
            .collect(),
    )
}

fn close_broker_connection(pid: &str) -> bool {
    std::process::Command::new("rabbitmqctl")
        .args(["close_connection", pid, "flujo test: forced close"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_when_the_broker_closes_the_connection() {
    run_test(async {
        let config = test_config("brokerclose");
        let _cleanup = QueueCleanup::new(&config);
        let sink_name = unique("brokerclose-sink");
        let source_name = unique("brokerclose-source");
        let sink = ready_sink(&config, &sink_name).await;
        let mut source = RabbitSource::with_connection_name(
            config.clone(),
            Kind::Sale,
            CancellationToken::new(),
            &source_name,
        );
        let a = sales("a", 2);
        sink.publish(batch(Events::Sales(a.clone()), 1))
            .await
            .expect("confirmed");
        assert_eq!(all_sales(&read_events(&mut source, 2).await), a);

        // Only this test's two connections are closed (others may be in use).
        let pids = tokio::task::spawn_blocking({
            let (s, c) = (sink_name.clone(), source_name.clone());
            move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let found: Vec<String> = [s.as_str(), c.as_str()]
                        .iter()
                        .filter_map(|n| broker_connections(n))
                        .flatten()
                        .collect();
                    if found.len() >= 2 || Instant::now() > deadline {
                        return (found, broker_connections("").is_some());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
        .await
        .expect("rabbitmqctl");
        let (pids, ctl_works) = pids;
        if !ctl_works {
            eprintln!("rabbitmqctl is not usable here; the proxy test covers a lost connection");
            return;
        }
        assert_eq!(pids.len(), 2, "both connections listed by rabbitmqctl");
        let closed = tokio::task::spawn_blocking(move || {
            pids.iter().all(|pid| close_broker_connection(pid))
        })
        .await
        .expect("rabbitmqctl");
        assert!(closed, "rabbitmqctl close_connection");

        // The sink reconnects by itself; a publish may fail meanwhile, never hang.
        let b = sales("b", 3);
        let deadline = Instant::now() + WAIT;
        loop {
            let result = tokio::time::timeout(
                Duration::from_secs(10),
                sink.publish(batch(Events::Sales(b.clone()), 2)),
            )
            .await
            .expect("publish answers");
            match result {
                Ok(()) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "sink did not recover: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // The source resumes; b may come more than once if an attempt was confirmed
        // but its answer lost; ids are what the aggregator deduplicates on.
        let mut seen = Vec::new();
        while !b.iter().all(|s| seen.contains(s)) {
            let d = next_delivery(&mut source).await;
            seen.extend(all_sales(std::slice::from_ref(&d)));
            source.commit(d.token).await.expect("commit");
        }
        assert!(seen.iter().all(|s| b.contains(s)), "only b after recovery");
    })
    .await;
}

/// Sum of the sales and tweets counts in `store`.
async fn stored_counts(store: &dyn Store) -> (u64, u64) {
    let sales = store.sales_kpis().await.expect("sales kpis").total.count;
    let tweets = store.tweet_kpis().await.expect("tweet kpis").total.count;
    (sales, tweets)
}

/// The seam as the process uses it: a publisher actor on one arbiter, consumer
/// actors on another (actix's single-threaded runtimes), RabbitMQ in between.
#[test]
fn carries_batches_between_actix_actors() {
    let system = actix::System::new();
    system.block_on(run_test(async {
        let config = test_config("actix");
        let _cleanup = QueueCleanup::new(&config);
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Duration::from_secs(600)));
        let (routing, storage) = (Arbiter::new(), Arbiter::new());
        let sink: Arc<dyn Sink> = Arc::new(RabbitSink::with_connection_name(
            config.clone(),
            unique("actix-sink"),
        ));
        let publisher =
            Supervisor::start_in_arbiter(&routing.handle(), move |_| Publisher::new(sink, 16));
        let aggregator = Supervisor::start_in_arbiter(&storage.handle(), {
            let store = store.clone();
            move |_| Aggregator::new(store, Duration::from_secs(600), 16)
        });
        let stop = CancellationToken::new();
        for kind in Kind::ALL {
            let source = RabbitSource::new(config.clone(), kind, stop.clone());
            let aggregator = aggregator.clone();
            Supervisor::start_in_arbiter(&storage.handle(), move |_| {
                Consumer::new(Box::new(source), aggregator, Default::default())
            });
        }

        let batches = [
            Events::Sales(sales("actix-s1", 40)),
            Events::Tweets(tweets("actix-t1", 25)),
            Events::Sales(sales("actix-s2", 7)),
        ];
        for events in batches {
            // The sink connects in the background: the first attempts may be refused.
            let deadline = Instant::now() + WAIT;
            loop {
                let sent = publisher
                    .send(Publish(batch(
                        events.clone(),
                        flujo_actors::event::now_ms(),
                    )))
                    .await
                    .expect("publisher running");
                match sent {
                    Ok(()) => break,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "never published: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        let deadline = Instant::now() + WAIT;
        while stored_counts(store.as_ref()).await != (47, 25) {
            assert!(
                Instant::now() < deadline,
                "stored {:?} of (47, 25)",
                stored_counts(store.as_ref()).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Everything was acked after being stored.
        let deadline = Instant::now() + Duration::from_secs(5);
        for queue in [&config.sales_queue, &config.tweets_queue] {
            while ready_messages(&config.url, queue).await != 0 {
                assert!(Instant::now() < deadline, "{queue} not drained");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        stop.cancel();
        routing.stop();
        storage.stop();
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_queue_is_reported_and_declared_again() {
    run_test(async {
        let config = test_config("deleted");
        let _cleanup = QueueCleanup::new(&config);
        let sink = ready_sink(&config, &unique("deleted-sink")).await;
        sink.publish(batch(Events::Sales(sales("before", 2)), 1))
            .await
            .expect("confirmed");

        let connection = Connection::connect(&config.url, ConnectionProperties::default())
            .await
            .expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .queue_delete(
                config.sales_queue.as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await
            .expect("delete queue");
        let _ = channel.close(200, "OK".into()).await;
        let _ = connection.close(200, "OK".into()).await;

        // Not silently dropped: the publish fails (the client retries, HTTP 503)...
        let err = sink
            .publish(batch(Events::Sales(sales("lost", 2)), 2))
            .await
            .expect_err("unroutable messages are an error");
        assert!(err.0.contains("unroutable"), "{err}");
        // ...and the queue is back for the retry.
        let again = sales("retry", 2);
        sink.publish(batch(Events::Sales(again.clone()), 3))
            .await
            .expect("confirmed after re-declare");
        let mut source = RabbitSource::new(config.clone(), Kind::Sale, CancellationToken::new());
        assert_eq!(all_sales(&read_events(&mut source, 2).await), again);
    })
    .await;
}
