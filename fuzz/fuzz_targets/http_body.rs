//! HTTP ingest body: `Content-Type` line + body bytes → the content-type match → the
//! JSON/NDJSON decoder → the JSON rules for both kinds, whole batch and each event.
#![no_main]

use flujo_actors::event::body::{decode, Encoding};
use flujo_actors::event::RawBatch;
use flujo_fuzz::{validate_both_ways, KINDS};
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
        validate_both_ways(RawBatch::Json {
            kind,
            objects: objects.clone(),
        });
    }
});
