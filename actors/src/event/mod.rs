//! The two event kinds, Sale and Tweet: the rules an event must meet, written once,
//! and the canonical form that travels on the bus.
//!
//! Every transport builds the same raw form of an event ([`RawSale`], [`RawTweet`]:
//! its fields as sent, each missing, given or of the wrong type) and one `validate`
//! applies the rules — ranges, enums, lengths, `id`/`ts` stamping — so a rule or an
//! error message never differs by transport. JSON objects (HTTP, TCP) become raw
//! events in [`json`], with the seeds' aliases and unknown fields refused; typed gRPC
//! messages become raw events in [`protobuf`], without passing through JSON.
//!
//! # Layout
//! - this file: [`Kind`], [`Events`], the errors, [`Stamp`], [`RawField`],
//!   [`RawBatch`] and the rules shared by both kinds.
//! - [`sale`]: [`Category`], [`Sale`], [`RawSale`] and the sale rules.
//! - [`tweet`]: [`Weather`], [`Tweet`], [`RawTweet`] and the tweet rules.
//! - [`json`]: JSON objects → raw events (aliases, unknown fields, JSON types).
//! - [`protobuf`]: gRPC messages → raw events (protobuf defaults are "not sent").
//! - [`body`]: HTTP ingest bodies (JSON, NDJSON) → JSON values.
//! - [`line`](mod@line): the TCP line format: bytes → bounded lines → ping, event or refusal.

pub mod body;
pub mod json;
pub mod line;
pub mod protobuf;
pub mod sale;
pub mod tweet;

pub use json::{parse_batch, parse_sale, parse_tweet, tagged_kind, DecodedEvents};
pub use sale::{Category, RawSale, Sale};
pub use tweet::{RawTweet, Tweet, Weather};

use serde::{Deserialize, Serialize};
use serde_json::Value;
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

    /// Position in [`Kind::ALL`] (and in per-kind arrays).
    pub const fn index(self) -> usize {
        match self {
            Kind::Sale => 0,
            Kind::Tweet => 1,
        }
    }

    /// Whichever of `sale` and `tweet` belongs to this kind (a per-kind setting).
    pub fn pick<T>(self, sale: T, tweet: T) -> T {
        match self {
            Kind::Sale => sale,
            Kind::Tweet => tweet,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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

/// Stamps one receive time for the whole batch, and consecutive UUIDv7 ids: the
/// first event without an id gets a fresh UUIDv7 `base` (its lowest 24 bits
/// clear), the next one `base + 1` (as 128-bit integers), and so on. So a client
/// that learns `base` knows every id stamped on its batch (what the gRPC
/// `flujo-id-base` metadata of an unknown outcome relies on).
///
/// Only the lowest 24 of the UUID's random bits are given up: `uuid`'s `now_v7`
/// keeps a counter above them (bits 32 and up) that differs between any two calls
/// of a process within one millisecond, and 8 random bits stay between the two, so
/// the 2^24 ids of two batches never overlap (a batch holds at most 1,000,000).
/// Not `Clone`: a copy would stamp the same ids again.
#[derive(Debug)]
pub struct ReceiveStamp {
    /// Receive time of the batch, ms since the epoch.
    pub now_ms: i64,
    /// The next id to stamp, as its text (each id is the one before plus one,
    /// so the text is counted up in place instead of written anew).
    next: [u8; 36],
}

/// The bits of a UUIDv7 cleared in a batch's first stamped id, so that adding up
/// to 2^24 - 1 never carries into the bits above the 8 random ones over them.
const STAMP_ROOM: u128 = (1 << 24) - 1;

impl ReceiveStamp {
    /// A stamp for a batch received now.
    pub fn now() -> Self {
        let base = uuid::Uuid::from_u128(uuid::Uuid::now_v7().as_u128() & !STAMP_ROOM);
        let mut next = [0; uuid::fmt::Hyphenated::LENGTH];
        base.hyphenated().encode_lower(&mut next);
        ReceiveStamp {
            now_ms: now_ms(),
            next,
        }
    }
}

/// Adds one to a UUID in canonical text form (lowercase hex digits, hyphens
/// skipped), wrapping at the top as a 128-bit integer does.
fn count_up(text: &mut [u8; 36]) {
    for digit in text.iter_mut().rev() {
        match *digit {
            b'-' => {}
            b'f' => *digit = b'0',
            b'9' => {
                *digit = b'a';
                return;
            }
            _ => {
                *digit += 1;
                return;
            }
        }
    }
}

impl Stamp for ReceiveStamp {
    fn new_id(&mut self) -> String {
        // ASCII by construction: the lossy reading is never taken, and would give
        // the same text.
        let id = std::str::from_utf8(&self.next).map_or_else(
            |_| String::from_utf8_lossy(&self.next).into_owned(),
            str::to_owned,
        );
        count_up(&mut self.next);
        id
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

/// One field of an event as a transport delivered it, before the rules ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum RawField<T> {
    /// Not sent: absent or `null` in JSON, the default value in protobuf.
    #[default]
    Missing,
    /// Sent, with a value of the field's type.
    Given(T),
    /// Sent, but not a value of the field's type; the error names the field (boxed:
    /// raw events are moved in batches, and the error is rare).
    Malformed(Box<FieldError>),
}

impl<T: Default + PartialEq> RawField<T> {
    /// A protobuf field: its default value (`""`, `0`) means "not sent".
    pub fn unless_default(value: T) -> Self {
        if value == T::default() {
            RawField::Missing
        } else {
            RawField::Given(value)
        }
    }
}

/// An enum field that a client may send as a numeric code (protobuf, or JSON for a
/// category); the refusal of a value that names none is written once, here.
pub trait Coded: Sized {
    /// The canonical field name.
    const FIELD: &'static str;
    /// What the field accepts, as the refusal says it.
    const EXPECTED: &'static str;
    /// The value a code names, if any.
    const WITH_CODE: fn(i64) -> Option<Self>;

    /// The refusal of `got`, shown as the client wrote it.
    fn unknown(got: impl fmt::Display) -> FieldError {
        let (field, expected) = (Self::FIELD, Self::EXPECTED);
        FieldError::new(
            field,
            format!("field `{field}` must be {expected}, got {got}"),
        )
    }
}

impl<T: Coded> RawField<T> {
    /// A protobuf enum: 0 (unspecified) is missing, a known code its value, any
    /// other code malformed.
    pub fn from_code(code: i64) -> Self {
        match (code, (T::WITH_CODE)(code)) {
            (0, _) => RawField::Missing,
            (_, Some(v)) => RawField::Given(v),
            (_, None) => RawField::Malformed(Box::new(T::unknown(code))),
        }
    }
}

impl<T> RawField<T> {
    /// The value of a field the event must have.
    fn required(self, name: &str) -> Result<T, FieldError> {
        match self {
            RawField::Given(v) => Ok(v),
            RawField::Missing => Err(FieldError::new(name, format!("field `{name}` is required"))),
            RawField::Malformed(e) => Err(*e),
        }
    }

    /// The value of a field the event may leave out.
    fn optional(self) -> Result<Option<T>, FieldError> {
        match self {
            RawField::Given(v) => Ok(Some(v)),
            RawField::Missing => Ok(None),
            RawField::Malformed(e) => Err(*e),
        }
    }
}

/// A text of `min` to `max` characters.
fn chars_between(name: &str, s: String, min: usize, max: usize) -> Result<String, FieldError> {
    // A character is 1 to 4 bytes: most texts are decided by their length alone.
    let long_enough = min == 0 || (min == 1 && !s.is_empty()) || s.len() >= min.saturating_mul(4);
    if long_enough && s.len() <= max {
        return Ok(s);
    }
    let chars = s.chars().count();
    if chars < min || chars > max {
        return Err(FieldError::new(
            name,
            format!("field `{name}` must be {min} to {max} characters long, got {chars}"),
        ));
    }
    Ok(s)
}

/// A finite number (a typed message can carry NaN or infinity; JSON cannot).
fn finite(name: &str, x: f64) -> Result<f64, FieldError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(FieldError::new(
            name,
            format!("field `{name}` must be a finite number, got {x}"),
        ))
    }
}

/// A finite number within `min..=max` `unit`.
fn within(name: &str, x: f64, min: f64, max: f64, unit: &str) -> Result<f64, FieldError> {
    let x = finite(name, x)?;
    if !(min..=max).contains(&x) {
        return Err(FieldError::new(
            name,
            format!("field `{name}` must be between {min} and {max} {unit}, got {x}"),
        ));
    }
    Ok(x)
}

/// The event's `id` and `ts` as sent, or stamped when missing.
fn id_and_ts(
    id: RawField<String>,
    ts: RawField<i64>,
    stamp: &mut impl Stamp,
) -> Result<(String, i64), FieldError> {
    let id = match id.optional()? {
        Some(id) => chars_between("id", id, 1, MAX_ID_CHARS)?,
        None => stamp.new_id(),
    };
    let ts = match ts.optional()? {
        Some(ts) if ts < 0 => {
            return Err(FieldError::new(
                "ts",
                format!("field `ts` must be milliseconds since the epoch (>= 0), got {ts}"),
            ))
        }
        Some(ts) => ts,
        None => stamp.now_ms(),
    };
    Ok((id, ts))
}

/// A batch of events of one kind as a transport delivered it.
#[derive(Debug, Clone, PartialEq)]
pub enum RawBatch {
    /// Decoded JSON values (TCP lines; tests), one per event.
    Json {
        /// The kind the endpoint accepts.
        kind: Kind,
        /// The values, parsed by [`json`] before the rules run.
        objects: Vec<Value>,
    },
    /// Raw events decoded straight from the JSON text (HTTP).
    Decoded(DecodedEvents),
    /// Typed sales (gRPC).
    Sales(Vec<RawSale>),
    /// Typed tweets (gRPC).
    Tweets(Vec<RawTweet>),
}

impl RawBatch {
    /// The kind of every event in the batch.
    pub fn kind(&self) -> Kind {
        match self {
            RawBatch::Json { kind, .. } => *kind,
            RawBatch::Decoded(DecodedEvents::Sales(_)) => Kind::Sale,
            RawBatch::Decoded(DecodedEvents::Tweets(_)) => Kind::Tweet,
            RawBatch::Sales(_) => Kind::Sale,
            RawBatch::Tweets(_) => Kind::Tweet,
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        match self {
            RawBatch::Json { objects, .. } => objects.len(),
            RawBatch::Decoded(DecodedEvents::Sales(v)) => v.len(),
            RawBatch::Decoded(DecodedEvents::Tweets(v)) => v.len(),
            RawBatch::Sales(v) => v.len(),
            RawBatch::Tweets(v) => v.len(),
        }
    }

    /// True when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The position of the first event sent without an id (absent, or `null` in
    /// JSON): the one that gets the batch's first stamped id ([`ReceiveStamp`]).
    /// (Only gRPC answers with it; a JSON object refused whole counts as one
    /// without an id among values, not among decoded events.)
    pub fn first_unidentified(&self) -> Option<usize> {
        match self {
            RawBatch::Json { objects, .. } => objects
                .iter()
                .position(|v| v.get("id").is_none_or(Value::is_null)),
            RawBatch::Decoded(DecodedEvents::Sales(v)) => v
                .iter()
                .position(|s| s.as_ref().is_ok_and(|s| s.id == RawField::Missing)),
            RawBatch::Decoded(DecodedEvents::Tweets(v)) => v
                .iter()
                .position(|t| t.as_ref().is_ok_and(|t| t.id == RawField::Missing)),
            RawBatch::Sales(v) => v.iter().position(|s| s.id == RawField::Missing),
            RawBatch::Tweets(v) => v.iter().position(|t| t.id == RawField::Missing),
        }
    }

    /// Applies the rules to every event, stamping what is missing. The whole batch
    /// is refused at its first bad event.
    pub fn validate(self, stamp: &mut impl Stamp) -> Result<Events, ValidationError> {
        match self {
            RawBatch::Json { kind, objects } => parse_batch(kind, objects, stamp),
            RawBatch::Decoded(DecodedEvents::Sales(sales)) => {
                each(sales, |s| s?.validate(stamp)).map(Events::Sales)
            }
            RawBatch::Decoded(DecodedEvents::Tweets(tweets)) => {
                each(tweets, |t| t?.validate(stamp)).map(Events::Tweets)
            }
            RawBatch::Sales(sales) => each(sales, |s| s.validate(stamp)).map(Events::Sales),
            RawBatch::Tweets(tweets) => each(tweets, |t| t.validate(stamp)).map(Events::Tweets),
        }
    }

    /// Applies the rules to every event, stamping what is missing, and keeps the
    /// good ones: each bad event is refused alone (its index is its position in
    /// this batch). For transports that answer every event on its own (TCP lines,
    /// gRPC stream events) and coalesce them into batches.
    pub fn validate_each(self, stamp: &mut impl Stamp) -> (Events, Vec<ValidationError>) {
        match self {
            RawBatch::Json { kind, objects } => json::parse_each(kind, objects, stamp),
            RawBatch::Decoded(DecodedEvents::Sales(sales)) => {
                let (good, bad) = split(sales, |s| s?.validate(stamp));
                (Events::Sales(good), bad)
            }
            RawBatch::Decoded(DecodedEvents::Tweets(tweets)) => {
                let (good, bad) = split(tweets, |t| t?.validate(stamp));
                (Events::Tweets(good), bad)
            }
            RawBatch::Sales(sales) => {
                let (good, bad) = split(sales, |s| s.validate(stamp));
                (Events::Sales(good), bad)
            }
            RawBatch::Tweets(tweets) => {
                let (good, bad) = split(tweets, |t| t.validate(stamp));
                (Events::Tweets(good), bad)
            }
        }
    }
}

/// How a batch with bad events is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refusal {
    /// The whole batch, at its first bad event: nothing of it is taken (an HTTP
    /// request, a gRPC batch).
    #[default]
    WholeBatch,
    /// Each bad event alone; the good ones go on (see [`RawBatch::validate_each`]).
    EachEvent,
}

/// Applies `one` to every item: the good results in order, and the failures with
/// their positions.
fn split<R, E>(
    items: Vec<R>,
    mut one: impl FnMut(R) -> Result<E, FieldError>,
) -> (Vec<E>, Vec<ValidationError>) {
    let mut good = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match one(item) {
            Ok(e) => good.push(e),
            Err(error) => bad.push(ValidationError { index, error }),
        }
    }
    (good, bad)
}

/// Applies `one` to every item, naming the position of the first failure.
fn each<R, E>(
    items: Vec<R>,
    mut one: impl FnMut(R) -> Result<E, FieldError>,
) -> Result<Vec<E>, ValidationError> {
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| one(item).map_err(|error| ValidationError { index, error }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids `gen-1`, `gen-2`, … and a fixed receive time.
    pub(super) struct FixedStamp(pub(super) u32);

    impl Stamp for FixedStamp {
        fn new_id(&mut self) -> String {
            self.0 += 1;
            format!("gen-{}", self.0)
        }
        fn now_ms(&self) -> i64 {
            1_700_000_000_000
        }
    }

    #[test]
    fn counting_up_the_text_of_a_uuid_adds_one_to_its_bits() {
        for start in [
            0u128,
            0x0192_3456_789a_7bcd_8ef0_1234_56ff_fff0,
            u128::MAX - 20,
        ] {
            let mut text = [0; 36];
            uuid::Uuid::from_u128(start)
                .hyphenated()
                .encode_lower(&mut text);
            for k in 1..=40u128 {
                count_up(&mut text);
                let want = uuid::Uuid::from_u128(start.wrapping_add(k)).to_string();
                assert_eq!(std::str::from_utf8(&text), Ok(want.as_str()));
            }
        }
    }

    #[test]
    fn stamped_ids_are_consecutive_uuid_v7() {
        let mut stamp = ReceiveStamp::now();
        let ids: Vec<uuid::Uuid> = (0..3)
            .map(|_| stamp.new_id().parse().expect("a UUID"))
            .collect();
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(id.get_version_num(), 7, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(id.as_u128(), ids[0].as_u128() + k as u128);
        }
        // Room for a whole batch: the last of 2^24 ids is still a UUIDv7.
        let last = uuid::Uuid::from_u128(ids[0].as_u128() + (1 << 24) - 1);
        assert_eq!(
            (last.get_version_num(), last.get_variant()),
            (7, uuid::Variant::RFC4122)
        );
    }

    #[test]
    fn batches_stamped_in_the_same_millisecond_never_share_an_id() {
        // Many stamps in a tight loop (most within one millisecond): the ranges of
        // 2^24 ids that start at their bases never overlap.
        let mut bases: Vec<u128> = (0..2_000)
            .map(|_| {
                let id: uuid::Uuid = ReceiveStamp::now().new_id().parse().expect("a UUID");
                id.as_u128()
            })
            .collect();
        bases.sort_unstable();
        for pair in bases.windows(2) {
            assert!(
                pair[1] - pair[0] >= 1 << 24,
                "{:032x} and {:032x} are closer than a batch",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn missing_id_and_ts_are_stamped_and_bad_ones_refused() {
        let mut stamp = FixedStamp(0);
        assert_eq!(
            id_and_ts(RawField::Missing, RawField::Missing, &mut stamp),
            Ok(("gen-1".to_owned(), 1_700_000_000_000))
        );
        assert_eq!(
            id_and_ts(
                RawField::unless_default("a".into()),
                RawField::unless_default(5),
                &mut stamp
            ),
            Ok(("a".to_owned(), 5))
        );
        for (id, ts, field) in [
            (RawField::Given("i".repeat(129)), RawField::Missing, "id"),
            (RawField::Missing, RawField::Given(-1), "ts"),
        ] {
            let err = id_and_ts(id, ts, &mut stamp).expect_err("refused");
            assert_eq!(err.field.as_deref(), Some(field));
        }
        assert_eq!(
            finite("price", f64::NAN).expect_err("NaN").message,
            "field `price` must be a finite number, got NaN"
        );
    }

    #[test]
    fn typed_batches_report_the_first_bad_index() {
        let good = RawSale {
            category: RawField::Given(Category::Home),
            product_id: RawField::Given("P".into()),
            price: RawField::Given(1.0),
            quantity: RawField::Given(1),
            ..RawSale::default()
        };
        let bad = RawSale {
            quantity: RawField::Given(0),
            ..good.clone()
        };
        let batch = RawBatch::Sales(vec![good.clone(), good, bad]);
        assert_eq!((batch.kind(), batch.len()), (Kind::Sale, 3));
        let err = batch.validate(&mut FixedStamp(0)).expect_err("bad");
        assert_eq!(
            (err.index, err.error.field.as_deref()),
            (2, Some("quantity"))
        );
    }
}
