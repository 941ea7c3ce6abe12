//! The circuit breaker of one sink: after `failure_threshold` publishes or
//! readiness checks of the sink in a row failed or timed out it opens, and ingest for that sink's kinds is refused at once
//! (no broker touched) until `open_ms` passed; then it is half-open and lets
//! `half_open_probes` publishes (or readiness checks) through as probes: that many
//! successes close it, one failure opens it again.
//!
//! | state | `flujo_circuit_state{sink}` | ingest | `/readyz` |
//! |---|---|---|---|
//! | closed | 0 | published | the sink's own check |
//! | half-open | 1 | up to `half_open_probes` at a time | the sink's own check (a probe) |
//! | open | 2 | 503 + `Retry-After`, at once | fails at once |
//!
//! A small state machine rather than a crate: it must report its state (gauge,
//! readiness), count readiness checks as probes and tell how long it stays open
//! (`Retry-After`), which the breaker crates do not expose.

use crate::event::Kind;
use crate::metrics::CIRCUIT_STATE;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Settings of every sink's breaker (section `[breaker]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Publishes or readiness checks of the sink in a row that failed or timed out
    /// before the breaker opens (1–1000).
    pub failure_threshold: u32,
    /// How long the breaker stays open before it lets probes through, in ms.
    pub open_ms: u64,
    /// Probes let through at once while half-open; that many successes close it.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            open_ms: 5_000,
            half_open_probes: 2,
        }
    }
}

impl BreakerConfig {
    /// Problems with these settings, as `(key, what is wrong)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !(1..=1000).contains(&self.failure_threshold) {
            problems.push(("breaker.failure_threshold", "must be 1-1000".to_owned()));
        }
        if !(100..=3_600_000).contains(&self.open_ms) {
            problems.push(("breaker.open_ms", "must be 100-3600000".to_owned()));
        }
        if !(1..=1000).contains(&self.half_open_probes) {
            problems.push(("breaker.half_open_probes", "must be 1-1000".to_owned()));
        }
        problems
    }
}

/// The state of a breaker, as the gauge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Publishing normally.
    Closed,
    /// Letting a few probes through.
    HalfOpen,
    /// Refusing at once.
    Open,
}

impl CircuitState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn value(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }

    /// `closed`, `half-open` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::HalfOpen => "half-open",
            CircuitState::Open => "open",
        }
    }
}

/// Why a publish is refused without trying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The sink whose breaker refused.
    pub sink: &'static str,
    /// When a retry may be let through.
    pub retry_after: Duration,
    /// The last failure that counted.
    pub last_error: String,
}

impl Refused {
    /// Whole seconds to wait, at least 1 (`Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sink {} circuit open (last error: {}); nothing was published, retry after {}s",
            self.sink,
            self.last_error,
            self.retry_after_secs()
        )
    }
}

/// Leave to publish once, obtained from [`Breaker::try_acquire`]; give the outcome
/// back with [`Breaker::record`].
#[derive(Debug)]
#[must_use = "record the outcome with Breaker::record"]
pub struct Permit {
    generation: u64,
    probe: bool,
    /// Holds one of the half-open probe slots.
    slot: bool,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    /// Failures in a row while closed.
    failures: u32,
    /// When it last opened.
    opened_at: Instant,
    /// Probes let through and not yet answered (half-open).
    probes: u32,
    /// Probes that succeeded (half-open).
    successes: u32,
    /// Bumped at every change of state: outcomes of permits given out before are
    /// stale and ignored.
    generation: u64,
    last_error: String,
    /// Readiness checks in a row that failed while closed (a good check clears
    /// them, a good publish too); they count toward the threshold with the
    /// failed publishes.
    check_failures: u32,
    /// When a failed check last counted: at most one counts per
    /// [`CHECK_FAILURE_SPACING`], however many readers (`/readyz`, the readiness
    /// loop, probes) ask during one outage.
    last_check_failure: Option<Instant>,
    /// Whether the sink ever answered (a good check or publish): until it has,
    /// failed checks do not count (a broker still starting is not a broker that
    /// froze).
    answered_once: bool,
}

/// The least time between two failed readiness checks that count toward opening.
pub const CHECK_FAILURE_SPACING: Duration = Duration::from_millis(900);

/// The breaker of one sink; shared by its publisher, the receivers and `/readyz`.
#[derive(Debug)]
pub struct Breaker {
    sink: &'static str,
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker for `sink` (and its gauge at 0).
    pub fn new(sink: &'static str, config: BreakerConfig) -> Arc<Self> {
        metrics::gauge!(CIRCUIT_STATE, "sink" => sink).set(CircuitState::Closed.value());
        Arc::new(Breaker {
            sink,
            config,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                failures: 0,
                opened_at: Instant::now(),
                probes: 0,
                successes: 0,
                generation: 0,
                last_error: String::new(),
                check_failures: 0,
                last_check_failure: None,
                answered_once: false,
            }),
        })
    }

    /// The sink this breaker guards.
    pub fn sink(&self) -> &'static str {
        self.sink
    }

    fn open_for(&self) -> Duration {
        Duration::from_millis(self.config.open_ms)
    }

    /// The state now, moving from open to half-open once `open_ms` passed.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.state == CircuitState::Open && inner.opened_at.elapsed() >= self.open_for() {
            self.set(&mut inner, CircuitState::HalfOpen);
        }
        inner
    }

    fn set(&self, inner: &mut Inner, state: CircuitState) {
        if inner.state != state {
            match state {
                CircuitState::Open => tracing::warn!(sink = self.sink, error = %inner.last_error,
                    open_ms = self.config.open_ms, "circuit open"),
                CircuitState::HalfOpen => tracing::info!(sink = self.sink, "circuit half-open"),
                CircuitState::Closed => tracing::info!(sink = self.sink, "circuit closed"),
            }
        }
        inner.state = state;
        inner.generation += 1;
        inner.failures = 0;
        inner.check_failures = 0;
        inner.probes = 0;
        inner.successes = 0;
        if state == CircuitState::Open {
            inner.opened_at = Instant::now();
        }
        metrics::gauge!(CIRCUIT_STATE, "sink" => self.sink).set(state.value());
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.lock().state
    }

    fn refused(&self, inner: &Inner) -> Refused {
        let retry_after = match inner.state {
            CircuitState::Open => self.open_for().saturating_sub(inner.opened_at.elapsed()),
            // Half-open with every probe slot taken: the probes answer within the
            // durable-ack deadline.
            _ => Duration::from_secs(1),
        };
        Refused {
            sink: self.sink,
            retry_after,
            last_error: inner.last_error.clone(),
        }
    }

    /// `Some` while open, or half-open with every probe slot taken: what to tell a
    /// client that would publish to this sink. Cheap (no broker touched); half-open
    /// with a free slot lets callers through to [`try_acquire`]. Asked before a
    /// batch is admitted, so a batch that would find no slot is refused before it is
    /// acknowledged (with `ack = accepted` it would otherwise be answered 202 and
    /// then refused by the publisher).
    ///
    /// [`try_acquire`]: Breaker::try_acquire
    pub fn refusal(&self) -> Option<Refused> {
        let inner = self.lock();
        let probes_taken =
            inner.state == CircuitState::HalfOpen && inner.probes >= self.config.half_open_probes;
        (inner.state == CircuitState::Open || probes_taken).then(|| self.refused(&inner))
    }

    /// Leave to publish: always while closed, as a probe while half-open and a probe
    /// slot is free, never while open.
    pub fn try_acquire(&self) -> Result<Permit, Refused> {
        let mut inner = self.lock();
        match inner.state {
            CircuitState::Closed => Ok(Permit {
                generation: inner.generation,
                probe: false,
                slot: false,
            }),
            CircuitState::HalfOpen if inner.probes < self.config.half_open_probes => {
                inner.probes += 1;
                Ok(Permit {
                    generation: inner.generation,
                    probe: true,
                    slot: true,
                })
            }
            _ => Err(self.refused(&inner)),
        }
    }

    /// The outcome of a publish let through by `permit`: `Err` with what went wrong
    /// for a failure or a timeout.
    pub fn record(&self, permit: Permit, outcome: Result<(), &str>) {
        let mut inner = self.lock();
        if permit.generation != inner.generation {
            return;
        }
        if let Err(e) = outcome {
            inner.last_error = e.to_owned();
        }
        if outcome.is_ok() {
            inner.answered_once = true;
        }
        match (inner.state, outcome, permit.probe) {
            (CircuitState::Closed, Ok(()), _) => {
                inner.failures = 0;
                inner.check_failures = 0;
            }
            (CircuitState::Closed, Err(_), _) => {
                inner.failures += 1;
                self.open_at_threshold(&mut inner);
            }
            (CircuitState::HalfOpen, Ok(()), true) => {
                if permit.slot {
                    inner.probes = inner.probes.saturating_sub(1);
                }
                inner.successes += 1;
                if inner.successes >= self.config.half_open_probes {
                    self.set(&mut inner, CircuitState::Closed);
                }
            }
            (CircuitState::HalfOpen, Err(_), _) => self.set(&mut inner, CircuitState::Open),
            _ => {}
        }
    }

    /// The outcome of a readiness check run while closed (see [`Breaker::check`]).
    fn record_check(&self, permit: Permit, outcome: &Result<(), String>) {
        let mut inner = self.lock();
        if permit.generation != inner.generation || inner.state != CircuitState::Closed {
            return;
        }
        match outcome {
            Ok(()) => {
                inner.answered_once = true;
                inner.check_failures = 0;
            }
            Err(e) => {
                let spaced = inner
                    .last_check_failure
                    .is_none_or(|at| at.elapsed() >= CHECK_FAILURE_SPACING);
                if inner.answered_once && spaced {
                    inner.last_error = e.clone();
                    inner.check_failures += 1;
                    inner.last_check_failure = Some(Instant::now());
                    self.open_at_threshold(&mut inner);
                }
            }
        }
    }

    /// Opens when the failed publishes and checks in a row reach the threshold.
    fn open_at_threshold(&self, inner: &mut Inner) {
        if inner.failures + inner.check_failures >= self.config.failure_threshold {
            self.set(inner, CircuitState::Open);
        }
    }

    /// Runs `check` (the sink's readiness check) as a probe when half-open; while
    /// open, fails at once without running it. While closed, failed checks in a row
    /// count toward `failure_threshold` with the failed publishes (so a frozen
    /// broker opens the breaker within a few seconds even without traffic): at most
    /// one per [`CHECK_FAILURE_SPACING`], and only once the sink has answered at
    /// least once. A good check clears the failed checks but not the failed
    /// publishes (a broker may answer metadata and still not take batches).
    /// Returns the check's outcome.
    pub async fn check<F>(&self, check: F) -> Result<(), String>
    where
        F: std::future::Future<Output = Result<(), String>>,
    {
        let permit = {
            let inner = self.lock();
            let probe = match inner.state {
                CircuitState::Open => return Err(self.refused(&inner).to_string()),
                CircuitState::HalfOpen => true,
                CircuitState::Closed => false,
            };
            // A probe without a slot: its outcome counts, it took no slot.
            Permit {
                generation: inner.generation,
                probe,
                slot: false,
            }
        };
        let outcome = check.await;
        if permit.probe {
            self.record(permit, outcome.as_ref().map(|_| ()).map_err(String::as_str));
        } else {
            self.record_check(permit, &outcome);
        }
        outcome
    }
}

/// The breakers of the sinks each kind is published to: what the receivers ask
/// before admitting a batch, so that an open sink is refused in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    by_kind: HashMap<Kind, Vec<Arc<Breaker>>>,
}

impl Breakers {
    /// `breaker` guards the publishing of `kind`.
    pub fn add(&mut self, kind: Kind, breaker: Arc<Breaker>) {
        self.by_kind.entry(kind).or_default().push(breaker);
    }

    /// `Some` when a sink of `kind` is open (the first found).
    pub fn refusal(&self, kind: Kind) -> Option<Refused> {
        self.by_kind
            .get(&kind)?
            .iter()
            .find_map(|breaker| breaker.refusal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, open_ms: u64, probes: u32) -> Arc<Breaker> {
        Breaker::new(
            "test",
            BreakerConfig {
                failure_threshold: threshold,
                open_ms,
                half_open_probes: probes,
            },
        )
    }

    fn fail(b: &Breaker) {
        let permit = b.try_acquire().expect("let through");
        b.record(permit, Err("boom"));
    }

    fn succeed(b: &Breaker) {
        let permit = b.try_acquire().expect("let through");
        b.record(permit, Ok(()));
    }

    #[test]
    fn opens_after_failures_in_a_row_only() {
        let b = breaker(3, 60_000, 1);
        fail(&b);
        fail(&b);
        succeed(&b);
        fail(&b);
        fail(&b);
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "a success resets the count"
        );
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open);
        let refused = b.try_acquire().expect_err("open refuses");
        assert_eq!(refused.last_error, "boom");
        assert!(refused.retry_after > Duration::from_secs(59));
        assert_eq!(refused.retry_after_secs(), 60);
        assert!(b.refusal().is_some());
    }

    #[test]
    fn half_open_probes_close_it_and_a_failed_probe_reopens_it() {
        let b = breaker(1, 100, 2);
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.refusal().is_none(), "half-open lets probes through");
        let p1 = b.try_acquire().expect("probe 1");
        let p2 = b.try_acquire().expect("probe 2");
        assert!(b.try_acquire().is_err(), "only two probes at a time");
        assert!(
            b.refusal().is_some(),
            "every probe slot taken: refused before admission"
        );
        b.record(p1, Ok(()));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.record(p2, Err("still down"));
        assert_eq!(b.state(), CircuitState::Open, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(120));
        succeed(&b);
        succeed(&b);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn outcomes_of_permits_from_an_earlier_state_are_ignored() {
        let b = breaker(1, 60_000, 1);
        let early = b.try_acquire().expect("closed");
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open);
        b.record(early, Ok(()));
        assert_eq!(
            b.state(),
            CircuitState::Open,
            "a stale success does not close"
        );
    }

    #[tokio::test]
    async fn readiness_checks_are_probes() {
        let b = breaker(1, 100, 1);
        fail(&b);
        let open = b.check(async { Ok(()) }).await;
        assert!(open
            .expect_err("open fails at once")
            .contains("circuit open"));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(b.check(async { Err("down".into()) }).await.is_err());
        assert_eq!(b.state(), CircuitState::Open, "a failed check reopens");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(b.check(async { Ok(()) }).await.is_ok());
        assert_eq!(b.state(), CircuitState::Closed, "a good check closes");
    }

    #[tokio::test]
    async fn failed_checks_in_a_row_open_it_once_the_sink_has_answered() {
        let b = breaker(2, 60_000, 1);
        let down = || async { Err::<(), String>("no answer".into()) };
        // A sink that never answered yet (a broker still starting): not counted.
        assert!(b.check(down()).await.is_err());
        assert!(b.check(async { Ok(()) }).await.is_ok());
        // A frozen broker and no traffic: the checks alone open it, one failure
        // counted per spacing however many readers ask.
        assert!(b.check(down()).await.is_err());
        assert!(b.check(down()).await.is_err());
        assert_eq!(b.state(), CircuitState::Closed, "one counted so far");
        tokio::time::sleep(CHECK_FAILURE_SPACING).await;
        assert!(b.check(down()).await.is_err());
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[tokio::test]
    async fn a_good_check_clears_failed_checks_but_not_failed_publishes() {
        let b = breaker(3, 60_000, 1);
        assert!(b.check(async { Ok(()) }).await.is_ok());
        fail(&b);
        assert!(b.check(async { Err("slow".into()) }).await.is_err());
        // Failures hours apart are not "in a row": a good check in between clears
        // the failed check (the broker answers metadata again)...
        assert!(b.check(async { Ok(()) }).await.is_ok());
        tokio::time::sleep(CHECK_FAILURE_SPACING).await;
        assert!(b.check(async { Err("slow".into()) }).await.is_err());
        assert_eq!(b.state(), CircuitState::Closed, "a publish and a check");
        // ...but not the failed publish (metadata answered, batches not taken).
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open, "two publishes and a check");
    }

    #[test]
    fn settings_are_checked() {
        assert!(BreakerConfig::default().problems().is_empty());
        let bad = BreakerConfig {
            failure_threshold: 0,
            open_ms: 1,
            half_open_probes: 0,
        };
        let keys: Vec<_> = bad.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "breaker.failure_threshold",
                "breaker.open_ms",
                "breaker.half_open_probes"
            ]
        );
    }
}
