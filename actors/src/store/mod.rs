//! The KPI store: the `Store` trait (what the aggregator writes and the query API
//! reads), its answer types, and [`MemoryStore`], the embedded default (in
//! `memory`). A Valkey store implements the same trait and must answer the same
//! queries with the same values.
//!
//! Ordering rules shared by every implementation: product rankings by quantity
//! descending, ties by `product_id` descending; location rankings by count
//! descending, ties by `location` descending (the order of a Valkey sorted set read
//! with ZREVRANGE). A batch is folded into a [`delta`] first; floating sums are the
//! stored sum plus the batch's sum (folded from zero in event order), so two
//! stores given the same batches answer the same doubles, while other orders or
//! batchings of the same events may differ in the last bits (well within 1e-9
//! relative, the tolerance of the SPEC and of the tests).
//!
//! # The monitored product (order-independent)
//!
//! A category monitors the product of its earliest sale by (`ts`, `id`: ties by
//! id, byte order; a negative `ts` counts as 0), whichever order sales arrive in:
//! an earlier sale applied later changes it. Its price stream is that product's
//! newest [`MONITORED_PRICES`] prices in the category by (`ts`, `id`), oldest
//! first (see [`delta::PricePoint::order`]).
//!
//! To give the new product's stream when the monitored product changes, a store
//! keeps, besides the monitored product's stream, the newest
//! [`MONITORED_PRICES`] prices of every other product of the category while the
//! category is *open*: until its newest sale is [`MONITORED_LATENESS_MS`] or more
//! (event time) after its earliest. When it closes they are dropped, and only
//! the monitored product's stream is kept. The monitored product is always exact;
//! its stream is exact unless the product changes after the category closed,
//! which takes a sale applied at least [`MONITORED_LATENESS_MS`] behind its
//! category's newest sale of an earlier batch (a backfill, or a partition that
//! lags that far): the new product's stream then holds only its prices applied
//! from that batch on. Every store applies these rules batch by batch in the same
//! way ([`delta::merge_newest`], [`delta::closed`]).

pub mod delta;
mod memory;

pub use memory::MemoryStore;

use crate::dedup::WindowStats;
use crate::event::{Category, Events, Kind, Sale, Tweet};
use async_trait::async_trait;
use serde::Serialize;
use std::collections::BTreeMap;

/// Length of each monitored product's price stream.
pub const MONITORED_PRICES: usize = 1_000;

/// How far (ms of event time) a category's newest sale may get ahead of its
/// earliest before the category closes and the price histories of the products
/// it does not monitor are dropped (ten minutes): a sale that changes the
/// monitored product later than that gets a stream of its prices from then on.
pub const MONITORED_LATENESS_MS: i64 = 10 * 60 * 1000;

/// A failure of the store itself (not of the data).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Which events of an applied batch changed the aggregates (`true`) and which did
/// not (`false`), in batch order: duplicates of ids applied within the window, and
/// events at or below the position the store already holds for their source stream
/// (counted apart in `replayed`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// One flag per event of the batch.
    pub fresh: Vec<bool>,
    /// How many of the events not applied were skipped by position (a redelivery,
    /// or a zombie consumer), not by id.
    pub replayed: usize,
}

impl Applied {
    /// Number of events that changed the aggregates.
    pub fn fresh_count(&self) -> usize {
        self.fresh.iter().filter(|&&f| f).count()
    }
    /// Number of events skipped as duplicates of an id applied within the window.
    pub fn duplicate_count(&self) -> usize {
        self.fresh.len() - self.fresh_count() - self.replayed
    }
}

/// Where the events of a batch sit in their source, for sources with offsets (a
/// Kafka partition is one *stream*). A store keeps, per stream, the next offset it
/// has not applied, and writes it in the same atomic step as the aggregates: an
/// event whose offset is below it was applied already, whoever sends it again.
///
/// Sources without offsets (the memory bus, RabbitMQ queues) send
/// [`Positions::default`]: their redeliveries are caught by the id window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    /// The streams of the batch, e.g. `kafka:{group}:{topic}:{partition}`.
    pub streams: Vec<String>,
    /// Per event, in batch order: its stream (an index into `streams`) and offset.
    /// Empty, or exactly as long as the batch.
    pub offsets: Vec<(u32, i64)>,
}

impl Positions {
    /// No positions (a source without offsets).
    pub const NONE: Positions = Positions {
        streams: Vec::new(),
        offsets: Vec::new(),
    };

    /// True when the batch carries no positions.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Per stream, the next offset after the batch's highest one.
    pub fn next_offsets(&self) -> Vec<i64> {
        let mut next = vec![i64::MIN; self.streams.len()];
        for &(stream, offset) in &self.offsets {
            let slot = &mut next[stream as usize];
            *slot = (*slot).max(offset.saturating_add(1));
        }
        next
    }

    /// Checks the shape against a batch of `len` events.
    pub fn check(&self, len: usize) -> Result<(), StoreError> {
        let fits = self.offsets.is_empty()
            || (self.offsets.len() == len
                && self
                    .offsets
                    .iter()
                    .all(|&(s, _)| (s as usize) < self.streams.len()));
        if fits {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "positions of {} events for a batch of {len}",
                self.offsets.len()
            )))
        }
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CategoryStats {
    /// The category's aggregates.
    #[serde(flatten)]
    pub stats: SaleStats,
    /// The product of the category's earliest sale by (`ts`, `id`).
    pub monitored_product: Option<String>,
}

/// Answer of `GET /v1/kpis/sales`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SalesKpis {
    /// All sales.
    pub total: SaleStats,
    /// Per category, every category present.
    pub categories: BTreeMap<&'static str, CategoryStats>,
}

/// Tweet aggregates of one scope (all tweets, or one location).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TweetKpis {
    /// All tweets.
    pub total: TweetStats,
    /// Count per weather, every weather present.
    pub weather: BTreeMap<&'static str, u64>,
}

/// One product of a ranking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProductRank {
    /// Product id.
    pub product_id: String,
    /// Units sold.
    pub quantity: u64,
}

/// One location of the ranking.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LocationRank {
    /// City or municipality.
    pub location: String,
    /// The location's tweet aggregates.
    #[serde(flatten)]
    pub stats: TweetStats,
}

/// A page of a ranking, with the number of ranked items.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Ranking<T> {
    /// Items ranked in all.
    pub total: usize,
    /// The requested page.
    pub items: Vec<T>,
}

/// Answer of `GET /v1/sales/monitored/{category}/prices`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MonitoredPrices {
    /// The monitored product (of the category's earliest sale by (`ts`, `id`)),
    /// `null` before the category's first sale.
    pub product_id: Option<String>,
    /// Its newest prices by (`ts`, `id`), newest last.
    pub prices: Vec<f64>,
}

/// Where the aggregator writes and the query API reads.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short name for logs and readiness (`memory`, `valkey`).
    fn name(&self) -> &'static str;
    /// Applies a batch of sales atomically, skipping events below their stream's
    /// stored position and ids already applied within the window, and stores the
    /// positions the batch reached in the same step.
    async fn apply_sales_at(&self, sales: &[Sale], at: &Positions) -> Result<Applied, StoreError>;
    /// Applies a batch of tweets atomically, as [`Store::apply_sales_at`].
    async fn apply_tweets_at(
        &self,
        tweets: &[Tweet],
        at: &Positions,
    ) -> Result<Applied, StoreError>;
    /// Applies a batch of sales that carries no positions (dedup by id only).
    async fn apply_sales(&self, sales: &[Sale]) -> Result<Applied, StoreError> {
        self.apply_sales_at(sales, &Positions::NONE).await
    }
    /// Applies a batch of tweets that carries no positions (dedup by id only).
    async fn apply_tweets(&self, tweets: &[Tweet]) -> Result<Applied, StoreError> {
        self.apply_tweets_at(tweets, &Positions::NONE).await
    }
    /// The stored next offset of each of `streams` (`None`: nothing applied yet),
    /// where a source resumes when it is given the stream.
    async fn positions(&self, streams: &[String]) -> Result<Vec<Option<i64>>, StoreError>;
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

/// Applies a batch of either kind, at `at`.
pub async fn apply(
    store: &dyn Store,
    events: &Events,
    at: &Positions,
) -> Result<Applied, StoreError> {
    match events {
        Events::Sales(s) => store.apply_sales_at(s, at).await,
        Events::Tweets(t) => store.apply_tweets_at(t, at).await,
    }
}
