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
use std::time::{Duration, Instant};

mod broker_baseline;
use broker_baseline::{now_ms, parse_options, print_summary, sale, Run};

/// Command-line options (`--name value`).
struct Options {
    url: String,
    queue: String,
    run: Run,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        queue: format!("bench-baseline-{}", std::process::id()),
        run: Run::new(10_000),
    };
    parse_options(|name, value| {
        match name {
            "--url" => o.url = value.to_owned(),
            "--queue" => o.queue = value.to_owned(),
            _ => return o.run.set(name, value),
        }
        Ok(())
    })?;
    anyhow::ensure!(
        !o.run.alongside,
        "--alongside is only implemented by kafka_producer_baseline"
    );
    Ok(o)
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
    let until = started + Duration::from_secs_f64(o.run.seconds);
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
    while Instant::now() < until && sent < o.run.messages {
        while pending.len() >= o.run.window {
            if let Some(c) = pending.next().await {
                if !ok(&c) {
                    failed += 1;
                }
            }
        }
        let (body, _) = sale(sent, now_ms());
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
    let consumed = if o.run.consume {
        Some(consume_all(&channel, &o.queue, sent - failed).await?)
    } else {
        None
    };
    let _ = channel
        .queue_delete(o.queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = connection.close(200, "OK".into()).await;
    print_summary(
        "amqp_publisher_baseline",
        (sent, bytes, failed),
        seconds,
        consumed,
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
