//! `flujo loadgen`: sends sales and/or tweets to a flujo target at a fixed
//! rate (open model, so coordinated omission does not hide latency) or as
//! fast as possible (closed model), reports throughput and HDR latency, and
//! with `--verify` checks the target's query API against a ground truth it
//! computes itself.
//!
//! Files:
//! - `mod.rs`: command-line arguments and [`run`], which ties the steps
//!   together;
//! - `generate.rs`: deterministic event data (per `--seed`) and event ids;
//! - `transport.rs`: encoding of batches and one delivery attempt over HTTP;
//! - `load.rs`: scheduling, retries, latency histogram, progress lines;
//! - `truth.rs`: aggregates of the events the server acknowledged;
//! - `api.rs`: the query API's JSON shapes and a client reading them;
//! - `expected.rs`: baseline snapshot + truth = expected state;
//! - `verify.rs`: drain, compare, list differences;
//! - `report.rs`: final table or JSON, exit code.

mod api;
#[cfg(test)]
mod e2e_tests;
mod expected;
#[cfg(test)]
mod fixtures;
mod generate;
mod load;
mod report;
mod transport;
mod truth;
mod verify;

use std::time::Duration;

use anyhow::{bail, ensure, Context};

pub use generate::Kind;
pub use load::Rate;
pub use transport::Transport;

use api::QueryClient;
use generate::{Batch, Generator, CATEGORIES};
use load::{deliver, run_load, Delivery, Plan};
use report::Report;
use transport::{encode, Sender};
use truth::Truth;
use verify::{Difference, VerifyReport};

/// Largest batch the ingest API accepts.
const MAX_BATCH: usize = 10_000;

/// Arguments of `flujo loadgen`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Base URL of the flujo instance to load (ingest and, with --verify,
    /// query API).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,

    /// Which events to send (mixed alternates sales and tweets request by
    /// request).
    #[arg(long, value_enum, default_value_t = Kind::Mixed)]
    pub kind: Kind,

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

    /// Events per request: 1 sends a JSON object, more a JSON array.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,

    /// Send every request body as NDJSON (application/x-ndjson).
    #[arg(long)]
    pub ndjson: bool,

    /// Protocol used to send events.
    #[arg(long, value_enum, default_value_t = Transport::Http)]
    pub transport: Transport,

    /// Seed of the generated data (same seed, same events; ids differ per run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// After the load, wait for the pipeline to drain and compare the query
    /// API with the ground truth; exit 2 on any difference.
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
    fn validate(&self) -> anyhow::Result<()> {
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
        ensure!(
            self.target.starts_with("http://") || self.target.starts_with("https://"),
            "--target must be an http:// URL, got `{}`",
            self.target
        );
        Ok(())
    }
}

/// Runs the load; returns the process exit code (0 ok, 1 request failures,
/// 2 verify found differences).
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
    let timeout = Duration::from_secs_f64(args.timeout);
    let sender = Sender::new(args.transport, &args.target, args.concurrency)?;
    let nonce = Generator::random_nonce();
    let mut generator = Generator::new(args.seed, nonce.clone());
    eprintln!(
        "flujo loadgen: {} kind={:?} rate={} duration={}s concurrency={} batch={}{} seed={} ids={nonce}-*",
        args.target,
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
        let client = QueryClient::new(&args.target)?;
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
        let encoded = encode(&batch, ndjson)?;
        let give_up_at = tokio::time::Instant::now() + timeout;
        match deliver(sender, &encoded, give_up_at).await.result {
            Delivery::Accepted => truth.add_batch(&batch),
            Delivery::Failed {
                label,
                maybe_stored,
            } => bail!(
                "warm-up sale in {category} failed ({label}{}); cannot verify",
                if maybe_stored {
                    ", outcome unknown"
                } else {
                    ""
                }
            ),
        }
    }
    Ok(())
}
