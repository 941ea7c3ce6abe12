//! The ground truth: what the server must have aggregated from the events
//! loadgen sent and the server acknowledged (HTTP 202, a gRPC `Ack`, or a
//! TCP `ok` line per event).
//!
//! Written to be obviously correct rather than fast: plain `f64` sums in the
//! order the acks arrived, plain maps, no cleverness. It knows nothing about
//! the server's earlier state; `expected.rs` combines it with the baseline.

use std::collections::{BTreeMap, HashSet};
use std::ops::Deref;

use super::expected::PRICE_STREAM;
use super::generate::{Batch, Sale, Tweet};

/// Aggregates of a set of sales.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SaleAgg {
    /// Number of sales.
    pub count: u64,
    /// Σ quantity.
    pub quantity_sum: u64,
    /// Σ unit price.
    pub price_sum: f64,
    /// Σ price × quantity.
    pub revenue: f64,
    /// Lowest unit price, `None` when empty.
    pub price_min: Option<f64>,
    /// Highest unit price, `None` when empty.
    pub price_max: Option<f64>,
}

impl SaleAgg {
    /// Adds one sale.
    pub fn add(&mut self, sale: &Sale) {
        self.count += 1;
        self.quantity_sum += sale.quantity;
        self.price_sum += sale.price;
        self.revenue += sale.price * sale.quantity as f64;
        self.price_min = Some(self.price_min.map_or(sale.price, |m| m.min(sale.price)));
        self.price_max = Some(self.price_max.map_or(sale.price, |m| m.max(sale.price)));
    }
}

/// Aggregates of a set of tweets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TweetAgg {
    /// Number of tweets.
    pub count: u64,
    /// Σ temperature.
    pub temperature_sum: f64,
    /// Σ humidity.
    pub humidity_sum: f64,
    /// Lowest temperature, `None` when empty.
    pub temperature_min: Option<f64>,
    /// Highest temperature, `None` when empty.
    pub temperature_max: Option<f64>,
}

impl TweetAgg {
    /// Adds one tweet.
    pub fn add(&mut self, tweet: &Tweet) {
        self.count += 1;
        self.temperature_sum += tweet.temperature;
        self.humidity_sum += tweet.humidity;
        let t = tweet.temperature;
        self.temperature_min = Some(self.temperature_min.map_or(t, |m| m.min(t)));
        self.temperature_max = Some(self.temperature_max.map_or(t, |m| m.max(t)));
    }
}

/// One accepted sale's (`ts`, `id`, price).
pub type PricePoint = (i64, String, f64);

/// Everything loadgen knows the server accepted during this run.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    /// All accepted sales.
    pub sales: SaleAgg,
    /// Accepted sales per category.
    pub sales_by_category: BTreeMap<String, SaleAgg>,
    /// Product of the earliest accepted sale by (`ts`, `id`) in each category:
    /// the monitored product.
    pub first_product: BTreeMap<String, String>,
    /// (`ts`, `id`) of that sale.
    pub earliest: BTreeMap<String, (i64, String)>,
    /// Σ quantity per product, over all categories.
    pub product_quantity: BTreeMap<String, u64>,
    /// Σ quantity per category, then per product.
    pub product_quantity_by_category: BTreeMap<String, BTreeMap<String, u64>>,
    /// Unit prices per (category, product) with their (`ts`, `id`), in
    /// acknowledgement order.
    pub prices: BTreeMap<(String, String), Vec<PricePoint>>,
    /// All accepted tweets.
    pub tweets: TweetAgg,
    /// Accepted tweets per weather.
    pub weather: BTreeMap<String, u64>,
    /// Accepted tweets per location.
    pub locations: BTreeMap<String, TweetAgg>,
    /// Batches whose outcome is unknown (sent, but no definitive answer).
    pub ambiguous_batches: u64,
    /// Sales in those batches.
    pub ambiguous_sales: u64,
    /// Tweets in those batches.
    pub ambiguous_tweets: u64,
}

impl Truth {
    /// Records a batch (or the part of a TCP batch) the server acknowledged.
    pub fn add_batch(&mut self, batch: &Batch) {
        match batch {
            Batch::Sales(sales) => sales.iter().for_each(|s| self.add_sale(s)),
            Batch::Tweets(tweets) => tweets.iter().for_each(|t| self.add_tweet(t)),
        }
    }

    /// Records a batch that may or may not have been stored.
    pub fn add_ambiguous(&mut self, batch: &Batch) {
        self.ambiguous_batches += 1;
        match batch {
            Batch::Sales(v) => self.ambiguous_sales += v.len() as u64,
            Batch::Tweets(v) => self.ambiguous_tweets += v.len() as u64,
        }
    }

    /// Records one accepted sale.
    pub fn add_sale(&mut self, sale: &Sale) {
        let category = sale.category.to_string();
        self.sales.add(sale);
        self.sales_by_category
            .entry(category.clone())
            .or_default()
            .add(sale);
        let key = (sale.ts, sale.id.clone());
        if self.earliest.get(&category).is_none_or(|e| key < *e) {
            self.earliest.insert(category.clone(), key);
            self.first_product
                .insert(category.clone(), sale.product_id.clone());
        }
        *self
            .product_quantity
            .entry(sale.product_id.clone())
            .or_default() += sale.quantity;
        *self
            .product_quantity_by_category
            .entry(category.clone())
            .or_default()
            .entry(sale.product_id.clone())
            .or_default() += sale.quantity;
        self.prices
            .entry((category, sale.product_id.clone()))
            .or_default()
            .push((sale.ts, sale.id.clone(), sale.price));
    }

    /// Records one accepted tweet.
    pub fn add_tweet(&mut self, tweet: &Tweet) {
        self.tweets.add(tweet);
        *self.weather.entry(tweet.weather.to_string()).or_default() += 1;
        self.locations
            .entry(tweet.location.clone())
            .or_default()
            .add(tweet);
    }

    /// Prices of `product` sold in `category`, by (`ts`, `id`): the order of its
    /// price stream.
    pub fn prices_of(&self, category: &str, product: &str) -> Vec<f64> {
        let mut points: Vec<&PricePoint> = self
            .prices
            .get(&(category.to_string(), product.to_string()))
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        points.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        points.iter().map(|p| p.2).collect()
    }

    /// Products with their Σ quantity (over every category, or within `category`),
    /// by quantity descending, ties by product id descending: the order the stores
    /// document (a Valkey sorted set read with `ZREVRANGE`).
    pub fn product_ranking(&self, category: Option<&str>) -> Vec<(String, u64)> {
        let source = match category {
            None => Some(&self.product_quantity),
            Some(c) => self.product_quantity_by_category.get(c),
        };
        let mut items: Vec<(String, u64)> = source
            .into_iter()
            .flatten()
            .map(|(p, q)| (p.clone(), *q))
            .collect();
        sort_ranked(&mut items, |(product, quantity)| (*quantity, product));
        items
    }

    /// Locations with their aggregates, by tweet count descending, ties by location
    /// descending.
    pub fn location_ranking(&self) -> Vec<(String, TweetAgg)> {
        let mut items: Vec<(String, TweetAgg)> = self
            .locations
            .iter()
            .map(|(l, agg)| (l.clone(), agg.clone()))
            .collect();
        sort_ranked(&mut items, |(location, agg)| (agg.count, location));
        items
    }

    /// The monitored product of `category` (the product of its earliest sale by
    /// (`ts`, `id`)) and the
    /// newest `limit` of its prices the server keeps (at most 1,000),
    /// newest last.
    pub fn monitored_prices(&self, category: &str, limit: usize) -> (Option<String>, Vec<f64>) {
        match self.first_product.get(category) {
            None => (None, Vec::new()),
            Some(product) => {
                let prices = self.prices_of(category, product);
                let kept = prices.len().min(PRICE_STREAM).min(limit);
                (
                    Some(product.clone()),
                    prices[prices.len() - kept..].to_vec(),
                )
            }
        }
    }
}

/// Sorts `items` the way the stores rank: by the value of `rank` descending, ties
/// by its key descending (the order of a Valkey sorted set read with `ZREVRANGE`).
pub fn sort_ranked<T>(items: &mut [T], rank: impl Fn(&T) -> (u64, &str)) {
    items.sort_by(|a, b| rank(b).cmp(&rank(a)));
}

/// The truth of a server that applies each event id once per kind (SPEC's dedup): a
/// resent event counts once, whatever values it carries the second time. What the
/// integration tests feed with every event they send; reads go through [`Truth`].
#[derive(Debug, Default)]
pub struct DedupTruth {
    seen_sales: HashSet<String>,
    seen_tweets: HashSet<String>,
    truth: Truth,
}

impl DedupTruth {
    /// Applies `sale` unless a sale with its id was applied; true when it counted.
    pub fn apply_sale(&mut self, sale: &Sale) -> bool {
        let new = self.seen_sales.insert(sale.id.clone());
        if new {
            self.truth.add_sale(sale);
        }
        new
    }

    /// Applies `tweet` unless a tweet with its id was applied; true when it counted.
    pub fn apply_tweet(&mut self, tweet: &Tweet) -> bool {
        let new = self.seen_tweets.insert(tweet.id.clone());
        if new {
            self.truth.add_tweet(tweet);
        }
        new
    }
}

impl Deref for DedupTruth {
    type Target = Truth;

    fn deref(&self) -> &Truth {
        &self.truth
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{sale, tweet};
    use super::*;

    #[test]
    fn aggregates_a_known_set_of_sales() {
        let mut t = Truth::default();
        t.add_batch(&Batch::Sales(vec![
            sale("home", "P2", 10.0, 3),
            sale("home", "P1", 2.5, 1),
            sale("beauty", "P2", 4.0, 2),
        ]));
        assert_eq!(t.sales.count, 3);
        assert_eq!(t.sales.quantity_sum, 6);
        assert_eq!(t.sales.price_sum, 16.5);
        assert_eq!(t.sales.revenue, 30.0 + 2.5 + 8.0);
        assert_eq!(t.sales.price_min, Some(2.5));
        assert_eq!(t.sales.price_max, Some(10.0));
        let home = &t.sales_by_category["home"];
        assert_eq!((home.count, home.quantity_sum), (2, 4));
        assert_eq!(home.revenue, 32.5);
        assert_eq!(t.first_product["home"], "P2");
        assert_eq!(t.first_product["beauty"], "P2");
        assert!(!t.first_product.contains_key("clothing"));
        assert_eq!(t.product_quantity["P2"], 5);
        assert_eq!(t.product_quantity["P1"], 1);
        assert_eq!(t.product_quantity_by_category["home"]["P2"], 3);
        assert_eq!(t.product_quantity_by_category["beauty"]["P2"], 2);
        assert_eq!(t.prices_of("home", "P2"), [10.0]);
        assert_eq!(t.prices_of("home", "P9"), [] as [f64; 0]);
    }

    #[test]
    fn aggregates_a_known_set_of_tweets() {
        let mut t = Truth::default();
        t.add_batch(&Batch::Tweets(vec![
            tweet("Lima", "sunny", 20.0, 50.0),
            tweet("Lima", "rainy", -2.5, 90.0),
            tweet("Oslo", "sunny", 5.0, 70.0),
        ]));
        assert_eq!(t.tweets.count, 3);
        assert_eq!(t.tweets.temperature_sum, 22.5);
        assert_eq!(t.tweets.humidity_sum, 210.0);
        assert_eq!(t.tweets.temperature_min, Some(-2.5));
        assert_eq!(t.tweets.temperature_max, Some(20.0));
        assert_eq!(t.weather["sunny"], 2);
        assert_eq!(t.weather["rainy"], 1);
        let lima = &t.locations["Lima"];
        assert_eq!(
            (lima.count, lima.temperature_sum, lima.humidity_sum),
            (2, 17.5, 140.0)
        );
        assert_eq!(lima.temperature_min, Some(-2.5));
    }

    #[test]
    fn rankings_and_monitored_prices() {
        let mut t = Truth::default();
        t.add_batch(&Batch::Sales(vec![
            sale("home", "P2", 10.0, 3),
            sale("home", "P1", 2.5, 3),
            sale("beauty", "P3", 4.0, 7),
            sale("home", "P2", 11.0, 1),
        ]));
        let global = [("P3".into(), 7), ("P2".into(), 4), ("P1".into(), 3)];
        assert_eq!(t.product_ranking(None), global);
        let home = [("P2".to_string(), 4), ("P1".to_string(), 3)];
        assert_eq!(t.product_ranking(Some("home")), home);
        assert!(t.product_ranking(Some("clothing")).is_empty());
        assert_eq!(
            t.monitored_prices("home", 1),
            (Some("P2".into()), vec![11.0])
        );
        assert_eq!(t.monitored_prices("clothing", 9), (None, vec![]));
        t.add_batch(&Batch::Tweets(vec![
            tweet("Lima", "sunny", 1.0, 1.0),
            tweet("Oslo", "sunny", 1.0, 1.0),
            tweet("Oslo", "rainy", 3.0, 1.0),
        ]));
        let order: Vec<String> = t.location_ranking().into_iter().map(|(l, _)| l).collect();
        assert_eq!(order, ["Oslo", "Lima"]);
    }

    #[test]
    fn dedup_truth_counts_an_id_once_per_kind() {
        let mut t = DedupTruth::default();
        let s = sale("home", "P1", 1.0, 1);
        assert!(t.apply_sale(&s));
        assert!(!t.apply_sale(&Sale {
            price: 9.0,
            ..s.clone()
        }));
        let tw = Tweet {
            id: s.id.clone(),
            ..tweet("Lima", "sunny", 1.0, 1.0)
        };
        assert!(t.apply_tweet(&tw));
        assert_eq!(
            (t.sales.count, t.sales.price_sum, t.tweets.count),
            (1, 1.0, 1)
        );
    }

    #[test]
    fn ambiguous_batches_are_counted_not_aggregated() {
        let mut t = Truth::default();
        t.add_ambiguous(&Batch::Sales(vec![sale("home", "P1", 1.0, 1)]));
        t.add_ambiguous(&Batch::Tweets(vec![
            tweet("Lima", "sunny", 1.0, 1.0),
            tweet("Lima", "sunny", 1.0, 1.0),
        ]));
        assert_eq!(t.ambiguous_batches, 2);
        assert_eq!((t.ambiguous_sales, t.ambiguous_tweets), (1, 2));
        assert_eq!(t.sales.count + t.tweets.count, 0);
    }
}
