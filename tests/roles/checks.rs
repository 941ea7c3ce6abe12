//! Comparing every KPI of the query API with the ground truth, reading the bus with
//! a plain Kafka client, and bounding a test in time.

use super::*;

pub(crate) fn prices_of(what: &str, v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: prices is not an array: {v}"))
        .iter()
        .map(|p| {
            p.as_f64()
                .unwrap_or_else(|| panic!("{what}: not a number: {p}"))
        })
        .collect()
}

pub(crate) fn same_floats(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(*x, *y))
}

pub(crate) fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The monitored products' price streams as read from the bus (see
/// [`stream_order_on_bus`]).
pub(crate) type StreamOrder = tokio::task::JoinHandle<Result<HashMap<String, Vec<f64>>, String>>;

/// [`assert_every_kpi`] once `order` (if any) was read from the bus, then the
/// totals again a moment later: nothing arrives late and counts twice.
pub(crate) async fn assert_every_kpi_stays(
    consumer: &TestServer,
    sales: &DedupTruth,
    tweets: &DedupTruth,
    order: Option<StreamOrder>,
) {
    let order = match order {
        Some(task) => Some(join(task).await.unwrap_or_else(|e| panic!("{e}"))),
        None => None,
    };
    assert_every_kpi(consumer, sales, tweets, order.as_ref()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_sales_kpis(sales, &consumer.get_ok("/v1/kpis/sales").await);
    assert_tweets_kpis(tweets, &consumer.get_ok("/v1/kpis/tweets").await);
}

/// Compares every KPI of the query API with the ground truth: sales and tweets KPIs,
/// product rankings (global and per category, every page), the location ranking
/// (every page) and each monitored product's price stream (in the order of
/// `stream_order` when the bus defines it, else as a multiset).
pub(crate) async fn assert_every_kpi(
    consumer: &TestServer,
    sales: &DedupTruth,
    tweets: &DedupTruth,
    stream_order: Option<&HashMap<String, Vec<f64>>>,
) {
    assert_sales_kpis(sales, &consumer.get_ok("/v1/kpis/sales").await);
    assert_tweets_kpis(tweets, &consumer.get_ok("/v1/kpis/tweets").await);

    let product_check = |what: &str, item: &Value, want: &(String, u64)| {
        assert_eq!(
            item["product_id"].as_str(),
            Some(want.0.as_str()),
            "{what}: {item}"
        );
        assert_eq!(item["quantity"].as_u64(), Some(want.1), "{what}: {item}");
    };
    let global = sales.product_ranking(None);
    assert_ranking_pages(
        consumer,
        "/v1/rankings/products",
        &global,
        17,
        false,
        product_check,
    )
    .await;
    for c in CATEGORIES {
        let want = sales.product_ranking(Some(c));
        let base = format!("/v1/rankings/products?category={c}");
        assert_ranking_pages(consumer, &base, &want, 9, false, product_check).await;
    }

    let locations = tweets.location_ranking();
    assert_ranking_pages(
        consumer,
        "/v1/rankings/locations",
        &locations,
        5,
        false,
        assert_location_item,
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
                "{path}: not in the (ts, id) order of the {c} sales on the bus (newest last):\n\
                 got    {got:?}\non bus {on_bus:?}"
            );
        }
    }
}

/// One message as a plain `BaseConsumer` reads it.
#[derive(Debug)]
pub(crate) struct Plain {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<String>,
    pub(crate) json: Value,
}

/// Reads `topic` from the beginning of every partition with a plain `BaseConsumer`
/// (manual assignment, no group) up to the high watermarks it had when the reading
/// began (or until it was quiet for 10 s, or `within` passed). Returns the messages in
/// (partition, offset) order, and the ids of `want` it never saw.
pub(crate) async fn read_topic(
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
/// returns the price stream of each category's monitored product as the store must
/// hold it: the first occurrence of each id on the bus, in (`ts`, `id`) order (the
/// `ts` the client sent, carried on the bus).
///
/// Runs in a task of its own (the topic is complete once the client is done), so the
/// reading overlaps the wait for the consumer; await it with [`join`].
pub(crate) fn stream_order_on_bus(
    topic: &str,
    work: &Workload,
    flow: &Flow,
    sales: &DedupTruth,
) -> StreamOrder {
    let want = work.accepted_sale_ids(flow);
    let monitored: HashMap<String, String> = sales
        .first_product
        .iter()
        .map(|(c, p)| (c.clone(), p.clone()))
        .collect();
    tokio::spawn(read_stream_order(topic.to_owned(), want, monitored))
}

pub(crate) async fn read_stream_order(
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
    let mut points: HashMap<String, Vec<(i64, String, f64)>> = HashMap::new();
    for m in &messages {
        let id = m.json["id"].as_str().expect("id").to_owned();
        if !seen.insert(id.clone()) {
            continue;
        }
        let c = m.json["category"].as_str().expect("category");
        let product = monitored
            .get(c)
            .unwrap_or_else(|| panic!("category {c} of {}", m.json));
        if m.json["product_id"].as_str() == Some(product.as_str()) {
            let ts = m.json["ts"].as_i64().expect("ts");
            let price = m.json["price"].as_f64().expect("price");
            points
                .entry(c.to_owned())
                .or_default()
                .push((ts, id, price));
        }
    }
    let order = points
        .into_iter()
        .map(|(c, mut v)| {
            v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            (c, v.into_iter().map(|p| p.2).collect())
        })
        .collect();
    Ok(order)
}

/// Awaits a task, re-raising its panic.
pub(crate) async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    task.await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Runs a test body within `TEST_TIMEOUT` (dropping it, and so killing its child
/// processes, when it takes longer).
pub(crate) async fn bounded<F: Future<Output = ()>>(name: &str, body: F) {
    let started = Instant::now();
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish within {TEST_TIMEOUT:?}"));
    println!("{name}: passed in {:?}", started.elapsed());
}
