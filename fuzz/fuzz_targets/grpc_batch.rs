//! gRPC ingest: bytes → a protobuf `SaleBatch`, `TweetBatch` or stream `Event` (the
//! first byte picks) → the typed raw events → the rules, whole batch and each event;
//! an accepted event's canonical JSON must parse back to the same event through the
//! JSON path (a rule never differs by transport).
#![no_main]

use flujo_actors::event::protobuf::{raw_sale, raw_tweet};
use flujo_actors::event::RawBatch;
use flujo_fuzz::validate_both_ways;
use flujo_proto::v1::{event, Event, SaleBatch, TweetBatch};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let [which, bytes @ ..] = data else {
        return;
    };
    let batch = match which % 3 {
        0 => match SaleBatch::decode(bytes) {
            Ok(b) => RawBatch::Sales(b.sales.into_iter().map(raw_sale).collect()),
            Err(_) => return,
        },
        1 => match TweetBatch::decode(bytes) {
            Ok(b) => RawBatch::Tweets(b.tweets.into_iter().map(raw_tweet).collect()),
            Err(_) => return,
        },
        _ => match Event::decode(bytes).map(|e| e.event) {
            Ok(Some(event::Event::Sale(s))) => RawBatch::Sales(vec![raw_sale(s)]),
            Ok(Some(event::Event::Tweet(t))) => RawBatch::Tweets(vec![raw_tweet(t)]),
            Ok(None) | Err(_) => return,
        },
    };
    validate_both_ways(batch);
});
