//! The embedded components: the in-process memory bus and the in-memory KPI store
//! (their implementations live in `flujo-actors`; this is the registry's glue).

use flujo_actors::bus::{memory_bus, MemorySource};
use flujo_actors::publisher::Sink;
use flujo_actors::store::{MemoryStore, Store};
use std::sync::Arc;
use std::time::Duration;

/// A memory bus holding at most `capacity` batches: its sink, and the source the
/// consumer of the same process reads.
pub fn bus(capacity: usize) -> (Arc<dyn Sink>, MemorySource) {
    let (sink, source) = memory_bus(capacity);
    (Arc::new(sink), source)
}

/// An in-memory KPI store remembering applied ids for `dedup_window`, at most
/// `max_ids` of each kind.
pub fn store(dedup_window: Duration, max_ids: usize) -> Arc<dyn Store> {
    Arc::new(MemoryStore::with_max_ids(dedup_window, max_ids))
}
