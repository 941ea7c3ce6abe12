//! `carries_batches_between_actix_actors`: publisher and consumer actors on
//! separate arbiters, RabbitMQ in between.

use super::*;
use flujo_actors::mailbox::start_bounded;

/// Sum of the sales and tweets counts in `store`.
pub(crate) async fn stored_counts(store: &dyn Store) -> (u64, u64) {
    let sales = store.sales_kpis().await.expect("sales kpis").total.count;
    let tweets = store.tweet_kpis().await.expect("tweet kpis").total.count;
    (sales, tweets)
}

/// The seam as the process uses it: a publisher actor on one arbiter, consumer
/// actors on another (actix's single-threaded runtimes), RabbitMQ in between.
#[test]
fn carries_batches_between_actix_actors() {
    let system = actix::System::new();
    system.block_on(run_test(async {
        let config = test_config("actix");
        let _cleanup = queue_cleanup(&config);
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Duration::from_secs(600)));
        let (routing, storage) = (Arbiter::new(), Arbiter::new());
        let sink: Arc<dyn Sink> = Arc::new(RabbitSink::with_connection_name(
            config.clone(),
            unique("actix-sink"),
        ));
        let publisher = start_bounded(&routing.handle(), 16, Publisher::new(sink));
        let aggregator = Supervisor::start_in_arbiter(&storage.handle(), {
            let store = store.clone();
            move |_| Aggregator::new(store, Duration::from_secs(600), 16)
        });
        let stop = CancellationToken::new();
        for kind in Kind::ALL {
            let source = RabbitSource::new(config.clone(), kind, stop.clone());
            let aggregator = aggregator.clone();
            Supervisor::start_in_arbiter(&storage.handle(), move |_| {
                Consumer::new(Box::new(source), aggregator, Default::default())
            });
        }

        let batches = [
            Events::Sales(actor_sales("actix-s1", 40)),
            Events::Tweets(actor_tweets("actix-t1", 25, 3)),
            Events::Sales(actor_sales("actix-s2", 7)),
        ];
        for events in batches {
            // The sink connects in the background: the first attempts may be refused.
            until_ok("never published", Duration::from_millis(50), || {
                let publish = Publish::new(batch(events.clone(), flujo_actors::event::now_ms()));
                let sent = publisher.send(publish);
                async { sent.await.expect("publisher running") }
            })
            .await;
        }
        let deadline = Instant::now() + WAIT;
        while stored_counts(store.as_ref()).await != (47, 25) {
            assert!(
                Instant::now() < deadline,
                "stored {:?} of (47, 25)",
                stored_counts(store.as_ref()).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Everything was acked after being stored.
        let deadline = Instant::now() + Duration::from_secs(5);
        for queue in [&config.sales_queue, &config.tweets_queue] {
            while ready_messages(&config.url, queue).await != 0 {
                assert!(Instant::now() < deadline, "{queue} not drained");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        stop.cancel();
        routing.stop();
        storage.stop();
    }));
}
