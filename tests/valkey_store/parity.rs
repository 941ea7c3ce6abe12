//! `ValkeyStore` gives `MemoryStore`'s answers, byte for byte, and exact f64 sums.

use super::*;

#[tokio::test]
async fn same_answers_as_memory_store() {
    let (valkey, _keys) = shared_store(DAY, 4).await;
    let memory = MemoryStore::new(DAY);
    assert_same_answers(&memory, &valkey, "empty").await;

    let mut rng = StdRng::seed_from_u64(0x5EED_F1A0_u64);
    let sales = parity_sales(&mut rng);
    let tweets = parity_tweets(&mut rng);
    let sale_batches = batches(&mut rng, &sales, |s, rng| Sale {
        price: price(rng),
        product_id: "ALTERED".into(),
        ..s.clone()
    });
    let tweet_batches = batches(&mut rng, &tweets, |t, rng| Tweet {
        temperature: rng.random_range(-90..=60i32) as f64,
        location: "Altered".into(),
        ..t.clone()
    });
    assert!(sale_batches.len() > 20 && tweet_batches.len() > 8);

    let rounds = sale_batches.len().max(tweet_batches.len());
    let (mut fresh, mut duplicates) = (0, 0);
    for i in 0..rounds {
        if let Some(batch) = sale_batches.get(i) {
            let want = memory.apply_sales(batch).await.expect("memory sales");
            let got = valkey.apply_sales(batch).await.expect("valkey sales");
            assert_eq!(got, want, "Applied flags of sales batch {i}");
            fresh += got.fresh_count();
            duplicates += got.duplicate_count();
        }
        if let Some(batch) = tweet_batches.get(i) {
            let want = memory.apply_tweets(batch).await.expect("memory tweets");
            let got = valkey.apply_tweets(batch).await.expect("valkey tweets");
            assert_eq!(got, want, "Applied flags of tweets batch {i}");
        }
        if i % 9 == 4 {
            assert_same_answers(&memory, &valkey, &format!("after round {i}")).await;
        }
    }
    assert_same_answers(&memory, &valkey, "at the end").await;

    // The run exercised what it claims to.
    assert_eq!(fresh, sales.len());
    assert!(duplicates > 50, "only {duplicates} duplicates");
    let kpis = valkey.sales_kpis().await.expect("kpis");
    assert_eq!(
        kpis.categories["clothing"].monitored_product.as_deref(),
        Some("MON")
    );
    let monitored = valkey
        .monitored_prices(Category::Clothing, 1000)
        .await
        .expect("prices");
    assert_eq!(monitored.prices.len(), MONITORED_PRICES, "stream is capped");
    let stream_len: usize = {
        let mut con = redis_connection(&valkey_url()).expect("admin");
        redis::cmd("ZCARD")
            .arg(format!(
                "{}sales:monitored:clothing:newest",
                valkey.prefix()
            ))
            .query(&mut con)
            .expect("ZCARD")
    };
    assert_eq!(stream_len, MONITORED_PRICES);
    let ranking = valkey
        .product_ranking(
            None,
            Page {
                limit: 1000,
                offset: 0,
            },
        )
        .await
        .expect("ranking");
    let ties: Vec<&str> = ranking
        .items
        .iter()
        .filter(|r| r.product_id.starts_with("TIE-") && r.quantity == 7)
        .map(|r| r.product_id.as_str())
        .collect();
    assert!(ties.len() >= 2, "some ties to order: {ties:?}");
    assert!(
        ties.windows(2).all(|w| w[0] > w[1]),
        "ties by id descending"
    );
}

#[tokio::test]
async fn float_sums_are_exact_doubles() {
    let (valkey, _keys) = shared_store(DAY, 2).await;
    let memory = MemoryStore::new(DAY);
    let mut rng = StdRng::seed_from_u64(7);
    let mut id = 0;
    for _ in 0..20 {
        let size = rng.random_range(1..=400);
        let batch: Vec<Sale> = (0..size)
            .map(|_| {
                id += 1;
                let c = *Category::ALL.choose(&mut rng).expect("categories");
                let p = price(&mut rng);
                sale(&format!("f{id}"), c, "P", p, rng.random_range(1..=9))
            })
            .collect();
        memory.apply_sales(&batch).await.expect("memory");
        valkey.apply_sales(&batch).await.expect("valkey");
    }
    let want = memory.sales_kpis().await.expect("memory kpis");
    let got = valkey.sales_kpis().await.expect("valkey kpis");
    let bits = |k: &flujo_actors::store::SalesKpis| {
        let mut v = vec![k.total.price_sum.to_bits(), k.total.revenue.to_bits()];
        for c in k.categories.values() {
            v.push(c.stats.price_sum.to_bits());
            v.push(c.stats.revenue.to_bits());
            v.push(c.stats.avg_price.unwrap_or(f64::NAN).to_bits());
        }
        v
    };
    assert_eq!(bits(&got), bits(&want), "sums must be the same doubles");
    // The sums need more than Lua's 14 digits, so the test would catch tostring().
    let digits = format!("{:e}", want.total.price_sum)
        .split('e')
        .next()
        .map(|m| m.replace(['.', '-'], "").len())
        .unwrap_or(0);
    assert!(
        digits > 14,
        "price_sum {} is too round",
        want.total.price_sum
    );
    assert_eq!(json(&got), json(&want));
}
