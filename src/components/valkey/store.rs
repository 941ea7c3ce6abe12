//! [`ValkeyStore`]: the [`Store`] over Valkey (key schema and guarantees in [`super`]).

use crate::components::ReachError;
use flujo_actors::dedup::{id_hash, IdHash, IdWindow, WindowStats, DEFAULT_MAX_IDS, GENERATIONS};
use flujo_actors::event::{now_ms, Category, Kind, Sale, Tweet, Weather};
use flujo_actors::store::delta::{PricePoint, SaleScope, SalesDelta, TweetScope, TweetsDelta};
use flujo_actors::store::{
    Applied, CategoryStats, LocationRank, MonitoredPrices, Page, Positions, ProductRank, Ranking,
    SaleStats, SalesKpis, Store, StoreError, TweetKpis, TweetStats, MONITORED_LATENESS_MS,
    MONITORED_PRICES,
};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::Script;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
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
/// Shards of a store on a cluster unless [`ValkeyStore::with_shards`] says: 12,
/// which divides or is divided by the usual partition counts (6, 12, 24, 48), so a
/// Kafka delivery of one partition touches one shard (6 or 12 partitions) or a
/// few.
pub const DEFAULT_CLUSTER_SHARDS: usize = 12;
/// Retries of a call on a cluster (after a MOVED, a node that went away, …)
/// before it fails.
const CLUSTER_RETRIES: u32 = 3;
/// Longest wait between two retries of a call on a cluster.
const CLUSTER_MAX_RETRY_WAIT: Duration = Duration::from_millis(500);

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
/// Moves each position `KEYS[i]` forward to `ARGV[i]`, never back.
const LUA_RESUME: &str = r#"
for i, key in ipairs(KEYS) do
  local stored = tonumber(redis.call('GET', key))
  if not stored or stored < tonumber(ARGV[i]) then redis.call('SET', key, ARGV[i]) end
end
"#;
/// The bounded id window (after [`LUA_COMMON`]).
const LUA_WINDOW: &str = include_str!("window.lua");
/// The batch driver both scripts end with (after [`LUA_WINDOW`]).
const LUA_BATCH: &str = include_str!("batch.lua");
/// The sales batch script (after [`LUA_COMMON`]).
const LUA_SALES: &str = include_str!("sales.lua");
/// The tweets batch script (after [`LUA_COMMON`]).
const LUA_TWEETS: &str = include_str!("tweets.lua");

/// The connections of a store: to a standalone server, or to a Valkey Cluster.
enum Connections {
    /// `valkey.pool_size` self-reconnecting managers, used in turn.
    Standalone(Vec<ConnectionManager>),
    /// One cluster connection (it keeps one multiplexed connection per node,
    /// routes each call by its first key's slot and reconnects by itself), made
    /// on first use.
    Cluster(Box<(ClusterClient, tokio::sync::OnceCell<ClusterConnection>)>),
}

/// One connection of a store, standalone or cluster.
#[derive(Clone)]
enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Standalone(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// The KPI store on Valkey (see [`super`] for the keys and the shards).
pub struct ValkeyStore {
    connections: Connections,
    next_connection: AtomicUsize,
    prefix: String,
    window_ms: u64,
    /// The most ids of each kind all shards' windows hold together
    /// (`dedup_max_ids`).
    max_ids: usize,
    /// The most ids one window generation of a shard holds
    /// (`max_ids` / shards / `GENERATIONS`).
    generation_cap: usize,
    sales_script: Script,
    tweets_script: Script,
    snapshot_script: Script,
    resume_script: Script,
    /// The independent key sets the KPIs are kept in (one unless
    /// [`ValkeyStore::with_shards`]); queries merge them.
    shards: Vec<Shard>,
    /// Set once the store is known to have been made with this shard count.
    shards_checked: tokio::sync::OnceCell<()>,
}

/// One independent set of KPI keys, all under one prefix (with a hash tag when
/// there are several, so each shard's keys share a Valkey Cluster slot), with
/// this process's state for applying batches to it.
struct Shard {
    /// The prefix of every key of the shard.
    prefix: String,
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

impl Shard {
    /// Shard `index` under the store's `prefix`: the prefix and the shard number
    /// in braces (`flujo:{3}:`, a hash tag) when `tagged`, else the prefix itself
    /// (one shard on a standalone server: the keys of a store from before shards).
    fn new(
        prefix: &str,
        index: usize,
        tagged: bool,
        window: Duration,
        generation_cap: usize,
    ) -> Self {
        let prefix = if tagged {
            format!("{prefix}{{{index}}}:")
        } else {
            prefix.to_owned()
        };
        Shard {
            prefix,
            mirrors: Mirror::pair(window, generation_cap),
            turns: [tokio::sync::Mutex::new(()), tokio::sync::Mutex::new(())],
            monitored: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The mirror of `kind`'s id window.
    fn mirror(&self, kind: Kind) -> std::sync::MutexGuard<'_, Mirror> {
        self.mirrors[kind.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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

    /// Forgets what it knew of `categories` (the script found it wrong).
    fn forget_monitored(&self, categories: impl Iterator<Item = String>) {
        let mut known = self.monitored.lock().unwrap_or_else(|p| p.into_inner());
        for category in categories {
            known.remove(&category);
        }
    }
}

impl std::fmt::Debug for ValkeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValkeyStore")
            .field("prefix", &self.prefix)
            .field("shards", &self.shards.len())
            .field("window_ms", &self.window_ms)
            .field("generation_cap", &self.generation_cap)
            .field(
                "cluster",
                &matches!(self.connections, Connections::Cluster(..)),
            )
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("valkey: {e}"))
}

fn corrupt(key: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("valkey: unexpected value in {key}: {what}"))
}

/// The nodes of a cluster URL (`valkey+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]`,
/// `valkeys+cluster://` over TLS, or the `redis+cluster`/`rediss+cluster` forms) as
/// one `redis://` (or `rediss://`) URL each, the credentials repeated; `None` for
/// a URL of one server.
pub fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, String>> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme {
        "valkey+cluster" | "redis+cluster" => "redis",
        "valkeys+cluster" | "rediss+cluster" => "rediss",
        _ => return None,
    };
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|host| format!("{scheme}://{credentials}{host}"))
        .collect();
    if nodes.is_empty() || hosts.contains('/') {
        return Some(Err(format!(
            "a cluster URL is {scheme}+cluster://HOST:PORT[,HOST:PORT…] (no database): {}",
            crate::components::mask_url_password(url)
        )));
    }
    Some(Ok(nodes))
}

/// A client of the cluster whose nodes are `nodes` (see [`cluster_nodes`]), over
/// TLS for `rediss://` nodes, trusting only the CA(s) of `ca_file` when given.
fn cluster_client(nodes: &[String], ca_file: Option<&Path>) -> Result<ClusterClient, String> {
    let tls = nodes.iter().any(|n| n.starts_with("rediss://"));
    if tls {
        crate::components::install_crypto_provider();
    }
    let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(RECONNECT_MIN_DELAY.as_millis() as u64)
        .max_retry_wait(CLUSTER_MAX_RETRY_WAIT.as_millis() as u64);
    match ca_file {
        None => {}
        Some(_) if !tls => {
            return Err("valkey.ca_file needs a valkeys+cluster:// store".into());
        }
        Some(path) => {
            let root = crate::components::read_ca_pem(path)
                .map_err(|why| format!("valkey.ca_file: {why}"))?;
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.into_bytes()),
            });
        }
    }
    builder
        .build()
        .map_err(|e| format!("not a valkey cluster URL: {e}"))
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
    let unreachable = |e: redis::RedisError| ReachError::Unreachable(e.to_string());
    match cluster_nodes(url) {
        Some(nodes) => {
            let nodes = nodes.map_err(ReachError::Invalid)?;
            let client = cluster_client(&nodes, ca_file).map_err(ReachError::Invalid)?;
            let mut connection = client.get_async_connection().await.map_err(unreachable)?;
            let answer = ping_and_version(&mut connection)
                .await
                .map_err(unreachable)?;
            Ok(format!("{answer} (cluster)"))
        }
        None => {
            let client = client(url, ca_file).map_err(ReachError::Invalid)?;
            let mut connection = client
                .get_multiplexed_async_connection()
                .await
                .map_err(unreachable)?;
            ping_and_version(&mut connection).await.map_err(unreachable)
        }
    }
}

/// `PING`, and the server's version from `INFO server` when allowed:
/// `PONG from valkey 9.1.2`.
async fn ping_and_version(
    connection: &mut impl ConnectionLike,
) -> Result<String, redis::RedisError> {
    let pong: String = redis::cmd("PING").query_async(connection).await?;
    let info: Option<String> = redis::cmd("INFO")
        .arg("server")
        .query_async(connection)
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
        let cluster = cluster_nodes(url);
        let connections = match cluster {
            Some(nodes) => {
                let nodes = nodes.map_err(unavailable)?;
                let client = cluster_client(&nodes, ca_file).map_err(unavailable)?;
                Connections::Cluster(Box::new((client, tokio::sync::OnceCell::new())))
            }
            None => {
                let client = client(url, ca_file).map_err(unavailable)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(RECONNECT_RETRIES)
                    .set_min_delay(RECONNECT_MIN_DELAY)
                    .set_max_delay(RECONNECT_MAX_DELAY);
                let managers = (0..connections.max(1))
                    .map(|_| {
                        ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(unavailable)?;
                Connections::Standalone(managers)
            }
        };
        let script = |body: &str| {
            Script::new(&format!(
                "local MONITORED = '{MONITORED_PRICES}'\nlocal LATENESS = {MONITORED_LATENESS_MS}\n\n{LUA_COMMON}\n{LUA_WINDOW}\n{LUA_BATCH}\n{body}"
            ))
        };
        let mut store = ValkeyStore {
            connections,
            next_connection: AtomicUsize::new(0),
            prefix: prefix.to_owned(),
            window_ms: u64::try_from(dedup_window.as_millis())
                .map_or(MAX_WINDOW_MS, |ms| ms.min(MAX_WINDOW_MS)),
            max_ids: DEFAULT_MAX_IDS,
            generation_cap: 1,
            sales_script: script(LUA_SALES),
            tweets_script: script(LUA_TWEETS),
            snapshot_script: Script::new(LUA_WINDOW_SNAPSHOT),
            resume_script: Script::new(LUA_RESUME),
            shards: Vec::new(),
            shards_checked: tokio::sync::OnceCell::new(),
        };
        // A cluster spreads shards over its nodes: 16 unless told otherwise.
        store.make_shards(if store.is_cluster() {
            DEFAULT_CLUSTER_SHARDS
        } else {
            1
        });
        Ok(store)
    }

    /// Remembers at most `max_ids` ids of each kind (split evenly over the
    /// shards): when a shard's window holds its part, its oldest are forgotten
    /// first (and counted as evicted).
    pub fn with_max_ids(mut self, max_ids: usize) -> Self {
        self.max_ids = max_ids;
        self.make_shards(self.shards.len());
        self
    }

    /// Keeps the KPIs in `shards` independent key sets (at least one), each under
    /// its own hash tag (`{p}{n}:`), so that on a Valkey Cluster they spread over
    /// the nodes and the parts of a batch apply in parallel. An event goes to the
    /// shard of its key (a sale's product, a tweet's location), whatever bus it
    /// came over, so a product or a location lives in one shard and a resent event
    /// meets its id window. Each shard keeps the positions its events reached; a
    /// stream's resume position is kept in its home shard. Queries merge the
    /// shards. One shard on a standalone server keeps the plain `{p}` keys.
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.make_shards(shards.max(1));
        self
    }

    /// (Re)creates `count` shards with empty mirrors sized for `max_ids` (tagged
    /// keys when there are several, or on a cluster).
    fn make_shards(&mut self, count: usize) {
        self.generation_cap = self.max_ids.div_ceil(count * GENERATIONS).max(1);
        let window = Duration::from_millis(self.window_ms);
        let tagged = count > 1 || self.is_cluster();
        self.shards = (0..count)
            .map(|i| Shard::new(&self.prefix, i, tagged, window, self.generation_cap))
            .collect();
        self.shards_checked = tokio::sync::OnceCell::new();
    }

    /// Loads `kind`'s mirror of `shard` afresh from the whole window, in one
    /// atomic read.
    async fn reload_mirror(&self, shard: &Shard, kind: Kind) -> Result<(), StoreError> {
        let meta = shard.key(&format!("ids:{}", kind.as_str()));
        let mut conn = self.connection().await?;
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
        let mut mirror = shard.mirror(kind);
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

    /// The id window of `kind` in `shard` now (one round trip for its
    /// description, one for the size and memory of its generations).
    async fn window_stats(
        &self,
        shard: &Shard,
        kind: Kind,
        now_ms: u64,
    ) -> Result<WindowStats, StoreError> {
        let meta = shard.key(&format!("ids:{}", kind.as_str()));
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

    /// True on a Valkey Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.connections, Connections::Cluster(..))
    }

    /// The connection every batch is applied on: one, so scripts run in the order
    /// flujo sends them (queries spread over all of them).
    async fn apply_connection(&self) -> Result<Connection, StoreError> {
        match &self.connections {
            Connections::Standalone(managers) => Ok(Connection::Standalone(managers[0].clone())),
            Connections::Cluster(..) => self.connection().await,
        }
    }

    /// The next connection, in turn (a cheap handle on a shared connection); on a
    /// cluster, its one connection, made on first use.
    async fn connection(&self) -> Result<Connection, StoreError> {
        match &self.connections {
            Connections::Standalone(managers) => {
                let i = self.next_connection.fetch_add(1, Ordering::Relaxed) % managers.len();
                Ok(Connection::Standalone(managers[i].clone()))
            }
            Connections::Cluster(cluster) => cluster
                .1
                .get_or_try_init(|| cluster.0.get_async_connection())
                .await
                .cloned()
                .map(Connection::Cluster)
                .map_err(unavailable),
        }
    }

    /// Runs a pipeline (or a single command), retried once when the connection turned
    /// out to be broken: the manager has started a new one, and the retry waits for it.
    /// A server's error reply (e.g. a script error) is not retried.
    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
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

    /// Checks that the store's keys were made with this shard count: the first
    /// write records the count in `{p}shards` (`SET NX`; with `record`, checked
    /// once per store), and a flujo with another count is refused (store
    /// unavailable, naming both), since a product's shard, its positions and its
    /// id window depend on the count. Without `record` (readiness) nothing is
    /// written.
    async fn check_shards(&self, record: bool) -> Result<(), StoreError> {
        if self.shards_checked.initialized() {
            return Ok(());
        }
        let key = format!("{}shards", self.prefix);
        let mut pipe = redis::pipe();
        if record {
            pipe.cmd("SET")
                .arg(&key)
                .arg(self.shards.len())
                .arg("NX")
                .ignore();
        }
        pipe.get(&key);
        let (stored,): (Option<usize>,) = self.query(&pipe).await?;
        match stored {
            Some(n) if n != self.shards.len() => Err(unavailable(format!(
                "the store under {} was made with valkey.shards = {n} (key {key}), not {}: \
                 a product's shard depends on the count, so use {n} or a new prefix",
                self.prefix,
                self.shards.len()
            ))),
            Some(_) => {
                let _ = self.shards_checked.set(());
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// `read` run on every shard (its index and itself) at once, each its own
    /// round trip, concurrently; the answers in shard order.
    async fn on_every_shard<'a, T, F, Fut>(&'a self, read: F) -> Result<Vec<T>, StoreError>
    where
        F: Fn(usize, &'a Shard) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>> + 'a,
    {
        futures::future::try_join_all(self.shards.iter().enumerate().map(|(i, s)| read(i, s))).await
    }

    /// The indices of items grouped by their shard (`shards` gives each item's),
    /// in shard order.
    fn by_shard(&self, shards: impl Iterator<Item = usize>) -> Vec<(usize, Vec<usize>)> {
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, shard) in shards.enumerate() {
            groups.entry(shard).or_default().push(i);
        }
        groups.into_iter().collect()
    }

    /// One page of the ranking kept in the sorted set `suffix` of every shard,
    /// merged: the number of distinct members over all shards, and the page's
    /// members with their scores (added up over the shards that hold them) and
    /// those shards, by score descending, ties by member descending (byte order).
    /// With several shards each is read whole (a ranking holds one member per
    /// product or location), so the merge is exact wherever members live.
    async fn ranked_merged(
        &self,
        suffix: &str,
        page: Page,
    ) -> Result<(usize, Vec<(String, (f64, Vec<usize>))>), StoreError> {
        if let [shard] = &self.shards[..] {
            let (total, items) = self.ranked(&shard.key(suffix), page).await?;
            let items = items
                .into_iter()
                .map(|(member, score)| (member, (score, vec![0])))
                .collect();
            return Ok((total, items));
        }
        let whole = Page {
            offset: 0,
            limit: usize::MAX,
        };
        let mut merged: HashMap<String, (f64, Vec<usize>)> = HashMap::new();
        let replies = self
            .on_every_shard(|_, shard| async move { self.ranked(&shard.key(suffix), whole).await })
            .await?;
        for (s, (_, items)) in replies.into_iter().enumerate() {
            for (member, score) in items {
                let entry = merged.entry(member).or_insert((0.0, Vec::new()));
                entry.0 += score;
                entry.1.push(s);
            }
        }
        let total = merged.len();
        let mut ranked: Vec<(String, (f64, Vec<usize>))> = merged.into_iter().collect();
        ranked.sort_by(|(a, (x, _)), (b, (y, _))| y.total_cmp(x).then_with(|| b.cmp(a)));
        let items = ranked
            .into_iter()
            .skip(page.offset)
            .take(page.limit)
            .collect();
        Ok((total, items))
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
    #[allow(clippy::too_many_arguments)]
    async fn run_batch<E>(
        &self,
        shard: &Shard,
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
            // The key only routes the call to the shard's node on a cluster (the
            // script builds its key names from the prefix, all in the shard's slot).
            invocation
                .key(shard.key(&format!("ids:{}", kind.as_str())))
                .arg(&shard.prefix)
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
            let mut lowest = vec![i64::MAX; streams.len()];
            if !streams.is_empty() {
                for &i in &sending {
                    let (stream, offset) = at.offsets[i];
                    lowest[stream as usize] = lowest[stream as usize].min(offset);
                }
            }
            for low in lowest {
                invocation.arg(low);
            }
            let mut blob = Vec::with_capacity(sending.len() * ID_BYTES);
            for &i in &sending {
                blob.extend_from_slice(&hashes[i].to_le_bytes());
            }
            invocation.arg(sending.len()).arg(blob);
            if !streams.is_empty() {
                // `stream,offset;` per event, read by the script only when a
                // stream's stored position is above its lowest offset.
                let mut offsets = String::with_capacity(sending.len() * 12);
                for &i in &sending {
                    let (stream, offset) = at.offsets[i];
                    let _ = write!(offsets, "{},{offset};", stream + 1);
                }
                invocation.arg(offsets);
            }
            delta(
                &mut invocation,
                sending.iter().map(|&i| &events[i]).collect(),
            );
            // One batch of a kind at a time from this process, so its mirror is
            // always caught up with this process's own writes: the script's tail
            // then holds only other consumers' batches (usually nothing).
            let _turn = shard.turns[kind.index()].lock().await;
            let (verdicts, claimed, point) = {
                let mirror = shard.mirror(kind);
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
            let mut conn = self.apply_connection().await?;
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
                        shard
                            .mirror(kind)
                            .learn(window, own)
                            .map_err(|what| unavailable(format!("batch script answered {what}")))?;
                    }
                    let extra: Vec<String> = match reply.get(2) {
                        Some(redis::Value::Array(items)) => items.iter().filter_map(text).collect(),
                        _ => Vec::new(),
                    };
                    shard.learn_monitored(&extra);
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
                Some("stale") => self.reload_mirror(shard, kind).await?,
                Some("monitored") => shard.forget_monitored(reply[1..].iter().filter_map(text)),
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

    /// Applies `sales` (all of one shard) to `shard`.
    async fn apply_sales_in(
        &self,
        shard: &Shard,
        sales: &[Sale],
        at: &Positions,
    ) -> Result<Applied, StoreError> {
        self.run_batch(
            shard,
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
                    match shard.monitored_of(category) {
                        Some(known) => {
                            let first = c.earliest.as_ref().map_or("", |e| e.product.as_str());
                            let lists: Vec<&str> = c
                                .products
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
                            inv.arg("1").arg("").arg(c.products.items.len());
                            for (product, p) in &c.products.items {
                                push_prices(inv, product, &p.prices);
                            }
                        }
                    }
                    push_quantities(inv, c.products.items.iter().map(|(p, d)| (p, d.quantity)));
                }
                push_quantities(inv, d.products.items.iter().map(|(p, q)| (p, *q)));
            },
        )
        .await
    }

    /// Applies `tweets` (all of one shard) to `shard`.
    async fn apply_tweets_in(
        &self,
        shard: &Shard,
        tweets: &[Tweet],
        at: &Positions,
    ) -> Result<Applied, StoreError> {
        self.run_batch(
            shard,
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

    /// Applies a batch by shard: the whole batch to the one shard when there is
    /// one, else each shard's part (its events by key, see
    /// [`ValkeyStore::with_shards`]) to its shard, the parts in parallel. Every part
    /// is atomic on its own, with the positions its events reached in that shard;
    /// when one fails the batch fails, and its redelivery finds the parts that were
    /// applied by those positions or by id, as after a lost reply. Once every part
    /// is applied, the streams' resume positions move to the batch's end.
    async fn apply_split<E: ShardEvent>(
        &self,
        events: &[E],
        at: &Positions,
    ) -> Result<Applied, StoreError> {
        self.check_shards(true).await?;
        if self.shards.len() == 1 {
            return E::apply(self, &self.shards[0], events, at).await;
        }
        at.check(events.len())?;
        let parts = split(events, at, self.shards.len());
        let results = futures::future::join_all(
            parts
                .iter()
                .map(|part| E::apply(self, &self.shards[part.shard], &part.events, &part.at)),
        )
        .await;
        let mut applied = Applied {
            fresh: vec![false; events.len()],
            replayed: 0,
        };
        for (part, result) in parts.iter().zip(results) {
            let done = result?;
            for (&i, fresh) in part.index.iter().zip(done.fresh) {
                applied.fresh[i] = fresh;
            }
            applied.replayed += done.replayed;
        }
        if !at.is_empty() {
            self.move_resume_positions(&at.streams, &at.next_offsets())
                .await?;
        }
        Ok(applied)
    }

    /// Moves each stream's resume position (`{p}{n}:resume:{stream}` in the
    /// stream's home shard) forward to `next` (never back): where a consumer given
    /// the stream's partition starts when there are several shards.
    async fn move_resume_positions(
        &self,
        streams: &[String],
        next: &[i64],
    ) -> Result<(), StoreError> {
        let home = streams.iter().map(|s| stream_shard(s, self.shards.len()));
        for (shard, index) in self.by_shard(home) {
            let shard = &self.shards[shard];
            let mut invocation = self.resume_script.prepare_invoke();
            for &i in &index {
                invocation
                    .key(shard.key(&format!("resume:{}", streams[i])))
                    .arg(next[i]);
            }
            let mut conn = self.connection().await?;
            let _: () = match invocation.invoke_async(&mut conn).await {
                Err(e) if connection_broken(&e) => invocation.invoke_async(&mut conn).await,
                result => result,
            }
            .map_err(unavailable)?;
        }
        Ok(())
    }
}

/// An event kind as the shards see it: the key that picks its shard, and how a
/// shard's part of a batch is applied.
trait ShardEvent: Clone + Send + Sync + Sized {
    /// The key whose hash picks the event's shard.
    fn shard_key(&self) -> &str;
    /// Applies `events` (all of `shard`) to `shard`.
    fn apply<'s>(
        store: &'s ValkeyStore,
        shard: &'s Shard,
        events: &'s [Self],
        at: &'s Positions,
    ) -> futures::future::BoxFuture<'s, Result<Applied, StoreError>>;
}

impl ShardEvent for Sale {
    fn shard_key(&self) -> &str {
        &self.product_id
    }

    fn apply<'s>(
        store: &'s ValkeyStore,
        shard: &'s Shard,
        events: &'s [Self],
        at: &'s Positions,
    ) -> futures::future::BoxFuture<'s, Result<Applied, StoreError>> {
        Box::pin(store.apply_sales_in(shard, events, at))
    }
}

impl ShardEvent for Tweet {
    fn shard_key(&self) -> &str {
        &self.location
    }

    fn apply<'s>(
        store: &'s ValkeyStore,
        shard: &'s Shard,
        events: &'s [Self],
        at: &'s Positions,
    ) -> futures::future::BoxFuture<'s, Result<Applied, StoreError>> {
        Box::pin(store.apply_tweets_in(shard, events, at))
    }
}

/// The events of one shard in a batch: their indices in the batch, the events,
/// and their positions.
struct Part<E> {
    shard: usize,
    index: Vec<usize>,
    events: Vec<E>,
    at: Positions,
}

/// The home shard of a source stream among `shards` (where its resume position
/// is kept): a Kafka partition `n` (the stream name's last field) has shard
/// `n mod shards`, any other stream the shard of its name's hash.
fn stream_shard(stream: &str, shards: usize) -> usize {
    match stream
        .rsplit(':')
        .next()
        .and_then(|n| n.parse::<u64>().ok())
    {
        Some(n) => (n % shards as u64) as usize,
        None => key_shard(stream, shards),
    }
}

/// The shard of an event's key (a sale's product, a tweet's location): the
/// partition Kafka's keyed producers give it among `shards` partitions (murmur2,
/// as flujo's producer, librdkafka's `murmur2_random` and the Java client hash a
/// key). So when the shard count divides a topic's partition count, every event
/// of partition `p` lives in shard `p mod shards`, and a delivery of one
/// partition is one script call.
pub fn key_shard(key: &str, shards: usize) -> usize {
    (kafka_murmur2(key.as_bytes()) & 0x7fff_ffff) as usize % shards.max(1)
}

/// Kafka's murmur2 of a key (the 32-bit MurmurHash2 with Kafka's seed), as its
/// default partitioner computes it.
fn kafka_murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(&first) = rest.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Splits a batch into its shards' parts, in shard order, each event to the
/// shard of its key (whatever source it came from, so a resend over another
/// bus meets the same id window), with the positions of its events.
fn split<E: ShardEvent>(events: &[E], at: &Positions, shards: usize) -> Vec<Part<E>> {
    let mut parts: Vec<Option<Part<E>>> = (0..shards).map(|_| None).collect();
    for (i, event) in events.iter().enumerate() {
        let shard = key_shard(event.shard_key(), shards);
        let part = parts[shard].get_or_insert_with(|| Part {
            shard,
            index: Vec::new(),
            events: Vec::new(),
            at: Positions::NONE,
        });
        part.index.push(i);
        part.events.push(event.clone());
        if let Some(&(stream, offset)) = at.offsets.get(i) {
            let name = &at.streams[stream as usize];
            let local = match part.at.streams.iter().position(|s| s == name) {
                Some(local) => local,
                None => {
                    part.at.streams.push(name.clone());
                    part.at.streams.len() - 1
                }
            };
            part.at.offsets.push((local as u32, offset));
        }
    }
    parts.into_iter().flatten().collect()
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
/// count, then the members (each starts with its score, `ts` in 19 digits), in
/// [`PricePoint::order`], no two equal.
fn push_prices(inv: &mut redis::ScriptInvocation<'_>, product: &str, points: &[PricePoint]) {
    inv.arg(product).arg(points.len());
    for point in points {
        inv.arg(point.member());
    }
}

/// Quantities per product: count, then product and quantity pairs.
fn push_quantities<'a>(
    inv: &mut redis::ScriptInvocation<'_>,
    quantities: impl ExactSizeIterator<Item = (&'a String, u64)>,
) {
    inv.arg(quantities.len());
    for (product, quantity) in quantities {
        inv.arg(product).arg(quantity);
    }
}

#[tonic::async_trait]
impl Store for ValkeyStore {
    fn name(&self) -> &'static str {
        "valkey"
    }

    async fn apply_sales_at(&self, sales: &[Sale], at: &Positions) -> Result<Applied, StoreError> {
        self.apply_split(sales, at).await
    }

    async fn apply_tweets_at(
        &self,
        tweets: &[Tweet],
        at: &Positions,
    ) -> Result<Applied, StoreError> {
        self.apply_split(tweets, at).await
    }

    async fn positions(&self, streams: &[String]) -> Result<Vec<Option<i64>>, StoreError> {
        let mut values = vec![None; streams.len()];
        // One shard: the position written with the KPIs; several: the resume
        // position, written once every shard's part of a batch was applied.
        let name = if self.shards.len() == 1 {
            "position"
        } else {
            "resume"
        };
        let home = streams.iter().map(|s| stream_shard(s, self.shards.len()));
        for (shard, index) in self.by_shard(home) {
            let shard = &self.shards[shard];
            let keys: Vec<String> = index
                .iter()
                .map(|&i| shard.key(&format!("{name}:{}", streams[i])))
                .collect();
            // MGET by name: the client's `mget` sends GET for a single key.
            let mut pipe = redis::pipe();
            pipe.cmd("MGET").arg(&keys);
            let (got,): (Vec<Option<i64>>,) = self.query(&pipe).await?;
            if got.len() != keys.len() {
                return Err(corrupt(&keys[0], "short MGET reply"));
            }
            for (i, value) in index.into_iter().zip(got) {
                values[i] = value;
            }
        }
        Ok(values)
    }

    async fn sales_kpis(&self) -> Result<SalesKpis, StoreError> {
        let mut total = SaleSums::default();
        let mut categories: Vec<(SaleSums, Option<Earliest>)> =
            Category::ALL.iter().map(|_| Default::default()).collect();
        let replies = self
            .on_every_shard(|_, shard| async move {
                let total_key = shard.key("sales:total");
                let category_keys: Vec<String> = Category::ALL
                    .iter()
                    .map(|c| shard.key(&format!("sales:category:{}", c.as_str())))
                    .collect();
                let mut pipe = redis::pipe();
                pipe.atomic().hgetall(&total_key);
                for key in &category_keys {
                    pipe.hgetall(key);
                }
                let maps: Vec<HashMap<String, String>> = self.query(&pipe).await?;
                Ok((total_key, category_keys, maps))
            })
            .await?;
        for (total_key, category_keys, maps) in replies {
            if maps.len() != 1 + Category::ALL.len() {
                return Err(corrupt(&total_key, "short pipeline reply"));
            }
            let mut maps = maps.into_iter();
            total.add(&Fields {
                key: &total_key,
                map: maps.next().unwrap_or_default(),
            })?;
            for ((sums, earliest), (key, map)) in
                categories.iter_mut().zip(category_keys.iter().zip(maps))
            {
                let fields = Fields { key, map };
                sums.add(&fields)?;
                if let Some(candidate) = Earliest::of(&fields)? {
                    if earliest.as_ref().is_none_or(|e| candidate.before(e)) {
                        *earliest = Some(candidate);
                    }
                }
            }
        }
        let categories = Category::ALL
            .iter()
            .zip(categories)
            .map(|(c, (sums, earliest))| {
                let stats = CategoryStats {
                    stats: sums.stats(),
                    monitored_product: earliest.map(|e| e.product),
                };
                (c.as_str(), stats)
            })
            .collect();
        Ok(SalesKpis {
            total: total.stats(),
            categories,
        })
    }

    async fn tweet_kpis(&self) -> Result<TweetKpis, StoreError> {
        let mut total = TweetSums::default();
        let mut weather: Vec<u64> = vec![0; Weather::ALL.len()];
        let replies = self
            .on_every_shard(|_, shard| async move {
                let total_key = shard.key("tweets:total");
                let weather_key = shard.key("tweets:weather");
                let mut pipe = redis::pipe();
                pipe.atomic().hgetall(&total_key).hgetall(&weather_key);
                let (total, weather): (HashMap<String, String>, HashMap<String, String>) =
                    self.query(&pipe).await?;
                Ok((total_key, weather_key, total, weather))
            })
            .await?;
        for (total_key, weather_key, total_map, weather_map) in replies {
            total.add(&Fields {
                key: &total_key,
                map: total_map,
            })?;
            let weather_fields = Fields {
                key: &weather_key,
                map: weather_map,
            };
            for (n, w) in weather.iter_mut().zip(Weather::ALL) {
                *n += weather_fields.u64(w.as_str())?;
            }
        }
        Ok(TweetKpis {
            total: total.stats(),
            weather: Weather::ALL
                .iter()
                .zip(weather)
                .map(|(w, n)| (w.as_str(), n))
                .collect(),
        })
    }

    async fn product_ranking(
        &self,
        category: Option<Category>,
        page: Page,
    ) -> Result<Ranking<ProductRank>, StoreError> {
        let suffix = match category {
            Some(c) => format!("sales:products:{}", c.as_str()),
            None => "sales:products".to_owned(),
        };
        let (total, ranked) = self.ranked_merged(&suffix, page).await?;
        let items = ranked
            .into_iter()
            .map(|(product_id, (score, _))| {
                Ok(ProductRank {
                    product_id,
                    quantity: score_u64(&suffix, score)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Ranking { total, items })
    }

    async fn location_ranking(&self, page: Page) -> Result<Ranking<LocationRank>, StoreError> {
        let (total, ranked) = self.ranked_merged("tweets:locations", page).await?;
        let mut sums: Vec<TweetSums> = ranked.iter().map(|_| TweetSums::default()).collect();
        // Each location's hash, in every shard that ranks it (one with keyed
        // sharding), the shards read at once.
        let ranked_ref = &ranked;
        let replies = self
            .on_every_shard(|s, shard| async move {
                let here: Vec<usize> = (0..ranked_ref.len())
                    .filter(|&i| ranked_ref[i].1 .1.contains(&s))
                    .collect();
                let keys: Vec<String> = here
                    .iter()
                    .map(|&i| shard.key(&format!("tweets:location:{}", ranked_ref[i].0)))
                    .collect();
                if keys.is_empty() {
                    return Ok((here, keys, Vec::new()));
                }
                let mut pipe = redis::pipe();
                pipe.atomic();
                for k in &keys {
                    pipe.hgetall(k);
                }
                let maps: Vec<HashMap<String, String>> = self.query(&pipe).await?;
                if maps.len() != keys.len() {
                    return Err(corrupt(&keys[0], "short pipeline reply"));
                }
                Ok((here, keys, maps))
            })
            .await?;
        for (here, keys, maps) in replies {
            for ((&i, key), map) in here.iter().zip(&keys).zip(maps) {
                sums[i].add(&Fields { key, map })?;
            }
        }
        let items = ranked
            .into_iter()
            .zip(sums)
            .map(|((location, _), sums)| LocationRank {
                location,
                stats: sums.stats(),
            })
            .collect();
        Ok(Ranking { total, items })
    }

    async fn monitored_prices(
        &self,
        category: Category,
        limit: usize,
    ) -> Result<MonitoredPrices, StoreError> {
        let category_suffix = format!("sales:category:{}", category.as_str());
        let stream_suffix = format!("sales:monitored:{}:newest", category.as_str());
        let newest = limit.min(MONITORED_PRICES) as isize;
        let read_stream = |pipe: &mut redis::Pipeline, shard: &Shard| {
            if newest > 0 {
                pipe.zrange(shard.key(&stream_suffix), -newest, -1);
            }
        };
        // One shard: the product and its stream in one round trip.
        let (product_id, members, stream_key) = if let [shard] = &self.shards[..] {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .hget(shard.key(&category_suffix), "monitored_product");
            read_stream(&mut pipe, shard);
            let mut values: Vec<redis::Value> = self.query(&pipe).await?;
            let members: Vec<String> = if values.len() > 1 {
                redis::from_redis_value(values.pop().unwrap_or(redis::Value::Nil))
                    .map_err(unavailable)?
            } else {
                Vec::new()
            };
            let product: Option<String> =
                redis::from_redis_value(values.pop().unwrap_or(redis::Value::Nil))
                    .map_err(unavailable)?;
            (product, members, shard.key(&stream_suffix))
        } else {
            // Several: the shard of the earliest sale holds the product's stream
            // (a product lives in one shard).
            let mut earliest: Option<(Earliest, usize)> = None;
            let suffix = &category_suffix;
            let replies = self
                .on_every_shard(|_, shard| async move {
                    let key = shard.key(suffix);
                    let mut pipe = redis::pipe();
                    pipe.hgetall(&key);
                    let (map,): (HashMap<String, String>,) = self.query(&pipe).await?;
                    Ok((key, map))
                })
                .await?;
            for (s, (key, map)) in replies.into_iter().enumerate() {
                if let Some(candidate) = Earliest::of(&Fields { key: &key, map })? {
                    if earliest.as_ref().is_none_or(|(e, _)| candidate.before(e)) {
                        earliest = Some((candidate, s));
                    }
                }
            }
            match earliest {
                None => (None, Vec::new(), String::new()),
                Some((e, s)) => {
                    let shard = &self.shards[s];
                    let mut members = Vec::new();
                    if newest > 0 {
                        let mut pipe = redis::pipe();
                        read_stream(&mut pipe, shard);
                        (members,) = self.query(&pipe).await?;
                    }
                    (Some(e.product), members, shard.key(&stream_suffix))
                }
            }
        };
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
        self.check_shards(false).await?;
        if self.is_cluster() {
            // A call in every shard's slot reaches every node that holds a shard.
            for shard in &self.shards {
                let mut pipe = redis::pipe();
                pipe.exists(shard.key("sales:total"));
                let _: (u8,) = self.query(&pipe).await?;
            }
            return Ok(());
        }
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
            let mut sum: Option<WindowStats> = None;
            let stats = self
                .on_every_shard(|_, shard| self.window_stats(shard, kind, now))
                .await?;
            for w in stats {
                sum = Some(match sum {
                    None => w,
                    Some(s) => WindowStats {
                        ids: s.ids + w.ids,
                        evicted: s.evicted + w.evicted,
                        held_ms: s.held_ms.min(w.held_ms),
                        bytes: s.bytes + w.bytes,
                    },
                });
            }
            if let Some(sum) = sum {
                windows.push((kind, sum));
            }
        }
        Ok(windows)
    }
}

/// Sums of one sales scope as stored, added up over shards.
#[derive(Debug, Default)]
struct SaleSums {
    count: u64,
    quantity_sum: u64,
    price_sum: f64,
    revenue: f64,
    price_min: Option<f64>,
    price_max: Option<f64>,
}

impl SaleSums {
    /// Adds one shard's hash of the scope (nothing when it has no sale).
    fn add(&mut self, fields: &Fields<'_>) -> Result<(), StoreError> {
        let count = fields.u64("count")?;
        if count == 0 {
            return Ok(());
        }
        let (price_sum, revenue) = (
            fields.f64("price_sum")?.unwrap_or(0.0),
            fields.f64("revenue")?.unwrap_or(0.0),
        );
        let first = self.count == 0;
        add_stored(first, &mut self.price_sum, price_sum);
        add_stored(first, &mut self.revenue, revenue);
        self.count += count;
        self.quantity_sum += fields.u64("quantity_sum")?;
        self.price_min = min_of(self.price_min, fields.required(count, "price_min")?);
        self.price_max = max_of(self.price_max, fields.required(count, "price_max")?);
        Ok(())
    }

    /// The stats, computed exactly like `MemoryStore`'s.
    fn stats(&self) -> SaleStats {
        let count = self.count;
        let some = |x| (count > 0).then_some(x);
        SaleStats {
            count,
            quantity_sum: self.quantity_sum,
            price_sum: self.price_sum,
            revenue: self.revenue,
            avg_quantity: some(self.quantity_sum as f64 / count as f64),
            avg_price: some(self.price_sum / count as f64),
            price_min: self.price_min,
            price_max: self.price_max,
        }
    }
}

/// Sums of one tweets scope as stored, added up over shards.
#[derive(Debug, Default)]
struct TweetSums {
    count: u64,
    temperature_sum: f64,
    humidity_sum: f64,
    temperature_min: Option<f64>,
    temperature_max: Option<f64>,
}

impl TweetSums {
    /// Adds one shard's hash of the scope (nothing when it has no tweet).
    fn add(&mut self, fields: &Fields<'_>) -> Result<(), StoreError> {
        let count = fields.u64("count")?;
        if count == 0 {
            return Ok(());
        }
        let (temperature_sum, humidity_sum) = (
            fields.f64("temperature_sum")?.unwrap_or(0.0),
            fields.f64("humidity_sum")?.unwrap_or(0.0),
        );
        let first = self.count == 0;
        add_stored(first, &mut self.temperature_sum, temperature_sum);
        add_stored(first, &mut self.humidity_sum, humidity_sum);
        self.count += count;
        self.temperature_min = min_of(
            self.temperature_min,
            fields.required(count, "temperature_min")?,
        );
        self.temperature_max = max_of(
            self.temperature_max,
            fields.required(count, "temperature_max")?,
        );
        Ok(())
    }

    /// The stats, computed exactly like `MemoryStore`'s.
    fn stats(&self) -> TweetStats {
        let count = self.count;
        let some = |x| (count > 0).then_some(x);
        TweetStats {
            count,
            avg_temperature: some(self.temperature_sum / count as f64),
            avg_humidity: some(self.humidity_sum / count as f64),
            temperature_min: self.temperature_min,
            temperature_max: self.temperature_max,
        }
    }
}

/// Adds a shard's stored sum to `sum`: the first shard's as stored, so one shard
/// answers exactly the stored double (a `-0.0` too).
fn add_stored(first: bool, sum: &mut f64, stored: f64) {
    if first {
        *sum = stored;
    } else {
        *sum += stored;
    }
}

/// The smaller of two optional values (the other when one is missing).
fn min_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The larger of two optional values (the other when one is missing).
fn max_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A category's earliest sale as a shard stores it, to pick the monitored product
/// over shards.
#[derive(Debug)]
struct Earliest {
    ts: i64,
    id: String,
    product: String,
}

impl Earliest {
    /// The earliest sale of a category hash, if it has a monitored product (a
    /// product from before the order-independent rule, without `earliest_ts`,
    /// counts as the latest possible).
    fn of(fields: &Fields<'_>) -> Result<Option<Earliest>, StoreError> {
        let Some(product) = fields.map.get("monitored_product") else {
            return Ok(None);
        };
        let ts = match fields.map.get("earliest_ts") {
            Some(ts) => ts
                .parse()
                .map_err(|_| corrupt(fields.key, format!("earliest_ts={ts:?}")))?,
            None => i64::MAX,
        };
        Ok(Some(Earliest {
            ts,
            id: fields.map.get("earliest_id").cloned().unwrap_or_default(),
            product: product.clone(),
        }))
    }

    /// True when this sale is before `other` by (`ts`, `id` in byte order).
    fn before(&self, other: &Earliest) -> bool {
        (self.ts, self.id.as_bytes()) < (other.ts, other.id.as_bytes())
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
        assert_eq!((store.name(), store.is_cluster()), ("valkey", false));
        assert_eq!(store.shards.len(), 1);
        assert_eq!(
            store.shards[0].prefix, "flujo:",
            "one shard keeps the plain keys"
        );
        let sharded = store.with_shards(3);
        assert_eq!(sharded.shards[2].prefix, "flujo:{2}:");
        let cluster = ValkeyStore::connect(
            "valkey+cluster://127.0.0.1:1,127.0.0.1:2",
            "p:",
            Duration::ZERO,
            1,
        )
        .expect("a valid cluster URL needs no server");
        assert!(cluster.is_cluster());
        assert_eq!(cluster.shards.len(), DEFAULT_CLUSTER_SHARDS);
        let one = cluster.with_shards(1);
        assert_eq!(
            one.shards[0].prefix, "p:{0}:",
            "a cluster's keys carry a hash tag"
        );
        assert!(ValkeyStore::connect("http://x", "p:", Duration::ZERO, 1).is_err());
    }

    #[test]
    fn murmur2_is_kafkas() {
        // The values of Kafka's own test of Utils.murmur2 (as signed 32-bit ints).
        for (key, want) in [
            ("21", -973_932_308i32),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            assert_eq!(kafka_murmur2(key.as_bytes()) as i32, want, "{key}");
        }
        // A shard count that divides the partitions: partition p, shard p mod n.
        for key in ["P1", "P2", "Ñandú", "Guatemala", ""] {
            assert_eq!(key_shard(key, 12) % 6, key_shard(key, 6), "{key}");
        }
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
