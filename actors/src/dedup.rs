//! The bounded id window: which event ids were applied lately, remembered
//! compactly so that a retry upstream of the broker (a client resend, a retried
//! forward, a producer retry) changes the KPIs only once.
//!
//! An id is remembered as the 128-bit XXH3 hash of its text, in one of a few
//! *generations*: hash sets opened one after another, each holding the ids first
//! seen while it was the newest. A lookup asks every generation; the oldest
//! generation is dropped whole once all of its ids are older than the window, or
//! when the window holds `max_ids` ids (those are counted as evicted). Each
//! generation is allocated at its full size when opened, so memory is fixed by
//! `max_ids` (about 19.4 bytes per id: 16 for the hash, 1 control byte, at most
//! 7/8 full) and stays flat however long the process runs.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

/// How many generations share `max_ids` (at least; in process up to twice as many,
/// so each generation's table is sized exactly): more means finer-grained expiry
/// and eviction, fewer means fewer lookups per id.
pub const GENERATIONS: usize = 8;

/// The default cap on ids remembered per kind: 2,097,152 ids, about 40 MB of
/// tables per kind once every generation is open.
pub const DEFAULT_MAX_IDS: usize = 2 << 20;

/// The compact form of an id: its 128-bit XXH3 hash.
pub type IdHash = u128;

/// Hashes an id's text into its compact form.
pub fn id_hash(id: &str) -> IdHash {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// Hashes an [`IdHash`] for the set: the key already is a uniform hash, so its
/// low 64 bits are used as they are.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used by `HashSet<u128>`; fold anything else.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type HashSet128 = HashSet<IdHash, BuildHasherDefault<PassThrough>>;

/// One generation: the ids first seen while it was the newest.
#[derive(Debug)]
struct Generation {
    /// When its first id arrived (ms).
    opened_ms: u64,
    /// When its last id arrived (ms).
    newest_ms: u64,
    ids: HashSet128,
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
    /// Bytes allocated for the window's tables.
    pub bytes: usize,
}

/// Ids seen within the last `window`, at most about `max_ids` of them. A window
/// of zero remembers nothing: every id is new.
#[derive(Debug)]
pub struct IdWindow {
    window_ms: u64,
    generation_capacity: usize,
    max_generations: usize,
    generations: VecDeque<Generation>,
    len: usize,
    evicted: u64,
}

impl IdWindow {
    /// A window that remembers ids for `window` and holds at most `max_ids` (a
    /// little less when that splits unevenly into tables: at least 7/8 of it).
    pub fn new(window: Duration, max_ids: usize) -> Self {
        let wanted = max_ids.div_ceil(GENERATIONS).max(1);
        // A table holds 7/8 of a power of two: take the largest such capacity that
        // fits, so no table is allocated bigger than the ids it will hold, and as
        // many generations of it as fit in `max_ids` (8 to 15).
        let generation_capacity = (1..usize::BITS)
            .map(|bits| table_capacity(1 << bits))
            .take_while(|&c| c <= wanted)
            .last()
            .unwrap_or(1);
        let max_generations = (max_ids / generation_capacity).max(GENERATIONS);
        IdWindow {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            generation_capacity,
            max_generations,
            generations: VecDeque::with_capacity(max_generations + 1),
            len: 0,
            evicted: 0,
        }
    }

    /// The most ids held at once.
    pub fn max_ids(&self) -> usize {
        self.generation_capacity * self.max_generations
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
            // Full: the cap, not the clock, decides how far back the window reaches.
            Some(oldest) if self.len + self.generation_capacity > self.max_ids() => {
                now_ms.saturating_sub(oldest.opened_ms)
            }
            _ => self.window_ms,
        }
        .min(self.window_ms)
    }

    /// Bytes the window's tables take (allocated, not only used).
    pub fn allocated_bytes(&self) -> usize {
        // hashbrown: one 16-byte slot and one control byte per bucket.
        self.generations
            .iter()
            .map(|g| buckets_for(g.ids.capacity()) * (std::mem::size_of::<IdHash>() + 1))
            .sum()
    }

    /// True when `hash` was seen within the window (does not record it).
    pub fn contains(&self, hash: IdHash) -> bool {
        // Newest first: a duplicate is most often a recent retry.
        self.generations.iter().rev().any(|g| g.ids.contains(&hash))
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

    /// Records `hash` as seen at `now_ms` unless it already was within the window.
    pub fn insert(&mut self, hash: IdHash, now_ms: u64) -> Seen {
        if self.window_ms == 0 {
            return Seen::New;
        }
        self.expire(now_ms);
        if self.contains(hash) {
            return Seen::Duplicate;
        }
        // A generation takes new ids for window/(G-1): when the (G+1)th opens, the
        // oldest one's newest id is a whole window old and already expired, so only
        // the cap ever drops ids early.
        let slice_ms = self
            .window_ms
            .div_ceil(self.max_generations as u64 - 1)
            .max(1);
        let open_new = match self.generations.back() {
            None => true,
            Some(g) => {
                g.ids.len() >= self.generation_capacity
                    || now_ms.saturating_sub(g.opened_ms) >= slice_ms
            }
        };
        if open_new {
            if self.generations.len() == self.max_generations {
                self.drop_oldest(true);
            }
            self.generations.push_back(Generation {
                opened_ms: now_ms,
                newest_ms: now_ms,
                ids: HashSet128::with_capacity_and_hasher(
                    self.generation_capacity,
                    Default::default(),
                ),
            });
        }
        if let Some(g) = self.generations.back_mut() {
            g.ids.insert(hash);
            g.newest_ms = g.newest_ms.max(now_ms);
            self.len += 1;
        }
        Seen::New
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
        if let Some(g) = self.generations.pop_front() {
            self.len -= g.ids.len();
            if early {
                self.evicted += g.ids.len() as u64;
            }
        }
    }
}

/// The ids a hashbrown table of `buckets` (a power of two) holds: 7/8 of them.
fn table_capacity(buckets: usize) -> usize {
    if buckets < 8 {
        buckets - 1
    } else {
        buckets / 8 * 7
    }
}

/// Buckets hashbrown allocates for a table of `capacity` (7/8 load, power of two).
fn buckets_for(capacity: usize) -> usize {
    if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
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
