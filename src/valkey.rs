//! The Valkey KPI store: [`ValkeyStore`] implements the [`Store`] trait over a Valkey
//! (or Redis) server and answers every query with the same values, serialized to the
//! same JSON, as [`flujo_actors::store::MemoryStore`] given the same applied batches.
//!
//! # Key schema
//!
//! Every key starts with the configured prefix `{p}` (default `flujo:`). Hashes,
//! sorted sets and streams only, so Grafana's Redis data source can read them all.
//! Floats are stored as decimal strings that parse back to the exact same `f64`
//! (the shortest of 15, 16 or 17 significant digits that round-trips); counts are
//! integers.
//!
//! | key | type | content |
//! |---|---|---|
//! | `{p}sales:total` | hash | `count`, `quantity_sum`, `price_sum`, `revenue`, `price_min`, `price_max` of all sales |
//! | `{p}sales:category:{category}` | hash | the same fields for one category (`electronics`, `clothing`, `home`, `beauty`), plus `monitored_product` (set by the category's first sale, `HSETNX`) |
//! | `{p}sales:products` | sorted set | member = `product_id`, score = quantity sold over all categories |
//! | `{p}sales:products:{category}` | sorted set | member = `product_id`, score = quantity sold in the category |
//! | `{p}sales:monitored:{category}:prices` | stream | one entry `price <p>` per sale of the category's monitored product, capped at the newest 1,000 (`XADD … MAXLEN = 1000`), oldest first |
//! | `{p}tweets:total` | hash | `count`, `temperature_sum`, `humidity_sum`, `temperature_min`, `temperature_max` of all tweets |
//! | `{p}tweets:weather` | hash | one count field per weather seen (`sunny`, `cloudy`, `rainy`, `foggy`, `snowy`, `stormy`) |
//! | `{p}tweets:locations` | sorted set | member = location, score = tweet count |
//! | `{p}tweets:location:{location}` | hash | the `tweets:total` fields for one location |
//! | `{p}seen:sale:{id}`, `{p}seen:tweet:{id}` | string | dedup marker `1`, expiring after the dedup window (`PX`) |
//!
//! Averages are not stored: queries divide the sums by the count, as `MemoryStore` does.
//! Rankings are read with `ZREVRANGE`: score descending, ties by member descending
//! (byte order), the order shared by every flujo store.
//!
//! # Writes: one Lua script call per batch
//!
//! A batch of sales (or tweets) is one `EVALSHA` of a Lua script (loaded with
//! `SCRIPT LOAD` and retried when the server answers `NOSCRIPT`, e.g. after a
//! restart), so a batch is atomic and costs one round trip. `ARGV` carries the prefix,
//! the dedup window in ms and the events flattened (sales: id, category, product_id,
//! price, quantity; tweets: id, location, weather, temperature, humidity). For each
//! event, in batch order, the script sets the dedup marker with `SET … NX PX window`;
//! when the marker already exists the event is a duplicate and is skipped, otherwise
//! it updates the aggregates. Sums are plain double additions in event order (Lua
//! numbers are IEEE doubles, like `f64`), min/max are compared in Lua; each touched
//! hash is read once (`HMGET`) and written once (`HSET`) per batch. The script returns
//! one `0`/`1` flag per event, which becomes [`Applied::fresh`]. A dedup window of
//! zero disables dedup, as it does in `MemoryStore`.
//!
//! The script builds key names from the prefix instead of receiving them in `KEYS`, so
//! it targets a standalone Valkey (or one with replicas), not a Valkey Cluster.
//!
//! # Reads
//!
//! Each query is one pipelined `MULTI`/`EXEC` round trip (a consistent snapshot),
//! except the location ranking: one round trip for the page of the sorted set, then
//! one pipelined `HGETALL` per location of the page.
//!
//! # Connections
//!
//! A deadpool pool of multiplexed connections. Each of the `pool_size` slots keeps one
//! pooled connection and shares it between concurrent calls, so a call costs no extra
//! round trip (deadpool checks a connection with `PING` each time it hands it out).
//! When a connection breaks (I/O error, timeout), every slot is emptied and the call is
//! retried once on a fresh connection from the pool. So while the server is down calls
//! fail with [`StoreError::Unavailable`], and once it is back they succeed again
//! without restarting flujo. [`ValkeyStore::connect`] does not contact the
//! server: a missing Valkey makes [`Store::ping`] (readiness) fail, never the process.
//!
//! # Limits
//!
//! - A script is atomic in the Valkey sense (no other command runs in between), but a
//!   command that fails half-way through is not rolled back. With the keys as this
//!   module writes them no command can fail; only keys of the wrong type put under
//!   the prefix by hand could cause it.
//! - A batch retried after a lost reply (the connection broke after the script ran)
//!   reports its events as duplicates, exactly like a redelivered batch; the
//!   aggregates are still changed once.
//! - The sign of a zero min/max temperature (`-0.0` vs `0.0`, when both were seen) may
//!   differ from `MemoryStore`, whose `f64::min` leaves it unspecified.

use deadpool_redis::redis::{self, aio::MultiplexedConnection, AsyncConnectionConfig, Script};
use deadpool_redis::{Connection, Manager, Pool, Runtime};
use flujo_actors::event::{Category, Sale, Tweet, Weather};
use flujo_actors::store::{
    Applied, CategoryStats, LocationRank, MonitoredPrices, Page, ProductRank, Ranking, SaleStats,
    SalesKpis, Store, StoreError, TweetKpis, TweetStats, MONITORED_PRICES,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "flujo:";

/// Longest dedup window passed to `PX` (Valkey refuses expiry times near `i64::MAX`).
const MAX_WINDOW_MS: u64 = 1 << 62;
/// Bound on establishing one connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one request (a batch script of 10,000 events takes well under a second).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on waiting for, creating or checking a pooled connection.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// The Lua helpers shared by both batch scripts.
const LUA_COMMON: &str = r#"
local p = ARGV[1]
local window = ARGV[2]

-- The shortest decimal form (15, 16 or 17 significant digits) that parses back to
-- exactly the same double: Lua's tostring keeps only 14 digits.
local function fmt(x)
  for digits = 15, 16 do
    local s = string.format('%.' .. digits .. 'g', x)
    if tonumber(s) == x then return s end
  end
  return string.format('%.17g', x)
end

-- True when the event id was not applied within the window (and marks it applied).
local function first_time(kind, id)
  if window == '0' then return true end
  return redis.call('SET', p .. 'seen:' .. kind .. ':' .. id, '1', 'NX', 'PX', window) ~= false
end

-- Integer increments of sorted-set scores or hash fields, summed in Lua and written
-- once per member at the end of the batch (in first-touched order).
local counters, counter_keys = {}, {}
local function bump(cmd, key, member, delta)
  local c = counters[key]
  if c == nil then
    c = { cmd = cmd, members = {}, delta = {} }
    counters[key] = c
    counter_keys[#counter_keys + 1] = key
  end
  if c.delta[member] == nil then
    c.delta[member] = 0
    c.members[#c.members + 1] = member
  end
  c.delta[member] = c.delta[member] + delta
end
local function flush_counters()
  for _, key in ipairs(counter_keys) do
    local c = counters[key]
    for _, m in ipairs(c.members) do
      local d = string.format('%d', c.delta[m])
      if c.cmd == 'ZINCRBY' then
        redis.call('ZINCRBY', key, d, m)
      else
        redis.call('HINCRBY', key, m, d)
      end
    end
  end
end

-- Aggregate hashes, read once (HMGET) and written once (HSET) per batch.
local sums, sum_keys = {}, {}
local function load(key, fields)
  local s = sums[key]
  if s == nil then
    local v = redis.call('HMGET', key, unpack(fields))
    s = {}
    for i, f in ipairs(fields) do s[f] = tonumber(v[i]) end
    s.count = s.count or 0
    sums[key] = s
    sum_keys[#sum_keys + 1] = key
  end
  return s
end
local function flush_sums(int_fields, float_fields)
  for _, key in ipairs(sum_keys) do
    local s = sums[key]
    local args = {}
    for _, f in ipairs(int_fields) do
      args[#args + 1] = f
      args[#args + 1] = string.format('%d', s[f])
    end
    for _, f in ipairs(float_fields) do
      args[#args + 1] = f
      args[#args + 1] = fmt(s[f])
    end
    redis.call('HSET', key, unpack(args))
  end
end
"#;

/// The sales batch script (after [`LUA_COMMON`]).
const LUA_SALES: &str = r#"
local INTS = { 'count', 'quantity_sum' }
local FLOATS = { 'price_sum', 'revenue', 'price_min', 'price_max' }
local FIELDS = { 'count', 'quantity_sum', 'price_sum', 'revenue', 'price_min', 'price_max' }

local function add(s, price, quantity)
  if s.count == 0 then
    s.price_min = price
    s.price_max = price
    s.quantity_sum = 0
    s.price_sum = 0
    s.revenue = 0
  else
    if price < s.price_min then s.price_min = price end
    if price > s.price_max then s.price_max = price end
  end
  s.count = s.count + 1
  s.quantity_sum = s.quantity_sum + quantity
  s.price_sum = s.price_sum + price
  s.revenue = s.revenue + price * quantity
end

local monitored = {}
local flags = {}
local n = (#ARGV - 2) / 5
for i = 0, n - 1 do
  local b = 3 + i * 5
  local id, category, product = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local price, quantity = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  if first_time('sale', id) then
    flags[i + 1] = '1'
    local category_key = p .. 'sales:category:' .. category
    add(load(p .. 'sales:total', FIELDS), price, quantity)
    add(load(category_key, FIELDS), price, quantity)
    bump('ZINCRBY', p .. 'sales:products', product, quantity)
    bump('ZINCRBY', p .. 'sales:products:' .. category, product, quantity)
    local m = monitored[category]
    if m == nil then
      redis.call('HSETNX', category_key, 'monitored_product', product)
      m = redis.call('HGET', category_key, 'monitored_product')
      monitored[category] = m
    end
    if m == product then
      redis.call('XADD', p .. 'sales:monitored:' .. category .. ':prices',
        'MAXLEN', '=', MONITORED, '*', 'price', fmt(price))
    end
  else
    flags[i + 1] = '0'
  end
end
flush_sums(INTS, FLOATS)
flush_counters()
return table.concat(flags)
"#;

/// The tweets batch script (after [`LUA_COMMON`]).
const LUA_TWEETS: &str = r#"
local INTS = { 'count' }
local FLOATS = { 'temperature_sum', 'humidity_sum', 'temperature_min', 'temperature_max' }
local FIELDS = { 'count', 'temperature_sum', 'humidity_sum', 'temperature_min', 'temperature_max' }

local function add(s, temperature, humidity)
  if s.count == 0 then
    s.temperature_min = temperature
    s.temperature_max = temperature
    s.temperature_sum = 0
    s.humidity_sum = 0
  else
    if temperature < s.temperature_min then s.temperature_min = temperature end
    if temperature > s.temperature_max then s.temperature_max = temperature end
  end
  s.count = s.count + 1
  s.temperature_sum = s.temperature_sum + temperature
  s.humidity_sum = s.humidity_sum + humidity
end

local flags = {}
local n = (#ARGV - 2) / 5
for i = 0, n - 1 do
  local b = 3 + i * 5
  local id, location, weather = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local temperature, humidity = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  if first_time('tweet', id) then
    flags[i + 1] = '1'
    add(load(p .. 'tweets:total', FIELDS), temperature, humidity)
    add(load(p .. 'tweets:location:' .. location, FIELDS), temperature, humidity)
    bump('HINCRBY', p .. 'tweets:weather', weather, 1)
    bump('ZINCRBY', p .. 'tweets:locations', location, 1)
  else
    flags[i + 1] = '0'
  end
end
flush_sums(INTS, FLOATS)
flush_counters()
return table.concat(flags)
"#;

/// The KPI store on a standalone Valkey server (see the module docs for the keys).
pub struct ValkeyStore {
    pool: Pool,
    slots: Vec<tokio::sync::Mutex<Option<Connection>>>,
    next_slot: AtomicUsize,
    prefix: String,
    window_ms: u64,
    sales_script: Script,
    tweets_script: Script,
}

impl std::fmt::Debug for ValkeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValkeyStore")
            .field("prefix", &self.prefix)
            .field("window_ms", &self.window_ms)
            .field("slots", &self.slots.len())
            .field("pool", &self.pool.status())
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
    /// rewritten to `redis://`), with every key under `prefix`, dedup markers kept for
    /// `dedup_window`, and up to `pool_size` connections (at least one).
    ///
    /// Only the URL is checked here; the server is contacted on first use, so a Valkey
    /// that is down shows in [`Store::ping`] rather than failing the start.
    pub fn connect(
        url: &str,
        prefix: &str,
        dedup_window: Duration,
        pool_size: usize,
    ) -> Result<Self, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager = Manager::new_with_config(redis_url(url), config).map_err(unavailable)?;
        let pool_size = pool_size.max(1);
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(unavailable)?;
        let script = |body: &str| {
            Script::new(&format!(
                "local MONITORED = '{MONITORED_PRICES}'\n{LUA_COMMON}\n{body}"
            ))
        };
        Ok(ValkeyStore {
            pool,
            slots: (0..pool_size)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next_slot: AtomicUsize::new(0),
            prefix: prefix.to_owned(),
            window_ms: u64::try_from(dedup_window.as_millis())
                .map_or(MAX_WINDOW_MS, |ms| ms.min(MAX_WINDOW_MS)),
            sales_script: script(LUA_SALES),
            tweets_script: script(LUA_TWEETS),
        })
    }

    /// The key prefix every key of this store starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// A shared connection from the next slot, taking a fresh one from the pool when
    /// the slot is empty (one refill per slot at a time, so the slots never wait on
    /// each other for the pool's `pool_size` connections).
    async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        let i = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(conn) = &*slot {
            return Ok((**conn).clone());
        }
        let fresh = self.pool.get().await.map_err(unavailable)?;
        Ok((**slot.insert(fresh)).clone())
    }

    /// Handles a failed call: when the connection itself failed (I/O error, dropped
    /// connection, timeout), every slot is emptied, since a server restart breaks them
    /// all, and the answer is true: the call may be retried once on a fresh connection.
    /// A server's error reply (e.g. a script error) keeps the connections.
    async fn failed(&self, e: &redis::RedisError) -> bool {
        if !(e.is_io_error() || e.is_timeout() || e.is_unrecoverable_error()) {
            return false;
        }
        for slot in &self.slots {
            let taken = slot.lock().await.take();
            if let Some(conn) = taken {
                // Out of the pool for good (making room for a new one); dropping it
                // closes the connection.
                drop(Connection::take(conn));
            }
        }
        true
    }

    /// Runs a pipeline (or a single command) on a shared connection, retried once on a
    /// fresh connection when the first one turned out to be broken.
    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut retried = false;
        loop {
            let mut conn = self.conn().await?;
            match pipe.query_async(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(e) if self.failed(&e).await && !retried => retried = true,
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// Runs one batch script and turns its `0`/`1` string into flags.
    async fn run_batch(
        &self,
        script: &Script,
        len: usize,
        push: impl Fn(&mut redis::ScriptInvocation<'_>),
    ) -> Result<Applied, StoreError> {
        if len == 0 {
            return Ok(Applied::default());
        }
        let mut invocation = script.prepare_invoke();
        invocation.arg(&self.prefix).arg(self.window_ms);
        push(&mut invocation);
        // A retry after a broken connection is safe: if the first call did run, the
        // retry finds every id seen and changes nothing (as a redelivery would).
        let mut retried = false;
        let flags = loop {
            let mut conn = self.conn().await?;
            match invocation.invoke_async::<String>(&mut conn).await {
                Ok(flags) => break flags,
                Err(e) if self.failed(&e).await && !retried => retried = true,
                Err(e) => return Err(unavailable(e)),
            }
        };
        if flags.len() != len || !flags.bytes().all(|b| b == b'0' || b == b'1') {
            return Err(unavailable(format!(
                "batch script answered {} flags for {len} events",
                flags.len()
            )));
        }
        Ok(Applied {
            fresh: flags.bytes().map(|b| b == b'1').collect(),
        })
    }
}

/// A float as the batch scripts receive it: the shortest form that parses back to the
/// same `f64` (Lua's `tonumber` is `strtod`).
fn lua_float(x: f64) -> String {
    format!("{x:?}")
}

#[tonic::async_trait]
impl Store for ValkeyStore {
    fn name(&self) -> &'static str {
        "valkey"
    }

    async fn apply_sales(&self, sales: &[Sale]) -> Result<Applied, StoreError> {
        self.run_batch(&self.sales_script, sales.len(), |inv| {
            for s in sales {
                inv.arg(&s.id)
                    .arg(s.category.as_str())
                    .arg(&s.product_id)
                    .arg(lua_float(s.price))
                    .arg(s.quantity);
            }
        })
        .await
    }

    async fn apply_tweets(&self, tweets: &[Tweet]) -> Result<Applied, StoreError> {
        self.run_batch(&self.tweets_script, tweets.len(), |inv| {
            for t in tweets {
                inv.arg(&t.id)
                    .arg(&t.location)
                    .arg(t.weather.as_str())
                    .arg(lua_float(t.temperature))
                    .arg(lua_float(t.humidity));
            }
        })
        .await
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
        let mut pipe = redis::pipe();
        pipe.atomic().zcard(&key);
        let Some((start, stop)) = page_bounds(page) else {
            let (total,): (usize,) = self.query(&pipe).await?;
            return Ok(Ranking {
                total,
                items: Vec::new(),
            });
        };
        pipe.zrevrange_withscores(&key, start, stop);
        let (total, page_items): (usize, Vec<(String, f64)>) = self.query(&pipe).await?;
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
        let mut pipe = redis::pipe();
        pipe.atomic().zcard(&key);
        let Some((start, stop)) = page_bounds(page) else {
            let (total,): (usize,) = self.query(&pipe).await?;
            return Ok(Ranking {
                total,
                items: Vec::new(),
            });
        };
        pipe.zrevrange(&key, start, stop);
        let (total, locations): (usize, Vec<String>) = self.query(&pipe).await?;
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
        let stream_key = self.key(&format!("sales:monitored:{}:prices", category.as_str()));
        let mut pipe = redis::pipe();
        pipe.atomic().hget(&category_key, "monitored_product");
        if limit == 0 {
            let (product_id,): (Option<String>,) = self.query(&pipe).await?;
            return Ok(MonitoredPrices {
                product_id,
                prices: Vec::new(),
            });
        }
        pipe.cmd("XREVRANGE")
            .arg(&stream_key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit.min(MONITORED_PRICES));
        type Entries = Vec<(String, HashMap<String, String>)>;
        let (product_id, entries): (Option<String>, Entries) = self.query(&pipe).await?;
        let mut prices = entries
            .iter()
            .map(|(id, fields)| {
                fields
                    .get("price")
                    .and_then(|p| p.parse::<f64>().ok())
                    .ok_or_else(|| corrupt(&stream_key, format!("entry {id}")))
            })
            .collect::<Result<Vec<f64>, StoreError>>()?;
        prices.reverse();
        Ok(MonitoredPrices { product_id, prices })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        let (pong,): (String,) = self.query(&pipe).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(unavailable(format!("PING answered {pong:?}")))
        }
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

    #[test]
    fn connect_checks_only_the_url() {
        let store = ValkeyStore::connect(
            "valkey://127.0.0.1:1",
            DEFAULT_PREFIX,
            Duration::from_secs(1),
            0,
        )
        .expect("a valid URL needs no server");
        assert_eq!((store.name(), store.slots.len()), ("valkey", 1));
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
