//! gRPC messages (`flujo.v1`, the `flujo-proto` crate) → raw events, with no JSON in
//! between; the rules are the raw events' `validate`, as for JSON.
//!
//! Protobuf cannot tell a default from "not sent": an empty `id`, a zero `ts`, an
//! `*_UNSPECIFIED` enum and an empty tweet `text` are missing; every other field is
//! as sent, so an empty `product_id` is refused for its length.

use super::{Category, RawField, RawSale, RawTweet, Weather};
use flujo_proto::v1::{Sale, Tweet};

/// The sale as the raw event the receiver validates.
pub fn raw_sale(s: Sale) -> RawSale {
    RawSale {
        id: RawField::unless_default(s.id),
        ts: RawField::unless_default(s.ts),
        category: RawField::<Category>::from_code(s.category.into()),
        product_id: RawField::Given(s.product_id),
        price: RawField::Given(s.price),
        quantity: RawField::Given(s.quantity),
    }
}

/// The tweet as the raw event the receiver validates.
pub fn raw_tweet(t: Tweet) -> RawTweet {
    RawTweet {
        id: RawField::unless_default(t.id),
        ts: RawField::unless_default(t.ts),
        location: RawField::Given(t.location),
        weather: RawField::<Weather>::from_code(t.weather.into()),
        temperature: RawField::Given(t.temperature),
        humidity: RawField::Given(t.humidity),
        text: RawField::unless_default(t.text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_defaults_are_missing_and_the_rest_is_as_sent() {
        let s = raw_sale(Sale {
            id: String::new(),
            ts: 0,
            category: 3,
            product_id: "P".into(),
            price: 2.5,
            quantity: 4,
        });
        assert_eq!(
            (s.id, s.ts, s.category, s.product_id),
            (
                RawField::Missing,
                RawField::Missing,
                RawField::Given(Category::Home),
                RawField::Given("P".to_owned())
            )
        );
        let bad = raw_sale(Sale {
            category: 9,
            price: f64::NAN,
            ..Sale::default()
        });
        assert!(matches!(bad.category, RawField::Malformed(_)));
        assert!(matches!(bad.price, RawField::Given(p) if p.is_nan()));
        assert_eq!(bad.product_id, RawField::Given(String::new()));
        let t = raw_tweet(Tweet {
            id: "t1".into(),
            ts: 5,
            location: "Mixco".into(),
            weather: 6,
            temperature: -1.0,
            humidity: 50.0,
            text: String::new(),
        });
        assert_eq!(
            (t.id, t.ts, t.weather, t.text),
            (
                RawField::Given("t1".to_owned()),
                RawField::Given(5),
                RawField::Given(Weather::Stormy),
                RawField::Missing
            )
        );
        assert_eq!(raw_tweet(Tweet::default()).weather, RawField::Missing);
    }
}
