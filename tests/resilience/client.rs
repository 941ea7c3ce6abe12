//! The client of the scenarios: sends batches of sales without ids, keeps what was
//! not accepted and resends it, with the ids an "outcome unknown" 503 returned, as
//! the README tells clients to.

use super::support::*;
use flujo_proto::v1::ingest_client::IngestClient;
use flujo_proto::v1::{Sale as SaleMsg, SaleBatch};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// A batch to send again.
enum Pending {
    /// Refused before publishing (circuit open, backpressure): the events as sent.
    Refused(Vec<Value>),
    /// Outcome unknown: the events with the ids the 503 returned.
    Unknown(Vec<Value>),
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 202.
    Accepted,
    /// 503 with `Retry-After`, saying the circuit is open.
    CircuitOpen,
    /// 503 with the ids of the batch: outcome unknown.
    Unknown,
    /// Anything else refused for now: status and body.
    Other(u16, String),
}

/// A client that never loses an event: what is not accepted is resent.
pub struct Client<'a> {
    server: &'a TestServer,
    next: u64,
    pending: Vec<Pending>,
    accepted: HashSet<String>,
    answers: Vec<Answer>,
    unknown: usize,
    resent_with_ids: usize,
}

impl<'a> Client<'a> {
    /// A client of `server`.
    pub fn new(server: &'a TestServer) -> Self {
        Client {
            server,
            next: 0,
            pending: Vec::new(),
            accepted: HashSet::new(),
            answers: Vec::new(),
            unknown: 0,
            resent_with_ids: 0,
        }
    }

    /// Sends `n` new sales without ids; returns the status.
    pub async fn send_new(&mut self, n: usize) -> StatusCode {
        let events: Vec<Value> = (0..n)
            .map(|_| {
                self.next += 1;
                let i = self.next;
                json!({"category": CATEGORIES[(i % 4) as usize], "product_id": format!("P{}", i % 7),
                       "price": 1.0 + (i % 10) as f64, "quantity": 1})
            })
            .collect();
        let (status, pending) = self.post(events).await;
        if let Some(p) = pending {
            self.pending.push(p);
        }
        status
    }

    /// Posts one batch; returns its status and what is left to resend.
    async fn post(&mut self, events: Vec<Value>) -> (StatusCode, Option<Pending>) {
        let body = Value::from(events.clone()).to_string();
        let response = self
            .server
            .client
            .post(self.server.url("/v1/sales"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /v1/sales answers (the request deadline bounds it)");
        let status = response.status();
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let (_, answer) = status_json(response).await;
        let (recorded, pending) = match status {
            StatusCode::ACCEPTED => {
                for id in answer["ids"].as_array().expect("ids in a 202") {
                    let id = id.as_str().expect("an id").to_owned();
                    assert!(self.accepted.insert(id.clone()), "id {id} accepted twice");
                }
                (Answer::Accepted, None)
            }
            StatusCode::SERVICE_UNAVAILABLE if answer.get("ids").is_some() => {
                let ids = answer["ids"].as_array().expect("ids is an array");
                assert_eq!(ids.len(), events.len(), "one id per event: {answer}");
                assert!(
                    answer["error"]
                        .as_str()
                        .unwrap_or("")
                        .contains("outcome unknown"),
                    "{answer}"
                );
                assert_eq!(answer["retry"], "resend the same events with these ids");
                assert!(retry_after.is_some(), "Retry-After on a 503");
                let with_ids = events
                    .into_iter()
                    .zip(ids)
                    .map(|(mut e, id)| {
                        e["id"] = id.clone();
                        e
                    })
                    .collect();
                self.unknown += 1;
                (Answer::Unknown, Some(Pending::Unknown(with_ids)))
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                let error = answer["error"].as_str().unwrap_or("").to_owned();
                let recorded = if status == StatusCode::SERVICE_UNAVAILABLE
                    && error.contains("circuit open")
                {
                    assert!(retry_after.is_some(), "Retry-After while open: {answer}");
                    Answer::CircuitOpen
                } else {
                    Answer::Other(status.as_u16(), error)
                };
                (recorded, Some(Pending::Refused(events)))
            }
            other => panic!("unexpected answer {other}: {answer}"),
        };
        self.answers.push(recorded);
        (status, pending)
    }

    /// Sends `n` sales in one gRPC call while the broker is frozen, every tenth with
    /// an id of the client's own: it must be answered `UNAVAILABLE` with
    /// `flujo-outcome: unknown`, the ids in `flujo-ids-bin` when they are few, and
    /// the first stamped id in `flujo-id-base`, from which the client works out the
    /// others (+1 each, in order, on the events sent without an id) however many they
    /// are; kept to resend with those ids.
    pub async fn grpc_unknown_outcome(&mut self, n: usize) {
        let mut grpc = IngestClient::connect(self.server.grpc_uri())
            .await
            .expect("connect to the gRPC port");
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let own_id = |i: usize| (i % 10 == 3).then(|| format!("own-{tag}-{i}"));
        let sales = (0..n)
            .map(|i| SaleMsg {
                id: own_id(i).unwrap_or_default(),
                category: 3, // CATEGORY_HOME
                product_id: format!("G{i}"),
                price: 2.0,
                quantity: 1,
                ..SaleMsg::default()
            })
            .collect();
        let status = grpc
            .publish_sales(SaleBatch { sales })
            .await
            .expect_err("a frozen broker cannot confirm");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        let meta = status.metadata();
        assert_eq!(
            meta.get("flujo-outcome").and_then(|v| v.to_str().ok()),
            Some("unknown"),
            "{status:?}"
        );
        let base: uuid::Uuid = meta
            .get("flujo-id-base")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("flujo-id-base metadata holding a UUID: {status:?}"));
        let mut stamped = 0u128;
        let ids: Vec<String> = (0..n)
            .map(|i| {
                own_id(i).unwrap_or_else(|| {
                    stamped += 1;
                    uuid::Uuid::from_u128(base.as_u128() + stamped - 1).to_string()
                })
            })
            .collect();
        let listed = meta
            .get_bin("flujo-ids-bin")
            .and_then(|v| v.to_bytes().ok());
        match listed {
            Some(listed) => {
                let listed: Vec<String> =
                    serde_json::from_slice(&listed).expect("a JSON array of ids");
                assert_eq!(
                    listed, ids,
                    "the listed ids are the ones flujo-id-base gives"
                );
            }
            None => assert!(n > 50, "the ids of {n} events are listed"),
        }
        self.unknown += 1;
        self.pending.push(Pending::Unknown(
            ids.into_iter()
                .enumerate()
                .map(|(i, id)| {
                    json!({"id": id, "category": "home", "product_id": format!("G{i}"), "price": 2.0, "quantity": 1})
                })
                .collect(),
        ));
    }

    /// Sends one sale over TCP while the broker is frozen: it must be answered
    /// `err unknown id="…": ...` (kept to resend with that id), or, once the
    /// breaker opened, refused with nothing published.
    pub async fn tcp_unknown_outcome(&mut self) {
        let mut tcp = LineClient::connect(self.server.tcp_addr()).await;
        let answer = tcp
            .request(
                r#"{"kind":"sale","category":"home","product_id":"T1","price":3.0,"quantity":1}"#,
            )
            .await;
        // Under load the breaker may already be open when this line arrives: then
        // the honest answer is a refusal before anything was published (nothing
        // to resend with an id; the event is not counted).
        if answer.starts_with("err unavailable") && answer.contains("nothing was published") {
            return;
        }
        let rest = answer
            .strip_prefix("err unknown id=")
            .unwrap_or_else(|| panic!("TCP answer while frozen: {answer}"));
        let (id, reason) = rest.split_once(": ").expect("id, then the reason");
        assert!(
            reason.contains("resend this event with this id"),
            "{answer}"
        );
        let id: String = serde_json::from_str(id).expect("the id as a JSON string");
        self.unknown += 1;
        self.pending.push(Pending::Unknown(vec![json!({
            "id": id, "category": "home", "product_id": "T1", "price": 3.0, "quantity": 1
        })]));
    }

    /// True when the last answer was a fast refusal of an open circuit.
    pub fn last_was_circuit_open(&self) -> bool {
        self.answers.last() == Some(&Answer::CircuitOpen)
    }

    /// Every answer so far, in order.
    pub fn answers(&self) -> &[Answer] {
        &self.answers
    }

    /// "Outcome unknown" answers so far.
    pub fn unknown_outcomes(&self) -> usize {
        self.unknown
    }

    /// Events resent with the ids of an "outcome unknown" answer.
    pub fn resent_with_ids(&self) -> usize {
        self.resent_with_ids
    }

    /// Distinct events accepted (each id once).
    pub fn accepted_events(&self) -> usize {
        self.accepted.len()
    }

    /// Resends everything not accepted yet until it is, within `within`.
    pub async fn resend_all(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} batches still not accepted after {within:?}",
                self.pending.len()
            );
            for pending in std::mem::take(&mut self.pending) {
                let (events, with_ids) = match pending {
                    Pending::Refused(events) => (events, false),
                    Pending::Unknown(events) => (events, true),
                };
                let n = events.len();
                let (status, left) = self.post(events).await;
                if status == StatusCode::ACCEPTED && with_ids {
                    self.resent_with_ids += n;
                }
                self.pending.extend(left);
            }
            if !self.pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
