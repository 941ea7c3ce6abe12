//! The memory bus: the embedded default between publisher and consumer, a bounded
//! in-process queue. Its sink half is a `Sink`, its source half a `Source`, which
//! coalesces the batches waiting in the queue into deliveries of up to
//! [`DELIVERY_MAX_EVENTS`] events of one kind, so the store does one step (one
//! Valkey round trip) for many small requests.

use crate::admission::Admitted;
use crate::consumer::{Delivery, Source, SourceError};
use crate::event::Events;
use crate::messages::Batch;
use crate::metrics::CONSUMER_LAG;
use crate::publisher::{Sink, SinkError};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

const NAME: &str = "memory";

/// The most events the memory bus hands the consumer at once (batches waiting in
/// the queue are merged up to this; a larger batch goes alone). Large enough that
/// a Valkey store's work per event shrinks (a batch touches each product's ranking
/// once, whatever its size: 1,000 → 4,000 took the all-in-one Valkey path from
/// 191k to 203–209k events/s), small enough that one script holds Valkey for a
/// few milliseconds only.
pub const DELIVERY_MAX_EVENTS: usize = 4_000;

/// Deliveries of the memory bus stored at once (see [`Source::deliveries_in_flight`]).
pub const DELIVERIES_IN_FLIGHT: usize = 4;

/// Creates a memory bus holding at most `capacity` batches.
pub fn memory_bus(capacity: usize) -> (MemorySink, MemorySource) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let lag = Arc::new(AtomicI64::new(0));
    (
        MemorySink {
            tx,
            lag: lag.clone(),
        },
        MemorySource {
            rx,
            lag,
            held: None,
            next_token: 0,
            admitted: HashMap::new(),
        },
    )
}

/// Publishing half of the memory bus.
#[derive(Debug, Clone)]
pub struct MemorySink {
    tx: mpsc::Sender<Batch>,
    lag: Arc<AtomicI64>,
}

/// Consuming half of the memory bus.
#[derive(Debug)]
pub struct MemorySource {
    rx: mpsc::Receiver<Batch>,
    lag: Arc<AtomicI64>,
    /// A batch taken from the queue that did not fit the last delivery.
    held: Option<Batch>,
    next_token: u64,
    /// Per delivery handed out: the admissions of the batches merged into it,
    /// released when it is committed (stored), as the batches themselves would be.
    admitted: HashMap<u64, Vec<Arc<Admitted>>>,
}

/// Appends `more` to `into` when both are of one kind (else gives `more` back).
fn append(into: &mut Events, more: Events) -> Result<(), Events> {
    match (into, more) {
        (Events::Sales(a), Events::Sales(b)) => a.extend(b),
        (Events::Tweets(a), Events::Tweets(b)) => a.extend(b),
        (_, more) => return Err(more),
    }
    Ok(())
}

/// The events of a batch, moved out when nothing else holds them.
fn take_events(batch: &mut Batch) -> Events {
    let events = std::mem::replace(&mut batch.events, Arc::new(Events::Sales(Vec::new())));
    Arc::try_unwrap(events).unwrap_or_else(|shared| (*shared).clone())
}

fn report_lag(lag: &AtomicI64, delta: i64) {
    let now = lag.fetch_add(delta, Ordering::Relaxed) + delta;
    metrics::gauge!(CONSUMER_LAG, "source" => NAME).set(now as f64);
}

#[async_trait]
impl Sink for MemorySink {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn publish(&self, batch: Batch) -> Result<(), SinkError> {
        let n = batch.events.len() as i64;
        // Room is bounded upstream by admission; waiting here is short.
        self.tx
            .send(batch)
            .await
            .map_err(|_| SinkError("memory bus closed".into()))?;
        report_lag(&self.lag, n);
        Ok(())
    }
}

#[async_trait]
impl Source for MemorySource {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Batches on the memory bus carry no positions and `next` awaits only the
    /// queue (cancel-safe), so several deliveries may be stored at once: while one
    /// is in the store (a Valkey round trip), the next is folded and sent.
    fn deliveries_in_flight(&self) -> usize {
        DELIVERIES_IN_FLIGHT
    }

    async fn next(&mut self) -> Option<Delivery> {
        let mut first = match self.held.take() {
            Some(batch) => batch,
            None => {
                let batch = self.rx.recv().await?;
                report_lag(&self.lag, -(batch.events.len() as i64));
                batch
            }
        };
        let token = self.next_token;
        self.next_token += 1;
        let mut admitted: Vec<Arc<Admitted>> = first.admitted.take().into_iter().collect();
        let mut received_at_ms = first.received_at_ms;
        let mut events = take_events(&mut first);
        // Merge what waits already, without waiting for more.
        while events.len() < DELIVERY_MAX_EVENTS {
            let Ok(mut more) = self.rx.try_recv() else {
                break;
            };
            report_lag(&self.lag, -(more.events.len() as i64));
            if events.len() + more.events.len() > DELIVERY_MAX_EVENTS {
                self.held = Some(more);
                break;
            }
            if let Err(other) = append(&mut events, take_events(&mut more)) {
                // Another kind: it starts the next delivery.
                more.events = Arc::new(other);
                self.held = Some(more);
                break;
            }
            admitted.extend(more.admitted.take());
            received_at_ms = received_at_ms.min(more.received_at_ms);
        }
        self.admitted.insert(token, admitted);
        Some(Delivery {
            batch: Batch {
                events: Arc::new(events),
                received_at_ms,
                admitted: None,
                positions: None,
            },
            token,
        })
    }

    async fn commit(&mut self, token: u64) -> Result<(), SourceError> {
        // Nothing to commit: the merged batches' admissions go once stored.
        self.admitted.remove(&token);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Admission;
    use crate::event::{Category, Sale, Tweet, Weather};

    fn sales(tag: &str, n: usize) -> Events {
        Events::Sales(
            (0..n)
                .map(|i| Sale {
                    id: format!("{tag}{i}"),
                    ts: 0,
                    category: Category::Home,
                    product_id: "P".into(),
                    price: 1.0,
                    quantity: 1,
                })
                .collect(),
        )
    }

    fn tweets(n: usize) -> Events {
        Events::Tweets(
            (0..n)
                .map(|i| Tweet {
                    id: format!("t{i}"),
                    ts: 0,
                    location: "Mixco".into(),
                    weather: Weather::Sunny,
                    temperature: 20.0,
                    humidity: 50.0,
                    text: None,
                })
                .collect(),
        )
    }

    fn batch(events: Events, at: i64, admission: &Admission) -> Batch {
        let admitted = admission.try_admit(events.len()).expect("room");
        Batch {
            events: Arc::new(events),
            received_at_ms: at,
            admitted: Some(Arc::new(admitted)),
            positions: None,
        }
    }

    #[tokio::test]
    async fn waiting_batches_of_one_kind_are_merged_in_order_and_released_at_commit() {
        let admission = Admission::new(10_000);
        let (sink, mut source) = memory_bus(16);
        for (events, at) in [
            (sales("a", 3), 30),
            (sales("b", 2), 10),
            (tweets(4), 5),
            (sales("c", DELIVERY_MAX_EVENTS), 1),
            (sales("d", 1), 1),
        ] {
            sink.publish(batch(events, at, &admission))
                .await
                .expect("publish");
        }
        assert_eq!(admission.in_flight(), 3 + 2 + 4 + DELIVERY_MAX_EVENTS + 1);

        let first = source.next().await.expect("first");
        assert_eq!(
            first.batch.events.ids(),
            ["a0", "a1", "a2", "b0", "b1"],
            "the two sales batches, in order"
        );
        assert_eq!(first.batch.received_at_ms, 10, "the earliest receive time");
        let second = source.next().await.expect("tweets");
        assert_eq!(second.batch.events.len(), 4);
        let third = source.next().await.expect("a full delivery goes alone");
        assert_eq!(third.batch.events.len(), DELIVERY_MAX_EVENTS);
        let fourth = source.next().await.expect("the last sale");
        assert_eq!(fourth.batch.events.ids(), ["d0"]);

        // Room is given back only once a delivery is committed (stored).
        assert_eq!(admission.in_flight(), 3 + 2 + 4 + DELIVERY_MAX_EVENTS + 1);
        source.commit(first.token).await.expect("commit");
        assert_eq!(admission.in_flight(), 4 + DELIVERY_MAX_EVENTS + 1);
        for d in [second, third, fourth] {
            source.commit(d.token).await.expect("commit");
        }
        assert_eq!(admission.in_flight(), 0);
    }
}
