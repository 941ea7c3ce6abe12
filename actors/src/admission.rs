//! Admission control: a bound on events admitted into the pipeline and not yet
//! settled (applied to the store on the memory bus, confirmed by the broker
//! otherwise). A full pipeline refuses new batches at once instead of queueing them.

use crate::metrics::INFLIGHT_EVENTS;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a batch was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// Too many events in flight; the client should retry shortly.
    #[error("pipeline full: {in_flight} events in flight (limit {capacity}); retry shortly")]
    Full {
        /// Events in flight when refused.
        in_flight: usize,
        /// The configured limit.
        capacity: usize,
    },
    /// The batch alone is larger than the whole pipeline.
    #[error("batch of {0} events is larger than the pipeline capacity")]
    TooLarge(usize),
    /// The process is shutting down.
    #[error("shutting down")]
    Closed,
}

/// Shared admission gate; clones share the same bound.
#[derive(Debug, Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    capacity: usize,
    closed: Arc<AtomicBool>,
}

/// Events of one admitted batch; dropping it (when the last copy of the batch is
/// settled) gives the room back.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    events: usize,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        metrics::gauge!(INFLIGHT_EVENTS).decrement(self.events as f64);
    }
}

impl Admission {
    /// A gate that lets at most `capacity` events be in flight.
    pub fn new(capacity: usize) -> Self {
        Admission {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Admits `events` events now, or says why not.
    pub fn try_admit(&self, events: usize) -> Result<Admitted, AdmitError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AdmitError::Closed);
        }
        if events > self.capacity {
            return Err(AdmitError::TooLarge(events));
        }
        let n = u32::try_from(events).map_err(|_| AdmitError::TooLarge(events))?;
        match self.permits.clone().try_acquire_many_owned(n) {
            Ok(permit) => {
                metrics::gauge!(INFLIGHT_EVENTS).increment(events as f64);
                Ok(Admitted {
                    _permit: permit,
                    events,
                })
            }
            Err(_) => Err(AdmitError::Full {
                in_flight: self.in_flight(),
                capacity: self.capacity,
            }),
        }
    }

    /// Events admitted and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// Refuses every batch from now on (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Waits until every admitted event is settled.
    pub async fn drained(&self) {
        let n = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        // Holding every permit at once means nothing is in flight; give them back.
        if let Ok(all) = self.permits.acquire_many(n).await {
            drop(all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admits_up_to_capacity_then_refuses() {
        let gate = Admission::new(10);
        let a = gate.try_admit(6).expect("room");
        assert!(matches!(
            gate.try_admit(5),
            Err(AdmitError::Full {
                in_flight: 6,
                capacity: 10
            })
        ));
        assert_eq!(
            gate.try_admit(11).expect_err("too large"),
            AdmitError::TooLarge(11)
        );
        drop(a);
        assert_eq!(gate.in_flight(), 0);
        let b = gate.try_admit(10).expect("room again");
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        waiter.await.expect("drained");
        gate.close();
        assert_eq!(gate.try_admit(1).expect_err("closed"), AdmitError::Closed);
    }
}
