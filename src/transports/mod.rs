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

use std::time::Duration;
use tokio::time::Instant;

/// How long before a transport's request deadline the pipeline gives its answer
/// (at most a tenth of the deadline), so that the answer, with the ids of an
/// unknown outcome, is written before the transport cuts the request.
const ANSWER_MARGIN: Duration = Duration::from_millis(100);

/// When the pipeline must answer a request (from its arrival and its deadline),
/// set by the transport on the request: a durable ingest still unconfirmed then is
/// answered as an unknown outcome with its ids.
#[derive(Debug, Clone, Copy)]
pub struct AnswerBy(pub Instant);

/// When a request that arrived at `arrived`, with `deadline` to be answered, must
/// have its answer from the pipeline ([`flujo_actors::receiver::ReceiverPool::answering_by`]).
pub fn answer_by(arrived: Instant, deadline: Duration) -> Instant {
    arrived + deadline - ANSWER_MARGIN.min(deadline / 10)
}
