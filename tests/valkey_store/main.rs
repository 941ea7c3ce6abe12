//! `ValkeyStore` against a real `valkey-server`: the same answers as `MemoryStore`
//! (byte-for-byte JSON) for the same batches, idempotent and atomic batches, one
//! script call per batch, and recovery from a Valkey restart without data loss.
//!
//! The shared server's address comes from `FLUJO_TEST_VALKEY_URL` (default
//! `redis://127.0.0.1:6380`, started by `scripts/services.sh up`); each test uses its
//! own key prefix and deletes its keys at the end. The round-trip and restart tests
//! start their own `valkey-server` (from `FLUJO_TEST_VALKEY_SERVER`, the `PATH`, or the
//! one `scripts/services.sh` installs under `.services/`).

mod batches;
mod order;
mod parity;
mod positions;
mod restart;
mod shards;
#[path = "../support/mod.rs"]
mod support;

#[allow(unused_imports)]
use batches::*;

use flujo::components::valkey::ValkeyStore;
use flujo_actors::event::{Category, Kind, Sale, Tweet, Weather};
use flujo_actors::store::{Applied, MemoryStore, Page, Store, MONITORED_PRICES};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use support::{keys_under, redis_connection, valkey_url, KeysGuard, OwnValkey};

const DAY: Duration = Duration::from_secs(24 * 3600);
const HINT: &str = "start the test services with `scripts/services.sh up` \
    (or point FLUJO_TEST_VALKEY_URL at a running Valkey)";

// ---------------------------------------------------------------------------------
// Servers and key cleanup
// ---------------------------------------------------------------------------------

/// A prefix no other test (or run) uses.
fn unique_prefix() -> String {
    format!("test-{}:", uuid::Uuid::now_v7())
}

/// A store on the shared server under a fresh prefix, failing (never skipping) when
/// the server cannot be reached.
async fn shared_store(window: Duration, pool_size: usize) -> (ValkeyStore, KeysGuard) {
    let url = valkey_url();
    let prefix = unique_prefix();
    let store = ValkeyStore::connect(&url, &prefix, window, pool_size)
        .unwrap_or_else(|e| panic!("bad FLUJO_TEST_VALKEY_URL {url:?}: {e}"));
    match tokio::time::timeout(Duration::from_secs(5), store.ready()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("Valkey at {url} is not reachable ({e}): {HINT}"),
        Err(_) => panic!("Valkey at {url} did not answer PING within 5 s: {HINT}"),
    }
    (store, KeysGuard { url, prefix })
}

// ---------------------------------------------------------------------------------
// Events and answers
// ---------------------------------------------------------------------------------

fn sale(id: &str, category: Category, product: &str, price: f64, quantity: u64) -> Sale {
    Sale {
        id: id.into(),
        ts: 0,
        category,
        product_id: product.into(),
        price,
        quantity,
    }
}

fn tweet(id: &str, location: &str, weather: Weather, temperature: f64, humidity: f64) -> Tweet {
    Tweet {
        id: id.into(),
        ts: 0,
        location: location.into(),
        weather,
        temperature,
        humidity,
        text: None,
    }
}

/// Floats that have no short decimal form, or sit at the edges of the ranges.
const ODD_PRICES: [f64; 8] = [
    0.1 + 0.2,
    1.0 / 3.0,
    0.01,
    1999.99,
    2000.0,
    123.456_789_012_345_67,
    0.1 + 0.7,
    1e-9,
];

fn price(rng: &mut StdRng) -> f64 {
    if rng.random_bool(0.05) {
        *ODD_PRICES.choose(rng).expect("prices")
    } else {
        rng.random_range(1..=200_000u32) as f64 / 100.0
    }
}

fn quantity(rng: &mut StdRng) -> u64 {
    if rng.random_bool(0.01) {
        1_000_000
    } else {
        rng.random_range(1..=20)
    }
}

const PRODUCTS: [&str; 16] = [
    "P01", "P02", "P03", "P04", "P05", "P06", "P07", "P08", "p01", "p-02", "Ñandú", "a b", "Z",
    "ZZ", "0", "PROD:9",
];

const LOCATIONS: [&str; 14] = [
    "Guatemala",
    "Mixco",
    "mixco",
    "Villa Nueva",
    "Antigua",
    "Cobán",
    "San José",
    "Zacapa",
    "a:b",
    "Escuintla",
    "Ω",
    "Solo A",
    "Solo B",
    "Solo C",
];

/// The distinct sales of the parity test, in order: clothing's first sale (all have
/// ts 0, and `s-first` is the smallest id) is the monitored `MON` (then sold 1,050
/// more times there, and elsewhere too), nine
/// products tie at 7 units each, and the rest is random.
fn parity_sales(rng: &mut StdRng) -> Vec<Sale> {
    let mut sales = vec![sale("s-first", Category::Clothing, "MON", 9.99, 1)];
    let mut n = 0;
    let mut next_id = || {
        n += 1;
        format!("s{n}")
    };
    for i in 0..9 {
        let c = Category::ALL[i % 4];
        sales.push(sale(&next_id(), c, &format!("TIE-{i}"), price(rng), 7));
    }
    for _ in 0..1_050 {
        let p = price(rng);
        let q = quantity(rng);
        sales.push(sale(&next_id(), Category::Clothing, "MON", p, q));
    }
    for _ in 0..1_400 {
        let c = *Category::ALL.choose(rng).expect("categories");
        let product = if rng.random_bool(0.05) {
            "MON"
        } else {
            PRODUCTS.choose(rng).expect("products")
        };
        sales.push(sale(&next_id(), c, product, price(rng), quantity(rng)));
    }
    // Keep the monitored sales spread over the batches, the first one first.
    let first = sales.remove(0);
    shuffle(rng, &mut sales);
    sales.insert(0, first);
    sales
}

fn parity_tweets(rng: &mut StdRng) -> Vec<Tweet> {
    let mut tweets = Vec::new();
    for (i, solo) in ["Solo A", "Solo B", "Solo C"].iter().enumerate() {
        tweets.push(tweet(
            &format!("t-solo{i}"),
            solo,
            Weather::Foggy,
            12.5,
            80.0,
        ));
    }
    for n in 0..900 {
        let location = *LOCATIONS[..11].choose(rng).expect("locations");
        let weather = *Weather::ALL.choose(rng).expect("weathers");
        let temperature = if rng.random_bool(0.05) {
            *[0.1 + 0.2, -89.9, 60.0, 0.0, 1.0 / 3.0]
                .choose(rng)
                .expect("temperatures")
        } else {
            rng.random_range(-900..=600i32) as f64 / 10.0
        };
        let humidity = if rng.random_bool(0.05) {
            *[0.1 + 0.7, 100.0, 0.0, 2.0 / 3.0]
                .choose(rng)
                .expect("humidities")
        } else {
            rng.random_range(0..=10_000u32) as f64 / 100.0
        };
        tweets.push(tweet(
            &format!("t{n}"),
            location,
            weather,
            temperature,
            humidity,
        ));
    }
    shuffle(rng, &mut tweets);
    tweets
}

fn shuffle<T>(rng: &mut StdRng, items: &mut [T]) {
    use rand::seq::SliceRandom;
    items.shuffle(rng);
}

/// Cuts `events` into random batches and mixes in duplicates: repeats within a batch,
/// resends of earlier events (same content, or a different content under the same id,
/// which must be ignored too) and whole earlier batches sent again.
fn batches<T: Clone>(
    rng: &mut StdRng,
    events: &[T],
    altered: impl Fn(&T, &mut StdRng) -> T,
) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let size = rng.random_range(1..=150).min(events.len() - i);
        let mut batch: Vec<T> = events[i..i + size].to_vec();
        i += size;
        for _ in 0..rng.random_range(0..=3) {
            let pick = batch.choose(rng).expect("batch").clone();
            // Never before the batch's first event (the parity test's first sale).
            let at = rng.random_range(1..=batch.len());
            batch.insert(at, pick);
        }
        if i > size {
            for _ in 0..rng.random_range(0..=4) {
                let old = events[..i - size].choose(rng).expect("earlier").clone();
                let old = if rng.random_bool(0.5) {
                    altered(&old, rng)
                } else {
                    old
                };
                let at = rng.random_range(0..=batch.len());
                batch.insert(at, old);
            }
        }
        out.push(batch);
        if out.len() > 1 && rng.random_bool(0.1) {
            let again = out.choose(rng).expect("batches").clone();
            out.push(again);
        }
    }
    out
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("json")
}

/// Every query answer of a store, as JSON strings keyed by the query.
async fn answers(store: &dyn Store) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let sales = store.sales_kpis().await.expect("sales kpis");
    out.insert("sales_kpis".into(), json(&sales));
    let tweets = store.tweet_kpis().await.expect("tweet kpis");
    out.insert("tweet_kpis".into(), json(&tweets));
    let pages = [
        (1, 0),
        (1, 1),
        (3, 2),
        (10, 0),
        (10, 10),
        (7, 13),
        (1000, 0),
        (5, 5000),
    ];
    let scopes = [None]
        .into_iter()
        .chain(Category::ALL.into_iter().map(Some));
    for scope in scopes {
        for (limit, offset) in pages {
            let ranking = store
                .product_ranking(scope, Page { limit, offset })
                .await
                .expect("product ranking");
            out.insert(
                format!("products {scope:?} limit={limit} offset={offset}"),
                json(&ranking),
            );
        }
    }
    for (limit, offset) in pages {
        let ranking = store
            .location_ranking(Page { limit, offset })
            .await
            .expect("location ranking");
        out.insert(
            format!("locations limit={limit} offset={offset}"),
            json(&ranking),
        );
    }
    for c in Category::ALL {
        for limit in [0, 1, 10, 999, 1000] {
            let prices = store
                .monitored_prices(c, limit)
                .await
                .expect("monitored prices");
            out.insert(format!("monitored {c} limit={limit}"), json(&prices));
        }
    }
    out
}

async fn assert_same_answers(memory: &MemoryStore, valkey: &ValkeyStore, when: &str) {
    let expected = answers(memory).await;
    let actual = answers(valkey).await;
    for (query, want) in &expected {
        assert_eq!(
            actual.get(query),
            Some(want),
            "{when}: `{query}` differs between MemoryStore and ValkeyStore"
        );
    }
    assert_eq!(actual.len(), expected.len());
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------
