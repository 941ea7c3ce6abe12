//! The gRPC and TCP listeners over TLS: the independent Python client, `flujo
//! loadgen --ca-file`, and the line protocol inside TLS.

use super::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread")]
async fn the_python_client_speaks_grpc_over_tls() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pki = TestPki::new("python");
    let server = tls_server(&pki, &[]);
    let mut cmd = std::process::Command::new(python());
    cmd.arg(root.join("tests/clients/grpc_client.py"))
        .arg(server.grpc_addr().to_string())
        .arg("--ca-file")
        .arg(&pki.ca)
        .current_dir(root);
    let out = tokio::task::spawn_blocking(move || output_within(cmd, COMMAND_TIMEOUT))
        .await
        .expect("join");
    assert!(
        out.status.success() && stdout(&out).contains("python gRPC client: OK"),
        "the Python gRPC client over TLS failed ({}); it needs grpcio, grpcio-tools and \
         grpcio-health-checking (scripts/test.sh, or FLUJO_TEST_PYTHON):\n{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    // What the script sent and was acknowledged is what the query API counts
    // (tests/grpc's python_client_from_the_proto checks every value).
    server.wait_idle().await;
    server.wait_sales(4).await;
    server.wait_tweets(3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_verifies_over_grpcs_and_https_with_its_ca_file() {
    let pki = TestPki::new("loadgen");
    let server = tls_server(&pki, &[]);
    let query = format!("https://127.0.0.1:{}", server.addr.port());
    let grpcs = format!("grpcs://127.0.0.1:{}", server.grpc_addr().port());
    let ca = arg(&pki.ca);
    for target in [&grpcs, &query] {
        let out = flujo(
            &[
                "loadgen",
                "--target",
                target,
                "--query",
                &query,
                "--ca-file",
                &ca,
                "--rate",
                "300",
                "--duration",
                "1",
                "--batch",
                "5",
                "--verify",
                "--json",
            ],
            &[],
        );
        assert_code(&out, 0, target);
        let report: serde_json::Value =
            serde_json::from_str(stdout(&out).trim()).expect("one JSON report");
        assert_eq!(report["verify"]["ok"], true, "{target}: {report}");
        assert_eq!(report["errors"], 0, "{target}: {report}");
        assert!(report["events"].as_u64() > Some(100), "{target}: {report}");
    }

    // Without the CA (the system's roots do not know it) nothing gets through.
    let out = flujo(
        &[
            "loadgen",
            "--target",
            &grpcs,
            "--rate",
            "20",
            "--duration",
            "0.2",
            "--timeout",
            "2",
        ],
        &[],
    );
    assert_code(&out, 1, "grpcs without the CA");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_line_protocol_runs_inside_tls() {
    let pki = TestPki::new("lines");
    let server = tls_server(&pki, &[]);
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&pki.ca).expect("CA file") {
        roots
            .add(cert.expect("CA certificate"))
            .expect("trust anchor");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.tcp_addr())
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("a name");
    let tls = tokio::time::timeout(Duration::from_secs(20), connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let mut lines = BufReader::new(tls);
    let sale = r#"{"kind":"sale","id":"tcp-tls-1","category":"home","product_id":"T1","price":4.5,"quantity":2}"#;
    lines
        .get_mut()
        .write_all(format!("ping\n{sale}\n").as_bytes())
        .await
        .expect("write");
    let mut answers = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), lines.read_line(&mut line))
            .await
            .expect("an answer in time")
            .expect("read");
        answers.push(line.trim_end().to_owned());
    }
    assert_eq!(answers, ["pong", "ok tcp-tls-1"]);
    server.wait_sales(1).await;

    // In plain text the port answers nothing, not even `pong`.
    let mut plain = tokio::net::TcpStream::connect(server.tcp_addr())
        .await
        .expect("connect");
    plain.write_all(b"ping\n").await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), plain.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    assert!(
        !String::from_utf8_lossy(&answer).contains("pong"),
        "{answer:?}"
    );
}
