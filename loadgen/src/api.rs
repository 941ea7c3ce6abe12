//! The server's query API as seen by `--verify`: the JSON shapes of the KPI,
//! ranking and monitored-price endpoints, and a client that reads a complete
//! [`Snapshot`] of them (rankings paged through to the end), always bypassing
//! the server's read cache with `Cache-Control: no-cache`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::generate::CATEGORIES;
use super::verify::Field;

/// Page size used when reading rankings (the API's maximum `limit`).
pub const PAGE: usize = 1000;

/// Declares a flat KPI object of the query API: the struct (each field read from the
/// JSON key of its name) and its `differences`, which `--verify` uses to compare it
/// field by field, in the API's order, each by its type's [`Field`] rule.
macro_rules! kpi_object {
    (
        $(#[doc = $doc:literal])*
        $name:ident {
            $($(#[doc = $field_doc:literal])* $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            $($(#[doc = $field_doc])* pub $field: $ty,)*
        }

        impl $name {
            /// The fields `got` reports differently from `self`, in the API's
            /// order: `(field, expected, got)`.
            pub fn differences(&self, got: &Self) -> Vec<(&'static str, String, String)> {
                let mut out = Vec::new();
                $(
                    if let Some((e, g)) = self.$field.differs(&got.$field) {
                        out.push((stringify!($field), e, g));
                    }
                )*
                out
            }
        }
    };
}

kpi_object! {
    /// Sales KPIs of one scope (global or one category).
    SaleKpi {
        /// Number of sales.
        count: u64,
        /// Σ quantity.
        quantity_sum: u64,
        /// Σ unit price.
        price_sum: f64,
        /// Σ price × quantity.
        revenue: f64,
        /// quantity_sum / count.
        avg_quantity: Option<f64>,
        /// price_sum / count.
        avg_price: Option<f64>,
        /// Lowest unit price.
        price_min: Option<f64>,
        /// Highest unit price.
        price_max: Option<f64>,
    }
}

kpi_object! {
    /// Tweet KPIs of one scope (all tweets, or one location).
    TweetKpi {
        /// Number of tweets.
        count: u64,
        /// Mean temperature.
        avg_temperature: Option<f64>,
        /// Mean humidity.
        avg_humidity: Option<f64>,
        /// Lowest temperature.
        temperature_min: Option<f64>,
        /// Highest temperature.
        temperature_max: Option<f64>,
    }
}

/// Sales KPIs of one category, with its monitored product.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoryKpi {
    /// The category's KPIs.
    #[serde(flatten)]
    pub kpi: SaleKpi,
    /// First product seen in the category.
    #[serde(default)]
    pub monitored_product: Option<String>,
}

/// `GET /v1/kpis/sales`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SalesKpis {
    /// All categories together.
    pub total: SaleKpi,
    /// Per category, by English name.
    #[serde(default)]
    pub categories: BTreeMap<String, CategoryKpi>,
}

/// `GET /v1/kpis/tweets`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TweetKpis {
    /// All tweets.
    pub total: TweetKpi,
    /// Tweets per weather.
    #[serde(default)]
    pub weather: BTreeMap<String, u64>,
}

/// One entry of a product ranking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductItem {
    /// The product.
    pub product_id: String,
    /// Σ quantity sold.
    pub quantity: u64,
}

/// One entry of the location ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationItem {
    /// The location.
    pub location: String,
    /// Its tweet KPIs.
    #[serde(flatten)]
    pub kpi: TweetKpi,
}

/// A complete ranking (all pages), or one page of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranking<T> {
    /// Number of entries the server has.
    pub total: u64,
    /// The entries, best first.
    pub items: Vec<T>,
}

impl<T> Default for Ranking<T> {
    fn default() -> Self {
        Self {
            total: 0,
            items: Vec::new(),
        }
    }
}

/// `GET /v1/sales/monitored/{category}/prices`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitoredPrices {
    /// The monitored product, if any.
    pub product_id: Option<String>,
    /// Its latest prices, newest last.
    #[serde(default)]
    pub prices: Vec<f64>,
}

/// Everything `--verify` compares, with each category's monitored price stream
/// as `P`: what the query API reported ([`Snapshot`]) or what it must report
/// (`Expected`, whose price streams are checked by membership).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiState<P> {
    /// Sales KPIs.
    pub sales: SalesKpis,
    /// Tweet KPIs.
    pub tweets: TweetKpis,
    /// Global product ranking, complete.
    pub products: Ranking<ProductItem>,
    /// Product ranking per category, complete.
    pub products_by_category: BTreeMap<String, Ranking<ProductItem>>,
    /// Location ranking, complete.
    pub locations: Ranking<LocationItem>,
    /// Monitored prices per category (`limit=1000`).
    pub monitored: BTreeMap<String, P>,
}

/// The query API's answers, read at one moment.
pub type Snapshot = ApiState<MonitoredPrices>;

/// Reads the query API of one target.
#[derive(Debug, Clone)]
pub struct QueryClient {
    client: reqwest::Client,
    base: String,
}

impl QueryClient {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`); an
    /// `https://` server's certificate is checked against `ca_file` (else the
    /// system's roots).
    pub fn new(base: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        let client = crate::transport::http_roots(builder, ca_file)?
            .build()
            .context("building the HTTP client for queries")?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// GETs `path_and_query` (uncached) and parses the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> anyhow::Result<T> {
        let url = format!("{}{}", self.base, path_and_query);
        let response = self
            .client
            .get(&url)
            .header(reqwest::header::CACHE_CONTROL, "no-cache")
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("GET {url}: {status}: {}", body.trim());
        }
        response
            .json::<T>()
            .await
            .with_context(|| format!("GET {url}: unexpected JSON"))
    }

    /// `GET /v1/kpis/sales`.
    pub async fn sales_kpis(&self) -> anyhow::Result<SalesKpis> {
        self.get("/v1/kpis/sales").await
    }

    /// `GET /v1/kpis/tweets`.
    pub async fn tweet_kpis(&self) -> anyhow::Result<TweetKpis> {
        self.get("/v1/kpis/tweets").await
    }

    /// Reads a whole ranking at `path` (which may already hold `?category=`),
    /// page by page, until `total` entries are read or a page comes back
    /// empty.
    pub async fn ranking<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Ranking<T>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut all = Ranking::default();
        loop {
            let offset = all.items.len();
            let page: Ranking<T> = self
                .get(&format!("{path}{sep}limit={PAGE}&offset={offset}"))
                .await?;
            all.total = page.total;
            let got = page.items.len();
            all.items.extend(page.items);
            if got == 0 || all.items.len() as u64 >= all.total {
                return Ok(all);
            }
        }
    }

    /// Reads every endpoint `--verify` compares.
    pub async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let sales = self.sales_kpis().await?;
        let tweets = self.tweet_kpis().await?;
        let products = self.ranking("/v1/rankings/products").await?;
        let mut products_by_category = BTreeMap::new();
        let mut monitored = BTreeMap::new();
        for category in categories_of(&sales) {
            let ranking = self
                .ranking(&format!("/v1/rankings/products?category={category}"))
                .await?;
            products_by_category.insert(category.clone(), ranking);
            let prices = self
                .get(&format!(
                    "/v1/sales/monitored/{category}/prices?limit={PAGE}"
                ))
                .await?;
            monitored.insert(category, prices);
        }
        let locations = self.ranking("/v1/rankings/locations").await?;
        Ok(Snapshot {
            sales,
            tweets,
            products,
            products_by_category,
            locations,
            monitored,
        })
    }
}

/// The four categories plus any other the server reports.
pub fn categories_of(sales: &SalesKpis) -> Vec<String> {
    let mut out: Vec<String> = CATEGORIES.iter().map(|c| c.to_string()).collect();
    for c in sales.categories.keys() {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_shapes() {
        let sales: SalesKpis = serde_json::from_str(
            r#"{"total":{"count":2,"quantity_sum":3,"price_sum":5,"revenue":7.5,
               "avg_quantity":1.5,"avg_price":2.5,"price_min":1,"price_max":4},
               "categories":{"home":{"count":0,"quantity_sum":0,"price_sum":0.0,"revenue":0.0,
               "avg_quantity":null,"avg_price":null,"price_min":null,"price_max":null,
               "monitored_product":null},
               "beauty":{"count":2,"quantity_sum":3,"price_sum":5,"revenue":7.5,
               "avg_quantity":1.5,"avg_price":2.5,"price_min":1,"price_max":4,
               "monitored_product":"P12"}}}"#,
        )
        .expect("sales");
        assert_eq!(sales.total.price_sum, 5.0);
        assert_eq!(sales.categories["home"].kpi.avg_price, None);
        assert_eq!(
            sales.categories["beauty"].monitored_product.as_deref(),
            Some("P12")
        );
        let tweets: TweetKpis = serde_json::from_str(
            r#"{"total":{"count":1,"avg_temperature":3.5,"avg_humidity":50,
               "temperature_min":3.5,"temperature_max":3.5},"weather":{"sunny":1,"rainy":0}}"#,
        )
        .expect("tweets");
        assert_eq!(tweets.weather["sunny"], 1);
        let ranking: Ranking<LocationItem> = serde_json::from_str(
            r#"{"total":1,"items":[{"location":"Lima","count":1,"avg_temperature":3.5,
               "avg_humidity":50,"temperature_min":3.5,"temperature_max":3.5}]}"#,
        )
        .expect("ranking");
        assert_eq!(ranking.items[0].location, "Lima");
        let prices: MonitoredPrices =
            serde_json::from_str(r#"{"product_id":null,"prices":[]}"#).expect("prices");
        assert_eq!(prices, MonitoredPrices::default());
    }

    #[test]
    fn categories_include_the_canonical_four() {
        let mut sales = SalesKpis::default();
        sales
            .categories
            .insert("toys".to_string(), CategoryKpi::default());
        sales
            .categories
            .insert("home".to_string(), CategoryKpi::default());
        assert_eq!(
            categories_of(&sales),
            ["electronics", "clothing", "home", "beauty", "toys"]
        );
    }
}
