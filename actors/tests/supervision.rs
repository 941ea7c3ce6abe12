//! The actor pipeline wired by hand around stores that fail or stall: a failing
//! store restarts the aggregator and the batch is redelivered until stored (nothing
//! lost, nothing doubled); a stalled store fills the pipeline and ingest refuses at
//! once instead of queueing.

use actix::prelude::*;
use async_trait::async_trait;
use flujo_actors::admission::Admission;
use flujo_actors::aggregator::Aggregator;
use flujo_actors::bus::memory_bus;
use flujo_actors::consumer::Consumer;
use flujo_actors::event::{Category, Kind, Sale, Tweet};
use flujo_actors::messages::{AckMode, IngestError, Transport};
use flujo_actors::publisher::{Publisher, Sink};
use flujo_actors::receiver::{Receiver, ReceiverPool};
use flujo_actors::router::Router;
use flujo_actors::store::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A memory store whose first `fail_first` applies fail, and whose applies can be
/// held back with a gate.
struct UnreliableStore {
    inner: MemoryStore,
    fail_first: usize,
    attempts: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

#[async_trait]
impl Store for UnreliableStore {
    fn name(&self) -> &'static str {
        "unreliable"
    }
    async fn apply_sales_at(&self, sales: &[Sale], at: &Positions) -> Result<Applied, StoreError> {
        let _pass = self.gate.acquire().await;
        if self.attempts.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(StoreError::Unavailable("injected failure".into()));
        }
        self.inner.apply_sales_at(sales, at).await
    }
    async fn apply_tweets_at(
        &self,
        tweets: &[Tweet],
        at: &Positions,
    ) -> Result<Applied, StoreError> {
        self.inner.apply_tweets_at(tweets, at).await
    }
    async fn positions(&self, streams: &[String]) -> Result<Vec<Option<i64>>, StoreError> {
        self.inner.positions(streams).await
    }
    async fn sales_kpis(&self) -> Result<SalesKpis, StoreError> {
        self.inner.sales_kpis().await
    }
    async fn tweet_kpis(&self) -> Result<TweetKpis, StoreError> {
        self.inner.tweet_kpis().await
    }
    async fn product_ranking(
        &self,
        c: Option<Category>,
        p: Page,
    ) -> Result<Ranking<ProductRank>, StoreError> {
        self.inner.product_ranking(c, p).await
    }
    async fn location_ranking(&self, p: Page) -> Result<Ranking<LocationRank>, StoreError> {
        self.inner.location_ranking(p).await
    }
    async fn monitored_prices(&self, c: Category, l: usize) -> Result<MonitoredPrices, StoreError> {
        self.inner.monitored_prices(c, l).await
    }
    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn unreliable(fail_first: usize, open: bool) -> Arc<UnreliableStore> {
    Arc::new(UnreliableStore {
        inner: MemoryStore::new(Duration::from_secs(60)),
        fail_first,
        attempts: AtomicUsize::new(0),
        gate: tokio::sync::Semaphore::new(if open { 1_000_000 } else { 0 }),
    })
}

/// Wires receiver → router → publisher → memory bus → consumer → aggregator.
fn pipeline(store: Arc<dyn Store>, capacity: usize) -> (ReceiverPool, Addr<Consumer>) {
    let aggregator =
        Supervisor::start(move |_| Aggregator::new(store, Duration::from_secs(60), 16));
    let (sink, source) = memory_bus(16);
    let consumer =
        Supervisor::start(move |_| Consumer::new(Box::new(source), aggregator, Default::default()));
    let sink: Arc<dyn Sink> = Arc::new(sink);
    let publisher = Publisher::new(sink).start();
    let routes: HashMap<_, _> = Kind::ALL
        .into_iter()
        .map(|k| (k, vec![publisher.clone()]))
        .collect();
    let router = Router::new(routes).start();
    let admission = Admission::new(capacity);
    let receiver = Receiver::new(router.recipient(), admission, AckMode::Durable).start();
    (ReceiverPool::new(vec![receiver]), consumer)
}

fn sales(ids: std::ops::Range<usize>) -> Vec<serde_json::Value> {
    ids.map(|i| json!({"id": format!("s{i}"), "category": "home", "product_id": "P", "price": 2.5, "quantity": 2}))
        .collect()
}

async fn wait_for_count(store: &dyn Store, want: u64) -> u64 {
    for _ in 0..200 {
        let got = store.sales_kpis().await.expect("kpis").total.count;
        if got == want {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    store.sales_kpis().await.expect("kpis").total.count
}

#[actix::test]
async fn failing_store_restarts_aggregator_and_loses_nothing() {
    let store = unreliable(3, true);
    let (pool, _consumer) = pipeline(store.clone(), 1_000);
    let first = pool
        .ingest(Kind::Sale, sales(0..50), Transport::Http)
        .await
        .expect("accepted");
    assert_eq!(first.ids.len(), 50);
    assert_eq!(
        wait_for_count(store.as_ref(), 50).await,
        50,
        "every event applied once"
    );
    // Three failures, then the redelivered batch succeeded.
    assert_eq!(store.attempts.load(Ordering::SeqCst), 4);
    // The restarted aggregator keeps working, and a resend changes nothing.
    pool.ingest(Kind::Sale, sales(25..75), Transport::Http)
        .await
        .expect("accepted");
    assert_eq!(wait_for_count(store.as_ref(), 75).await, 75);
    let k = store.sales_kpis().await.expect("kpis");
    assert_eq!((k.total.quantity_sum, k.total.revenue), (150, 75.0 * 5.0));
}

#[actix::test]
async fn stalled_store_fills_pipeline_and_ingest_refuses_at_once() {
    let store = unreliable(0, false);
    let (pool, _consumer) = pipeline(store.clone(), 100);
    pool.ingest(Kind::Sale, sales(0..60), Transport::Http)
        .await
        .expect("room for 60");
    let refused = pool
        .ingest(Kind::Sale, sales(60..110), Transport::Http)
        .await;
    assert!(
        matches!(refused, Err(IngestError::Backpressure(_))),
        "{refused:?}"
    );
    let invalid = pool
        .ingest(
            Kind::Sale,
            vec![json!({"category": "home"})],
            Transport::Http,
        )
        .await;
    assert!(
        matches!(invalid, Err(IngestError::Invalid(_))),
        "{invalid:?}"
    );
    // Let the store go: the admitted batch lands, room comes back.
    store.gate.add_permits(1_000_000);
    assert_eq!(wait_for_count(store.as_ref(), 60).await, 60);
    pool.ingest(Kind::Sale, sales(60..110), Transport::Http)
        .await
        .expect("room again");
    assert_eq!(wait_for_count(store.as_ref(), 110).await, 110);
}
