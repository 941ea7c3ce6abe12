//! `flujo loadgen` picks its transport from the target's scheme.

use super::support::{metric_value, TestServer};
use super::{assert_code, flujo, stderr};

/// Events the server counted as received over `transport`.
async fn received(server: &TestServer, transport: &str) -> f64 {
    let text = server.metrics().await;
    metric_value(
        &text,
        "flujo_events_received_total",
        &[("kind", "sale"), ("transport", transport)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_scheme_picks_the_transport() {
    let server = TestServer::start(&[]);
    for (target, transport) in [
        (format!("tcp://{}", server.tcp_addr()), "tcp"),
        (format!("grpc://{}", server.grpc_addr()), "grpc"),
    ] {
        let out = tokio::task::block_in_place(|| {
            flujo(
                &[
                    "loadgen",
                    "--target",
                    &target,
                    "--kind",
                    "sales",
                    "--rate",
                    "200",
                    "--duration",
                    "0.5",
                    "--batch",
                    "5",
                ],
                &[],
            )
        });
        assert_code(&out, 0, &target);
        assert!(
            stderr(&out).contains(&format!("transport={transport}")),
            "{}",
            stderr(&out)
        );
        assert!(
            received(&server, transport).await >= 5.0,
            "{target}: the server counted no sale over {transport}"
        );
    }
    assert_eq!(
        received(&server, "http").await,
        0.0,
        "nothing went over HTTP"
    );
}

#[test]
fn a_transport_that_contradicts_the_target_is_a_usage_error() {
    let out = flujo(
        &[
            "loadgen",
            "--target",
            "tcp://127.0.0.1:1",
            "--transport",
            "grpc",
        ],
        &[],
    );
    assert_code(&out, 2, "contradiction");
    assert!(stderr(&out).contains("contradicts"), "{}", stderr(&out));
    let out = flujo(&["loadgen", "--target", "ftp://127.0.0.1:1"], &[]);
    assert_code(&out, 2, "unknown scheme");
    assert!(stderr(&out).contains("tcp://"), "{}", stderr(&out));
}
