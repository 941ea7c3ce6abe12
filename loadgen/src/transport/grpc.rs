//! The gRPC transport: one unary `flujo.v1.Ingest/PublishSales` or
//! `PublishTweets` call per batch, answered with an `Ack` or a status.
//! Concurrency is the number of calls in flight, multiplexed over a few
//! HTTP/2 channels (connections) used in turn.

use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use flujo_proto::code_name;
use flujo_proto::v1::{self as proto, ingest_client::IngestClient, Ack, SaleBatch, TweetBatch};

use super::super::generate::{Batch, Sale, Tweet, CATEGORIES, WEATHERS};
use super::{Attempt, REQUEST_TIMEOUT};

/// Calls in flight per channel before another channel is opened.
const CALLS_PER_CHANNEL: usize = 32;

/// Most channels opened.
const MAX_CHANNELS: usize = 8;

/// A batch as the request message of its call.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// For `PublishSales`.
    Sales(SaleBatch),
    /// For `PublishTweets`.
    Tweets(TweetBatch),
}

impl Message {
    /// Number of events.
    pub fn len(&self) -> usize {
        match self {
            Message::Sales(b) => b.sales.len(),
            Message::Tweets(b) => b.tweets.len(),
        }
    }

    /// Whether `ids` are the ids of the events, in order.
    fn has_ids(&self, ids: &[String]) -> bool {
        match self {
            Message::Sales(b) => b.sales.iter().map(|s| &s.id).eq(ids),
            Message::Tweets(b) => b.tweets.iter().map(|t| &t.id).eq(ids),
        }
    }
}

/// The request message of `batch`.
pub fn encode(batch: &Batch) -> anyhow::Result<Message> {
    Ok(match batch {
        Batch::Sales(v) => Message::Sales(SaleBatch {
            sales: v.iter().map(sale_message).collect::<anyhow::Result<_>>()?,
        }),
        Batch::Tweets(v) => Message::Tweets(TweetBatch {
            tweets: v.iter().map(tweet_message).collect::<anyhow::Result<_>>()?,
        }),
    })
}

/// Position + 1 of `name` in `names`: the proto enum value (0 is
/// UNSPECIFIED).
fn enum_value(names: &[&str], name: &str, what: &str) -> anyhow::Result<i32> {
    match names.iter().position(|n| *n == name) {
        Some(i) => Ok(i32::try_from(i + 1)?),
        None => bail!("{what} `{name}` has no proto value"),
    }
}

/// One sale as a proto message, with its `ts`.
pub fn sale_message(s: &Sale) -> anyhow::Result<proto::Sale> {
    Ok(proto::Sale {
        id: s.id.clone(),
        ts: s.ts,
        category: enum_value(&CATEGORIES, s.category, "category")?,
        product_id: s.product_id.clone(),
        price: s.price,
        quantity: i64::try_from(s.quantity).context("quantity out of range")?,
    })
}

/// One tweet as a proto message; `ts` is left to the receiver (0), and no
/// text is the empty string.
pub fn tweet_message(t: &Tweet) -> anyhow::Result<proto::Tweet> {
    Ok(proto::Tweet {
        id: t.id.clone(),
        ts: 0,
        location: t.location.to_string(),
        weather: enum_value(&WEATHERS, t.weather, "weather")?,
        temperature: t.temperature,
        humidity: t.humidity,
        text: t.text.clone().unwrap_or_default(),
    })
}

/// Calls `flujo.v1.Ingest` on one target.
#[derive(Debug)]
pub struct GrpcSender {
    clients: Vec<IngestClient<Channel>>,
    next: AtomicUsize,
}

impl GrpcSender {
    /// A sender to `host_port` for up to `calls` calls in flight, over TLS
    /// with `tls`. Channels connect lazily (and reconnect) on their first call.
    pub fn new(
        host_port: &str,
        calls: usize,
        tls: Option<ClientTlsConfig>,
    ) -> anyhow::Result<Self> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{host_port}"))
            .with_context(|| format!("gRPC endpoint {scheme}://{host_port}"))?
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT);
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).context("gRPC over TLS")?;
        }
        let channels = calls.div_ceil(CALLS_PER_CHANNEL).clamp(1, MAX_CHANNELS);
        let clients = (0..channels)
            .map(|_| IngestClient::new(endpoint.connect_lazy()))
            .collect();
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// One call delivering `message`, on the next channel in turn.
    pub async fn send(&self, message: &Message) -> Attempt {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(client) = self.clients.get(turn % self.clients.len().max(1)) else {
            return Attempt::NotSent { label: "connect" };
        };
        let mut client = client.clone();
        let result = match message {
            Message::Sales(b) => client.publish_sales(b.clone()).await,
            Message::Tweets(b) => client.publish_tweets(b.clone()).await,
        };
        match result {
            Ok(response) => classify_ack(response.get_ref(), message),
            Err(status) => classify_status(&status),
        }
    }
}

/// An `Ack` is an acceptance when it counts and names every event sent.
pub fn classify_ack(ack: &Ack, sent: &Message) -> Attempt {
    if usize::try_from(ack.accepted).is_ok_and(|n| n == sent.len()) && sent.has_ids(&ack.ids) {
        Attempt::Accepted
    } else {
        Attempt::Unknown {
            label: "ack-mismatch",
        }
    }
}

/// A failed call. A status the client made up from a local error (it has a
/// source) says nothing about the server: a connection that could not be
/// made is `NotSent`, anything else (timeout, connection lost) `Unknown`.
/// A status from the server: RESOURCE_EXHAUSTED and UNAVAILABLE are
/// backpressure, INTERNAL, UNKNOWN and ABORTED transient, DEADLINE_EXCEEDED
/// and CANCELLED unknown, the rest (INVALID_ARGUMENT, ...) final. The label
/// is the code's name.
pub fn classify_status(status: &Status) -> Attempt {
    if let Some(source) = status.source() {
        return classify_local_error(source);
    }
    let label = code_name(status.code()).to_string();
    match status.code() {
        Code::ResourceExhausted | Code::Unavailable => Attempt::Backpressure {
            label,
            retry_after: None,
        },
        Code::Internal | Code::Unknown | Code::Aborted => Attempt::Rejected {
            label,
            transient: true,
        },
        Code::DeadlineExceeded => Attempt::Unknown { label: "timeout" },
        Code::Cancelled => Attempt::Unknown { label: "cancelled" },
        _ => Attempt::Rejected {
            label,
            transient: false,
        },
    }
}

/// A client-side error, by what its source chain holds.
fn classify_local_error(error: &(dyn Error + 'static)) -> Attempt {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<tonic::ConnectError>() {
            return Attempt::NotSent { label: "connect" };
        }
        if e.is::<tonic::TimeoutExpired>() {
            return Attempt::Unknown { label: "timeout" };
        }
        next = e.source();
    }
    Attempt::Unknown { label: "transport" }
}

#[cfg(test)]
mod tests {
    use super::super::super::fixtures::{sale, tweet};
    use super::*;
    use proto::Category;

    #[test]
    fn sales_become_proto_messages() {
        let mut s = sale("home", "P7", 12.5, 3);
        s.id = "lg1-s0".into();
        s.ts = 1_700_000_000_123;
        let m = sale_message(&s).expect("encode");
        assert_eq!(
            m,
            proto::Sale {
                id: "lg1-s0".into(),
                ts: 1_700_000_000_123,
                category: Category::Home as i32,
                product_id: "P7".into(),
                price: 12.5,
                quantity: 3,
            }
        );
        for (i, c) in CATEGORIES.iter().enumerate() {
            let m = sale_message(&sale(c, "P1", 1.0, 1)).expect("encode");
            assert_eq!(m.category, i as i32 + 1);
        }
        assert_eq!(
            sale_message(&sale("electronics", "P", 1.0, 1))
                .expect("encode")
                .category,
            Category::Electronics as i32
        );
        assert_eq!(
            sale_message(&sale("beauty", "P", 1.0, 1))
                .expect("encode")
                .category,
            Category::Beauty as i32
        );
        assert!(sale_message(&sale("toys", "P1", 1.0, 1)).is_err());
    }

    #[test]
    fn tweets_become_proto_messages() {
        let mut t = tweet("Lima", "foggy", -2.5, 80.0);
        let m = tweet_message(&t).expect("encode");
        assert_eq!(m.location, "Lima");
        assert_eq!(m.weather, proto::Weather::Foggy as i32);
        assert_eq!((m.temperature, m.humidity, m.ts), (-2.5, 80.0, 0));
        assert_eq!((m.id.as_str(), m.text.as_str()), (t.id.as_str(), ""));
        t.text = Some("coffee weather".into());
        assert_eq!(tweet_message(&t).expect("encode").text, "coffee weather");
        for (w, code) in [("sunny", 1), ("cloudy", 2), ("rainy", 3), ("snowy", 5)] {
            assert_eq!(
                tweet_message(&tweet("Oslo", w, 0.0, 0.0))
                    .expect("encode")
                    .weather,
                code
            );
        }
        assert_eq!(
            tweet_message(&tweet("Oslo", "stormy", 0.0, 0.0))
                .expect("encode")
                .weather,
            proto::Weather::Stormy as i32
        );
    }

    #[test]
    fn batches_keep_their_kind_and_order() {
        let b = Batch::Tweets(vec![
            tweet("Lima", "sunny", 1.0, 2.0),
            tweet("Oslo", "rainy", 3.0, 4.0),
        ]);
        let Message::Tweets(m) = encode(&b).expect("encode") else {
            panic!("tweets expected");
        };
        let locations: Vec<_> = m.tweets.iter().map(|t| t.location.as_str()).collect();
        assert_eq!(locations, ["Lima", "Oslo"]);
        let m = encode(&Batch::Sales(vec![sale("home", "P1", 1.0, 1)])).expect("encode");
        assert!(matches!(m, Message::Sales(_)));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn acks_must_match_the_batch() {
        let m = encode(&Batch::Sales(vec![
            sale("home", "P1", 1.0, 1),
            sale("home", "P2", 1.0, 1),
        ]))
        .expect("encode");
        let Message::Sales(b) = &m else {
            panic!("sales expected");
        };
        let ids: Vec<String> = b.sales.iter().map(|s| s.id.clone()).collect();
        let ack = |accepted, ids: &[String]| Ack {
            accepted,
            ids: ids.to_vec(),
            ..Ack::default()
        };
        assert_eq!(classify_ack(&ack(2, &ids), &m), Attempt::Accepted);
        let mismatch = Attempt::Unknown {
            label: "ack-mismatch",
        };
        assert_eq!(classify_ack(&ack(1, &ids), &m), mismatch);
        assert_eq!(classify_ack(&ack(2, &ids[..1]), &m), mismatch);
        let swapped = [ids[1].clone(), ids[0].clone()];
        assert_eq!(classify_ack(&ack(2, &swapped), &m), mismatch);
    }

    #[test]
    fn server_statuses_are_classified_by_code() {
        let backpressure = |label: &str| Attempt::Backpressure {
            label: label.into(),
            retry_after: None,
        };
        let rejected = |label: &str, transient| Attempt::Rejected {
            label: label.into(),
            transient,
        };
        for (status, want) in [
            (
                Status::resource_exhausted("full"),
                backpressure("RESOURCE_EXHAUSTED"),
            ),
            (
                Status::unavailable("sink down"),
                backpressure("UNAVAILABLE"),
            ),
            (
                Status::invalid_argument("event 0: bad price"),
                rejected("INVALID_ARGUMENT", false),
            ),
            (Status::internal("oops"), rejected("INTERNAL", true)),
            (
                Status::deadline_exceeded("late"),
                Attempt::Unknown { label: "timeout" },
            ),
        ] {
            assert_eq!(classify_status(&status), want, "{status:?}");
        }
    }

    #[test]
    fn local_errors_are_classified_by_source() {
        let connect: Box<dyn Error + Send + Sync> = Box::new(tonic::ConnectError(Box::new(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        )));
        let status = Status::from_error(connect);
        assert_eq!(status.code(), Code::Unavailable, "not server backpressure");
        assert_eq!(
            classify_status(&status),
            Attempt::NotSent { label: "connect" }
        );
        let timeout = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(
            classify_status(&timeout),
            Attempt::Unknown { label: "timeout" }
        );
        let other = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(
            classify_status(&other),
            Attempt::Unknown { label: "transport" }
        );
    }

    #[tokio::test]
    async fn an_unreachable_target_is_not_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let sender = GrpcSender::new(&addr.to_string(), 100, None).expect("sender");
        assert_eq!(sender.clients.len(), 4);
        let m = encode(&Batch::Sales(vec![sale("home", "P1", 1.0, 1)])).expect("encode");
        assert_eq!(sender.send(&m).await, Attempt::NotSent { label: "connect" });
    }
}
