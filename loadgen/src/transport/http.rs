//! The HTTP transport: `POST /v1/sales` and `POST /v1/tweets` with a JSON
//! object, a JSON array or NDJSON, answered 202 `{"accepted": N, ...}`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;

use super::super::generate::Batch;
use super::{Attempt, MAX_RETRY_AFTER, REQUEST_TIMEOUT};
use flujo_actors::event::Kind;

/// An HTTP request body and its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Their content type.
    pub content_type: &'static str,
}

/// Serializes `batch`: a single object when it holds one event (unless
/// `ndjson`), a JSON array otherwise, or one JSON object per line with
/// `ndjson`.
pub fn encode(batch: &Batch, ndjson: bool) -> anyhow::Result<Body> {
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
    let bytes = match batch {
        Batch::Sales(v) => body(v, ndjson),
        Batch::Tweets(v) => body(v, ndjson),
    }
    .context("serializing a batch")?;
    Ok(Body {
        bytes,
        content_type: if ndjson {
            "application/x-ndjson"
        } else {
            "application/json"
        },
    })
}

/// Posts batches to one target's `/v1/sales` and `/v1/tweets`.
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
    /// A sender posting to `target`'s `/v1/sales` and `/v1/tweets`; an
    /// `https://` target's certificate is checked against `ca_file` (else the
    /// system's roots).
    pub fn new(target: &str, connections: usize, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true);
        let client = super::http_roots(builder, ca_file)?
            .build()
            .context("building the HTTP client")?;
        let base = target.trim_end_matches('/');
        Ok(Self {
            client,
            sales_url: format!("{base}/v1/sales"),
            tweets_url: format!("{base}/v1/tweets"),
        })
    }

    /// One attempt to deliver `body`, a batch of `events` events of `kind`.
    pub async fn send(&self, kind: Kind, events: usize, body: &Body) -> Attempt {
        let url = match kind {
            Kind::Sale => &self.sales_url,
            Kind::Tweet => &self.tweets_url,
        };
        let sent = self
            .client
            .post(url)
            .header(CONTENT_TYPE, body.content_type)
            .body(body.bytes.clone())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return classify_error(&e),
        };
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok());
            return classify_refusal(status, retry_after);
        }
        match response.json::<Ack>().await {
            Ok(ack) if ack.accepted == events as u64 => Attempt::Accepted,
            Ok(_) => Attempt::Unknown {
                label: "ack-mismatch",
            },
            Err(e) if e.is_decode() => Attempt::Unknown { label: "bad-ack" },
            Err(e) => classify_error(&e),
        }
    }
}

/// A non-2xx answer: 429 and 503 are backpressure (with the server's
/// `Retry-After`), other 5xx transient, anything else a final refusal. The
/// label is the status code.
pub fn classify_refusal(status: StatusCode, retry_after: Option<&str>) -> Attempt {
    let label = status.as_u16().to_string();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        Attempt::Backpressure {
            label,
            retry_after: retry_after.and_then(parse_retry_after),
        }
    } else {
        Attempt::Rejected {
            label,
            transient: status.is_server_error(),
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
    use super::super::super::fixtures::{sale, tweet};
    use super::*;

    #[test]
    fn one_event_is_an_object_more_an_array() {
        let one = encode(&Batch::Sales(vec![sale("home", "P1", 1.5, 2)]), false).expect("enc");
        let v: serde_json::Value = serde_json::from_slice(&one.bytes).expect("json");
        assert_eq!(v["product_id"], "P1");
        assert_eq!(one.content_type, "application/json");
        let two = encode(
            &Batch::Tweets(vec![
                tweet("Lima", "sunny", 1.0, 2.0),
                tweet("Oslo", "foggy", 3.0, 4.0),
            ]),
            false,
        )
        .expect("enc");
        let v: serde_json::Value = serde_json::from_slice(&two.bytes).expect("json");
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn ndjson_is_one_object_per_line() {
        let b = Batch::Sales(vec![
            sale("home", "P1", 1.5, 2),
            sale("beauty", "P2", 3.0, 1),
        ]);
        let enc = encode(&b, true).expect("enc");
        assert_eq!(enc.content_type, "application/x-ndjson");
        let text = String::from_utf8(enc.bytes).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            assert!(v.is_object());
        }
    }

    #[test]
    fn refusals_are_classified_by_status() {
        assert_eq!(
            classify_refusal(StatusCode::TOO_MANY_REQUESTS, Some("0.5")),
            Attempt::Backpressure {
                label: "429".into(),
                retry_after: Some(Duration::from_millis(500))
            }
        );
        assert_eq!(
            classify_refusal(StatusCode::SERVICE_UNAVAILABLE, None),
            Attempt::Backpressure {
                label: "503".into(),
                retry_after: None
            }
        );
        assert_eq!(
            classify_refusal(StatusCode::BAD_REQUEST, Some("1")),
            Attempt::Rejected {
                label: "400".into(),
                transient: false
            }
        );
        assert_eq!(
            classify_refusal(StatusCode::BAD_GATEWAY, None),
            Attempt::Rejected {
                label: "502".into(),
                transient: true
            }
        );
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
