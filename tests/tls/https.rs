//! The HTTP listener over TLS: ingest and queries over HTTPS, curl, plain HTTP
//! refused, an untrusted CA refused, `flujo ping`.

use super::*;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread")]
async fn events_posted_over_https_are_counted_by_a_query_over_https() {
    let pki = TestPki::new("https");
    let server = tls_server(&pki, &[]);
    let sales = [
        sale("tls-s-1", "home", "TLS-LAMP", 20.5, 2),
        sale("tls-s-2", "beauty", "TLS-SOAP", 3.25, 4),
        sale("tls-s-3", "home", "TLS-LAMP", 19.5, 1),
    ];
    let events: Vec<Value> = sales
        .iter()
        .map(|s| sale_json(s, SaleForm::English))
        .collect();
    let ids = server.send_ok("/v1/sales", &events, Encoding::Array).await;
    assert_eq!(ids, ["tls-s-1", "tls-s-2", "tls-s-3"]);
    let mut truth = Truth::default();
    for s in &sales {
        truth.add_sale(s);
    }
    server.wait_idle().await;
    assert_sales_kpis(&truth, &server.wait_sales(3).await);
    assert!(server.metrics().await.contains("flujo_http_requests_total"));
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_trusts_the_listener_through_its_ca_over_http2_and_http1() {
    let pki = TestPki::new("curl");
    let server = tls_server(&pki, &[]);
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let ca = arg(&pki.ca);

    // HTTPS with the CA: HTTP/2 by ALPN (curl's default), or HTTP/1.1 when asked.
    let healthz = format!("{base}/healthz");
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = curl(&[
            "--cacert",
            &ca,
            flag,
            "--write-out",
            "\n%{http_code} %{http_version}",
            &healthz,
        ]);
        assert_code(&out, 0, "curl --cacert");
        let text = stdout(&out);
        assert!(
            text.ends_with(&format!("\n200 {version}")),
            "{flag}: {text}"
        );
        assert!(text.contains(r#""status":"ok""#), "{text}");
    }
    let out = curl(&[
        "--cacert",
        &ca,
        "--header",
        "content-type: application/json",
        "--data",
        r#"{"id":"curl-1","category":"home","product_id":"C1","price":2.5,"quantity":2}"#,
        "--write-out",
        "\n%{http_code}",
        &format!("{base}/v1/sales"),
    ]);
    assert_code(&out, 0, "curl POST");
    assert!(stdout(&out).ends_with("\n202"), "{}", stdout(&out));
    server.wait_sales(1).await;

    // Without the CA curl refuses the certificate (exit 60): no request was sent.
    let out = curl(&["--cacert", &arg(&TestPki::new("other").ca), &healthz]);
    assert_code(&out, 60, "curl with another CA");
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let pki = TestPki::new("plain");
    let server = tls_server(&pki, &[]);

    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    // The server closes the connection: the read ends well before this bound.
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    // A reset is as good as a close; either way no HTTP came back.
    let _ = read;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        !text.contains("HTTP/"),
        "an HTTP answer over plain text: {text:?}"
    );

    // A plain HTTP client fails; the HTTPS one is still served.
    let plain = http_client()
        .get(format!("http://{}/healthz", server.addr))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    server.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_trust_the_ca_fails_the_handshake() {
    let pki = TestPki::new("trusted");
    let server = tls_server(&pki, &[]);
    let stranger = TestPki::new("stranger");
    let err = https_client(&stranger.ca)
        .get(server.url("/healthz"))
        .send()
        .await
        .expect_err("a certificate from an unknown CA");
    let chain = format!("{:?}", anyhow::Error::from(err));
    assert!(chain.contains("UnknownIssuer"), "{chain}");

    let ok = server.get_ok("/healthz").await;
    assert_eq!(ok["status"], "ok");
    let resp = server.get("/readyz").await.expect("readyz");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn flujo_ping_checks_each_listener_against_its_ca_file() {
    let pki = TestPki::new("ping");
    let server = tls_server(&pki, &[]);
    let targets = [
        format!("https://127.0.0.1:{}", server.addr.port()),
        format!("grpcs://127.0.0.1:{}", server.grpc_addr().port()),
        format!("tcps://localhost:{}", server.tcp_addr().port()),
    ];
    let ping = |target: &str, ca: Option<&Path>| {
        let mut args = vec![
            "ping".to_owned(),
            "--target".to_owned(),
            target.to_owned(),
            "--count".to_owned(),
            "5".to_owned(),
            "--warmup".to_owned(),
            "1".to_owned(),
            "--json".to_owned(),
        ];
        if let Some(ca) = ca {
            args.extend(["--ca-file".to_owned(), arg(ca)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        flujo(&args, &[])
    };
    for target in &targets {
        let out = ping(target, Some(&pki.ca));
        assert_code(&out, 0, target);
        let report: Value = serde_json::from_str(&stdout(&out)).expect("JSON report");
        assert_eq!(report[0]["count"], 5, "{report}");
        assert_eq!(report[0]["errors"], 0, "{report}");
    }
    let stranger = TestPki::new("stranger");
    for target in &targets {
        for ca in [Some(stranger.ca.as_path()), None] {
            let out = ping(target, ca);
            assert_code(&out, 1, &format!("{target} with CA {ca:?}"));
            let err = stderr(&out);
            assert!(
                err.contains("certificate") || err.contains("UnknownIssuer"),
                "{target}: {err}"
            );
        }
    }
}

/// curl with `extra` arguments, quiet but for errors, within 20 s.
fn curl(extra: &[&str]) -> Output {
    let mut args = vec![
        "--silent",
        "--show-error",
        "--max-time",
        "20",
        "--noproxy",
        "*",
    ];
    args.extend_from_slice(extra);
    run("curl", &args)
}

/// `curl --http2 --data-binary BODY URL` with `content_type`: `"STATUS VERSION"`.
fn curl_post(ca: &str, url: &str, body: &str, content_type: &str) -> String {
    let header = format!("content-type: {content_type}");
    let out = curl(&[
        "--http2",
        "--cacert",
        ca,
        "--header",
        &header,
        "--data-binary",
        body,
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code} %{http_version}",
        url,
    ]);
    assert_code(&out, 0, "curl over HTTP/2");
    stdout(&out)
}

/// Refusals answered before the handler reads the body (over the rate limit, a
/// wrong content type) reach curl over HTTP/2 as their status: the body is read
/// first, so the stream is not reset while curl still sends (curl 7.88 with nghttp2
/// 1.52 reported such a reset as "Stream error in the HTTP/2 framing layer").
#[tokio::test(flavor = "multi_thread")]
async fn early_refusals_reach_curl_over_http2() {
    let pki = TestPki::new("early");
    let server = tls_server(
        &pki,
        &[
            ("FLUJO__LIMITS__INGEST__PER_CLIENT_RPS", "1"),
            ("FLUJO__LIMITS__INGEST__BURST", "1"),
        ],
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    // A body of about 500 KiB: still being sent when an early answer would come.
    let events: Vec<String> = (0..6_000)
        .map(|i| {
            format!(
                r#"{{"category":"home","product_id":"EARLY-{i:0>8}","price":2.5,"quantity":1}}"#
            )
        })
        .collect();
    let body = dir.path().join("body.json");
    std::fs::write(&body, format!("[{}]", events.join(","))).expect("write the body");
    let body = format!("@{}", body.display());
    let url = format!("https://127.0.0.1:{}/v1/sales", server.addr.port());
    let ca = arg(&pki.ca);
    let post = |content_type: &str| curl_post(&ca, &url, &body, content_type);
    // The first takes the burst; the later ones are 429 until a token comes back
    // (once a second): on a slow machine a few may pass, but each gets an answer.
    assert_eq!(post("application/json"), "202 2");
    let answers: Vec<String> = (0..8).map(|_| post("application/json")).collect();
    assert!(
        answers.iter().all(|a| a == "202 2" || a == "429 2"),
        "{answers:?}"
    );
    let limited = answers.iter().filter(|a| *a == "429 2").count();
    assert!(limited >= 4, "{answers:?}");
    drop(server);
    // Without a limit, a wrong content type: 415, answered once the body is read.
    let server = tls_server(&pki, &[]);
    let url = format!("https://127.0.0.1:{}/v1/sales", server.addr.port());
    let post = |content_type: &str| curl_post(&ca, &url, &body, content_type);
    for _ in 0..8 {
        assert_eq!(post("text/plain"), "415 2");
    }
}
