//! A batch folded into per-key changes ([`SalesDelta`], [`TweetsDelta`]), so a store
//! does work in proportion to the keys a batch touches, not to its events. Every
//! store merges the same deltas the same way (floating sums: the batch's sum,
//! folded from zero in event order, added to the stored sum), so they answer with
//! the same values.

use super::{MONITORED_LATENESS_MS, MONITORED_PRICES};
use crate::event::{Category, Sale, Tweet, Weather};
use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

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

/// A map keyed by a name a client sent (a product, a location): hashed with
/// foldhash, seeded per process.
pub type NameMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Named counters in the order their names were first added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally<T> {
    /// (name, value), first-added order.
    pub items: Vec<(String, T)>,
    index: NameMap<usize>,
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

    /// The value of `name`, if added.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.index.get(name).map(|&i| &self.items[i].1)
    }
}

/// A sale's price as a price stream holds it, in [`PricePoint::order`].
#[derive(Debug, Clone, PartialEq)]
pub struct PricePoint {
    /// The sale's `ts`, at least 0 (a negative one, which the rules refuse,
    /// counts as 0: [`PricePoint::of`]; `member` and `order` count it so too).
    pub ts: i64,
    /// The sale's id.
    pub id: String,
    /// The unit price.
    pub price: f64,
}

impl PricePoint {
    /// The point of a sale.
    pub fn of(s: &Sale) -> PricePoint {
        PricePoint {
            ts: s.ts.max(0),
            id: s.id.clone(),
            price: s.price,
        }
    }

    /// Its member in a Valkey price list or set: `ts` in 19 digits, the sale's id,
    /// a NUL, and the price in its shortest round-trip form. Written only for
    /// Valkey: the embedded store orders points without it.
    pub fn member(&self) -> String {
        let price = self.price_text();
        let mut member = String::with_capacity(20 + self.id.len() + price.len());
        let _ = write!(member, "{:019}", self.ts.max(0));
        member.push_str(&self.id);
        member.push('\0');
        member.push_str(&price);
        member
    }

    /// The price as the member writes it.
    fn price_text(&self) -> String {
        format!("{:?}", self.price)
    }

    /// The order of a price stream, oldest first: the byte order of
    /// [`PricePoint::member`], i.e. (`ts`, `id`) for every id without a NUL
    /// character (then the price, for one id applied twice), which a Valkey
    /// sorted set of these members has too. Compared without writing members:
    /// `ts` first, then the ids (a NUL, the member's separator, sorts before any
    /// other byte, so an id that is a prefix of the other comes first).
    pub fn order(&self, other: &PricePoint) -> Ordering {
        self.ts.max(0).cmp(&other.ts.max(0)).then_with(|| {
            if self.id == other.id {
                if self.price.to_bits() == other.price.to_bits() {
                    Ordering::Equal
                } else {
                    self.price_text().cmp(&other.price_text())
                }
            } else if self.id.contains('\0') || other.id.contains('\0') {
                self.member().cmp(&other.member())
            } else {
                self.id.cmp(&other.id)
            }
        })
    }
}

/// Inserts `new` (in [`PricePoint::order`]) into `stream` (sorted, no two
/// points equal in that order) and keeps the newest `MONITORED_PRICES`: a point
/// equal to one in the stream replaces nothing (as `ZADD` of a member with the
/// same score; equal members are equal points). Points after the
/// stream's newest are appended and the oldest dropped from the front, so the
/// usual case (sales arriving about in time order) costs no more than the new
/// points; an earlier point is put in place by binary search.
pub fn merge_newest(stream: &mut VecDeque<PricePoint>, new: Vec<PricePoint>) {
    /// How far back from the newest point an earlier one is looked for one by
    /// one (late points are usually only a little late) before a binary search.
    const NEAR: usize = 8;
    for point in new {
        let len = stream.len();
        if len >= MONITORED_PRICES && point.order(&stream[0]) != Ordering::Greater {
            continue; // older than all of a full stream: it would drop out at once
        }
        let behind = stream
            .iter()
            .rev()
            .take(NEAR)
            .position(|p| p.order(&point) != Ordering::Greater);
        match behind {
            Some(0) if stream[len - 1].order(&point) == Ordering::Less => stream.push_back(point),
            None if len == 0 => stream.push_back(point),
            Some(back) => {
                if stream[len - 1 - back].order(&point) == Ordering::Less {
                    stream.insert(len - back, point);
                }
            }
            None => {
                if let Err(at) = stream.binary_search_by(|p| p.order(&point)) {
                    stream.insert(at, point);
                }
            }
        }
    }
    while stream.len() > MONITORED_PRICES {
        stream.pop_front();
    }
}

/// The earliest sale of some sales by (`ts`, `id`): the one whose product a
/// category monitors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earliest {
    /// Its `ts` (a negative one counts as 0).
    pub ts: i64,
    /// Its id (ties in `ts` by id, byte order).
    pub id: String,
    /// Its product.
    pub product: String,
}

impl Earliest {
    /// The earliest of a sale.
    pub fn of(s: &Sale) -> Earliest {
        Earliest {
            ts: s.ts.max(0),
            id: s.id.clone(),
            product: s.product_id.clone(),
        }
    }

    /// True when this sale comes before `other` by (`ts`, `id`).
    pub fn before(&self, ts: i64, id: &str) -> bool {
        (self.ts, self.id.as_str()) < (ts, id)
    }
}

/// True when a category whose earliest sale has `earliest_ts` and newest
/// `newest_ts` is closed: its newest sale is at least
/// [`MONITORED_LATENESS_MS`] after its earliest, so the price histories of the
/// products it does not monitor are no longer kept. Computed in doubles, as the
/// Valkey script does.
pub fn closed(earliest_ts: i64, newest_ts: i64) -> bool {
    newest_ts as f64 - earliest_ts as f64 >= MONITORED_LATENESS_MS as f64
}

/// One category's part of a [`SalesDelta`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CategoryDelta {
    /// The category's aggregates.
    pub scope: SaleScope,
    /// Quantity sold per product in the category.
    pub products: Tally<u64>,
    /// The batch's earliest sale in the category by (`ts`, `id`).
    pub earliest: Option<Earliest>,
    /// The batch's newest `ts` in the category (negative counts as 0).
    pub newest_ts: i64,
    /// Per product, the newest `MONITORED_PRICES` prices of its sales in the
    /// batch, sorted by [`PricePoint::order`] (first-sold order of products).
    pub prices: Tally<Vec<PricePoint>>,
}

impl CategoryDelta {
    /// The points of `product`'s sales in the batch (empty when none).
    pub fn prices_of(&self, product: &str) -> &[PricePoint] {
        self.prices
            .get(product)
            .map(Vec::as_slice)
            .unwrap_or_default()
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
        // Each category's earliest sale so far, copied out once at the end.
        let mut earliest: [Option<&Sale>; 4] = [None; 4];
        for s in sales {
            d.total.add(s);
            let i = s.category.index();
            let c = &mut d.categories[i];
            c.scope.add(s);
            *c.products.entry(&s.product_id) += s.quantity;
            c.prices.entry(&s.product_id).push(PricePoint::of(s));
            if earliest[i]
                .is_none_or(|e| (s.ts.max(0), s.id.as_str()) < (e.ts.max(0), e.id.as_str()))
            {
                earliest[i] = Some(s);
            }
            c.newest_ts = c.newest_ts.max(s.ts.max(0));
            *d.products.entry(&s.product_id) += s.quantity;
        }
        for (c, first) in d.categories.iter_mut().zip(earliest) {
            c.earliest = first.map(Earliest::of);
            for (_, points) in &mut c.prices.items {
                points.sort_by(|a, b| a.order(b));
                points.dedup_by(|a, b| a.order(b) == Ordering::Equal);
                if points.len() > MONITORED_PRICES {
                    points.drain(..points.len() - MONITORED_PRICES);
                }
            }
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

    /// The categories the batch touched, with their changes, by value.
    pub fn into_touched(self) -> impl Iterator<Item = (Category, CategoryDelta)> {
        Category::ALL
            .into_iter()
            .zip(self.categories)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts: i64, id: &str, price: f64) -> PricePoint {
        PricePoint {
            ts,
            id: id.to_owned(),
            price,
        }
    }

    /// The embedded store orders points as Valkey orders their members, without
    /// writing them: ts, ids that are prefixes of others, ids with a NUL, one id
    /// with two prices.
    #[test]
    fn points_are_ordered_as_their_members() {
        let points = [
            point(5, "a", 1.5),
            point(5, "a", 10.0),
            point(5, "a", 2.0),
            point(5, "ab", 1.0),
            point(5, "a\0", 1.0),
            point(5, "a\0b", 3.0),
            point(5, "a\u{1}", 1.0),
            point(5, "b", 0.5),
            point(4, "z", 1.0),
            point(6, "", 1.0),
            point(10_000_000_000, "a", 1.0),
            point(5, "é", 1e-7),
            point(5, "é", 1e21),
        ];
        for a in &points {
            for b in &points {
                assert_eq!(
                    a.order(b),
                    a.member().cmp(&b.member()),
                    "{a:?} against {b:?}"
                );
            }
        }
        assert_eq!(
            point(7, "x", 19.99).member(),
            "0000000000000000007x\u{0}19.99"
        );
    }
}
