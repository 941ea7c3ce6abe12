//! A batch folded into per-key changes ([`SalesDelta`], [`TweetsDelta`]), so a store
//! does work in proportion to the keys a batch touches, not to its events. Every
//! store merges the same deltas the same way (floating sums: the batch's sum,
//! folded from zero in event order, added to the stored sum), so they answer with
//! the same values.

use super::{MONITORED_LATENESS_MS, MONITORED_PRICES};
use crate::dedup::canonical_uuid;
use crate::event::{Category, Sale, Tweet, Weather};
use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::hash::BuildHasher as _;

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
#[derive(Debug, Clone, Default)]
pub struct Tally<T> {
    /// (name, value), first-added order.
    pub items: Vec<(String, T)>,
    /// Where each name is in `items`, found by the name's hash: the name itself
    /// is kept once, in `items`.
    index: hashbrown::HashTable<usize>,
    hasher: foldhash::fast::RandomState,
}

impl<T: PartialEq> PartialEq for Tally<T> {
    fn eq(&self, other: &Self) -> bool {
        self.items == other.items
    }
}

impl<T: Default> Tally<T> {
    /// The value of `name`, added (as the default) if new.
    pub fn entry(&mut self, name: &str) -> &mut T {
        let Tally {
            items,
            index,
            hasher,
        } = self;
        let hash = hasher.hash_one(name);
        let i = match index.entry(
            hash,
            |&i| items[i].0 == name,
            |&i| hasher.hash_one(items[i].0.as_str()),
        ) {
            hashbrown::hash_table::Entry::Occupied(at) => *at.get(),
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(items.len());
                items.push((name.to_owned(), T::default()));
                items.len() - 1
            }
        };
        &mut items[i].1
    }
}

impl<T> Tally<T> {
    /// The value of `name`, if added.
    pub fn get(&self, name: &str) -> Option<&T> {
        let hash = self.hasher.hash_one(name);
        self.index
            .find(hash, |&i| self.items[i].0 == name)
            .map(|&i| &self.items[i].1)
    }
}

/// A sale's id as a price point keeps it: an id in the canonical form of a UUID
/// (36 characters, lowercase hexadecimal, hyphenated: the ids flujo stamps) as
/// its 128 bits, any other as its text. Stamped ids then take no allocation, and
/// two of them compare as integers, in the order of their texts. Built only by
/// [`PointId::of`], so one id has one form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointId(IdForm);

#[derive(Debug, Clone, PartialEq, Eq)]
enum IdForm {
    /// A canonical UUID.
    Uuid(u128),
    /// Any other id.
    Text(Box<str>),
}

impl PointId {
    /// The compact form of `id`.
    pub fn of(id: &str) -> PointId {
        PointId(match canonical_uuid(id.as_bytes()) {
            Some(bits) => IdForm::Uuid(bits),
            None => IdForm::Text(id.into()),
        })
    }

    /// Its text, the id as sent or stamped.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match &self.0 {
            IdForm::Uuid(bits) => std::borrow::Cow::Owned(uuid::Uuid::from_u128(*bits).to_string()),
            IdForm::Text(text) => std::borrow::Cow::Borrowed(text),
        }
    }

    /// Its text's bytes, a UUID's written into `buf` (no allocation).
    fn bytes<'a>(&'a self, buf: &'a mut [u8; 36]) -> &'a [u8] {
        match &self.0 {
            IdForm::Uuid(bits) => uuid::Uuid::from_u128(*bits)
                .hyphenated()
                .encode_lower(buf)
                .as_bytes(),
            IdForm::Text(text) => text.as_bytes(),
        }
    }
}

/// A sale's price as a price stream holds it, in [`PricePoint::order`].
#[derive(Debug, Clone, PartialEq)]
pub struct PricePoint {
    /// The sale's `ts`, at least 0 (a negative one, which the rules refuse,
    /// counts as 0: [`PricePoint::of`]; `member` and `order` count it so too).
    pub ts: i64,
    /// The sale's id.
    pub id: PointId,
    /// The unit price.
    pub price: f64,
}

impl PricePoint {
    /// The point of a sale.
    pub fn of(s: &Sale) -> PricePoint {
        PricePoint {
            ts: s.ts.max(0),
            id: PointId::of(&s.id),
            price: s.price,
        }
    }

    /// Its member in a Valkey price list or set: `ts` in 19 digits, the sale's id,
    /// a NUL, and the price in its shortest round-trip form. Written only for
    /// Valkey: the embedded store orders points without it.
    pub fn member(&self) -> String {
        let price = self.price_text();
        let id = self.id.text();
        let mut member = String::with_capacity(20 + id.len() + price.len());
        let _ = write!(member, "{:019}", self.ts.max(0));
        member.push_str(&id);
        member.push('\0');
        member.push_str(&price);
        member
    }

    /// The price as the member writes it.
    fn price_text(&self) -> String {
        format!("{:?}", self.price)
    }

    /// The order of two points of one id: their members' prices decide.
    fn price_order(&self, other: &PricePoint) -> Ordering {
        if self.price.to_bits() == other.price.to_bits() {
            Ordering::Equal
        } else {
            self.price_text().cmp(&other.price_text())
        }
    }

    /// The order of a price stream, oldest first: the byte order of
    /// [`PricePoint::member`], i.e. (`ts`, `id`) for every id without a NUL
    /// character (then the price, for one id applied twice), which a Valkey
    /// sorted set of these members has too. Compared without writing members:
    /// `ts` first, then the ids (a NUL, the member's separator, sorts before any
    /// other byte, so an id that is a prefix of the other comes first).
    pub fn order(&self, other: &PricePoint) -> Ordering {
        self.ts.max(0).cmp(&other.ts.max(0)).then_with(|| {
            if let (IdForm::Uuid(a), IdForm::Uuid(b)) = (&self.id.0, &other.id.0) {
                return match a.cmp(b) {
                    Ordering::Equal => self.price_order(other),
                    unequal => unequal,
                };
            }
            let (mut a_text, mut b_text) = ([0; 36], [0; 36]);
            let (a, b) = (self.id.bytes(&mut a_text), other.id.bytes(&mut b_text));
            let common = a.len().min(b.len());
            // Where the ids first differ, the members do too.
            match a[..common].cmp(&b[..common]) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
            if a.len() == b.len() {
                return self.price_order(other);
            }
            // One id is a prefix of the other: the shorter's member goes on with
            // its NUL, before any byte but a NUL.
            let next = if a.len() > b.len() {
                a[common]
            } else {
                b[common]
            };
            if next != 0 {
                a.len().cmp(&b.len())
            } else {
                self.member().cmp(&other.member())
            }
        })
    }
}

/// Sorts `points` in [`PricePoint::order`] and keeps one of equal points.
fn sort_points(points: &mut Vec<PricePoint>) {
    points.sort_by(|a, b| a.order(b));
    points.dedup_by(|a, b| a.order(b) == Ordering::Equal);
}

/// Merges `new` into `stream` (in [`PricePoint::order`], no two points equal in
/// that order; `new` is sorted first if it is not) and keeps the newest
/// `MONITORED_PRICES`: a point equal to one in the stream replaces nothing (as
/// `ZADD` of a member with the same score; equal members are equal points), and
/// one no newer than the oldest of a full stream is skipped. Only the stream's
/// points from the first new one on are merged, in one pass: points after the
/// stream's newest (sales arriving about in time order) are appended, and a
/// batch whose points tie with the stream's (the same `ts`, ordered by id) costs
/// one merge, not a search and an insert each.
pub fn merge_newest(stream: &mut VecDeque<PricePoint>, mut new: Vec<PricePoint>) {
    if !new.is_sorted_by(|a, b| a.order(b) == Ordering::Less) {
        sort_points(&mut new);
    }
    if stream.len() >= MONITORED_PRICES {
        // They would drop out at once.
        let older = new.partition_point(|p| p.order(&stream[0]) != Ordering::Greater);
        new.drain(..older);
    }
    let Some(first) = new.first() else {
        return;
    };
    let keep = if stream
        .back()
        .is_none_or(|p| p.order(first) == Ordering::Less)
    {
        stream.len()
    } else {
        stream.partition_point(|p| p.order(first) == Ordering::Less)
    };
    let mut tail = stream.split_off(keep).into_iter().peekable();
    let mut new = new.into_iter().peekable();
    loop {
        let next = match (tail.peek(), new.peek()) {
            (Some(t), Some(n)) => match t.order(n) {
                Ordering::Less => tail.next(),
                Ordering::Greater => new.next(),
                Ordering::Equal => {
                    new.next();
                    tail.next()
                }
            },
            (Some(_), None) => tail.next(),
            (None, Some(_)) => new.next(),
            (None, None) => break,
        };
        stream.extend(next);
    }
    let excess = stream.len().saturating_sub(MONITORED_PRICES);
    stream.drain(..excess);
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

/// One product's part of a [`CategoryDelta`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductDelta {
    /// Quantity sold.
    pub quantity: u64,
    /// The newest `MONITORED_PRICES` prices of its sales in the batch, sorted by
    /// [`PricePoint::order`], no two equal.
    pub prices: Vec<PricePoint>,
}

/// One category's part of a [`SalesDelta`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CategoryDelta {
    /// The category's aggregates.
    pub scope: SaleScope,
    /// Per product (first-sold order): quantity and prices.
    pub products: Tally<ProductDelta>,
    /// The batch's earliest sale in the category by (`ts`, `id`).
    pub earliest: Option<Earliest>,
    /// The batch's newest `ts` in the category (negative counts as 0).
    pub newest_ts: i64,
}

impl CategoryDelta {
    /// The points of `product`'s sales in the batch (empty when none).
    pub fn prices_of(&self, product: &str) -> &[PricePoint] {
        self.products
            .get(product)
            .map(|p| p.prices.as_slice())
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
            let product = c.products.entry(&s.product_id);
            product.quantity += s.quantity;
            product.prices.push(PricePoint::of(s));
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
            for (_, ProductDelta { prices: points, .. }) in &mut c.products.items {
                sort_points(points);
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
            id: PointId::of(id),
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
            // Canonical UUIDs (kept as bits) among other ids (kept as text).
            point(5, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 1.0),
            point(5, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 2.5),
            point(5, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", 1.0),
            point(5, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5", 1.0),
            point(5, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5bb", 1.0),
            point(5, "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", 1.0),
            point(5, "0190a1b2c-3d4-7e5f-8a9b-0c1d2e3f4a5b", 1.0),
            point(5, "ffffffff-ffff-ffff-ffff-ffffffffffff", 1.0),
            point(5, "00000000-0000-0000-0000-000000000000", 1.0),
            point(4, "ffffffff-ffff-ffff-ffff-ffffffffffff", 1.0),
        ];
        // An id keeps its text; only the canonical form is kept as bits.
        for (id, bits) in [
            ("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", true),
            ("00000000-0000-0000-0000-000000000000", true),
            ("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", false),
            ("0190a1b2c-3d4-7e5f-8a9b-0c1d2e3f4a5b", false),
            ("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5", false),
            ("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5g", false),
            ("{190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}", false),
            ("s-1", false),
        ] {
            let kept = PointId::of(id);
            assert_eq!(kept.text(), id);
            assert_eq!(matches!(kept.0, IdForm::Uuid(_)), bits, "{id}");
            assert_eq!(kept.bytes(&mut [0; 36]), id.as_bytes());
        }
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

    /// Merged batch by batch, a stream holds what a Valkey sorted set of the
    /// members, trimmed to the newest `MONITORED_PRICES` after each batch, holds:
    /// batches in order, late, tying in `ts` with the stream's points (ordered by
    /// id, prefixes among them), resent, unsorted.
    #[test]
    fn a_merged_stream_is_the_newest_members() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let mut stream = VecDeque::new();
        let mut reference = std::collections::BTreeSet::new();
        for batch in 0..400 {
            let clock = batch as i64 * 3;
            let len = 1 + next(if batch % 50 == 0 { 1_500 } else { 40 }) as usize;
            let mut new: Vec<PricePoint> = (0..len)
                .map(|_| {
                    // ts from a little before the batch's time to it: ties, late points.
                    let ts = (clock - next(30) as i64).max(-1);
                    // Ids of both forms: text, and canonical UUIDs (kept as bits).
                    let n = next(3_000);
                    let id = match n % 3 {
                        0 => format!("s-{n}"),
                        _ => uuid::Uuid::from_u128(u128::from(n) << 64 | 0xabc).to_string(),
                    };
                    point(ts, &id, (1 + next(3)) as f64)
                })
                .collect();
            for p in &new {
                reference.insert(p.member());
            }
            while reference.len() > MONITORED_PRICES {
                reference.pop_first();
            }
            if batch % 2 == 0 {
                new.sort_by(|a, b| a.order(b));
                new.dedup_by(|a, b| a.order(b) == Ordering::Equal);
            }
            merge_newest(&mut stream, new);
            let held: Vec<String> = stream.iter().map(PricePoint::member).collect();
            let expected: Vec<String> = reference.iter().cloned().collect();
            assert_eq!(held, expected, "after batch {batch}");
        }
        assert_eq!(stream.len(), MONITORED_PRICES);
    }
}
