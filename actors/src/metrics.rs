//! Every metric flujo exports: names in one place, descriptions registered at start.
//!
//! Labels: `kind` (sale|tweet), `transport` (http|grpc|tcp), `sink`/`source`
//! (memory|kafka|rabbitmq), `actor`, `reason`, `category`, `weather`, `scope`
//! (ingest|query).

use crate::event::{Category, Kind, Weather};
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use std::collections::BTreeSet;

/// Events received by a transport, before validation (`kind`, `transport`).
pub const EVENTS_RECEIVED: &str = "flujo_events_received_total";
/// Events refused: invalid, backpressure, unavailable (`kind`, `transport`, `reason`).
pub const EVENTS_REJECTED: &str = "flujo_events_rejected_total";
/// Events confirmed by a sink (`kind`, `sink`).
pub const EVENTS_PUBLISHED: &str = "flujo_events_published_total";
/// Events a sink failed to take (`kind`, `sink`).
pub const EVENTS_PUBLISH_FAILED: &str = "flujo_events_publish_failed_total";
/// Events read from a source (`kind`, `source`).
pub const EVENTS_CONSUMED: &str = "flujo_events_consumed_total";
/// Events that changed the aggregates (`kind`).
pub const EVENTS_APPLIED: &str = "flujo_events_applied_total";
/// Events skipped because their id was already applied (`kind`).
pub const EVENTS_DUPLICATE: &str = "flujo_events_duplicate_total";
/// Events skipped because the store's position for their source stream was already
/// past them: a redelivery after a crash or rebalance, or a zombie consumer (`kind`).
pub const EVENTS_REPLAYED: &str = "flujo_events_replayed_total";
/// Ids forgotten before their dedup window ended, because the window held
/// `aggregator.dedup_max_ids` ids (`kind`).
pub const DEDUP_EVICTED: &str = "flujo_dedup_evicted_total";
/// Ids remembered in the dedup window now (`kind`).
pub const DEDUP_IDS: &str = "flujo_dedup_ids";
/// How far back the dedup window really reaches: the configured window, or less
/// when the cap forced ids out early (`kind`).
pub const DEDUP_WINDOW: &str = "flujo_dedup_window_seconds";
/// Bytes the dedup window takes in the store (`kind`).
pub const DEDUP_BYTES: &str = "flujo_dedup_memory_bytes";
/// The state of a sink's circuit breaker: 0 closed, 1 half-open, 2 open (`sink`).
pub const CIRCUIT_STATE: &str = "flujo_circuit_state";
/// Time to handle one ingest request, receive to answer (`transport`).
pub const INGEST_DURATION: &str = "flujo_ingest_duration_seconds";
/// Time for a sink to confirm one batch (`sink`).
pub const PUBLISH_DURATION: &str = "flujo_publish_duration_seconds";
/// Time from receive to applied in the store (`kind`).
pub const END_TO_END_DURATION: &str = "flujo_end_to_end_duration_seconds";
/// Time to apply one batch to the store (`kind`).
pub const STORE_APPLY_DURATION: &str = "flujo_store_apply_duration_seconds";
/// Actor restarts by its supervisor (`actor`).
pub const ACTOR_RESTARTS: &str = "flujo_actor_restarts_total";
/// Messages sent to an actor and not yet answered (`actor`).
pub const MAILBOX_DEPTH: &str = "flujo_mailbox_depth";
/// Events admitted into the pipeline and not yet applied (or confirmed by a broker).
pub const INFLIGHT_EVENTS: &str = "flujo_inflight_events";
/// Batches that found the pipeline full and waited for room (then admitted, or
/// refused as backpressure when the wait ended).
pub const ADMISSION_WAITS: &str = "flujo_admission_waits_total";
/// Events published to a source and not yet consumed (`source`).
pub const CONSUMER_LAG: &str = "flujo_consumer_lag_events";
/// Sales applied, by category (`category`).
pub const SALES: &str = "flujo_sales_total";
/// Units sold, by category (`category`).
pub const SALES_QUANTITY: &str = "flujo_sales_quantity_total";
/// Revenue (Σ price × quantity) applied, in cents, by category (`category`).
pub const REVENUE_CENTS: &str = "flujo_sales_revenue_cents_total";
/// Tweets applied, by weather (`weather`).
pub const TWEETS: &str = "flujo_tweets_total";
/// HTTP requests answered (`route`, `status`).
pub const HTTP_REQUESTS: &str = "flujo_http_requests_total";
/// Query API reads served from the read cache.
pub const QUERY_CACHE_HITS: &str = "flujo_query_cache_hits_total";
/// Query API reads that went to the store.
pub const QUERY_CACHE_MISSES: &str = "flujo_query_cache_misses_total";
/// 1 when every dependency is reachable and the process is not shutting down.
pub const READY: &str = "flujo_ready";
/// Requests refused for their credential (`transport`, `reason`: missing, invalid,
/// expired, forbidden).
pub const AUTH_FAILURES: &str = "flujo_auth_failures_total";
/// Requests refused because their client is over its rate limit (`transport`, `scope`).
pub const REQUESTS_LIMITED: &str = "flujo_requests_limited_total";
/// Clients a rate limiter tracks now (`scope`).
pub const RATE_LIMIT_CLIENTS: &str = "flujo_rate_limit_clients";
/// Build information (`version`); always 1.
pub const BUILD_INFO: &str = "flujo_build_info";

/// Buckets for request-scale latencies: sub-millisecond resolution up to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A latency histogram, in seconds.
    Histogram,
}

/// One metric flujo exports: its name, kind and HELP text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricSpec {
    /// The metric name (one of the constants above).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The HELP text `/metrics` shows.
    pub help: &'static str,
}

impl MetricSpec {
    /// The series names Prometheus stores for it: a histogram's `_bucket`, `_sum` and
    /// `_count`, else the name itself.
    pub fn series(&self) -> Vec<String> {
        match self.kind {
            MetricKind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{}{suffix}", self.name))
                .collect(),
            MetricKind::Counter | MetricKind::Gauge => vec![self.name.to_owned()],
        }
    }
}

/// Every metric flujo exports, with its HELP text.
pub const ALL: &[MetricSpec] = &[
    MetricSpec {
        name: CIRCUIT_STATE,
        kind: MetricKind::Gauge,
        help: "Circuit breaker of a sink: 0 closed, 1 half-open, 2 open.",
    },
    MetricSpec {
        name: EVENTS_RECEIVED,
        kind: MetricKind::Counter,
        help: "Events received by a transport, before validation.",
    },
    MetricSpec {
        name: EVENTS_REJECTED,
        kind: MetricKind::Counter,
        help: "Events refused, by reason.",
    },
    MetricSpec {
        name: EVENTS_PUBLISHED,
        kind: MetricKind::Counter,
        help: "Events confirmed by a sink.",
    },
    MetricSpec {
        name: EVENTS_PUBLISH_FAILED,
        kind: MetricKind::Counter,
        help: "Events a sink failed to take.",
    },
    MetricSpec {
        name: EVENTS_CONSUMED,
        kind: MetricKind::Counter,
        help: "Events read from a source.",
    },
    MetricSpec {
        name: EVENTS_APPLIED,
        kind: MetricKind::Counter,
        help: "Events that changed the aggregates.",
    },
    MetricSpec {
        name: EVENTS_DUPLICATE,
        kind: MetricKind::Counter,
        help: "Events skipped because their id was already applied.",
    },
    MetricSpec {
        name: EVENTS_REPLAYED,
        kind: MetricKind::Counter,
        help: "Events skipped because the store's position for their source stream was past them.",
    },
    MetricSpec {
        name: DEDUP_EVICTED,
        kind: MetricKind::Counter,
        help: "Ids forgotten before their dedup window ended because the window was full.",
    },
    MetricSpec {
        name: DEDUP_IDS,
        kind: MetricKind::Gauge,
        help: "Ids remembered in the dedup window.",
    },
    MetricSpec {
        name: DEDUP_WINDOW,
        kind: MetricKind::Gauge,
        help: "How far back the dedup window really reaches, in seconds.",
    },
    MetricSpec {
        name: DEDUP_BYTES,
        kind: MetricKind::Gauge,
        help: "Bytes the dedup window takes in the store.",
    },
    MetricSpec {
        name: INGEST_DURATION,
        kind: MetricKind::Histogram,
        help: "Time to handle one ingest request.",
    },
    MetricSpec {
        name: PUBLISH_DURATION,
        kind: MetricKind::Histogram,
        help: "Time for a sink to confirm one batch.",
    },
    MetricSpec {
        name: END_TO_END_DURATION,
        kind: MetricKind::Histogram,
        help: "Time from receive to applied.",
    },
    MetricSpec {
        name: STORE_APPLY_DURATION,
        kind: MetricKind::Histogram,
        help: "Time to apply one batch to the store.",
    },
    MetricSpec {
        name: ACTOR_RESTARTS,
        kind: MetricKind::Counter,
        help: "Actor restarts by its supervisor.",
    },
    MetricSpec {
        name: MAILBOX_DEPTH,
        kind: MetricKind::Gauge,
        help: "Messages sent to an actor and not yet answered.",
    },
    MetricSpec {
        name: INFLIGHT_EVENTS,
        kind: MetricKind::Gauge,
        help: "Events admitted and not yet applied or confirmed.",
    },
    MetricSpec {
        name: ADMISSION_WAITS,
        kind: MetricKind::Counter,
        help: "Batches that found the pipeline full and waited for room.",
    },
    MetricSpec {
        name: CONSUMER_LAG,
        kind: MetricKind::Gauge,
        help: "Events published to a source and not yet consumed.",
    },
    MetricSpec {
        name: SALES,
        kind: MetricKind::Counter,
        help: "Sales applied, by category.",
    },
    MetricSpec {
        name: SALES_QUANTITY,
        kind: MetricKind::Counter,
        help: "Units sold, by category.",
    },
    MetricSpec {
        name: REVENUE_CENTS,
        kind: MetricKind::Counter,
        help: "Revenue (price times quantity) applied, in cents, by category.",
    },
    MetricSpec {
        name: TWEETS,
        kind: MetricKind::Counter,
        help: "Tweets applied, by weather.",
    },
    MetricSpec {
        name: HTTP_REQUESTS,
        kind: MetricKind::Counter,
        help: "HTTP requests answered, by route and status.",
    },
    MetricSpec {
        name: QUERY_CACHE_HITS,
        kind: MetricKind::Counter,
        help: "Query reads served from the read cache.",
    },
    MetricSpec {
        name: QUERY_CACHE_MISSES,
        kind: MetricKind::Counter,
        help: "Query reads that went to the store.",
    },
    MetricSpec {
        name: READY,
        kind: MetricKind::Gauge,
        help: "1 when ready to serve, 0 otherwise.",
    },
    MetricSpec {
        name: AUTH_FAILURES,
        kind: MetricKind::Counter,
        help: "Requests refused for their credential, by reason.",
    },
    MetricSpec {
        name: REQUESTS_LIMITED,
        kind: MetricKind::Counter,
        help: "Requests refused because their client is over its rate limit.",
    },
    MetricSpec {
        name: RATE_LIMIT_CLIENTS,
        kind: MetricKind::Gauge,
        help: "Clients a rate limiter tracks.",
    },
    MetricSpec {
        name: BUILD_INFO,
        kind: MetricKind::Gauge,
        help: "Build information; always 1.",
    },
];

/// Why an event can be refused: the `reason` label of [`EVENTS_REJECTED`].
pub const REJECT_REASONS: [&str; 5] = [
    "invalid",
    "backpressure",
    "unavailable",
    "too_large",
    "shutting_down",
];

/// The `reason` of [`EVENTS_REJECTED`] for a broker message that is not an event.
pub const UNDECODABLE: &str = "undecodable";

/// Why a credential can be refused: the `reason` label of [`AUTH_FAILURES`].
pub const AUTH_FAILURE_REASONS: [&str; 4] = ["missing", "invalid", "expired", "forbidden"];

/// What one process does, so that the series it will ever write are exported from
/// start-up at zero: a dashboard on a fresh deployment shows 0, not "no data".
#[derive(Debug, Clone, Default)]
pub struct Exports {
    /// Transports this process ingests on (receiver role).
    pub transports: Vec<&'static str>,
    /// Sinks this process publishes to, per kind (router role).
    pub sinks: Vec<(Kind, &'static str)>,
    /// Sources this process consumes from, per kind (consumer role).
    pub sources: Vec<(Kind, &'static str)>,
    /// Sources that read one queue per kind (RabbitMQ): their lag is reported per
    /// `kind`, and undecodable messages they drop are counted in
    /// [`EVENTS_REJECTED`] with `reason="undecodable"` and the source as `transport`.
    pub per_kind_sources: Vec<&'static str>,
    /// Actors whose mailbox depth this process reports.
    pub mailboxes: Vec<&'static str>,
    /// Supervised actors whose restarts this process counts.
    pub supervised: Vec<&'static str>,
    /// HTTP routes this process serves, with the statuses each can answer.
    pub http: Vec<(String, Vec<u16>)>,
    /// `(transport, scope)` pairs the gateway guards. Their authentication
    /// failures (per transport), rate-limit refusals (per pair) and tracked clients
    /// (per scope) are exported whether or not authentication and rate limits are
    /// on: off, they stay at 0, and the dashboards' panels show 0, not "no data".
    pub guarded: Vec<(&'static str, &'static str)>,
}

impl Exports {
    /// Writes every series of this process at zero (0 is added to counters and
    /// gauges, histograms are registered), so `/metrics` lists them all from
    /// start-up with their known label values. Adding 0 never changes a value
    /// already written, so this may run after the actors started.
    pub fn register(&self) {
        for kind in Kind::ALL {
            let k = kind.as_str();
            for &transport in &self.transports {
                metrics::counter!(EVENTS_RECEIVED, "kind" => k, "transport" => transport)
                    .increment(0);
                for reason in REJECT_REASONS {
                    metrics::counter!(EVENTS_REJECTED, "kind" => k, "transport" => transport, "reason" => reason)
                        .increment(0);
                }
            }
        }
        for &(kind, sink) in &self.sinks {
            let k = kind.as_str();
            metrics::counter!(EVENTS_PUBLISHED, "kind" => k, "sink" => sink).increment(0);
            metrics::counter!(EVENTS_PUBLISH_FAILED, "kind" => k, "sink" => sink).increment(0);
        }
        let sinks: BTreeSet<&str> = self.sinks.iter().map(|&(_, s)| s).collect();
        for sink in sinks {
            let _registered = metrics::histogram!(PUBLISH_DURATION, "sink" => sink);
            // Registered, not set: a breaker that opened already keeps its state.
            metrics::gauge!(CIRCUIT_STATE, "sink" => sink).increment(0.0);
        }
        for &(kind, source) in &self.sources {
            metrics::counter!(EVENTS_CONSUMED, "kind" => kind.as_str(), "source" => source)
                .increment(0);
        }
        let sources: BTreeSet<&str> = self.sources.iter().map(|&(_, s)| s).collect();
        for source in sources {
            if !self.per_kind_sources.contains(&source) {
                metrics::gauge!(CONSUMER_LAG, "source" => source).increment(0.0);
            }
        }
        for &(kind, source) in &self.sources {
            if self.per_kind_sources.contains(&source) {
                let k = kind.as_str();
                metrics::gauge!(CONSUMER_LAG, "source" => source, "kind" => k).increment(0.0);
                metrics::counter!(EVENTS_REJECTED, "kind" => k, "transport" => source, "reason" => UNDECODABLE)
                    .increment(0);
            }
        }
        let consumed = Kind::ALL
            .into_iter()
            .filter(|kind| self.sources.iter().any(|(k, _)| k == kind));
        for kind in consumed {
            let k = kind.as_str();
            for counter in [
                EVENTS_APPLIED,
                EVENTS_DUPLICATE,
                EVENTS_REPLAYED,
                DEDUP_EVICTED,
            ] {
                metrics::counter!(counter, "kind" => k).increment(0);
            }
            for gauge in [DEDUP_IDS, DEDUP_WINDOW, DEDUP_BYTES] {
                metrics::gauge!(gauge, "kind" => k).increment(0.0);
            }
            let _registered = metrics::histogram!(END_TO_END_DURATION, "kind" => k);
            let _registered = metrics::histogram!(STORE_APPLY_DURATION, "kind" => k);
            match kind {
                Kind::Sale => {
                    for category in Category::ALL {
                        for counter in [SALES, SALES_QUANTITY, REVENUE_CENTS] {
                            metrics::counter!(counter, "category" => category.as_str())
                                .increment(0);
                        }
                    }
                }
                Kind::Tweet => {
                    for weather in Weather::ALL {
                        metrics::counter!(TWEETS, "weather" => weather.as_str()).increment(0);
                    }
                }
            }
        }
        for &transport in &self.transports {
            let _registered = metrics::histogram!(INGEST_DURATION, "transport" => transport);
        }
        for &actor in &self.mailboxes {
            metrics::gauge!(MAILBOX_DEPTH, "actor" => actor).increment(0.0);
        }
        for &actor in &self.supervised {
            metrics::counter!(ACTOR_RESTARTS, "actor" => actor).increment(0);
        }
        for (route, statuses) in &self.http {
            for status in statuses {
                metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "status" => status.to_string())
                    .increment(0);
            }
        }
        let guarded: BTreeSet<&str> = self.guarded.iter().map(|&(t, _)| t).collect();
        for transport in guarded {
            for reason in AUTH_FAILURE_REASONS {
                metrics::counter!(AUTH_FAILURES, "transport" => transport, "reason" => reason)
                    .increment(0);
            }
        }
        for &(transport, scope) in &self.guarded {
            metrics::counter!(REQUESTS_LIMITED, "transport" => transport, "scope" => scope)
                .increment(0);
        }
        let scopes: BTreeSet<&str> = self.guarded.iter().map(|&(_, s)| s).collect();
        for scope in scopes {
            metrics::gauge!(RATE_LIMIT_CLIENTS, "scope" => scope).increment(0.0);
        }
        metrics::gauge!(INFLIGHT_EVENTS).increment(0.0);
        metrics::counter!(ADMISSION_WAITS).increment(0);
        metrics::counter!(QUERY_CACHE_HITS).increment(0);
        metrics::counter!(QUERY_CACHE_MISSES).increment(0);
        metrics::gauge!(READY).increment(0.0);
    }
}

/// Registers HELP text and units for every metric of [`ALL`].
pub fn describe() {
    for metric in ALL {
        match metric.kind {
            MetricKind::Counter => describe_counter!(metric.name, metric.help),
            MetricKind::Gauge => describe_gauge!(metric.name, metric.help),
            MetricKind::Histogram => {
                describe_histogram!(metric.name, Unit::Seconds, metric.help)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_metric_is_listed_once_with_help() {
        let names: HashSet<&str> = ALL.iter().map(|m| m.name).collect();
        assert_eq!(names.len(), ALL.len(), "a metric is listed twice");
        assert!(ALL
            .iter()
            .all(|m| m.name.starts_with("flujo_") && !m.help.is_empty()));
        for name in [EVENTS_RECEIVED, INGEST_DURATION, MAILBOX_DEPTH, BUILD_INFO] {
            assert!(names.contains(name), "{name} missing from ALL");
        }
        let ingest = ALL
            .iter()
            .find(|m| m.name == INGEST_DURATION)
            .map(MetricSpec::series);
        assert_eq!(
            ingest.unwrap_or_default(),
            [
                "flujo_ingest_duration_seconds_bucket",
                "flujo_ingest_duration_seconds_sum",
                "flujo_ingest_duration_seconds_count"
            ]
        );
    }
}
