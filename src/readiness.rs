//! Readiness probes: every dependency a process needs (store, sinks, sources, the
//! remote router) answers a cheap check; `/readyz` reports each by name. The probes
//! of components live in [`crate::components::probes`].
//!
//! [`keep_current`] re-runs the checks every [`READY_INTERVAL`] whether or not anyone
//! calls `/readyz`: it keeps `flujo_ready` current and publishes the latest
//! [`Readiness`] for the KPI stream, so the checks run once per interval however
//! many streams are open.

use crate::shutdown::Shutdown;
use flujo_actors::metrics::READY;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
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
/// hold the answer for the whole timeout. A check not waited for still runs to its
/// end (each is a task of its own, bounded by the timeout): a half-open circuit
/// breaker's probe then still closes or reopens the breaker.
pub async fn check_all(probes: &[Arc<dyn Probe>]) -> Vec<(String, Result<(), String>)> {
    let mut pending: FuturesUnordered<_> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let p = p.clone();
            let check = tokio::spawn(async move {
                tokio::time::timeout(CHECK_TIMEOUT, p.check())
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")))
            });
            async move {
                let result = check
                    .await
                    .unwrap_or_else(|e| Err(format!("the check failed: {e}")));
                (i, result)
            }
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

/// How often a process re-checks its dependencies for `flujo_ready`.
pub const READY_INTERVAL: Duration = Duration::from_secs(1);

/// The outcome of one round of checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Every dependency by name: `Ok` or its error.
    pub checks: Vec<(String, Result<(), String>)>,
    /// One line per reason the process is not ready (`name: error`, or draining).
    pub failing: Vec<String>,
}

impl Readiness {
    /// True when nothing fails.
    pub fn is_ready(&self) -> bool {
        self.failing.is_empty()
    }
}

/// Runs every probe (and asks whether the process drains) and sets `flujo_ready`.
pub async fn evaluate(probes: &[Arc<dyn Probe>], shutdown: &Shutdown) -> Readiness {
    let checks = check_all(probes).await;
    let mut failing = Vec::new();
    if shutdown.is_triggered() {
        failing.push("shutdown: draining".to_owned());
    }
    failing.extend(
        checks
            .iter()
            .filter_map(|(name, result)| result.as_ref().err().map(|e| format!("{name}: {e}"))),
    );
    let readiness = Readiness { checks, failing };
    metrics::gauge!(READY).set(if readiness.is_ready() { 1.0 } else { 0.0 });
    readiness
}

/// Starts the task that evaluates readiness every [`READY_INTERVAL`] until the
/// process ends; the receiver always holds the latest round (not ready until the
/// first one ends).
pub fn keep_current(probes: Vec<Arc<dyn Probe>>, shutdown: Shutdown) -> watch::Receiver<Readiness> {
    let (tx, rx) = watch::channel(Readiness {
        checks: Vec::new(),
        failing: vec!["starting: readiness not checked yet".to_owned()],
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(READY_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let readiness = evaluate(&probes, &shutdown).await;
            tx.send_replace(readiness);
        }
    });
    rx
}
