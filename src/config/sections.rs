//! The sections of the configuration that belong to the servers and actors (the
//! components' sections live with their components).

use super::Bus;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address (ingest, query, metrics and health).
    pub addr: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most events accepted in one request (1 to 1,000,000).
    pub max_batch_events: usize,
    /// Extra paths that take sales like `/v1/sales` (besides `/purchase`, always served).
    pub sales_paths: Vec<String>,
    /// Extra paths that take tweets like `/v1/tweets` (besides `/input`, always served).
    pub tweet_paths: Vec<String>,
    /// PEM certificate chain of the port; with `tls_key_file` (both or neither) the
    /// port speaks HTTPS only (ALPN h2 and http/1.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
}

/// gRPC server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Listen address of `flujo.v1.Ingest`, health and reflection.
    pub addr: SocketAddr,
    /// PEM certificate chain of the port; with `tls_key_file` (both or neither) the
    /// port speaks gRPC over TLS only (ALPN h2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
}

/// TCP line server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Longest accepted line, in bytes (without its newline).
    pub max_line_bytes: usize,
    /// PEM certificate chain of the port; with `tls_key_file` (both or neither) the
    /// line protocol runs inside TLS only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
}

/// Sizing of the actor pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Receiver actors, one per arbiter thread; 0 = one per CPU.
    pub receivers: usize,
    /// Mailbox capacity of every actor, in messages.
    pub mailbox_capacity: usize,
    /// Events admitted and not yet settled; a batch that does not fit waits for
    /// room (`admission_wait_ms`), then ingest answers 429.
    pub max_inflight_events: usize,
    /// How long a batch waits for room in a full pipeline before it is refused
    /// (429, `RESOURCE_EXHAUSTED`, `err busy`), in milliseconds; never past the
    /// request's own deadline. 0 refuses at once.
    pub admission_wait_ms: u64,
    /// Batches the memory bus holds.
    pub bus_capacity: usize,
}

/// Aggregator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorConfig {
    /// How long an applied event id is remembered, in seconds, so that a resend (by
    /// a client, the receiver's forward or a producer) is applied once; 0 disables.
    pub dedup_window_secs: u64,
    /// The most ids remembered per kind; when the window holds that many, the
    /// oldest are forgotten first (`flujo_dedup_evicted_total`).
    pub dedup_max_ids: usize,
    /// How often expired ids are forgotten, in seconds.
    pub expire_interval_secs: u64,
}

/// Query API settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// How long a read is cached, in milliseconds; 0 disables the cache.
    pub cache_ttl_ms: u64,
    /// How often `/v1/stream/kpis` sends a snapshot, in milliseconds (100–60,000).
    pub stream_interval_ms: u64,
    /// Most `/v1/stream/kpis` streams open at once; beyond, 503.
    pub max_streams: usize,
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
    /// `tracing` filter, e.g. `info` or `flujo=debug`. `RUST_LOG` overrides the
    /// file's and `FLUJO__LOG__LEVEL`'s value; the `--log-level` flag overrides `RUST_LOG`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            max_batch_events: 10_000,
            sales_paths: Vec::new(),
            tweet_paths: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 50051)),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 7070)),
            max_line_bytes: 64 * 1024,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            receivers: 0,
            mailbox_capacity: 1024,
            max_inflight_events: 200_000,
            admission_wait_ms: flujo_actors::receiver::DEFAULT_ADMISSION_WAIT.as_millis() as u64,
            bus_capacity: 4096,
        }
    }
}

impl PipelineConfig {
    /// How long a batch waits for room in a full pipeline.
    pub fn admission_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.admission_wait_ms)
    }
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            // 10 min: past every retry flujo or a broker makes by itself (producer
            // 30 s, forward seconds) and a consumer pod's crash-loop back-off (5 min
            // at most) before RabbitMQ redelivers; Kafka redeliveries are exact by
            // position whatever the window (README, "Exactly once, and its bounds").
            dedup_window_secs: 600,
            dedup_max_ids: flujo_actors::dedup::DEFAULT_MAX_IDS,
            expire_interval_secs: 10,
        }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            cache_ttl_ms: 1000,
            stream_interval_ms: 1000,
            max_streams: 100,
        }
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

/// The TLS files of one listener as configured, and the keys that name them.
#[derive(Debug, Clone, Copy)]
pub struct ListenerTlsFiles<'a> {
    /// The key of the certificate file, e.g. `http.tls_cert_file`.
    pub cert_key: &'static str,
    /// The key of the private key file, e.g. `http.tls_key_file`.
    pub key_key: &'static str,
    /// The certificate chain file, when set.
    pub cert: Option<&'a Path>,
    /// The private key file, when set.
    pub key: Option<&'a Path>,
}

impl HttpConfig {
    /// The TLS files of the HTTP port.
    pub fn tls_files(&self) -> ListenerTlsFiles<'_> {
        ListenerTlsFiles {
            cert_key: "http.tls_cert_file",
            key_key: "http.tls_key_file",
            cert: self.tls_cert_file.as_deref(),
            key: self.tls_key_file.as_deref(),
        }
    }
}

impl GrpcConfig {
    /// The TLS files of the gRPC port.
    pub fn tls_files(&self) -> ListenerTlsFiles<'_> {
        ListenerTlsFiles {
            cert_key: "grpc.tls_cert_file",
            key_key: "grpc.tls_key_file",
            cert: self.tls_cert_file.as_deref(),
            key: self.tls_key_file.as_deref(),
        }
    }
}

impl TcpConfig {
    /// The TLS files of the TCP port.
    pub fn tls_files(&self) -> ListenerTlsFiles<'_> {
        ListenerTlsFiles {
            cert_key: "tcp.tls_cert_file",
            key_key: "tcp.tls_key_file",
            cert: self.tls_cert_file.as_deref(),
            key: self.tls_key_file.as_deref(),
        }
    }
}

impl LogFormat {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Deadlines (section `[deadlines]`): how long a client waits at most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadlinesConfig {
    /// Longest time to answer one request: an HTTP request (except the endless
    /// `/v1/stream/kpis`), a gRPC call (a shorter `grpc-timeout` wins) or a batch of
    /// TCP lines, in ms. Past it: HTTP 503, gRPC `CANCELLED`/`DEADLINE_EXCEEDED`,
    /// TCP `err deadline ...`; but an ingest whose publishing began is answered
    /// just before it, as an unknown outcome with its ids.
    pub request_ms: u64,
    /// Longest wait for the sinks to confirm a batch with `ack = "durable"`, in ms
    /// (also librdkafka's `message.timeout.ms`). Past it the outcome is unknown: 503
    /// with the ids to resend. Must be at least 500 below `request_ms`.
    pub durable_ack_ms: u64,
}

impl Default for DeadlinesConfig {
    fn default() -> Self {
        DeadlinesConfig {
            request_ms: 10_000,
            durable_ack_ms: 5_000,
        }
    }
}

impl DeadlinesConfig {
    /// The request deadline.
    pub fn request(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.request_ms)
    }

    /// The durable-ack deadline.
    pub fn durable_ack(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.durable_ack_ms)
    }
}
