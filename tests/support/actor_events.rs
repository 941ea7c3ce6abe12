//! Events and batches as the actors carry them (`flujo_actors`), for the tests that
//! drive a sink or a source directly.

use flujo_actors::event::{Category, Events, Sale, Tweet, Weather};
use flujo_actors::messages::Batch;
use std::sync::Arc;

/// `n` sales with ids `{prefix}-{i}`, every category, 7 products, distinct prices.
pub fn actor_sales(prefix: &str, n: usize) -> Vec<Sale> {
    (0..n)
        .map(|i| Sale {
            id: format!("{prefix}-{i}"),
            ts: 1_700_000_000_000 + i as i64,
            category: Category::ALL[i % 4],
            product_id: format!("P{}", i % 7),
            price: 1.25 + i as f64,
            quantity: 1 + (i % 5) as u64,
        })
        .collect()
}

/// `n` tweets with ids `{prefix}-{i}` from `locations` cities (`city-0`, …), every
/// weather, text on every other one.
pub fn actor_tweets(prefix: &str, n: usize, locations: usize) -> Vec<Tweet> {
    (0..n)
        .map(|i| Tweet {
            id: format!("{prefix}-{i}"),
            ts: 1_700_000_000_000 + i as i64,
            location: format!("city-{}", i % locations),
            weather: Weather::ALL[i % 6],
            temperature: -10.5 + (i % 50) as f64,
            humidity: (i % 101) as f64,
            text: (i % 2 == 0).then(|| format!("tweet número {i}")),
        })
        .collect()
}

/// A batch of `events` received at `received_at_ms`, holding no admission permit.
pub fn batch(events: Events, received_at_ms: i64) -> Batch {
    Batch {
        events: Arc::new(events),
        received_at_ms,
        admitted: None,
        positions: None,
    }
}
