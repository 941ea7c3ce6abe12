//! The Valkey KPI store: [`ValkeyStore`] implements the [`Store`] trait over a Valkey
//! (or Redis) server and answers every query with the same values, serialized to the
//! same JSON, as [`flujo_actors::store::MemoryStore`] given the same applied batches.
//!
//! # Key schema
//!
//! Every key starts with the configured prefix `{p}` (default `flujo:`). The KPIs are
//! hashes and sorted sets, so Grafana's Redis data source can read them all.
//! Floats are stored as decimal strings that parse back to the exact same `f64`
//! (the shortest of 15, 16 or 17 significant digits that round-trips); counts are
//! integers.
//!
//! | key | type | content |
//! |---|---|---|
//! | `{p}sales:total` | hash | `count`, `quantity_sum`, `price_sum`, `revenue`, `price_min`, `price_max` of all sales |
//! | `{p}sales:category:{category}` | hash | the same fields for one category (`electronics`, `clothing`, `home`, `beauty`), plus `monitored_product` (the product of the category's earliest sale by (`ts`, `id`)), `earliest_ts` and `earliest_id` (that sale's), `newest_ts` (the newest sale's `ts`) |
//! | `{p}sales:products` | sorted set | member = `product_id`, score = quantity sold over all categories |
//! | `{p}sales:products:{category}` | sorted set | member = `product_id`, score = quantity sold in the category |
//! | `{p}sales:monitored:{category}:newest` | sorted set | the monitored product's newest 1,000 prices by (`ts`, `id`): score = `ts`, member = [`PricePoint::member`] (`ts` in 19 digits, id, NUL, price), trimmed with `ZREMRANGEBYRANK` |
//! | `{p}sales:history:{category}:{tag}` | list | while a category is open (see [`flujo_actors::store`]), the prices of one product it does not monitor (tag = the product's byte length in 4 hex digits, then the product): its stream members oldest first by (`ts`, `id`), trimmed to the newest 1,000 once over 1,250; moved to or from `…:newest` when the monitored product changes, `UNLINK`ed when the category closes |
//! | `{p}tweets:total` | hash | `count`, `temperature_sum`, `humidity_sum`, `temperature_min`, `temperature_max` of all tweets |
//! | `{p}tweets:weather` | hash | one count field per weather seen (`sunny`, `cloudy`, `rainy`, `foggy`, `snowy`, `stormy`) |
//! | `{p}tweets:locations` | sorted set | member = location, score = tweet count |
//! | `{p}tweets:location:{location}` | hash | the `tweets:total` fields for one location |
//! | `{p}ids:sale`, `{p}ids:tweet` | hash | the id window of a kind: `born` (ms it was created), `cap` (ids per generation, fixed at creation), `oldest`, `newest` (generation numbers), `opened:{n}` (ms generation n opened), `evicted` (ids forgotten early because the window was full) |
//! | `{p}ids:sale:{n}`, `{p}ids:tweet:{n}` | string | generation n of the id window: the 16-byte XXH3 hashes of applied ids, one after another (`APPEND`), expiring a window after its last write |
//! | `{p}position:{stream}` | string | the next offset of a source stream (`kafka:{group}:{topic}:{partition}`) not applied yet, written in the batch's script (per shard: the next offset after the stream's events that shard applied) |
//! | `{p}sales:history-tail:{category}` | hash | product → the newest member of its history list, while the category is open (a batch whose prices all follow it is appended with one `RPUSH`) |
//! | `{p}resume:{stream}` | string | with several shards, in the stream's home shard: where a consumer given the partition starts (moved once every shard's part of a batch is applied) |
//!
//! Averages are not stored: queries divide the sums by the count, as `MemoryStore` does.
//! Rankings are read with `ZREVRANGE`: score descending, ties by member descending
//! (byte order), the order shared by every flujo store.
//!
//! # Writes: one Lua script call per batch
//!
//! The scripts are `common.lua` (helpers), `window.lua` (the id window), `batch.lua`
//! (the batch driver), then `sales.lua` or `tweets.lua`. A batch of sales (or
//! tweets) is one `EVALSHA` of a Lua script (loaded with `SCRIPT LOAD` and retried
//! when the server answers `NOSCRIPT`, e.g. after a restart), so a batch is atomic and
//! costs one round trip in the common case.
//!
//! The batch arrives **pre-aggregated**: Rust folds it into per-key changes
//! ([`flujo_actors::store::delta`]) as if every event were new, so the script does
//! work in proportion to the keys the batch touches, not to its events. `ARGV`
//! carries the prefix, the dedup window in ms, the time now, the most ids one window
//! generation holds (used when the window is created), the batch's source streams
//! (their count, their names, per stream the next offset after the whole delivery
//! and the lowest offset of the batch's events), the events (their id hashes in one
//! string, and when the batch has streams their stream and offset in another, read
//! only when a stream's stored position is above its lowest offset), then the
//! delta, and last the point this process's mirror of the id window is complete up
//! to, the generations its duplicates are in, and its verdict on each event
//! (below). The delta is: the total and per-category (per-location) scopes, each category's earliest sale
//! (`ts`, id, product) and newest `ts`, per product its newest 1,000 price points
//! of the batch (members only, each starting with its score, `ts` in 19 digits,
//! and read in place by the script; for a category flujo last saw closed, only those
//! of the monitored product it saw and of the batch's earliest sale's product), and
//! the quantities per product (tweets: counts per weather).
//!
//! **Valkey never searches the id window.** Each process that applies batches keeps
//! a *mirror* of each kind's window (an in-process [`flujo_actors::dedup::IdWindow`]
//! following Valkey's generations, `dedup_max_ids × 24 B`), checks a batch's ids
//! against it before sending, and sends the point its mirror is complete up to
//! (window, generation, length and the 16 bytes before it, so a generation
//! rebuilt under the same number is noticed); a process runs one batch of a kind at a time, so
//! its mirror is always caught up with its own writes. The script checks the batch
//! only against what was appended after that point (the *tail*: batches other
//! consumers applied meanwhile), verifies that the generations holding the ids the
//! mirror found are still there, and answers the tail so the mirror catches up. A
//! mirror whose point is gone (the generation was dropped or expired, the window
//! was deleted) or far behind (a tail over 64 Ki ids) is told `stale` and reloads
//! the whole window in one read. The script first reads the streams' positions
//! (`MGET`), writing nothing. If an event is below its stream's position, or its id was seen,
//! the script answers `retry` with one flag per event (`1` new, `0` a duplicate id,
//! `2` below its position) and flujo sends the batch again without those events
//! (and with a delta folded without them). If a category sent with only some prices
//! is open or monitors another product than flujo saw, the script answers
//! `monitored` with it and flujo sends every price of that category. Otherwise it
//! writes: each touched aggregate hash is read once (`HMGET`) and written once
//! (`HSET`) with the stored sum plus the batch's sum (the same addition
//! `MemoryStore` makes, so both answer the same doubles), min/max combined; each
//! ranking read once (`ZMSCORE`) and written once (`ZADD` of the stored scores
//! plus the batch's, the addition `ZINCRBY` makes); each category's monitored
//! product moves to the batch's earliest sale's product when that is earlier by (`ts`, `id`)
//! (compared byte by byte: Lua's `<` follows the server's collation), moving the
//! prices between the stream and the category's history; one `ZADD` to the
//! monitored product's stream (then `ZREMRANGEBYRANK` to 1,000) and, while the
//! category is open, one `RPUSH` of each other product's prices onto its history
//! list (prices going back before the list's newest pop its tail and push the
//! merge; a list over 1,250 is trimmed back to its newest 1,000); and a category
//! that closes `UNLINK`s its histories.
//! Then the new ids' hashes are appended to the newest generation (one `APPEND`; a
//! new generation opens when it is full or a window/3 old; when the open ones hold
//! the cap, the oldest is dropped whole with `UNLINK`), and last the streams' positions (`SET`, never
//! moving back), so a script failing midway leaves them unwritten. A dedup window of zero disables
//! dedup, as it does in `MemoryStore`.
//!
//! # Shards and Valkey Cluster
//!
//! With several shards ([`ValkeyStore::with_shards`], `valkey.shards`; 12 by default
//! on a `valkey+cluster://` store) every key above gets its shard's hash tag after
//! the prefix (`{p}{n}:…`), so all keys of a shard share a cluster slot. An event
//! goes to the shard of its key (a sale's product, a tweet's location), whatever
//! bus it came over: the partition Kafka's murmur2 gives the key among the
//! shards, so with a shard count dividing the partition count a Kafka delivery
//! of one partition touches one shard; a batch is applied as one script call per shard it touches
//! (in parallel), each part with the positions its events reached in that shard,
//! so each part is atomic and skips what that shard applied already. Once every
//! part is in, each stream's resume position (`{p}{n}:resume:{stream}` in the
//! stream's home shard, partition mod shards) moves forward: a consumer given
//! the partition starts there. The script builds key names from its shard's
//! prefix (all in one slot) and names one key of the shard in `KEYS`, which
//! routes the call to the shard's node on a cluster.
//!
//! Queries read each shard and merge: sums add, min/max combine, rankings add the
//! scores of each member over every shard (each shard read whole), and the
//! monitored product is the earliest (`ts`, `id`) sale over the shards, its
//! stream read from that shard (a product lives in one shard).
//!
//! # Reads
//!
//! Each query is one pipelined `MULTI`/`EXEC` round trip per shard (a consistent
//! snapshot of each shard), except the location ranking: one round trip per shard
//! for the sorted set, then one pipelined `HGETALL` per location of the page; and
//! the monitored prices on several shards: each shard's category hash, then the
//! stream of the shard with the earliest sale.
//!
//! On a cluster, `valkey.pool_size` does not apply: one cluster connection keeps
//! one multiplexed connection per node, routes each call by its first key's slot,
//! follows `MOVED` and reconnects by itself.
//!
//! # Connections
//!
//! `valkey.pool_size` redis [`ConnectionManager`]s, used in turn. Each is one
//! multiplexed connection shared by concurrent calls (no checkout, no extra round
//! trip) that reconnects by itself: when a call finds its connection broken (I/O
//! error, timeout), the manager starts a new one in the background, and the call is
//! retried once on it. So while the server is down calls fail with
//! [`StoreError::Unavailable`], and once it is back they succeed again without
//! restarting flujo. [`ValkeyStore::connect`] does not contact the server (the
//! managers connect on first use): a missing Valkey makes [`Store::ready`]
//! (readiness) fail, never the process.
//!
//! [`ConnectionManager`]: redis::aio::ConnectionManager
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
//!
//! # Layout
//! - `config`: [`ValkeyConfig`], the `[valkey]` section.
//! - `store`: [`ValkeyStore`], the [`Store`] over Valkey; [`reach`], the one-shot
//!   check of `flujo validate`.
//! - `common.lua`, `window.lua`, `batch.lua`, `sales.lua`, `tweets.lua`: the batch scripts.

mod config;
mod store;

pub use config::{ValkeyConfig, DEFAULT_PREFIX};
pub use store::{key_shard, reach, ValkeyStore};

#[cfg(doc)]
use flujo_actors::store::{delta::PricePoint, Applied, Store, StoreError};
