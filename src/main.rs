//! # flujo
//!
//! The command line: `flujo run` (the pipeline), `flujo config` (the effective
//! configuration), `flujo loadgen` (load and verification), `flujo ping` (latency).
//!
//! # Layout (of the `flujo` library this binary uses)
//! - `config`: file < env < flags, checked and resolved into a plan at start.
//! - `components`: Kafka, RabbitMQ, Valkey and the memory bus/store.
//! - `roles`: which actors run here; the ordered drain at shutdown.
//! - `transports`: HTTP (ingest, query API, metrics, health), gRPC, TCP, forwarding.
//! - `shutdown`: the shutdown signal and deadline.
//! - `telemetry`: logs and the Prometheus recorder.
//! - `flujo_loadgen` (the `loadgen/` crate): the load generator and verifier.

use clap::{Args, Parser, Subcommand};
use flujo::components::{Bus, StoreLocation};
use flujo::config::{plan, LogFormat, Overrides, Plan, RoleSet};
use flujo::ping::{self, PingArgs};
use flujo::{roles, telemetry};
use flujo_actors::messages::AckMode;
use flujo_loadgen::{self as loadgen, LoadgenArgs};
use std::path::PathBuf;
use std::process::ExitCode;

/// The allocator: batches are allocated on the transports' threads and freed on the
/// aggregator's, a pattern glibc's malloc pays for in consolidation and lock
/// contention (a third of the embedded path's CPU in a profile); mimalloc keeps
/// per-thread heaps and frees across threads cheaply.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// flujo: one binary for the whole event pipeline.
#[derive(Debug, Parser)]
#[command(name = "flujo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline (every role in one process by default).
    Run(RunArgs),
    /// Print the effective configuration (secrets masked) and exit.
    Config(RunArgs),
    /// Send load to a running flujo, report latency, optionally verify the KPIs.
    Loadgen(LoadgenArgs),
    /// The latency challenge: stimulus → response over TCP, HTTP and gRPC.
    Ping(PingArgs),
}

/// Flags of `flujo run`; each overrides its config key and env var.
#[derive(Debug, Args)]
struct RunArgs {
    /// Configuration file (default: ./flujo.toml when present).
    #[arg(long, env = "FLUJO_CONFIG")]
    config: Option<PathBuf>,
    /// Roles: all, or a comma-separated list of receiver, router, consumer [key: role].
    #[arg(long, value_parser = clap::value_parser!(RoleSet))]
    role: Option<RoleSet>,
    /// Bus between router and consumers: memory, kafka or rabbitmq [key: bus].
    #[arg(long, value_enum)]
    bus: Option<Bus>,
    /// Kafka bootstrap servers, HOST:PORT,… [key: kafka.brokers].
    #[arg(long)]
    kafka: Option<String>,
    /// RabbitMQ URL, amqp://user:pass@host:port/vhost [key: rabbitmq.url].
    #[arg(long)]
    amqp: Option<String>,
    /// KPI store: memory or valkey://HOST:PORT [key: store].
    #[arg(long, value_parser = clap::value_parser!(StoreLocation))]
    store: Option<StoreLocation>,
    /// HTTP listen address, e.g. 0.0.0.0:8080 [key: http.addr].
    #[arg(long)]
    http: Option<String>,
    /// gRPC listen address, e.g. 0.0.0.0:50051 [key: grpc.addr].
    #[arg(long)]
    grpc: Option<String>,
    /// TCP listen address, e.g. 0.0.0.0:7070 [key: tcp.addr].
    #[arg(long)]
    tcp: Option<String>,
    /// gRPC URL of the router role, for a receiver-only process [key: router_url].
    #[arg(long)]
    router_url: Option<String>,
    /// When clients get 202: durable or accepted [key: ack].
    #[arg(long, value_parser = plan::parse_ack_mode)]
    ack: Option<AckMode>,
    /// Log filter, e.g. info or flujo=debug [key: log.level].
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: text or json [key: log.format].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

impl RunArgs {
    fn overrides(&self) -> Overrides {
        let flags = [
            ("role", self.role.map(|r| r.to_string())),
            ("bus", self.bus.map(|b| b.to_string())),
            ("store", self.store.as_ref().map(|s| s.to_string())),
            ("ack", self.ack.map(|a| plan::ack_mode_name(a).to_owned())),
            ("log.format", self.log_format.map(|f| f.as_str().to_owned())),
        ];
        let text = [
            ("kafka.brokers", &self.kafka),
            ("rabbitmq.url", &self.amqp),
            ("http.addr", &self.http),
            ("grpc.addr", &self.grpc),
            ("tcp.addr", &self.tcp),
            ("router_url", &self.router_url),
            ("log.level", &self.log_level),
        ];
        Overrides {
            config_file: self.config.clone(),
            values: flags
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .chain(
                    text.into_iter()
                        .filter_map(|(k, v)| v.clone().map(|v| (k, v))),
                )
                .collect(),
        }
    }
}

fn load(args: &RunArgs) -> Result<Plan, ExitCode> {
    Plan::load(&args.overrides()).map_err(|e| {
        eprintln!("flujo: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(args) => match load(&args) {
            Ok(plan) => {
                print!("{}", plan.config.to_masked_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run(args) => {
            let plan = match load(&args) {
                Ok(plan) => plan,
                Err(code) => return code,
            };
            telemetry::init_logs(&plan.config.log);
            let metrics = match telemetry::init_metrics() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("flujo: cannot install metrics: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let system = actix::System::with_tokio_rt(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("flujo-io")
                    .build()
                    .unwrap_or_else(|e| {
                        eprintln!("flujo: cannot start the runtime: {e}");
                        std::process::exit(1)
                    })
            });
            match system.block_on(roles::run(plan, metrics)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "flujo stopped");
                    eprintln!("flujo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Loadgen(args) => run_tool("flujo loadgen", loadgen::run(args)),
        Command::Ping(args) => run_tool("flujo ping", ping::run(args)),
    }
}

/// Runs a client command on a plain tokio runtime; its result is the exit code.
fn run_tool(name: &str, tool: impl std::future::Future<Output = anyhow::Result<i32>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tool) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
