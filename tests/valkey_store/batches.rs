//! Batches: idempotent, one id applied once under concurrency, one script call
//! each, the dedup window, the largest batches.

use super::*;

#[tokio::test]
async fn batches_are_idempotent_and_kinds_have_separate_ids() {
    let (valkey, keys) = shared_store(DAY, 2).await;
    let sales = vec![
        sale("a", Category::Home, "SOFA", 300.5, 1),
        sale("b", Category::Home, "LAMP", 20.25, 3),
        sale("a", Category::Beauty, "OTHER", 1.0, 9),
        sale("c", Category::Beauty, "SOAP", 0.1 + 0.2, 2),
    ];
    let tweets = vec![
        tweet("a", "Mixco", Weather::Rainy, 18.5, 90.0),
        tweet("b", "Antigua", Weather::Sunny, 25.0, 40.0),
    ];
    let first = valkey.apply_sales(&sales).await.expect("sales");
    assert_eq!(first.fresh, vec![true, true, false, true]);
    let t = valkey.apply_tweets(&tweets).await.expect("tweets");
    assert_eq!(t.fresh, vec![true, true], "tweet ids are not sale ids");
    let before = answers(&valkey).await;
    let keys_before = keys_under(&keys.url, &keys.prefix).expect("scan");

    let again = valkey.apply_sales(&sales).await.expect("sales again");
    assert_eq!(again.fresh, vec![false; 4]);
    let t_again = valkey.apply_tweets(&tweets).await.expect("tweets again");
    assert_eq!(t_again.fresh, vec![false; 2]);
    assert_eq!(
        answers(&valkey).await,
        before,
        "a resent batch changes nothing"
    );
    let mut keys_after = keys_under(&keys.url, &keys.prefix).expect("scan");
    let mut keys_before = keys_before;
    keys_before.sort();
    keys_after.sort();
    assert_eq!(keys_after, keys_before);
    // Ids are kept as 16-byte hashes appended to the window's first generation,
    // one string per kind.
    for kind in ["sale", "tweet"] {
        let generation = format!("{}ids:{kind}:1", keys.prefix);
        assert!(
            keys_after.contains(&generation),
            "{generation} in {keys_after:?}"
        );
        assert!(keys_after.contains(&format!("{}ids:{kind}", keys.prefix)));
    }
    let mut con = redis_connection(&keys.url).expect("admin");
    let generation: Vec<u8> = redis::cmd("GET")
        .arg(format!("{}ids:sale:1", keys.prefix))
        .query(&mut con)
        .expect("GET");
    let held: HashSet<&[u8]> = generation.chunks(16).collect();
    let want: HashSet<[u8; 16]> = ["a", "b", "c"]
        .map(|id| flujo_actors::dedup::id_hash(id).to_le_bytes())
        .into();
    assert_eq!(
        generation.len(),
        3 * 16,
        "three distinct sale ids, once each"
    );
    assert_eq!(
        held,
        want.iter().map(|h| &h[..]).collect(),
        "hashes, not ids"
    );

    // The generation expires a window after its last write.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}ids:sale:1", keys.prefix))
        .query(&mut con)
        .expect("PTTL");
    assert!(ttl > 0 && ttl <= DAY.as_millis() as i64, "ttl {ttl}");

    // An empty batch is a no-op.
    assert_eq!(
        valkey.apply_sales(&[]).await.expect("empty"),
        Applied::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_apply_each_id_once() {
    let (valkey, _keys) = shared_store(DAY, 4).await;
    let valkey = std::sync::Arc::new(valkey);
    // Eight writers send overlapping ranges of the same 400 ids.
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let store = valkey.clone();
            tokio::spawn(async move {
                let mut fresh = Vec::new();
                for chunk in 0..10 {
                    let batch: Vec<Sale> = (0..40)
                        .map(|j| {
                            let n = (w * 50 + chunk * 40 + j) % 400;
                            sale(&format!("id{n}"), Category::Electronics, "TV", 10.0, 1)
                        })
                        .collect();
                    let applied = store.apply_sales(&batch).await.expect("apply");
                    for (s, f) in batch.iter().zip(applied.fresh) {
                        if f {
                            fresh.push(s.id.clone());
                        }
                    }
                }
                fresh
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "an id was fresh twice");
    let kpis = valkey.sales_kpis().await.expect("kpis");
    assert_eq!(kpis.total.count as usize, all.len());
    assert_eq!(kpis.total.revenue, 10.0 * all.len() as f64);
}

/// `INFO commandstats` as `command → calls`.
pub(crate) fn command_calls(con: &mut redis::Connection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(con)
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn one_script_call_per_batch() {
    let server = OwnValkey::start();
    let url = server.url();
    let store = ValkeyStore::connect(&url, "flujo:", DAY, 1).expect("connect");
    // Warm up: connection and script loading happen once.
    store
        .apply_sales(&[sale("warm", Category::Home, "P", 1.0, 1)])
        .await
        .expect("warm-up");
    store
        .apply_tweets(&[tweet("warm", "X", Weather::Sunny, 1.0, 1.0)])
        .await
        .expect("warm-up");
    let mut con = redis_connection(&url).expect("admin");
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(&mut con)
        .expect("RESETSTAT");
    for b in 0..5 {
        let sales: Vec<Sale> = (0..200)
            .map(|i| sale(&format!("{b}-{i}"), Category::ALL[i % 4], "P", 1.5, 2))
            .collect();
        assert_eq!(
            store
                .apply_sales(&sales)
                .await
                .expect("sales")
                .fresh_count(),
            200
        );
        let tweets: Vec<Tweet> = (0..100)
            .map(|i| tweet(&format!("{b}-{i}"), "Mixco", Weather::Rainy, 20.0, 50.0))
            .collect();
        assert_eq!(
            store
                .apply_tweets(&tweets)
                .await
                .expect("tweets")
                .fresh_count(),
            100
        );
    }
    // The same admin connection: a new one would add its own CLIENT SETINFO.
    let mut calls = command_calls(&mut con);
    calls.remove("config|resetstat");
    calls.remove("info");
    // Commands the scripts run count too; anything else came from the client.
    let inside_scripts = [
        "hmget",
        "hset",
        "hget",
        "hincrby",
        "zmscore",
        "zadd",
        "zremrangebyrank",
        "zrange",
        "rename",
        "del",
        "strlen",
        "getrange",
        "append",
        "pexpire",
        "exists",
        "unlink",
        "hdel",
        "hkeys",
        "rpush",
        "rpop",
        "lrange",
        "ltrim",
    ];
    calls.retain(|name, _| !inside_scripts.contains(&name.as_str()));
    assert_eq!(
        calls,
        BTreeMap::from([("evalsha".to_owned(), 10)]),
        "each batch must be exactly one EVALSHA (no PING, no EVAL, no SCRIPT LOAD)"
    );
}

#[tokio::test]
async fn zero_window_disables_dedup_like_memory_store() {
    let (valkey, keys) = shared_store(Duration::ZERO, 1).await;
    let memory = MemoryStore::new(Duration::ZERO);
    let batch = [
        sale("z", Category::Home, "P", 2.5, 1),
        sale("z", Category::Home, "P", 2.5, 1),
    ];
    for _ in 0..2 {
        let want = memory.apply_sales(&batch).await.expect("memory");
        assert_eq!(valkey.apply_sales(&batch).await.expect("valkey"), want);
    }
    assert_eq!(answers(&valkey).await, answers(&memory).await);
    let markers = keys_under(&keys.url, &format!("{}ids:", keys.prefix)).expect("scan");
    assert!(
        markers.is_empty(),
        "no id window without a window: {markers:?}"
    );
}

#[tokio::test]
async fn largest_batches_apply_in_one_call() {
    let (valkey, _keys) = shared_store(DAY, 1).await;
    let memory = MemoryStore::new(DAY);
    let mut rng = StdRng::seed_from_u64(10_000);
    let sales: Vec<Sale> = (0..10_000)
        .map(|i| {
            let c = *Category::ALL.choose(&mut rng).expect("categories");
            let product = *PRODUCTS.choose(&mut rng).expect("products");
            sale(
                &format!("big{i}"),
                c,
                product,
                price(&mut rng),
                quantity(&mut rng),
            )
        })
        .collect();
    let tweets: Vec<Tweet> = (0..10_000)
        .map(|i| {
            let location = *LOCATIONS.choose(&mut rng).expect("locations");
            let weather = *Weather::ALL.choose(&mut rng).expect("weathers");
            let t = rng.random_range(-900..=600i32) as f64 / 10.0;
            let h = rng.random_range(0..=10_000u32) as f64 / 100.0;
            tweet(&format!("big{i}"), location, weather, t, h)
        })
        .collect();
    let started = Instant::now();
    let got = valkey.apply_sales(&sales).await.expect("sales");
    let got_tweets = valkey.apply_tweets(&tweets).await.expect("tweets");
    let took = started.elapsed();
    assert_eq!(got, memory.apply_sales(&sales).await.expect("memory"));
    assert_eq!(
        got_tweets,
        memory.apply_tweets(&tweets).await.expect("memory")
    );
    assert_eq!(answers(&valkey).await, answers(&memory).await);
    assert!(
        took < Duration::from_secs(10),
        "two 10,000-event batches took {took:?}"
    );
    eprintln!("two 10,000-event batches applied in {took:?}");
}

/// How many events of `batch` the store applied (the others were duplicates).
async fn fresh_sales(store: &dyn Store, batch: &[Sale]) -> usize {
    store.apply_sales(batch).await.expect("apply").fresh_count()
}

#[tokio::test]
async fn a_resend_after_the_window_is_applied_again() {
    let window = Duration::from_millis(300);
    let (valkey, _keys) = shared_store(window, 1).await;
    let memory = MemoryStore::new(window);
    let batch = [sale("late", Category::Home, "P", 2.5, 1)];
    for store in [&valkey as &dyn Store, &memory] {
        assert_eq!(fresh_sales(store, &batch).await, 1);
        assert_eq!(
            fresh_sales(store, &batch).await,
            0,
            "{}: a resend",
            store.name()
        );
    }
    // What the README promises: a resend later than the window counts again.
    tokio::time::sleep(window * 2).await;
    for store in [&valkey as &dyn Store, &memory] {
        let again = fresh_sales(store, &batch).await;
        assert_eq!(again, 1, "{}: the window is over", store.name());
    }
    assert_eq!(answers(&valkey).await, answers(&memory).await);
}

#[tokio::test]
async fn a_full_window_forgets_the_oldest_ids_first() {
    // 64 ids at most: 4 generations of 16.
    let (valkey, _keys) = shared_store(DAY, 1).await;
    let valkey = valkey.with_max_ids(64);
    let batch = |from: usize, to: usize| -> Vec<Sale> {
        (from..to)
            .map(|i| sale(&format!("id{i}"), Category::Home, "P", 1.0, 1))
            .collect()
    };
    assert_eq!(
        valkey
            .apply_sales(&batch(0, 500))
            .await
            .expect("apply")
            .fresh_count(),
        500
    );
    let windows = valkey.dedup_windows().await.expect("windows");
    let (kind, w) = windows[0];
    assert_eq!(kind, Kind::Sale);
    assert!(w.ids <= 64 && w.ids >= 48, "held {} ids", w.ids);
    assert_eq!(
        w.evicted as usize + w.ids,
        500,
        "every forgotten id is counted"
    );
    assert!(
        w.held_ms < DAY.as_millis() as u64,
        "the cap shortened the window"
    );
    // The newest ids are still remembered, the oldest were forgotten.
    assert_eq!(
        valkey
            .apply_sales(&batch(490, 500))
            .await
            .expect("apply")
            .fresh_count(),
        0
    );
    assert_eq!(
        valkey
            .apply_sales(&batch(0, 10))
            .await
            .expect("apply")
            .fresh_count(),
        10
    );
}

#[tokio::test]
async fn the_window_costs_at_most_64_bytes_an_id() {
    let (valkey, _keys) = shared_store(DAY, 1).await;
    let n = 50_000;
    for chunk in 0..n / 10_000 {
        let sales: Vec<Sale> = (0..10_000)
            .map(|i| sale(&format!("m{chunk}-{i}"), Category::ALL[i % 4], "P", 1.0, 1))
            .collect();
        valkey.apply_sales(&sales).await.expect("apply");
    }
    let (_, w) = valkey.dedup_windows().await.expect("windows")[0];
    assert_eq!(w.ids, n);
    let per_id = w.bytes as f64 / n as f64;
    assert!(per_id <= 64.0, "{per_id:.1} bytes per id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ids_another_consumer_applied_are_duplicates_here() {
    // Three consumers on one window (one prefix): each checks a batch against its
    // own mirror, so what the others appended must reach it, through the tail of
    // its next batch, or by a reload when it is far behind or starts late.
    let (a, keys) = shared_store(DAY, 1).await;
    let connect = || {
        ValkeyStore::connect(&keys.url, &keys.prefix, DAY, 1)
            .expect("store")
            .with_max_ids(200_000)
    };
    let a = std::sync::Arc::new(a.with_max_ids(200_000));
    let b = std::sync::Arc::new(connect());
    let ids = |from: usize, to: usize| -> Vec<Sale> {
        (from..to)
            .map(|i| sale(&format!("x{i}"), Category::ALL[i % 4], "P", 1.0, 1))
            .collect()
    };
    // Alternating, overlapping batches: b's mirror learns a's ids from the tail.
    let mut fresh = 0;
    for round in 0..20 {
        let from = round * 500;
        fresh += fresh_sales(&*a, &ids(from, from + 1_000)).await;
        fresh += fresh_sales(&*b, &ids(from + 250, from + 1_250)).await;
    }
    assert_eq!(fresh, 10_750, "every id once");
    // Concurrently, the same ids from both: still once each.
    let tasks: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .map(|store| {
            tokio::spawn(async move {
                let mut fresh = 0;
                for chunk in 0..10 {
                    let batch: Vec<Sale> = (0..1_000)
                        .map(|i| {
                            let i = 20_000 + chunk * 1_000 + i;
                            sale(&format!("x{i}"), Category::ALL[i % 4], "P", 1.0, 1)
                        })
                        .collect();
                    fresh += fresh_sales(&*store, &batch).await;
                }
                fresh
            })
        })
        .collect();
    let mut concurrent = 0;
    for t in tasks {
        concurrent += t.await.expect("writer");
    }
    assert_eq!(concurrent, 10_000, "each of 10,000 ids once across writers");
    // Far behind: a appends 70,000 ids (more than a tail answers); b's next batch
    // must reload its mirror and still find a's ids.
    for chunk in 0..7 {
        let from = 40_000 + chunk * 10_000;
        assert_eq!(fresh_sales(&*a, &ids(from, from + 10_000)).await, 10_000);
    }
    assert_eq!(fresh_sales(&*b, &ids(40_000, 110_000)).await, 0);
    // A consumer that starts late loads the window before its first batch.
    let c = connect();
    for (from, to) in [(0, 10_750), (20_000, 30_000), (40_000, 110_000)] {
        assert_eq!(fresh_sales(&c, &ids(from, to)).await, 0, "{from}..{to}");
    }
    // Ids nobody applied are new to it, and only to the first who sends them.
    assert_eq!(fresh_sales(&c, &ids(10_000, 20_010)).await, 9_250);
    assert_eq!(fresh_sales(&*b, &ids(10_000, 20_010)).await, 0);
    let (_, window) = c.dedup_windows().await.expect("windows")[0];
    assert_eq!(window.ids, 100_000);
    assert_eq!(answers(&c).await, answers(&*a).await);
}

#[tokio::test]
async fn a_window_deleted_under_a_consumer_is_not_remembered() {
    // The mirror may hold only what the window holds: when the window's keys are
    // deleted (by an operator, or lost with an unpersisted Valkey), ids the mirror
    // still knows are new again, as they are to every other consumer.
    let (store, keys) = shared_store(DAY, 1).await;
    let batch: Vec<Sale> = (0..100)
        .map(|i| sale(&format!("d{i}"), Category::Home, "P", 1.0, 1))
        .collect();
    assert_eq!(fresh_sales(&store, &batch).await, 100);
    assert_eq!(fresh_sales(&store, &batch).await, 0);
    let mut con = redis_connection(&keys.url).expect("admin");
    for key in keys_under(&keys.url, &format!("{}ids:", keys.prefix)).expect("scan") {
        let _: () = redis::cmd("DEL").arg(&key).query(&mut con).expect("DEL");
    }
    assert_eq!(fresh_sales(&store, &batch).await, 100);
}

#[tokio::test]
async fn a_consumer_with_a_smaller_cap_still_holds_the_whole_window() {
    // The flujo that creates a window fixes its generations' size; a consumer
    // configured with a smaller `dedup_max_ids` must mirror all of it, not evict.
    let (big, keys) = shared_store(DAY, 1).await;
    let big = big.with_max_ids(40_000);
    let small = ValkeyStore::connect(&keys.url, &keys.prefix, DAY, 1)
        .expect("store")
        .with_max_ids(400);
    let batch: Vec<Sale> = (0..5_000)
        .map(|i| sale(&format!("c{i}"), Category::Home, "P", 1.0, 1))
        .collect();
    assert_eq!(fresh_sales(&big, &batch).await, 5_000);
    assert_eq!(
        fresh_sales(&small, &batch).await,
        0,
        "every id is still held"
    );
    assert_eq!(fresh_sales(&small, &batch[..10]).await, 0);
}

#[tokio::test]
async fn a_generation_rebuilt_under_the_same_number_is_not_taken_for_the_old_one() {
    // After a rollback (a replica promoted, a restart from an older snapshot) a
    // generation may hold other ids under the same number and length: a mirror
    // must notice and reload, not trust its own copy.
    let (store, keys) = shared_store(DAY, 1).await;
    let ids = |tag: &str| -> Vec<Sale> {
        (0..100)
            .map(|i| sale(&format!("{tag}{i}"), Category::Home, "P", 1.0, 1))
            .collect()
    };
    assert_eq!(fresh_sales(&store, &ids("old")).await, 100);
    let rebuilt: Vec<u8> = (0..100)
        .flat_map(|i| flujo_actors::dedup::id_hash(&format!("new{i}")).to_le_bytes())
        .collect();
    let mut con = redis_connection(&keys.url).expect("admin");
    let _: () = redis::cmd("SET")
        .arg(format!("{}ids:sale:1", keys.prefix))
        .arg(rebuilt)
        .query(&mut con)
        .expect("SET");
    assert_eq!(
        fresh_sales(&store, &ids("new")).await,
        0,
        "held by the window"
    );
    assert_eq!(
        fresh_sales(&store, &ids("old")).await,
        100,
        "gone from the window"
    );
}
