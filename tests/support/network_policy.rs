//! Kubernetes NetworkPolicies evaluated without a cluster: label selectors, and
//! whether the policies of a namespace let traffic from one pod reach another on a
//! port (both the sender's egress and the receiver's ingress must allow it). No tool
//! of ours can do this offline (kubernetes-validate checks schemas, not flows), so
//! the manifests test uses this small evaluator; its unit tests pin the semantics.

use serde_json::Value;
use std::collections::BTreeMap;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A Kubernetes label selector (matchLabels and matchExpressions) against labels.
pub fn selects(selector: &Value, labels: &Labels) -> bool {
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let by_expression = items(&selector["matchExpressions"]).iter().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = items(&e["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
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

/// A pod (or the internet) as NetworkPolicies see it.
#[derive(Clone)]
pub struct Peer {
    /// What it is, for messages.
    pub what: String,
    /// Its namespace.
    pub namespace: String,
    /// Its namespace's labels.
    pub namespace_labels: Labels,
    /// The pod's labels.
    pub labels: Labels,
    /// The internet (only an `ipBlock` selects it).
    pub internet: bool,
}

/// A pod of `namespace` with these labels.
pub fn peer(what: &str, namespace: &str, pod_labels: &[(&str, &str)]) -> Peer {
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

/// Whether a rule's `from`/`to` entry selects `p` (for a policy in `policy_namespace`).
pub fn matches_peer(rule_peer: &Value, policy_namespace: &str, p: &Peer) -> bool {
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

/// Whether a rule's `ports` let `port`/`protocol` through (no list: every port).
pub fn matches_port(ports: &Value, port: u64, protocol: &str) -> bool {
    let list = items(ports);
    list.is_empty()
        || list.iter().any(|p| {
            p["protocol"].as_str().unwrap_or("TCP") == protocol
                && p["port"].as_u64().is_none_or(|n| n == port)
        })
}

/// Whether `subject`'s policies let traffic go to (egress) or come from (ingress)
/// `other`. Pods outside `namespace` (ours) have no policies of ours.
pub fn direction_allows(
    policies: &[&Value],
    subject: &Peer,
    other: &Peer,
    port: u64,
    protocol: &str,
    egress: bool,
    namespace: &str,
) -> bool {
    if subject.internet || subject.namespace != namespace {
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
            let types = items(&p["spec"]["policyTypes"]);
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
        items(&p["spec"][rules_key]).iter().any(|rule| {
            let peers = items(&rule[peers_key]);
            (peers.is_empty() || peers.iter().any(|rp| matches_peer(rp, namespace, other)))
                && matches_port(&rule["ports"], port, protocol)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let l = labels(&[("app", "flujo"), ("role", "router")]);
        assert!(selects(&json!({}), &l));
        assert!(selects(&json!({"matchLabels": {"app": "flujo"}}), &l));
        assert!(!selects(&json!({"matchLabels": {"app": "other"}}), &l));
        let expr = |op: &str, values: &[&str]| json!({"matchExpressions": [{"key": "role", "operator": op, "values": values}]});
        assert!(selects(&expr("In", &["router", "consumer"]), &l));
        assert!(!selects(&expr("NotIn", &["router"]), &l));
        assert!(selects(&expr("Exists", &[]), &l));
        assert!(!selects(&expr("DoesNotExist", &[]), &l));
    }

    #[test]
    fn traffic_needs_egress_and_ingress() {
        let deny_all = json!({"spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}});
        let to_router = json!({"spec": {
            "podSelector": {"matchLabels": {"role": "receiver"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"role": "router"}}}],
                        "ports": [{"port": 50051}]}]
        }});
        let from_receiver = json!({"spec": {
            "podSelector": {"matchLabels": {"role": "router"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "receiver"}}}]}]
        }});
        let receiver = peer("receiver", "flujo", &[("role", "receiver")]);
        let router = peer("router", "flujo", &[("role", "router")]);
        let elsewhere = peer("stranger", "default", &[("role", "receiver")]);
        let allowed = |policies: &[&Value], from: &Peer, to: &Peer, port: u64| {
            direction_allows(policies, from, to, port, "TCP", true, "flujo")
                && direction_allows(policies, to, from, port, "TCP", false, "flujo")
        };
        assert!(allowed(&[], &receiver, &router, 50051), "no policy: open");
        assert!(!allowed(&[&deny_all], &receiver, &router, 50051));
        let all = [&deny_all, &to_router, &from_receiver];
        assert!(allowed(&all, &receiver, &router, 50051));
        assert!(!allowed(&all, &receiver, &router, 8080), "other port");
        assert!(!allowed(&all, &router, &receiver, 50051), "other direction");
        assert!(
            !allowed(&all, &elsewhere, &router, 50051),
            "other namespace"
        );
    }
}
