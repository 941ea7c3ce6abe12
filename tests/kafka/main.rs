//! The Kafka bus against a real broker (tansu or Kafka) at `FLUJO_TEST_KAFKA_BROKERS`
//! (default `127.0.0.1:9092`; start one with `scripts/services.sh up`). Every test
//! uses its own random topics and consumer groups, so tests can run concurrently and
//! against a broker that holds older data.

mod groups;
mod positions;
mod round_trip;
#[path = "../support/mod.rs"]
mod support;

use flujo::components::kafka::{
    ensure_topics, KafkaConfig, KafkaSink, KafkaSource, RECEIVED_AT_HEADER,
};
use flujo_actors::consumer::{Delivery, Source};
use flujo_actors::event::{Events, Kind, Sale, Tweet};
use flujo_actors::publisher::Sink;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio_util::sync::CancellationToken;

/// Bound of anything that involves a consumer group (tansu joins take seconds).
const GROUP_TIMEOUT: Duration = Duration::from_secs(45);
/// Bound of a broker request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration with fresh topics and group (in `group` assignment), after
/// checking the broker answers.
/// Also sends the code's logs to the test output (`RUST_LOG`, default `warn`).
async fn config() -> KafkaConfig {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    require_kafka(Duration::from_secs(5)).await;
    let brokers = kafka_brokers();
    let id = uuid::Uuid::now_v7().simple().to_string();
    KafkaConfig {
        brokers,
        sales_topic: format!("t-{id}-sales"),
        tweets_topic: format!("t-{id}-tweets"),
        group_id: format!("g-{id}"),
        // These tests are about the group's offsets and sharing; static
        // assignment has its own (positions.rs).
        assignment: "group".into(),
        ..KafkaConfig::default()
    }
}

/// Creates the topics of `config` (when missing) and a sink publishing to them.
async fn topics_and_sink(config: &KafkaConfig) -> KafkaSink {
    ensure_topics(config).await.expect("topics");
    KafkaSink::new(config).expect("sink")
}

/// A store that holds no positions, for sources whose deliveries a test reads
/// without applying them.
fn empty_store() -> Arc<dyn flujo_actors::store::Store> {
    Arc::new(flujo_actors::store::MemoryStore::new(Duration::from_secs(
        60,
    )))
}

/// The ids of `events`, as a set.
fn id_set(events: &Events) -> BTreeSet<String> {
    events.ids().into_iter().collect()
}

/// Each event of `batches` by its id, with the receive time of its batch.
fn by_id<T>(batches: &[(Vec<T>, i64)], id: impl Fn(&T) -> &str) -> HashMap<String, (&T, i64)> {
    let events = batches
        .iter()
        .flat_map(|(v, at)| v.iter().map(move |e| (e, *at)));
    events.map(|(e, at)| (id(e).to_owned(), (e, at))).collect()
}

/// Partition count of `topic` per the broker's metadata.
async fn partitions_of(brokers: &str, topic: &str) -> usize {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .expect("client");
        let metadata = client
            .fetch_metadata(Some(&topic), REQUEST_TIMEOUT)
            .expect("metadata");
        let t = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .expect("topic in metadata");
        assert!(t.error().is_none(), "topic {topic}: {:?}", t.error());
        t.partitions().len()
    })
    .await
    .expect("metadata task")
}

/// One message as read by a plain rdkafka consumer.
#[derive(Debug)]
struct Plain {
    partition: i32,
    offset: i64,
    key: String,
    json: Value,
    received_at: Option<String>,
}

/// The event `m` carries, found by its id in `by_id` (`what` names its kind in
/// messages): asserts `m` is its canonical JSON with its batch's receive time.
fn plain_event<'a, T: serde::Serialize>(
    m: &Plain,
    by_id: &HashMap<String, (&'a T, i64)>,
    what: &str,
) -> &'a T {
    let id = m.json["id"].as_str().expect("id");
    let (event, at) = by_id[id];
    let json = serde_json::to_value(event).expect("json");
    assert_eq!(m.json, json, "{what} {id}");
    assert_eq!(m.received_at.as_deref(), Some(at.to_string().as_str()));
    event
}

/// Reads `count` messages of `topic` (of `config`) from the beginning of every
/// partition with a plain `BaseConsumer` (manual assignment, no group), independent
/// of `KafkaSource`.
async fn read_plain(config: &KafkaConfig, topic: &str, count: usize) -> Vec<Plain> {
    let (brokers, topic, partitions) =
        (config.brokers.clone(), topic.to_owned(), config.partitions);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("plain-{}", uuid::Uuid::now_v7()))
            .set("enable.auto.commit", "false")
            .create()
            .expect("plain consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + GROUP_TIMEOUT;
        let mut out = Vec::new();
        while out.len() < count {
            assert!(
                Instant::now() < deadline,
                "plain consumer read {} of {count} messages of {topic} in {GROUP_TIMEOUT:?}",
                out.len()
            );
            let Some(result) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = result.expect("plain consumer error");
            let received_at = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == RECEIVED_AT_HEADER)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            out.push(Plain {
                partition: m.partition(),
                offset: m.offset(),
                key: String::from_utf8_lossy(m.key().expect("message key")).into_owned(),
                json: serde_json::from_slice(m.payload().expect("payload")).expect("JSON payload"),
                received_at,
            });
        }
        // Nothing beyond what was published.
        if let Some(Ok(extra)) = consumer.poll(Duration::from_millis(500)) {
            panic!("unexpected extra message at offset {}", extra.offset());
        }
        out
    })
    .await
    .expect("plain reader task")
}

/// What one source saw: every delivered event id, per delivery.
#[derive(Debug, Default)]
struct Seen {
    deliveries: Vec<Delivery>,
}

impl Seen {
    fn ids(&self) -> Vec<String> {
        self.deliveries
            .iter()
            .flat_map(|d| d.batch.events.ids())
            .collect()
    }
}

/// Runs `source` (next → commit) until `stop` is cancelled, recording every delivery
/// into `seen`; gives the source back.
fn spawn_consumer(
    mut source: KafkaSource,
    seen: Arc<Mutex<Seen>>,
) -> tokio::task::JoinHandle<KafkaSource> {
    tokio::spawn(async move {
        while let Some(delivery) = source.next().await {
            let token = delivery.token;
            seen.lock().expect("seen").deliveries.push(delivery);
            source.commit(token).await.expect("commit");
        }
        source
    })
}

/// Waits until `done()` holds, or panics with `what` after `timeout`.
async fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads (and commits) deliveries until every id of `want` was seen, then whatever
/// else comes within a quiet period of 2 s: every id seen, in delivery order.
async fn read_all(source: &mut KafkaSource, want: &BTreeSet<String>) -> Vec<String> {
    let deliveries = read_until(source, want, true, GROUP_TIMEOUT).await;
    let mut seen: Vec<String> = deliveries
        .iter()
        .flat_map(|d| d.batch.events.ids())
        .collect();
    // Anything else of the topic would come within this quiet period.
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(2), source.next()).await {
        seen.extend(d.batch.events.ids());
        source.commit(d.token).await.expect("commit");
    }
    seen
}

/// Reads deliveries from `source` until every id of `want` was seen (committing
/// each when `commit`), or panics after `timeout`.
async fn read_until(
    source: &mut KafkaSource,
    want: &BTreeSet<String>,
    commit: bool,
    timeout: Duration,
) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    let mut seen = BTreeSet::new();
    while !want.is_subset(&seen) {
        let delivery = tokio::time::timeout_at(deadline, source.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out after {timeout:?}: saw {} of {} ids of {}",
                    want.intersection(&seen).count(),
                    want.len(),
                    source.topic()
                )
            })
            .expect("source stopped");
        seen.extend(delivery.batch.events.ids());
        if commit {
            source.commit(delivery.token).await.expect("commit");
        }
        got.push(delivery);
    }
    got
}
