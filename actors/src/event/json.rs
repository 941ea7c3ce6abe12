//! JSON objects (HTTP, TCP) → raw events: fields under their canonical names or the
//! seeds' aliases, unknown fields refused, each value checked for its JSON type. The
//! rules themselves are the raw events' `validate`.
//!
//! Parsing is deliberately hand-written over `serde_json::Map` instead of derived: a
//! client must learn *which* field of *which* event is wrong, aliases must map to one
//! canonical field, and an unknown field must be refused rather than dropped.

use super::{each, split, Category, Coded, Events, FieldError, Kind, RawField, RawSale, RawTweet};
use super::{Sale, Stamp, Tweet, ValidationError, Weather};
use serde_json::{Map, Value};

/// Parses and validates a batch of JSON objects of one kind. The whole batch is
/// refused at its first bad event.
pub fn parse_batch(
    kind: Kind,
    objects: Vec<Value>,
    stamp: &mut impl Stamp,
) -> Result<Events, ValidationError> {
    match kind {
        Kind::Sale => each(objects, |v| parse_sale(as_object(v)?, stamp)).map(Events::Sales),
        Kind::Tweet => each(objects, |v| parse_tweet(as_object(v)?, stamp)).map(Events::Tweets),
    }
}

/// Parses and validates JSON objects of one kind, each on its own: the good events,
/// and the bad ones' positions and reasons (see [`RawBatch::validate_each`]).
///
/// [`RawBatch::validate_each`]: super::RawBatch::validate_each
pub fn parse_each(
    kind: Kind,
    objects: Vec<Value>,
    stamp: &mut impl Stamp,
) -> (Events, Vec<ValidationError>) {
    match kind {
        Kind::Sale => {
            let (good, bad) = split(objects, |v| parse_sale(as_object(v)?, stamp));
            (Events::Sales(good), bad)
        }
        Kind::Tweet => {
            let (good, bad) = split(objects, |v| parse_tweet(as_object(v)?, stamp));
            (Events::Tweets(good), bad)
        }
    }
}

fn as_object(value: Value) -> Result<Map<String, Value>, FieldError> {
    match value {
        Value::Object(m) => Ok(m),
        other => Err(FieldError::whole(format!(
            "an event must be a JSON object, got {}",
            json_type(&other)
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Collects an object's fields under canonical names, refusing unknown fields and a
/// field given twice under two names.
struct Fields {
    kind: Kind,
    slots: Vec<(&'static str, Option<Value>)>,
}

impl Fields {
    fn collect(
        kind: Kind,
        map: Map<String, Value>,
        canonical: &[&'static str],
        alias: fn(&str) -> Option<&'static str>,
    ) -> Result<Self, FieldError> {
        let mut fields = Fields {
            kind,
            slots: canonical.iter().map(|&n| (n, None)).collect(),
        };
        for (key, value) in map {
            if key == "kind" {
                // `null` counts as absent, as for every other field.
                if !value.is_null() {
                    fields.check_kind(&value)?;
                }
                continue;
            }
            let name = canonical
                .iter()
                .copied()
                .find(|&c| c == key)
                .or_else(|| alias(&key))
                .ok_or_else(|| {
                    FieldError::new(
                        &key,
                        format!(
                            "unknown field `{key}` in {}; expected one of: {}",
                            kind,
                            canonical.join(", ")
                        ),
                    )
                })?;
            let slot = fields
                .slots
                .iter_mut()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| FieldError::new(name, "internal: no slot"))?;
            if slot.is_some() {
                return Err(FieldError::new(
                    name,
                    format!("field `{name}` is given twice (as `{key}` and another alias)"),
                ));
            }
            *slot = Some(value);
        }
        Ok(fields)
    }

    fn check_kind(&self, value: &Value) -> Result<(), FieldError> {
        match value.as_str() {
            Some(k) if k == self.kind.as_str() => Ok(()),
            _ => Err(FieldError::new(
                "kind",
                format!("field `kind` must be \"{}\" here, got {}", self.kind, value),
            )),
        }
    }

    /// Takes a field, checking its JSON type with `convert`; `null` counts as absent.
    fn take<T>(
        &mut self,
        name: &str,
        convert: fn(&str, Value) -> Result<T, FieldError>,
    ) -> RawField<T> {
        let value = self
            .slots
            .iter_mut()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.take())
            .filter(|v| !v.is_null());
        match value.map(|v| convert(name, v)) {
            None => RawField::Missing,
            Some(Ok(v)) => RawField::Given(v),
            Some(Err(e)) => RawField::Malformed(e),
        }
    }
}

fn string(name: &str, v: Value) -> Result<String, FieldError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(FieldError::new(
            name,
            format!("field `{name}` must be a string, got {}", json_type(&other)),
        )),
    }
}

fn number(name: &str, v: Value) -> Result<f64, FieldError> {
    v.as_f64().ok_or_else(|| {
        FieldError::new(
            name,
            format!(
                "field `{name}` must be a finite number, got {}",
                json_type(&v)
            ),
        )
    })
}

/// An integer, also written as a float with no fractional part (e.g. `5.0`).
fn integer(name: &str, v: Value) -> Result<i64, FieldError> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(FieldError::new(
            name,
            format!("field `{name}` must be an integer, got {v}"),
        )),
    }
}

/// A category name (English or Spanish) or code 1–4.
fn category(name: &str, v: Value) -> Result<Category, FieldError> {
    match &v {
        Value::String(s) => Category::from_name(s),
        Value::Number(_) => integer(name, v.clone()).ok().and_then(Category::from_code),
        _ => None,
    }
    .ok_or_else(|| Category::unknown(&v))
}

/// A weather name, in any case.
fn weather(_: &str, v: Value) -> Result<Weather, FieldError> {
    v.as_str()
        .and_then(Weather::from_name)
        .ok_or_else(|| Weather::unknown(&v))
}

const SALE_FIELDS: [&str; 6] = ["id", "ts", "category", "product_id", "price", "quantity"];

fn sale_alias(key: &str) -> Option<&'static str> {
    match key {
        "categoria" => Some("category"),
        "producto_id" => Some("product_id"),
        "precio" => Some("price"),
        "cantidad_vendida" => Some("quantity"),
        _ => None,
    }
}

/// One sale object as a raw sale (aliases accepted, unknown fields refused).
pub fn raw_sale(map: Map<String, Value>) -> Result<RawSale, FieldError> {
    let mut f = Fields::collect(Kind::Sale, map, &SALE_FIELDS, sale_alias)?;
    Ok(RawSale {
        id: f.take("id", string),
        ts: f.take("ts", integer),
        category: f.take("category", category),
        product_id: f.take("product_id", string),
        price: f.take("price", number),
        quantity: f.take("quantity", integer),
    })
}

/// Parses one sale object (aliases accepted, unknown fields refused) and validates it.
pub fn parse_sale(map: Map<String, Value>, stamp: &mut impl Stamp) -> Result<Sale, FieldError> {
    raw_sale(map)?.validate(stamp)
}

const TWEET_FIELDS: [&str; 7] = [
    "id",
    "ts",
    "location",
    "weather",
    "temperature",
    "humidity",
    "text",
];

fn tweet_alias(key: &str) -> Option<&'static str> {
    match key {
        "municipality" => Some("location"),
        _ => None,
    }
}

/// One tweet object as a raw tweet (aliases accepted, unknown fields refused).
pub fn raw_tweet(map: Map<String, Value>) -> Result<RawTweet, FieldError> {
    let mut f = Fields::collect(Kind::Tweet, map, &TWEET_FIELDS, tweet_alias)?;
    Ok(RawTweet {
        id: f.take("id", string),
        ts: f.take("ts", integer),
        location: f.take("location", string),
        weather: f.take("weather", weather),
        temperature: f.take("temperature", number),
        humidity: f.take("humidity", number),
        text: f.take("text", string),
    })
}

/// Parses one tweet object (aliases accepted, unknown fields refused) and validates it.
pub fn parse_tweet(map: Map<String, Value>, stamp: &mut impl Stamp) -> Result<Tweet, FieldError> {
    raw_tweet(map)?.validate(stamp)
}

/// The kind an event names in its own `"kind"` field (the TCP format).
pub fn tagged_kind(value: &Value) -> Result<Kind, FieldError> {
    let Value::Object(map) = value else {
        return Err(FieldError::whole(format!(
            "an event must be a JSON object, got {}",
            json_type(value)
        )));
    };
    match map.get("kind").and_then(Value::as_str) {
        Some("sale") => Ok(Kind::Sale),
        Some("tweet") => Ok(Kind::Tweet),
        Some(other) => Err(FieldError::new(
            "kind",
            format!("field `kind` must be \"sale\" or \"tweet\", got \"{other}\""),
        )),
        None => Err(FieldError::new(
            "kind",
            "field `kind` (\"sale\" or \"tweet\") is required",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::FixedStamp;
    use super::*;
    use serde_json::json;
    use std::fmt;

    fn sale(v: Value) -> Result<Sale, FieldError> {
        parse_sale(as_object(v)?, &mut FixedStamp(0))
    }

    fn tweet(v: Value) -> Result<Tweet, FieldError> {
        parse_tweet(as_object(v)?, &mut FixedStamp(0))
    }

    fn field_of<T: fmt::Debug>(r: Result<T, FieldError>) -> Option<String> {
        r.expect_err("should be refused").field
    }

    #[test]
    fn canonical_sale_round_trips_and_gets_id_and_ts() {
        let s = sale(json!({"category":"electronics","product_id":"P1","price":10.5,"quantity":2}))
            .expect("valid");
        assert_eq!(s.id, "gen-1");
        assert_eq!(s.ts, 1_700_000_000_000);
        assert_eq!(s.category, Category::Electronics);
        let text = serde_json::to_string(&s).expect("serializes");
        assert_eq!(
            text,
            r#"{"id":"gen-1","ts":1700000000000,"category":"electronics","product_id":"P1","price":10.5,"quantity":2}"#
        );
        let back: Sale = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, s);
    }

    #[test]
    fn seed_sale_aliases_and_numeric_categories() {
        let s = sale(json!({"categoria":3,"producto_id":"X","precio":1,"cantidad_vendida":7,"id":"a","ts":5}))
            .expect("valid");
        assert_eq!(
            (s.category, s.product_id.as_str(), s.price, s.quantity),
            (Category::Home, "X", 1.0, 7)
        );
        assert_eq!((s.id.as_str(), s.ts), ("a", 5));
        for (name, cat) in [
            ("Electronica", Category::Electronics),
            ("Electrónica", Category::Electronics),
            ("ROPA", Category::Clothing),
            ("Hogar", Category::Home),
            ("belleza", Category::Beauty),
            ("Beauty", Category::Beauty),
        ] {
            let s =
                sale(json!({"category":name,"product_id":"P","price":1,"quantity":1})).expect(name);
            assert_eq!(s.category, cat, "{name}");
        }
        for code in 1..=4 {
            let s = sale(json!({"category":code,"product_id":"P","price":1,"quantity":1}))
                .expect("code");
            assert_eq!(s.category, Category::ALL[code as usize - 1]);
        }
    }

    #[test]
    fn sale_rules_name_the_field() {
        let ok = json!({"category":"home","product_id":"P","price":1.0,"quantity":1});
        let with = |k: &str, v: Value| {
            let mut o = ok.clone();
            o[k] = v;
            o
        };
        let without = |k: &str| {
            let mut o = ok.clone();
            o.as_object_mut().map(|m| m.remove(k));
            o
        };
        for (bad, field) in [
            (with("category", json!(0)), "category"),
            (with("category", json!(5)), "category"),
            (with("category", json!("toys")), "category"),
            (with("category", json!(true)), "category"),
            (without("category"), "category"),
            (with("product_id", json!("")), "product_id"),
            (with("product_id", json!("x".repeat(65))), "product_id"),
            (with("product_id", json!(12)), "product_id"),
            (without("product_id"), "product_id"),
            (with("price", json!(0)), "price"),
            (with("price", json!(-1.5)), "price"),
            (with("price", json!("3")), "price"),
            (with("price", Value::Null), "price"),
            (with("quantity", json!(0)), "quantity"),
            (with("quantity", json!(1_000_001)), "quantity"),
            (with("quantity", json!(1.5)), "quantity"),
            (without("quantity"), "quantity"),
            (with("id", json!("")), "id"),
            (with("id", json!("i".repeat(129))), "id"),
            (with("id", json!(7)), "id"),
            (with("ts", json!(-1)), "ts"),
            (with("ts", json!("now")), "ts"),
            (with("colour", json!("red")), "colour"),
            (with("precio", json!(2)), "price"),
            (with("kind", json!("tweet")), "kind"),
        ] {
            assert_eq!(field_of(sale(bad.clone())).as_deref(), Some(field), "{bad}");
        }
        assert!(sale(with("quantity", json!(1_000_000))).is_ok());
        assert!(sale(with("quantity", json!(3.0))).is_ok());
        assert!(sale(with("id", json!("i".repeat(128)))).is_ok());
        assert!(sale(with("product_id", json!("é".repeat(64)))).is_ok());
        assert!(sale(with("kind", json!("sale"))).is_ok());
        assert!(
            sale(with("kind", Value::Null)).is_ok(),
            "null counts as absent"
        );
        let err = sale(with("colour", json!(1))).expect_err("unknown");
        assert!(
            err.message.contains("unknown field `colour`"),
            "{}",
            err.message
        );
    }

    /// Found by fuzzing (grpc_batch): serde_json's default number parser can be one
    /// unit in the last place off, so a tweet's humidity came back from its bus JSON
    /// as another number than the one accepted.
    #[test]
    fn numbers_survive_the_canonical_json_exactly() {
        let t = tweet(json!({"location":"Guatemala","weather":"sunny",
            "temperature":24.019515991210938,"humidity":40.000001549720764}))
        .expect("valid");
        assert_eq!(
            t.humidity,
            "40.000001549720764".parse::<f64>().expect("f64")
        );
        let bus = serde_json::to_string(&t).expect("serializes");
        let back: Tweet = serde_json::from_str(&bus).expect("parses");
        assert_eq!(back, t, "{bus}");
        for price in [0.09144338512092887, 0.9146155235219107, 1.5777777777770001] {
            let s = sale(json!({"category":1,"product_id":"P","price":price,"quantity":1}))
                .expect("valid");
            let back: Sale =
                serde_json::from_str(&serde_json::to_string(&s).expect("json")).expect("parses");
            assert_eq!(back.price, price);
        }
    }

    #[test]
    fn tweet_rules_and_aliases() {
        let ok = json!({"location":"Guatemala","weather":"sunny","temperature":21.5,"humidity":40});
        let t = tweet(ok.clone()).expect("valid");
        assert_eq!(t.weather, Weather::Sunny);
        assert_eq!(t.text, None);
        let seed = tweet(json!({"municipality":"Mixco","weather":"Rainy","temperature":18,"humidity":90,"text":"hola"}))
            .expect("seed form");
        assert_eq!(
            (seed.location.as_str(), seed.weather, seed.text.as_deref()),
            ("Mixco", Weather::Rainy, Some("hola"))
        );
        let with = |k: &str, v: Value| {
            let mut o = ok.clone();
            o[k] = v;
            o
        };
        for (bad, field) in [
            (with("location", json!("")), "location"),
            (with("location", json!("l".repeat(65))), "location"),
            (with("weather", json!("windy")), "weather"),
            (with("weather", json!(1)), "weather"),
            (with("temperature", json!(-90.01)), "temperature"),
            (with("temperature", json!(60.5)), "temperature"),
            (with("humidity", json!(-0.1)), "humidity"),
            (with("humidity", json!(100.1)), "humidity"),
            (with("text", json!("t".repeat(281))), "text"),
            (with("municipality", json!("Mixco")), "location"),
            (with("temp", json!(1)), "temp"),
        ] {
            assert_eq!(
                field_of(tweet(bad.clone())).as_deref(),
                Some(field),
                "{bad}"
            );
        }
        for w in ["sunny", "cloudy", "rainy", "foggy", "snowy", "stormy"] {
            assert!(tweet(with("weather", json!(w))).is_ok(), "{w}");
        }
        assert!(tweet(with("temperature", json!(-90))).is_ok());
        assert!(tweet(with("temperature", json!(60))).is_ok());
        assert!(tweet(with("humidity", json!(0))).is_ok());
        assert!(tweet(with("humidity", json!(100))).is_ok());
        assert!(tweet(with("text", Value::Null)).is_ok());
    }

    #[test]
    fn batch_reports_first_bad_index() {
        let objects = vec![
            json!({"category":1,"product_id":"P","price":1,"quantity":1}),
            json!({"category":1,"product_id":"P","price":1,"quantity":1}),
            json!({"category":1,"product_id":"P","price":-1,"quantity":1}),
            json!([1]),
        ];
        let err = parse_batch(Kind::Sale, objects, &mut FixedStamp(0)).expect_err("bad");
        assert_eq!(err.index, 2);
        assert_eq!(err.error.field.as_deref(), Some("price"));
        let err = parse_batch(Kind::Tweet, vec![json!(3)], &mut FixedStamp(0)).expect_err("bad");
        assert_eq!((err.index, err.error.field), (0, None));
    }

    #[test]
    fn tagged_events_name_their_kind() {
        let tweet =
            json!({"kind":"tweet","location":"A","weather":"foggy","temperature":1,"humidity":2});
        assert_eq!(tagged_kind(&tweet), Ok(Kind::Tweet));
        assert_eq!(tagged_kind(&json!({"kind":"sale"})), Ok(Kind::Sale));
        for bad in [
            json!({"location":"A"}),
            json!({"kind":"order"}),
            json!({"kind":1}),
        ] {
            assert_eq!(
                tagged_kind(&bad).expect_err("bad").field.as_deref(),
                Some("kind"),
                "{bad}"
            );
        }
        assert_eq!(tagged_kind(&json!([1])).expect_err("array").field, None);
    }
}
