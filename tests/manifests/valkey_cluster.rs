//! The Valkey Cluster of `manifests/components/valkey-cluster`, the KPI store of
//! the prod overlays: six nodes in cluster mode, each keeping its data and its
//! cluster state on its own volume with the append-only file on and the Secret's
//! password (for clients and for replication); every node announcing its stable
//! name, which the headless Service publishes before the pods are ready; the Job
//! that makes the nodes one cluster, checking `cluster info` first so that it does
//! nothing once the cluster exists; and every name a client is given (the
//! consumers' `valkey+cluster://` store, Grafana's data source, the Job's node
//! list) resolving to a pod of that StatefulSet through that Service.

use super::*;

/// The StatefulSet's pod (by ordinal) that a client's `HOST:PORT` reaches: HOST is
/// POD.SERVICE, optionally followed by the namespace (and `.svc`, and
/// `.cluster.local`), where SERVICE is the StatefulSet's headless Service and POD
/// one of its pods; PORT is the nodes' client port.
pub(crate) fn cluster_node(r: &Rendered, address: &str) -> Result<u64, String> {
    let sts = r.get("StatefulSet", VALKEY_CLUSTER);
    let service = text(sts, "/spec/serviceName");
    let replicas = number(sts, "/spec/replicas");
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} is not HOST:PORT"))?;
    if port != VALKEY_PORT.to_string() {
        return Err(format!("port {port}, not the client port {VALKEY_PORT}"));
    }
    let mut parts = host.split('.');
    let pod = parts.next().unwrap_or_default();
    let in_service = parts.next().unwrap_or_default();
    let domain = parts.collect::<Vec<_>>().join(".");
    let domains = [
        String::new(),
        NAMESPACE.to_owned(),
        format!("{NAMESPACE}.svc"),
        format!("{NAMESPACE}.svc.cluster.local"),
    ];
    if in_service != service || !domains.contains(&domain) {
        return Err(format!(
            "{host} is not a pod name of the Service {service} in namespace {NAMESPACE}"
        ));
    }
    let ordinal = pod
        .strip_prefix(&format!("{VALKEY_CLUSTER}-"))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n < replicas)
        .ok_or_else(|| format!("{pod} is not one of the {replicas} pods of {VALKEY_CLUSTER}"))?;
    Ok(ordinal)
}

/// Every node's address in the form the consumers' store URL names them, in order:
/// `valkey-cluster-0.valkey-cluster-headless:6379,…`.
pub(crate) fn cluster_seeds(r: &Rendered) -> String {
    let sts = r.get("StatefulSet", VALKEY_CLUSTER);
    let service = text(sts, "/spec/serviceName");
    (0..number(sts, "/spec/replicas"))
        .map(|n| format!("{VALKEY_CLUSTER}-{n}.{service}:{VALKEY_PORT}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The number of masters: the nodes over one master and its replicas, as the
/// create Job's `--cluster-replicas` splits them.
fn masters(r: &Rendered) -> u64 {
    let env = container_env(
        r,
        &r.get("Job", VALKEY_CLUSTER_JOB)["spec"]["template"]["spec"]["containers"][0],
    );
    let per_master: u64 = env
        .get("REPLICAS_PER_MASTER")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}: the Job's REPLICAS_PER_MASTER", r.overlay));
    number(r.get("StatefulSet", VALKEY_CLUSTER), "/spec/replicas") / (per_master + 1)
}

/// The consumer's store as flujo reads it (`flujo config`, password masked): the
/// cluster client on nodes of the StatefulSet, and a pinned shard count that
/// spreads over the masters and divides the topics' partitions (so a partition's
/// deliveries land in one shard).
pub(crate) fn cluster_store(r: &Rendered, consumer: &toml::Value) {
    let store = consumer["store"].as_str().unwrap_or_default();
    let who = format!("{}: consumer store {store}", r.overlay);
    let hosts = store
        .strip_prefix("valkey+cluster://:****@")
        .unwrap_or_else(|| panic!("{who}: a valkey+cluster:// URL with the password"));
    let nodes: BTreeSet<u64> = hosts
        .split(',')
        .map(|address| cluster_node(r, address).unwrap_or_else(|why| panic!("{who}: {why}")))
        .collect();
    assert!(
        nodes.len() as u64 > masters(r),
        "{who}: more nodes than masters, so a master down at start is not the only seed"
    );
    let shards = consumer
        .get("valkey")
        .and_then(|v| v.get("shards"))
        .and_then(toml::Value::as_integer)
        .unwrap_or_else(|| {
            panic!("{who}: valkey.shards pinned (the shard of a product depends on it)")
        }) as u64;
    assert!(
        shards >= masters(r),
        "{who}: {shards} shards leave a master idle"
    );
    let partitions = consumer["kafka"]["partitions"]
        .as_integer()
        .unwrap_or_default() as u64;
    assert!(
        partitions.is_multiple_of(shards),
        "{who}: {shards} shards do not divide the {partitions} partitions"
    );
}

/// The StatefulSet, its Service and PDB, and the create Job.
pub(crate) fn valkey_cluster(r: &Rendered) {
    let who = format!("{}: StatefulSet {VALKEY_CLUSTER}", r.overlay);
    let sts = r.workload_of("StatefulSet", VALKEY_CLUSTER);
    let spec = &sts["spec"];
    assert_eq!(
        number(sts, "/spec/replicas"),
        VALKEY_CLUSTER_NODES,
        "{who}: three masters with a replica each"
    );
    // A node is ready only in a whole cluster: started one by one, the first
    // would wait for the others forever.
    assert_eq!(
        spec["podManagementPolicy"], "Parallel",
        "{who}: all nodes start together"
    );
    let pod = &spec["template"]["spec"];
    let pod_labels = labels(&spec["template"]["metadata"]["labels"]);

    // Each node: cluster mode with its state on its volume, AOF, the password for
    // clients and replicas, its stable name announced to clients.
    let args = persistent_valkey(r, sts);
    let c = &pod["containers"][0];
    let flag = |name: &str| arg_after(&args, name).unwrap_or_else(|| panic!("{who}: no {name}"));
    assert_eq!(flag("--cluster-enabled"), "yes", "{who}");
    let dir = arg_after(&args, "--dir").unwrap_or("/data");
    let state = flag("--cluster-config-file");
    assert!(
        state.starts_with(&format!("{}/", dir.trim_end_matches('/'))),
        "{who}: nodes.conf ({state}) on the volume, beside the data"
    );
    assert_eq!(
        flag("--masterauth"),
        "$(VALKEY_PASSWORD)",
        "{who}: replicas log in to their master"
    );
    let field_ref = |var: &str| {
        arr(&c["env"])
            .iter()
            .find(|e| e["name"] == var)
            .and_then(|e| e["valueFrom"]["fieldRef"]["fieldPath"].as_str())
    };
    assert_eq!(field_ref("POD_NAME"), Some("metadata.name"), "{who}");
    assert_eq!(
        field_ref("POD_NAMESPACE"),
        Some("metadata.namespace"),
        "{who}"
    );
    let service = text(sts, "/spec/serviceName");
    assert_eq!(service, VALKEY_CLUSTER_SERVICE, "{who}");
    assert_eq!(
        flag("--cluster-announce-hostname"),
        format!("$(POD_NAME).{service}.$(POD_NAMESPACE).svc"),
        "{who}: each node announces its pod's name in the headless Service"
    );
    assert_eq!(
        flag("--cluster-preferred-endpoint-type"),
        "hostname",
        "{who}: clients are sent to names, which survive a pod's new IP"
    );
    let client_port = arg_after(&args, "--port").unwrap_or("6379");
    assert_eq!(client_port, VALKEY_PORT.to_string(), "{who}");
    assert!(
        arg_after(&args, "--cluster-port").is_none(),
        "{who}: the bus on the default port, client port + 10000"
    );
    let ports: BTreeMap<&str, u64> = arr(&c["ports"])
        .iter()
        .map(|p| (text(p, "/name"), number(p, "/containerPort")))
        .collect();
    for port in [VALKEY_PORT, VALKEY_BUS_PORT] {
        assert!(
            ports.values().any(|p| *p == port),
            "{who}: container port {port}"
        );
    }
    for var in ["VALKEY_PASSWORD", "REDISCLI_AUTH"] {
        let secret = arr(&c["env"])
            .iter()
            .find(|e| e["name"] == var)
            .map(|e| &e["valueFrom"]["secretKeyRef"])
            .unwrap_or_else(|| panic!("{who}: no {var}"));
        // The generated Secret's name carries kustomize's content hash.
        let generated = r
            .by_ref("Secret", "valkey-credentials")
            .map(|o| o["metadata"]["name"].clone())
            .unwrap_or_else(|| panic!("{who}: no Secret valkey-credentials"));
        assert!(
            secret["name"] == generated && secret["key"] == "VALKEY_PASSWORD",
            "{who}: {var} from the Secret {generated}, not {secret}"
        );
    }
    let ready = c["readinessProbe"]["exec"]["command"]
        .as_array()
        .map(|cmd| {
            cmd.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    assert!(
        ready.contains("cluster info") && ready.contains("cluster_state:ok"),
        "{who}: ready once the node sees the whole cluster: {ready}"
    );
    // The start-up step that puts each node's current address in nodes.conf,
    // looked up by the host name each line keeps.
    for init in arr(&pod["initContainers"]) {
        let script = arr(&init["command"])
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            script.contains(state) && script.contains("getent hosts"),
            "{who}: init container {} works on {state}",
            init["name"]
        );
        assert!(
            arr(&init["volumeMounts"])
                .iter()
                .any(|m| m["mountPath"] == dir
                    && m["name"] == spec["volumeClaimTemplates"][0]["metadata"]["name"]),
            "{who}: init container {} mounts the node's volume at {dir}",
            init["name"]
        );
        assert_eq!(
            expand(&script, &BTreeMap::new()),
            script,
            "{who}: the kubelet would rewrite $(…) or $$ in the init script"
        );
    }
    // Spread: a master and its replica on one node would go down together.
    let spread =
        arr(&pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"])
            .iter()
            .map(|t| &t["podAffinityTerm"])
            .chain(arr(&pod["affinity"]["podAntiAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"]))
            .any(|term| {
                term["topologyKey"] == "kubernetes.io/hostname"
                    && selects(&term["labelSelector"], &pod_labels)
            });
    assert!(spread, "{who}: pod anti-affinity over nodes");

    // The headless Service: the nodes' names, published before they are ready.
    let svc = r.get("Service", service);
    let who_svc = format!("{}: Service {service}", r.overlay);
    assert_eq!(svc["spec"]["clusterIP"], "None", "{who_svc}: headless");
    assert_eq!(
        svc["spec"]["publishNotReadyAddresses"], true,
        "{who_svc}: the nodes must resolve each other before they are ready"
    );
    assert!(
        selects(
            &serde_json::json!({"matchLabels": svc["spec"]["selector"]}),
            &pod_labels
        ),
        "{who_svc}: selects the nodes"
    );
    for p in arr(&svc["spec"]["ports"]) {
        let target = match &p["targetPort"] {
            Value::String(name) => ports.get(name.as_str()).copied(),
            Value::Number(n) => n.as_u64(),
            _ => Some(number(p, "/port")),
        };
        assert_eq!(target, Some(number(p, "/port")), "{who_svc}: port {p}");
    }
    assert_eq!(
        service_ports(r, service)
            .values()
            .copied()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([VALKEY_PORT, VALKEY_BUS_PORT]),
        "{who_svc}"
    );

    // One node at a time in a drain.
    let pdbs: Vec<&Value> = r
        .all("PodDisruptionBudget")
        .into_iter()
        .filter(|p| selects(&p["spec"]["selector"], &pod_labels))
        .collect();
    assert!(
        pdbs.len() == 1 && pdbs[0]["spec"]["maxUnavailable"] == 1,
        "{who}: one PDB, maxUnavailable 1"
    );

    create_job(r);
}

/// The Job that makes the nodes one cluster: it names every node, splits them
/// into masters with replicas, authenticates from the Secret, reads `cluster
/// info` from the nodes before anything else and leaves when a cluster exists;
/// only then `--cluster create`.
fn create_job(r: &Rendered) {
    let job = r.get("Job", VALKEY_CLUSTER_JOB);
    let who = format!("{}: Job {VALKEY_CLUSTER_JOB}", r.overlay);
    assert_eq!(job["apiVersion"], "batch/v1");
    let pod = &job["spec"]["template"]["spec"];
    assert!(
        ["Never", "OnFailure"].contains(&pod["restartPolicy"].as_str().unwrap_or_default()),
        "{who}: restartPolicy"
    );
    assert!(
        job["spec"]["backoffLimit"].is_u64() && job["spec"]["activeDeadlineSeconds"].is_u64(),
        "{who}: retries and an end"
    );
    let job_labels = labels(&job["spec"]["template"]["metadata"]["labels"]);
    let sts = r.get("StatefulSet", VALKEY_CLUSTER);
    assert!(
        !selects(&sts["spec"]["selector"], &job_labels),
        "{who}: its pod must not pass for a node (Service, PDB, NetworkPolicy)"
    );
    let containers = arr(&pod["containers"]);
    assert_eq!(containers.len(), 1, "{who}");
    let c = &containers[0];
    let env = container_env(r, c);
    let secrets = secret_data(r, "valkey-credentials");
    let password = &secrets["VALKEY_PASSWORD"];
    assert_eq!(
        env.get("REDISCLI_AUTH"),
        Some(password),
        "{who}: valkey-cli logs in with the Secret's password"
    );

    // Every node, by name, each once.
    let names = env
        .get("NODES")
        .unwrap_or_else(|| panic!("{who}: no NODES"));
    let mut nodes = BTreeSet::new();
    for name in names.split_whitespace() {
        let node = cluster_node(r, &format!("{name}:{VALKEY_PORT}"))
            .unwrap_or_else(|why| panic!("{who}: NODES: {why}"));
        assert!(nodes.insert(node), "{who}: {name} twice");
    }
    let replicas = number(sts, "/spec/replicas");
    assert_eq!(
        nodes,
        (0..replicas).collect::<BTreeSet<_>>(),
        "{who}: NODES names every pod"
    );
    let per_master: u64 = env
        .get("REPLICAS_PER_MASTER")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{who}: REPLICAS_PER_MASTER"));
    assert!(
        per_master >= 1 && replicas.is_multiple_of(per_master + 1) && masters(r) >= 3,
        "{who}: {replicas} nodes as masters with {per_master} replica(s) each, at \
         least three masters (a majority survives one)"
    );

    // The script: idempotent, and left as written by the kubelet.
    let command: Vec<&str> = arr(&c["command"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let script = command.last().copied().unwrap_or_default();
    assert_eq!(
        expand(script, &env),
        script,
        "{who}: the kubelet would rewrite $(…) or $$ in the script"
    );
    let at = |needle: &str| {
        script
            .find(needle)
            .unwrap_or_else(|| panic!("{who}: the script lacks `{needle}`:\n{script}"))
    };
    let create = at("--cluster create");
    let checks = [
        "cluster info",
        "cluster_known_nodes",
        "cluster_slots_assigned",
        "exit 0",
    ];
    for check in checks {
        assert!(
            at(check) < create,
            "{who}: `{check}` must come before `--cluster create` (it creates only \
             when no cluster exists)"
        );
    }
    assert!(
        at("$NODES") < create
            && script[create..].contains("--cluster-replicas \"$REPLICAS_PER_MASTER\"")
            && script[create..].contains("--cluster-yes"),
        "{who}: creates from NODES, REPLICAS_PER_MASTER replicas each, without asking"
    );
    assert!(
        !command.iter().any(|a| a.contains(password.as_str()))
            && !script.contains("-a ")
            && !script.contains("--pass"),
        "{who}: no password on valkey-cli's command line"
    );
}
