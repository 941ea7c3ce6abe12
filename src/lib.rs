//! # flujo
//!
//! One binary that runs a whole event pipeline: ingest → route → publish → consume
//! → aggregate live KPIs, with metrics and health. The actors live in the
//! `flujo-actors` crate; this crate wires them into a process.
//!
//! # Layout
//! - [`config`]: `flujo.toml` < `FLUJO__SECTION__KEY` < flags, checked and resolved
//!   into a [`config::Plan`] (roles, routes, store, ack mode) at start.
//! - [`roles`]: which actors a process starts; the ordered drain at shutdown.
//! - [`transports`]: how events come in: `http/` (axum ingest, query API with read
//!   cache, metrics and health), `grpc` (tonic `flujo.v1.Ingest`, health,
//!   reflection), `tcp` (newline-delimited ingest, `ping` → `pong`), `forward` (a
//!   receiver-only process forwards batches to the router over gRPC).
//! - [`components`]: what flujo talks to, one folder each, and the registry that opens
//!   them: `kafka/` (topics, `KafkaSink`, `KafkaSource` committing after store),
//!   `rabbitmq/` (confirmed `RabbitSink`, acked `RabbitSource`), `valkey/` (the KPI
//!   store: one atomic Lua call per batch; key schema), `memory/`, and `wire` (the
//!   message format both brokers share).
//! - [`gateway`]: authentication (JWT, API keys, scopes) and per-client rate
//!   limits, checked by every transport; off by default.
//! - [`readiness`]: the `/readyz` probe trait and the remote router's probe.
//! - [`shutdown`]: the shutdown signal and its deadline.
//! - [`telemetry`]: logs (tracing) and the Prometheus recorder.
//! - [`ping`]: `flujo ping`, stimulus → response latency per transport.
//! - [`validate`]: `flujo validate`, reaching every dependency the roles need.
//! - [`exit_code`]: the exit codes of every command.
//!
//! `flujo loadgen` lives in its own crate, `flujo-loadgen` (`loadgen/`); the
//! generated gRPC code in `flujo-proto` (`proto/`).

pub mod components;
pub mod config;
pub mod exit_code;
pub mod gateway;
pub mod ping;
pub mod readiness;
pub mod roles;
pub mod shutdown;
pub mod telemetry;
pub mod transports;
pub mod validate;
