//! TCP ingest: a byte stream, fed in pieces of fuzzer-chosen sizes → the line splitter
//! (checked against a plain model of the format) → the line classifier (`ping`, `kind`
//! tagging, refusals) → the JSON rules for each run of events of one kind, each event
//! alone, as the TCP transport coalesces them.
#![no_main]

use flujo_actors::event::line::{parse_line, Line, LineSplitter, Parsed};
use flujo_actors::event::{tagged_kind, RawBatch};
use flujo_fuzz::validate_both_ways;
use libfuzzer_sys::fuzz_target;

/// The lines of `input` by the book: split at `\n`, a trailing `\r` dropped, a line
/// over `max` bytes (its `\r` included) too long, a last line without newline kept
/// unless empty.
fn model(input: &[u8], max: usize) -> Vec<Line> {
    let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|l| l.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .map(|l| {
            if l.len() > max {
                Line::TooLong
            } else {
                Line::Text(l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let [max, step, input @ ..] = data else {
        return;
    };
    // Small limits reach the too-long path; 255 leaves most lines whole.
    let max = usize::from(*max).max(1);
    let step = usize::from(*step % 16) + 1;
    let mut splitter = LineSplitter::new(max);
    let mut lines = Vec::new();
    let mut rest = input;
    let mut piece = step;
    while !rest.is_empty() {
        let mut chunk = &rest[..piece.min(rest.len())];
        rest = &rest[chunk.len()..];
        while !chunk.is_empty() {
            let (taken, line) = splitter.push(chunk);
            assert!(taken >= 1 && taken <= chunk.len());
            assert!(line.is_some() == (chunk[taken - 1] == b'\n'));
            lines.extend(line);
            chunk = &chunk[taken..];
        }
        piece = piece % 13 + step;
    }
    lines.extend(splitter.end());
    assert_eq!(lines, model(input, max));

    let parsed: Vec<Parsed> = lines.into_iter().map(|l| parse_line(l, max)).collect();
    let mut runs: Vec<RawBatch> = Vec::new();
    for p in parsed {
        match p {
            Parsed::Answer(a) => {
                assert!(!a.contains(['\n', '\r']), "one answer line: {a:?}");
                assert!(a == "pong" || a.starts_with("err "), "{a:?}");
            }
            Parsed::Event(kind, value) => {
                assert_eq!(tagged_kind(&value), Ok(kind));
                match runs.last_mut() {
                    Some(RawBatch::Json { kind: k, objects }) if *k == kind => objects.push(value),
                    _ => runs.push(RawBatch::Json {
                        kind,
                        objects: vec![value],
                    }),
                }
            }
        }
    }
    runs.into_iter().for_each(validate_both_ways);
});
