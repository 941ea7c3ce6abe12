//! # flujo-loadgen
//!
//! `flujo loadgen`: sends sales and/or tweets to a flujo target at a fixed rate
//! (open model, so coordinated omission does not hide latency) or as fast as
//! possible (closed model), reports throughput and HDR latency, and with `--verify`
//! checks the target's query API against a ground truth it computes itself. The
//! `flujo` binary's `loadgen` subcommand is [`LoadgenArgs`] + [`run`]; the
//! integration tests use the same ground truth ([`truth`]) and events ([`generate`]).
//!
//! # Layout
//! - `lib.rs`: command-line arguments and [`run`], which ties the steps together;
//! - [`generate`]: deterministic event data (per `--seed`) and event ids;
//! - `transport/`: encoding of batches and one delivery attempt, over HTTP
//!   (`http.rs`), gRPC (`grpc.rs`) or raw TCP (`tcp.rs`);
//! - `load.rs`: scheduling, retries, latency histogram, progress lines;
//! - [`truth`]: aggregates of the events the server acknowledged;
//! - `api.rs`: the query API's JSON shapes and a client reading them;
//! - `expected.rs`: baseline snapshot + truth = expected state;
//! - `verify.rs`: drain, compare, list differences;
//! - `report.rs`: final table or JSON, exit code;
//! - `e2e_tests.rs` (tests only): `loadgen` against a fake server.

mod api;
#[cfg(test)]
mod e2e_tests;
mod expected;
#[cfg(test)]
mod fixtures;
pub mod generate;
mod load;
mod report;
mod transport;
pub mod truth;
mod verify;

use std::time::Duration;

use anyhow::{bail, ensure, Context};

pub use generate::KindMix;
pub use load::Rate;
pub use report::{EXIT_OK, EXIT_REQUEST_FAILURES, EXIT_VERIFY_FAILED};
pub use transport::{grpc_tls, http_roots, Transport};

use api::QueryClient;
use generate::{Batch, Generator, CATEGORIES};
use load::{deliver, run_load, Delivery, Plan, Resending};
use report::Report;
use transport::{default_port, host_port, transport_parser, Sender};
use truth::Truth;
use verify::{Difference, VerifyReport};

/// Largest batch the ingest API accepts.
const MAX_BATCH: usize = 10_000;

/// Arguments of `flujo loadgen`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Where to send the events; its scheme picks the transport:
    /// `http://host:port` (or https://; with --verify also the query API),
    /// `grpc://host:port` (or grpcs://, over TLS) or `tcp://host:port`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,

    /// Base URL of the query API read by --verify (always HTTP). Default:
    /// the target when it is http:// or https://, else http://<target
    /// host>:8080 (https:// for a grpcs:// target).
    #[arg(long)]
    pub query: Option<String>,

    /// PEM file of the CA certificates an https:// or grpcs:// server's
    /// certificate is checked against (only those; the target's and the
    /// query API's). Default: the system's roots.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,

    /// Which events to send (mixed alternates sales and tweets request by
    /// request).
    #[arg(long, value_enum, default_value_t = KindMix::Mixed)]
    pub kind: KindMix,

    /// Events per second (open model), or `max` to send back to back from
    /// every concurrency slot (closed model).
    #[arg(long, default_value = "1000")]
    pub rate: Rate,

    /// Seconds during which requests are started (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Most requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// Events per request: over HTTP 1 sends a JSON object, more a JSON
    /// array; over gRPC one call; over TCP that many lines, pipelined.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,

    /// Send every request body as NDJSON (application/x-ndjson); HTTP only.
    #[arg(long)]
    pub ndjson: bool,

    /// Protocol used to send events: `http` (one POST per batch), `grpc`
    /// (one PublishSales/PublishTweets call per batch) or `tcp` (one line per
    /// event, a batch's lines pipelined on one connection). Default: the
    /// --target's scheme; given, it must agree with that scheme.
    #[arg(long, value_parser = transport_parser())]
    pub transport: Option<Transport>,

    /// Seed of the generated data (same seed, same events; ids differ per run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// After the load, wait for the pipeline to drain and compare the query
    /// API with the ground truth; exit 65 on any difference.
    #[arg(long)]
    pub verify: bool,

    /// Print the final report as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for the pipeline to drain during --verify (also the
    /// grace period for backlogged and backpressured requests).
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
}

impl LoadgenArgs {
    /// The transport: `--transport` when given (it must agree with the
    /// target's scheme), else the one the target's scheme names (`http`,
    /// `https`, `grpc`, `tcp`).
    pub fn transport(&self) -> anyhow::Result<Transport> {
        let scheme = self.target.split_once("://").map(|(scheme, _)| scheme);
        let inferred = match scheme.map(str::to_ascii_lowercase).as_deref() {
            Some("http" | "https") => Transport::Http,
            Some("grpc" | "grpcs") => Transport::Grpc,
            Some("tcp") => Transport::Tcp,
            _ => bail!(
                "--target `{}` must start with http://, https://, grpc://, grpcs:// or tcp:// \
                 (the scheme picks the transport)",
                self.target
            ),
        };
        match self.transport {
            Some(given) if given != inferred => bail!(
                "--transport {} contradicts --target `{}`, a {} target; \
                 drop --transport (the scheme picks it) or change the target",
                given.as_str(),
                self.target,
                inferred.as_str()
            ),
            _ => Ok(inferred),
        }
    }

    /// Checks the arguments together (each error is a usage error: the
    /// `flujo` binary exits 2 on it).
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.duration.is_finite() && self.duration >= 0.0,
            "--duration must be a non-negative number of seconds"
        );
        ensure!(
            self.timeout.is_finite() && self.timeout >= 0.0,
            "--timeout must be a non-negative number of seconds"
        );
        ensure!(self.concurrency >= 1, "--concurrency must be at least 1");
        ensure!(
            (1..=MAX_BATCH).contains(&self.batch),
            "--batch must be between 1 and {MAX_BATCH}"
        );
        match self.transport()? {
            Transport::Http => {
                // An http(s) URL that parses has a host (the url crate refuses
                // `http://` with "empty host").
                reqwest::Url::parse(&self.target)
                    .with_context(|| format!("--target `{}` is not a URL", self.target))?;
            }
            transport => {
                host_port(transport, &self.target)?;
                ensure!(!self.ndjson, "--ndjson only applies to --transport http");
            }
        }
        if let Some(query) = &self.query {
            ensure!(
                query.starts_with("http://") || query.starts_with("https://"),
                "--query must be an http:// URL, got `{query}`"
            );
        }
        if self.ca_file.is_some() {
            let query_tls = self.verify && transport::over_tls(&self.query_url()?);
            ensure!(
                transport::over_tls(&self.target) || query_tls,
                "--ca-file applies to an https:// or grpcs:// target (or --verify's https:// \
                 query API), and neither is one"
            );
        }
        Ok(())
    }

    /// Base URL of the query API: `--query`, else the target when it is an
    /// HTTP URL, else port 8080 of the target's host.
    pub fn query_url(&self) -> anyhow::Result<String> {
        if let Some(query) = &self.query {
            return Ok(query.clone());
        }
        if self.transport()? == Transport::Http {
            return Ok(self.target.clone());
        }
        let url = reqwest::Url::parse(&self.target)
            .with_context(|| format!("parsing target `{}`", self.target))?;
        let host = url
            .host_str()
            .with_context(|| format!("target `{}` names no host", self.target))?;
        let scheme = if transport::over_tls(&self.target) {
            "https"
        } else {
            "http"
        };
        Ok(format!(
            "{scheme}://{host}:{}",
            default_port(Transport::Http)
        ))
    }
}

/// Runs the load; returns the process exit code (0 ok, 1 request failures,
/// 65 verify found differences).
pub async fn run(args: LoadgenArgs) -> anyhow::Result<i32> {
    let report = execute(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.exit_code())
}

/// Runs the load (and the verification) and returns the report.
async fn execute(args: &LoadgenArgs) -> anyhow::Result<Report> {
    args.validate()?;
    let transport = args.transport()?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let ca_file = args.ca_file.as_deref();
    let sender = Sender::new(transport, &args.target, args.concurrency, ca_file)?;
    let nonce = Generator::random_nonce();
    let mut generator = Generator::new(args.seed, nonce.clone());
    eprintln!(
        "flujo loadgen: {} transport={} kind={:?} rate={} duration={}s concurrency={} batch={}{} seed={} ids={nonce}-*",
        args.target,
        transport.as_str(),
        args.kind,
        match args.rate {
            Rate::PerSecond(r) => format!("{r}/s"),
            Rate::Max => "max".to_string(),
        },
        args.duration,
        args.concurrency,
        args.batch,
        if args.ndjson { " (ndjson)" } else { "" },
        args.seed,
    );

    let mut verifying = None;
    if args.verify {
        let client = QueryClient::new(&args.query_url()?, ca_file)?;
        let baseline = client
            .snapshot()
            .await
            .context("reading the baseline through the query API (needed by --verify)")?;
        let mut truth = Truth::default();
        if args.kind.has_sales() {
            warm_up(&sender, &mut generator, &mut truth, args.ndjson, timeout).await?;
        }
        verifying = Some((client, baseline, truth));
    }

    let plan = Plan {
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        concurrency: args.concurrency,
        batch: args.batch,
        kind: args.kind,
        ndjson: args.ndjson,
        grace: timeout,
        progress: true,
    };
    let truth = verifying.as_mut().map(|(_, _, t)| std::mem::take(t));
    let outcome = run_load(&sender, &mut generator, &plan, truth).await?;

    let verify_report = match (verifying, outcome.truth) {
        (Some((client, baseline, _)), Some(truth)) => {
            eprintln!(
                "verify: waiting up to {}s for the pipeline to drain",
                args.timeout
            );
            let expected = expected::expected(&baseline, &truth);
            let report = verify::verify(&client, &expected, &truth, timeout)
                .await
                .unwrap_or_else(|e| {
                    let d = Difference {
                        path: "query API".to_string(),
                        field: "read".to_string(),
                        expected: "readable".to_string(),
                        got: format!("{e:#}"),
                    };
                    VerifyReport::new(vec![d], truth.ambiguous_batches)
                });
            Some(report)
        }
        _ => None,
    };
    Ok(Report::new(&outcome.stats, outcome.elapsed, verify_report))
}

/// Sends one sale per category, one request at a time, so that the first
/// product seen in each category (the monitored product) is well defined
/// before concurrent requests start.
async fn warm_up(
    sender: &Sender,
    generator: &mut Generator,
    truth: &mut Truth,
    ndjson: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    for category in CATEGORIES {
        let batch = Batch::Sales(vec![generator.warmup_sale(category)]);
        let give_up_at = tokio::time::Instant::now() + timeout;
        let result = deliver(sender, &batch, ndjson, give_up_at, &Resending::default())
            .await
            .result;
        match &result {
            Delivery::Accepted => truth.add_batch(&batch),
            Delivery::Failed { label, .. } => bail!(
                "warm-up sale in {category} failed ({label}{}); cannot verify",
                if result.maybe_stored() {
                    ", outcome unknown"
                } else {
                    ""
                }
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    fn parse(args: &[&str]) -> LoadgenArgs {
        Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
            .expect("valid arguments")
            .args
    }

    #[test]
    fn the_target_scheme_picks_the_transport() {
        for (target, transport) in [
            ("http://h:1", Transport::Http),
            ("https://h", Transport::Http),
            ("grpc://h:50051", Transport::Grpc),
            ("grpcs://h:50051", Transport::Grpc),
            ("tcp://h:7070", Transport::Tcp),
        ] {
            let args = parse(&["--target", target]);
            assert_eq!(args.transport().expect(target), transport, "{target}");
            assert!(args.validate().is_ok(), "{target}");
        }
        assert_eq!(parse(&[]).transport().expect("default"), Transport::Http);
        let agreeing = parse(&["--target", "tcp://h:1", "--transport", "tcp"]);
        assert_eq!(agreeing.transport().expect("agrees"), Transport::Tcp);
        let err = parse(&["--target", "tcp://h:1", "--transport", "grpc"])
            .validate()
            .expect_err("contradiction")
            .to_string();
        assert!(err.contains("--transport grpc contradicts"), "{err}");
        let err = parse(&["--target", "h:1"])
            .validate()
            .expect_err("no scheme")
            .to_string();
        assert!(err.contains("must start with http://"), "{err}");
        for hostless in ["http://", "https://:8080"] {
            let err = parse(&["--target", hostless])
                .validate()
                .expect_err("no host")
                .to_string();
            assert!(err.contains("not a URL"), "{err}");
        }
    }

    #[test]
    fn a_ca_file_needs_a_tls_url() {
        let tls = parse(&["--target", "grpcs://h", "--ca-file", "ca.pem", "--verify"]);
        assert!(tls.validate().is_ok());
        assert_eq!(tls.query_url().expect("query"), "https://h:8080");
        let err = parse(&["--target", "grpc://h", "--ca-file", "ca.pem"])
            .validate()
            .expect_err("plain target")
            .to_string();
        assert!(err.contains("--ca-file applies to"), "{err}");
        let query_tls = parse(&[
            "--target",
            "tcp://h:1",
            "--query",
            "https://h:1",
            "--verify",
            "--ca-file",
            "ca.pem",
        ]);
        assert!(query_tls.validate().is_ok());
    }
}
