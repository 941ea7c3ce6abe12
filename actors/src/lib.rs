//! # flujo-actors
//!
//! The supervised actors of flujo's pipeline and the seams the adapters plug into.
//!
//! ```text
//! transport ─▶ receiver ─▶ router ─▶ publisher ─▶ (sink ~ source) ─▶ consumer ─▶ aggregator ─▶ store
//! ```
//!
//! # Layout
//! - [`event`]: Sale and Tweet: the rules (written once), JSON parsing with aliases,
//!   typed raw events for gRPC, canonical JSON.
//! - [`messages`]: the messages between actors and the `Batch` they carry.
//! - [`mailbox`]: each actor's mailbox depth, counted by the messages themselves.
//! - [`admission`]: the bound on events in flight (a batch waits a bounded time
//!   for room in a full pipeline, then is refused).
//! - [`receiver`]: validates, stamps, admits and routes; `ReceiverPool` spreads load.
//! - [`router`]: fans each batch out to the publishers of its kind.
//! - [`publisher`]: one per sink; the `Sink` trait.
//! - [`breaker`]: the circuit breaker of each sink.
//! - [`bus`]: the in-process memory bus (a `Sink` and a `Source`).
//! - [`consumer`]: one per source; the `Source` trait; commits only after store.
//! - [`dedup`]: the bounded id window (128-bit hashes, capped, evictions counted).
//! - [`aggregator`]: applies batches to the store, exactly once per event id.
//! - [`store`]: the `Store` trait, the query answer types and `MemoryStore`.
//! - [`supervision`]: restart counting shared by the actors.
//! - [`backoff`]: the one retry policy (exponential, jittered) used everywhere.
//! - [`metrics`]: every metric name and its description.

pub mod admission;
pub mod aggregator;
pub mod backoff;
pub mod breaker;
pub mod bus;
pub mod consumer;
pub mod dedup;
pub mod event;
pub mod mailbox;
pub mod messages;
pub mod metrics;
pub mod publisher;
pub mod receiver;
pub mod router;
pub mod store;
pub mod supervision;
