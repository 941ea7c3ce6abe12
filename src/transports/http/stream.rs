//! `GET /v1/stream/kpis`: server-sent events, one `kpis` event carrying a JSON
//! [`Snapshot`] of the KPIs and the pipeline's health every
//! `query.stream_interval_ms`. The KPI page at `/` is its first client.
//!
//! One producer per process ([`KpiFeed`]) reads the store once per tick, and only
//! while at least one stream is open, and publishes the rendered snapshot on a
//! `watch` channel: every stream sends the newest one (a slow client skips to the
//! newest snapshot, nothing queues up for it). At most `query.max_streams` streams
//! are open at once; beyond that a client gets a 503. Streams end when the process
//! starts draining, so an open page never holds up a shutdown.
//!
//! The health part is computed in the process: see [`health`].

pub mod health;

use super::api::ErrorBody;
use super::error::ApiError;
use super::AppState;
use crate::readiness::Readiness;
use crate::shutdown::Shutdown;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flujo_actors::event::Category;
use flujo_actors::store::{
    LocationRank, MonitoredPrices, Page, ProductRank, Ranking, SalesKpis, Store, StoreError,
    TweetKpis,
};
use futures::{Stream, StreamExt};
use health::{Health, HealthWindow};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_stream::wrappers::WatchStream;

/// Items of each ranking a snapshot carries.
pub const RANKING_TOP: usize = 10;
/// Newest prices of each monitored product a snapshot carries.
pub const PRICES_PER_CATEGORY: usize = 100;
/// Seconds a client waits before retrying after a 503 (too many streams).
const RETRY_AFTER_SECS: u64 = 5;

/// One `kpis` event: what the store holds now and how the pipeline is doing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = KpiSnapshot)]
pub struct Snapshot {
    /// When it was read, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// As `GET /v1/kpis/sales`; `null` when the store could not be read.
    pub sales: Option<SalesKpis>,
    /// As `GET /v1/kpis/tweets`; `null` when the store could not be read.
    pub tweets: Option<TweetKpis>,
    /// As `GET /v1/rankings/products?limit=10`.
    pub products: Option<Ranking<ProductRank>>,
    /// As `GET /v1/rankings/locations?limit=10`.
    pub locations: Option<Ranking<LocationRank>>,
    /// Per category, as `GET /v1/sales/monitored/{category}/prices?limit=100`.
    pub prices: Option<BTreeMap<&'static str, MonitoredPrices>>,
    /// Why the KPIs are `null`: the store's error.
    pub error: Option<String>,
    /// Throughput, latency, lag and readiness.
    pub health: Health,
}

/// The KPIs part of a snapshot, read from the store in one go.
struct Kpis {
    sales: SalesKpis,
    tweets: TweetKpis,
    products: Ranking<ProductRank>,
    locations: Ranking<LocationRank>,
    prices: BTreeMap<&'static str, MonitoredPrices>,
}

/// What the producer reads a snapshot from.
struct Sources {
    store: Arc<dyn Store>,
    ready: watch::Receiver<Readiness>,
    metrics: PrometheusHandle,
    shutdown: Shutdown,
}

impl Sources {
    async fn kpis(&self) -> Result<Kpis, StoreError> {
        let top = Page {
            limit: RANKING_TOP,
            offset: 0,
        };
        let prices = futures::future::try_join_all(Category::ALL.map(|c| async move {
            let stream = self.store.monitored_prices(c, PRICES_PER_CATEGORY).await?;
            Ok::<_, StoreError>((c.as_str(), stream))
        }));
        let (sales, tweets, products, locations, prices) = tokio::try_join!(
            self.store.sales_kpis(),
            self.store.tweet_kpis(),
            self.store.product_ranking(None, top),
            self.store.location_ranking(top),
            prices,
        )?;
        Ok(Kpis {
            sales,
            tweets,
            products,
            locations,
            prices: prices.into_iter().collect(),
        })
    }

    /// Reads the store and the latest readiness (kept current by
    /// [`crate::readiness::keep_current`]), and folds the reading into `window`.
    async fn snapshot(&self, window: &mut HealthWindow) -> Snapshot {
        let kpis = self.kpis().await;
        let mut failing = self.ready.borrow().failing.clone();
        let draining = "shutdown: draining";
        if self.shutdown.is_triggered() && !failing.iter().any(|f| f == draining) {
            failing.insert(0, draining.to_owned());
        }
        let applied = kpis
            .as_ref()
            .ok()
            .map(|k| k.sales.total.count + k.tweets.total.count);
        let health = window.observe(Instant::now(), applied, &self.metrics.render(), failing);
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        match kpis {
            Ok(k) => Snapshot {
                at_ms,
                sales: Some(k.sales),
                tweets: Some(k.tweets),
                products: Some(k.products),
                locations: Some(k.locations),
                prices: Some(k.prices),
                error: None,
                health,
            },
            Err(e) => Snapshot {
                at_ms,
                sales: None,
                tweets: None,
                products: None,
                locations: None,
                prices: None,
                error: Some(e.to_string()),
                health,
            },
        }
    }
}

/// A snapshot as sent: its JSON, rendered once for every stream.
#[derive(Debug, Clone)]
struct Published {
    json: Arc<str>,
    at: Instant,
}

/// The process's one snapshot producer and the bound on open streams.
#[derive(Clone)]
pub struct KpiFeed {
    inner: Arc<Inner>,
}

struct Inner {
    latest: watch::Sender<Option<Published>>,
    /// Asks the producer for a snapshot now (a stream opened with none fresh).
    wake: Notify,
    streams: Arc<Semaphore>,
    max_streams: usize,
    interval: Duration,
    shutdown: Shutdown,
}

impl KpiFeed {
    /// Starts the producer: a snapshot of `store`, `ready` and `metrics` every
    /// `interval` while at least one of at most `max_streams` streams is open; it
    /// stops at `shutdown`.
    pub fn start(
        store: Arc<dyn Store>,
        ready: watch::Receiver<Readiness>,
        metrics: PrometheusHandle,
        shutdown: Shutdown,
        interval: Duration,
        max_streams: usize,
    ) -> KpiFeed {
        let inner = Arc::new(Inner {
            latest: watch::Sender::new(None),
            wake: Notify::new(),
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            interval,
            shutdown: shutdown.clone(),
        });
        let sources = Sources {
            store,
            ready,
            metrics,
            shutdown,
        };
        tokio::spawn(produce(inner.clone(), sources));
        KpiFeed { inner }
    }

    /// A stream of `kpis` events for one client, or a 503 when `max_streams` are
    /// open already.
    fn subscribe(&self) -> Result<impl Stream<Item = Result<Event, Infallible>>, ApiError> {
        let inner = &self.inner;
        let permit = inner.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many KPI streams: {} are open, the most `query.max_streams` allows; retry later",
                    inner.max_streams
                ),
            )
            .retry_after(RETRY_AFTER_SECS)
        })?;
        let receiver = inner.latest.subscribe();
        let fresh = receiver
            .borrow()
            .as_ref()
            .is_some_and(|p| p.at.elapsed() < inner.interval);
        let snapshots = if fresh {
            WatchStream::new(receiver)
        } else {
            // The producer idles while nobody listens: ask it for a snapshot now.
            inner.wake.notify_one();
            WatchStream::from_changes(receiver)
        };
        let events = snapshots
            .filter_map(|published| async move {
                let json = published?.json;
                Some(Ok(Event::default().event("kpis").data(&*json)))
            })
            // The permit goes with the stream: dropped when the client goes away.
            .map(move |event| {
                let _open = &permit;
                event
            })
            .take_until(inner.shutdown.signal());
        Ok(events)
    }
}

/// Publishes a snapshot every interval while a stream is open, and one at once
/// whenever a stream opens with none fresh.
async fn produce(inner: Arc<Inner>, sources: Sources) {
    let mut window = HealthWindow::default();
    loop {
        if inner.latest.receiver_count() == 0 {
            window.reset();
        }
        // Idle, it looks again every interval: a stream that opened while the last
        // snapshot was still fresh sends no wake-up, yet must get the next ones.
        while inner.latest.receiver_count() == 0 {
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(inner.interval) => {}
                _ = inner.shutdown.triggered() => return,
            }
        }
        let snapshot = sources.snapshot(&mut window).await;
        match serde_json::to_string(&snapshot) {
            Ok(json) => {
                inner.latest.send_replace(Some(Published {
                    json: json.into(),
                    at: Instant::now(),
                }));
            }
            Err(e) => tracing::warn!(error = %e, "cannot render a KPI snapshot"),
        }
        tokio::select! {
            _ = tokio::time::sleep(inner.interval) => {}
            _ = inner.wake.notified() => {}
            _ = inner.shutdown.triggered() => return,
        }
    }
}

/// The path of the KPI stream (exempt from the request deadline: it never ends).
pub const PATH: &str = "/v1/stream/kpis";

/// `GET /v1/stream/kpis`: `text/event-stream` of `kpis` events, with keep-alive
/// comments; 503 beyond `query.max_streams`, 404 in a process without the consumer
/// role.
#[utoipa::path(
    get,
    path = "/v1/stream/kpis",
    tag = "query",
    description = "Server-sent events: a `kpis` event every `query.stream_interval_ms` whose `data` \
        is a `KpiSnapshot` (see the components) of every KPI and of the pipeline's health, \
        keep-alive comments between. The stream stays open until the client or the process ends it.",
    responses(
        (status = 200, description = "The event stream.", body = String, content_type = "text/event-stream"),
        (status = 503, description = "`query.max_streams` streams are open; retry later.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")))
    )
)]
pub async fn kpi_stream(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let feed = st.feed.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this process does not run the consumer role",
        )
    })?;
    let events = Sse::new(feed.subscribe()?).keep_alive(KeepAlive::default());
    // A proxy in front (nginx) must pass each event on at once, not buffer them.
    Ok((
        [(HeaderName::from_static("x-accel-buffering"), "no")],
        events,
    )
        .into_response())
}
