//! The load: schedules requests (open or closed model), delivers each batch
//! with retries, measures latency into an HDR histogram, feeds the ground
//! truth, and prints progress to stderr once a second.
//!
//! Open model (`--rate N`): request `i` has the intended send time
//! `start + i × batch / N`, fixed in advance. Its latency is measured from
//! that intended time to the final answer, so a slow server (or all
//! `--concurrency` slots being busy) shows up as latency instead of silently
//! lowering the request rate (no coordinated omission). Closed model
//! (`--rate max`): each of the C slots sends its next request as soon as
//! the previous one is answered; latency is measured from the actual send.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::time::{sleep, Instant};

use super::generate::{Batch, Generator, Kind};
use super::transport::{encode, Attempt, Encoded, Sender};
use super::truth::Truth;

/// Retries after a transport error or a 5xx other than 503.
pub const MAX_TRANSIENT_RETRIES: u32 = 3;

/// Highest latency the histogram tracks exactly (one hour, in µs).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Target rate (`--rate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Open model: this many events per second.
    PerSecond(f64),
    /// Closed model: every slot sends back to back.
    Max,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::PerSecond(r)),
            _ => Err(format!(
                "expected a positive number of events per second or `max`, got `{s}`"
            )),
        }
    }
}

/// What to send and how fast.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Events per second, or closed model.
    pub rate: Rate,
    /// How long new requests are started.
    pub duration: Duration,
    /// Most requests in flight.
    pub concurrency: usize,
    /// Events per request.
    pub batch: usize,
    /// Which events.
    pub kind: Kind,
    /// Send batches as NDJSON.
    pub ndjson: bool,
    /// After the end of `duration`, how long backlogged requests may still
    /// be started and retried before they are given up.
    pub grace: Duration,
    /// Print progress lines on stderr.
    pub progress: bool,
}

/// Counters of a run.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of accepted requests, in microseconds.
    pub latency: Histogram<u64>,
    /// Requests finished (accepted or failed).
    pub requests: u64,
    /// Events accepted by the server.
    pub events: u64,
    /// Failed requests, by final status or error kind.
    pub errors: BTreeMap<String, u64>,
    /// Resends (after backpressure or a transient error).
    pub retries: u64,
}

impl Stats {
    /// Empty counters.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .context("creating the latency histogram")?,
            requests: 0,
            events: 0,
            errors: BTreeMap::new(),
            retries: 0,
        })
    }

    /// Total failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn record(&mut self, outcome: &Delivered, events: usize, latency: Duration) {
        self.requests += 1;
        self.retries += outcome.retries;
        match &outcome.result {
            Delivery::Accepted => {
                self.events += events as u64;
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency.saturating_record(us.max(1));
            }
            Delivery::Failed { label, .. } => *self.errors.entry(label.clone()).or_default() += 1,
        }
    }
}

/// Final result of delivering one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Acknowledged with 202.
    Accepted,
    /// Given up.
    Failed {
        /// Final status (e.g. `"400"`) or error kind (e.g. `"timeout"`).
        label: String,
        /// Some attempt may have been processed: the outcome is unknown.
        maybe_stored: bool,
    },
}

/// A [`Delivery`] and the resends it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The result.
    pub result: Delivery,
    /// Resends.
    pub retries: u64,
}

/// Delivers one batch: resends the same bytes (same ids, so idempotent)
/// after 429/503 until `give_up_at`, and after a transport error or other
/// 5xx up to [`MAX_TRANSIENT_RETRIES`] times; a 4xx is final.
pub async fn deliver(sender: &Sender, batch: &Encoded, give_up_at: Instant) -> Delivered {
    let mut retries = 0u64;
    let mut transient = 0u32;
    let mut maybe_stored = false;
    loop {
        let attempt = sender.send(batch).await;
        let (label, wait) = match attempt {
            Attempt::Accepted => {
                return Delivered {
                    result: Delivery::Accepted,
                    retries,
                }
            }
            Attempt::Backpressure {
                status,
                retry_after,
            } => (
                status.to_string(),
                retry_after.unwrap_or_else(|| backoff(retries)),
            ),
            Attempt::Rejected { status } if status >= 500 && transient < MAX_TRANSIENT_RETRIES => {
                transient += 1;
                (status.to_string(), backoff(retries))
            }
            Attempt::Rejected { status } => {
                return failed(status.to_string(), maybe_stored, retries)
            }
            Attempt::NotSent { label } | Attempt::Unknown { label } => {
                maybe_stored |= matches!(attempt, Attempt::Unknown { .. });
                if transient >= MAX_TRANSIENT_RETRIES {
                    return failed(label.to_string(), maybe_stored, retries);
                }
                transient += 1;
                (label.to_string(), backoff(retries))
            }
        };
        if Instant::now() + wait > give_up_at {
            return failed(label, maybe_stored, retries);
        }
        retries += 1;
        sleep(wait).await;
    }
}

fn failed(label: String, maybe_stored: bool, retries: u64) -> Delivered {
    Delivered {
        result: Delivery::Failed {
            label,
            maybe_stored,
        },
        retries,
    }
}

/// Exponential backoff from 10 ms up to 1 s, with jitter.
fn backoff(retries: u64) -> Duration {
    let ms = 10u64 << retries.min(7);
    let ms = ms.min(1000) as f64 * rand::rng().random_range(0.5..=1.0);
    Duration::from_secs_f64(ms / 1000.0)
}

/// Locks a mutex, ignoring poisoning (a panic aborts the process anyway).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Result of [`run_load`].
#[derive(Debug)]
pub struct LoadOutcome {
    /// Counters and latency.
    pub stats: Stats,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// The truth passed in, with every accepted batch added.
    pub truth: Option<Truth>,
}

struct Shared {
    stats: Mutex<Stats>,
    truth: Option<Mutex<Truth>>,
}

/// Runs the load described by `plan`. When `truth` is given, every accepted
/// batch is added to it and every batch with an unknown outcome is counted
/// as ambiguous.
pub async fn run_load(
    sender: &Sender,
    generator: &mut Generator,
    plan: &Plan,
    truth: Option<Truth>,
) -> anyhow::Result<LoadOutcome> {
    let shared = Arc::new(Shared {
        stats: Mutex::new(Stats::new()?),
        truth: truth.map(Mutex::new),
    });
    let slots = plan.concurrency.max(1);
    let semaphore = Arc::new(Semaphore::new(slots));
    let start = Instant::now();
    let end = start + plan.duration;
    let give_up_at = end + plan.grace;
    let progress = plan
        .progress
        .then(|| tokio::spawn(progress(shared.clone(), start)));

    let mut ticks = match plan.rate {
        Rate::PerSecond(rate) => Some(ticker(start, end, plan.batch as f64 / rate)),
        Rate::Max => None,
    };
    loop {
        let (intended, permit) = match plan.rate {
            Rate::PerSecond(rate) => {
                let next = match ticks.as_mut() {
                    Some(t) => t.recv().await,
                    None => None,
                };
                let Some(intended) = next else {
                    break;
                };
                let permit = semaphore.clone().acquire_owned().await?;
                if Instant::now() > give_up_at {
                    // Hopelessly behind: what is left of the schedule is
                    // reported as overdue instead of stretching the run.
                    let per_request = plan.batch as f64 / rate;
                    let left = ((end - intended).as_secs_f64() / per_request).ceil() as u64;
                    *lock(&shared.stats)
                        .errors
                        .entry("overdue".to_string())
                        .or_default() += left;
                    break;
                }
                (intended, permit)
            }
            Rate::Max => {
                let permit = semaphore.clone().acquire_owned().await?;
                let now = Instant::now();
                if now >= end {
                    break;
                }
                (now, permit)
            }
        };
        let batch = generator.next_batch(plan.kind, plan.batch);
        let (shared, sender, ndjson) = (shared.clone(), sender.clone(), plan.ndjson);
        tokio::spawn(async move {
            let _slot = permit;
            send_one(&sender, &shared, batch, ndjson, intended, give_up_at).await;
        });
    }
    // Every task holds a slot until it is done: taking all slots waits for
    // the last answer.
    let _all = semaphore.acquire_many(u32::try_from(slots)?).await?;
    let elapsed = start.elapsed();
    if let Some(p) = progress {
        p.abort();
    }
    let stats = lock(&shared.stats).clone();
    let truth = shared.truth.as_ref().map(|t| std::mem::take(&mut *lock(t)));
    Ok(LoadOutcome {
        stats,
        elapsed,
        truth,
    })
}

/// Intended send times of the open model, from a thread that sleeps with the OS's
/// precision: tokio's timer ticks in whole milliseconds, and that lateness would
/// show up as latency of the server.
fn ticker(start: Instant, end: Instant, period_secs: f64) -> tokio::sync::mpsc::Receiver<Instant> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let (start, end) = (start.into_std(), end.into_std());
    std::thread::spawn(move || {
        for n in 0u64.. {
            let intended = start + Duration::from_secs_f64(n as f64 * period_secs);
            if intended >= end {
                break;
            }
            let now = std::time::Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            if tx.blocking_send(Instant::from_std(intended)).is_err() {
                break;
            }
        }
    });
    rx
}

async fn send_one(
    sender: &Sender,
    shared: &Shared,
    batch: Batch,
    ndjson: bool,
    intended: Instant,
    give_up_at: Instant,
) {
    let outcome = match encode(&batch, ndjson) {
        Ok(encoded) => deliver(sender, &encoded, give_up_at).await,
        Err(_) => failed("encode".to_string(), false, 0),
    };
    let latency = intended.elapsed();
    if let Some(truth) = &shared.truth {
        match &outcome.result {
            Delivery::Accepted => lock(truth).add_batch(&batch),
            Delivery::Failed {
                maybe_stored: true, ..
            } => lock(truth).add_ambiguous(&batch),
            Delivery::Failed { .. } => {}
        }
    }
    lock(&shared.stats).record(&outcome, batch.len(), latency);
}

/// Prints one progress line on stderr every second.
async fn progress(shared: Arc<Shared>, start: Instant) {
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_events = 0u64;
    let mut last_at = start;
    loop {
        let now = tick.tick().await;
        let (events, p99, errors, retries) = {
            let s = lock(&shared.stats);
            let p99 = (!s.latency.is_empty()).then(|| s.latency.value_at_quantile(0.99));
            (s.events, p99, s.error_count(), s.retries)
        };
        let dt = (now - last_at).as_secs_f64().max(1e-9);
        let rate = (events - last_events) as f64 / dt;
        (last_events, last_at) = (events, now);
        let p99 = p99.map_or_else(
            || "-".to_string(),
            |us| format!("{:.3} ms", us as f64 / 1000.0),
        );
        eprintln!(
            "[{:6.1}s] events {events}  {rate:.0} ev/s  p99 {p99}  errors {errors}  retries {retries}",
            (now - start).as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_parses() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("MAX".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("2500".parse::<Rate>(), Ok(Rate::PerSecond(2500.0)));
        assert_eq!("0.5".parse::<Rate>(), Ok(Rate::PerSecond(0.5)));
        assert!("0".parse::<Rate>().is_err());
        assert!("-3".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(10));
        assert!(backoff(0) >= Duration::from_millis(5));
        assert!(backoff(3) >= Duration::from_millis(40));
        assert!(backoff(50) <= Duration::from_secs(1));
        assert!(backoff(50) >= Duration::from_millis(500));
    }

    #[test]
    fn stats_count_by_outcome() {
        let mut s = Stats::new().expect("stats");
        let ok = Delivered {
            result: Delivery::Accepted,
            retries: 2,
        };
        s.record(&ok, 10, Duration::from_micros(1500));
        s.record(&failed("400".to_string(), false, 0), 10, Duration::ZERO);
        s.record(&failed("400".to_string(), false, 1), 10, Duration::ZERO);
        assert_eq!((s.requests, s.events, s.retries), (3, 10, 3));
        assert_eq!(s.errors["400"], 2);
        assert_eq!(s.error_count(), 2);
        assert_eq!(s.latency.len(), 1);
        assert!(s.latency.equivalent(s.latency.max(), 1500));
    }
}
