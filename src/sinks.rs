//! Opens what a process's configuration names: the sinks of every bus in use (and
//! their sources, for consumers) and the KPI store.

use crate::config::{Bus, Config};
use crate::kafka::{ensure_topics, KafkaConfig, KafkaSink, KafkaSource};
use crate::rabbitmq::{RabbitSink, RabbitSource};
use crate::valkey::ValkeyStore;
use anyhow::Context as _;
use flujo_actors::bus::{memory_bus, MemorySource};
use flujo_actors::consumer::Source;
use flujo_actors::event::Kind;
use flujo_actors::publisher::Sink;
use flujo_actors::store::{MemoryStore, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The sinks of one process, one per bus in use.
pub struct Sinks {
    sinks: Vec<(Bus, Arc<dyn Sink>)>,
    memory_source: Option<MemorySource>,
}

impl Sinks {
    /// Opens a sink for each of `buses` (none when `needed` is false).
    pub async fn open(cfg: &Config, buses: &[Bus], needed: bool) -> anyhow::Result<Sinks> {
        if needed && buses.contains(&Bus::Kafka) {
            spawn_topic_creation(cfg.kafka.clone()).await;
        }
        let mut sinks: Vec<(Bus, Arc<dyn Sink>)> = Vec::new();
        let mut memory_source = None;
        if needed {
            for &bus in buses {
                match bus {
                    Bus::Memory => {
                        let (sink, source) = memory_bus(cfg.pipeline.bus_capacity);
                        memory_source = Some(source);
                        sinks.push((bus, Arc::new(sink)));
                    }
                    Bus::Kafka => {
                        let sink = KafkaSink::new(&cfg.kafka)
                            .context("cannot create the Kafka producer")?;
                        sinks.push((bus, Arc::new(sink)));
                    }
                    Bus::Rabbitmq => {
                        let sink = RabbitSink::new(cfg.rabbitmq.clone());
                        // Starts the reconnecting connection on this runtime; a broker
                        // that is down only fails readiness, not the start.
                        if let Err(e) = sink.wait_ready(Duration::from_secs(3)).await {
                            tracing::warn!(error = %e, "rabbitmq not reachable yet; will keep trying");
                        }
                        sinks.push((bus, Arc::new(sink)));
                    }
                }
            }
        }
        Ok(Sinks {
            sinks,
            memory_source,
        })
    }

    /// Every sink.
    pub fn all(&self) -> Vec<Arc<dyn Sink>> {
        self.sinks.iter().map(|(_, s)| s.clone()).collect()
    }

    /// Every sink with its bus.
    pub fn by_bus(&self) -> Vec<(Bus, Arc<dyn Sink>)> {
        self.sinks.clone()
    }

    /// The sources a consumer process reads: the memory bus (both kinds), and one
    /// per kind and broker that kind is routed to.
    pub async fn sources(
        &mut self,
        cfg: &Config,
        stop: &CancellationToken,
    ) -> anyhow::Result<Vec<Box<dyn Source>>> {
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        if let Some(memory) = self.memory_source.take() {
            sources.push(Box::new(memory));
        }
        for kind in Kind::ALL {
            for bus in cfg.sinks(kind) {
                match bus {
                    Bus::Memory => {}
                    Bus::Kafka => {
                        let source = KafkaSource::new(&cfg.kafka, kind, stop.clone())
                            .context("cannot create the Kafka consumer")?;
                        sources.push(Box::new(source));
                    }
                    Bus::Rabbitmq => {
                        sources.push(Box::new(RabbitSource::new(
                            cfg.rabbitmq.clone(),
                            kind,
                            stop.clone(),
                        )));
                    }
                }
            }
        }
        Ok(sources)
    }
}

/// Creates the Kafka topics now if the broker answers, else keeps trying in the
/// background (producers and consumers wait for the topics meanwhile).
async fn spawn_topic_creation(kafka: KafkaConfig) {
    let first = tokio::time::timeout(Duration::from_secs(5), ensure_topics(&kafka)).await;
    if let Ok(Ok(())) = first {
        return;
    }
    tracing::warn!(brokers = %kafka.brokers, "kafka topics not created yet; retrying in the background");
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(500);
        loop {
            tokio::time::sleep(delay).await;
            match tokio::time::timeout(Duration::from_secs(5), ensure_topics(&kafka)).await {
                Ok(Ok(())) => {
                    tracing::info!("kafka topics ready");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "creating kafka topics failed"),
                Err(_) => tracing::warn!("creating kafka topics timed out"),
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    });
}

/// Opens the KPI store named by `store`.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let window = Duration::from_secs(cfg.aggregator.dedup_window_secs);
    match cfg.store_kind() {
        Some(None) => Ok(Arc::new(MemoryStore::new(window))),
        Some(Some(url)) => Ok(Arc::new(
            ValkeyStore::connect(&url, &cfg.valkey.prefix, window, cfg.valkey.pool_size)
                .context("bad store URL")?,
        )),
        None => anyhow::bail!("unknown store `{}`", cfg.store),
    }
}
