//! The memory bus: the embedded default between publisher and consumer, a bounded
//! in-process queue. Its sink half is a `Sink`, its source half a `Source`, which
//! coalesces the batches waiting in the queue into deliveries of up to
//! [`DELIVERY_MAX_EVENTS`] events of one kind, so the store does one step (one
//! Valkey round trip) for many small requests. Batches of the two kinds are
//! gathered side by side: sales and tweets arriving interleaved still make
//! deliveries of many requests each. While a delivery is being stored, a small
//! next one waits briefly for more ([`GATHER_LINGER`]).

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
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

const NAME: &str = "memory";

/// The most events the memory bus hands the consumer at once (batches waiting in
/// the queue are merged up to this; a larger batch goes alone). Large enough that
/// a Valkey store's work per event shrinks (a batch touches each product's
/// ranking and price history once, whatever its size: 4,000 → 8,000 took Valkey
/// from 2.3–2.9 to 1.7 µs per event with mixed requests of 1,000), small enough
/// that one script holds Valkey for about 15 ms only.
pub const DELIVERY_MAX_EVENTS: usize = 8_000;

/// Deliveries of the memory bus stored at once (see [`Source::deliveries_in_flight`]).
pub const DELIVERIES_IN_FLIGHT: usize = 4;

/// How long a delivery of fewer than half [`DELIVERY_MAX_EVENTS`] events waits
/// for more batches while an earlier delivery is still being stored. A store
/// does work per product and per key a delivery touches, whatever its size, so
/// under load larger deliveries cost less per event (1,000-sale requests: about
/// 1,700 events per delivery without the wait, 2.4 points per product's price
/// history merge). An idle consumer never waits: the first batch goes at once.
pub const GATHER_LINGER: Duration = Duration::from_millis(5);

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
            gathering: [None, None],
            held: None,
            next_token: 0,
            next_started: 0,
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
    /// Per kind (by [`Kind::index`](crate::event::Kind::index)), the batches taken from the queue and merged
    /// into its next delivery.
    gathering: [Option<Gathering>; 2],
    /// A batch taken from the queue that did not fit its kind's delivery: it
    /// starts that kind's next one (no more is read from the queue meanwhile).
    held: Option<Batch>,
    next_token: u64,
    /// Numbers the gatherings in the order they started: the oldest goes first.
    next_started: u64,
    /// Per delivery handed out: the admissions of the batches merged into it,
    /// released when it is committed (stored), as the batches themselves would be.
    admitted: HashMap<u64, Vec<Arc<Admitted>>>,
}

/// The next delivery of one kind, being merged from the batches of the queue.
#[derive(Debug)]
struct Gathering {
    events: Events,
    admitted: Vec<Arc<Admitted>>,
    received_at_ms: i64,
    started: u64,
    /// When it started (its first batch taken from the queue, or a held batch
    /// from `held`): it waits for more at most [`GATHER_LINGER`] after that.
    opened: Instant,
}

/// Appends `more` to `into` (both of one kind).
fn append(into: &mut Events, more: Events) {
    match (into, more) {
        (Events::Sales(a), Events::Sales(b)) => a.extend(b),
        (Events::Tweets(a), Events::Tweets(b)) => a.extend(b),
        _ => unreachable!("a gathering holds batches of its own kind"),
    }
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

impl MemorySource {
    /// Merges `batch` into its kind's gathering; gives it back when it does not
    /// fit (the gathering would pass [`DELIVERY_MAX_EVENTS`]).
    fn gather(&mut self, mut batch: Batch) -> Result<(), Batch> {
        match &mut self.gathering[batch.kind().index()] {
            Some(g) if g.events.len() + batch.events.len() > DELIVERY_MAX_EVENTS => Err(batch),
            Some(g) => {
                g.admitted.extend(batch.admitted.take());
                g.received_at_ms = g.received_at_ms.min(batch.received_at_ms);
                append(&mut g.events, take_events(&mut batch));
                Ok(())
            }
            empty @ None => {
                *empty = Some(Gathering {
                    admitted: batch.admitted.take().into_iter().collect(),
                    received_at_ms: batch.received_at_ms,
                    events: take_events(&mut batch),
                    started: self.next_started,
                    opened: Instant::now(),
                });
                self.next_started += 1;
                Ok(())
            }
        }
    }

    /// Merges what waits in the queue already, without waiting for more, until a
    /// batch does not fit (it is then held).
    fn sweep(&mut self) {
        while self.held.is_none() {
            let Ok(batch) = self.rx.try_recv() else {
                break;
            };
            report_lag(&self.lag, -(batch.events.len() as i64));
            if let Err(batch) = self.gather(batch) {
                self.held = Some(batch);
            }
        }
    }

    fn gathering_nothing(&self) -> bool {
        self.gathering.iter().all(Option::is_none)
    }

    /// The gathering that started first, which goes next.
    fn oldest(&mut self) -> Option<&mut Option<Gathering>> {
        self.gathering
            .iter_mut()
            .filter(|g| g.is_some())
            .min_by_key(|g| g.as_ref().map(|g| g.started))
    }

    /// Whether the next delivery waits for more batches: it is small, young, and
    /// an earlier delivery is still being stored (uncommitted), so the consumer
    /// is busy anyway. Gives the time it may wait until.
    fn linger_until(&mut self) -> Option<Instant> {
        if self.held.is_some() || self.admitted.is_empty() {
            return None;
        }
        let g = self.oldest()?.as_ref()?;
        (g.events.len() < DELIVERY_MAX_EVENTS / 2).then_some(g.opened + GATHER_LINGER)
    }
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
    /// queue, under a timer while it lingers (cancel-safe: a batch taken from the
    /// queue is gathered at once, before any other wait), so several
    /// deliveries may be stored at once: while one is in the store (a Valkey round
    /// trip), the next is folded and sent.
    fn deliveries_in_flight(&self) -> usize {
        DELIVERIES_IN_FLIGHT
    }

    async fn next(&mut self) -> Option<Delivery> {
        // A held batch starts its kind's delivery once that kind's last one left.
        if let Some(batch) = self.held.take() {
            if let Err(batch) = self.gather(batch) {
                self.held = Some(batch);
            }
        }
        if self.gathering_nothing() {
            let batch = self.rx.recv().await?;
            report_lag(&self.lag, -(batch.events.len() as i64));
            self.gather(batch)
                .expect("an empty gathering takes any batch");
        }
        self.sweep();
        // Wait a little for more while an earlier delivery is being stored
        // (cancel-safe: a batch taken from the queue goes into a gathering at once).
        while let Some(until) = self.linger_until() {
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(batch)) => {
                    report_lag(&self.lag, -(batch.events.len() as i64));
                    if let Err(batch) = self.gather(batch) {
                        self.held = Some(batch);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        // What came meanwhile still fits up to the limit.
        self.sweep();
        // The gathering that started first goes (there is one: a batch was
        // gathered above, or one was already).
        let g = self
            .oldest()
            .and_then(Option::take)
            .expect("a gathering holds a batch");
        let token = self.next_token;
        self.next_token += 1;
        self.admitted.insert(token, g.admitted);
        Some(Delivery {
            batch: Batch {
                events: Arc::new(g.events),
                received_at_ms: g.received_at_ms,
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
    use crate::event::{Category, Kind, Sale, Tweet, Weather};

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

    // Paused time: a delivery asked for while another is being stored lingers,
    // and the clock then moves at once instead of the test waiting it out.
    #[tokio::test(start_paused = true)]
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

    #[tokio::test(start_paused = true)]
    async fn interleaved_kinds_are_gathered_side_by_side() {
        let admission = Admission::new(10_000);
        let (sink, mut source) = memory_bus(16);
        for events in [
            sales("a", 2),
            tweets(1),
            sales("b", 2),
            tweets(2),
            sales("c", 1),
        ] {
            sink.publish(batch(events, 0, &admission))
                .await
                .expect("publish");
        }
        let first = source.next().await.expect("sales");
        assert_eq!(
            first.batch.events.ids(),
            ["a0", "a1", "b0", "b1", "c0"],
            "every waiting sale, in order, in one delivery"
        );
        let second = source.next().await.expect("tweets");
        assert_eq!(second.batch.events.ids(), ["t0", "t0", "t1"]);
        source.commit(second.token).await.expect("commit");
        assert_eq!(admission.in_flight(), 5, "the tweets' room is back");
        source.commit(first.token).await.expect("commit");
        assert_eq!(admission.in_flight(), 0);

        // Nothing waits: the next delivery is whatever comes first.
        sink.publish(batch(tweets(3), 0, &admission))
            .await
            .expect("publish");
        let third = source.next().await.expect("tweets");
        assert_eq!(third.batch.events.len(), 3);
    }

    /// While a delivery is being stored, a small next one waits (at most
    /// `GATHER_LINGER`) for more batches; with nothing being stored it goes at once.
    #[tokio::test(start_paused = true)]
    async fn a_small_delivery_waits_for_more_only_while_one_is_being_stored() {
        let admission = Admission::new(100_000);
        let (sink, mut source) = memory_bus(16);
        let t0 = Instant::now();
        sink.publish(batch(sales("a", 10), 0, &admission))
            .await
            .expect("publish");
        let first = source.next().await.expect("first");
        assert_eq!(first.batch.events.len(), 10);
        assert_eq!(
            t0.elapsed(),
            Duration::ZERO,
            "an idle consumer does not wait"
        );

        // `first` is being stored: the next delivery gathers what comes meanwhile.
        sink.publish(batch(sales("b", 10), 0, &admission))
            .await
            .expect("publish");
        let later = sink.clone();
        let more = batch(sales("c", 10), 0, &admission);
        tokio::spawn(async move {
            tokio::time::sleep(GATHER_LINGER / 2).await;
            later.publish(more).await.expect("publish");
        });
        let t1 = Instant::now();
        let second = source.next().await.expect("second");
        assert_eq!(second.batch.events.len(), 20, "b and c in one delivery");
        assert_eq!(
            t1.elapsed(),
            GATHER_LINGER,
            "it waited out the linger for more"
        );

        // Nothing more comes: the wait ends at the linger.
        sink.publish(batch(sales("d", 10), 0, &admission))
            .await
            .expect("publish");
        let t2 = Instant::now();
        let third = source.next().await.expect("third");
        assert_eq!(third.batch.events.ids()[0], "d0");
        assert_eq!(t2.elapsed(), GATHER_LINGER);

        // Everything stored: the next batch goes at once again.
        for d in [first, second, third] {
            source.commit(d.token).await.expect("commit");
        }
        sink.publish(batch(sales("e", 10), 0, &admission))
            .await
            .expect("publish");
        let t3 = Instant::now();
        let fourth = source.next().await.expect("fourth");
        assert_eq!(fourth.batch.events.len(), 10);
        assert_eq!(t3.elapsed(), Duration::ZERO);
        source.commit(fourth.token).await.expect("commit");
        assert_eq!(admission.in_flight(), 0);
    }

    /// `next` cancelled while it lingers (as the consumer's `select!` does when a
    /// store finishes) loses nothing: the next call hands out every batch, in order.
    #[tokio::test(start_paused = true)]
    async fn cancelling_a_lingering_next_loses_nothing() {
        let admission = Admission::new(100_000);
        let (sink, mut source) = memory_bus(16);
        sink.publish(batch(sales("a", 1), 0, &admission))
            .await
            .expect("publish");
        let first = source.next().await.expect("first");
        sink.publish(batch(sales("b", 2), 0, &admission))
            .await
            .expect("publish");
        let cancelled = tokio::time::timeout(GATHER_LINGER / 2, source.next()).await;
        assert!(cancelled.is_err(), "it was still lingering");
        sink.publish(batch(sales("c", 1), 0, &admission))
            .await
            .expect("publish");
        source.commit(first.token).await.expect("commit");
        let second = source.next().await.expect("second");
        assert_eq!(second.batch.events.ids(), ["b0", "b1", "c0"]);
        source.commit(second.token).await.expect("commit");
        assert_eq!(admission.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_closed_bus_hands_out_everything_gathered_then_ends() {
        let admission = Admission::new(100_000);
        let (sink, mut source) = memory_bus(16);
        for events in [
            sales("a", DELIVERY_MAX_EVENTS - 1),
            tweets(2),
            sales("b", 2),
            tweets(1),
        ] {
            sink.publish(batch(events, 0, &admission))
                .await
                .expect("publish");
        }
        drop(sink);
        let mut handed = Vec::new();
        while let Some(d) = source.next().await {
            handed.push((d.batch.kind(), d.batch.events.len()));
        }
        assert_eq!(
            handed,
            [
                (Kind::Sale, DELIVERY_MAX_EVENTS - 1),
                (Kind::Tweet, 3),
                (Kind::Sale, 2)
            ],
            "the held sale starts the next sales delivery; nothing is dropped"
        );
    }
}
