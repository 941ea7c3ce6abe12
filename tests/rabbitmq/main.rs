//! The RabbitMQ bus against a real broker (`FLUJO_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`; start one with `scripts/services.sh up`).
//! Every test uses queues of its own, with random names, and deletes them at the end.

mod broker_faults;
mod round_trip;
#[path = "../support/mod.rs"]
mod support;
mod with_actors;

#[allow(unused_imports)]
use broker_faults::*;
#[allow(unused_imports)]
use with_actors::*;

use actix::{Arbiter, Supervisor};
use flujo::components::rabbitmq::{
    RabbitConfig, RabbitSink, RabbitSource, CONTENT_TYPE, RECEIVED_AT_HEADER,
};
use flujo_actors::aggregator::Aggregator;
use flujo_actors::consumer::{Consumer, Delivery, Source};
use flujo_actors::event::{Events, Kind, Sale, Tweet};
use flujo_actors::messages::Publish;
use flujo_actors::publisher::{Publisher, Sink};
use flujo_actors::store::{MemoryStore, Store};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Upper bound of a whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound of one wait for a delivery, a connection or a confirm.
const WAIT: Duration = Duration::from_secs(30);

fn unique(label: &str) -> String {
    unique_name(&format!("flujo-test-{label}"))
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
    require_rabbitmq().await;
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out");
}

/// Deletes the test's queues when dropped, even when the test failed.
fn queue_cleanup(config: &RabbitConfig) -> QueueCleanup {
    QueueCleanup {
        url: config.url.clone(),
        queues: vec![config.sales_queue.clone(), config.tweets_queue.clone()],
    }
}

async fn ready_sink(config: &RabbitConfig, name: &str) -> RabbitSink {
    let sink = RabbitSink::with_connection_name(config.clone(), name);
    sink.wait_ready(WAIT).await.expect("sink connects");
    sink
}

/// Runs a test body as [`run_test`] does, with queues of its own (deleted at the end,
/// also when the test failed) and a sink connected to them.
async fn with_queues<F, Fut>(label: &str, body: F)
where
    F: FnOnce(RabbitConfig, RabbitSink) -> Fut,
    Fut: Future<Output = ()>,
{
    run_test(async {
        let config = test_config(label);
        let _cleanup = queue_cleanup(&config);
        let sink = ready_sink(&config, &unique(&format!("{label}-sink"))).await;
        body(config, sink).await;
    })
    .await;
}

/// Publishes `events` received at `at`; `what` fails the test unless RabbitMQ
/// confirmed them.
async fn publish(sink: &RabbitSink, events: Events, at: i64, what: &str) {
    sink.publish(batch(events, at)).await.expect(what);
}

/// A source of the sales queue of `config`, never cancelled.
fn sales_source(config: &RabbitConfig) -> RabbitSource {
    RabbitSource::new(config.clone(), Kind::Sale, CancellationToken::new())
}

/// Calls `attempt` until it succeeds, `pause` apart; once [`WAIT`] passed, fails with
/// `what` and the last error.
async fn until_ok<E, F>(what: &str, pause: Duration, mut attempt: impl FnMut() -> F)
where
    E: std::fmt::Display,
    F: Future<Output = Result<(), E>>,
{
    let deadline = Instant::now() + WAIT;
    while let Err(e) = attempt().await {
        assert!(Instant::now() < deadline, "{what}: {e}");
        tokio::time::sleep(pause).await;
    }
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

/// The sales and the tweets of `deliveries`, in delivery order.
fn split_events(deliveries: &[Delivery]) -> (Vec<Sale>, Vec<Tweet>) {
    let (mut sales, mut tweets) = (Vec::new(), Vec::new());
    for d in deliveries {
        match d.batch.events.as_ref() {
            Events::Sales(s) => sales.extend_from_slice(s),
            Events::Tweets(t) => tweets.extend_from_slice(t),
        }
    }
    (sales, tweets)
}

/// The sales of deliveries of a sales queue, in order.
fn all_sales(deliveries: &[Delivery]) -> Vec<Sale> {
    let (sales, tweets) = split_events(deliveries);
    assert!(tweets.is_empty(), "tweets on the sales queue");
    sales
}

/// The tweets of deliveries of a tweets queue, in order.
fn all_tweets(deliveries: &[Delivery]) -> Vec<Tweet> {
    let (sales, tweets) = split_events(deliveries);
    assert!(sales.is_empty(), "sales on the tweets queue");
    tweets
}

/// A connection of the test's own to RabbitMQ at `url`, and a channel on it.
async fn open_channel(url: &str) -> (Connection, Channel) {
    let connecting = Connection::connect(url, ConnectionProperties::default());
    let connection = connecting.await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

/// Ready messages in `queue` (passive declare).
async fn ready_messages(url: &str, queue: &str) -> u32 {
    let (connection, channel) = open_channel(url).await;
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

/// Waits until the sales queue of `config` holds no ready message, failing with
/// `what` after `within`.
async fn wait_sales_drained(config: &RabbitConfig, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while ready_messages(&config.url, &config.sales_queue).await != 0 {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each delivery's `received_at_ms` is the earliest of its events' batches.
fn check_received_at(deliveries: &[Delivery], received_at: &HashMap<String, i64>) {
    for d in deliveries {
        let min = Events::ids(&d.batch.events)
            .iter()
            .map(|id| received_at[id])
            .min()
            .expect("non-empty delivery");
        assert_eq!(d.batch.received_at_ms, min);
        assert!(d.batch.admitted.is_none());
    }
}
