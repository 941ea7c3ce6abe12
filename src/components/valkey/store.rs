//! [`ValkeyStore`]: the [`Store`] over Valkey (key schema and guarantees in [`super`]).

use crate::components::ReachError;
use flujo_actors::dedup::{id_hash, IdHash, IdWindow, WindowStats, DEFAULT_MAX_IDS, GENERATIONS};
use flujo_actors::event::{now_ms, Category, Kind, Sale, Tweet, Weather};
use flujo_actors::store::delta::{
    PricePoint, SaleScope, SalesDelta, Tally, TweetScope, TweetsDelta,
};
use flujo_actors::store::{
    Applied, CategoryStats, LocationRank, MonitoredPrices, Page, Positions, ProductRank, Ranking,
    SaleStats, SalesKpis, Store, StoreError, TweetKpis, TweetStats, MONITORED_LATENESS_MS,
    MONITORED_PRICES,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Longest dedup window passed to `PEXPIRE` (about 100 years; Valkey refuses expiry
/// times near `i64::MAX`).
const MAX_WINDOW_MS: u64 = 100 * 365 * 24 * 3_600_000;
/// Calls of a batch script before giving up: each retry drops events found old, or
/// learns a monitored product, so a batch settles in a few unless other writers
/// keep changing what it touches.
const MAX_BATCH_ATTEMPTS: usize = 8;
/// Bound on establishing one connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one request (a batch script of 10,000 events takes well under a second).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts a manager makes to reconnect, after the first, before the waiting call
/// fails (the next call starts over); with the delays below a down server is
/// reported in well under a second.
const RECONNECT_RETRIES: usize = 2;
/// First delay between reconnect attempts (the manager doubles it, with jitter).
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between reconnect attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);

/// The helpers shared by both batch scripts.
const LUA_COMMON: &str = include_str!("common.lua");
/// Bytes an id's hash takes in the window (a `u128`, little-endian).
const ID_BYTES: usize = 16;
/// Reads a whole id window at once, for a mirror that must reload: {born, oldest,
/// newest, ids per generation, the bytes of each generation from oldest to newest
/// (false when gone)}.
const LUA_WINDOW_SNAPSHOT: &str = r#"
local m = redis.call('HMGET', KEYS[1], 'oldest', 'newest', 'born', 'cap')
local oldest, newest = tonumber(m[1]), tonumber(m[2])
if not newest then return { 0, 0, 0, 0 } end
local reply = { tonumber(m[3]) or 0, oldest, newest, tonumber(m[4]) or 0 }
for g = oldest, newest do reply[#reply + 1] = redis.call('GET', KEYS[1] .. ':' .. g) end
return reply
"#;
/// The bounded id window (after [`LUA_COMMON`]).
const LUA_WINDOW: &str = include_str!("window.lua");
/// The batch driver both scripts end with (after [`LUA_WINDOW`]).
const LUA_BATCH: &str = include_str!("batch.lua");
/// The sales batch script (after [`LUA_COMMON`]).
const LUA_SALES: &str = include_str!("sales.lua");
/// The tweets batch script (after [`LUA_COMMON`]).
const LUA_TWEETS: &str = include_str!("tweets.lua");

/// The KPI store on a standalone Valkey server (see [`super`] for the keys).
pub struct ValkeyStore {
    connections: Vec<ConnectionManager>,
    next_connection: AtomicUsize,
    prefix: String,
    window_ms: u64,
    /// The most ids one window generation holds (`dedup_max_ids` / `GENERATIONS`).
    generation_cap: usize,
    sales_script: Script,
    tweets_script: Script,
    snapshot_script: Script,
    /// Per kind ([`Kind::ALL`] order), this process's mirror of the kind's id
    /// window (see `window.lua`): batches are checked against it before they are
    /// sent, so Valkey never searches the window.
    mirrors: [std::sync::Mutex<Mirror>; 2],
    /// Per kind, the turn to check a batch against the mirror, run its script and
    /// catch the mirror up (one batch of a kind at a time; the two kinds overlap).
    turns: [tokio::sync::Mutex<()>; 2],
    /// Closed category → its monitored product as last seen, so a batch's delta
    /// carries only that product's prices and those of the batch's earliest sale's
    /// product (an open category, or one not known closed, gets every price).
    monitored: std::sync::Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for ValkeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValkeyStore")
            .field("prefix", &self.prefix)
            .field("window_ms", &self.window_ms)
            .field("generation_cap", &self.generation_cap)
            .field("connections", &self.connections.len())
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("valkey: {e}"))
}

fn corrupt(key: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("valkey: unexpected value in {key}: {what}"))
}

/// Rewrites `valkey://` and `valkeys://` to the `redis` schemes.
fn redis_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("valkey://") {
        format!("redis://{rest}")
    } else if let Some(rest) = url.strip_prefix("valkeys://") {
        format!("rediss://{rest}")
    } else {
        url.to_owned()
    }
}

/// A client for `url`: over TLS for `valkeys://` and `rediss://`, trusting only the
/// CA(s) of `ca_file` when given (else the system's CA store). The error says
/// what is wrong with the URL or the file.
fn client(url: &str, ca_file: Option<&Path>) -> Result<redis::Client, String> {
    let url = redis_url(url);
    let tls = url.starts_with("rediss://");
    if tls {
        crate::components::install_crypto_provider();
    }
    match ca_file {
        None => redis::Client::open(url).map_err(|e| format!("not a valkey URL: {e}")),
        Some(_) if !tls => Err("valkey.ca_file needs a valkeys:// (or rediss://) store".into()),
        Some(path) => {
            let root = crate::components::read_ca_pem(path)
                .map_err(|why| format!("valkey.ca_file: {why}"))?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.into_bytes()),
            };
            redis::Client::build_with_tls(url, certificates)
                .map_err(|e| format!("valkey.ca_file: {e}"))
        }
    }
}

/// Connects to the server at `url` once (over TLS for `valkeys://`, trusting
/// `ca_file` when given) and asks `PING` (and `INFO server`, for the version, when
/// allowed); nothing is written. Bound the call with a timeout.
pub async fn reach(url: &str, ca_file: Option<&Path>) -> Result<String, ReachError> {
    let client = client(url, ca_file).map_err(ReachError::Invalid)?;
    let unreachable = |e: redis::RedisError| ReachError::Unreachable(e.to_string());
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(unreachable)?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .map_err(unreachable)?;
    let info: Option<String> = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .ok();
    let version = info.as_deref().and_then(|info| {
        info.lines().find_map(|line| {
            let (name, version) = line.trim().split_once(':')?;
            matches!(name, "valkey_version" | "redis_version")
                .then(|| format!("{} {version}", name.trim_end_matches("_version")))
        })
    });
    Ok(match version {
        Some(version) => format!("{pong} from {version}"),
        None => pong,
    })
}

/// Converts a sorted-set score (a count or quantity) back to an integer.
fn score_u64(key: &str, score: f64) -> Result<u64, StoreError> {
    if score.is_finite() && score >= 0.0 && score.fract() == 0.0 {
        Ok(score as u64)
    } else {
        Err(corrupt(key, format!("score {score}")))
    }
}

/// One aggregate hash as read with `HGETALL`.
struct Fields<'a> {
    key: &'a str,
    map: HashMap<String, String>,
}

impl Fields<'_> {
    fn u64(&self, field: &str) -> Result<u64, StoreError> {
        match self.map.get(field) {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| corrupt(self.key, format!("{field}={v:?}"))),
        }
    }

    fn f64(&self, field: &str) -> Result<Option<f64>, StoreError> {
        self.map
            .get(field)
            .map(|v| {
                v.parse()
                    .map_err(|_| corrupt(self.key, format!("{field}={v:?}")))
            })
            .transpose()
    }

    /// A float that must be present when the scope is not empty.
    fn required(&self, count: u64, field: &str) -> Result<Option<f64>, StoreError> {
        if count == 0 {
            return Ok(None);
        }
        match self.f64(field)? {
            Some(x) => Ok(Some(x)),
            None => Err(corrupt(self.key, format!("{field} missing"))),
        }
    }

    /// Sales stats, computed exactly like `MemoryStore`'s.
    fn sale_stats(&self) -> Result<SaleStats, StoreError> {
        let count = self.u64("count")?;
        let quantity_sum = self.u64("quantity_sum")?;
        let price_sum = self.f64("price_sum")?.unwrap_or(0.0);
        let revenue = self.f64("revenue")?.unwrap_or(0.0);
        let some = |x| (count > 0).then_some(x);
        Ok(SaleStats {
            count,
            quantity_sum,
            price_sum,
            revenue,
            avg_quantity: some(quantity_sum as f64 / count as f64),
            avg_price: some(price_sum / count as f64),
            price_min: self.required(count, "price_min")?,
            price_max: self.required(count, "price_max")?,
        })
    }

    /// Tweet stats, computed exactly like `MemoryStore`'s.
    fn tweet_stats(&self) -> Result<TweetStats, StoreError> {
        let count = self.u64("count")?;
        let temperature_sum = self.f64("temperature_sum")?.unwrap_or(0.0);
        let humidity_sum = self.f64("humidity_sum")?.unwrap_or(0.0);
        let some = |x| (count > 0).then_some(x);
        Ok(TweetStats {
            count,
            avg_temperature: some(temperature_sum / count as f64),
            avg_humidity: some(humidity_sum / count as f64),
            temperature_min: self.required(count, "temperature_min")?,
            temperature_max: self.required(count, "temperature_max")?,
        })
    }
}

/// `ZREVRANGE` bounds of a page, `None` when the page is empty by construction.
fn page_bounds(page: Page) -> Option<(isize, isize)> {
    if page.limit == 0 {
        return None;
    }
    let start = isize::try_from(page.offset).ok()?;
    let stop = start.saturating_add(isize::try_from(page.limit).unwrap_or(isize::MAX) - 1);
    Some((start, stop))
}

impl ValkeyStore {
    /// A store on the server at `url` (`redis://host:port`, or `valkey://…`, which is
    /// rewritten to `redis://`), with every key under `prefix`, applied ids remembered
    /// for `dedup_window` (at most [`DEFAULT_MAX_IDS`] of each kind; see
    /// [`ValkeyStore::with_max_ids`]), and `connections` self-reconnecting connections
    /// (at least one).
    ///
    /// Only the URL is checked here; the server is contacted on first use, so a Valkey
    /// that is down shows in [`Store::ready`] rather than failing the start. Call
    /// inside a tokio runtime.
    pub fn connect(
        url: &str,
        prefix: &str,
        dedup_window: Duration,
        connections: usize,
    ) -> Result<Self, StoreError> {
        Self::connect_with_ca(url, None, prefix, dedup_window, connections)
    }

    /// As [`ValkeyStore::connect`], over TLS for a `valkeys://` (or `rediss://`)
    /// URL, trusting only the CA(s) in `ca_file` when given (else the system's CA
    /// store). The file is read here: a bad one fails now.
    pub fn connect_with_ca(
        url: &str,
        ca_file: Option<&Path>,
        prefix: &str,
        dedup_window: Duration,
        connections: usize,
    ) -> Result<Self, StoreError> {
        let client = client(url, ca_file).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let connections = (0..connections.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        let script = |body: &str| {
            Script::new(&format!(
                "local MONITORED = '{MONITORED_PRICES}'\nlocal LATENESS = {MONITORED_LATENESS_MS}\n\n{LUA_COMMON}\n{LUA_WINDOW}\n{LUA_BATCH}\n{body}"
            ))
        };
        Ok(ValkeyStore {
            connections,
            next_connection: AtomicUsize::new(0),
            prefix: prefix.to_owned(),
            window_ms: u64::try_from(dedup_window.as_millis())
                .map_or(MAX_WINDOW_MS, |ms| ms.min(MAX_WINDOW_MS)),
            generation_cap: DEFAULT_MAX_IDS.div_ceil(GENERATIONS),
            sales_script: script(LUA_SALES),
            tweets_script: script(LUA_TWEETS),
            snapshot_script: Script::new(LUA_WINDOW_SNAPSHOT),
            mirrors: Mirror::pair(dedup_window, DEFAULT_MAX_IDS.div_ceil(GENERATIONS)),
            turns: [tokio::sync::Mutex::new(()), tokio::sync::Mutex::new(())],
            monitored: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Remembers at most `max_ids` ids of each kind: when the window holds that
    /// many, the oldest are forgotten first (and counted as evicted).
    pub fn with_max_ids(mut self, max_ids: usize) -> Self {
        self.generation_cap = max_ids.div_ceil(GENERATIONS).max(1);
        self.mirrors = Mirror::pair(Duration::from_millis(self.window_ms), self.generation_cap);
        self
    }

    /// The mirror of `kind`'s id window.
    fn mirror(&self, kind: Kind) -> std::sync::MutexGuard<'_, Mirror> {
        self.mirrors[kind_index(kind)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Loads `kind`'s mirror afresh from the whole window, in one atomic read.
    async fn reload_mirror(&self, kind: Kind) -> Result<(), StoreError> {
        let meta = self.key(&format!("ids:{}", kind.as_str()));
        let mut conn = self.connection();
        let reply: Vec<redis::Value> = self
            .snapshot_script
            .key(&meta)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let number = |v: Option<&redis::Value>| match v {
            Some(redis::Value::Int(n)) => u64::try_from(*n).ok(),
            _ => None,
        };
        let (Some(born), Some(oldest), Some(newest), Some(cap)) = (
            number(reply.first()),
            number(reply.get(1)),
            number(reply.get(2)),
            number(reply.get(3)),
        ) else {
            return Err(corrupt(&meta, "window snapshot"));
        };
        let mut mirror = self.mirror(kind);
        // The window's generations hold what the flujo that created it chose: a
        // mirror must hold them all, never evict on its own.
        let holds = usize::try_from(cap)
            .unwrap_or(usize::MAX)
            .saturating_mul(GENERATIONS);
        if holds > mirror.ids.max_ids() {
            mirror.ids = IdWindow::new(Duration::from_millis(self.window_ms), holds);
        } else {
            mirror.ids.clear();
        }
        mirror.point = Point::default();
        for (g, bytes) in (oldest..=newest).zip(reply.iter().skip(4)) {
            let bytes = match bytes {
                redis::Value::BulkString(bytes) => bytes.as_slice(),
                _ => &[],
            };
            mirror.take(g, bytes);
            mirror.point = Point {
                born,
                generation: g,
                len: bytes.len() as u64,
                last: last_id(bytes),
            };
        }
        Ok(())
    }

    /// The id window of `kind` now (one round trip for its description, one for
    /// the size and memory of its generations).
    async fn window_stats(&self, kind: Kind, now_ms: u64) -> Result<WindowStats, StoreError> {
        let meta = self.key(&format!("ids:{}", kind.as_str()));
        let (fields,): (HashMap<String, u64>,) = self.query(redis::pipe().hgetall(&meta)).await?;
        let (Some(&oldest), Some(&newest)) = (fields.get("oldest"), fields.get("newest")) else {
            return Ok(WindowStats {
                ids: 0,
                evicted: 0,
                held_ms: self.window_ms,
                bytes: 0,
            });
        };
        let mut pipe = redis::pipe();
        for g in oldest..=newest {
            let key = format!("{meta}:{g}");
            pipe.strlen(&key);
            pipe.cmd("MEMORY").arg("USAGE").arg(&key);
        }
        let sizes: Vec<Option<u64>> = self.query(&pipe).await?;
        let ids: u64 = sizes.iter().step_by(2).flatten().sum::<u64>() / ID_BYTES as u64;
        let bytes: u64 = sizes.iter().skip(1).step_by(2).flatten().sum();
        let max_ids = (self.generation_cap * GENERATIONS) as u64;
        let opened = fields.get(&format!("opened:{oldest}")).copied();
        let held_ms = match opened {
            // Full: the cap, not the clock, decides how far back the window reaches.
            Some(opened) if ids + self.generation_cap as u64 > max_ids => {
                now_ms.saturating_sub(opened).min(self.window_ms)
            }
            _ => self.window_ms,
        };
        Ok(WindowStats {
            ids: ids as usize,
            evicted: fields.get("evicted").copied().unwrap_or(0),
            held_ms,
            bytes: bytes as usize,
        })
    }

    /// The key prefix every key of this store starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The connection every batch is applied on: one, so scripts run in the order
    /// flujo sends them (queries spread over all of them).
    fn apply_connection(&self) -> ConnectionManager {
        self.connections[0].clone()
    }

    /// The next connection, in turn (a cheap handle on a shared connection).
    fn connection(&self) -> ConnectionManager {
        let i = self.next_connection.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }

    /// Runs a pipeline (or a single command), retried once when the connection turned
    /// out to be broken: the manager has started a new one, and the retry waits for it.
    /// A server's error reply (e.g. a script error) is not retried.
    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut conn = self.connection();
        match pipe.query_async(&mut conn).await {
            Err(e) if connection_broken(&e) => pipe.query_async(&mut conn).await,
            result => result,
        }
        .map_err(unavailable)
    }

    /// The size of the sorted set `key` and one page of it (member, score), score
    /// descending, in one round trip.
    async fn ranked(
        &self,
        key: &str,
        page: Page,
    ) -> Result<(usize, Vec<(String, f64)>), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic().zcard(key);
        let Some((start, stop)) = page_bounds(page) else {
            let (total,): (usize,) = self.query(&pipe).await?;
            return Ok((total, Vec::new()));
        };
        pipe.zrevrange_withscores(key, start, stop);
        self.query(&pipe).await
    }

    /// Runs one batch script for `events` of `kind` at `at`, optimistically: the
    /// events go with their delta folded by `delta` (which pushes it) as if all
    /// were new, after this process's mirror of the id window found no duplicate
    /// among them; when the script finds some are not new (below their stream's
    /// position, or ids another apply added to the window since the mirror's point)
    /// it writes nothing and says which, and the batch goes again without them. A
    /// `monitored` refusal (a category sent with only its monitored product's prices
    /// is open, or monitors another product) forgets the category and goes again
    /// with every price of it; `stale` reloads the mirror.
    async fn run_batch<E>(
        &self,
        kind: Kind,
        script: &Script,
        events: &[E],
        at: &Positions,
        id: fn(&E) -> &str,
        delta: impl Fn(&mut redis::ScriptInvocation<'_>, Vec<&E>),
    ) -> Result<Applied, StoreError> {
        if events.is_empty() {
            return Ok(Applied::default());
        }
        at.check(events.len())?;
        let streams: &[String] = if at.is_empty() { &[] } else { &at.streams };
        let reached = at.next_offsets();
        let hashes: Vec<IdHash> = events.iter().map(|e| id_hash(id(e))).collect();
        // b'1' new, b'0' a duplicate id, b'2' below its stream's position.
        let mut flags = vec![b'1'; events.len()];
        let mut sending: Vec<usize> = (0..events.len()).collect();
        for _ in 0..MAX_BATCH_ATTEMPTS {
            if sending.is_empty() && at.is_empty() {
                break; // nothing to apply, no position to move
            }
            // Everything but the mirror's part is built before waiting for the
            // kind's turn, folded as if every event were new.
            let mut invocation = script.prepare_invoke();
            invocation
                .arg(&self.prefix)
                .arg(self.window_ms)
                .arg(now_ms().max(0))
                .arg(self.generation_cap)
                .arg(streams.len());
            for stream in streams {
                invocation.arg(stream);
            }
            for &next in &reached[..streams.len()] {
                invocation.arg(next);
            }
            let mut blob = Vec::with_capacity(sending.len() * ID_BYTES);
            for &i in &sending {
                blob.extend_from_slice(&hashes[i].to_le_bytes());
            }
            invocation.arg(sending.len()).arg(blob);
            if !streams.is_empty() {
                for &i in &sending {
                    let (stream, offset) = at.offsets[i];
                    invocation.arg(stream + 1).arg(offset);
                }
            }
            delta(
                &mut invocation,
                sending.iter().map(|&i| &events[i]).collect(),
            );
            // One batch of a kind at a time from this process, so its mirror is
            // always caught up with this process's own writes: the script's tail
            // then holds only other consumers' batches (usually nothing).
            let _turn = self.turns[kind_index(kind)].lock().await;
            let (verdicts, claimed, point) = {
                let mirror = self.mirror(kind);
                let (verdicts, claimed) = if self.window_ms == 0 {
                    // No window: every event is new, a repeat in the batch too.
                    (vec![b'1'; sending.len()], String::new())
                } else {
                    mirror.verdicts(&hashes, &sending)
                };
                (verdicts, claimed, mirror.point)
            };
            invocation
                .arg(point.born)
                .arg(point.generation)
                .arg(point.len)
                .arg(&point.last[..])
                .arg(claimed)
                .arg(verdicts);
            // A retry after a broken connection is safe: if the first call did
            // run, the retry finds every id in the window's tail (or every event
            // below its position) and writes nothing, as a redelivery would.
            let mut conn = self.apply_connection();
            let reply = match invocation
                .invoke_async::<Vec<redis::Value>>(&mut conn)
                .await
            {
                Err(e) if connection_broken(&e) => {
                    invocation
                        .invoke_async::<Vec<redis::Value>>(&mut conn)
                        .await
                }
                result => result,
            }
            .map_err(unavailable)?;
            let word = |i: usize| reply.get(i).and_then(text);
            match word(0).as_deref() {
                Some("ok") => {
                    if let Some(window) = reply.get(3) {
                        let own = sending.iter().map(|&i| hashes[i]);
                        self.mirror(kind)
                            .learn(window, own)
                            .map_err(|what| unavailable(format!("batch script answered {what}")))?;
                    }
                    let extra: Vec<String> = match reply.get(2) {
                        Some(redis::Value::Array(items)) => items.iter().filter_map(text).collect(),
                        _ => Vec::new(),
                    };
                    self.learn_monitored(&extra);
                    return Ok(Applied {
                        fresh: flags.iter().map(|&f| f == b'1').collect(),
                        replayed: flags.iter().filter(|&&f| f == b'2').count(),
                    });
                }
                Some("retry") => {
                    let sent = word(1).unwrap_or_default();
                    if sent.len() != sending.len() {
                        return Err(unavailable(format!(
                            "batch script answered {} flags for {} events",
                            sent.len(),
                            sending.len()
                        )));
                    }
                    for (&i, &flag) in sending.iter().zip(sent.as_bytes()) {
                        flags[i] = flag;
                    }
                    sending.retain(|&i| flags[i] == b'1');
                }
                Some("stale") => self.reload_mirror(kind).await?,
                Some("monitored") => {
                    let mut known = self.monitored.lock().unwrap_or_else(|p| p.into_inner());
                    for category in reply[1..].iter().filter_map(text) {
                        known.remove(&category);
                    }
                }
                _ => return Err(unavailable(format!("batch script answered {reply:?}"))),
            }
        }
        if sending.is_empty() {
            return Ok(Applied {
                fresh: vec![false; events.len()],
                replayed: flags.iter().filter(|&&f| f == b'2').count(),
            });
        }
        Err(unavailable(format!(
            "batch not applied after {MAX_BATCH_ATTEMPTS} attempts (concurrent writers)"
        )))
    }

    /// Remembers each closed category's monitored product from the triples
    /// (category, product, `1` closed or `0` open) of a script's reply.
    fn learn_monitored(&self, triples: &[String]) {
        let mut known = self.monitored.lock().unwrap_or_else(|p| p.into_inner());
        for t in triples.chunks_exact(3) {
            if t[2] == "1" {
                known.insert(t[0].clone(), t[1].clone());
            } else {
                known.remove(&t[0]);
            }
        }
    }

    /// The monitored product of `category` if it was last seen closed.
    fn monitored_of(&self, category: Category) -> Option<String> {
        let known = self.monitored.lock().unwrap_or_else(|p| p.into_inner());
        known.get(category.as_str()).cloned()
    }
}

/// The point a [`Mirror`] is complete up to: every hash of the window born at
/// `born` (ms) in its generations up to `generation`, and that one's first `len`
/// bytes; all zero before any. A kind's batches take turns (check, script,
/// catch-up), so answers arrive in order and the point only moves forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    born: u64,
    generation: u64,
    len: u64,
    /// The generation's 16 bytes before `len` (checked by the script, so a
    /// generation rebuilt under the same number is not taken for this one).
    last: [u8; ID_BYTES],
}

/// The last 16 bytes of `bytes` (zeros when shorter).
fn last_id(bytes: &[u8]) -> [u8; ID_BYTES] {
    let mut last = [0u8; ID_BYTES];
    if let Some(tail) = bytes.len().checked_sub(ID_BYTES).map(|at| &bytes[at..]) {
        last.copy_from_slice(tail);
    }
    last
}

/// This process's mirror of one kind's id window in Valkey (see `window.lua`):
/// every hash the window holds, up to a point.
struct Mirror {
    /// The hashes, in the window's generations.
    ids: IdWindow,
    /// How far `ids` is complete.
    point: Point,
}

impl Mirror {
    /// Empty mirrors for sales and tweets, for a window of `window` with
    /// generations of `generation_cap` ids.
    fn pair(window: Duration, generation_cap: usize) -> [std::sync::Mutex<Mirror>; 2] {
        let mirror = || {
            std::sync::Mutex::new(Mirror {
                ids: IdWindow::new(window, generation_cap * GENERATIONS),
                point: Point::default(),
            })
        };
        [mirror(), mirror()]
    }

    /// Per event of `sending`, b'0' when the window holds its id (as far as the
    /// mirror knows) or an earlier event of the batch has it, else b'1'; and the
    /// generations holding the ids found, space-separated, for the script to
    /// verify they are still there.
    fn verdicts(&self, hashes: &[IdHash], sending: &[usize]) -> (Vec<u8>, String) {
        let mut generations = std::collections::BTreeSet::new();
        let mut verdicts: Vec<u8> = sending
            .iter()
            .map(|&i| match self.ids.generation_of(hashes[i]) {
                Some(g) => {
                    generations.insert(g);
                    b'0'
                }
                None => b'1',
            })
            .collect();
        // Repeats within the batch: positions sorted by hash (stably, so the
        // first of equal hashes comes first); every later one is a duplicate.
        let mut by_hash: Vec<usize> = (0..sending.len()).collect();
        by_hash.sort_by_key(|&k| hashes[sending[k]]);
        for pair in by_hash.windows(2) {
            if hashes[sending[pair[0]]] == hashes[sending[pair[1]]] {
                verdicts[pair[1]] = b'0';
            }
        }
        let claimed = generations.iter().map(u64::to_string).collect::<Vec<_>>();
        (verdicts, claimed.join(" "))
    }

    /// Adds the hashes of generation `number` in `bytes` (16 each).
    fn take(&mut self, number: u64, bytes: &[u8]) {
        for chunk in bytes.chunks_exact(ID_BYTES) {
            let mut id = [0u8; ID_BYTES];
            id.copy_from_slice(chunk);
            self.ids.insert_in(IdHash::from_le_bytes(id), number);
        }
    }

    /// Catches up with a batch script's answer {born, oldest, newest, bytes in newest,
    /// {generation, ids, …} where `own` (the hashes the batch sent) went, newest's
    /// last 16 bytes, {generation, bytes, …} the tail this mirror lacked}. Says what is
    /// wrong with an answer of another shape.
    fn learn(
        &mut self,
        window: &redis::Value,
        mut own: impl Iterator<Item = IdHash>,
    ) -> Result<(), String> {
        let redis::Value::Array(parts) = window else {
            return Err(format!("window {window:?}"));
        };
        let number = |i: usize| match parts.get(i) {
            Some(redis::Value::Int(n)) => u64::try_from(*n).ok(),
            _ => None,
        };
        let (Some(born), Some(oldest), Some(newest), Some(len)) =
            (number(0), number(1), number(2), number(3))
        else {
            return Err(format!("window {window:?}"));
        };
        let (Some(redis::Value::Array(spans)), Some(last), Some(redis::Value::Array(tail))) =
            (parts.get(4), parts.get(5), parts.get(6))
        else {
            return Err(format!("window {window:?}"));
        };
        let last = match last {
            redis::Value::BulkString(bytes) => last_id(bytes),
            _ => [0u8; ID_BYTES],
        };
        if newest == 0 {
            return Ok(()); // no window yet: nothing was appended
        }
        self.ids.forget_before(oldest);
        for pair in tail.chunks_exact(2) {
            if let [redis::Value::Int(g), redis::Value::BulkString(bytes)] = pair {
                self.take(u64::try_from(*g).unwrap_or(0), bytes);
            }
        }
        for pair in spans.chunks_exact(2) {
            if let [redis::Value::Int(g), redis::Value::Int(n)] = pair {
                let g = u64::try_from(*g).unwrap_or(0);
                for h in own.by_ref().take(usize::try_from(*n).unwrap_or(0)) {
                    self.ids.insert_in(h, g);
                }
            }
        }
        self.point = self.point.max(Point {
            born,
            generation: newest,
            len,
            last,
        });
        Ok(())
    }
}

/// The index of `kind` in [`Kind::ALL`] (and in per-kind arrays).
fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|&k| k == kind).unwrap_or(0)
}

/// A reply's simple or bulk string as text.
fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// True when the connection itself failed (I/O error, dropped connection, timeout),
/// rather than the server answering with an error.
fn connection_broken(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_unrecoverable_error()
}

/// A float as the batch scripts receive it: the shortest form that parses back to the
/// same `f64` (Lua's `tonumber` is `strtod`).
fn lua_float(x: f64) -> String {
    format!("{x:?}")
}

/// A sales scope as `sales.lua` reads it: count, quantity_sum, price_sum, revenue,
/// price_min, price_max.
fn push_sale_scope(inv: &mut redis::ScriptInvocation<'_>, scope: &SaleScope) {
    inv.arg(scope.price.count)
        .arg(scope.quantity_sum)
        .arg(lua_float(scope.price.sum))
        .arg(lua_float(scope.revenue))
        .arg(lua_float(scope.price.min))
        .arg(lua_float(scope.price.max));
}

/// A tweets scope as `tweets.lua` reads it: count, temperature_sum, humidity_sum,
/// temperature_min, temperature_max.
fn push_tweet_scope(inv: &mut redis::ScriptInvocation<'_>, scope: &TweetScope) {
    inv.arg(scope.temperature.count)
        .arg(lua_float(scope.temperature.sum))
        .arg(lua_float(scope.humidity_sum))
        .arg(lua_float(scope.temperature.min))
        .arg(lua_float(scope.temperature.max));
}

/// A product and the prices of its sales as `sales.lua` reads them: product,
/// count, then score (`ts`) and member pairs.
fn push_prices(inv: &mut redis::ScriptInvocation<'_>, product: &str, points: &[PricePoint]) {
    inv.arg(product).arg(points.len());
    for point in points {
        inv.arg(point.ts).arg(&point.member);
    }
}

/// Quantities per product: count, then product and quantity pairs.
fn push_tally(inv: &mut redis::ScriptInvocation<'_>, tally: &Tally<u64>) {
    inv.arg(tally.items.len());
    for (product, quantity) in &tally.items {
        inv.arg(product).arg(*quantity);
    }
}

#[tonic::async_trait]
impl Store for ValkeyStore {
    fn name(&self) -> &'static str {
        "valkey"
    }

    async fn apply_sales_at(&self, sales: &[Sale], at: &Positions) -> Result<Applied, StoreError> {
        self.run_batch(
            Kind::Sale,
            &self.sales_script,
            sales,
            at,
            |s| &s.id,
            |inv, batch| {
                let d = SalesDelta::of(batch);
                push_sale_scope(inv, &d.total);
                inv.arg(d.touched().count());
                for (category, c) in d.touched() {
                    inv.arg(category.as_str());
                    push_sale_scope(inv, &c.scope);
                    if let Some(e) = &c.earliest {
                        inv.arg(e.ts).arg(&e.id).arg(&e.product);
                    }
                    inv.arg(c.newest_ts);
                    match self.monitored_of(category) {
                        Some(known) => {
                            let first = c.earliest.as_ref().map_or("", |e| e.product.as_str());
                            let lists: Vec<&str> = c
                                .prices
                                .items
                                .iter()
                                .map(|(product, _)| product.as_str())
                                .filter(|&p| p == known || p == first)
                                .collect();
                            inv.arg("0").arg(&known).arg(lists.len());
                            for product in lists {
                                push_prices(inv, product, c.prices_of(product));
                            }
                        }
                        None => {
                            inv.arg("1").arg("").arg(c.prices.items.len());
                            for (product, points) in &c.prices.items {
                                push_prices(inv, product, points);
                            }
                        }
                    }
                    push_tally(inv, &c.products);
                }
                push_tally(inv, &d.products);
            },
        )
        .await
    }

    async fn apply_tweets_at(
        &self,
        tweets: &[Tweet],
        at: &Positions,
    ) -> Result<Applied, StoreError> {
        self.run_batch(
            Kind::Tweet,
            &self.tweets_script,
            tweets,
            at,
            |t| &t.id,
            |inv, batch| {
                let d = TweetsDelta::of(batch);
                push_tweet_scope(inv, &d.total);
                inv.arg(d.weathers().count());
                for (weather, n) in d.weathers() {
                    inv.arg(weather.as_str()).arg(n);
                }
                inv.arg(d.locations.items.len());
                for (location, scope) in &d.locations.items {
                    inv.arg(location);
                    push_tweet_scope(inv, scope);
                }
            },
        )
        .await
    }

    async fn positions(&self, streams: &[String]) -> Result<Vec<Option<i64>>, StoreError> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = streams
            .iter()
            .map(|s| self.key(&format!("position:{s}")))
            .collect();
        // MGET by name: the client's `mget` sends GET for a single key.
        let mut pipe = redis::pipe();
        pipe.cmd("MGET").arg(&keys);
        let (values,): (Vec<Option<i64>>,) = self.query(&pipe).await?;
        if values.len() != keys.len() {
            return Err(corrupt(&keys[0], "short MGET reply"));
        }
        Ok(values)
    }

    async fn sales_kpis(&self) -> Result<SalesKpis, StoreError> {
        let total_key = self.key("sales:total");
        let category_keys: Vec<String> = Category::ALL
            .iter()
            .map(|c| self.key(&format!("sales:category:{}", c.as_str())))
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic().hgetall(&total_key);
        for key in &category_keys {
            pipe.hgetall(key);
        }
        let maps: Vec<HashMap<String, String>> = self.query(&pipe).await?;
        if maps.len() != 1 + Category::ALL.len() {
            return Err(corrupt(&total_key, "short pipeline reply"));
        }
        let mut maps = maps.into_iter();
        let total = Fields {
            key: &total_key,
            map: maps.next().unwrap_or_default(),
        }
        .sale_stats()?;
        let mut by_category = BTreeMap::new();
        for ((c, key), map) in Category::ALL.iter().zip(&category_keys).zip(maps) {
            let fields = Fields { key, map };
            let stats = CategoryStats {
                stats: fields.sale_stats()?,
                monitored_product: fields.map.get("monitored_product").cloned(),
            };
            by_category.insert(c.as_str(), stats);
        }
        Ok(SalesKpis {
            total,
            categories: by_category,
        })
    }

    async fn tweet_kpis(&self) -> Result<TweetKpis, StoreError> {
        let total_key = self.key("tweets:total");
        let weather_key = self.key("tweets:weather");
        let mut pipe = redis::pipe();
        pipe.atomic().hgetall(&total_key).hgetall(&weather_key);
        let (total, weather): (HashMap<String, String>, HashMap<String, String>) =
            self.query(&pipe).await?;
        let total = Fields {
            key: &total_key,
            map: total,
        }
        .tweet_stats()?;
        let weather_fields = Fields {
            key: &weather_key,
            map: weather,
        };
        let weather = Weather::ALL
            .iter()
            .map(|w| Ok((w.as_str(), weather_fields.u64(w.as_str())?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(TweetKpis { total, weather })
    }

    async fn product_ranking(
        &self,
        category: Option<Category>,
        page: Page,
    ) -> Result<Ranking<ProductRank>, StoreError> {
        let key = match category {
            Some(c) => self.key(&format!("sales:products:{}", c.as_str())),
            None => self.key("sales:products"),
        };
        let (total, page_items) = self.ranked(&key, page).await?;
        let items = page_items
            .into_iter()
            .map(|(product_id, score)| {
                Ok(ProductRank {
                    product_id,
                    quantity: score_u64(&key, score)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Ranking { total, items })
    }

    async fn location_ranking(&self, page: Page) -> Result<Ranking<LocationRank>, StoreError> {
        let key = self.key("tweets:locations");
        let (total, ranked) = self.ranked(&key, page).await?;
        let locations: Vec<String> = ranked.into_iter().map(|(location, _)| location).collect();
        if locations.is_empty() {
            return Ok(Ranking {
                total,
                items: Vec::new(),
            });
        }
        let keys: Vec<String> = locations
            .iter()
            .map(|l| self.key(&format!("tweets:location:{l}")))
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for k in &keys {
            pipe.hgetall(k);
        }
        let maps: Vec<HashMap<String, String>> = self.query(&pipe).await?;
        if maps.len() != keys.len() {
            return Err(corrupt(&key, "short pipeline reply"));
        }
        let items = locations
            .into_iter()
            .zip(&keys)
            .zip(maps)
            .map(|((location, key), map)| {
                Ok(LocationRank {
                    location,
                    stats: Fields { key, map }.tweet_stats()?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Ranking { total, items })
    }

    async fn monitored_prices(
        &self,
        category: Category,
        limit: usize,
    ) -> Result<MonitoredPrices, StoreError> {
        let category_key = self.key(&format!("sales:category:{}", category.as_str()));
        let stream_key = self.key(&format!("sales:monitored:{}:newest", category.as_str()));
        let mut pipe = redis::pipe();
        pipe.atomic().hget(&category_key, "monitored_product");
        if limit == 0 {
            let (product_id,): (Option<String>,) = self.query(&pipe).await?;
            return Ok(MonitoredPrices {
                product_id,
                prices: Vec::new(),
            });
        }
        let newest = limit.min(MONITORED_PRICES) as isize;
        pipe.zrange(&stream_key, -newest, -1);
        let (product_id, members): (Option<String>, Vec<String>) = self.query(&pipe).await?;
        let prices = members
            .iter()
            .map(|member| {
                member
                    .rsplit_once('\0')
                    .and_then(|(_, price)| price.parse::<f64>().ok())
                    .ok_or_else(|| corrupt(&stream_key, format!("member {member:?}")))
            })
            .collect::<Result<Vec<f64>, StoreError>>()?;
        Ok(MonitoredPrices { product_id, prices })
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        let (pong,): (String,) = self.query(&pipe).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(unavailable(format!("PING answered {pong:?}")))
        }
    }

    async fn dedup_windows(&self) -> Result<Vec<(Kind, WindowStats)>, StoreError> {
        let now = u64::try_from(now_ms()).unwrap_or(0);
        let mut windows = Vec::with_capacity(Kind::ALL.len());
        for kind in Kind::ALL {
            windows.push((kind, self.window_stats(kind, now).await?));
        }
        Ok(windows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valkey_scheme_is_rewritten() {
        assert_eq!(redis_url("valkey://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redis_url("valkeys://h:6380"), "rediss://h:6380");
        assert_eq!(
            redis_url("redis://127.0.0.1:6380"),
            "redis://127.0.0.1:6380"
        );
    }

    #[tokio::test]
    async fn connect_checks_only_the_url() {
        let store = ValkeyStore::connect(
            "valkey://127.0.0.1:1",
            super::super::DEFAULT_PREFIX,
            Duration::from_secs(1),
            0,
        )
        .expect("a valid URL needs no server");
        assert_eq!((store.name(), store.connections.len()), ("valkey", 1));
        assert!(ValkeyStore::connect("http://x", "p:", Duration::ZERO, 1).is_err());
    }

    #[test]
    fn pages_map_to_zrevrange_bounds() {
        let page = |limit, offset| Page { limit, offset };
        assert_eq!(page_bounds(page(10, 0)), Some((0, 9)));
        assert_eq!(page_bounds(page(1, 5)), Some((5, 5)));
        assert_eq!(
            page_bounds(page(0, 0)),
            None,
            "limit 0 must not read the whole set"
        );
        assert_eq!(page_bounds(page(usize::MAX, 1)), Some((1, isize::MAX)));
    }

    #[test]
    fn floats_reach_lua_in_round_trip_form() {
        for x in [
            0.1 + 0.2,
            19.99,
            1e-7,
            1e21,
            -0.0,
            2000.0,
            f64::MIN_POSITIVE,
        ] {
            let s = lua_float(x);
            assert_eq!(s.parse::<f64>().map(f64::to_bits), Ok(x.to_bits()), "{s}");
        }
    }

    #[test]
    fn scores_must_be_counts() {
        assert_eq!(score_u64("k", 12.0).ok(), Some(12));
        assert!(score_u64("k", 1.5).is_err());
        assert!(score_u64("k", -1.0).is_err());
    }
}
