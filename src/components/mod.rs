//! Components: the buses and stores flujo talks to, one folder each, and the one
//! registry that turns their configuration into `Arc<dyn Sink>`, `Box<dyn Source>`
//! and `Arc<dyn Store>` (the seam traits of `flujo-actors`).
//!
//! # Layout
//! - this file: [`Bus`], [`Routes`], [`StoreLocation`], [`Settings`] and the registry
//!   [`Components`] (sinks, sources, store, Kafka topic creation).
//! - [`wire`]: the message format both brokers share (canonical JSON, headers).
//! - [`memory`]: the in-process bus and store (glue; implemented in `flujo-actors`).
//! - [`kafka`]: `config`, `admin` (topics), `sink`, `source`, `lag`.
//! - [`rabbitmq`]: `config`, `admin` (connections, queues), `sink`, `source`.
//! - [`valkey`]: `config`, `store` and the Lua batch scripts.
//! - [`probes`]: the `/readyz` probes of sinks, sources and stores.
//! - each component's `reach`: a one-shot check that its server answers, without
//!   creating anything ([`ReachError`]; `flujo validate`).
//!
//! Components know nothing of the process configuration or the transports: the
//! configuration builds a [`Settings`] and the role wiring asks the registry.

pub mod kafka;
pub mod memory;
pub mod probes;
pub mod rabbitmq;
pub mod valkey;
pub mod wire;

use flujo_actors::bus::MemorySource;
use flujo_actors::consumer::{Source, SourceReadiness};
use flujo_actors::event::Kind;
use flujo_actors::publisher::Sink;
use flujo_actors::store::{Store, StoreError};
use kafka::{KafkaConfig, KafkaSetupError, KafkaSink, KafkaSource};
use probes::ComponentProbe;
use rabbitmq::{RabbitConfig, RabbitSink, RabbitSource};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use valkey::{ValkeyConfig, ValkeyStore};

/// How long the registry waits for a new RabbitMQ sink to connect before going on
/// (a broker that is down only fails readiness, not the start).
const RABBIT_FIRST_CONNECT: Duration = Duration::from_secs(3);

/// A bus between the router and the consumers.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
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

    /// The name used in configuration and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Bus::Memory => "memory",
            Bus::Kafka => "kafka",
            Bus::Rabbitmq => "rabbitmq",
        }
    }
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The buses each event kind is published to (and consumed from), deduplicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    /// Buses of sales.
    pub sale: Vec<Bus>,
    /// Buses of tweets.
    pub tweet: Vec<Bus>,
}

impl Routes {
    /// The buses of `kind`.
    pub fn of(&self, kind: Kind) -> &[Bus] {
        kind.pick(&self.sale, &self.tweet)
    }

    /// Every bus in use, each once, in a fixed order.
    pub fn buses(&self) -> Vec<Bus> {
        let mut all: Vec<Bus> = self.sale.iter().chain(&self.tweet).copied().collect();
        all.sort();
        all.dedup();
        all
    }
}

/// Where the KPIs live: `memory`, or a Valkey (or Redis) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// In this process; gone with it.
    Memory,
    /// A Valkey server, `valkey://HOST:PORT` or `redis://HOST:PORT`, or over TLS
    /// `valkeys://HOST:PORT` or `rediss://HOST:PORT`; or a Valkey Cluster,
    /// `valkey+cluster://HOST:PORT[,HOST:PORT…]` (`valkeys+cluster://` over TLS).
    Valkey(String),
}

impl StoreLocation {
    /// Whether the store is reached over TLS (`valkeys://`, `rediss://`).
    pub fn tls(&self) -> bool {
        match self {
            StoreLocation::Memory => false,
            StoreLocation::Valkey(url) => [
                "valkeys://",
                "rediss://",
                "valkeys+cluster://",
                "rediss+cluster://",
            ]
            .iter()
            .any(|scheme| url.starts_with(scheme)),
        }
    }

    /// The same location with the URL's password masked, for display.
    pub fn masked(&self) -> StoreLocation {
        match self {
            StoreLocation::Memory => StoreLocation::Memory,
            StoreLocation::Valkey(url) => StoreLocation::Valkey(mask_url_password(url)),
        }
    }
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "memory" => Ok(StoreLocation::Memory),
            url if [
                "valkey://",
                "redis://",
                "valkeys://",
                "rediss://",
                "valkey+cluster://",
                "redis+cluster://",
                "valkeys+cluster://",
                "rediss+cluster://",
            ]
            .iter()
            .any(|scheme| url.starts_with(scheme)) =>
            {
                Ok(StoreLocation::Valkey(url.to_owned()))
            }
            other => Err(format!(
                "unknown store `{other}`; expected `memory`, `valkey://HOST:PORT`, \
                 `valkeys://HOST:PORT` (TLS) or `valkey+cluster://HOST:PORT[,HOST:PORT…]`"
            )),
        }
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Memory => f.write_str("memory"),
            StoreLocation::Valkey(url) => f.write_str(url),
        }
    }
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

/// Reads a PEM file of CA certificates (a private CA a broker's or the store's
/// certificate is signed by); it must hold at least one certificate, each usable
/// as a CA (checked as [`crate::transports::tls::check_ca_file`] does for the
/// listeners' clients).
pub fn read_ca_pem(path: &std::path::Path) -> Result<String, String> {
    crate::transports::tls::check_ca_file(path)?;
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Makes ring the process's rustls crypto provider, once (the TLS clients of
/// RabbitMQ and Valkey build their configurations with the process default, which
/// must be set when more than one provider is compiled in). Idempotent: `main`
/// calls it first thing; the clients call it again for tests and other embedders.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client handle that `Debug` shows as `..` (librdkafka's have no `Debug`), so
/// that the struct holding it can derive `Debug`. Derefs to the handle.
#[derive(Clone)]
pub struct Opaque<T>(pub T);

impl<T> std::ops::Deref for Opaque<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Opaque<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("..")
    }
}

/// What the registry needs to open components.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `[kafka]` section.
    pub kafka: KafkaConfig,
    /// The `[rabbitmq]` section.
    pub rabbitmq: RabbitConfig,
    /// The `[valkey]` section.
    pub valkey: ValkeyConfig,
    /// Batches the memory bus holds.
    pub memory_bus_capacity: usize,
    /// How long a store remembers an applied event id.
    pub dedup_window: Duration,
    /// The most ids a store remembers per kind.
    pub dedup_max_ids: usize,
    /// How long a sink may take to confirm a batch (the durable-ack deadline):
    /// librdkafka's `message.timeout.ms`.
    pub publish_timeout: Duration,
}

/// Why a dependency could not be reached by a one-shot check (`flujo validate`:
/// [`kafka::reach`], [`rabbitmq::reach`], [`valkey::reach`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReachError {
    /// The settings cannot be used at all (a URL that does not parse, a client
    /// configuration librdkafka refuses): a configuration error.
    #[error("{0}")]
    Invalid(String),
    /// The dependency did not answer, or refused the connection or the login.
    #[error("{0}")]
    Unreachable(String),
}

/// A component could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// librdkafka refused the producer.
    #[error("cannot create the Kafka producer")]
    KafkaProducer(#[source] KafkaSetupError),
    /// librdkafka refused the consumer.
    #[error("cannot create the Kafka consumer")]
    KafkaConsumer(#[source] KafkaSetupError),
    /// The store URL cannot be used.
    #[error("bad store URL")]
    StoreUrl(#[source] StoreError),
}

/// The registry of one process: the sinks of every bus in use (router role), the
/// sources of every bus a kind is routed to and the store (consumer role).
pub struct Components {
    settings: Settings,
    sinks: Vec<(Bus, Arc<dyn Sink>)>,
    memory_source: Option<MemorySource>,
}

impl fmt::Debug for Components {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sinks: Vec<Bus> = self.sinks.iter().map(|(bus, _)| *bus).collect();
        f.debug_struct("Components")
            .field("sinks", &sinks)
            .field("memory_source", &self.memory_source.is_some())
            .finish_non_exhaustive()
    }
}

impl Components {
    /// Opens what `buses` need: the Kafka topics (created now, or in the background
    /// while the broker is away) when this process publishes or consumes, and one
    /// sink per bus when it publishes. Call inside a tokio runtime.
    pub async fn open(
        settings: Settings,
        buses: &[Bus],
        publish: bool,
        consume: bool,
    ) -> Result<Components, ComponentError> {
        if (publish || consume) && buses.contains(&Bus::Kafka) {
            kafka::spawn_topic_creation(settings.kafka.clone()).await;
        }
        let mut sinks: Vec<(Bus, Arc<dyn Sink>)> = Vec::new();
        let mut memory_source = None;
        if publish {
            for &bus in buses {
                let sink: Arc<dyn Sink> = match bus {
                    Bus::Memory => {
                        let (sink, source) = memory::bus(settings.memory_bus_capacity);
                        memory_source = Some(source);
                        sink
                    }
                    Bus::Kafka => Arc::new(
                        KafkaSink::with_message_timeout(&settings.kafka, settings.publish_timeout)
                            .map_err(ComponentError::KafkaProducer)?,
                    ),
                    Bus::Rabbitmq => {
                        let sink = RabbitSink::new(settings.rabbitmq.clone());
                        // Starts the reconnecting connection on this runtime.
                        if let Err(e) = sink.wait_ready(RABBIT_FIRST_CONNECT).await {
                            tracing::warn!(error = %e, "rabbitmq not reachable yet; will keep trying");
                        }
                        Arc::new(sink)
                    }
                };
                sinks.push((bus, sink));
            }
        }
        Ok(Components {
            settings,
            sinks,
            memory_source,
        })
    }

    /// Every sink with its bus (none unless opened to publish).
    pub fn sinks(&self) -> &[(Bus, Arc<dyn Sink>)] {
        &self.sinks
    }

    /// The sources a consumer reads: the memory bus (both kinds, when this process
    /// publishes on it too), and one per kind and broker that kind is routed to.
    /// Sources with offsets (Kafka) resume at the positions stored in `store`.
    /// Call inside a tokio runtime.
    pub fn sources(
        &mut self,
        routes: &Routes,
        store: &Arc<dyn Store>,
        stop: &CancellationToken,
    ) -> Result<Vec<Box<dyn Source>>, ComponentError> {
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        if let Some(memory) = self.memory_source.take() {
            sources.push(Box::new(memory));
        }
        for kind in Kind::ALL {
            for &bus in routes.of(kind) {
                match bus {
                    Bus::Memory => {}
                    Bus::Kafka => sources.push(Box::new(
                        KafkaSource::new(&self.settings.kafka, kind, store.clone(), stop.clone())
                            .map_err(ComponentError::KafkaConsumer)?,
                    )),
                    Bus::Rabbitmq => sources.push(Box::new(RabbitSource::new(
                        self.settings.rabbitmq.clone(),
                        kind,
                        stop.clone(),
                    ))),
                }
            }
        }
        Ok(sources)
    }

    /// Opens the KPI store at `location`. Call inside a tokio runtime.
    pub fn open_store(&self, location: &StoreLocation) -> Result<Arc<dyn Store>, ComponentError> {
        let (window, max_ids) = (self.settings.dedup_window, self.settings.dedup_max_ids);
        match location {
            StoreLocation::Memory => Ok(memory::store(window, max_ids)),
            StoreLocation::Valkey(url) => {
                let valkey = &self.settings.valkey;
                let store = ValkeyStore::connect_with_ca(
                    url,
                    valkey.ca_file.as_deref(),
                    &valkey.prefix,
                    window,
                    valkey.pool_size,
                )
                .map_err(ComponentError::StoreUrl)?;
                let store = match valkey.shards {
                    Some(shards) => store.with_shards(shards),
                    None => store,
                };
                Ok(Arc::new(store.with_max_ids(max_ids)))
            }
        }
    }
}

/// One readiness probe per bus the `sources` read (`source:kafka`, …), each asking
/// every source of that bus.
pub fn source_probes(sources: &[Box<dyn Source>]) -> Vec<ComponentProbe> {
    let mut by_bus: Vec<(&'static str, Vec<Arc<dyn SourceReadiness>>)> = Vec::new();
    for source in sources {
        match by_bus.iter_mut().find(|(name, _)| *name == source.name()) {
            Some((_, checks)) => checks.push(source.readiness()),
            None => by_bus.push((source.name(), vec![source.readiness()])),
        }
    }
    by_bus
        .into_iter()
        .map(|(name, checks)| ComponentProbe::sources(name, checks))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn store_locations_parse_and_print() {
        assert_eq!("memory".parse(), Ok(StoreLocation::Memory));
        let url = "valkey://:pw@h:6379";
        let location: StoreLocation = url.parse().expect("valkey");
        assert_eq!(location.to_string(), url);
        assert_eq!(location.masked().to_string(), "valkey://:****@h:6379");
        assert!("redis://h".parse::<StoreLocation>().is_ok());
        let err = "postgres://x"
            .parse::<StoreLocation>()
            .expect_err("unknown");
        assert!(err.contains("unknown store `postgres://x`"), "{err}");
    }

    #[test]
    fn routes_list_each_bus_once() {
        let routes = Routes {
            sale: vec![Bus::Kafka],
            tweet: vec![Bus::Rabbitmq, Bus::Kafka],
        };
        assert_eq!(routes.of(Kind::Tweet), [Bus::Rabbitmq, Bus::Kafka]);
        assert_eq!(routes.buses(), vec![Bus::Kafka, Bus::Rabbitmq]);
    }
}
