//! A kind routed to two sinks: when one confirms a batch and the other refuses it,
//! the batch is on a bus already, so the client must learn its ids (a retry with
//! them is idempotent) instead of a plain "nothing published" refusal.

use actix::prelude::*;
use async_trait::async_trait;
use flujo_actors::admission::Admission;
use flujo_actors::breaker::{Breaker, BreakerConfig};
use flujo_actors::bus::memory_bus;
use flujo_actors::event::Kind;
use flujo_actors::messages::{AckMode, Batch, IngestError, Transport};
use flujo_actors::publisher::{Publisher, Sink, SinkError};
use flujo_actors::receiver::{Receiver, ReceiverPool};
use flujo_actors::router::Router;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A sink whose broker is down: every publish fails.
struct DownSink;

#[async_trait]
impl Sink for DownSink {
    fn name(&self) -> &'static str {
        "down"
    }
    async fn publish(&self, _batch: Batch) -> Result<(), SinkError> {
        Err(SinkError("connection refused".into()))
    }
}

fn sales(n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| json!({"category": "home", "product_id": format!("P{i}"), "price": 2.5, "quantity": 1}))
        .collect()
}

#[actix::test]
async fn one_sink_confirms_the_other_refuses_answers_unknown_outcome_with_ids() {
    let (memory, mut source) = memory_bus(16);
    let up = Publisher::new(Arc::new(memory)).start();
    // Opens after one failure and stays open for the whole test.
    let breaker = Breaker::new(
        "down",
        BreakerConfig {
            failure_threshold: 1,
            open_ms: 600_000,
            half_open_probes: 1,
        },
    );
    let down = Publisher::guarded(Arc::new(DownSink), breaker, Duration::from_secs(5)).start();
    let routes: HashMap<_, _> = [(Kind::Sale, vec![up, down])].into_iter().collect();
    let router = Router::new(routes).start();
    let receiver =
        Receiver::new(router.recipient(), Admission::new(1_000), AckMode::Durable).start();
    let pool = ReceiverPool::new(vec![receiver]);

    // The first batch fails on the broken sink (the breaker opens), the second is
    // refused by the open breaker: both are on the memory bus all the same.
    for attempt in 0..2 {
        match pool.ingest(Kind::Sale, sales(3), Transport::Http).await {
            Err(IngestError::OutcomeUnknown { ids, reason, .. }) => {
                assert_eq!(ids.len(), 3, "attempt {attempt}: {reason}");
                use flujo_actors::consumer::Source as _;
                let delivery = source.next().await.expect("the batch is on the memory bus");
                let on_bus = delivery.batch.events.ids();
                assert_eq!(
                    on_bus, ids,
                    "attempt {attempt}: the answered ids are the published ones"
                );
            }
            other => panic!("attempt {attempt}: want an unknown outcome with ids, got {other:?}"),
        }
    }
}
