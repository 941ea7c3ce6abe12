//! A receiver-only process authenticates its forward to a router that requires
//! credentials (`auth.forward_token_file`); without the token the router refuses
//! the batch and the receiver's client gets a 503 naming why.

use super::*;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_forwards_with_its_token() {
    require_kafka(Duration::from_secs(15)).await;
    let keys = Keys::new();
    let topics = vec![
        ("FLUJO__KAFKA__SALES_TOPIC", unique_name("gateway-sales")),
        ("FLUJO__KAFKA__TWEETS_TOPIC", unique_name("gateway-tweets")),
        ("FLUJO__KAFKA__GROUP_ID", unique_name("gateway")),
    ];
    let mut router_env = keys.env();
    router_env.extend(topics.clone());
    let brokers = kafka_brokers();
    let router_env: Vec<(&str, &str)> = router_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let router = TestServer::start_with_args(
        &router_env,
        &[
            "--role", "router", "--bus", "kafka", "--kafka", &brokers, "--ack", "durable",
        ],
    );
    let router_url = format!("grpc://{}", router.listener("grpc"));
    let token_file = keys.dir.path().join("forward.token");
    std::fs::write(
        &token_file,
        keys.hs(&claims("receiver-1", "ingest", 3600)) + "\n",
    )
    .expect("write the token");
    let token_path = token_file.display().to_string();
    let receiver_args = [
        "--role",
        "receiver",
        "--router-url",
        &router_url,
        "--ack",
        "durable",
    ];

    let with = TestServer::start_with_args(
        &[("FLUJO__AUTH__FORWARD_TOKEN_FILE", &token_path)],
        &receiver_args,
    );
    let without = TestServer::start_with_args(&[], &receiver_args);

    let resp = post_sale(&with, &[], 1).await;
    let status = resp.status();
    assert_eq!(status, StatusCode::ACCEPTED, "{:?}", resp.text().await);

    let resp = post_sale(&without, &[], 2).await;
    let status = resp.status();
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("UNAUTHENTICATED"),
        "{body}"
    );
    assert!(!with.stderr().contains(SECRET), "no secret in the logs");
}
