//! The wire format both brokers share: every event is one message whose body is the
//! event's canonical JSON (the serde form of [`Sale`]/[`Tweet`]: English field names,
//! `id` and `ts` included), with the header [`RECEIVED_AT_HEADER`] carrying the
//! batch's receive time in ms since the epoch (for end-to-end latency). Kafka writes
//! that header as decimal text, RabbitMQ as an AMQP long-long integer.

use flujo_actors::event::{Events, Kind, Sale, Tweet};

/// Header carrying the batch's receive time (ms since the epoch).
pub const RECEIVED_AT_HEADER: &str = "flujo-received-at";

/// Content type of every message.
pub const CONTENT_TYPE: &str = "application/json";

/// The canonical JSON of every event of the batch, in order.
pub fn encode_events(events: &Events) -> Result<Vec<Vec<u8>>, serde_json::Error> {
    match events {
        Events::Sales(sales) => sales.iter().map(serde_json::to_vec).collect(),
        Events::Tweets(tweets) => tweets.iter().map(serde_json::to_vec).collect(),
    }
}

/// The message key of every event of the batch, in order: the sale's `product_id`
/// or the tweet's location. Many distinct keys spread a kind over every partition
/// (the unit of parallelism: no KPI depends on arrival order), and Kafka keeps the
/// order within a key.
pub fn partition_keys(events: &Events) -> Vec<&str> {
    match events {
        Events::Sales(sales) => sales.iter().map(|s| s.product_id.as_str()).collect(),
        Events::Tweets(tweets) => tweets.iter().map(|t| t.location.as_str()).collect(),
    }
}

/// One event decoded from a message body.
#[derive(Debug)]
pub enum Decoded {
    /// A sale.
    Sale(Sale),
    /// A tweet.
    Tweet(Tweet),
}

/// Decodes a message body read from the topic or queue of `kind`.
pub fn decode(kind: Kind, body: &[u8]) -> Result<Decoded, serde_json::Error> {
    match kind {
        Kind::Sale => serde_json::from_slice(body).map(Decoded::Sale),
        Kind::Tweet => serde_json::from_slice(body).map(Decoded::Tweet),
    }
}

/// The events of `kind` among `decoded`, in order (a decoded event of the other kind
/// cannot occur, since [`decode`] only makes events of the kind it is given).
pub fn events_of(kind: Kind, decoded: impl IntoIterator<Item = Decoded>) -> Events {
    let (mut sales, mut tweets) = (Vec::new(), Vec::new());
    for event in decoded {
        match event {
            Decoded::Sale(sale) => sales.push(sale),
            Decoded::Tweet(tweet) => tweets.push(tweet),
        }
    }
    match kind {
        Kind::Sale => Events::Sales(sales),
        Kind::Tweet => Events::Tweets(tweets),
    }
}

/// A receive time written as decimal text (Kafka's form of the header).
pub fn parse_received_at(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_it_encodes() {
        let sale: Sale = serde_json::from_str(
            r#"{"id":"s1","ts":1,"category":"home","product_id":"P","price":2.5,"quantity":2}"#,
        )
        .expect("sale");
        let events = Events::Sales(vec![sale.clone()]);
        let bodies = encode_events(&events).expect("encode");
        assert_eq!(partition_keys(&events), vec!["P"]);
        let decoded = bodies
            .iter()
            .map(|b| decode(Kind::Sale, b).expect("decode"));
        match events_of(Kind::Sale, decoded) {
            Events::Sales(sales) => assert_eq!(sales, vec![sale]),
            Events::Tweets(_) => panic!("sales expected"),
        }
        assert!(decode(Kind::Tweet, &bodies[0]).is_err());
        assert_eq!(
            parse_received_at(b" 1700000000000 "),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_received_at(b"soon"), None);
    }
}
