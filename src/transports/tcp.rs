//! The TCP interface: newline-delimited, one answer line per input line, in order.
//!
//! - `ping` → `pong` (the latency challenge's stimulus → response);
//! - a JSON event with `"kind": "sale"|"tweet"` → `ok <id>` or `err <reason>`;
//! - a line over the limit (64 KiB) → `err ...`, and the connection goes on.
//!
//! Lines of one connection are handled concurrently (up to a window) but answered in
//! the order they came, so a client may pipeline.

use crate::shutdown::Shutdown;
use flujo_actors::event::{tagged_kind, Kind};
use flujo_actors::messages::{IngestError, Transport};
use flujo_actors::metrics::INGEST_DURATION;
use flujo_actors::receiver::ReceiverPool;
use futures::future::{self, BoxFuture};
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use serde_json::Value;
use std::io;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

/// Lines of one connection in flight at once.
const PIPELINE_WINDOW: usize = 256;

/// One input line, or the fact that it was too long.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Text(Vec<u8>),
    TooLong,
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
    }
}

/// The answer to one line.
fn handle_line(line: Line, max: usize, receivers: &ReceiverPool) -> BoxFuture<'static, String> {
    let text = match line {
        Line::TooLong => {
            return future::ready(format!("err line longer than {max} bytes")).boxed();
        }
        Line::Text(text) => text,
    };
    let trimmed = text.trim_ascii();
    if trimmed == b"ping" {
        return future::ready("pong".to_owned()).boxed();
    }
    if trimmed.is_empty() {
        return future::ready("err empty line".to_owned()).boxed();
    }
    let value: Value = match serde_json::from_slice(trimmed) {
        Ok(v) => v,
        Err(e) => return future::ready(answer(format!("err invalid JSON: {e}"))).boxed(),
    };
    let kind: Kind = match tagged_kind(&value) {
        Ok(k) => k,
        Err(e) => return future::ready(answer(format!("err {}", e.message))).boxed(),
    };
    let receivers = receivers.clone();
    async move {
        let started = Instant::now();
        let outcome = receivers.ingest(kind, vec![value], Transport::Tcp).await;
        metrics::histogram!(INGEST_DURATION, "transport" => Transport::Tcp.as_str())
            .record(started.elapsed().as_secs_f64());
        answer(match outcome {
            Ok(accepted) => format!("ok {}", accepted.ids.join(" ")),
            Err(e) => refusal(e),
        })
    }
    .boxed()
}

/// Serves one connection until the client closes it or shutdown begins; answers
/// every line read before closing.
async fn serve_connection(
    stream: TcpStream,
    receivers: ReceiverPool,
    max_line: usize,
    shutdown: Shutdown,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut lines = LineReader::new(read, max_line);
    let mut out = BufWriter::new(write);
    let mut pending: FuturesOrdered<BoxFuture<'static, String>> = FuturesOrdered::new();
    let mut reading = true;
    loop {
        tokio::select! {
            biased;
            Some(reply) = pending.next(), if !pending.is_empty() => {
                out.write_all(reply.as_bytes()).await?;
                out.write_all(b"\n").await?;
                if pending.is_empty() {
                    out.flush().await?;
                }
            }
            line = lines.next(), if reading && pending.len() < PIPELINE_WINDOW => match line? {
                Some(line) => pending.push_back(handle_line(line, max_line, &receivers)),
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
    max_line: usize,
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
                        if let Err(e) = serve_connection(stream, receivers, max_line, shutdown).await {
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
