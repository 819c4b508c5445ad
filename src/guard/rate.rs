//! Rate-limiting algorithms, and the in-process (L1) state they run on.
//!
//! Two algorithms, both pure functions of the stored state and an explicit time, so tests drive
//! them with an injected clock:
//!
//! - **Sliding-window log** (`RATE`): at most `limit` units in any interval of `window`
//!   milliseconds. A key keeps a log of (time, cost) entries, oldest first; an entry counts
//!   while `now - t < window`. Nothing is bucketed, so there is no 2× burst across a boundary the
//!   way a fixed-window counter allows. Entries carry the cumulative cost, so the count in the
//!   window and the time at which enough units expire are O(1) and O(log n). Entries of the same
//!   millisecond are merged (exact at the log's resolution), so a key holds at most
//!   `min(limit, window in ms)` entries.
//! - **GCRA** (`CL.THROTTLE`), exactly as redis-cell computes it: emission interval
//!   `period / count` (nanoseconds, truncated), tolerance `interval × (max_burst + 1)`, a stored
//!   theoretical arrival time (TAT) that expires after `new_tat - now` (whole milliseconds, as
//!   Redis's PEXPIRE keeps it), remaining and rounded-up seconds computed as redis-cell does.
//!
//! [`LocalLimiter`] is the L1 state: sharded hash tables (one mutex per shard, no global lock),
//! entries that disappear once their window has passed (lazily, and by an amortized purge), and
//! a bound on the number of keys (`rate.max_keys`) past which the key closest to expiry is
//! evicted. This module knows nothing about L2, configuration or the command layer; the
//! limiter that chooses between L1 and L2 is `guard::limiter`.

use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

const NS_PER_MS: u64 = 1_000_000;
const NS_PER_S: i64 = 1_000_000_000;

/// A sliding-window policy: at most `limit` units in any interval of `window_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub window_ms: u64,
}

/// RATE's answer: `[allowed, limit, remaining, retry_after_ms, reset_after_ms]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: i64,
    /// Units still available in the window after this call.
    pub remaining: i64,
    /// 0 when allowed; when denied, how long until enough units expire to admit this cost, or
    /// -1 when no wait can (the cost exceeds the limit).
    pub retry_after_ms: i64,
    /// How long until the window holds nothing.
    pub reset_after_ms: i64,
}

impl Verdict {
    /// The answer for a key that bypasses limiting: allowed, nothing counted.
    pub fn bypass(limit: u64) -> Verdict {
        Verdict {
            allowed: true,
            limit: sat(limit),
            remaining: sat(limit),
            retry_after_ms: 0,
            reset_after_ms: 0,
        }
    }

    pub fn as_array(&self) -> [i64; 5] {
        [
            self.allowed as i64,
            self.limit,
            self.remaining,
            self.retry_after_ms,
            self.reset_after_ms,
        ]
    }
}

/// Asks the CPU to start loading the cache line at `p` (no effect where there is no such
/// instruction). Never faults, whatever `p` is.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing and cannot fault, even on a bad address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn sat(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The log of one key: entries `(time_ms, cumulative cost)`, oldest first.
#[derive(Debug, Default, Clone)]
pub struct Log {
    entries: VecDeque<(u64, u64)>,
    /// Cumulative cost of everything already expired (the start of the count).
    base: u64,
    /// Copies of the ends of `entries` (time of the oldest; time and cumulative cost of the
    /// newest), so that a call which expires nothing reads no entry: the entries of many keys
    /// do not fit in the CPU caches, the slots do.
    first_t: u64,
    last_t: u64,
    top: u64,
    /// The window of the last call, for deciding when the whole key has expired.
    window_ms: u64,
}

impl Log {
    /// Drops entries that left the window ending at `now`.
    fn expire(&mut self, now: u64, window_ms: u64) {
        if self.entries.is_empty() || now.saturating_sub(self.first_t) < window_ms {
            return;
        }
        while let Some(&(t, cum)) = self.entries.front() {
            if now.saturating_sub(t) < window_ms {
                self.first_t = t;
                break;
            }
            self.base = cum;
            self.entries.pop_front();
        }
    }

    /// Units counted in the window (after `expire`).
    fn used(&self) -> u64 {
        self.top - self.base
    }

    /// The log's clock never runs backwards, so entries stay ordered.
    fn clamp(&self, now: u64) -> u64 {
        match self.entries.is_empty() {
            true => now,
            false => now.max(self.last_t),
        }
    }

    /// What a call of `cost` at `now` would get, without recording it.
    pub fn verdict(&mut self, now: u64, w: Window, cost: u64) -> Verdict {
        let now = self.clamp(now);
        self.expire(now, w.window_ms);
        let used = self.used();
        if cost <= w.limit && used + cost <= w.limit {
            return Verdict {
                allowed: true,
                limit: sat(w.limit),
                remaining: sat(w.limit - used - cost),
                retry_after_ms: 0,
                reset_after_ms: sat(w.window_ms),
            };
        }
        let retry = if cost > w.limit {
            -1
        } else {
            // The oldest entries must expire until `need` units are freed.
            let need = used + cost - w.limit;
            let i = self
                .entries
                .partition_point(|&(_, cum)| cum - self.base < need);
            match self.entries.get(i) {
                Some(&(t, _)) => sat(t + w.window_ms - now),
                None => sat(w.window_ms),
            }
        };
        let reset = match self.entries.is_empty() {
            true => 0,
            false => sat(self.last_t + w.window_ms - now),
        };
        Verdict {
            allowed: false,
            limit: sat(w.limit),
            remaining: sat(w.limit.saturating_sub(used)),
            retry_after_ms: retry,
            reset_after_ms: reset,
        }
    }

    /// Records an admitted call (after `verdict` said it is allowed).
    pub fn record(&mut self, now: u64, w: Window, cost: u64) {
        let now = self.clamp(now);
        self.window_ms = w.window_ms;
        self.top += cost;
        if self.entries.is_empty() {
            self.first_t = now;
        } else if self.last_t == now {
            // Same millisecond: one entry (what bounds a key's entries by the window's length).
            if let Some((_, cum)) = self.entries.back_mut() {
                *cum = self.top;
            }
            return;
        }
        self.last_t = now;
        self.entries.push_back((now, self.top));
    }

    /// Checks a call and records it when allowed.
    pub fn check(&mut self, now: u64, w: Window, cost: u64) -> Verdict {
        let v = self.verdict(now, w, cost);
        if v.allowed {
            self.record(now, w, cost);
        }
        v
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the last entry leaves the window (ms).
    fn expires_at(&self) -> u64 {
        match self.entries.is_empty() {
            true => 0,
            false => self.last_t.saturating_add(self.window_ms),
        }
    }
}

/// CL.THROTTLE's parameters, validated and converted to nanoseconds as redis-cell does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// `max_burst + 1`.
    pub limit: i64,
    /// `period / count`, nanoseconds (truncated).
    pub emission_ns: i64,
    /// `emission × (max_burst + 1)`: how far ahead of now the TAT may run.
    pub tolerance_ns: i64,
    /// `emission × quantity`.
    pub increment_ns: i64,
}

impl Cell {
    /// Validates `CL.THROTTLE key max_burst count period [quantity]`. The errors are the reply
    /// texts. Where redis-cell computes nonsense (negative rates or bursts, overflowing
    /// durations) these are refused instead.
    pub fn new(
        max_burst: i64,
        count: i64,
        period_s: i64,
        quantity: i64,
    ) -> Result<Cell, &'static str> {
        const RANGE: &str = "ERR value is not an integer or out of range";
        if max_burst < 0 {
            return Err("ERR max_burst must not be negative");
        }
        if count <= 0 || period_s <= 0 {
            return Err(
                "ERR count per period and period must be positive (zero rates are not supported)",
            );
        }
        if quantity < 0 {
            return Err("ERR quantity must not be negative");
        }
        let period_ns = period_s.checked_mul(NS_PER_S).ok_or(RANGE)?;
        let emission_ns = (period_ns as f64 / count as f64) as i64;
        if emission_ns < 1000 {
            return Err("ERR rate too high: period / count must be at least 1 microsecond");
        }
        let limit = max_burst.checked_add(1).ok_or(RANGE)?;
        Ok(Cell {
            limit,
            emission_ns,
            tolerance_ns: emission_ns.checked_mul(limit).ok_or(RANGE)?,
            increment_ns: emission_ns.checked_mul(quantity).ok_or(RANGE)?,
        })
    }
}

/// CL.THROTTLE's answer: `[limited, limit, remaining, retry_after_s, reset_after_s]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    pub limited: bool,
    pub limit: i64,
    pub remaining: i64,
    /// -1 when allowed (or when no wait can admit the quantity).
    pub retry_after_s: i64,
    pub reset_after_s: i64,
}

impl Throttle {
    pub fn as_array(&self) -> [i64; 5] {
        [
            self.limited as i64,
            self.limit,
            self.remaining,
            self.retry_after_s,
            self.reset_after_s,
        ]
    }
}

/// A duration in whole seconds, rounded up when it has a millisecond part — redis-cell's
/// rounding, so that a caller never retries too early.
pub fn cell_seconds(ns: i64) -> i64 {
    let whole = ns / NS_PER_S;
    let sub_ms = (ns % NS_PER_S) / NS_PER_MS as i64;
    if sub_ms > 0 {
        whole + 1
    } else {
        whole
    }
}

/// What to store after a GCRA decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TatUpdate {
    /// Denied: the state stays as it was.
    Keep,
    /// Store `tat`, expiring `ttl_ms` whole milliseconds from now (0: remove the key).
    Set { tat: i64, ttl_ms: i64 },
}

/// One GCRA decision at `now` (ns) with the stored TAT (`None` when the key is absent).
pub fn gcra(c: &Cell, tat: Option<i64>, now: i64) -> (Throttle, TatUpdate) {
    let tat = tat.unwrap_or(now);
    let new_tat = now.max(tat).saturating_add(c.increment_ns);
    let diff = now - (new_tat - c.tolerance_ns);
    let (limited, retry_ns, ttl, update) = if diff < 0 {
        let retry = if c.increment_ns <= c.tolerance_ns {
            -diff
        } else {
            -NS_PER_S
        };
        (true, retry, tat - now, TatUpdate::Keep)
    } else {
        let ttl = new_tat - now;
        let update = TatUpdate::Set {
            tat: new_tat,
            ttl_ms: ttl / NS_PER_MS as i64,
        };
        (false, -NS_PER_S, ttl, update)
    };
    let next = c.tolerance_ns - ttl;
    let remaining = if next > -c.emission_ns {
        ((next / 1000) as f64 / (c.emission_ns / 1000) as f64) as i64
    } else {
        0
    };
    let reply = Throttle {
        limited,
        limit: c.limit,
        remaining,
        retry_after_s: cell_seconds(retry_ns),
        reset_after_s: cell_seconds(ttl),
    };
    (reply, update)
}

/// Where a key lives: RATE's keys, the QUERY limits' keys and CL.THROTTLE's keys never meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Rate = 1,
    Query = 2,
    Cell = 3,
}

/// The current time in nanoseconds on some monotonic scale (tests inject their own).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A monotonic clock in nanoseconds since the limiter started.
pub fn monotonic() -> Clock {
    let start = quanta::Instant::now();
    Arc::new(move || quanta::Instant::now().duration_since(start).as_nanos() as u64)
}

enum State {
    Log(Log),
    /// GCRA: the TAT and when the key expires (ns).
    Tat {
        tat: i64,
        expires: i64,
    },
}

/// Keys up to this long live inside the slot (no second allocation, no second cache miss).
type Key = smallvec::SmallVec<[u8; 24]>;

struct Slot {
    space: Space,
    key: Key,
    state: State,
}

impl Slot {
    /// When the slot holds nothing any more (ns).
    fn expires_ns(&self) -> u64 {
        match &self.state {
            State::Log(l) => l.expires_at().saturating_mul(NS_PER_MS),
            State::Tat { expires, .. } => (*expires).max(0) as u64,
        }
    }
}

/// A table entry: a slot and its hash, aligned on a cache line, so that the entry (120 bytes)
/// spans two lines, which the CPU fetches together, instead of straddling three.
#[repr(align(64))]
struct Bucket(u64, Slot);

const SHARDS: usize = 64;
/// Keys looked at when one must be evicted.
const EVICTION_SAMPLE: usize = 8;

struct Shard {
    table: HashTable<Bucket>,
    /// `window` calls admitted and denied here (counted under the shard's lock: an atomic
    /// increment after it would wait for the log's stores to drain, on every call).
    allowed: u64,
    denied: u64,
    /// Purge expired slots when the table reaches this size (doubles after each purge, so the
    /// purge costs O(1) per insert).
    purge_at: usize,
    inserts_since_purge: usize,
}

impl Shard {
    fn find(&mut self, hash: u64, space: Space, key: &[u8]) -> Option<&mut Slot> {
        self.table
            .find_mut(hash, |Bucket(h, s)| {
                *h == hash && s.space == space && s.key[..] == *key
            })
            .map(|Bucket(_, s)| s)
    }
}

/// The L1 limiter state: see the module documentation.
pub struct LocalLimiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::RandomState,
    clock: Clock,
    cap_per_shard: usize,
    keys: AtomicUsize,
    pub evicted: AtomicU64,
}

impl LocalLimiter {
    pub fn new(max_keys: usize) -> LocalLimiter {
        LocalLimiter::with_clock(max_keys, monotonic())
    }

    pub fn with_clock(max_keys: usize, clock: Clock) -> LocalLimiter {
        LocalLimiter {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        table: HashTable::new(),
                        allowed: 0,
                        denied: 0,
                        purge_at: 64,
                        inserts_since_purge: 0,
                    })
                })
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            clock,
            cap_per_shard: max_keys.div_ceil(SHARDS).max(1),
            keys: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn now_ns(&self) -> u64 {
        (self.clock)()
    }

    /// Keys held (some may have expired and not been purged yet).
    pub fn keys(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    fn hash(&self, space: Space, key: &[u8]) -> u64 {
        self.hasher.hash_one((space as u8, key))
    }

    fn shard_of(hash: u64) -> usize {
        (hash >> 48) as usize % SHARDS
    }

    fn lock(&self, hash: u64) -> MutexGuard<'_, Shard> {
        self.shards[Self::shard_of(hash)].lock()
    }

    /// Makes room for one more slot: purge expired slots (amortized), then evict the sampled
    /// slot closest to expiry if the shard is still at its bound.
    fn make_room(&self, shard: &mut Shard, now_ns: u64) {
        let len = shard.table.len();
        let at_cap = len >= self.cap_per_shard;
        if len >= shard.purge_at || at_cap && shard.inserts_since_purge >= self.cap_per_shard / 2 {
            shard.table.retain(|Bucket(_, s)| s.expires_ns() > now_ns);
            let left = shard.table.len();
            self.keys.fetch_sub(len - left, Ordering::Relaxed);
            shard.purge_at = (left * 2).max(64);
            shard.inserts_since_purge = 0;
        }
        if shard.table.len() >= self.cap_per_shard {
            let victim = shard
                .table
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|Bucket(_, s)| s.expires_ns())
                .map(|Bucket(h, s)| (*h, s.space, s.key.clone()));
            if let Some((h, space, key)) = victim {
                if let Ok(e) = shard.table.find_entry(h, |Bucket(g, s)| {
                    *g == h && s.space == space && s.key == key
                }) {
                    e.remove();
                    self.keys.fetch_sub(1, Ordering::Relaxed);
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn insert(&self, shard: &mut Shard, hash: u64, slot: Slot, now_ns: u64) {
        self.make_room(shard, now_ns);
        shard.inserts_since_purge += 1;
        shard
            .table
            .insert_unique(hash, Bucket(hash, slot), |Bucket(h, _)| *h);
        self.keys.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts loading the table entry a coming `window` call on `key` will read, without
    /// waiting for it: the candidate entries (those whose hash tag matches) are prefetched,
    /// not read. With `prefetch_log` a request later, a pipelined call finds its entry and
    /// its log's records in the cache (a key's entry and records are cold when the keys are
    /// many: each RATE call would otherwise wait for two or three loads from memory in turn).
    pub fn prefetch(&self, space: Space, key: &[u8]) {
        let hash = self.hash(space, key);
        let shard = self.lock(hash);
        let _ = shard.table.find(hash, |b| {
            let p = b as *const Bucket as *const u8;
            prefetch(p);
            prefetch(p.wrapping_add(64));
            false
        });
    }

    /// The second step, once `prefetch` has loaded the entry: starts loading the two log
    /// records the call will touch (the oldest, which it may expire, and the next free one,
    /// which it writes).
    pub fn prefetch_log(&self, space: Space, key: &[u8]) {
        let hash = self.hash(space, key);
        let mut shard = self.lock(hash);
        if let Some(Slot {
            state: State::Log(log),
            ..
        }) = shard.find(hash, space, key)
        {
            if let (Some(front), Some(back)) = (log.entries.front(), log.entries.back()) {
                prefetch(front as *const (u64, u64) as *const u8);
                prefetch((back as *const (u64, u64) as *const u8).wrapping_add(16));
            }
        }
    }

    /// One sliding-window call: checks `cost` against `w` and records it when allowed (and
    /// counts the verdict: see `verdicts`).
    pub fn window(&self, space: Space, key: &[u8], w: Window, cost: u64) -> Verdict {
        let now_ns = self.now_ns();
        let now = now_ns / NS_PER_MS;
        let hash = self.hash(space, key);
        let mut shard = self.lock(hash);
        let v = match shard.find(hash, space, key) {
            Some(Slot {
                state: State::Log(log),
                ..
            }) => log.check(now, w, cost),
            _ => {
                let mut log = Log::default();
                let v = log.check(now, w, cost);
                if v.allowed {
                    let slot = Slot {
                        space,
                        key: Key::from_slice(key),
                        state: State::Log(log),
                    };
                    self.insert(&mut shard, hash, slot, now_ns);
                }
                v
            }
        };
        match v.allowed {
            true => shard.allowed += 1,
            false => shard.denied += 1,
        }
        v
    }

    /// How many `window` calls were admitted and denied.
    pub fn verdicts(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(a, d), s| {
            let s = s.lock();
            (a + s.allowed, d + s.denied)
        })
    }

    /// Several windows checked together (QUERY's per-user and global limits): the call is
    /// recorded in every window only if every window admits it, atomically (the shards
    /// involved are locked in index order). Returns each window's verdict.
    pub fn windows(&self, checks: &[(Space, &[u8], Window)], cost: u64) -> Vec<Verdict> {
        let now_ns = self.now_ns();
        let now = now_ns / NS_PER_MS;
        let hashes: Vec<u64> = checks.iter().map(|(s, k, _)| self.hash(*s, k)).collect();
        let mut order: Vec<usize> = hashes.iter().map(|&h| Self::shard_of(h)).collect();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> =
            order.iter().map(|&i| (i, self.shards[i].lock())).collect();
        fn shard_for<'a>(
            guards: &'a mut [(usize, MutexGuard<'_, Shard>)],
            h: u64,
        ) -> &'a mut Shard {
            let i = LocalLimiter::shard_of(h);
            let at = guards.iter().position(|(j, _)| *j == i).unwrap_or(0);
            &mut guards[at].1
        }
        let mut verdicts = Vec::with_capacity(checks.len());
        for (&(space, key, w), &h) in checks.iter().zip(&hashes) {
            let v = match shard_for(&mut guards, h).find(h, space, key) {
                Some(Slot {
                    state: State::Log(log),
                    ..
                }) => log.verdict(now, w, cost),
                _ => Log::default().verdict(now, w, cost),
            };
            verdicts.push(v);
        }
        if verdicts.iter().all(|v| v.allowed) {
            for (&(space, key, w), &h) in checks.iter().zip(&hashes) {
                let shard = shard_for(&mut guards, h);
                match shard.find(h, space, key) {
                    Some(Slot {
                        state: State::Log(log),
                        ..
                    }) => log.record(now, w, cost),
                    _ => {
                        let mut log = Log::default();
                        log.record(now, w, cost);
                        let slot = Slot {
                            space,
                            key: Key::from_slice(key),
                            state: State::Log(log),
                        };
                        self.insert(shard, h, slot, now_ns);
                    }
                }
            }
        }
        verdicts
    }

    /// One CL.THROTTLE call.
    pub fn throttle(&self, key: &[u8], c: &Cell) -> Throttle {
        let now = self.now_ns().min(i64::MAX as u64) as i64;
        let hash = self.hash(Space::Cell, key);
        let mut shard = self.lock(hash);
        let slot = shard.find(hash, Space::Cell, key);
        let stored = match &slot {
            Some(Slot {
                state: State::Tat { tat, expires },
                ..
            }) if *expires > now => Some(*tat),
            _ => None,
        };
        let (reply, update) = gcra(c, stored, now);
        if let TatUpdate::Set { tat, ttl_ms } = update {
            let state = State::Tat {
                tat,
                expires: now.saturating_add(ttl_ms.saturating_mul(NS_PER_MS as i64)),
            };
            match slot {
                Some(s) => s.state = state,
                None if ttl_ms > 0 => {
                    let slot = Slot {
                        space: Space::Cell,
                        key: Key::from_slice(key),
                        state,
                    };
                    self.insert(&mut shard, hash, slot, now as u64);
                }
                None => {}
            }
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicU64;

    /// A clock the test moves by hand (ms).
    fn manual() -> (Arc<AtomicU64>, Clock) {
        let t = Arc::new(AtomicU64::new(0));
        let c = t.clone();
        (t, Arc::new(move || c.load(Ordering::SeqCst) * NS_PER_MS))
    }

    /// The reference model of the sliding window: every admitted call, kept forever; the count
    /// at `now` sums the calls with `now - t < window`.
    struct Model {
        admitted: Vec<(u64, u64)>,
    }

    impl Model {
        fn used(&self, now: u64, w: Window) -> u64 {
            self.admitted
                .iter()
                .filter(|(t, _)| now - t < w.window_ms)
                .map(|(_, c)| c)
                .sum()
        }

        /// The smallest wait after which `cost` fits, found by trying every expiry instant.
        fn retry(&self, now: u64, w: Window, cost: u64) -> i64 {
            if cost > w.limit {
                return -1;
            }
            let mut waits: Vec<u64> = self
                .admitted
                .iter()
                .filter(|(t, _)| now - t < w.window_ms)
                .map(|(t, _)| t + w.window_ms - now)
                .collect();
            waits.sort_unstable();
            waits
                .into_iter()
                .find(|&d| self.used(now + d, w) + cost <= w.limit)
                .map_or(-1, |d| d as i64)
        }

        fn reset(&self, now: u64, w: Window) -> i64 {
            self.admitted
                .iter()
                .filter(|(t, _)| now - t < w.window_ms)
                .map(|(t, _)| (t + w.window_ms - now) as i64)
                .max()
                .unwrap_or(0)
        }
    }

    /// Calls as (milliseconds since the previous call, cost).
    fn calls() -> impl Strategy<Value = Vec<(u64, u64)>> {
        prop::collection::vec((0u64..400, 1u64..6), 1..200)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        // Feature: db-cache-optimization, Property 29: Sliding Window Rate Limiting
        /// The log admits exactly what the model admits, with the same remaining, retry and
        /// reset figures, and never more than `limit` units in any interval of `window`.
        #[test]
        fn sliding_window_matches_the_reference_model(
            limit in 1u64..20,
            window_ms in 1u64..2000,
            calls in calls(),
        ) {
            let w = Window { limit, window_ms };
            let (clock, c) = manual();
            let l1 = LocalLimiter::with_clock(1000, c);
            let mut model = Model { admitted: Vec::new() };
            let mut now = 1_000_000u64;
            for (dt, cost) in calls {
                now += dt;
                clock.store(now, Ordering::SeqCst);
                let got = l1.window(Space::Rate, b"k", w, cost);
                let used = model.used(now, w);
                let allowed = used + cost <= limit;
                prop_assert_eq!(got.allowed, allowed, "at {} used {} cost {}", now, used, cost);
                if allowed {
                    model.admitted.push((now, cost));
                    prop_assert_eq!(got.remaining, (limit - used - cost) as i64);
                    prop_assert_eq!(got.retry_after_ms, 0);
                    prop_assert_eq!(got.reset_after_ms, window_ms as i64);
                } else {
                    prop_assert_eq!(got.remaining, limit.saturating_sub(used) as i64);
                    prop_assert_eq!(got.retry_after_ms, model.retry(now, w, cost));
                    prop_assert_eq!(got.reset_after_ms, model.reset(now, w));
                }
                prop_assert_eq!(got.limit, limit as i64);
            }
            // At most `limit` units in any interval of `window`: the worst interval ends at an
            // admitted call.
            for &(t, _) in &model.admitted {
                let inside: u64 = model
                    .admitted
                    .iter()
                    .filter(|(u, _)| *u <= t && t - u < window_ms)
                    .map(|(_, c)| c)
                    .sum();
                prop_assert!(inside <= limit, "{} units in the window ending at {}", inside, t);
            }
        }

        // Feature: db-cache-optimization, Property 29: Sliding Window Rate Limiting
        /// No 2× burst at a boundary: a full burst at the end of one fixed window and another at
        /// the start of the next. A fixed-window counter admits both (2 × limit within far less
        /// than a window); the sliding window admits the second burst only once the first left.
        #[test]
        fn no_double_burst_at_a_window_boundary(
            limit in 1u64..50,
            window_s in 1u64..120,
            before in 1u64..500,
            after in 0u64..500,
        ) {
            let window_ms = window_s * 1000;
            let w = Window { limit, window_ms };
            let (clock, c) = manual();
            let l1 = LocalLimiter::with_clock(1000, c);
            let boundary = 10 * window_ms;
            let first = boundary - before.min(window_ms - 1);
            let second = boundary + after;
            let (mut sliding, mut fixed) = (0u64, 0u64);
            let mut buckets = std::collections::HashMap::new();
            for t in std::iter::repeat_n(first, limit as usize).chain(std::iter::repeat_n(second, limit as usize)) {
                clock.store(t, Ordering::SeqCst);
                sliding += l1.window(Space::Rate, b"burst", w, 1).allowed as u64;
                let n = buckets.entry(t / window_ms).or_insert(0u64);
                if *n < limit {
                    *n += 1;
                    fixed += 1;
                }
            }
            prop_assert_eq!(fixed, 2 * limit, "the fixed window lets both bursts through");
            let gap = second - first;
            let want = if gap >= window_ms { 2 * limit } else { limit };
            prop_assert_eq!(sliding, want);
        }

        /// GCRA against a straightforward transcription of redis-cell's algorithm (a store with
        /// Redis-style millisecond expiry, the compare-and-swap loop reduced to one pass since
        /// the store is ours alone).
        #[test]
        fn gcra_matches_redis_cell(
            max_burst in 0i64..20,
            count in 1i64..50,
            period in 1i64..120,
            calls in prop::collection::vec((0u64..3000, 0i64..6), 1..150),
        ) {
            let (clock, c) = manual();
            let l1 = LocalLimiter::with_clock(1000, c);
            let mut reference = RedisCell::default();
            let mut now = 5_000_000u64;
            for (dt, qty) in calls {
                now += dt;
                clock.store(now, Ordering::SeqCst);
                let cell = Cell::new(max_burst, count, period, qty).unwrap();
                let got = l1.throttle(b"k", &cell);
                let want = reference.throttle(now as i128 * 1_000_000, max_burst, count, period, qty);
                prop_assert_eq!(got.as_array(), want, "at {} ms, quantity {}", now, qty);
            }
        }
    }

    /// redis-cell's rate_limit, written out plainly with i128 nanoseconds.
    #[derive(Default)]
    struct RedisCell {
        /// (TAT, expires at), both ns.
        key: Option<(i128, i128)>,
    }

    impl RedisCell {
        fn throttle(
            &mut self,
            now: i128,
            max_burst: i64,
            count: i64,
            period: i64,
            qty: i64,
        ) -> [i64; 5] {
            let period_ns = period as i128 * 1_000_000_000;
            let emission = (period_ns as f64 / count as f64) as i128;
            let dvt = emission * (max_burst as i128 + 1);
            let increment = emission * qty as i128;
            let stored = self.key.filter(|&(_, exp)| now < exp).map(|(t, _)| t);
            let tat = stored.unwrap_or(now);
            let new_tat = if now > tat {
                now + increment
            } else {
                tat + increment
            };
            let allow_at = new_tat - dvt;
            let diff = now - allow_at;
            let mut retry_after: i128 = -1_000_000_000;
            let (limited, ttl);
            if diff < 0 {
                if increment <= dvt {
                    retry_after = -diff;
                }
                limited = true;
                ttl = tat - now;
            } else {
                ttl = new_tat - now;
                let ms = ttl / 1_000_000;
                self.key = (ms > 0).then_some((new_tat, now + ms * 1_000_000));
                limited = false;
            }
            let next = dvt - ttl;
            let remaining = if next > -emission {
                ((next / 1000) as f64 / (emission / 1000) as f64) as i64
            } else {
                0
            };
            let secs = |d: i128| {
                let mut s = d / 1_000_000_000;
                if (d % 1_000_000_000) / 1_000_000 > 0 {
                    s += 1;
                }
                s as i64
            };
            [
                limited as i64,
                max_burst + 1,
                remaining,
                secs(retry_after),
                secs(ttl),
            ]
        }
    }

    /// redis-cell's own table of expected results (5 per second, burst 4), replayed.
    #[test]
    fn gcra_reproduces_redis_cells_published_cases() {
        let (clock, c) = manual();
        let l1 = LocalLimiter::with_clock(1000, c);
        let start = 1_000_000u64;
        // (ms after start, quantity, remaining, reset_after ms, retry_after ms (-1000 = none), limited)
        let cases: &[(u64, i64, i64, i64, i64, bool)] = &[
            (0, 6, 5, 0, -1000, true),
            (0, 1, 4, 1000, -1000, false),
            (0, 1, 3, 2000, -1000, false),
            (0, 1, 2, 3000, -1000, false),
            (0, 1, 1, 4000, -1000, false),
            (0, 1, 0, 5000, -1000, false),
            (0, 1, 0, 5000, 1000, true),
            (3000, 1, 2, 3000, -1000, false),
            (3100, 1, 1, 3900, -1000, false),
            (4000, 1, 1, 4000, -1000, false),
            (8000, 1, 4, 1000, -1000, false),
            (9500, 1, 4, 1000, -1000, false),
            (9500, 0, 4, 1000, -1000, false),
            (9500, 2, 2, 3000, -1000, false),
            (9500, 5, 2, 3000, 3000, true),
        ];
        for (i, &(at, qty, remaining, reset_ms, retry_ms, limited)) in cases.iter().enumerate() {
            clock.store(start + at, Ordering::SeqCst);
            let cell = Cell::new(4, 1, 1, qty).unwrap();
            let got = l1.throttle(b"foo", &cell);
            let want = Throttle {
                limited,
                limit: 5,
                remaining,
                retry_after_s: cell_seconds(retry_ms * 1_000_000),
                reset_after_s: cell_seconds(reset_ms * 1_000_000),
            };
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn a_table_entry_is_two_cache_lines() {
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
        assert_eq!(std::mem::size_of::<Bucket>(), 128);
    }

    #[test]
    fn cell_parameters_are_validated() {
        assert!(Cell::new(-1, 1, 1, 1).is_err());
        assert!(Cell::new(1, 0, 1, 1).is_err());
        assert!(Cell::new(1, 1, 0, 1).is_err());
        assert!(Cell::new(1, 1, 1, -1).is_err());
        assert!(Cell::new(1, 2_000_000, 1, 1).is_err());
        assert!(Cell::new(1, 1, i64::MAX, 1).is_err());
        assert!(Cell::new(i64::MAX, 1, 1, 1).is_err());
        assert_eq!(Cell::new(15, 30, 60, 1).unwrap().emission_ns, 2 * NS_PER_S);
        assert_eq!(cell_seconds(-NS_PER_S), -1);
        assert_eq!(cell_seconds(1_001_500_000), 2);
        assert_eq!(cell_seconds(1_000_500_000), 1);
        assert_eq!(cell_seconds(1_000_000_500), 1);
    }

    #[test]
    fn a_cost_above_the_limit_is_denied_and_consumes_nothing() {
        let (clock, c) = manual();
        let l1 = LocalLimiter::with_clock(1000, c);
        clock.store(100, Ordering::SeqCst);
        let w = Window {
            limit: 5,
            window_ms: 1000,
        };
        let v = l1.window(Space::Rate, b"k", w, 6);
        assert_eq!(v.as_array(), [0, 5, 5, -1, 0]);
        assert_eq!(l1.keys(), 0);
        assert_eq!(
            l1.window(Space::Rate, b"k", w, 5).as_array(),
            [1, 5, 0, 0, 1000]
        );
    }

    #[test]
    fn several_windows_record_all_or_nothing() {
        let (clock, c) = manual();
        let l1 = LocalLimiter::with_clock(1000, c);
        clock.store(10, Ordering::SeqCst);
        let user = Window {
            limit: 2,
            window_ms: 1000,
        };
        let global = Window {
            limit: 3,
            window_ms: 1000,
        };
        let both = |who: &[u8]| {
            l1.windows(
                &[(Space::Query, who, user), (Space::Query, b"global", global)],
                1,
            )
            .iter()
            .all(|v| v.allowed)
        };
        assert!(both(b"a"));
        assert!(both(b"a"));
        assert!(!both(b"a"), "a's own limit");
        assert!(both(b"b"));
        assert!(!both(b"b"), "the global limit");
        // The refused calls consumed nothing: once a's first calls expire, exactly one more
        // global unit is free per expired unit.
        clock.store(1010, Ordering::SeqCst);
        assert!(both(b"b"));
        assert!(both(b"c"));
        assert!(both(b"c"));
        assert!(!both(b"c"));
    }

    #[test]
    fn memory_is_bounded_and_expired_keys_leave() {
        let (clock, c) = manual();
        let l1 = LocalLimiter::with_clock(SHARDS * 4, c);
        let w = Window {
            limit: 3,
            window_ms: 100,
        };
        for i in 0..10_000u32 {
            clock.store(i as u64 / 10, Ordering::SeqCst);
            l1.window(Space::Rate, &i.to_be_bytes(), w, 1);
            l1.throttle(&i.to_be_bytes(), &Cell::new(1, 1, 1, 1).unwrap());
        }
        assert!(l1.keys() <= SHARDS * 4, "{} keys", l1.keys());
        // A log never holds more entries than its limit (one per admitted call at most, and
        // the calls of one millisecond share one).
        let mut log = Log::default();
        for t in 0..1000 {
            log.check(
                t / 3,
                Window {
                    limit: 50,
                    window_ms: 10_000,
                },
                1,
            );
            assert!(log.len() <= 50);
        }
        assert_eq!(log.len(), 17);
    }
}
