//! The readiness probes of components: each sink, each source and the store answer
//! `/readyz` through their own `ready` check.

use crate::readiness::Probe;
use flujo_actors::consumer::SourceReadiness;
use flujo_actors::publisher::Sink;
use flujo_actors::store::Store;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::Arc;

/// A sink's own readiness (`sink:NAME`).
pub struct SinkProbe(pub Arc<dyn Sink>);

impl Probe for SinkProbe {
    fn name(&self) -> String {
        format!("sink:{}", self.0.name())
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        async move { self.0.ready().await.map_err(|e| e.to_string()) }.boxed()
    }
}

/// The readiness of every source of one bus (`source:NAME`): ready when each of
/// them is (one per event kind read from that bus).
pub struct SourceProbe {
    /// The bus's name, as the sources report it.
    pub name: &'static str,
    /// One check per source.
    pub sources: Vec<Arc<dyn SourceReadiness>>,
}

impl Probe for SourceProbe {
    fn name(&self) -> String {
        format!("source:{}", self.name)
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let checks = self.sources.iter().map(|s| s.ready());
            for result in futures::future::join_all(checks).await {
                result.map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        .boxed()
    }
}

/// The store's own readiness (`store:NAME`; Valkey answers `PING`).
pub struct StoreProbe(pub Arc<dyn Store>);

impl Probe for StoreProbe {
    fn name(&self) -> String {
        format!("store:{}", self.0.name())
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        async move { self.0.ready().await.map_err(|e| e.to_string()) }.boxed()
    }
}
