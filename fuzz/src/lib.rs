//! What the fuzz targets share: a deterministic [`Stamp`] and the checks every
//! accepted event must pass, whichever transport it came through.

use flujo_actors::event::{
    parse_sale, parse_tweet, Events, Kind, RawBatch, Sale, Stamp, Tweet, MAX_ID_CHARS,
    MAX_NAME_CHARS, MAX_QUANTITY, MAX_TEXT_CHARS,
};
use serde_json::Value;

/// Ids `fuzz-1`, `fuzz-2`, … and a fixed receive time.
#[derive(Debug, Default)]
pub struct FixedStamp(pub u64);

impl Stamp for FixedStamp {
    fn new_id(&mut self) -> String {
        self.0 += 1;
        format!("fuzz-{}", self.0)
    }
    fn now_ms(&self) -> i64 {
        1_700_000_000_000
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The sale rules hold for an accepted sale, and its canonical JSON (what travels on
/// the bus) parses back, through the JSON path, to the same sale.
pub fn check_sale(s: &Sale) {
    assert!((1..=MAX_ID_CHARS).contains(&chars(&s.id)), "id {:?}", s.id);
    assert!(s.ts >= 0, "ts {}", s.ts);
    assert!((1..=MAX_NAME_CHARS).contains(&chars(&s.product_id)));
    assert!(s.price.is_finite() && s.price > 0.0, "price {}", s.price);
    assert!((1..=MAX_QUANTITY).contains(&s.quantity));
    assert!((s.price * s.quantity as f64).is_finite());
    let json = serde_json::to_value(s).expect("a sale serializes");
    let Value::Object(map) = json else {
        panic!("a sale serializes to an object")
    };
    let back = parse_sale(map, &mut FixedStamp(0)).expect("canonical JSON is accepted");
    assert_eq!(&back, s, "canonical JSON round trip");
    let text = serde_json::to_string(s).expect("a sale serializes");
    let back: Sale = serde_json::from_str(&text).expect("the bus form parses");
    assert_eq!(&back, s, "bus round trip of {text}");
}

/// The tweet rules hold for an accepted tweet, and its canonical JSON parses back to
/// the same tweet.
pub fn check_tweet(t: &Tweet) {
    assert!((1..=MAX_ID_CHARS).contains(&chars(&t.id)), "id {:?}", t.id);
    assert!(t.ts >= 0, "ts {}", t.ts);
    assert!((1..=MAX_NAME_CHARS).contains(&chars(&t.location)));
    assert!((-90.0..=60.0).contains(&t.temperature));
    assert!((0.0..=100.0).contains(&t.humidity));
    assert!(t.text.as_deref().map_or(0, chars) <= MAX_TEXT_CHARS);
    let json = serde_json::to_value(t).expect("a tweet serializes");
    let Value::Object(map) = json else {
        panic!("a tweet serializes to an object")
    };
    let back = parse_tweet(map, &mut FixedStamp(0)).expect("canonical JSON is accepted");
    assert_eq!(&back, t, "canonical JSON round trip");
    let text = serde_json::to_string(t).expect("a tweet serializes");
    let back: Tweet = serde_json::from_str(&text).expect("the bus form parses");
    assert_eq!(&back, t, "bus round trip of {text}");
}

/// Checks every event of an accepted batch.
pub fn check_events(events: &Events) {
    match events {
        Events::Sales(v) => v.iter().for_each(check_sale),
        Events::Tweets(v) => v.iter().for_each(check_tweet),
    }
}

/// Validates `batch` both ways (whole batch, each event alone) and checks that they
/// agree: the whole batch is accepted exactly when no event is refused alone, at the
/// first refused index otherwise, and every accepted event passes the checks.
pub fn validate_both_ways(batch: RawBatch) {
    let (n, kind) = (batch.len(), batch.kind());
    let whole = batch.clone().validate(&mut FixedStamp(0));
    let (good, bad) = batch.validate_each(&mut FixedStamp(0));
    assert_eq!(good.kind(), kind);
    assert_eq!(good.len() + bad.len(), n, "every event is answered once");
    assert!(bad.windows(2).all(|w| w[0].index < w[1].index));
    for e in &bad {
        assert!(e.index < n);
        assert!(!e.error.message.is_empty());
    }
    match whole {
        Ok(events) => {
            assert!(
                bad.is_empty(),
                "whole batch accepted, but {bad:?} refused alone"
            );
            assert_eq!(events, good, "both ways accept the same events");
        }
        Err(e) => assert_eq!(
            Some(&e),
            bad.first(),
            "the whole batch fails at the first bad event"
        ),
    }
    check_events(&good);
}

/// The kinds, for targets that try both.
pub const KINDS: [Kind; 2] = Kind::ALL;
