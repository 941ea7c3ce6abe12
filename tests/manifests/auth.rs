//! The `auth` component (`manifests/components/auth`), rendered through
//! `manifests/overlays/prod-secure` (prod with the tls, broker-tls and auth
//! components, accepting an identity provider's JWTs too) by
//! `scripts/check-manifests.sh`: the Secret `flujo-auth` mounted read-only in every
//! role; every `FLUJO__AUTH__*_FILE` setting naming a key of it (the API keys and
//! the JWKS in every role, the forward key in the receivers only); a per-client
//! ingest limit; probes and scraping without a credential. The real binary accepts
//! each role's environment with real key files made at test time in place of the
//! Secret's, and refuses it when one of them is missing.

use super::*;

/// Where the component mounts the Secret.
const DIR: &str = "/etc/flujo/auth";
/// The user-provided Secret with the keys.
const SECRET: &str = PROVIDED_SECRETS[1];

#[test]
fn prod_secure_overlay() {
    let r = check_script("prod-secure");
    let s = contract(&r);
    let prod = contract(&check_script("prod"));
    assert_eq!(s.hpa, prod.hpa, "prod-secure is prod, sizes and all");
    assert_eq!(s.router_replicas, prod.router_replicas);
    assert_eq!(s.brokers, prod.brokers);
    assert_eq!(s.store, prod.store, "prod-secure: prod's Valkey Cluster");
    listener_tls(&r);
    broker_tls::broker_tls(&r);
    authentication(&r);
}

/// The `FLUJO__AUTH__*_FILE` settings `role` must have, each with the key of the
/// Secret it names (the overlay adds the JWKS to the component's API keys).
fn expected_files(role: &str) -> BTreeMap<&'static str, &'static str> {
    let mut want = BTreeMap::from([
        ("FLUJO__AUTH__API_KEYS_FILE", "api-keys.toml"),
        ("FLUJO__AUTH__JWKS_FILE", "jwks.json"),
    ]);
    if role == "receiver" {
        want.insert("FLUJO__AUTH__FORWARD_TOKEN_FILE", "forward-key");
    }
    want
}

/// The configuration key of a `FLUJO__SECTION__KEY` variable (`section.key`), as
/// flujo names it in its errors.
fn setting(var: &str) -> String {
    var.trim_start_matches("FLUJO__")
        .to_lowercase()
        .replace("__", ".")
}

/// What the auth component sets up, in an overlay that also names the JWKS.
pub(crate) fn authentication(r: &Rendered) {
    for role in ROLES {
        let who = format!("{}: Deployment {role}", r.overlay);
        let pod = &r.get("Deployment", role)["spec"]["template"]["spec"];
        let c = flujo_container(r, role);
        assert_eq!(secret_mounted_at(r, role, DIR), SECRET, "{who}");

        // Every file setting of [auth] names a key of the Secret, where it is
        // mounted; and exactly the ones the role needs are set.
        let env = container_env(r, c);
        let mounted = mounted_secret_files(r, role);
        let set: BTreeMap<&str, &str> = env
            .iter()
            .filter(|(k, _)| k.starts_with("FLUJO__AUTH__") && k.ends_with("_FILE"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let want = expected_files(role);
        assert_eq!(
            set.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{who}: the [auth] files"
        );
        for (var, path) in &set {
            let (secret, key) = mounted
                .get(*path)
                .unwrap_or_else(|| panic!("{who}: {var}={path} is not a mounted Secret key"));
            assert_eq!(
                (secret.as_str(), key.as_str()),
                (SECRET, want[var]),
                "{who}: {var}"
            );
        }
        // Probes need no credential: /healthz and /readyz stay open (the gateway
        // tests show it on the real binary), so they carry no header.
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            assert!(
                c[probe]["httpGet"]["httpHeaders"].is_null(),
                "{who}: {probe} sends no credential"
            );
        }

        // The real binary accepts the role's environment with the files in place...
        let (local, _files) = with_stand_in_files(pod, c, env.clone());
        let config = flujo_config(role, &local);
        let auth = &config["auth"];
        for var in want.keys() {
            let key = setting(var);
            let name = key.trim_start_matches("auth.");
            assert!(auth.get(name).is_some(), "{who}: {key} in {config}");
        }
        assert_eq!(
            auth.get("audience").and_then(toml::Value::as_str),
            Some("flujo"),
            "{who}: tokens must be meant for flujo"
        );
        assert!(
            auth.get("issuer")
                .and_then(toml::Value::as_str)
                .is_some_and(|i| i.starts_with("https://")),
            "{who}: tokens must come from the identity provider: {auth}"
        );
        // ...with a per-client ingest limit (it applies where clients connect, on
        // the receivers; the shared settings give it to every role).
        let ingest = &config["limits"]["ingest"];
        let rps = ingest["per_client_rps"].as_integer().unwrap_or_default();
        let burst = ingest["burst"].as_integer().unwrap_or_default();
        assert!(
            rps > 0 && burst >= rps,
            "{who}: a per-client ingest limit: {ingest}"
        );

        // ...and refuses it, naming the setting, when a file of the Secret is
        // missing (the Secret lacks the key the setting names).
        for var in want.keys() {
            let (mut local, _files) = with_stand_in_files(pod, c, env.clone());
            let path = local[*var].clone();
            std::fs::remove_file(&path).expect("remove a stand-in file");
            let refused = flujo_config_refused(role, &local);
            assert!(
                refused.contains(&format!("key `{}`", setting(var))) && refused.contains(&path),
                "{who}: without {path}: {refused}"
            );
            // Pointing at the real mount (no Secret here) is refused the same way.
            local.insert(var.to_string(), env[*var].clone());
            let refused = flujo_config_refused(role, &local);
            assert!(
                refused.contains(&format!("key `{}`", setting(var))),
                "{who}: with the mount's path but no Secret: {refused}"
            );
        }
    }

    // The router checks the receivers' forward key against its api-keys.toml: both
    // come from the one Secret, so they are changed together.
    let receiver = container_env(r, flujo_container(r, "receiver"));
    let router = container_env(r, flujo_container(r, "router"));
    assert_eq!(
        mounted_secret_files(r, "receiver")[&receiver["FLUJO__AUTH__FORWARD_TOKEN_FILE"]].0,
        mounted_secret_files(r, "router")[&router["FLUJO__AUTH__API_KEYS_FILE"]].0,
        "{}: the forward key and the router's API keys come from the same Secret",
        r.overlay
    );

    // Prometheus scrapes /metrics without a credential (it stays open).
    let endpoint = &r.all("ServiceMonitor")[0]["spec"]["endpoints"][0];
    for field in ["authorization", "basicAuth", "bearerTokenSecret", "oauth2"] {
        assert!(
            endpoint[field].is_null(),
            "{}: the ServiceMonitor needs no {field}",
            r.overlay
        );
    }
}
