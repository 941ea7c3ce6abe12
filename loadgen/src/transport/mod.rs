//! How a batch travels to the target, and what one attempt to deliver it
//! came back with. The load logic (scheduling, retries, truth) only sees
//! [`Encoded`] batches and [`Answer`]s, whatever the [`Transport`]:
//!
//! - `http.rs`: `POST /v1/sales` and `/v1/tweets`, JSON or NDJSON bodies;
//! - `grpc.rs`: the unary `PublishSales` / `PublishTweets` calls of
//!   `flujo.v1.Ingest`, over a few multiplexed HTTP/2 channels;
//! - `tcp.rs`: one JSON line per event on a pool of connections, one answer
//!   line per event.
//!
//! Over `https://` and `grpcs://` targets the server's certificate is checked
//! against `--ca-file` (only its certificates) or else the system's roots
//! ([`http_roots`], [`grpc_tls`]).
//!
//! HTTP and gRPC batches are atomic: one [`Attempt`] answers for every event
//! ([`Answer::Whole`]). Over TCP every event is answered on its own
//! ([`Answer::PerEvent`]): some may be stored while others are refused.

mod grpc;
mod http;
mod tcp;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
pub use flujo_actors::messages::Transport;
use tonic::transport::{Certificate, ClientTlsConfig};

pub use grpc::GrpcSender;
pub use http::HttpSender;
pub use tcp::TcpSender;

use super::generate::Batch;
use flujo_actors::event::Kind;

/// Per-attempt time limit of one request (or one TCP exchange).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait honoured from a `Retry-After` header.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The port assumed when a target of `transport` names none.
pub fn default_port(transport: Transport) -> u16 {
    match transport {
        Transport::Http => 8080,
        Transport::Grpc => 50051,
        Transport::Tcp => 7070,
    }
}

/// Parser of `--transport`: `http`, `grpc` or `tcp`, each with its help line.
pub fn transport_parser() -> impl TypedValueParser<Value = Transport> {
    PossibleValuesParser::new([
        PossibleValue::new("http").help(
            "`POST /v1/sales` and `POST /v1/tweets` (JSON or NDJSON bodies); target \
             `http://host:port`",
        ),
        PossibleValue::new("grpc").help(
            "`flujo.v1.Ingest/PublishSales` and `PublishTweets`, one call per batch; target \
             `grpc://host:port`",
        ),
        PossibleValue::new("tcp")
            .help("Newline-delimited JSON events, one answer line each; target `tcp://host:port`"),
    ])
    .map(|name| match name.as_str() {
        "grpc" => Transport::Grpc,
        "tcp" => Transport::Tcp,
        _ => Transport::Http,
    })
}

/// The schemes of `transport`'s targets: plain, then over TLS (none for TCP).
pub fn schemes(transport: Transport) -> &'static [&'static str] {
    match transport {
        Transport::Http => &["http", "https"],
        Transport::Grpc => &["grpc", "grpcs"],
        Transport::Tcp => &["tcp"],
    }
}

/// Whether `target` is reached over TLS (`https://` or `grpcs://`).
pub fn over_tls(target: &str) -> bool {
    target.split_once("://").is_some_and(|(scheme, _)| {
        matches!(scheme.to_ascii_lowercase().as_str(), "https" | "grpcs")
    })
}

/// The PEM text of the CA file at `path` and its certificates, each of which
/// must parse: an unusable file is refused here, not at the first handshake.
fn ca_bundle(path: &Path) -> anyhow::Result<(Vec<u8>, Vec<reqwest::Certificate>)> {
    let pem = std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("CA file {} is not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!("CA file {} holds no PEM certificate", path.display());
    }
    Ok((pem, certs))
}

/// An HTTP client builder trusting exactly the certificates of `ca_file` (when
/// given; else the system's roots). flujo's own HTTP clients (`flujo ping`) use it
/// too.
pub fn http_roots(
    builder: reqwest::ClientBuilder,
    ca_file: Option<&Path>,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let Some(path) = ca_file else {
        return Ok(builder);
    };
    let (_, certs) = ca_bundle(path)?;
    let mut builder = builder.tls_built_in_root_certs(false);
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

/// The TLS settings of a gRPC client: trusting exactly the certificates of
/// `ca_file`, else the system's roots. flujo's own gRPC clients (the forward to
/// the router, `flujo ping`) use it too.
pub fn grpc_tls(ca_file: Option<&Path>) -> anyhow::Result<ClientTlsConfig> {
    let tls = ClientTlsConfig::new();
    Ok(match ca_file {
        Some(path) => tls.ca_certificate(Certificate::from_pem(ca_bundle(path)?.0)),
        None => tls.with_native_roots(),
    })
}

/// `host:port` of a `grpc://`, `grpcs://` or `tcp://` target (the transport's
/// default port when it names none); an error for a target of another scheme,
/// or one with a path, credentials, query or fragment.
pub fn host_port(transport: Transport, target: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(target).with_context(|| format!("parsing target `{target}`"))?;
    let scheme = url.scheme();
    if !schemes(transport).contains(&scheme) {
        let wanted: Vec<String> = schemes(transport)
            .iter()
            .map(|s| format!("{s}://host:port"))
            .collect();
        bail!(
            "--transport {} needs a {} target, got `{target}`",
            transport.as_str(),
            wanted.join(" or ")
        );
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        bail!("target `{target}` names no host");
    };
    if !matches!(url.path(), "" | "/")
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        bail!("target `{target}` must be just {scheme}://host:port");
    }
    let port = url.port().unwrap_or(default_port(transport));
    Ok(format!("{host}:{port}"))
}

/// A batch serialized once for one transport, ready to be sent (and resent)
/// as is.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Kind of the events, which selects the endpoint or call.
    pub kind: Kind,
    /// Number of events.
    pub events: usize,
    /// What goes on the wire.
    pub payload: Payload,
}

/// The transport-specific form of an [`Encoded`] batch.
#[derive(Debug, Clone)]
pub enum Payload {
    /// An HTTP request body.
    Http(http::Body),
    /// A `SaleBatch` or `TweetBatch` message.
    Grpc(grpc::Message),
    /// One JSON line per event.
    Tcp(tcp::Lines),
}

/// Serializes `batch` for `transport`. `ndjson` selects the HTTP body
/// format (see [`http::encode`]) and is ignored by the other transports.
pub fn encode(batch: &Batch, transport: Transport, ndjson: bool) -> anyhow::Result<Encoded> {
    let payload = match transport {
        Transport::Http => Payload::Http(http::encode(batch, ndjson)?),
        Transport::Grpc => Payload::Grpc(grpc::encode(batch)?),
        Transport::Tcp => Payload::Tcp(tcp::encode(batch)?),
    };
    Ok(Encoded {
        kind: batch.kind(),
        events: batch.len(),
        payload,
    })
}

/// What one attempt to deliver a batch (or one event of it) came back with.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// Stored: a 202, an `Ack` or an `ok` matching what was sent.
    Accepted,
    /// The server is pushing back (HTTP 429/503, gRPC RESOURCE_EXHAUSTED or
    /// UNAVAILABLE, TCP `err busy`/`err unavailable`); nothing was stored and
    /// the same events may be sent again.
    Backpressure {
        /// Status or error kind, used as the error key in the report.
        label: String,
        /// The server's `Retry-After`, capped at [`MAX_RETRY_AFTER`].
        retry_after: Option<Duration>,
    },
    /// Refused; nothing was stored.
    Rejected {
        /// Status or error kind, used as the error key in the report.
        label: String,
        /// A server error (HTTP 5xx, gRPC INTERNAL, ...) worth a few retries,
        /// as opposed to a refusal of the events themselves (HTTP 4xx, gRPC
        /// INVALID_ARGUMENT, TCP `err <reason>`).
        transient: bool,
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

/// The outcome of one attempt to deliver a whole batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// One outcome for every event of the batch (HTTP and gRPC batches are
    /// stored or refused whole).
    Whole(Attempt),
    /// One outcome per event, in the batch's order (TCP answers each line).
    PerEvent(Vec<Attempt>),
}

/// Sends encoded batches over the selected transport (cheap to clone).
#[derive(Debug, Clone)]
pub enum Sender {
    /// Over HTTP.
    Http(Arc<HttpSender>),
    /// Over gRPC.
    Grpc(Arc<GrpcSender>),
    /// Over raw TCP.
    Tcp(Arc<TcpSender>),
}

impl Sender {
    /// A sender for `transport` to `target`, keeping up to `connections`
    /// requests in flight (and connections open); over TLS, the server's
    /// certificate is checked against `ca_file` (else the system's roots).
    pub fn new(
        transport: Transport,
        target: &str,
        connections: usize,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        Ok(match transport {
            Transport::Http => {
                Sender::Http(Arc::new(HttpSender::new(target, connections, ca_file)?))
            }
            Transport::Grpc => Sender::Grpc(Arc::new(GrpcSender::new(
                &host_port(transport, target)?,
                connections,
                over_tls(target).then(|| grpc_tls(ca_file)).transpose()?,
            )?)),
            Transport::Tcp => Sender::Tcp(Arc::new(TcpSender::new(
                &host_port(transport, target)?,
                connections,
            ))),
        })
    }

    /// The transport this sender speaks.
    pub fn transport(&self) -> Transport {
        match self {
            Sender::Http(_) => Transport::Http,
            Sender::Grpc(_) => Transport::Grpc,
            Sender::Tcp(_) => Transport::Tcp,
        }
    }

    /// Serializes `batch` for this sender's transport.
    pub fn encode(&self, batch: &Batch, ndjson: bool) -> anyhow::Result<Encoded> {
        encode(batch, self.transport(), ndjson)
    }

    /// One attempt to deliver `batch`, which must have been encoded for this
    /// sender's transport (else it is not sent).
    pub async fn send(&self, batch: &Encoded) -> Answer {
        match (self, &batch.payload) {
            (Sender::Http(s), Payload::Http(body)) => {
                Answer::Whole(s.send(batch.kind, batch.events, body).await)
            }
            (Sender::Grpc(s), Payload::Grpc(message)) => Answer::Whole(s.send(message).await),
            (Sender::Tcp(s), Payload::Tcp(lines)) => s.send(lines).await,
            _ => Answer::Whole(Attempt::NotSent {
                label: "wrong-encoding",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::sale;
    use super::*;

    #[test]
    fn targets_map_to_host_and_port() {
        let hp = |t, s| host_port(t, s).map_err(|e| e.to_string());
        assert_eq!(
            hp(Transport::Grpc, "grpc://127.0.0.1:50051"),
            Ok("127.0.0.1:50051".into())
        );
        assert_eq!(
            hp(Transport::Tcp, "tcp://localhost/"),
            Ok("localhost:7070".into())
        );
        assert_eq!(hp(Transport::Tcp, "tcp://[::1]:9"), Ok("[::1]:9".into()));
        assert!(hp(Transport::Tcp, "grpc://127.0.0.1:1").is_err());
        assert!(hp(Transport::Grpc, "127.0.0.1:50051").is_err());
        assert!(hp(Transport::Grpc, "grpc://h:1/v1/sales").is_err());
        assert_eq!(hp(Transport::Grpc, "grpcs://h"), Ok("h:50051".into()));
        assert!(hp(Transport::Tcp, "tcps://h:1").is_err());
        assert!(over_tls("grpcs://h:1") && over_tls("HTTPS://h") && !over_tls("grpc://h:1"));
    }

    #[tokio::test]
    async fn encoding_follows_the_sender() {
        let batch = Batch::Sales(vec![sale("home", "P1", 1.5, 2)]);
        for transport in [Transport::Http, Transport::Grpc, Transport::Tcp] {
            let target = format!("{}://127.0.0.1:9", transport.as_str());
            let sender = Sender::new(transport, &target, 1, None).expect("sender");
            assert_eq!(sender.transport(), transport);
            let enc = sender.encode(&batch, false).expect("encode");
            assert_eq!((enc.kind, enc.events), (Kind::Sale, 1));
            let matches = matches!(
                (transport, &enc.payload),
                (Transport::Http, Payload::Http(_))
                    | (Transport::Grpc, Payload::Grpc(_))
                    | (Transport::Tcp, Payload::Tcp(_))
            );
            assert!(matches, "{transport:?}: {:?}", enc.payload);
        }
        let http = Sender::new(Transport::Http, "http://127.0.0.1:9", 1, None).expect("sender");
        let tcp = encode(&batch, Transport::Tcp, false).expect("encode");
        assert_eq!(
            http.send(&tcp).await,
            Answer::Whole(Attempt::NotSent {
                label: "wrong-encoding"
            })
        );
    }
}
