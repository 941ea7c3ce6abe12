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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use flujo_actors::backoff::Backoff;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::{sleep, Instant};

use super::generate::{Batch, Generator, KindMix};
use super::transport::{Answer, Attempt, Sender};
use super::truth::Truth;

/// Retries after a transport error or a server error (HTTP 5xx other than
/// 503, gRPC INTERNAL/UNKNOWN/ABORTED).
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
    pub kind: KindMix,
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
    /// Events accepted by the server (including those of failed TCP
    /// batches answered `ok`).
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
            Delivery::Failed {
                label, accepted, ..
            } => {
                self.events += accepted.len() as u64;
                *self.errors.entry(label.clone()).or_default() += 1;
            }
        }
    }
}

/// Final result of delivering one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Every event was stored (202, `Ack`, or `ok` for each line).
    Accepted,
    /// Given up (for some of the events at least).
    Failed {
        /// Final status (e.g. `"400"`) or error kind (e.g. `"timeout"`) of
        /// the first events given up.
        label: String,
        /// Events stored nonetheless, by position in the batch (only over
        /// TCP, where every event is answered on its own).
        accepted: Vec<usize>,
        /// Events neither stored nor refused for sure: some attempt may have
        /// been processed (e.g. it timed out), so the outcome is unknown.
        unknown: Vec<usize>,
    },
}

impl Delivery {
    /// Whether some event of the batch may have been stored without an
    /// acknowledgement.
    pub fn maybe_stored(&self) -> bool {
        matches!(self, Delivery::Failed { unknown, .. } if !unknown.is_empty())
    }
}

/// A [`Delivery`] and the resends it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The result.
    pub result: Delivery,
    /// Resends.
    pub retries: u64,
}

/// The batches waiting to be resent right now, and why the latest began to
/// wait: what the progress line shows while nothing gets through (a target
/// that refuses connections is retried until the grace period ends).
#[derive(Debug, Default)]
pub struct Resending {
    waiting: AtomicUsize,
    reason: Mutex<String>,
}

impl Resending {
    /// How many batches wait to be resent, and the latest reason (`connect`,
    /// `429`, …).
    pub fn now(&self) -> (usize, String) {
        (
            self.waiting.load(Ordering::Relaxed),
            lock(&self.reason).clone(),
        )
    }

    /// Counts one batch as waiting, for `reason`, until the guard is dropped
    /// (also when the delivery is cancelled mid-wait).
    fn wait(&self, reason: &str) -> WaitGuard<'_> {
        reason.clone_into(&mut lock(&self.reason));
        self.waiting.fetch_add(1, Ordering::Relaxed);
        WaitGuard(&self.waiting)
    }
}

/// One batch counted in [`Resending`] while it lives.
struct WaitGuard<'a>(&'a AtomicUsize);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Delivers one batch, resending what was not stored: after backpressure
/// (429/503, RESOURCE_EXHAUSTED/UNAVAILABLE, `err busy`) or a connection that
/// could not be made (a server restarting) until `give_up_at`, and after
/// another transport error or a server error up to [`MAX_TRANSIENT_RETRIES`]
/// times; a refusal of the events (4xx, INVALID_ARGUMENT, `err <reason>`) is
/// final.
///
/// A resend carries the same events with the same ids, so it is idempotent.
/// HTTP and gRPC batches are stored or refused whole, and are resent whole
/// (the same bytes); over TCP every event is answered on its own, and only
/// the events not yet stored and not refused are resent.
/// While it waits to resend, the batch counts in `resending`.
pub async fn deliver(
    sender: &Sender,
    batch: &Batch,
    ndjson: bool,
    give_up_at: Instant,
    resending: &Resending,
) -> Delivered {
    let n = batch.len();
    let Ok(whole) = sender.encode(batch, ndjson) else {
        return failed("encode".to_string(), 0);
    };
    let mut stored = vec![false; n];
    let mut unknown = vec![false; n];
    let mut final_label: Option<String> = None;
    let mut pending: Vec<usize> = (0..n).collect();
    let mut retries = 0u64;
    let mut transient = 0u32;
    let mut backoff = resend_backoff();
    loop {
        let answer = if pending.len() == n {
            sender.send(&whole).await
        } else {
            match sender.encode(&batch.subset(&pending), ndjson) {
                Ok(part) => sender.send(&part).await,
                Err(_) => Answer::Whole(Attempt::Rejected {
                    label: "encode".to_string(),
                    transient: false,
                }),
            }
        };
        let transient_left = transient < MAX_TRANSIENT_RETRIES;
        let pause = backoff.next_delay();
        let mut retry: Vec<usize> = Vec::new();
        let mut wait = Duration::ZERO;
        let mut retry_label = String::new();
        let mut used_transient = false;
        let mut settle = |events: &[usize], attempt: Attempt| {
            let (label, hint) = match attempt {
                Attempt::Accepted => {
                    events.iter().for_each(|&i| stored[i] = true);
                    return;
                }
                Attempt::Backpressure { label, retry_after } => (label, retry_after),
                Attempt::Rejected {
                    label,
                    transient: true,
                } if transient_left => {
                    used_transient = true;
                    (label, None)
                }
                Attempt::Rejected { label, .. } => {
                    final_label.get_or_insert(label);
                    return;
                }
                // Nothing reached the server (a process restarting): resent
                // until `give_up_at`, as after backpressure. An earlier attempt
                // of the batch may have been stored, so giving up is no answer.
                Attempt::NotSent { label } => (label.to_string(), None),
                Attempt::Unknown { label } => {
                    events.iter().for_each(|&i| unknown[i] = true);
                    if !transient_left {
                        final_label.get_or_insert_with(|| label.to_string());
                        return;
                    }
                    used_transient = true;
                    (label.to_string(), None)
                }
            };
            retry.extend_from_slice(events);
            wait = wait.max(hint.unwrap_or(pause));
            retry_label = label;
        };
        match answer {
            Answer::Whole(attempt) => settle(&pending, attempt),
            Answer::PerEvent(attempts) if attempts.len() == pending.len() => {
                for (i, attempt) in pending.iter().zip(attempts) {
                    settle(std::slice::from_ref(i), attempt);
                }
            }
            Answer::PerEvent(_) => settle(
                &pending,
                Attempt::Unknown {
                    label: "ack-mismatch",
                },
            ),
        }
        transient += u32::from(used_transient);
        if retry.is_empty() {
            break;
        }
        if Instant::now() + wait > give_up_at {
            final_label.get_or_insert(retry_label);
            break;
        }
        retries += 1;
        let waiting = resending.wait(&retry_label);
        sleep(wait).await;
        drop(waiting);
        pending = retry;
    }
    let result = if stored.iter().all(|s| *s) {
        Delivery::Accepted
    } else {
        Delivery::Failed {
            label: final_label.unwrap_or_else(|| "unknown".to_string()),
            accepted: (0..n).filter(|&i| stored[i]).collect(),
            unknown: (0..n).filter(|&i| unknown[i] && !stored[i]).collect(),
        }
    };
    Delivered { result, retries }
}

/// A delivery that stored nothing and left no doubt.
fn failed(label: String, retries: u64) -> Delivered {
    Delivered {
        result: Delivery::Failed {
            label,
            accepted: Vec::new(),
            unknown: Vec::new(),
        },
        retries,
    }
}

/// Pauses between resends of one batch: from 5–10 ms up to 0.5–1 s (jitter up to
/// the delay again).
fn resend_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(5), Duration::from_millis(500))
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
    resending: Resending,
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
        resending: Resending::default(),
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
    let outcome = deliver(sender, &batch, ndjson, give_up_at, &shared.resending).await;
    let latency = intended.elapsed();
    if let Some(truth) = &shared.truth {
        match &outcome.result {
            Delivery::Accepted => lock(truth).add_batch(&batch),
            Delivery::Failed {
                accepted, unknown, ..
            } => {
                let mut truth = lock(truth);
                if !accepted.is_empty() {
                    truth.add_batch(&batch.subset(accepted));
                }
                if !unknown.is_empty() {
                    truth.add_ambiguous(&batch.subset(unknown));
                }
            }
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
        let (waiting, reason) = shared.resending.now();
        let resending = if waiting > 0 {
            format!("  resending {waiting} batches ({reason})")
        } else {
            String::new()
        };
        let dt = (now - last_at).as_secs_f64().max(1e-9);
        let rate = (events - last_events) as f64 / dt;
        (last_events, last_at) = (events, now);
        let p99 = p99.map_or_else(
            || "-".to_string(),
            |us| format!("{:.3} ms", us as f64 / 1000.0),
        );
        eprintln!(
            "[{:6.1}s] events {events}  {rate:.0} ev/s  p99 {p99}  errors {errors}  retries {retries}{resending}",
            (now - start).as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::line_server;
    use crate::transport::Transport;
    use std::collections::{HashMap, HashSet};

    /// What the fake TCP server below received and stored.
    #[derive(Default)]
    struct TcpLog {
        received: HashMap<String, u32>,
        stored: HashSet<String>,
        quantity_sum: u64,
    }

    /// A TCP ingest server that refuses the sales whose sequence number is a
    /// multiple of 5, answers `err busy` the first time it sees those whose
    /// number is a multiple of 3, and stores (once per id) everything else.
    async fn fake_tcp() -> (String, Arc<Mutex<TcpLog>>) {
        let log = Arc::new(Mutex::new(TcpLog::default()));
        let shared = log.clone();
        let addr = line_server(
            || {},
            move |line| {
                let v: serde_json::Value = serde_json::from_str(line).expect("json");
                let id = v["id"].as_str().expect("id").to_string();
                let k: u64 = id
                    .rsplit('s')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("k");
                let mut log = lock(&shared);
                let seen = log.received.entry(id.clone()).or_default();
                *seen += 1;
                Some(if k.is_multiple_of(5) {
                    "err field `price`: nope".to_string()
                } else if k.is_multiple_of(3) && *seen == 1 {
                    "err busy: router mailbox full".to_string()
                } else {
                    if log.stored.insert(id.clone()) {
                        log.quantity_sum += v["quantity"].as_u64().expect("quantity");
                    }
                    format!("ok {id}")
                })
            },
        )
        .await;
        (format!("tcp://{addr}"), log)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_connection_shows_as_a_batch_waiting_to_resend() {
        // A port nobody listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let sender = Sender::new(Transport::Http, &target, 1, None).expect("sender");
        let batch = Generator::new(1, "r").next_batch(KindMix::Sales, 1);
        let resending = Arc::new(Resending::default());
        // Far off: the test ends the delivery itself instead of waiting it out.
        let give_up_at = Instant::now() + Duration::from_secs(60);
        let watched = resending.clone();
        let delivery =
            tokio::spawn(
                async move { deliver(&sender, &batch, false, give_up_at, &watched).await },
            );
        let mut seen = (0, String::new());
        while !delivery.is_finished() && seen.0 == 0 {
            seen = resending.now();
            sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(seen, (1, "connect".to_string()), "seen while it waited");
        // Cancelled mid-wait (as a run's end may drop it): no longer counted.
        delivery.abort();
        assert!(delivery.await.expect_err("aborted").is_cancelled());
        assert_eq!(resending.now().0, 0, "none waits once it is gone");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_batches_resend_only_what_was_not_stored() {
        let (target, log) = fake_tcp().await;
        let sender = Sender::new(Transport::Tcp, &target, 2, None).expect("sender");
        let mut generator = Generator::new(1, "n");
        let batch = generator.next_batch(KindMix::Sales, 10); // n-s0 ..= n-s9
        let far = Instant::now() + Duration::from_secs(5);
        let outcome = deliver(&sender, &batch, false, far, &Resending::default()).await;
        assert_eq!(outcome.retries, 1, "one resend of the busy events");
        assert_eq!(
            outcome.result,
            Delivery::Failed {
                label: "rejected".to_string(),
                accepted: vec![1, 2, 3, 4, 6, 7, 8, 9],
                unknown: vec![],
            }
        );
        let log = lock(&log);
        let received = |k: u32| log.received.get(&format!("n-s{k}")).copied();
        // Stored at once: sent once. Busy, then stored: twice. Refused: once.
        assert_eq!(
            (0..10).map(received).collect::<Vec<_>>(),
            [1, 1, 1, 2, 1, 1, 2, 1, 1, 2].map(Some)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_truth_counts_exactly_the_events_answered_ok() {
        let (target, log) = fake_tcp().await;
        let sender = Sender::new(Transport::Tcp, &target, 4, None).expect("sender");
        let plan = Plan {
            rate: Rate::Max,
            duration: Duration::from_millis(200),
            concurrency: 4,
            batch: 7,
            kind: KindMix::Sales,
            ndjson: false,
            grace: Duration::from_secs(5),
            progress: false,
        };
        let mut generator = Generator::new(1, "n");
        let outcome = run_load(&sender, &mut generator, &plan, Some(Truth::default()))
            .await
            .expect("load");
        let truth = outcome.truth.expect("truth");
        let log = lock(&log);
        assert!(log.stored.len() > 100, "{}", log.stored.len());
        assert_eq!(truth.sales.count, log.stored.len() as u64);
        assert_eq!(truth.sales.quantity_sum, log.quantity_sum);
        assert_eq!(outcome.stats.events, log.stored.len() as u64);
        assert_eq!(truth.ambiguous_batches, 0);
        assert!(outcome.stats.errors["rejected"] > 0);
        assert!(outcome.stats.retries > 0);
    }

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
        let delays: Vec<Duration> = {
            let mut b = resend_backoff();
            (0..=50).map(|_| b.next_delay()).collect()
        };
        assert!(delays[0] <= Duration::from_millis(10));
        assert!(delays[0] >= Duration::from_millis(5));
        assert!(delays[3] >= Duration::from_millis(40));
        assert!(delays[50] <= Duration::from_secs(1));
        assert!(delays[50] >= Duration::from_millis(500));
    }

    #[test]
    fn stats_count_by_outcome() {
        let mut s = Stats::new().expect("stats");
        let ok = Delivered {
            result: Delivery::Accepted,
            retries: 2,
        };
        s.record(&ok, 10, Duration::from_micros(1500));
        s.record(&failed("400".to_string(), 0), 10, Duration::ZERO);
        s.record(&failed("400".to_string(), 1), 10, Duration::ZERO);
        let partial = Delivered {
            result: Delivery::Failed {
                label: "busy".to_string(),
                accepted: vec![0, 2, 3],
                unknown: vec![],
            },
            retries: 0,
        };
        s.record(&partial, 10, Duration::from_micros(900));
        assert_eq!((s.requests, s.events, s.retries), (4, 13, 3));
        assert_eq!(s.errors["400"], 2);
        assert_eq!(s.errors["busy"], 1);
        assert_eq!(s.error_count(), 3);
        assert_eq!(s.latency.len(), 1);
        assert!(s.latency.equivalent(s.latency.max(), 1500));
    }
}
