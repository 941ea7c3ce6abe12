//! # flujo
//!
//! The command line: `flujo run` (the pipeline), `flujo config` (the effective
//! configuration), `flujo validate` (configuration and dependencies), `flujo
//! loadgen` (load and verification), `flujo ping` (latency), `flujo completions`
//! (shell completion scripts). Exit codes: [`flujo::exit_code`].
//!
//! # Layout (of the `flujo` library this binary uses)
//! - `config`: file < env < flags, checked and resolved into a plan at start.
//! - `components`: Kafka, RabbitMQ, Valkey and the memory bus/store.
//! - `roles`: which actors run here; the ordered drain at shutdown.
//! - `transports`: HTTP (ingest, query API, metrics, health), gRPC, TCP, forwarding.
//! - `shutdown`: the shutdown signal and deadline.
//! - `telemetry`: logs and the Prometheus recorder.
//! - `validate`: the dependency checks of `flujo validate`.
//! - `flujo_loadgen` (the `loadgen/` crate): the load generator and verifier.

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use flujo::components::{Bus, ComponentError, ReachError, StoreLocation};
use flujo::config::{plan, LogFormat, Overrides, Plan};
use flujo::exit_code;
use flujo::ping::{self, PingArgs};
use flujo::telemetry::LevelSource;
use flujo::{roles, telemetry, validate};
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

/// The variable `--config` was read from before `FLUJO__CONFIG`; still accepted.
const OLD_CONFIG_VAR: &str = "FLUJO_CONFIG";

/// flujo: one binary for the whole event pipeline.
#[derive(Debug, Parser)]
#[command(
    name = "flujo",
    version,
    about,
    after_help = "Exit codes: 0 ok, 1 failed while running, 2 usage error, \
                  65 loadgen --verify found differences, 69 a dependency is unreachable \
                  (validate), 78 bad configuration."
)]
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
    /// Check the configuration and reach every dependency the roles need.
    ///
    /// Loads the configuration as `run` would (same flags, file and variables),
    /// then reaches the brokers, the store and the remote router the roles need,
    /// all at once, within 5 s each, creating nothing. One line per dependency;
    /// exit 0 when all hold, 78 for a bad configuration, 69 when a dependency is
    /// unreachable.
    Validate(RunArgs),
    /// Send load to a running flujo, report latency, optionally verify the KPIs.
    Loadgen(LoadgenArgs),
    /// The latency challenge: stimulus → response over TCP, HTTP and gRPC.
    Ping(PingArgs),
    /// Print the shell completion script for SHELL.
    ///
    /// e.g. `flujo completions bash > ~/.local/share/bash-completion/completions/flujo`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// One value of `--role` (several, comma-separated, make a set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RoleName {
    /// Every role in this process (the default).
    All,
    /// Ingest transports (HTTP, gRPC, TCP) and receivers.
    Receiver,
    /// Router and publishers.
    Router,
    /// Consumers, the aggregator, the store and the query API.
    Consumer,
}

/// Flags of `flujo run` (and of `config` and `validate`): each overrides its config
/// key and environment variable (file < env < flag). The variables are read by the
/// configuration loader, which names them in its errors; clap shows them in
/// `--help` (see [`RunArgs::forget_env`]).
#[derive(Debug, Args)]
struct RunArgs {
    /// Configuration file (default: ./flujo.toml when present; the old
    /// FLUJO_CONFIG is still read).
    #[arg(long, env = "FLUJO__CONFIG", hide_env_values = true)]
    config: Option<PathBuf>,
    /// Roles this process runs, comma-separated [key: role].
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        env = "FLUJO__ROLE",
        hide_env_values = true
    )]
    role: Vec<RoleName>,
    /// Bus between router and consumers [key: bus].
    #[arg(long, value_enum, env = "FLUJO__BUS", hide_env_values = true)]
    bus: Option<Bus>,
    /// Kafka bootstrap servers, HOST:PORT,… [key: kafka.brokers].
    #[arg(long, env = "FLUJO__KAFKA__BROKERS", hide_env_values = true)]
    kafka: Option<String>,
    /// RabbitMQ URL, amqp://USER:PASSWORD@HOST:PORT/VHOST (amqps:// for TLS)
    /// [key: rabbitmq.url].
    #[arg(long, env = "FLUJO__RABBITMQ__URL", hide_env_values = true)]
    amqp: Option<String>,
    /// KPI store: `memory`, or a Valkey URL valkey://[:PASSWORD@]HOST:PORT (redis://
    /// also works; valkeys:// or rediss:// for TLS) [key: store].
    #[arg(long, value_parser = clap::value_parser!(StoreLocation), env = "FLUJO__STORE", hide_env_values = true)]
    store: Option<StoreLocation>,
    /// HTTP listen address, e.g. 0.0.0.0:8080 [key: http.addr].
    #[arg(long, env = "FLUJO__HTTP__ADDR", hide_env_values = true)]
    http: Option<String>,
    /// gRPC listen address, e.g. 0.0.0.0:50051 [key: grpc.addr].
    #[arg(long, env = "FLUJO__GRPC__ADDR", hide_env_values = true)]
    grpc: Option<String>,
    /// TCP listen address, e.g. 0.0.0.0:7070 [key: tcp.addr].
    #[arg(long, env = "FLUJO__TCP__ADDR", hide_env_values = true)]
    tcp: Option<String>,
    /// gRPC URL of the router role, for a receiver-only process: grpc://HOST:PORT,
    /// or grpcs://HOST:PORT over TLS [key: router_url].
    #[arg(long, env = "FLUJO__ROUTER_URL", hide_env_values = true)]
    router_url: Option<String>,
    /// PEM file of the CA certificates a grpcs:// router is checked against (only
    /// those; default: the system's roots) [key: router_ca_file].
    #[arg(long, env = "FLUJO__ROUTER_CA_FILE", hide_env_values = true)]
    router_ca_file: Option<String>,
    /// When clients get their 202 (default: durable with a broker or a remote
    /// router, else accepted) [key: ack].
    #[arg(long, value_parser = plan::ack_mode_parser(), env = "FLUJO__ACK", hide_env_values = true)]
    ack: Option<AckMode>,
    /// Log filter, e.g. info or flujo=debug; this flag wins over RUST_LOG, which
    /// wins over the file and the variable [key: log.level].
    #[arg(long, env = "FLUJO__LOG__LEVEL", hide_env_values = true)]
    log_level: Option<String>,
    /// Log line format [key: log.format].
    #[arg(long, value_enum, env = "FLUJO__LOG__FORMAT", hide_env_values = true)]
    log_format: Option<LogFormat>,
}

impl RunArgs {
    /// Drops the values clap took from the environment: the configuration loader
    /// reads the same `FLUJO__…` variables itself, at their own precedence (above
    /// the file, below flags), and names the variable when its value is bad.
    /// `--config` keeps its variable: it names the file, not a key.
    fn forget_env(&mut self, matches: &ArgMatches) {
        let from_env = |id: &str| matches.value_source(id) == Some(ValueSource::EnvVariable);
        macro_rules! forget {
            ($($field:ident),*) => {
                $(if from_env(stringify!($field)) {
                    self.$field = Default::default();
                })*
            };
        }
        forget!(
            role,
            bus,
            kafka,
            amqp,
            store,
            http,
            grpc,
            tcp,
            router_url,
            router_ca_file,
            ack,
            log_level,
            log_format
        );
    }

    /// `--config`, else `FLUJO__CONFIG`, else the old `FLUJO_CONFIG`.
    fn config_file(&self) -> Option<PathBuf> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        self.config
            .clone()
            .or_else(|| var("FLUJO__CONFIG").map(PathBuf::from))
            .or_else(|| var(OLD_CONFIG_VAR).map(PathBuf::from))
    }

    /// Where the log level comes from: a flag wins over `RUST_LOG`.
    fn level_source(&self) -> LevelSource {
        match self.log_level {
            Some(_) => LevelSource::Flag,
            None => LevelSource::Config,
        }
    }

    fn overrides(&self) -> Overrides {
        let role = (!self.role.is_empty()).then(|| {
            let names: Vec<String> = self
                .role
                .iter()
                .filter_map(|r| r.to_possible_value().map(|v| v.get_name().to_owned()))
                .collect();
            names.join(",")
        });
        let flags = [
            ("role", role),
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
            ("router_ca_file", &self.router_ca_file),
            ("log.level", &self.log_level),
        ];
        Overrides {
            config_file: self.config_file(),
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

/// The command line, parsed. clap reads the `FLUJO__…` variables of the flags only
/// to show them in `--help`; when it refuses a value that came from one, the line
/// is parsed again without the environment, and the configuration loader reports
/// the variable by name (exit 78) instead of a usage error about a flag nobody typed.
fn parse_cli() -> Cli {
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) =>
        {
            // Refused again without the environment: the flag itself is wrong, and
            // this error names it (the first one may echo a variable's value).
            without_env(Cli::command())
                .try_get_matches()
                .unwrap_or_else(|again| again.exit())
        }
        Err(e) => e.exit(),
    };
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Some((_, sub)), Command::Run(args) | Command::Config(args) | Command::Validate(args)) =
        (matches.subcommand(), &mut cli.command)
    {
        args.forget_env(sub);
    }
    cli
}

/// `command` and its subcommands with no argument read from the environment.
fn without_env(command: clap::Command) -> clap::Command {
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    names.iter().fold(
        command.mut_args(|arg| arg.env(None::<&str>)),
        |command, name| command.mut_subcommand(name, without_env),
    )
}

/// Exits as clap does on a usage error of `subcommand` (code 2).
fn usage_error(subcommand: &str, message: impl std::fmt::Display) -> ! {
    let command = Cli::command();
    let command = command
        .find_subcommand(subcommand)
        .cloned()
        .unwrap_or(command);
    command
        .bin_name(format!("flujo {subcommand}"))
        .error(ErrorKind::ArgumentConflict, message)
        .exit()
}

/// Loads and resolves the configuration; a bad one prints one line per problem,
/// each naming its key, and is exit code 78.
fn load(args: &RunArgs) -> Result<Plan, ExitCode> {
    Plan::load(&args.overrides()).map_err(|e| {
        for line in e.lines() {
            eprintln!("flujo: {line}");
        }
        ExitCode::from(exit_code::CONFIG)
    })
}

fn main() -> ExitCode {
    // One rustls crypto provider (ring) for the whole process, before any TLS
    // client or listener is built: were a second provider ever compiled in, a
    // client built without naming one would otherwise panic.
    flujo::components::install_crypto_provider();
    let cli = parse_cli();
    match cli.command {
        Command::Config(args) => match load(&args) {
            Ok(plan) => {
                print!("{}", plan.config.to_masked_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Validate(args) => validate(&args),
        Command::Run(args) => run(&args),
        Command::Loadgen(args) => {
            if let Err(e) = args.validate() {
                usage_error("loadgen", format!("{e:#}"));
            }
            run_tool("flujo loadgen", loadgen::run(args))
        }
        Command::Ping(args) => run_tool("flujo ping", ping::run(args)),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "flujo", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// `flujo run`: 0 after a clean shutdown, 78 on a bad configuration, 1 when it
/// stopped with an error.
fn run(args: &RunArgs) -> ExitCode {
    let plan = match load(args) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    telemetry::init_logs(&plan.config.log, args.level_source());
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
            // A component refusing its settings (a store URL, a Kafka client
            // option) is a configuration error too.
            match e.downcast_ref::<ComponentError>() {
                Some(_) => ExitCode::from(exit_code::CONFIG),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// `flujo validate`: the configuration as `run` loads it, then every dependency its
/// roles need, all at once. One line per dependency (problems on stderr); exit 0,
/// 78 (bad configuration, or settings a client refuses) or 69 (unreachable).
fn validate(args: &RunArgs) -> ExitCode {
    let plan = match load(args) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    // Client libraries log their retries; shown only when asked for.
    if args.log_level.is_some() || std::env::var_os("RUST_LOG").is_some() {
        telemetry::init_logs(&plan.config.log, args.level_source());
    }
    println!("configuration: ok, {}", validate::summary(&plan));
    let dependencies = validate::dependencies(&plan);
    if dependencies.is_empty() {
        println!("dependencies: none to reach (memory bus and store live in the process)");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flujo validate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let findings = runtime.block_on(validate::check(dependencies));
    // librdkafka's threads may still be winding down; do not wait for them.
    runtime.shutdown_background();
    let mut code = exit_code::OK;
    for finding in &findings {
        match &finding.outcome {
            Ok(_) => println!("{}", finding.line()),
            Err(e) => {
                eprintln!("{}", finding.line());
                code = match e {
                    ReachError::Invalid(_) => exit_code::CONFIG,
                    ReachError::Unreachable(_) if code == exit_code::OK => exit_code::UNAVAILABLE,
                    ReachError::Unreachable(_) => code,
                };
            }
        }
    }
    let failed = findings.iter().filter(|f| f.outcome.is_err()).count();
    if failed > 0 {
        eprintln!(
            "flujo validate: {failed} of {} dependencies failed",
            findings.len()
        );
    }
    ExitCode::from(code)
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
