//! Configuration: defaults in code < `flujo.toml` (or `--config FILE`) < environment
//! `FLUJO__SECTION__KEY` < command-line flags. Unknown keys and bad values fail at
//! start with a message that names the key.
//!
//! # Layout
//! - this file: [`Config`] (every key), loading with figment, the value checks and
//!   [`ConfigError`].
//! - [`sections`]: the sections of servers and actors (`[http]`, `[pipeline]`, …);
//!   the components' sections (`[kafka]`, `[rabbitmq]`, `[valkey]`) live with them.
//! - [`plan`]: [`Plan`], what a loaded configuration resolves to (roles, routes,
//!   store, ack mode), once, at load.
//! - `text`: serde for the values written as text (`role`, `store`).

pub mod plan;
pub mod sections;
mod text;

pub use crate::components::{Bus, StoreLocation};
pub use flujo_actors::breaker::BreakerConfig;
pub use plan::{Plan, Role, RoleSet};
pub use sections::{
    AggregatorConfig, DeadlinesConfig, GrpcConfig, HttpConfig, LogConfig, LogFormat,
    PipelineConfig, QueryConfig, RoutesConfig, ShutdownConfig, TcpConfig,
};

use crate::components::kafka::KafkaConfig;
use crate::components::rabbitmq::RabbitConfig;
use crate::components::valkey::ValkeyConfig;
use crate::components::{mask_url_password, Settings};
pub use crate::gateway::{AuthConfig, ClientLimit, LimitsConfig};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use flujo_actors::messages::AckMode;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most ids the dedup window may hold per kind (about 1.9 GB of tables in
/// process, allocated a generation at a time).
pub const MAX_DEDUP_IDS: usize = 100_000_000;

/// The longest dedup window accepted: a year.
pub const MAX_DEDUP_WINDOW_SECS: u64 = 365 * 24 * 3600;

/// The range of `query.stream_interval_ms`: 100 ms to a minute.
pub const STREAM_INTERVAL_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

/// The most `/v1/stream/kpis` streams `query.max_streams` may allow.
pub const MAX_STREAMS: usize = 10_000;

/// The largest `auth.leeway_secs`: ten minutes of clock skew.
pub const MAX_LEEWAY_SECS: u64 = 600;

/// Paths the HTTP application defines itself; `http.sales_paths` and
/// `http.tweet_paths` may not reuse them.
pub const BUILTIN_PATHS: &[&str] = &[
    "/v1/sales",
    "/purchase",
    "/v1/tweets",
    "/input",
    "/v1/kpis/sales",
    "/v1/kpis/tweets",
    "/v1/rankings/products",
    "/v1/rankings/locations",
    "/metrics",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/",
    "/assets/page.js",
    "/assets/page.css",
    "/assets/icon.svg",
    "/v1/stream/kpis",
];

/// Everything `flujo run` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Roles this process runs: `all`, or a comma-separated set of receiver, router, consumer.
    #[serde(with = "text")]
    pub role: RoleSet,
    /// The bus between router and consumers: `memory`, `kafka` or `rabbitmq`.
    pub bus: Bus,
    /// Sinks per event kind; a kind not listed goes to `bus`.
    pub routes: RoutesConfig,
    /// Where KPIs live: `memory` or `valkey://HOST:PORT`.
    #[serde(with = "text")]
    pub store: StoreLocation,
    /// gRPC URL of the router role, for a process that runs receivers but no router:
    /// `grpc://` (or `http://`) in plain text, `grpcs://` (or `https://`) over TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_url: Option<String>,
    /// PEM file of the CA certificates a `grpcs://` router's certificate is checked
    /// against (only those); unset = the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_ca_file: Option<PathBuf>,
    /// When clients get their 202: `durable` or `accepted`; unset = the bus's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<AckMode>,
    /// Kafka bus.
    pub kafka: KafkaConfig,
    /// RabbitMQ bus.
    pub rabbitmq: RabbitConfig,
    /// Valkey store.
    pub valkey: ValkeyConfig,
    /// HTTP server.
    pub http: HttpConfig,
    /// gRPC server.
    pub grpc: GrpcConfig,
    /// TCP line server.
    pub tcp: TcpConfig,
    /// Actor pipeline sizing.
    pub pipeline: PipelineConfig,
    /// Aggregator behaviour.
    pub aggregator: AggregatorConfig,
    /// Query API.
    pub query: QueryConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Request and durable-ack deadlines.
    pub deadlines: DeadlinesConfig,
    /// Circuit breaker of each sink.
    pub breaker: BreakerConfig,
    /// Logging.
    pub log: LogConfig,
    /// Authentication (off unless a key file is set).
    pub auth: AuthConfig,
    /// Per-client rate limits (off by default).
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            role: RoleSet::ALL,
            bus: Bus::Memory,
            routes: RoutesConfig::default(),
            store: StoreLocation::Memory,
            router_url: None,
            router_ca_file: None,
            ack: None,
            kafka: Default::default(),
            rabbitmq: Default::default(),
            valkey: ValkeyConfig::default(),
            http: HttpConfig::default(),
            grpc: GrpcConfig::default(),
            tcp: TcpConfig::default(),
            pipeline: PipelineConfig::default(),
            aggregator: AggregatorConfig::default(),
            query: QueryConfig::default(),
            shutdown: ShutdownConfig::default(),
            deadlines: DeadlinesConfig::default(),
            breaker: BreakerConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read, or a value has the wrong type or an unknown key
    /// (one figment error, described naming the key and where it came from).
    #[error("bad configuration: {0}")]
    Load(String),
    /// A value is well-typed but not acceptable.
    #[error("bad configuration: key `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `pipeline.max_inflight_events`.
        key: std::borrow::Cow<'static, str>,
        /// Why it is refused.
        reason: String,
    },
    /// Several of the above (every problem a configuration has).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// `Ok` when `problems` is empty, else the one problem or all of them.
    pub fn from_problems(problems: Vec<ConfigError>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::all(problems))
        }
    }

    /// The one problem of `problems`, or all of them.
    fn all(mut problems: Vec<ConfigError>) -> ConfigError {
        if problems.len() == 1 {
            problems.remove(0)
        } else {
            ConfigError::Several(problems)
        }
    }

    /// One line per problem, each naming its key (what `flujo run` and `flujo
    /// validate` print).
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Several(all) => all.iter().flat_map(ConfigError::lines).collect(),
            one => vec![one.to_string()],
        }
    }
}

/// Values given on the command line; each wins over file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `(dotted key, value)` pairs from flags.
    pub values: Vec<(&'static str, String)>,
}

impl Config {
    /// Loads defaults < file < environment < flags. The values are checked by
    /// [`Plan::resolve`] (or [`Plan::load`], which does both).
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        figment = match &overrides.config_file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Invalid {
                        key: "--config".into(),
                        reason: format!("file {} does not exist", path.display()),
                    });
                }
                figment.merge(Toml::file_exact(path))
            }
            None => figment.merge(Toml::file(Path::new("flujo.toml"))),
        };
        // `FLUJO__CONFIG` names the file (read by the `--config` flag), not a key.
        figment = figment.merge(Env::prefixed("FLUJO__").ignore(&["config"]).split("__"));
        for (key, value) in &overrides.values {
            figment = figment.merge(Serialized::default(key, value));
        }
        figment.extract().map_err(|e| ConfigError::all(describe(e)))
    }

    /// Refuses values that are well-typed but unusable (each on its own; the checks
    /// across keys are [`Plan::resolve`]'s), listing every problem found.
    pub fn check(&self) -> Result<(), ConfigError> {
        ConfigError::from_problems(self.problems())
    }

    /// Every value that is well-typed but unusable, one error each.
    pub(crate) fn problems(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        let mut invalid = |key: &str, reason: String| {
            problems.push(ConfigError::Invalid {
                key: key.to_owned().into(),
                reason,
            })
        };
        for (key, sinks) in [
            ("routes.sale", &self.routes.sale),
            ("routes.tweet", &self.routes.tweet),
        ] {
            if sinks.as_ref().is_some_and(|s| s.is_empty()) {
                invalid(key, "needs at least one sink".into());
            }
        }
        if let Err(reason) = self.kafka.check() {
            // The section's checks name their key first: `kafka.KEY: why`.
            match reason.split_once(": ") {
                Some((key, why)) if key.starts_with("kafka.") && !key.contains(' ') => {
                    invalid(key, why.to_owned())
                }
                _ => invalid("kafka", reason),
            }
        }
        if let Err(reason) = self.rabbitmq.validate() {
            invalid("rabbitmq", reason);
        }
        if let Err(reason) = self.valkey.check() {
            invalid("valkey", reason);
        }
        if let Some(path) = &self.valkey.ca_file {
            if !self.store.tls() {
                invalid(
                    "valkey.ca_file",
                    "needs a valkeys:// (or rediss://) store".into(),
                );
            } else if let Err(reason) = crate::components::read_ca_pem(path) {
                invalid("valkey.ca_file", reason);
            }
        }
        if self.http.max_body_bytes == 0 {
            invalid("http.max_body_bytes", "must be greater than 0".into());
        }
        if !(1..=1_000_000).contains(&self.http.max_batch_events) {
            invalid("http.max_batch_events", "must be 1-1000000".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (key, paths) in [
            ("http.sales_paths", &self.http.sales_paths),
            ("http.tweet_paths", &self.http.tweet_paths),
        ] {
            for p in paths {
                let plain = p.len() > 1
                    && p.starts_with('/')
                    && !p.ends_with('/')
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c));
                if !plain {
                    invalid(
                        key,
                        format!(
                            "path `{p}` must start with `/` and hold only letters, digits, `/-_.`"
                        ),
                    );
                } else if BUILTIN_PATHS.contains(&p.as_str()) || !seen.insert(p.as_str()) {
                    invalid(key, format!("path `{p}` is already in use"));
                }
            }
        }
        for files in [
            self.http.tls_files(),
            self.grpc.tls_files(),
            self.tcp.tls_files(),
        ] {
            if let Err(found) = crate::transports::tls::server_config(files, &[]) {
                for e in found {
                    invalid(e.key, e.reason);
                }
            }
        }
        if let Some(path) = &self.router_ca_file {
            if let Err(reason) = crate::transports::tls::check_ca_file(path) {
                invalid("router_ca_file", reason);
            }
        }
        if self.tcp.max_line_bytes == 0 {
            invalid("tcp.max_line_bytes", "must be greater than 0".into());
        }
        if self.pipeline.mailbox_capacity == 0 {
            invalid("pipeline.mailbox_capacity", "must be greater than 0".into());
        }
        if self.pipeline.bus_capacity == 0 {
            invalid("pipeline.bus_capacity", "must be greater than 0".into());
        }
        if self.pipeline.max_inflight_events < self.http.max_batch_events {
            invalid(
                "pipeline.max_inflight_events",
                format!(
                    "must be at least http.max_batch_events ({}), got {}",
                    self.http.max_batch_events, self.pipeline.max_inflight_events
                ),
            );
        }
        if !(100..=600_000).contains(&self.deadlines.request_ms) {
            invalid("deadlines.request_ms", "must be 100-600000".into());
        }
        // The durable answer (with its ids) must come before the request deadline's.
        if self.deadlines.durable_ack_ms < 100
            || self.deadlines.durable_ack_ms + 500 > self.deadlines.request_ms
        {
            invalid(
                "deadlines.durable_ack_ms",
                format!(
                    "must be at least 100 and at least 500 below deadlines.request_ms ({}), got {}",
                    self.deadlines.request_ms, self.deadlines.durable_ack_ms
                ),
            );
        }
        for (key, reason) in self.breaker.problems() {
            invalid(key, reason);
        }
        if self.pipeline.max_inflight_events > u32::MAX as usize {
            invalid(
                "pipeline.max_inflight_events",
                format!("must be at most {}", u32::MAX),
            );
        }
        if !(1..=MAX_DEDUP_IDS).contains(&self.aggregator.dedup_max_ids) {
            invalid(
                "aggregator.dedup_max_ids",
                format!("must be between 1 and {MAX_DEDUP_IDS}"),
            );
        }
        if self.aggregator.dedup_window_secs > MAX_DEDUP_WINDOW_SECS {
            invalid(
                "aggregator.dedup_window_secs",
                format!("must be at most {MAX_DEDUP_WINDOW_SECS} (a year)"),
            );
        }
        if self.aggregator.expire_interval_secs == 0 {
            invalid(
                "aggregator.expire_interval_secs",
                "must be greater than 0".into(),
            );
        }
        if !STREAM_INTERVAL_MS.contains(&self.query.stream_interval_ms) {
            invalid(
                "query.stream_interval_ms",
                format!(
                    "must be from {} to {} (milliseconds), got {}",
                    STREAM_INTERVAL_MS.start(),
                    STREAM_INTERVAL_MS.end(),
                    self.query.stream_interval_ms
                ),
            );
        }
        if !(1..=MAX_STREAMS).contains(&self.query.max_streams) {
            invalid(
                "query.max_streams",
                format!(
                    "must be from 1 to {MAX_STREAMS}, got {}",
                    self.query.max_streams
                ),
            );
        }
        if self.shutdown.deadline_secs == 0 {
            invalid("shutdown.deadline_secs", "must be greater than 0".into());
        }
        if let Err(found) = crate::gateway::Authenticator::load(&self.auth) {
            for (key, reason) in found {
                invalid(key, reason);
            }
        }
        if self.auth.leeway_secs > MAX_LEEWAY_SECS {
            invalid(
                "auth.leeway_secs",
                format!("must be at most {MAX_LEEWAY_SECS} (seconds)"),
            );
        }
        if let Some(path) = &self.auth.forward_token_file {
            if let Err(reason) = crate::transports::forward::read_token(path) {
                invalid("auth.forward_token_file", reason);
            }
        }
        if self.limits.max_clients == 0 {
            invalid("limits.max_clients", "must be greater than 0".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            invalid(
                "log.level",
                format!("`{}` is not a log filter", self.log.level),
            );
        }
        problems
    }

    /// What the components registry needs from this configuration.
    pub fn settings(&self) -> Settings {
        Settings {
            kafka: self.kafka.clone(),
            rabbitmq: self.rabbitmq.clone(),
            valkey: self.valkey.clone(),
            memory_bus_capacity: self.pipeline.bus_capacity,
            dedup_window: Duration::from_secs(self.aggregator.dedup_window_secs),
            dedup_max_ids: self.aggregator.dedup_max_ids,
            publish_timeout: self.deadlines.durable_ack(),
        }
    }

    /// The effective configuration as TOML, with secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        shown.store = shown.store.masked();
        shown.router_url = shown.router_url.as_deref().map(mask_url_password);
        shown.rabbitmq.url = mask_url_password(&shown.rabbitmq.url);
        shown.kafka.options = shown.kafka.options.masked();
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Names each failing key as a user writes it (`http.addr`, and the variable
/// `FLUJO__HTTP__ADDR` when it came from the environment), one error each.
fn describe(errors: figment::Error) -> Vec<ConfigError> {
    errors
        .into_iter()
        .map(|e| {
            let mut path: Vec<String> = e.path.iter().map(|p| p.to_lowercase()).collect();
            if let figment::error::Kind::UnknownField(field, _) = &e.kind {
                if path.last() != Some(&field.to_lowercase()) {
                    path.push(field.to_lowercase());
                }
            }
            let key = path.join(".");
            let origin = match &e.metadata {
                Some(m) if m.name.contains("environment") => {
                    format!(
                        " (environment variable FLUJO__{})",
                        key.replace('.', "__").to_uppercase()
                    )
                }
                Some(m) => match &m.source {
                    Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
                    Some(figment::Source::Code(_)) => " (command-line flag)".to_owned(),
                    _ => format!(" (from {})", m.name),
                },
                None => String::new(),
            };
            ConfigError::Load(if key.is_empty() {
                format!("{}{origin}", e.kind)
            } else {
                format!("key `{key}`{origin}: {}", e.kind)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error
    fn layers_file_env_flags_and_names_bad_keys() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "flujo.toml",
                "[http]\naddr = \"127.0.0.1:1000\"\nmax_batch_events = 50\n[query]\ncache_ttl_ms = 5\n",
            )?;
            jail.set_env("FLUJO__HTTP__ADDR", "127.0.0.1:2000");
            jail.set_env("FLUJO__QUERY__CACHE_TTL_MS", "7");
            let flags = Overrides {
                config_file: None,
                values: vec![("http.addr", "127.0.0.1:3000".into())],
            };
            let c = Config::load(&flags).expect("loads");
            assert_eq!(c.http.addr.port(), 3000, "flag wins");
            assert_eq!(c.query.cache_ttl_ms, 7, "env beats file");
            assert_eq!(c.http.max_batch_events, 50, "file beats default");
            assert_eq!(c.shutdown.deadline_secs, 20, "default");

            jail.set_env("FLUJO__HTTP__ADDR", "not-an-address");
            let err = Config::load(&Overrides::default())
                .expect_err("bad addr")
                .to_string();
            assert!(err.contains("http.addr"), "{err}");
            jail.set_env("FLUJO__HTTP__ADDR", "127.0.0.1:2000");

            jail.set_env("FLUJO__HTTP__MAX_BODY", "1");
            let err = Config::load(&Overrides::default())
                .expect_err("unknown")
                .to_string();
            assert!(err.contains("max_body"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error
    fn the_config_file_variable_is_no_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("FLUJO__CONFIG", "elsewhere.toml");
            Config::load(&Overrides::default()).expect("FLUJO__CONFIG is not a config key");
            Ok(())
        });
    }

    #[test]
    fn every_problem_is_listed_on_its_own_line() {
        let mut c = Config::default();
        c.shutdown.deadline_secs = 0;
        c.tcp.max_line_bytes = 0;
        let lines = c.check().expect_err("two problems").lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("key `tcp.max_line_bytes`"), "{lines:?}");
        assert!(
            lines[1].contains("key `shutdown.deadline_secs`"),
            "{lines:?}"
        );
        assert!(Config::default().check().is_ok());
    }

    #[test]
    fn value_checks_name_the_key() {
        let mut c = Config::default();
        c.pipeline.max_inflight_events = 10;
        let err = c.check().expect_err("too small").to_string();
        assert!(err.contains("pipeline.max_inflight_events"), "{err}");
        let mut c = Config::default();
        c.http.tweet_paths = vec!["/metrics".into()];
        let err = c.check().expect_err("builtin path").to_string();
        assert!(err.contains("http.tweet_paths"), "{err}");
        for ids in [0, MAX_DEDUP_IDS + 1] {
            let mut c = Config::default();
            c.aggregator.dedup_max_ids = ids;
            let err = c.check().expect_err("dedup cap").to_string();
            assert!(err.contains("aggregator.dedup_max_ids"), "{err}");
        }
        let mut c = Config::default();
        c.aggregator.dedup_window_secs = MAX_DEDUP_WINDOW_SECS + 1;
        let err = c.check().expect_err("dedup window").to_string();
        assert!(err.contains("aggregator.dedup_window_secs"), "{err}");
        for ms in [0, 99, 60_001] {
            let mut c = Config::default();
            c.query.stream_interval_ms = ms;
            let err = c.check().expect_err("stream interval").to_string();
            assert!(err.contains("query.stream_interval_ms"), "{err}");
        }
        for n in [0, MAX_STREAMS + 1] {
            let mut c = Config::default();
            c.query.max_streams = n;
            let err = c.check().expect_err("stream cap").to_string();
            assert!(err.contains("query.max_streams"), "{err}");
        }
        assert!(Config::default().to_masked_toml().contains("[http]"));
    }

    #[test]
    fn masked_toml_hides_passwords() {
        let c = Config {
            store: "valkey://:s3cret@h:6379".parse().expect("store"),
            ..Config::default()
        };
        let shown = c.to_masked_toml();
        assert!(
            shown.contains("store = \"valkey://:****@h:6379\""),
            "{shown}"
        );
        assert!(shown.contains("role = \"all\""), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("guest:guest"),
            "{shown}"
        );
    }
}
