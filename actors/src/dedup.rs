//! The bounded id window: which event ids were applied lately, remembered
//! compactly so that a retry upstream of the broker (a client resend, a retried
//! forward, a producer retry) changes the KPIs only once.
//!
//! An id is remembered as the 128-bit XXH3 hash of its text, in one open-addressing
//! table (linear probing, at most 2/3 full) allocated once for `max_ids` ids: 24
//! bytes per id, fixed by the cap however long the process runs. A lookup is one
//! probe sequence, usually within one cache line. Each entry is tagged with its
//! *generation* (the top 16 bits of the stored hash; 112 bits still tell ids
//! apart): generations open one after another, each taking the ids first seen while
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

/// Table slots per id held: at most 2/3 of the slots are used.
const SLOTS_PER_ID: (usize, usize) = (3, 2);
/// The bits of a stored entry that hold its generation's tag.
const TAG_SHIFT: u32 = 112;
const ID_BITS: u128 = (1 << TAG_SHIFT) - 1;

/// The id part of an entry or a hash (the tag bits cleared).
fn id_bits(entry: u128) -> u128 {
    entry & ID_BITS
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
    /// The table: 0 is an empty slot, else an id's hash with its generation's tag.
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

    /// The slot an id's probe sequence starts at.
    fn home(&self, hash: u128) -> usize {
        // The low 64 bits are uniform already; scaled onto the table (no modulo).
        ((u128::from(hash as u64) * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot holding `hash`, or the empty slot its probe sequence ends at.
    fn probe(&self, hash: u128) -> Result<usize, usize> {
        let id = id_bits(hash);
        let mut i = self.home(hash);
        loop {
            match self.slots[i] {
                0 => return Err(i),
                e if id_bits(e) == id => return Ok(i),
                _ => i = if i + 1 == self.slots.len() { 0 } else { i + 1 },
            }
        }
    }

    /// True when `hash` was seen within the window (does not record it).
    pub fn contains(&self, hash: IdHash) -> bool {
        self.window_ms != 0 && self.probe(hash).is_ok()
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
    pub fn warm(&self, hashes: &[IdHash]) {
        if self.window_ms == 0 {
            return;
        }
        let read = hashes
            .iter()
            .fold(0, |acc, &hash| acc ^ self.slots[self.home(hash)]);
        std::hint::black_box(read);
    }

    /// Records `hash` as seen at `now_ms` unless it already was within the window.
    pub fn insert(&mut self, hash: IdHash, now_ms: u64) -> Seen {
        if self.window_ms == 0 {
            return Seen::New;
        }
        self.expire(now_ms);
        if self.probe(hash).is_ok() {
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
        let entry = id_bits(hash) | (u128::from(g.tag) << TAG_SHIFT);
        g.len += 1;
        g.newest_ms = g.newest_ms.max(now_ms);
        // Evicting above may have moved entries: probe again for the empty slot.
        if let Err(empty) = self.probe(hash) {
            self.slots[empty] = entry;
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
        if held.is_none() && self.len == self.max_ids {
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
                        self.slots[slot] = id_bits(hash) | (u128::from(tag) << TAG_SHIFT);
                    }
                }
                Seen::Duplicate
            }
            None => {
                self.generations[at].len += 1;
                if let Err(empty) = self.probe(hash) {
                    self.slots[empty] = id_bits(hash) | (u128::from(tag) << TAG_SHIFT);
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
            let home = self.home(entry);
            let displacement = if i >= home { i - home } else { i + n - home };
            if step - last_empty <= displacement {
                // A gap between its home and here: move it back into the first.
                self.slots[i] = 0;
                if let Err(empty) = self.probe(entry) {
                    self.slots[empty] = entry;
                }
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
    fn a_full_mirror_drops_its_oldest_rather_than_overfill() {
        let mut m = IdWindow::new(Duration::from_secs(60), 100);
        for i in 0..1_000u64 {
            m.insert_in(id_hash(&i.to_string()), i / 50);
            assert!(m.len() <= m.max_ids());
        }
        assert!(m.contains(id_hash("999")));
        assert!(!m.contains(id_hash("0")));
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
