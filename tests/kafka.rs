//! The Kafka bus against a real broker (tansu or Kafka) at `FLUJO_TEST_KAFKA_BROKERS`
//! (default `127.0.0.1:9092`; start one with `scripts/services.sh up`). Every test
//! uses its own random topics and consumer groups, so tests can run concurrently and
//! against a broker that holds older data.

use flujo::components::kafka::{
    ensure_topics, KafkaConfig, KafkaSink, KafkaSource, RECEIVED_AT_HEADER,
};
use flujo_actors::consumer::{Delivery, Source};
use flujo_actors::event::{Category, Events, Kind, Sale, Tweet, Weather};
use flujo_actors::messages::Batch;
use flujo_actors::publisher::Sink;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Bound of anything that involves a consumer group (tansu joins take seconds).
const GROUP_TIMEOUT: Duration = Duration::from_secs(45);
/// Bound of a broker request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn brokers() -> String {
    std::env::var("FLUJO_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A configuration with fresh topics and group, after checking the broker answers.
/// Also sends the code's logs to the test output (`RUST_LOG`, default `warn`).
async fn config() -> KafkaConfig {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let brokers = brokers();
    let probe = brokers.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &probe)
            .create()
            .map_err(|e| e.to_string())?;
        client
            .fetch_metadata(None, Duration::from_secs(5))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .expect("probe task");
    if let Err(e) = answer {
        panic!(
            "no Kafka broker answers at {brokers} ({e}); start one with `scripts/services.sh up` \
             or point FLUJO_TEST_KAFKA_BROKERS at one"
        );
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    KafkaConfig {
        brokers,
        sales_topic: format!("t-{id}-sales"),
        tweets_topic: format!("t-{id}-tweets"),
        group_id: format!("g-{id}"),
        ..KafkaConfig::default()
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
            quantity: 1 + (i % 5) as u64,
        })
        .collect()
}

fn tweets(prefix: &str, n: usize, locations: usize) -> Vec<Tweet> {
    (0..n)
        .map(|i| Tweet {
            id: format!("{prefix}-{i}"),
            ts: 1_700_000_000_000 + i as i64,
            location: format!("city-{}", i % locations),
            weather: Weather::ALL[i % 6],
            temperature: -10.5 + (i % 50) as f64,
            humidity: (i % 101) as f64,
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

/// Reads `count` messages of `topic` from the beginning of every partition with a
/// plain `BaseConsumer` (manual assignment, no group), independent of `KafkaSource`.
async fn read_plain(brokers: &str, topic: &str, partitions: i32, count: usize) -> Vec<Plain> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_once_with_the_configured_partitions() {
    let config = KafkaConfig {
        partitions: 2,
        ..config().await
    };
    let started = Instant::now();
    ensure_topics(&config).await.expect("first ensure_topics");
    ensure_topics(&config)
        .await
        .expect("second ensure_topics (topics exist)");
    for topic in [&config.sales_topic, &config.tweets_topic] {
        assert_eq!(partitions_of(&config.brokers, topic).await, 2, "{topic}");
    }
    let sink = KafkaSink::new(&config).expect("sink");
    sink.ready()
        .await
        .expect("sink ready once the topics exist");
    let missing = KafkaSink::new(&KafkaConfig {
        sales_topic: format!("{}-missing", config.sales_topic),
        ..config.clone()
    })
    .expect("sink");
    let err = missing.ready().await.expect_err("topic missing");
    assert!(err.0.contains("missing"), "{err}");
    println!("topic creation: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_travel_as_canonical_json_keyed_and_come_back_exactly() {
    let config = config().await;
    ensure_topics(&config).await.expect("topics");
    let started = Instant::now();
    let sink = KafkaSink::new(&config).expect("sink");
    assert_eq!(sink.name(), "kafka");

    // Several batches per kind, each with its own receive time.
    let sale_batches: Vec<(Vec<Sale>, i64)> = (0..3)
        .map(|b| (sales(&format!("s{b}"), 40), 1_800_000_000_000 + b))
        .collect();
    let tweet_batches: Vec<(Vec<Tweet>, i64)> = (0..2)
        .map(|b| (tweets(&format!("w{b}"), 30, 9), 1_800_000_001_000 + b))
        .collect();
    for (events, at) in &sale_batches {
        sink.publish(batch(Events::Sales(events.clone()), *at))
            .await
            .expect("publish sales");
    }
    for (events, at) in &tweet_batches {
        sink.publish(batch(Events::Tweets(events.clone()), *at))
            .await
            .expect("publish tweets");
    }
    println!("published 180 events: {:?}", started.elapsed());

    // An independent plain consumer sees canonical JSON, keys and headers.
    let sales_by_id: HashMap<String, (&Sale, i64)> = sale_batches
        .iter()
        .flat_map(|(v, at)| v.iter().map(move |s| (s.id.clone(), (s, *at))))
        .collect();
    let plain = read_plain(
        &config.brokers,
        &config.sales_topic,
        config.partitions,
        sales_by_id.len(),
    )
    .await;
    let mut per_key: BTreeMap<String, Vec<&Plain>> = BTreeMap::new();
    for m in &plain {
        let id = m.json["id"].as_str().expect("id");
        let (sale, at) = sales_by_id[id];
        assert_eq!(
            m.json,
            serde_json::to_value(sale).expect("json"),
            "sale {id}"
        );
        let fields: BTreeSet<&str> = m
            .json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from(["id", "ts", "category", "product_id", "price", "quantity"])
        );
        assert_eq!(m.key, sale.category.as_str(), "key of sale {id}");
        assert_eq!(m.received_at.as_deref(), Some(at.to_string().as_str()));
        per_key.entry(m.key.clone()).or_default().push(m);
    }
    assert_eq!(per_key.len(), 4, "every category");
    // One key → one partition, in publish order.
    for (key, mut msgs) in per_key {
        let partitions: BTreeSet<i32> = msgs.iter().map(|m| m.partition).collect();
        assert_eq!(partitions.len(), 1, "key {key} spread over {partitions:?}");
        msgs.sort_by_key(|m| m.offset);
        let order: Vec<&str> = msgs
            .iter()
            .map(|m| m.json["id"].as_str().unwrap_or(""))
            .collect();
        let expected: Vec<&str> = sale_batches
            .iter()
            .flat_map(|(v, _)| v.iter())
            .filter(|s| s.category.as_str() == key)
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(order, expected, "order within {key}");
    }
    let tweets_by_id: HashMap<String, (&Tweet, i64)> = tweet_batches
        .iter()
        .flat_map(|(v, at)| v.iter().map(move |t| (t.id.clone(), (t, *at))))
        .collect();
    let plain = read_plain(
        &config.brokers,
        &config.tweets_topic,
        config.partitions,
        tweets_by_id.len(),
    )
    .await;
    for m in &plain {
        let id = m.json["id"].as_str().expect("id");
        let (tweet, at) = tweets_by_id[id];
        assert_eq!(
            m.json,
            serde_json::to_value(tweet).expect("json"),
            "tweet {id}"
        );
        let fields: BTreeSet<&str> = m
            .json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected =
            BTreeSet::from(["id", "ts", "location", "weather", "temperature", "humidity"]);
        if tweet.text.is_some() {
            expected.insert("text");
        }
        assert_eq!(fields, expected);
        assert_eq!(m.key, tweet.location, "key of tweet {id}");
        assert_eq!(m.received_at.as_deref(), Some(at.to_string().as_str()));
    }
    println!("plain consumer checked: {:?}", started.elapsed());

    // Both sources in one group (as in a consumer process) read everything back.
    let stop = CancellationToken::new();
    let sale_source = KafkaSource::new(&config, Kind::Sale, stop.clone()).expect("source");
    let tweet_source = KafkaSource::new(&config, Kind::Tweet, stop.clone()).expect("source");
    assert_eq!(sale_source.name(), "kafka");
    let sale_seen = Arc::new(Mutex::new(Seen::default()));
    let tweet_seen = Arc::new(Mutex::new(Seen::default()));
    let sale_task = spawn_consumer(sale_source, sale_seen.clone());
    let tweet_task = spawn_consumer(tweet_source, tweet_seen.clone());
    let total = sales_by_id.len() + tweets_by_id.len();
    wait_until(GROUP_TIMEOUT, "both sources read everything", || {
        sale_seen.lock().expect("seen").ids().len() + tweet_seen.lock().expect("seen").ids().len()
            >= total
    })
    .await;
    println!("sources read everything back: {:?}", started.elapsed());
    // Let statistics refresh the lag once everything is committed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.cancel();
    let sale_source = sale_task.await.expect("sales consumer");
    let tweet_source = tweet_task.await.expect("tweets consumer");
    assert_eq!(sale_source.lag(), Some(0), "sales lag after reading all");
    assert_eq!(tweet_source.lag(), Some(0), "tweets lag after reading all");

    let sale_seen = sale_seen.lock().expect("seen");
    let mut got: Vec<Sale> = Vec::new();
    for d in &sale_seen.deliveries {
        let Events::Sales(v) = &*d.batch.events else {
            panic!("tweets from the sales topic");
        };
        assert!(d.batch.admitted.is_none());
        let min_at = v
            .iter()
            .map(|s| sales_by_id[&s.id].1)
            .min()
            .expect("events");
        assert_eq!(d.batch.received_at_ms, min_at, "delivery's receive time");
        got.extend(v.iter().cloned());
    }
    // Exactly the events published, each once, in publish order per category.
    let mut want: Vec<Sale> = sale_batches.iter().flat_map(|(v, _)| v.clone()).collect();
    for cat in Category::ALL {
        let a: Vec<&str> = got
            .iter()
            .filter(|s| s.category == cat)
            .map(|s| s.id.as_str())
            .collect();
        let b: Vec<&str> = want
            .iter()
            .filter(|s| s.category == cat)
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(a, b, "order within {cat}");
    }
    got.sort_by(|a, b| a.id.cmp(&b.id));
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, want);

    let tweet_seen = tweet_seen.lock().expect("seen");
    let mut got: Vec<Tweet> = Vec::new();
    for d in &tweet_seen.deliveries {
        let Events::Tweets(v) = &*d.batch.events else {
            panic!("sales from the tweets topic");
        };
        got.extend(v.iter().cloned());
    }
    let mut want: Vec<Tweet> = tweet_batches.iter().flat_map(|(v, _)| v.clone()).collect();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, want);
    println!(
        "round trip: {} sale and {} tweet deliveries, {:?}",
        sale_seen.deliveries.len(),
        tweet_seen.deliveries.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_when_told() {
    let config = config().await;
    ensure_topics(&config).await.expect("topics");
    let started = Instant::now();
    let sink = KafkaSink::new(&config).expect("sink");
    let first = Events::Sales(sales("c", 20));
    let first_ids: BTreeSet<String> = ids(&first).into_iter().collect();
    sink.publish(batch(first, 1)).await.expect("publish");

    // A delivery taken and never committed (the process died before the store).
    let mut a = KafkaSource::new(&config, Kind::Sale, CancellationToken::new()).expect("a");
    let delivery = tokio::time::timeout(GROUP_TIMEOUT, a.next())
        .await
        .expect("first delivery in time")
        .expect("delivery");
    let uncommitted: BTreeSet<String> = delivery.batch.events.ids().into_iter().collect();
    assert!(!uncommitted.is_empty());
    drop(delivery);
    drop(a);
    println!(
        "a took {} events, dropped: {:?}",
        uncommitted.len(),
        started.elapsed()
    );

    // The same group reads them again; this time they are stored and committed.
    let mut b = KafkaSource::new(&config, Kind::Sale, CancellationToken::new()).expect("b");
    let again = read_until(&mut b, &first_ids, true, GROUP_TIMEOUT).await;
    let again_ids: BTreeSet<String> = again.iter().flat_map(|d| d.batch.events.ids()).collect();
    assert!(
        uncommitted.is_subset(&again_ids),
        "redelivered after no commit"
    );
    drop(b);
    println!("b read all 20 again and committed: {:?}", started.elapsed());

    // After the commit, the group moves on: only new events come.
    let second = Events::Sales(sales("d", 5));
    let second_ids: BTreeSet<String> = ids(&second).into_iter().collect();
    sink.publish(batch(second, 2)).await.expect("publish");
    let mut c = KafkaSource::new(&config, Kind::Sale, CancellationToken::new()).expect("c");
    let mut seen: Vec<String> = read_until(&mut c, &second_ids, true, GROUP_TIMEOUT)
        .await
        .iter()
        .flat_map(|d| d.batch.events.ids())
        .collect();
    // Anything else of the topic would come within this quiet period.
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(2), c.next()).await {
        seen.extend(d.batch.events.ids());
        c.commit(d.token).await.expect("commit");
    }
    let old: Vec<&String> = seen.iter().filter(|id| first_ids.contains(*id)).collect();
    assert!(old.is_empty(), "committed events came again: {old:?}");
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>(),
        second_ids.iter().collect()
    );
    println!("commit only after store: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sources_in_a_group_share_the_partitions() {
    let config = KafkaConfig {
        batch_max: 25,
        ..config().await
    };
    ensure_topics(&config).await.expect("topics");
    assert_eq!(
        partitions_of(&config.brokers, &config.tweets_topic).await,
        3
    );
    let started = Instant::now();
    let sink = KafkaSink::new(&config).expect("sink");
    let mut all: BTreeSet<String> = BTreeSet::new();

    // Phase 1: only `a` is in the group.
    let phase1 = Events::Tweets(tweets("p1", 150, 30));
    all.extend(ids(&phase1));
    sink.publish(batch(phase1, 1)).await.expect("publish");
    let stop = CancellationToken::new();
    let a_seen = Arc::new(Mutex::new(Seen::default()));
    let a = spawn_consumer(
        KafkaSource::new(&config, Kind::Tweet, stop.clone()).expect("a"),
        a_seen.clone(),
    );
    wait_until(GROUP_TIMEOUT, "a reads its first delivery", || {
        !a_seen.lock().expect("seen").deliveries.is_empty()
    })
    .await;
    println!("a consuming: {:?}", started.elapsed());

    // Phase 2: `b` joins (a rebalance) while more events arrive.
    let b_seen = Arc::new(Mutex::new(Seen::default()));
    let b = spawn_consumer(
        KafkaSource::new(&config, Kind::Tweet, stop.clone()).expect("b"),
        b_seen.clone(),
    );
    for round in 0..6 {
        let more = Events::Tweets(tweets(&format!("p2r{round}"), 25, 30));
        all.extend(ids(&more));
        sink.publish(batch(more, 2)).await.expect("publish");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let union = || -> BTreeSet<String> {
        let mut u: BTreeSet<String> = a_seen.lock().expect("seen").ids().into_iter().collect();
        u.extend(b_seen.lock().expect("seen").ids());
        u
    };
    wait_until(GROUP_TIMEOUT, "a and b together read every event", || {
        union().len() >= all.len()
    })
    .await;
    println!("a and b read all {}: {:?}", all.len(), started.elapsed());
    // Phase 3: both are members now; new events are split between them.
    let phase3 = Events::Tweets(tweets("p3", 150, 30));
    let phase3_ids: BTreeSet<String> = ids(&phase3).into_iter().collect();
    all.extend(phase3_ids.iter().cloned());
    sink.publish(batch(phase3, 3)).await.expect("publish");
    wait_until(GROUP_TIMEOUT, "phase 3 read", || {
        union().is_superset(&phase3_ids)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let (a, b) = (a.await.expect("a"), b.await.expect("b"));
    drop((a, b));

    let a_ids = a_seen.lock().expect("seen").ids();
    let b_ids = b_seen.lock().expect("seen").ids();
    let u = union();
    let missing: Vec<&String> = all.difference(&u).collect();
    assert!(missing.is_empty(), "lost events: {missing:?}");
    let unknown: Vec<&String> = u.difference(&all).collect();
    assert!(unknown.is_empty(), "events never published: {unknown:?}");
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for id in a_ids.iter().chain(&b_ids) {
        *counts.entry(id).or_default() += 1;
    }
    let duplicates: Vec<(&&String, &usize)> = counts.iter().filter(|(_, &n)| n > 1).collect();
    let b_phase3 = b_ids.iter().filter(|id| phase3_ids.contains(*id)).count();
    let a_phase3 = a_ids.iter().filter(|id| phase3_ids.contains(*id)).count();
    println!(
        "two sources: a read {} ({a_phase3} of phase 3), b read {} ({b_phase3} of phase 3), \
         {} duplicates {:?}, {:?}",
        a_ids.len(),
        b_ids.len(),
        duplicates.len(),
        duplicates,
        started.elapsed()
    );
    assert!(
        a_phase3 > 0 && b_phase3 > 0,
        "the group split the partitions (a {a_phase3}, b {b_phase3} of phase 3)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_after_its_partitions_were_revoked_is_harmless() {
    let config = config().await;
    ensure_topics(&config).await.expect("topics");
    let started = Instant::now();
    let sink = KafkaSink::new(&config).expect("sink");
    let events = Events::Tweets(tweets("r", 60, 30));
    let all: BTreeSet<String> = ids(&events).into_iter().collect();
    sink.publish(batch(events, 1)).await.expect("publish");

    // `a` takes a delivery and, before it commits, `b` joins the group.
    let stop = CancellationToken::new();
    let mut a = KafkaSource::new(&config, Kind::Tweet, stop.clone()).expect("a");
    let held = tokio::time::timeout(GROUP_TIMEOUT, a.next())
        .await
        .expect("first delivery in time")
        .expect("delivery");
    let held_ids: BTreeSet<String> = held.batch.events.ids().into_iter().collect();
    let b_seen = Arc::new(Mutex::new(Seen::default()));
    let b = spawn_consumer(
        KafkaSource::new(&config, Kind::Tweet, stop.clone()).expect("b"),
        b_seen.clone(),
    );
    // `a` keeps polling, so it takes part in the rebalance; every partition it held is
    // revoked and the uncommitted messages are read again, by `a` or by `b`.
    let mut a_later: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + GROUP_TIMEOUT;
    loop {
        let mut union: BTreeSet<String> = a_later.iter().cloned().collect();
        union.extend(b_seen.lock().expect("seen").ids());
        if union.is_superset(&all) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {} of {} events read again after the rebalance",
            union.intersection(&all).count(),
            all.len()
        );
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), a.next()).await {
            a_later.extend(d.batch.events.ids());
            a.commit(d.token).await.expect("commit of a fresh delivery");
        }
    }
    // The stale token is committed without its revoked partitions, and no error.
    a.commit(held.token)
        .await
        .expect("commit of a delivery whose partitions were revoked must not fail");
    println!(
        "stale commit: a held {}, then read {}, b read {}: {:?}",
        held_ids.len(),
        a_later.len(),
        b_seen.lock().expect("seen").ids().len(),
        started.elapsed()
    );
    // (The loop above can only end once the held messages were read again, i.e.
    // after the rebalance revoked them from `a`; who holds what afterwards varies.)

    // Nothing is left behind: with both members still in the group, only new
    // events come from now on.
    let b_before = b_seen.lock().expect("seen").ids().len();
    let a_seen = Arc::new(Mutex::new(Seen::default()));
    let a = spawn_consumer(a, a_seen.clone());
    let marker = Events::Tweets(tweets("r-marker", 30, 30));
    let marker_ids: BTreeSet<String> = ids(&marker).into_iter().collect();
    sink.publish(batch(marker, 2)).await.expect("publish");
    let after = || -> Vec<String> {
        let mut ids = a_seen.lock().expect("seen").ids();
        ids.extend(
            b_seen
                .lock()
                .expect("seen")
                .ids()
                .into_iter()
                .skip(b_before),
        );
        ids
    };
    wait_until(GROUP_TIMEOUT, "the group reads the new events", || {
        after()
            .into_iter()
            .collect::<BTreeSet<_>>()
            .is_superset(&marker_ids)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    drop((a.await.expect("a"), b.await.expect("b")));
    let seen = after();
    let again: Vec<&String> = seen.iter().filter(|id| all.contains(*id)).collect();
    println!(
        "after the stale commit: {} events read, {} old ones again {again:?}: {:?}",
        seen.len(),
        again.len(),
        started.elapsed()
    );
    assert!(again.is_empty(), "the group had committed all it read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_skipped_without_blocking() {
    let config = config().await;
    ensure_topics(&config).await.expect("topics");
    // Garbage in every partition, by a plain producer, between valid events.
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .expect("producer");
    let sink = KafkaSink::new(&config).expect("sink");
    let good1 = Events::Sales(sales("u1", 8));
    sink.publish(batch(good1.clone(), 1))
        .await
        .expect("publish");
    let tweet_json = serde_json::to_vec(&tweets("x", 1, 1)[0]).expect("json");
    for partition in 0..config.partitions {
        for payload in [&b"not json"[..], &b"{\"id\":\"1\"}"[..], &tweet_json[..]] {
            producer
                .send(
                    rdkafka::producer::FutureRecord::<str, [u8]>::to(&config.sales_topic)
                        .partition(partition)
                        .payload(payload),
                    REQUEST_TIMEOUT,
                )
                .await
                .expect("garbage produced");
        }
        producer
            .send(
                rdkafka::producer::FutureRecord::<str, [u8]>::to(&config.sales_topic)
                    .partition(partition)
                    .key("home"),
                REQUEST_TIMEOUT,
            )
            .await
            .expect("empty message produced");
    }
    let good2 = Events::Sales(sales("u2", 8));
    sink.publish(batch(good2.clone(), 2))
        .await
        .expect("publish");
    let good: BTreeSet<String> = ids(&good1).into_iter().chain(ids(&good2)).collect();

    let mut a = KafkaSource::new(&config, Kind::Sale, CancellationToken::new()).expect("a");
    let mut seen: Vec<String> = read_until(&mut a, &good, true, GROUP_TIMEOUT)
        .await
        .iter()
        .flat_map(|d| d.batch.events.ids())
        .collect();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(2), a.next()).await {
        seen.extend(d.batch.events.ids());
        a.commit(d.token).await.expect("commit");
    }
    seen.sort();
    assert_eq!(
        seen,
        good.iter().cloned().collect::<Vec<_>>(),
        "only the valid events, once"
    );
    drop(a);

    // The skipped messages were committed with the rest: the group does not see them again.
    let marker = Events::Sales(sales("u3", 3));
    let marker_ids: BTreeSet<String> = ids(&marker).into_iter().collect();
    sink.publish(batch(marker, 3)).await.expect("publish");
    let mut b = KafkaSource::new(&config, Kind::Sale, CancellationToken::new()).expect("b");
    let again = read_until(&mut b, &marker_ids, true, GROUP_TIMEOUT).await;
    let again: BTreeSet<String> = again.iter().flat_map(|d| d.batch.events.ids()).collect();
    assert_eq!(again, marker_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_batches_come_back_in_bounded_deliveries() {
    let config = KafkaConfig {
        batch_max: 500,
        ..config().await
    };
    ensure_topics(&config).await.expect("topics");
    let sink = KafkaSink::new(&config).expect("sink");
    let started = Instant::now();
    // Batches of 1,000 published concurrently, as concurrent requests would.
    let batches: Vec<Events> = (0..6)
        .map(|b| Events::Sales(sales(&format!("bulk{b}"), 1000)))
        .collect();
    let all: BTreeSet<String> = batches.iter().flat_map(ids).collect();
    let published = futures::future::join_all(
        batches
            .into_iter()
            .enumerate()
            .map(|(i, events)| sink.publish(batch(events, i as i64))),
    )
    .await;
    for result in published {
        result.expect("publish");
    }
    let publish_time = started.elapsed();
    println!(
        "bulk: published {} in {publish_time:?} ({:.0} events/s, debug build)",
        all.len(),
        all.len() as f64 / publish_time.as_secs_f64()
    );
    let started = Instant::now();
    let mut source = KafkaSource::new(&config, Kind::Sale, CancellationToken::new()).expect("src");
    // Two deliveries a little apart, so that statistics (every second) arrive in
    // between: the lag is then what is left of the topic.
    let mut deliveries = Vec::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(GROUP_TIMEOUT, source.next())
            .await
            .expect("delivery in time")
            .expect("delivery");
        source.commit(d.token).await.expect("commit");
        deliveries.push(d);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let lag = source.lag().expect("lag known after statistics");
    println!("bulk: lag after 2 deliveries: {lag}");
    assert!(
        lag > 0 && lag <= all.len() as i64,
        "lag {lag} of {}",
        all.len()
    );
    let rest: BTreeSet<String> = all
        .difference(
            &deliveries
                .iter()
                .flat_map(|d| d.batch.events.ids())
                .collect(),
        )
        .cloned()
        .collect();
    deliveries.extend(read_until(&mut source, &rest, true, Duration::from_secs(120)).await);
    let read_time = started.elapsed();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for d in &deliveries {
        assert!(
            d.batch.events.len() <= config.batch_max,
            "delivery too large"
        );
        for id in d.batch.events.ids() {
            *counts.entry(id).or_default() += 1;
        }
    }
    let duplicates = counts.values().filter(|&&n| n > 1).count();
    println!(
        "bulk: read back in {} deliveries in {read_time:?} (incl. group join), {duplicates} duplicates",
        deliveries.len()
    );
    assert_eq!(counts.len(), all.len());
    assert_eq!(duplicates, 0, "one reader, no rebalance: no duplicates");
}
