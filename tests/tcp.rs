//! The TCP line interface over raw sockets: `ping` → `pong`, `ok <id>` / `err <reason>`
//! for event lines, refusals that keep the connection open, over-long lines,
//! pipelining, many connections at once, CRLF; and `flujo ping` over all three
//! transports.

mod support;

use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

/// `v` with `"kind": kind` added.
fn tagged(mut v: Value, kind: &str) -> Value {
    v.as_object_mut()
        .expect("an event is an object")
        .insert("kind".into(), json!(kind));
    v
}

fn sale_line(s: &Sale, form: SaleForm) -> String {
    tagged(sale_json(s, form), "sale").to_string()
}

fn tweet_line(t: &Tweet, seed_form: bool) -> String {
    tagged(tweet_json(t, seed_form), "tweet").to_string()
}

fn assert_uuid_v7(id: &str) {
    let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id:?} is not a UUID: {e}"));
    assert_eq!(uuid.get_version_num(), 7, "{id} should be a UUIDv7");
}

/// The id of an `ok <id>` answer; panics on anything else.
fn ok_id(answer: &str) -> &str {
    let id = answer
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("expected `ok <id>`, got {answer:?}"));
    assert!(
        !id.is_empty() && !id.contains(' '),
        "one id per answer: {answer:?}"
    );
    id
}

/// The reason of an `err <reason>` answer; panics on anything else.
fn err_reason(answer: &str) -> &str {
    let reason = answer
        .strip_prefix("err ")
        .unwrap_or_else(|| panic!("expected `err <reason>`, got {answer:?}"));
    assert!(!reason.trim().is_empty(), "an empty reason: {answer:?}");
    reason
}

#[tokio::test]
async fn ping_is_answered_pong() {
    let server = TestServer::start(&[]);
    let mut c = LineClient::connect(server.tcp_addr()).await;
    for _ in 0..20 {
        assert_eq!(c.request("ping").await, "pong");
    }
    // Surrounding blanks do not matter.
    assert_eq!(c.request("  ping\t").await, "pong");
    // A second connection is served as well.
    let mut other = LineClient::connect(server.tcp_addr()).await;
    assert_eq!(other.request("ping").await, "pong");
    assert_eq!(c.request("ping").await, "pong");
}

#[tokio::test]
async fn event_lines_are_ok_with_their_id() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut c = LineClient::connect(server.tcp_addr()).await;
    let (mut sales, mut tweets) = (DedupTruth::default(), DedupTruth::default());

    // A client id is echoed, in every accepted form of a sale.
    for (i, form) in SALE_FORMS.iter().enumerate() {
        let s = sale(
            &format!("tcp-sale-{i}"),
            CATEGORIES[i],
            &format!("P{i}"),
            1.25 + i as f64,
            i as u64 + 1,
        );
        let answer = c.request(&sale_line(&s, *form)).await;
        assert_eq!(ok_id(&answer), s.id, "{form:?}");
        sales.apply_sale(&s);
    }
    for (i, seed_form) in [false, true].into_iter().enumerate() {
        let t = tweet(&format!("tcp-tweet-{i}"), "Mixco", "rainy", 18.0, 70.0);
        let answer = c.request(&tweet_line(&t, seed_form)).await;
        assert_eq!(ok_id(&answer), t.id, "seed form {seed_form}");
        tweets.apply_tweet(&t);
    }
    // Without an id the receiver makes a UUIDv7 (and `kind` may come anywhere).
    let line = r#"{"category":"home","product_id":"NOID","price":3.5,"kind":"sale","quantity":2}"#;
    let id = ok_id(&c.request(line).await).to_owned();
    assert_uuid_v7(&id);
    sales.apply_sale(&sale(&id, "home", "NOID", 3.5, 2));
    let line =
        r#"{"kind":"tweet","location":"Antigua","weather":"sunny","temperature":25,"humidity":40}"#;
    let id = ok_id(&c.request(line).await).to_owned();
    assert_uuid_v7(&id);
    tweets.apply_tweet(&tweet(&id, "Antigua", "sunny", 25.0, 40.0));
    // A resend is answered like a new event and counted once.
    let again = sale("tcp-sale-0", "electronics", "P0", 1.25, 1);
    assert_eq!(
        ok_id(&c.request(&sale_line(&again, SaleForm::English)).await),
        "tcp-sale-0"
    );
    assert!(!sales.apply_sale(&again));

    assert_sales_kpis(&sales, &server.wait_sales(sales.sales.count).await);
    assert_tweets_kpis(&tweets, &server.wait_tweets(tweets.tweets.count).await);
}

#[tokio::test]
async fn bad_lines_are_err_and_the_connection_stays_open() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut c = LineClient::connect(server.tcp_addr()).await;
    let good =
        json!({"kind": "sale", "category": "home", "product_id": "P", "price": 2.0, "quantity": 1});
    let with = |key: &str, value: Value| {
        let mut v = good.clone();
        v[key] = value;
        v.to_string()
    };
    let without = |key: &str| {
        let mut v = good.clone();
        v.as_object_mut().map(|m| m.remove(key));
        v.to_string()
    };
    // (line, a word the reason must hold)
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "JSON"),
        (r#"{"category":"home""#.into(), "JSON"),
        ("[1, 2".into(), "JSON"),
        ("hello".into(), "JSON"),
        (without("kind"), "kind"),
        (with("kind", json!("order")), "kind"),
        (with("kind", json!(1)), "kind"),
        (with("kind", json!("")), "kind"),
        ("42".into(), "object"),
        (r#"[{"kind":"sale"}]"#.into(), "object"),
        (with("price", json!(-1)), "price"),
        (with("price", json!("cheap")), "price"),
        (with("quantity", json!(0)), "quantity"),
        (with("category", json!("toys")), "category"),
        (with("product_id", json!("")), "product_id"),
        (without("price"), "price"),
        (with("colour", json!("red")), "colour"),
        // A tweet's fields under kind "sale" are unknown fields of a sale.
        (
            json!({"kind": "sale", "location": "Mixco", "weather": "sunny", "temperature": 1, "humidity": 1})
                .to_string(),
            "unknown field",
        ),
        (
            json!({"kind": "tweet", "location": "Mixco", "weather": "windy", "temperature": 1, "humidity": 1})
                .to_string(),
            "weather",
        ),
        (
            json!({"kind": "tweet", "location": "Mixco", "weather": "sunny", "temperature": 61, "humidity": 1})
                .to_string(),
            "temperature",
        ),
        ("".into(), "empty"),
        ("   ".into(), "empty"),
        ("pingpong".into(), "JSON"),
    ];
    for (line, word) in &cases {
        let answer = c.request(line).await;
        let reason = err_reason(&answer);
        assert!(
            reason.contains(word),
            "the reason for {line:?} should mention `{word}`: {answer:?}"
        );
        // Still open and in step.
        assert_eq!(c.request("ping").await, "pong", "after {line:?}");
    }
    // Binary garbage and invalid UTF-8 are refused too, not a dropped connection.
    c.write_raw(b"\xff\xfe\x00\x01garbage\n").await;
    err_reason(&c.read_line().await);
    assert_eq!(c.request("ping").await, "pong");

    // Nothing of the refused lines was stored: a marker sent afterwards is the only
    // sale counted (the pipeline is ordered).
    let answer = c
        .request(&with("id", json!("marker")).replace("\"home\"", "\"beauty\""))
        .await;
    assert_eq!(ok_id(&answer), "marker");
    let kpis = server.wait_sales(1).await;
    assert_eq!(kpis["categories"]["beauty"]["count"], json!(1), "{kpis}");
    assert_eq!(
        server.get_ok("/v1/kpis/tweets").await["total"]["count"],
        json!(0)
    );
}

#[tokio::test]
async fn a_too_long_line_is_refused_and_the_next_one_works() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut c = LineClient::connect(server.tcp_addr()).await;
    // A well-formed sale, but 70,000 bytes long.
    let mut long = json!({"kind": "sale", "id": "long", "category": "home",
        "product_id": "P", "price": 2.0, "quantity": 1, "pad": ""});
    let pad = 70_000 - long.to_string().len();
    long["pad"] = json!("x".repeat(pad));
    let long = long.to_string();
    assert_eq!(long.len(), 70_000);
    // Sent in pieces, as a slow client would.
    let bytes = format!("{long}\n").into_bytes();
    for piece in bytes.chunks(8192) {
        c.write_raw(piece).await;
    }
    let answer = c.read_line().await;
    assert!(
        err_reason(&answer).contains("longer"),
        "a 70,000-byte line: {answer:?}"
    );
    // The connection goes on with the next line.
    assert_eq!(c.request("ping").await, "pong");
    let next = json!({"kind": "sale", "id": "after", "category": "home", "product_id": "P",
        "price": 2.0, "quantity": 1});
    assert_eq!(ok_id(&c.request(&next.to_string()).await), "after");

    // A long line followed by a good one in the same write: two answers, in order.
    let both = format!(
        "{}\n{}\n",
        "y".repeat(100_000),
        json!({"kind": "sale",
        "id": "after-2", "category": "home", "product_id": "P", "price": 2.0, "quantity": 1})
    );
    c.write_raw(both.as_bytes()).await;
    assert!(err_reason(&c.read_line().await).contains("longer"));
    assert_eq!(ok_id(&c.read_line().await), "after-2");

    // Only the two good sales were stored.
    let kpis = server.wait_sales(2).await;
    assert_eq!(kpis["total"]["quantity_sum"], json!(2), "{kpis}");
}

#[tokio::test]
async fn pipelined_lines_are_answered_in_order() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut rng = StdRng::seed_from_u64(0x7c9_0500);
    let (mut sales, mut tweets) = (DedupTruth::default(), DedupTruth::default());
    // What each of the 500 answers must be.
    enum Want {
        Ok(String),
        Pong,
        Err,
    }
    let mut payload = String::new();
    let mut wants = Vec::new();
    for i in 0..500 {
        match i % 50 {
            7 => {
                payload.push_str("ping\n");
                wants.push(Want::Pong);
            }
            23 => {
                payload.push_str(&format!(
                    "{{\"kind\":\"sale\",\"id\":\"bad-{i}\",\"category\":\"home\",\"product_id\":\"P\",\"price\":-1,\"quantity\":1}}\n"
                ));
                wants.push(Want::Err);
            }
            _ if rng.random_bool(0.6) => {
                let s = random_sale(
                    &mut rng,
                    format!("pipe-s-{i}"),
                    CATEGORIES[i % 4],
                    &format!("P{}", i % 13),
                );
                payload.push_str(&sale_line(&s, SaleForm::English));
                payload.push('\n');
                wants.push(Want::Ok(s.id.clone()));
                sales.apply_sale(&s);
            }
            _ => {
                let t = random_tweet(
                    &mut rng,
                    format!("pipe-t-{i}"),
                    &["Guatemala", "Mixco", "Zacapa"],
                    false,
                );
                payload.push_str(&tweet_line(&t, false));
                payload.push('\n');
                wants.push(Want::Ok(t.id.clone()));
                tweets.apply_tweet(&t);
            }
        }
    }
    // Everything in one write.
    let mut c = LineClient::connect(server.tcp_addr()).await;
    let answers = c.pipeline(payload.as_bytes(), wants.len()).await;
    for (i, (want, answer)) in wants.iter().zip(&answers).enumerate() {
        match want {
            Want::Ok(id) => assert_eq!(ok_id(answer), id, "answer {i}"),
            Want::Pong => assert_eq!(answer, "pong", "answer {i}"),
            Want::Err => {
                assert!(err_reason(answer).contains("price"), "answer {i}: {answer}")
            }
        }
    }
    assert_eq!(c.request("ping").await, "pong");
    // Lines of one connection are handled concurrently, so only what does not depend
    // on the order of application is compared here (see
    // `pipelined_sales_keep_their_order` for the order).
    assert_order_free_sales(&server, &sales).await;
    assert_tweets_kpis(&tweets, &server.wait_tweets(tweets.tweets.count).await);
}

/// Lines a client sends at once are coalesced into batches (a few ingests, not one
/// per line), yet every line gets its own answer: a bad sale in the middle is
/// refused alone, and only it.
#[tokio::test]
async fn lines_sent_at_once_are_coalesced_and_still_answered_one_by_one() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut rng = StdRng::seed_from_u64(0xc0a1_e5ce);
    let mut sales = DedupTruth::default();
    let (mut payload, mut ids) = (String::new(), Vec::new());
    const LINES: usize = 1_000;
    const BAD: usize = 517;
    for i in 0..LINES {
        let mut s = random_sale(
            &mut rng,
            format!("coalesced-{i}"),
            CATEGORIES[i % 4],
            &format!("P{}", i % 17),
        );
        if i == BAD {
            s.quantity = 0;
        } else {
            sales.apply_sale(&s);
        }
        payload.push_str(&sale_line(&s, SaleForm::English));
        payload.push('\n');
        ids.push(s.id);
    }
    let mut c = LineClient::connect(server.tcp_addr()).await;
    let answers = c.pipeline(payload.as_bytes(), LINES).await;
    for (i, (answer, id)) in answers.iter().zip(&ids).enumerate() {
        if i == BAD {
            assert!(
                err_reason(answer).contains("quantity"),
                "line {i}: {answer}"
            );
        } else {
            assert_eq!(ok_id(answer), id, "line {i}");
        }
    }
    assert_order_free_sales(&server, &sales).await;

    let metrics = server.metrics().await;
    let tcp = [("transport", "tcp")];
    let ingests = metric_value(&metrics, "flujo_ingest_duration_seconds_count", &tcp)
        .expect("the TCP ingest histogram");
    // A read of the socket holds dozens of lines, so far fewer batches than lines.
    assert!(
        ingests <= (LINES / 4) as f64,
        "{ingests} ingests for {LINES} lines sent at once: not coalesced"
    );
    let labels = [
        ("kind", "sale"),
        ("transport", "tcp"),
        ("reason", "invalid"),
    ];
    assert_eq!(
        metric_value(&metrics, "flujo_events_rejected_total", &labels),
        Some(1.0),
        "only the bad line is counted as rejected"
    );
}

/// Coalescing stays within the pipeline's limits: with batches and in-flight events
/// capped at 50, 300 lines sent at once are all accepted (runs of at most 50), none
/// refused as too large.
#[tokio::test]
async fn coalescing_respects_the_batch_limit() {
    let server = TestServer::start(&[
        ("FLUJO__QUERY__CACHE_TTL_MS", "0"),
        ("FLUJO__HTTP__MAX_BATCH_EVENTS", "50"),
        ("FLUJO__PIPELINE__MAX_INFLIGHT_EVENTS", "50"),
    ]);
    let mut rng = StdRng::seed_from_u64(0x50_50);
    let (mut payload, mut ids) = (String::new(), Vec::new());
    for i in 0..300 {
        let s = random_sale(&mut rng, format!("cap-{i}"), CATEGORIES[i % 4], "P1");
        payload.push_str(&sale_line(&s, SaleForm::English));
        payload.push('\n');
        ids.push(s.id);
    }
    let mut c = LineClient::connect(server.tcp_addr()).await;
    let answers = c.pipeline(payload.as_bytes(), ids.len()).await;
    let mut busy = 0;
    for (i, (answer, id)) in answers.iter().zip(&ids).enumerate() {
        if answer.starts_with("err busy") {
            busy += 1; // the pipeline was full for a moment: the client retries
            continue;
        }
        assert_eq!(ok_id(answer), id, "line {i}: {answer}");
    }
    assert!(busy < ids.len(), "every line refused as busy");
}

/// A client that pipelines sales on one connection gets its answers in order, and the
/// monitored products and price streams follow the sales' (`ts`, `id`), which here
/// increase in the order sent (the KPIs no longer depend on arrival order: this
/// checks every `ts` survives the transport).
///
/// Reordering is a race, so the test repeats rounds of 800 pipelined sales (with
/// other clients busy meanwhile) and checks the price streams after each round.
#[tokio::test]
async fn pipelined_sales_keep_their_order() {
    let server = TestServer::start_for_order();
    let order = "the (ts, id) order, the order the lines were sent (and answered)";
    let mut sales = DedupTruth::default();
    let mut c = LineClient::connect(server.tcp_addr()).await;
    for round in 0..20u64 {
        let (mut payload, mut ids) = (String::new(), Vec::new());
        for i in round * 800..(round + 1) * 800 {
            let s = order_sale(i);
            payload.push_str(&sale_line(&s, SaleForm::English));
            payload.push('\n');
            ids.push(s.id.clone());
            sales.apply_sale(&s);
        }
        // Other clients keep the receivers busy meanwhile, as in production: eight
        // connections, ten times 20 pipelined tweets each.
        let addr = server.tcp_addr();
        let noise: Vec<_> = (0..8)
            .map(|n| {
                tokio::spawn(async move {
                    let mut c = LineClient::connect(addr).await;
                    for i in 0..10 {
                        let payload: String = (0..20)
                            .map(|k| {
                                let id = format!("noise-{round}-{n}-{i}-{k}");
                                let line = json!({"kind": "tweet", "id": id, "location": "Mixco",
                                    "weather": "sunny", "temperature": 1, "humidity": 1});
                                format!("{line}\n")
                            })
                            .collect();
                        c.pipeline(payload.as_bytes(), 20).await;
                    }
                })
            })
            .collect();
        let answers = c.pipeline(payload.as_bytes(), ids.len()).await;
        for (id, answer) in ids.iter().zip(&answers) {
            assert_eq!(ok_id(answer), id);
        }
        for task in noise {
            task.await.expect("a noise connection failed");
        }
        assert_monitored_in_order(&server, &sales, &format!("round {round}"), order).await;
    }
}

/// Compares every sales aggregate that does not depend on the order of application
/// (all but the monitored products and their price streams).
async fn assert_order_free_sales(server: &TestServer, sales: &DedupTruth) {
    let kpis = server.wait_sales(sales.sales.count).await;
    assert_sale_agg("total", &sales.sales, &kpis["total"]);
    for c in CATEGORIES {
        let agg = sales.sales_by_category.get(c).cloned().unwrap_or_default();
        assert_sale_agg(c, &agg, &kpis["categories"][c]);
    }
    let page = server.get_ok("/v1/rankings/products?limit=1000").await;
    assert_product_ranking(&page, &sales.product_ranking(None), "global ranking");
}

#[tokio::test]
async fn fifty_concurrent_connections_of_one_hundred_events() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut rng = StdRng::seed_from_u64(0x50_0100);
    let (mut sales, mut tweets) = (DedupTruth::default(), DedupTruth::default());
    let mut connections = Vec::new();
    for conn in 0..50 {
        let mut lines = Vec::new();
        for i in 0..100 {
            if (conn + i) % 3 == 0 {
                let t = random_tweet(
                    &mut rng,
                    format!("c{conn}-t{i}"),
                    &["Cobán", "Escuintla", "San José", "Antigua"],
                    conn % 2 == 0,
                );
                lines.push((tweet_line(&t, conn % 2 == 0), t.id.clone()));
                tweets.apply_tweet(&t);
            } else {
                // Products are shared between connections, so the monitored
                // product depends on the interleaving: it is not compared here.
                let product = format!("P{}", rng.random_range(0..20));
                let s = random_sale(
                    &mut rng,
                    format!("c{conn}-s{i}"),
                    CATEGORIES[i % 4],
                    &product,
                );
                let form = SALE_FORMS[(conn + i) % SALE_FORMS.len()];
                lines.push((sale_line(&s, form), s.id.clone()));
                sales.apply_sale(&s);
            }
        }
        connections.push(lines);
    }
    let addr = server.tcp_addr();
    let results = join_all(connections.into_iter().enumerate().map(|(conn, lines)| {
        tokio::spawn(async move {
            let mut c = LineClient::connect(addr).await;
            // A full pipeline answers `err busy: ...` (backpressure): like any
            // client, resend those lines a moment later. Anything else must be `ok`.
            let mut pending = lines;
            let mut busy = 0usize;
            for round in 0.. {
                assert!(
                    round < 600,
                    "connection {conn}: still busy after {round} rounds"
                );
                // Half the connections pipeline everything, half go line by line.
                let answers = if conn % 2 == 0 {
                    let payload: String = pending.iter().map(|(l, _)| format!("{l}\n")).collect();
                    c.pipeline(payload.as_bytes(), pending.len()).await
                } else {
                    let mut answers = Vec::new();
                    for (line, _) in &pending {
                        answers.push(c.request(line).await);
                    }
                    answers
                };
                let mut again = Vec::new();
                for ((line, id), answer) in pending.into_iter().zip(answers) {
                    if answer.starts_with("err busy") {
                        again.push((line, id));
                    } else {
                        assert_eq!(ok_id(&answer), id, "connection {conn}");
                    }
                }
                busy += again.len();
                if again.is_empty() {
                    break;
                }
                pending = again;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.shutdown_write().await;
            assert_eq!(
                c.try_read_line().await,
                None,
                "closed after the last answer"
            );
            busy
        })
    }))
    .await;
    let mut busy = 0;
    for r in results {
        busy += r.expect("a connection task failed");
    }
    eprintln!("{busy} lines were answered `err busy` and resent");
    assert_eq!(sales.sales.count + tweets.tweets.count, 5000);
    // Sums, counts, min/max and rankings do not depend on the order of application;
    // the monitored product does, so only the order-free parts are compared.
    assert_order_free_sales(&server, &sales).await;
    assert_tweets_kpis(&tweets, &server.wait_tweets(tweets.tweets.count).await);
}

#[tokio::test]
async fn crlf_line_endings() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut c = LineClient::connect(server.tcp_addr()).await;
    c.write_raw(b"ping\r\n").await;
    assert_eq!(c.read_line().await, "pong");
    let s = json!({"kind": "sale", "id": "crlf-1", "category": "beauty", "product_id": "B",
        "price": 9.5, "quantity": 3});
    c.write_raw(format!("{s}\r\n").as_bytes()).await;
    assert_eq!(ok_id(&c.read_line().await), "crlf-1");
    // Several CRLF lines in one write, an empty CRLF line among them.
    let t = json!({"kind": "tweet", "id": "crlf-2", "location": "Zacapa", "weather": "foggy",
        "temperature": 30.5, "humidity": 12});
    let s2 = json!({"kind": "sale", "id": "crlf-3", "categoria": 2, "producto_id": "R",
        "precio": 4.25, "cantidad_vendida": 2});
    c.write_raw(format!("{t}\r\nping\r\n\r\n{s2}\r\n").as_bytes())
        .await;
    assert_eq!(ok_id(&c.read_line().await), "crlf-2");
    assert_eq!(c.read_line().await, "pong");
    assert!(err_reason(&c.read_line().await).contains("empty"));
    assert_eq!(ok_id(&c.read_line().await), "crlf-3");
    // A last line without its newline is answered when the client closes its side.
    c.write_raw(b"ping").await;
    c.shutdown_write().await;
    assert_eq!(c.read_line().await, "pong");
    assert_eq!(c.try_read_line().await, None);

    let kpis = server.wait_sales(2).await;
    assert_eq!(
        kpis["total"]["revenue"],
        json!(9.5 * 3.0 + 4.25 * 2.0),
        "{kpis}"
    );
    assert_eq!(kpis["categories"]["clothing"]["count"], json!(1), "{kpis}");
    let tweets = server.wait_tweets(1).await;
    assert_eq!(tweets["weather"]["foggy"], json!(1), "{tweets}");
}

/// The numbers of one row of `flujo ping`'s table: n, errors, then the seven latencies.
fn ping_row(stdout: &str, target: &str) -> (u64, u64, Vec<f64>) {
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(target))
        .unwrap_or_else(|| panic!("no row for {target}:\n{stdout}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.len(), 10, "target, n, errors and 7 latencies: {row:?}");
    let int = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|e| panic!("{s:?} in {row:?}: {e}"))
    };
    let latencies = cols[3..]
        .iter()
        .map(|s| {
            let x = s
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{s:?} is not a number in {row:?}: {e}"));
            assert!(x.is_finite() && x >= 0.0, "{s} in {row:?}");
            x
        })
        .collect();
    (int(cols[1]), int(cols[2]), latencies)
}

#[tokio::test]
async fn flujo_ping_measures_every_transport() {
    let server = TestServer::start(&[]);
    let targets = [
        format!("tcp://{}", server.tcp_addr()),
        format!("http://{}", server.addr),
        format!("grpc://{}", server.grpc_addr()),
    ];
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cmd = flujo_command(dir.path());
    cmd.args(["ping", "-n", "200"]);
    for t in &targets {
        cmd.args(["--target", t]);
    }
    let out = tokio::task::spawn_blocking(move || output_within(cmd, Duration::from_secs(120)))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "flujo ping exited {}:\n{stdout}\n{stderr}",
        out.status
    );
    let header = stdout.lines().next().unwrap_or_default();
    for column in ["min", "mean", "p50", "p90", "p99", "p99.9", "max"] {
        assert!(
            header.split_whitespace().any(|c| c == column),
            "the header names {column}: {header:?}"
        );
    }
    let rows: Vec<&str> = stdout
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(rows.len(), 3, "one row per target:\n{stdout}");
    for target in &targets {
        let (n, errors, l) = ping_row(&stdout, target);
        assert_eq!((n, errors), (200, 0), "{target}:\n{stdout}");
        let [min, mean, p50, p90, p99, p999, max] = l[..] else {
            unreachable!("seven latencies")
        };
        // The table rounds to 0.001 ms.
        let eps = 0.0015;
        assert!(
            min <= mean + eps && mean <= max + eps,
            "{target}:\n{stdout}"
        );
        assert!(
            min <= p50 + eps
                && p50 <= p90 + eps
                && p90 <= p99 + eps
                && p99 <= p999 + eps
                && p999 <= max + eps,
            "{target}: percentiles out of order:\n{stdout}"
        );
    }

    // The same as JSON.
    let mut cmd = flujo_command(dir.path());
    cmd.args(["ping", "-n", "20", "--json", "--target"])
        .arg(&targets[0]);
    let out = tokio::task::spawn_blocking(move || output_within(cmd, Duration::from_secs(60)))
        .await
        .expect("join");
    assert!(out.status.success(), "{out:?}");
    let reports: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}): {out:?}"));
    let r = &reports[0];
    assert_eq!(r["target"], json!(targets[0]), "{reports}");
    assert_eq!(
        (&r["count"], &r["errors"]),
        (&json!(20), &json!(0)),
        "{reports}"
    );
    for key in [
        "min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms",
    ] {
        assert!(
            r[key].as_f64().is_some_and(|x| x >= 0.0),
            "{key}: {reports}"
        );
    }

    // The server was pinged, not harmed.
    server.assert_alive().await;
}
