//! Configuration: defaults in code < `flujo.toml` (or `--config FILE`) < environment
//! `FLUJO__SECTION__KEY` < command-line flags. Unknown keys and bad values fail at
//! start with a message that names the key.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use flujo_actors::event::Kind;
use flujo_actors::messages::AckMode;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything `flujo run` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Roles this process runs: `all`, or a comma-separated set of receiver, router, consumer.
    pub role: String,
    /// The bus between router and consumers: `memory`, `kafka` or `rabbitmq`.
    pub bus: Bus,
    /// Sinks per event kind; a kind not listed goes to `bus`.
    pub routes: RoutesConfig,
    /// Where KPIs live: `memory` or `valkey://HOST:PORT`.
    pub store: String,
    /// gRPC URL of the router role, for a process that runs receivers but no router.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_url: Option<String>,
    /// When clients get their 202: `durable` or `accepted`; unset = the bus's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<AckMode>,
    /// Kafka bus.
    pub kafka: crate::kafka::KafkaConfig,
    /// RabbitMQ bus.
    pub rabbitmq: crate::rabbitmq::RabbitConfig,
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
    /// Logging.
    pub log: LogConfig,
}

/// The bus between the router and the consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    /// In-process queue; nothing survives the process.
    Memory,
    /// Kafka topics (section `[kafka]`).
    Kafka,
    /// RabbitMQ queues (section `[rabbitmq]`).
    Rabbitmq,
}

impl Bus {
    /// True for a broker between processes.
    pub fn is_broker(self) -> bool {
        self != Bus::Memory
    }
}

/// Which sinks each kind is published to, e.g. `tweet = ["kafka", "rabbitmq"]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// Sinks of sales; unset = `[bus]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sale: Option<Vec<Bus>>,
    /// Sinks of tweets; unset = `[bus]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tweet: Option<Vec<Bus>>,
}

/// Valkey store settings (used when `store` is a `valkey://` URL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValkeyConfig {
    /// Prefix of every key flujo writes.
    pub prefix: String,
    /// Connections in the pool.
    pub pool_size: usize,
}

impl Default for ValkeyConfig {
    fn default() -> Self {
        ValkeyConfig {
            prefix: "flujo:".into(),
            pool_size: 8,
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address (ingest, query, metrics and health).
    pub addr: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most events accepted in one request.
    pub max_batch_events: usize,
    /// Extra paths that take sales like `/v1/sales` (besides `/purchase`, always served).
    pub sales_paths: Vec<String>,
    /// Extra paths that take tweets like `/v1/tweets` (besides `/input`, always served).
    pub tweet_paths: Vec<String>,
}

/// gRPC server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Listen address of `flujo.v1.Ingest`, health and reflection.
    pub addr: SocketAddr,
}

/// TCP line server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Longest accepted line, in bytes (without its newline).
    pub max_line_bytes: usize,
}

/// Sizing of the actor pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Receiver actors, one per arbiter thread; 0 = one per CPU.
    pub receivers: usize,
    /// Mailbox capacity of every actor, in messages.
    pub mailbox_capacity: usize,
    /// Events admitted and not yet settled before ingest answers 429.
    pub max_inflight_events: usize,
    /// Batches the memory bus holds.
    pub bus_capacity: usize,
}

/// Aggregator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorConfig {
    /// How long an applied event id is remembered, in seconds.
    pub dedup_window_secs: u64,
    /// How often expired ids are forgotten, in seconds.
    pub expire_interval_secs: u64,
}

/// Query API settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// How long a read is cached, in milliseconds; 0 disables the cache.
    pub cache_ttl_ms: u64,
}

/// Shutdown settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Time allowed to drain everything after SIGTERM, in seconds.
    pub deadline_secs: u64,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `flujo=debug`; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            role: "all".into(),
            bus: Bus::Memory,
            routes: RoutesConfig::default(),
            store: "memory".into(),
            router_url: None,
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
            log: LogConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            max_batch_events: 10_000,
            sales_paths: Vec::new(),
            tweet_paths: Vec::new(),
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 50051)),
        }
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 7070)),
            max_line_bytes: 64 * 1024,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            receivers: 0,
            mailbox_capacity: 1024,
            max_inflight_events: 200_000,
            bus_capacity: 4096,
        }
    }
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            dedup_window_secs: 24 * 3600,
            expire_interval_secs: 10,
        }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig { cache_ttl_ms: 1000 }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { deadline_secs: 20 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or a value has the wrong type.
    #[error("bad configuration: {0}")]
    Load(String),
    /// A value is well-typed but not acceptable.
    #[error("bad configuration: key `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `pipeline.max_inflight_events`.
        key: &'static str,
        /// Why it is refused.
        reason: String,
    },
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
    /// Loads defaults < file < environment < flags, then checks the values.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        figment = match &overrides.config_file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Invalid {
                        key: "--config",
                        reason: format!("file {} does not exist", path.display()),
                    });
                }
                figment.merge(Toml::file_exact(path))
            }
            None => figment.merge(Toml::file(Path::new("flujo.toml"))),
        };
        figment = figment.merge(Env::prefixed("FLUJO__").split("__"));
        for (key, value) in &overrides.values {
            figment = figment.merge(Serialized::default(key, value));
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(describe(e)))?;
        config.check()?;
        Ok(config)
    }

    /// Refuses values that are well-typed but unusable.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let roles = self.roles()?;
        let uses_memory = Kind::ALL
            .iter()
            .any(|&k| self.sinks(k).contains(&Bus::Memory));
        if uses_memory && roles.router != roles.consumer {
            return invalid(
                "role",
                format!(
                    "`{}` splits router and consumer, but the memory bus only connects them \
                     inside one process; use a broker bus (--bus kafka|rabbitmq)",
                    self.role
                ),
            );
        }
        if roles.receiver && !roles.router && self.router_url.is_none() {
            return invalid(
                "router_url",
                "a receiver without a local router forwards to the router role: set --router-url"
                    .into(),
            );
        }
        for (key, sinks) in [
            ("routes.sale", &self.routes.sale),
            ("routes.tweet", &self.routes.tweet),
        ] {
            if sinks.as_ref().is_some_and(|s| s.is_empty()) {
                return invalid(key, "needs at least one sink".into());
            }
        }
        if self.store_kind().is_none() {
            return invalid(
                "store",
                format!(
                    "unknown store `{}`; expected `memory` or `valkey://HOST:PORT`",
                    self.store
                ),
            );
        }
        if let Err(reason) = self.kafka.check() {
            return invalid("kafka", reason);
        }
        if let Err(reason) = self.rabbitmq.validate() {
            return invalid("rabbitmq", reason);
        }
        if self.valkey.prefix.is_empty() || self.valkey.pool_size == 0 {
            return invalid(
                "valkey",
                "prefix must not be empty and pool_size must be > 0".into(),
            );
        }
        if self.http.max_body_bytes == 0 {
            return invalid("http.max_body_bytes", "must be greater than 0".into());
        }
        if self.http.max_batch_events == 0 {
            return invalid("http.max_batch_events", "must be greater than 0".into());
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
                    return invalid(
                        key,
                        format!(
                            "path `{p}` must start with `/` and hold only letters, digits, `/-_.`"
                        ),
                    );
                }
                if crate::transports::http::BUILTIN_PATHS.contains(&p.as_str())
                    || !seen.insert(p.as_str())
                {
                    return invalid(key, format!("path `{p}` is already in use"));
                }
            }
        }
        if self.tcp.max_line_bytes == 0 {
            return invalid("tcp.max_line_bytes", "must be greater than 0".into());
        }
        if self.pipeline.mailbox_capacity == 0 {
            return invalid("pipeline.mailbox_capacity", "must be greater than 0".into());
        }
        if self.pipeline.bus_capacity == 0 {
            return invalid("pipeline.bus_capacity", "must be greater than 0".into());
        }
        if self.pipeline.max_inflight_events < self.http.max_batch_events {
            return invalid(
                "pipeline.max_inflight_events",
                format!(
                    "must be at least http.max_batch_events ({}), got {}",
                    self.http.max_batch_events, self.pipeline.max_inflight_events
                ),
            );
        }
        if self.pipeline.max_inflight_events > u32::MAX as usize {
            return invalid(
                "pipeline.max_inflight_events",
                format!("must be at most {}", u32::MAX),
            );
        }
        if self.aggregator.expire_interval_secs == 0 {
            return invalid(
                "aggregator.expire_interval_secs",
                "must be greater than 0".into(),
            );
        }
        if self.shutdown.deadline_secs == 0 {
            return invalid("shutdown.deadline_secs", "must be greater than 0".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid(
                "log.level",
                format!("`{}` is not a log filter", self.log.level),
            );
        }
        Ok(())
    }

    /// The roles named by `role`.
    pub fn roles(&self) -> Result<Roles, ConfigError> {
        Roles::parse(&self.role).map_err(|reason| ConfigError::Invalid {
            key: "role",
            reason,
        })
    }

    /// The ack mode in force: the configured one, else `durable` when any kind goes
    /// to a broker or batches are forwarded to a remote router, and `accepted` on
    /// the memory bus alone.
    pub fn ack_mode(&self) -> AckMode {
        let brokers = Kind::ALL
            .iter()
            .any(|&k| self.sinks(k).iter().any(|b| b.is_broker()));
        // A receiver without a local router forwards to one in another process: only
        // that process's confirmation makes a 202 safe.
        let forwards = self.roles().is_ok_and(|r| r.receiver && !r.router);
        self.ack.unwrap_or(if brokers || forwards {
            AckMode::Durable
        } else {
            AckMode::Accepted
        })
    }

    /// The sinks events of `kind` are published to (and consumed from).
    pub fn sinks(&self, kind: Kind) -> Vec<Bus> {
        let configured = match kind {
            Kind::Sale => &self.routes.sale,
            Kind::Tweet => &self.routes.tweet,
        };
        let mut sinks = configured.clone().unwrap_or_else(|| vec![self.bus]);
        sinks.dedup();
        sinks
    }

    /// The store named by `store`: `None` for memory, `Some(url)` for Valkey;
    /// the outer `None` when it names neither.
    pub fn store_kind(&self) -> Option<Option<String>> {
        match self.store.as_str() {
            "memory" => Some(None),
            url if url.starts_with("valkey://") || url.starts_with("redis://") => {
                Some(Some(url.to_owned()))
            }
            _ => None,
        }
    }

    /// Receiver actors to start.
    pub fn receiver_count(&self) -> usize {
        match self.pipeline.receivers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// The effective configuration as TOML, with secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        shown.store = mask_url_password(&shown.store);
        shown.router_url = shown.router_url.as_deref().map(mask_url_password);
        shown.rabbitmq.url = mask_url_password(&shown.rabbitmq.url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Names each failing key as a user writes it (`http.addr`, and the variable
/// `FLUJO__HTTP__ADDR` when it came from the environment).
fn describe(errors: figment::Error) -> String {
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
            if key.is_empty() {
                format!("{}{origin}", e.kind)
            } else {
                format!("key `{key}`{origin}: {}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Replaces the password of `scheme://user:password@host` with `****`.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:****@{host}"),
        None => url.to_owned(),
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Runs receivers (ingest transports).
    pub receiver: bool,
    /// Runs the router and publishers.
    pub router: bool,
    /// Runs consumers, the aggregator and the query API.
    pub consumer: bool,
}

impl Roles {
    /// Every role.
    pub const ALL: Roles = Roles {
        receiver: true,
        router: true,
        consumer: true,
    };

    /// Parses `all` or a comma-separated list of receiver, router, consumer.
    pub fn parse(text: &str) -> Result<Roles, String> {
        let mut roles = Roles {
            receiver: false,
            router: false,
            consumer: false,
        };
        for part in text.split(',').map(str::trim) {
            match part {
                "all" => roles = Roles::ALL,
                "receiver" => roles.receiver = true,
                "router" => roles.router = true,
                "consumer" => roles.consumer = true,
                other => {
                    return Err(format!(
                        "unknown role `{other}`; expected all, receiver, router, consumer or a comma-separated list"
                    ))
                }
            }
        }
        Ok(roles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse() {
        assert_eq!(Roles::parse("all"), Ok(Roles::ALL));
        assert_eq!(Roles::parse("receiver, router,consumer"), Ok(Roles::ALL));
        let r = Roles::parse("router").expect("valid");
        assert!(r.router && !r.receiver && !r.consumer);
        assert!(Roles::parse("writer").expect_err("bad").contains("writer"));
    }

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_url_password("valkey://:s3cret@h:6379"),
            "valkey://:****@h:6379"
        );
        assert_eq!(
            mask_url_password("amqp://guest:guest@h/"),
            "amqp://guest:****@h/"
        );
        assert_eq!(mask_url_password("memory"), "memory");
    }

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
    fn semantic_checks_name_the_key() {
        let mut c = Config::default();
        c.pipeline.max_inflight_events = 10;
        let err = c.check().expect_err("too small").to_string();
        assert!(err.contains("pipeline.max_inflight_events"), "{err}");
        let c = Config {
            role: "router".into(),
            ..Config::default()
        };
        let err = c.check().expect_err("memory bus split").to_string();
        assert!(err.contains("`role`"), "{err}");
        let c = Config {
            role: "receiver".into(),
            ..Config::default()
        };
        let err = c.check().expect_err("no router").to_string();
        assert!(err.contains("`router_url`"), "{err}");
        let c = Config {
            role: "receiver".into(),
            router_url: Some("http://router:50051".into()),
            ..Config::default()
        };
        assert!(c.check().is_ok());
        let c = Config {
            role: "router".into(),
            bus: Bus::Kafka,
            ..Config::default()
        };
        assert!(c.check().is_ok());
        assert_eq!(c.ack_mode(), AckMode::Durable);
        assert_eq!(Config::default().ack_mode(), AckMode::Accepted);
        let mut c = Config::default();
        c.routes.tweet = Some(vec![Bus::Kafka, Bus::Rabbitmq]);
        assert_eq!(c.sinks(Kind::Tweet), vec![Bus::Kafka, Bus::Rabbitmq]);
        assert_eq!(c.sinks(Kind::Sale), vec![Bus::Memory]);
        let c = Config {
            store: "postgres://x".into(),
            ..Config::default()
        };
        assert!(c
            .check()
            .expect_err("store")
            .to_string()
            .contains("`store`"));
        assert!(Config::default().to_masked_toml().contains("[http]"));
        let mut c = Config::default();
        c.routes.tweet = Some(vec![Bus::Kafka, Bus::Rabbitmq]);
        assert_eq!(c.sinks(Kind::Tweet), vec![Bus::Kafka, Bus::Rabbitmq]);
        assert_eq!(c.sinks(Kind::Sale), vec![Bus::Memory]);
    }
}
