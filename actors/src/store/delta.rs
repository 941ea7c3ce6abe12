//! A batch folded into per-key changes ([`SalesDelta`], [`TweetsDelta`]), so a store
//! does work in proportion to the keys a batch touches, not to its events. Every
//! store merges the same deltas the same way (floating sums: the batch's sum,
//! folded from zero in event order, added to the stored sum), so they answer with
//! the same values.

use crate::event::{Category, Sale, Tweet, Weather};
use std::collections::HashMap;

/// Count, sum and extremes of one measure over some events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fold {
    /// Number of values.
    pub count: u64,
    /// Their sum, added in order from 0.
    pub sum: f64,
    /// The lowest (meaningless when `count` is 0).
    pub min: f64,
    /// The highest (meaningless when `count` is 0).
    pub max: f64,
}

impl Fold {
    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        if self.count == 0 {
            (self.min, self.max) = (x, x);
        } else {
            (self.min, self.max) = (self.min.min(x), self.max.max(x));
        }
        self.count += 1;
        self.sum += x;
    }

    /// Adds another fold (e.g. a batch's) to this one (e.g. the stored totals).
    pub fn merge(&mut self, other: &Fold) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            (self.min, self.max) = (other.min, other.max);
        } else {
            (self.min, self.max) = (self.min.min(other.min), self.max.max(other.max));
        }
        self.count += other.count;
        self.sum += other.sum;
    }
}

/// The sales aggregates of one scope (all sales, or a category) over some sales.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SaleScope {
    /// Unit prices.
    pub price: Fold,
    /// Σ quantity.
    pub quantity_sum: u64,
    /// Σ price × quantity, in order from 0.
    pub revenue: f64,
}

impl SaleScope {
    /// Adds one sale.
    pub fn add(&mut self, s: &Sale) {
        self.price.add(s.price);
        self.quantity_sum += s.quantity;
        self.revenue += s.price * s.quantity as f64;
    }

    /// Adds another scope.
    pub fn merge(&mut self, other: &SaleScope) {
        self.price.merge(&other.price);
        self.quantity_sum += other.quantity_sum;
        self.revenue += other.revenue;
    }
}

/// The tweet aggregates of one scope (all tweets, or a location) over some tweets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TweetScope {
    /// Temperatures.
    pub temperature: Fold,
    /// Σ humidity, in order from 0.
    pub humidity_sum: f64,
}

impl TweetScope {
    /// Adds one tweet.
    pub fn add(&mut self, t: &Tweet) {
        self.temperature.add(t.temperature);
        self.humidity_sum += t.humidity;
    }

    /// Adds another scope.
    pub fn merge(&mut self, other: &TweetScope) {
        self.temperature.merge(&other.temperature);
        self.humidity_sum += other.humidity_sum;
    }
}

/// Named counters in the order their names were first added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally<T> {
    /// (name, value), first-added order.
    pub items: Vec<(String, T)>,
    index: HashMap<String, usize>,
}

impl<T: Default> Tally<T> {
    /// The value of `name`, added (as the default) if new.
    pub fn entry(&mut self, name: &str) -> &mut T {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.index.insert(name.to_owned(), self.items.len());
                self.items.push((name.to_owned(), T::default()));
                self.items.len() - 1
            }
        };
        &mut self.items[i].1
    }
}

/// One category's part of a [`SalesDelta`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CategoryDelta {
    /// The category's aggregates.
    pub scope: SaleScope,
    /// Quantity sold per product in the category.
    pub products: Tally<u64>,
    /// Every sale's (product, price), in order: the monitored product's price
    /// stream takes those of its product.
    pub prices: Vec<(String, f64)>,
}

impl CategoryDelta {
    /// The product of the category's first sale in the batch.
    pub fn first_product(&self) -> Option<&str> {
        self.prices.first().map(|(p, _)| p.as_str())
    }

    /// The prices of `product`'s sales, in order.
    pub fn prices_of(&self, product: &str) -> Vec<f64> {
        self.prices
            .iter()
            .filter(|(p, _)| p == product)
            .map(|&(_, x)| x)
            .collect()
    }
}

/// A batch of sales as per-key changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SalesDelta {
    /// All sales.
    pub total: SaleScope,
    /// Per category (index = [`Category::index`]).
    pub categories: [CategoryDelta; 4],
    /// Quantity sold per product, all categories.
    pub products: Tally<u64>,
}

impl SalesDelta {
    /// Folds `sales`, in order.
    pub fn of<'a>(sales: impl IntoIterator<Item = &'a Sale>) -> SalesDelta {
        let mut d = SalesDelta::default();
        for s in sales {
            d.total.add(s);
            let c = &mut d.categories[s.category.index()];
            c.scope.add(s);
            *c.products.entry(&s.product_id) += s.quantity;
            c.prices.push((s.product_id.clone(), s.price));
            *d.products.entry(&s.product_id) += s.quantity;
        }
        d
    }

    /// The categories with sales in the batch.
    pub fn touched(&self) -> impl Iterator<Item = (Category, &CategoryDelta)> {
        Category::ALL
            .iter()
            .map(|&c| (c, &self.categories[c.index()]))
            .filter(|(_, d)| d.scope.price.count > 0)
    }
}

/// A batch of tweets as per-key changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TweetsDelta {
    /// All tweets.
    pub total: TweetScope,
    /// Tweets per weather (index = [`Weather::index`]).
    pub weather: [u64; 6],
    /// Per location.
    pub locations: Tally<TweetScope>,
}

impl TweetsDelta {
    /// Folds `tweets`, in order.
    pub fn of<'a>(tweets: impl IntoIterator<Item = &'a Tweet>) -> TweetsDelta {
        let mut d = TweetsDelta::default();
        for t in tweets {
            d.total.add(t);
            d.weather[t.weather.index()] += 1;
            d.locations.entry(&t.location).add(t);
        }
        d
    }

    /// The weathers seen in the batch, with their counts.
    pub fn weathers(&self) -> impl Iterator<Item = (Weather, u64)> + '_ {
        Weather::ALL
            .iter()
            .map(|&w| (w, self.weather[w.index()]))
            .filter(|&(_, n)| n > 0)
    }
}
