//! Every metric flujo exports: names in one place, descriptions registered at start.
//!
//! Labels: `kind` (sale|tweet), `transport` (http|grpc|tcp), `sink`/`source`
//! (memory|kafka|rabbitmq), `actor`, `reason`, `category`, `weather`.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

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
/// Build information (`version`); always 1.
pub const BUILD_INFO: &str = "flujo_build_info";

/// Buckets for request-scale latencies: sub-millisecond resolution up to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Registers HELP text and units for every metric above.
pub fn describe() {
    describe_counter!(
        EVENTS_RECEIVED,
        "Events received by a transport, before validation."
    );
    describe_counter!(EVENTS_REJECTED, "Events refused, by reason.");
    describe_counter!(EVENTS_PUBLISHED, "Events confirmed by a sink.");
    describe_counter!(EVENTS_PUBLISH_FAILED, "Events a sink failed to take.");
    describe_counter!(EVENTS_CONSUMED, "Events read from a source.");
    describe_counter!(EVENTS_APPLIED, "Events that changed the aggregates.");
    describe_counter!(
        EVENTS_DUPLICATE,
        "Events skipped because their id was already applied."
    );
    describe_counter!(
        DEDUP_EVICTED,
        "Ids forgotten before their dedup window ended because the window was full."
    );
    describe_gauge!(DEDUP_IDS, "Ids remembered in the dedup window.");
    describe_gauge!(
        DEDUP_WINDOW,
        Unit::Seconds,
        "How far back the dedup window really reaches."
    );
    describe_gauge!(
        DEDUP_BYTES,
        Unit::Bytes,
        "Bytes the dedup window takes in the store."
    );
    describe_histogram!(
        INGEST_DURATION,
        Unit::Seconds,
        "Time to handle one ingest request."
    );
    describe_histogram!(
        PUBLISH_DURATION,
        Unit::Seconds,
        "Time for a sink to confirm one batch."
    );
    describe_histogram!(
        END_TO_END_DURATION,
        Unit::Seconds,
        "Time from receive to applied."
    );
    describe_histogram!(
        STORE_APPLY_DURATION,
        Unit::Seconds,
        "Time to apply one batch to the store."
    );
    describe_counter!(ACTOR_RESTARTS, "Actor restarts by its supervisor.");
    describe_gauge!(
        MAILBOX_DEPTH,
        "Messages sent to an actor and not yet answered."
    );
    describe_gauge!(
        INFLIGHT_EVENTS,
        "Events admitted and not yet applied or confirmed."
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Events published to a source and not yet consumed."
    );
    describe_counter!(SALES, "Sales applied, by category.");
    describe_counter!(SALES_QUANTITY, "Units sold, by category.");
    describe_counter!(
        REVENUE_CENTS,
        "Revenue (price times quantity) applied, in cents, by category."
    );
    describe_counter!(TWEETS, "Tweets applied, by weather.");
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route and status."
    );
    describe_counter!(QUERY_CACHE_HITS, "Query reads served from the read cache.");
    describe_counter!(QUERY_CACHE_MISSES, "Query reads that went to the store.");
    describe_gauge!(READY, "1 when ready to serve, 0 otherwise.");
    describe_gauge!(BUILD_INFO, "Build information; always 1.");
}
