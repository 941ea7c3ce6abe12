//! The bidirectional stream: one ack per event, in order.

use super::*;

/// The next Ack of a stream, bounded in time.
pub(crate) async fn next_ack(acks: &mut tonic::Streaming<Ack>) -> Option<Ack> {
    tokio::time::timeout(CALL_TIMEOUT, acks.message())
        .await
        .expect("no Ack within the time limit")
        .expect("the stream failed")
}

/// Asserts a stream Ack accepted one event with `id`.
pub(crate) fn assert_stream_ok(ack: &Ack, id: &str, what: &str) {
    assert_eq!(ack.accepted, 1, "{what}: {ack:?}");
    assert_eq!(ack.ids, vec![id.to_owned()], "{what}: {ack:?}");
    assert!(
        ack.error.is_empty() && ack.code.is_empty() && ack.field.is_empty(),
        "{what}: {ack:?}"
    );
}

/// Asserts a stream Ack refused its event as INVALID_ARGUMENT at `field`.
pub(crate) fn assert_stream_refused(ack: &Ack, field: &str, what: &str) {
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
    let (mut sales, mut tweets) = (DedupTruth::default(), DedupTruth::default());

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
                tweets.apply_tweet(&t);
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
                sales.apply_sale(&s);
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
                sales.apply_sale(&sale(&ack.ids[0], "home", "BED", 300.0, 1));
            }
            None => assert_stream_ok(&ack, id, &what),
        }
    }
    sales.apply_sale(&sale("int-1", "beauty", "CREAM", 12.5, 2));
    tweets.apply_tweet(&tweet("int-2", "Cobán", "rainy", 15.0, 95.0));
    drop(tx);
    assert!(
        next_ack(&mut acks).await.is_none(),
        "ends when the client ends"
    );

    // The accepted events, and only they, are counted. Sales of one stream are
    // processed concurrently, so only the order-free aggregates are compared.
    server.wait_idle().await;
    let kpis = server.wait_sales(sales.sales.count).await;
    assert_sale_agg("total", &sales.sales, &kpis["total"]);
    for c in CATEGORIES {
        assert_sale_agg(c, &sales.sales_by_category[c], &kpis["categories"][c]);
    }
    assert_tweets_kpis(&tweets, &server.wait_tweets(tweets.tweets.count).await);
}

/// Events a client streams at once are coalesced into batches (a few ingests, not
/// one per event), yet each gets its own Ack in order: a bad one is refused alone.
#[tokio::test]
async fn events_streamed_at_once_are_coalesced_and_acked_one_by_one() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut client = ingest_client(&server).await;
    let mut sales = DedupTruth::default();
    const EVENTS: usize = 1_000;
    const BAD: usize = 333;
    let (mut events, mut ids) = (Vec::new(), Vec::new());
    for i in 0..EVENTS {
        let s = sale(
            &format!("co-{i}"),
            CATEGORIES[i % 4],
            &format!("P{}", i % 9),
            2.0 + (i % 50) as f64,
            (i % 5 + 1) as u64,
        );
        if i == BAD {
            events.push(sale_event(pb::Sale {
                quantity: 0,
                ..pb_sale(&s)
            }));
        } else {
            events.push(sale_event(pb_sale(&s)));
            sales.apply_sale(&s);
        }
        ids.push(s.id);
    }
    let mut acks = client
        .stream(futures::stream::iter(events))
        .await
        .expect("Stream")
        .into_inner();
    for (i, id) in ids.iter().enumerate() {
        let ack = next_ack(&mut acks)
            .await
            .unwrap_or_else(|| panic!("the stream ended after {i} Acks"));
        if i == BAD {
            assert_stream_refused(&ack, "quantity", &format!("event {i}"));
        } else {
            assert_stream_ok(&ack, id, &format!("event {i}"));
        }
    }
    assert!(next_ack(&mut acks).await.is_none(), "one Ack per event");

    server.wait_idle().await;
    let kpis = server.wait_sales(sales.sales.count).await;
    assert_sale_agg("total", &sales.sales, &kpis["total"]);
    let metrics = server.metrics().await;
    let grpc = [("transport", "grpc")];
    let ingests = metric_value(&metrics, "flujo_ingest_duration_seconds_count", &grpc)
        .expect("the gRPC ingest histogram");
    assert!(
        ingests <= (EVENTS / 4) as f64,
        "{ingests} ingests for {EVENTS} events streamed at once: not coalesced"
    );
    let labels = [
        ("kind", "sale"),
        ("transport", "grpc"),
        ("reason", "invalid"),
    ];
    assert_eq!(
        metric_value(&metrics, "flujo_events_rejected_total", &labels),
        Some(1.0),
        "only the bad event is counted as rejected"
    );
}

/// The proto's doc says "every event gets one Ack, in order": a client streaming
/// sales gets their Acks in order, and finds the monitored product's price stream
/// (newest last) in the sales' (`ts`, `id`) order, which here is the order sent
/// (the KPIs no longer depend on arrival order: this checks every `ts` arrives).
#[tokio::test]
async fn the_stream_keeps_the_order_of_its_sales() {
    let server = TestServer::start_for_order();
    let mut client = ingest_client(&server).await;
    let order = "the (ts, id) order, the order of the gRPC stream";
    // Reordering is a race: rounds of 800 streamed sales, checked after each round.
    let mut sales = DedupTruth::default();
    for round in 0..20u64 {
        let mut events = Vec::new();
        let mut ids = Vec::new();
        for i in round * 800..(round + 1) * 800 {
            let s = order_sale(i);
            events.push(sale_event(pb_sale(&s)));
            ids.push(s.id.clone());
            sales.apply_sale(&s);
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
        assert_monitored_in_order(&server, &sales, &format!("round {round}"), order).await;
    }
}
