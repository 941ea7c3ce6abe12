//! Small helpers shared by the unit tests of the loadgen modules.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::generate::{Batch, Sale, Tweet};
use super::truth::Truth;

/// Event time of the next fixture sale: fixtures made earlier are earlier.
static NEXT_TS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);

/// A sale with an id derived from its fields, and a `ts` after every fixture sale
/// made before it.
pub fn sale(category: &'static str, product: &str, price: f64, quantity: u64) -> Sale {
    Sale {
        id: format!("{category}-{product}-{price}-{quantity}"),
        ts: NEXT_TS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        category,
        product_id: product.to_string(),
        price,
        quantity,
    }
}

/// A tweet with an id derived from its fields.
pub fn tweet(
    location: &'static str,
    weather: &'static str,
    temperature: f64,
    humidity: f64,
) -> Tweet {
    Tweet {
        id: format!("{location}-{weather}-{temperature}-{humidity}"),
        location: location.to_owned(),
        weather,
        temperature,
        humidity,
        text: None,
    }
}

/// The truth of a run whose server acknowledged a batch of `sales`, then one of
/// `tweets`.
pub fn truth_of(sales: Vec<Sale>, tweets: Vec<Tweet>) -> Truth {
    let mut truth = Truth::default();
    truth.add_batch(&Batch::Sales(sales));
    truth.add_batch(&Batch::Tweets(tweets));
    truth
}

/// A line server on a local port: every line it receives, on any connection, is
/// answered with `reply(line)` and a newline, or ends its connection when `reply`
/// gives `None`. `accepted` runs once per connection. Returns the address.
pub async fn line_server(
    accepted: impl Fn() + Send + 'static,
    reply: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted();
            let reply = reply.clone();
            tokio::spawn(async move {
                stream.set_nodelay(true).expect("nodelay");
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let Some(answer) = reply(&line) else { return };
                    if write
                        .write_all(format!("{answer}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}
