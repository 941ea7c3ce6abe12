//! What the broker baselines (`kafka_producer_baseline`, `amqp_publisher_baseline`)
//! share: their `--name value` options, the sale they publish and the line they print.

use std::time::{SystemTime, UNIX_EPOCH};

/// Sale categories, by their canonical English names.
const CATEGORIES: [&str; 4] = ["electronics", "clothing", "home", "beauty"];

/// The options both baselines take: how long, how many and how far ahead to
/// publish, and whether to read the messages back.
pub struct Run {
    /// `--seconds`: how long to publish.
    pub seconds: f64,
    /// `--window`: most messages unconfirmed at once.
    pub window: usize,
    /// `--messages`: stop after this many.
    pub messages: u64,
    /// `--consume`: read every message back afterwards.
    pub consume: bool,
    /// `--alongside`: read every message back while publishing (a bare end to end).
    pub alongside: bool,
}

impl Run {
    /// 10 seconds, no message limit, no read-back, at most `window` unconfirmed.
    pub fn new(window: usize) -> Self {
        Self {
            seconds: 10.0,
            window,
            messages: u64::MAX,
            consume: false,
            alongside: false,
        }
    }

    /// Sets option `name` to `value`; a name other than these five is an error.
    pub fn set(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        match name {
            "--seconds" => self.seconds = value.parse()?,
            "--window" => self.window = value.parse()?,
            "--messages" => self.messages = value.parse()?,
            "--consume" => self.consume = value.parse()?,
            "--alongside" => self.alongside = value.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
        Ok(())
    }
}

/// Hands each `--name value` pair of the command line to `set`.
pub fn parse_options(mut set: impl FnMut(&str, &str) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [name, value] = pair else {
            anyhow::bail!("expected `--name value` pairs, got {args:?}");
        };
        set(name, value)?;
    }
    Ok(())
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Sale number `n`, at `ts`, in flujo's canonical JSON (the message body flujo's
/// router publishes), with its message key: the product, as flujo keys sales.
pub fn sale(n: u64, ts: u64) -> (String, String) {
    let category = CATEGORIES[(n % 4) as usize];
    let product = format!("P{}", 1 + (n * 7919) % 200);
    let price = 5.0 + ((n * 104_729) % 99_500) as f64 / 100.0;
    let quantity = 1 + n % 5;
    let body = format!(
        r#"{{"id":"lgbaseline{:08x}-s{n}","ts":{ts},"category":"{category}","product_id":"{product}","price":{price},"quantity":{quantity}}}"#,
        n >> 32
    );
    (body, product)
}

/// Prints the baseline's one line: `name messages=N bytes=B seconds=S
/// msgs_per_s=R failed=F`, then, when it read the messages back,
/// `consumed=N consume_seconds=S consume_msgs_per_s=R` from `consumed` (messages
/// read, seconds taken).
pub fn print_summary(
    name: &str,
    (sent, bytes, failed): (u64, u64, u64),
    seconds: f64,
    consumed: Option<(u64, f64)>,
) {
    let consumed = consumed.map_or_else(String::new, |(n, secs)| {
        format!(
            " consumed={n} consume_seconds={secs:.2} consume_msgs_per_s={:.0}",
            n as f64 / secs
        )
    });
    println!(
        "{name} messages={sent} bytes={bytes} seconds={seconds:.2} msgs_per_s={:.0} failed={failed}{consumed}",
        (sent - failed) as f64 / seconds
    );
}
