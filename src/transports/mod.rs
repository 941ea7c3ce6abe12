//! The transports: how events come in and how a receiver-only process reaches its
//! router. Each one decodes its wire format and hands the events to the actors'
//! `ReceiverPool`; none of them validates an event itself.
//!
//! # Layout
//! - [`http`]: axum ingest (JSON, NDJSON), the query API with its read cache, and
//!   `/metrics`, `/healthz`, `/readyz`.
//! - [`grpc`]: tonic `flujo.v1.Ingest` (typed messages, validated by the same rules
//!   as JSON), health and reflection.
//! - [`tcp`]: newline-delimited JSON ingest and `ping` → `pong`.
//! - [`forward`]: the router of a receiver-only process, forwarding batches to the
//!   router role over gRPC.
//! - [`tls`]: TLS of the three listeners and of flujo's clients of them.

pub mod forward;
pub mod grpc;
pub mod http;
pub mod tcp;
pub mod tls;
