//! `flujo validate`: after the configuration loaded and resolved as `flujo run`
//! would load it, reach every dependency the plan's roles need, all at once, each
//! within [`CHECK_TIMEOUT`], and without creating anything (no topic, queue or
//! key): the brokers of every bus in use (router and consumer roles), the Valkey
//! store (consumer role) and the remote router (a receiver without a local router).
//! The memory bus and store live in the process: nothing to reach.

use crate::components::{kafka, mask_url_password, rabbitmq, valkey};
use crate::components::{Bus, ReachError, StoreLocation};
use crate::config::Plan;
use crate::readiness::{Probe, RouterProbe};
use crate::transports::forward;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::time::Duration;

/// How long one dependency may take to answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One dependency the plan needs.
pub struct Dependency {
    /// The configuration key that names it (`kafka.brokers`, `rabbitmq.url`,
    /// `store`, `router_url`).
    pub key: &'static str,
    /// What is reached, passwords masked.
    pub target: String,
    check: BoxFuture<'static, Result<String, ReachError>>,
}

/// What checking one dependency found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The configuration key that names the dependency.
    pub key: &'static str,
    /// What was reached, passwords masked.
    pub target: String,
    /// What it answered, or why it could not be reached.
    pub outcome: Result<String, ReachError>,
}

impl Finding {
    /// One line naming the key: `store: valkey://127.0.0.1:1: Connection refused…`.
    pub fn line(&self) -> String {
        match &self.outcome {
            Ok(answer) => format!("{}: {}: ok, {answer}", self.key, self.target),
            Err(e) => format!("{}: {}: {e}", self.key, self.target),
        }
    }
}

/// The dependencies `plan` needs, unchecked.
pub fn dependencies(plan: &Plan) -> Vec<Dependency> {
    let roles = plan.roles;
    let config = &plan.config;
    let mut needed = Vec::new();
    if roles.router || roles.consumer {
        for bus in plan.buses() {
            match bus {
                Bus::Memory => {}
                Bus::Kafka => {
                    let kafka = config.kafka.clone();
                    needed.push(Dependency {
                        key: "kafka.brokers",
                        target: kafka.brokers.clone(),
                        check: async move {
                            // librdkafka gives up first, with its own reason.
                            let within = CHECK_TIMEOUT - Duration::from_secs(1);
                            tokio::task::spawn_blocking(move || kafka::reach(&kafka, within))
                                .await
                                .unwrap_or_else(|e| Err(ReachError::Unreachable(e.to_string())))
                        }
                        .boxed(),
                    });
                }
                Bus::Rabbitmq => {
                    let rabbit = config.rabbitmq.clone();
                    needed.push(Dependency {
                        key: "rabbitmq.url",
                        target: mask_url_password(&rabbit.url),
                        check: async move { rabbitmq::reach(&rabbit).await }.boxed(),
                    });
                }
            }
        }
    }
    if let (true, StoreLocation::Valkey(url)) = (roles.consumer, &plan.store) {
        let url = url.clone();
        let ca_file = config.valkey.ca_file.clone();
        needed.push(Dependency {
            key: "store",
            target: mask_url_password(&url),
            check: async move { valkey::reach(&url, ca_file.as_deref()).await }.boxed(),
        });
    }
    if let (true, false, Some(url)) = (roles.receiver, roles.router, &config.router_url) {
        let url = url.clone();
        let ca_file = config.router_ca_file.clone();
        needed.push(Dependency {
            key: "router_url",
            target: mask_url_password(&url),
            check: async move {
                let channel = forward::channel(&url, ca_file.as_deref())
                    .map_err(|e| ReachError::Invalid(format!("not a gRPC URL: {e}")))?;
                let probe =
                    RouterProbe(tonic_health::pb::health_client::HealthClient::new(channel));
                probe
                    .check()
                    .await
                    .map(|()| "gRPC health SERVING".to_owned())
                    .map_err(ReachError::Unreachable)
            }
            .boxed(),
        });
    }
    needed
}

/// Checks every dependency at once, each bounded by [`CHECK_TIMEOUT`]. Call inside
/// a tokio runtime.
pub async fn check(dependencies: Vec<Dependency>) -> Vec<Finding> {
    let checks = dependencies.into_iter().map(|d| async move {
        let outcome = tokio::time::timeout(CHECK_TIMEOUT, d.check)
            .await
            .unwrap_or_else(|_| {
                Err(ReachError::Unreachable(format!(
                    "no answer within {CHECK_TIMEOUT:?}"
                )))
            });
        Finding {
            key: d.key,
            target: d.target,
            outcome,
        }
    });
    futures::future::join_all(checks).await
}

/// What the plan runs, in one line: `role all, bus memory, store memory, ack accepted`.
pub fn summary(plan: &Plan) -> String {
    let buses: Vec<&str> = plan.buses().into_iter().map(Bus::as_str).collect();
    format!(
        "role {}, bus {}, store {}, ack {}",
        plan.roles,
        buses.join("+"),
        plan.store.masked(),
        crate::config::plan::ack_mode_name(plan.ack)
    )
}
