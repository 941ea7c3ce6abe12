//! # flujo
//!
//! One binary that runs a whole event pipeline: ingest → route → publish → consume
//! → aggregate live KPIs, with metrics and health. The actors live in the
//! `flujo-actors` crate; this crate wires them into a process.
//!
//! # Layout
//! - [`config`]: `flujo.toml` < `FLUJO__SECTION__KEY` < flags, checked at start.
//! - [`roles`]: which actors a process starts; the ordered drain at shutdown.
//! - [`transports`]: how events come in: `http/` (axum ingest, query API with read
//!   cache, metrics and health), `grpc` (tonic `flujo.v1.Ingest`, health,
//!   reflection), `tcp` (newline-delimited ingest, `ping` → `pong`), `forward` (a
//!   receiver-only process forwards batches to the router over gRPC).
//! - [`kafka`]: the Kafka bus: topic creation, `KafkaSink`, `KafkaSource` (commit after store).
//! - [`rabbitmq`]: RabbitMQ bus: confirmed publishing (`RabbitSink`), acked consuming (`RabbitSource`).
//! - [`sinks`]: opens the sinks, sources and store the configuration names.
//! - [`readiness`]: the dependency checks behind `/readyz`.
//! - [`shutdown`]: the shutdown signal and its deadline.
//! - [`telemetry`]: logs (tracing) and the Prometheus recorder.
//! - [`ping`]: `flujo ping`, stimulus → response latency per transport.
//! - [`valkey`]: the Valkey KPI store (one atomic Lua call per batch; key schema).

pub mod config;
pub mod kafka;
pub mod ping;
pub mod rabbitmq;
pub mod readiness;
pub mod roles;
pub mod shutdown;
pub mod sinks;
pub mod telemetry;
pub mod transports;
pub mod valkey;
