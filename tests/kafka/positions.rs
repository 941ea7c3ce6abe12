//! Positions stored with the KPIs, on a real broker and a real Valkey, with the id
//! window off so that only positions keep counts exact: a consumer resumes at the
//! store's position rather than the group's commit, and two consumers reading the
//! same partitions at once (a zombie) count every event once. Both use the static
//! assignment (`kafka.assignment` `all`), which never waits on the coordinator.

use super::*;
use flujo::components::valkey::ValkeyStore;
use flujo_actors::store::Store;

/// A Valkey store under a fresh prefix with the id window off, and its cleanup.
async fn positions_store() -> (Arc<dyn Store>, KeysGuard) {
    require_valkey().await;
    let prefix = format!("test-{}:", uuid::Uuid::now_v7());
    let store = ValkeyStore::connect(&valkey_url(), &prefix, Duration::ZERO, 2).expect("store");
    let guard = KeysGuard {
        url: valkey_url(),
        prefix,
    };
    (Arc::new(store), guard)
}

/// A configuration whose sources take every partition themselves.
async fn static_config() -> KafkaConfig {
    KafkaConfig {
        assignment: "all".into(),
        batch_max: 100,
        ..config().await
    }
}

/// Applies one delivery at its positions; returns (fresh, replayed).
async fn apply(store: &dyn Store, delivery: &Delivery) -> (usize, usize) {
    let at = delivery
        .batch
        .positions
        .as_deref()
        .expect("kafka deliveries carry positions");
    let applied = flujo_actors::store::apply(store, &delivery.batch.events, at)
        .await
        .expect("apply");
    (applied.fresh_count(), applied.replayed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_resumes_at_the_stores_position_not_the_groups_commit() {
    let config = static_config().await;
    let (store, _keys) = positions_store().await;
    let sink = topics_and_sink(&config).await;
    let first = Events::Sales(actor_sales("pos1", 300));
    sink.publish(batch(first.clone(), 1))
        .await
        .expect("publish");

    // Consumer a applies everything and dies before any commit: the group has no
    // offset, the store has the positions.
    let mut a =
        KafkaSource::new(&config, Kind::Sale, store.clone(), CancellationToken::new()).expect("a");
    let deliveries = read_until(&mut a, &id_set(&first), false, GROUP_TIMEOUT).await;
    let mut applied = 0;
    for d in &deliveries {
        applied += apply(store.as_ref(), d).await.0;
    }
    assert_eq!(applied, 300);
    drop(a);

    // Consumer b, started at once, reads only what came after.
    let second = Events::Sales(actor_sales("pos2", 50));
    sink.publish(batch(second.clone(), 2))
        .await
        .expect("publish");
    let started = Instant::now();
    let mut b =
        KafkaSource::new(&config, Kind::Sale, store.clone(), CancellationToken::new()).expect("b");
    let seen = read_all(&mut b, &id_set(&second)).await;
    let old: Vec<&String> = seen
        .iter()
        .filter(|id| id_set(&first).contains(*id))
        .collect();
    assert!(old.is_empty(), "b read {} applied events again", old.len());
    println!(
        "b resumed past the 300 applied events in {:?}",
        started.elapsed()
    );
    assert_eq!(store.sales_kpis().await.expect("kpis").total.count, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_consumers_on_the_same_partitions_count_each_event_once() {
    let config = KafkaConfig {
        partitions: 3,
        ..static_config().await
    };
    let (store, _keys) = positions_store().await;
    let sink = topics_and_sink(&config).await;
    let mut want = 0;
    for b in 0..6 {
        let events = Events::Sales(actor_sales(&format!("zombie{b}"), 200));
        want += events.len();
        sink.publish(batch(events, b)).await.expect("publish");
    }

    // Two consumers of the same group, both given every partition: each applies
    // every delivery it reads, at its own pace, and commits.
    let stop = CancellationToken::new();
    let consumers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let mut source =
                KafkaSource::new(&config, Kind::Sale, store.clone(), stop.clone()).expect(name);
            let store = store.clone();
            tokio::spawn(async move {
                let (mut fresh, mut replayed) = (0, 0);
                while let Some(delivery) = source.next().await {
                    let (f, r) = apply(store.as_ref(), &delivery).await;
                    fresh += f;
                    replayed += r;
                    source.commit(delivery.token).await.expect("commit");
                }
                (fresh, replayed)
            })
        })
        .collect();
    let deadline = Instant::now() + GROUP_TIMEOUT;
    loop {
        let count = store.sales_kpis().await.expect("kpis").total.count as usize;
        assert!(count <= want, "counted {count} of {want}: an event twice");
        if count == want {
            break;
        }
        assert!(Instant::now() < deadline, "only {count} of {want} applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both read everything: let the slower one finish, then stop them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let mut totals = Vec::new();
    for c in consumers {
        totals.push(c.await.expect("consumer"));
    }
    let fresh: usize = totals.iter().map(|t| t.0).sum();
    let replayed: usize = totals.iter().map(|t| t.1).sum();
    println!("zombies: (fresh, replayed) per consumer {totals:?}");
    assert_eq!(fresh, want, "every event applied once in all");
    // The second reader of an event skips it by position (unless it sought past
    // it at its start, when the store was already ahead).
    assert!(
        replayed > 0 && replayed <= want,
        "both consumers read the same events: {replayed} skipped by position"
    );
    assert_eq!(
        store.sales_kpis().await.expect("kpis").total.count as usize,
        want
    );
}
