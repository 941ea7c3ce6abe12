//! Graceful shutdown: SIGTERM under load answers what is in flight, applies every
//! accepted event, exits 0 within the deadline, and then refuses connections.

mod support;

use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// What one request of the load ended as.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// An HTTP answer with this status.
    Status(u16),
    /// The connection was refused (the listener is closed).
    Refused,
    /// The connection closed or reset before an answer (a keep-alive connection the
    /// server shut down between two requests).
    Closed,
    /// Any other client error.
    Other(String),
}

fn classify(result: Result<reqwest::Response, reqwest::Error>) -> Outcome {
    match result {
        Ok(resp) => Outcome::Status(resp.status().as_u16()),
        Err(e) if e.is_connect() => Outcome::Refused,
        Err(e) if e.is_request() || e.is_body() => Outcome::Closed,
        Err(e) if e.is_timeout() => Outcome::Other(format!("timeout: {e}")),
        Err(e) => Outcome::Other(e.to_string()),
    }
}

/// A body of 100 sales of `task`'s `round`.
fn batch(task: usize, round: usize) -> String {
    sales_array(&format!("{task}-{round}-"), 100, 10, 1.0)
}

#[tokio::test]
async fn sigterm_under_load_drains_and_exits_cleanly() {
    let mut server = TestServer::start(&[
        ("FLUJO__SHUTDOWN__DEADLINE_SECS", "10"),
        ("FLUJO__LOG__FORMAT", "json"),
    ]);
    let url = server.url("/v1/sales");
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(BTreeMap::<Outcome, usize>::new()));
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let (url, stop, outcomes) = (url.clone(), stop.clone(), outcomes.clone());
            // One client per task: its own keep-alive connection, like separate clients.
            let client = http_client();
            tokio::spawn(async move {
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    let result = client
                        .post(&url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(batch(task, round))
                        .send()
                        .await;
                    let outcome = classify(result);
                    let refused = outcome == Outcome::Refused;
                    *outcomes
                        .lock()
                        .expect("outcomes")
                        .entry(outcome)
                        .or_default() += 1;
                    round += 1;
                    if refused {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();

    // Let the load run, then terminate the server while it is busy.
    let busy = wait_until(Duration::from_secs(30), || async {
        outcomes
            .lock()
            .expect("outcomes")
            .get(&Outcome::Status(202))
            .copied()
            .unwrap_or(0)
            >= 100
    })
    .await;
    assert!(
        busy,
        "the load never got going: {:?}",
        outcomes.lock().expect("outcomes")
    );
    server.sigterm();

    let status = server.wait_exit(Duration::from_secs(15)).await;
    // Keep the load going briefly after exit, so connections to the closed port are tried.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(70), t)
            .await
            .expect("a load task hung")
            .expect("load task");
    }
    let outcomes = outcomes.lock().expect("outcomes").clone();
    let stderr = server.stderr();
    eprintln!("outcomes after SIGTERM under load: {outcomes:?}");

    let status = status
        .unwrap_or_else(|| panic!("flujo did not exit within 15 s of SIGTERM; stderr:\n{stderr}"));
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");

    for (outcome, n) in &outcomes {
        match outcome {
            Outcome::Status(202) | Outcome::Status(503) | Outcome::Refused | Outcome::Closed => {}
            other => panic!("{n} requests ended as {other:?}; all: {outcomes:?}"),
        }
    }
    assert!(
        outcomes.contains_key(&Outcome::Refused),
        "after exit, connections must be refused: {outcomes:?}"
    );

    // "drained" is logged once every admitted event was applied.
    let drained = stderr.lines().any(|l| l.contains("drained"));
    assert!(drained, "no drain log line; stderr:\n{stderr}");
    assert!(
        !stderr.contains("deadline passed"),
        "the drain must finish within the deadline:\n{stderr}"
    );

    // New connections are refused once the process is gone, on every port.
    for (name, addr) in &server.listening {
        let err = tokio::net::TcpStream::connect(addr)
            .await
            .expect_err("the port must be closed after exit");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{name} {addr}: {err}"
        );
    }
}

#[tokio::test]
async fn sigterm_when_idle_exits_zero_at_once() {
    let mut server = TestServer::start(&[("FLUJO__SHUTDOWN__DEADLINE_SECS", "10")]);
    let one = json!({"category": "home", "product_id": "P", "price": 1.0, "quantity": 1});
    server.send_ok("/v1/sales", &[one], Encoding::Object).await;
    server.wait_sales(1).await;
    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no exit within 15 s; stderr:\n{}", server.stderr()));
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        server.stderr()
    );
    let resp = http_client().get(server.url("/healthz")).send().await;
    assert!(
        resp.as_ref().is_err_and(|e| e.is_connect()),
        "after exit /healthz must be refused, got {resp:?}"
    );
}
