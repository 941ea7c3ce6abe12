//! Logs (tracing) and the Prometheus recorder.

use crate::config::{LogConfig, LogFormat};
use flujo_actors::metrics::{self, LATENCY_BUCKETS};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Where the log filter comes from, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelSource {
    /// `--log-level` on the command line: wins over `RUST_LOG`.
    Flag,
    /// The file or `FLUJO__LOG__LEVEL` (or the default): `RUST_LOG` wins over it.
    Config,
}

/// The filter `log.level` and `RUST_LOG` resolve to: the `--log-level` flag, else
/// `RUST_LOG` when set and valid, else the configured level.
pub fn log_filter(log: &LogConfig, source: LevelSource) -> EnvFilter {
    let from_env = match source {
        LevelSource::Flag => None,
        LevelSource::Config => EnvFilter::try_from_default_env().ok(),
    };
    from_env
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// Installs the log subscriber with [`log_filter`]; to stderr.
pub fn init_logs(log: &LogConfig, source: LevelSource) {
    let filter = log_filter(log, source);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // Already installed (tests starting several servers in one process): keep the first.
    drop(installed);
}

/// Installs the global metrics recorder and describes every metric.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .install_recorder()?;
    metrics::describe();
    ::metrics::gauge!(metrics::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}
