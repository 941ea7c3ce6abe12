//! Consumer lag, from librdkafka's statistics: each source computes its own, and the
//! process-wide sum over every live Kafka source is the
//! `flujo_consumer_lag_events{source="kafka"}` gauge.

use super::NAME;
use flujo_actors::metrics::CONSUMER_LAG;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static LAG_SLOTS: AtomicU64 = AtomicU64::new(0);
static LAGS: Mutex<BTreeMap<u64, i64>> = Mutex::new(BTreeMap::new());

/// A fresh slot for one source's lag.
pub(super) fn new_slot() -> u64 {
    LAG_SLOTS.fetch_add(1, Ordering::Relaxed)
}

/// Records the lag of one source (`None` = the source is gone) and publishes the
/// sum over all sources as `flujo_consumer_lag_events{source="kafka"}`.
pub(super) fn report_lag(slot: u64, lag: Option<i64>) {
    let mut lags = LAGS.lock().unwrap_or_else(|p| p.into_inner());
    match lag {
        Some(lag) => lags.insert(slot, lag),
        None => lags.remove(&slot),
    };
    let total: i64 = lags.values().sum();
    metrics::gauge!(CONSUMER_LAG, "source" => NAME).set(total as f64);
}

/// The part of librdkafka's statistics JSON the lag needs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Stats {
    topics: HashMap<String, TopicStats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TopicStats {
    partitions: HashMap<String, PartitionStats>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct PartitionStats {
    partition: i32,
    desired: bool,
    hi_offset: i64,
    lo_offset: i64,
    app_offset: i64,
    committed_offset: i64,
}

impl Default for PartitionStats {
    fn default() -> Self {
        PartitionStats {
            partition: -1,
            desired: false,
            hi_offset: -1,
            lo_offset: -1,
            app_offset: -1,
            committed_offset: -1,
        }
    }
}

/// Σ(high watermark − position) over the partitions this consumer is assigned. The
/// position is the offset after the last message handed to the application, else
/// the committed offset, else the low watermark (where `earliest` starts).
pub(super) fn lag_of(stats: &Stats, topic: &str) -> Option<i64> {
    let partitions = &stats.topics.get(topic)?.partitions;
    let lag = partitions
        .values()
        .filter(|p| p.partition >= 0 && p.desired && p.hi_offset >= 0)
        .filter_map(|p| {
            let position = [p.app_offset, p.committed_offset, p.lo_offset]
                .into_iter()
                .find(|&o| o >= 0)?;
            Some((p.hi_offset - position).max(0))
        })
        .sum();
    Some(lag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_sums_assigned_partitions() {
        let stats: Stats = serde_json::from_str(
            r#"{"topics":{"s":{"partitions":{
                "0":{"partition":0,"desired":true,"hi_offset":10,"lo_offset":0,"app_offset":4,"committed_offset":2},
                "1":{"partition":1,"desired":true,"hi_offset":7,"lo_offset":0,"app_offset":-1001,"committed_offset":5},
                "2":{"partition":2,"desired":true,"hi_offset":3,"lo_offset":1,"app_offset":-1001,"committed_offset":-1001},
                "3":{"partition":3,"desired":false,"hi_offset":99,"lo_offset":0,"app_offset":0,"committed_offset":0},
                "-1":{"partition":-1,"desired":false,"hi_offset":-1}
            }}}}"#,
        )
        .expect("stats");
        assert_eq!(lag_of(&stats, "s"), Some(6 + 2 + 2));
        assert_eq!(lag_of(&stats, "other"), None);
    }
}
