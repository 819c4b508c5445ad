//! The L1 store: numbered databases, each split into shards with their own lock, so that
//! commands on different keys never wait for each other on the hot path.
//!
//! Locking design (decided up front, DESIGN.md "L1 store"): a store-wide *gate* is a shared/
//! exclusive lock. Every single-key command runs under the shared gate plus the one shard mutex of
//! its key. Multi-key commands, MULTI/EXEC and EVAL take the gate exclusively: nothing else runs,
//! so they are atomic across shards while still locking each shard they touch (uncontended, so
//! cheap). The gate is taken by the dispatcher, never here, and never twice by one caller.
//!
//! A shard keeps its entries in a slab (`Vec<Option<Entry>>`, holes reused) and a hash index of
//! slab positions. Positions never move, which gives SCAN its guarantee (every key present for
//! the whole scan is returned) and gives eviction O(1) random sampling. Expiry is lazy on access
//! plus an active cycle driven by an ordered index of expiry times. Every mutation goes through
//! [`Shard::access`], which keeps the index, the expiry order, the memory count and WATCH flags
//! consistent in one place.

use super::entry::{malloc_size, Entry};
use super::glob::glob_match;
use crate::config::EvictionPolicy;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use rand::Rng;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

/// Shards per database. A power of two; enough that two worker threads rarely meet.
pub const SHARDS: usize = 32;

/// What a WATCHing (or blocked) client holds for its keys: the store marks it dirty and wakes
/// its waiter when a watched key is modified, expires or is flushed.
#[derive(Default)]
pub struct Watch {
    pub dirty: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Watch {
    pub fn fire(&self) {
        self.dirty.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Resolves once a watched key has changed (at once if it changed since the last wait).
    pub async fn changed(&self) {
        self.wake.notified().await
    }
}

pub type WatchFlag = Arc<Watch>;

/// Counters the store keeps for INFO and /metrics.
#[derive(Default)]
pub struct StoreStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub expired: AtomicU64,
    pub evicted: AtomicU64,
}

/// A key's slot while a command works on it: the entry (if any) taken out of the shard.
pub struct Slot {
    entry: Option<Entry>,
    modified: bool,
}

impl Slot {
    pub fn get(&self) -> Option<&Entry> {
        self.entry.as_ref()
    }

    /// Mutable access; counts as a modification (WATCH).
    pub fn get_mut(&mut self) -> Option<&mut Entry> {
        self.modified = true;
        self.entry.as_mut()
    }

    /// Stores a new entry for this key (its key must be the slot's key).
    pub fn put(&mut self, e: Entry) {
        self.modified = true;
        self.entry = Some(e);
    }

    /// Removes the key, returning its entry.
    pub fn take(&mut self) -> Option<Entry> {
        if self.entry.is_some() {
            self.modified = true;
        }
        self.entry.take()
    }

    pub fn exists(&self) -> bool {
        self.entry.is_some()
    }

    /// Marks the key modified without changing it (e.g. an object changed through `get_mut`).
    pub fn touch(&mut self) {
        self.modified = true;
    }
}

/// One lock's worth of one database.
pub struct Shard {
    index: HashTable<u32>,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    expires: BTreeSet<(u64, u32)>,
    watchers: HashMap<Box<[u8]>, Vec<WatchFlag>>,
    hasher: foldhash::quality::RandomState,
    /// Bytes of entries plus the index, as last reported to the store total.
    struct_bytes: usize,
}

/// What one access changed, for the store-wide counters.
struct Delta {
    mem: i64,
    keys: i64,
    expired: u64,
}

impl Shard {
    fn new(hasher: foldhash::quality::RandomState) -> Shard {
        Shard {
            index: HashTable::new(),
            entries: Vec::new(),
            free: Vec::new(),
            expires: BTreeSet::new(),
            watchers: HashMap::new(),
            hasher,
            struct_bytes: 0,
        }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let entries = &self.entries;
        self.index
            .find(hash, |&i| {
                entries[i as usize].as_ref().is_some_and(|e| e.key() == key)
            })
            .copied()
    }

    fn structure_bytes(&self) -> usize {
        // Index buckets (4 bytes + 1 control byte), slab slots, expiry tree nodes.
        let buckets = if self.index.capacity() == 0 {
            0
        } else {
            (self.index.capacity() * 8 / 7).next_power_of_two()
        };
        buckets * 5 + self.entries.capacity() * 8 + self.expires.len() * 24
    }

    /// Re-reads the size of the shard's own structures and returns how much it changed, for
    /// the store-wide memory count.
    fn restructure(&mut self) -> i64 {
        let s = self.structure_bytes();
        let d = s as i64 - self.struct_bytes as i64;
        self.struct_bytes = s;
        d
    }

    fn signal(&mut self, key: &[u8]) {
        if !self.watchers.is_empty() {
            if let Some(flags) = self.watchers.get(key) {
                for f in flags {
                    f.fire();
                }
            }
        }
    }

    /// Removes the entry at slab position `i` entirely, returning it.
    fn remove_at(&mut self, hash: u64, i: u32) -> Option<Entry> {
        let e = self.entries[i as usize].take()?;
        if let Ok(occ) = self.index.find_entry(hash, |&j| j == i) {
            occ.remove();
        }
        if let Some(at) = e.expire_ms() {
            self.expires.remove(&(at, i));
        }
        self.release_slot(i);
        Some(e)
    }

    fn release_slot(&mut self, i: u32) {
        if i as usize + 1 == self.entries.len() {
            // Trailing holes can go without moving anything (SCAN positions stay valid).
            while matches!(self.entries.last(), Some(None)) {
                self.entries.pop();
            }
        } else {
            self.free.push(i);
        }
    }

    fn alloc_slot(&mut self, e: Entry) -> u32 {
        while let Some(i) = self.free.pop() {
            if (i as usize) < self.entries.len() && self.entries[i as usize].is_none() {
                self.entries[i as usize] = Some(e);
                return i;
            }
        }
        self.entries.push(Some(e));
        (self.entries.len() - 1) as u32
    }

    fn access<R>(
        &mut self,
        hash: u64,
        key: &[u8],
        now: u64,
        f: impl FnOnce(&mut Slot) -> R,
    ) -> (R, Delta) {
        let mut delta = Delta {
            mem: 0,
            keys: 0,
            expired: 0,
        };
        let mut pos = self.find(hash, key);
        let mut entry = None;
        if let Some(i) = pos {
            let expired = self.entries[i as usize]
                .as_ref()
                .and_then(|e| e.expire_ms())
                .is_some_and(|at| at <= now);
            if expired {
                if let Some(e) = self.remove_at(hash, i) {
                    delta.mem -= e.mem_usage() as i64;
                }
                delta.keys -= 1;
                delta.expired += 1;
                self.signal(key);
                pos = None;
            } else {
                entry = self.entries[i as usize].take();
            }
        }
        let old_mem = entry.as_ref().map_or(0, |e| e.mem_usage()) as i64;
        let old_exp = entry.as_ref().and_then(|e| e.expire_ms());
        let mut slot = Slot {
            entry,
            modified: false,
        };
        let r = f(&mut slot);
        let Slot {
            mut entry,
            modified,
        } = slot;
        // Redis deletes a hash, set, ... the moment its last element goes.
        if entry
            .as_ref()
            .and_then(|e| e.obj())
            .is_some_and(|o| o.is_empty())
        {
            entry = None;
        }
        let new_mem = entry.as_ref().map_or(0, |e| e.mem_usage()) as i64;
        delta.mem += new_mem - old_mem;
        match (pos, entry) {
            (Some(i), Some(mut e)) => {
                e.set_lru(now as u32);
                let new_exp = e.expire_ms();
                if new_exp != old_exp {
                    if let Some(at) = old_exp {
                        self.expires.remove(&(at, i));
                    }
                    if let Some(at) = new_exp {
                        self.expires.insert((at, i));
                    }
                }
                self.entries[i as usize] = Some(e);
            }
            (Some(i), None) => {
                if let Ok(occ) = self.index.find_entry(hash, |&j| j == i) {
                    occ.remove();
                }
                if let Some(at) = old_exp {
                    self.expires.remove(&(at, i));
                }
                self.release_slot(i);
                delta.keys -= 1;
            }
            (None, Some(mut e)) => {
                debug_assert_eq!(e.key(), key);
                e.set_lru(now as u32);
                let exp = e.expire_ms();
                let i = self.alloc_slot(e);
                let entries = &self.entries;
                let hasher = &self.hasher;
                self.index.insert_unique(hash, i, |&j| {
                    entries[j as usize]
                        .as_ref()
                        .map_or(0, |e| hasher.hash_one(e.key()))
                });
                if let Some(at) = exp {
                    self.expires.insert((at, i));
                }
                delta.keys += 1;
            }
            (None, None) => {}
        }
        if modified {
            self.signal(key);
        }
        delta.mem += self.restructure();
        (r, delta)
    }

    fn live_entries(&self) -> impl Iterator<Item = (u32, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i as u32, e)))
    }

    fn random_entry(&self, rng: &mut impl Rng) -> Option<&Entry> {
        if self.index.is_empty() {
            return None;
        }
        for _ in 0..16 {
            let i = rng.random_range(0..self.entries.len());
            if let Some(e) = &self.entries[i] {
                return Some(e);
            }
        }
        self.live_entries().next().map(|(_, e)| e)
    }

    fn random_volatile(&self, rng: &mut impl Rng) -> Option<&Entry> {
        let first = self.expires.first()?.0;
        let last = self.expires.last()?.0;
        let pick = rng.random_range(first..=last);
        let (_, i) = self.expires.range((pick, 0)..).next().copied()?;
        self.entries[i as usize].as_ref()
    }

    /// Empties the shard; returns the keys it held and the bytes that frees.
    fn clear(&mut self) -> (usize, i64) {
        let n = self.index.len();
        let entry_bytes: i64 = self.live_entries().map(|(_, e)| e.mem_usage() as i64).sum();
        for key in self.watchers.keys() {
            let h = self.hasher.hash_one(&key[..]);
            if self.find(h, key).is_some() {
                for f in &self.watchers[key] {
                    f.fire();
                }
            }
        }
        self.index = HashTable::new();
        self.entries = Vec::new();
        self.free = Vec::new();
        self.expires = BTreeSet::new();
        (n, entry_bytes - self.restructure())
    }
}

/// One numbered database.
pub struct Db {
    shards: Box<[Mutex<Shard>]>,
    keys: AtomicI64,
}

/// Which shard a hash belongs to: middle bits, so the index (low bits) and the control bytes
/// (top bits) still see well-mixed values within a shard.
fn shard_of(hash: u64) -> usize {
    ((hash >> 40) as usize) & (SHARDS - 1)
}

/// The whole in-process keyspace.
pub struct Store {
    gate: RwLock<()>,
    dbs: Box<[Db]>,
    hasher: foldhash::quality::RandomState,
    used: AtomicI64,
    pub stats: StoreStats,
    maxmemory: AtomicU64,
    policy: AtomicU8,
    samples: AtomicUsize,
    /// Where the next active expiry cycle starts (db * SHARDS + shard).
    expire_cursor: AtomicUsize,
}

const POLICIES: [EvictionPolicy; 4] = [
    EvictionPolicy::AllkeysLru,
    EvictionPolicy::VolatileLru,
    EvictionPolicy::AllkeysRandom,
    EvictionPolicy::Noeviction,
];

/// Why a write was refused at the memory bound.
#[derive(Debug, PartialEq, Eq)]
pub struct OutOfMemory;

impl Store {
    pub fn new(databases: usize) -> Store {
        let hasher = foldhash::quality::RandomState::default();
        let dbs = (0..databases)
            .map(|_| Db {
                shards: (0..SHARDS)
                    .map(|_| Mutex::new(Shard::new(hasher.clone())))
                    .collect(),
                keys: AtomicI64::new(0),
            })
            .collect();
        Store {
            gate: RwLock::new(()),
            dbs,
            hasher,
            used: AtomicI64::new(0),
            stats: StoreStats::default(),
            maxmemory: AtomicU64::new(0),
            policy: AtomicU8::new(0),
            samples: AtomicUsize::new(5),
            expire_cursor: AtomicUsize::new(0),
        }
    }

    pub fn databases(&self) -> usize {
        self.dbs.len()
    }

    /// The shared side of the gate: single-key commands.
    pub fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read()
    }

    /// The exclusive side of the gate: multi-key commands, MULTI/EXEC, EVAL, whole-store work.
    pub fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write()
    }

    pub fn set_limits(&self, maxmemory: u64, policy: EvictionPolicy, samples: usize) {
        self.maxmemory.store(maxmemory, Ordering::Relaxed);
        let p = POLICIES.iter().position(|&p| p == policy).unwrap_or(0);
        self.policy.store(p as u8, Ordering::Relaxed);
        self.samples.store(samples.max(1), Ordering::Relaxed);
    }

    pub fn maxmemory(&self) -> u64 {
        self.maxmemory.load(Ordering::Relaxed)
    }

    pub fn policy(&self) -> EvictionPolicy {
        POLICIES[self.policy.load(Ordering::Relaxed) as usize % POLICIES.len()]
    }

    pub fn samples(&self) -> usize {
        self.samples.load(Ordering::Relaxed)
    }

    /// Bytes held by keys, values and their indexes.
    pub fn used_memory(&self) -> u64 {
        self.used.load(Ordering::Relaxed).max(0) as u64
    }

    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, db: usize, hash: u64) -> MutexGuard<'_, Shard> {
        self.dbs[db].shards[shard_of(hash)].lock()
    }

    fn apply(&self, db: usize, d: Delta) {
        if d.mem != 0 {
            self.used.fetch_add(d.mem, Ordering::Relaxed);
        }
        if d.keys != 0 {
            self.dbs[db].keys.fetch_add(d.keys, Ordering::Relaxed);
        }
        if d.expired != 0 {
            self.stats.expired.fetch_add(d.expired, Ordering::Relaxed);
        }
    }

    /// Runs `f` on the slot of `key` in database `db` (expired keys are gone before `f` sees them).
    pub fn access<R>(&self, db: usize, key: &[u8], now: u64, f: impl FnOnce(&mut Slot) -> R) -> R {
        let hash = self.hash(key);
        let (r, delta) = self.shard(db, hash).access(hash, key, now, f);
        self.apply(db, delta);
        r
    }

    /// Read-only look at a key; counts a keyspace hit or miss like Redis's lookupKeyRead.
    pub fn read<R>(
        &self,
        db: usize,
        key: &[u8],
        now: u64,
        f: impl FnOnce(Option<&Entry>) -> R,
    ) -> R {
        let hash = self.hash(key);
        let mut shard = self.shard(db, hash);
        // Fast path: a live key is read in place (no accounting to redo for a read).
        if let Some(i) = shard.find(hash, key) {
            if let Some(e) = shard.entries[i as usize].as_mut() {
                if e.expire_ms().is_none_or(|at| at > now) {
                    e.set_lru(now as u32);
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return f(Some(e));
                }
            }
        }
        // Missing or expired: the general path removes an expired key and counts it.
        let (r, delta) = shard.access(hash, key, now, |slot| {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            f(slot.get())
        });
        drop(shard);
        self.apply(db, delta);
        r
    }

    /// Counts a keyspace hit or miss for a command that looked a key up without `read`
    /// (EXISTS, TYPE, TTL, ...), as Redis's lookupKeyRead counts them.
    pub fn count_lookup(&self, found: bool) {
        let c = if found {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn exists(&self, db: usize, key: &[u8], now: u64) -> bool {
        self.access(db, key, now, |s| s.exists())
    }

    pub fn dbsize(&self, db: usize) -> usize {
        self.dbs[db].keys.load(Ordering::Relaxed).max(0) as usize
    }

    /// Keys with an expiry in `db` (for INFO keyspace).
    pub fn volatile_count(&self, db: usize) -> usize {
        self.dbs[db]
            .shards
            .iter()
            .map(|s| s.lock().expires.len())
            .sum()
    }

    pub fn flush_db(&self, db: usize) -> usize {
        let mut n = 0;
        for s in self.dbs[db].shards.iter() {
            let (keys, freed) = s.lock().clear();
            n += keys;
            self.used.fetch_sub(freed, Ordering::Relaxed);
        }
        self.dbs[db].keys.store(0, Ordering::Relaxed);
        n
    }

    pub fn flush_all(&self) {
        for db in 0..self.dbs.len() {
            self.flush_db(db);
        }
    }

    /// Exchanges two databases' contents (SWAPDB); the caller holds the exclusive gate.
    pub fn swap_db(&self, a: usize, b: usize) {
        if a == b {
            return;
        }
        for i in 0..SHARDS {
            let mut sa = self.dbs[a].shards[i].lock();
            let mut sb = self.dbs[b].shards[i].lock();
            // A watched key that exists on either side changes value (Redis: touched).
            for (watching, other) in [(&*sa, &*sb), (&*sb, &*sa)] {
                for (key, flags) in &watching.watchers {
                    let h = watching.hasher.hash_one(&key[..]);
                    if watching.find(h, key).is_some() || other.find(h, key).is_some() {
                        for f in flags {
                            f.fire();
                        }
                    }
                }
            }
            std::mem::swap(&mut sa.index, &mut sb.index);
            std::mem::swap(&mut sa.entries, &mut sb.entries);
            std::mem::swap(&mut sa.free, &mut sb.free);
            std::mem::swap(&mut sa.expires, &mut sb.expires);
            std::mem::swap(&mut sa.struct_bytes, &mut sb.struct_bytes);
        }
        let ka = self.dbs[a].keys.load(Ordering::Relaxed);
        let kb = self.dbs[b].keys.swap(ka, Ordering::Relaxed);
        self.dbs[a].keys.store(kb, Ordering::Relaxed);
    }

    /// Every live key of `db` matching `pattern` (KEYS).
    pub fn keys(&self, db: usize, pattern: &[u8], now: u64) -> Vec<Vec<u8>> {
        let all = pattern == b"*";
        let mut out = Vec::new();
        for s in self.dbs[db].shards.iter() {
            let s = s.lock();
            for (_, e) in s.live_entries() {
                if e.expire_ms().is_some_and(|at| at <= now) {
                    continue;
                }
                if all || glob_match(pattern, e.key(), false) {
                    out.push(e.key().to_vec());
                }
            }
        }
        out
    }

    /// One step of SCAN. The cursor is `position << 5 | shard`; 0 starts and ends a scan.
    /// `filter` sees each live entry and decides whether it is returned.
    pub fn scan(
        &self,
        db: usize,
        cursor: u64,
        count: usize,
        now: u64,
        mut filter: impl FnMut(&Entry) -> bool,
    ) -> (u64, Vec<Vec<u8>>) {
        let mut shard = (cursor & (SHARDS as u64 - 1)) as usize;
        let mut pos = (cursor >> 5) as usize;
        let mut out = Vec::new();
        let mut visited = 0;
        let budget = count.max(1);
        while shard < SHARDS {
            let s = self.dbs[db].shards[shard].lock();
            while pos < s.entries.len() {
                if let Some(e) = &s.entries[pos] {
                    visited += 1;
                    if e.expire_ms().is_none_or(|at| at > now) && filter(e) {
                        out.push(e.key().to_vec());
                    }
                }
                pos += 1;
                if visited >= budget {
                    let next = if pos < s.entries.len() {
                        ((pos as u64) << 5) | shard as u64
                    } else if shard + 1 < SHARDS {
                        (shard + 1) as u64
                    } else {
                        0
                    };
                    return (next, out);
                }
            }
            shard += 1;
            pos = 0;
        }
        (0, out)
    }

    /// A random live key of `db` (RANDOMKEY).
    pub fn random_key(&self, db: usize, now: u64) -> Option<Vec<u8>> {
        if self.dbsize(db) == 0 {
            return None;
        }
        let mut rng = rand::rng();
        for _ in 0..(SHARDS * 8) {
            let s = self.dbs[db].shards[rng.random_range(0..SHARDS)].lock();
            if let Some(e) = s.random_entry(&mut rng) {
                if e.expire_ms().is_none_or(|at| at > now) {
                    return Some(e.key().to_vec());
                }
            }
        }
        // Nearly everything is expired: fall back to a full walk.
        self.keys(db, b"*", now).into_iter().next()
    }

    /// Registers a WATCH on `key`.
    pub fn watch(&self, db: usize, key: &[u8], flag: &WatchFlag) {
        let hash = self.hash(key);
        let mut s = self.shard(db, hash);
        s.watchers.entry(key.into()).or_default().push(flag.clone());
    }

    pub fn unwatch(&self, db: usize, key: &[u8], flag: &WatchFlag) {
        let hash = self.hash(key);
        let mut s = self.shard(db, hash);
        if let Some(v) = s.watchers.get_mut(key) {
            v.retain(|f| !Arc::ptr_eq(f, flag));
            if v.is_empty() {
                s.watchers.remove(key);
            }
        }
    }

    /// The active expiry cycle: removes up to `budget` expired keys; returns how many it removed.
    pub fn active_expire(&self, now: u64, budget: usize) -> usize {
        let mut removed = 0;
        // Resume where the last cycle ran out of budget, so a backlog in one shard cannot
        // starve the others.
        let total = self.dbs.len() * SHARDS;
        let start = self.expire_cursor.load(Ordering::Relaxed) % total;
        for step in 0..total {
            let slot = (start + step) % total;
            let (dbi, si) = (slot / SHARDS, slot % SHARDS);
            {
                let mut s = self.dbs[dbi].shards[si].lock();
                let mut delta = Delta {
                    mem: 0,
                    keys: 0,
                    expired: 0,
                };
                while removed < budget {
                    let Some(&(at, i)) = s.expires.first() else {
                        break;
                    };
                    if at > now {
                        break;
                    }
                    let Some(key) = s.entries[i as usize].as_ref().map(|e| e.key().to_vec()) else {
                        s.expires.remove(&(at, i));
                        continue;
                    };
                    let hash = s.hasher.hash_one(&key[..]);
                    if let Some(e) = s.remove_at(hash, i) {
                        delta.mem -= e.mem_usage() as i64;
                    }
                    s.signal(&key);
                    delta.keys -= 1;
                    delta.expired += 1;
                    removed += 1;
                }
                delta.mem += s.restructure();
                drop(s);
                self.apply(dbi, delta);
                if removed >= budget {
                    self.expire_cursor.store(slot, Ordering::Relaxed);
                    return removed;
                }
            }
        }
        removed
    }

    /// Frees memory until `used_memory` is within `maxmemory`, by the configured policy.
    /// Returns Err when the bound cannot be met (noeviction, or nothing evictable).
    pub fn ensure_memory(&self, now: u64) -> Result<(), OutOfMemory> {
        let max = self.maxmemory();
        if max == 0 {
            return Ok(());
        }
        while self.used_memory() > max {
            if self.policy() == EvictionPolicy::Noeviction || !self.evict_one(now) {
                return Err(OutOfMemory);
            }
        }
        Ok(())
    }

    /// Evicts one key chosen by the policy; false when there is nothing to evict.
    pub fn evict_one(&self, now: u64) -> bool {
        let policy = self.policy();
        let samples = self.samples();
        let total: usize = (0..self.dbs.len()).map(|d| self.dbsize(d)).sum();
        if total == 0 {
            return false;
        }
        let clock = now as u32;
        // (db, key, idle) of the best candidate so far.
        let mut best: Option<(usize, Vec<u8>, u32)> = None;
        let consider = |db: usize, e: &Entry, best: &mut Option<(usize, Vec<u8>, u32)>| {
            if policy == EvictionPolicy::VolatileLru && e.expire_ms().is_none() {
                return;
            }
            let idle = clock.wrapping_sub(e.lru());
            if best.as_ref().is_none_or(|b| idle > b.2) {
                *best = Some((db, e.key().to_vec(), idle));
            }
        };
        if total <= samples && policy != EvictionPolicy::AllkeysRandom {
            // Few keys: look at all of them, which makes the choice exact.
            for (dbi, db) in self.dbs.iter().enumerate() {
                for s in db.shards.iter() {
                    let s = s.lock();
                    for (_, e) in s.live_entries() {
                        consider(dbi, e, &mut best);
                    }
                }
            }
        } else {
            let mut rng = rand::rng();
            let mut found = 0;
            let mut tries = 0;
            while found < samples && tries < samples * SHARDS * 2 {
                tries += 1;
                let dbi = rng.random_range(0..self.dbs.len());
                if self.dbsize(dbi) == 0 {
                    continue;
                }
                let s = self.dbs[dbi].shards[rng.random_range(0..SHARDS)].lock();
                let e = match policy {
                    EvictionPolicy::VolatileLru => s.random_volatile(&mut rng),
                    _ => s.random_entry(&mut rng),
                };
                if let Some(e) = e {
                    found += 1;
                    if policy == EvictionPolicy::AllkeysRandom {
                        best = Some((dbi, e.key().to_vec(), 0));
                        break;
                    }
                    consider(dbi, e, &mut best);
                }
            }
            if best.is_none() && policy == EvictionPolicy::VolatileLru {
                // Sampling missed the few volatile keys: take the soonest to expire.
                for (dbi, db) in self.dbs.iter().enumerate() {
                    for s in db.shards.iter() {
                        let s = s.lock();
                        if let Some(&(_, i)) = s.expires.first() {
                            if let Some(e) = &s.entries[i as usize] {
                                best = Some((dbi, e.key().to_vec(), 0));
                                break;
                            }
                        }
                    }
                    if best.is_some() {
                        break;
                    }
                }
            }
        }
        let Some((db, key, _)) = best else {
            return false;
        };
        let hash = self.hash(&key);
        let mut s = self.shard(db, hash);
        let Some(i) = s.find(hash, &key) else {
            return true;
        };
        let freed = s.remove_at(hash, i).map_or(0, |e| e.mem_usage());
        s.signal(&key);
        let structure = s.restructure();
        drop(s);
        self.apply(
            db,
            Delta {
                mem: structure - freed as i64,
                keys: -1,
                expired: 0,
            },
        );
        self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Approximate bytes one key costs (MEMORY USAGE), including its slot in the index.
    pub fn memory_usage(&self, db: usize, key: &[u8], now: u64) -> Option<usize> {
        self.access(db, key, now, |s| {
            s.get().map(|e| e.mem_usage() + malloc_size(0) / 2 + 16)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(store: &Store, key: &[u8], val: &[u8], now: u64) {
        store.access(0, key, now, |s| {
            s.put(Entry::new_str(key, val, None, 0));
        });
    }

    #[test]
    fn lazy_and_active_expiry() {
        let s = Store::new(1);
        s.access(0, b"a", 0, |sl| {
            sl.put(Entry::new_str(b"a", b"1", Some(100), 0))
        });
        s.access(0, b"b", 0, |sl| {
            sl.put(Entry::new_str(b"b", b"1", Some(100), 0))
        });
        assert_eq!(s.dbsize(0), 2);
        assert!(s.exists(0, b"a", 99));
        assert!(!s.exists(0, b"a", 100));
        assert_eq!(s.dbsize(0), 1);
        assert_eq!(s.active_expire(200, 100), 1);
        assert_eq!(s.dbsize(0), 0);
        assert_eq!(s.stats.expired.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn scan_returns_every_key_present_throughout() {
        let s = Store::new(1);
        for i in 0..1000 {
            set(&s, format!("k{i}").as_bytes(), b"v", 0);
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        let mut step = 0;
        loop {
            let (next, keys) = s.scan(0, cursor, 10, 0, |_| true);
            seen.extend(keys);
            // Churn while scanning: delete and add other keys.
            step += 1;
            s.access(0, format!("k{}", 500 + step).as_bytes(), 0, |sl| {
                sl.take();
            });
            set(&s, format!("new{step}").as_bytes(), b"v", 0);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for i in 0..500 {
            assert!(seen.contains(format!("k{i}").as_bytes()), "k{i} missed");
        }
    }

    #[test]
    fn watch_flag_set_on_write_and_expiry() {
        let s = Store::new(1);
        let f: WatchFlag = Arc::new(Watch::default());
        s.watch(0, b"w", &f);
        s.read(0, b"w", 0, |_| ());
        assert!(!f.dirty.load(Ordering::Acquire));
        set(&s, b"w", b"1", 0);
        assert!(f.dirty.load(Ordering::Acquire));
        s.unwatch(0, b"w", &f);
        f.dirty.store(false, Ordering::Release);
        set(&s, b"w", b"2", 0);
        assert!(!f.dirty.load(Ordering::Acquire));
    }

    #[test]
    fn used_memory_returns_to_zero() {
        let s = Store::new(2);
        for i in 0..5000 {
            set(&s, format!("key{i}").as_bytes(), &[1u8; 100], 0);
        }
        assert!(s.used_memory() > 5000 * 100);
        for i in 0..5000 {
            s.access(0, format!("key{i}").as_bytes(), 0, |sl| {
                sl.take();
            });
        }
        s.flush_all();
        assert_eq!(s.used_memory(), 0);
    }

    // Feature: db-cache-optimization, Property 18: LRU Cache Behavior
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]
        #[test]
        fn lru_bound_holds_and_least_recent_goes(
            ops in proptest::collection::vec((0u8..40, any::<bool>()), 1..300),
        ) {
            let s = Store::new(1);
            // Room for about 20 small keys; samples cover every key, so eviction is exact LRU.
            let budget = {
                let probe = Store::new(1);
                set(&probe, b"k00", b"value", 0);
                probe.used_memory() * 20
            };
            s.set_limits(budget, EvictionPolicy::AllkeysLru, 64);
            let mut recency: Vec<Vec<u8>> = Vec::new();
            for (t, (k, write)) in ops.into_iter().enumerate() {
                let now = 1000 + t as u64;
                let key = format!("k{k:02}").into_bytes();
                if write {
                    let before: Vec<Vec<u8>> = s.keys(0, b"*", now);
                    let r = s.ensure_memory(now);
                    prop_assert!(r.is_ok());
                    let after: std::collections::HashSet<Vec<u8>> = s.keys(0, b"*", now).into_iter().collect();
                    // Whatever was evicted is exactly the least recently used keys, oldest first.
                    let evicted: Vec<&Vec<u8>> = before.iter().filter(|k| !after.contains(*k)).collect();
                    let oldest: Vec<&Vec<u8>> = recency.iter().filter(|k| before.contains(k)).take(evicted.len()).collect();
                    let mut e1 = evicted.clone(); e1.sort();
                    let mut e2 = oldest.clone(); e2.sort();
                    prop_assert_eq!(e1, e2);
                    recency.retain(|x| after.contains(x));
                    set(&s, &key, b"value", now);
                } else {
                    s.read(0, &key, now, |_| ());
                }
                if s.exists(0, &key, now) {
                    recency.retain(|x| x != &key);
                    recency.push(key.clone());
                }
                // The bound holds after each write's eviction plus one key's worth.
                prop_assert!(s.used_memory() <= budget + budget / 10);
            }
        }
    }
}
