//! Assertions on what flujo answers: numbers to SPEC's 1e-9 relative, the KPI
//! objects against the load generator's ground truth (`flujo_loadgen::truth`), ranking
//! pages, price streams, Prometheus samples.

use flujo_loadgen::generate::{CATEGORIES, WEATHERS};
use flujo_loadgen::truth::{SaleAgg, Truth, TweetAgg};
use serde_json::{json, Value};

/// A value of one Prometheus sample, `labels` matched exactly (order-insensitive).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let mut found: Vec<(String, String)> = label_text
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            let mut want: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            found.sort();
            want.sort();
            (found == want).then(|| value.parse().ok()).flatten()
        })
}

// ---------------------------------------------------------------------------
// Float comparison
// ---------------------------------------------------------------------------

/// True when `a` and `b` agree to 1e-9 relative (SPEC: "Floating sums must match a
/// reference computed in f64 to 1e-9 relative"), or to 1e-9 absolute below 1 in
/// magnitude: a sum whose terms cancelled (temperatures around zero) carries the
/// rounding of its terms, not of its result, so two summation orders of the same
/// terms can differ relatively by far more near zero (e.g. -6.4e-16 vs -4.2e-16).
pub fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Asserts a JSON number is `expected` to 1e-9 relative, or `null` when `None`.
pub fn assert_num(what: &str, actual: &Value, expected: Option<f64>) {
    match expected {
        None => assert!(actual.is_null(), "{what}: expected null, got {actual}"),
        Some(e) => {
            let a = actual
                .as_f64()
                .unwrap_or_else(|| panic!("{what}: expected {e}, got {actual}"));
            assert!(close(a, e), "{what}: expected {e}, got {a}");
        }
    }
}

/// Asserts a JSON integer equals `expected`.
pub fn assert_int(what: &str, actual: &Value, expected: u64) {
    assert_eq!(actual.as_u64(), Some(expected), "{what}: got {actual}");
}

/// Asserts a JSON array of numbers is exactly `want`, in order; on a difference,
/// names the first position that differs and shows the neighbourhood.
pub fn assert_same_order(what: &str, got: &Value, want: &[f64]) {
    let got: Vec<f64> = got
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not an array: {got}"))
        .iter()
        .map(|v| {
            v.as_f64()
                .unwrap_or_else(|| panic!("{what}: not a number: {v}"))
        })
        .collect();
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let window = |v: &[f64]| v[first.saturating_sub(2)..(first + 6).min(v.len())].to_vec();
    panic!(
        "{what}: {} values (want {}), first difference at position {first}: \
         got …{:?}…, want …{:?}…",
        got.len(),
        want.len(),
        window(&got),
        window(want)
    );
}

/// Asserts a product ranking page holds exactly the `(product_id, quantity)` items of
/// `want`, by quantity descending, and its `total`. SPEC does not order ties, so
/// items of equal quantity may come in any order.
pub fn assert_product_ranking(page: &Value, want: &[(String, u64)], what: &str) {
    let items = page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no items: {page}"));
    assert_eq!(page["total"], json!(want.len()), "{what}: {page}");
    let quantity = |v: &Value| {
        v["quantity"]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: no quantity in {v}"))
    };
    assert!(
        items.windows(2).all(|w| quantity(&w[0]) >= quantity(&w[1])),
        "{what}: not by quantity descending: {page}"
    );
    let mut got: Vec<(String, u64)> = items
        .iter()
        .map(|v| {
            let id = v["product_id"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no product_id in {v}"));
            (id.to_owned(), quantity(v))
        })
        .collect();
    let mut want = want.to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{what}");
}

/// Asserts `k[field]` matches each `(field, want)` to 1e-9 (`what.field` in messages).
fn assert_nums(what: &str, k: &Value, fields: &[(&str, Option<f64>)]) {
    for (field, want) in fields {
        assert_num(&format!("{what}.{field}"), &k[*field], *want);
    }
}

/// Asserts a K object of `/v1/kpis/sales` (count, sums, averages, min/max) matches
/// `agg`.
pub fn assert_sale_agg(what: &str, agg: &SaleAgg, k: &Value) {
    let avg = |sum: f64| (agg.count > 0).then(|| sum / agg.count as f64);
    assert_int(&format!("{what}.count"), &k["count"], agg.count);
    let quantity_sum = &format!("{what}.quantity_sum");
    assert_int(quantity_sum, &k["quantity_sum"], agg.quantity_sum);
    assert_nums(
        what,
        k,
        &[
            ("price_sum", Some(agg.price_sum)),
            ("revenue", Some(agg.revenue)),
            ("avg_quantity", avg(agg.quantity_sum as f64)),
            ("avg_price", avg(agg.price_sum)),
            ("price_min", agg.price_min),
            ("price_max", agg.price_max),
        ],
    );
}

/// Asserts an object with a tweet count, averages and min/max matches `agg`.
pub fn assert_tweet_agg(what: &str, agg: &TweetAgg, k: &Value) {
    let avg = |sum: f64| (agg.count > 0).then(|| sum / agg.count as f64);
    assert_int(&format!("{what}.count"), &k["count"], agg.count);
    assert_nums(
        what,
        k,
        &[
            ("avg_temperature", avg(agg.temperature_sum)),
            ("avg_humidity", avg(agg.humidity_sum)),
            ("temperature_min", agg.temperature_min),
            ("temperature_max", agg.temperature_max),
        ],
    );
}

/// Asserts the whole `/v1/kpis/sales` answer matches the truth's sales.
pub fn assert_sales_kpis(truth: &Truth, kpis: &Value) {
    assert_sale_agg("total", &truth.sales, &kpis["total"]);
    let categories = kpis["categories"]
        .as_object()
        .unwrap_or_else(|| panic!("no categories object: {kpis}"));
    let mut names: Vec<&str> = categories.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut want = CATEGORIES.to_vec();
    want.sort_unstable();
    assert_eq!(names, want, "every category is present");
    for c in CATEGORIES {
        let k = &categories[c];
        let agg = truth.sales_by_category.get(c).cloned().unwrap_or_default();
        assert_sale_agg(c, &agg, k);
        let monitored = truth.first_product.get(c).map(String::as_str);
        assert_eq!(
            k["monitored_product"].as_str(),
            monitored,
            "{c}.monitored_product: {k}"
        );
    }
}

/// Asserts the whole `/v1/kpis/tweets` answer matches the truth's tweets.
pub fn assert_tweets_kpis(truth: &Truth, kpis: &Value) {
    assert_tweet_agg("total", &truth.tweets, &kpis["total"]);
    let weather = kpis["weather"]
        .as_object()
        .unwrap_or_else(|| panic!("no weather object: {kpis}"));
    for w in WEATHERS {
        assert_int(
            &format!("weather.{w}"),
            &weather
                .get(w)
                .cloned()
                .unwrap_or_else(|| panic!("weather.{w} missing: {kpis}")),
            truth.weather.get(w).copied().unwrap_or(0),
        );
    }
    assert_eq!(weather.len(), WEATHERS.len(), "only known weathers: {kpis}");
}

/// Asserts `id` is a UUIDv7 (the ids flujo assigns).
pub fn assert_uuid_v7(id: &str) {
    let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id:?} is not a UUID: {e}"));
    assert_eq!(uuid.get_version_num(), 7, "{id} should be a UUIDv7");
}

/// Pages through a ranking `limit` items at a time and checks every page, its items
/// (with `check`) and its total; with `past_the_end`, also the empty page after the
/// last one.
pub async fn assert_ranking_pages<T>(
    server: &super::server::TestServer,
    base: &str,
    want: &[T],
    limit: usize,
    past_the_end: bool,
    check: impl Fn(&str, &Value, &T),
) {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut offset = 0;
    loop {
        let path = format!("{base}{sep}limit={limit}&offset={offset}");
        let page = server.get_ok(&path).await;
        assert_eq!(page["total"], json!(want.len()), "{path}: {page}");
        let items = page["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: no items: {page}"));
        let expected = &want[offset.min(want.len())..(offset + limit).min(want.len())];
        assert_eq!(items.len(), expected.len(), "{path}: {page}");
        for (i, (item, exp)) in items.iter().zip(expected).enumerate() {
            check(&format!("{path} item {i}"), item, exp);
        }
        let last = if past_the_end {
            offset >= want.len()
        } else {
            offset + limit >= want.len()
        };
        if last {
            break;
        }
        offset += limit;
    }
}

/// The fields of a sale's canonical JSON on the bus.
pub const CANONICAL_SALE_FIELDS: [&str; 6] =
    ["id", "ts", "category", "product_id", "price", "quantity"];

/// Asserts `json` is an object with exactly the canonical sale fields.
pub fn assert_canonical_sale_fields(what: &str, json: &Value) {
    let fields: std::collections::BTreeSet<&str> = json
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {json}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        CANONICAL_SALE_FIELDS.into(),
        "{what}: exactly the canonical fields"
    );
}

/// Waits until `/v1/kpis/sales` counts the truth's sales, then asserts each category's
/// monitored product is the truth's, and that its price stream holds the truth's
/// prices in the truth's order (`order` names that order in messages, e.g. "the order
/// of the gRPC stream").
pub async fn assert_monitored_in_order(
    server: &super::server::TestServer,
    truth: &Truth,
    what: &str,
    order: &str,
) {
    let kpis = server.wait_sales(truth.sales.count).await;
    for c in CATEGORIES {
        let (product, prices) = truth.monitored_prices(c, 1000);
        assert_eq!(
            kpis["categories"][c]["monitored_product"].as_str(),
            product.as_deref(),
            "{c}: the monitored product is the first one in {order}"
        );
        let got = server
            .get_ok(&format!("/v1/sales/monitored/{c}/prices?limit=1000"))
            .await;
        assert_same_order(
            &format!("{what}, {c}: the price stream follows {order}"),
            &got["prices"],
            &prices,
        );
    }
}

/// Asserts a location ranking item is `want`'s location with its aggregates.
pub fn assert_location_item(what: &str, item: &Value, want: &(String, TweetAgg)) {
    assert_eq!(
        item["location"].as_str(),
        Some(want.0.as_str()),
        "{what}: {item}"
    );
    assert_tweet_agg(what, &want.1, item);
}
