//! The NetworkPolicies evaluated flow by flow (`network_policy.rs` in
//! `tests/support`): what the pipeline needs is allowed, the rest denied.

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
        direction_allows(&policies, from, to, port, protocol, true, NAMESPACE)
            && direction_allows(&policies, to, from, port, protocol, false, NAMESPACE)
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
