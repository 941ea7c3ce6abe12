//! The router of a receiver-only process: forwards each batch over gRPC to the
//! router role (`--router-url`), with ids and timestamps already stamped so a retry
//! is idempotent: a batch the router cannot be reached for is sent again, with
//! backoff, until the durable-ack deadline. The remote router answers per its own ack mode, so with `durable`
//! a receiver's 202 still means "confirmed by the brokers".
//!
//! The router process checks a forwarded batch again, as it checks any gRPC client's:
//! its gRPC port cannot tell this forwarder from anyone else without a shared secret,
//! and a marker that any client could send would let an outside client skip
//! validation. That check is the typed path only (protobuf → raw events → the
//! rules): no JSON is built or parsed on either side.
//!
//! `router_url` is `grpc://` (or `http://`) for plain gRPC, `grpcs://` (or `https://`)
//! for gRPC over TLS, the router's certificate checked against `router_ca_file` (only
//! its certificates) or else the system's roots.
//!
//! When the router requires credentials, `auth.forward_token_file` names a token
//! (a JWT with the `ingest` scope, or an API key) sent with every batch as
//! `authorization: Bearer …`. The file is re-read every [`TOKEN_REREAD`], so a
//! rotated token (a Kubernetes Secret updated in place) is picked up without a
//! restart.

use crate::transports::grpc::proto::ingest_client::IngestClient;
use crate::transports::grpc::proto::{Sale as SaleMsg, SaleBatch, Tweet as TweetMsg, TweetBatch};
use flujo_actors::backoff::Backoff;
use flujo_actors::breaker::Refused;
use flujo_actors::event::{Events, Sale, Tweet};
use flujo_actors::messages::{Batch, PipelineError, Route};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::{InterceptedService, Interceptor};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

const SINK: &str = "remote router";

/// How often the forward token file is read again.
pub const TOKEN_REREAD: Duration = Duration::from_secs(5);

/// Reads a token file: its text without surrounding whitespace; refuses an empty
/// or unreadable file, or one that cannot be sent as metadata.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{} must hold one token of visible ASCII characters",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

/// Adds `authorization: Bearer <token>` to every forwarded call, when a token file
/// is configured.
#[derive(Clone, Default)]
pub struct BearerToken {
    source: Option<Arc<TokenFile>>,
}

struct TokenFile {
    path: PathBuf,
    /// The header value and when it was read.
    cached: Mutex<Option<(Instant, MetadataValue<Ascii>)>>,
}

impl BearerToken {
    /// The token in `path`, or none.
    pub fn new(path: Option<&Path>) -> Self {
        BearerToken {
            source: path.map(|path| {
                Arc::new(TokenFile {
                    path: path.to_owned(),
                    cached: Mutex::new(None),
                })
            }),
        }
    }
}

impl TokenFile {
    fn value(&self) -> Result<MetadataValue<Ascii>, Status> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, value)) = cached.as_ref() {
            if at.elapsed() < TOKEN_REREAD {
                return Ok(value.clone());
            }
        }
        let fresh = read_token(&self.path)
            .and_then(|token| {
                format!("Bearer {token}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| {
                tracing::warn!(error = %e, "auth.forward_token_file");
                Status::unauthenticated(format!("forward token unreadable: {e}"))
            });
        match fresh {
            Ok(value) => {
                *cached = Some((Instant::now(), value.clone()));
                Ok(value)
            }
            // The last good token, while the file is being replaced.
            Err(e) => cached.as_ref().map(|(_, v)| v.clone()).ok_or(e),
        }
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(source) = &self.source {
            request
                .metadata_mut()
                .insert("authorization", source.value()?);
        }
        Ok(request)
    }
}

/// Forwards batches to a remote router.
pub struct RemoteRouter {
    client: Client,
    deadline: Duration,
}

/// The gRPC client of the remote router, sending the forward token with each call.
type Client = IngestClient<InterceptedService<Channel, BearerToken>>;

/// What one attempt to forward came to.
enum Attempt {
    Done(Result<(), PipelineError>),
    /// The router was not reached or dropped the call: worth another try.
    Retry(String),
}

impl RemoteRouter {
    /// A forwarder over `channel` (see [`channel`]) sending `token` with each batch;
    /// the channel connects lazily and reconnects by itself. A batch the router
    /// cannot be reached for is sent again, with backoff and the same ids, until
    /// `deadline` passed.
    pub fn new(channel: Channel, token: BearerToken, deadline: Duration) -> Self {
        RemoteRouter {
            client: IngestClient::with_interceptor(channel, token),
            deadline,
        }
    }

    /// Sends `batch` to the remote router; resolves with its answer. Retries (same
    /// events, same ids: idempotent) while the router is unreachable, within the
    /// deadline; past it the outcome is unknown.
    fn forward(&self, batch: Batch) -> impl Future<Output = Result<(), PipelineError>> + 'static {
        let client = self.client.clone();
        let deadline = self.deadline;
        async move {
            let until = Instant::now() + deadline;
            let mut backoff = Backoff::request();
            let mut tries = 0u32;
            loop {
                tries += 1;
                let left = until.saturating_duration_since(Instant::now());
                let reason = match attempt(client.clone(), &batch, left).await {
                    Attempt::Done(result) => return result,
                    Attempt::Retry(reason) => reason,
                };
                let pause = backoff.next_delay();
                if Instant::now() + pause >= until {
                    return Err(PipelineError::SinkUnavailable {
                        sink: SINK,
                        reason: format!(
                            "{reason} ({tries} tries within {} ms)",
                            deadline.as_millis()
                        ),
                    });
                }
                tracing::debug!(%reason, tries, "forward failed; sending again with the same ids");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// One call to the remote router, with `left` as its `grpc-timeout`.
async fn attempt(mut client: Client, batch: &Batch, left: Duration) -> Attempt {
    let result = match batch.events.as_ref() {
        Events::Sales(sales) => {
            let sales = sales.iter().map(sale_message).collect();
            let mut request = Request::new(SaleBatch { sales });
            request.set_timeout(left);
            client.publish_sales(request).await
        }
        Events::Tweets(tweets) => {
            let tweets = tweets.iter().map(tweet_message).collect();
            let mut request = Request::new(TweetBatch { tweets });
            request.set_timeout(left);
            client.publish_tweets(request).await
        }
    };
    let status = match result {
        Ok(_) => return Attempt::Done(Ok(())),
        Err(status) => status,
    };
    let meta = status.metadata();
    let retry_after = meta
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let unknown = meta.get("flujo-outcome").is_some();
    let reason = format!(
        "{}: {}",
        crate::transports::grpc::code_name(status.code()),
        status.message()
    );
    Attempt::Done(Err(match status.code() {
        Code::ResourceExhausted => PipelineError::Backpressure(status.message().to_owned()),
        // The router's breaker is open: nothing was published; no point retrying.
        Code::Unavailable if retry_after.is_some() => PipelineError::CircuitOpen(Refused {
            sink: SINK,
            retry_after: Duration::from_secs(retry_after.unwrap_or(1)),
            last_error: status.message().to_owned(),
        }),
        // Not reached, or the call dropped on the way: the same ids again.
        Code::Unavailable | Code::Cancelled | Code::Unknown if !unknown => {
            return Attempt::Retry(reason)
        }
        _ => PipelineError::SinkUnavailable { sink: SINK, reason },
    }))
}

flujo_actors::pass_batches_on!(RemoteRouter, Route, forward);

/// `url` as tonic takes it (`grpc://` → `http://`, `grpcs://` → `https://`), and
/// whether it is over TLS.
pub fn router_uri(url: &str) -> Result<(String, bool), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` needs a scheme: grpc:// or grpcs://"))?;
    match scheme.to_ascii_lowercase().as_str() {
        "grpc" | "http" => Ok((format!("http://{rest}"), false)),
        "grpcs" | "https" => Ok((format!("https://{rest}"), true)),
        other => Err(format!(
            "unknown scheme `{other}` in `{url}`: use grpc:// (or http://) for plain gRPC, \
             grpcs:// (or https://) for gRPC over TLS"
        )),
    }
}

/// A lazily connecting gRPC channel to the router at `url` (see [`router_uri`]);
/// over TLS, the router's certificate is checked against `ca_file` (only its
/// certificates), else the system's roots.
pub fn channel(url: &str, ca_file: Option<&Path>) -> anyhow::Result<Channel> {
    let (uri, tls) = router_uri(url).map_err(anyhow::Error::msg)?;
    let mut endpoint = Endpoint::from_shared(uri)?
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(2));
    if tls {
        endpoint = endpoint.tls_config(crate::transports::tls::grpc_client_tls(ca_file)?)?;
    }
    Ok(endpoint.connect_lazy())
}

fn sale_message(s: &Sale) -> SaleMsg {
    SaleMsg {
        id: s.id.clone(),
        ts: s.ts,
        category: s.category.code() as i32,
        product_id: s.product_id.clone(),
        price: s.price,
        quantity: s.quantity as i64,
    }
}

fn tweet_message(t: &Tweet) -> TweetMsg {
    TweetMsg {
        id: t.id.clone(),
        ts: t.ts,
        location: t.location.clone(),
        weather: t.weather.code() as i32,
        temperature: t.temperature,
        humidity: t.humidity,
        text: t.text.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flujo_actors::event::protobuf::{raw_sale, raw_tweet};
    use flujo_actors::event::{Category, ReceiveStamp, Weather};

    #[test]
    fn router_urls_name_plain_or_tls_grpc() {
        let uri = |url| router_uri(url);
        assert_eq!(uri("grpc://r:1"), Ok(("http://r:1".into(), false)));
        assert_eq!(uri("http://r:1"), Ok(("http://r:1".into(), false)));
        assert_eq!(uri("grpcs://r:1"), Ok(("https://r:1".into(), true)));
        assert_eq!(uri("HTTPS://r:1"), Ok(("https://r:1".into(), true)));
        assert!(uri("r:1").is_err());
        assert!(uri("tcp://r:1").expect_err("scheme").contains("grpcs://"));
    }

    #[test]
    fn canonical_events_become_protos_with_their_ids() {
        let s = Sale {
            id: "s1".into(),
            ts: 7,
            category: Category::Beauty,
            product_id: "P".into(),
            price: 1.5,
            quantity: 3,
        };
        let m = sale_message(&s);
        assert_eq!(
            (m.id.as_str(), m.ts, m.category, m.quantity),
            ("s1", 7, 4, 3)
        );
        let t = Tweet {
            id: "t1".into(),
            ts: 8,
            location: "Mixco".into(),
            weather: Weather::Sunny,
            temperature: 20.0,
            humidity: 40.0,
            text: None,
        };
        let m = tweet_message(&t);
        assert_eq!((m.weather, m.text.as_str()), (1, ""));
        // And back through the gRPC receiver's conversion and the rules: the same
        // events, nothing stamped anew.
        let stamp = &mut ReceiveStamp::now();
        let back = raw_tweet(m).validate(stamp).expect("valid");
        assert_eq!(back, t);
        let back = raw_sale(sale_message(&s)).validate(stamp);
        assert_eq!(back, Ok(s));
    }
}
