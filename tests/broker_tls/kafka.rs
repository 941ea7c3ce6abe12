//! Kafka over TLS and SASL. tansu (the test broker) authenticates SASL SCRAM
//! (`--authentication`, credentials in its storage) but does not speak TLS, so each
//! test runs a private tansu that advertises the port of a TLS-terminating proxy
//! in front of it: every connection librdkafka makes, bootstrap and broker, is TLS
//! to the proxy, verified against the test CA.

use super::support::{sales_array, unique_name, Encoding, TestServer};
use super::tls::{TestPki, TlsProxy};
use super::{
    assert_validate, binary, bounded, free_port, services_hint, spawn_logged, streams, validate,
    wait_listening, Killed,
};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The SCRAM user the tests create.
const USER: &str = "flujo";
/// Its password.
const PASSWORD: &str = "kafka-s3cret";

fn tansu_bin() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    binary(
        "FLUJO_TEST_TANSU",
        "tansu",
        &[home.join(".cargo/bin/tansu")],
        &services_hint(),
    )
}

/// A private tansu broker (sqlite storage in a temporary directory) listening on
/// a free port and advertising `advertised`; killed when dropped.
struct Tansu {
    port: u16,
    _process: Killed,
}

impl Tansu {
    fn start(dir: &Path, advertised: u16, authentication: bool) -> Tansu {
        let port = free_port();
        let mut cmd = Command::new(tansu_bin());
        cmd.current_dir(dir)
            .arg("broker")
            .args(["--storage-engine", "sqlite://tansu.db"])
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{advertised}"))
            .arg("--silent");
        if authentication {
            cmd.arg("--authentication");
        }
        let log = dir.join(format!("tansu-{port}.log"));
        let mut child = spawn_logged(cmd, &log);
        wait_listening(port, "tansu", &mut child, &log);
        Tansu {
            port,
            _process: Killed(child),
        }
    }

    /// Creates the SCRAM-SHA-512 user [`USER`] in the storage in `dir`: through a
    /// broker without authentication (tansu's `user create` does not log in), which
    /// is stopped again.
    fn create_user(dir: &Path) {
        let setup = Tansu::start(dir, free_port(), false);
        let out = super::support::output_within(
            {
                let mut cmd = Command::new(tansu_bin());
                cmd.current_dir(dir)
                    .args(["user", "create", "--broker"])
                    .arg(format!("tcp://127.0.0.1:{}", setup.port))
                    .args(["--mechanism", "scram512", USER, PASSWORD]);
                cmd
            },
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "tansu user create: {}", streams(&out));
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// A broker behind a TLS proxy that it advertises.
struct SecuredKafka {
    proxy: TlsProxy,
    _tansu: Tansu,
    _dir: tempfile::TempDir,
}

impl SecuredKafka {
    /// With SASL SCRAM (`--authentication`) or without; with `require_client_cert`
    /// the proxy lets in only clients with a certificate of the test CA.
    async fn start(pki: &TestPki, authentication: bool, require_client_cert: bool) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        if authentication {
            Tansu::create_user(dir.path());
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let advertised = listener.local_addr().expect("proxy address").port();
        let tansu = Tansu::start(dir.path(), advertised, authentication);
        let proxy = TlsProxy::serve(listener, pki, tansu.addr(), require_client_cert);
        SecuredKafka {
            proxy,
            _tansu: tansu,
            _dir: dir,
        }
    }

    fn brokers(&self) -> String {
        self.proxy.addr.to_string()
    }
}

/// Topics no other test uses.
fn topic_envs(label: &str) -> [(&'static str, String); 2] {
    [
        (
            "FLUJO__KAFKA__SALES_TOPIC",
            unique_name(&format!("{label}-sales")),
        ),
        (
            "FLUJO__KAFKA__TWEETS_TOPIC",
            unique_name(&format!("{label}-tweets")),
        ),
    ]
}

/// Sends `n` sales through `server` and waits for the KPIs to count them.
async fn events_in_kpis_out(server: &TestServer, label: &str, n: usize) {
    let sales: Vec<Value> = serde_json::from_str(&sales_array(label, n, 5, 4.0)).expect("sales");
    server.send_ok("/v1/sales", &sales, Encoding::Array).await;
    let kpis = server.wait_sales(n as u64).await;
    assert_eq!(
        kpis["total"]["revenue"],
        serde_json::json!(4.0 * n as f64),
        "{kpis}"
    );
}

/// `envs` and `kafka.sasl_password_file` = `file`.
fn with_password<'a>(envs: &[(&'a str, &'a str)], file: &'a Path) -> Vec<(&'a str, &'a str)> {
    let mut all = envs.to_vec();
    all.push((
        "FLUJO__KAFKA__SASL_PASSWORD_FILE",
        file.to_str().expect("utf-8 path"),
    ));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_with_scram_carries_events_to_the_kpis() {
    bounded("sasl_ssl_with_scram_carries_events_to_the_kpis", async {
        let pki = TestPki::new();
        let kafka = SecuredKafka::start(&pki, true, false).await;
        let secrets = tempfile::tempdir().expect("temporary directory");
        let password_file = secrets.path().join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password file");
        let wrong_file = secrets.path().join("wrong");
        std::fs::write(&wrong_file, "not-the-password").expect("password file");
        let brokers = kafka.brokers();
        let topics = topic_envs("sasl");
        let mut envs: Vec<(&str, &str)> = vec![
            ("FLUJO__KAFKA__SECURITY_PROTOCOL", "SASL_SSL"),
            ("FLUJO__KAFKA__SSL_CA_FILE", pki.ca.to_str().expect("utf-8")),
            ("FLUJO__KAFKA__SASL_MECHANISM", "SCRAM-SHA-512"),
            ("FLUJO__KAFKA__SASL_USERNAME", USER),
            // A librdkafka property from the environment, dots and all.
            ("FLUJO__KAFKA__OPTIONS__SOCKET.KEEPALIVE.ENABLE", "true"),
        ];
        envs.extend(topics.iter().map(|(k, v)| (*k, v.as_str())));
        let args = ["--bus", "kafka", "--kafka", brokers.as_str()];

        let out = validate(&args, &with_password(&envs, &password_file));
        assert_validate(&out, 0, &["kafka.brokers: ", &brokers, "ok, 1 broker"]);
        let out = validate(&args, &with_password(&envs, &wrong_file));
        assert_validate(
            &out,
            69,
            &["kafka.brokers: ", &brokers, "SASL authentication error"],
        );

        let server = TestServer::start_with_args(&with_password(&envs, &password_file), &args);
        events_in_kpis_out(&server, "tls-sasl-", 50).await;
        let stderr = server.stderr();
        assert!(
            !stderr.contains(PASSWORD),
            "the password must never be logged:\n{stderr}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_with_a_client_certificate_carries_events_to_the_kpis() {
    bounded(
        "ssl_with_a_client_certificate_carries_events_to_the_kpis",
        async {
            let pki = TestPki::new();
            let kafka = SecuredKafka::start(&pki, false, true).await;
            let brokers = kafka.brokers();
            let topics = topic_envs("mtls");
            let mut envs: Vec<(&str, &str)> = vec![
                ("FLUJO__KAFKA__SECURITY_PROTOCOL", "ssl"),
                ("FLUJO__KAFKA__SSL_CA_FILE", pki.ca.to_str().expect("utf-8")),
            ];
            envs.extend(topics.iter().map(|(k, v)| (*k, v.as_str())));
            let args = ["--bus", "kafka", "--kafka", brokers.as_str()];

            // Without a client certificate the proxy refuses the handshake.
            let out = validate(&args, &envs);
            assert_validate(&out, 69, &["kafka.brokers: ", &brokers]);

            envs.push((
                "FLUJO__KAFKA__SSL_CERTIFICATE_FILE",
                pki.client.cert.to_str().expect("utf-8"),
            ));
            envs.push((
                "FLUJO__KAFKA__SSL_KEY_FILE",
                pki.client.key.to_str().expect("utf-8"),
            ));
            let out = validate(&args, &envs);
            assert_validate(&out, 0, &["kafka.brokers: ", &brokers, "ok, 1 broker"]);

            let server = TestServer::start_with_args(&envs, &args);
            events_in_kpis_out(&server, "tls-mtls-", 50).await;
        },
    )
    .await;
}

#[test]
fn kafka_options_reach_librdkafka_and_owned_keys_are_refused() {
    // librdkafka itself checks the value, at load: 78 naming the property.
    let out = validate(
        &["--bus", "kafka"],
        &[("FLUJO__KAFKA__OPTIONS__SOCKET.TIMEOUT.MS", "soon")],
    );
    assert_validate(&out, 78, &["kafka.options", "socket.timeout.ms"]);
    let out = validate(
        &["--bus", "kafka"],
        &[("FLUJO__KAFKA__OPTIONS__GROUP.ID", "other")],
    );
    assert_validate(&out, 78, &["kafka.options", "group.id", "kafka.group_id"]);
    // A combination that cannot work names the key.
    let out = validate(
        &["--bus", "kafka"],
        &[("FLUJO__KAFKA__SECURITY_PROTOCOL", "sasl_ssl")],
    );
    assert_validate(&out, 78, &["kafka.sasl_mechanism"]);
}

#[test]
fn flujo_config_masks_secret_options() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("flujo.toml");
    std::fs::write(
        &file,
        "[kafka]\nsecurity_protocol = \"ssl\"\n[kafka.options]\n\
         \"ssl.key.password\" = \"hunter2\"\nsocket.keepalive.enable = true\n",
    )
    .expect("config file");
    let mut cmd = super::support::flujo_command(dir.path());
    cmd.arg("config");
    let out = super::support::output_within(cmd, super::COMMAND_TIMEOUT);
    let text = streams(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("\"ssl.key.password\" = \"****\""), "{text}");
    assert!(
        text.contains("\"socket.keepalive.enable\" = \"true\""),
        "{text}"
    );
    assert!(text.contains("security_protocol = \"ssl\""), "{text}");
}
