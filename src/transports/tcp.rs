//! The TCP interface: newline-delimited, one answer line per input line, in order.
//!
//! - `ping` → `pong` (the latency challenge's stimulus → response);
//! - a JSON event with `"kind": "sale"|"tweet"` → `ok <id>` or `err <reason>`
//!   (`err unknown id="<id>": ...` when the outcome is unknown: resend with that id;
//!   `err deadline: ...` past `deadlines.request_ms`);
//! - a line over the limit (64 KiB) → `err ...`, and the connection goes on.
//!
//! Lines of one connection are handled concurrently (up to a window) but answered in
//! the order they came, so a client may pipeline. The lines a connection has ready
//! are read together and coalesced: each run of events of one kind goes through the
//! pipeline as one batch, in which a bad event is refused alone.

use crate::shutdown::Shutdown;
use flujo_actors::event::{tagged_kind, Kind, RawBatch};
use flujo_actors::messages::{IngestError, Transport};
use flujo_actors::metrics::INGEST_DURATION;
use flujo_actors::receiver::ReceiverPool;
use futures::future::{self, BoxFuture};
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use serde_json::Value;
use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

/// Lines of one connection in flight (read, not yet answered) at most.
const PIPELINE_WINDOW: usize = 4_096;
/// Bytes of lines of one connection in flight at most (plus one line).
const PIPELINE_BYTES: usize = 1 << 20;
/// Event lines coalesced into one batch at most.
const COALESCE_MAX: usize = 1_000;

/// One input line, or the fact that it was too long.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Text(Vec<u8>),
    TooLong,
}

impl Line {
    /// The bytes the line holds in memory.
    fn len(&self) -> usize {
        match self {
            Line::Text(text) => text.len(),
            Line::TooLong => 0,
        }
    }
}

/// Reads lines of at most `max` bytes without ever holding more than that; a longer
/// line is skipped up to its newline and reported as `TooLong`. Cancel-safe: a
/// partial line stays in the reader, not in the future.
struct LineReader<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
    discarding: bool,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner: BufReader::new(inner),
            line: Vec::new(),
            discarding: false,
            max,
        }
    }

    fn finish(&mut self) -> Line {
        if std::mem::take(&mut self.discarding) {
            self.line.clear();
            Line::TooLong
        } else {
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Line::Text(line)
        }
    }

    async fn next(&mut self) -> io::Result<Option<Line>> {
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                let partial = self.discarding || !self.line.is_empty();
                return Ok(partial.then(|| self.finish()));
            }
            let newline = buf.iter().position(|&b| b == b'\n');
            let taken = newline.map_or(buf.len(), |i| i + 1);
            keep(
                &mut self.line,
                &mut self.discarding,
                self.max,
                &buf[..newline.unwrap_or(taken)],
            );
            self.inner.consume(taken);
            if newline.is_some() {
                return Ok(Some(self.finish()));
            }
        }
    }
}

/// Appends `bytes` to the partial `line`, or switches to discarding once the line
/// would exceed `max`.
fn keep(line: &mut Vec<u8>, discarding: &mut bool, max: usize, bytes: &[u8]) {
    if *discarding {
        return;
    }
    if line.len() + bytes.len() > max {
        *discarding = true;
        *line = Vec::new();
    } else {
        line.extend_from_slice(bytes);
    }
}

/// One answer line (without its newline): never contains a newline itself.
fn answer(text: String) -> String {
    if text.contains(['\n', '\r']) {
        text.replace(['\n', '\r'], " ")
    } else {
        text
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
        IngestError::OutcomeUnknown { reason, ids, .. } => answer(format!(
            "err unknown id={}: outcome unknown ({reason}); resend this event with this id",
            serde_json::Value::from(ids.concat())
        )),
    }
}

/// A line as read: answered at once, or an event for the receiver.
enum Parsed {
    Answer(String),
    Event(Kind, Value),
}

/// What `line` is: a ping, an event of a kind, or something answered with an error.
fn parse_line(line: Line, max: usize) -> Parsed {
    let text = match line {
        Line::TooLong => return Parsed::Answer(format!("err line longer than {max} bytes")),
        Line::Text(text) => text,
    };
    let trimmed = text.trim_ascii();
    if trimmed == b"ping" {
        return Parsed::Answer("pong".to_owned());
    }
    if trimmed.is_empty() {
        return Parsed::Answer("err empty line".to_owned());
    }
    let value: Value = match serde_json::from_slice(trimmed) {
        Ok(v) => v,
        Err(e) => return Parsed::Answer(answer(format!("err invalid JSON: {e}"))),
    };
    match tagged_kind(&value) {
        Ok(kind) => Parsed::Event(kind, value),
        Err(e) => Parsed::Answer(answer(format!("err {}", e.message))),
    }
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
/// a bad event is refused alone, within `deadline` (past it, each line is answered
/// `err deadline ...`).
async fn ingest_run(
    receivers: ReceiverPool,
    kind: Kind,
    objects: Vec<Value>,
    deadline: Duration,
) -> Vec<String> {
    let started = Instant::now();
    let n = objects.len();
    let ingest = receivers.ingest_each(RawBatch::Json { kind, objects }, Transport::Tcp);
    let Ok(outcomes) = tokio::time::timeout(deadline, ingest).await else {
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
            Err(e) => answer(refusal(e)),
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

/// Serves one connection until the client closes it or shutdown begins; answers
/// every line read before closing. The lines a connection has ready are read
/// together (up to `limits.max_batch`) and their events coalesced.
async fn serve_connection(
    stream: TcpStream,
    receivers: ReceiverPool,
    limits: Limits,
    shutdown: Shutdown,
) -> io::Result<()> {
    let Limits {
        max_line,
        max_batch,
        deadline,
    } = limits;
    let coalesce = max_batch.clamp(1, COALESCE_MAX);
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
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
                        chunk.push(parse_line(line, max_line));
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

/// Accepts connections until shutdown, then waits for every connection to answer
/// what it read (the caller bounds this with the drain deadline).
pub async fn serve(
    listener: TcpListener,
    receivers: ReceiverPool,
    limits: Limits,
    shutdown: Shutdown,
) {
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // One receiver per connection: pipelined lines keep their order.
                    let (receivers, shutdown) = (receivers.pin(), shutdown.clone());
                    connections.spawn(async move {
                        if let Err(e) = serve_connection(stream, receivers, limits, shutdown).await {
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
        assert_eq!(read_all(b"\n", 10).await, vec![Line::Text(vec![])]);
    }

    #[test]
    fn answers_are_one_line() {
        assert_eq!(answer("a\nb\rc".into()), "a b c");
    }
}
