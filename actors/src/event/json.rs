//! JSON objects (HTTP, TCP) → raw events: fields under their canonical names or the
//! seeds' aliases, unknown fields refused, each value checked for its JSON type. The
//! rules themselves are the raw events' `validate`.
//!
//! Parsing is deliberately hand-written instead of derived: a client must learn
//! *which* field of *which* event is wrong, aliases must map to one canonical field,
//! and an unknown field must be refused rather than dropped. HTTP bodies are read
//! by a serde visitor straight into raw events ([`decode_json`], [`decode_lines`]);
//! TCP lines, which name their kind inside, are JSON values first
//! ([`parse_batch`]). Both collect fields the same way (`Fields`) and refuse the
//! same events; an object with two faults may be refused for either (keys in
//! text order here, in map order there).

use super::{each, split, Category, Coded, Events, FieldError, Kind, RawField, RawSale, RawTweet};
use super::{Sale, Stamp, Tweet, ValidationError, Weather};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

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

/// The fields one kind of event has: canonical names, and the seeds' aliases.
#[derive(Clone, Copy)]
struct Schema {
    kind: Kind,
    canonical: &'static [&'static str],
    /// The field a key names: its position in `canonical`, and whether the key is
    /// the field's alias (a field has at most one).
    field: fn(&str) -> Option<(usize, bool)>,
}

/// The most fields an event has (a tweet's seven).
const MAX_FIELDS: usize = 7;

/// An object's fields under canonical names, collected key by key: unknown fields
/// and a field given under two names are refused; a key given twice keeps its last
/// value (as a JSON object does).
struct Fields {
    schema: Schema,
    /// Per canonical field, in `schema.canonical` order: the value, and whether an
    /// alias gave it (a field has at most one alias).
    slots: [(Option<Value>, bool); MAX_FIELDS],
    /// The `kind` field, checked once the object is read (a key given twice
    /// counts with its last value).
    kind: Option<Value>,
}

impl Fields {
    fn new(schema: Schema) -> Self {
        Fields {
            schema,
            slots: Default::default(),
            kind: None,
        }
    }

    /// Collects a decoded object's fields (the TCP path, whose lines name their kind).
    fn collect(schema: Schema, map: Map<String, Value>) -> Result<Self, FieldError> {
        let mut fields = Fields::new(schema);
        for (key, value) in map {
            fields.put(&key, value)?;
        }
        fields.check().map(|()| fields)
    }

    /// Checks the fields once the whole object is read: refused if its `kind` is
    /// another (`null` counts as absent, as for every other field).
    fn check(&self) -> Result<(), FieldError> {
        match &self.kind {
            Some(value) if !value.is_null() => self.check_kind(value),
            _ => Ok(()),
        }
    }

    /// Puts one key of the object.
    fn put(&mut self, key: &str, value: Value) -> Result<(), FieldError> {
        let Schema {
            kind,
            canonical,
            field,
        } = self.schema;
        if key == "kind" {
            self.kind = Some(value);
            return Ok(());
        }
        let (index, by_alias) = field(key).ok_or_else(|| {
            FieldError::new(
                key,
                format!(
                    "unknown field `{key}` in {kind}; expected one of: {}",
                    canonical.join(", ")
                ),
            )
        })?;
        let slot = &mut self.slots[index];
        if slot.0.is_some() && slot.1 != by_alias {
            let name = canonical[index];
            return Err(FieldError::new(
                name,
                format!("field `{name}` is given twice (as `{key}` and another alias)"),
            ));
        }
        *slot = (Some(value), by_alias);
        Ok(())
    }

    fn check_kind(&self, value: &Value) -> Result<(), FieldError> {
        let kind = self.schema.kind;
        match value.as_str() {
            Some(k) if k == kind.as_str() => Ok(()),
            _ => Err(FieldError::new(
                "kind",
                format!("field `kind` must be \"{kind}\" here, got {value}"),
            )),
        }
    }

    /// Takes the field at `index` of the schema, checking its JSON type with
    /// `convert`; `null` counts as absent.
    fn take<T>(
        &mut self,
        index: usize,
        convert: fn(&str, Value) -> Result<T, FieldError>,
    ) -> RawField<T> {
        let name = self.schema.canonical[index];
        let value = self.slots[index].0.take().filter(|v| !v.is_null());
        match value.map(|v| convert(name, v)) {
            None => RawField::Missing,
            Some(Ok(v)) => RawField::Given(v),
            Some(Err(e)) => RawField::Malformed(Box::new(e)),
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

/// A sale's field by key (positions in `SALE_FIELDS`), aliases included.
fn sale_field(key: &str) -> Option<(usize, bool)> {
    Some(match key {
        "id" => (0, false),
        "ts" => (1, false),
        "category" => (2, false),
        "product_id" => (3, false),
        "price" => (4, false),
        "quantity" => (5, false),
        "categoria" => (2, true),
        "producto_id" => (3, true),
        "precio" => (4, true),
        "cantidad_vendida" => (5, true),
        _ => return None,
    })
}

const SALES: Schema = Schema {
    kind: Kind::Sale,
    canonical: &SALE_FIELDS,
    field: sale_field,
};

/// A sale's fields as a raw sale.
fn sale_of(f: &mut Fields) -> RawSale {
    RawSale {
        id: f.take(0, string),
        ts: f.take(1, integer),
        category: f.take(2, category),
        product_id: f.take(3, string),
        price: f.take(4, number),
        quantity: f.take(5, integer),
    }
}

/// One sale object as a raw sale (aliases accepted, unknown fields refused).
pub fn raw_sale(map: Map<String, Value>) -> Result<RawSale, FieldError> {
    Fields::collect(SALES, map).map(|mut f| sale_of(&mut f))
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

/// A tweet's field by key (positions in `TWEET_FIELDS`), aliases included.
fn tweet_field(key: &str) -> Option<(usize, bool)> {
    Some(match key {
        "id" => (0, false),
        "ts" => (1, false),
        "location" => (2, false),
        "weather" => (3, false),
        "temperature" => (4, false),
        "humidity" => (5, false),
        "text" => (6, false),
        "municipality" => (2, true),
        _ => return None,
    })
}

const TWEETS: Schema = Schema {
    kind: Kind::Tweet,
    canonical: &TWEET_FIELDS,
    field: tweet_field,
};

/// A tweet's fields as a raw tweet.
fn tweet_of(f: &mut Fields) -> RawTweet {
    RawTweet {
        id: f.take(0, string),
        ts: f.take(1, integer),
        location: f.take(2, string),
        weather: f.take(3, weather),
        temperature: f.take(4, number),
        humidity: f.take(5, number),
        text: f.take(6, string),
    }
}

/// One tweet object as a raw tweet (aliases accepted, unknown fields refused).
pub fn raw_tweet(map: Map<String, Value>) -> Result<RawTweet, FieldError> {
    Fields::collect(TWEETS, map).map(|mut f| tweet_of(&mut f))
}

/// Parses one tweet object (aliases accepted, unknown fields refused) and validates it.
pub fn parse_tweet(map: Map<String, Value>, stamp: &mut impl Stamp) -> Result<Tweet, FieldError> {
    raw_tweet(map)?.validate(stamp)
}

/// What an ingest body decoded straight into raw events holds: each event the raw
/// event, or why its object cannot be one (refused when the rules run).
pub type Decoded<R> = Vec<Result<R, FieldError>>;

/// Raw events decoded straight from JSON text, without a JSON value per object
/// (the HTTP path, whose endpoint names the kind).
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedEvents {
    /// Sales.
    Sales(Decoded<RawSale>),
    /// Tweets.
    Tweets(Decoded<RawTweet>),
}

/// Decodes one JSON text: an event object, or an array of them. `Ok(None)` when the
/// text is valid JSON but neither; `Err` when it is no JSON.
pub fn decode_json(kind: Kind, text: &[u8]) -> Result<Option<DecodedEvents>, serde_json::Error> {
    Ok(match kind {
        Kind::Sale => decode_text(SALES, sale_of, text)?.map(DecodedEvents::Sales),
        Kind::Tweet => decode_text(TWEETS, tweet_of, text)?.map(DecodedEvents::Tweets),
    })
}

/// Decodes NDJSON lines (blank ones skipped), each one event; `Err` names the
/// position of the first line that is no JSON, and its 1-based line number.
pub fn decode_lines(kind: Kind, body: &[u8]) -> Result<DecodedEvents, (usize, usize, String)> {
    fn lines<R>(
        schema: Schema,
        build: fn(&mut Fields) -> R,
        body: &[u8],
    ) -> Result<Decoded<R>, (usize, usize, String)> {
        let mut events = Vec::new();
        // A body of valid UTF-8 (the usual one) is read as text, which serde_json
        // does not check again string by string; any other line by line as bytes,
        // so that the error names the line and column as before.
        let text = std::str::from_utf8(body).ok();
        let mut next = 0;
        for (n, line) in body.split(|&b| b == b'\n').enumerate() {
            let start = next;
            next += line.len() + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let seed = EventSeed { schema, build };
            let event = match text {
                // Whole characters: a line ends at a newline (ASCII) or at the end.
                Some(text) => one(
                    seed,
                    &mut serde_json::Deserializer::from_str(&text[start..start + line.len()]),
                ),
                None => one(seed, &mut serde_json::Deserializer::from_slice(line)),
            }
            .map_err(|e| (events.len(), n + 1, e.to_string()))?;
            events.push(event);
        }
        Ok(events)
    }
    match kind {
        Kind::Sale => lines(SALES, sale_of, body).map(DecodedEvents::Sales),
        Kind::Tweet => lines(TWEETS, tweet_of, body).map(DecodedEvents::Tweets),
    }
}

/// One JSON text as an event or an array of events (`None`: neither).
fn decode_text<R>(
    schema: Schema,
    build: fn(&mut Fields) -> R,
    text: &[u8],
) -> Result<Option<Decoded<R>>, serde_json::Error> {
    let visitor = BodyVisitor(EventSeed { schema, build });
    // Valid UTF-8 (the usual body) is read as text, which serde_json does not check
    // again string by string; anything else as bytes, for serde_json's own error.
    match std::str::from_utf8(text) {
        Ok(text) => whole(visitor, &mut serde_json::Deserializer::from_str(text)),
        Err(_) => whole(visitor, &mut serde_json::Deserializer::from_slice(text)),
    }
}

/// The body's one JSON value, read by `visitor`, with nothing after it.
fn whole<'de, R: serde_json::de::Read<'de>, V: Visitor<'de>>(
    visitor: V,
    de: &mut serde_json::Deserializer<R>,
) -> Result<V::Value, serde_json::Error> {
    let value = de.deserialize_any(visitor)?;
    de.end()?;
    Ok(value)
}

/// One line's event, read by `seed`, with nothing after it.
fn one<'de, R: serde_json::de::Read<'de>, S: DeserializeSeed<'de>>(
    seed: S,
    de: &mut serde_json::Deserializer<R>,
) -> Result<S::Value, serde_json::Error> {
    let value = seed.deserialize(&mut *de)?;
    de.end()?;
    Ok(value)
}

/// One event object → its raw event; any other JSON value → why it is not one.
/// Schema errors do not stop the decoding (the rest of the object is still
/// parsed), so only bad JSON fails it, as when decoding to JSON values first.
struct EventSeed<R> {
    schema: Schema,
    build: fn(&mut Fields) -> R,
}

impl<R> Clone for EventSeed<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for EventSeed<R> {}

/// The refusal of a JSON value that is not an object.
fn not_an_object<R>(got: &str) -> Result<R, FieldError> {
    Err(FieldError::whole(format!(
        "an event must be a JSON object, got {got}"
    )))
}

impl<'de, R> DeserializeSeed<'de> for EventSeed<R> {
    type Value = Result<R, FieldError>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, R> Visitor<'de> for EventSeed<R> {
    type Value = Result<R, FieldError>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::new(self.schema);
        let mut refused = None;
        while let Some(KeyText(key)) = map.next_key()? {
            if refused.is_some() {
                // Parsed, not skipped: bad JSON anywhere still refuses the body.
                map.next_value::<Value>()?;
                continue;
            }
            if let Err(e) = fields.put(&key, map.next_value()?) {
                refused = Some(e);
            }
        }
        Ok(match refused {
            Some(e) => Err(e),
            None => fields.check().map(|()| (self.build)(&mut fields)),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Parsed, not skipped (serde_json's skipping checks neither escapes,
        // number ranges nor depth): bad JSON anywhere still refuses the body.
        while seq.next_element::<Value>()?.is_some() {}
        Ok(not_an_object("an array"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(not_an_object("null"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(not_an_object("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(not_an_object("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(not_an_object("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(not_an_object("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(not_an_object("a string"))
    }
}

/// The body of a JSON request: one event object, or an array of them (`None` for
/// any other JSON value).
struct BodyVisitor<R>(EventSeed<R>);

impl<'de, R> Visitor<'de> for BodyVisitor<R> {
    type Value = Option<Decoded<R>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object or an array of them")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(Some(vec![self.0.visit_map(map)?]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(event) = seq.next_element_seed(self.0)? {
            events.push(event);
        }
        Ok(Some(events))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An object key, borrowed from the text when it has no escapes.
struct KeyText<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = KeyText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(KeyText(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(KeyText(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(KeyText(Cow::Owned(s)))
            }
        }
        d.deserialize_str(Text)
    }
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
    fn text_and_bytes_that_are_no_utf8_decode_alike() {
        let sales = |body: &[u8]| match decode_lines(Kind::Sale, body) {
            Ok(DecodedEvents::Sales(sales)) => Ok(sales
                .into_iter()
                .map(|s| s.expect("a sale").product_id)
                .collect::<Vec<_>>()),
            Ok(DecodedEvents::Tweets(_)) => panic!("sales asked"),
            Err((index, line, _)) => Err((index, line)),
        };
        // Multi-byte characters before and on a line: each line is cut at its
        // own bytes.
        let ok = "{\"product_id\":\"café\"}\n\n{\"product_id\":\"日本\"}\n";
        let products = sales(ok.as_bytes()).expect("two sales");
        let given = |p: &RawField<String>| match p {
            RawField::Given(v) => v.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            products.iter().map(given).collect::<Vec<_>>(),
            ["café", "日本"]
        );
        // A body that is no UTF-8 names the line whose bytes are wrong.
        let bad = b"{\"product_id\":\"a\"}\n{\"product_id\":\"\xff\"}\n";
        assert_eq!(sales(bad), Err((1, 2)));
        assert!(decode_json(Kind::Sale, b"[{\"product_id\":\"\xc3\"}]").is_err());
        let one = decode_json(Kind::Sale, "[{\"product_id\":\"ñ\"}]".as_bytes());
        assert!(matches!(one, Ok(Some(DecodedEvents::Sales(s))) if s.len() == 1));
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

    /// Decoding straight from the text gives what decoding to JSON values and then
    /// collecting the fields gives, good events and refusals alike.
    #[test]
    fn decoding_from_text_agrees_with_json_values() {
        let objects = [
            json!({"category":"home","product_id":"P","price":1.0,"quantity":1}),
            json!({"categoria":3,"producto_id":"X","precio":2,"cantidad_vendida":7,"id":"a","ts":5}),
            json!({"category":"home","categoria":"home","product_id":"P","price":1,"quantity":1}),
            json!({"colour":"red"}),
            json!({"kind":"tweet"}),
            json!({"kind":"sale","category":1}),
            json!({"kind":null,"category":[1,{"a":2}],"price":{"x":[]},"quantity":"1"}),
            json!({"location":"Mixco","weather":"Sunny","temperature":1,"humidity":2,"text":null}),
            json!({"municipality":"Mixco","location":"Mixco"}),
            json!({"id":"i\u{0}d","ts":-1,"temperature":"hot"}),
            json!([1, 2]),
            json!(null),
            json!("sale"),
            json!(3.5),
            json!(true),
            json!({}),
        ];
        for kind in [Kind::Sale, Kind::Tweet] {
            let text = serde_json::to_vec(&objects).expect("json");
            let decoded = decode_json(kind, &text)
                .expect("valid json")
                .expect("an array");
            let by_values: Vec<_> = objects.iter().cloned().map(as_object).collect();
            match decoded {
                DecodedEvents::Sales(sales) => {
                    let want: Vec<_> = by_values
                        .into_iter()
                        .map(|m| m.and_then(raw_sale))
                        .collect();
                    assert_eq!(sales, want);
                }
                DecodedEvents::Tweets(tweets) => {
                    let want: Vec<_> = by_values
                        .into_iter()
                        .map(|m| m.and_then(raw_tweet))
                        .collect();
                    assert_eq!(tweets, want);
                }
            }
        }
        // A key given twice keeps its last value, as in a JSON value.
        let twice = br#"{"category":"home","product_id":"P","price":1,"price":2,"quantity":1}"#;
        let Some(DecodedEvents::Sales(sales)) = decode_json(Kind::Sale, twice).expect("json")
        else {
            panic!("one sale")
        };
        let sale = sales[0].clone().expect("a sale");
        assert_eq!(sale.price, RawField::Given(2.0));
        // `kind` given twice counts with its last value too.
        let kinds = br#"{"kind":"tweet","kind":null,"category":"home","product_id":"P","price":1,"quantity":1}"#;
        let Some(DecodedEvents::Sales(sales)) = decode_json(Kind::Sale, kinds).expect("json")
        else {
            panic!("one sale")
        };
        assert!(sales[0].is_ok(), "{sales:?}");
        // One object, NDJSON lines, and text that is JSON but no event.
        assert!(matches!(
            decode_json(Kind::Tweet, br#"{"text":"x"}"#),
            Ok(Some(DecodedEvents::Tweets(t))) if t.len() == 1
        ));
        assert_eq!(decode_json(Kind::Sale, b"7").expect("json"), None);
        assert!(decode_json(Kind::Sale, b"[{}] x").is_err(), "trailing text");
        // Bad JSON inside a refused object or an array event still refuses the
        // body, as a JSON value would.
        let deep = format!("[{}1{}]", "[".repeat(200), "]".repeat(200));
        for bad in [
            r#"[{"colour":1,"x":"\ud800"}]"#,
            "[[1e999]]",
            r#"[{"colour":1,"x":1e999}]"#,
            deep.as_str(),
        ] {
            assert!(decode_json(Kind::Sale, bad.as_bytes()).is_err(), "{bad}");
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
        }
        let lines = b"{\"colour\":1}\n{\"colour\":1,\"x\":1e999}";
        assert_eq!(decode_lines(Kind::Sale, lines).expect_err("line 2").0, 1);
        let lines = decode_lines(Kind::Sale, b"{}\n\n [] \n").expect("two lines");
        assert!(matches!(lines, DecodedEvents::Sales(s) if s.len() == 2));
        let bad = decode_lines(Kind::Sale, b"{}\n\n{oops").expect_err("bad line");
        assert_eq!((bad.0, bad.1), (1, 3));
        for (key, want) in SALE_FIELDS.iter().enumerate() {
            assert_eq!(sale_field(want), Some((key, false)));
        }
        for (key, want) in TWEET_FIELDS.iter().enumerate() {
            assert_eq!(tweet_field(want), Some((key, false)));
        }
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
