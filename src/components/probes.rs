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

/// How long a sink's readiness check may take before it counts as a failure (of
/// readiness and of the sink's breaker): within readiness's own
/// [`crate::readiness::CHECK_TIMEOUT`], which would cancel it unrecorded.
pub const SINK_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1_500);

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
    /// own check is a probe that closes or reopens it; closed, a failed check counts
    /// toward opening it. The sink's check is bounded by [`SINK_CHECK_TIMEOUT`],
    /// inside the breaker, so that a check a frozen broker never answers is
    /// recorded as a failure rather than cancelled by readiness's own timeout.
    pub fn guarded_sink(sink: Arc<dyn Sink>, breaker: Arc<Breaker>) -> Self {
        ComponentProbe {
            name: format!("sink:{}", sink.name()),
            check: Box::new(move || {
                let (sink, breaker) = (sink.clone(), breaker.clone());
                async move {
                    breaker
                        .check(async {
                            match tokio::time::timeout(SINK_CHECK_TIMEOUT, sink.ready()).await {
                                Ok(ready) => ready.map_err(|e| e.to_string()),
                                Err(_) => Err(format!(
                                    "no answer within {} ms",
                                    SINK_CHECK_TIMEOUT.as_millis()
                                )),
                            }
                        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use flujo_actors::breaker::{BreakerConfig, CircuitState};
    use flujo_actors::messages::Batch;
    use flujo_actors::publisher::SinkError;

    /// A sink whose broker is frozen: its readiness check never answers.
    struct FrozenSink;

    #[tonic::async_trait]
    impl Sink for FrozenSink {
        fn name(&self) -> &'static str {
            "frozen"
        }
        async fn publish(&self, _batch: Batch) -> Result<(), SinkError> {
            futures::future::pending().await
        }
        async fn ready(&self) -> Result<(), SinkError> {
            futures::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_check_that_never_answers_counts_against_the_breaker() {
        let config = BreakerConfig {
            failure_threshold: 2,
            open_ms: 60_000,
            half_open_probes: 1,
        };
        let breaker = Breaker::new("frozen", config);
        let probe = ComponentProbe::guarded_sink(Arc::new(FrozenSink), breaker.clone());
        // The broker answered once (a publish went through), then froze.
        let permit = breaker.try_acquire().expect("closed");
        breaker.record(permit, Ok(()));
        // Readiness runs the check within its own, longer, timeout: the sink's
        // bound ends it first, and the breaker records the failure.
        for _ in 0..2 {
            let outcome = tokio::time::timeout(crate::readiness::CHECK_TIMEOUT, probe.check())
                .await
                .expect("the sink's bound ends the check before readiness's");
            assert!(outcome.expect_err("no answer").contains("no answer"));
        }
        assert_eq!(breaker.state(), CircuitState::Open);
    }
}
