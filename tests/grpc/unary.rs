//! The unary calls: acks with ids, invalid events and batches as
//! `INVALID_ARGUMENT` naming index and field.

use super::*;

#[tokio::test]
async fn batches_are_acked_with_their_ids() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut client = ingest_client(&server).await;
    let (mut sales, mut tweets) = (DedupTruth::default(), DedupTruth::default());

    let batch = vec![
        sale("g-s-1", "electronics", "TV", 499.99, 2),
        sale("", "clothing", "SHIRT", 19.5, 3),
        sale("g-s-3", "home", "LAMP", 35.25, 1),
        sale("", "beauty", "SOAP", 2.75, 10),
        sale("g-s-5", "electronics", "PHONE", 899.0, 1),
    ];
    let ack = publish_sales(&mut client, batch.iter().map(pb_sale).collect()).await;
    for s in with_acked_ids(&ack.expect("PublishSales"), batch, |s| &mut s.id) {
        sales.apply_sale(&s);
    }
    // A sale with its own event time is accepted as well.
    let mut timed = pb_sale(&sale("g-s-ts", "home", "LAMP", 30.0, 2));
    timed.ts = 1_700_000_000_000;
    let ack = publish_sales(&mut client, vec![timed])
        .await
        .expect("PublishSales");
    assert_batch_ack(&ack, &["g-s-ts"]);
    sales.apply_sale(&sale("g-s-ts", "home", "LAMP", 30.0, 2));

    let batch = vec![
        tweet("g-t-1", "Guatemala", "sunny", 24.5, 60.0),
        tweet("", "Mixco", "stormy", -3.0, 99.5),
        tweet("g-t-3", "Guatemala", "foggy", 12.0, 80.0),
    ];
    let mut protos: Vec<pb::Tweet> = batch.iter().map(pb_tweet).collect();
    protos[2].text = "niebla en la ciudad".into();
    let ack = publish_tweets(&mut client, protos).await;
    for t in with_acked_ids(&ack.expect("PublishTweets"), batch, |t| &mut t.id) {
        tweets.apply_tweet(&t);
    }

    // A resend is acked like a new batch and counted once.
    let again = sale("g-s-1", "electronics", "TV", 1.0, 50);
    let ack = publish_sales(&mut client, vec![pb_sale(&again)])
        .await
        .expect("PublishSales");
    assert_batch_ack(&ack, &["g-s-1"]);
    assert!(!sales.apply_sale(&again));

    server.wait_idle().await;
    assert_sales_kpis(&sales, &server.wait_sales(sales.sales.count).await);
    assert_tweets_kpis(&tweets, &server.wait_tweets(tweets.tweets.count).await);
    let ranking = server.get_ok("/v1/rankings/locations").await;
    assert_eq!(
        ranking["items"][0]["location"],
        json!("Guatemala"),
        "{ranking}"
    );
}

/// Asserts `ack` accepted `events` in order (see [`assert_batch_ack`]) and returns
/// them with the ids it answered (`id` reaches an event's id).
fn with_acked_ids<T>(ack: &Ack, mut events: Vec<T>, id: fn(&mut T) -> &mut String) -> Vec<T> {
    let sent: Vec<String> = events.iter_mut().map(|e| id(e).clone()).collect();
    let sent: Vec<&str> = sent.iter().map(String::as_str).collect();
    for (e, acked) in events.iter_mut().zip(assert_batch_ack(ack, &sent)) {
        *id(e) = acked;
    }
    events
}

/// A good sale for the refusal tests.
pub(crate) fn good_sale(i: usize) -> pb::Sale {
    pb::Sale {
        id: format!("ok-{i}"),
        ts: 0,
        category: 3,
        product_id: "P".into(),
        price: 2.0,
        quantity: 1,
    }
}

pub(crate) fn good_tweet(i: usize) -> pb::Tweet {
    pb::Tweet {
        id: format!("ok-{i}"),
        ts: 0,
        location: "Mixco".into(),
        weather: 1,
        temperature: 20.0,
        humidity: 50.0,
        text: String::new(),
    }
}

/// `n` good events of `good`, the one at `bad` changed by `edit`.
pub(crate) fn with_bad<T>(n: usize, bad: usize, good: fn(usize) -> T, edit: fn(&mut T)) -> Vec<T> {
    let mut events: Vec<T> = (0..n).map(good).collect();
    edit(&mut events[bad]);
    events
}

/// Asserts `status` is INVALID_ARGUMENT naming event `index` and `field` in its
/// message and its `flujo-index` / `flujo-field` metadata.
pub(crate) fn assert_invalid(status: &Status, index: usize, field: &str, what: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    let message = status.message();
    assert!(
        has_token(message, &index.to_string()),
        "{what}: the message names the index {index}: {message:?}"
    );
    assert!(
        message.contains(field),
        "{what}: the message names `{field}`: {message:?}"
    );
    assert_eq!(
        meta(status, "flujo-index"),
        Some(index.to_string().as_str()),
        "{what}: flujo-index metadata: {:?}",
        status.metadata()
    );
    assert_eq!(
        meta(status, "flujo-field"),
        Some(field),
        "{what}: flujo-field metadata: {:?}",
        status.metadata()
    );
}

#[tokio::test]
async fn a_bad_event_is_invalid_argument_naming_index_and_field() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut client = ingest_client(&server).await;
    type SaleEdit = fn(&mut pb::Sale);
    let sale_cases: Vec<(&str, SaleEdit, &str)> = vec![
        ("price -1", |s| s.price = -1.0, "price"),
        ("price 0", |s| s.price = 0.0, "price"),
        ("price NaN", |s| s.price = f64::NAN, "price"),
        ("price inf", |s| s.price = f64::INFINITY, "price"),
        ("category UNSPECIFIED", |s| s.category = 0, "category"),
        ("unknown category 9", |s| s.category = 9, "category"),
        ("negative category", |s| s.category = -2, "category"),
        ("quantity 0", |s| s.quantity = 0, "quantity"),
        ("quantity -5", |s| s.quantity = -5, "quantity"),
        ("quantity 1,000,001", |s| s.quantity = 1_000_001, "quantity"),
        ("empty product_id", |s| s.product_id.clear(), "product_id"),
        (
            "65-char product_id",
            |s| s.product_id = "p".repeat(65),
            "product_id",
        ),
        ("129-char id", |s| s.id = "i".repeat(129), "id"),
    ];
    for (what, edit, field) in &sale_cases {
        // The bad sale is the eighth of ten; alone it is index 0.
        for (n, bad) in [(10, 7), (1, 0)] {
            let batch = with_bad(n, bad, good_sale, *edit);
            let status = publish_sales(&mut client, batch).await.expect_err(what);
            assert_invalid(&status, bad, field, what);
        }
    }
    type TweetEdit = fn(&mut pb::Tweet);
    let tweet_cases: Vec<(&str, TweetEdit, &str)> = vec![
        ("weather UNSPECIFIED", |t| t.weather = 0, "weather"),
        ("unknown weather 9", |t| t.weather = 9, "weather"),
        ("temperature 60.5", |t| t.temperature = 60.5, "temperature"),
        ("temperature -91", |t| t.temperature = -91.0, "temperature"),
        (
            "temperature NaN",
            |t| t.temperature = f64::NAN,
            "temperature",
        ),
        ("humidity -1", |t| t.humidity = -1.0, "humidity"),
        ("humidity 100.5", |t| t.humidity = 100.5, "humidity"),
        ("empty location", |t| t.location.clear(), "location"),
        ("281-char text", |t| t.text = "t".repeat(281), "text"),
    ];
    for (what, edit, field) in &tweet_cases {
        let status = publish_tweets(&mut client, with_bad(4, 2, good_tweet, *edit)).await;
        assert_invalid(&status.expect_err(what), 2, field, what);
    }

    // Nothing of those batches was stored: a marker sent afterwards is the only event
    // counted (the pipeline is ordered, so once the marker is counted, any stored
    // event of an earlier batch would be too).
    let mut marker = good_sale(0);
    (marker.id, marker.category) = ("marker".into(), 4);
    let ack = publish_sales(&mut client, vec![marker]).await;
    assert_batch_ack(&ack.expect("marker"), &["marker"]);
    let mut marker = good_tweet(0);
    (marker.id, marker.weather) = ("marker".into(), 3);
    let ack = publish_tweets(&mut client, vec![marker]).await;
    assert_batch_ack(&ack.expect("marker"), &["marker"]);
    let sales = server.wait_sales(1).await;
    assert_eq!(sales["categories"]["beauty"]["count"], json!(1), "{sales}");
    let tweets = server.wait_tweets(1).await;
    assert_eq!(tweets["weather"]["rainy"], json!(1), "{tweets}");
    server.wait_idle().await;
    server.wait_sales(1).await;
    server.wait_tweets(1).await;
}

#[tokio::test]
async fn empty_and_oversized_batches_are_invalid_argument() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut client = ingest_client(&server).await;
    for status in [
        publish_sales(&mut client, Vec::new())
            .await
            .expect_err("empty"),
        publish_tweets(&mut client, Vec::new())
            .await
            .expect_err("empty"),
    ] {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(!status.message().is_empty(), "{status:?}");
    }
    let big: Vec<pb::Sale> = (0..10_001).map(|i| good_sale(i as usize)).collect();
    let status = publish_sales(&mut client, big)
        .await
        .expect_err("10,001 sales");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("10000") || status.message().contains("10,000"),
        "the message names the limit: {status:?}"
    );
    let big: Vec<pb::Tweet> = (0..10_001).map(|i| good_tweet(i as usize)).collect();
    let status = publish_tweets(&mut client, big)
        .await
        .expect_err("10,001 tweets");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Exactly 10,000 is fine, and the refused batches left nothing behind.
    let edge: Vec<pb::Sale> = (0..10_000)
        .map(|i| pb::Sale {
            id: format!("edge-{i}"),
            ..good_sale(0)
        })
        .collect();
    let ack = publish_sales(&mut client, edge)
        .await
        .expect("10,000 sales");
    assert_eq!((ack.accepted, ack.ids.len()), (10_000, 10_000));
    assert_eq!(ack.ids[9_999], "edge-9999");
    server.wait_idle().await;
    let kpis = server.wait_sales(10_000).await;
    assert_eq!(kpis["total"]["quantity_sum"], json!(10_000), "{kpis}");
    assert_eq!(
        server.get_ok("/v1/kpis/tweets").await["total"]["count"],
        json!(0)
    );
}
