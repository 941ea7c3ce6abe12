//! The raw TCP transport: newline-delimited JSON events with a `"kind"`
//! field, each answered by one line, in order: `ok <id>`, or `err <reason>`
//! (`err busy: ...` and `err unavailable: ...` are backpressure).
//!
//! A batch is written as consecutive lines (pipelined) while the answers are
//! read, one per line, on a connection of a pool: one batch in flight per
//! connection, so the pool grows to the number of batches in flight. A
//! connection that failed, timed out or answered out of protocol is dropped
//! (a new one is made for the next batch), since its answers can no longer
//! be matched with the lines.

use std::io;
use std::sync::Mutex;

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::super::generate::Batch;
use super::super::load::lock;
use super::{Answer, Attempt, REQUEST_TIMEOUT};

/// Label of an event the server refused (`err <reason>`, other than busy or
/// unavailable).
pub const REJECTED: &str = "rejected";

/// The lines of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    /// All lines, each ending with `\n`.
    pub bytes: Vec<u8>,
    /// The id of each line's event, in order (the expected `ok <id>`).
    pub ids: Vec<String>,
}

/// An event with the `kind` field the TCP format requires.
#[derive(Serialize)]
struct Tagged<'a, T> {
    kind: &'static str,
    #[serde(flatten)]
    event: &'a T,
}

/// One line per event: the JSON object the HTTP API takes, plus `"kind"`.
pub fn encode(batch: &Batch) -> anyhow::Result<Lines> {
    fn lines<T: Serialize>(
        kind: &'static str,
        events: &[T],
        id: impl Fn(&T) -> &str,
    ) -> serde_json::Result<Lines> {
        let mut out = Lines {
            bytes: Vec::new(),
            ids: Vec::with_capacity(events.len()),
        };
        for event in events {
            serde_json::to_writer(&mut out.bytes, &Tagged { kind, event })?;
            out.bytes.push(b'\n');
            out.ids.push(id(event).to_string());
        }
        Ok(out)
    }
    match batch {
        Batch::Sales(v) => lines("sale", v, |s| &s.id),
        Batch::Tweets(v) => lines("tweet", v, |t| &t.id),
    }
    .context("serializing a batch")
}

/// The answer line to the event `id` (without its line end). The second
/// value is false when the line is out of protocol, i.e. the connection is
/// no longer in step with its lines.
pub fn classify_answer(line: &str, id: &str) -> (Attempt, bool) {
    if let Some(acked) = line.strip_prefix("ok ") {
        return if acked.trim() == id {
            (Attempt::Accepted, true)
        } else {
            (
                Attempt::Unknown {
                    label: "ack-mismatch",
                },
                false,
            )
        };
    }
    let Some(reason) = line.strip_prefix("err ") else {
        return (
            Attempt::Unknown {
                label: "bad-answer",
            },
            false,
        );
    };
    let attempt = if reason.starts_with("busy") {
        Attempt::Backpressure {
            label: "busy".into(),
            retry_after: None,
        }
    } else if reason.starts_with("unavailable") {
        Attempt::Backpressure {
            label: "unavailable".into(),
            retry_after: None,
        }
    } else {
        Attempt::Rejected {
            label: REJECTED.into(),
            transient: false,
        }
    };
    (attempt, true)
}

/// One open connection.
#[derive(Debug)]
struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Connection {
    async fn open(addr: &str) -> io::Result<Self> {
        let stream = timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(read),
            writer: write,
        })
    }

    /// Writes `lines` while reading their answers into `answers`; returns
    /// whether the connection is still in step. On an error the answers read
    /// so far stay in `answers`.
    async fn exchange(&mut self, lines: &Lines, answers: &mut Vec<Attempt>) -> io::Result<bool> {
        let Self { reader, writer } = self;
        let write = async {
            writer.write_all(&lines.bytes).await?;
            writer.flush().await
        };
        let read = async {
            let mut in_step = true;
            let mut line = String::new();
            for id in &lines.ids {
                line.clear();
                if reader.read_line(&mut line).await? == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                let (attempt, ok) = classify_answer(line.trim_end_matches(['\n', '\r']), id);
                in_step &= ok;
                answers.push(attempt);
            }
            Ok(in_step)
        };
        let ((), in_step) = tokio::try_join!(write, read)?;
        Ok(in_step)
    }
}

/// Sends batches to one target over a pool of connections.
#[derive(Debug)]
pub struct TcpSender {
    addr: String,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
}

impl TcpSender {
    /// A sender to `host_port`, keeping up to `connections` idle
    /// connections for reuse.
    pub fn new(host_port: &str, connections: usize) -> Self {
        Self {
            addr: host_port.to_string(),
            idle: Mutex::new(Vec::new()),
            max_idle: connections.max(1),
        }
    }

    /// One attempt to deliver `lines`: an idle connection (or a new one)
    /// carries them; every event gets the outcome of its answer line, and
    /// events left without one (timeout, connection lost) are `Unknown`.
    pub async fn send(&self, lines: &Lines) -> Answer {
        let pooled = lock(&self.idle).pop();
        let mut connection = match pooled {
            Some(c) => c,
            None => match Connection::open(&self.addr).await {
                Ok(c) => c,
                Err(_) => return Answer::Whole(Attempt::NotSent { label: "connect" }),
            },
        };
        let mut answers = Vec::with_capacity(lines.ids.len());
        let exchanged = timeout(REQUEST_TIMEOUT, connection.exchange(lines, &mut answers)).await;
        let missing = match exchanged {
            Ok(Ok(in_step)) => {
                if in_step {
                    let mut idle = lock(&self.idle);
                    if idle.len() < self.max_idle {
                        idle.push(connection);
                    }
                }
                return Answer::PerEvent(answers);
            }
            Ok(Err(_)) => Attempt::Unknown { label: "transport" },
            Err(_) => Attempt::Unknown { label: "timeout" },
        };
        answers.resize(lines.ids.len(), missing);
        Answer::PerEvent(answers)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::fixtures::{line_server, sale, tweet};
    use super::*;
    use serde_json::Value;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn events_become_tagged_lines() {
        let b = Batch::Sales(vec![
            sale("home", "P1", 1.5, 2),
            sale("beauty", "P2", 3.0, 1),
        ]);
        let lines = encode(&b).expect("encode");
        let text = String::from_utf8(lines.bytes).expect("utf8");
        assert!(text.ends_with('\n'));
        let parsed: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0]["kind"], "sale");
        assert_eq!(parsed[0]["category"], "home");
        assert_eq!(parsed[1]["product_id"], "P2");
        assert_eq!(parsed[1]["price"], 3.0);
        assert_eq!(parsed[1]["quantity"], 1);
        let mut keys: Vec<_> = parsed[0].as_object().expect("object").keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "category",
                "id",
                "kind",
                "price",
                "product_id",
                "quantity",
                "ts"
            ]
        );
        let ids: Vec<_> = parsed.iter().map(|v| v["id"].as_str()).collect();
        assert_eq!(
            ids,
            lines
                .ids
                .iter()
                .map(|s| Some(s.as_str()))
                .collect::<Vec<_>>()
        );

        let mut t = tweet("Lima", "rainy", -1.5, 90.0);
        t.text = Some("taking an umbrella".into());
        let lines = encode(&Batch::Tweets(vec![t.clone()])).expect("encode");
        let v: Value = serde_json::from_slice(&lines.bytes).expect("json");
        assert_eq!(v["kind"], "tweet");
        assert_eq!(
            (&v["location"], &v["weather"], &v["text"]),
            (
                &Value::from("Lima"),
                &Value::from("rainy"),
                &Value::from(t.text)
            )
        );
        assert_eq!(
            (v["temperature"].as_f64(), v["humidity"].as_f64()),
            (Some(-1.5), Some(90.0))
        );
        assert_eq!(lines.ids, [t.id]);
        let no_text = encode(&Batch::Tweets(vec![tweet("Oslo", "sunny", 1.0, 2.0)])).expect("enc");
        let v: Value = serde_json::from_slice(&no_text.bytes).expect("json");
        assert!(v.get("text").is_none());
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify_answer("ok a-1", "a-1"), (Attempt::Accepted, true));
        assert_eq!(
            classify_answer("ok a-2", "a-1"),
            (
                Attempt::Unknown {
                    label: "ack-mismatch"
                },
                false
            )
        );
        assert_eq!(
            classify_answer("err busy: router mailbox full", "a-1"),
            (
                Attempt::Backpressure {
                    label: "busy".into(),
                    retry_after: None
                },
                true
            )
        );
        assert_eq!(
            classify_answer("err unavailable: kafka circuit open", "a-1"),
            (
                Attempt::Backpressure {
                    label: "unavailable".into(),
                    retry_after: None
                },
                true
            )
        );
        assert_eq!(
            classify_answer("err field `price` must be > 0", "a-1"),
            (
                Attempt::Rejected {
                    label: REJECTED.into(),
                    transient: false
                },
                true
            )
        );
        assert_eq!(
            classify_answer("pong", "a-1"),
            (
                Attempt::Unknown {
                    label: "bad-answer"
                },
                false
            )
        );
    }

    /// A server answering each line with `answer(n, line)` (n counts lines
    /// over all connections), and closing after `close_after` lines.
    async fn fake(
        answer: fn(u64, &str) -> String,
        close_after: Option<u64>,
    ) -> (String, Arc<AtomicU64>) {
        let connections = Arc::new(AtomicU64::new(0));
        let count = connections.clone();
        let lines = AtomicU64::new(0);
        let addr = line_server(
            move || {
                count.fetch_add(1, Ordering::Relaxed);
            },
            move |line| {
                let n = lines.fetch_add(1, Ordering::Relaxed);
                close_after.is_none_or(|c| n < c).then(|| answer(n, line))
            },
        )
        .await;
        (addr.to_string(), connections)
    }

    fn id_of(line: &str) -> String {
        let v: Value = serde_json::from_str(line).unwrap_or_default();
        v["id"].as_str().unwrap_or_default().to_string()
    }

    fn batch(n: usize) -> Lines {
        let sales = (0..n)
            .map(|i| sale("home", &format!("P{i}"), 1.0, 1))
            .collect();
        encode(&Batch::Sales(sales)).expect("encode")
    }

    #[tokio::test]
    async fn per_event_answers_and_connection_reuse() {
        let (addr, connections) = fake(
            |n, line| match n % 4 {
                1 => "err busy: full".to_string(),
                2 => "err bad price".to_string(),
                _ => format!("ok {}", id_of(line)),
            },
            None,
        )
        .await;
        let sender = TcpSender::new(&addr, 2);
        let lines = batch(4);
        let Answer::PerEvent(answers) = sender.send(&lines).await else {
            panic!("per-event answers expected");
        };
        assert_eq!(answers.len(), 4);
        assert_eq!(answers[0], Attempt::Accepted);
        assert!(matches!(answers[1], Attempt::Backpressure { .. }));
        assert!(matches!(answers[2], Attempt::Rejected { .. }));
        assert_eq!(answers[3], Attempt::Accepted);
        // A large pipelined batch on the same (pooled) connection.
        let big = batch(5000);
        let Answer::PerEvent(answers) = sender.send(&big).await else {
            panic!("per-event answers expected");
        };
        assert_eq!(answers.len(), 5000);
        assert_eq!(
            answers.iter().filter(|a| **a == Attempt::Accepted).count(),
            2500
        );
        assert_eq!(connections.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_lost_connection_leaves_the_rest_unknown_and_reconnects() {
        let (addr, connections) = fake(|_, line| format!("ok {}", id_of(line)), Some(2)).await;
        let sender = TcpSender::new(&addr, 2);
        let Answer::PerEvent(answers) = sender.send(&batch(3)).await else {
            panic!("per-event answers expected");
        };
        assert_eq!(
            answers,
            [
                Attempt::Accepted,
                Attempt::Accepted,
                Attempt::Unknown { label: "transport" }
            ]
        );
        let _ = sender.send(&batch(1)).await;
        assert_eq!(connections.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn an_unreachable_target_is_not_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        assert_eq!(
            TcpSender::new(&addr, 1).send(&batch(2)).await,
            Answer::Whole(Attempt::NotSent { label: "connect" })
        );
    }
}
