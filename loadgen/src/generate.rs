//! Event data for the load: sales and tweets drawn from seeded random number
//! generators, so that the same `--seed` always produces the same data.
//!
//! Only the data is deterministic. Every event's `id` is `<nonce>-s<n>` (sales)
//! or `<nonce>-t<n>` (tweets), where the nonce is chosen at random per run: a
//! rerun with the same seed sends the same data under new ids (the server
//! dedups by id, so reusing ids would silently drop the rerun's events), while
//! a retried batch keeps its ids and is therefore idempotent.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use flujo_actors::event::Kind;

/// Sale categories, by their canonical English names.
pub const CATEGORIES: [&str; 4] = ["electronics", "clothing", "home", "beauty"];

/// Weather values a tweet may carry.
pub const WEATHERS: [&str; 6] = ["sunny", "cloudy", "rainy", "foggy", "snowy", "stormy"];

/// Cities the generated tweets come from.
pub const LOCATIONS: [&str; 30] = [
    "Amsterdam",
    "Athens",
    "Barcelona",
    "Berlin",
    "Bogota",
    "Brussels",
    "Buenos Aires",
    "Cairo",
    "Copenhagen",
    "Dublin",
    "Guadalajara",
    "Helsinki",
    "Istanbul",
    "Lima",
    "Lisbon",
    "London",
    "Madrid",
    "Medellin",
    "Mexico City",
    "Montevideo",
    "Oslo",
    "Paris",
    "Prague",
    "Quito",
    "Rome",
    "Santiago",
    "Seville",
    "Stockholm",
    "Valencia",
    "Vienna",
];

/// Number of distinct products (`P1` ..= `P200`).
pub const PRODUCTS: u32 = 200;

/// Phrases used for the optional tweet text.
const PHRASES: [&str; 6] = [
    "what a day",
    "stay safe out there",
    "perfect for a walk",
    "taking an umbrella",
    "coffee weather",
    "can't believe this",
];

/// Seed offsets, so that sales, tweets and warm-up sales use independent
/// streams: the sales data does not change with `--kind` or `--verify`.
const SALES_STREAM: u64 = 0x5a1e_5a1e_5a1e_5a1e;
const TWEETS_STREAM: u64 = 0x7ee7_7ee7_7ee7_7ee7;
const WARMUP_STREAM: u64 = 0x3a3a_3a3a_3a3a_3a3a;

/// Milliseconds since the epoch now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One sale, serialized exactly as `POST /v1/sales` expects it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sale {
    /// Event id chosen by loadgen (nonce + sequence number).
    pub id: String,
    /// Event time (ms since the epoch): when loadgen made the sale. Sent, so the
    /// ground truth knows each category's earliest sale by (`ts`, `id`).
    pub ts: i64,
    /// Category, one of [`CATEGORIES`].
    pub category: &'static str,
    /// Product, `P1` ..= `P200`.
    pub product_id: String,
    /// Unit price, 0.01 ..= 2000.00 with two decimals.
    pub price: f64,
    /// Units sold, 1 ..= 20.
    pub quantity: u64,
}

/// One weather tweet, serialized exactly as `POST /v1/tweets` expects it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tweet {
    /// Event id chosen by loadgen (nonce + sequence number).
    pub id: String,
    /// City (loadgen's are from [`LOCATIONS`]).
    pub location: String,
    /// Weather, one of [`WEATHERS`].
    pub weather: &'static str,
    /// Temperature in °C, −10.0 ..= 40.0 with one decimal.
    pub temperature: f64,
    /// Relative humidity in %, an integer 0 ..= 100.
    pub humidity: f64,
    /// Optional free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Which events a run sends (`--kind`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindMix {
    /// Only sales.
    Sales,
    /// Only tweets.
    Tweets,
    /// Sales and tweets, alternating request by request.
    Mixed,
}

impl KindMix {
    /// Whether this run sends sales at all.
    pub fn has_sales(self) -> bool {
        matches!(self, KindMix::Sales | KindMix::Mixed)
    }
}

/// The events of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// A batch of sales.
    Sales(Vec<Sale>),
    /// A batch of tweets.
    Tweets(Vec<Tweet>),
}

impl Batch {
    /// Number of events in the batch.
    pub fn len(&self) -> usize {
        match self {
            Batch::Sales(v) => v.len(),
            Batch::Tweets(v) => v.len(),
        }
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kind of the batch's events.
    pub fn kind(&self) -> Kind {
        match self {
            Batch::Sales(_) => Kind::Sale,
            Batch::Tweets(_) => Kind::Tweet,
        }
    }

    /// The events at `indices` (in that order; indices out of range are
    /// skipped), as a batch of the same kind.
    pub fn subset(&self, indices: &[usize]) -> Batch {
        fn pick<T: Clone>(events: &[T], indices: &[usize]) -> Vec<T> {
            indices
                .iter()
                .filter_map(|&i| events.get(i).cloned())
                .collect()
        }
        match self {
            Batch::Sales(v) => Batch::Sales(pick(v, indices)),
            Batch::Tweets(v) => Batch::Tweets(pick(v, indices)),
        }
    }
}

/// A random unit price with cents, 0.01 ..= 2000.00.
pub fn random_price(rng: &mut impl Rng) -> f64 {
    f64::from(rng.random_range(1..=200_000u32)) / 100.0
}

/// A sale of `product` in `category` with a random price (see [`random_price`]) and
/// quantity (1 ..= 20).
pub fn random_sale(rng: &mut impl Rng, id: String, category: &'static str, product: &str) -> Sale {
    let price = random_price(rng);
    Sale {
        id,
        ts: now_ms(),
        category,
        product_id: product.to_owned(),
        price,
        quantity: rng.random_range(1..=20u64),
    }
}

/// A tweet from one of `locations` with a random weather, and a temperature and
/// humidity over wider ranges than the load's (−90.0 ..= 60.0 °C and 0.0 ..= 100.0 %,
/// tenths), or whole numbers (−20 ..= 45 °C) when `whole`, as the seeds' files carry
/// them. No text.
pub fn random_tweet(rng: &mut impl Rng, id: String, locations: &[&str], whole: bool) -> Tweet {
    let (temperature, humidity) = if whole {
        (
            f64::from(rng.random_range(-20..=45)),
            f64::from(rng.random_range(0..=100)),
        )
    } else {
        (
            f64::from(rng.random_range(-900..=600)) / 10.0,
            f64::from(rng.random_range(0..=1000)) / 10.0,
        )
    };
    Tweet {
        id,
        location: locations.choose(rng).copied().unwrap_or("Lima").to_owned(),
        weather: WEATHERS.choose(rng).copied().unwrap_or(WEATHERS[0]),
        temperature,
        humidity,
        text: None,
    }
}

/// Deterministic source of events: same seed, same data (ids aside).
#[derive(Debug)]
pub struct Generator {
    sales: StdRng,
    tweets: StdRng,
    warmup: StdRng,
    nonce: String,
    next_sale: u64,
    next_tweet: u64,
    next_request: u64,
}

impl Generator {
    /// A generator for `seed`, whose ids all start with `nonce`.
    pub fn new(seed: u64, nonce: impl Into<String>) -> Self {
        Self {
            sales: StdRng::seed_from_u64(seed ^ SALES_STREAM),
            tweets: StdRng::seed_from_u64(seed ^ TWEETS_STREAM),
            warmup: StdRng::seed_from_u64(seed ^ WARMUP_STREAM),
            nonce: nonce.into(),
            next_sale: 0,
            next_tweet: 0,
            next_request: 0,
        }
    }

    /// A fresh random nonce for a run's ids (not derived from the seed).
    pub fn random_nonce() -> String {
        format!("lg{:016x}", rand::random::<u64>())
    }

    /// The next sale.
    pub fn sale(&mut self) -> Sale {
        let category = CATEGORIES
            .choose(&mut self.sales)
            .copied()
            .unwrap_or(CATEGORIES[0]);
        self.sale_in(category, false)
    }

    /// A sale in `category`, drawn from the warm-up stream (which does not
    /// disturb the main sales stream).
    pub fn warmup_sale(&mut self, category: &'static str) -> Sale {
        self.sale_in(category, true)
    }

    fn sale_in(&mut self, category: &'static str, warmup: bool) -> Sale {
        let rng = if warmup {
            &mut self.warmup
        } else {
            &mut self.sales
        };
        let product = rng.random_range(1..=PRODUCTS);
        let id = format!("{}-s{}", self.nonce, self.next_sale);
        self.next_sale += 1;
        random_sale(rng, id, category, &format!("P{product}"))
    }

    /// The next tweet.
    pub fn tweet(&mut self) -> Tweet {
        let rng = &mut self.tweets;
        let location = LOCATIONS.choose(rng).copied().unwrap_or(LOCATIONS[0]);
        let weather = WEATHERS.choose(rng).copied().unwrap_or(WEATHERS[0]);
        let tenths: i32 = rng.random_range(-100..=400);
        let humidity: u32 = rng.random_range(0..=100);
        let text = if rng.random_bool(0.3) {
            let phrase = PHRASES.choose(rng).copied().unwrap_or(PHRASES[0]);
            Some(format!("{weather} in {location}, {phrase}"))
        } else {
            None
        };
        let id = format!("{}-t{}", self.nonce, self.next_tweet);
        self.next_tweet += 1;
        Tweet {
            id,
            location: location.to_owned(),
            weather,
            temperature: f64::from(tenths) / 10.0,
            humidity: f64::from(humidity),
            text,
        }
    }

    /// The next request's batch of `size` events. With [`KindMix::Mixed`],
    /// requests alternate between sales and tweets.
    pub fn next_batch(&mut self, kind: KindMix, size: usize) -> Batch {
        let request = self.next_request;
        self.next_request += 1;
        let sales = match kind {
            KindMix::Sales => true,
            KindMix::Tweets => false,
            KindMix::Mixed => request.is_multiple_of(2),
        };
        if sales {
            Batch::Sales((0..size).map(|_| self.sale()).collect())
        } else {
            Batch::Tweets((0..size).map(|_| self.tweet()).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn strip_sale(s: &Sale) -> (&'static str, String, f64, u64) {
        (s.category, s.product_id.clone(), s.price, s.quantity)
    }

    #[test]
    fn same_seed_same_data_different_ids() {
        let mut a = Generator::new(7, "runA");
        let mut b = Generator::new(7, "runB");
        for _ in 0..50 {
            let (ba, bb) = (
                a.next_batch(KindMix::Mixed, 3),
                b.next_batch(KindMix::Mixed, 3),
            );
            match (ba, bb) {
                (Batch::Sales(x), Batch::Sales(y)) => {
                    for (s, t) in x.iter().zip(&y) {
                        assert_eq!(strip_sale(s), strip_sale(t));
                        assert_ne!(s.id, t.id);
                    }
                }
                (Batch::Tweets(x), Batch::Tweets(y)) => {
                    for (s, t) in x.iter().zip(&y) {
                        assert_eq!(
                            Tweet {
                                id: String::new(),
                                ..s.clone()
                            },
                            Tweet {
                                id: String::new(),
                                ..t.clone()
                            }
                        );
                    }
                }
                other => panic!("kinds diverged: {other:?}"),
            }
        }
    }

    #[test]
    fn different_seeds_differ() {
        let mut a = Generator::new(1, "n");
        let mut b = Generator::new(2, "n");
        let xa: Vec<_> = (0..20).map(|_| strip_sale(&a.sale())).collect();
        let xb: Vec<_> = (0..20).map(|_| strip_sale(&b.sale())).collect();
        assert_ne!(xa, xb);
    }

    #[test]
    fn warmup_does_not_shift_the_main_stream() {
        let mut a = Generator::new(3, "n");
        let mut b = Generator::new(3, "n");
        for c in CATEGORIES {
            let w = b.warmup_sale(c);
            assert_eq!(w.category, c);
        }
        for _ in 0..20 {
            assert_eq!(strip_sale(&a.sale()), strip_sale(&b.sale()));
        }
    }

    #[test]
    fn values_are_in_range_and_ids_unique() {
        let mut g = Generator::new(11, "n");
        let mut ids = HashSet::new();
        for _ in 0..2000 {
            let s = g.sale();
            assert!(CATEGORIES.contains(&s.category));
            let n: u32 = s.product_id[1..].parse().expect("numeric product");
            assert!((1..=PRODUCTS).contains(&n));
            assert!(s.price >= 0.01 && s.price <= 2000.0);
            assert!((s.price * 100.0 - (s.price * 100.0).round()).abs() < 1e-6);
            assert!((1..=20).contains(&s.quantity));
            assert!(ids.insert(s.id));
            let t = g.tweet();
            assert!(LOCATIONS.contains(&t.location.as_str()));
            assert!(WEATHERS.contains(&t.weather));
            assert!((-10.0..=40.0).contains(&t.temperature));
            assert!((0.0..=100.0).contains(&t.humidity));
            assert!(t.text.as_ref().is_none_or(|x| x.len() <= 280));
            assert!(ids.insert(t.id));
        }
    }

    #[test]
    fn single_kind_batches() {
        let mut g = Generator::new(1, "n");
        for _ in 0..4 {
            assert_eq!(g.next_batch(KindMix::Sales, 2).kind(), Kind::Sale);
            assert_eq!(g.next_batch(KindMix::Tweets, 5).len(), 5);
        }
        let kinds: Vec<_> = (0..4)
            .map(|_| g.next_batch(KindMix::Mixed, 1).kind())
            .collect();
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Sale).count(), 2);
    }

    #[test]
    fn subset_picks_events_in_order() {
        let mut g = Generator::new(1, "n");
        let b = g.next_batch(KindMix::Tweets, 4);
        let Batch::Tweets(all) = &b else {
            panic!("tweets expected");
        };
        let Batch::Tweets(some) = b.subset(&[3, 1, 9]) else {
            panic!("tweets expected");
        };
        assert_eq!(some, [all[3].clone(), all[1].clone()]);
        assert_eq!(b.subset(&[]).len(), 0);
    }

    #[test]
    fn sale_serializes_with_contract_fields() {
        let mut g = Generator::new(1, "n");
        let v = serde_json::to_value(g.sale()).expect("json");
        let mut keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["category", "id", "price", "product_id", "quantity", "ts"]
        );
    }
}
