//! Request bodies → events: the HTTP ingest body (one JSON object, a JSON array of
//! objects, or NDJSON) and its Content-Type. [`decode_events`] reads a body straight
//! into raw events (HTTP ingest); [`decode`] into JSON values, one per event. What
//! an event must be is [`json`]'s business; this only splits.

use super::json::{self, DecodedEvents};
use super::Kind;
use serde_json::Value;

/// How an ingest body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON object (one event) or a JSON array of them.
    Json,
    /// One JSON object per line; blank lines are skipped.
    Ndjson,
}

impl Encoding {
    /// The encoding a `Content-Type` value names (parameters such as `charset` and the
    /// case are ignored), or `None` for a type flujo does not accept.
    pub fn of_content_type(content_type: &str) -> Option<Encoding> {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Some(Encoding::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines" => Some(Encoding::Ndjson),
            _ => None,
        }
    }
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BodyError {
    /// The position of the event that failed (an NDJSON line that is no JSON), or
    /// `None` when the body as a whole is wrong.
    pub index: Option<usize>,
    /// Human-readable reason (names the line for NDJSON).
    pub message: String,
}

/// Decodes `body` into one JSON value per event (not yet checked to be objects).
pub fn decode(body: &[u8], encoding: Encoding) -> Result<Vec<Value>, BodyError> {
    let whole = |message: String| BodyError {
        index: None,
        message,
    };
    match encoding {
        Encoding::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => Ok(items),
            Ok(v @ Value::Object(_)) => Ok(vec![v]),
            Ok(_) => Err(whole(NOT_EVENTS.to_owned())),
            Err(e) => Err(whole(format!("invalid JSON: {e}"))),
        },
        Encoding::Ndjson => {
            let mut events = Vec::new();
            for (n, line) in body.split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let value = serde_json::from_slice::<Value>(line).map_err(|e| BodyError {
                    index: Some(events.len()),
                    message: format!("invalid JSON on line {}: {e}", n + 1),
                })?;
                events.push(value);
            }
            Ok(events)
        }
    }
}

/// Decodes `body` straight into raw events of `kind`, without a JSON value per
/// event: what [`decode`] and the JSON rules' field collection do together, with
/// the same errors.
pub fn decode_events(
    body: &[u8],
    encoding: Encoding,
    kind: Kind,
) -> Result<DecodedEvents, BodyError> {
    match encoding {
        Encoding::Json => match json::decode_json(kind, body) {
            Ok(Some(events)) => Ok(events),
            Ok(None) => Err(BodyError {
                index: None,
                message: NOT_EVENTS.to_owned(),
            }),
            Err(e) => Err(BodyError {
                index: None,
                message: format!("invalid JSON: {e}"),
            }),
        },
        Encoding::Ndjson => json::decode_lines(kind, body).map_err(|(index, line, e)| BodyError {
            index: Some(index),
            message: format!("invalid JSON on line {line}: {e}"),
        }),
    }
}

/// The refusal of a JSON body that is neither an object nor an array.
const NOT_EVENTS: &str = "body must be a JSON object (one event) or an array of objects";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_object_array_and_ndjson() {
        assert_eq!(
            decode(br#"{"a":1}"#, Encoding::Json).map(|v| v.len()),
            Ok(1)
        );
        assert_eq!(
            decode(br#"[{"a":1},{"a":2}]"#, Encoding::Json).map(|v| v.len()),
            Ok(2)
        );
        assert_eq!(
            decode(b"{\"a\":1}\n\n{\"a\":2}\r\n", Encoding::Ndjson).map(|v| v.len()),
            Ok(2)
        );
        let err = decode(b"{\"a\":1}\n{oops\n", Encoding::Ndjson).expect_err("bad line");
        assert_eq!(err.index, Some(1));
        assert!(err.message.contains("line 2"), "{}", err.message);
        assert_eq!(
            decode(b"7", Encoding::Json).expect_err("scalar").index,
            None
        );
        assert!(decode(b"[1,", Encoding::Json)
            .expect_err("truncated")
            .message
            .starts_with("invalid JSON: "));
    }

    #[test]
    fn content_types() {
        let of = Encoding::of_content_type;
        assert_eq!(of("application/json; charset=utf-8"), Some(Encoding::Json));
        assert_eq!(of("Application/JSON"), Some(Encoding::Json));
        assert_eq!(of("application/x-ndjson"), Some(Encoding::Ndjson));
        assert_eq!(of("text/plain"), None);
        assert_eq!(of(""), None);
    }
}
