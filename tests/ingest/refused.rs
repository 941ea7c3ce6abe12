//! What is refused, and how: 400 naming the event and field (nothing of its batch
//! stored), 413, 415, unknown paths and methods.

use super::*;

/// POSTs `body` to `path` as `ct`, which must be answered 400 with an `error` string;
/// returns the answer.
pub(crate) async fn assert_400(server: &TestServer, path: &str, ct: &str, body: &str) -> Value {
    let resp = server.post_raw(path, Some(ct), body.to_owned()).await;
    let (status, json) = status_json(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body:?}: {json}");
    assert!(json["error"].is_string(), "{json}");
    json
}

#[tokio::test]
async fn invalid_json_is_a_400() {
    let server = TestServer::start(&[]);
    for (path, ct, body) in [
        ("/v1/sales", "application/json", "{"),
        ("/v1/sales", "application/json", "{\"category\": }"),
        ("/v1/tweets", "application/json", "[{\"location\":\"A\"},"),
        ("/purchase", "application/json", "not json"),
        ("/input", "application/json", "7"),
        ("/input", "application/json", "\"a string\""),
        (
            "/v1/tweets",
            "application/x-ndjson",
            "{\"location\": \"A\"\n{oops\n",
        ),
    ] {
        let json = assert_400(&server, path, ct, body).await;
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path} {body:?}: {json}"
        );
    }
    // A bad NDJSON line names the event it would have been.
    let good = json!({"location": "A", "weather": "sunny", "temperature": 1, "humidity": 2});
    let body = format!("{good}\n\n{good}\n{{oops\n{good}\n");
    let (status, json) = status_json(
        server
            .post_raw("/v1/tweets", Some("application/x-ndjson"), body)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert_eq!(json["index"], json!(2), "{json}");
    server.assert_alive().await;
}

/// A valid sale or tweet object to break one field of.
pub(crate) fn good_sale() -> Value {
    json!({"category": "home", "product_id": "P1", "price": 10.0, "quantity": 2})
}

pub(crate) fn good_tweet() -> Value {
    json!({"location": "Mixco", "weather": "sunny", "temperature": 20, "humidity": 50})
}

/// The good sale or tweet of `path`.
pub(crate) fn good_event(path: &str) -> Value {
    if path.contains("sales") || path == "/purchase" {
        good_sale()
    } else {
        good_tweet()
    }
}

pub(crate) fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

pub(crate) fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().map(|m| m.remove(key));
    v
}

#[tokio::test]
async fn a_bad_event_is_a_400_naming_it_and_nothing_of_its_batch_is_stored() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let seed = json!({"categoria": 1, "producto_id": "P", "precio": 1.0, "cantidad_vendida": 1});
    // Fields with values they refuse, each set on a good event of the path.
    let sale_fields = vec![
        ("category", vec![json!(5), json!(0), json!("toys")]),
        ("price", vec![json!(0), json!(-3.5)]),
        ("quantity", vec![json!(0), json!(1_000_001), json!(1.5)]),
        ("product_id", vec![json!("p".repeat(65)), json!("")]),
        ("colour", vec![json!("red")]),
        ("id", vec![json!("i".repeat(129))]),
    ];
    let tweet_fields = vec![
        ("temperature", vec![json!(60.5), json!(-91)]),
        ("humidity", vec![json!(101)]),
        ("weather", vec![json!("windy")]),
        ("colour", vec![json!("red")]),
    ];
    let input_fields = vec![("text", vec![json!("t".repeat(281))])];
    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    for (path, fields) in [
        ("/v1/sales", sale_fields),
        ("/v1/tweets", tweet_fields),
        ("/input", input_fields),
    ] {
        for (field, values) in fields {
            for value in values {
                cases.push((path, with(good_event(path), field, value), field));
            }
        }
    }
    // Required fields left out.
    for (path, field) in [
        ("/v1/sales", "price"),
        ("/v1/sales", "category"),
        ("/v1/tweets", "location"),
        ("/v1/tweets", "humidity"),
    ] {
        cases.push((path, without(good_event(path), field), field));
    }
    // Aliases are reported under the canonical name.
    for (alias, value, field) in [
        ("precio", json!(0), "price"),
        ("categoria", json!(9), "category"),
    ] {
        cases.push(("/purchase", with(seed.clone(), alias, value), field));
    }
    cases.push(("/purchase", without(seed, "cantidad_vendida"), "quantity"));
    for (path, bad, field) in &cases {
        let good = good_event(path);
        // The bad event is the third of four, in every encoding that holds several.
        let batch = vec![good.clone(), good.clone(), bad.clone(), good];
        for encoding in [Encoding::Array, Encoding::Ndjson, Encoding::NdjsonCrlf] {
            let resp = server.post_events(path, &batch, encoding).await;
            let (status, body) = status_json(resp).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {bad}: {body}");
            assert_eq!(body["index"], json!(2), "{path} {bad}: {body}");
            assert_eq!(body["field"], json!(field), "{path} {bad}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains(field), "the message names `{field}`: {body}");
        }
        // Alone, as one object, it is index 0.
        let resp = server
            .post_events(path, std::slice::from_ref(bad), Encoding::Object)
            .await;
        let (status, body) = status_json(resp).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {bad}: {body}");
        assert_eq!(
            (&body["index"], &body["field"]),
            (&json!(0), &json!(field)),
            "{body}"
        );
    }
    // A non-object element is refused as a whole event.
    let resp = server
        .post_events("/v1/sales", &[good_sale(), json!(42)], Encoding::Array)
        .await;
    let (status, body) = status_json(resp).await;
    assert_eq!(
        (status, &body["index"]),
        (StatusCode::BAD_REQUEST, &json!(1)),
        "{body}"
    );

    // Nothing of those batches was stored: a marker sent afterwards is the only thing
    // counted (the pipeline is ordered, so once the marker is counted, any stored
    // event of an earlier batch would be too).
    let marker = json!({"id": "marker", "category": "beauty", "product_id": "M", "price": 1.0, "quantity": 1});
    server
        .send_ok("/v1/sales", &[marker], Encoding::Object)
        .await;
    let marker = json!({"id": "marker", "location": "M", "weather": "rainy", "temperature": 1, "humidity": 1});
    server
        .send_ok("/v1/tweets", &[marker], Encoding::Object)
        .await;
    let sales = server.wait_sales(1).await;
    assert_eq!(sales["categories"]["beauty"]["count"], json!(1), "{sales}");
    assert_eq!(sales["categories"]["home"]["count"], json!(0), "{sales}");
    let tweets = server.wait_tweets(1).await;
    assert_eq!(tweets["weather"]["rainy"], json!(1), "{tweets}");
    server.assert_alive().await;
}

#[tokio::test]
async fn an_empty_batch_is_a_400() {
    let server = TestServer::start(&[]);
    let empty_batches = [
        ("/v1/sales", "application/json", "[]"),
        ("/v1/tweets", "application/json", "[ ]"),
        ("/purchase", "application/x-ndjson", ""),
        ("/input", "application/x-ndjson", "\n\r\n  \n"),
    ];
    for (path, ct, body) in empty_batches {
        assert_400(&server, path, ct, body).await;
    }
    server.assert_alive().await;
}

#[tokio::test]
async fn too_many_events_or_too_large_a_body_is_a_413() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let one = json!({"category": 2, "product_id": "P", "price": 1.5, "quantity": 1});
    let limit: Vec<Value> = vec![one.clone(); 10_000];
    let over: Vec<Value> = vec![one; 10_001];
    for encoding in [Encoding::Array, Encoding::Ndjson] {
        let (status, body) =
            status_json(server.post_events("/v1/sales", &over, encoding).await).await;
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{encoding:?}: {body}"
        );
        assert!(body["error"].is_string(), "{body}");
    }
    // Exactly the limit is fine.
    server.send_ok("/v1/sales", &limit, Encoding::Array).await;

    // A body over 4 MiB, however few events it holds.
    let text = "x".repeat(4 * 1024 * 1024);
    let big =
        json!({"location": "A", "weather": "sunny", "temperature": 1, "humidity": 1, "text": text});
    let resp = server
        .post_raw("/v1/tweets", Some("application/json"), big.to_string())
        .await;
    // The rest of the body was not read: the connection must not be reused.
    assert_eq!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "a 413 for an unread body closes the connection"
    );
    let (status, body) = status_json(resp).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let padded = format!("[{}]", " ".repeat(5 * 1024 * 1024));
    let resp = server.post_raw("/purchase", Some("application/json"), padded);
    let (status, body) = status_json(resp.await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let kpis = server.wait_sales(10_000).await;
    assert_eq!(kpis["categories"]["clothing"]["count"], json!(10_000));
    server.wait_tweets(0).await;
    server.assert_alive().await;
}

#[tokio::test]
async fn other_media_types_are_a_415() {
    let server = TestServer::start(&[]);
    let body = good_sale().to_string();
    for ct in [
        Some("text/plain"),
        None,
        Some("application/xml"),
        Some("application/x-www-form-urlencoded"),
    ] {
        for path in ["/v1/sales", "/purchase", "/v1/tweets", "/input"] {
            let (status, json) = status_json(server.post_raw(path, ct, body.clone()).await).await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {ct:?}: {json}"
            );
            assert!(json["error"].is_string(), "{json}");
        }
    }
    // A compressed body is refused, not read as if it were plain: nothing stored.
    for coding in ["gzip", "br", "deflate"] {
        let resp = server
            .client
            .post(server.url("/v1/sales"))
            .header("content-type", "application/json")
            .header("content-encoding", coding)
            .body(body.clone())
            .send()
            .await
            .expect("request");
        let (status, json) = status_json(resp).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{coding}: {json}"
        );
        assert!(
            json["error"].as_str().is_some_and(|e| e.contains(coding)),
            "{json}"
        );
    }
    server.wait_sales(0).await;
    server.assert_alive().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let server = TestServer::start(&[]);
    for path in ["/nope", "/v1/sale", "/v2/sales", "/v1/sales/extra"] {
        let (status, body) = server.get_plain(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
        let resp = server.post_raw(path, Some("application/json"), "{}").await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "POST {path}");
    }
    for path in ["/v1/sales", "/v1/tweets", "/purchase", "/input"] {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            let resp = server
                .client
                .request(method.clone(), server.url(path))
                .send()
                .await
                .expect("request");
            assert_eq!(
                resp.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            let allow = resp
                .headers()
                .get(reqwest::header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(allow.contains("POST"), "{method} {path}: Allow: {allow:?}");
        }
    }
    server.assert_alive().await;
}
