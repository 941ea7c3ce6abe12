//! Topics and messages: created once with the configured partitions, canonical
//! JSON keyed by product coming back exactly, undecodable messages skipped, bulk
//! batches in bounded deliveries.

use super::*;

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
    let sink = topics_and_sink(&config).await;
    let started = Instant::now();
    assert_eq!(sink.name(), "kafka");

    // Several batches per kind, each with its own receive time.
    let sale_batches: Vec<(Vec<Sale>, i64)> = (0..3)
        .map(|b| (actor_sales(&format!("s{b}"), 40), 1_800_000_000_000 + b))
        .collect();
    let tweet_batches: Vec<(Vec<Tweet>, i64)> = (0..2)
        .map(|b| (actor_tweets(&format!("w{b}"), 30, 9), 1_800_000_001_000 + b))
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
    let sales_by_id = by_id(&sale_batches, |s: &Sale| &s.id);
    let plain = read_plain(&config, &config.sales_topic, sales_by_id.len()).await;
    let mut per_key: BTreeMap<String, Vec<&Plain>> = BTreeMap::new();
    for m in &plain {
        let sale = plain_event(m, &sales_by_id, "sale");
        let id = &sale.id;
        assert_canonical_sale_fields(&format!("sale {id}"), &m.json);
        assert_eq!(m.key, sale.product_id, "key of sale {id}");
        per_key.entry(m.key.clone()).or_default().push(m);
    }
    assert_eq!(per_key.len(), 7, "every product");
    // Products spread the sales over more than one partition.
    let used: BTreeSet<i32> = plain.iter().map(|m| m.partition).collect();
    assert!(used.len() > 1, "every sale on partitions {used:?}");
    // One key → one partition, in publish order.
    for (key, mut msgs) in per_key {
        let partitions: BTreeSet<i32> = msgs.iter().map(|m| m.partition).collect();
        assert_eq!(partitions.len(), 1, "key {key} spread over {partitions:?}");
        // The partition librdkafka's murmur2 partitioner chose is the shard a
        // sharded Valkey store gives the key among as many shards.
        let count = config.partitions as usize;
        assert_eq!(
            partitions.first().map(|&p| p as usize),
            Some(flujo::components::valkey::key_shard(&key, count)),
            "key {key}: the producer's partition among {count}"
        );
        msgs.sort_by_key(|m| m.offset);
        let order: Vec<&str> = msgs
            .iter()
            .map(|m| m.json["id"].as_str().unwrap_or(""))
            .collect();
        let expected: Vec<&str> = sale_batches
            .iter()
            .flat_map(|(v, _)| v.iter())
            .filter(|s| s.product_id == key)
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(order, expected, "order within {key}");
    }
    let tweets_by_id = by_id(&tweet_batches, |t: &Tweet| &t.id);
    let plain = read_plain(&config, &config.tweets_topic, tweets_by_id.len()).await;
    for m in &plain {
        let tweet = plain_event(m, &tweets_by_id, "tweet");
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
        assert_eq!(m.key, tweet.location, "key of tweet {}", tweet.id);
    }
    println!("plain consumer checked: {:?}", started.elapsed());

    // Both sources in one group (as in a consumer process) read everything back.
    let stop = CancellationToken::new();
    let sale_source =
        KafkaSource::new(&config, Kind::Sale, empty_store(), stop.clone()).expect("source");
    let tweet_source =
        KafkaSource::new(&config, Kind::Tweet, empty_store(), stop.clone()).expect("source");
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
    // Exactly the events published, each once, in publish order per product (the
    // message key).
    let mut want: Vec<Sale> = sale_batches.iter().flat_map(|(v, _)| v.clone()).collect();
    let products: BTreeSet<String> = want.iter().map(|s| s.product_id.clone()).collect();
    for product in &products {
        let a: Vec<&str> = got
            .iter()
            .filter(|s| &s.product_id == product)
            .map(|s| s.id.as_str())
            .collect();
        let b: Vec<&str> = want
            .iter()
            .filter(|s| &s.product_id == product)
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(a, b, "order within {product}");
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
async fn undecodable_messages_are_skipped_without_blocking() {
    let config = config().await;
    let sink = topics_and_sink(&config).await;
    // Garbage in every partition, by a plain producer, between valid events.
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .expect("producer");
    let good1 = Events::Sales(actor_sales("u1", 8));
    sink.publish(batch(good1.clone(), 1))
        .await
        .expect("publish");
    let tweet_json = serde_json::to_vec(&actor_tweets("x", 1, 1)[0]).expect("json");
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
    let good2 = Events::Sales(actor_sales("u2", 8));
    sink.publish(batch(good2.clone(), 2))
        .await
        .expect("publish");
    let good: BTreeSet<String> = Events::ids(&good1)
        .into_iter()
        .chain(Events::ids(&good2))
        .collect();

    let mut a =
        KafkaSource::new(&config, Kind::Sale, empty_store(), CancellationToken::new()).expect("a");
    let mut seen = read_all(&mut a, &good).await;
    seen.sort();
    assert_eq!(
        seen,
        good.iter().cloned().collect::<Vec<_>>(),
        "only the valid events, once"
    );
    drop(a);

    // The skipped messages were committed with the rest: the group does not see them again.
    let marker = Events::Sales(actor_sales("u3", 3));
    let marker_ids = id_set(&marker);
    sink.publish(batch(marker, 3)).await.expect("publish");
    let mut b =
        KafkaSource::new(&config, Kind::Sale, empty_store(), CancellationToken::new()).expect("b");
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
    let sink = topics_and_sink(&config).await;
    let started = Instant::now();
    // Batches of 1,000 published concurrently, as concurrent requests would.
    let batches: Vec<Events> = (0..6)
        .map(|b| Events::Sales(actor_sales(&format!("bulk{b}"), 1000)))
        .collect();
    let all: BTreeSet<String> = batches.iter().flat_map(Events::ids).collect();
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
    let mut source = KafkaSource::new(&config, Kind::Sale, empty_store(), CancellationToken::new())
        .expect("src");
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
