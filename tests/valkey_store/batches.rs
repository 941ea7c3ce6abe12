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
    // Ids are kept as 16-byte hashes in the window's first generation, one set per kind.
    for kind in ["sale", "tweet"] {
        let generation = format!("{}dedup:{kind}:1", keys.prefix);
        assert!(
            keys_after.contains(&generation),
            "{generation} in {keys_after:?}"
        );
        assert!(keys_after.contains(&format!("{}dedup:{kind}", keys.prefix)));
    }
    let mut con = redis_connection(&keys.url).expect("admin");
    let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
        .arg(format!("{}dedup:sale:1", keys.prefix))
        .query(&mut con)
        .expect("SMEMBERS");
    assert_eq!(members.len(), 3, "three distinct sale ids");
    assert!(members.iter().all(|m| m.len() == 16), "hashes, not ids");

    // The generation expires a window after its last write.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}dedup:sale:1", keys.prefix))
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
        "zincrby",
        "zadd",
        "zremrangebyrank",
        "zrange",
        "rename",
        "del",
        "smismember",
        "sadd",
        "scard",
        "pexpire",
        "exists",
        "unlink",
        "hdel",
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
    let markers = keys_under(&keys.url, &format!("{}dedup:", keys.prefix)).expect("scan");
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

#[tokio::test]
async fn more_generations_left_by_an_older_flujo_age_out_without_evictions() {
    // A flujo that kept 8 generations of max/8 ids left 8 young, small sets; this
    // one keeps 4 of max/4. Nothing near the cap: nothing may be forgotten early.
    let (valkey, keys) = shared_store(DAY, 1).await;
    let valkey = valkey.with_max_ids(1_000);
    let mut con = redis_connection(&keys.url).expect("admin");
    let meta = format!("{}dedup:sale", keys.prefix);
    let now_ms = SystemTimeMs::now();
    for g in 1..=8 {
        let hashes: Vec<Vec<u8>> = (0..10)
            .map(|i| {
                flujo_actors::dedup::id_hash(&format!("old-{g}-{i}"))
                    .to_le_bytes()
                    .to_vec()
            })
            .collect();
        let _: () = redis::cmd("SADD")
            .arg(format!("{meta}:{g}"))
            .arg(hashes)
            .query(&mut con)
            .expect("SADD");
        let _: () = redis::cmd("PEXPIRE")
            .arg(format!("{meta}:{g}"))
            .arg(DAY.as_millis() as u64)
            .query(&mut con)
            .expect("PEXPIRE");
        // Opened a full slice apart, the newest a full slice ago: the next batch
        // opens a generation by the clock.
        let opened = now_ms - (9 - g) * (DAY.as_millis() as u64 / 3 + 1);
        let _: () = redis::cmd("HSET")
            .arg(&meta)
            .arg(format!("opened:{g}"))
            .arg(opened)
            .query(&mut con)
            .expect("HSET");
    }
    let _: () = redis::cmd("HSET")
        .arg(&meta)
        .arg("oldest")
        .arg(1)
        .arg("newest")
        .arg(8)
        .query(&mut con)
        .expect("HSET");

    let new: Vec<Sale> = (0..50)
        .map(|i| sale(&format!("new-{i}"), Category::Home, "P", 1.0, 1))
        .collect();
    let applied = valkey.apply_sales(&new).await.expect("apply");
    assert_eq!(applied.fresh_count(), 50);
    let windows = valkey.dedup_windows().await.expect("windows");
    assert_eq!(windows[0].1.evicted, 0, "{:?}", windows[0]);
    assert_eq!(windows[0].1.ids, 130, "{:?}", windows[0]);
    // Every old id is still remembered.
    let old: Vec<Sale> = (1..=8)
        .flat_map(|g| (0..10).map(move |i| format!("old-{g}-{i}")))
        .map(|id| sale(&id, Category::Home, "P", 1.0, 1))
        .collect();
    let again = valkey.apply_sales(&old).await.expect("apply");
    assert_eq!(again.fresh_count(), 0, "old ids were forgotten");
}

/// Milliseconds since the Unix epoch.
struct SystemTimeMs;

impl SystemTimeMs {
    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64
    }
}
