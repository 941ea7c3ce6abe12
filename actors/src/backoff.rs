//! The one retry policy of flujo: exponential backoff with jitter (backon), used
//! everywhere something is tried again: actor restarts, store retries, broker
//! reconnects, topic creation and the load generator's resends.
//!
//! Each use names its bounds with [`Backoff::new`] (or one of the presets); the
//! policy itself (doubling, up to +100 % jitter, no limit on attempts) is the same.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// An endless sequence of growing, jittered delays between `min` and `max`.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    delays: ExponentialBackoff,
}

impl Backoff {
    /// Delays that start near `min` and double up to `max` (jitter may add up to
    /// the delay again, so callers in lockstep spread out).
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            delays: Self::builder(min, max).build(),
        }
    }

    /// Reconnecting to a broker or store: 100 ms up to 5 s.
    pub fn reconnect() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Restarting a failed actor: 50 ms up to 5 s.
    pub fn restart() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// Retrying one request (a store write, a resend): 20 ms up to 2 s.
    pub fn request() -> Self {
        Self::new(Duration::from_millis(20), Duration::from_secs(2))
    }

    fn builder(min: Duration, max: Duration) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times()
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// Sleeps for [`Backoff::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// After a success: the next failure starts again from the shortest delay.
    pub fn reset(&mut self) {
        self.delays = Self::builder(self.min, self.max).build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_a_cap_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        let mut b = Backoff::new(min, max);
        let first = b.next_delay();
        assert!(first >= min && first <= min * 2, "{first:?}");
        for _ in 0..20 {
            assert!(b.next_delay() <= max * 2);
        }
        assert!(b.next_delay() >= max, "reaches the cap");
        b.reset();
        assert!(b.next_delay() <= min * 2, "starts over after reset");
    }
}
