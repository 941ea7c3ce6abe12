//! `flujo ping`: the latency challenge. Sends stimuli one after another over one
//! connection and measures stimulus → response: `ping` → `pong` over TCP,
//! `GET /healthz` over HTTP, `grpc.health.v1.Health/Check` over gRPC. Each also
//! over TLS (`tcps://`, `https://`, `grpcs://`), the listener's certificate checked
//! against `--ca-file` (only its certificates) or else the system's roots.

use crate::transports::{forward, tls};
use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use rustls::pki_types::ServerName;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Arguments of `flujo ping`.
#[derive(Debug, Clone, clap::Args)]
pub struct PingArgs {
    /// Where to send stimuli: tcp://HOST:PORT, http://HOST:PORT or grpc://HOST:PORT,
    /// or over TLS tcps://, https://, grpcs://; repeat for several. Default: flujo's
    /// three local ports.
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// PEM file of the CA certificates a TLS target's certificate is checked against
    /// (only those); default: the system's roots.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Stimuli per target.
    #[arg(short = 'n', long = "count", default_value_t = 1000)]
    pub count: u64,
    /// Stimuli sent first and not measured (connection set-up, caches).
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// Give up on one stimulus after this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Latency of one target, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct PingReport {
    /// The target pinged.
    pub target: String,
    /// Stimuli measured.
    pub count: u64,
    /// Stimuli that failed or timed out.
    pub errors: u64,
    /// Fastest answer.
    pub min_ms: f64,
    /// Mean answer.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest answer.
    pub max_ms: f64,
}

/// A byte stream of the line protocol, in plain text or inside TLS.
trait LineStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> LineStream for T {}

/// One connection that answers stimuli.
enum Prober {
    Tcp(BufReader<Box<dyn LineStream>>, String),
    Http(reqwest::Client, String),
    Grpc(HealthClient<tonic::transport::Channel>),
}

impl Prober {
    async fn connect(target: &str, ca_file: Option<&Path>) -> anyhow::Result<Prober> {
        let (scheme, rest) = target.split_once("://").with_context(|| {
            format!("target `{target}` needs a scheme: tcp://, http:// or grpc:// (tcps://, https://, grpcs:// over TLS)")
        })?;
        let rest = rest.trim_end_matches('/');
        match scheme {
            "tcp" | "tcps" => {
                let stream = TcpStream::connect(rest)
                    .await
                    .with_context(|| format!("cannot connect to {target}"))?;
                stream.set_nodelay(true)?;
                let stream: Box<dyn LineStream> = if scheme == "tcps" {
                    let connector = TlsConnector::from(tls::client_config(ca_file)?);
                    let host = rest.rsplit_once(':').map_or(rest, |(host, _)| host);
                    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                        .with_context(|| format!("`{host}` is not a host name"))?;
                    Box::new(
                        connector
                            .connect(name, stream)
                            .await
                            .with_context(|| format!("TLS handshake with {target}"))?,
                    )
                } else {
                    Box::new(stream)
                };
                Ok(Prober::Tcp(BufReader::new(stream), String::new()))
            }
            "http" | "https" => {
                let builder = reqwest::Client::builder().tcp_nodelay(true);
                Ok(Prober::Http(
                    tls::http_client_roots(builder, ca_file)?.build()?,
                    format!("{scheme}://{rest}/healthz"),
                ))
            }
            "grpc" | "grpcs" => {
                let (uri, over_tls) = forward::router_uri(&format!("{scheme}://{rest}"))
                    .map_err(anyhow::Error::msg)?;
                let mut endpoint = tonic::transport::Endpoint::from_shared(uri)?.tcp_nodelay(true);
                if over_tls {
                    endpoint = endpoint.tls_config(tls::grpc_client_tls(ca_file)?)?;
                }
                let channel = endpoint
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to {target}"))?;
                Ok(Prober::Grpc(HealthClient::new(channel)))
            }
            other => bail!(
                "unknown scheme `{other}` in `{target}`; use tcp, http or grpc (tcps, https, grpcs over TLS)"
            ),
        }
    }

    async fn stimulus(&mut self) -> anyhow::Result<()> {
        match self {
            Prober::Tcp(stream, line) => {
                stream.get_mut().write_all(b"ping\n").await?;
                line.clear();
                stream.read_line(line).await?;
                if line.trim_end() != "pong" {
                    bail!("expected `pong`, got `{}`", line.trim_end());
                }
            }
            Prober::Http(client, url) => {
                let status = client.get(url.as_str()).send().await?.status();
                if !status.is_success() {
                    bail!("GET /healthz answered {status}");
                }
            }
            Prober::Grpc(client) => {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

/// Pings one target `count` times.
pub async fn ping(target: &str, args: &PingArgs) -> anyhow::Result<PingReport> {
    let ca_file = args.ca_file.as_deref();
    let mut prober = Prober::connect(target, ca_file).await?;
    let limit = Duration::from_millis(args.timeout_ms);
    for _ in 0..args.warmup {
        tokio::time::timeout(limit, prober.stimulus())
            .await
            .context("warm-up stimulus timed out")??;
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut errors = 0;
    let mut last_error = None;
    for _ in 0..args.count {
        let started = Instant::now();
        match tokio::time::timeout(limit, prober.stimulus()).await {
            Ok(Ok(())) => histogram.saturating_record(started.elapsed().as_nanos() as u64),
            failed => {
                last_error = Some(match failed {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => format!("no answer within {} ms", args.timeout_ms),
                });
                errors += 1;
                // A failed stimulus may leave an answer in flight: start afresh.
                prober = Prober::connect(target, ca_file).await?;
            }
        }
    }
    if let Some(e) = last_error {
        eprintln!(
            "flujo ping: {target}: {errors} of {} stimuli failed; the last: {e}",
            args.count
        );
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    Ok(PingReport {
        target: target.to_owned(),
        count: histogram.len(),
        errors,
        min_ms: ms(histogram.min()),
        mean_ms: histogram.mean() / 1e6,
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p90_ms: ms(histogram.value_at_quantile(0.9)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
    })
}

/// Runs `flujo ping`; returns the exit code (0, or 1 when a stimulus failed).
pub async fn run(args: PingArgs) -> anyhow::Result<i32> {
    let targets = if args.targets.is_empty() {
        vec![
            "tcp://127.0.0.1:7070".to_owned(),
            "http://127.0.0.1:8080".to_owned(),
            "grpc://127.0.0.1:50051".to_owned(),
        ]
    } else {
        args.targets.clone()
    };
    let mut reports = Vec::new();
    for target in &targets {
        reports.push(ping(target, &args).await?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        println!(
            "{:<28} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "target (ms)", "n", "errors", "min", "mean", "p50", "p90", "p99", "p99.9", "max"
        );
        for r in &reports {
            println!(
                "{:<28} {:>6} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                r.target,
                r.count,
                r.errors,
                r.min_ms,
                r.mean_ms,
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.p999_ms,
                r.max_ms
            );
        }
    }
    Ok(i32::from(reports.iter().any(|r| r.errors > 0)))
}
