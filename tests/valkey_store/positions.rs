//! Positions stored with the KPIs: an event at or below its stream's stored position
//! changes nothing, whoever sends it (a redelivery, a zombie consumer), on both
//! stores alike. The id window is off (`Duration::ZERO`) in these tests, so only the
//! positions can keep a count exact.

use super::*;
use flujo_actors::store::Positions;
use std::sync::Arc;

/// `count` sales of one stream from `first` on, ids `{tag}-{offset}`.
fn stream_sales(tag: &str, first: i64, count: i64) -> Vec<Sale> {
    (first..first + count)
        .map(|o| {
            let category = Category::ALL[o as usize % Category::ALL.len()];
            sale(
                &format!("{tag}-{o}"),
                category,
                &format!("P{}", o % 7),
                1.0 + o as f64,
                1 + o as u64 % 3,
            )
        })
        .collect()
}

/// Positions of a batch whose events are `runs` of consecutive offsets, one run
/// per stream, in order.
fn positions(runs: &[(&str, i64, i64)]) -> Positions {
    let mut at = Positions::default();
    for (i, &(stream, first, count)) in runs.iter().enumerate() {
        at.streams.push(stream.to_owned());
        at.offsets
            .extend((first..first + count).map(|o| (i as u32, o)));
    }
    at
}

/// The sales of `runs` (stream name doubles as id tag) and their positions.
fn batch(runs: &[(&str, i64, i64)]) -> (Vec<Sale>, Positions) {
    let sales = runs
        .iter()
        .flat_map(|&(stream, first, count)| stream_sales(stream, first, count))
        .collect();
    (sales, positions(runs))
}

/// Applies `runs` and returns (fresh, replayed).
async fn apply(store: &dyn Store, runs: &[(&str, i64, i64)]) -> (usize, usize) {
    let (sales, at) = batch(runs);
    let applied = store.apply_sales_at(&sales, &at).await.expect("apply");
    assert_eq!(applied.duplicate_count(), 0, "the id window is off");
    (applied.fresh_count(), applied.replayed)
}

async fn positions_of(store: &dyn Store, streams: &[&str]) -> Vec<Option<i64>> {
    let streams: Vec<String> = streams.iter().map(|s| (*s).to_owned()).collect();
    store.positions(&streams).await.expect("positions")
}

/// The scenario, on one store.
async fn redeliveries_and_zombies_change_nothing(store: &dyn Store) {
    let (a, b) = ("kafka:g:sales:0", "kafka:g:sales:1");
    assert_eq!(positions_of(store, &[a, b]).await, vec![None, None]);
    assert_eq!(apply(store, &[(a, 0, 10), (b, 0, 5)]).await, (15, 0));
    assert_eq!(positions_of(store, &[a, b]).await, vec![Some(10), Some(5)]);
    // The same delivery again (a crash between store and commit).
    assert_eq!(apply(store, &[(a, 0, 10), (b, 0, 5)]).await, (0, 15));
    // Overlapping: the part below the position is skipped, the rest applied.
    assert_eq!(apply(store, &[(a, 5, 10)]).await, (5, 5));
    // A zombie with an old delivery: nothing, and the position does not move back.
    assert_eq!(apply(store, &[(a, 0, 5), (b, 2, 2)]).await, (0, 7));
    assert_eq!(positions_of(store, &[a, b]).await, vec![Some(15), Some(5)]);
    // Gaps in offsets (skipped undecodable messages) are fine.
    let (sales, mut at) = batch(&[(b, 5, 2)]);
    at.offsets = vec![(0, 7), (0, 9)];
    let applied = store.apply_sales_at(&sales, &at).await.expect("gap");
    assert_eq!((applied.fresh_count(), applied.replayed), (2, 0));
    assert_eq!(positions_of(store, &[b]).await, vec![Some(10)]);
    // Positions that do not fit the batch are refused, and nothing is applied.
    let (sales, mut at) = batch(&[(b, 100, 3)]);
    at.offsets.pop();
    assert!(store.apply_sales_at(&sales, &at).await.is_err());
    let kpis = store.sales_kpis().await.expect("kpis");
    assert_eq!(kpis.total.count, 22, "10 + 5 + 5 + 2 applied");
}

#[tokio::test]
async fn redelivered_and_zombie_events_change_nothing_on_either_store() {
    let memory = MemoryStore::new(Duration::ZERO);
    redeliveries_and_zombies_change_nothing(&memory).await;
    let (valkey, _keys) = shared_store(Duration::ZERO, 1).await;
    redeliveries_and_zombies_change_nothing(&valkey).await;
    assert_eq!(answers(&valkey).await, answers(&memory).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_zombies_count_each_offset_once() {
    // Four consumers apply the same 40 deliveries of two partitions, each in order
    // but each at its own pace (as after a rebalance that left zombies behind).
    let (valkey, _keys) = shared_store(Duration::ZERO, 4).await;
    let valkey = Arc::new(valkey);
    let memory = Arc::new(MemoryStore::new(Duration::ZERO));
    let (a, b) = ("kafka:z:sales:0", "kafka:z:sales:1");
    let deliveries: Vec<Vec<(&str, i64, i64)>> = (0..40)
        .map(|i| vec![(a, i * 25, 25), (b, i * 10, 10)])
        .collect();
    for store in [valkey.clone() as Arc<dyn Store>, memory.clone()] {
        let tasks: Vec<_> = (0..4)
            .map(|z| {
                let store = store.clone();
                let deliveries = deliveries.clone();
                tokio::spawn(async move {
                    let mut fresh = 0;
                    for (i, runs) in deliveries.iter().enumerate() {
                        if (i + z) % 3 == 0 {
                            tokio::task::yield_now().await;
                        }
                        fresh += apply(store.as_ref(), runs).await.0;
                    }
                    fresh
                })
            })
            .collect();
        let mut fresh = 0;
        for t in tasks {
            fresh += t.await.expect("zombie");
        }
        assert_eq!(
            fresh,
            40 * 35,
            "{}: every offset applied once",
            store.name()
        );
        let kpis = store.sales_kpis().await.expect("kpis");
        assert_eq!(kpis.total.count, 40 * 35, "{}", store.name());
        assert_eq!(
            positions_of(store.as_ref(), &[a, b]).await,
            vec![Some(1000), Some(400)]
        );
    }
    assert_eq!(
        answers(valkey.as_ref()).await,
        answers(memory.as_ref()).await
    );
}

#[tokio::test]
async fn a_batch_that_fails_midway_leaves_its_positions_unwritten() {
    // Valkey keeps the writes a failing script made before the error, so the
    // positions are written last: a retry of the batch must still apply it.
    let (valkey, keys) = shared_store(Duration::ZERO, 1).await;
    let mut raw = redis_connection(&keys.url).expect("connection");
    let ranking = format!("{}sales:products", keys.prefix);
    redis::cmd("SET")
        .arg(&ranking)
        .arg("not a sorted set")
        .exec(&mut raw)
        .expect("set");
    let stream = "kafka:f:sales:0";
    let (sales, at) = batch(&[(stream, 0, 3)]);
    let failed = valkey.apply_sales_at(&sales, &at).await;
    assert!(failed.is_err(), "a wrong-type key fails the script");
    assert_eq!(positions_of(&valkey, &[stream]).await, vec![None]);
    redis::cmd("DEL").arg(&ranking).exec(&mut raw).expect("del");
    assert_eq!(
        apply(&valkey, &[(stream, 0, 3)]).await,
        (3, 0),
        "the retry applies it"
    );
    assert_eq!(positions_of(&valkey, &[stream]).await, vec![Some(3)]);
}
