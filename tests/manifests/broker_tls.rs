//! The `broker-tls` component (`manifests/components/broker-tls`), rendered through
//! `manifests/overlays/prod-broker-tls` by `scripts/check-manifests.sh`: the router
//! and consumer reach Kafka on the TLS + SCRAM listener, with the CA and password
//! mounted as files from the Secrets Strimzi makes; the receiver gets none of it;
//! the NetworkPolicies let exactly those two roles reach 9093; and the roles'
//! environment, with the mounted files present, is accepted by the real binary.

use super::*;

#[test]
fn prod_broker_tls_overlay() {
    let r = check_script("prod-broker-tls");
    let s = contract(&r);
    assert_eq!(
        s.store,
        Store::Cluster,
        "prod-broker-tls: prod's Valkey Cluster"
    );
    broker_tls(&r);
}

/// What the broker-tls component sets up, in any overlay that has it.
pub(crate) fn broker_tls(r: &Rendered) {
    let kafka = r.get("Kafka", "flujo");
    let cluster = text(kafka, "/metadata/name");
    let tls = arr(&kafka["spec"]["kafka"]["listeners"])
        .iter()
        .find(|l| l["name"] == "tls")
        .expect("a `tls` Kafka listener");
    assert_eq!(tls["port"], 9093);
    assert_eq!(tls["tls"], true);
    assert_eq!(tls["authentication"]["type"], "scram-sha-512");
    assert!(
        kafka["spec"]["entityOperator"]["userOperator"].is_object(),
        "the User Operator makes the KafkaUser's Secret"
    );
    let user = r.get("KafkaUser", "flujo");
    assert_eq!(user["metadata"]["namespace"], NAMESPACE);
    assert_eq!(user["metadata"]["labels"]["strimzi.io/cluster"], cluster);
    assert_eq!(user["spec"]["authentication"]["type"], "scram-sha-512");

    for role in ["router", "consumer"] {
        let env = container_env(r, flujo_container(r, role));
        let want = [
            (
                "FLUJO__KAFKA__BROKERS",
                format!("{cluster}-kafka-bootstrap:9093"),
            ),
            ("FLUJO__KAFKA__SECURITY_PROTOCOL", "sasl_ssl".to_owned()),
            ("FLUJO__KAFKA__SASL_MECHANISM", "SCRAM-SHA-512".to_owned()),
            (
                "FLUJO__KAFKA__SASL_USERNAME",
                text(user, "/metadata/name").to_owned(),
            ),
        ];
        for (key, value) in &want {
            assert_eq!(env.get(*key), Some(value), "{role}: {key}");
        }
        // The files flujo is told to read are the Secrets Strimzi makes.
        let mounted = mounted_secret_files(r, role);
        let expect = [
            (
                "FLUJO__KAFKA__SSL_CA_FILE",
                (format!("{cluster}-cluster-ca-cert"), "ca.crt"),
            ),
            (
                "FLUJO__KAFKA__SASL_PASSWORD_FILE",
                (text(user, "/metadata/name").to_owned(), "password"),
            ),
        ];
        for (key, (secret, secret_key)) in expect {
            let path = env.get(key).unwrap_or_else(|| panic!("{role}: no {key}"));
            let (mounted_secret, mounted_key) = mounted
                .get(path)
                .unwrap_or_else(|| panic!("{role}: {key}={path} is not a mounted Secret key"));
            assert_eq!(
                (mounted_secret.as_str(), mounted_key.as_str()),
                (secret.as_str(), secret_key),
                "{role}: {key}"
            );
        }
        // The real binary accepts the environment, with the files in place.
        let pod = &r.get("Deployment", role)["spec"]["template"]["spec"];
        let (env, _files) = with_stand_in_files(pod, flujo_container(r, role), env);
        let config = flujo_config(role, &env);
        assert_eq!(
            config["kafka"]["security_protocol"].as_str(),
            Some("sasl_ssl"),
            "{role}: {config}"
        );
    }
    let receiver = container_env(r, flujo_container(r, "receiver"));
    assert!(
        !receiver
            .keys()
            .any(|k| k.contains("SASL") || k.contains("SSL")),
        "the receiver never talks to Kafka: {receiver:?}"
    );
    assert!(
        mounted_secret_files(r, "receiver")
            .values()
            .all(|(secret, _)| !STRIMZI_SECRETS.contains(&secret.as_str())),
        "the receiver mounts none of Kafka's Secrets"
    );

    // 9093: the router and the consumer in, the receiver and KEDA not.
    let policies: Vec<&Value> = r.all("NetworkPolicy");
    let pod = |name: &str| Peer {
        what: name.to_owned(),
        namespace: NAMESPACE.to_owned(),
        namespace_labels: [(
            "kubernetes.io/metadata.name".to_owned(),
            NAMESPACE.to_owned(),
        )]
        .into(),
        labels: labels(&r.get("Deployment", name)["spec"]["template"]["metadata"]["labels"]),
        internet: false,
    };
    let broker = Peer {
        what: "a Kafka broker".into(),
        labels: [
            ("strimzi.io/cluster", cluster),
            ("strimzi.io/kind", "Kafka"),
            ("strimzi.io/name", &format!("{cluster}-kafka")),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..pod("router")
    };
    let keda = peer("KEDA operator", "keda", &[("app", "keda-operator")]);
    let allowed = |from: &Peer, to: &Peer, port: u64| {
        direction_allows(&policies, from, to, port, "TCP", true, NAMESPACE)
            && direction_allows(&policies, to, from, port, "TCP", false, NAMESPACE)
    };
    for (from, port, want) in [
        (pod("router"), 9093, true),
        (pod("consumer"), 9093, true),
        (pod("receiver"), 9093, false),
        (keda.clone(), 9093, false),
        (keda, 9092, true),
    ] {
        assert_eq!(
            allowed(&from, &broker, port),
            want,
            "{} → Kafka:{port}",
            from.what
        );
    }
}
