//! Every authentication case on HTTP, gRPC and TCP against one flujo with every
//! kind of credential configured.

use super::*;
use reqwest::StatusCode;
use tonic::Code;

/// The credentials of the cases, minted once for a server.
struct Cases {
    good_hs: String,
    good_rs: String,
    good_es: String,
    query_only: String,
    both: String,
    expired: String,
    /// Forgeries, each with what it is.
    forged: Vec<(&'static str, String)>,
}

impl Cases {
    fn new(keys: &Keys) -> Cases {
        let good_hs = keys.hs(&claims("alice", "ingest", 600));
        let mut forged = Vec::new();
        let wrong_secret =
            EncodingKey::from_secret(b"not-the-secret-0123456789-abcdefghijkl").expect("secret");
        forged.push((
            "HS256 with another secret",
            encode(
                &Header::new(Algorithm::HS256),
                &claims("mallory", "ingest", 600),
                &wrong_secret,
            )
            .expect("token"),
        ));
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        forged.push((
            "RS256 signed by another RSA key under the real kid",
            encode(&header, &claims("mallory", "ingest", 600), &keys.other_rsa).expect("token"),
        ));
        let payload = good_hs.split('.').nth(1).expect("payload").to_owned();
        forged.push((
            "alg none",
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."),
        ));
        let evil = keys.hs(&claims("mallory", "ingest query", 600));
        let parts: Vec<&str> = good_hs.split('.').collect();
        let evil_payload = evil.split('.').nth(1).expect("payload");
        forged.push((
            "tampered payload",
            format!("{}.{evil_payload}.{}", parts[0], parts[2]),
        ));
        let confused = EncodingKey::from_secret(&keys.ec_public_pem).expect("secret");
        forged.push((
            "HS256 signed with the public key as its secret",
            encode(
                &Header::new(Algorithm::HS256),
                &claims("mallory", "ingest", 600),
                &confused,
            )
            .expect("token"),
        ));
        forged.push(("an unknown API key", "fk_live_not-a-key-at-all".into()));
        Cases {
            good_rs: keys.rs(&claims("bob", "ingest", 600)),
            good_es: keys.es(&claims("carol", "ingest", 600)),
            query_only: keys.hs(&claims("viewer", "query", 600)),
            both: keys.hs(&claims("ops", "ingest query", 600)),
            expired: keys.hs(&claims("alice", "ingest", -3600)),
            good_hs,
            forged,
        }
    }
}

/// The status, `WWW-Authenticate` and JSON body of a response.
async fn answer(resp: reqwest::Response) -> (StatusCode, String, Value) {
    let status = resp.status();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("text").to_owned())
        .unwrap_or_default();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, challenge, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_auth_case_on_every_transport() {
    let keys = Keys::new();
    let server = start(&keys.env());
    let cases = Cases::new(&keys);

    // ---- HTTP ----
    let (status, challenge, body) = answer(post_sale(&server, &[], 0).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token: {body}");
    assert_eq!(challenge, r#"Bearer realm="flujo""#);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Bearer"),
        "{body}"
    );
    assert_eq!(body["field"], "Authorization", "{body}");

    let auth = bearer(&cases.expired);
    let (status, challenge, body) =
        answer(post_sale(&server, &[("authorization", &auth)], 0).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired: {body}");
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{body}"
    );

    for (what, token) in &cases.forged {
        let auth = bearer(token);
        let (status, challenge, body) =
            answer(post_sale(&server, &[("authorization", &auth)], 0).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{what}: {challenge}"
        );
    }
    let (status, _, body) =
        answer(post_sale(&server, &[("authorization", "Basic dXNlcjpwYXNz")], 0).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "Basic: {body}");

    for (what, token) in [
        ("query-only token", &cases.query_only),
        ("query-only API key", &QUERY_KEY.to_owned()),
    ] {
        let auth = bearer(token);
        let (status, challenge, body) =
            answer(post_sale(&server, &[("authorization", &auth)], 0).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        assert_eq!(
            challenge,
            r#"Bearer realm="flujo", error="insufficient_scope", scope="ingest""#
        );
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("`ingest` scope"),
            "{body}"
        );
    }

    for (what, header, value) in [
        ("HS256", "authorization", bearer(&cases.good_hs)),
        (
            "RS256 from the JWKS",
            "authorization",
            bearer(&cases.good_rs),
        ),
        (
            "ES256 from the PEM key",
            "authorization",
            bearer(&cases.good_es),
        ),
        ("API key as bearer", "authorization", bearer(API_KEY)),
        ("API key in X-API-Key", "x-api-key", API_KEY.to_owned()),
    ] {
        let (status, _, body) = answer(post_sale(&server, &[(header, &value)], 1).await).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{what}: {body}");
        assert_eq!(body["accepted"], 1, "{what}: {body}");
    }

    // Query routes need `query`; the page needs it too, its assets do not.
    let get = |path: &str, auth: Option<String>| {
        let mut req = server.client.get(server.url(path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let status = |r: reqwest::Result<reqwest::Response>| r.expect("GET").status();
    assert_eq!(
        status(get("/v1/kpis/sales", None).await),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(get("/v1/kpis/sales", Some(bearer(&cases.good_hs))).await),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(get("/v1/kpis/sales", Some(bearer(&cases.query_only))).await),
        StatusCode::OK
    );
    assert_eq!(
        status(get("/v1/rankings/products", Some(bearer(QUERY_KEY))).await),
        StatusCode::OK
    );
    assert_eq!(status(get("/", None).await), StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(get("/", Some(bearer(&cases.both))).await),
        StatusCode::OK
    );
    for open in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/assets/page.css",
    ] {
        assert_eq!(
            status(get(open, None).await),
            StatusCode::OK,
            "{open} stays open"
        );
    }

    // The document tells clients.
    let doc: Value = get("/openapi.json", None)
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["apiKey"]["name"], "X-API-Key", "{schemes}");
    for (path, method) in [
        ("/v1/sales", "post"),
        ("/purchase", "post"),
        ("/v1/kpis/sales", "get"),
    ] {
        let op = &doc["paths"][path][method];
        for code in ["401", "403"] {
            assert!(
                op["responses"][code].is_object(),
                "{path} {method} documents {code}"
            );
        }
        assert!(op["security"].is_array(), "{path} {method}: {op}");
    }
    assert!(doc["paths"]["/healthz"]["get"]["security"].is_null());

    // ---- gRPC ----
    let mut grpc = grpc_client(&server).await;
    let code = |r: Result<Ack, Status>| r.map(|a| a.accepted).map_err(|s| s.code());
    assert_eq!(
        code(grpc_sale(&mut grpc, &[]).await),
        Err(Code::Unauthenticated)
    );
    let expired = bearer(&cases.expired);
    let got = grpc_sale(&mut grpc, &[("authorization", &expired)]).await;
    let status = got.expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{status:?}");
    for (what, token) in &cases.forged {
        let auth = bearer(token);
        assert_eq!(
            code(grpc_sale(&mut grpc, &[("authorization", &auth)]).await),
            Err(Code::Unauthenticated),
            "{what}"
        );
    }
    let query = bearer(&cases.query_only);
    assert_eq!(
        code(grpc_sale(&mut grpc, &[("authorization", &query)]).await),
        Err(Code::PermissionDenied)
    );
    for (what, key, value) in [
        ("HS256", "authorization", bearer(&cases.good_hs)),
        ("RS256", "authorization", bearer(&cases.good_rs)),
        ("ES256", "authorization", bearer(&cases.good_es)),
        ("API key", "x-api-key", API_KEY.to_owned()),
    ] {
        assert_eq!(
            code(grpc_sale(&mut grpc, &[(key, &value)]).await),
            Ok(1),
            "{what}"
        );
    }
    // Health stays open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Endpoint::from_shared(server.grpc_uri())
            .expect("URI")
            .connect()
            .await
            .expect("connect"),
    );
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health without a token");
    assert_eq!(serving.into_inner().status, 1, "SERVING");

    // ---- TCP ----
    let mut tcp = LineClient::connect(server.tcp_addr()).await;
    assert_eq!(tcp.request("ping").await, "pong", "ping stays open");
    let before = tcp.request(&sale_line(0)).await;
    assert_eq!(before, "err unauthenticated: send `auth <token>` first");
    let expired = tcp.request(&format!("auth {}", cases.expired)).await;
    assert_eq!(
        expired,
        "err unauthenticated: invalid credential: token expired"
    );
    for (what, token) in &cases.forged {
        let got = tcp.request(&format!("auth {token}")).await;
        assert!(
            got.starts_with("err unauthenticated: invalid credential"),
            "{what}: {got}"
        );
        let line = tcp.request(&sale_line(0)).await;
        assert!(
            line.starts_with("err unauthenticated"),
            "{what}: then {line}"
        );
    }
    let forbidden = tcp.request(&format!("auth {}", cases.query_only)).await;
    assert_eq!(
        forbidden,
        "err forbidden: credential lacks the `ingest` scope"
    );
    assert!(tcp
        .request(&sale_line(0))
        .await
        .starts_with("err unauthenticated"));
    for token in [
        &cases.good_hs,
        &cases.good_rs,
        &cases.good_es,
        &API_KEY.to_owned(),
    ] {
        assert_eq!(tcp.request(&format!("auth {token}")).await, "ok auth");
        let ok = tcp.request(&sale_line(1)).await;
        assert!(ok.starts_with("ok "), "{ok}");
    }

    // ---- every refusal counted ----
    let metrics = server.metrics().await;
    for (transport, reason) in [
        ("http", "missing"),
        ("http", "invalid"),
        ("http", "expired"),
        ("http", "forbidden"),
        ("grpc", "missing"),
        ("grpc", "expired"),
        ("grpc", "forbidden"),
        ("tcp", "missing"),
        ("tcp", "invalid"),
        ("tcp", "forbidden"),
    ] {
        let value = metric_value(
            &metrics,
            "flujo_auth_failures_total",
            &[("transport", transport), ("reason", reason)],
        );
        assert!(
            value >= Some(1.0),
            "flujo_auth_failures_total {transport} {reason}: {value:?}"
        );
    }
    assert!(
        !server.stderr().contains(SECRET) && !server.stderr().contains(&cases.good_hs),
        "a secret or token in the logs"
    );
}

#[test]
fn flujo_config_shows_paths_never_secrets_and_bad_files_name_their_key() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().expect("dir");
    let mut cmd = flujo_command(dir.path());
    cmd.arg("config");
    for (k, v) in keys.env() {
        cmd.env(k, v);
    }
    let out = output_within(cmd, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("[auth]") && text.contains("jwt_secret_file"),
        "{text}"
    );
    assert!(!text.contains(SECRET) && !text.contains(API_KEY), "{text}");

    let short = dir.path().join("short");
    std::fs::write(&short, "tiny").expect("write");
    let mut cmd = flujo_command(dir.path());
    cmd.arg("run")
        .args(LOOPBACK_PORTS)
        .env("FLUJO__AUTH__JWT_SECRET_FILE", &short)
        .env(
            "FLUJO__AUTH__API_KEYS_FILE",
            dir.path().join("missing.toml"),
        );
    let out = output_within(cmd, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("key `auth.jwt_secret_file`") && err.contains("at least 32"),
        "{err}"
    );
    assert!(err.contains("key `auth.api_keys_file`"), "{err}");
}
