//! Order independence: the same events in other orders and batchings give the
//! same KPIs in both stores (float sums within 1e-9 relative, everything else
//! exactly), and a late earlier sale changes a category's monitored product and
//! its price stream, the same way in `ValkeyStore` as in `MemoryStore`.

use super::*;
use flujo_actors::store::MONITORED_LATENESS_MS;
use serde_json::Value;

/// Fields whose values are floating sums (or divide one): equal across orders
/// within 1e-9 relative, the tolerance the README states.
const FLOAT_SUMS: [&str; 5] = [
    "price_sum",
    "revenue",
    "avg_price",
    "avg_temperature",
    "avg_humidity",
];

fn sale_at(id: &str, ts: i64, c: Category, product: &str, price: f64, quantity: u64) -> Sale {
    Sale {
        ts,
        ..sale(id, c, product, price, quantity)
    }
}

/// Asserts `got` equals `want`, floating sums within 1e-9 relative.
pub(super) fn assert_close(got: &Value, want: &Value, path: &str) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            let mut keys: Vec<_> = g.keys().collect();
            keys.sort();
            let mut want_keys: Vec<_> = w.keys().collect();
            want_keys.sort();
            assert_eq!(keys, want_keys, "{path}");
            for (k, v) in w {
                let field = format!("{path}.{k}");
                if FLOAT_SUMS.contains(&k.as_str()) && v.is_number() {
                    let (a, b) = (g[k].as_f64().expect("a number"), v.as_f64().expect("f64"));
                    assert!(
                        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
                        "{field}: {a} vs {b}"
                    );
                } else {
                    assert_close(&g[k], v, &field);
                }
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{path}");
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                assert_close(a, b, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(got, want, "{path}"),
    }
}

/// Sales within one lateness of each other: four categories, a few products with
/// more than 1,000 sales each, many ts ties (ids decide), and the earliest sale of
/// each category somewhere in the middle.
pub(super) fn order_sales(rng: &mut StdRng) -> Vec<Sale> {
    let products = ["A", "B", "C", "Ω", "a b"];
    let mut sales: Vec<Sale> = (0..9_000)
        .map(|n| {
            let i = rng.random_range(0..Category::ALL.len());
            let p = if rng.random_bool(0.6) {
                products[i + 1]
            } else {
                products.choose(rng).expect("products")
            };
            let c = Category::ALL[i];
            // 2,000 distinct ms over 9,000 sales: ties everywhere.
            let ts = 1_700_000_000_000 + rng.random_range(0..2_000);
            sale_at(&format!("o{n}"), ts, c, p, price(rng), quantity(rng))
        })
        .collect();
    // Each category's earliest: a tie in ts with another sale, won by the id.
    for (i, c) in Category::ALL.into_iter().enumerate() {
        let ts = 1_699_999_999_000;
        sales.push(sale_at(
            &format!("first-{i}"),
            ts,
            c,
            products[i + 1],
            5.0,
            1,
        ));
        sales.push(sale_at(&format!("g-{i}"), ts, c, "A", 6.0, 1));
    }
    shuffle(rng, &mut sales);
    sales
}

pub(super) fn order_tweets(rng: &mut StdRng) -> Vec<Tweet> {
    (0..800)
        .map(|n| {
            let location = *LOCATIONS.choose(rng).expect("locations");
            let weather = *Weather::ALL.choose(rng).expect("weathers");
            let t = rng.random_range(-900..=600i32) as f64 / 10.0 + 1.0 / 3.0;
            let h = rng.random_range(0..=9_000u32) as f64 / 100.0 + 0.1;
            tweet(&format!("ot{n}"), location, weather, t, h)
        })
        .collect()
}

/// Applies `sales` and `tweets` in batches of `size` to a fresh `ValkeyStore` and
/// `MemoryStore`, checks they agree byte for byte, and returns the answers.
async fn answers_of(sales: &[Sale], tweets: &[Tweet], size: usize) -> BTreeMap<String, String> {
    let (valkey, _keys) = shared_store(DAY, 2).await;
    let memory = MemoryStore::new(DAY);
    for batch in sales.chunks(size) {
        let want = memory.apply_sales(batch).await.expect("memory");
        assert_eq!(valkey.apply_sales(batch).await.expect("valkey"), want);
    }
    for batch in tweets.chunks(size) {
        memory.apply_tweets(batch).await.expect("memory");
        valkey.apply_tweets(batch).await.expect("valkey");
    }
    assert_same_answers(&memory, &valkey, &format!("batches of {size}")).await;
    answers(&valkey).await
}

#[tokio::test]
async fn any_order_and_batching_gives_the_same_kpis_in_both_stores() {
    let mut rng = StdRng::seed_from_u64(0x0DE5_0F7E);
    let sales = order_sales(&mut rng);
    let tweets = order_tweets(&mut rng);
    let by_time = {
        let mut v = sales.clone();
        v.sort_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
        v
    };
    let newest_first: Vec<Sale> = by_time.iter().rev().cloned().collect();
    let mut reversed_tweets = tweets.clone();
    reversed_tweets.reverse();

    let reference = answers_of(&sales, &tweets, 10_000).await;
    for (label, s, t, size) in [
        ("event time, batches of 1", &by_time, &tweets, 1),
        (
            "newest first, batches of 333",
            &newest_first,
            &reversed_tweets,
            333,
        ),
        ("shuffled, batches of 47", &sales, &reversed_tweets, 47),
    ] {
        let got = answers_of(s, t, size).await;
        assert_eq!(got.len(), reference.len());
        for (query, want) in &reference {
            let parse = |s: &str| serde_json::from_str::<Value>(s).expect("json");
            assert_close(
                &parse(&got[query]),
                &parse(want),
                &format!("{label}: {query}"),
            );
        }
    }

    // The workload exercised what it claims: the earliest sale won by its id,
    // full streams of 1,000 in (ts, id) order.
    let kpis: Value = serde_json::from_str(&reference["sales_kpis"]).expect("json");
    for (i, c) in Category::ALL.into_iter().enumerate() {
        let product = ["A", "B", "C", "Ω", "a b"][i + 1];
        assert_eq!(kpis["categories"][c.as_str()]["monitored_product"], product);
        let mine: Vec<&Sale> = by_time
            .iter()
            .filter(|s| s.category == c && s.product_id == product)
            .collect();
        let want: Vec<f64> = mine[mine.len().saturating_sub(MONITORED_PRICES)..]
            .iter()
            .map(|s| s.price)
            .collect();
        let got: Value =
            serde_json::from_str(&reference[&format!("monitored {c} limit=1000")]).expect("json");
        assert_eq!(got["product_id"], product);
        assert_eq!(got["prices"], serde_json::json!(want), "{c}");
        assert_eq!(want.len(), MONITORED_PRICES, "{c}: the stream overflows");
    }
}

#[tokio::test]
async fn a_late_earlier_sale_changes_the_monitored_product_and_its_stream() {
    let (valkey, keys) = shared_store(DAY, 1).await;
    let memory = MemoryStore::new(DAY);
    let t0 = 1_700_000_000_000;
    let apply = |batch: Vec<Sale>| {
        let (memory, valkey) = (&memory, &valkey);
        async move {
            let want = memory.apply_sales(&batch).await.expect("memory");
            assert_eq!(valkey.apply_sales(&batch).await.expect("valkey"), want);
            assert_same_answers(memory, valkey, "after a batch").await;
        }
    };
    let monitored = |c| {
        let valkey = &valkey;
        async move {
            let m = valkey.monitored_prices(c, 1000).await.expect("prices");
            (m.product_id.unwrap_or_default(), m.prices)
        }
    };
    use Category::{Electronics, Home};
    // TV first; RADIO sells 1,200 times (only its newest 1,000 are kept).
    let mut batch = vec![sale_at("m-0", t0, Home, "TV", 1.0, 1)];
    for i in 0..1_200 {
        let ts = t0 + 10 + i;
        batch.push(sale_at(
            &format!("r-{i:04}"),
            ts,
            Home,
            "RADIO",
            ts as f64,
            1,
        ));
    }
    apply(batch).await;
    assert_eq!(monitored(Home).await, ("TV".into(), vec![1.0]));
    // One list per product, named by its tag (byte length in 4 hex digits, then
    // the product).
    let history = format!("{}sales:history:home:0005RADIO", keys.prefix);
    let mut con = redis_connection(&keys.url).expect("admin");
    let held: usize = redis::cmd("LLEN")
        .arg(&history)
        .query(&mut con)
        .expect("LLEN");
    assert_eq!(
        held, MONITORED_PRICES,
        "RADIO's newest prices are kept while open"
    );

    // A RADIO sale at t0 with a smaller id arrives late: RADIO is monitored, with
    // its newest 1,000 prices (and TV's price is not among them).
    apply(vec![sale_at("a", t0, Home, "RADIO", 0.5, 1)]).await;
    let (product, prices) = monitored(Home).await;
    assert_eq!(product, "RADIO");
    let want: Vec<f64> = (210..1_210).map(|i| (t0 + i) as f64).collect();
    assert_eq!(prices, want);

    // The category closes once a sale is LATENESS after the earliest: the other
    // products' histories go, and TV's comes back only with later prices.
    apply(vec![sale_at(
        "late",
        t0 + MONITORED_LATENESS_MS,
        Home,
        "TV",
        2.0,
        1,
    )])
    .await;
    let histories = keys_under(&keys.url, &format!("{}sales:history:", keys.prefix)).expect("scan");
    assert_eq!(
        histories,
        Vec::<String>::new(),
        "histories dropped on close"
    );
    apply(vec![sale_at("0", t0 - 1, Home, "TV", 3.0, 1)]).await;
    assert_eq!(monitored(Home).await, ("TV".into(), vec![3.0]));

    // Electronics, open: the earlier sale in the same batch as later ones.
    apply(vec![
        sale_at("e1", t0 + 5, Electronics, "PC", 10.0, 1),
        sale_at("e2", t0 + 6, Electronics, "MOUSE", 11.0, 1),
    ])
    .await;
    apply(vec![
        sale_at("e3", t0 + 7, Electronics, "PC", 12.0, 1),
        sale_at("e0", t0 + 4, Electronics, "MOUSE", 13.0, 1),
        sale_at("e4", t0 + 8, Electronics, "MOUSE", 14.0, 1),
    ])
    .await;
    assert_eq!(
        monitored(Electronics).await,
        ("MOUSE".into(), vec![13.0, 11.0, 14.0])
    );
    // PC's prices wait in its history: an even earlier PC sale brings them back.
    apply(vec![sale_at("e-1", t0 + 3, Electronics, "PC", 15.0, 1)]).await;
    assert_eq!(
        monitored(Electronics).await,
        ("PC".into(), vec![15.0, 10.0, 12.0])
    );
    let kpis = valkey.sales_kpis().await.expect("kpis");
    assert_eq!(
        kpis.categories["electronics"].monitored_product.as_deref(),
        Some("PC")
    );
}

#[tokio::test]
async fn an_open_category_kept_in_the_earlier_layout_is_carried_over() {
    let (valkey, keys) = shared_store(DAY, 1).await;
    let t0 = 1_700_000_000_000;
    valkey
        .apply_sales(&[sale_at("tv", t0, Category::Home, "TV", 1.0, 1)])
        .await
        .expect("apply");
    // RADIO's prices as an earlier flujo kept them: one sorted set per category,
    // members scored 0 and tagged with the product, and a hash of counts.
    let mut con = redis_connection(&keys.url).expect("admin");
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(format!("{}sales:history:home", keys.prefix));
    for i in 1..=3 {
        zadd.arg(0)
            .arg(format!("0005RADIO{:019}r{i}\0{:?}", t0 + i, i as f64));
    }
    let _: () = zadd.query(&mut con).expect("ZADD");
    let _: () = redis::cmd("HSET")
        .arg(format!("{}sales:history-len:home", keys.prefix))
        .arg("RADIO")
        .arg(3)
        .query(&mut con)
        .expect("HSET");

    // A later RADIO price, then a RADIO sale before TV's: RADIO is monitored with
    // every price, those of the earlier layout included.
    valkey
        .apply_sales(&[sale_at("r4", t0 + 4, Category::Home, "RADIO", 4.0, 1)])
        .await
        .expect("apply");
    valkey
        .apply_sales(&[sale_at("r0", t0 - 1, Category::Home, "RADIO", 0.5, 1)])
        .await
        .expect("apply");
    let m = valkey
        .monitored_prices(Category::Home, 1000)
        .await
        .expect("prices");
    assert_eq!(m.product_id.as_deref(), Some("RADIO"));
    assert_eq!(m.prices, vec![0.5, 1.0, 2.0, 3.0, 4.0]);
    let mut held: Vec<String> =
        keys_under(&keys.url, &format!("{}sales:history", keys.prefix)).expect("scan");
    held.sort();
    assert_eq!(
        held,
        [
            format!("{}sales:history-tail:home", keys.prefix),
            format!("{}sales:history:home:0002TV", keys.prefix),
        ],
        "the earlier layout's keys are gone; TV's price waits in its list"
    );
}
