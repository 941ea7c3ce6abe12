//! The TCP interface: newline-delimited, one answer line per input line, in order.
//!
//! - `ping` → `pong` (the latency challenge's stimulus → response);
//! - a JSON event with `"kind": "sale"|"tweet"` → `ok <id>` or `err <reason>`
//!   (`err unknown id="<id>": ...` when the outcome is unknown: resend with that id;
//!   `err deadline: ...` past `deadlines.request_ms`);
//! - a line over the limit (64 KiB) → `err ...`, and the connection goes on;
//! - `auth <token>` (a JWT or an API key) → `ok auth`, `err unauthenticated: …` or
//!   `err forbidden: …` (no `ingest` scope). With authentication on, every line
//!   but `ping` and `auth` is answered `err unauthenticated: …` until one `auth`
//!   succeeds; the connection stays open. With a rate limit, each event line counts
//!   as one request: over it, the line is answered `err busy: rate limit …`.
//!
//! Lines of one connection are handled concurrently (up to a window) but answered in
//! the order they came, so a client may pipeline. The lines a connection has ready
//! are read together and coalesced: each run of events of one kind goes through the
//! pipeline as one batch, in which a bad event is refused alone.
//!
//! With `tcp.tls_cert_file` and `tcp.tls_key_file` the same protocol runs inside TLS
//! (a client that does not complete the handshake is closed unanswered).

use crate::gateway::{
    client_key, record_auth_failure, AuthError, Gateway, Identity, Refusal, Scope,
};
use crate::shutdown::Shutdown;
use crate::transports::{answer_by, tls};
use flujo_actors::event::line::{one_line, parse_line, Line, LineSplitter, Parsed};
use flujo_actors::event::{Kind, RawBatch};
use flujo_actors::messages::{IngestError, Transport};
use flujo_actors::metrics::INGEST_DURATION;
use flujo_actors::receiver::ReceiverPool;
use futures::future::{self, BoxFuture};
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use serde_json::Value;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

/// Lines of one connection in flight (read, not yet answered) at most.
const PIPELINE_WINDOW: usize = 4_096;
/// Bytes of lines of one connection in flight at most (plus one line).
const PIPELINE_BYTES: usize = 1 << 20;
/// Event lines coalesced into one batch at most.
const COALESCE_MAX: usize = 1_000;

/// Reads lines of at most `max` bytes without ever holding more than that (see
/// [`LineSplitter`]). Cancel-safe: a partial line stays in the reader, not in the
/// future.
struct LineReader<R> {
    inner: BufReader<R>,
    splitter: LineSplitter,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner: BufReader::new(inner),
            splitter: LineSplitter::new(max),
        }
    }

    async fn next(&mut self) -> io::Result<Option<Line>> {
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                return Ok(self.splitter.end());
            }
            let (taken, line) = self.splitter.push(buf);
            self.inner.consume(taken);
            if line.is_some() {
                return Ok(line);
            }
        }
    }
}

fn refusal(e: IngestError) -> String {
    match e {
        IngestError::Invalid(v) => format!("err {}", v.error.message),
        IngestError::Backpressure(m) => format!("err busy: {m}"),
        IngestError::Unavailable(m) => format!("err unavailable: {m}"),
        IngestError::TooLarge(m) => format!("err {m}"),
        IngestError::CircuitOpen {
            message,
            retry_after_secs,
        } => format!("err unavailable retry-after={retry_after_secs}: {message}"),
        IngestError::OutcomeUnknown { reason, ids, .. } => one_line(format!(
            "err unknown id={}: outcome unknown ({reason}); resend this event with this id",
            serde_json::Value::from(ids.concat())
        )),
    }
}

const TRANSPORT: &str = Transport::Tcp.as_str();

/// Who is on a connection, as far as the gateway is concerned.
struct Session {
    gateway: Arc<Gateway>,
    peer: Option<IpAddr>,
    /// Whether event lines are taken: authentication is off, or an `auth` line
    /// succeeded.
    authenticated: bool,
    identity: Option<Identity>,
}

/// The answer to a line over the client's rate limit.
fn busy(retry_after_secs: u64) -> String {
    format!(
        "err busy: rate limit of ingest requests for this client reached; retry in {retry_after_secs} s"
    )
}

impl Session {
    fn new(gateway: Arc<Gateway>, peer: Option<IpAddr>) -> Self {
        Session {
            authenticated: !gateway.auth_enabled(),
            gateway,
            peer,
            identity: None,
        }
    }

    /// The answer to `auth <token>`.
    fn authenticate(&mut self, token: &str) -> String {
        if !self.gateway.auth_enabled() {
            return "ok auth".to_owned();
        }
        let token = token.trim();
        let result = if token.is_empty() {
            let e = AuthError::Invalid("send `auth <token>`".into());
            record_auth_failure(TRANSPORT, &e);
            Err(e)
        } else {
            self.gateway
                .authenticate(TRANSPORT, Scope::Ingest, Some(token))
        };
        match result {
            Ok(identity) => {
                self.authenticated = true;
                self.identity = identity;
                "ok auth".to_owned()
            }
            Err(e) => {
                self.authenticated = false;
                self.identity = None;
                let word = if e.is_forbidden() {
                    "forbidden"
                } else {
                    "unauthenticated"
                };
                let answer = one_line(format!("err {word}: {e}"));
                match self
                    .gateway
                    .refuse_auth(TRANSPORT, Scope::Ingest, self.peer, e)
                {
                    Refusal::Limited {
                        retry_after_secs, ..
                    } => busy(retry_after_secs),
                    Refusal::Auth(_) => answer,
                }
            }
        }
    }

    /// `None` when an event line may go on, else its answer.
    fn admit(&self) -> Option<String> {
        if !self.authenticated {
            record_auth_failure(TRANSPORT, &AuthError::Missing);
            return Some("err unauthenticated: send `auth <token>` first".to_owned());
        }
        self.gateway.limiter(Scope::Ingest)?;
        let client = client_key(self.identity.as_ref(), self.peer);
        match self.gateway.limit(TRANSPORT, Scope::Ingest, &client) {
            Ok(_) => None,
            Err(Refusal::Limited {
                retry_after_secs, ..
            }) => Some(busy(retry_after_secs)),
            Err(Refusal::Auth(e)) => Some(one_line(format!("err unauthenticated: {e}"))),
        }
    }
}

/// What `line` is on this connection: the answer to an `auth` line, a refusal
/// when the session may not send events (not authenticated, over its rate limit),
/// or else what [`parse_line`] makes of it. `ping` and too-long lines are answered
/// whatever the session.
fn parse_gated(line: Line, max: usize, session: &mut Session) -> Parsed {
    if let Line::Text(text) = &line {
        let trimmed = text.trim_ascii();
        if let Some(token) = trimmed
            .strip_prefix(b"auth ")
            .or((trimmed == b"auth").then_some(&b""[..]))
        {
            return Parsed::Answer(session.authenticate(&String::from_utf8_lossy(token)));
        }
        if trimmed != b"ping" {
            if let Some(refused) = session.admit() {
                return Parsed::Answer(refused);
            }
        }
    }
    parse_line(line, max)
}

/// The answers to lines read together, in order. Each run of events of one kind
/// goes to the receiver as one batch; its runs are sent in order (`join_all` polls
/// them in order), so the events of a connection keep theirs.
fn handle_lines(
    lines: Vec<Parsed>,
    receivers: &ReceiverPool,
    deadline: Duration,
) -> BoxFuture<'static, Vec<String>> {
    let mut runs: Vec<BoxFuture<'static, Vec<String>>> = Vec::new();
    let mut lines = lines.into_iter().peekable();
    while let Some(line) = lines.next() {
        match line {
            Parsed::Answer(a) => runs.push(future::ready(vec![a]).boxed()),
            Parsed::Event(kind, value) => {
                let mut objects = vec![value];
                while let Some(Parsed::Event(_, value)) =
                    lines.next_if(|l| matches!(l, Parsed::Event(k, _) if *k == kind))
                {
                    objects.push(value);
                }
                runs.push(ingest_run(receivers.clone(), kind, objects, deadline).boxed());
            }
        }
    }
    async move { future::join_all(runs).await.concat() }.boxed()
}

/// The answers to a run of event lines of one kind, ingested as one batch in which
/// a bad event is refused alone, within `deadline`: the pipeline answers just
/// before it (an unconfirmed event `err unknown id=...`, with its id); only if it
/// does not is each line answered `err deadline ...`.
async fn ingest_run(
    receivers: ReceiverPool,
    kind: Kind,
    objects: Vec<Value>,
    deadline: Duration,
) -> Vec<String> {
    let started = Instant::now();
    let arrived = tokio::time::Instant::now();
    let n = objects.len();
    let receivers = receivers.answering_by(answer_by(arrived, deadline));
    let ingest = receivers.ingest_each(RawBatch::Json { kind, objects }, Transport::Tcp);
    let Ok(outcomes) = tokio::time::timeout_at(arrived + deadline, ingest).await else {
        let line = format!(
            "err deadline: no answer within {} ms (deadlines.request_ms); the outcome is unknown, resend with an id",
            deadline.as_millis()
        );
        return vec![line; n];
    };
    metrics::histogram!(INGEST_DURATION, "transport" => Transport::Tcp.as_str())
        .record(started.elapsed().as_secs_f64());
    outcomes
        .into_iter()
        .map(|one| match one {
            Ok(id) => format!("ok {id}"),
            Err(e) => one_line(refusal(e)),
        })
        .collect()
}

/// Lines read but not yet answered on one connection, and their bytes: reading
/// pauses while either is at its bound.
#[derive(Debug, Default)]
struct InFlight {
    lines: usize,
    bytes: usize,
}

impl InFlight {
    fn has_room(&self) -> bool {
        self.lines < PIPELINE_WINDOW && self.bytes < PIPELINE_BYTES
    }
}

/// How much of a connection is held at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest line (bytes); a longer one is refused and skipped.
    pub max_line: usize,
    /// Most events coalesced into one batch (the pipeline's batch limit, so a
    /// coalesced run is never refused as too large; 1,000 at most).
    pub max_batch: usize,
    /// Longest time to answer a batch of lines (`deadlines.request_ms`).
    pub deadline: Duration,
}

/// Serves one connection (read from `read`, answered on `write`) until the client
/// closes it or shutdown begins; answers every line read before closing. The lines
/// a connection has ready are read together (up to `limits.max_batch`) and their
/// events coalesced.
async fn serve_connection(
    (read, write): (impl AsyncRead + Unpin, impl AsyncWrite + Unpin),
    peer: IpAddr,
    receivers: ReceiverPool,
    limits: Limits,
    gateway: Arc<Gateway>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let mut session = Session::new(gateway, Some(peer));
    let Limits {
        max_line,
        max_batch,
        deadline,
    } = limits;
    let coalesce = max_batch.clamp(1, COALESCE_MAX);
    let mut lines = LineReader::new(read, max_line);
    let mut out = BufWriter::new(write);
    let mut pending: FuturesOrdered<BoxFuture<'static, (Vec<String>, usize)>> =
        FuturesOrdered::new();
    let mut in_flight = InFlight::default();
    let mut reading = true;
    loop {
        tokio::select! {
            biased;
            Some((replies, bytes)) = pending.next(), if !pending.is_empty() => {
                in_flight.lines -= replies.len();
                in_flight.bytes -= bytes;
                for reply in replies {
                    out.write_all(reply.as_bytes()).await?;
                    out.write_all(b"\n").await?;
                }
                if pending.is_empty() {
                    out.flush().await?;
                }
            }
            line = lines.next(), if reading && in_flight.has_room() => match line? {
                Some(first) => {
                    // Then whatever else this connection has ready, without waiting.
                    let mut chunk = Vec::new();
                    let mut bytes = 0;
                    let mut next = Some(first);
                    while let Some(line) = next.take() {
                        bytes += line.len();
                        chunk.push(parse_gated(line, max_line, &mut session));
                        let room = chunk.len() < coalesce
                            && in_flight.lines + chunk.len() < PIPELINE_WINDOW
                            && in_flight.bytes + bytes < PIPELINE_BYTES;
                        if !room {
                            break;
                        }
                        match lines.next().now_or_never() {
                            Some(Ok(Some(line))) => next = Some(line),
                            Some(Ok(None)) => reading = false,
                            Some(Err(e)) => {
                                // Answer what was read; the connection is gone.
                                tracing::debug!(error = %e, "tcp read failed");
                                reading = false;
                            }
                            None => {}
                        }
                    }
                    in_flight.lines += chunk.len();
                    in_flight.bytes += bytes;
                    let answers = handle_lines(chunk, &receivers, deadline);
                    pending.push_back(answers.map(move |a| (a, bytes)).boxed());
                }
                None => reading = false,
            },
            _ = shutdown.triggered(), if reading => reading = false,
            else => break,
        }
    }
    out.flush().await?;
    out.into_inner().shutdown().await
}

/// Serves one accepted connection: in plain text, or inside TLS once `tls`'s
/// handshake succeeded (a failed one closes the connection unanswered).
async fn serve_stream(
    stream: TcpStream,
    peer: IpAddr,
    tls: Option<TlsAcceptor>,
    receivers: ReceiverPool,
    limits: Limits,
    gateway: Arc<Gateway>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    match tls {
        None => {
            let halves = stream.into_split();
            serve_connection(halves, peer, receivers, limits, gateway, shutdown).await
        }
        Some(acceptor) => {
            let stream = tls::accept_line_connection(&acceptor, stream).await?;
            let halves = tokio::io::split(stream);
            serve_connection(halves, peer, receivers, limits, gateway, shutdown).await
        }
    }
}

/// Accepts connections until shutdown, then waits for every connection to answer
/// what it read (the caller bounds this with the drain deadline); `tls`, when
/// given, wraps every connection; `gateway` checks credentials and rate limits.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    receivers: ReceiverPool,
    limits: Limits,
    gateway: Arc<Gateway>,
    shutdown: Shutdown,
) {
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // One receiver per connection: pipelined lines keep their order.
                    let (receivers, shutdown) = (receivers.pin(), shutdown.clone());
                    let (gateway, tls) = (gateway.clone(), tls.clone());
                    connections.spawn(async move {
                        let served = serve_stream(
                            stream, peer.ip(), tls, receivers, limits, gateway, shutdown,
                        );
                        if let Err(e) = served.await {
                            tracing::debug!(%peer, error = %e, "tcp connection ended");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.triggered() => break,
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = LineReader::new(input, max);
        let mut lines = Vec::new();
        while let Some(l) = r.next().await.expect("read") {
            lines.push(l);
        }
        lines
    }

    #[tokio::test]
    async fn lines_crlf_partial_and_too_long() {
        let input = b"ping\r\nabc\n0123456789ABCDEF\nlast";
        let lines = read_all(input, 10).await;
        assert_eq!(
            lines,
            vec![
                Line::Text(b"ping".to_vec()),
                Line::Text(b"abc".to_vec()),
                Line::TooLong,
                Line::Text(b"last".to_vec())
            ]
        );
        assert_eq!(read_all(b"", 10).await, vec![]);
        assert_eq!(read_all(b"0123456789AB", 10).await, vec![Line::TooLong]);
    }
}
