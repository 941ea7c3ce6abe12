//! Per-client rate limits: one keyed [`governor`] limiter (GCRA, lock-free per key)
//! per scope. A client is the token's `sub`, the API key's name, else the peer IP.
//!
//! A check never waits: it answers at once "go" or "retry in N s", so a client over
//! its limit is refused without holding anything the others need (no queue, no
//! sleep, no shared lock beyond the map shard of its own key).
//!
//! Memory: the limiter keeps one small entry per client seen. Every
//! [`HOUSEKEEPING_INTERVAL`] the entries of clients back at a full burst are
//! dropped (`retain_recent`), so it holds the clients active within the last
//! `burst / per_client_rps` seconds plus one interval. Past `limits.max_clients`
//! entries it also forgets idle clients at once (at most once a second) and refuses
//! clients it does not track yet (429), so the map stays near that size (each entry
//! is a key string and 8 bytes of state) while the clients it knows go on.

use super::auth::Scope;
use super::config::ClientLimit;
use flujo_actors::metrics::RATE_LIMIT_CLIENTS;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often idle clients are forgotten and `flujo_rate_limit_clients` is updated.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// What a check allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; `remaining` more requests may follow at once.
    Allowed {
        /// The burst size (`RateLimit-Limit`).
        limit: u32,
        /// Requests left in the burst now (`RateLimit-Remaining`).
        remaining: u32,
    },
    /// Refused; retry after `retry_after_secs` (at least 1, rounded up).
    Limited {
        /// The burst size (`RateLimit-Limit`).
        limit: u32,
        /// Seconds until the next request may pass (`Retry-After`, `RateLimit-Reset`).
        retry_after_secs: u64,
    },
}

/// The per-client limiter of one scope.
pub struct ClientLimiter {
    scope: Scope,
    limiter: Keyed,
    burst: u32,
    max_clients: usize,
    started: Instant,
    cleaned_at_ms: AtomicU64,
}

impl std::fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimiter")
            .field("scope", &self.scope)
            .field("burst", &self.burst)
            .field("clients", &self.limiter.len())
            .finish()
    }
}

impl ClientLimiter {
    /// The limiter of `limit`, or `None` when its rate is 0 (off).
    pub fn new(scope: Scope, limit: ClientLimit, max_clients: usize) -> Option<Arc<Self>> {
        let rps = NonZeroU32::new(limit.per_client_rps)?;
        let burst = NonZeroU32::new(limit.burst).unwrap_or(rps);
        let quota = Quota::per_second(rps).allow_burst(burst);
        Some(Arc::new(ClientLimiter {
            scope,
            limiter: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
            burst: burst.get(),
            max_clients: max_clients.max(1),
            started: Instant::now(),
            cleaned_at_ms: AtomicU64::new(0),
        }))
    }

    /// Its scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Takes one request of `client` off its allowance, or says when to retry.
    pub fn check(&self, client: &str) -> Decision {
        let before = self.limiter.len();
        let full = before >= self.max_clients;
        if full {
            self.clean_up_now();
        }
        let outcome = self.limiter.check_key(&client.to_owned());
        // Over the cap, a client the map did not hold yet is refused: the ones it
        // tracks go on as before.
        if full && self.limiter.len() > before {
            return Decision::Limited {
                limit: self.burst,
                retry_after_secs: 1,
            };
        }
        match outcome {
            Ok(snapshot) => Decision::Allowed {
                limit: self.burst,
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Decision::Limited {
                    limit: self.burst,
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            }
        }
    }

    /// Forgets idle clients, at most once a second (it walks the whole map).
    fn clean_up_now(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.cleaned_at_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .cleaned_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.limiter.retain_recent();
        }
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        self.limiter.len()
    }

    /// Forgets idle clients and reports how many remain, every
    /// [`HOUSEKEEPING_INTERVAL`], for as long as the limiter is in use.
    pub fn spawn_housekeeping(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else { break };
                limiter.limiter.retain_recent();
                limiter.limiter.shrink_to_fit();
                metrics::gauge!(RATE_LIMIT_CLIENTS, "scope" => limiter.scope.as_str())
                    .set(limiter.clients() as f64);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_over_its_limit_leaves_the_others_alone() {
        let limit = ClientLimit {
            per_client_rps: 1,
            burst: 3,
        };
        let l = ClientLimiter::new(Scope::Ingest, limit, 100).expect("on");
        for left in [2, 1, 0] {
            assert_eq!(
                l.check("a"),
                Decision::Allowed {
                    limit: 3,
                    remaining: left
                }
            );
        }
        assert_eq!(
            l.check("a"),
            Decision::Limited {
                limit: 3,
                retry_after_secs: 1
            }
        );
        assert!(matches!(l.check("b"), Decision::Allowed { .. }));
        assert!(ClientLimiter::new(Scope::Query, ClientLimit::default(), 10).is_none());
    }

    #[test]
    fn past_max_clients_new_clients_wait_and_known_ones_go_on() {
        let limit = ClientLimit {
            per_client_rps: 1,
            burst: 100,
        };
        let l = ClientLimiter::new(Scope::Ingest, limit, 2).expect("on");
        assert!(matches!(l.check("a"), Decision::Allowed { .. }));
        assert!(matches!(l.check("b"), Decision::Allowed { .. }));
        // Both are still "recent" (far from a full burst again): no room is made.
        assert!(matches!(l.check("c"), Decision::Limited { .. }));
        assert!(matches!(l.check("a"), Decision::Allowed { .. }));
        assert!(l.clients() <= 3, "{}", l.clients());
    }
}
