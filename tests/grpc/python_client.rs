//! `python_client_from_the_proto`: a Python client generated from the `.proto`.

use super::*;

#[tokio::test]
async fn python_client_from_the_proto() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = python();
    if let Err(e) = Command::new(&python).arg("--version").output() {
        panic!(
            "cannot run the Python interpreter {} ({e}); run scripts/test.sh, which \
             makes .services/venv with the gRPC modules, or set FLUJO_TEST_PYTHON",
            python.display()
        );
    }
    let mut check = Command::new(&python);
    check.args([
        "-c",
        "import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2",
    ]);
    let out = tokio::task::spawn_blocking(move || output_within(check, Duration::from_secs(60)))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "{} cannot import the gRPC modules (grpcio, grpcio-tools, grpcio-health-checking); \
         run scripts/test.sh, which installs them into .services/venv, or set \
         FLUJO_TEST_PYTHON to an interpreter that has them.\n{}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );

    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut cmd = Command::new(&python);
    cmd.arg(root.join("tests/clients/grpc_client.py"))
        .arg(server.grpc_addr().to_string())
        .current_dir(root);
    let out = tokio::task::spawn_blocking(move || output_within(cmd, Duration::from_secs(120)))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python gRPC client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("python gRPC client: OK"),
        "{stdout}\n{stderr}"
    );

    // What the Python client sent (see the script) is exactly what is counted.
    let (mut sales, mut tweets) = (DedupTruth::default(), DedupTruth::default());
    let generated = stdout
        .lines()
        .find_map(|l| l.strip_prefix("generated id: "))
        .unwrap_or_else(|| panic!("the script prints the generated id: {stdout}"));
    assert_uuid_v7(generated);
    for s in [
        sale("py-s-1", "electronics", "PY-TV", 250.5, 2),
        sale(generated, "home", "PY-LAMP", 20.25, 1),
        sale("py-s-3", "beauty", "PY-SOAP", 3.5, 6),
        sale("py-st-1", "clothing", "PY-HAT", 15.0, 1),
    ] {
        sales.apply_sale(&s);
    }
    for t in [
        tweet("py-t-1", "Antigua", "sunny", 26.5, 55.0),
        tweet("py-t-2", "Zacapa", "stormy", 31.0, 70.0),
        tweet("py-st-3", "Antigua", "rainy", 19.0, 90.0),
    ] {
        tweets.apply_tweet(&t);
    }
    server.wait_idle().await;
    assert_sales_kpis(&sales, &server.wait_sales(sales.sales.count).await);
    assert_tweets_kpis(&tweets, &server.wait_tweets(tweets.tweets.count).await);
}
