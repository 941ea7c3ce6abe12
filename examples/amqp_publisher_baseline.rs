//! The RabbitMQ baseline of `loadtest/bench.sh`: how fast a bare lapin publisher
//! gets messages like flujo's confirmed by the broker.
//!
//! Publishes, for `--seconds`, persistent messages of the same shape and size as
//! flujo's (the canonical JSON of one sale) to a durable queue, on a channel in
//! confirm mode, keeping at most `--window` messages unconfirmed (flujo's router
//! also pipelines a batch and then waits for its confirms). Then it waits for every
//! confirm, deletes the queue and prints one line:
//!
//! ```text
//! amqp_publisher_baseline messages=N bytes=B seconds=S msgs_per_s=R failed=F
//! ```
//!
//! `--messages N` stops after N messages. With `--consume true` it then reads every
//! message back (prefetch 1000, one ack per message, as flujo's consumer acks after
//! storing) and adds `consumed=N consume_seconds=S consume_msgs_per_s=R`.
//!
//! ```sh
//! cargo run --release --example amqp_publisher_baseline -- \
//!     --url amqp://guest:guest@127.0.0.1:5672/%2f --seconds 10
//! ```

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CATEGORIES: [&str; 4] = ["electronics", "clothing", "home", "beauty"];

/// Command-line options (`--name value`).
struct Options {
    url: String,
    queue: String,
    seconds: f64,
    window: usize,
    messages: u64,
    consume: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        queue: format!("bench-baseline-{}", std::process::id()),
        seconds: 10.0,
        window: 10_000,
        messages: u64::MAX,
        consume: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [name, value] = pair else {
            anyhow::bail!("expected `--name value` pairs, got {args:?}");
        };
        match name.as_str() {
            "--url" => o.url = value.clone(),
            "--queue" => o.queue = value.clone(),
            "--seconds" => o.seconds = value.parse()?,
            "--window" => o.window = value.parse()?,
            "--messages" => o.messages = value.parse()?,
            "--consume" => o.consume = value.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

/// A sale in flujo's canonical JSON (the message body flujo's router publishes).
fn sale(n: u64, ts: u64) -> String {
    let category = CATEGORIES[(n % 4) as usize];
    let product = 1 + (n * 7919) % 200;
    let price = 5.0 + ((n * 104_729) % 99_500) as f64 / 100.0;
    let quantity = 1 + n % 5;
    format!(
        r#"{{"id":"lgbaseline{:08x}-s{n}","ts":{ts},"category":"{category}","product_id":"P{product}","price":{price},"quantity":{quantity}}}"#,
        n >> 32
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    let connection = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(&o.url, ConnectionProperties::default()),
    )
    .await??;
    let channel = connection.create_channel().await?;
    channel
        .queue_declare(
            o.queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());

    let started = Instant::now();
    let until = started + Duration::from_secs_f64(o.seconds);
    // Each message is one future: hand the frames to the connection, then await the
    // broker's confirm. Up to `window` of them run at once, so the socket is never
    // idle waiting for one confirm (flujo's router, too, has many batches in flight).
    let mut pending = FuturesUnordered::new();
    let (mut sent, mut bytes, mut failed) = (0u64, 0u64, 0u64);
    let publish = |body: String| {
        let channel = channel.clone();
        let queue = o.queue.clone();
        let properties = properties.clone();
        async move {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    properties,
                )
                .await?;
            confirm.await
        }
    };
    let ok = |c: &Result<Confirmation, lapin::Error>| matches!(c, Ok(Confirmation::Ack(None)));
    while Instant::now() < until && sent < o.messages {
        while pending.len() >= o.window {
            if let Some(c) = pending.next().await {
                if !ok(&c) {
                    failed += 1;
                }
            }
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let body = sale(sent, ts);
        bytes += body.len() as u64;
        sent += 1;
        pending.push(publish(body));
        // Drive what is in flight without waiting: the new message's frames go out
        // now, and confirms that arrived are counted.
        while let Some(Some(c)) = pending.next().now_or_never() {
            if !ok(&c) {
                failed += 1;
            }
        }
    }
    while let Some(c) = pending.next().await {
        if !ok(&c) {
            failed += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let consumed = if o.consume {
        let (n, secs) = consume_all(&channel, &o.queue, sent - failed).await?;
        format!(
            " consumed={n} consume_seconds={secs:.2} consume_msgs_per_s={:.0}",
            n as f64 / secs
        )
    } else {
        String::new()
    };
    let _ = channel
        .queue_delete(o.queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = connection.close(200, "OK".into()).await;
    println!(
        "amqp_publisher_baseline messages={sent} bytes={bytes} seconds={seconds:.2} msgs_per_s={:.0} failed={failed}{consumed}",
        (sent - failed) as f64 / seconds
    );
    Ok(())
}

/// Reads `want` messages of `queue` (prefetch 1000, one ack each), at most 120 s;
/// returns how many it read and the seconds it took.
async fn consume_all(
    channel: &lapin::Channel,
    queue: &str,
    want: u64,
) -> anyhow::Result<(u64, f64)> {
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    channel.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "baseline-reader".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut n = 0u64;
    while n < want {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                delivery.ack(BasicAckOptions::default()).await?;
                n += 1;
            }
            Ok(Some(Err(e))) => anyhow::bail!("consume: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    Ok((n, started.elapsed().as_secs_f64()))
}
