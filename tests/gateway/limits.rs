//! Per-client rate limits: a flooding client is refused at once, another is not
//! slowed, on HTTP, gRPC and TCP; without authentication, by peer address.

use super::*;
use flujo_proto::v1::{event, Event};
use futures::future::join_all;
use futures::StreamExt;
use reqwest::StatusCode;
use std::time::Instant;
use tonic::Code;

/// Sustained rate and burst of the tests' ingest limit.
const RPS: &str = "5";
const BURST: &str = "5";

/// Latencies of `n` requests of `who`, one after another, `gap` apart; each must
/// be a 202.
async fn paced(server: &TestServer, auth: &str, n: usize, gap: Duration) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let resp = post_sale(server, &[("authorization", auth)], i).await;
        took.push(started.elapsed());
        let status = resp.status();
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "the quiet client, request {i}: {:?}",
            resp.text().await
        );
        tokio::time::sleep(gap).await;
    }
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_client_gets_429_and_another_is_not_slowed() {
    let keys = Keys::new();
    let mut env = keys.env();
    env.push(("FLUJO__LIMITS__INGEST__PER_CLIENT_RPS", RPS.into()));
    env.push(("FLUJO__LIMITS__INGEST__BURST", BURST.into()));
    let server = start(&env);
    let flood = bearer(&keys.hs(&claims("flood", "ingest", 600)));
    let quiet = bearer(&keys.hs(&claims("quiet", "ingest", 600)));

    // The quiet client alone, at 2.5 requests a second (under its 5).
    let unloaded = median(paced(&server, &quiet, 10, Duration::from_millis(400)).await);

    // The flood: 4 connections sending back to back for 3 s; meanwhile the quiet
    // client keeps its pace.
    let flooding = async {
        let deadline = Instant::now() + Duration::from_secs(3);
        let workers = (0..4).map(|w| {
            let flood = flood.clone();
            let server = &server;
            async move {
                let mut answers: Vec<(StatusCode, reqwest::header::HeaderMap)> = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let resp =
                        post_sale(server, &[("authorization", &flood)], w * 100_000 + i).await;
                    answers.push((resp.status(), resp.headers().clone()));
                    i += 1;
                }
                answers
            }
        });
        join_all(workers).await.concat()
    };
    let (answers, loaded) = tokio::join!(flooding, async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        paced(&server, &quiet, 6, Duration::from_millis(400)).await
    });

    let accepted = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    let limited: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        !limited.is_empty(),
        "the flood was never limited ({} answers)",
        answers.len()
    );
    assert_eq!(accepted + limited.len(), answers.len(), "only 202 and 429");
    // 3 s at 5/s plus the burst of 5, with a second of slack for the edges.
    assert!(accepted <= 5 + 5 * 4, "{accepted} of the flood accepted");
    let (_, headers) = limited[0];
    let header = |name: &str| {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("429 without {name}: {headers:?}"))
            .to_str()
            .expect("text")
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert!(
        (1..=1).contains(&header("retry-after")),
        "Retry-After of a 5/s limit"
    );
    assert_eq!(header("ratelimit-limit"), 5);
    assert_eq!(header("ratelimit-remaining"), 0);
    assert_eq!(header("ratelimit-reset"), header("retry-after"));

    // Not slowed: the quiet client's median under the flood stays within a generous
    // multiple of its own unloaded median (the flood shares the 2 CPUs, nothing else).
    let loaded_median = median(loaded.clone());
    let bound = unloaded * 10 + Duration::from_millis(100);
    assert!(
        loaded_median <= bound,
        "quiet client slowed by the flood: median {loaded_median:?} under load vs {unloaded:?} alone (bound {bound:?}); all: {loaded:?}"
    );

    let metrics = server.metrics().await;
    let refused = metric_value(
        &metrics,
        "flujo_requests_limited_total",
        &[("transport", "http"), ("scope", "ingest")],
    );
    assert_eq!(refused, Some(limited.len() as f64), "every 429 counted");
    assert!(
        metrics.contains("flujo_rate_limit_clients{scope=\"ingest\"}"),
        "gauge exported"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "flujo_requests_limited_total",
            &[("transport", "tcp"), ("scope", "ingest")]
        ),
        Some(0.0),
        "exported at zero"
    );

    // ---- gRPC: a burst over the limit, another client still served ----
    let mut grpc = grpc_client(&server).await;
    let grpc_flood = bearer(&keys.hs(&claims("grpc-flood", "ingest", 600)));
    let mut exhausted = None;
    for _ in 0..20 {
        match grpc_sale(&mut grpc, &[("authorization", &grpc_flood)]).await {
            Ok(_) => {}
            Err(status) => {
                exhausted = Some(status);
                break;
            }
        }
    }
    let status = exhausted.expect("20 calls at once never hit a 5/s limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry: u64 = status
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after metadata");
    assert!(retry >= 1, "{retry}");
    let other = bearer(&keys.hs(&claims("grpc-quiet", "ingest", 600)));
    grpc_sale(&mut grpc, &[("authorization", &other)])
        .await
        .expect("another client is served");
    // On a stream each event counts: 20 at once from a fresh client, about 5 pass.
    let streamer = bearer(&keys.hs(&claims("grpc-streamer", "ingest", 600)));
    let events: Vec<Event> = (0..20)
        .map(|i| Event {
            event: Some(event::Event::Sale(Sale {
                category: 1,
                product_id: format!("S{i}"),
                price: 1.0,
                quantity: 1,
                ..Sale::default()
            })),
        })
        .collect();
    let mut req = Request::new(futures::stream::iter(events));
    req.metadata_mut()
        .insert("authorization", streamer.parse().expect("metadata"));
    let acks: Vec<Ack> = grpc
        .stream(req)
        .await
        .expect("stream opens")
        .into_inner()
        .map(|a| a.expect("an Ack"))
        .collect()
        .await;
    assert_eq!(acks.len(), 20, "{acks:?}");
    let passed = acks.iter().filter(|a| a.accepted == 1).count();
    let refused = acks
        .iter()
        .filter(|a| a.code == "RESOURCE_EXHAUSTED" && a.error.contains("rate limit"))
        .count();
    assert!(
        passed >= 5 && refused >= 10 && passed + refused == 20,
        "{acks:?}"
    );

    // ---- TCP: pipelined lines over the limit answered `err busy` ----
    let mut tcp = LineClient::connect(server.tcp_addr()).await;
    let tcp_flood = keys.hs(&claims("tcp-flood", "ingest", 600));
    assert_eq!(tcp.request(&format!("auth {tcp_flood}")).await, "ok auth");
    let lines: String = (0..20).map(|i| sale_line(i) + "\n").collect();
    let answers = tcp.pipeline(lines.as_bytes(), 20).await;
    let busy = answers
        .iter()
        .filter(|a| {
            a.starts_with(
                "err busy: rate limit of ingest requests for this client reached; retry in ",
            )
        })
        .count();
    let ok = answers.iter().filter(|a| a.starts_with("ok ")).count();
    assert!(busy >= 10 && ok >= 5 && busy + ok == 20, "{answers:?}");
    let mut other = LineClient::connect(server.tcp_addr()).await;
    let quiet_tcp = keys.hs(&claims("tcp-quiet", "ingest", 600));
    assert_eq!(other.request(&format!("auth {quiet_tcp}")).await, "ok auth");
    let line = other.request(&sale_line(99)).await;
    assert!(line.starts_with("ok "), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auth_the_client_is_its_address_and_query_has_its_own_limit() {
    let server = TestServer::start(&[
        ("FLUJO__LIMITS__INGEST__PER_CLIENT_RPS", "1"),
        ("FLUJO__LIMITS__INGEST__BURST", "3"),
        ("FLUJO__LIMITS__QUERY__PER_CLIENT_RPS", "1"),
        ("FLUJO__LIMITS__QUERY__BURST", "2"),
    ]);
    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = post_sale(&server, &[], i).await;
        statuses.push(resp.status().as_u16());
        if i == 0 {
            assert_eq!(resp.headers()["ratelimit-limit"], "3");
            assert_eq!(resp.headers()["ratelimit-remaining"], "2");
        }
    }
    assert_eq!(statuses, [202, 202, 202, 429], "burst of 3 from 127.0.0.1");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            server
                .get("/v1/kpis/sales")
                .await
                .expect("GET")
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429], "query's own burst of 2");
    // Operations are never limited.
    for _ in 0..5 {
        server.assert_alive().await;
    }
    let doc: Value = server
        .get("/openapi.json")
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let limited = &doc["paths"]["/v1/kpis/sales"]["get"]["responses"]["429"]["headers"];
    assert!(
        limited["Retry-After"].is_object() && limited["RateLimit-Reset"].is_object(),
        "{limited}"
    );
    assert!(
        doc["components"]["securitySchemes"].is_null(),
        "no auth, no scheme"
    );
}

/// Failed authentications count against the peer's address: past its allowance a
/// guesser (or a client without a credential) gets the rate limit's answer on every
/// transport, while a client with a good token from the same address is not held.
#[tokio::test(flavor = "multi_thread")]
async fn failed_authentications_are_limited_by_address() {
    let keys = Keys::new();
    let mut env = keys.env();
    env.push(("FLUJO__LIMITS__INGEST__PER_CLIENT_RPS", "1".into()));
    env.push(("FLUJO__LIMITS__INGEST__BURST", "3".into()));
    let server = start(&env);
    let forged = bearer("fk_live_not-a-key-at-all");
    // The burst of 3, then 429 (a slow machine may see a token come back: the
    // refusals are then 401 again, never anything else).
    let mut statuses = Vec::new();
    for i in 0..8 {
        let resp = post_sale(&server, &[("authorization", forged.as_str())], i).await;
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(&statuses[..3], [401, 401, 401], "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 3,
        "{statuses:?}"
    );
    let good = bearer(&keys.hs(&claims("honest", "ingest", 600)));
    let resp = post_sale(&server, &[("authorization", good.as_str())], 9).await;
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "a good token has its own bucket"
    );

    // gRPC and TCP share the address's allowance, now spent.
    let mut grpc = grpc_client(&server).await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let status = grpc_sale(&mut grpc, &[("authorization", forged.as_str())])
            .await
            .expect_err("refused");
        codes.push(status.code());
    }
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::ResourceExhausted | Code::Unauthenticated)),
        "{codes:?}"
    );
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    let mut tcp = LineClient::connect(server.tcp_addr()).await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(tcp.request("auth fk_live_not-a-key-at-all").await);
    }
    assert!(
        answers
            .iter()
            .any(|a| a.starts_with("err busy: rate limit")),
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|a| a.starts_with("err busy: rate limit") || a.starts_with("err unauthenticated")),
        "{answers:?}"
    );
}
