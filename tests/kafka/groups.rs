//! Offsets and consumer groups: commits only when told, partitions shared in a
//! group, a commit after a revocation is harmless.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_when_told() {
    let config = config().await;
    let sink = topics_and_sink(&config).await;
    let started = Instant::now();
    let first = Events::Sales(actor_sales("c", 20));
    let first_ids = id_set(&first);
    sink.publish(batch(first, 1)).await.expect("publish");

    // A delivery taken and never committed (the process died before the store).
    let mut a =
        KafkaSource::new(&config, Kind::Sale, empty_store(), CancellationToken::new()).expect("a");
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
    let mut b =
        KafkaSource::new(&config, Kind::Sale, empty_store(), CancellationToken::new()).expect("b");
    let again = read_until(&mut b, &first_ids, true, GROUP_TIMEOUT).await;
    let again_ids: BTreeSet<String> = again.iter().flat_map(|d| d.batch.events.ids()).collect();
    assert!(
        uncommitted.is_subset(&again_ids),
        "redelivered after no commit"
    );
    drop(b);
    println!("b read all 20 again and committed: {:?}", started.elapsed());

    // After the commit, the group moves on: only new events come.
    let second = Events::Sales(actor_sales("d", 5));
    let second_ids = id_set(&second);
    sink.publish(batch(second, 2)).await.expect("publish");
    let mut c =
        KafkaSource::new(&config, Kind::Sale, empty_store(), CancellationToken::new()).expect("c");
    let seen = read_all(&mut c, &second_ids).await;
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
    let sink = topics_and_sink(&config).await;
    assert_eq!(
        partitions_of(&config.brokers, &config.tweets_topic).await,
        3
    );
    let started = Instant::now();
    let mut all: BTreeSet<String> = BTreeSet::new();

    // Phase 1: only `a` is in the group.
    let phase1 = Events::Tweets(actor_tweets("p1", 150, 30));
    all.extend(Events::ids(&phase1));
    sink.publish(batch(phase1, 1)).await.expect("publish");
    let stop = CancellationToken::new();
    let a_seen = Arc::new(Mutex::new(Seen::default()));
    let a = spawn_consumer(
        KafkaSource::new(&config, Kind::Tweet, empty_store(), stop.clone()).expect("a"),
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
        KafkaSource::new(&config, Kind::Tweet, empty_store(), stop.clone()).expect("b"),
        b_seen.clone(),
    );
    for round in 0..6 {
        let more = Events::Tweets(actor_tweets(&format!("p2r{round}"), 25, 30));
        all.extend(Events::ids(&more));
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
    let phase3 = Events::Tweets(actor_tweets("p3", 150, 30));
    let phase3_ids: BTreeSet<String> = Events::ids(&phase3).into_iter().collect();
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
    let sink = topics_and_sink(&config).await;
    let started = Instant::now();
    let events = Events::Tweets(actor_tweets("r", 60, 30));
    let all = id_set(&events);
    sink.publish(batch(events, 1)).await.expect("publish");

    // `a` takes a delivery and, before it commits, `b` joins the group.
    let stop = CancellationToken::new();
    let mut a = KafkaSource::new(&config, Kind::Tweet, empty_store(), stop.clone()).expect("a");
    let held = tokio::time::timeout(GROUP_TIMEOUT, a.next())
        .await
        .expect("first delivery in time")
        .expect("delivery");
    let held_ids: BTreeSet<String> = held.batch.events.ids().into_iter().collect();
    let b_seen = Arc::new(Mutex::new(Seen::default()));
    let b = spawn_consumer(
        KafkaSource::new(&config, Kind::Tweet, empty_store(), stop.clone()).expect("b"),
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
    let marker = Events::Tweets(actor_tweets("r-marker", 30, 30));
    let marker_ids: BTreeSet<String> = Events::ids(&marker).into_iter().collect();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_static_member_restarted_at_once_resumes_within_seconds() {
    // `group` assignment with static membership (`group.instance.id`): the member
    // that comes back under the same id gets its partitions again without waiting
    // for the dead one's session (45 s) to time out.
    let config = KafkaConfig {
        group_instance_id: "member-0".into(),
        ..config().await
    };
    let sink = topics_and_sink(&config).await;
    let first = Events::Sales(actor_sales("s1", 30));
    sink.publish(batch(first.clone(), 1))
        .await
        .expect("publish");
    let mut a =
        KafkaSource::new(&config, Kind::Sale, empty_store(), CancellationToken::new()).expect("a");
    read_all(&mut a, &id_set(&first)).await;
    drop(a);

    let second = Events::Sales(actor_sales("s2", 30));
    sink.publish(batch(second.clone(), 2))
        .await
        .expect("publish");
    let restarted = Instant::now();
    let mut b =
        KafkaSource::new(&config, Kind::Sale, empty_store(), CancellationToken::new()).expect("b");
    read_until(&mut b, &id_set(&second), true, Duration::from_secs(20)).await;
    println!("static member resumed in {:?}", restarted.elapsed());
}
