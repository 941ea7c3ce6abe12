//! The readiness probes of components: each sink, each bus's sources and the store
//! answer `/readyz` through their own `ready` check.

use crate::readiness::Probe;
use flujo_actors::breaker::Breaker;
use flujo_actors::consumer::SourceReadiness;
use flujo_actors::publisher::Sink;
use flujo_actors::store::Store;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::Arc;

/// A check that can be run again and again.
type Check = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The readiness of one component, under the name `/readyz` shows.
pub struct ComponentProbe {
    name: String,
    check: Check,
}

impl ComponentProbe {
    /// A sink's readiness through its circuit breaker (`sink:NAME`): fails at once
    /// while the breaker is open, without asking the sink; half-open, the sink's
    /// own check is a probe that closes or reopens it.
    pub fn guarded_sink(sink: Arc<dyn Sink>, breaker: Arc<Breaker>) -> Self {
        ComponentProbe {
            name: format!("sink:{}", sink.name()),
            check: Box::new(move || {
                let (sink, breaker) = (sink.clone(), breaker.clone());
                async move {
                    breaker
                        .check(async { sink.ready().await.map_err(|e| e.to_string()) })
                        .await
                }
                .boxed()
            }),
        }
    }

    /// The readiness of every source of one bus (`source:NAME`): ready when each of
    /// them is (one per event kind read from that bus).
    pub fn sources(name: &str, sources: Vec<Arc<dyn SourceReadiness>>) -> Self {
        ComponentProbe {
            name: format!("source:{name}"),
            check: Box::new(move || {
                let checks = sources.clone();
                async move {
                    let results = futures::future::join_all(checks.iter().map(|s| s.ready()));
                    results
                        .await
                        .into_iter()
                        .try_for_each(|r| r.map_err(|e| e.to_string()))
                }
                .boxed()
            }),
        }
    }

    /// The store's own readiness (`store:NAME`; Valkey answers `PING`).
    pub fn store(store: Arc<dyn Store>) -> Self {
        Self::ready_of(format!("store:{}", store.name()), store, |s| s.ready())
    }

    /// A probe named `name` that asks `component` with its `ready` check.
    fn ready_of<T, E>(
        name: String,
        component: Arc<T>,
        ready: for<'a> fn(&'a T) -> BoxFuture<'a, Result<(), E>>,
    ) -> Self
    where
        T: ?Sized + Send + Sync + 'static,
        E: ToString + 'static,
    {
        ComponentProbe {
            name,
            check: Box::new(move || {
                let component = component.clone();
                async move { ready(&component).await.map_err(|e| e.to_string()) }.boxed()
            }),
        }
    }
}

impl Probe for ComponentProbe {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        (self.check)()
    }
}
