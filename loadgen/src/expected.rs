//! The state the server must reach: the baseline snapshot (taken before the
//! load) combined with the ground truth of this run.
//!
//! Counts and integer sums add; float sums add; averages are recomputed from
//! the combined sums (a baseline average is turned back into a sum as
//! `avg × count`); minima and maxima combine; rankings are rebuilt from
//! per-key totals and sorted by value descending, ties by key descending (Valkey's ZREVRANGE order).

use std::collections::BTreeMap;

use super::api::{
    categories_of, ApiState, CategoryKpi, LocationItem, ProductItem, Ranking, SaleKpi, SalesKpis,
    Snapshot, TweetKpi, TweetKpis,
};
use super::truth::{sort_ranked, SaleAgg, Truth, TweetAgg};

/// Capacity of a monitored product's price stream.
pub const PRICE_STREAM: usize = 1000;

/// What the monitored-prices endpoint of one category must answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpectedPrices {
    /// The monitored product.
    pub product_id: Option<String>,
    /// Number of prices returned with `limit=1000`.
    pub len: usize,
    /// When the stream never overflowed: exactly these prices, sorted
    /// (the order of concurrent requests is not defined).
    pub exact: Option<Vec<f64>>,
    /// Every price the stream may hold, sorted.
    pub allowed: Vec<f64>,
}

/// The complete expected state: what the query API must answer, with each
/// category's price stream as the [`ExpectedPrices`] it must hold.
pub type Expected = ApiState<ExpectedPrices>;

/// Combines the baseline with the truth.
pub fn expected(baseline: &Snapshot, truth: &Truth) -> Expected {
    let mut sales = SalesKpis {
        total: combine_sales(&baseline.sales.total, &truth.sales),
        categories: BTreeMap::new(),
    };
    let mut products_by_category = BTreeMap::new();
    let mut monitored = BTreeMap::new();
    for category in categories_of(&baseline.sales) {
        let base = baseline
            .sales
            .categories
            .get(&category)
            .cloned()
            .unwrap_or_default();
        let added = truth
            .sales_by_category
            .get(&category)
            .cloned()
            .unwrap_or_default();
        let base_prices = baseline
            .monitored
            .get(&category)
            .cloned()
            .unwrap_or_default();
        let product = base
            .monitored_product
            .clone()
            .or(base_prices.product_id.clone())
            .or_else(|| truth.first_product.get(&category).cloned());
        sales.categories.insert(
            category.clone(),
            CategoryKpi {
                kpi: combine_sales(&base.kpi, &added),
                monitored_product: product.clone(),
            },
        );
        let base_ranking = baseline
            .products_by_category
            .get(&category)
            .cloned()
            .unwrap_or_default();
        let empty = BTreeMap::new();
        let added_products = truth
            .product_quantity_by_category
            .get(&category)
            .unwrap_or(&empty);
        products_by_category.insert(
            category.clone(),
            combine_products(&base_ranking.items, added_products),
        );
        let prices = match &product {
            Some(p) => expected_prices(p, &base_prices.prices, &truth.prices_of(&category, p)),
            None => ExpectedPrices::default(),
        };
        monitored.insert(category, prices);
    }
    Expected {
        sales,
        tweets: combine_tweets(&baseline.tweets, truth),
        products: combine_products(&baseline.products.items, &truth.product_quantity),
        products_by_category,
        locations: combine_locations(&baseline.locations.items, &truth.locations),
        monitored,
    }
}

/// Sales KPIs of baseline plus truth.
pub fn combine_sales(base: &SaleKpi, added: &SaleAgg) -> SaleKpi {
    let count = base.count + added.count;
    let quantity_sum = base.quantity_sum + added.quantity_sum;
    let price_sum = base.price_sum + added.price_sum;
    SaleKpi {
        count,
        quantity_sum,
        price_sum,
        revenue: base.revenue + added.revenue,
        avg_quantity: ratio(quantity_sum as f64, count),
        avg_price: ratio(price_sum, count),
        price_min: combine_opt(base.price_min, added.price_min, f64::min),
        price_max: combine_opt(base.price_max, added.price_max, f64::max),
    }
}

/// Tweet KPIs of baseline plus truth.
pub fn combine_tweets(base: &TweetKpis, truth: &Truth) -> TweetKpis {
    let mut weather = base.weather.clone();
    for (w, n) in &truth.weather {
        *weather.entry(w.clone()).or_default() += n;
    }
    let all = combine_tweet_agg(&sums_of(&base.total), &truth.tweets);
    TweetKpis {
        total: kpi_of(&all),
        weather,
    }
}

/// A product ranking from baseline entries plus added quantities.
pub fn combine_products(
    base: &[ProductItem],
    added: &BTreeMap<String, u64>,
) -> Ranking<ProductItem> {
    let base = base.iter().map(|i| (i.product_id.clone(), i.quantity));
    let added = added.iter().map(|(product, q)| (product.clone(), *q));
    let items = totals(base.chain(added), |a, b| a + b)
        .into_iter()
        .map(|(product_id, quantity)| ProductItem {
            product_id,
            quantity,
        })
        .collect();
    ranked(items, |i| (i.quantity, &i.product_id))
}

/// The location ranking from baseline entries plus added tweets.
pub fn combine_locations(
    base: &[LocationItem],
    added: &BTreeMap<String, TweetAgg>,
) -> Ranking<LocationItem> {
    let base = base.iter().map(|i| (i.location.clone(), sums_of(&i.kpi)));
    let added = added
        .iter()
        .map(|(location, a)| (location.clone(), a.clone()));
    let items = totals(base.chain(added), combine_tweet_agg)
        .into_iter()
        .map(|(location, a)| LocationItem {
            location,
            kpi: kpi_of(&a),
        })
        .collect();
    ranked(items, |i| (i.kpi.count, &i.location))
}

/// Per key, the `add`ed values of `entries` (in their order, from the default).
fn totals<V: Default>(
    entries: impl Iterator<Item = (String, V)>,
    add: impl Fn(&V, &V) -> V,
) -> BTreeMap<String, V> {
    let mut out: BTreeMap<String, V> = BTreeMap::new();
    for (key, value) in entries {
        let total = out.entry(key).or_default();
        *total = add(total, &value);
    }
    out
}

/// A complete ranking of `items`, in the stores' order (see [`sort_ranked`]).
fn ranked<T>(mut items: Vec<T>, rank: impl Fn(&T) -> (u64, &str)) -> Ranking<T> {
    sort_ranked(&mut items, rank);
    Ranking {
        total: items.len() as u64,
        items,
    }
}

/// What the price stream of `product` must hold, given the baseline's
/// prices (read with `limit=1000`) and the prices this run sold it at.
pub fn expected_prices(product: &str, base: &[f64], added: &[f64]) -> ExpectedPrices {
    let mut allowed: Vec<f64> = base.iter().chain(added).copied().collect();
    allowed.sort_by(f64::total_cmp);
    let len = allowed.len().min(PRICE_STREAM);
    let exact = (allowed.len() <= PRICE_STREAM).then(|| allowed.clone());
    ExpectedPrices {
        product_id: Some(product.to_string()),
        len,
        exact,
        allowed,
    }
}

/// Sums reconstructed from a reported count and averages.
fn sums_of(kpi: &TweetKpi) -> TweetAgg {
    TweetAgg {
        count: kpi.count,
        temperature_sum: kpi.avg_temperature.unwrap_or(0.0) * kpi.count as f64,
        humidity_sum: kpi.avg_humidity.unwrap_or(0.0) * kpi.count as f64,
        temperature_min: kpi.temperature_min,
        temperature_max: kpi.temperature_max,
    }
}

/// The KPIs the API reports for `agg`: averages from the sums.
fn kpi_of(agg: &TweetAgg) -> TweetKpi {
    TweetKpi {
        count: agg.count,
        avg_temperature: ratio(agg.temperature_sum, agg.count),
        avg_humidity: ratio(agg.humidity_sum, agg.count),
        temperature_min: agg.temperature_min,
        temperature_max: agg.temperature_max,
    }
}

fn combine_tweet_agg(a: &TweetAgg, b: &TweetAgg) -> TweetAgg {
    TweetAgg {
        count: a.count + b.count,
        temperature_sum: a.temperature_sum + b.temperature_sum,
        humidity_sum: a.humidity_sum + b.humidity_sum,
        temperature_min: combine_opt(a.temperature_min, b.temperature_min, f64::min),
        temperature_max: combine_opt(a.temperature_max, b.temperature_max, f64::max),
    }
}

fn combine_opt(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(f(x, y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn ratio(sum: f64, count: u64) -> Option<f64> {
    (count > 0).then(|| sum / count as f64)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{sale, truth_of, tweet};
    use super::*;

    fn item(p: &str, q: u64) -> ProductItem {
        ProductItem {
            product_id: p.to_string(),
            quantity: q,
        }
    }

    #[test]
    fn empty_baseline_gives_the_truth() {
        let truth = truth_of(
            vec![
                sale("home", "P3", 10.0, 2),
                sale("home", "P1", 5.0, 2),
                sale("beauty", "P10", 1.0, 9),
            ],
            vec![],
        );
        let e = expected(&Snapshot::default(), &truth);
        assert_eq!(e.sales.total.count, 3);
        assert_eq!(e.sales.total.avg_quantity, Some(13.0 / 3.0));
        assert_eq!(e.sales.total.avg_price, Some(16.0 / 3.0));
        assert_eq!(
            e.sales.categories["home"].monitored_product.as_deref(),
            Some("P3")
        );
        assert_eq!(e.sales.categories["clothing"].kpi, SaleKpi::default());
        assert_eq!(e.sales.categories["clothing"].monitored_product, None);
        // Ties by product id descending (as strings: "P3" > "P1").
        assert_eq!(
            e.products_by_category["home"].items,
            [item("P3", 2), item("P1", 2)]
        );
        assert_eq!(
            e.products.items,
            [item("P10", 9), item("P3", 2), item("P1", 2)]
        );
        assert_eq!(e.products.total, 3);
        assert_eq!(e.monitored["home"].len, 1);
        assert_eq!(e.monitored["home"].exact, Some(vec![10.0]));
        assert_eq!(e.monitored["electronics"], ExpectedPrices::default());
    }

    #[test]
    fn baseline_combines_with_truth() {
        let mut baseline = Snapshot::default();
        baseline.sales.total = SaleKpi {
            count: 2,
            quantity_sum: 4,
            price_sum: 30.0,
            revenue: 60.0,
            avg_quantity: Some(2.0),
            avg_price: Some(15.0),
            price_min: Some(0.5),
            price_max: Some(29.5),
        };
        baseline.sales.categories.insert(
            "home".to_string(),
            CategoryKpi {
                kpi: baseline.sales.total.clone(),
                monitored_product: Some("P7".to_string()),
            },
        );
        baseline.products.items = vec![item("P7", 4)];
        baseline.products.total = 1;
        baseline
            .products_by_category
            .insert("home".to_string(), baseline.products.clone());
        baseline.monitored.insert(
            "home".to_string(),
            super::super::api::MonitoredPrices {
                product_id: Some("P7".to_string()),
                prices: vec![0.5, 29.5],
            },
        );
        baseline.tweets.total = TweetKpi {
            count: 4,
            avg_temperature: Some(10.0),
            avg_humidity: Some(50.0),
            temperature_min: Some(-5.0),
            temperature_max: Some(30.0),
        };
        baseline.tweets.weather.insert("sunny".to_string(), 4);
        baseline.locations.items = vec![LocationItem {
            location: "Oslo".to_string(),
            kpi: baseline.tweets.total.clone(),
        }];

        let truth = truth_of(
            vec![sale("home", "P1", 100.0, 4), sale("home", "P7", 1.0, 1)],
            vec![
                tweet("Oslo", "rainy", 20.0, 100.0),
                tweet("Lima", "sunny", 40.0, 0.0),
            ],
        );
        let e = expected(&baseline, &truth);

        let t = &e.sales.total;
        assert_eq!((t.count, t.quantity_sum), (4, 9));
        assert_eq!(t.price_sum, 131.0);
        assert_eq!(t.revenue, 60.0 + 400.0 + 1.0);
        assert_eq!(t.avg_price, Some(131.0 / 4.0));
        assert_eq!(t.avg_quantity, Some(9.0 / 4.0));
        assert_eq!((t.price_min, t.price_max), (Some(0.5), Some(100.0)));
        // The baseline's monitored product wins over this run's first sale.
        assert_eq!(
            e.sales.categories["home"].monitored_product.as_deref(),
            Some("P7")
        );
        assert_eq!(e.monitored["home"].product_id.as_deref(), Some("P7"));
        assert_eq!(e.monitored["home"].exact, Some(vec![0.5, 1.0, 29.5]));
        assert_eq!(e.products.items, [item("P7", 5), item("P1", 4)]);

        let tw = &e.tweets.total;
        assert_eq!(tw.count, 6);
        assert_eq!(tw.avg_temperature, Some((40.0 + 20.0 + 40.0) / 6.0));
        assert_eq!(tw.avg_humidity, Some((200.0 + 100.0) / 6.0));
        assert_eq!(
            (tw.temperature_min, tw.temperature_max),
            (Some(-5.0), Some(40.0))
        );
        assert_eq!(e.tweets.weather["sunny"], 5);
        assert_eq!(e.tweets.weather["rainy"], 1);
        let oslo = &e.locations.items[0];
        assert_eq!((oslo.location.as_str(), oslo.kpi.count), ("Oslo", 5));
        assert_eq!(oslo.kpi.avg_temperature, Some(12.0));
        assert_eq!(oslo.kpi.avg_humidity, Some(60.0));
        assert_eq!(e.locations.items[1].location, "Lima");
        assert_eq!(e.locations.total, 2);
    }

    #[test]
    fn overflowing_price_stream_is_checked_by_membership() {
        let base: Vec<f64> = (0..900).map(|i| i as f64).collect();
        let added: Vec<f64> = (0..200).map(|i| 1000.0 + i as f64).collect();
        let p = expected_prices("P1", &base, &added);
        assert_eq!(p.len, 1000);
        assert_eq!(p.exact, None);
        assert_eq!(p.allowed.len(), 1100);
        let p = expected_prices("P1", &base[..800], &added);
        assert_eq!(p.len, 1000);
        assert!(p.exact.is_some());
    }
}
