//! Restart bookkeeping shared by supervised actors: count each restart in
//! `flujo_actor_restarts_total{actor}` and wait an exponential backoff before the
//! restarted actor takes messages again.

use crate::backoff::Backoff;
use crate::metrics::ACTOR_RESTARTS;
use std::time::Duration;

/// Restart state of one supervised actor.
#[derive(Debug)]
pub struct Restarts {
    actor: &'static str,
    pending: Option<Duration>,
    backoff: Backoff,
}

impl Restarts {
    /// No restart yet for `actor`.
    pub fn new(actor: &'static str) -> Self {
        Restarts {
            actor,
            pending: None,
            backoff: Backoff::restart(),
        }
    }

    /// Called from `Supervised::restarting`: counts the restart and arms the backoff.
    pub fn restarting(&mut self) {
        metrics::counter!(ACTOR_RESTARTS, "actor" => self.actor).increment(1);
        let delay = self.backoff.next_delay();
        tracing::warn!(
            actor = self.actor,
            ?delay,
            "actor failed; restarting after backoff"
        );
        self.pending = Some(delay);
    }

    /// Called from `Actor::started`: the delay to wait before taking messages, if any.
    pub fn take_delay(&mut self) -> Option<Duration> {
        self.pending.take()
    }

    /// Called after a success: the next failure starts from the shortest backoff.
    pub fn reset(&mut self) {
        self.backoff.reset();
    }
}
