//! `flujo ping`: the latency challenge. Sends stimuli one after another over one
//! connection and measures stimulus → response: `ping` → `pong` over TCP,
//! `GET /healthz` over HTTP, `grpc.health.v1.Health/Check` over gRPC.

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Arguments of `flujo ping`.
#[derive(Debug, Clone, clap::Args)]
pub struct PingArgs {
    /// Where to send stimuli: tcp://HOST:PORT, http://HOST:PORT or grpc://HOST:PORT;
    /// repeat for several. Default: flujo's three local ports.
    #[arg(long = "target")]
    pub targets: Vec<String>,
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

/// One connection that answers stimuli.
enum Prober {
    Tcp(BufReader<TcpStream>, String),
    Http(reqwest::Client, String),
    Grpc(HealthClient<tonic::transport::Channel>),
}

impl Prober {
    async fn connect(target: &str) -> anyhow::Result<Prober> {
        let (scheme, rest) = target.split_once("://").with_context(|| {
            format!("target `{target}` needs a scheme: tcp://, http:// or grpc://")
        })?;
        match scheme {
            "tcp" => {
                let stream = TcpStream::connect(rest)
                    .await
                    .with_context(|| format!("cannot connect to {target}"))?;
                stream.set_nodelay(true)?;
                Ok(Prober::Tcp(BufReader::new(stream), String::new()))
            }
            "http" => Ok(Prober::Http(
                reqwest::Client::builder().tcp_nodelay(true).build()?,
                format!("http://{}/healthz", rest.trim_end_matches('/')),
            )),
            "grpc" => {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{rest}"))?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to {target}"))?;
                Ok(Prober::Grpc(HealthClient::new(channel)))
            }
            other => bail!("unknown scheme `{other}` in `{target}`; use tcp, http or grpc"),
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
    let mut prober = Prober::connect(target).await?;
    let limit = Duration::from_millis(args.timeout_ms);
    for _ in 0..args.warmup {
        tokio::time::timeout(limit, prober.stimulus())
            .await
            .context("warm-up stimulus timed out")??;
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut errors = 0;
    for _ in 0..args.count {
        let started = Instant::now();
        match tokio::time::timeout(limit, prober.stimulus()).await {
            Ok(Ok(())) => histogram.saturating_record(started.elapsed().as_nanos() as u64),
            _ => {
                errors += 1;
                // A failed stimulus may leave an answer in flight: start afresh.
                prober = Prober::connect(target).await?;
            }
        }
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
