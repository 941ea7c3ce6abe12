//! `--verify`: waits for the pipeline to drain, then compares what the query
//! API reports with the [`Expected`] state, re-reading every 500 ms until the
//! two agree or the timeout passes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::time::Duration;

use serde::Serialize;
use tokio::time::{sleep, Instant};

use super::api::{LocationItem, MonitoredPrices, ProductItem, QueryClient, Ranking, Snapshot};
use super::expected::{Expected, ExpectedPrices};
use super::truth::Truth;

/// How many differences are printed or put in the JSON report.
pub const MAX_SHOWN: usize = 50;

/// Pause between two comparisons.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// One value the server reports differently from the expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Endpoint (and scope) of the value, e.g. `kpis/sales categories.home`.
    pub path: String,
    /// Field within it, e.g. `price_sum` or `items[3]`.
    pub field: String,
    /// Expected value.
    pub expected: String,
    /// Reported value.
    pub got: String,
}

/// Outcome of `--verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// No difference at all (and no ambiguous batch).
    pub ok: bool,
    /// Number of differences found in the last comparison.
    pub differences_total: usize,
    /// The first [`MAX_SHOWN`] differences.
    pub differences: Vec<Difference>,
    /// Batches whose outcome is unknown.
    pub ambiguous_batches: u64,
}

impl VerifyReport {
    /// A report from a full list of differences.
    pub fn new(mut differences: Vec<Difference>, ambiguous_batches: u64) -> Self {
        let differences_total = differences.len();
        differences.truncate(MAX_SHOWN);
        Self {
            ok: differences_total == 0,
            differences_total,
            differences,
            ambiguous_batches,
        }
    }
}

/// Waits for the counts to reach the expectation, then compares until there
/// is no difference or `timeout` has passed.
pub async fn verify(
    client: &QueryClient,
    expected: &Expected,
    truth: &Truth,
    timeout: Duration,
) -> anyhow::Result<VerifyReport> {
    let deadline = Instant::now() + timeout;
    let sales_range = (
        expected.sales.total.count,
        expected.sales.total.count + truth.ambiguous_sales,
    );
    let tweets_range = (
        expected.tweets.total.count,
        expected.tweets.total.count + truth.ambiguous_tweets,
    );
    loop {
        let sales = client.sales_kpis().await?.total.count;
        let tweets = client.tweet_kpis().await?.total.count;
        let within = |n: u64, (lo, hi): (u64, u64)| lo <= n && n <= hi;
        if within(sales, sales_range) && within(tweets, tweets_range) {
            break;
        }
        if sales > sales_range.1 && tweets >= tweets_range.0
            || tweets > tweets_range.1 && sales >= sales_range.0
            || Instant::now() + RETRY_EVERY > deadline
        {
            // Overshot (cannot recover) or out of time: compare what there is.
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    loop {
        let got = client.snapshot().await?;
        let mut differences = Vec::new();
        if truth.ambiguous_batches > 0 {
            differences.push(Difference {
                path: "loadgen".to_string(),
                field: "ambiguous batches".to_string(),
                expected: "0".to_string(),
                got: format!(
                    "{} ({} sales, {} tweets with unknown outcome)",
                    truth.ambiguous_batches, truth.ambiguous_sales, truth.ambiguous_tweets
                ),
            });
        }
        differences.extend(compare(expected, &got));
        // With ambiguous batches the truth itself is uncertain: waiting
        // longer cannot make the comparison exact.
        if differences.is_empty()
            || truth.ambiguous_batches > 0
            || Instant::now() + RETRY_EVERY > deadline
        {
            return Ok(VerifyReport::new(differences, truth.ambiguous_batches));
        }
        sleep(RETRY_EVERY).await;
    }
}

/// Every difference between the expectation and a snapshot.
pub fn compare(expected: &Expected, got: &Snapshot) -> Vec<Difference> {
    let mut d = Diffs::default();
    d.kpi(
        "kpis/sales total",
        expected.sales.total.differences(&got.sales.total),
    );
    for (category, e, g) in by_key(&expected.sales.categories, &got.sales.categories) {
        let path = format!("kpis/sales categories.{category}");
        d.kpi(&path, e.kpi.differences(&g.kpi));
        d.eq(
            &path,
            "monitored_product",
            &shown(&e.monitored_product),
            &shown(&g.monitored_product),
        );
    }

    d.kpi(
        "kpis/tweets total",
        expected.tweets.total.differences(&got.tweets.total),
    );
    for (w, e, g) in by_key(&expected.tweets.weather, &got.tweets.weather) {
        d.eq("kpis/tweets weather", w, &e, &g);
    }

    d.products("rankings/products", &expected.products, &got.products);
    let by_category = by_key(&expected.products_by_category, &got.products_by_category);
    for (category, e, g) in by_category {
        d.products(&format!("rankings/products?category={category}"), &e, &g);
    }
    d.locations("rankings/locations", &expected.locations, &got.locations);

    for (category, e, g) in by_key(&expected.monitored, &got.monitored) {
        d.prices(&format!("sales/monitored/{category}/prices"), &e, &g);
    }
    d.0
}

/// Every key of either map, in order, with its value in each (the default where
/// a map lacks it).
fn by_key<'a, E: Clone + Default, G: Clone + Default>(
    expected: &'a BTreeMap<String, E>,
    got: &'a BTreeMap<String, G>,
) -> impl Iterator<Item = (&'a String, E, G)> {
    let keys: BTreeSet<&String> = expected.keys().chain(got.keys()).collect();
    keys.into_iter().map(|key| {
        let e = expected.get(key).cloned().unwrap_or_default();
        (key, e, got.get(key).cloned().unwrap_or_default())
    })
}

/// Floats agree to 1e-9 relative (1e-9 absolute near zero).
pub fn close(a: f64, b: f64) -> bool {
    let diff = (a - b).abs();
    diff <= 1e-9 || diff <= 1e-9 * a.abs().max(b.abs())
}

fn shown<T: Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "null".to_string(), ToString::to_string)
}

/// A KPI value as `--verify` compares it: counts exactly, sums and statistics
/// (`null` only against `null`) to [`close`] tolerance.
pub trait Field {
    /// `(expected, got)` as a [`Difference`] shows them, when `got` differs from
    /// `self`.
    fn differs(&self, got: &Self) -> Option<(String, String)>;
}

impl Field for u64 {
    fn differs(&self, got: &Self) -> Option<(String, String)> {
        (self != got).then(|| (self.to_string(), got.to_string()))
    }
}

impl Field for f64 {
    fn differs(&self, got: &Self) -> Option<(String, String)> {
        (!close(*self, *got)).then(|| (self.to_string(), got.to_string()))
    }
}

impl Field for Option<f64> {
    fn differs(&self, got: &Self) -> Option<(String, String)> {
        let same = match (self, got) {
            (Some(x), Some(y)) => close(*x, *y),
            (None, None) => true,
            _ => false,
        };
        (!same).then(|| (shown(self), shown(got)))
    }
}

/// Accumulates differences.
#[derive(Default)]
struct Diffs(Vec<Difference>);

impl Diffs {
    fn push(&mut self, path: &str, field: &str, expected: String, got: String) {
        self.0.push(Difference {
            path: path.to_string(),
            field: field.to_string(),
            expected,
            got,
        });
    }

    fn eq<T: PartialEq + Display>(&mut self, path: &str, field: &str, e: &T, g: &T) {
        if e != g {
            self.push(path, field, e.to_string(), g.to_string());
        }
    }

    /// The `differences` of a KPI object, under `path`.
    fn kpi(&mut self, path: &str, differences: Vec<(&str, String, String)>) {
        for (field, e, g) in differences {
            self.push(path, field, e, g);
        }
    }

    /// Rankings are compared position by position, which catches a wrong
    /// quantity and a wrong order alike.
    fn products(&mut self, path: &str, e: &Ranking<ProductItem>, g: &Ranking<ProductItem>) {
        self.eq(path, "total", &e.total, &g.total);
        self.eq(path, "items.len", &e.items.len(), &g.items.len());
        let show = |i: &ProductItem| format!("{} quantity {}", i.product_id, i.quantity);
        for (n, (ei, gi)) in e.items.iter().zip(&g.items).enumerate() {
            if ei != gi {
                self.push(path, &format!("items[{n}]"), show(ei), show(gi));
            }
        }
    }

    fn locations(&mut self, path: &str, e: &Ranking<LocationItem>, g: &Ranking<LocationItem>) {
        self.eq(path, "total", &e.total, &g.total);
        self.eq(path, "items.len", &e.items.len(), &g.items.len());
        for (n, (ei, gi)) in e.items.iter().zip(&g.items).enumerate() {
            let field = format!("items[{n}]");
            if (&ei.location, ei.kpi.count) != (&gi.location, gi.kpi.count) {
                let show = |i: &LocationItem| format!("{} count {}", i.location, i.kpi.count);
                self.push(path, &field, show(ei), show(gi));
                continue;
            }
            // Same count: only the averages and extremes can differ.
            let p = format!("{path} {}", ei.location);
            self.kpi(&p, ei.kpi.differences(&gi.kpi));
        }
    }

    fn prices(&mut self, path: &str, e: &ExpectedPrices, g: &MonitoredPrices) {
        self.eq(
            path,
            "product_id",
            &shown(&e.product_id),
            &shown(&g.product_id),
        );
        self.eq(path, "prices.len", &e.len, &g.prices.len());
        let mut got = g.prices.clone();
        got.sort_by(f64::total_cmp);
        match &e.exact {
            Some(exact) => {
                if got.len() == exact.len() {
                    if let Some((x, y)) = exact.iter().zip(&got).find(|(x, y)| !close(**x, **y)) {
                        self.push(
                            path,
                            "prices (sorted multiset)",
                            format!("{x} (first mismatch)"),
                            y.to_string(),
                        );
                    }
                }
            }
            None => {
                if let Some(p) = got.iter().find(|p| !contains_close(&e.allowed, **p)) {
                    self.push(
                        path,
                        "prices",
                        "only prices loadgen sent or the baseline held".to_string(),
                        format!("{p}"),
                    );
                }
            }
        }
    }
}

/// Whether the sorted `values` hold a value close to `x`.
fn contains_close(values: &[f64], x: f64) -> bool {
    let i = values.partition_point(|v| *v < x);
    [i.checked_sub(1), Some(i)]
        .into_iter()
        .flatten()
        .filter_map(|j| values.get(j))
        .any(|v| close(*v, x))
}

#[cfg(test)]
mod tests {
    use super::super::api::CategoryKpi;
    use super::super::expected::expected;
    use super::super::fixtures::{sale, truth_of, tweet};
    use super::*;

    /// What an exact server would report for `e`.
    fn exact_snapshot(e: &Expected) -> Snapshot {
        Snapshot {
            sales: e.sales.clone(),
            tweets: e.tweets.clone(),
            products: e.products.clone(),
            products_by_category: e.products_by_category.clone(),
            locations: e.locations.clone(),
            monitored: e
                .monitored
                .iter()
                .map(|(c, p)| {
                    let mut prices = p.exact.clone().unwrap_or_default();
                    prices.reverse(); // order is not part of the contract
                    (
                        c.clone(),
                        MonitoredPrices {
                            product_id: p.product_id.clone(),
                            prices,
                        },
                    )
                })
                .collect(),
        }
    }

    fn sample() -> Expected {
        let truth = truth_of(
            vec![
                sale("home", "P3", 10.25, 2),
                sale("home", "P1", 5.5, 3),
                sale("home", "P3", 7.0, 1),
                sale("beauty", "P2", 1.1, 9),
            ],
            vec![
                tweet("Oslo", "rainy", 2.5, 80.0),
                tweet("Lima", "sunny", 25.0, 40.0),
                tweet("Lima", "cloudy", 18.1, 60.0),
            ],
        );
        expected(&Snapshot::default(), &truth)
    }

    fn fields(d: &[Difference]) -> Vec<(&str, &str)> {
        d.iter()
            .map(|x| (x.path.as_str(), x.field.as_str()))
            .collect()
    }

    /// What [`compare`] finds once `change` is made to an exact snapshot of `e`.
    fn compare_changed(e: &Expected, change: impl FnOnce(&mut Snapshot)) -> Vec<Difference> {
        let mut got = exact_snapshot(e);
        change(&mut got);
        compare(e, &got)
    }

    #[test]
    fn exact_match_has_no_difference() {
        let e = sample();
        assert_eq!(compare(&e, &exact_snapshot(&e)), []);
    }

    #[test]
    fn float_noise_within_tolerance_is_accepted() {
        let d = compare_changed(&sample(), |got| {
            got.sales.total.revenue *= 1.0 + 1e-12;
            got.sales.total.price_sum += 1e-13;
        });
        assert_eq!(d, []);
    }

    #[test]
    fn finds_a_wrong_count() {
        let d = compare_changed(&sample(), |got| got.tweets.total.count += 1);
        assert_eq!(fields(&d), [("kpis/tweets total", "count")]);
        assert_eq!((d[0].expected.as_str(), d[0].got.as_str()), ("3", "4"));
    }

    #[test]
    fn finds_a_wrong_float() {
        let e = sample();
        let d = compare_changed(&e, |got| {
            if let Some(home) = got.sales.categories.get_mut("home") {
                home.kpi.revenue += 0.01;
            }
        });
        assert_eq!(fields(&d), [("kpis/sales categories.home", "revenue")]);
        let d = compare_changed(&e, |got| got.locations.items[0].kpi.avg_humidity = None);
        assert_eq!(fields(&d), [("rankings/locations Lima", "avg_humidity")]);
    }

    #[test]
    fn finds_a_wrong_ranking_order() {
        let e = sample();
        assert_eq!(e.products.items[0].product_id, "P2");
        let d = compare_changed(&e, |got| got.products.items.swap(0, 1));
        assert_eq!(
            fields(&d),
            [
                ("rankings/products", "items[0]"),
                ("rankings/products", "items[1]")
            ]
        );
        // Ties are broken by product id, descending: P1 and P3 both have quantity 3.
        let home = &e.products_by_category["home"].items;
        assert_eq!(
            (home[0].product_id.as_str(), home[1].product_id.as_str()),
            ("P3", "P1")
        );
        let d = compare_changed(&e, |got| {
            if let Some(r) = got.products_by_category.get_mut("home") {
                r.items.swap(0, 1);
            }
        });
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn finds_a_wrong_monitored_product() {
        let e = sample();
        let d = compare_changed(&e, |got| {
            got.sales.categories.insert(
                "home".to_string(),
                CategoryKpi {
                    monitored_product: Some("P1".to_string()),
                    ..e.sales.categories["home"].clone()
                },
            );
        });
        assert_eq!(
            fields(&d),
            [("kpis/sales categories.home", "monitored_product")]
        );
        assert_eq!((d[0].expected.as_str(), d[0].got.as_str()), ("P3", "P1"));
    }

    #[test]
    fn finds_wrong_monitored_prices() {
        let e = sample();
        let d = compare_changed(&e, |got| {
            if let Some(m) = got.monitored.get_mut("home") {
                m.prices[0] = 99.0;
            }
        });
        assert_eq!(
            fields(&d),
            [("sales/monitored/home/prices", "prices (sorted multiset)")]
        );
        let d = compare_changed(&e, |got| {
            if let Some(m) = got.monitored.get_mut("home") {
                m.prices.pop();
            }
        });
        assert_eq!(fields(&d), [("sales/monitored/home/prices", "prices.len")]);
    }

    #[test]
    fn overflowing_stream_accepts_any_subset_of_sent_prices() {
        let mut e = Expected::default();
        e.monitored.insert(
            "home".to_string(),
            ExpectedPrices {
                product_id: Some("P1".to_string()),
                len: 2,
                exact: None,
                allowed: vec![1.0, 2.0, 3.0],
            },
        );
        let mut got = Snapshot::default();
        let mut m = MonitoredPrices {
            product_id: Some("P1".to_string()),
            prices: vec![3.0, 1.0],
        };
        got.monitored.insert("home".to_string(), m.clone());
        assert_eq!(compare(&e, &got), []);
        m.prices = vec![3.0, 2.5];
        got.monitored.insert("home".to_string(), m);
        assert_eq!(
            fields(&compare(&e, &got)),
            [("sales/monitored/home/prices", "prices")]
        );
    }

    #[test]
    fn missing_category_counts_as_zero() {
        let e = sample();
        let mut got = exact_snapshot(&e);
        got.sales.categories.remove("clothing");
        assert_eq!(compare(&e, &got), []);
        got.sales.categories.remove("home");
        assert!(compare(&e, &got).len() > 3);
    }

    #[test]
    fn tolerance() {
        assert!(close(0.0, 1e-10));
        assert!(close(1e12, 1e12 + 1e2));
        assert!(!close(1.0, 1.0 + 1e-8));
        assert!(contains_close(&[1.0, 2.0, 3.0], 2.0 + 1e-12));
        assert!(!contains_close(&[1.0, 2.0, 3.0], 2.5));
        assert!(!contains_close(&[], 2.5));
    }

    #[test]
    fn report_truncates() {
        let d = Difference {
            path: "p".to_string(),
            field: "f".to_string(),
            expected: "1".to_string(),
            got: "2".to_string(),
        };
        let r = VerifyReport::new(vec![d; 70], 0);
        assert!(!r.ok);
        assert_eq!((r.differences_total, r.differences.len()), (70, MAX_SHOWN));
    }
}
