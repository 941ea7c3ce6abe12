//! `ValkeyStore` against a real `valkey-server`: the same answers as `MemoryStore`
//! (byte-for-byte JSON) for the same batches, idempotent and atomic batches, one
//! script call per batch, and recovery from a Valkey restart without data loss.
//!
//! The shared server's address comes from `FLUJO_TEST_VALKEY_URL` (default
//! `redis://127.0.0.1:6380`, started by `scripts/services.sh up`); each test uses its
//! own key prefix and deletes its keys at the end. The round-trip and restart tests
//! start their own `valkey-server` (from `FLUJO_TEST_VALKEY_SERVER`, the `PATH`, or the
//! one `scripts/services.sh` installs under `.services/`).

use flujo::components::valkey::ValkeyStore;
use flujo_actors::event::{Category, Sale, Tweet, Weather};
use flujo_actors::store::{Applied, MemoryStore, Page, Store, MONITORED_PRICES};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DAY: Duration = Duration::from_secs(24 * 3600);
const HINT: &str = "start the test services with `scripts/services.sh up` \
    (or point FLUJO_TEST_VALKEY_URL at a running Valkey)";

// ---------------------------------------------------------------------------------
// Servers and key cleanup
// ---------------------------------------------------------------------------------

fn shared_url() -> String {
    std::env::var("FLUJO_TEST_VALKEY_URL").unwrap_or_else(|_| "redis://127.0.0.1:6380".into())
}

/// A prefix no other test (or run) uses.
fn unique_prefix() -> String {
    format!("test-{}:", uuid::Uuid::now_v7())
}

/// Deletes every key under its prefix when dropped, even when the test failed.
struct KeysGuard {
    url: String,
    prefix: String,
}

impl Drop for KeysGuard {
    fn drop(&mut self) {
        let _ = delete_keys(&self.url, &self.prefix);
    }
}

fn admin(url: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))
}

fn keys_under(url: &str, prefix: &str) -> redis::RedisResult<Vec<String>> {
    let mut con = admin(url)?;
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

fn delete_keys(url: &str, prefix: &str) -> redis::RedisResult<()> {
    let keys = keys_under(url, prefix)?;
    let mut con = admin(url)?;
    for chunk in keys.chunks(500) {
        redis::cmd("UNLINK").arg(chunk).query::<()>(&mut con)?;
    }
    Ok(())
}

/// A store on the shared server under a fresh prefix, failing (never skipping) when
/// the server cannot be reached.
async fn shared_store(window: Duration, pool_size: usize) -> (ValkeyStore, KeysGuard) {
    let url = shared_url();
    let prefix = unique_prefix();
    let store = ValkeyStore::connect(&url, &prefix, window, pool_size)
        .unwrap_or_else(|e| panic!("bad FLUJO_TEST_VALKEY_URL {url:?}: {e}"));
    match tokio::time::timeout(Duration::from_secs(5), store.ready()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("Valkey at {url} is not reachable ({e}): {HINT}"),
        Err(_) => panic!("Valkey at {url} did not answer PING within 5 s: {HINT}"),
    }
    (store, KeysGuard { url, prefix })
}

/// The `valkey-server` binary for the tests that run their own server.
fn valkey_server_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("FLUJO_TEST_VALKEY_SERVER") {
        return path.into();
    }
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("valkey-server"))
            .find(|p| p.is_file())
    }) {
        return path;
    }
    let services = std::env::var_os("FLUJO_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".services"));
    find_file(&services.join("venv"), "valkey-server", 8).unwrap_or_else(|| {
        panic!(
            "valkey-server not found (FLUJO_TEST_VALKEY_SERVER, PATH, {}): \
             run `scripts/services.sh up`, which installs it",
            services.display()
        )
    })
}

fn find_file(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let kind = entry.file_type().ok()?;
        if kind.is_file() && entry.file_name() == name {
            return Some(path);
        }
        if kind.is_dir() {
            subdirs.push(path);
        }
    }
    if depth == 0 {
        return None;
    }
    subdirs.iter().find_map(|d| find_file(d, name, depth - 1))
}

/// A `valkey-server` child process of this test, with AOF (fsync always) in a
/// temporary directory; killed when dropped.
struct OwnServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnServer {
    fn start() -> OwnServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = OwnServer {
            child: None,
            port,
            dir,
        };
        server.spawn();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server process (again) on the same port and directory.
    fn spawn(&mut self) {
        let child = Command::new(valkey_server_bin())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn valkey-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let pong =
                admin(&self.url()).and_then(|mut con| redis::cmd("PING").query::<String>(&mut con));
            if pong.as_deref() == Ok("PONG") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "own valkey-server on port {} did not start: {pong:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown, no final AOF rewrite.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill valkey-server");
            child.wait().expect("reap valkey-server");
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------
// Events and answers
// ---------------------------------------------------------------------------------

fn sale(id: &str, category: Category, product: &str, price: f64, quantity: u64) -> Sale {
    Sale {
        id: id.into(),
        ts: 0,
        category,
        product_id: product.into(),
        price,
        quantity,
    }
}

fn tweet(id: &str, location: &str, weather: Weather, temperature: f64, humidity: f64) -> Tweet {
    Tweet {
        id: id.into(),
        ts: 0,
        location: location.into(),
        weather,
        temperature,
        humidity,
        text: None,
    }
}

/// Floats that have no short decimal form, or sit at the edges of the ranges.
const ODD_PRICES: [f64; 8] = [
    0.1 + 0.2,
    1.0 / 3.0,
    0.01,
    1999.99,
    2000.0,
    123.456_789_012_345_67,
    0.1 + 0.7,
    1e-9,
];

fn price(rng: &mut StdRng) -> f64 {
    if rng.random_bool(0.05) {
        *ODD_PRICES.choose(rng).expect("prices")
    } else {
        rng.random_range(1..=200_000u32) as f64 / 100.0
    }
}

fn quantity(rng: &mut StdRng) -> u64 {
    if rng.random_bool(0.01) {
        1_000_000
    } else {
        rng.random_range(1..=20)
    }
}

const PRODUCTS: [&str; 16] = [
    "P01", "P02", "P03", "P04", "P05", "P06", "P07", "P08", "p01", "p-02", "Ñandú", "a b", "Z",
    "ZZ", "0", "PROD:9",
];

const LOCATIONS: [&str; 14] = [
    "Guatemala",
    "Mixco",
    "mixco",
    "Villa Nueva",
    "Antigua",
    "Cobán",
    "San José",
    "Zacapa",
    "a:b",
    "Escuintla",
    "Ω",
    "Solo A",
    "Solo B",
    "Solo C",
];

/// The distinct sales of the parity test, in order: clothing's first sale is the
/// monitored `MON` (then sold 1,050 more times there, and elsewhere too), nine
/// products tie at 7 units each, and the rest is random.
fn parity_sales(rng: &mut StdRng) -> Vec<Sale> {
    let mut sales = vec![sale("s-first", Category::Clothing, "MON", 9.99, 1)];
    let mut n = 0;
    let mut next_id = || {
        n += 1;
        format!("s{n}")
    };
    for i in 0..9 {
        let c = Category::ALL[i % 4];
        sales.push(sale(&next_id(), c, &format!("TIE-{i}"), price(rng), 7));
    }
    for _ in 0..1_050 {
        let p = price(rng);
        let q = quantity(rng);
        sales.push(sale(&next_id(), Category::Clothing, "MON", p, q));
    }
    for _ in 0..1_400 {
        let c = *Category::ALL.choose(rng).expect("categories");
        let product = if rng.random_bool(0.05) {
            "MON"
        } else {
            PRODUCTS.choose(rng).expect("products")
        };
        sales.push(sale(&next_id(), c, product, price(rng), quantity(rng)));
    }
    // Keep the monitored sales spread over the batches, the first one first.
    let first = sales.remove(0);
    shuffle(rng, &mut sales);
    sales.insert(0, first);
    sales
}

fn parity_tweets(rng: &mut StdRng) -> Vec<Tweet> {
    let mut tweets = Vec::new();
    for (i, solo) in ["Solo A", "Solo B", "Solo C"].iter().enumerate() {
        tweets.push(tweet(
            &format!("t-solo{i}"),
            solo,
            Weather::Foggy,
            12.5,
            80.0,
        ));
    }
    for n in 0..900 {
        let location = *LOCATIONS[..11].choose(rng).expect("locations");
        let weather = *Weather::ALL.choose(rng).expect("weathers");
        let temperature = if rng.random_bool(0.05) {
            *[0.1 + 0.2, -89.9, 60.0, 0.0, 1.0 / 3.0]
                .choose(rng)
                .expect("temperatures")
        } else {
            rng.random_range(-900..=600i32) as f64 / 10.0
        };
        let humidity = if rng.random_bool(0.05) {
            *[0.1 + 0.7, 100.0, 0.0, 2.0 / 3.0]
                .choose(rng)
                .expect("humidities")
        } else {
            rng.random_range(0..=10_000u32) as f64 / 100.0
        };
        tweets.push(tweet(
            &format!("t{n}"),
            location,
            weather,
            temperature,
            humidity,
        ));
    }
    shuffle(rng, &mut tweets);
    tweets
}

fn shuffle<T>(rng: &mut StdRng, items: &mut [T]) {
    use rand::seq::SliceRandom;
    items.shuffle(rng);
}

/// Cuts `events` into random batches and mixes in duplicates: repeats within a batch,
/// resends of earlier events (same content, or a different content under the same id,
/// which must be ignored too) and whole earlier batches sent again.
fn batches<T: Clone>(
    rng: &mut StdRng,
    events: &[T],
    altered: impl Fn(&T, &mut StdRng) -> T,
) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let size = rng.random_range(1..=150).min(events.len() - i);
        let mut batch: Vec<T> = events[i..i + size].to_vec();
        i += size;
        for _ in 0..rng.random_range(0..=3) {
            let pick = batch.choose(rng).expect("batch").clone();
            // Never before the batch's first event (the parity test's first sale).
            let at = rng.random_range(1..=batch.len());
            batch.insert(at, pick);
        }
        if i > size {
            for _ in 0..rng.random_range(0..=4) {
                let old = events[..i - size].choose(rng).expect("earlier").clone();
                let old = if rng.random_bool(0.5) {
                    altered(&old, rng)
                } else {
                    old
                };
                let at = rng.random_range(0..=batch.len());
                batch.insert(at, old);
            }
        }
        out.push(batch);
        if out.len() > 1 && rng.random_bool(0.1) {
            let again = out.choose(rng).expect("batches").clone();
            out.push(again);
        }
    }
    out
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("json")
}

/// Every query answer of a store, as JSON strings keyed by the query.
async fn answers(store: &dyn Store) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let sales = store.sales_kpis().await.expect("sales kpis");
    out.insert("sales_kpis".into(), json(&sales));
    let tweets = store.tweet_kpis().await.expect("tweet kpis");
    out.insert("tweet_kpis".into(), json(&tweets));
    let pages = [
        (1, 0),
        (1, 1),
        (3, 2),
        (10, 0),
        (10, 10),
        (7, 13),
        (1000, 0),
        (5, 5000),
    ];
    let scopes = [None]
        .into_iter()
        .chain(Category::ALL.into_iter().map(Some));
    for scope in scopes {
        for (limit, offset) in pages {
            let ranking = store
                .product_ranking(scope, Page { limit, offset })
                .await
                .expect("product ranking");
            out.insert(
                format!("products {scope:?} limit={limit} offset={offset}"),
                json(&ranking),
            );
        }
    }
    for (limit, offset) in pages {
        let ranking = store
            .location_ranking(Page { limit, offset })
            .await
            .expect("location ranking");
        out.insert(
            format!("locations limit={limit} offset={offset}"),
            json(&ranking),
        );
    }
    for c in Category::ALL {
        for limit in [0, 1, 10, 999, 1000] {
            let prices = store
                .monitored_prices(c, limit)
                .await
                .expect("monitored prices");
            out.insert(format!("monitored {c} limit={limit}"), json(&prices));
        }
    }
    out
}

async fn assert_same_answers(memory: &MemoryStore, valkey: &ValkeyStore, when: &str) {
    let expected = answers(memory).await;
    let actual = answers(valkey).await;
    for (query, want) in &expected {
        assert_eq!(
            actual.get(query),
            Some(want),
            "{when}: `{query}` differs between MemoryStore and ValkeyStore"
        );
    }
    assert_eq!(actual.len(), expected.len());
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn same_answers_as_memory_store() {
    let (valkey, _keys) = shared_store(DAY, 4).await;
    let memory = MemoryStore::new(DAY);
    assert_same_answers(&memory, &valkey, "empty").await;

    let mut rng = StdRng::seed_from_u64(0x5EED_F1A0_u64);
    let sales = parity_sales(&mut rng);
    let tweets = parity_tweets(&mut rng);
    let sale_batches = batches(&mut rng, &sales, |s, rng| Sale {
        price: price(rng),
        product_id: "ALTERED".into(),
        ..s.clone()
    });
    let tweet_batches = batches(&mut rng, &tweets, |t, rng| Tweet {
        temperature: rng.random_range(-90..=60i32) as f64,
        location: "Altered".into(),
        ..t.clone()
    });
    assert!(sale_batches.len() > 20 && tweet_batches.len() > 8);

    let rounds = sale_batches.len().max(tweet_batches.len());
    let (mut fresh, mut duplicates) = (0, 0);
    for i in 0..rounds {
        if let Some(batch) = sale_batches.get(i) {
            let want = memory.apply_sales(batch).await.expect("memory sales");
            let got = valkey.apply_sales(batch).await.expect("valkey sales");
            assert_eq!(got, want, "Applied flags of sales batch {i}");
            fresh += got.fresh_count();
            duplicates += got.duplicate_count();
        }
        if let Some(batch) = tweet_batches.get(i) {
            let want = memory.apply_tweets(batch).await.expect("memory tweets");
            let got = valkey.apply_tweets(batch).await.expect("valkey tweets");
            assert_eq!(got, want, "Applied flags of tweets batch {i}");
        }
        if i % 9 == 4 {
            assert_same_answers(&memory, &valkey, &format!("after round {i}")).await;
        }
    }
    assert_same_answers(&memory, &valkey, "at the end").await;

    // The run exercised what it claims to.
    assert_eq!(fresh, sales.len());
    assert!(duplicates > 50, "only {duplicates} duplicates");
    let kpis = valkey.sales_kpis().await.expect("kpis");
    assert_eq!(
        kpis.categories["clothing"].monitored_product.as_deref(),
        Some("MON")
    );
    let monitored = valkey
        .monitored_prices(Category::Clothing, 1000)
        .await
        .expect("prices");
    assert_eq!(monitored.prices.len(), MONITORED_PRICES, "stream is capped");
    let stream_len: usize = {
        let mut con = admin(&shared_url()).expect("admin");
        redis::cmd("XLEN")
            .arg(format!(
                "{}sales:monitored:clothing:prices",
                valkey.prefix()
            ))
            .query(&mut con)
            .expect("XLEN")
    };
    assert_eq!(stream_len, MONITORED_PRICES);
    let ranking = valkey
        .product_ranking(
            None,
            Page {
                limit: 1000,
                offset: 0,
            },
        )
        .await
        .expect("ranking");
    let ties: Vec<&str> = ranking
        .items
        .iter()
        .filter(|r| r.product_id.starts_with("TIE-") && r.quantity == 7)
        .map(|r| r.product_id.as_str())
        .collect();
    assert!(ties.len() >= 2, "some ties to order: {ties:?}");
    assert!(
        ties.windows(2).all(|w| w[0] > w[1]),
        "ties by id descending"
    );
}

#[tokio::test]
async fn float_sums_are_exact_doubles() {
    let (valkey, _keys) = shared_store(DAY, 2).await;
    let memory = MemoryStore::new(DAY);
    let mut rng = StdRng::seed_from_u64(7);
    let mut id = 0;
    for _ in 0..20 {
        let size = rng.random_range(1..=400);
        let batch: Vec<Sale> = (0..size)
            .map(|_| {
                id += 1;
                let c = *Category::ALL.choose(&mut rng).expect("categories");
                let p = price(&mut rng);
                sale(&format!("f{id}"), c, "P", p, rng.random_range(1..=9))
            })
            .collect();
        memory.apply_sales(&batch).await.expect("memory");
        valkey.apply_sales(&batch).await.expect("valkey");
    }
    let want = memory.sales_kpis().await.expect("memory kpis");
    let got = valkey.sales_kpis().await.expect("valkey kpis");
    let bits = |k: &flujo_actors::store::SalesKpis| {
        let mut v = vec![k.total.price_sum.to_bits(), k.total.revenue.to_bits()];
        for c in k.categories.values() {
            v.push(c.stats.price_sum.to_bits());
            v.push(c.stats.revenue.to_bits());
            v.push(c.stats.avg_price.unwrap_or(f64::NAN).to_bits());
        }
        v
    };
    assert_eq!(bits(&got), bits(&want), "sums must be the same doubles");
    // The sums need more than Lua's 14 digits, so the test would catch tostring().
    let digits = format!("{:e}", want.total.price_sum)
        .split('e')
        .next()
        .map(|m| m.replace(['.', '-'], "").len())
        .unwrap_or(0);
    assert!(
        digits > 14,
        "price_sum {} is too round",
        want.total.price_sum
    );
    assert_eq!(json(&got), json(&want));
}

#[tokio::test]
async fn batches_are_idempotent_and_kinds_have_separate_ids() {
    let (valkey, keys) = shared_store(DAY, 2).await;
    let sales = vec![
        sale("a", Category::Home, "SOFA", 300.5, 1),
        sale("b", Category::Home, "LAMP", 20.25, 3),
        sale("a", Category::Beauty, "OTHER", 1.0, 9),
        sale("c", Category::Beauty, "SOAP", 0.1 + 0.2, 2),
    ];
    let tweets = vec![
        tweet("a", "Mixco", Weather::Rainy, 18.5, 90.0),
        tweet("b", "Antigua", Weather::Sunny, 25.0, 40.0),
    ];
    let first = valkey.apply_sales(&sales).await.expect("sales");
    assert_eq!(first.fresh, vec![true, true, false, true]);
    let t = valkey.apply_tweets(&tweets).await.expect("tweets");
    assert_eq!(t.fresh, vec![true, true], "tweet ids are not sale ids");
    let before = answers(&valkey).await;
    let keys_before = keys_under(&keys.url, &keys.prefix).expect("scan");

    let again = valkey.apply_sales(&sales).await.expect("sales again");
    assert_eq!(again.fresh, vec![false; 4]);
    let t_again = valkey.apply_tweets(&tweets).await.expect("tweets again");
    assert_eq!(t_again.fresh, vec![false; 2]);
    assert_eq!(
        answers(&valkey).await,
        before,
        "a resent batch changes nothing"
    );
    let mut keys_after = keys_under(&keys.url, &keys.prefix).expect("scan");
    let mut keys_before = keys_before;
    keys_before.sort();
    keys_after.sort();
    assert_eq!(keys_after, keys_before);
    assert!(keys_after.contains(&format!("{}seen:sale:a", keys.prefix)));
    assert!(keys_after.contains(&format!("{}seen:tweet:a", keys.prefix)));

    // The dedup markers expire with the window.
    let mut con = admin(&keys.url).expect("admin");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}seen:sale:a", keys.prefix))
        .query(&mut con)
        .expect("PTTL");
    assert!(ttl > 0 && ttl <= DAY.as_millis() as i64, "ttl {ttl}");

    // An empty batch is a no-op.
    assert_eq!(
        valkey.apply_sales(&[]).await.expect("empty"),
        Applied::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_apply_each_id_once() {
    let (valkey, _keys) = shared_store(DAY, 4).await;
    let valkey = std::sync::Arc::new(valkey);
    // Eight writers send overlapping ranges of the same 400 ids.
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let store = valkey.clone();
            tokio::spawn(async move {
                let mut fresh = Vec::new();
                for chunk in 0..10 {
                    let batch: Vec<Sale> = (0..40)
                        .map(|j| {
                            let n = (w * 50 + chunk * 40 + j) % 400;
                            sale(&format!("id{n}"), Category::Electronics, "TV", 10.0, 1)
                        })
                        .collect();
                    let applied = store.apply_sales(&batch).await.expect("apply");
                    for (s, f) in batch.iter().zip(applied.fresh) {
                        if f {
                            fresh.push(s.id.clone());
                        }
                    }
                }
                fresh
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "an id was fresh twice");
    let kpis = valkey.sales_kpis().await.expect("kpis");
    assert_eq!(kpis.total.count as usize, all.len());
    assert_eq!(kpis.total.revenue, 10.0 * all.len() as f64);
}

/// `INFO commandstats` as `command → calls`.
fn command_calls(con: &mut redis::Connection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(con)
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn one_script_call_per_batch() {
    let server = OwnServer::start();
    let url = server.url();
    let store = ValkeyStore::connect(&url, "flujo:", DAY, 1).expect("connect");
    // Warm up: connection and script loading happen once.
    store
        .apply_sales(&[sale("warm", Category::Home, "P", 1.0, 1)])
        .await
        .expect("warm-up");
    store
        .apply_tweets(&[tweet("warm", "X", Weather::Sunny, 1.0, 1.0)])
        .await
        .expect("warm-up");
    let mut con = admin(&url).expect("admin");
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(&mut con)
        .expect("RESETSTAT");
    for b in 0..5 {
        let sales: Vec<Sale> = (0..200)
            .map(|i| sale(&format!("{b}-{i}"), Category::ALL[i % 4], "P", 1.5, 2))
            .collect();
        assert_eq!(
            store
                .apply_sales(&sales)
                .await
                .expect("sales")
                .fresh_count(),
            200
        );
        let tweets: Vec<Tweet> = (0..100)
            .map(|i| tweet(&format!("{b}-{i}"), "Mixco", Weather::Rainy, 20.0, 50.0))
            .collect();
        assert_eq!(
            store
                .apply_tweets(&tweets)
                .await
                .expect("tweets")
                .fresh_count(),
            100
        );
    }
    // The same admin connection: a new one would add its own CLIENT SETINFO.
    let mut calls = command_calls(&mut con);
    calls.remove("config|resetstat");
    calls.remove("info");
    // Commands the scripts run count too; anything else came from the client.
    let inside_scripts = [
        "set", "hmget", "hset", "hsetnx", "hget", "hincrby", "zincrby", "xadd",
    ];
    calls.retain(|name, _| !inside_scripts.contains(&name.as_str()));
    assert_eq!(
        calls,
        BTreeMap::from([("evalsha".to_owned(), 10)]),
        "each batch must be exactly one EVALSHA (no PING, no EVAL, no SCRIPT LOAD)"
    );
}

#[tokio::test]
async fn survives_a_valkey_restart() {
    let mut server = OwnServer::start();
    let store = ValkeyStore::connect(&server.url(), "flujo:", DAY, 2).expect("connect");
    let first = vec![
        sale("1", Category::Electronics, "TV", 499.99, 2),
        sale("2", Category::Electronics, "PHONE", 0.1 + 0.2, 1),
    ];
    let tweets = vec![tweet("1", "Mixco", Weather::Cloudy, 21.5, 60.0)];
    store.apply_sales(&first).await.expect("apply before kill");
    store
        .apply_tweets(&tweets)
        .await
        .expect("apply before kill");
    let before = answers(&store).await;

    server.kill();
    let second = vec![sale("3", Category::Home, "SOFA", 300.0, 1)];
    let bounded = Duration::from_secs(15);
    let down = tokio::time::timeout(bounded, store.apply_sales(&second))
        .await
        .expect("apply must fail fast while Valkey is down, not hang");
    assert!(down.is_err(), "apply succeeded with Valkey down: {down:?}");
    let ping = tokio::time::timeout(bounded, store.ready())
        .await
        .expect("ping must not hang");
    assert!(ping.is_err());
    let query = tokio::time::timeout(bounded, store.sales_kpis())
        .await
        .expect("queries must not hang");
    assert!(query.is_err());

    server.spawn();
    // The same store instance reconnects by itself, and AOF kept everything.
    assert_eq!(answers(&store).await, before, "data survived the restart");
    let applied = store
        .apply_sales(&second)
        .await
        .expect("apply after restart");
    assert_eq!(applied.fresh, vec![true]);
    let again = store
        .apply_sales(&first)
        .await
        .expect("resend after restart");
    assert_eq!(
        again.fresh,
        vec![false, false],
        "dedup markers survived too"
    );
    let kpis = store.sales_kpis().await.expect("kpis");
    assert_eq!(kpis.total.count, 3);
    assert_eq!(
        kpis.categories["home"].monitored_product.as_deref(),
        Some("SOFA")
    );
    store.ready().await.expect("ping after restart");
}

#[tokio::test]
async fn zero_window_disables_dedup_like_memory_store() {
    let (valkey, keys) = shared_store(Duration::ZERO, 1).await;
    let memory = MemoryStore::new(Duration::ZERO);
    let batch = [
        sale("z", Category::Home, "P", 2.5, 1),
        sale("z", Category::Home, "P", 2.5, 1),
    ];
    for _ in 0..2 {
        let want = memory.apply_sales(&batch).await.expect("memory");
        assert_eq!(valkey.apply_sales(&batch).await.expect("valkey"), want);
    }
    assert_eq!(answers(&valkey).await, answers(&memory).await);
    let markers = keys_under(&keys.url, &format!("{}seen:", keys.prefix)).expect("scan");
    assert!(markers.is_empty(), "no dedup markers without a window");
}

#[tokio::test]
async fn largest_batches_apply_in_one_call() {
    let (valkey, _keys) = shared_store(DAY, 1).await;
    let memory = MemoryStore::new(DAY);
    let mut rng = StdRng::seed_from_u64(10_000);
    let sales: Vec<Sale> = (0..10_000)
        .map(|i| {
            let c = *Category::ALL.choose(&mut rng).expect("categories");
            let product = *PRODUCTS.choose(&mut rng).expect("products");
            sale(
                &format!("big{i}"),
                c,
                product,
                price(&mut rng),
                quantity(&mut rng),
            )
        })
        .collect();
    let tweets: Vec<Tweet> = (0..10_000)
        .map(|i| {
            let location = *LOCATIONS.choose(&mut rng).expect("locations");
            let weather = *Weather::ALL.choose(&mut rng).expect("weathers");
            let t = rng.random_range(-900..=600i32) as f64 / 10.0;
            let h = rng.random_range(0..=10_000u32) as f64 / 100.0;
            tweet(&format!("big{i}"), location, weather, t, h)
        })
        .collect();
    let started = Instant::now();
    let got = valkey.apply_sales(&sales).await.expect("sales");
    let got_tweets = valkey.apply_tweets(&tweets).await.expect("tweets");
    let took = started.elapsed();
    assert_eq!(got, memory.apply_sales(&sales).await.expect("memory"));
    assert_eq!(
        got_tweets,
        memory.apply_tweets(&tweets).await.expect("memory")
    );
    assert_eq!(answers(&valkey).await, answers(&memory).await);
    assert!(
        took < Duration::from_secs(10),
        "two 10,000-event batches took {took:?}"
    );
    eprintln!("two 10,000-event batches applied in {took:?}");
}
