//! Readiness probes: every dependency a process needs (store, sinks, sources, the
//! remote router) answers a cheap check; `/readyz` reports each by name. The probes
//! of components live in [`crate::components::probes`].

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
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

/// How long the other checks are still waited for once one failed.
pub const AFTER_A_FAILURE: Duration = Duration::from_millis(50);

/// Runs every probe at once, each bounded by [`CHECK_TIMEOUT`], and answers in
/// the probes' order. Once one failed (an open circuit fails at once) the answer is
/// known: the others get [`AFTER_A_FAILURE`] more, so a frozen dependency does not
/// hold the answer for the whole timeout.
pub async fn check_all(probes: &[Arc<dyn Probe>]) -> Vec<(String, Result<(), String>)> {
    let mut pending: FuturesUnordered<_> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| async move {
            let result = tokio::time::timeout(CHECK_TIMEOUT, p.check())
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")));
            (i, result)
        })
        .collect();
    let mut results: Vec<Option<Result<(), String>>> = vec![None; probes.len()];
    let mut deadline = tokio::time::Instant::now() + CHECK_TIMEOUT * 2;
    while let Ok(Some((i, result))) = tokio::time::timeout_at(deadline, pending.next()).await {
        if result.is_err() {
            deadline = deadline.min(tokio::time::Instant::now() + AFTER_A_FAILURE);
        }
        results[i] = Some(result);
    }
    probes
        .iter()
        .zip(results)
        .map(|(p, result)| {
            let result =
                result.unwrap_or_else(|| Err("not waited for: another check failed".to_owned()));
            (p.name(), result)
        })
        .collect()
}
