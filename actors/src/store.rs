//! The KPI store: the `Store` trait (what the aggregator writes and the query API
//! reads) and `MemoryStore`, the embedded default. A Valkey store implements the same
//! trait and must answer the same queries with the same values.
//!
//! Ordering rules shared by every implementation: product rankings by quantity
//! descending, ties by `product_id` descending; location rankings by count
//! descending, ties by `location` descending (the order of a Valkey sorted set read
//! with ZREVRANGE). Floating sums are plain f64 additions in apply order.

use crate::dedup::{id_hash, IdWindow, Seen, WindowStats, DEFAULT_MAX_IDS};
use crate::event::{Category, Events, Kind, Sale, Tweet, Weather};
use async_trait::async_trait;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Length of each monitored product's price stream.
pub const MONITORED_PRICES: usize = 1_000;

/// A failure of the store itself (not of the data).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Which events of an applied batch changed the aggregates (`true`) and which were
/// duplicates of already-applied ids (`false`), in batch order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// One flag per event of the batch.
    pub fresh: Vec<bool>,
}

impl Applied {
    /// Number of events that changed the aggregates.
    pub fn fresh_count(&self) -> usize {
        self.fresh.iter().filter(|&&f| f).count()
    }
    /// Number of duplicates skipped.
    pub fn duplicate_count(&self) -> usize {
        self.fresh.len() - self.fresh_count()
    }
}

/// A page request: `limit` items starting at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Items wanted, 1–1000.
    pub limit: usize,
    /// Items skipped.
    pub offset: usize,
}

/// Sales aggregates of one scope (all sales, or one category).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct SaleStats {
    /// Number of sales.
    pub count: u64,
    /// Σ quantity.
    pub quantity_sum: u64,
    /// Σ unit price.
    pub price_sum: f64,
    /// Σ price × quantity.
    pub revenue: f64,
    /// quantity_sum / count, `null` when empty.
    pub avg_quantity: Option<f64>,
    /// price_sum / count, `null` when empty.
    pub avg_price: Option<f64>,
    /// Lowest unit price, `null` when empty.
    pub price_min: Option<f64>,
    /// Highest unit price, `null` when empty.
    pub price_max: Option<f64>,
}

/// Sales aggregates of one category, with its monitored product.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryStats {
    /// The category's aggregates.
    #[serde(flatten)]
    pub stats: SaleStats,
    /// The first product seen in the category.
    pub monitored_product: Option<String>,
}

/// Answer of `GET /v1/kpis/sales`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SalesKpis {
    /// All sales.
    pub total: SaleStats,
    /// Per category, every category present.
    pub categories: BTreeMap<&'static str, CategoryStats>,
}

/// Tweet aggregates of one scope (all tweets, or one location).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct TweetStats {
    /// Number of tweets.
    pub count: u64,
    /// Mean temperature, `null` when empty.
    pub avg_temperature: Option<f64>,
    /// Mean humidity, `null` when empty.
    pub avg_humidity: Option<f64>,
    /// Lowest temperature, `null` when empty.
    pub temperature_min: Option<f64>,
    /// Highest temperature, `null` when empty.
    pub temperature_max: Option<f64>,
}

/// Answer of `GET /v1/kpis/tweets`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TweetKpis {
    /// All tweets.
    pub total: TweetStats,
    /// Count per weather, every weather present.
    pub weather: BTreeMap<&'static str, u64>,
}

/// One product of a ranking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductRank {
    /// Product id.
    pub product_id: String,
    /// Units sold.
    pub quantity: u64,
}

/// One location of the ranking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocationRank {
    /// City or municipality.
    pub location: String,
    /// The location's tweet aggregates.
    #[serde(flatten)]
    pub stats: TweetStats,
}

/// A page of a ranking, with the number of ranked items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranking<T> {
    /// Items ranked in all.
    pub total: usize,
    /// The requested page.
    pub items: Vec<T>,
}

/// Answer of `GET /v1/sales/monitored/{category}/prices`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonitoredPrices {
    /// The monitored product, `null` before the category's first sale.
    pub product_id: Option<String>,
    /// Its newest prices, newest last.
    pub prices: Vec<f64>,
}

/// Where the aggregator writes and the query API reads.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short name for logs and readiness (`memory`, `valkey`).
    fn name(&self) -> &'static str;
    /// Applies a batch of sales atomically, skipping ids already applied.
    async fn apply_sales(&self, sales: &[Sale]) -> Result<Applied, StoreError>;
    /// Applies a batch of tweets atomically, skipping ids already applied.
    async fn apply_tweets(&self, tweets: &[Tweet]) -> Result<Applied, StoreError>;
    /// Global and per-category sales aggregates.
    async fn sales_kpis(&self) -> Result<SalesKpis, StoreError>;
    /// Global tweet aggregates and counts per weather.
    async fn tweet_kpis(&self) -> Result<TweetKpis, StoreError>;
    /// Products by quantity sold, globally or in one category.
    async fn product_ranking(
        &self,
        category: Option<Category>,
        page: Page,
    ) -> Result<Ranking<ProductRank>, StoreError>;
    /// Locations by tweet count.
    async fn location_ranking(&self, page: Page) -> Result<Ranking<LocationRank>, StoreError>;
    /// The monitored product of a category and its newest `limit` prices.
    async fn monitored_prices(
        &self,
        category: Category,
        limit: usize,
    ) -> Result<MonitoredPrices, StoreError>;
    /// Checks that the store answers (readiness; Valkey: `PING`).
    async fn ready(&self) -> Result<(), StoreError>;
    /// Forgets dedup entries older than the window (stores with native TTLs do nothing).
    async fn expire(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// The id windows' state per kind, for metrics (empty when the store keeps none).
    async fn dedup_windows(&self) -> Result<Vec<(Kind, WindowStats)>, StoreError> {
        Ok(Vec::new())
    }
}

/// Running sums of one scope of sales.
#[derive(Debug, Clone, Copy, Default)]
struct SaleSums {
    count: u64,
    quantity_sum: u64,
    price_sum: f64,
    revenue: f64,
    price_min: f64,
    price_max: f64,
}

impl SaleSums {
    fn add(&mut self, s: &Sale) {
        if self.count == 0 {
            self.price_min = s.price;
            self.price_max = s.price;
        } else {
            self.price_min = self.price_min.min(s.price);
            self.price_max = self.price_max.max(s.price);
        }
        self.count += 1;
        self.quantity_sum += s.quantity;
        self.price_sum += s.price;
        self.revenue += s.price * s.quantity as f64;
    }

    fn stats(&self) -> SaleStats {
        let some = |x| (self.count > 0).then_some(x);
        SaleStats {
            count: self.count,
            quantity_sum: self.quantity_sum,
            price_sum: self.price_sum,
            revenue: self.revenue,
            avg_quantity: some(self.quantity_sum as f64 / self.count as f64),
            avg_price: some(self.price_sum / self.count as f64),
            price_min: some(self.price_min),
            price_max: some(self.price_max),
        }
    }
}

/// Running sums of one scope of tweets.
#[derive(Debug, Clone, Copy, Default)]
struct TweetSums {
    count: u64,
    temperature_sum: f64,
    humidity_sum: f64,
    temperature_min: f64,
    temperature_max: f64,
}

impl TweetSums {
    fn add(&mut self, t: &Tweet) {
        if self.count == 0 {
            self.temperature_min = t.temperature;
            self.temperature_max = t.temperature;
        } else {
            self.temperature_min = self.temperature_min.min(t.temperature);
            self.temperature_max = self.temperature_max.max(t.temperature);
        }
        self.count += 1;
        self.temperature_sum += t.temperature;
        self.humidity_sum += t.humidity;
    }

    fn stats(&self) -> TweetStats {
        let some = |x| (self.count > 0).then_some(x);
        TweetStats {
            count: self.count,
            avg_temperature: some(self.temperature_sum / self.count as f64),
            avg_humidity: some(self.humidity_sum / self.count as f64),
            temperature_min: some(self.temperature_min),
            temperature_max: some(self.temperature_max),
        }
    }
}

#[derive(Debug)]
struct SalesState {
    seen: IdWindow,
    total: SaleSums,
    by_category: [SaleSums; 4],
    quantity_by_product: HashMap<String, u64>,
    quantity_by_category_product: [HashMap<String, u64>; 4],
    monitored: [Option<(String, VecDeque<f64>)>; 4],
}

#[derive(Debug)]
struct TweetsState {
    seen: IdWindow,
    total: TweetSums,
    by_weather: [u64; 6],
    by_location: HashMap<String, TweetSums>,
}

impl SalesState {
    fn new(seen: IdWindow) -> Self {
        SalesState {
            seen,
            total: SaleSums::default(),
            by_category: Default::default(),
            quantity_by_product: HashMap::new(),
            quantity_by_category_product: Default::default(),
            monitored: Default::default(),
        }
    }
}

impl TweetsState {
    fn new(seen: IdWindow) -> Self {
        TweetsState {
            seen,
            total: TweetSums::default(),
            by_weather: [0; 6],
            by_location: HashMap::new(),
        }
    }
}

/// The embedded store: every aggregate in process memory, lost at exit.
///
/// Applied ids are remembered in a bounded [`IdWindow`] per kind (sales and
/// tweets have separate id spaces), so a resend within the window is a duplicate.
#[derive(Debug)]
pub struct MemoryStore {
    sales: Mutex<SalesState>,
    tweets: Mutex<TweetsState>,
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
            sales: Mutex::new(SalesState::new(IdWindow::new(dedup_window, max_ids))),
            tweets: Mutex::new(TweetsState::new(IdWindow::new(dedup_window, max_ids))),
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

/// Sorts items by value descending, ties by name descending, and cuts a page.
fn rank_page<T, K: Ord + Copy>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> (std::cmp::Reverse<K>, std::cmp::Reverse<&str>),
    page: Page,
) -> Ranking<T> {
    let total = items.len();
    items.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
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

    async fn apply_sales(&self, sales: &[Sale]) -> Result<Applied, StoreError> {
        let now = clock_ms();
        let mut st = lock(&self.sales);
        let fresh = sales
            .iter()
            .map(|s| {
                if st.seen.insert(id_hash(&s.id), now) == Seen::Duplicate {
                    return false;
                }
                let c = s.category.index();
                st.total.add(s);
                st.by_category[c].add(s);
                *st.quantity_by_product
                    .entry(s.product_id.clone())
                    .or_default() += s.quantity;
                *st.quantity_by_category_product[c]
                    .entry(s.product_id.clone())
                    .or_default() += s.quantity;
                let monitored =
                    st.monitored[c].get_or_insert_with(|| (s.product_id.clone(), VecDeque::new()));
                if monitored.0 == s.product_id {
                    if monitored.1.len() == MONITORED_PRICES {
                        monitored.1.pop_front();
                    }
                    monitored.1.push_back(s.price);
                }
                true
            })
            .collect();
        Ok(Applied { fresh })
    }

    async fn apply_tweets(&self, tweets: &[Tweet]) -> Result<Applied, StoreError> {
        let now = clock_ms();
        let mut st = lock(&self.tweets);
        let fresh = tweets
            .iter()
            .map(|t| {
                if st.seen.insert(id_hash(&t.id), now) == Seen::Duplicate {
                    return false;
                }
                st.total.add(t);
                st.by_weather[t.weather.index()] += 1;
                st.by_location.entry(t.location.clone()).or_default().add(t);
                true
            })
            .collect();
        Ok(Applied { fresh })
    }

    async fn sales_kpis(&self) -> Result<SalesKpis, StoreError> {
        let st = lock(&self.sales);
        let categories = Category::ALL
            .iter()
            .map(|&c| {
                let stats = CategoryStats {
                    stats: st.by_category[c.index()].stats(),
                    monitored_product: st.monitored[c.index()].as_ref().map(|m| m.0.clone()),
                };
                (c.as_str(), stats)
            })
            .collect();
        Ok(SalesKpis {
            total: st.total.stats(),
            categories,
        })
    }

    async fn tweet_kpis(&self) -> Result<TweetKpis, StoreError> {
        let st = lock(&self.tweets);
        let weather = Weather::ALL
            .iter()
            .map(|&w| (w.as_str(), st.by_weather[w.index()]))
            .collect();
        Ok(TweetKpis {
            total: st.total.stats(),
            weather,
        })
    }

    async fn product_ranking(
        &self,
        category: Option<Category>,
        page: Page,
    ) -> Result<Ranking<ProductRank>, StoreError> {
        let st = lock(&self.sales);
        let source = match category {
            Some(c) => &st.quantity_by_category_product[c.index()],
            None => &st.quantity_by_product,
        };
        let items = source
            .iter()
            .map(|(p, &q)| ProductRank {
                product_id: p.clone(),
                quantity: q,
            })
            .collect();
        drop_guard_after(st, || {
            rank_page(
                items,
                |r| {
                    (
                        std::cmp::Reverse(r.quantity),
                        std::cmp::Reverse(r.product_id.as_str()),
                    )
                },
                page,
            )
        })
    }

    async fn location_ranking(&self, page: Page) -> Result<Ranking<LocationRank>, StoreError> {
        let st = lock(&self.tweets);
        let items = st
            .by_location
            .iter()
            .map(|(l, sums)| LocationRank {
                location: l.clone(),
                stats: sums.stats(),
            })
            .collect();
        drop_guard_after(st, || {
            rank_page(
                items,
                |r| {
                    (
                        std::cmp::Reverse(r.stats.count),
                        std::cmp::Reverse(r.location.as_str()),
                    )
                },
                page,
            )
        })
    }

    async fn monitored_prices(
        &self,
        category: Category,
        limit: usize,
    ) -> Result<MonitoredPrices, StoreError> {
        let st = lock(&self.sales);
        Ok(match &st.monitored[category.index()] {
            Some((product, prices)) => MonitoredPrices {
                product_id: Some(product.clone()),
                prices: prices
                    .iter()
                    .skip(prices.len().saturating_sub(limit))
                    .copied()
                    .collect(),
            },
            None => MonitoredPrices {
                product_id: None,
                prices: Vec::new(),
            },
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

/// Releases the store lock before the (possibly long) sort of a ranking.
fn drop_guard_after<G, R>(guard: G, f: impl FnOnce() -> R) -> Result<R, StoreError> {
    drop(guard);
    Ok(f())
}

/// Applies a batch of either kind.
pub async fn apply(store: &dyn Store, events: &Events) -> Result<Applied, StoreError> {
    match events {
        Events::Sales(s) => store.apply_sales(s).await,
        Events::Tweets(t) => store.apply_tweets(t).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        s.apply_sales(&[
            sale("1", Home, "B", 1.0, 5),
            sale("2", Home, "A", 1.0, 5),
            sale("3", Beauty, "C", 1.0, 9),
            sale("4", Beauty, "A", 1.0, 1),
        ])
        .await
        .expect("apply");
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

    #[tokio::test]
    async fn monitored_product_keeps_last_prices_of_first_product() {
        let s = store();
        let mut batch = vec![sale("first", Category::Clothing, "SHIRT", 1.0, 1)];
        batch.push(sale("other", Category::Clothing, "HAT", 0.5, 1));
        for i in 0..(MONITORED_PRICES + 5) {
            batch.push(sale(
                &format!("s{i}"),
                Category::Clothing,
                "SHIRT",
                2.0 + i as f64,
                1,
            ));
        }
        s.apply_sales(&batch).await.expect("apply");
        let m = s
            .monitored_prices(Category::Clothing, 1000)
            .await
            .expect("m");
        assert_eq!(m.product_id.as_deref(), Some("SHIRT"));
        assert_eq!(m.prices.len(), MONITORED_PRICES);
        assert_eq!(
            m.prices.last().copied(),
            Some(2.0 + (MONITORED_PRICES + 4) as f64)
        );
        assert!(!m.prices.contains(&0.5));
        let few = s.monitored_prices(Category::Clothing, 3).await.expect("m");
        assert_eq!(few.prices, m.prices[m.prices.len() - 3..].to_vec());
        let none = s.monitored_prices(Category::Home, 10).await.expect("m");
        assert_eq!((none.product_id, none.prices.len()), (None, 0));
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
