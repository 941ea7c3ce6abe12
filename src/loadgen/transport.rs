//! How a batch travels to the target, and what one attempt to deliver it
//! came back with. Only HTTP exists today; gRPC and TCP become further
//! [`Transport`] values and [`Sender`] variants, and the load logic
//! (scheduling, retries, truth) stays the same because it only sees
//! [`Attempt`]s.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;

use super::generate::{Batch, EventKind};

/// Per-attempt time limit of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait honoured from a `Retry-After` header.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Protocol used to send events (`--transport`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `POST /v1/sales` and `POST /v1/tweets` (JSON or NDJSON bodies).
    Http,
}

/// A batch serialized once, ready to be sent (and resent) as is.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Kind of the events, which selects the endpoint.
    pub kind: EventKind,
    /// Number of events.
    pub events: usize,
    /// Request body.
    pub body: Vec<u8>,
    /// Its content type.
    pub content_type: &'static str,
}

/// Serializes `batch`: a single object when it holds one event (unless
/// `ndjson`), a JSON array otherwise, or one JSON object per line with
/// `ndjson`.
pub fn encode(batch: &Batch, ndjson: bool) -> anyhow::Result<Encoded> {
    fn body<T: serde::Serialize>(events: &[T], ndjson: bool) -> serde_json::Result<Vec<u8>> {
        if ndjson {
            let mut out = Vec::new();
            for e in events {
                serde_json::to_writer(&mut out, e)?;
                out.push(b'\n');
            }
            Ok(out)
        } else if let [single] = events {
            serde_json::to_vec(single)
        } else {
            serde_json::to_vec(events)
        }
    }
    let body = match batch {
        Batch::Sales(v) => body(v, ndjson),
        Batch::Tweets(v) => body(v, ndjson),
    }
    .context("serializing a batch")?;
    Ok(Encoded {
        kind: batch.kind(),
        events: batch.len(),
        body,
        content_type: if ndjson {
            "application/x-ndjson"
        } else {
            "application/json"
        },
    })
}

/// What one attempt to deliver a batch came back with.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// Accepted (202) with the expected number of events.
    Accepted,
    /// 429 or 503: the server is pushing back; nothing was stored.
    Backpressure {
        /// The status.
        status: u16,
        /// The server's `Retry-After`, capped at [`MAX_RETRY_AFTER`].
        retry_after: Option<Duration>,
    },
    /// Any other HTTP error status: the batch was not stored.
    Rejected {
        /// The status.
        status: u16,
    },
    /// The request never reached the server (e.g. connection refused).
    NotSent {
        /// Short label, used as the error key in the report.
        label: &'static str,
    },
    /// The request may or may not have been processed (timeout, connection
    /// lost, or an acknowledgement that does not match the batch).
    Unknown {
        /// Short label, used as the error key in the report.
        label: &'static str,
    },
}

/// Sends encoded batches over the selected transport (cheap to clone).
#[derive(Debug, Clone)]
pub enum Sender {
    /// Over HTTP.
    Http(Arc<HttpSender>),
}

impl Sender {
    /// A sender for `transport` to `target`, keeping up to `connections`
    /// connections open.
    pub fn new(transport: Transport, target: &str, connections: usize) -> anyhow::Result<Self> {
        match transport {
            Transport::Http => Ok(Sender::Http(Arc::new(HttpSender::new(
                target,
                connections,
            )?))),
        }
    }

    /// One attempt to deliver `batch`.
    pub async fn send(&self, batch: &Encoded) -> Attempt {
        match self {
            Sender::Http(s) => s.send(batch).await,
        }
    }
}

/// The HTTP transport.
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: reqwest::Client,
    sales_url: String,
    tweets_url: String,
}

/// The part of a 202 answer loadgen checks.
#[derive(Deserialize)]
struct Ack {
    accepted: u64,
}

impl HttpSender {
    /// A sender posting to `target`'s `/v1/sales` and `/v1/tweets`.
    pub fn new(target: &str, connections: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        let base = target.trim_end_matches('/');
        Ok(Self {
            client,
            sales_url: format!("{base}/v1/sales"),
            tweets_url: format!("{base}/v1/tweets"),
        })
    }

    async fn send(&self, batch: &Encoded) -> Attempt {
        let url = match batch.kind {
            EventKind::Sale => &self.sales_url,
            EventKind::Tweet => &self.tweets_url,
        };
        let sent = self
            .client
            .post(url)
            .header(CONTENT_TYPE, batch.content_type)
            .body(batch.body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return classify_error(&e),
        };
        let status = response.status();
        if status.is_success() {
            return match response.json::<Ack>().await {
                Ok(ack) if ack.accepted == batch.events as u64 => Attempt::Accepted,
                Ok(_) => Attempt::Unknown {
                    label: "ack-mismatch",
                },
                Err(e) if e.is_decode() => Attempt::Unknown { label: "bad-ack" },
                Err(e) => classify_error(&e),
            };
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            return Attempt::Backpressure {
                status: status.as_u16(),
                retry_after,
            };
        }
        Attempt::Rejected {
            status: status.as_u16(),
        }
    }
}

/// A transport error: `NotSent` when the connection could not be made,
/// `Unknown` when the request may have reached the server.
fn classify_error(e: &reqwest::Error) -> Attempt {
    if e.is_connect() {
        Attempt::NotSent { label: "connect" }
    } else if e.is_builder() {
        Attempt::NotSent { label: "request" }
    } else if e.is_timeout() {
        Attempt::Unknown { label: "timeout" }
    } else {
        Attempt::Unknown { label: "transport" }
    }
}

/// `Retry-After` in (possibly fractional) seconds, capped; HTTP dates are
/// ignored.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{sale, tweet};
    use super::*;

    #[test]
    fn one_event_is_an_object_more_an_array() {
        let one = encode(&Batch::Sales(vec![sale("home", "P1", 1.5, 2)]), false).expect("enc");
        let v: serde_json::Value = serde_json::from_slice(&one.body).expect("json");
        assert_eq!(v["product_id"], "P1");
        assert_eq!((one.events, one.content_type), (1, "application/json"));
        let two = encode(
            &Batch::Tweets(vec![
                tweet("Lima", "sunny", 1.0, 2.0),
                tweet("Oslo", "foggy", 3.0, 4.0),
            ]),
            false,
        )
        .expect("enc");
        let v: serde_json::Value = serde_json::from_slice(&two.body).expect("json");
        assert_eq!(v.as_array().map(Vec::len), Some(2));
        assert_eq!(two.kind, EventKind::Tweet);
    }

    #[test]
    fn ndjson_is_one_object_per_line() {
        let b = Batch::Sales(vec![
            sale("home", "P1", 1.5, 2),
            sale("beauty", "P2", 3.0, 1),
        ]);
        let enc = encode(&b, true).expect("enc");
        assert_eq!(enc.content_type, "application/x-ndjson");
        let text = String::from_utf8(enc.body).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            assert!(v.is_object());
        }
    }

    #[test]
    fn retry_after_is_parsed_and_capped() {
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(" 0.25 "),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after("120"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
