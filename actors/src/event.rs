//! The two event kinds, Sale and Tweet: parsing from JSON objects (with the seeds'
//! aliases), validation, and the canonical form that travels on the bus.
//!
//! Parsing is deliberately hand-written over `serde_json::Map` instead of derived: a
//! client must learn *which* field of *which* event is wrong, aliases must map to one
//! canonical field, and an unknown field must be refused rather than dropped.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Longest accepted event id, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest accepted product id, location or similar name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest accepted tweet text, in characters.
pub const MAX_TEXT_CHARS: usize = 280;
/// Largest accepted sale quantity.
pub const MAX_QUANTITY: u64 = 1_000_000;

/// The two kinds of event flujo understands; sales and tweets have separate id spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A Black Friday sale.
    Sale,
    /// A weather tweet.
    Tweet,
}

impl Kind {
    /// The label used in metrics and in the TCP `kind` field: `sale` or `tweet`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Sale => "sale",
            Kind::Tweet => "tweet",
        }
    }

    /// Both kinds, in a fixed order.
    pub const ALL: [Kind; 2] = [Kind::Sale, Kind::Tweet];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Product category of a sale. Numeric codes 1–4 follow this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Code 1; Spanish `Electronica`.
    Electronics,
    /// Code 2; Spanish `Ropa`.
    Clothing,
    /// Code 3; Spanish `Hogar`.
    Home,
    /// Code 4; Spanish `Belleza`.
    Beauty,
}

impl Category {
    /// Every category, in code order.
    pub const ALL: [Category; 4] = [
        Category::Electronics,
        Category::Clothing,
        Category::Home,
        Category::Beauty,
    ];

    /// Canonical English name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Electronics => "electronics",
            Category::Clothing => "clothing",
            Category::Home => "home",
            Category::Beauty => "beauty",
        }
    }

    /// Position in [`Category::ALL`] (code − 1).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Parses an English or Spanish name (any case, accents optional) or a code "1"–"4".
    pub fn from_name(name: &str) -> Option<Category> {
        let lower = name.trim().to_lowercase();
        match lower.as_str() {
            "electronics" | "electronica" | "electrónica" | "1" => Some(Category::Electronics),
            "clothing" | "ropa" | "2" => Some(Category::Clothing),
            "home" | "hogar" | "3" => Some(Category::Home),
            "beauty" | "belleza" | "4" => Some(Category::Beauty),
            _ => None,
        }
    }

    /// Parses a numeric code 1–4.
    pub fn from_code(code: i64) -> Option<Category> {
        match code {
            1..=4 => Some(Category::ALL[(code - 1) as usize]),
            _ => None,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Weather reported by a tweet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weather {
    /// Sunny.
    Sunny,
    /// Cloudy.
    Cloudy,
    /// Rainy.
    Rainy,
    /// Foggy.
    Foggy,
    /// Snowy.
    Snowy,
    /// Stormy.
    Stormy,
}

impl Weather {
    /// Every weather, in a fixed order.
    pub const ALL: [Weather; 6] = [
        Weather::Sunny,
        Weather::Cloudy,
        Weather::Rainy,
        Weather::Foggy,
        Weather::Snowy,
        Weather::Stormy,
    ];

    /// Canonical lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Weather::Sunny => "sunny",
            Weather::Cloudy => "cloudy",
            Weather::Rainy => "rainy",
            Weather::Foggy => "foggy",
            Weather::Snowy => "snowy",
            Weather::Stormy => "stormy",
        }
    }

    /// Position in [`Weather::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Parses a name in any case.
    pub fn from_name(name: &str) -> Option<Weather> {
        let lower = name.trim().to_lowercase();
        Weather::ALL.into_iter().find(|w| w.as_str() == lower)
    }
}

impl fmt::Display for Weather {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated sale, in canonical form (this is also its JSON on the bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sale {
    /// Event id, unique per kind.
    pub id: String,
    /// Event time, ms since the Unix epoch.
    pub ts: i64,
    /// Product category.
    pub category: Category,
    /// Product id, 1–64 characters.
    pub product_id: String,
    /// Unit price, finite and > 0.
    pub price: f64,
    /// Units sold, 1–1,000,000.
    pub quantity: u64,
}

/// A validated weather tweet, in canonical form (this is also its JSON on the bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tweet {
    /// Event id, unique per kind.
    pub id: String,
    /// Event time, ms since the Unix epoch.
    pub ts: i64,
    /// City or municipality, 1–64 characters.
    pub location: String,
    /// Reported weather.
    pub weather: Weather,
    /// Temperature in °C, −90..=60.
    pub temperature: f64,
    /// Relative humidity in %, 0..=100.
    pub humidity: f64,
    /// Optional text, at most 280 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A batch of validated events of one kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Events {
    /// Sales.
    Sales(Vec<Sale>),
    /// Tweets.
    Tweets(Vec<Tweet>),
}

impl Events {
    /// The kind of every event in the batch.
    pub fn kind(&self) -> Kind {
        match self {
            Events::Sales(_) => Kind::Sale,
            Events::Tweets(_) => Kind::Tweet,
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        match self {
            Events::Sales(v) => v.len(),
            Events::Tweets(v) => v.len(),
        }
    }

    /// True when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids, in batch order.
    pub fn ids(&self) -> Vec<String> {
        match self {
            Events::Sales(v) => v.iter().map(|e| e.id.clone()).collect(),
            Events::Tweets(v) => v.iter().map(|e| e.id.clone()).collect(),
        }
    }
}

/// What is wrong with one event: the field (canonical name) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    /// Canonical name of the offending field, or `None` when the event as a whole is wrong.
    pub field: Option<String>,
    /// Human-readable reason, naming the field.
    pub message: String,
}

impl FieldError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    fn whole(message: impl Into<String>) -> Self {
        FieldError {
            field: None,
            message: message.into(),
        }
    }
}

/// The first bad event of a batch: its position, field and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {index}: {error}")]
pub struct ValidationError {
    /// Position of the event in the batch (0-based).
    pub index: usize,
    /// What is wrong with it.
    pub error: FieldError,
}

/// Values that the receiver stamps on events that lack them.
pub trait Stamp {
    /// A fresh event id (UUIDv7).
    fn new_id(&mut self) -> String;
    /// The receive time in ms since the epoch.
    fn now_ms(&self) -> i64;
}

/// Stamps with UUIDv7 ids and one receive time for the whole batch.
#[derive(Debug, Clone, Copy)]
pub struct ReceiveStamp {
    /// Receive time of the batch, ms since the epoch.
    pub now_ms: i64,
}

impl ReceiveStamp {
    /// A stamp for a batch received now.
    pub fn now() -> Self {
        ReceiveStamp { now_ms: now_ms() }
    }
}

impl Stamp for ReceiveStamp {
    fn new_id(&mut self) -> String {
        uuid::Uuid::now_v7().to_string()
    }
    fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

/// Wall-clock time in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses and validates a batch of JSON objects of one kind. The whole batch is
/// refused at its first bad event.
pub fn parse_batch(
    kind: Kind,
    objects: Vec<Value>,
    stamp: &mut impl Stamp,
) -> Result<Events, ValidationError> {
    let at = |index| move |error| ValidationError { index, error };
    match kind {
        Kind::Sale => objects
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                as_object(v)
                    .and_then(|m| parse_sale(m, stamp))
                    .map_err(at(i))
            })
            .collect::<Result<_, _>>()
            .map(Events::Sales),
        Kind::Tweet => objects
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                as_object(v)
                    .and_then(|m| parse_tweet(m, stamp))
                    .map_err(at(i))
            })
            .collect::<Result<_, _>>()
            .map(Events::Tweets),
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
                fields.check_kind(&value)?;
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

    /// Takes a field; JSON `null` counts as absent.
    fn take(&mut self, name: &str) -> Option<Value> {
        self.slots
            .iter_mut()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.take())
            .filter(|v| !v.is_null())
    }

    fn required(&mut self, name: &str) -> Result<Value, FieldError> {
        self.take(name)
            .ok_or_else(|| FieldError::new(name, format!("field `{name}` is required")))
    }
}

fn string_field(name: &str, v: Value, min: usize, max: usize) -> Result<String, FieldError> {
    let Value::String(s) = v else {
        return Err(FieldError::new(
            name,
            format!("field `{name}` must be a string, got {}", json_type(&v)),
        ));
    };
    let chars = s.chars().count();
    if chars < min || chars > max {
        return Err(FieldError::new(
            name,
            format!("field `{name}` must be {min} to {max} characters long, got {chars}"),
        ));
    }
    Ok(s)
}

fn number_field(name: &str, v: &Value) -> Result<f64, FieldError> {
    v.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
        FieldError::new(
            name,
            format!(
                "field `{name}` must be a finite number, got {}",
                json_type(v)
            ),
        )
    })
}

/// An integer, also written as a float with no fractional part (e.g. `5.0`).
fn integer_field(name: &str, v: &Value) -> Result<i64, FieldError> {
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

fn id_and_ts(fields: &mut Fields, stamp: &mut impl Stamp) -> Result<(String, i64), FieldError> {
    let id = match fields.take("id") {
        Some(v) => string_field("id", v, 1, MAX_ID_CHARS)?,
        None => stamp.new_id(),
    };
    let ts = match fields.take("ts") {
        Some(v) => {
            let ts = integer_field("ts", &v)?;
            if ts < 0 {
                return Err(FieldError::new(
                    "ts",
                    format!("field `ts` must be milliseconds since the epoch (>= 0), got {ts}"),
                ));
            }
            ts
        }
        None => stamp.now_ms(),
    };
    Ok((id, ts))
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

/// Parses one sale object (aliases accepted, unknown fields refused) and validates it.
pub fn parse_sale(map: Map<String, Value>, stamp: &mut impl Stamp) -> Result<Sale, FieldError> {
    let mut f = Fields::collect(Kind::Sale, map, &SALE_FIELDS, sale_alias)?;
    let category = f.required("category")?;
    let category = match &category {
        Value::String(s) => Category::from_name(s),
        Value::Number(_) => integer_field("category", &category)
            .ok()
            .and_then(Category::from_code),
        _ => None,
    }
    .ok_or_else(|| {
        FieldError::new(
            "category",
            format!(
                "field `category` must be electronics, clothing, home, beauty \
                 (or Electronica, Ropa, Hogar, Belleza, or 1-4), got {category}"
            ),
        )
    })?;
    let product_id = string_field("product_id", f.required("product_id")?, 1, MAX_NAME_CHARS)?;
    let price = number_field("price", &f.required("price")?)?;
    if price <= 0.0 {
        return Err(FieldError::new(
            "price",
            format!("field `price` must be greater than 0, got {price}"),
        ));
    }
    let quantity = integer_field("quantity", &f.required("quantity")?)?;
    if !(1..=MAX_QUANTITY as i64).contains(&quantity) {
        return Err(FieldError::new(
            "quantity",
            format!("field `quantity` must be an integer from 1 to {MAX_QUANTITY}, got {quantity}"),
        ));
    }
    if !(price * quantity as f64).is_finite() {
        return Err(FieldError::new(
            "price",
            format!("field `price` times `quantity` overflows a number ({price} × {quantity})"),
        ));
    }
    let (id, ts) = id_and_ts(&mut f, stamp)?;
    Ok(Sale {
        id,
        ts,
        category,
        product_id,
        price,
        quantity: quantity as u64,
    })
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

fn ranged(name: &str, v: &Value, min: f64, max: f64, unit: &str) -> Result<f64, FieldError> {
    let x = number_field(name, v)?;
    if !(min..=max).contains(&x) {
        return Err(FieldError::new(
            name,
            format!("field `{name}` must be between {min} and {max} {unit}, got {x}"),
        ));
    }
    Ok(x)
}

/// Parses one tweet object (aliases accepted, unknown fields refused) and validates it.
pub fn parse_tweet(map: Map<String, Value>, stamp: &mut impl Stamp) -> Result<Tweet, FieldError> {
    let mut f = Fields::collect(Kind::Tweet, map, &TWEET_FIELDS, tweet_alias)?;
    let location = string_field("location", f.required("location")?, 1, MAX_NAME_CHARS)?;
    let weather = f.required("weather")?;
    let weather = weather.as_str().and_then(Weather::from_name).ok_or_else(|| {
        FieldError::new(
            "weather",
            format!(
                "field `weather` must be one of sunny, cloudy, rainy, foggy, snowy, stormy, got {weather}"
            ),
        )
    })?;
    let temperature = ranged(
        "temperature",
        &f.required("temperature")?,
        -90.0,
        60.0,
        "°C",
    )?;
    let humidity = ranged("humidity", &f.required("humidity")?, 0.0, 100.0, "%")?;
    let text = f
        .take("text")
        .map(|v| string_field("text", v, 0, MAX_TEXT_CHARS))
        .transpose()?;
    let (id, ts) = id_and_ts(&mut f, stamp)?;
    Ok(Tweet {
        id,
        ts,
        location,
        weather,
        temperature,
        humidity,
        text,
    })
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
    use super::*;
    use serde_json::json;

    struct FixedStamp(u32);
    impl Stamp for FixedStamp {
        fn new_id(&mut self) -> String {
            self.0 += 1;
            format!("gen-{}", self.0)
        }
        fn now_ms(&self) -> i64 {
            1_700_000_000_000
        }
    }

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
        let err = sale(with("colour", json!(1))).expect_err("unknown");
        assert!(
            err.message.contains("unknown field `colour`"),
            "{}",
            err.message
        );
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
