//! A receiver forwards to a router in another process over gRPC with TLS.

use super::*;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_forwards_to_its_router_over_tls() {
    let pki = TestPki::new("router");
    // Router and consumer in one process (the memory bus joins them), its gRPC
    // port over TLS; queried over plain HTTP.
    let mut env = pki.listener_env("grpc");
    env.push(("FLUJO__QUERY__CACHE_TTL_MS".into(), "0".into()));
    let router = TestServer::start_with_args(&borrowed(&env), &["--role", "router,consumer"]);
    let router_url = format!("grpcs://localhost:{}", router.grpc_addr().port());
    let ca = arg(&pki.ca);
    let receiver = TestServer::start_with_args(
        &[],
        &[
            "--role",
            "receiver",
            "--router-url",
            &router_url,
            "--router-ca-file",
            &ca,
        ],
    );

    let sales = [
        sale("fwd-tls-1", "electronics", "F-TV", 300.0, 1),
        sale("fwd-tls-2", "clothing", "F-HAT", 12.0, 3),
    ];
    let events: Vec<serde_json::Value> = sales
        .iter()
        .map(|s| sale_json(s, SaleForm::English))
        .collect();
    // Durable by default for a receiver that forwards: the 202 is the router's.
    receiver
        .send_ok("/v1/sales", &events, Encoding::Array)
        .await;
    let mut truth = Truth::default();
    for s in &sales {
        truth.add_sale(s);
    }
    assert_sales_kpis(&truth, &router.wait_sales(2).await);
    let resp = receiver.get("/readyz").await.expect("readyz");
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the router answers health over TLS"
    );

    // `flujo validate` reaches the router over TLS with the CA, and names the
    // certificate it cannot trust without it.
    let args = [
        "validate",
        "--role",
        "receiver",
        "--router-url",
        &router_url,
    ];
    let out = flujo(&args, &[("FLUJO__ROUTER_CA_FILE", &ca)]);
    assert_code(&out, 0, "validate with the CA");
    assert!(
        stdout(&out).contains(&format!("router_url: {router_url}: ok")),
        "{}",
        stdout(&out)
    );
    let stranger = TestPki::new("stranger");
    let out = flujo(&args, &[("FLUJO__ROUTER_CA_FILE", &arg(&stranger.ca))]);
    assert_code(&out, 69, "validate with another CA");
    assert!(stderr(&out).contains("router_url"), "{}", stderr(&out));

    // A CA file for a plain router URL is a mistake worth naming.
    let plain = format!("grpc://127.0.0.1:{}", router.grpc_addr().port());
    let out = flujo(
        &["validate", "--role", "receiver", "--router-url", &plain],
        &[("FLUJO__ROUTER_CA_FILE", &ca)],
    );
    assert_code(&out, 78, "a CA file with grpc://");
    assert!(
        stderr(&out).contains("key `router_ca_file`"),
        "{}",
        stderr(&out)
    );
}
