//! Readiness probes: every dependency a process needs (store, sinks, brokers, the
//! remote router) answers a cheap check; `/readyz` reports each by name.

use flujo_actors::publisher::Sink;
use flujo_actors::store::Store;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One dependency's check.
pub trait Probe: Send + Sync {
    /// Name shown by `/readyz`, e.g. `sink:kafka`.
    fn name(&self) -> String;
    /// Ok when the dependency answers.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// A sink's own readiness.
pub struct SinkProbe(pub Arc<dyn Sink>);

impl Probe for SinkProbe {
    fn name(&self) -> String {
        format!("sink:{}", self.0.name())
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        async move { self.0.ready().await.map_err(|e| e.to_string()) }.boxed()
    }
}

/// The store answers PING (or its equivalent).
pub struct StoreProbe(pub Arc<dyn Store>);

impl Probe for StoreProbe {
    fn name(&self) -> String {
        format!("store:{}", self.0.name())
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        async move { self.0.ping().await.map_err(|e| e.to_string()) }.boxed()
    }
}

/// The remote router answers the gRPC health check.
pub struct RouterProbe(pub HealthClient<tonic::transport::Channel>);

impl Probe for RouterProbe {
    fn name(&self) -> String {
        "router:grpc".into()
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let mut client = self.0.clone();
        async move {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            match client.check(request).await {
                Ok(r) if r.get_ref().status == 1 => Ok(()),
                Ok(r) => Err(format!("health status {}", r.get_ref().status)),
                Err(status) => Err(status.message().to_owned()),
            }
        }
        .boxed()
    }
}

/// Runs every probe at once, each bounded by [`CHECK_TIMEOUT`].
pub async fn check_all(probes: &[Arc<dyn Probe>]) -> Vec<(String, Result<(), String>)> {
    let checks = probes.iter().map(|p| async move {
        let result = tokio::time::timeout(CHECK_TIMEOUT, p.check())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")));
        (p.name(), result)
    });
    futures::future::join_all(checks).await
}
