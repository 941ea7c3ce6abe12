//! Scaling and operations: autoscaling (HPA/KEDA), Strimzi, the stores,
//! observability (ServiceMonitor, dashboards) and disruption budgets.

use super::*;
use figment::providers::{Format as _, Yaml};

/// Autoscaling: the HPA (receivers, CPU) and the KEDA ScaledObject (consumers,
/// Kafka lag of flujo's consumer group, never more consumers than partitions).
/// Returns (HPA min, HPA max, KEDA min, max) and the fewest partitions of a topic
/// KEDA scales on.
pub(crate) fn autoscaling(r: &Rendered, configs: &BTreeMap<&str, toml::Value>) -> ([u64; 4], u64) {
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
    let mut fewest = u64::MAX;
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
        fewest = fewest.min(partitions);
    }
    ([hpa_min, hpa_max, so_min, so_max], fewest)
}

/// Strimzi: a KRaft cluster, its node pools and topics, consistent with each other
/// and with what flujo is configured to use. Returns the broker count.
pub(crate) fn strimzi(r: &Rendered, configs: &BTreeMap<&str, toml::Value>) -> u64 {
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
    assert!(
        listeners
            .iter()
            .any(|l| l["type"] == "internal" && l["tls"] == false),
        "{}: a plain internal listener (KEDA reads the lag there)",
        r.overlay
    );
    // flujo connects to Strimzi's bootstrap Service, on an internal listener, with
    // the security that listener asks for.
    for role in ["router", "consumer"] {
        let kafka = &configs[role]["kafka"];
        let brokers = kafka["brokers"].as_str().unwrap_or_default();
        let who = format!("{}: {role} (kafka.brokers {brokers})", r.overlay);
        let port = brokers
            .strip_prefix(&format!("{cluster}-kafka-bootstrap:"))
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{who}: connects to Strimzi's bootstrap Service"));
        let listener = listeners
            .iter()
            .find(|l| l["type"] == "internal" && l["port"] == port)
            .unwrap_or_else(|| panic!("{who}: no internal listener on {port}"));
        let protocol = kafka
            .get("security_protocol")
            .and_then(toml::Value::as_str)
            .unwrap_or("plaintext");
        let sasl = kafka.get("sasl_mechanism").and_then(toml::Value::as_str);
        let (want_protocol, want_sasl) = match (
            listener["tls"].as_bool(),
            listener["authentication"]["type"].as_str(),
        ) {
            (Some(false), None) => ("plaintext", None),
            (Some(true), None) => ("ssl", None),
            (Some(true), Some("scram-sha-512")) => ("sasl_ssl", Some("SCRAM-SHA-512")),
            other => panic!("{who}: a listener flujo's tests do not know: {other:?}"),
        };
        assert_eq!(protocol, want_protocol, "{who}");
        assert_eq!(sasl, want_sasl, "{who}");
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
        // Were flujo to create the topic, it would make the same one.
        assert_eq!(
            flujo_kafka["partitions"].as_integer().map(|p| p as u64),
            Some(number(t, "/spec/partitions")),
            "{}: {topic}: flujo's kafka.partitions and the KafkaTopic's",
            r.overlay
        );
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

/// The value after `flag` in a command line.
pub(crate) fn arg_after<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1))
        .copied()
}

/// A Valkey StatefulSet that keeps its data: on a PVC, with the append-only file,
/// the password of the Secret (by reference, never the value). Returns the
/// arguments of its Valkey container.
pub(crate) fn persistent_valkey<'a>(r: &Rendered, valkey: &'a Value) -> Vec<&'a str> {
    let who = format!("{}: {}", r.overlay, name_of(valkey));
    let templates = arr(&valkey["spec"]["volumeClaimTemplates"]);
    assert!(!templates.is_empty(), "{who}: keeps its data on a PVC");
    let storage = &templates[0]["spec"]["resources"]["requests"]["storage"];
    assert!(quantity(storage) > 0.0);
    let c = &valkey["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = arr(&c["args"]).iter().filter_map(Value::as_str).collect();
    assert_eq!(
        arg_after(&args, "--appendonly"),
        Some("yes"),
        "{who}: AOF on"
    );
    let dir = arg_after(&args, "--dir").unwrap_or("/data");
    assert!(
        arr(&c["volumeMounts"])
            .iter()
            .any(|m| m["mountPath"] == dir && m["name"] == templates[0]["metadata"]["name"]),
        "{who}: --dir {dir} is on the PVC"
    );
    assert_eq!(
        arg_after(&args, "--requirepass"),
        Some("$(VALKEY_PASSWORD)"),
        "{who}"
    );
    let secrets = secret_data(r, "valkey-credentials");
    let password = &secrets["VALKEY_PASSWORD"];
    assert!(
        !args.iter().any(|a| a.contains(password.as_str())),
        "{who}: the password itself on its command line"
    );
    args
}

pub(crate) fn stores(r: &Rendered) {
    match r.store() {
        Store::Standalone => {
            persistent_valkey(r, r.workload_of("StatefulSet", VALKEY));
            assert_eq!(service_ports(r, VALKEY).get("valkey"), Some(&VALKEY_PORT));
        }
        Store::Cluster => valkey_cluster(r),
    }

    let rabbit = r.workload_of("StatefulSet", "rabbitmq");
    assert!(!arr(&rabbit["spec"]["volumeClaimTemplates"]).is_empty());
    assert_eq!(service_ports(r, "rabbitmq").get("amqp"), Some(&5672));
}

pub(crate) fn observability(r: &Rendered) {
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
    for other in [r.store().service(), "rabbitmq", "grafana"] {
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
        "password: $VALKEY_PASSWORD",
    ] {
        assert!(datasources.contains(needle), "datasources lack `{needle}`");
    }
    // The Valkey data source reads the store the overlay deploys.
    let provisioned: Value = figment::Figment::from(Yaml::string(datasources))
        .extract()
        .unwrap_or_else(|e| panic!("{}: Grafana's data sources are not YAML: {e}", r.overlay));
    let redis = arr(&provisioned["datasources"])
        .iter()
        .find(|d| d["type"] == "redis-datasource")
        .unwrap_or_else(|| panic!("{}: no redis-datasource", r.overlay));
    let url = text(redis, "/url");
    let client = &redis["jsonData"]["client"];
    match r.store() {
        Store::Standalone => assert!(
            client == "standalone" && url.starts_with(&format!("redis://{VALKEY}.")),
            "{}: Grafana reads the standalone Valkey, not {client} {url}",
            r.overlay
        ),
        Store::Cluster => {
            assert_eq!(
                client, "cluster",
                "{}: the plugin's cluster mode",
                r.overlay
            );
            // Comma separated, nothing else: the plugin splits on `,` alone.
            let nodes: BTreeSet<u64> = url
                .split(',')
                .map(|address| {
                    cluster_node(r, address).unwrap_or_else(|why| {
                        panic!("{}: Grafana's Valkey address {address:?}: {why}", r.overlay)
                    })
                })
                .collect();
            assert!(
                nodes.len() >= 2,
                "{}: Grafana names several nodes, one may be down: {url}",
                r.overlay
            );
        }
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

/// One PDB per role and for the store's Valkey, selecting the right pods.
pub(crate) fn disruption_budgets(r: &Rendered) -> BTreeMap<String, Value> {
    let mut budgets = BTreeMap::new();
    for (kind, name) in [
        ("Deployment", "receiver"),
        ("Deployment", "router"),
        ("Deployment", "consumer"),
        ("StatefulSet", r.store().workload()),
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
