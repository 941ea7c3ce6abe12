//! Publishing and consuming: order and receive time kept, nothing acked before
//! commit, undecodable messages acked away, large batches confirmed at once.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_keeps_events_order_and_receive_time() {
    run_test(async {
        let config = RabbitConfig {
            batch_max: 4,
            ..test_config("roundtrip")
        };
        let _cleanup = queue_cleanup(&config);
        let sink = ready_sink(&config, &unique("roundtrip-sink")).await;
        assert_eq!(sink.name(), "rabbitmq");
        sink.ready().await.expect("ready");

        let mut sent_sales = Vec::new();
        let mut sent_tweets = Vec::new();
        let mut received_at = HashMap::new();
        for (i, n) in [3usize, 5, 1].into_iter().enumerate() {
            let s = actor_sales(&format!("s{i}"), n);
            let at = 1_700_000_100_000 + i as i64 * 1000;
            for e in &s {
                received_at.insert(e.id.clone(), at);
            }
            sent_sales.extend(s.clone());
            publish(&sink, Events::Sales(s), at, "sales confirmed").await;
        }
        for (i, n) in [2usize, 6].into_iter().enumerate() {
            let t = actor_tweets(&format!("t{i}"), n, 3);
            let at = 1_700_000_200_000 + i as i64 * 1000;
            for e in &t {
                received_at.insert(e.id.clone(), at);
            }
            sent_tweets.extend(t.clone());
            publish(&sink, Events::Tweets(t), at, "tweets confirmed").await;
        }
        // An empty batch is a no-op.
        publish(&sink, Events::Sales(vec![]), 1, "empty batch").await;

        let cancel = CancellationToken::new();
        let mut sale_source = RabbitSource::new(config.clone(), Kind::Sale, cancel.clone());
        assert_eq!(sale_source.name(), "rabbitmq");
        assert_eq!(sale_source.queue(), config.sales_queue);
        let deliveries = read_events(&mut sale_source, sent_sales.len()).await;
        assert!(
            deliveries.iter().all(|d| d.batch.events.len() <= 4),
            "batch_max"
        );
        assert_eq!(all_sales(&deliveries), sent_sales, "exact sales, in order");
        check_received_at(&deliveries, &received_at);

        let mut tweet_source = RabbitSource::new(config.clone(), Kind::Tweet, cancel.clone());
        let deliveries = read_events(&mut tweet_source, sent_tweets.len()).await;
        assert_eq!(
            all_tweets(&deliveries),
            sent_tweets,
            "exact tweets, in order"
        );
        check_received_at(&deliveries, &received_at);

        // Cancelled (and so no longer consuming): `next` ends instead of waiting for messages.
        cancel.cancel();
        let end = tokio::time::timeout(WAIT, sale_source.next()).await;
        assert!(matches!(end, Ok(None)), "next() ends once cancelled");
        let end = tokio::time::timeout(WAIT, tweet_source.next()).await;
        assert!(matches!(end, Ok(None)), "next() ends once cancelled");

        // On the wire: persistent canonical JSON with the receive-time header.
        let raw = actor_sales("raw", 1);
        publish(&sink, Events::Sales(raw.clone()), 42, "confirmed").await;
        let (connection, channel) = open_channel(&config.url).await;
        let got = channel
            .basic_get(
                config.sales_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic_get")
            .expect("a message is waiting");
        let props = &got.delivery.properties;
        assert_eq!(*props.delivery_mode(), Some(2), "persistent");
        assert_eq!(
            props.content_type().as_ref().map(|c| c.as_str()),
            Some(CONTENT_TYPE)
        );
        let header = props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(RECEIVED_AT_HEADER).cloned());
        assert_eq!(header, Some(AMQPValue::LongLongInt(42)));
        let body: Value = serde_json::from_slice(&got.delivery.data).expect("JSON body");
        assert_canonical_sale_fields("raw-0", &body);
        assert_eq!(body["id"], "raw-0");
        assert_eq!(body["category"], "electronics");
        assert_eq!(
            body,
            serde_json::to_value(&raw[0]).expect("canonical JSON"),
            "the body is the canonical JSON"
        );
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acked_before_commit() {
    with_queues("commit", |config, sink| async move {
        let sent = actor_sales("c", 5);
        publish(&sink, Events::Sales(sent.clone()), 7, "confirmed").await;

        // Read, then drop the source without committing: everything comes again.
        let mut first = sales_source(&config);
        let delivery = next_delivery(&mut first).await;
        assert_eq!(all_sales(std::slice::from_ref(&delivery)), sent);
        drop(first);

        let mut second = sales_source(&config);
        let mut again = Vec::new();
        while again.len() < sent.len() {
            let d = next_delivery(&mut second).await;
            again.extend(all_sales(std::slice::from_ref(&d)));
            if again.len() == sent.len() {
                second.commit(d.token).await.expect("commit");
            }
        }
        assert_eq!(again, sent, "redelivered after a drop without commit");
        drop(second);

        // Committed: a new source gets nothing, and the queue is empty.
        let mut third = sales_source(&config);
        let nothing = tokio::time::timeout(Duration::from_millis(1500), third.next()).await;
        assert!(nothing.is_err(), "committed messages must not come again");
        drop(third);
        wait_sales_drained(
            &config,
            Duration::from_secs(2),
            "queue not empty after commit",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_confirmed_in_one_go() {
    with_queues("large", |config, sink| async move {
        let sent = actor_sales("big", 5000);
        let started = Instant::now();
        tokio::time::timeout(WAIT, sink.publish(batch(Events::Sales(sent.clone()), 5)))
            .await
            .expect("5,000 confirms within the wait")
            .expect("confirmed");
        eprintln!("5,000 events confirmed in {:?}", started.elapsed());
        assert_eq!(ready_messages(&config.url, &config.sales_queue).await, 5000);
        let mut source = sales_source(&config);
        let deliveries = read_events(&mut source, sent.len()).await;
        assert!(deliveries
            .iter()
            .all(|d| d.batch.events.len() <= config.batch_max));
        assert_eq!(all_sales(&deliveries), sent);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_acked_away() {
    with_queues("poison", |config, sink| async move {
        let good_a = actor_sales("a", 2);
        let good_b = actor_sales("b", 2);
        publish(&sink, Events::Sales(good_a.clone()), 10, "confirmed").await;
        // Garbage and a tweet on the sales queue, between two good batches.
        let (connection, channel) = open_channel(&config.url).await;
        let tweet = serde_json::to_vec(&actor_tweets("x", 1, 3)[0]).expect("json");
        for body in [
            b"not json".as_slice(),
            tweet.as_slice(),
            b"{\"id\":1}".as_slice(),
        ] {
            channel
                .basic_publish(
                    "".into(),
                    config.sales_queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await
                .expect("publish garbage");
        }
        let _ = connection.close(200, "OK".into()).await;
        publish(&sink, Events::Sales(good_b.clone()), 20, "confirmed").await;

        let mut source = sales_source(&config);
        let deliveries = read_events(&mut source, 4).await;
        let got = all_sales(&deliveries);
        assert_eq!(got, [good_a, good_b].concat());
        drop(source);
        wait_sales_drained(&config, Duration::from_secs(3), "garbage left in the queue").await;
    })
    .await;
}
