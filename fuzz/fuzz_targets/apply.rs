//! Aggregation: batches of valid events (built from fuzzer-chosen fields, kept only
//! when the rules accept them; extreme prices included) with or without stream
//! positions → the memory store's apply (dedup by id and position, per-key deltas,
//! floating sums) → its KPI answers, checked against a plain model: counts and
//! quantities add up, duplicates and replays are caught, min/max are exact, the
//! monitored product is that of the earliest sale by (ts, id) and its prices are
//! in (ts, id) order, no panic.
#![no_main]

use flujo_actors::event::{Category, Events, RawField, RawSale, RawTweet, Sale, Tweet, Weather};
use flujo_actors::store::{self, MemoryStore, Page, Positions, Store};
use flujo_fuzz::FixedStamp;
use futures::executor::block_on;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, Arbitrary)]
struct FuzzSale {
    id: u8,
    ts: u8,
    category: u8,
    product: u8,
    price: f64,
    quantity: u32,
}

#[derive(Debug, Arbitrary)]
struct FuzzTweet {
    id: u8,
    location: u8,
    weather: u8,
    temperature: f64,
    humidity: f64,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Sales(Vec<FuzzSale>, Option<Vec<(bool, u8)>>),
    Tweets(Vec<FuzzTweet>, Option<Vec<(bool, u8)>>),
}

fn sale(f: &FuzzSale) -> Option<Sale> {
    RawSale {
        id: RawField::Given(format!("s{}", f.id % 32)),
        ts: RawField::Given(i64::from(f.ts % 4)),
        category: RawField::from_code(i64::from(f.category % 5)),
        product_id: RawField::Given(format!("P{}", f.product % 8)),
        price: RawField::Given(f.price),
        quantity: RawField::Given(i64::from(f.quantity)),
    }
    .validate(&mut FixedStamp(0))
    .ok()
}

fn tweet(f: &FuzzTweet) -> Option<Tweet> {
    RawTweet {
        id: RawField::Given(format!("t{}", f.id % 32)),
        ts: RawField::Given(1),
        location: RawField::Given(format!("L{}", f.location % 8)),
        weather: RawField::from_code(i64::from(f.weather % 7)),
        temperature: RawField::Given(f.temperature),
        humidity: RawField::Given(f.humidity),
        text: RawField::Missing,
    }
    .validate(&mut FixedStamp(0))
    .ok()
}

/// Two streams; each event's offset, when the batch carries positions.
fn positions(n: usize, at: &Option<Vec<(bool, u8)>>) -> Positions {
    match at {
        Some(offsets) if offsets.len() >= n && n > 0 => Positions {
            streams: vec!["a".into(), "b".into()],
            offsets: offsets[..n]
                .iter()
                .map(|&(b, o)| (u32::from(b), i64::from(o)))
                .collect(),
        },
        _ => Positions::NONE,
    }
}

/// What the store should do, by the book.
#[derive(Default)]
struct Model {
    seen: [HashSet<String>; 2],
    next: [HashMap<String, i64>; 2],
    sales: Vec<Sale>,
    tweets: Vec<Tweet>,
}

impl Model {
    fn fresh(&mut self, kind: usize, ids: &[&str], at: &Positions) -> (Vec<bool>, usize) {
        let stored: Vec<i64> = at
            .streams
            .iter()
            .map(|s| self.next[kind].get(s).copied().unwrap_or(i64::MIN))
            .collect();
        let mut replayed = 0;
        let fresh = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                if let Some(&(s, o)) = at.offsets.get(i) {
                    if o < stored[s as usize] {
                        replayed += 1;
                        return false;
                    }
                }
                self.seen[kind].insert((*id).to_owned())
            })
            .collect();
        for &(s, o) in &at.offsets {
            let next = self.next[kind]
                .entry(at.streams[s as usize].clone())
                .or_insert(o + 1);
            *next = (*next).max(o + 1);
        }
        (fresh, replayed)
    }
}

fuzz_target!(|ops: Vec<Op>| {
    // A small id table (the default one is sized for millions of ids): the fuzzer's
    // ids are few, so none is evicted and the model's dedup holds.
    let store = MemoryStore::with_max_ids(Duration::from_secs(3600), 4096);
    let mut model = Model::default();
    for op in ops.iter().take(16) {
        let (events, at, kind) = match op {
            Op::Sales(v, at) => {
                let sales: Vec<Sale> = v.iter().filter_map(sale).collect();
                let at = positions(sales.len(), at);
                (Events::Sales(sales), at, 0)
            }
            Op::Tweets(v, at) => {
                let tweets: Vec<Tweet> = v.iter().filter_map(tweet).collect();
                let at = positions(tweets.len(), at);
                (Events::Tweets(tweets), at, 1)
            }
        };
        let ids = events.ids();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (fresh, replayed) = model.fresh(kind, &ids, &at);
        let applied = block_on(store::apply(&store, &events, &at)).expect("memory apply");
        assert_eq!(applied.fresh, fresh, "fresh events");
        assert_eq!(applied.replayed, replayed, "replayed events");
        match events {
            Events::Sales(v) => model.sales.extend(
                v.into_iter()
                    .zip(&fresh)
                    .filter(|(_, &f)| f)
                    .map(|(s, _)| s),
            ),
            Events::Tweets(v) => model.tweets.extend(
                v.into_iter()
                    .zip(&fresh)
                    .filter(|(_, &f)| f)
                    .map(|(t, _)| t),
            ),
        }
    }

    // Sales: counts and quantities add up, extremes are exact.
    let kpis = block_on(store.sales_kpis()).expect("sales kpis");
    let scopes = std::iter::once((None, &kpis.total)).chain(
        Category::ALL
            .iter()
            .map(|c| (Some(*c), &kpis.categories[c.as_str()].stats)),
    );
    for (category, stats) in scopes {
        let mine: Vec<&Sale> = model
            .sales
            .iter()
            .filter(|s| category.is_none_or(|c| s.category == c))
            .collect();
        assert_eq!(stats.count, mine.len() as u64, "{category:?} count");
        assert_eq!(
            stats.quantity_sum,
            mine.iter().map(|s| s.quantity).sum::<u64>(),
            "{category:?} quantity"
        );
        let min = mine.iter().map(|s| s.price).reduce(f64::min);
        let max = mine.iter().map(|s| s.price).reduce(f64::max);
        assert_eq!(
            (stats.price_min, stats.price_max),
            (min, max),
            "{category:?} extremes"
        );
        assert_eq!(stats.avg_price.is_some(), !mine.is_empty());
        assert!(!stats.price_sum.is_nan() && !stats.revenue.is_nan());
    }
    let ranking = block_on(store.product_ranking(
        None,
        Page {
            limit: 100,
            offset: 0,
        },
    ))
    .expect("product ranking");
    let products: HashSet<&str> = model.sales.iter().map(|s| s.product_id.as_str()).collect();
    assert_eq!(ranking.total, products.len());
    assert_eq!(
        ranking.items.iter().map(|p| p.quantity).sum::<u64>(),
        kpis.total.quantity_sum
    );
    for c in Category::ALL {
        let monitored = block_on(store.monitored_prices(c, 1000)).expect("monitored");
        // The product of the earliest sale by (ts, id); its prices by (ts, id).
        let mut mine: Vec<&Sale> = model.sales.iter().filter(|s| s.category == c).collect();
        mine.sort_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
        let product = mine.first().map(|s| s.product_id.clone());
        assert_eq!(monitored.product_id, product, "{c} monitored product");
        let expected: Vec<f64> = mine
            .iter()
            .filter(|s| Some(&s.product_id) == product.as_ref())
            .map(|s| s.price)
            .collect();
        let newest = &expected[expected.len().saturating_sub(1000)..];
        assert_eq!(monitored.prices, newest, "{c} monitored prices");
    }

    // Tweets: counts per weather and location add up.
    let kpis = block_on(store.tweet_kpis()).expect("tweet kpis");
    assert_eq!(kpis.total.count, model.tweets.len() as u64);
    for w in Weather::ALL {
        let n = model.tweets.iter().filter(|t| t.weather == w).count() as u64;
        assert_eq!(kpis.weather[w.as_str()], n, "{w:?}");
    }
    let ranking = block_on(store.location_ranking(Page {
        limit: 100,
        offset: 0,
    }))
    .expect("location ranking");
    assert_eq!(
        ranking.items.iter().map(|l| l.stats.count).sum::<u64>(),
        kpis.total.count
    );
    for l in &ranking.items {
        let temps = model
            .tweets
            .iter()
            .filter(|t| t.location == l.location)
            .map(|t| t.temperature);
        assert_eq!(l.stats.temperature_min, temps.clone().reduce(f64::min));
        assert_eq!(l.stats.temperature_max, temps.reduce(f64::max));
    }
});
