//! `every_transport_gives_the_same_kpis`: one workload over HTTP, gRPC and TCP.

use super::*;

/// A seeded set of events whose values are multiples of 1/4 (prices) and 1/2
/// (temperature, humidity): their f64 sums are exact in any order and any batching, so
/// three servers fed over three transports must answer identical JSON.
pub(crate) struct Workload {
    /// One sale per category, each sent alone first (they fix the monitored products).
    pub(crate) first: Vec<Sale>,
    /// The other sales, in the order they are sent.
    pub(crate) sales: Vec<Sale>,
    pub(crate) tweets: Vec<Tweet>,
    /// Batch sizes used by the batching transports.
    pub(crate) sale_chunks: Vec<usize>,
    pub(crate) tweet_chunks: Vec<usize>,
}

pub(crate) const LOCATIONS: [&str; 6] = [
    "Guatemala",
    "Mixco",
    "Villa Nueva",
    "Quetzaltenango",
    "Cobán",
    "San José",
];

pub(crate) fn workload(seed: u64) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let price = |rng: &mut StdRng| rng.random_range(1..=8000) as f64 / 4.0;
    // Each sale's own ts: the same events on every transport, so the same
    // monitored streams (by (ts, id)) however the server stamps receive times.
    const BASE_TS: i64 = 1_700_000_000_000;
    let first: Vec<Sale> = CATEGORIES
        .iter()
        .enumerate()
        .map(|(i, c)| Sale {
            // Before every other sale, whatever the transport's timing.
            ts: BASE_TS - 1,
            ..sale(
                &format!("x-first-{i}"),
                c,
                &format!("MON-{c}"),
                price(&mut rng),
                3,
            )
        })
        .collect();
    let sales: Vec<Sale> = (0..600)
        .map(|i| {
            let ci = rng.random_range(0..4);
            let product = match rng.random_range(0..6) {
                0 | 1 => format!("MON-{}", CATEGORIES[ci]),
                2 => format!("MON-{}", CATEGORIES[(ci + 1) % 4]),
                3 => format!("SHARED-{}", rng.random_range(0..3)),
                _ => format!("{}-{}", &CATEGORIES[ci][..3], rng.random_range(0..6)),
            };
            Sale {
                id: format!("x-s-{i}"),
                ts: BASE_TS + i,
                category: CATEGORIES[ci],
                product_id: product,
                price: price(&mut rng),
                quantity: rng.random_range(1..=25),
            }
        })
        .collect();
    let tweets: Vec<Tweet> = (0..400)
        .map(|i| Tweet {
            id: format!("x-t-{i}"),
            location: (*LOCATIONS.choose(&mut rng).expect("locations")).to_owned(),
            weather: WEATHERS.choose(&mut rng).expect("weathers"),
            temperature: rng.random_range(-180..=120) as f64 / 2.0,
            humidity: rng.random_range(0..=200) as f64 / 2.0,
            text: None,
        })
        .collect();
    let chunks = |n: usize, rng: &mut StdRng| {
        let mut out = Vec::new();
        let mut left = n;
        while left > 0 {
            let k = rng.random_range(1..=80).min(left);
            out.push(k);
            left -= k;
        }
        out
    };
    let sale_chunks = chunks(sales.len(), &mut rng);
    let tweet_chunks = chunks(tweets.len(), &mut rng);
    Workload {
        first,
        sales,
        tweets,
        sale_chunks,
        tweet_chunks,
    }
}

pub(crate) fn chunked<'a, T>(items: &'a [T], sizes: &[usize]) -> Vec<&'a [T]> {
    let mut out = Vec::new();
    let mut rest = items;
    for &n in sizes {
        let (chunk, tail) = rest.split_at(n);
        out.push(chunk);
        rest = tail;
    }
    assert!(rest.is_empty());
    out
}

/// HTTP: the first sales one object each, then batches, one request at a time
/// (sales in order; tweets in order too).
pub(crate) async fn send_over_http(server: &TestServer, w: &Workload) {
    for s in &w.first {
        server
            .send_ok(
                "/v1/sales",
                &[sale_json(s, SaleForm::English)],
                Encoding::Object,
            )
            .await;
    }
    let forms = [
        SaleForm::English,
        SaleForm::SeedCodes,
        SaleForm::SpanishNames,
    ];
    for (i, chunk) in chunked(&w.sales, &w.sale_chunks).into_iter().enumerate() {
        let bodies: Vec<Value> = chunk.iter().map(|s| sale_json(s, forms[i % 3])).collect();
        let encoding = if i % 2 == 0 {
            Encoding::Array
        } else {
            Encoding::Ndjson
        };
        server.send_ok("/v1/sales", &bodies, encoding).await;
    }
    for chunk in chunked(&w.tweets, &w.tweet_chunks) {
        let bodies: Vec<Value> = chunk.iter().map(|t| tweet_json(t, false)).collect();
        server.send_ok("/v1/tweets", &bodies, Encoding::Array).await;
    }
}

/// gRPC: the first sales one PublishSales each, then PublishSales batches one at a
/// time (in order); tweets over the Stream RPC, all at once (their aggregates do
/// not depend on order).
pub(crate) async fn send_over_grpc(server: &TestServer, w: &Workload) {
    let mut client = ingest_client(server).await;
    for s in &w.first {
        let ack = publish_sales(&mut client, vec![pb_sale(s)])
            .await
            .expect("PublishSales");
        assert_batch_ack(&ack, &[s.id.as_str()]);
    }
    for chunk in chunked(&w.sales, &w.sale_chunks) {
        let ack = publish_sales(&mut client, chunk.iter().map(pb_sale).collect())
            .await
            .expect("PublishSales");
        let ids: Vec<&str> = chunk.iter().map(|s| s.id.as_str()).collect();
        assert_batch_ack(&ack, &ids);
    }
    let events: Vec<Event> = w.tweets.iter().map(|t| tweet_event(pb_tweet(t))).collect();
    let mut acks = client
        .stream(futures::stream::iter(events))
        .await
        .expect("Stream")
        .into_inner();
    for t in &w.tweets {
        let ack = next_ack(&mut acks).await.expect("an Ack per tweet");
        assert_stream_ok(&ack, &t.id, "stream");
    }
}

/// TCP: sales one line at a time, each answered before the next (in order); tweets
/// pipelined in one write.
pub(crate) async fn send_over_tcp(server: &TestServer, w: &Workload) {
    let mut c = LineClient::connect(server.tcp_addr()).await;
    let tag = |mut v: Value, kind: &str| {
        v["kind"] = json!(kind);
        v.to_string()
    };
    for (i, s) in w.first.iter().chain(&w.sales).enumerate() {
        let form = SALE_FORMS[i % SALE_FORMS.len()];
        let answer = c.request(&tag(sale_json(s, form), "sale")).await;
        assert_eq!(answer, format!("ok {}", s.id));
    }
    let payload: String = w
        .tweets
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}\n", tag(tweet_json(t, i % 2 == 0), "tweet")))
        .collect();
    let answers = c.pipeline(payload.as_bytes(), w.tweets.len()).await;
    for (t, answer) in w.tweets.iter().zip(answers) {
        assert_eq!(answer, format!("ok {}", t.id));
    }
}

/// Every query answer the comparison covers.
pub(crate) fn query_paths() -> Vec<String> {
    let mut paths = vec![
        "/v1/kpis/sales".to_owned(),
        "/v1/kpis/tweets".to_owned(),
        "/v1/rankings/products?limit=1000".to_owned(),
        "/v1/rankings/locations?limit=1000".to_owned(),
    ];
    for c in CATEGORIES {
        paths.push(format!("/v1/rankings/products?category={c}&limit=1000"));
        paths.push(format!("/v1/sales/monitored/{c}/prices?limit=1000"));
    }
    paths
}

#[tokio::test]
async fn every_transport_gives_the_same_kpis() {
    let w = workload(0x7a45_9011);
    let envs = [("FLUJO__QUERY__CACHE_TTL_MS", "0")];
    let (a, b, c) = (
        TestServer::start(&envs),
        TestServer::start(&envs),
        TestServer::start(&envs),
    );
    tokio::join!(
        send_over_http(&a, &w),
        send_over_grpc(&b, &w),
        send_over_tcp(&c, &w)
    );

    let (mut sales, mut tweets) = (DedupTruth::default(), DedupTruth::default());
    for s in w.first.iter().chain(&w.sales) {
        sales.apply_sale(s);
    }
    for t in &w.tweets {
        tweets.apply_tweet(t);
    }
    for server in [&a, &b, &c] {
        server.wait_sales(sales.sales.count).await;
        server.wait_tweets(tweets.tweets.count).await;
        server.wait_idle().await;
    }

    for path in query_paths() {
        let http = a.get_ok(&path).await;
        let grpc = b.get_ok(&path).await;
        let tcp = c.get_ok(&path).await;
        assert_eq!(http, grpc, "{path}: HTTP (left) and gRPC (right) differ");
        assert_eq!(http, tcp, "{path}: HTTP (left) and TCP (right) differ");
    }

    // And all three equal the ground truth (checked on one, they are identical).
    assert_sales_kpis(&sales, &a.get_ok("/v1/kpis/sales").await);
    assert_tweets_kpis(&tweets, &a.get_ok("/v1/kpis/tweets").await);
    let got = a.get_ok("/v1/rankings/products?limit=1000").await;
    assert_product_ranking(&got, &sales.product_ranking(None), "global ranking");
    for cat in CATEGORIES {
        let got = a
            .get_ok(&format!("/v1/rankings/products?category={cat}&limit=1000"))
            .await;
        assert_product_ranking(&got, &sales.product_ranking(Some(cat)), cat);
        let (product, prices) = sales.monitored_prices(cat, 1000);
        let got = a
            .get_ok(&format!("/v1/sales/monitored/{cat}/prices?limit=1000"))
            .await;
        assert_eq!(got["product_id"].as_str(), product.as_deref(), "{cat}");
        assert_eq!(product, Some(format!("MON-{cat}")));
        assert_same_order(&format!("{cat} prices"), &got["prices"], &prices);
    }
    let got = a.get_ok("/v1/rankings/locations?limit=1000").await;
    let want = tweets.location_ranking();
    let items = got["items"].as_array().expect("items");
    assert_eq!(items.len(), want.len(), "{got}");
    for (item, (location, stats)) in items.iter().zip(&want) {
        assert_eq!(item["location"].as_str(), Some(location.as_str()), "{got}");
        assert_tweet_agg(location, stats, item);
    }
}
