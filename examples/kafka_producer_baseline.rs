//! The Kafka baseline of `loadtest/bench.sh`: how fast a bare rdkafka producer gets
//! messages like flujo's confirmed by the broker.
//!
//! A `FutureProducer` with the settings flujo's Kafka sink uses (idempotent,
//! `acks=all`, lz4, `linger.ms=5`, large batches) sends, for `--seconds`, messages of
//! the same shape and size as flujo's: the canonical JSON of one sale, keyed by its
//! category, with a `flujo-received-at` header (or only `--messages N` of them). It keeps at most `--window` messages
//! unconfirmed, then waits for every confirm and prints one line:
//!
//! ```text
//! kafka_producer_baseline messages=N bytes=B seconds=S msgs_per_s=R failed=F
//! ```
//!
//! With `--consume true` it then reads every message back with a fresh consumer
//! group (from the earliest offset), the way flujo's consumer role does, and adds
//! `consumed=N consume_msgs_per_s=R` to the line: the broker's read rate.
//!
//! The topic is created first (`--partitions`, default 3, as flujo does) and deleted
//! at the end. `--delete-topics a,b` only deletes those topics (the bench script's
//! cleanup of the topics it gave flujo).
//!
//! ```sh
//! cargo run --release --example kafka_producer_baseline -- \
//!     --brokers 127.0.0.1:9092 --topic bench-baseline --seconds 10
//! ```

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CATEGORIES: [&str; 4] = ["electronics", "clothing", "home", "beauty"];

/// Command-line options (`--name value`).
struct Options {
    brokers: String,
    topic: String,
    seconds: f64,
    window: usize,
    partitions: i32,
    messages: u64,
    consume: bool,
    delete_only: Vec<String>,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        brokers: "127.0.0.1:9092".into(),
        topic: format!("bench-baseline-{}", std::process::id()),
        seconds: 10.0,
        window: 100_000,
        partitions: 3,
        messages: u64::MAX,
        consume: false,
        delete_only: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [name, value] = pair else {
            anyhow::bail!("expected `--name value` pairs, got {args:?}");
        };
        match name.as_str() {
            "--brokers" => o.brokers = value.clone(),
            "--topic" => o.topic = value.clone(),
            "--seconds" => o.seconds = value.parse()?,
            "--window" => o.window = value.parse()?,
            "--partitions" => o.partitions = value.parse()?,
            "--consume" => o.consume = value.parse()?,
            "--messages" => o.messages = value.parse()?,
            "--delete-topics" => {
                o.delete_only = value.split(',').map(str::to_owned).collect();
            }
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A sale in flujo's canonical JSON (the message body flujo's router publishes).
fn sale(n: u64, ts: u64) -> (String, &'static str) {
    let category = CATEGORIES[(n % 4) as usize];
    let product = 1 + (n * 7919) % 200;
    let price = 5.0 + ((n * 104_729) % 99_500) as f64 / 100.0;
    let quantity = 1 + n % 5;
    let body = format!(
        r#"{{"id":"lgbaseline{:08x}-s{n}","ts":{ts},"category":"{category}","product_id":"P{product}","price":{price},"quantity":{quantity}}}"#,
        n >> 32
    );
    (body, category)
}

fn admin(o: &Options) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &o.brokers)
        .create()?)
}

async fn delete_topics(o: &Options, topics: &[String]) -> anyhow::Result<()> {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin(o)?.delete_topics(&names, &opts).await? {
        if let Err((name, code)) = result {
            eprintln!("delete topic {name}: {code}");
        }
    }
    Ok(())
}

async fn create_topic(o: &Options) -> anyhow::Result<()> {
    let admin = admin(o)?;
    let topic = NewTopic::new(&o.topic, o.partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    // A broker that just started may time out the first requests: retry a little.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let results = match admin.create_topics([&topic], &opts).await {
            Ok(results) => results,
            Err(e) if attempt < 5 => {
                eprintln!("create topic {}: {e}; retrying", o.topic);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => anyhow::bail!("create topic {name}: {code}"),
            }
        }
        return Ok(());
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    if !o.delete_only.is_empty() {
        return delete_topics(&o, &o.delete_only).await;
    }
    create_topic(&o).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &o.brokers)
        .set("client.id", "kafka-producer-baseline")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "200000")
        .set("message.timeout.ms", "30000")
        .set("partitioner", "murmur2_random")
        .create()?;

    let started = Instant::now();
    let until = started + Duration::from_secs_f64(o.seconds);
    let mut pending = FuturesUnordered::new();
    let (mut sent, mut bytes, mut failed) = (0u64, 0u64, 0u64);
    while Instant::now() < until && sent < o.messages {
        while pending.len() >= o.window {
            if let Some(Ok(Err(_)) | Err(_)) = pending.next().await {
                failed += 1;
            }
        }
        let ts = now_ms();
        let (body, key) = sale(sent, ts);
        let ts_text = ts.to_string();
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: "flujo-received-at",
            value: Some(&ts_text),
        });
        let record = FutureRecord::to(&o.topic)
            .key(key)
            .payload(&body)
            .headers(headers);
        match producer.send_result(record) {
            Ok(delivery) => {
                bytes += body.len() as u64;
                sent += 1;
                pending.push(delivery);
            }
            Err(_) => {
                // Local queue full: let confirms come back first.
                if let Some(Ok(Err(_)) | Err(_)) = pending.next().await {
                    failed += 1;
                }
            }
        }
    }
    while let Some(result) = pending.next().await {
        if !matches!(result, Ok(Ok(_))) {
            failed += 1;
        }
    }
    producer.flush(Duration::from_secs(30))?;
    let seconds = started.elapsed().as_secs_f64();
    let consumed = if o.consume {
        let (brokers, topic, want) = (o.brokers.clone(), o.topic.clone(), sent - failed);
        let (n, secs) =
            tokio::task::spawn_blocking(move || consume_all(&brokers, &topic, want)).await??;
        format!(
            " consumed={n} consume_seconds={secs:.2} consume_msgs_per_s={:.0}",
            n as f64 / secs
        )
    } else {
        String::new()
    };
    delete_topics(&o, std::slice::from_ref(&o.topic)).await?;
    println!(
        "kafka_producer_baseline messages={sent} bytes={bytes} seconds={seconds:.2} msgs_per_s={:.0} failed={failed}{consumed}",
        (sent - failed) as f64 / seconds
    );
    Ok(())
}

/// Reads `want` messages of `topic` with a fresh group, at most 120 s; returns how
/// many it read and the seconds it took.
fn consume_all(brokers: &str, topic: &str, want: u64) -> anyhow::Result<(u64, f64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let started = Instant::now();
    let mut n = 0u64;
    while n < want && started.elapsed() < Duration::from_secs(120) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => n += 1,
            Some(Err(e)) => eprintln!("consume: {e}"),
            None => {}
        }
    }
    Ok((n, started.elapsed().as_secs_f64()))
}
