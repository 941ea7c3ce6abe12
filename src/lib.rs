//! # flujo
//!
//! One binary that runs a whole event pipeline: ingest → route → publish → consume
//! → aggregate live KPIs, with metrics and health. The actors live in the
//! `flujo-actors` crate; this crate wires them into a process.
//!
//! # Layout
//! - [`config`]: `flujo.toml` < `FLUJO__SECTION__KEY` < flags, checked at start.
//! - [`roles`]: which actors a process starts; the ordered drain at shutdown.
//! - [`http`]: axum ingest, query API (with read cache), metrics and health.
//! - [`grpc`]: tonic `flujo.v1.Ingest`, health and reflection.
//! - [`tcp`]: newline-delimited TCP ingest and `ping` → `pong`.
//! - [`shutdown`]: the shutdown signal and its deadline.
//! - [`telemetry`]: logs (tracing) and the Prometheus recorder.
//! - [`ping`]: `flujo ping`, stimulus → response latency per transport.
//! - [`loadgen`]: `flujo loadgen`, open-model load with HDR latency and `--verify`.

pub mod config;
pub mod grpc;
pub mod http;
pub mod loadgen;
pub mod ping;
pub mod roles;
pub mod shutdown;
pub mod tcp;
pub mod telemetry;
