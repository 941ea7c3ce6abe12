//! Admission control: a bound on events admitted into the pipeline and not yet
//! settled (applied to the store on the memory bus, confirmed by the broker
//! otherwise). A batch that does not fit waits its turn (first come, first served)
//! for a bounded time, then is refused: a short burst is absorbed by the wait, and a
//! sustained overload is told to retry instead of queueing without end.

use crate::metrics::INFLIGHT_EVENTS;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

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
    state: Arc<State>,
}

/// What the clones of a gate share besides its permits.
#[derive(Debug, Default)]
struct State {
    /// Set by [`Admission::close`].
    closed: AtomicBool,
    /// Wakes the batches waiting for room when the gate closes.
    closing: Notify,
    /// Events of the batches admitted and not yet settled. Not read off the
    /// semaphore: permits it has handed to the batch at the head of the queue,
    /// still waiting for the rest of its room, are not in flight.
    admitted: AtomicUsize,
}

/// Events of one admitted batch; dropping it (when the last copy of the batch is
/// settled) gives the room back.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    events: usize,
    state: Arc<State>,
}

impl Admitted {
    fn new(permit: OwnedSemaphorePermit, events: usize, state: &Arc<State>) -> Self {
        metrics::gauge!(INFLIGHT_EVENTS).increment(events as f64);
        state.admitted.fetch_add(events, Ordering::AcqRel);
        Admitted {
            _permit: permit,
            events,
            state: state.clone(),
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.state.admitted.fetch_sub(self.events, Ordering::AcqRel);
        metrics::gauge!(INFLIGHT_EVENTS).decrement(self.events as f64);
    }
}

impl Admission {
    /// A gate that lets at most `capacity` events be in flight.
    pub fn new(capacity: usize) -> Self {
        Admission {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            state: Arc::default(),
        }
    }

    /// Admits `events` events now, or says why not.
    pub fn try_admit(&self, events: usize) -> Result<Admitted, AdmitError> {
        let n = self.permits_for(events)?;
        match self.permits.clone().try_acquire_many_owned(n) {
            Ok(permit) => Ok(Admitted::new(permit, events, &self.state)),
            Err(_) => Err(self.full()),
        }
    }

    /// Admits `events` events as soon as there is room for them, waiting at most
    /// until `until`; batches wait in the order they asked (a large batch is not
    /// overtaken by small ones). Past `until` the batch is refused as
    /// [`AdmitError::Full`], and a gate closed while it waited refuses it at once
    /// as [`AdmitError::Closed`].
    pub async fn admit_by(
        &self,
        events: usize,
        until: tokio::time::Instant,
    ) -> Result<Admitted, AdmitError> {
        // Listening for the close before checking the flag: a close in between
        // is either seen by the check or wakes the listener.
        let closing = self.state.closing.notified();
        tokio::pin!(closing);
        closing.as_mut().enable();
        let n = self.permits_for(events)?;
        let acquire = self.permits.clone().acquire_many_owned(n);
        tokio::select! {
            biased;
            () = &mut closing => Err(AdmitError::Closed),
            acquired = tokio::time::timeout_at(until, acquire) => match acquired {
                Ok(Ok(permit)) if !self.state.closed.load(Ordering::Acquire) => {
                    Ok(Admitted::new(permit, events, &self.state))
                }
                // Closed as room came (the semaphore itself is never closed).
                Ok(_) => Err(AdmitError::Closed),
                Err(_) => Err(self.full()),
            },
        }
    }

    /// The permits a batch of `events` needs, or why it can never be admitted.
    fn permits_for(&self, events: usize) -> Result<u32, AdmitError> {
        if self.state.closed.load(Ordering::Acquire) {
            return Err(AdmitError::Closed);
        }
        if events > self.capacity {
            return Err(AdmitError::TooLarge(events));
        }
        u32::try_from(events).map_err(|_| AdmitError::TooLarge(events))
    }

    fn full(&self) -> AdmitError {
        AdmitError::Full {
            in_flight: self.in_flight(),
            capacity: self.capacity,
        }
    }

    /// Events admitted and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.state.admitted.load(Ordering::Acquire)
    }

    /// Refuses every batch from now on (shutdown), those waiting for room too.
    pub fn close(&self) {
        self.state.closed.store(true, Ordering::Release);
        self.state.closing.notify_waiters();
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
    use std::time::Duration;

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

    #[tokio::test(start_paused = true)]
    async fn a_full_pipeline_admits_when_room_frees_before_the_wait_ends() {
        let gate = Admission::new(10);
        let three = gate.try_admit(3).expect("room");
        let five = gate.try_admit(5).expect("room");
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        let waiting = |events| {
            let gate = gate.clone();
            tokio::spawn(async move { gate.admit_by(events, until).await })
        };
        let big = waiting(5);
        tokio::task::yield_now().await;
        // First come, first served: a small batch that would fit the 2 free events
        // does not overtake the large one already waiting.
        let small = waiting(1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!big.is_finished() && !small.is_finished());
        // The 2 free events are handed to the large batch as it waits for the rest;
        // they are not in flight until it is admitted.
        assert_eq!(gate.permits.available_permits(), 0);
        assert_eq!(gate.in_flight(), 8);
        assert!(matches!(
            gate.try_admit(1),
            Err(AdmitError::Full { in_flight: 8, .. })
        ));
        // Room for the large one only: it goes, the small one still waits.
        drop(three);
        let big = big
            .await
            .expect("joined")
            .expect("admitted once room freed");
        tokio::task::yield_now().await;
        assert!(
            !small.is_finished(),
            "the small batch needs room the large one took"
        );
        drop(five);
        let small = small.await.expect("joined").expect("admitted after it");
        assert_eq!(gate.in_flight(), 6);
        // No room before the wait ends: refused as full, and nothing is held.
        let full = gate.try_admit(4).expect("room");
        let late = gate
            .admit_by(5, tokio::time::Instant::now() + Duration::from_secs(2))
            .await;
        assert!(
            matches!(late, Err(AdmitError::Full { capacity: 10, .. })),
            "{late:?}"
        );
        assert_eq!(gate.in_flight(), 10);
        assert_eq!(
            gate.admit_by(11, tokio::time::Instant::now())
                .await
                .expect_err("too large"),
            AdmitError::TooLarge(11)
        );
        // Closed while waiting: refused at once, with no room freed and long before
        // its wait ends, holding nothing.
        let closing = waiting(1);
        tokio::task::yield_now().await;
        let closed_at = tokio::time::Instant::now();
        gate.close();
        assert_eq!(
            closing.await.expect("joined").expect_err("closed"),
            AdmitError::Closed
        );
        assert_eq!(closed_at.elapsed(), Duration::ZERO);
        assert_eq!(gate.in_flight(), 10);
        drop((full, big, small));
        assert_eq!(gate.in_flight(), 0);
        assert_eq!(gate.permits.available_permits(), 10);
    }
}
