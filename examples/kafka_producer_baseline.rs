//! The Kafka baseline of `loadtest/bench.sh`: how fast a bare rdkafka producer gets
//! messages like flujo's confirmed by the broker.
//!
//! A `FutureProducer` with the settings flujo's Kafka sink uses (idempotent,
//! `acks=all`, lz4, `linger.ms=5`, large batches) sends, for `--seconds`, messages of
//! the same shape and size as flujo's: the canonical JSON of one sale, keyed by its
//! product, with a `flujo-received-at` header (or only `--messages N` of them). It keeps at most `--window` messages
//! unconfirmed, then waits for every confirm and prints one line:
//!
//! ```text
//! kafka_producer_baseline messages=N bytes=B seconds=S msgs_per_s=R failed=F
//! ```
//!
//! With `--consume true` it then reads every message back with a fresh consumer
//! group (from the earliest offset), the way flujo's consumer role does, and adds
//! `consumed=N consume_msgs_per_s=R` to the line: the broker's read rate. The
//! reader asks the broker to hold an empty fetch at most `--fetch-wait-ms` (default
//! 100, what flujo's consumer asks for; librdkafka's own default is 500).
//!
//! With `--alongside true` that consumer reads while the producer publishes (it
//! joins its group first), and the line adds `e2e_seconds=S e2e_msgs_per_s=R`:
//! the messages divided by the time from the first send until the last one was
//! read, a bare client's end to end on one broker (what flujo's end-to-end row
//! does, without decoding or a store).
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
use std::time::{Duration, Instant};

mod broker_baseline;
use broker_baseline::{now_ms, parse_options, print_summary, sale, Run};

/// Command-line options (`--name value`).
struct Options {
    brokers: String,
    topic: String,
    partitions: i32,
    fetch_wait_ms: u32,
    delete_only: Vec<String>,
    run: Run,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        brokers: "127.0.0.1:9092".into(),
        topic: format!("bench-baseline-{}", std::process::id()),
        partitions: 3,
        fetch_wait_ms: 100,
        delete_only: Vec::new(),
        run: Run::new(100_000),
    };
    parse_options(|name, value| {
        match name {
            "--brokers" => o.brokers = value.to_owned(),
            "--topic" => o.topic = value.to_owned(),
            "--partitions" => o.partitions = value.parse()?,
            "--fetch-wait-ms" => o.fetch_wait_ms = value.parse()?,
            "--delete-topics" => {
                o.delete_only = value.split(',').map(str::to_owned).collect();
            }
            _ => return o.run.set(name, value),
        }
        Ok(())
    })?;
    Ok(o)
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

    // --alongside: a reader that has joined its group before the first send.
    let alongside = if o.run.alongside {
        let from = o.read_from();
        let (joined_tx, joined_rx) = std::sync::mpsc::channel();
        let (want_tx, want_rx) = std::sync::mpsc::channel();
        let reader =
            tokio::task::spawn_blocking(move || read_alongside(&from, &joined_tx, &want_rx));
        tokio::task::spawn_blocking(move || joined_rx.recv_timeout(Duration::from_secs(60)))
            .await?
            .map_err(|_| anyhow::anyhow!("the reader did not join its group within 60 s"))?;
        Some((reader, want_tx))
    } else {
        None
    };
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(o.run.seconds);
    let mut pending = FuturesUnordered::new();
    let (mut sent, mut bytes, mut failed) = (0u64, 0u64, 0u64);
    while Instant::now() < until && sent < o.run.messages {
        while pending.len() >= o.run.window {
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
            .key(&key)
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
    let e2e = match alongside {
        Some((reader, want_tx)) => {
            let _ = want_tx.send(sent - failed);
            let (read, last) = reader.await??;
            let e2e_seconds = last.map_or(0.0, |at| at.duration_since(started).as_secs_f64());
            Some((read, e2e_seconds))
        }
        None => None,
    };
    let consumed = if o.run.consume {
        let (from, want) = (o.read_from(), sent - failed);
        Some(tokio::task::spawn_blocking(move || consume_all(&from, want)).await??)
    } else {
        None
    };
    delete_topics(&o, std::slice::from_ref(&o.topic)).await?;
    print_summary(
        "kafka_producer_baseline",
        (sent, bytes, failed),
        seconds,
        consumed,
    );
    if let Some((read, e2e_seconds)) = e2e {
        // Appended to the summary line (print_summary ended it).
        println!(
            "kafka_producer_baseline alongside: read={read} e2e_seconds={e2e_seconds:.2} e2e_msgs_per_s={:.0}",
            read as f64 / e2e_seconds.max(f64::EPSILON)
        );
    }
    Ok(())
}

/// Reads `topic` with a fresh group while it is being written: says on `joined`
/// once the group gave it partitions, learns on `want` how many messages were
/// sent, and stops once it read that many (at most 120 s after learning it).
/// Returns how many it read and when it read the last one.
fn read_alongside(
    from: &ReadFrom,
    joined: &std::sync::mpsc::Sender<()>,
    want: &std::sync::mpsc::Receiver<u64>,
) -> anyhow::Result<(u64, Option<Instant>)> {
    use rdkafka::consumer::Consumer;
    let consumer = from.reader("alongside")?;
    consumer.subscribe(&[&from.topic])?;
    let joining = Instant::now();
    while consumer.assignment()?.count() == 0 {
        anyhow::ensure!(
            joining.elapsed() < Duration::from_secs(60),
            "no partitions assigned within 60 s"
        );
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            eprintln!("consume: {e}");
        }
    }
    let _ = joined.send(());
    let (mut n, mut last, mut target) = (0u64, None, None::<(u64, Instant)>);
    loop {
        if target.is_none() {
            target = want.try_recv().ok().map(|w| (w, Instant::now()));
        }
        if let Some((w, since)) = target {
            if n >= w || since.elapsed() > Duration::from_secs(120) {
                return Ok((n, last));
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                n += 1;
                last = Some(Instant::now());
            }
            Some(Err(e)) => eprintln!("consume: {e}"),
            None => {}
        }
    }
}

/// What a bare reader reads, and how.
struct ReadFrom {
    brokers: String,
    topic: String,
    fetch_wait_ms: u32,
}

impl ReadFrom {
    /// A bare consumer in the fresh group `{topic}-{role}`, reading from the
    /// earliest offset, no commits.
    fn reader(&self, role: &str) -> anyhow::Result<rdkafka::consumer::BaseConsumer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{}-{role}", self.topic))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", self.fetch_wait_ms.to_string())
            .create()?)
    }
}

impl Options {
    fn read_from(&self) -> ReadFrom {
        ReadFrom {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            fetch_wait_ms: self.fetch_wait_ms,
        }
    }
}

/// Reads `want` messages of `topic` with a fresh group, at most 120 s; returns how
/// many it read and the seconds it took.
fn consume_all(from: &ReadFrom, want: u64) -> anyhow::Result<(u64, f64)> {
    use rdkafka::consumer::Consumer;
    let consumer = from.reader("reader")?;
    consumer.subscribe(&[&from.topic])?;
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
