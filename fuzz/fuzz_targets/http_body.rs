//! HTTP ingest body: `Content-Type` line + body bytes → the content-type match → the
//! JSON/NDJSON decoder → the JSON rules for both kinds, whole batch and each event;
//! decoding straight to raw events (what HTTP ingest does) agrees with decoding to
//! JSON values first.
#![no_main]

use flujo_actors::event::body::{decode, decode_events, Encoding};
use flujo_actors::event::{RawBatch, ValidationError};
use flujo_fuzz::{validate_both_ways, FixedStamp, KINDS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line is the Content-Type; the rest is the body.
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&data[..i]), &data[i + 1..]),
        None => ("application/json".into(), data),
    };
    let Some(encoding) = Encoding::of_content_type(&content_type) else {
        return;
    };
    let objects = match decode(body, encoding) {
        Ok(objects) => objects,
        Err(e) => {
            assert!(!e.message.is_empty());
            if encoding == Encoding::Json {
                assert_eq!(e.index, None);
            }
            for kind in KINDS {
                let direct = decode_events(body, encoding, kind).expect_err("bad either way");
                assert_eq!(direct.index, e.index, "the same bad line");
            }
            return;
        }
    };
    if encoding == Encoding::Ndjson {
        let lines = body
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .count();
        assert_eq!(objects.len(), lines, "one value per non-blank line");
    }
    for kind in KINDS {
        let by_values = RawBatch::Json {
            kind,
            objects: objects.clone(),
        };
        let direct = RawBatch::Decoded(decode_events(body, encoding, kind).expect("JSON"));
        assert_eq!(direct.len(), by_values.len());
        // An object with two faults may name either (keys in text or in map
        // order); the event refused and what is accepted are the same.
        let index = |r: Result<_, ValidationError>| r.map_err(|e| e.index);
        assert_eq!(
            index(direct.clone().validate(&mut FixedStamp(0))),
            index(by_values.clone().validate(&mut FixedStamp(0))),
            "both decodings accept and refuse alike"
        );
        validate_both_ways(by_values);
        validate_both_ways(direct);
    }
});
