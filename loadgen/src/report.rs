//! The final report: a human-readable table, or one JSON object with
//! `--json`, plus the exit code derived from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::load::Stats;
use super::verify::VerifyReport;

/// Exit code: everything fine.
pub const EXIT_OK: i32 = 0;
/// Exit code: some requests failed.
pub const EXIT_REQUEST_FAILURES: i32 = 1;
/// Exit code: `--verify` found differences (sysexits' `EX_DATAERR`: the data
/// read back is wrong; 2 stays clap's usage error).
pub const EXIT_VERIFY_FAILED: i32 = 65;

/// Latency summary in milliseconds (`null` when no request was accepted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyMs {
    /// Fastest.
    pub min: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
    /// Slowest.
    pub max: Option<f64>,
}

impl LatencyMs {
    /// Summarizes a histogram of microseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let some = !h.is_empty();
        let ms = |us: u64| some.then_some(us as f64 / 1000.0);
        Self {
            min: ms(h.min()),
            mean: some.then(|| h.mean() / 1000.0),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Everything `flujo loadgen` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Requests finished (accepted or failed).
    pub requests: u64,
    /// Events accepted.
    pub events: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failed requests by final status or error kind.
    pub errors_by_status: BTreeMap<String, u64>,
    /// Resends after backpressure or transient errors.
    pub retries: u64,
    /// Length of the load phase, seconds.
    pub duration_s: f64,
    /// Accepted events per second.
    pub events_per_s: f64,
    /// Finished requests per second.
    pub requests_per_s: f64,
    /// Latency of accepted requests.
    pub latency_ms: LatencyMs,
    /// Outcome of `--verify`, `null` without it.
    pub verify: Option<VerifyReport>,
}

impl Report {
    /// Builds the report of a run.
    pub fn new(stats: &Stats, elapsed: Duration, verify: Option<VerifyReport>) -> Self {
        let secs = elapsed.as_secs_f64();
        let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        Self {
            requests: stats.requests,
            events: stats.events,
            errors: stats.error_count(),
            errors_by_status: stats.errors.clone(),
            retries: stats.retries,
            duration_s: secs,
            events_per_s: per_s(stats.events),
            requests_per_s: per_s(stats.requests),
            latency_ms: LatencyMs::from_histogram(&stats.latency),
            verify,
        }
    }

    /// 65 when verification failed, else 1 when requests failed, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.verify.as_ref().is_some_and(|v| !v.ok) {
            EXIT_VERIFY_FAILED
        } else if self.errors > 0 {
            EXIT_REQUEST_FAILURES
        } else {
            EXIT_OK
        }
    }

    /// The human-readable table.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let errors = if self.errors_by_status.is_empty() {
            "0".to_string()
        } else {
            let by: Vec<String> = self
                .errors_by_status
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            format!("{} ({})", self.errors, by.join(", "))
        };
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.3}"));
        let l = &self.latency_ms;
        // Writing to a String cannot fail.
        let _ = writeln!(out, "requests      {}", self.requests);
        let _ = writeln!(out, "events        {} accepted", self.events);
        let _ = writeln!(out, "errors        {errors}");
        let _ = writeln!(out, "retries       {}", self.retries);
        let _ = writeln!(out, "elapsed       {:.2} s", self.duration_s);
        let _ = writeln!(
            out,
            "throughput    {:.1} events/s, {:.1} requests/s",
            self.events_per_s, self.requests_per_s
        );
        let _ = writeln!(
            out,
            "latency (ms)  min {}  mean {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            ms(l.min),
            ms(l.mean),
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        );
        if let Some(v) = &self.verify {
            if v.ok {
                let _ = writeln!(out, "verify        OK (query API matches the ground truth)");
            } else {
                let _ = writeln!(
                    out,
                    "verify        FAILED: {} differences",
                    v.differences_total
                );
                for d in &v.differences {
                    let _ = writeln!(
                        out,
                        "  {} {}: expected {}, got {}",
                        d.path, d.field, d.expected, d.got
                    );
                }
                if v.differences_total > v.differences.len() {
                    let _ = writeln!(
                        out,
                        "  … and {} more",
                        v.differences_total - v.differences.len()
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::verify::Difference;
    use super::*;

    fn stats() -> Stats {
        let mut s = Stats::new().expect("stats");
        for us in [1000u64, 2000, 3000, 4000] {
            s.latency.record(us).expect("record");
        }
        s.requests = 5;
        s.events = 40;
        s.errors.insert("500".to_string(), 1);
        s.retries = 3;
        s
    }

    #[test]
    fn json_has_the_documented_keys() {
        let r = Report::new(&stats(), Duration::from_secs(2), None);
        let v = serde_json::to_value(&r).expect("json");
        for key in [
            "requests",
            "events",
            "errors",
            "retries",
            "duration_s",
            "events_per_s",
            "requests_per_s",
            "latency_ms",
            "verify",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        for key in ["min", "mean", "p50", "p90", "p99", "p999", "max"] {
            assert!(v["latency_ms"][key].is_f64(), "latency_ms.{key}");
        }
        assert_eq!(v["events_per_s"], 20.0);
        assert_eq!(v["errors"], 1);
        assert!(v["verify"].is_null());
        assert!((r.latency_ms.mean.unwrap_or(0.0) - 2.5).abs() < 0.01);
    }

    #[test]
    fn exit_codes() {
        let mut r = Report::new(&stats(), Duration::from_secs(1), None);
        assert_eq!(r.exit_code(), EXIT_REQUEST_FAILURES);
        r.errors = 0;
        assert_eq!(r.exit_code(), EXIT_OK);
        r.verify = Some(VerifyReport::new(Vec::new(), 0));
        assert_eq!(r.exit_code(), EXIT_OK);
        let d = Difference {
            path: "kpis/sales total".to_string(),
            field: "count".to_string(),
            expected: "1".to_string(),
            got: "2".to_string(),
        };
        r.verify = Some(VerifyReport::new(vec![d], 0));
        assert_eq!(r.exit_code(), EXIT_VERIFY_FAILED);
        let text = r.to_text();
        assert!(
            text.contains("kpis/sales total count: expected 1, got 2"),
            "{text}"
        );
    }

    #[test]
    fn empty_run_has_null_latency() {
        let r = Report::new(&Stats::new().expect("stats"), Duration::ZERO, None);
        assert_eq!(r.latency_ms.p99, None);
        assert_eq!(r.events_per_s, 0.0);
        assert!(r.to_text().contains("p99 -"));
    }
}
