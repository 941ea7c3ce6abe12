//! Shards: the KPIs kept in several independent key sets (each under its own hash
//! tag), on one server (`ValkeyStore::with_shards`) and on a real three-master
//! Valkey Cluster (`valkey+cluster://`). The same events give the same KPIs from
//! 1, 3 and 12 shards and partitions as from `MemoryStore` (float sums within
//! 1e-9 relative), whether batches come with Kafka-like positions (a partition to
//! a shard) or without (an event to the shard of its product or location);
//! resends are still counted once, and the keys spread over every shard and node.

use super::order::{assert_close, order_sales, order_tweets};
use super::*;
use flujo::components::valkey::key_shard;
use flujo_actors::store::Positions;
use serde_json::Value;
use std::collections::BTreeSet;
use support::OwnCluster;

/// The partition of `key` among `partitions`, as a keyed producer gives it (any
/// fixed function of the key: one product, one partition).
fn partition_of(key: &str, partitions: usize) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    (hash % partitions as u64) as usize
}

/// Deliveries of `size` events, as a Kafka consumer of a topic with `partitions`
/// partitions gets them: each event at the next offset of its key's partition.
fn deliveries<E: Clone>(
    events: &[E],
    key: fn(&E) -> &str,
    topic: &str,
    partitions: usize,
    size: usize,
) -> Vec<(Vec<E>, Positions)> {
    let mut next = vec![0i64; partitions];
    events
        .chunks(size)
        .map(|chunk| {
            let mut at = Positions::default();
            for event in chunk {
                let p = partition_of(key(event), partitions);
                let stream = format!("kafka:g:{topic}:{p}");
                let s = match at.streams.iter().position(|s| *s == stream) {
                    Some(s) => s,
                    None => {
                        at.streams.push(stream);
                        at.streams.len() - 1
                    }
                };
                at.offsets.push((s as u32, next[p]));
                next[p] += 1;
            }
            (chunk.to_vec(), at)
        })
        .collect()
}

/// Applies the sales and tweets to `store`: as Kafka deliveries of `partitions`
/// partitions, or without positions when `partitions` is 0. Returns the events
/// applied as new.
async fn apply_all(
    store: &dyn Store,
    sales: &[Sale],
    tweets: &[Tweet],
    partitions: usize,
    size: usize,
) -> usize {
    let mut fresh = 0;
    if partitions == 0 {
        for batch in sales.chunks(size) {
            fresh += store.apply_sales(batch).await.expect("sales").fresh_count();
        }
        for batch in tweets.chunks(size) {
            fresh += store
                .apply_tweets(batch)
                .await
                .expect("tweets")
                .fresh_count();
        }
        return fresh;
    }
    for (batch, at) in deliveries(sales, |s| &s.product_id, "sales", partitions, size) {
        let applied = store.apply_sales_at(&batch, &at).await.expect("sales");
        fresh += applied.fresh_count();
    }
    for (batch, at) in deliveries(tweets, |t| &t.location, "tweets", partitions, size) {
        let applied = store.apply_tweets_at(&batch, &at).await.expect("tweets");
        fresh += applied.fresh_count();
    }
    fresh
}

/// Asserts every answer of `store` is the reference's (float sums within 1e-9).
async fn assert_answers(store: &dyn Store, reference: &BTreeMap<String, String>, label: &str) {
    let got = answers(store).await;
    assert_eq!(got.len(), reference.len());
    let parse = |s: &str| serde_json::from_str::<Value>(s).expect("json");
    for (query, want) in reference {
        assert_close(
            &parse(&got[query]),
            &parse(want),
            &format!("{label}: {query}"),
        );
    }
}

/// The hash tags (`{n}`) of the keys under `prefix`.
fn tags_of(keys: &[String], prefix: &str) -> BTreeSet<String> {
    keys.iter()
        .filter_map(|k| k.strip_prefix(prefix)?.strip_prefix('{'))
        .filter_map(|k| Some(k.split_once('}')?.0.to_owned()))
        .collect()
}

/// The answers of a `MemoryStore` that applied `sales` and `tweets`: the reference.
async fn memory_answers(sales: &[Sale], tweets: &[Tweet]) -> BTreeMap<String, String> {
    let memory = MemoryStore::new(DAY);
    memory.apply_sales(sales).await.expect("memory");
    memory.apply_tweets(tweets).await.expect("memory");
    answers(&memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_kpis_from_1_3_and_12_shards_and_partitions() {
    let mut rng = StdRng::seed_from_u64(0x005A_A2D5);
    let sales = order_sales(&mut rng);
    let tweets = order_tweets(&mut rng);
    let events = sales.len() + tweets.len();
    let reference = memory_answers(&sales, &tweets).await;

    for (shards, partitions) in [(1, 1), (3, 3), (12, 12), (3, 12), (12, 0)] {
        let label = format!("{shards} shards, {partitions} partitions");
        let (store, keys) = shared_store(DAY, 2).await;
        let store = store.with_shards(shards);
        let fresh = apply_all(&store, &sales, &tweets, partitions, 500).await;
        assert_eq!(fresh, events, "{label}: every event new once");
        assert_answers(&store, &reference, &label).await;
        // Every delivery again (a consumer restarted before its commit), and every
        // event resent without positions (a client's retry): nothing changes.
        if partitions > 0 {
            let again = apply_all(&store, &sales, &tweets, partitions, 700).await;
            assert_eq!(again, 0, "{label}: redelivered");
        }
        let resent = apply_all(&store, &sales, &tweets, 0, 300).await;
        assert_eq!(resent, 0, "{label}: resent");
        assert_answers(&store, &reference, &format!("{label}, after resends")).await;
        let written = keys_under(&keys.url, &keys.prefix).expect("keys");
        let tags = tags_of(&written, &keys.prefix);
        if shards == 1 {
            assert!(tags.is_empty(), "{label}: one shard keeps the plain keys");
        } else {
            // Every product's and location's shard holds keys.
            let want: BTreeSet<String> = sales
                .iter()
                .map(|s| s.product_id.as_str())
                .chain(tweets.iter().map(|t| t.location.as_str()))
                .map(|k| key_shard(k, shards).to_string())
                .collect();
            assert!(want.len() > 1, "{label}: the events spread over shards");
            assert!(
                tags.is_superset(&want),
                "{label}: keys in {tags:?}, want {want:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merged_rankings_and_earliest_sale_break_ties_as_one_store() {
    // The parity workload: every sale at ts 0 (the earliest is decided by id over
    // the shards), nine products tied at 7 units, odd floats, locations alone.
    let mut rng = StdRng::seed_from_u64(0x7135);
    let sales = parity_sales(&mut rng);
    let tweets = parity_tweets(&mut rng);
    let reference = memory_answers(&sales, &tweets).await;
    for shards in [3, 12] {
        let (store, _keys) = shared_store(DAY, 2).await;
        let store = store.with_shards(shards);
        apply_all(&store, &sales, &tweets, 0, 97).await;
        assert_answers(&store, &reference, &format!("parity, {shards} shards")).await;
    }
    let kpis: Value = serde_json::from_str(&reference["sales_kpis"]).expect("json");
    assert_eq!(kpis["categories"]["clothing"]["monitored_product"], "MON");
}

#[tokio::test]
async fn a_store_refuses_another_shard_count() {
    let (store, keys) = shared_store(DAY, 1).await;
    let store = store.with_shards(3);
    store
        .apply_sales(&[sale("x", Category::Home, "P", 1.0, 1)])
        .await
        .expect("apply");
    let other = ValkeyStore::connect(&keys.url, &keys.prefix, DAY, 1)
        .expect("connect")
        .with_shards(4);
    let err = other.ready().await.expect_err("another shard count");
    assert!(err.to_string().contains("valkey.shards = 3"), "{err}");
    let err = other
        .apply_sales(&[sale("y", Category::Home, "P", 1.0, 1)])
        .await
        .expect_err("no write with another shard count");
    assert!(err.to_string().contains("not 4"), "{err}");
    assert_eq!(store.sales_kpis().await.expect("kpis").total.count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_valkey_cluster_spreads_the_keys_and_gives_the_same_kpis() {
    let cluster = OwnCluster::start();
    let mut rng = StdRng::seed_from_u64(0x00C1_0573);
    let sales = order_sales(&mut rng);
    let tweets = order_tweets(&mut rng);
    let reference = memory_answers(&sales, &tweets).await;

    let store = ValkeyStore::connect(&cluster.url(), "flujo:", DAY, 1).expect("cluster URL");
    assert!(store.is_cluster());
    store.ready().await.expect("the cluster is ready");
    // Six partitions, two processes applying them (each its own store, as two
    // consumers): every event once, the answers the reference's.
    let other = ValkeyStore::connect(&cluster.url(), "flujo:", DAY, 1).expect("cluster URL");
    let (evens, odds): (Vec<Sale>, Vec<Sale>) = sales
        .iter()
        .cloned()
        .partition(|s| partition_of(&s.product_id, 6).is_multiple_of(2));
    let (a, b) = tokio::join!(
        apply_all(&store, &evens, &tweets, 6, 400),
        apply_all(&other, &odds, &[], 6, 400),
    );
    assert_eq!(a + b, sales.len() + tweets.len());
    assert_answers(&store, &reference, "cluster").await;
    assert_answers(&other, &reference, "cluster, the other process").await;
    // Resent by a client: counted once.
    assert_eq!(apply_all(&other, &sales, &tweets, 0, 250).await, 0);
    assert_answers(&store, &reference, "cluster, after resends").await;

    let per_node = cluster.keys_per_node();
    for (n, keys) in per_node.iter().enumerate() {
        assert!(
            keys.iter().any(|k| k.starts_with("flujo:{")),
            "node {n} holds no shard: {keys:?}"
        );
    }
    let all: Vec<String> = per_node.into_iter().flatten().collect();
    // The default 12 shards: every product's and location's shard holds keys.
    let want: BTreeSet<String> = sales
        .iter()
        .map(|s| s.product_id.as_str())
        .chain(tweets.iter().map(|t| t.location.as_str()))
        .map(|k| key_shard(k, 12).to_string())
        .collect();
    let tags = tags_of(&all, "flujo:");
    assert!(
        tags.is_superset(&want),
        "keys in shards {tags:?}, want {want:?}"
    );
    assert!(
        tags.iter()
            .all(|t| t.parse::<usize>().is_ok_and(|n| n < 12)),
        "{tags:?}"
    );
    let windows = store.dedup_windows().await.expect("windows");
    let held: usize = windows.iter().map(|(_, w)| w.ids).sum();
    assert_eq!(
        held,
        sales.len() + tweets.len(),
        "every id in some shard's window"
    );
}
