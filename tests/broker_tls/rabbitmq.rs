//! The bus at `amqps://`: the shared RabbitMQ (plain AMQP on 5672, left as it is)
//! behind a TLS-terminating proxy of the test's own, so flujo's real AMQPS client
//! (lapin over rustls) talks TLS to the proxy and AMQP to the real broker.

use super::support::{
    amqp_broker_addr, amqp_url, require_rabbitmq, sales_array, unique_name, via, Encoding,
    QueueCleanup, TestServer,
};
use super::tls::{TestPki, TlsProxy};
use super::{assert_validate, bounded, validate};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqps_bus_carries_events_to_the_kpis() {
    bounded("an_amqps_bus_carries_events_to_the_kpis", async {
        require_rabbitmq().await;
        let pki = TestPki::new();
        let plain = amqp_url();
        let proxy = TlsProxy::start(&pki, amqp_broker_addr(&plain).await, false).await;
        let amqps = via(&plain, proxy.addr).replacen("amqp://", "amqps://", 1);
        let sales_queue = unique_name("tls-sales");
        let tweets_queue = unique_name("tls-tweets");
        let _cleanup = QueueCleanup {
            url: plain.clone(),
            queues: vec![sales_queue.clone(), tweets_queue.clone()],
        };
        let ca = pki.ca.to_str().expect("utf-8 path");
        let envs = [
            ("FLUJO__RABBITMQ__CA_FILE", ca),
            ("FLUJO__RABBITMQ__SALES_QUEUE", sales_queue.as_str()),
            ("FLUJO__RABBITMQ__TWEETS_QUEUE", tweets_queue.as_str()),
        ];
        let shown = flujo::components::mask_url_password(&amqps);

        // validate: the TLS handshake succeeds with the CA, fails without it.
        let args = ["--bus", "rabbitmq", "--amqp", amqps.as_str()];
        let out = validate(&args, &envs);
        assert_validate(&out, 0, &["rabbitmq.url: ", &shown, "ok, queue"]);
        let out = validate(&args, &envs[1..]);
        assert_validate(&out, 69, &["rabbitmq.url: ", &shown, "certificate"]);

        let n = 30;
        let sales: Vec<Value> =
            serde_json::from_str(&sales_array("tls-amqp-", n, 4, 3.0)).expect("sales");
        let server = TestServer::start_with_args(&envs, &args);
        server.send_ok("/v1/sales", &sales, Encoding::Array).await;
        let kpis = server.wait_sales(n as u64).await;
        assert_eq!(kpis["total"]["revenue"], serde_json::json!(90.0), "{kpis}");
    })
    .await;
}
