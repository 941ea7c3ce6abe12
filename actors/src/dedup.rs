//! The bounded id window: which event ids were applied lately, remembered
//! compactly so that a retry upstream of the broker (a client resend, a retried
//! forward, a producer retry) changes the KPIs only once.
//!
//! An id is remembered by the XXH3 hash of its text (111 of its 128 bits), in one open-addressing
//! table (linear probing, at most 2/3 full) allocated once for `max_ids` ids: 24
//! bytes per id, fixed by the cap however long the process runs. A lookup is one
//! probe sequence, usually within one cache line. An id in canonical UUID form
//! (what the receiver stamps) is kept instead as one bit of a *chunk* entry that
//! stands for 32 consecutive UUIDs ([`IdKey`]): the ids stamped on one request are
//! consecutive, so a request of 1,000 sales without ids takes 32 entries, not
//! 1,000, and 32 lookups that miss the cache instead of 1,000. Each entry is tagged with its
//! *generation* (the top 16 bits of the entry; the 111 bits of a hash, or a
//! chunk's 79 bits of hash and 32 of ids, still tell ids apart): generations open one after another, each taking the ids first seen while
//! it is the newest, up to `max_ids / GENERATIONS` of them or for a window/(G−1).
//! The oldest generation is dropped whole once all of its ids are older than the
//! window, or when the window holds `max_ids` ids (those are counted as evicted):
//! one pass over the table removes its entries and closes the gaps they leave.

use std::collections::VecDeque;
use std::time::Duration;

/// How many generations share `max_ids` when the window is full: more means
/// finer-grained expiry and eviction (an eviction drops `1/GENERATIONS` of the
/// ids; an id may outlive the window by `1/(GENERATIONS-1)` of it), fewer means
/// fewer passes over the table here. The Valkey store keeps the same number of
/// generations (one string each), and each process applying to it a mirror of
/// them ([`IdWindow::insert_in`]).
pub const GENERATIONS: usize = 4;

/// The default cap on ids remembered per kind: 2,097,152 ids, a 48 MiB table per
/// kind.
pub const DEFAULT_MAX_IDS: usize = 2 << 20;

/// The compact form of an id: its 128-bit XXH3 hash.
pub type IdHash = u128;

/// Hashes an id's text into its compact form.
pub fn id_hash(id: &str) -> IdHash {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// An id as the window keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKey {
    /// Any id, by the hash of its text ([`id_hash`]).
    Hashed(IdHash),
    /// An id in canonical UUID form (lowercase, hyphenated), by its 128 bits:
    /// kept as one bit of the entry of its 32 neighbours.
    Uuid(u128),
}

impl IdKey {
    /// How the window keys `id`: by its bits if it is a UUID in canonical form
    /// (one text per UUID, so no two texts share a key), else by its hash.
    pub fn of(id: &str) -> IdKey {
        match canonical_uuid(id.as_bytes()) {
            Some(bits) => IdKey::Uuid(bits),
            None => IdKey::Hashed(id_hash(id)),
        }
    }
}

impl From<IdHash> for IdKey {
    fn from(hash: IdHash) -> Self {
        IdKey::Hashed(hash)
    }
}

/// The 128 bits of a UUID in canonical text form (hyphens after the 8th, 12th,
/// 16th and 20th digits, lowercase digits), else `None`: ids in that form order
/// as their bits do. Read eight digits at a time ([`hex8`]): every stamped id is
/// read twice per apply (id window and price point).
pub fn canonical_uuid(text: &[u8]) -> Option<u128> {
    let text: &[u8; 36] = text.try_into().ok()?;
    if [text[8], text[13], text[18], text[23]] != [b'-'; 4] {
        return None;
    }
    // Four digits from `at`; eight: the four from `high`, then the four from `low`.
    let four = |at: usize| u32::from_be_bytes([text[at], text[at + 1], text[at + 2], text[at + 3]]);
    let eight = |high, low| hex8(u64::from(four(high)) << 32 | u64::from(four(low)));
    let high = u64::from(eight(0, 4)?) << 32 | u64::from(eight(9, 14)?);
    let low = u64::from(eight(19, 24)?) << 32 | u64::from(eight(28, 32)?);
    Some(u128::from(high) << 64 | u128::from(low))
}

/// Eight lowercase hex digits, one per byte of `x` (the first in its highest), as
/// 32 bits, else `None`: every byte is checked and converted at once.
fn hex8(x: u64) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // ASCII only: adding at most 0x50 to a byte below 0x80 carries into no other.
    if x & HIGH != 0 {
        return None;
    }
    // The high bit of each byte that is at least `floor`.
    let at_least = |floor: u8| (x + ONES * u64::from(0x80 - floor)) & HIGH;
    let digit = at_least(b'0') & !at_least(b'9' + 1);
    let letter = at_least(b'a') & !at_least(b'f' + 1);
    if digit | letter != HIGH {
        return None;
    }
    // A digit's low nibble is its value; a letter's is 1 to 6, and 9 more.
    let nibbles = (x & (ONES * 0x0F)) + (letter >> 7) * 9;
    // One nibble per byte → eight nibbles in the low 32 bits, in order.
    let pairs = (nibbles | nibbles >> 4) & 0x00FF_00FF_00FF_00FF;
    let quads = (pairs | pairs >> 8) & 0x0000_FFFF_0000_FFFF;
    u32::try_from((quads | quads >> 16) & 0xFFFF_FFFF).ok()
}

/// Table slots per id held: at most 2/3 of the slots are used.
const SLOTS_PER_ID: (usize, usize) = (3, 2);
/// The bits of a stored entry that hold its generation's tag.
const TAG_SHIFT: u32 = 112;
const ID_BITS: u128 = (1 << TAG_SHIFT) - 1;
/// Set in a chunk entry: 32 consecutive UUIDs, one bit each in [`CHUNK_BITS`]
/// (the rest of the entry's id bits hash which 32).
const CHUNK_FLAG: u128 = 1 << (TAG_SHIFT - 1);
/// UUIDs per chunk entry, and the entry's bits that say which of them are held.
const CHUNK_IDS: u32 = 32;
const CHUNK_BITS: u128 = (1 << CHUNK_IDS) - 1;

/// The key part of an entry (its tag and, in a chunk, which ids it holds
/// cleared): what a lookup compares.
fn key_of(entry: u128) -> u128 {
    if entry & CHUNK_FLAG == 0 {
        entry & ID_BITS
    } else {
        entry & ID_BITS & !CHUNK_BITS
    }
}

/// The key of an id, and which bit of its chunk entry it is (0: not in a chunk).
fn key_and_bit(key: IdKey) -> (u128, u128) {
    match key {
        IdKey::Hashed(hash) => (hash & ID_BITS & !CHUNK_FLAG, 0),
        IdKey::Uuid(bits) => {
            let chunk =
                xxhash_rust::xxh3::xxh3_128(&(bits >> CHUNK_IDS.trailing_zeros()).to_le_bytes());
            (
                chunk & ID_BITS & !CHUNK_BITS | CHUNK_FLAG,
                1 << (bits % u128::from(CHUNK_IDS)),
            )
        }
    }
}

/// Where an id stands in the table.
struct Lookup {
    /// The slot holding it.
    held: Option<usize>,
    /// The chunk entry of its key tagged with the tag asked for, if any.
    chunk: Option<usize>,
    /// When not held, the empty slot its probe sequence ends at (when held,
    /// the slot holding it).
    empty: usize,
}

/// The generation tag of an entry (never 0: 0 is an empty slot).
fn tag_of(entry: u128) -> u16 {
    (entry >> TAG_SHIFT) as u16
}

/// One generation: the ids first seen while it was the newest.
#[derive(Debug)]
struct Generation {
    /// Its number: generations are numbered in the order they open (by this
    /// window, or by the store a mirror follows).
    number: u64,
    /// Tag of its entries in the table.
    tag: u16,
    /// When its first id arrived (ms).
    opened_ms: u64,
    /// When its last id arrived (ms).
    newest_ms: u64,
    /// Ids it holds.
    len: usize,
}

/// What [`IdWindow::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the window: the event is new and now remembered.
    New,
    /// Seen within the window: a duplicate.
    Duplicate,
}

/// A snapshot of a window, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowStats {
    /// Ids held now.
    pub ids: usize,
    /// Ids forgotten early because the cap was reached, since start.
    pub evicted: u64,
    /// How far back the window reaches now (ms).
    pub held_ms: u64,
    /// Bytes allocated for the window's table.
    pub bytes: usize,
}

/// Ids seen within the last `window`, at most `max_ids` of them. A window of zero
/// remembers nothing: every id is new.
#[derive(Debug)]
pub struct IdWindow {
    window_ms: u64,
    max_ids: usize,
    /// Ids a generation takes at most.
    generation_capacity: usize,
    /// The table: 0 is an empty slot, else an id's hash, or a chunk of UUIDs
    /// ([`IdKey::Uuid`]), with its generation's tag.
    slots: Box<[u128]>,
    generations: VecDeque<Generation>,
    next_tag: u16,
    /// The number the next generation this window opens gets.
    next_number: u64,
    len: usize,
    evicted: u64,
}

impl IdWindow {
    /// A window that remembers ids for `window` and holds at most `max_ids`. The
    /// table is allocated at once (zeroed pages, resident as they fill).
    pub fn new(window: Duration, max_ids: usize) -> Self {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let max_ids = max_ids.max(1);
        // A zero window never stores anything: no table.
        let slots = if window_ms == 0 {
            1
        } else {
            (max_ids * SLOTS_PER_ID.0).div_ceil(SLOTS_PER_ID.1) + 1
        };
        IdWindow {
            window_ms,
            max_ids,
            generation_capacity: max_ids.div_ceil(GENERATIONS),
            slots: vec![0u128; slots].into_boxed_slice(),
            generations: VecDeque::new(),
            next_tag: 1,
            next_number: 1,
            len: 0,
            evicted: 0,
        }
    }

    /// The most ids held at once.
    pub fn max_ids(&self) -> usize {
        self.max_ids
    }

    /// Ids held now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ids forgotten before their window ended, because the window was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// How far back the window really reaches at `now_ms`: the configured window
    /// while it is not full, else the age of its oldest generation (the cap, not
    /// the clock, is then what forgets ids).
    pub fn held_ms(&self, now_ms: u64) -> u64 {
        match self.generations.front() {
            Some(oldest) if self.len + self.generation_capacity > self.max_ids => {
                now_ms.saturating_sub(oldest.opened_ms)
            }
            _ => self.window_ms,
        }
        .min(self.window_ms)
    }

    /// Bytes the window's table takes (allocated, not only used).
    pub fn allocated_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// The slot the probe sequence of a key (or an entry) starts at.
    fn home(&self, key: u128) -> usize {
        // 64 uniform bits of the key (a chunk's lowest 32 say which ids it
        // holds), scaled onto the table (no modulo).
        let uniform = if key & CHUNK_FLAG == 0 {
            key as u64
        } else {
            (key >> CHUNK_IDS) as u64
        };
        ((u128::from(uniform) * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot after `i`, wrapping.
    fn next_slot(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// Where the id `(key, bit)` ([`key_and_bit`]) stands; `chunk` looks for the
    /// chunk entry of its key tagged `tag`. A chunk's key may have several entries
    /// (one per generation that took ids of it), so a chunk id's lookup goes on
    /// to the end of the probe sequence unless it finds the id.
    fn lookup(&self, key: u128, bit: u128, tag: u16) -> Lookup {
        let mut chunk = None;
        let mut i = self.home(key);
        loop {
            let e = self.slots[i];
            if e == 0 {
                return Lookup {
                    held: None,
                    chunk,
                    empty: i,
                };
            }
            if key_of(e) == key {
                if bit == 0 || e & bit != 0 {
                    return Lookup {
                        held: Some(i),
                        chunk,
                        empty: i,
                    };
                }
                if tag_of(e) == tag {
                    chunk = Some(i);
                }
            }
            i = self.next_slot(i);
        }
    }

    /// The slot holding `hash` (an id by its hash), or the empty slot its probe
    /// sequence ends at.
    fn probe(&self, hash: IdHash) -> Result<usize, usize> {
        let (key, _) = key_and_bit(IdKey::Hashed(hash));
        let found = self.lookup(key, 0, 0);
        found.held.ok_or(found.empty)
    }

    /// The first empty slot of the probe sequence of `entry`'s key.
    fn vacancy(&self, entry: u128) -> usize {
        let mut i = self.home(key_of(entry));
        while self.slots[i] != 0 {
            i = self.next_slot(i);
        }
        i
    }

    /// True when the id was seen within the window (does not record it).
    pub fn contains(&self, id: impl Into<IdKey>) -> bool {
        let (key, bit) = key_and_bit(id.into());
        self.window_ms != 0 && self.lookup(key, bit, 0).held.is_some()
    }

    /// The window's state at `now_ms`.
    pub fn stats(&self, now_ms: u64) -> WindowStats {
        WindowStats {
            ids: self.len,
            evicted: self.evicted,
            held_ms: self.held_ms(now_ms),
            bytes: self.allocated_bytes(),
        }
    }

    /// Reads the first slot of each hash's probe sequence, so that inserting them
    /// next finds those cache lines loaded: the table is far larger than the
    /// caches, and these loads overlap where each insert would wait for its own.
    pub fn warm(&self, ids: &[IdKey]) {
        if self.window_ms == 0 {
            return;
        }
        let read = ids
            .iter()
            .fold(0, |acc, &id| acc ^ self.slots[self.home(key_and_bit(id).0)]);
        std::hint::black_box(read);
    }

    /// Records the id as seen at `now_ms` unless it already was within the window.
    pub fn insert(&mut self, id: impl Into<IdKey>, now_ms: u64) -> Seen {
        if self.window_ms == 0 {
            return Seen::New;
        }
        self.expire(now_ms);
        let (key, bit) = key_and_bit(id.into());
        if self.lookup(key, bit, 0).held.is_some() {
            return Seen::Duplicate;
        }
        if self.len == self.max_ids {
            self.drop_oldest(true);
        }
        // A generation takes new ids for window/(G-1): when the (G+1)th opens, the
        // oldest one's newest id is a whole window old and already expired, so only
        // the cap ever drops ids early.
        let slice_ms = self.window_ms.div_ceil(GENERATIONS as u64 - 1).max(1);
        let open_new = self.generations.back().is_none_or(|g| {
            g.len >= self.generation_capacity || now_ms.saturating_sub(g.opened_ms) >= slice_ms
        });
        if open_new {
            let number = self.next_number;
            self.next_number += 1;
            let generation = self.open(number, now_ms);
            self.generations.push_back(generation);
        }
        let Some(g) = self.generations.back_mut() else {
            return Seen::New;
        };
        let tag = g.tag;
        g.len += 1;
        g.newest_ms = g.newest_ms.max(now_ms);
        // Evicting above may have moved entries: look again. A chunk id joins its
        // chunk's entry of this generation if there is one (so it lives as long
        // as this generation, not an older one's entry of the same chunk).
        let found = self.lookup(key, bit, tag);
        match found.chunk {
            Some(slot) => self.slots[slot] |= bit,
            None => self.slots[found.empty] = key | bit | (u128::from(tag) << TAG_SHIFT),
        }
        self.len += 1;
        Seen::New
    }

    /// A new, empty generation numbered `number`, with a tag of its own.
    fn open(&mut self, number: u64, now_ms: u64) -> Generation {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.checked_add(1).unwrap_or(1);
        Generation {
            number,
            tag,
            opened_ms: now_ms,
            newest_ms: now_ms,
            len: 0,
        }
    }

    /// Records `hash` in generation `number` of a window kept elsewhere: this
    /// window is then a *mirror* of another's (the Valkey store's), which decides
    /// when generations open and are dropped, and tells the mirror with
    /// [`IdWindow::forget_before`]. The generation is added if new; nothing
    /// expires by time. An id of a generation older than every one held is not
    /// kept (its generation was dropped). Only if the mirror already holds
    /// `max_ids` ids is its oldest generation dropped first (counted as evicted):
    /// the window it follows holds no more than that.
    pub fn insert_in(&mut self, hash: IdHash, number: u64) -> Seen {
        if self.window_ms == 0 {
            return Seen::New;
        }
        let held = self.probe(hash).ok();
        // Ids moved to newer generations can leave the oldest empty: drop until
        // there is room, not just once.
        while held.is_none() && self.len >= self.max_ids && !self.generations.is_empty() {
            self.drop_oldest(true);
        }
        let Some(at) = self.generation_index(number) else {
            // Older than every generation held: dropped, not kept.
            return if held.is_some() {
                Seen::Duplicate
            } else {
                Seen::New
            };
        };
        let tag = self.generations[at].tag;
        match held {
            Some(slot) => {
                // Held already, maybe in an older generation (dropped in the
                // window it mirrors, then added again): it now lives as long as
                // `number`.
                let old_tag = tag_of(self.slots[slot]);
                if let Some(old) = self.generations.iter().position(|g| g.tag == old_tag) {
                    if self.generations[old].number < number {
                        self.generations[old].len -= 1;
                        self.generations[at].len += 1;
                        self.slots[slot] =
                            key_of(self.slots[slot]) | (u128::from(tag) << TAG_SHIFT);
                    }
                }
                Seen::Duplicate
            }
            None => {
                self.generations[at].len += 1;
                if let Err(empty) = self.probe(hash) {
                    let (key, _) = key_and_bit(IdKey::Hashed(hash));
                    self.slots[empty] = key | (u128::from(tag) << TAG_SHIFT);
                }
                self.len += 1;
                Seen::New
            }
        }
    }

    /// The index of generation `number`, added in its place if new; `None` when
    /// it is older than every generation held (and some are).
    fn generation_index(&mut self, number: u64) -> Option<usize> {
        match self.generations.iter().rposition(|g| g.number <= number) {
            Some(i) if self.generations[i].number == number => Some(i),
            Some(i) => {
                let generation = self.open(number, 0);
                self.generations.insert(i + 1, generation);
                Some(i + 1)
            }
            None if self.generations.is_empty() => {
                let generation = self.open(number, 0);
                self.generations.push_back(generation);
                Some(0)
            }
            None => None,
        }
    }

    /// The number of the generation holding `hash`, if held.
    pub fn generation_of(&self, hash: IdHash) -> Option<u64> {
        if self.window_ms == 0 {
            return None;
        }
        let tag = tag_of(self.slots[self.probe(hash).ok()?]);
        self.generations
            .iter()
            .find(|g| g.tag == tag)
            .map(|g| g.number)
    }

    /// Drops every generation numbered below `number` (a mirror's: the window it
    /// follows dropped them, by age or by its cap).
    pub fn forget_before(&mut self, number: u64) {
        while self.generations.front().is_some_and(|g| g.number < number) {
            self.drop_oldest(false);
        }
    }

    /// Forgets every id at once.
    pub fn clear(&mut self) {
        self.slots.fill(0);
        self.generations.clear();
        self.len = 0;
    }

    /// Forgets generations whose every id is older than the window.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(oldest) = self.generations.front() {
            if now_ms.saturating_sub(oldest.newest_ms) < self.window_ms {
                break;
            }
            self.drop_oldest(false);
        }
    }

    fn drop_oldest(&mut self, early: bool) {
        let Some(g) = self.generations.pop_front() else {
            return;
        };
        self.len -= g.len;
        if early {
            self.evicted += g.len as u64;
        }
        if g.len > 0 {
            self.remove_tag(g.tag);
        }
    }

    /// Removes every entry of the generation tagged `tag`, in one pass that also
    /// closes the gaps: starting after an empty slot, each entry met whose probe
    /// sequence now crosses an empty slot (between its home and where it is) is
    /// put back at the first empty slot of that sequence, which lies before where
    /// it was, so every remaining entry stays reachable. An entry with no gap
    /// before it (most of them) is only read.
    fn remove_tag(&mut self, tag: u16) {
        let n = self.slots.len();
        let Some(start) = self.slots.iter().position(|&e| e == 0) else {
            return; // never: the table is at most 2/3 full
        };
        // Steps from `start` to the newest empty slot passed. No probe sequence
        // reaches back across `start` (it was empty), so an entry's home is
        // always after it.
        let mut last_empty = 0;
        for (step, i) in (start + 1..n).chain(0..=start).enumerate() {
            let step = step + 1;
            let entry = self.slots[i];
            if entry == 0 {
                last_empty = step;
                continue;
            }
            if tag_of(entry) == tag {
                self.slots[i] = 0;
                last_empty = step;
                continue;
            }
            let home = self.home(key_of(entry));
            let displacement = if i >= home { i - home } else { i + n - home };
            if step - last_empty <= displacement {
                // A gap between its home and here: move it back into the first.
                self.slots[i] = 0;
                let empty = self.vacancy(entry);
                self.slots[empty] = entry;
                last_empty = step;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn a_resend_within_the_window_is_a_duplicate() {
        let mut w = IdWindow::new(Duration::from_secs(300), 1_000);
        assert_eq!(w.insert(id_hash("a"), 0), Seen::New);
        assert_eq!(w.insert(id_hash("b"), 10), Seen::New);
        assert_eq!(w.insert(id_hash("a"), 4 * MIN), Seen::Duplicate);
        assert_eq!(w.len(), 2);
        assert_eq!(w.evicted(), 0);
    }

    #[test]
    fn ids_are_forgotten_after_the_window_not_before() {
        let mut w = IdWindow::new(Duration::from_secs(300), 1_000);
        w.insert(id_hash("a"), 0);
        // Just inside the window: still a duplicate.
        assert_eq!(w.insert(id_hash("a"), 5 * MIN - 1), Seen::Duplicate);
        // A generation is dropped when its newest id is a whole window old.
        assert_eq!(w.insert(id_hash("a"), 5 * MIN), Seen::New);
        assert_eq!(w.evicted(), 0, "expiry is not eviction");
    }

    #[test]
    fn the_cap_evicts_the_oldest_first_and_counts_them() {
        let mut w = IdWindow::new(Duration::from_secs(3600), 80);
        let cap = w.max_ids();
        assert!((75..=80).contains(&cap), "{cap}");
        for i in 0..cap * 3 {
            w.insert(id_hash(&i.to_string()), i as u64);
            assert!(w.len() <= cap);
        }
        assert!(w.evicted() > 0);
        // The newest ids are still there, the oldest are gone.
        assert!(w.contains(id_hash(&(cap * 3 - 1).to_string())));
        assert!(!w.contains(id_hash("0")));
        assert_eq!(w.evicted() as usize + w.len(), cap * 3);
        assert!(w.held_ms(cap as u64 * 3) < 3_600_000);
    }

    #[test]
    fn memory_is_fixed_by_the_cap() {
        let mut w = IdWindow::new(Duration::from_secs(3600), 100_000);
        for i in 0..1_000_000u64 {
            w.insert(u128::from(i) * 0x9E37_79B9_7F4A_7C15, i);
        }
        let per_id = w.allocated_bytes() as f64 / w.max_ids() as f64;
        assert!(per_id <= 32.0, "{per_id} bytes per id");
        assert!(w.max_ids() <= 100_000 && w.max_ids() >= 100_000 * 7 / 8);
        assert_eq!(w.len() as u64 + w.evicted(), 1_000_000);
    }

    #[test]
    fn rotation_by_time_never_forgets_an_id_inside_the_window() {
        // 8 s window, a few ids a second (far below the cap).
        let mut w = IdWindow::new(Duration::from_secs(8), 1_000);
        w.insert(id_hash("x"), 0);
        w.insert(id_hash("a"), 999);
        for t in (1_000..=8_000).step_by(100) {
            w.insert(id_hash(&t.to_string()), t);
            assert_eq!(w.evicted(), 0, "nothing is evicted below the cap (t={t})");
        }
        assert_eq!(w.insert(id_hash("a"), 8_000), Seen::Duplicate, "7 s old");
        assert_eq!(w.insert(id_hash("a"), 20_000), Seen::New, "windows later");
    }

    #[test]
    fn after_evictions_exactly_the_newest_ids_are_remembered() {
        // Many evictions, each a pass that moves entries back into the gaps: the
        // ids held must be exactly the newest `len()` inserted, all still found.
        let mut w = IdWindow::new(Duration::from_secs(3600), 1_000);
        let ids: Vec<IdHash> = (0..20_000u64)
            .map(|i| id_hash(&format!("id-{i}")))
            .collect();
        for (i, &h) in ids.iter().enumerate() {
            assert_eq!(w.insert(h, i as u64), Seen::New, "id {i}");
            if i % 997 == 0 || i == ids.len() - 1 {
                let held = w.len();
                assert!(held <= 1_000, "{held}");
                if i >= 1_000 {
                    assert!(held >= 1_000 - 1_000 / GENERATIONS - 1, "after {i}: {held}");
                }
                for (j, &old) in ids[..=i].iter().enumerate() {
                    let want = j + held > i;
                    assert_eq!(w.contains(old), want, "after {i}: id {j} (held {held})");
                }
            }
        }
        assert_eq!(w.evicted() as usize + w.len(), ids.len());
        // A held id is still a duplicate; an evicted one is new again.
        assert_eq!(w.insert(ids[ids.len() - 1], 20_000), Seen::Duplicate);
        assert_eq!(w.insert(ids[0], 20_000), Seen::New);
    }

    #[test]
    fn a_mirror_keeps_the_generations_it_is_told_and_drops_them_when_told() {
        let mut m = IdWindow::new(Duration::from_secs(60), 1_000);
        assert_eq!(m.insert_in(id_hash("a"), 5), Seen::New);
        assert_eq!(m.insert_in(id_hash("c"), 7), Seen::New);
        // Out of order: generation 6 goes between 5 and 7.
        assert_eq!(m.insert_in(id_hash("b"), 6), Seen::New);
        assert_eq!(m.insert_in(id_hash("b"), 7), Seen::Duplicate);
        assert_eq!(m.generation_of(id_hash("b")), Some(7), "moved to the newer");
        assert_eq!(m.generation_of(id_hash("c")), Some(7));
        assert_eq!(m.generation_of(id_hash("nope")), None);
        // Added again in a newer generation: it lives as long as that one.
        assert_eq!(m.insert_in(id_hash("a"), 7), Seen::Duplicate);
        assert_eq!(m.generation_of(id_hash("a")), Some(7));
        // Older than everything held: its generation was dropped, not kept.
        assert_eq!(m.insert_in(id_hash("z"), 4), Seen::New);
        assert!(!m.contains(id_hash("z")));
        assert_eq!(m.len(), 3);
        m.forget_before(6);
        assert!(m.contains(id_hash("a")), "moved to generation 7");
        assert_eq!(m.len(), 3);
        assert!(m.contains(id_hash("b")) && m.contains(id_hash("c")));
        // Added again as the first id of a generation not held yet: moved too.
        assert_eq!(m.insert_in(id_hash("c"), 8), Seen::Duplicate);
        m.forget_before(8);
        assert!(m.contains(id_hash("c")));
        m.forget_before(9);
        assert!(m.is_empty() && !m.contains(id_hash("c")));
        assert_eq!(
            m.evicted(),
            0,
            "dropping what the leader dropped is not eviction"
        );
        m.insert_in(id_hash("d"), 9);
        m.clear();
        assert!(m.is_empty() && !m.contains(id_hash("d")));
        // Nothing expires by time in a mirror: no clock is involved.
        assert_eq!(m.insert_in(id_hash("d"), 10), Seen::New);
        assert_eq!(m.insert_in(id_hash("d"), 10), Seen::Duplicate);
    }

    #[test]
    fn a_mirror_whose_oldest_generation_emptied_still_keeps_to_its_cap() {
        // Re-adding "1" in generation 2 empties generation 1: dropping that one
        // frees nothing, so the mirror must drop on until there is room.
        let mut m = IdWindow::new(Duration::from_secs(60), 2);
        let h = |i: u32| id_hash(&i.to_string());
        m.insert_in(h(1), 1);
        m.insert_in(h(2), 2);
        assert_eq!(m.insert_in(h(1), 2), Seen::Duplicate);
        for i in 3..50 {
            assert_eq!(m.insert_in(h(i), u64::from(i)), Seen::New);
            assert!(m.len() <= m.max_ids(), "{} ids held", m.len());
            assert!(m.contains(h(i)));
        }
    }

    #[test]
    fn a_full_mirror_drops_its_oldest_rather_than_overfill() {
        let mut m = IdWindow::new(Duration::from_secs(60), 100);
        for i in 0..1_000u64 {
            m.insert_in(id_hash(&i.to_string()), i / 50);
            assert!(m.len() <= m.max_ids());
        }
        assert!(m.contains(id_hash("999")));
        assert!(!m.contains(id_hash("0")));
    }

    /// `n` consecutive UUIDs from `base`, as the receiver stamps a request's ids.
    fn stamped(base: u128, n: u128) -> Vec<IdKey> {
        (base..base + n).map(IdKey::Uuid).collect()
    }

    fn entries(w: &IdWindow) -> usize {
        w.slots.iter().filter(|&&e| e != 0).count()
    }

    #[test]
    fn consecutive_uuids_share_entries_and_each_is_remembered() {
        let mut w = IdWindow::new(Duration::from_secs(300), 10_000);
        let base = 0x0192_3456_789a_7bcd_8000_0000_0000_0000u128;
        let ids = stamped(base, 1_000);
        for &id in &ids {
            assert_eq!(w.insert(id, 0), Seen::New);
        }
        assert_eq!(w.len(), 1_000);
        assert_eq!(entries(&w), 1_000usize.div_ceil(32), "one entry per 32");
        for &id in &ids {
            assert_eq!(w.insert(id, 1), Seen::Duplicate);
        }
        // Their neighbours, and the same low bits under another base, are new.
        assert!(!w.contains(IdKey::Uuid(base + 1_000)));
        assert!(!w.contains(IdKey::Uuid(base - 1)));
        assert!(!w.contains(IdKey::Uuid(base + (1 << 24))));
        // The text of a held UUID keys it; another spelling is another id.
        let text = uuid::Uuid::from_u128(base + 7).to_string();
        assert_eq!(IdKey::of(&text), IdKey::Uuid(base + 7));
        assert!(w.contains(IdKey::of(&text)));
        assert!(!w.contains(IdKey::of(&text.to_uppercase())));
        assert_eq!(w.len(), 1_000);
    }

    #[test]
    fn a_chunk_id_lives_as_long_as_the_generation_that_took_it() {
        // 9 s window: a generation takes new ids for 3 s.
        let mut w = IdWindow::new(Duration::from_secs(9), 1_000);
        let base = 0x0192_0000_0000_7000_8000_0000_0000_0000u128;
        assert_eq!(w.insert(IdKey::Uuid(base), 0), Seen::New);
        // The same chunk, three generations later: a second entry of the chunk.
        assert_eq!(w.insert(IdKey::Uuid(base + 1), 8_000), Seen::New);
        assert_eq!(entries(&w), 2);
        assert_eq!(w.insert(IdKey::Uuid(base + 2), 8_001), Seen::New);
        assert_eq!(entries(&w), 2, "joins the newest generation's entry");
        assert_eq!(w.insert(IdKey::Uuid(base), 8_002), Seen::Duplicate);
        // The first generation expires (its id is 9 s old); the later ids stay.
        assert_eq!(w.insert(IdKey::Uuid(base), 9_000), Seen::New);
        assert_eq!(w.insert(IdKey::Uuid(base + 1), 9_001), Seen::Duplicate);
        assert_eq!(w.insert(IdKey::Uuid(base + 2), 9_002), Seen::Duplicate);
        assert_eq!(w.len(), 3);
        assert_eq!(w.evicted(), 0);
    }

    #[test]
    fn with_uuid_runs_and_text_ids_exactly_the_newest_are_remembered() {
        // Runs of stamped UUIDs (chunks shared), lone random UUIDs and text ids,
        // with many evictions (each a pass that moves entries back into gaps):
        // the ids held are exactly the newest `len()` inserted.
        let mut w = IdWindow::new(Duration::from_secs(3600), 600);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut ids = Vec::new();
        while ids.len() < 12_000 {
            match next() % 3 {
                0 => {
                    let base = (u128::from(next()) << 64 | u128::from(next())) & !0xff_ffff;
                    ids.extend(stamped(base, u128::from(next() % 90 + 1)));
                }
                1 => ids.push(IdKey::Uuid(u128::from(next()) << 64 | u128::from(next()))),
                _ => ids.push(IdKey::of(&format!("t-{}", ids.len()))),
            }
        }
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(w.insert(id, i as u64), Seen::New, "id {i}");
            if i % 701 == 0 || i == ids.len() - 1 {
                let held = w.len();
                assert!(held <= 600, "{held}");
                for (j, &old) in ids[..=i].iter().enumerate() {
                    assert_eq!(w.contains(old), j + held > i, "after {i}: id {j}");
                }
            }
        }
        assert_eq!(w.evicted() as usize + w.len(), ids.len());
    }

    #[test]
    fn only_the_canonical_text_of_a_uuid_is_read_as_one() {
        for bits in [0, u128::MAX, 0x0192_3456_789a_7bcd_8ef0_1234_5678_9abc] {
            let text = uuid::Uuid::from_u128(bits).to_string();
            assert_eq!(canonical_uuid(text.as_bytes()), Some(bits), "{text}");
        }
        let mut x = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834u128;
        for _ in 0..1_000 {
            x = x.wrapping_mul(0x2545_f491_4f6c_dd1d).rotate_left(29) ^ 0x5851_f42d;
            let text = uuid::Uuid::from_u128(x).to_string();
            assert_eq!(canonical_uuid(text.as_bytes()), Some(x), "{text}");
        }
        for text in [
            "0192345A-789a-7bcd-8ef0-123456789abc",
            "01923456-789a-7bcd-8ef0-123456789ab",
            "01923456-789a-7bcd-8ef0-123456789abcd",
            "01923456789a-7bcd-8ef0-1-23456789abc",
            "01923456-789a-7bcd-8ef0_123456789abc",
            "0192345g-789a-7bcd-8ef0-123456789abc",
            "01923456-789a-7bcd-8ef0-123456789ab\u{e9}",
            "{01923456-789a-7bcd-8ef0-123456789a}",
            "0192345678 9a7bcd8ef0123456789abcd",
        ] {
            assert_eq!(canonical_uuid(text.as_bytes()), None, "{text}");
        }
        // Every byte value at every position agrees with the uuid crate's reading of
        // the text, kept only when it is the UUID's own lowercase hyphenated form.
        let reference = |text: &[u8]| {
            let id = uuid::Uuid::try_parse_ascii(text).ok()?;
            let mut own = uuid::Uuid::encode_buffer();
            (id.hyphenated().encode_lower(&mut own).as_bytes() == text).then(|| id.as_u128())
        };
        for base in [
            "0192345a-789a-7bcd-8ef0-123456789abc",
            "ffffffff-0000-9999-aaaa-f0f0f0f0f0f0",
        ] {
            for at in 0..36 {
                for byte in 0..=255u8 {
                    let mut text = base.as_bytes().to_vec();
                    text[at] = byte;
                    assert_eq!(
                        canonical_uuid(&text),
                        reference(&text),
                        "{:?}",
                        String::from_utf8_lossy(&text)
                    );
                }
            }
        }
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let mut w = IdWindow::new(Duration::ZERO, 1_000);
        assert_eq!(w.insert(id_hash("a"), 0), Seen::New);
        assert_eq!(w.insert(id_hash("a"), 0), Seen::New);
        assert!(w.is_empty());
    }

    #[test]
    fn hashes_are_stable_and_distinct() {
        assert_eq!(id_hash("0192-abc"), id_hash("0192-abc"));
        assert_ne!(id_hash("0192-abc"), id_hash("0192-abd"));
    }
}
