//! The environment of a container, resolved as the kubelet does it (Secrets,
//! ConfigMaps, `$(VAR)` expansion), and the flujo configuration it gives each role.

use super::*;

pub(crate) fn base64_decode(s: &str) -> Vec<u8> {
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

/// The `data` of the rendered `kind` object `name` (referred to, so it must exist),
/// each value read with `value`.
fn data_of(
    r: &Rendered,
    kind: &str,
    name: &str,
    value: impl Fn(&str) -> String,
) -> BTreeMap<String, String> {
    let object = r
        .by_ref(kind, name)
        .unwrap_or_else(|| panic!("{}: {kind} {name} is referred to but missing", r.overlay));
    let data = object["data"].as_object().into_iter().flatten();
    data.map(|(k, v)| (k.clone(), value(v.as_str().unwrap_or_default())))
        .collect()
}

/// The decoded data of a rendered Secret.
pub(crate) fn secret_data(r: &Rendered, name: &str) -> BTreeMap<String, String> {
    data_of(r, "Secret", name, |v| {
        String::from_utf8(base64_decode(v)).expect("UTF-8 secret")
    })
}

/// The data of a rendered ConfigMap.
pub(crate) fn configmap_data(r: &Rendered, name: &str) -> BTreeMap<String, String> {
    data_of(r, "ConfigMap", name, str::to_owned)
}

/// The value a `secretKeyRef` or `configMapKeyRef` refers to: its key in the data
/// (`data` of a name) of the `kind` object it names.
fn referred_value(
    key_ref: &serde_json::Map<String, Value>,
    kind: &str,
    data: impl Fn(&str) -> BTreeMap<String, String>,
) -> String {
    let name = key_ref["name"].as_str().unwrap_or_default();
    let key = key_ref["key"].as_str().unwrap_or_default();
    data(name)
        .remove(key)
        .unwrap_or_else(|| panic!("{kind} {name} has no key {key}"))
}

/// `$(NAME)` expanded from the variables defined before, `$$` as `$`, as the kubelet
/// does; an unknown reference is left as it is (and flujo would then see it).
pub(crate) fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
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
pub(crate) fn container_env(r: &Rendered, container: &Value) -> BTreeMap<String, String> {
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
            referred_value(key_ref, "Secret", |name| secret_data(r, name))
        } else if let Some(key_ref) = var["valueFrom"]["configMapKeyRef"].as_object() {
            referred_value(key_ref, "ConfigMap", |name| configmap_data(r, name))
        } else {
            continue; // fieldRef and the like: not used by flujo's configuration
        };
        env.insert(name, value);
    }
    env
}

/// Files the operator provides (a Secret of [`PROVIDED_SECRETS`] mounted in
/// `container`), stood in for by certificates made here: every variable naming a
/// file under such a mount names the made file of the same name instead. The
/// files live as long as the returned [`TestPki`].
pub(crate) fn with_provided_files(
    pod: &Value,
    container: &Value,
    mut env: BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Option<TestPki>) {
    let mut made = None;
    for mount in arr(&container["volumeMounts"]) {
        let provided = arr(&pod["volumes"]).iter().any(|v| {
            v["name"] == mount["name"]
                && v["secret"]["secretName"]
                    .as_str()
                    .is_some_and(|n| PROVIDED_SECRETS.contains(&n))
        });
        if !provided {
            continue;
        }
        let pki: &TestPki = made.get_or_insert_with(|| {
            let pki = TestPki::new("manifests");
            // The names a kubernetes.io/tls Secret (with its CA) has.
            for (name, from) in [
                ("tls.crt", &pki.cert),
                ("tls.key", &pki.key),
                ("ca.crt", &pki.ca),
            ] {
                std::fs::copy(from, pki.dir.path().join(name)).expect("copy a made file");
            }
            pki
        });
        let mount_path = format!("{}/", text(mount, "/mountPath").trim_end_matches('/'));
        for value in env.values_mut() {
            if let Some(file) = value.strip_prefix(&mount_path) {
                *value = pki.dir.path().join(file).display().to_string();
            }
        }
    }
    (env, made)
}

/// `flujo config` run with exactly this environment: the configuration the role
/// would start with, as TOML.
pub(crate) fn flujo_config(role: &str, env: &BTreeMap<String, String>) -> toml::Value {
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
        "the {role}'s environment is refused by flujo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("flujo config prints TOML")
}

pub(crate) fn flujo_container<'a>(r: &'a Rendered, role: &str) -> &'a Value {
    let deployment = r.get("Deployment", role);
    arr(&deployment["spec"]["template"]["spec"]["containers"])
        .iter()
        .find(|c| c["name"] == "flujo")
        .unwrap_or_else(|| panic!("Deployment {role} has no container named flujo"))
}
