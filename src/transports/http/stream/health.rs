//! The health part of a KPI snapshot, computed in the process over a sliding
//! window of the last [`WINDOW`]:
//!
//! - events applied per second: the change of the store's counts (sales plus
//!   tweets, so every consumer writing to a shared store counts);
//! - p99 end-to-end latency: from this process's `flujo_end_to_end_duration_seconds`
//!   buckets, interpolated within a bucket as Prometheus's `histogram_quantile` does;
//! - consumer lag: this process's `flujo_consumer_lag_events`, summed over sources;
//! - readiness: the `/readyz` checks.
//!
//! The metrics are read from the Prometheus exposition this process renders for
//! `/metrics`, the one place they are kept.

use flujo_actors::metrics::{CONSUMER_LAG, END_TO_END_DURATION};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back throughput and latency look.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The quantile shown as latency.
const QUANTILE: f64 = 0.99;

/// How the pipeline is doing.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = PipelineHealth)]
pub struct Health {
    /// Events applied per second over the window; `null` until two readings.
    pub events_per_second: Option<f64>,
    /// p99 time from receive to applied over the window (in the first reading of a
    /// stream: since the process started), in seconds; `null` when no event was
    /// applied in it (or this process applies none).
    pub p99_latency_seconds: Option<f64>,
    /// Events published and not yet consumed; `null` in a process without sources.
    pub consumer_lag: Option<f64>,
    /// Every `/readyz` check passes and the process is not draining.
    pub ready: bool,
    /// The failing checks, as `/readyz` names them.
    pub failing: Vec<String>,
}

/// One reading of the counters.
#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    applied: Option<u64>,
    /// Cumulative counts per upper bound, ascending (the last one is `+Inf`).
    buckets: Vec<(f64, f64)>,
}

/// The readings of the last [`WINDOW`].
#[derive(Debug, Default)]
pub struct HealthWindow {
    readings: VecDeque<Reading>,
}

impl HealthWindow {
    /// Adds a reading taken `at`: the store's applied count (`None` when the store
    /// could not be read), this process's rendered metrics and the failing checks.
    pub fn observe(
        &mut self,
        at: Instant,
        applied: Option<u64>,
        exposition: &str,
        failing: Vec<String>,
    ) -> Health {
        let now = Reading {
            at,
            applied,
            buckets: buckets(exposition, END_TO_END_DURATION),
        };
        // The baseline: the newest reading at least WINDOW old, else the oldest.
        while self.readings.len() > 1 && at.duration_since(self.readings[1].at) >= WINDOW {
            self.readings.pop_front();
        }
        let base = self.readings.front();
        let health = Health {
            events_per_second: base.and_then(|b| throughput(b, &now)),
            p99_latency_seconds: match base {
                Some(b) => quantile(QUANTILE, &delta(&now.buckets, &b.buckets)),
                None => quantile(QUANTILE, &now.buckets),
            },
            consumer_lag: gauge_sum(exposition, CONSUMER_LAG),
            ready: failing.is_empty(),
            failing,
        };
        self.readings.push_back(now);
        health
    }

    /// Forgets every reading (nobody listened for a while: they are too old to
    /// compare with).
    pub fn reset(&mut self) {
        self.readings.clear();
    }
}

fn throughput(base: &Reading, now: &Reading) -> Option<f64> {
    let seconds = now.at.duration_since(base.at).as_secs_f64();
    let applied = now.applied?.checked_sub(base.applied?)?;
    (seconds > 0.0).then(|| applied as f64 / seconds)
}

/// The samples of one metric in a Prometheus text exposition: its labels (the text
/// between the braces) and value.
fn samples<'a>(exposition: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    exposition.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let value = value.split_whitespace().next()?.parse().ok()?;
        Some((labels, value))
    })
}

/// The value of label `key` in `labels` (`a="x",b="y"`).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// The cumulative bucket counts of histogram `name`, summed over its series.
fn buckets(exposition: &str, name: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for (labels, count) in samples(exposition, &bucket) {
        let Some(le) = label(labels, "le").and_then(|le| le.parse::<f64>().ok()) else {
            continue;
        };
        match sums.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, sum)) => *sum += count,
            None => sums.push((le, count)),
        }
    }
    sums.sort_by(|a, b| a.0.total_cmp(&b.0));
    sums
}

/// The sum of every series of gauge `name`; `None` when it has none.
fn gauge_sum(exposition: &str, name: &str) -> Option<f64> {
    samples(exposition, name)
        .map(|(_, v)| v)
        .reduce(|a, b| a + b)
}

/// `now − base` per bucket (a bound missing from `base` counts from zero).
fn delta(now: &[(f64, f64)], base: &[(f64, f64)]) -> Vec<(f64, f64)> {
    now.iter()
        .map(|&(le, count)| {
            let before = base.iter().find(|(b, _)| *b == le).map_or(0.0, |b| b.1);
            (le, (count - before).max(0.0))
        })
        .collect()
}

/// The `q` quantile of cumulative `buckets` as `histogram_quantile` computes it:
/// linear within the bucket that holds it, the highest finite bound when it falls
/// in `+Inf`; `None` without observations.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(upper, count) in buckets {
        if count >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            let share = if count > below {
                (rank - below) / (count - below)
            } else {
                1.0
            };
            return Some(lower + (upper - lower) * share);
        }
        (lower, below) = (upper, count);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# TYPE flujo_end_to_end_duration_seconds histogram
flujo_end_to_end_duration_seconds_bucket{kind=\"sale\",le=\"0.001\"} 50
flujo_end_to_end_duration_seconds_bucket{kind=\"sale\",le=\"0.01\"} 90
flujo_end_to_end_duration_seconds_bucket{kind=\"sale\",le=\"+Inf\"} 100
flujo_end_to_end_duration_seconds_sum{kind=\"sale\"} 0.5
flujo_end_to_end_duration_seconds_count{kind=\"sale\"} 100
flujo_end_to_end_duration_seconds_bucket{kind=\"tweet\",le=\"0.001\"} 0
flujo_end_to_end_duration_seconds_bucket{kind=\"tweet\",le=\"0.01\"} 100
flujo_end_to_end_duration_seconds_bucket{kind=\"tweet\",le=\"+Inf\"} 100
flujo_consumer_lag_events{source=\"rabbitmq\",kind=\"sale\"} 3
flujo_consumer_lag_events{source=\"rabbitmq\",kind=\"tweet\"} 4
flujo_consumer_lag_events_other 100
";

    #[test]
    fn reads_histograms_and_gauges_from_the_exposition() {
        let b = buckets(EXPOSITION, END_TO_END_DURATION);
        assert_eq!(
            b,
            vec![(0.001, 50.0), (0.01, 190.0), (f64::INFINITY, 200.0)]
        );
        assert_eq!(gauge_sum(EXPOSITION, CONSUMER_LAG), Some(7.0));
        assert_eq!(gauge_sum("", CONSUMER_LAG), None);
        assert_eq!(
            gauge_sum("flujo_consumer_lag_events 5\n", CONSUMER_LAG),
            Some(5.0)
        );
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        // 100 observations: 50 ≤ 1 ms, 40 in (1, 10] ms, 10 above.
        let b = [(0.001, 50.0), (0.01, 90.0), (f64::INFINITY, 100.0)];
        let p50 = quantile(0.5, &b).expect("p50");
        assert!((p50 - 0.001).abs() < 1e-12, "{p50}");
        let p70 = quantile(0.7, &b).expect("p70");
        assert!((p70 - 0.0055).abs() < 1e-12, "{p70}");
        assert_eq!(quantile(0.99, &b), Some(0.01), "in +Inf: the highest bound");
        assert_eq!(quantile(0.99, &[(0.001, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.99, &[]), None);
    }

    #[test]
    fn window_gives_throughput_and_recent_latency() {
        let mut w = HealthWindow::default();
        let t0 = Instant::now();
        let first = w.observe(t0, Some(100), EXPOSITION, vec![]);
        assert_eq!(first.events_per_second, None, "one reading: no rate yet");
        assert!(first.ready);
        assert_eq!(first.consumer_lag, Some(7.0));
        // 2 s later, 50 more events applied, all tweets, all ≤ 1 ms.
        let later = EXPOSITION
            .replace(
                "kind=\"tweet\",le=\"0.001\"} 0",
                "kind=\"tweet\",le=\"0.001\"} 50",
            )
            .replace(
                "kind=\"tweet\",le=\"0.01\"} 100",
                "kind=\"tweet\",le=\"0.01\"} 150",
            )
            .replace(
                "kind=\"tweet\",le=\"+Inf\"} 100",
                "kind=\"tweet\",le=\"+Inf\"} 150",
            );
        let h = w.observe(
            t0 + Duration::from_secs(2),
            Some(150),
            &later,
            vec!["store:valkey: down".into()],
        );
        assert_eq!(h.events_per_second, Some(25.0));
        let p99 = h.p99_latency_seconds.expect("p99 of the window");
        assert!(p99 <= 0.001, "only the window's events count: {p99}");
        assert!(!h.ready);
        assert_eq!(h.failing, ["store:valkey: down"]);
        // 20 s on, the 2 s reading is the baseline (the newest at least 10 s old).
        let h = w.observe(t0 + Duration::from_secs(20), Some(190), &later, vec![]);
        assert_eq!(h.events_per_second, Some(40.0 / 18.0));
        assert_eq!(h.p99_latency_seconds, None, "no event applied since");
        w.reset();
        let fresh = w.observe(t0 + Duration::from_secs(600), Some(150), &later, vec![]);
        assert_eq!(fresh.events_per_second, None);
    }
}
