//! gRPC ingest as a client built from the proto sees it: batches and their Acks, every
//! refusal and its metadata, the bidirectional stream, health, reflection,
//! backpressure; the same KPIs whichever transport carried the events; and an
//! independent client in Python compiled from `proto/flujo/v1/ingest.proto` at run time.

mod common;

use common::*;
use flujo::transports::grpc::proto::ingest_client::IngestClient;
use flujo::transports::grpc::proto::{self as pb, event, Ack, Event, SaleBatch, TweetBatch};
use futures::future::join_all;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Upper bound of one gRPC call (and of waiting for one stream message).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A channel to the server's gRPC port, bounded in time.
async fn channel(server: &TestServer) -> Channel {
    tonic::transport::Endpoint::from_shared(server.grpc_uri())
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", server.grpc_uri()))
}

async fn ingest_client(server: &TestServer) -> IngestClient<Channel> {
    IngestClient::new(channel(server).await)
}

/// Category code of the proto enum (1–4, in [`CATEGORIES`] order).
fn category_code(category: &str) -> i32 {
    CATEGORIES
        .iter()
        .position(|c| *c == category)
        .map(|i| i as i32 + 1)
        .unwrap_or_else(|| panic!("not a category: {category}"))
}

/// Weather code of the proto enum (1–6, in [`WEATHERS`] order).
fn weather_code(weather: &str) -> i32 {
    WEATHERS
        .iter()
        .position(|w| *w == weather)
        .map(|i| i as i32 + 1)
        .unwrap_or_else(|| panic!("not a weather: {weather}"))
}

fn pb_sale(s: &Sale) -> pb::Sale {
    pb::Sale {
        id: s.id.clone(),
        ts: 0,
        category: category_code(s.category),
        product_id: s.product_id.clone(),
        price: s.price,
        quantity: s.quantity as i64,
    }
}

fn pb_tweet(t: &Tweet) -> pb::Tweet {
    pb::Tweet {
        id: t.id.clone(),
        ts: 0,
        location: t.location.clone(),
        weather: weather_code(t.weather),
        temperature: t.temperature,
        humidity: t.humidity,
        text: String::new(),
    }
}

fn sale(id: &str, category: &'static str, product: &str, price: f64, quantity: u64) -> Sale {
    Sale {
        id: id.to_owned(),
        category,
        product_id: product.to_owned(),
        price,
        quantity,
    }
}

fn tweet(id: &str, location: &str, weather: &'static str, t: f64, h: f64) -> Tweet {
    Tweet {
        id: id.to_owned(),
        location: location.to_owned(),
        weather,
        temperature: t,
        humidity: h,
    }
}

fn sale_event(s: pb::Sale) -> Event {
    Event {
        event: Some(event::Event::Sale(s)),
    }
}

fn tweet_event(t: pb::Tweet) -> Event {
    Event {
        event: Some(event::Event::Tweet(t)),
    }
}

fn assert_uuid_v7(id: &str) {
    let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id:?} is not a UUID: {e}"));
    assert_eq!(uuid.get_version_num(), 7, "{id} should be a UUIDv7");
}

async fn publish_sales(
    client: &mut IngestClient<Channel>,
    sales: Vec<pb::Sale>,
) -> Result<Ack, Status> {
    client
        .publish_sales(SaleBatch { sales })
        .await
        .map(tonic::Response::into_inner)
}

async fn publish_tweets(
    client: &mut IngestClient<Channel>,
    tweets: Vec<pb::Tweet>,
) -> Result<Ack, Status> {
    client
        .publish_tweets(TweetBatch { tweets })
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts a batch Ack accepted `sent` in order: client ids echoed, empty ids
/// replaced by UUIDv7s, no stream-only fields. Returns the ids.
fn assert_batch_ack(ack: &Ack, sent: &[&str]) -> Vec<String> {
    assert_eq!(ack.accepted as usize, sent.len(), "{ack:?}");
    assert_eq!(ack.ids.len(), sent.len(), "{ack:?}");
    for (id, want) in ack.ids.iter().zip(sent) {
        if want.is_empty() {
            assert_uuid_v7(id);
        } else {
            assert_eq!(id, want, "a client id is echoed");
        }
    }
    assert!(
        ack.error.is_empty() && ack.code.is_empty() && ack.field.is_empty(),
        "{ack:?}"
    );
    ack.ids.clone()
}

/// A metadata value of a status as text.
fn meta<'a>(status: &'a Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).and_then(|v| v.to_str().ok())
}

/// True when `text` holds `word` as a whole token (not inside a longer number or name).
fn has_token(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|t| t == word)
}

#[tokio::test]
async fn batches_are_acked_with_their_ids() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut client = ingest_client(&server).await;
    let mut sales = SalesTruth::default();
    let mut tweets = TweetsTruth::default();

    let batch = vec![
        sale("g-s-1", "electronics", "TV", 499.99, 2),
        sale("", "clothing", "SHIRT", 19.5, 3),
        sale("g-s-3", "home", "LAMP", 35.25, 1),
        sale("", "beauty", "SOAP", 2.75, 10),
        sale("g-s-5", "electronics", "PHONE", 899.0, 1),
    ];
    let ack = publish_sales(&mut client, batch.iter().map(pb_sale).collect())
        .await
        .expect("PublishSales");
    let sent: Vec<&str> = batch.iter().map(|s| s.id.as_str()).collect();
    let ids = assert_batch_ack(&ack, &sent);
    for (mut s, id) in batch.into_iter().zip(ids) {
        s.id = id;
        sales.apply(&s);
    }
    // A sale with its own event time is accepted as well.
    let mut timed = pb_sale(&sale("g-s-ts", "home", "LAMP", 30.0, 2));
    timed.ts = 1_700_000_000_000;
    let ack = publish_sales(&mut client, vec![timed])
        .await
        .expect("PublishSales");
    assert_batch_ack(&ack, &["g-s-ts"]);
    sales.apply(&sale("g-s-ts", "home", "LAMP", 30.0, 2));

    let batch = vec![
        tweet("g-t-1", "Guatemala", "sunny", 24.5, 60.0),
        tweet("", "Mixco", "stormy", -3.0, 99.5),
        tweet("g-t-3", "Guatemala", "foggy", 12.0, 80.0),
    ];
    let mut protos: Vec<pb::Tweet> = batch.iter().map(pb_tweet).collect();
    protos[2].text = "niebla en la ciudad".into();
    let ack = publish_tweets(&mut client, protos)
        .await
        .expect("PublishTweets");
    let sent: Vec<&str> = batch.iter().map(|t| t.id.as_str()).collect();
    let ids = assert_batch_ack(&ack, &sent);
    for (mut t, id) in batch.into_iter().zip(ids) {
        t.id = id;
        tweets.apply(&t);
    }

    // A resend is acked like a new batch and counted once.
    let again = sale("g-s-1", "electronics", "TV", 1.0, 50);
    let ack = publish_sales(&mut client, vec![pb_sale(&again)])
        .await
        .expect("PublishSales");
    assert_batch_ack(&ack, &["g-s-1"]);
    assert!(!sales.apply(&again));

    server.wait_idle().await;
    sales.assert_kpis(&server.wait_sales(sales.total.count).await);
    tweets.assert_kpis(&server.wait_tweets(tweets.total.count).await);
    let ranking = server.get_ok("/v1/rankings/locations").await;
    assert_eq!(
        ranking["items"][0]["location"],
        json!("Guatemala"),
        "{ranking}"
    );
}

/// A good sale for the refusal tests.
fn good_sale(i: usize) -> pb::Sale {
    pb::Sale {
        id: format!("ok-{i}"),
        ts: 0,
        category: 3,
        product_id: "P".into(),
        price: 2.0,
        quantity: 1,
    }
}

fn good_tweet(i: usize) -> pb::Tweet {
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

/// Asserts `status` is INVALID_ARGUMENT naming event `index` and `field` in its
/// message and its `flujo-index` / `flujo-field` metadata.
fn assert_invalid(status: &Status, index: usize, field: &str, what: &str) {
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
        // The bad sale is the eighth of ten.
        let mut batch: Vec<pb::Sale> = (0..10).map(good_sale).collect();
        edit(&mut batch[7]);
        let status = publish_sales(&mut client, batch).await.expect_err(what);
        assert_invalid(&status, 7, field, what);
        // Alone it is index 0.
        let mut one = good_sale(0);
        edit(&mut one);
        let status = publish_sales(&mut client, vec![one]).await.expect_err(what);
        assert_invalid(&status, 0, field, what);
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
        let mut batch: Vec<pb::Tweet> = (0..4).map(good_tweet).collect();
        edit(&mut batch[2]);
        let status = publish_tweets(&mut client, batch).await.expect_err(what);
        assert_invalid(&status, 2, field, what);
    }

    // Nothing of those batches was stored: a marker sent afterwards is the only event
    // counted (the pipeline is ordered, so once the marker is counted, any stored
    // event of an earlier batch would be too).
    let mut marker = good_sale(0);
    (marker.id, marker.category) = ("marker".into(), 4);
    let ack = publish_sales(&mut client, vec![marker])
        .await
        .expect("marker");
    assert_batch_ack(&ack, &["marker"]);
    let mut marker = good_tweet(0);
    (marker.id, marker.weather) = ("marker".into(), 3);
    let ack = publish_tweets(&mut client, vec![marker])
        .await
        .expect("marker");
    assert_batch_ack(&ack, &["marker"]);
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

/// The next Ack of a stream, bounded in time.
async fn next_ack(acks: &mut tonic::Streaming<Ack>) -> Option<Ack> {
    tokio::time::timeout(CALL_TIMEOUT, acks.message())
        .await
        .expect("no Ack within the time limit")
        .expect("the stream failed")
}

/// Asserts a stream Ack accepted one event with `id`.
fn assert_stream_ok(ack: &Ack, id: &str, what: &str) {
    assert_eq!(ack.accepted, 1, "{what}: {ack:?}");
    assert_eq!(ack.ids, vec![id.to_owned()], "{what}: {ack:?}");
    assert!(
        ack.error.is_empty() && ack.code.is_empty() && ack.field.is_empty(),
        "{what}: {ack:?}"
    );
}

/// Asserts a stream Ack refused its event as INVALID_ARGUMENT at `field`.
fn assert_stream_refused(ack: &Ack, field: &str, what: &str) {
    assert_eq!(ack.accepted, 0, "{what}: {ack:?}");
    assert!(ack.ids.is_empty(), "{what}: {ack:?}");
    assert_eq!(ack.code, "INVALID_ARGUMENT", "{what}: {ack:?}");
    assert_eq!(ack.field, field, "{what}: {ack:?}");
    assert!(
        ack.error.contains(field),
        "{what}: the error names `{field}`: {ack:?}"
    );
}

#[tokio::test]
async fn the_stream_acks_every_event_in_order() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut client = ingest_client(&server).await;
    let mut sales = SalesTruth::default();
    let mut tweets = TweetsTruth::default();

    // 1. Everything sent at once; bad events in the middle.
    enum Want {
        Ok(String),
        Refused(&'static str),
        Empty,
    }
    let mut events = Vec::new();
    let mut wants = Vec::new();
    for i in 0..60 {
        match i {
            20 => {
                let mut bad = good_sale(i);
                bad.price = -1.0;
                events.push(sale_event(bad));
                wants.push(Want::Refused("price"));
            }
            31 => {
                let mut bad = good_tweet(i);
                bad.humidity = 101.0;
                events.push(tweet_event(bad));
                wants.push(Want::Refused("humidity"));
            }
            40 => {
                events.push(Event { event: None });
                wants.push(Want::Empty);
            }
            _ if i % 3 == 0 => {
                let t = tweet(
                    &format!("st-t-{i}"),
                    "Zacapa",
                    "cloudy",
                    i as f64 / 2.0,
                    40.0,
                );
                events.push(tweet_event(pb_tweet(&t)));
                wants.push(Want::Ok(t.id.clone()));
                tweets.apply(&t);
            }
            _ => {
                let s = sale(
                    &format!("st-s-{i}"),
                    CATEGORIES[i % 4],
                    &format!("P{}", i % 5),
                    1.5 + i as f64,
                    (i % 7 + 1) as u64,
                );
                events.push(sale_event(pb_sale(&s)));
                wants.push(Want::Ok(s.id.clone()));
                sales.apply(&s);
            }
        }
    }
    let mut acks = client
        .stream(futures::stream::iter(events))
        .await
        .expect("Stream")
        .into_inner();
    for (i, want) in wants.iter().enumerate() {
        let ack = next_ack(&mut acks)
            .await
            .unwrap_or_else(|| panic!("the stream ended after {i} Acks of {}", wants.len()));
        let what = format!("event {i}");
        match want {
            Want::Ok(id) => assert_stream_ok(&ack, id, &what),
            Want::Refused(field) => assert_stream_refused(&ack, field, &what),
            Want::Empty => {
                assert_eq!(ack.accepted, 0, "{what}: {ack:?}");
                assert_eq!(ack.code, "INVALID_ARGUMENT", "{what}: {ack:?}");
                assert!(!ack.error.is_empty(), "{what}: {ack:?}");
            }
        }
    }
    assert!(
        next_ack(&mut acks).await.is_none(),
        "one Ack per event, no more"
    );

    // 2. Interactively: one event, its Ack, the next; a refusal does not end the stream.
    let (tx, rx) = futures::channel::mpsc::unbounded::<Event>();
    let mut acks = client.stream(rx).await.expect("Stream").into_inner();
    let steps: Vec<(Event, Option<&str>, &str)> = vec![
        (
            sale_event(pb_sale(&sale("int-1", "beauty", "CREAM", 12.5, 2))),
            None,
            "int-1",
        ),
        (
            sale_event(pb::Sale {
                quantity: 0,
                ..good_sale(0)
            }),
            Some("quantity"),
            "",
        ),
        (
            sale_event(pb::Sale {
                category: 9,
                ..good_sale(0)
            }),
            Some("category"),
            "",
        ),
        (
            tweet_event(pb_tweet(&tweet("int-2", "Cobán", "rainy", 15.0, 95.0))),
            None,
            "int-2",
        ),
        (
            sale_event(pb::Sale {
                product_id: String::new(),
                ..good_sale(0)
            }),
            Some("product_id"),
            "",
        ),
        (
            sale_event(pb_sale(&sale("", "home", "BED", 300.0, 1))),
            None,
            "",
        ),
    ];
    for (i, (event, refused, id)) in steps.into_iter().enumerate() {
        tx.unbounded_send(event).expect("the stream is open");
        let ack = next_ack(&mut acks)
            .await
            .unwrap_or_else(|| panic!("the stream ended at step {i}"));
        let what = format!("step {i}");
        match refused {
            Some(field) => assert_stream_refused(&ack, field, &what),
            None if id.is_empty() => {
                assert_eq!(ack.accepted, 1, "{what}: {ack:?}");
                assert_uuid_v7(&ack.ids[0]);
                sales.apply(&sale(&ack.ids[0], "home", "BED", 300.0, 1));
            }
            None => assert_stream_ok(&ack, id, &what),
        }
    }
    sales.apply(&sale("int-1", "beauty", "CREAM", 12.5, 2));
    tweets.apply(&tweet("int-2", "Cobán", "rainy", 15.0, 95.0));
    drop(tx);
    assert!(
        next_ack(&mut acks).await.is_none(),
        "ends when the client ends"
    );

    // The accepted events, and only they, are counted. Sales of one stream are
    // processed concurrently, so only the order-free aggregates are compared.
    server.wait_idle().await;
    let kpis = server.wait_sales(sales.total.count).await;
    sales.total.assert_matches("total", &kpis["total"]);
    for c in CATEGORIES {
        sales.by_category[c].assert_matches(c, &kpis["categories"][c]);
    }
    tweets.assert_kpis(&server.wait_tweets(tweets.total.count).await);
}

/// The proto's doc says "every event gets one Ack, in order": a client streaming
/// sales in order must find them applied in that order, as the monitored product's
/// price stream (newest last) shows.
#[tokio::test]
async fn the_stream_keeps_the_order_of_its_sales() {
    // Mailboxes large enough that no event is refused as backpressure here: a
    // refused event would have to be resent, out of order by the client's own doing.
    let server = TestServer::start(&[
        ("FLUJO__QUERY__CACHE_TTL_MS", "0"),
        ("FLUJO__PIPELINE__MAILBOX_CAPACITY", "100000"),
    ]);
    let mut client = ingest_client(&server).await;
    // Reordering is a race: rounds of 800 streamed sales, checked after each round.
    let mut sales = SalesTruth::default();
    for round in 0..20u64 {
        // The first sale of each category is its "MON" product, and most later ones
        // are too (other products in between); prices increase event by event.
        let mut events = Vec::new();
        let mut ids = Vec::new();
        for i in round * 800..(round + 1) * 800 {
            let category = CATEGORIES[(i % 4) as usize];
            let product = if i < 4 || i % 8 != 7 {
                format!("MON-{category}")
            } else {
                format!("OTHER-{}", i % 5)
            };
            let s = sale(&format!("ord-{i}"), category, &product, (i + 1) as f64, 1);
            events.push(sale_event(pb_sale(&s)));
            ids.push(s.id.clone());
            sales.apply(&s);
        }
        // Other clients keep the receivers busy meanwhile, as in production: eight
        // clients, ten batches of 20 tweets each.
        let noise: Vec<_> = (0..8)
            .map(|n| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    for i in 0..10 {
                        let tweets: Vec<pb::Tweet> = (0..20)
                            .map(|k| {
                                let id = format!("noise-{round}-{n}-{i}-{k}");
                                pb_tweet(&tweet(&id, "Mixco", "sunny", 1.0, 1.0))
                            })
                            .collect();
                        publish_tweets(&mut client, tweets).await.expect("noise");
                    }
                })
            })
            .collect();
        let mut acks = client
            .stream(futures::stream::iter(events))
            .await
            .expect("Stream")
            .into_inner();
        for id in &ids {
            let ack = next_ack(&mut acks).await.expect("an Ack per event");
            assert_stream_ok(&ack, id, id);
        }
        for task in noise {
            task.await.expect("a noise client failed");
        }
        let kpis = server.wait_sales(sales.total.count).await;
        for c in CATEGORIES {
            let (product, prices) = sales.monitored_prices(c, 1000);
            assert_eq!(
                kpis["categories"][c]["monitored_product"].as_str(),
                product.as_deref(),
                "{c}: the first product streamed is the monitored one"
            );
            let got = server
                .get_ok(&format!("/v1/sales/monitored/{c}/prices?limit=1000"))
                .await;
            assert_same_order(
                &format!(
                    "round {round}, {c}: the price stream follows the order of the gRPC stream"
                ),
                &got["prices"],
                &prices,
            );
        }
    }
}

#[tokio::test]
async fn health_reports_serving() {
    let server = TestServer::start(&[]);
    let mut health = HealthClient::new(channel(&server).await);
    for service in ["", "flujo.v1.Ingest"] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("Health/Check {service:?}: {e:?}"))
            .into_inner();
        assert_eq!(
            resp.status,
            ServingStatus::Serving as i32,
            "Health/Check {service:?}: {resp:?}"
        );
    }
    // An unknown service is NOT_FOUND, as the health protocol says.
    let status = health
        .check(HealthCheckRequest {
            service: "flujo.v1.Nope".into(),
        })
        .await
        .expect_err("an unknown service");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

/// The next reflection answer, bounded in time.
async fn next_reflection(
    responses: &mut tonic::Streaming<tonic_reflection::pb::v1::ServerReflectionResponse>,
) -> tonic_reflection::pb::v1::server_reflection_response::MessageResponse {
    tokio::time::timeout(CALL_TIMEOUT, responses.next())
        .await
        .expect("a reflection answer in time")
        .expect("a reflection answer")
        .expect("a reflection answer, not an error")
        .message_response
        .expect("a message response")
}

#[tokio::test]
async fn reflection_lists_the_ingest_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = TestServer::start(&[]);
    let mut reflection = ServerReflectionClient::new(channel(&server).await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "flujo.v1.Ingest".into(),
            )),
        },
    ];
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .expect("ServerReflectionInfo")
        .into_inner();
    let MessageResponse::ListServicesResponse(list) = next_reflection(&mut responses).await else {
        panic!("ListServices did not answer a service list");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"flujo.v1.Ingest"),
        "reflection lists flujo.v1.Ingest: {names:?}"
    );
    let MessageResponse::FileDescriptorResponse(files) = next_reflection(&mut responses).await
    else {
        panic!("FileContainingSymbol did not answer file descriptors");
    };
    let has = |needle: &[u8]| {
        files
            .file_descriptor_proto
            .iter()
            .any(|f| f.windows(needle.len()).any(|w| w == needle))
    };
    for needle in [
        &b"flujo/v1/ingest.proto"[..],
        b"PublishSales",
        b"PublishTweets",
        b"Stream",
    ] {
        assert!(
            has(needle),
            "the descriptor of flujo.v1.Ingest holds {:?}",
            String::from_utf8_lossy(needle)
        );
    }
}

/// The health service is served, so reflection should know it too: tools that
/// resolve methods through reflection (grpcurl, grpcui, Postman) otherwise cannot call
/// `grpc.health.v1.Health/Check`.
#[tokio::test]
async fn reflection_describes_the_health_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = TestServer::start(&[]);
    let mut reflection = ServerReflectionClient::new(channel(&server).await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "grpc.health.v1.Health".into(),
            )),
        },
    ];
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .expect("ServerReflectionInfo")
        .into_inner();
    let MessageResponse::ListServicesResponse(list) = next_reflection(&mut responses).await else {
        panic!("ListServices did not answer a service list");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"grpc.health.v1.Health"),
        "grpc.health.v1.Health is served but reflection lists only {names:?}"
    );
    let answer = tokio::time::timeout(CALL_TIMEOUT, responses.next())
        .await
        .expect("a reflection answer in time")
        .expect("a reflection answer");
    assert!(
        matches!(
            answer.as_ref().map(|r| &r.message_response),
            Ok(Some(MessageResponse::FileDescriptorResponse(_)))
        ),
        "reflection cannot resolve grpc.health.v1.Health: {answer:?}"
    );
}

/// Fires `batches` concurrent 10,000-event PublishSales over a few connections;
/// returns, per batch, the Ack or the refusal.
async fn burst(
    clients: &[IngestClient<Channel>],
    round: usize,
    batches: usize,
) -> Vec<Result<Ack, Status>> {
    let sends = (0..batches).map(|b| {
        let mut client = clients[b % clients.len()].clone();
        let sales: Vec<pb::Sale> = (0..10_000)
            .map(|i| pb::Sale {
                id: format!("bp-{round}-{b}-{i}"),
                ts: 0,
                category: i % 4 + 1,
                product_id: format!("P{}", i % 50),
                price: 1.5,
                quantity: 1,
            })
            .collect();
        async move { publish_sales(&mut client, sales).await }
    });
    join_all(sends).await
}

#[tokio::test]
async fn backpressure_is_resource_exhausted_and_acked_is_what_counts() {
    let server = TestServer::start(&[
        ("FLUJO__PIPELINE__MAX_INFLIGHT_EVENTS", "10000"),
        ("FLUJO__QUERY__CACHE_TTL_MS", "0"),
    ]);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(ingest_client(&server).await);
    }
    let mut acked = 0u64;
    let mut exhausted = 0usize;
    for round in 0..3 {
        for outcome in burst(&clients, round, 40).await {
            match outcome {
                Ok(ack) => {
                    assert_eq!((ack.accepted, ack.ids.len()), (10_000, 10_000), "{ack:?}");
                    acked += 10_000;
                }
                Err(status) if status.code() == Code::ResourceExhausted => {
                    assert!(!status.message().is_empty(), "{status:?}");
                    exhausted += 1;
                }
                Err(status) => panic!(
                    "under backpressure only an Ack or RESOURCE_EXHAUSTED is expected: {status:?}"
                ),
            }
        }
        // Exactly what was acked is counted: nothing lost, nothing of a refused
        // batch stored.
        server.wait_sales(acked).await;
        server.wait_idle().await;
        let kpis = server.wait_sales(acked).await;
        assert_eq!(kpis["total"]["quantity_sum"], json!(acked), "{kpis}");
        for c in CATEGORIES {
            assert_eq!(
                kpis["categories"][c]["count"],
                json!(acked / 4),
                "{c}: {kpis}"
            );
        }
        eprintln!("round {round}: {acked} events acked in all, {exhausted} batches refused");
        if exhausted > 0 {
            break;
        }
    }
    assert!(acked > 0, "some batch must get through");
    assert!(
        exhausted > 0,
        "120 concurrent 10,000-event batches against max_inflight_events=10000: \
         no RESOURCE_EXHAUSTED was ever answered"
    );
    // After the burst the pipeline takes batches again.
    let mut client = clients[0].clone();
    let ack = publish_sales(&mut client, vec![good_sale(424_242)])
        .await
        .expect("a batch after the burst");
    assert_eq!(ack.accepted, 1);
    server.wait_sales(acked + 1).await;
}

// ---------------------------------------------------------------------------
// The same KPIs over every transport
// ---------------------------------------------------------------------------

/// A seeded set of events whose values are multiples of 1/4 (prices) and 1/2
/// (temperature, humidity): their f64 sums are exact in any order and any batching, so
/// three servers fed over three transports must answer identical JSON.
struct Workload {
    /// One sale per category, each sent alone first (they fix the monitored products).
    first: Vec<Sale>,
    /// The other sales, in the order they are sent.
    sales: Vec<Sale>,
    tweets: Vec<Tweet>,
    /// Batch sizes used by the batching transports.
    sale_chunks: Vec<usize>,
    tweet_chunks: Vec<usize>,
}

const LOCATIONS: [&str; 6] = [
    "Guatemala",
    "Mixco",
    "Villa Nueva",
    "Quetzaltenango",
    "Cobán",
    "San José",
];

fn workload(seed: u64) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let price = |rng: &mut StdRng| rng.random_range(1..=8000) as f64 / 4.0;
    let first: Vec<Sale> = CATEGORIES
        .iter()
        .enumerate()
        .map(|(i, c)| {
            sale(
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

fn chunked<'a, T>(items: &'a [T], sizes: &[usize]) -> Vec<&'a [T]> {
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
async fn send_over_http(server: &TestServer, w: &Workload) {
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
async fn send_over_grpc(server: &TestServer, w: &Workload) {
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
async fn send_over_tcp(server: &TestServer, w: &Workload) {
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
fn query_paths() -> Vec<String> {
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

    let mut sales = SalesTruth::default();
    let mut tweets = TweetsTruth::default();
    for s in w.first.iter().chain(&w.sales) {
        sales.apply(s);
    }
    for t in &w.tweets {
        tweets.apply(t);
    }
    for server in [&a, &b, &c] {
        server.wait_sales(sales.total.count).await;
        server.wait_tweets(tweets.total.count).await;
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
    sales.assert_kpis(&a.get_ok("/v1/kpis/sales").await);
    tweets.assert_kpis(&a.get_ok("/v1/kpis/tweets").await);
    let got = a.get_ok("/v1/rankings/products?limit=1000").await;
    assert_product_ranking(&got, &sales.ranking(None), "global ranking");
    for cat in CATEGORIES {
        let got = a
            .get_ok(&format!("/v1/rankings/products?category={cat}&limit=1000"))
            .await;
        assert_product_ranking(&got, &sales.ranking(Some(cat)), cat);
        let (product, prices) = sales.monitored_prices(cat, 1000);
        let got = a
            .get_ok(&format!("/v1/sales/monitored/{cat}/prices?limit=1000"))
            .await;
        assert_eq!(got["product_id"].as_str(), product.as_deref(), "{cat}");
        assert_eq!(product, Some(format!("MON-{cat}")));
        assert_same_order(&format!("{cat} prices"), &got["prices"], &prices);
    }
    let got = a.get_ok("/v1/rankings/locations?limit=1000").await;
    let want = tweets.ranking();
    let items = got["items"].as_array().expect("items");
    assert_eq!(items.len(), want.len(), "{got}");
    for (item, (location, stats)) in items.iter().zip(&want) {
        assert_eq!(item["location"].as_str(), Some(location.as_str()), "{got}");
        stats.assert_matches(location, item);
    }
}

// ---------------------------------------------------------------------------
// An independent client in Python
// ---------------------------------------------------------------------------

/// The interpreter for the Python client: `FLUJO_TEST_PYTHON`, else the project's
/// venv (made by `scripts/test.sh`), else `python3`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLUJO_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".services/venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

#[tokio::test]
async fn python_client_from_the_proto() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = python();
    if let Err(e) = Command::new(&python).arg("--version").output() {
        panic!(
            "cannot run the Python interpreter {} ({e}); run scripts/test.sh, which \
             makes .services/venv with the gRPC modules, or set FLUJO_TEST_PYTHON",
            python.display()
        );
    }
    let mut check = Command::new(&python);
    check.args([
        "-c",
        "import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2",
    ]);
    let out = tokio::task::spawn_blocking(move || output_within(check, Duration::from_secs(60)))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "{} cannot import the gRPC modules (grpcio, grpcio-tools, grpcio-health-checking); \
         run scripts/test.sh, which installs them into .services/venv, or set \
         FLUJO_TEST_PYTHON to an interpreter that has them.\n{}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );

    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut cmd = Command::new(&python);
    cmd.arg(root.join("tests/clients/grpc_client.py"))
        .arg(server.grpc_addr().to_string())
        .current_dir(root);
    let out = tokio::task::spawn_blocking(move || output_within(cmd, Duration::from_secs(120)))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python gRPC client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("python gRPC client: OK"),
        "{stdout}\n{stderr}"
    );

    // What the Python client sent (see the script) is exactly what is counted.
    let mut sales = SalesTruth::default();
    let mut tweets = TweetsTruth::default();
    let generated = stdout
        .lines()
        .find_map(|l| l.strip_prefix("generated id: "))
        .unwrap_or_else(|| panic!("the script prints the generated id: {stdout}"));
    assert_uuid_v7(generated);
    for s in [
        sale("py-s-1", "electronics", "PY-TV", 250.5, 2),
        sale(generated, "home", "PY-LAMP", 20.25, 1),
        sale("py-s-3", "beauty", "PY-SOAP", 3.5, 6),
        sale("py-st-1", "clothing", "PY-HAT", 15.0, 1),
    ] {
        sales.apply(&s);
    }
    for t in [
        tweet("py-t-1", "Antigua", "sunny", 26.5, 55.0),
        tweet("py-t-2", "Zacapa", "stormy", 31.0, 70.0),
        tweet("py-st-3", "Antigua", "rainy", 19.0, 90.0),
    ] {
        tweets.apply(&t);
    }
    server.wait_idle().await;
    sales.assert_kpis(&server.wait_sales(sales.total.count).await);
    tweets.assert_kpis(&server.wait_tweets(tweets.total.count).await);
}
