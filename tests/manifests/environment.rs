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

/// Files standing in for the Secrets made outside the manifests (the operator's
/// [`PROVIDED_SECRETS`], Strimzi's [`STRIMZI_SECRETS`]), made here: real
/// certificates and keys (a CA and a certificate it signed, a JWKS, an API keys file
/// listing the forward key by its SHA-256), so flujo reads them as it would the
/// Secrets' files. Removed on drop.
pub(crate) struct StandIns {
    pki: TestPki,
    /// The JWKS (`jwks.json` of `flujo-auth`): one EC P-256 signing key.
    jwks: String,
    /// The receivers' forward key (`forward-key` of `flujo-auth`).
    forward_key: String,
    /// One directory per mount.
    dir: tempfile::TempDir,
}

impl StandIns {
    pub(crate) fn new() -> StandIns {
        let pki = TestPki::new("manifests");
        let signing = rcgen::KeyPair::generate().expect("an EC P-256 key");
        let key = jsonwebtoken::EncodingKey::from_ec_pem(signing.serialize_pem().as_bytes())
            .expect("the key as a JWT signing key");
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256)
                .expect("the key as a JWK");
        jwk.common.key_id = Some("idp-1".into());
        let jwks =
            serde_json::to_string(&jsonwebtoken::jwk::JwkSet { keys: vec![jwk] }).expect("JWKS");
        let forward_key: String = (0..24)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        StandIns {
            pki,
            jwks,
            forward_key,
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// What the key `key` of the Secret `secret` holds here.
    fn content(&self, secret: &str, key: &str) -> Vec<u8> {
        let read = |path: &Path| std::fs::read(path).expect("read a made file");
        match (secret, key) {
            ("flujo-listener-tls", "tls.crt") => read(&self.pki.cert),
            ("flujo-listener-tls", "tls.key") => read(&self.pki.key),
            ("flujo-listener-tls" | "flujo-cluster-ca-cert", "ca.crt") => read(&self.pki.ca),
            ("flujo-auth", "jwks.json") => self.jwks.clone().into_bytes(),
            ("flujo-auth", "forward-key") => format!("{}\n", self.forward_key).into_bytes(),
            // As the component's header shows: the forward key by its SHA-256, and a
            // client's key.
            ("flujo-auth", "api-keys.toml") => format!(
                "[[keys]]\nname = \"receivers\"\nsha256 = \"{}\"\nscopes = [\"ingest\"]\n\n\
                 [[keys]]\nname = \"shop\"\nkey = \"fk_live_0123456789abcdef\"\n\
                 scopes = [\"ingest\", \"query\"]\n",
                sha256_hex(&self.forward_key)
            )
            .into_bytes(),
            (_, "password") => b"stand-in-password".to_vec(),
            _ => format!("stand-in for {secret}/{key}\n").into_bytes(),
        }
    }

    /// The files of `volume` (a Secret volume) as the kubelet mounts them: each of
    /// its `items` at its path, or else every key of the Secret by its name; in a
    /// directory of their own, returned.
    fn mount(&self, volume: &Value) -> PathBuf {
        let secret = text(volume, "/secret/secretName");
        let keys = external_secret_keys(secret)
            .unwrap_or_else(|| panic!("Secret {secret} is not made outside the manifests"));
        let dir = self.dir.path().join(text(volume, "/name"));
        std::fs::create_dir_all(&dir).expect("a mount directory");
        for (key, path) in secret_files(volume, keys) {
            assert!(keys.contains(&key), "Secret {secret} has no key {key}");
            std::fs::write(dir.join(path), self.content(secret, key)).expect("a stand-in file");
        }
        dir
    }
}

pub(crate) fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Secret volume of `pod` that `mount` (a volumeMount) mounts, when that Secret
/// is made outside the manifests.
fn external_secret_volume<'a>(pod: &'a Value, mount: &Value) -> Option<&'a Value> {
    arr(&pod["volumes"]).iter().find(|v| {
        v["name"] == mount["name"]
            && v["secret"]["secretName"]
                .as_str()
                .is_some_and(|n| external_secret_keys(n).is_some())
    })
}

/// `env` with the files of the Secrets made outside the manifests that `container`
/// mounts stood in for by files made here ([`StandIns`]): every variable naming a
/// file under such a mount names the made file instead. The files live as long as
/// the returned [`StandIns`].
pub(crate) fn with_stand_in_files(
    pod: &Value,
    container: &Value,
    mut env: BTreeMap<String, String>,
) -> (BTreeMap<String, String>, StandIns) {
    let made = StandIns::new();
    for mount in arr(&container["volumeMounts"]) {
        let Some(volume) = external_secret_volume(pod, mount) else {
            continue;
        };
        let dir = made.mount(volume);
        let mount_path = format!("{}/", text(mount, "/mountPath").trim_end_matches('/'));
        for value in env.values_mut() {
            if let Some(file) = value.strip_prefix(&mount_path) {
                *value = dir.join(file).display().to_string();
            }
        }
    }
    (env, made)
}

/// The files that `role`'s container sees from Secrets made outside the manifests:
/// path → (Secret, key). A volume with `items` has those; one without, every key
/// the Secret holds.
pub(crate) fn mounted_secret_files(r: &Rendered, role: &str) -> BTreeMap<String, (String, String)> {
    let pod = &r.get("Deployment", role)["spec"]["template"]["spec"];
    let container = flujo_container(r, role);
    let mut files = BTreeMap::new();
    for mount in arr(&container["volumeMounts"]) {
        let Some(volume) = external_secret_volume(pod, mount) else {
            continue;
        };
        let dir = text(mount, "/mountPath").trim_end_matches('/');
        let secret = text(volume, "/secret/secretName");
        let keys = external_secret_keys(secret).unwrap_or_default();
        for (key, path) in secret_files(volume, keys) {
            files.insert(format!("{dir}/{path}"), (secret.to_owned(), key.to_owned()));
        }
    }
    files
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

/// `flujo config` run with exactly this environment must refuse it as a bad
/// configuration (exit status 78, as `flujo run` would); returns what it printed.
pub(crate) fn flujo_config_refused(role: &str, env: &BTreeMap<String, String>) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_flujo"))
        .arg("config")
        .env_clear()
        .envs(env)
        .current_dir(dir.path())
        .output()
        .expect("flujo config runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(78),
        "the {role}'s environment should be refused as a bad configuration: {stderr}"
    );
    stderr
}

pub(crate) fn flujo_container<'a>(r: &'a Rendered, role: &str) -> &'a Value {
    let deployment = r.get("Deployment", role);
    arr(&deployment["spec"]["template"]["spec"]["containers"])
        .iter()
        .find(|c| c["name"] == "flujo")
        .unwrap_or_else(|| panic!("Deployment {role} has no container named flujo"))
}

/// The (key, file name) pairs a Secret volume mounts: its `items`, or every key of
/// the Secret (`keys`) under its own name.
fn secret_files<'a>(volume: &'a Value, keys: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    let items = arr(&volume["secret"]["items"]);
    if items.is_empty() {
        keys.iter().map(|k| (*k, *k)).collect()
    } else {
        items
            .iter()
            .map(|i| (text(i, "/key"), text(i, "/path")))
            .collect()
    }
}
