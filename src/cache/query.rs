//! The QUERY result cache of this instance (its L1 for database reads): results keyed by a
//! 128-bit hash of (database, role, normalized SQL, arguments), each carrying its tags
//! (`table:<schema>.<table>` for every table it read, plus the QUERY's own TAGS), bounded by
//! entries and bytes with least-recently-used eviction, and single flight for identical
//! concurrent misses.
//!
//! Invalidation never lets a stale result back in. Every invalidation bumps a global
//! generation and stamps each tag it names with it (and with the write's WAL position); a
//! reader takes the generation before it asks the database, and its result is stored only if
//! no tag it carries was invalidated since — checked under the same lock that invalidation
//! holds while it removes entries. `pending_lsn` gives the newest write position of a set of
//! tags, so the caller can refuse to store a result read from a replica that had not replayed
//! that write yet. Tag stamps are pruned once there are many of them; a pruned
//! tag counts as invalidated at the prune, so pruning only ever drops fills, never admits one.

use crate::db::value::{to_json, write_resp, PgValue};
use crate::server::reply::Reply;
use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

const SHARDS: usize = 16;
/// Tag stamps kept before the ones with no cached entry are pruned.
const MAX_TAG_STAMPS: usize = 100_000;

/// A query result: column names and rows of values.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<PgValue>>,
}

impl QueryResult {
    /// Approximate heap size, for the byte bounds.
    pub fn size(&self) -> usize {
        fn value(v: &PgValue) -> usize {
            std::mem::size_of::<PgValue>()
                + match v {
                    PgValue::Bytes(b) => b.len(),
                    PgValue::Json(s) | PgValue::Text(s) => s.len(),
                    PgValue::Array(a) => a.iter().map(value).sum(),
                    _ => 0,
                }
        }
        self.columns.iter().map(|c| c.len() + 24).sum::<usize>()
            + self
                .rows
                .iter()
                .map(|r| 24 + r.iter().map(value).sum::<usize>())
                .sum::<usize>()
    }
}

/// How a result is to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Resp2,
    Resp3,
    Json,
}

impl Format {
    fn index(self) -> usize {
        self as usize
    }
}

/// A cached result and its replies, rendered once per format on first use.
pub struct Entry {
    pub result: Arc<QueryResult>,
    pub expires_ms: u64,
    tags: Box<[Arc<str>]>,
    size: usize,
    rendered: [OnceLock<Vec<u8>>; 3],
}

impl Entry {
    /// The reply bytes of this entry in `format` (JSON says `"source":"l1"`).
    pub fn reply(&self, format: Format) -> &[u8] {
        self.rendered[format.index()].get_or_init(|| render(&self.result, format, "l1"))
    }
}

/// Writes a result in `format`; `source` is what FORMAT JSON reports.
pub fn render(result: &QueryResult, format: Format, source: &str) -> Vec<u8> {
    let mut out = Reply::new(format == Format::Resp3);
    render_into(&mut out, result, format, || source.to_string());
    out.buf
}

/// [`render`] appended to a connection's reply, whose protocol must be `format`'s unless
/// `format` is JSON (one bulk string in either protocol). `source` is asked only for JSON.
pub fn render_into(
    out: &mut Reply,
    result: &QueryResult,
    format: Format,
    source: impl FnOnce() -> String,
) {
    match format {
        Format::Json => out.bulk(to_json(&result.columns, &result.rows, &source()).as_bytes()),
        _ => write_resp(out, &result.columns, &result.rows),
    }
}

#[derive(Default)]
struct Stamp {
    /// The generation of the last invalidation of this tag.
    generation: u64,
    lsn: u64,
    keys: HashSet<u128>,
}

#[derive(Default)]
struct Tags {
    generation: u64,
    stamps: HashMap<Arc<str>, Stamp>,
    /// Tags without a stamp count as invalidated at this generation and position.
    floor_generation: u64,
    floor_lsn: u64,
}

#[derive(Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub fills: AtomicU64,
    pub fills_dropped: AtomicU64,
    pub invalidated: AtomicU64,
    pub evicted: AtomicU64,
}

/// One shard: key → entry, least recently used first out. Keys are already 128-bit hashes, so
/// the map uses their high 64 bits as they are (the low bits pick the shard).
type Shard = Mutex<LruCache<u128, Arc<Entry>, std::hash::BuildHasherDefault<KeyBits>>>;

/// The hasher of an already-hashed key: its high 64 bits.
#[derive(Default)]
struct KeyBits(u64);

impl Hasher for KeyBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for u128 keys (`write_u128`); folds any other input all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = (n >> 64) as u64;
    }
}

pub struct QueryCache {
    shards: Box<[Shard]>,
    /// Lock order: `tags` before any shard.
    tags: Mutex<Tags>,
    bytes: AtomicUsize,
    max_bytes: usize,
    pub stats: Stats,
    /// Tiered mode: whether this instance currently hears the other instances' writes (results
    /// are stored only then); always true standalone.
    pub coherent: std::sync::atomic::AtomicBool,
    flights: Mutex<HashMap<u128, Arc<tokio::sync::OnceCell<FlightResult>>>>,
}

/// What a single-flight leader hands its followers.
pub type FlightResult =
    Result<(Arc<QueryResult>, crate::db::database::Source), crate::db::database::DbError>;

impl QueryCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> QueryCache {
        let per_shard = std::num::NonZeroUsize::new(max_entries.div_ceil(SHARDS).max(1))
            .unwrap_or(std::num::NonZeroUsize::MIN);
        QueryCache {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::with_hasher(per_shard, Default::default())))
                .collect(),
            tags: Mutex::default(),
            bytes: AtomicUsize::new(0),
            max_bytes,
            stats: Stats::default(),
            coherent: std::sync::atomic::AtomicBool::new(true),
            flights: Mutex::default(),
        }
    }

    /// A cache key: `base` (the 128-bit hash of what the key is for: a statement's
    /// fingerprint, a result's key) refined by `parts`, then `tail`. It is the 128-bit XXH3 of
    /// the parts, each length-prefixed so that none runs into the next, seeded with the low half
    /// of `base` and its high half XORed into the result's: two keys are alike only if their
    /// bases are and their parts are, or by a 128-bit hash collision. Parts are gathered on the
    /// stack and hashed in one call; longer inputs are streamed (the same hash either way).
    pub fn key(&self, base: u128, parts: &[&[u8]], tail: &[Bytes]) -> u128 {
        let (seed, high) = (base as u64, base >> 64 << 64);
        let mut buf = [0u8; 128];
        let mut n = 0;
        let all = || parts.iter().copied().chain(tail.iter().map(|p| &p[..]));
        for p in all() {
            // Bulk strings are at most 512 MB: the length fits in four bytes.
            let Some(to) = buf.get_mut(n..n + 4 + p.len()) else {
                let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
                for p in all() {
                    h.update(&(p.len() as u32).to_le_bytes());
                    h.update(p);
                }
                return h.digest128() ^ high;
            };
            to[..4].copy_from_slice(&(p.len() as u32).to_le_bytes());
            to[4..].copy_from_slice(p);
            n += 4 + p.len();
        }
        xxhash_rust::xxh3::xxh3_128_with_seed(&buf[..n], seed) ^ high
    }

    fn shard(&self, key: u128) -> &Shard {
        &self.shards[(key as usize) % SHARDS]
    }

    /// A live entry, marked recently used.
    pub fn get(&self, key: u128, now_ms: u64) -> Option<Arc<Entry>> {
        let mut shard = self.shard(key).lock();
        match shard.get(&key) {
            Some(e) if e.expires_ms > now_ms => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Some(e.clone())
            }
            Some(_) => {
                if let Some(e) = shard.pop(&key) {
                    self.bytes.fetch_sub(e.size, Ordering::Relaxed);
                }
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn used_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The invalidation generation: taken before a read asks the database, and given back to
    /// `store`, it proves the result crossed no invalidation of its tags.
    pub fn generation(&self) -> u64 {
        self.tags.lock().generation
    }

    /// The newest write position (LSN) any of `tags` was invalidated at: a result read from a
    /// replica is stored only if the replica had replayed this far.
    pub fn pending_lsn(&self, tags: &[String]) -> u64 {
        let t = self.tags.lock();
        tags.iter()
            .map(|tag| {
                t.stamps
                    .get(tag.as_str())
                    .map_or(t.floor_lsn, |s| s.lsn.max(t.floor_lsn))
            })
            .max()
            .unwrap_or(0)
    }

    /// Stores a result unless one of its tags was invalidated since `generation` (then it
    /// counts as a dropped fill and `false` is returned).
    pub fn store(
        &self,
        key: u128,
        result: Arc<QueryResult>,
        tags: &[String],
        ttl_ms: u64,
        generation: u64,
        now_ms: u64,
    ) -> bool {
        let size = result.size() + 128 + tags.iter().map(|t| t.len() + 16).sum::<usize>();
        let mut t = self.tags.lock();
        let invalidated = generation < t.floor_generation
            || tags.iter().any(|tag| {
                t.stamps
                    .get(tag.as_str())
                    .is_some_and(|s| s.generation > generation)
            });
        if invalidated || size > self.max_bytes {
            self.stats.fills_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let tags: Box<[Arc<str>]> = tags.iter().map(|s| Arc::from(s.as_str())).collect();
        let entry = Arc::new(Entry {
            result,
            expires_ms: now_ms.saturating_add(ttl_ms),
            tags,
            size,
            rendered: Default::default(),
        });
        let evicted = {
            let mut shard = self.shard(key).lock();
            // An entry this one replaces leaves its tags first (its tags may differ, and
            // unlinking it afterwards would unlink the new entry too).
            if let Some(old) = shard.pop(&key) {
                self.bytes.fetch_sub(old.size, Ordering::Relaxed);
                unlink(&mut t, key, &old);
            }
            for tag in entry.tags.iter() {
                t.stamps.entry(tag.clone()).or_default().keys.insert(key);
            }
            self.bytes.fetch_add(size, Ordering::Relaxed);
            shard.push(key, entry)
        };
        if let Some((old_key, old)) = evicted {
            self.bytes.fetch_sub(old.size, Ordering::Relaxed);
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            unlink(&mut t, old_key, &old);
        }
        // Over the byte bound: evict least recently used entries, shard by shard.
        let mut i = key as usize;
        let mut rounds = 0;
        while self.bytes.load(Ordering::Relaxed) > self.max_bytes && rounds < SHARDS * 4 {
            let popped = self.shards[i % SHARDS].lock().pop_lru();
            if let Some((k, e)) = popped {
                self.bytes.fetch_sub(e.size, Ordering::Relaxed);
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                unlink(&mut t, k, &e);
            }
            i += 1;
            rounds += 1;
        }
        self.stats.fills.fetch_add(1, Ordering::Relaxed);
        if t.stamps.len() > MAX_TAG_STAMPS {
            prune(&mut t);
        }
        true
    }

    /// Removes every entry carrying any of `tags`, and stops fills that started before this
    /// call from storing; `lsn` is the write's WAL position (0 when unknown). Returns the
    /// number of entries removed.
    pub fn invalidate(&self, tags: &[String], lsn: u64) -> usize {
        let mut t = self.tags.lock();
        t.generation += 1;
        let generation = t.generation;
        let mut keys = Vec::new();
        for tag in tags {
            let stamp = t.stamps.entry(Arc::from(tag.as_str())).or_default();
            stamp.generation = generation;
            stamp.lsn = stamp.lsn.max(lsn);
            keys.extend(stamp.keys.drain());
        }
        let mut removed = 0;
        for k in keys {
            let popped = self.shard(k).lock().pop(&k);
            if let Some(e) = popped {
                self.bytes.fetch_sub(e.size, Ordering::Relaxed);
                unlink(&mut t, k, &e);
                removed += 1;
            }
        }
        self.stats
            .invalidated
            .fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Empties the cache and stops every fill in flight from storing (after DDL, or when
    /// invalidations may have been missed); `lsn` as in `invalidate`.
    pub fn flush(&self, lsn: u64) -> usize {
        let mut t = self.tags.lock();
        t.generation += 1;
        t.floor_generation = t.generation;
        t.floor_lsn = t.floor_lsn.max(lsn);
        t.stamps.clear();
        let mut removed = 0;
        for s in self.shards.iter() {
            let mut s = s.lock();
            removed += s.len();
            s.clear();
        }
        self.bytes.store(0, Ordering::Relaxed);
        self.stats
            .invalidated
            .fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Runs `fetch` once for concurrent callers with the same key: the first caller runs it,
    /// the others wait for its result. A leader that is cancelled hands the work to a waiter.
    pub async fn single_flight<F, Fut>(&self, key: u128, fetch: F) -> FlightResult
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = FlightResult>,
    {
        let cell = self.flights.lock().entry(key).or_default().clone();
        let result = cell.get_or_init(fetch).await.clone();
        let mut flights = self.flights.lock();
        if flights.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            flights.remove(&key);
        }
        result
    }
}

/// Forgets `key` in the tag sets of `entry`'s tags.
fn unlink(t: &mut Tags, key: u128, entry: &Entry) {
    for tag in entry.tags.iter() {
        if let Some(s) = t.stamps.get_mut(tag) {
            s.keys.remove(&key);
        }
    }
}

/// Drops stamps of tags no entry carries; they now count as invalidated at the floor.
fn prune(t: &mut Tags) {
    let mut floor_lsn = t.floor_lsn;
    t.stamps.retain(|_, s| {
        let keep = !s.keys.is_empty();
        if !keep {
            floor_lsn = floor_lsn.max(s.lsn);
        }
        keep
    });
    t.floor_lsn = floor_lsn;
    t.floor_generation = t.generation;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(n: i64) -> Arc<QueryResult> {
        Arc::new(QueryResult {
            columns: vec!["n".into()],
            rows: vec![vec![PgValue::Int(n)]],
        })
    }

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    /// The key is XXH3-128 over the length-prefixed parts, seeded with the base's low half
    /// and its high half XORed in, whether the parts fit the stack buffer or are streamed;
    /// parts never run into each other, and bases that differ in either half give different
    /// keys.
    #[test]
    fn the_key_is_one_hash_of_the_length_prefixed_parts() {
        let c = QueryCache::new(10, 1 << 20);
        let base = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        let framed = |parts: &[&[u8]]| {
            let mut b = Vec::new();
            for p in parts {
                b.extend_from_slice(&(p.len() as u32).to_le_bytes());
                b.extend_from_slice(p);
            }
            xxhash_rust::xxh3::xxh3_128_with_seed(&b, base as u64) ^ (base >> 64 << 64)
        };
        let long = vec![b'x'; 300];
        for parts in [
            vec![&b"SELECT 1"[..], b"role:", b"", b"42"],
            vec![&long[..], b"a"],
            vec![&b"abc"[..], &long[..100], &long[..20]],
            vec![&b"abc"[..], &long[..200], &long[..100]],
            vec![],
        ] {
            assert_eq!(c.key(base, &parts, &[]), framed(&parts));
            // However the parts are split between the head and the tail.
            for at in 0..=parts.len() {
                let tail: Vec<Bytes> = parts[at..]
                    .iter()
                    .map(|p| Bytes::copy_from_slice(p))
                    .collect();
                assert_eq!(c.key(base, &parts[..at], &tail), framed(&parts));
            }
        }
        assert_ne!(
            c.key(base, &[b"ab", b"c"], &[]),
            c.key(base, &[b"a", b"bc"], &[])
        );
        assert_ne!(c.key(base, &[b"a"], &[]), c.key(base, &[b"a", b""], &[]));
        assert_ne!(c.key(base, &[b"a"], &[]), c.key(base ^ 1, &[b"a"], &[]));
        assert_ne!(
            c.key(base, &[b"a"], &[]),
            c.key(base ^ 1 << 64, &[b"a"], &[])
        );
    }

    #[test]
    fn a_fill_that_crossed_an_invalidation_is_dropped() {
        let c = QueryCache::new(100, 1 << 20);
        let t = tags(&["table:public.a"]);
        let g = c.generation();
        c.invalidate(&t, 42);
        assert!(!c.store(1, result(1), &t, 1000, g, 0));
        assert!(c.get(1, 0).is_none());
        let g = c.generation();
        assert_eq!(c.pending_lsn(&t), 42);
        assert!(c.store(1, result(1), &t, 1000, g, 0));
        assert!(c.get(1, 0).is_some());
        // An invalidation of another tag does not drop the fill.
        let g = c.generation();
        c.invalidate(&tags(&["table:public.b"]), 7);
        assert!(c.store(2, result(2), &t, 1000, g, 0));
        assert_eq!(c.invalidate(&t, 50), 2);
        assert!(c.is_empty());
        assert_eq!(c.used_bytes(), 0);
    }

    #[test]
    fn a_refill_of_the_same_key_stays_linked_to_its_tags() {
        let c = QueryCache::new(100, 1 << 20);
        let t = tags(&["table:public.a"]);
        let g = c.generation();
        assert!(c.store(1, result(1), &t, 1000, g, 0));
        assert!(
            c.store(1, result(2), &t, 1000, g, 0),
            "a second fill replaces the first"
        );
        assert_eq!(c.invalidate(&t, 1), 1);
        assert!(
            c.get(1, 0).is_none(),
            "the replacing entry was invalidated too"
        );
        assert_eq!(c.used_bytes(), 0);
    }

    #[test]
    fn flush_and_prune_only_drop_fills() {
        let c = QueryCache::new(100, 1 << 20);
        let t = tags(&["x"]);
        let g = c.generation();
        c.flush(9);
        assert!(!c.store(1, result(1), &t, 1000, g, 0));
        assert_eq!(c.pending_lsn(&t), 9);
    }

    #[test]
    fn bounded_by_entries_and_bytes_and_expiry() {
        let c = QueryCache::new(SHARDS, 1 << 20);
        let t = tags(&["x"]);
        for k in 0..1000u128 {
            let g = c.generation();
            c.store(k, result(k as i64), &t, 1000, g, 0);
        }
        assert!(c.len() <= SHARDS);
        let small = QueryCache::new(1000, 2000);
        for k in 0..1000u128 {
            let g = small.generation();
            small.store(k, result(k as i64), &t, 1000, g, 0);
        }
        assert!(small.used_bytes() <= 2000);
        assert!(small.get(999, 0).is_some());
        assert!(small.get(999, 1000).is_none(), "expired");
        // The tag index holds only live keys.
        let live = small.len();
        assert_eq!(small.invalidate(&t, 0), live);
    }

    #[test]
    fn replies_render_in_each_format() {
        let c = QueryCache::new(10, 1 << 20);
        let g = c.generation();
        c.store(1, result(5), &[], 1000, g, 0);
        let e = c.get(1, 0).unwrap();
        assert_eq!(
            e.reply(Format::Resp2),
            b"*2\r\n*1\r\n$1\r\nn\r\n*1\r\n:5\r\n"
        );
        let json = String::from_utf8_lossy(e.reply(Format::Json)).to_string();
        assert!(json.contains(r#""source":"l1""#), "{json}");
    }

    #[tokio::test]
    async fn single_flight_runs_once() {
        let c = Arc::new(QueryCache::new(10, 1 << 20));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (c, runs) = (c.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                c.single_flight(7, || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Ok((result(1), crate::db::database::Source::Primary))
                })
                .await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(c.flights.lock().is_empty());
    }
}
