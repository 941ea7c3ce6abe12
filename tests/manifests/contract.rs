//! The deployment contract for any overlay: kinds, locked-down containers, each
//! role's configuration, credentials from Secrets, references, services and ingress.

use super::*;

pub(crate) fn every_required_kind(r: &Rendered) {
    let need: [(&str, &str, Option<&str>); 12] = [
        ("v1", "Namespace", Some(NAMESPACE)),
        ("apps/v1", "Deployment", Some("receiver")),
        ("apps/v1", "Deployment", Some("router")),
        ("apps/v1", "Deployment", Some("consumer")),
        ("networking.k8s.io/v1", "Ingress", None),
        ("autoscaling/v2", "HorizontalPodAutoscaler", None),
        ("keda.sh/v1alpha1", "ScaledObject", None),
        ("kafka.strimzi.io/v1beta2", "Kafka", None),
        ("kafka.strimzi.io/v1beta2", "KafkaNodePool", None),
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
    // The KPI store: one of the two Valkeys (`store` panics on none or both), and
    // with the cluster the Job that creates it.
    let store = r.store();
    assert_eq!(
        r.get("StatefulSet", store.workload())["apiVersion"],
        "apps/v1"
    );
    if store == Store::Cluster {
        assert_eq!(
            r.get("Job", VALKEY_CLUSTER_JOB)["apiVersion"],
            "batch/v1",
            "{}",
            r.overlay
        );
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

pub(crate) fn every_container_is_locked_down(r: &Rendered) {
    let workloads = r.workloads();
    assert!(
        workloads.len() >= 6,
        "{}: roles, Valkey, RabbitMQ, Grafana",
        r.overlay
    );
    for w in workloads {
        let pod = &w["spec"]["template"]["spec"];
        let who = format!("{}: {}", r.overlay, name_of(w));
        // Probes for what keeps running: not a Job's container, which exits when
        // done, nor an init container (the API refuses probes there).
        let probed: Vec<&Value> = match w["kind"] == "Job" {
            true => Vec::new(),
            false => arr(&pod["containers"]).iter().collect(),
        };
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
            if probed.iter().any(|p| std::ptr::eq(*p, c)) {
                for probe in ["livenessProbe", "readinessProbe"] {
                    assert!(c[probe].is_object(), "{who}: no {probe}");
                }
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
pub(crate) fn flujo_roles(r: &Rendered) -> BTreeMap<&'static str, toml::Value> {
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
        // Files of the Secrets made outside the manifests stand in as files made here.
        let (env, _files) = with_stand_in_files(pod, c, env);
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
    let router_url = receiver["router_url"].as_str().unwrap_or_default();
    assert!(
        router_url == "grpc://router:50051"
            || (router_url == "grpcs://router:50051" && receiver.get("router_ca_file").is_some()),
        "{}: receiver forwards to the router Service (over TLS with a CA file), got {receiver}",
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
    match r.store() {
        Store::Standalone => assert!(
            store.starts_with("valkey://") && store.ends_with("@valkey:6379"),
            "{}: consumer store {store}",
            r.overlay
        ),
        Store::Cluster => cluster_store(r, &configs["consumer"]),
    }
    configs
}

/// The URLs with passwords are put together from the generated Secrets.
pub(crate) fn credentials_come_from_secrets(r: &Rendered) {
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
    let store = match r.store() {
        Store::Standalone => format!("valkey://:{}@valkey:6379", valkey["VALKEY_PASSWORD"]),
        Store::Cluster => format!(
            "valkey+cluster://:{}@{}",
            valkey["VALKEY_PASSWORD"],
            cluster_seeds(r)
        ),
    };
    // Resolved as the kubelet does: VALKEY_PASSWORD must come before the URL.
    assert_eq!(
        env.get("FLUJO__STORE"),
        Some(&store),
        "{}: the consumer's store, with the Secret's password",
        r.overlay
    );

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
pub(crate) fn references_resolve(r: &Rendered) {
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
                // A Secret made outside the manifests has the keys documented for
                // it; a rendered one, those of its data.
                let keys: BTreeSet<String> = match external_secret_keys(name) {
                    Some(keys) => keys.iter().map(|k| k.to_string()).collect(),
                    None => secret_data(r, name).into_keys().collect(),
                };
                for item in arr(&v["secret"]["items"]) {
                    let key = text(item, "/key");
                    assert!(
                        keys.contains(key),
                        "{}: Secret {name} has no {key}",
                        r.overlay
                    );
                }
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

pub(crate) fn service_ports(r: &Rendered, name: &str) -> BTreeMap<String, u64> {
    arr(&r.get("Service", name)["spec"]["ports"])
        .iter()
        .map(|p| (text(p, "/name").to_owned(), number(p, "/port")))
        .collect()
}

pub(crate) fn services_and_ingress(r: &Rendered) {
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
        ("/openapi.json", "receiver"),
        ("/v1/kpis", "consumer"),
        ("/v1/rankings", "consumer"),
        ("/v1/sales/monitored", "consumer"),
        ("/", "consumer"),
        ("/assets", "consumer"),
        ("/v1/stream", "consumer"),
    ]
    .iter()
    .map(|(p, s)| (p.to_string(), s.to_string()))
    .collect();
    assert_eq!(routes, want, "{}: Ingress paths", r.overlay);
}

/// The Secret that `role`'s flujo container mounts, read-only, at `dir`.
pub(crate) fn secret_mounted_at<'a>(r: &'a Rendered, role: &str, dir: &str) -> &'a Value {
    let who = format!("{}: Deployment {role}", r.overlay);
    let pod = &r.get("Deployment", role)["spec"]["template"]["spec"];
    let mount = arr(&flujo_container(r, role)["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("{who}: nothing mounted at {dir}"));
    assert_eq!(mount["readOnly"], true, "{who}: {dir} mounted read-only");
    let volume = arr(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{who}: no volume {}", mount["name"]));
    &volume["secret"]["secretName"]
}

/// TLS on flujo's own listeners (`manifests/components/tls`): every role mounts the
/// listener certificate's Secret and names its files for each listener it runs,
/// probes over HTTPS; receivers forward over TLS checking the router against the
/// Secret's CA; Prometheus scrapes over HTTPS against the same CA; the Ingress
/// speaks HTTPS to its backends.
pub(crate) fn listener_tls(r: &Rendered) {
    const DIR: &str = "/etc/flujo/tls";
    for role in ROLES {
        let who = format!("{}: Deployment {role}", r.overlay);
        let c = flujo_container(r, role);
        assert_eq!(
            secret_mounted_at(r, role, DIR),
            PROVIDED_SECRETS[0],
            "{who}"
        );
        let env = container_env(r, c);
        let mut listeners = vec!["HTTP"];
        if role != "consumer" {
            listeners.push("GRPC");
        }
        if role == "receiver" {
            listeners.push("TCP");
        }
        for listener in listeners {
            for (key, file) in [("CERT", "tls.crt"), ("KEY", "tls.key")] {
                let var = format!("FLUJO__{listener}__TLS_{key}_FILE");
                assert_eq!(
                    env.get(&var).map(String::as_str),
                    Some(format!("{DIR}/{file}").as_str()),
                    "{who}: {var}"
                );
            }
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            assert_eq!(c[probe]["httpGet"]["scheme"], "HTTPS", "{who}: {probe}");
        }
    }
    let env = container_env(r, flujo_container(r, "receiver"));
    assert_eq!(
        env.get("FLUJO__ROUTER_URL").map(String::as_str),
        Some("grpcs://router:50051")
    );
    assert_eq!(
        env.get("FLUJO__ROUTER_CA_FILE").map(String::as_str),
        Some("/etc/flujo/tls/ca.crt")
    );
    let monitor = r.all("ServiceMonitor")[0];
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https", "{}", r.overlay);
    let ca = &endpoint["tlsConfig"]["ca"]["secret"];
    assert_eq!(ca["name"], PROVIDED_SECRETS[0]);
    assert_eq!(ca["key"], "ca.crt");
    assert!(
        ["receiver", "router", "consumer"].contains(
            &endpoint["tlsConfig"]["serverName"]
                .as_str()
                .unwrap_or_default()
        ),
        "the ServiceMonitor checks one of the certificate's names: {endpoint}"
    );
    let ingress = r.all("Ingress")[0];
    let annotations = &ingress["metadata"]["annotations"];
    let annotation = |name: &str| {
        annotations[format!("nginx.ingress.kubernetes.io/{name}")]
            .as_str()
            .unwrap_or_default()
    };
    assert_eq!(
        annotation("backend-protocol"),
        "HTTPS",
        "{}: the Ingress speaks HTTPS to flujo",
        r.overlay
    );
    // ...and checks the backends' certificate (ingress-nginx does not by default)
    // against the Secret's CA, for a name the certificate has and that is the
    // Service of every backend or, as here, of one of them: the one certificate
    // every role serves carries all their names.
    assert_eq!(annotation("proxy-ssl-verify"), "on", "{}", r.overlay);
    assert_eq!(annotation("proxy-ssl-server-name"), "on", "{}", r.overlay);
    assert_eq!(
        annotation("proxy-ssl-secret"),
        format!("{NAMESPACE}/{}", PROVIDED_SECRETS[0]),
        "{}: namespace/name of the listener certificate's Secret",
        r.overlay
    );
    let backends: BTreeSet<&str> = arr(&ingress["spec"]["rules"])
        .iter()
        .flat_map(|rule| arr(&rule["http"]["paths"]))
        .map(|p| text(p, "/backend/service/name"))
        .collect();
    let name = annotation("proxy-ssl-name");
    assert!(
        backends.contains(name) && backends.iter().all(|b| ROLES.contains(b)),
        "{}: proxy-ssl-name {name:?} must be a backend Service ({backends:?}), all of \
         them names of the listener certificate",
        r.overlay
    );
}
