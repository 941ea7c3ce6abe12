//! What is accepted: every path and encoding, the seeds' event forms.

use super::*;

#[tokio::test]
async fn every_path_and_encoding_is_accepted() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let (mut sales, mut tweets) = (DedupTruth::default(), DedupTruth::default());
    let encodings = [
        Encoding::Object,
        Encoding::Array,
        Encoding::Ndjson,
        Encoding::NdjsonCrlf,
    ];
    let mut n = 0;
    for path in ["/v1/sales", "/purchase", "/v1/tweets", "/input"] {
        let of_sales = path == "/v1/sales" || path == "/purchase";
        for encoding in encodings {
            // One event as an object; 5 sales or 4 tweets in the other encodings.
            let size = match (encoding, of_sales) {
                (Encoding::Object, _) => 1,
                (_, true) => 5,
                (_, false) => 4,
            };
            let (mut json, mut sent) = (Vec::new(), Vec::new());
            for i in 0..size {
                n += 1;
                if of_sales {
                    let s = sale(
                        &format!("s-{n}"),
                        CATEGORIES[i % 4],
                        &format!("P{}", i % 3),
                        1.25 * (n as f64),
                        (n % 7 + 1) as u64,
                    );
                    json.push(sale_json(&s, SaleForm::English));
                    sent.push(s.id.clone());
                    sales.apply_sale(&s);
                } else {
                    let t = tweet(
                        &format!("t-{n}"),
                        ["Guatemala", "Mixco", "Antigua"][i % 3],
                        WEATHERS[n % 6],
                        (n as f64) - 10.5,
                        (n * 3 % 100) as f64,
                    );
                    json.push(tweet_json(&t, false));
                    sent.push(t.id.clone());
                    tweets.apply_tweet(&t);
                }
            }
            let ids = server.send_ok(path, &json, encoding).await;
            assert_eq!(ids, sent, "{path} {encoding:?}: ids in request order");
        }
    }

    // `; charset=utf-8` and other NDJSON media types are the same thing.
    let extra = sale("s-charset", "home", "P9", 3.5, 2);
    let resp = server
        .post_raw(
            "/v1/sales",
            Some("application/json; charset=utf-8"),
            sale_json(&extra, SaleForm::English).to_string(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    sales.apply_sale(&extra);

    // Events without an id get a generated UUIDv7, distinct per event.
    let anonymous =
        json!({"category": "beauty", "product_id": "ANON", "price": 9.99, "quantity": 1});
    let ids = server
        .send_ok(
            "/v1/sales",
            &[anonymous.clone(), anonymous.clone(), anonymous],
            Encoding::Array,
        )
        .await;
    for id in &ids {
        assert_uuid_v7(id);
    }
    assert_ne!(ids[0], ids[1]);
    assert_ne!(ids[1], ids[2]);
    for id in &ids {
        sales.apply_sale(&sale(id, "beauty", "ANON", 9.99, 1));
    }
    let anonymous =
        json!({"location": "Zacapa", "weather": "foggy", "temperature": 30, "humidity": 55});
    let ids = server
        .send_ok("/input", &[anonymous], Encoding::Object)
        .await;
    assert_uuid_v7(&ids[0]);
    tweets.apply_tweet(&tweet(&ids[0], "Zacapa", "foggy", 30.0, 55.0));

    let kpis = server.wait_sales(sales.sales.count).await;
    assert_sales_kpis(&sales, &kpis);
    let kpis = server.wait_tweets(tweets.tweets.count).await;
    assert_tweets_kpis(&tweets, &kpis);
}

#[tokio::test]
async fn the_seeds_event_forms_are_accepted() {
    let server = TestServer::start(&[("FLUJO__QUERY__CACHE_TTL_MS", "0")]);
    let mut sales = DedupTruth::default();
    // `categoria` 1–4 with the seeds' Spanish field names, then Spanish category names.
    let seed_sales: Vec<Value> = (1..=4)
        .map(|code| {
            json!({"id": format!("seed-{code}"), "categoria": code, "producto_id": format!("SEED{code}"),
                   "precio": 10 * code, "cantidad_vendida": code})
        })
        .collect();
    server
        .send_ok("/purchase", &seed_sales, Encoding::Array)
        .await;
    for code in 1..=4u64 {
        sales.apply_sale(&sale(
            &format!("seed-{code}"),
            CATEGORIES[code as usize - 1],
            &format!("SEED{code}"),
            10.0 * code as f64,
            code,
        ));
    }
    for (i, name) in SPANISH_CATEGORIES.iter().enumerate() {
        for (j, form) in [name.to_string(), name.to_lowercase(), name.to_uppercase()]
            .into_iter()
            .enumerate()
        {
            let id = format!("es-{i}-{j}");
            let body = json!({"id": id, "categoria": form, "producto_id": "ES", "precio": 2.5, "cantidad_vendida": 4});
            server.send_ok("/v1/sales", &[body], Encoding::Object).await;
            sales.apply_sale(&sale(&id, CATEGORIES[i], "ES", 2.5, 4));
        }
    }
    // The accented spelling and the numeric code as a string.
    for (id, category) in [("acc", json!("Electrónica")), ("code-str", json!("3"))] {
        let body =
            json!({"id": id, "category": category, "product_id": "X", "price": 1, "quantity": 1});
        server.send_ok("/v1/sales", &[body], Encoding::Object).await;
    }
    sales.apply_sale(&sale("acc", "electronics", "X", 1.0, 1));
    sales.apply_sale(&sale("code-str", "home", "X", 1.0, 1));

    // Tweets as the seeds' clients send them: municipality, integers, capitalised weather.
    let mut tweets = DedupTruth::default();
    let forms = [
        ("Mixco", "Rainy", "rainy", 18, 90),
        ("Villa Nueva", "sunny", "sunny", 31, 40),
        ("Mixco", "Cloudy", "cloudy", 22, 70),
        ("Quetzaltenango", "FOGGY", "foggy", -2, 100),
        ("Cobán", "Stormy", "stormy", 25, 0),
        ("Mixco", "snowy", "snowy", -15, 35),
    ];
    let bodies: Vec<Value> = forms
        .iter()
        .enumerate()
        .map(|(i, (place, weather, _, temp, hum))| {
            json!({"id": format!("tw-{i}"), "municipality": place, "weather": weather,
                   "temperature": temp, "humidity": hum, "text": "¡qué clima!"})
        })
        .collect();
    server.send_ok("/input", &bodies, Encoding::Ndjson).await;
    for (i, (place, _, weather, temp, hum)) in forms.iter().enumerate() {
        tweets.apply_tweet(&tweet(
            &format!("tw-{i}"),
            place,
            weather,
            *temp as f64,
            *hum as f64,
        ));
    }

    let kpis = server.wait_sales(sales.sales.count).await;
    assert_sales_kpis(&sales, &kpis);
    let kpis = server.wait_tweets(tweets.tweets.count).await;
    assert_tweets_kpis(&tweets, &kpis);
    let ranking = server.get_ok("/v1/rankings/locations?limit=10").await;
    assert_eq!(ranking["total"], json!(4), "{ranking}");
    assert_eq!(ranking["items"][0]["location"], json!("Mixco"), "{ranking}");
    assert_eq!(ranking["items"][0]["count"], json!(3), "{ranking}");
    let names: Vec<&str> = ranking["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["location"].as_str())
        .collect();
    assert!(names.contains(&"Cobán"), "{ranking}");
}
