//! [`MemoryStore`]: every aggregate in process memory, lost at exit.

use super::delta::{
    closed, merge_newest, CategoryDelta, Earliest, Fold, NameMap, PricePoint, ProductDelta,
    SaleScope, SalesDelta, TweetScope, TweetsDelta,
};
use super::{
    Applied, CategoryStats, LocationRank, MonitoredPrices, Page, Positions, ProductRank, Ranking,
    SaleStats, SalesKpis, Store, StoreError, TweetKpis, TweetStats,
};
use crate::dedup::{IdKey, IdWindow, Seen, WindowStats, DEFAULT_MAX_IDS};
use crate::event::{Category, Kind, Sale, Tweet, Weather};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// `value` unless `fold` is empty.
fn unless_empty(fold: &Fold, value: f64) -> Option<f64> {
    (fold.count > 0).then_some(value)
}

/// The mean over `fold`'s events of a measure summed to `sum`.
fn mean_of(fold: &Fold, sum: f64) -> Option<f64> {
    unless_empty(fold, sum / fold.count as f64)
}

fn sale_stats(scope: &SaleScope) -> SaleStats {
    let price = &scope.price;
    SaleStats {
        count: price.count,
        quantity_sum: scope.quantity_sum,
        price_sum: price.sum,
        revenue: scope.revenue,
        avg_quantity: mean_of(price, scope.quantity_sum as f64),
        avg_price: mean_of(price, price.sum),
        price_min: unless_empty(price, price.min),
        price_max: unless_empty(price, price.max),
    }
}

fn tweet_stats(scope: &TweetScope) -> TweetStats {
    let temperature = &scope.temperature;
    TweetStats {
        count: temperature.count,
        avg_temperature: mean_of(temperature, temperature.sum),
        avg_humidity: mean_of(temperature, scope.humidity_sum),
        temperature_min: unless_empty(temperature, temperature.min),
        temperature_max: unless_empty(temperature, temperature.max),
    }
}

/// A category's monitored product and the price streams it needs (the rules in
/// [`super`]'s docs, as the Valkey script applies them).
#[derive(Debug, Default)]
struct Monitor {
    /// The category's earliest sale (its product is the monitored one).
    earliest: Option<Earliest>,
    /// The newest `ts` of the category's sales.
    newest_ts: i64,
    /// The monitored product's newest prices.
    stream: VecDeque<PricePoint>,
    /// While the category is open, every other product's newest prices.
    history: NameMap<VecDeque<PricePoint>>,
}

impl Monitor {
    fn closed(&self) -> bool {
        self.earliest
            .as_ref()
            .is_some_and(|e| closed(e.ts, self.newest_ts))
    }

    /// Adds a batch's part of the category.
    fn merge(&mut self, d: CategoryDelta) {
        let Some(first) = &d.earliest else {
            return;
        };
        let was_closed = self.closed();
        let old = self.earliest.as_ref().map(|e| e.product.clone());
        if self
            .earliest
            .as_ref()
            .is_none_or(|e| first.before(e.ts, &e.id))
        {
            self.earliest = Some(first.clone());
        }
        self.newest_ts = self.newest_ts.max(d.newest_ts);
        let open = !self.closed();
        let monitored = self.earliest.as_ref().map_or("", |e| e.product.as_str());
        if old.as_deref() != Some(monitored) {
            let stream = std::mem::take(&mut self.stream);
            if let (Some(old), true) = (old, open) {
                self.history.insert(old, stream);
            }
            self.stream = self.history.remove(monitored).unwrap_or_default();
        }
        let monitored = monitored.to_owned();
        for (product, ProductDelta { prices, .. }) in d.products.items {
            if product == monitored {
                merge_newest(&mut self.stream, prices);
            } else if open {
                merge_newest(self.history.entry(product).or_default(), prices);
            }
        }
        if !open && !was_closed {
            self.history = NameMap::default();
        }
    }
}

/// The sales aggregates.
#[derive(Debug, Default)]
struct SalesState {
    total: SaleScope,
    by_category: [SaleScope; 4],
    quantity_by_product: NameMap<u64>,
    quantity_by_category_product: [NameMap<u64>; 4],
    monitored: [Monitor; 4],
}

impl SalesState {
    /// Adds a batch's changes, as every store does.
    fn merge(&mut self, d: SalesDelta) {
        self.total.merge(&d.total);
        for (product, q) in &d.products.items {
            add_to(&mut self.quantity_by_product, product, *q);
        }
        for (c, delta) in d.into_touched() {
            let i = c.index();
            self.by_category[i].merge(&delta.scope);
            for (product, p) in &delta.products.items {
                add_to(
                    &mut self.quantity_by_category_product[i],
                    product,
                    p.quantity,
                );
            }
            self.monitored[i].merge(delta);
        }
    }
}

/// The tweet aggregates.
#[derive(Debug, Default)]
struct TweetsState {
    total: TweetScope,
    by_weather: [u64; 6],
    by_location: NameMap<TweetScope>,
}

impl TweetsState {
    /// Adds a batch's changes, as every store does.
    fn merge(&mut self, d: TweetsDelta) {
        self.total.merge(&d.total);
        for (w, n) in d.weathers() {
            self.by_weather[w.index()] += n;
        }
        for (location, scope) in d.locations.items {
            match self.by_location.get_mut(&location) {
                Some(stored) => stored.merge(&scope),
                None => self.by_location.entry(location).or_default().merge(&scope),
            }
        }
    }
}

/// Adds `q` to `key`'s count, allocating the key only when it is new.
fn add_to(counts: &mut NameMap<u64>, key: &str, q: u64) {
    match counts.get_mut(key) {
        Some(count) => *count += q,
        None => {
            counts.insert(key.to_owned(), q);
        }
    }
}

/// One kind's aggregates, the window of the ids applied to them, and the next
/// offset of each source stream applied to them.
#[derive(Debug)]
struct Deduped<A> {
    seen: IdWindow,
    positions: NameMap<i64>,
    aggregates: A,
}

impl<A: Default> Deduped<A> {
    fn new(dedup_window: Duration, max_ids: usize) -> Mutex<Self> {
        Mutex::new(Deduped {
            seen: IdWindow::new(dedup_window, max_ids),
            positions: NameMap::default(),
            aggregates: A::default(),
        })
    }
}

/// Applies to `deduped` the events past their stream's stored position whose id
/// the window has not seen, folded into one delta (`fold`, then `merge`), then
/// stores the positions reached.
fn apply_new<A, E, D>(
    deduped: &Mutex<Deduped<A>>,
    events: &[E],
    at: &Positions,
    id: fn(&E) -> &str,
    fold: fn(Vec<&E>) -> D,
    merge: fn(&mut A, D),
) -> Result<Applied, StoreError> {
    at.check(events.len())?;
    let now = clock_ms();
    let keys: Vec<_> = events.iter().map(|e| IdKey::of(id(e))).collect();
    // Folded before taking the lock, as if every event were new (usually so),
    // so that batches of several partitions fold on several cores at once.
    let folded = fold(events.iter().collect());
    let mut guard = lock(deduped);
    let Deduped {
        seen,
        positions,
        aggregates,
    } = &mut *guard;
    let stored: Vec<i64> = at
        .streams
        .iter()
        .map(|s| positions.get(s).copied().unwrap_or(i64::MIN))
        .collect();
    let mut replayed = 0;
    seen.warm(&keys);
    let fresh: Vec<bool> = keys
        .iter()
        .enumerate()
        .map(|(i, &key)| {
            if let Some(&(stream, offset)) = at.offsets.get(i) {
                if offset < stored[stream as usize] {
                    replayed += 1;
                    return false;
                }
            }
            seen.insert(key, now) == Seen::New
        })
        .collect();
    let delta = if fresh.iter().all(|&f| f) {
        folded
    } else {
        let applied = events
            .iter()
            .zip(&fresh)
            .filter(|(_, &f)| f)
            .map(|(e, _)| e);
        fold(applied.collect())
    };
    merge(aggregates, delta);
    for (stream, next) in at.streams.iter().zip(at.next_offsets()) {
        if next == i64::MIN {
            continue; // a stream named without events
        }
        let slot = positions.entry(stream.clone()).or_insert(next);
        *slot = (*slot).max(next);
    }
    Ok(Applied { fresh, replayed })
}

/// The embedded store: every aggregate in process memory, lost at exit.
///
/// Applied ids are remembered in a bounded [`IdWindow`] per kind (sales and
/// tweets have separate id spaces), so a resend within the window is a duplicate.
#[derive(Debug)]
pub struct MemoryStore {
    sales: Mutex<Deduped<SalesState>>,
    tweets: Mutex<Deduped<TweetsState>>,
}

impl MemoryStore {
    /// An empty store that remembers applied ids for `dedup_window`, at most
    /// [`DEFAULT_MAX_IDS`] of each kind (see [`MemoryStore::with_max_ids`]).
    pub fn new(dedup_window: Duration) -> Self {
        Self::with_max_ids(dedup_window, DEFAULT_MAX_IDS)
    }

    /// An empty store that remembers applied ids for `dedup_window`, at most
    /// `max_ids` of each kind; older ids are forgotten first when the cap is reached.
    pub fn with_max_ids(dedup_window: Duration, max_ids: usize) -> Self {
        MemoryStore {
            sales: Deduped::new(dedup_window, max_ids),
            tweets: Deduped::new(dedup_window, max_ids),
        }
    }

    /// The id windows' state now, sales then tweets.
    pub fn dedup_stats(&self) -> [WindowStats; 2] {
        let now = clock_ms();
        [
            lock(&self.sales).seen.stats(now),
            lock(&self.tweets).seen.stats(now),
        ]
    }
}

fn clock_ms() -> u64 {
    crate::event::now_ms().max(0) as u64
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic while applying, and a panic is fatal anyway.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sorts items by `(value, name)` descending (ties by name descending), and cuts a page.
fn rank_page<T, K: Ord>(
    mut items: Vec<T>,
    page: Page,
    key: impl Fn(&T) -> (K, &str),
) -> Ranking<T> {
    let total = items.len();
    items.sort_unstable_by(|a, b| key(b).cmp(&key(a)));
    let items = items
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .collect();
    Ranking { total, items }
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn apply_sales_at(&self, sales: &[Sale], at: &Positions) -> Result<Applied, StoreError> {
        apply_new(
            &self.sales,
            sales,
            at,
            |s| &s.id,
            |v| SalesDelta::of(v),
            SalesState::merge,
        )
    }

    async fn apply_tweets_at(
        &self,
        tweets: &[Tweet],
        at: &Positions,
    ) -> Result<Applied, StoreError> {
        apply_new(
            &self.tweets,
            tweets,
            at,
            |t| &t.id,
            |v| TweetsDelta::of(v),
            TweetsState::merge,
        )
    }

    async fn positions(&self, streams: &[String]) -> Result<Vec<Option<i64>>, StoreError> {
        // A stream carries one kind, so its position is in one of the two maps.
        let (sales, tweets) = (lock(&self.sales), lock(&self.tweets));
        Ok(streams
            .iter()
            .map(|s| {
                sales
                    .positions
                    .get(s)
                    .or_else(|| tweets.positions.get(s))
                    .copied()
            })
            .collect())
    }

    async fn sales_kpis(&self) -> Result<SalesKpis, StoreError> {
        let st = &lock(&self.sales).aggregates;
        let categories = Category::ALL
            .iter()
            .map(|&c| {
                let stats = CategoryStats {
                    stats: sale_stats(&st.by_category[c.index()]),
                    monitored_product: st.monitored[c.index()]
                        .earliest
                        .as_ref()
                        .map(|e| e.product.clone()),
                };
                (c.as_str(), stats)
            })
            .collect();
        Ok(SalesKpis {
            total: sale_stats(&st.total),
            categories,
        })
    }

    async fn tweet_kpis(&self) -> Result<TweetKpis, StoreError> {
        let st = &lock(&self.tweets).aggregates;
        let weather = Weather::ALL
            .iter()
            .map(|&w| (w.as_str(), st.by_weather[w.index()]))
            .collect();
        Ok(TweetKpis {
            total: tweet_stats(&st.total),
            weather,
        })
    }

    async fn product_ranking(
        &self,
        category: Option<Category>,
        page: Page,
    ) -> Result<Ranking<ProductRank>, StoreError> {
        let items: Vec<_> = {
            let st = &lock(&self.sales).aggregates;
            let source = match category {
                Some(c) => &st.quantity_by_category_product[c.index()],
                None => &st.quantity_by_product,
            };
            source
                .iter()
                .map(|(p, &q)| ProductRank {
                    product_id: p.clone(),
                    quantity: q,
                })
                .collect()
        }; // The lock is released before the (possibly long) sort.
        Ok(rank_page(items, page, |r| (r.quantity, &r.product_id)))
    }

    async fn location_ranking(&self, page: Page) -> Result<Ranking<LocationRank>, StoreError> {
        let items: Vec<_> = lock(&self.tweets)
            .aggregates
            .by_location
            .iter()
            .map(|(l, sums)| LocationRank {
                location: l.clone(),
                stats: tweet_stats(sums),
            })
            .collect(); // The lock is released before the (possibly long) sort.
        Ok(rank_page(items, page, |r| (r.stats.count, &r.location)))
    }

    async fn monitored_prices(
        &self,
        category: Category,
        limit: usize,
    ) -> Result<MonitoredPrices, StoreError> {
        let st = &lock(&self.sales).aggregates;
        let m = &st.monitored[category.index()];
        Ok(MonitoredPrices {
            product_id: m.earliest.as_ref().map(|e| e.product.clone()),
            prices: m
                .stream
                .iter()
                .skip(m.stream.len().saturating_sub(limit))
                .map(|p| p.price)
                .collect(),
        })
    }

    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn expire(&self) -> Result<(), StoreError> {
        let now = clock_ms();
        lock(&self.sales).seen.expire(now);
        lock(&self.tweets).seen.expire(now);
        Ok(())
    }

    async fn dedup_windows(&self) -> Result<Vec<(Kind, WindowStats)>, StoreError> {
        let [sales, tweets] = self.dedup_stats();
        Ok(vec![(Kind::Sale, sales), (Kind::Tweet, tweets)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MONITORED_LATENESS_MS, MONITORED_PRICES};

    fn sale(id: &str, c: Category, p: &str, price: f64, q: u64) -> Sale {
        Sale {
            id: id.into(),
            ts: 0,
            category: c,
            product_id: p.into(),
            price,
            quantity: q,
        }
    }

    fn tweet(id: &str, l: &str, w: Weather, t: f64, h: f64) -> Tweet {
        Tweet {
            id: id.into(),
            ts: 0,
            location: l.into(),
            weather: w,
            temperature: t,
            humidity: h,
            text: None,
        }
    }

    fn store() -> MemoryStore {
        MemoryStore::new(Duration::from_secs(3600))
    }

    const PAGE: Page = Page {
        limit: 10,
        offset: 0,
    };

    #[tokio::test]
    async fn sales_aggregates_global_and_per_category() {
        let s = store();
        use Category::*;
        let applied = s
            .apply_sales(&[
                sale("1", Electronics, "TV", 100.0, 2),
                sale("2", Electronics, "PHONE", 50.0, 1),
                sale("3", Home, "SOFA", 300.0, 1),
                sale("4", Electronics, "TV", 80.0, 3),
            ])
            .await
            .expect("apply");
        assert_eq!(applied.fresh_count(), 4);
        let k = s.sales_kpis().await.expect("kpis");
        assert_eq!(k.total.count, 4);
        assert_eq!(k.total.quantity_sum, 7);
        assert_eq!(k.total.price_sum, 530.0);
        assert_eq!(k.total.revenue, 200.0 + 50.0 + 300.0 + 240.0);
        assert_eq!(k.total.avg_quantity, Some(7.0 / 4.0));
        assert_eq!(k.total.avg_price, Some(530.0 / 4.0));
        assert_eq!(
            (k.total.price_min, k.total.price_max),
            (Some(50.0), Some(300.0))
        );
        let e = &k.categories["electronics"];
        assert_eq!((e.stats.count, e.stats.quantity_sum), (3, 6));
        assert_eq!(
            (e.stats.price_min, e.stats.price_max),
            (Some(50.0), Some(100.0))
        );
        assert_eq!(e.monitored_product.as_deref(), Some("TV"));
        let b = &k.categories["beauty"];
        assert_eq!(b.stats.count, 0);
        assert_eq!(
            (
                b.stats.avg_price,
                b.stats.price_min,
                b.monitored_product.as_ref()
            ),
            (None, None, None)
        );
        let json = serde_json::to_value(&k).expect("json");
        assert_eq!(json["categories"]["home"]["monitored_product"], "SOFA");
        assert!(json["categories"]["beauty"]["avg_quantity"].is_null());
        assert_eq!(json["categories"].as_object().map(|o| o.len()), Some(4));
    }

    #[tokio::test]
    async fn duplicates_change_nothing_and_are_reported() {
        let s = store();
        let batch = [
            sale("a", Category::Beauty, "P", 2.0, 1),
            sale("a", Category::Beauty, "P", 2.0, 1),
        ];
        let first = s.apply_sales(&batch).await.expect("apply");
        assert_eq!(first.fresh, vec![true, false]);
        let again = s.apply_sales(&batch).await.expect("apply");
        assert_eq!((again.fresh_count(), again.duplicate_count()), (0, 2));
        assert_eq!(s.sales_kpis().await.expect("k").total.count, 1);
        // Tweets have their own id space.
        let t = s
            .apply_tweets(&[tweet("a", "X", Weather::Sunny, 1.0, 1.0)])
            .await
            .expect("apply");
        assert_eq!(t.fresh_count(), 1);
    }

    #[tokio::test]
    async fn dedup_window_expires() {
        let s = MemoryStore::new(Duration::ZERO);
        let batch = [sale("a", Category::Home, "P", 2.0, 1)];
        s.apply_sales(&batch).await.expect("apply");
        s.expire().await.expect("expire");
        assert_eq!(s.apply_sales(&batch).await.expect("apply").fresh_count(), 1);
        assert!(lock(&s.sales).seen.is_empty());
    }

    #[tokio::test]
    async fn a_full_window_forgets_the_oldest_and_reports_it() {
        let s = MemoryStore::with_max_ids(Duration::from_secs(3600), 64);
        let cap = lock(&s.sales).seen.max_ids();
        let batch: Vec<_> = (0..cap * 2)
            .map(|i| sale(&i.to_string(), Category::Home, "P", 1.0, 1))
            .collect();
        assert_eq!(
            s.apply_sales(&batch).await.expect("apply").fresh_count(),
            cap * 2
        );
        let windows = s.dedup_windows().await.expect("windows");
        let (kind, sales) = windows[0];
        assert_eq!(kind, Kind::Sale);
        assert!(sales.ids <= cap && sales.evicted as usize == cap * 2 - sales.ids);
        // The newest ids are still duplicates; the oldest were forgotten.
        let newest = [sale(
            &(cap * 2 - 1).to_string(),
            Category::Home,
            "P",
            1.0,
            1,
        )];
        assert_eq!(
            s.apply_sales(&newest).await.expect("apply").fresh_count(),
            0
        );
        let oldest = [sale("0", Category::Home, "P", 1.0, 1)];
        assert_eq!(
            s.apply_sales(&oldest).await.expect("apply").fresh_count(),
            1
        );
    }

    #[tokio::test]
    async fn product_rankings_order_ties_and_pages() {
        let s = store();
        use Category::*;
        // (category, product, quantity); ids 1 to 4, unit price 1.0.
        let rows = [
            (Home, "B", 5),
            (Home, "A", 5),
            (Beauty, "C", 9),
            (Beauty, "A", 1),
        ];
        let sales: Vec<_> = (1..)
            .zip(rows)
            .map(|(id, (c, p, q))| sale(&id.to_string(), c, p, 1.0, q))
            .collect();
        s.apply_sales(&sales).await.expect("apply");
        let global = s.product_ranking(None, PAGE).await.expect("rank");
        let names: Vec<_> = global
            .items
            .iter()
            .map(|r| (r.product_id.as_str(), r.quantity))
            .collect();
        assert_eq!(names, vec![("C", 9), ("A", 6), ("B", 5)]);
        assert_eq!(global.total, 3);
        let home = s.product_ranking(Some(Home), PAGE).await.expect("rank");
        let names: Vec<_> = home.items.iter().map(|r| r.product_id.as_str()).collect();
        assert_eq!(names, vec!["B", "A"], "ties by product_id descending");
        let page = s
            .product_ranking(
                None,
                Page {
                    limit: 1,
                    offset: 1,
                },
            )
            .await
            .expect("rank");
        assert_eq!(
            (
                page.total,
                page.items.len(),
                page.items[0].product_id.as_str()
            ),
            (3, 1, "A")
        );
        let past = s
            .product_ranking(
                None,
                Page {
                    limit: 5,
                    offset: 10,
                },
            )
            .await
            .expect("rank");
        assert_eq!((past.total, past.items.len()), (3, 0));
    }

    fn sale_at(id: &str, ts: i64, c: Category, p: &str, price: f64) -> Sale {
        Sale {
            ts,
            ..sale(id, c, p, price, 1)
        }
    }

    #[tokio::test]
    async fn monitored_stream_keeps_newest_prices_by_time() {
        let s = store();
        let mut batch = vec![sale_at("first", 0, Category::Clothing, "SHIRT", 1.0)];
        batch.push(sale_at("other", 1, Category::Clothing, "HAT", 0.5));
        // Sent newest first: the stream is in event time all the same.
        for i in (0..(MONITORED_PRICES + 5)).rev() {
            let ts = 10 + i as i64;
            batch.push(sale_at(
                &format!("s{i}"),
                ts,
                Category::Clothing,
                "SHIRT",
                ts as f64,
            ));
        }
        s.apply_sales(&batch).await.expect("apply");
        let m = s
            .monitored_prices(Category::Clothing, 1000)
            .await
            .expect("m");
        assert_eq!(m.product_id.as_deref(), Some("SHIRT"));
        let want: Vec<f64> = (15..15 + MONITORED_PRICES).map(|ts| ts as f64).collect();
        assert_eq!(m.prices, want, "the newest 1,000 by ts, oldest first");
        let few = s.monitored_prices(Category::Clothing, 3).await.expect("m");
        assert_eq!(few.prices, m.prices[m.prices.len() - 3..].to_vec());
        let none = s.monitored_prices(Category::Home, 10).await.expect("m");
        assert_eq!((none.product_id, none.prices.len()), (None, 0));
    }

    #[tokio::test]
    async fn earliest_sale_by_ts_then_id_wins_whenever_it_arrives() {
        use Category::Home;
        let s = store();
        s.apply_sales(&[
            sale_at("b", 100, Home, "LAMP", 1.0),
            sale_at("c", 120, Home, "SOFA", 2.0),
            sale_at("d", 130, Home, "SOFA", 3.0),
        ])
        .await
        .expect("apply");
        let k = s.sales_kpis().await.expect("kpis");
        assert_eq!(
            k.categories["home"].monitored_product.as_deref(),
            Some("LAMP")
        );
        // Same ts, smaller id: earlier. SOFA's prices applied before are its stream.
        s.apply_sales(&[sale_at("a", 100, Home, "SOFA", 4.0)])
            .await
            .expect("apply");
        let m = s.monitored_prices(Home, 10).await.expect("m");
        assert_eq!(m.product_id.as_deref(), Some("SOFA"));
        assert_eq!(m.prices, vec![4.0, 2.0, 3.0]);
        // Same ts, larger id: not earlier.
        s.apply_sales(&[sale_at("aa", 100, Home, "LAMP", 5.0)])
            .await
            .expect("apply");
        let m = s.monitored_prices(Home, 10).await.expect("m");
        assert_eq!(m.product_id.as_deref(), Some("SOFA"));
        // An earlier one brings LAMP back, with both its prices (ts 100: "aa" < "b").
        s.apply_sales(&[sale_at("z", 99, Home, "LAMP", 6.0)])
            .await
            .expect("apply");
        let m = s.monitored_prices(Home, 10).await.expect("m");
        assert_eq!(
            (m.product_id.as_deref(), m.prices),
            (Some("LAMP"), vec![6.0, 5.0, 1.0])
        );
    }

    #[tokio::test]
    async fn a_closed_category_keeps_only_the_monitored_stream() {
        use Category::Beauty;
        let s = store();
        let late = MONITORED_LATENESS_MS;
        s.apply_sales(&[
            sale_at("a", 1_000, Beauty, "SOAP", 1.0),
            sale_at("b", 1_001, Beauty, "GEL", 2.0),
        ])
        .await
        .expect("apply");
        assert_eq!(
            lock(&s.sales).aggregates.monitored[Beauty.index()]
                .history
                .len(),
            1
        );
        // The newest sale is LATENESS after the earliest: closed, GEL's history goes.
        s.apply_sales(&[sale_at("c", 1_000 + late, Beauty, "GEL", 3.0)])
            .await
            .expect("apply");
        assert!(lock(&s.sales).aggregates.monitored[Beauty.index()]
            .history
            .is_empty());
        // A sale that late changes the product still; its stream starts with it.
        s.apply_sales(&[sale_at("d", 5, Beauty, "GEL", 4.0)])
            .await
            .expect("apply");
        let m = s.monitored_prices(Beauty, 10).await.expect("m");
        assert_eq!(
            (m.product_id.as_deref(), m.prices),
            (Some("GEL"), vec![4.0])
        );
        // One LATENESS - 1 behind the earliest, in an open category, keeps history.
        s.apply_sales(&[
            sale_at("e", 0, Category::Home, "X", 1.0),
            sale_at("f", late - 1, Category::Home, "Y", 2.0),
        ])
        .await
        .expect("apply");
        s.apply_sales(&[sale_at("d0", 0, Category::Home, "Y", 3.0)])
            .await
            .expect("apply");
        let m = s.monitored_prices(Category::Home, 10).await.expect("m");
        assert_eq!(
            (m.product_id.as_deref(), m.prices),
            (Some("Y"), vec![3.0, 2.0])
        );
    }

    /// Sales over a few products, ts in a range shorter than the lateness, with
    /// ts ties.
    fn order_workload() -> Vec<Sale> {
        let products = ["A", "B", "C", "D"];
        (0..3_001u64)
            .map(|i| {
                let c = Category::ALL[(i % 7 % 4) as usize];
                let p = products[(i * 7 % 11 % 4) as usize];
                let ts = 1_000 + (i * 7919 % 500) as i64;
                let price = 1.0 + (i * 31 % 997) as f64 / 100.0;
                Sale {
                    quantity: 1 + i % 5,
                    ..sale_at(&format!("id{}", i * 13 % 3_001), ts, c, p, price)
                }
            })
            .collect()
    }

    /// True when `a` and `b` are within 1e-9 relative (the float sums' tolerance).
    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
    }

    /// The stats with their float sums checked against `want`'s within 1e-9
    /// relative, then replaced by `want`'s, so the rest compares exactly.
    fn sums_checked(mut got: SaleStats, want: &SaleStats) -> SaleStats {
        for (g, w) in [
            (&mut got.price_sum, want.price_sum),
            (&mut got.revenue, want.revenue),
        ] {
            assert!(close(*g, w), "{g} vs {w}");
            *g = w;
        }
        let (g, w) = (got.avg_price.unwrap_or(0.0), want.avg_price.unwrap_or(0.0));
        assert!(close(g, w), "{g} vs {w}");
        got.avg_price = want.avg_price;
        got
    }

    #[tokio::test]
    async fn any_order_and_batching_gives_the_same_kpis() {
        let sales = order_workload();
        let mut reference: Option<(SalesKpis, Vec<MonitoredPrices>, Ranking<ProductRank>)> = None;
        for (order, size) in [(0, 1), (1, 97), (2, 3_000)] {
            let mut v = sales.clone();
            match order {
                0 => {}
                1 => v.reverse(),
                _ => v.sort_by_key(|s| (s.price.to_bits(), s.id.clone())),
            }
            let s = store();
            for batch in v.chunks(size) {
                s.apply_sales(batch).await.expect("apply");
            }
            let mut kpis = s.sales_kpis().await.expect("kpis");
            let mut prices = Vec::new();
            for c in Category::ALL {
                prices.push(s.monitored_prices(c, 1000).await.expect("m"));
            }
            let page = Page {
                limit: 100,
                offset: 0,
            };
            let ranking = s.product_ranking(None, page).await.expect("rank");
            let Some((want, want_prices, want_ranking)) = &reference else {
                reference = Some((kpis, prices, ranking));
                continue;
            };
            kpis.total = sums_checked(kpis.total, &want.total);
            for (name, c) in kpis.categories.iter_mut() {
                c.stats = sums_checked(c.stats, &want.categories[name].stats);
            }
            assert_eq!(&kpis, want, "order {order}, batches of {size}");
            assert_eq!(&prices, want_prices, "order {order}, batches of {size}");
            assert_eq!(&ranking, want_ranking, "order {order}, batches of {size}");
        }
        // The workload exercised what it claims: ties in ts, more than one product.
        let (kpis, prices, _) = reference.expect("answers");
        assert!(prices.iter().all(|m| m.prices.len() > 100));
        assert!(kpis
            .categories
            .values()
            .all(|c| c.monitored_product.is_some()));
    }

    #[tokio::test]
    async fn tweet_aggregates_and_location_ranking() {
        let s = store();
        use Weather::*;
        s.apply_tweets(&[
            tweet("1", "Mixco", Sunny, 20.0, 50.0),
            tweet("2", "Mixco", Rainy, 10.0, 90.0),
            tweet("3", "Antigua", Sunny, -5.0, 10.0),
            tweet("4", "Zacapa", Sunny, 35.0, 20.0),
        ])
        .await
        .expect("apply");
        let k = s.tweet_kpis().await.expect("k");
        assert_eq!(k.total.count, 4);
        assert_eq!(k.total.avg_temperature, Some(60.0 / 4.0));
        assert_eq!(k.total.avg_humidity, Some(170.0 / 4.0));
        assert_eq!(
            (k.total.temperature_min, k.total.temperature_max),
            (Some(-5.0), Some(35.0))
        );
        assert_eq!(
            (k.weather["sunny"], k.weather["rainy"], k.weather["snowy"]),
            (3, 1, 0)
        );
        assert_eq!(k.weather.len(), 6);
        let r = s.location_ranking(PAGE).await.expect("rank");
        let names: Vec<_> = r.items.iter().map(|l| l.location.as_str()).collect();
        assert_eq!(
            names,
            vec!["Mixco", "Zacapa", "Antigua"],
            "ties by location descending"
        );
        assert_eq!(r.items[0].stats.avg_humidity, Some(70.0));
        assert_eq!(r.items[0].stats.temperature_min, Some(10.0));
        let json = serde_json::to_value(&r.items[0]).expect("json");
        assert_eq!(json["location"], "Mixco");
        assert_eq!(json["count"], 2);
    }
}
