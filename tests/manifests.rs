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
//!   flow by flow (what the pipeline needs is allowed, the rest denied).
//! - `no_secret_in_git` scans `manifests/` itself.
//! - `dockerfile` checks the image recipe the manifests run.
//!
//! These tests never skip: without kubectl or the Python tools they fail, naming
//! `scripts/test.sh`, which installs them.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a developer runs to get the tools these tests need.
const HINT: &str = "run `scripts/test.sh`: it installs kubernetes-validate and yamllint \
    (PyPI) into .services/venv; kubectl must be on PATH";
/// The namespace everything is deployed to.
const NAMESPACE: &str = "flujo";
/// flujo's three roles, one Deployment each.
const ROLES: [&str; 3] = ["receiver", "router", "consumer"];
/// The dashboards packed into Grafana's ConfigMap.
const DASHBOARDS: [&str; 3] = ["sales.json", "tweets.json", "pipeline.json"];
/// The uid the image runs as (Dockerfile `USER`).
const IMAGE_UID: u64 = 10001;

type Labels = BTreeMap<String, String>;

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

    /// Deployments and StatefulSets.
    fn workloads(&self) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
            .collect()
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

/// A Kubernetes label selector (matchLabels and matchExpressions) against labels.
fn selects(selector: &Value, labels: &Labels) -> bool {
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let by_expression = arr(&selector["matchExpressions"]).iter().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = arr(&e["values"]).iter().filter_map(Value::as_str).collect();
        let have = labels.get(key).map(String::as_str);
        match e["operator"].as_str() {
            Some("In") => have.is_some_and(|h| values.contains(&h)),
            Some("NotIn") => !have.is_some_and(|h| values.contains(&h)),
            Some("Exists") => have.is_some(),
            Some("DoesNotExist") => have.is_none(),
            other => panic!("unknown selector operator {other:?}"),
        }
    });
    by_label && by_expression
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

// ---------------------------------------------------------------------------------
// Environment of a container, resolved as the kubelet does it
// ---------------------------------------------------------------------------------

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not base64: {s}"));
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// The decoded data of a rendered Secret.
fn secret_data(r: &Rendered, name: &str) -> BTreeMap<String, String> {
    let secret = r
        .by_ref("Secret", name)
        .unwrap_or_else(|| panic!("{}: Secret {name} is referred to but missing", r.overlay));
    secret["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let bytes = base64_decode(v.as_str().unwrap_or_default());
            (k.clone(), String::from_utf8(bytes).expect("UTF-8 secret"))
        })
        .collect()
}

fn configmap_data(r: &Rendered, name: &str) -> BTreeMap<String, String> {
    let cm = r
        .by_ref("ConfigMap", name)
        .unwrap_or_else(|| panic!("{}: ConfigMap {name} is referred to but missing", r.overlay));
    cm["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// `$(NAME)` expanded from the variables defined before, `$$` as `$`, as the kubelet
/// does; an unknown reference is left as it is (and flujo would then see it).
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(end) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
            let name = &tail[2..2 + end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..3 + end]),
            }
            rest = &tail[3 + end..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The environment a container starts with: envFrom first, then env in order.
fn container_env(r: &Rendered, container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in arr(&container["envFrom"]) {
        if let Some(name) = source["configMapRef"]["name"].as_str() {
            env.extend(configmap_data(r, name));
        }
        if let Some(name) = source["secretRef"]["name"].as_str() {
            env.extend(secret_data(r, name));
        }
    }
    for var in arr(&container["env"]) {
        let name = text(var, "/name").to_owned();
        let value = if let Some(v) = var["value"].as_str() {
            expand(v, &env)
        } else if let Some(key_ref) = var["valueFrom"]["secretKeyRef"].as_object() {
            let secret = key_ref["name"].as_str().unwrap_or_default();
            let key = key_ref["key"].as_str().unwrap_or_default();
            secret_data(r, secret)
                .remove(key)
                .unwrap_or_else(|| panic!("Secret {secret} has no key {key}"))
        } else if let Some(key_ref) = var["valueFrom"]["configMapKeyRef"].as_object() {
            let cm = key_ref["name"].as_str().unwrap_or_default();
            let key = key_ref["key"].as_str().unwrap_or_default();
            configmap_data(r, cm)
                .remove(key)
                .unwrap_or_else(|| panic!("ConfigMap {cm} has no key {key}"))
        } else {
            continue; // fieldRef and the like: not used by flujo's configuration
        };
        env.insert(name, value);
    }
    env
}

/// `flujo config` run with exactly this environment: the configuration the role
/// would start with, as TOML.
fn flujo_config(role: &str, env: &BTreeMap<String, String>) -> toml::Value {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_flujo"))
        .arg("config")
        .env_clear()
        .envs(env)
        .current_dir(dir.path())
        .output()
        .expect("flujo config runs");
    assert!(
        out.status.success(),
        "the {role} Deployment's environment is refused by flujo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("flujo config prints TOML")
}

fn flujo_container<'a>(r: &'a Rendered, role: &str) -> &'a Value {
    let deployment = r.get("Deployment", role);
    arr(&deployment["spec"]["template"]["spec"]["containers"])
        .iter()
        .find(|c| c["name"] == "flujo")
        .unwrap_or_else(|| panic!("Deployment {role} has no container named flujo"))
}

// ---------------------------------------------------------------------------------
// The contract, for any overlay
// ---------------------------------------------------------------------------------

fn every_required_kind(r: &Rendered) {
    let need: [(&str, &str, Option<&str>); 13] = [
        ("v1", "Namespace", Some(NAMESPACE)),
        ("apps/v1", "Deployment", Some("receiver")),
        ("apps/v1", "Deployment", Some("router")),
        ("apps/v1", "Deployment", Some("consumer")),
        ("networking.k8s.io/v1", "Ingress", None),
        ("autoscaling/v2", "HorizontalPodAutoscaler", None),
        ("keda.sh/v1alpha1", "ScaledObject", None),
        ("kafka.strimzi.io/v1beta2", "Kafka", None),
        ("kafka.strimzi.io/v1beta2", "KafkaNodePool", None),
        ("apps/v1", "StatefulSet", Some("valkey")),
        ("monitoring.coreos.com/v1", "ServiceMonitor", None),
        ("networking.k8s.io/v1", "NetworkPolicy", None),
        ("policy/v1", "PodDisruptionBudget", None),
    ];
    for (api, kind, name) in need {
        let found = r.objects.iter().any(|o| {
            o["apiVersion"] == api
                && o["kind"] == kind
                && name.is_none_or(|n| o["metadata"]["name"] == n)
        });
        assert!(found, "{}: no {api} {kind} {name:?}", r.overlay);
    }
    for topic in ["sales", "tweets"] {
        let found = r.all("KafkaTopic").iter().any(|t| {
            t["apiVersion"] == "kafka.strimzi.io/v1beta2"
                && t["spec"]["topicName"]
                    .as_str()
                    .or(t["metadata"]["name"].as_str())
                    == Some(topic)
        });
        assert!(found, "{}: no KafkaTopic {topic}", r.overlay);
    }
    for o in &r.objects {
        if o["kind"] != "Namespace" {
            assert_eq!(
                o["metadata"]["namespace"],
                NAMESPACE,
                "{}: {} is outside the flujo namespace",
                r.overlay,
                name_of(o)
            );
        }
    }
}

fn every_container_is_locked_down(r: &Rendered) {
    let workloads = r.workloads();
    assert!(
        workloads.len() >= 6,
        "{}: roles, Valkey, RabbitMQ, Grafana",
        r.overlay
    );
    for w in workloads {
        let pod = &w["spec"]["template"]["spec"];
        let who = format!("{}: {}", r.overlay, name_of(w));
        assert_eq!(
            pod["automountServiceAccountToken"], false,
            "{who}: no API token in pods that never call the API"
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{who}"
        );
        let containers: Vec<&Value> = arr(&pod["containers"])
            .iter()
            .chain(arr(&pod["initContainers"]))
            .collect();
        assert!(!containers.is_empty(), "{who}: no containers");
        for c in containers {
            let who = format!("{who} container {}", c["name"]);
            let sc = &c["securityContext"];
            let non_root = sc["runAsNonRoot"]
                .as_bool()
                .or(pod["securityContext"]["runAsNonRoot"].as_bool());
            assert_eq!(non_root, Some(true), "{who}: runAsNonRoot");
            let uid = sc["runAsUser"]
                .as_u64()
                .or(pod["securityContext"]["runAsUser"].as_u64());
            assert!(uid.is_some_and(|u| u > 0), "{who}: a non-zero runAsUser");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{who}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{who}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{who}"
            );
            assert!(sc["privileged"] != true, "{who}: privileged");
            for probe in ["livenessProbe", "readinessProbe"] {
                assert!(c[probe].is_object(), "{who}: no {probe}");
            }
            let res = &c["resources"];
            for path in ["/requests/cpu", "/requests/memory", "/limits/memory"] {
                let q = res
                    .pointer(path)
                    .unwrap_or_else(|| panic!("{who}: no resources{path}"));
                assert!(quantity(q) > 0.0, "{who}: resources{path}");
            }
            if let Some(limit) = res.pointer("/limits/memory") {
                assert!(
                    quantity(limit) >= quantity(&res["requests"]["memory"]),
                    "{who}: memory limit below its request"
                );
            }
            // Every mount is a volume of the pod or a claim of the StatefulSet.
            for m in arr(&c["volumeMounts"]) {
                let name = &m["name"];
                let declared = arr(&pod["volumes"]).iter().any(|v| v["name"] == *name)
                    || arr(&w["spec"]["volumeClaimTemplates"])
                        .iter()
                        .any(|t| t["metadata"]["name"] == *name);
                assert!(declared, "{who}: mounts undeclared volume {name}");
            }
        }
    }
}

/// Each role: ports, probes, the image's uid, and an environment the real binary
/// accepts; returns the configurations by role.
fn flujo_roles(r: &Rendered) -> BTreeMap<&'static str, toml::Value> {
    let mut configs = BTreeMap::new();
    for role in ROLES {
        let deployment = r.get("Deployment", role);
        let pod = &deployment["spec"]["template"]["spec"];
        let c = flujo_container(r, role);
        let who = format!("{}: Deployment {role}", r.overlay);
        let image = text(c, "/image");
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{who}: the overlay pins the image tag, got {image}"
        );
        assert_eq!(
            pod["securityContext"]["runAsUser"].as_u64(),
            Some(IMAGE_UID),
            "{who}: runs as the image's user"
        );
        let ports: BTreeMap<&str, u64> = arr(&c["ports"])
            .iter()
            .map(|p| (text(p, "/name"), number(p, "/containerPort")))
            .collect();
        assert_eq!(ports.get("http"), Some(&8080), "{who}: port http");
        if role != "consumer" {
            assert_eq!(ports.get("grpc"), Some(&50051), "{who}: port grpc");
        }
        if role == "receiver" {
            assert_eq!(ports.get("tcp"), Some(&7070), "{who}: port tcp");
        }
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"], path, "{who}: {probe}");
            assert!(
                get["port"] == "http" || get["port"] == 8080,
                "{who}: {probe} on port 8080"
            );
        }

        let env = container_env(r, c);
        let config = flujo_config(role, &env);
        assert_eq!(config["role"].as_str(), Some(role), "{who}: FLUJO__ROLE");
        assert_eq!(config["log"]["format"].as_str(), Some("json"), "{who}");
        // The kubelet sends SIGTERM after the preStop hook and kills the pod when the
        // grace period is over: the drain must fit in between.
        let deadline = config["shutdown"]["deadline_secs"]
            .as_integer()
            .expect("shutdown.deadline_secs") as u64;
        let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        let grace = number(pod, "/terminationGracePeriodSeconds");
        assert!(
            grace > deadline + pre_stop,
            "{who}: terminationGracePeriodSeconds {grace} must exceed the preStop pause \
             {pre_stop} s plus the drain deadline {deadline} s"
        );
        configs.insert(role, config);
    }

    // The pieces fit together: the receiver forwards to the router Service, every
    // broker-side role reads the same Kafka, the consumer stores in Valkey.
    let receiver = &configs["receiver"];
    assert_eq!(
        receiver["router_url"].as_str(),
        Some("grpc://router:50051"),
        "{}: receiver forwards to the router Service",
        r.overlay
    );
    for role in ["router", "consumer"] {
        let config = &configs[role];
        assert_eq!(config["bus"].as_str(), Some("kafka"), "{role}");
        assert_eq!(
            config["kafka"]["brokers"].as_str(),
            configs["router"]["kafka"]["brokers"].as_str()
        );
    }
    let store = configs["consumer"]["store"].as_str().unwrap_or_default();
    assert!(
        store.starts_with("valkey://") && store.ends_with("@valkey:6379"),
        "{}: consumer store {store}",
        r.overlay
    );
    configs
}

/// The URLs with passwords are put together from the generated Secrets.
fn credentials_come_from_secrets(r: &Rendered) {
    let rabbit = secret_data(r, "rabbitmq-credentials");
    let valkey = secret_data(r, "valkey-credentials");
    for role in ["router", "consumer"] {
        let env = container_env(r, flujo_container(r, role));
        let url = format!(
            "amqp://{}:{}@rabbitmq:5672/%2f",
            rabbit["RABBITMQ_DEFAULT_USER"], rabbit["RABBITMQ_DEFAULT_PASS"]
        );
        assert_eq!(env.get("FLUJO__RABBITMQ__URL"), Some(&url), "{role}");
    }
    let env = container_env(r, flujo_container(r, "consumer"));
    let store = format!("valkey://:{}@valkey:6379", valkey["VALKEY_PASSWORD"]);
    assert_eq!(env.get("FLUJO__STORE"), Some(&store));

    // Secrets are generated (hash suffix), hold exactly the keys of their example
    // files, and are the only Secrets (besides the Ingress TLS one, yours to make).
    let mut examples = BTreeMap::new();
    for (secret, file) in [
        ("rabbitmq-credentials", "rabbitmq"),
        ("valkey-credentials", "valkey"),
        ("grafana-admin", "grafana"),
    ] {
        let path = repo_path(&format!("manifests/base/secrets/{file}.env.example"));
        let example = std::fs::read_to_string(&path).expect("secret example file");
        let keys: BTreeSet<String> = example
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
            .map(|l| l.split('=').next().unwrap_or_default().trim().to_owned())
            .collect();
        examples.insert(secret, keys);
    }
    for s in r.all("Secret") {
        let name = text(s, "/metadata/name");
        let (base, hash) = name.rsplit_once('-').unwrap_or_default();
        assert!(
            hash.len() == 10 && examples.contains_key(base),
            "{}: Secret {name} is not one of the generated ones",
            r.overlay
        );
        let keys: BTreeSet<String> = secret_data(r, name).into_keys().collect();
        assert_eq!(&keys, &examples[base], "{}: keys of {name}", r.overlay);
    }
    assert_eq!(r.all("Secret").len(), examples.len(), "{}", r.overlay);
    let rabbit_pod = &r.workload_of("StatefulSet", "rabbitmq")["spec"]["template"]["spec"];
    let env_from = &rabbit_pod["containers"][0]["envFrom"];
    assert!(
        arr(env_from)
            .iter()
            .any(|e| e["secretRef"]["name"] == "rabbitmq-credentials"
                || e["secretRef"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("rabbitmq-credentials-"))),
        "{}: RabbitMQ takes its credentials from the Secret",
        r.overlay
    );
}

/// Every name an object refers to exists in the output.
fn references_resolve(r: &Rendered) {
    for w in r.workloads() {
        let pod = &w["spec"]["template"]["spec"];
        for c in arr(&pod["containers"]) {
            container_env(r, c); // panics on a missing ConfigMap, Secret or key
        }
        for v in arr(&pod["volumes"]) {
            if let Some(name) = v["configMap"]["name"].as_str() {
                let data = configmap_data(r, name);
                for item in arr(&v["configMap"]["items"]) {
                    let key = text(item, "/key");
                    assert!(data.contains_key(key), "ConfigMap {name} has no {key}");
                }
            }
            if let Some(name) = v["secret"]["secretName"].as_str() {
                secret_data(r, name);
            }
        }
        let template_labels = labels(&w["spec"]["template"]["metadata"]["labels"]);
        assert!(
            selects(&w["spec"]["selector"], &template_labels),
            "{}: selector of {} misses its own pods",
            r.overlay,
            name_of(w)
        );
    }
    // Services select pods that have the ports they target.
    for svc in r.all("Service") {
        let selector = serde_json::json!({"matchLabels": svc["spec"]["selector"]});
        let backends: Vec<&Value> = r
            .workloads()
            .into_iter()
            .filter(|w| {
                selects(
                    &selector,
                    &labels(&w["spec"]["template"]["metadata"]["labels"]),
                )
            })
            .collect();
        assert!(
            !backends.is_empty(),
            "{}: {} selects no pods",
            r.overlay,
            name_of(svc)
        );
        for port in arr(&svc["spec"]["ports"]) {
            if let Some(target) = port["targetPort"].as_str() {
                let served = backends.iter().any(|w| {
                    arr(&w["spec"]["template"]["spec"]["containers"])
                        .iter()
                        .flat_map(|c| arr(&c["ports"]))
                        .any(|p| p["name"] == target)
                });
                assert!(
                    served,
                    "{}: {} targets unknown port {target}",
                    r.overlay,
                    name_of(svc)
                );
            }
        }
    }
}

fn service_ports(r: &Rendered, name: &str) -> BTreeMap<String, u64> {
    arr(&r.get("Service", name)["spec"]["ports"])
        .iter()
        .map(|p| (text(p, "/name").to_owned(), number(p, "/port")))
        .collect()
}

fn services_and_ingress(r: &Rendered) {
    let expect = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    };
    assert_eq!(
        service_ports(r, "receiver"),
        expect(&[("http", 8080), ("grpc", 50051), ("tcp", 7070)])
    );
    assert_eq!(
        service_ports(r, "router"),
        expect(&[("http", 8080), ("grpc", 50051)])
    );
    assert_eq!(service_ports(r, "consumer"), expect(&[("http", 8080)]));

    let ingresses = r.all("Ingress");
    assert_eq!(ingresses.len(), 1, "{}: one Ingress", r.overlay);
    let mut routes = BTreeMap::new();
    for rule in arr(&ingresses[0]["spec"]["rules"]) {
        assert!(rule["host"].is_string(), "{}: an Ingress host", r.overlay);
        for p in arr(&rule["http"]["paths"]) {
            let svc = text(p, "/backend/service/name");
            let port = text(p, "/backend/service/port/name");
            assert!(
                service_ports(r, svc).contains_key(port),
                "Ingress backend {svc}:{port}"
            );
            routes.insert(text(p, "/path").to_owned(), svc.to_owned());
        }
    }
    let want: BTreeMap<String, String> = [
        ("/v1/sales", "receiver"),
        ("/v1/tweets", "receiver"),
        ("/purchase", "receiver"),
        ("/input", "receiver"),
        ("/v1/kpis", "consumer"),
        ("/v1/rankings", "consumer"),
        ("/v1/sales/monitored", "consumer"),
    ]
    .iter()
    .map(|(p, s)| (p.to_string(), s.to_string()))
    .collect();
    assert_eq!(routes, want, "{}: Ingress paths", r.overlay);
}

/// Autoscaling: the HPA (receivers, CPU) and the KEDA ScaledObject (consumers,
/// Kafka lag of flujo's consumer group). Returns (HPA min, HPA max, KEDA min, max).
fn autoscaling(r: &Rendered, configs: &BTreeMap<&str, toml::Value>) -> [u64; 4] {
    let hpas = r.all("HorizontalPodAutoscaler");
    let hpa = hpas
        .iter()
        .find(|h| h["spec"]["scaleTargetRef"]["name"] == "receiver")
        .unwrap_or_else(|| panic!("{}: no HPA for the receivers", r.overlay));
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    let cpu = arr(&hpa["spec"]["metrics"])
        .iter()
        .any(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu");
    assert!(cpu, "{}: the receiver HPA scales on CPU", r.overlay);
    let (hpa_min, hpa_max) = (
        number(hpa, "/spec/minReplicas"),
        number(hpa, "/spec/maxReplicas"),
    );
    assert!(
        1 <= hpa_min && hpa_min <= hpa_max,
        "{}: HPA range",
        r.overlay
    );
    assert!(
        r.get("Deployment", "receiver")["spec"]["replicas"].is_null(),
        "{}: the HPA owns the receiver replicas; the Deployment must not set them",
        r.overlay
    );

    let so = r.get("ScaledObject", "consumer");
    assert_eq!(so["apiVersion"], "keda.sh/v1alpha1");
    let target = text(so, "/spec/scaleTargetRef/name");
    assert!(
        r.find("Deployment", target).is_some(),
        "ScaledObject target {target}"
    );
    assert_eq!(target, "consumer");
    assert!(
        r.get("Deployment", "consumer")["spec"]["replicas"].is_null(),
        "{}: KEDA owns the consumer replicas",
        r.overlay
    );
    let (so_min, so_max) = (
        number(so, "/spec/minReplicaCount"),
        number(so, "/spec/maxReplicaCount"),
    );
    assert!(
        so_min >= 1,
        "{}: consumers serve the query API: never scale to 0",
        r.overlay
    );
    assert!(so_min <= so_max);
    let kafka = &configs["consumer"]["kafka"];
    let group = kafka["group_id"].as_str().unwrap_or_default();
    let sales_topic = kafka["sales_topic"].as_str().unwrap_or_default();
    let bootstrap = kafka["brokers"].as_str().unwrap_or_default();
    let triggers = arr(&so["spec"]["triggers"]);
    assert!(!triggers.is_empty());
    for t in triggers {
        assert_eq!(t["type"], "kafka", "{}: trigger type", r.overlay);
        let m = &t["metadata"];
        assert_eq!(
            m["consumerGroup"].as_str(),
            Some(group),
            "the consumer's group"
        );
        let servers = text(m, "/bootstrapServers");
        let host = bootstrap.split(':').next().unwrap_or_default();
        assert!(
            servers.starts_with(host),
            "{}: KEDA reads the lag from flujo's Kafka ({bootstrap}), not {servers}",
            r.overlay
        );
        assert!(
            m["lagThreshold"].is_string(),
            "KEDA metadata values are strings"
        );
    }
    assert!(
        triggers
            .iter()
            .any(|t| t["metadata"]["topic"] == sales_topic),
        "{}: a trigger on the {sales_topic} topic",
        r.overlay
    );
    // More consumers than partitions would idle.
    for t in triggers {
        let topic = text(t, "/metadata/topic");
        let partitions = r
            .all("KafkaTopic")
            .iter()
            .find(|k| {
                k["spec"]["topicName"]
                    .as_str()
                    .or(k["metadata"]["name"].as_str())
                    == Some(topic)
            })
            .map(|k| number(k, "/spec/partitions"))
            .unwrap_or_else(|| panic!("{}: trigger on unknown topic {topic}", r.overlay));
        assert!(
            so_max <= partitions,
            "{}: {so_max} consumers for {partitions} partitions",
            r.overlay
        );
    }
    [hpa_min, hpa_max, so_min, so_max]
}

/// Strimzi: a KRaft cluster, its node pools and topics, consistent with each other
/// and with what flujo is configured to use. Returns the broker count.
fn strimzi(r: &Rendered, configs: &BTreeMap<&str, toml::Value>) -> u64 {
    let clusters = r.all("Kafka");
    assert_eq!(clusters.len(), 1, "{}: one Kafka cluster", r.overlay);
    let kafka = clusters[0];
    let cluster = text(kafka, "/metadata/name");
    assert_eq!(kafka["apiVersion"], "kafka.strimzi.io/v1beta2");
    let annotations = &kafka["metadata"]["annotations"];
    assert_eq!(annotations["strimzi.io/kraft"], "enabled", "KRaft mode");
    assert_eq!(annotations["strimzi.io/node-pools"], "enabled");
    assert!(kafka["spec"]["zookeeper"].is_null(), "KRaft: no ZooKeeper");
    assert!(kafka["spec"]["kafka"]["version"].is_string());
    assert!(
        kafka["spec"]["entityOperator"]["topicOperator"].is_object(),
        "the Topic Operator reconciles the KafkaTopics"
    );
    let listeners = arr(&kafka["spec"]["kafka"]["listeners"]);
    for l in listeners {
        for field in ["name", "type"] {
            assert!(l[field].is_string(), "listener {field}");
        }
        assert!(l["tls"].is_boolean(), "listener tls");
    }
    let plain_port = listeners
        .iter()
        .find(|l| l["type"] == "internal" && l["tls"] == false)
        .map(|l| number(l, "/port"))
        .expect("a plain internal listener");
    for role in ["router", "consumer"] {
        assert_eq!(
            configs[role]["kafka"]["brokers"].as_str(),
            Some(format!("{cluster}-kafka-bootstrap:{plain_port}").as_str()),
            "{}: {role} connects to Strimzi's bootstrap Service",
            r.overlay
        );
    }

    let pools: Vec<&Value> = r
        .all("KafkaNodePool")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["strimzi.io/cluster"] == cluster)
        .collect();
    assert_eq!(
        pools.len(),
        r.all("KafkaNodePool").len(),
        "every pool belongs to {cluster}"
    );
    let mut roles = BTreeSet::new();
    let mut brokers = 0;
    for p in &pools {
        assert_eq!(p["apiVersion"], "kafka.strimzi.io/v1beta2");
        let replicas = number(p, "/spec/replicas");
        assert!(replicas >= 1);
        let pool_roles: Vec<&str> = arr(&p["spec"]["roles"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if pool_roles.contains(&"broker") {
            brokers += replicas;
        }
        roles.extend(pool_roles);
        let storage = &p["spec"]["storage"];
        assert!(storage["type"].is_string(), "node pool storage");
        for v in arr(&storage["volumes"]) {
            assert!(v["id"].is_u64() && v["type"].is_string() && v["size"].is_string());
        }
    }
    assert!(
        roles.contains("broker") && roles.contains("controller"),
        "KRaft needs both roles"
    );

    let config = &kafka["spec"]["kafka"]["config"];
    let setting = |key: &str| config[key].as_u64().unwrap_or(1);
    assert!(setting("default.replication.factor") <= brokers);
    assert!(setting("offsets.topic.replication.factor") <= brokers);
    let min_isr = setting("min.insync.replicas");
    let flujo_kafka = &configs["router"]["kafka"];
    let flujo_replication = flujo_kafka["replication"].as_integer().unwrap_or(1) as u64;
    assert!(
        flujo_replication <= brokers,
        "flujo's kafka.replication over {brokers} brokers"
    );
    for topic in [&flujo_kafka["sales_topic"], &flujo_kafka["tweets_topic"]] {
        let topic = topic.as_str().unwrap_or_default();
        let t = r
            .all("KafkaTopic")
            .into_iter()
            .find(|k| {
                k["spec"]["topicName"]
                    .as_str()
                    .or(k["metadata"]["name"].as_str())
                    == Some(topic)
            })
            .unwrap_or_else(|| panic!("{}: no KafkaTopic for flujo's topic {topic}", r.overlay));
        assert_eq!(t["apiVersion"], "kafka.strimzi.io/v1beta2");
        assert_eq!(t["metadata"]["labels"]["strimzi.io/cluster"], cluster);
        assert!(number(t, "/spec/partitions") >= 1);
        let replicas = number(t, "/spec/replicas");
        assert!(
            replicas <= brokers,
            "{topic}: {replicas} replicas on {brokers} brokers"
        );
        // acks=all with min ISR == replicas would stop every write when one broker
        // restarts; on several brokers keep one spare.
        assert!(
            min_isr <= replicas && (replicas == 1 || min_isr < replicas),
            "{}: {topic}: min.insync.replicas {min_isr} with {replicas} replicas",
            r.overlay
        );
    }
    brokers
}

fn stores(r: &Rendered) {
    let valkey = r.workload_of("StatefulSet", "valkey");
    let templates = arr(&valkey["spec"]["volumeClaimTemplates"]);
    assert!(
        !templates.is_empty(),
        "{}: Valkey keeps its data on a PVC",
        r.overlay
    );
    let storage = &templates[0]["spec"]["resources"]["requests"]["storage"];
    assert!(quantity(storage) > 0.0);
    let c = &valkey["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = arr(&c["args"]).iter().filter_map(Value::as_str).collect();
    let after = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1))
            .copied()
    };
    assert_eq!(after("--appendonly"), Some("yes"), "{}: AOF on", r.overlay);
    let dir = after("--dir").unwrap_or("/data");
    assert!(
        arr(&c["volumeMounts"])
            .iter()
            .any(|m| m["mountPath"] == dir && m["name"] == templates[0]["metadata"]["name"]),
        "{}: Valkey's --dir {dir} is on the PVC",
        r.overlay
    );
    assert_eq!(after("--requirepass"), Some("$(VALKEY_PASSWORD)"));
    assert_eq!(service_ports(r, "valkey").get("valkey"), Some(&6379));

    let rabbit = r.workload_of("StatefulSet", "rabbitmq");
    assert!(!arr(&rabbit["spec"]["volumeClaimTemplates"]).is_empty());
    assert_eq!(service_ports(r, "rabbitmq").get("amqp"), Some(&5672));
}

fn observability(r: &Rendered) {
    let monitors = r.all("ServiceMonitor");
    assert_eq!(monitors.len(), 1);
    let sm = monitors[0];
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert!(arr(&sm["spec"]["namespaceSelector"]["matchNames"]).contains(&Value::from(NAMESPACE)));
    let endpoints = arr(&sm["spec"]["endpoints"]);
    assert!(endpoints
        .iter()
        .any(|e| e["port"] == "http" && e["path"] == "/metrics"));
    for role in ROLES {
        let svc = r.get("Service", role);
        assert!(
            selects(&sm["spec"]["selector"], &labels(&svc["metadata"]["labels"])),
            "{}: the ServiceMonitor misses Service {role}",
            r.overlay
        );
        assert!(service_ports(r, role).contains_key("http"));
    }
    for other in ["valkey", "rabbitmq", "grafana"] {
        let svc = r.get("Service", other);
        assert!(!selects(
            &sm["spec"]["selector"],
            &labels(&svc["metadata"]["labels"])
        ));
    }

    // Grafana: dashboards from the repository's JSON, data sources provisioned.
    let grafana = r.get("Deployment", "grafana");
    let pod = &grafana["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let mount_of = |volume: &str| {
        arr(&c["volumeMounts"])
            .iter()
            .find(|m| m["name"] == volume)
            .map(|m| text(m, "/mountPath").to_owned())
    };
    let mut dashboards_dir = None;
    let mut provisioning = BTreeMap::new();
    for v in arr(&pod["volumes"]) {
        let Some(cm) = v["configMap"]["name"].as_str() else {
            continue;
        };
        let data = configmap_data(r, cm);
        if DASHBOARDS.iter().all(|d| data.contains_key(*d)) {
            for d in DASHBOARDS {
                let on_disk = std::fs::read_to_string(repo_path(&format!("dashboards/{d}")))
                    .expect("dashboard file");
                assert_eq!(data[d], on_disk, "{d} is packed unchanged");
                serde_json::from_str::<Value>(&data[d]).expect("dashboard JSON");
            }
            let size: usize = data.values().map(String::len).sum();
            assert!(
                size < 900 * 1024,
                "dashboards ConfigMap too big for etcd: {size} bytes"
            );
            dashboards_dir = mount_of(text(v, "/name"));
        }
        for item in arr(&v["configMap"]["items"]) {
            let key = text(item, "/key");
            let dir = mount_of(text(v, "/name")).unwrap_or_default();
            provisioning.insert(dir, data[key].clone());
        }
    }
    let dashboards_dir = dashboards_dir.unwrap_or_else(|| {
        panic!(
            "{}: Grafana mounts no ConfigMap with the dashboards",
            r.overlay
        )
    });
    let datasources = &provisioning["/etc/grafana/provisioning/datasources"];
    for needle in [
        "type: prometheus",
        "type: redis-datasource",
        "url: redis://valkey.",
        "password: $VALKEY_PASSWORD",
    ] {
        assert!(datasources.contains(needle), "datasources lack `{needle}`");
    }
    let providers = &provisioning["/etc/grafana/provisioning/dashboards"];
    assert!(
        providers.contains(&format!("path: {dashboards_dir}")),
        "the dashboard provider reads {dashboards_dir}"
    );
    let plugins = container_env(r, c);
    assert!(
        plugins
            .get("GF_INSTALL_PLUGINS")
            .is_some_and(|p| p.contains("redis-datasource")),
        "Grafana installs the Redis data source plugin"
    );
    // The dashboards' data source variables default to the provisioned uids.
    for d in DASHBOARDS {
        let dashboard: Value = serde_json::from_str(
            &std::fs::read_to_string(repo_path(&format!("dashboards/{d}"))).expect("dashboard"),
        )
        .expect("dashboard JSON");
        for var in arr(&dashboard["templating"]["list"]) {
            if var["type"] != "datasource" {
                continue;
            }
            if let Some(uid) = var["current"]["value"].as_str().filter(|u| !u.is_empty()) {
                assert!(
                    datasources.contains(&format!("uid: {uid}")),
                    "{d}: variable {} defaults to data source uid {uid}, which is not provisioned",
                    var["name"]
                );
            }
        }
    }
}

/// One PDB per role and for Valkey, selecting the right pods.
fn disruption_budgets(r: &Rendered) -> BTreeMap<String, Value> {
    let mut budgets = BTreeMap::new();
    for (kind, name) in [
        ("Deployment", "receiver"),
        ("Deployment", "router"),
        ("Deployment", "consumer"),
        ("StatefulSet", "valkey"),
    ] {
        let w = r.get(kind, name);
        let pod_labels = labels(&w["spec"]["template"]["metadata"]["labels"]);
        let pdbs: Vec<&Value> = r
            .all("PodDisruptionBudget")
            .into_iter()
            .filter(|p| selects(&p["spec"]["selector"], &pod_labels))
            .collect();
        assert_eq!(pdbs.len(), 1, "{}: one PDB for {name}", r.overlay);
        let spec = &pdbs[0]["spec"];
        assert!(
            spec["minAvailable"].is_null() != spec["maxUnavailable"].is_null(),
            "{}: PDB {name} sets one of minAvailable / maxUnavailable",
            r.overlay
        );
        budgets.insert(name.to_owned(), spec.clone());
    }
    budgets
}

// ---------------------------------------------------------------------------------
// NetworkPolicies, evaluated
// ---------------------------------------------------------------------------------

/// A pod (or the internet) as NetworkPolicies see it.
#[derive(Clone)]
struct Peer {
    what: String,
    namespace: String,
    namespace_labels: Labels,
    labels: Labels,
    internet: bool,
}

fn peer(what: &str, namespace: &str, pod_labels: &[(&str, &str)]) -> Peer {
    Peer {
        what: what.to_owned(),
        namespace: namespace.to_owned(),
        namespace_labels: [(
            "kubernetes.io/metadata.name".to_owned(),
            namespace.to_owned(),
        )]
        .into(),
        labels: pod_labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        internet: false,
    }
}

fn matches_peer(rule_peer: &Value, policy_namespace: &str, p: &Peer) -> bool {
    if rule_peer.get("ipBlock").is_some() {
        return p.internet;
    }
    if p.internet {
        return false;
    }
    let namespace_ok = match rule_peer.get("namespaceSelector") {
        Some(sel) => selects(sel, &p.namespace_labels),
        None => p.namespace == policy_namespace,
    };
    let pod_ok = rule_peer
        .get("podSelector")
        .is_none_or(|sel| selects(sel, &p.labels));
    namespace_ok && pod_ok
}

fn matches_port(ports: &Value, port: u64, protocol: &str) -> bool {
    let list = arr(ports);
    list.is_empty()
        || list.iter().any(|p| {
            p["protocol"].as_str().unwrap_or("TCP") == protocol
                && p["port"].as_u64().is_none_or(|n| n == port)
        })
}

/// Whether `subject`'s policies let traffic go to (egress) or come from (ingress)
/// `other`. Pods outside the flujo namespace have no policies of ours.
fn direction_allows(
    policies: &[&Value],
    subject: &Peer,
    other: &Peer,
    port: u64,
    protocol: &str,
    egress: bool,
) -> bool {
    if subject.internet || subject.namespace != NAMESPACE {
        return true;
    }
    let (kind, rules_key, peers_key) = if egress {
        ("Egress", "egress", "to")
    } else {
        ("Ingress", "ingress", "from")
    };
    let selecting: Vec<&&Value> = policies
        .iter()
        .filter(|p| selects(&p["spec"]["podSelector"], &subject.labels))
        .filter(|p| {
            let types = arr(&p["spec"]["policyTypes"]);
            if types.is_empty() {
                // The API's default: Ingress, plus Egress when egress rules are given.
                !egress || p["spec"]["egress"].is_array()
            } else {
                types.contains(&Value::from(kind))
            }
        })
        .collect();
    if selecting.is_empty() {
        return true;
    }
    selecting.iter().any(|p| {
        arr(&p["spec"][rules_key]).iter().any(|rule| {
            let peers = arr(&rule[peers_key]);
            (peers.is_empty() || peers.iter().any(|rp| matches_peer(rp, NAMESPACE, other)))
                && matches_port(&rule["ports"], port, protocol)
        })
    })
}

fn network_policies(r: &Rendered) {
    let policies = r.all("NetworkPolicy");
    let deny_all = policies.iter().any(|p| {
        p["spec"]["podSelector"]
            .as_object()
            .is_some_and(|s| s.is_empty())
            && arr(&p["spec"]["policyTypes"]).contains(&Value::from("Ingress"))
            && arr(&p["spec"]["policyTypes"]).contains(&Value::from("Egress"))
            && p["spec"]["ingress"].is_null()
            && p["spec"]["egress"].is_null()
    });
    assert!(deny_all, "{}: a default-deny NetworkPolicy", r.overlay);

    let namespace_labels = {
        let mut l = labels(&r.get("Namespace", NAMESPACE)["metadata"]["labels"]);
        l.insert("kubernetes.io/metadata.name".into(), NAMESPACE.into());
        l
    };
    let pod_of = |kind: &str, name: &str| Peer {
        what: name.to_owned(),
        namespace: NAMESPACE.to_owned(),
        namespace_labels: namespace_labels.clone(),
        labels: labels(&r.get(kind, name)["spec"]["template"]["metadata"]["labels"]),
        internet: false,
    };
    let receiver = pod_of("Deployment", "receiver");
    let router = pod_of("Deployment", "router");
    let consumer = pod_of("Deployment", "consumer");
    let grafana = pod_of("Deployment", "grafana");
    let valkey = pod_of("StatefulSet", "valkey");
    let rabbitmq = pod_of("StatefulSet", "rabbitmq");
    let cluster = text(r.all("Kafka")[0], "/metadata/name").to_owned();
    let strimzi_pod = |name: String| Peer {
        what: name.clone(),
        labels: [
            ("strimzi.io/cluster", cluster.as_str()),
            ("strimzi.io/kind", "Kafka"),
            ("strimzi.io/name", name.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..pod_of("Deployment", "router")
    };
    let broker = strimzi_pod(format!("{cluster}-kafka"));
    let entity_operator = strimzi_pod(format!("{cluster}-entity-operator"));
    let unknown_pod = Peer {
        what: "an unlabelled pod in flujo".into(),
        labels: Labels::new(),
        ..receiver.clone()
    };
    let client_here = Peer {
        what: "a flujo.io/client pod in flujo".into(),
        labels: [("flujo.io/client".to_owned(), "true".to_owned())].into(),
        ..receiver.clone()
    };
    let client_elsewhere = peer(
        "a flujo.io/client pod in another namespace",
        "default",
        &[("flujo.io/client", "true")],
    );
    let ingress_controller = peer(
        "ingress controller",
        "ingress-nginx",
        &[("app.kubernetes.io/name", "ingress-nginx")],
    );
    let prometheus = peer(
        "Prometheus",
        "monitoring",
        &[("app.kubernetes.io/name", "prometheus")],
    );
    let keda = peer("KEDA operator", "keda", &[("app", "keda-operator")]);
    let dns = peer("cluster DNS", "kube-system", &[("k8s-app", "kube-dns")]);
    let stranger = peer("a pod in another namespace", "default", &[("app", "other")]);
    let internet = Peer {
        what: "the internet".into(),
        internet: true,
        ..stranger.clone()
    };

    let policies: Vec<&Value> = policies.into_iter().collect();
    let allowed = |from: &Peer, to: &Peer, port: u64, protocol: &str| {
        direction_allows(&policies, from, to, port, protocol, true)
            && direction_allows(&policies, to, from, port, protocol, false)
    };
    let must = [
        (&ingress_controller, &receiver, 8080),
        (&ingress_controller, &consumer, 8080),
        (&receiver, &router, 50051),
        (&router, &broker, 9092),
        (&router, &rabbitmq, 5672),
        (&consumer, &broker, 9092),
        (&consumer, &rabbitmq, 5672),
        (&consumer, &valkey, 6379),
        (&prometheus, &receiver, 8080),
        (&prometheus, &router, 8080),
        (&prometheus, &consumer, 8080),
        (&grafana, &prometheus, 9090),
        (&grafana, &valkey, 6379),
        (&keda, &broker, 9092),
        (&client_here, &receiver, 8080),
        (&client_here, &receiver, 50051),
        (&client_here, &receiver, 7070),
        (&client_here, &consumer, 8080),
        (&client_elsewhere, &receiver, 7070),
        (&client_elsewhere, &consumer, 8080),
        (&broker, &broker, 9091),
        (&entity_operator, &broker, 9091),
    ];
    for (from, to, port) in must {
        assert!(
            allowed(from, to, port, "TCP"),
            "{}: NetworkPolicies block {} → {}:{port}, which the pipeline needs",
            r.overlay,
            from.what,
            to.what
        );
    }
    for pod in [
        &receiver,
        &router,
        &consumer,
        &grafana,
        &valkey,
        &rabbitmq,
        &broker,
        &unknown_pod,
    ] {
        assert!(
            allowed(pod, &dns, 53, "UDP"),
            "{}: {} → DNS",
            r.overlay,
            pod.what
        );
    }
    let must_not = [
        (&ingress_controller, &router, 8080),
        (&ingress_controller, &router, 50051),
        (&ingress_controller, &receiver, 50051),
        (&ingress_controller, &valkey, 6379),
        (&ingress_controller, &rabbitmq, 5672),
        (&ingress_controller, &broker, 9092),
        (&stranger, &receiver, 8080),
        (&stranger, &receiver, 7070),
        (&stranger, &consumer, 8080),
        (&stranger, &valkey, 6379),
        (&stranger, &rabbitmq, 5672),
        (&stranger, &broker, 9092),
        (&stranger, &unknown_pod, 8080),
        (&receiver, &broker, 9092),
        (&receiver, &valkey, 6379),
        (&receiver, &rabbitmq, 5672),
        (&receiver, &consumer, 8080),
        (&router, &valkey, 6379),
        (&router, &consumer, 8080),
        (&consumer, &router, 50051),
        (&grafana, &broker, 9092),
        (&grafana, &rabbitmq, 5672),
        (&grafana, &receiver, 8080),
        (&prometheus, &valkey, 6379),
        (&prometheus, &broker, 9092),
        (&receiver, &internet, 443),
        (&consumer, &internet, 443),
        (&valkey, &internet, 443),
        (&unknown_pod, &internet, 443),
        (&unknown_pod, &valkey, 6379),
        (&client_here, &valkey, 6379),
        (&client_here, &router, 50051),
        (&client_here, &internet, 443),
        (&client_elsewhere, &router, 50051),
        (&client_elsewhere, &valkey, 6379),
    ];
    for (from, to, port) in must_not {
        assert!(
            !allowed(from, to, port, "TCP"),
            "{}: NetworkPolicies allow {} → {}:{port}, which nothing needs",
            r.overlay,
            from.what,
            to.what
        );
    }
}

/// Everything every overlay must satisfy; returns what the overlay tests compare.
struct Summary {
    hpa: [u64; 4],
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
    let hpa = autoscaling(r, &configs);
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
    assert_eq!(
        s.budgets["valkey"]["minAvailable"], 1,
        "prod: Valkey moves only deliberately"
    );
    let ingress = r.all("Ingress")[0];
    assert!(
        !arr(&ingress["spec"]["tls"]).is_empty(),
        "prod: TLS on the Ingress"
    );
}

/// No Secret object, stringData, password literal or credentials in a URL anywhere
/// git would take from manifests/; the real secret files are ignored.
#[test]
fn no_secret_in_git() {
    let root = repo_path("manifests");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("manifests/ is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let ignored = |path: &Path| {
        Command::new("git")
            .args(["check-ignore", "-q"])
            .arg(path)
            .current_dir(repo_path("."))
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut examples = 0;
    for path in &files {
        let rel = path
            .strip_prefix(repo_path("."))
            .unwrap_or(path)
            .display()
            .to_string();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".env") && rel.contains("/secrets/") {
            assert!(
                ignored(path),
                "{rel} holds secrets and must be ignored by git"
            );
            continue;
        }
        let content = std::fs::read_to_string(path).expect("text file");
        if let Some(real) = name.strip_suffix(".example") {
            examples += 1;
            assert!(
                ignored(&path.with_file_name(real)),
                "{rel}: its real file {real} must be ignored by git"
            );
            for line in content.lines().filter(|l| !l.starts_with('#')) {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                if ["PASS", "SECRET", "TOKEN"].iter().any(|w| key.contains(w)) {
                    assert_eq!(value, "change-me", "{rel}: examples hold placeholders only");
                }
            }
            continue;
        }
        for (n, line) in content.lines().enumerate() {
            let at = format!("{rel}:{}: {line}", n + 1);
            let code = line.trim_start();
            if code.starts_with('#') {
                continue;
            }
            assert!(
                !code.starts_with("stringData:") && code != "kind: Secret",
                "a Secret in git: {at}"
            );
            if let Some((key, value)) = code.trim_start_matches("- ").split_once(':') {
                let value = value.trim();
                if key.to_lowercase().contains("password") && !value.is_empty() {
                    assert!(value.starts_with('$'), "a password literal in git: {at}");
                }
            }
            // scheme://user:password@host with a literal password
            for (i, _) in code.match_indices("://") {
                let authority = code[i + 3..]
                    .split(['/', ' ', '"'])
                    .next()
                    .unwrap_or_default();
                if let Some((userinfo, _)) = authority.rsplit_once('@') {
                    if let Some((_, password)) = userinfo.split_once(':') {
                        assert!(
                            password.starts_with("$("),
                            "credentials in a URL in git: {at}"
                        );
                    }
                }
            }
        }
    }
    assert!(examples >= 3, "manifests/base/secrets/*.env.example");
}

/// The image the manifests run: built with the locked dependencies, non-root with
/// the uid the pods expect, the binary as entrypoint, the three ports.
#[test]
fn dockerfile() {
    let dockerfile = std::fs::read_to_string(repo_path("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage build");
    assert!(froms[0].starts_with("FROM rust:1-bookworm AS builder"));
    assert!(dockerfile.contains("cargo build --release --locked"));
    let last_stage = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, s)| s)
        .expect("a runtime stage");
    assert!(
        last_stage.starts_with("gcr.io/distroless/cc")
            || last_stage.starts_with("debian:bookworm-slim"),
        "a small runtime base"
    );
    assert!(
        last_stage.contains(&format!("\nUSER {IMAGE_UID}")),
        "non-root uid {IMAGE_UID}"
    );
    assert!(last_stage.contains("\nEXPOSE 8080 50051 7070\n"));
    assert!(last_stage.contains("\nENTRYPOINT [\"/usr/local/bin/flujo\"]\n"));
    assert!(last_stage.contains("\nCMD [\"run\"]"));
    let copies: Vec<&str> = last_stage
        .lines()
        .filter(|l| l.starts_with("COPY"))
        .collect();
    assert_eq!(
        copies,
        ["COPY --from=builder /out/flujo /usr/local/bin/flujo"],
        "only the binary"
    );

    let ignore = std::fs::read_to_string(repo_path(".dockerignore")).expect(".dockerignore");
    let entries: BTreeSet<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .collect();
    for needed in ["target", ".services", ".git", "manifests"] {
        assert!(
            entries.contains(needed),
            ".dockerignore leaves out {needed}"
        );
    }
    for kept in [
        "src",
        "actors",
        "proto",
        "build.rs",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        assert!(
            !entries.contains(kept),
            ".dockerignore must keep {kept}: the build needs it"
        );
    }
}
