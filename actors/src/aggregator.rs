//! Aggregator: applies batches to the store (one atomic step per batch, with dedup
//! by id), records the business metrics of what changed, and periodically expires
//! old dedup entries. A store failure stops the actor, its supervisor restarts it
//! with backoff, and the consumer redelivers the batch.

use crate::dedup::WindowStats;
use crate::event::{now_ms, Category, Events, Kind, Weather};
use crate::mailbox::Mailbox;
use crate::messages::Apply;
use crate::metrics::{
    DEDUP_BYTES, DEDUP_EVICTED, DEDUP_IDS, DEDUP_WINDOW, END_TO_END_DURATION, EVENTS_APPLIED,
    EVENTS_DUPLICATE, EVENTS_REPLAYED, REVENUE_CENTS, SALES, SALES_QUANTITY, STORE_APPLY_DURATION,
    TWEETS,
};
use crate::store::{self, Applied, Positions, Store, StoreError};
use crate::supervision::Restarts;
use actix::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `actor` label of the aggregator (restarts, mailbox).
pub const ACTOR: &str = "aggregator";
/// The aggregator's mailbox (`actor="aggregator"`).
pub const MAILBOX: Mailbox = Mailbox(ACTOR);

/// Writes KPIs to the store.
pub struct Aggregator {
    store: Arc<dyn Store>,
    expire_every: Duration,
    mailbox_capacity: usize,
    restarts: Restarts,
    runtime: Option<tokio::runtime::Handle>,
}

impl Aggregator {
    /// An aggregator writing to `store`, expiring dedup entries every `expire_every`.
    pub fn new(store: Arc<dyn Store>, expire_every: Duration, mailbox_capacity: usize) -> Self {
        Aggregator {
            store,
            expire_every,
            mailbox_capacity,
            restarts: Restarts::new(ACTOR),
            runtime: None,
        }
    }

    /// The same aggregator running each apply as a task of `runtime` (a
    /// multi-threaded one) instead of its arbiter's single thread, so that the
    /// applies of several partitions and kinds fold on every core at once.
    pub fn applying_on(self, runtime: tokio::runtime::Handle) -> Self {
        Aggregator {
            runtime: Some(runtime),
            ..self
        }
    }
}

impl Actor for Aggregator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        if let Some(delay) = self.restarts.take_delay() {
            ctx.wait(tokio::time::sleep(delay).into_actor(self));
        }
        ctx.run_interval(self.expire_every, |act, ctx| {
            let store = act.store.clone();
            ctx.spawn(
                async move {
                    if let Err(e) = store.expire().await {
                        tracing::warn!(error = %e, "expiring dedup entries failed");
                    }
                    match store.dedup_windows().await {
                        Ok(windows) => record_windows(&windows),
                        Err(e) => tracing::warn!(error = %e, "reading the dedup windows failed"),
                    }
                }
                .into_actor(act),
            );
        });
    }
}

impl Supervised for Aggregator {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.restarts.restarting();
    }
}

/// The dedup windows' gauges and eviction counter.
fn record_windows(windows: &[(Kind, WindowStats)]) {
    for (kind, w) in windows {
        let kind = kind.as_str();
        metrics::counter!(DEDUP_EVICTED, "kind" => kind).absolute(w.evicted);
        metrics::gauge!(DEDUP_IDS, "kind" => kind).set(w.ids as f64);
        metrics::gauge!(DEDUP_WINDOW, "kind" => kind).set(w.held_ms as f64 / 1000.0);
        metrics::gauge!(DEDUP_BYTES, "kind" => kind).set(w.bytes as f64);
    }
}

/// Business metrics of the events that changed the aggregates.
fn record(events: &Events, applied: &Applied) {
    let kind = events.kind().as_str();
    metrics::counter!(EVENTS_APPLIED, "kind" => kind).increment(applied.fresh_count() as u64);
    metrics::counter!(EVENTS_DUPLICATE, "kind" => kind).increment(applied.duplicate_count() as u64);
    metrics::counter!(EVENTS_REPLAYED, "kind" => kind).increment(applied.replayed as u64);
    // Summed per label first: a counter lookup per label, not per event.
    match events {
        Events::Sales(sales) => {
            // Per category: sales, quantity, revenue in cents.
            let mut sums = [(0u64, 0u64, 0u64); Category::ALL.len()];
            for (s, _) in sales.iter().zip(&applied.fresh).filter(|(_, &f)| f) {
                let sum = &mut sums[s.category.index()];
                // Saturating: a huge (valid) price must not overflow the sum; the
                // float-to-int cast already saturates at u64::MAX.
                sum.0 += 1;
                sum.1 = sum.1.saturating_add(s.quantity);
                sum.2 = sum
                    .2
                    .saturating_add((s.price * s.quantity as f64 * 100.0).round() as u64);
            }
            for (c, &(n, quantity, cents)) in Category::ALL.iter().zip(&sums) {
                if n > 0 {
                    let category = c.as_str();
                    metrics::counter!(SALES, "category" => category).increment(n);
                    metrics::counter!(SALES_QUANTITY, "category" => category).increment(quantity);
                    metrics::counter!(REVENUE_CENTS, "category" => category).increment(cents);
                }
            }
        }
        Events::Tweets(tweets) => {
            let mut counts = [0u64; Weather::ALL.len()];
            for (t, _) in tweets.iter().zip(&applied.fresh).filter(|(_, &f)| f) {
                counts[t.weather.index()] += 1;
            }
            for (w, &n) in Weather::ALL.iter().zip(&counts) {
                if n > 0 {
                    metrics::counter!(TWEETS, "weather" => w.as_str()).increment(n);
                }
            }
        }
    }
}

/// Applies run concurrently (parts of a delivery, the sources of several kinds):
/// the store makes each one atomic, and positions keep a partition's parts apart.
/// Each apply runs as a task of its own that records its metrics itself, so a
/// failing apply that restarts the actor does not cut short the others (their
/// store writes may have happened: the retry then finds them duplicate or
/// replayed, and they would never be counted as applied).
impl Handler<Apply> for Aggregator {
    type Result = ResponseActFuture<Self, Result<Applied, StoreError>>;

    fn handle(&mut self, msg: Apply, _: &mut Self::Context) -> Self::Result {
        let batch = msg.into_batch();
        let store = self.store.clone();
        let started = Instant::now();
        let apply = async move {
            const NONE: &Positions = &Positions::NONE;
            let at = batch.positions.as_deref().unwrap_or(NONE);
            let result = store::apply(store.as_ref(), &batch.events, at).await;
            let kind = batch.kind().as_str();
            metrics::histogram!(STORE_APPLY_DURATION, "kind" => kind)
                .record(started.elapsed().as_secs_f64());
            if let Ok(applied) = &result {
                record(&batch.events, applied);
                let age_ms = (now_ms() - batch.received_at_ms).max(0);
                metrics::histogram!(END_TO_END_DURATION, "kind" => kind)
                    .record(age_ms as f64 / 1000.0);
            }
            result
        };
        let task = match &self.runtime {
            Some(runtime) => runtime.spawn(apply),
            None => tokio::spawn(apply),
        };
        Box::pin(
            async move {
                task.await.unwrap_or_else(|e| {
                    Err(StoreError::Unavailable(format!("apply task failed: {e}")))
                })
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                match &result {
                    Ok(_) => act.restarts.reset(),
                    Err(e) => {
                        tracing::error!(error = %e, "applying batch failed; restarting aggregator");
                        ctx.stop();
                    }
                }
                result
            }),
        )
    }
}
