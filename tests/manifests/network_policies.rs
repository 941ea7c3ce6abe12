//! The NetworkPolicies evaluated flow by flow (`network_policy.rs` in
//! `tests/support`): what the pipeline needs is allowed, the rest denied. With the
//! Valkey Cluster, also what the cluster needs: its nodes reach each other on the
//! client port (replication) and the bus, clients and the create Job reach the
//! client port only, and nothing is left for the standalone Valkey it replaced.

use super::*;

pub(crate) fn network_policies(r: &Rendered) {
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
    // The store's pods: the standalone Valkey, or a node of the cluster (every
    // node alike: a cluster client is sent to whichever holds a key's slot).
    let store = r.store();
    let valkey = pod_of("StatefulSet", store.workload());
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
        direction_allows(&policies, from, to, port, protocol, true, NAMESPACE)
            && direction_allows(&policies, to, from, port, protocol, false, NAMESPACE)
    };
    // With the cluster: the Job that creates it.
    let create_job = (store == Store::Cluster).then(|| pod_of("Job", VALKEY_CLUSTER_JOB));
    for pod in [
        &receiver,
        &router,
        &consumer,
        &grafana,
        &valkey,
        &rabbitmq,
        &broker,
        &unknown_pod,
    ]
    .into_iter()
    .chain(&create_job)
    {
        assert!(
            allowed(pod, &dns, 53, "UDP"),
            "{}: {} → DNS",
            r.overlay,
            pod.what
        );
    }
    // (from, to, port, needed): the connections the pipeline needs must be allowed,
    // the ones nothing needs must be blocked.
    let connections = [
        (&ingress_controller, &receiver, 8080, true),
        (&ingress_controller, &consumer, 8080, true),
        (&receiver, &router, 50051, true),
        (&router, &broker, 9092, true),
        (&router, &rabbitmq, 5672, true),
        (&consumer, &broker, 9092, true),
        (&consumer, &rabbitmq, 5672, true),
        (&consumer, &valkey, 6379, true),
        (&prometheus, &receiver, 8080, true),
        (&prometheus, &router, 8080, true),
        (&prometheus, &consumer, 8080, true),
        (&grafana, &prometheus, 9090, true),
        (&grafana, &valkey, 6379, true),
        (&keda, &broker, 9092, true),
        (&client_here, &receiver, 8080, true),
        (&client_here, &receiver, 50051, true),
        (&client_here, &receiver, 7070, true),
        (&client_here, &consumer, 8080, true),
        (&client_elsewhere, &receiver, 7070, true),
        (&client_elsewhere, &consumer, 8080, true),
        (&broker, &broker, 9091, true),
        (&entity_operator, &broker, 9091, true),
        (&ingress_controller, &router, 8080, false),
        (&ingress_controller, &router, 50051, false),
        (&ingress_controller, &receiver, 50051, false),
        (&ingress_controller, &valkey, 6379, false),
        (&ingress_controller, &rabbitmq, 5672, false),
        (&ingress_controller, &broker, 9092, false),
        (&stranger, &receiver, 8080, false),
        (&stranger, &receiver, 7070, false),
        (&stranger, &consumer, 8080, false),
        (&stranger, &valkey, 6379, false),
        (&stranger, &rabbitmq, 5672, false),
        (&stranger, &broker, 9092, false),
        (&stranger, &unknown_pod, 8080, false),
        (&receiver, &broker, 9092, false),
        (&receiver, &valkey, 6379, false),
        (&receiver, &rabbitmq, 5672, false),
        (&receiver, &consumer, 8080, false),
        (&router, &valkey, 6379, false),
        (&router, &consumer, 8080, false),
        (&consumer, &router, 50051, false),
        (&grafana, &broker, 9092, false),
        (&grafana, &rabbitmq, 5672, false),
        (&grafana, &receiver, 8080, false),
        (&prometheus, &valkey, 6379, false),
        (&prometheus, &broker, 9092, false),
        (&receiver, &internet, 443, false),
        (&consumer, &internet, 443, false),
        (&valkey, &internet, 443, false),
        (&unknown_pod, &internet, 443, false),
        (&unknown_pod, &valkey, 6379, false),
        (&client_here, &valkey, 6379, false),
        (&client_here, &router, 50051, false),
        (&client_here, &internet, 443, false),
        (&client_elsewhere, &router, 50051, false),
        (&client_elsewhere, &valkey, 6379, false),
    ];
    // The Valkey Cluster's own flows: node to node on the client port (a replica
    // reads its master there) and on the bus (gossip, failover); the Job creates
    // the cluster through the client port; nothing else reaches the bus.
    let mut cluster_connections = Vec::new();
    if let Some(job) = &create_job {
        let node = &valkey;
        cluster_connections.extend([
            (node, node, VALKEY_PORT, true),
            (node, node, VALKEY_BUS_PORT, true),
            (job, node, VALKEY_PORT, true),
            (&consumer, node, VALKEY_BUS_PORT, false),
            (&grafana, node, VALKEY_BUS_PORT, false),
            (job, node, VALKEY_BUS_PORT, false),
            (&stranger, node, VALKEY_BUS_PORT, false),
            (&unknown_pod, node, VALKEY_BUS_PORT, false),
            (&client_here, node, VALKEY_BUS_PORT, false),
            (&receiver, node, VALKEY_BUS_PORT, false),
            (&router, node, VALKEY_PORT, false),
            (job, &broker, 9092, false),
            (job, &rabbitmq, 5672, false),
            (job, &consumer, 8080, false),
            (job, &internet, 443, false),
            (node, &broker, 9092, false),
            (node, &consumer, 8080, false),
            (node, job, VALKEY_PORT, false),
            (&consumer, job, VALKEY_PORT, false),
            (&stranger, job, VALKEY_PORT, false),
        ]);
    }
    for (from, to, port, needed) in connections.into_iter().chain(cluster_connections) {
        let (verdict, why) = match needed {
            true => ("block", "which the pipeline needs"),
            false => ("allow", "which nothing needs"),
        };
        assert!(
            allowed(from, to, port, "TCP") == needed,
            "{}: NetworkPolicies {verdict} {} → {}:{port}, {why}",
            r.overlay,
            from.what,
            to.what
        );
    }

    // The cluster replaced the standalone Valkey: no policy still lets anything
    // out toward a pod labelled as it was (the base's manifests/base/valkey), or
    // into one.
    if store == Store::Cluster {
        let gone = Peer {
            what: "a pod labelled as the standalone Valkey".into(),
            labels: [("app.kubernetes.io/name".to_owned(), VALKEY.to_owned())].into(),
            ..receiver.clone()
        };
        for from in [
            &consumer,
            &grafana,
            create_job.as_ref().unwrap_or(&consumer),
        ] {
            assert!(
                !direction_allows(&policies, from, &gone, VALKEY_PORT, "TCP", true, NAMESPACE),
                "{}: {} may still send to {}:{VALKEY_PORT}",
                r.overlay,
                from.what,
                gone.what
            );
            assert!(
                !direction_allows(&policies, &gone, from, VALKEY_PORT, "TCP", false, NAMESPACE),
                "{}: {} still admits {}",
                r.overlay,
                gone.what,
                from.what
            );
        }
    }
}
