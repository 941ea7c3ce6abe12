//! The memory bus: the embedded default between publisher and consumer, a bounded
//! in-process queue. Its sink half is a `Sink`, its source half a `Source`.

use crate::consumer::{Delivery, Source, SourceError};
use crate::messages::Batch;
use crate::metrics::CONSUMER_LAG;
use crate::publisher::{Sink, SinkError};
use async_trait::async_trait;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

const NAME: &str = "memory";

/// Creates a memory bus holding at most `capacity` batches.
pub fn memory_bus(capacity: usize) -> (MemorySink, MemorySource) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let lag = Arc::new(AtomicI64::new(0));
    (
        MemorySink {
            tx,
            lag: lag.clone(),
        },
        MemorySource { rx, lag },
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

    async fn next(&mut self) -> Option<Delivery> {
        let batch = self.rx.recv().await?;
        report_lag(&self.lag, -(batch.events.len() as i64));
        Some(Delivery { batch, token: 0 })
    }

    async fn commit(&mut self, _token: u64) -> Result<(), SourceError> {
        // Nothing to commit: the batch's admission is released when it is dropped.
        Ok(())
    }
}
