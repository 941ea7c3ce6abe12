//! Consumer: one per source. Reads batches, has the aggregator store them, and only
//! then commits (acks) them on the source, retrying with backoff until the store
//! took them, so a batch is never dropped between bus and store. A delivery that
//! spans several partitions is stored as one part per partition, concurrently.

use crate::aggregator::Aggregator;
use crate::backoff::Backoff;
use crate::messages::{Apply, Batch};
use crate::metrics::EVENTS_CONSUMED;
use crate::supervision::Restarts;
use actix::prelude::*;
use async_trait::async_trait;
use futures::future;
use futures::stream::{FuturesOrdered, StreamExt};
use std::sync::Arc;
use tokio::sync::Mutex;

/// The `actor` label of the consumers (restarts).
pub const ACTOR: &str = "consumer";

/// A failure of a source.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// A batch read from a source, with what the source needs to commit it.
#[derive(Debug)]
pub struct Delivery {
    /// The events.
    pub batch: Batch,
    /// Source-specific position or delivery tag.
    pub token: u64,
}

/// A source's readiness check. The consumer owns its source (`next` takes
/// `&mut self` for as long as it waits), so readiness asks through this shared
/// handle instead of the source itself.
#[async_trait]
pub trait SourceReadiness: Send + Sync + 'static {
    /// Checks that the source can deliver (its broker answers, its topic or queue
    /// exists).
    async fn ready(&self) -> Result<(), SourceError>;
}

/// The readiness of a source that has nothing to check (the memory bus).
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysReady;

#[async_trait]
impl SourceReadiness for AlwaysReady {
    async fn ready(&self) -> Result<(), SourceError> {
        Ok(())
    }
}

/// Where a consumer reads batches.
#[async_trait]
pub trait Source: Send + 'static {
    /// Short name used as the `source` label.
    fn name(&self) -> &'static str;
    /// The handle readiness checks this source through (see [`SourceReadiness`]).
    fn readiness(&self) -> Arc<dyn SourceReadiness> {
        Arc::new(AlwaysReady)
    }
    /// The next batch; `None` once the source is closed for good.
    async fn next(&mut self) -> Option<Delivery>;
    /// How many deliveries the consumer may store at once (committed in order);
    /// 1 (the default) stores each before reading the next. A source may allow more
    /// only when its deliveries carry no positions (they may then apply in any
    /// order) and `next` is cancel-safe (the consumer drops a pending `next` to
    /// commit a delivery that was stored meanwhile).
    fn deliveries_in_flight(&self) -> usize {
        1
    }
    /// Marks a delivery as stored (a Kafka group commit, a RabbitMQ ack), so the
    /// source moves past it; a source with positions in the store resumes from
    /// those whatever it committed.
    async fn commit(&mut self, token: u64) -> Result<(), SourceError>;
}

/// Held while deliveries are between `next()` and `commit()`: shutdown takes it to
/// wait for the batches in hand to be stored and committed.
pub type InFlight = Arc<Mutex<()>>;

/// Moves batches from a source to the aggregator.
pub struct Consumer {
    source: Arc<Mutex<Box<dyn Source>>>,
    aggregator: Addr<Aggregator>,
    in_flight: InFlight,
    restarts: Restarts,
}

impl Consumer {
    /// A consumer reading `source` into `aggregator`; `in_flight` is held while a
    /// delivery is being stored and committed.
    pub fn new(source: Box<dyn Source>, aggregator: Addr<Aggregator>, in_flight: InFlight) -> Self {
        Consumer {
            source: Arc::new(Mutex::new(source)),
            aggregator,
            in_flight,
            restarts: Restarts::new(ACTOR),
        }
    }
}

/// Applies one batch, retrying with backoff until the aggregator stored it.
async fn store_batch(aggregator: &Addr<Aggregator>, batch: &Batch) {
    let mut backoff = Backoff::request();
    loop {
        match aggregator.send(Apply::new(batch.clone())).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => tracing::warn!(error = %e, "store failed; retrying batch"),
            Err(e) => tracing::warn!(error = %e, "aggregator unavailable; retrying batch"),
        }
        backoff.wait().await;
    }
}

/// Stores one delivery: partitions apply concurrently, each in order (a
/// partition's events are in one part). Resolves to the token to commit.
async fn store_delivery(aggregator: Addr<Aggregator>, delivery: Delivery) -> u64 {
    let parts = delivery.batch.by_stream();
    future::join_all(parts.iter().map(|part| store_batch(&aggregator, part))).await;
    delivery.token
}

async fn run(
    source: Arc<Mutex<Box<dyn Source>>>,
    aggregator: Addr<Aggregator>,
    in_flight: InFlight,
) -> Result<(), SourceError> {
    let mut source = source.lock().await;
    let name = source.name();
    let window = source.deliveries_in_flight().max(1);
    // Deliveries being stored, in the order they were read: committed in that order.
    let mut storing = FuturesOrdered::new();
    let mut gate = None;
    let mut reading = true;
    loop {
        tokio::select! {
            biased;
            Some(token) = storing.next(), if !storing.is_empty() => {
                source.commit(token).await?;
                if storing.is_empty() {
                    gate = None;
                }
            }
            delivery = source.next(), if reading && storing.len() < window => match delivery {
                Some(delivery) => {
                    if gate.is_none() {
                        gate = Some(in_flight.clone().lock_owned().await);
                    }
                    let batch = &delivery.batch;
                    metrics::counter!(EVENTS_CONSUMED, "kind" => batch.kind().as_str(), "source" => name)
                        .increment(batch.events.len() as u64);
                    storing.push_back(store_delivery(aggregator.clone(), delivery));
                }
                None => reading = false,
            },
            else => break,
        }
    }
    drop(gate);
    tracing::info!(source = name, "source closed; consumer idle");
    Ok(())
}

impl Actor for Consumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(delay) = self.restarts.take_delay() {
            ctx.wait(tokio::time::sleep(delay).into_actor(self));
        }
        let fut = run(
            self.source.clone(),
            self.aggregator.clone(),
            self.in_flight.clone(),
        );
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(()) => act.restarts.reset(),
            Err(e) => {
                tracing::error!(error = %e, "consumer failed");
                ctx.stop();
            }
        }));
    }
}

impl Supervised for Consumer {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.restarts.restarting();
    }
}
