//! A plain server-sent-events client of `/v1/stream/kpis`: reads the response body
//! chunk by chunk and splits it into events.

use super::*;

/// One open `/v1/stream/kpis` response.
pub struct KpiStream {
    response: reqwest::Response,
    buffer: String,
}

impl KpiStream {
    /// GETs `/v1/stream/kpis` and insists on a 200 `text/event-stream`.
    pub async fn open(server: &TestServer) -> KpiStream {
        let response = server
            .get("/v1/stream/kpis")
            .await
            .expect("GET /v1/stream/kpis");
        assert_eq!(response.status(), StatusCode::OK, "GET /v1/stream/kpis");
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "content type {content_type:?}"
        );
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(
            header("cache-control"),
            Some("no-cache"),
            "{:?}",
            response.headers()
        );
        assert_eq!(
            header("x-accel-buffering"),
            Some("no"),
            "{:?}",
            response.headers()
        );
        KpiStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's type and data, or `None` when the stream ended; panics when
    /// none comes within `within`.
    pub async fn next_event(&mut self, within: Duration) -> Option<(String, String)> {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut kind, mut data) = (String::new(), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                // Blocks of comments only are keep-alives.
                if !kind.is_empty() || !data.is_empty() {
                    return Some((kind, data.join("\n")));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {within:?}"));
            match chunk {
                Ok(Some(bytes)) => self
                    .buffer
                    .push_str(std::str::from_utf8(&bytes).expect("UTF-8 event stream")),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next `kpis` event's snapshot; panics when none comes within `within`.
    pub async fn next_kpis(&mut self, within: Duration) -> Value {
        let (kind, data) = self
            .next_event(within)
            .await
            .expect("the stream ended before a kpis event");
        assert_eq!(kind, "kpis", "event type; data: {data}");
        serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("kpis data is not JSON ({e}): {data}"))
    }

    /// The first snapshot that satisfies `done`, reading for at most `within`.
    pub async fn kpis_until(&mut self, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let snapshot = self.next_kpis(left).await;
            if done(&snapshot) {
                return snapshot;
            }
        }
    }
}
