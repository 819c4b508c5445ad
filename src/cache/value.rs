//! The data-type objects a key can hold besides a plain string (which lives inline in its
//! [`Entry`](super::entry::Entry)), with the memory accounting the eviction policy reads.
//!
//! Objects keep a running byte count so that accounting is O(1) per mutation. Command semantics
//! (error texts, argument parsing) live in `command/`, not here.

use indexmap::map::raw_entry_v1::{RawEntryApiV1, RawEntryMut};
use indexmap::{IndexMap, IndexSet};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::hash::BuildHasher;

/// A set member, hash field or sorted-set member: up to 24 bytes live inline in the table's own
/// slot, so looking one up touches no further heap block (most members are short ids).
pub type Member = SmallVec<[u8; 24]>;

type Map = IndexMap<Member, Box<[u8]>, foldhash::fast::RandomState>;
type Members = IndexSet<Member, foldhash::fast::RandomState>;

/// Redis's hash-max-listpack-entries (512 built in to Redis 7.0): up to this size a hash is a
/// small, ordered listpack.
pub const LISTPACK_MAX: usize = 512;

/// Redis's set-max-intset-entries: up to this size a set of integers is an intset.
pub const INTSET_MAX: usize = 512;

/// Redis's hash-max-listpack-value: a longer field or value turns a hash into a hash table.
pub const LISTPACK_VALUE_MAX: usize = 64;

/// Per-element bookkeeping the allocator and the map add on top of the bytes themselves.
const ELEMENT_OVERHEAD: usize = 48;

/// A value that is not a plain string.
#[derive(Clone)]
pub enum Object {
    Hash(HashValue),
    Set(SetValue),
    List(ListValue),
    ZSet(ZSetValue),
}

/// Typed access to one kind of object, for the command families.
pub trait Typed: Default + Sized {
    fn of(o: &Object) -> Option<&Self>;
    fn of_mut(o: &mut Object) -> Option<&mut Self>;
    fn into_object(self) -> Object;
}

macro_rules! typed {
    ($t:ty, $v:ident) => {
        impl Typed for $t {
            fn of(o: &Object) -> Option<&Self> {
                match o {
                    Object::$v(x) => Some(x),
                    _ => None,
                }
            }
            fn of_mut(o: &mut Object) -> Option<&mut Self> {
                match o {
                    Object::$v(x) => Some(x),
                    _ => None,
                }
            }
            fn into_object(self) -> Object {
                Object::$v(self)
            }
        }
    };
}

typed!(HashValue, Hash);
typed!(SetValue, Set);
typed!(ListValue, List);
typed!(ZSetValue, ZSet);

impl Object {
    /// The name TYPE prints.
    pub fn type_name(&self) -> &'static str {
        match self {
            Object::Hash(_) => "hash",
            Object::Set(_) => "set",
            Object::List(_) => "list",
            Object::ZSet(_) => "zset",
        }
    }

    /// The name OBJECT ENCODING prints.
    pub fn encoding(&self) -> &'static str {
        match self {
            Object::Hash(h) if !h.hashtable => "listpack",
            Object::Hash(_) => "hashtable",
            Object::Set(s) if s.is_intset() => "intset",
            Object::Set(_) => "hashtable",
            // Redis 7.0 keeps every list in a quicklist.
            Object::List(_) => "quicklist",
            Object::ZSet(z) if !z.skiplist => "listpack",
            Object::ZSet(_) => "skiplist",
        }
    }

    pub fn mem_usage(&self) -> usize {
        match self {
            Object::Hash(h) => 64 + h.bytes,
            Object::Set(s) => 64 + s.bytes,
            Object::List(l) => 64 + l.bytes,
            Object::ZSet(z) => 64 + z.bytes + z.tree.capacity_bytes(),
        }
    }

    /// True when the object holds no elements (Redis deletes such keys).
    pub fn is_empty(&self) -> bool {
        match self {
            Object::Hash(h) => h.map.is_empty(),
            Object::Set(s) => s.members.is_empty(),
            Object::List(l) => l.items.is_empty(),
            Object::ZSet(z) => z.scores.is_empty(),
        }
    }
}

/// A hash: field → value, in insertion order (HSCAN's cursor is a position).
#[derive(Default, Clone)]
pub struct HashValue {
    map: Map,
    bytes: usize,
    /// Redis converts a listpack hash to a hash table once and never back.
    hashtable: bool,
}

impl HashValue {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether Redis would keep this hash as a listpack (small and ordered).
    pub fn is_listpack(&self) -> bool {
        !self.hashtable
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        self.map.get(field).map(|v| &v[..])
    }

    /// Sets a field; true when the field is new.
    pub fn insert(&mut self, field: &[u8], val: &[u8]) -> bool {
        // One hash and one probe whether the field is new or not.
        let hash = self.map.hasher().hash_one(field);
        match self
            .map
            .raw_entry_mut_v1()
            .from_key_hashed_nocheck(hash, field)
        {
            RawEntryMut::Occupied(mut o) => {
                let v = o.get_mut();
                if v.len() == val.len() {
                    // Same size: overwrite in place; a new block and freeing the old (a cold
                    // cache line that free() reads) cost more than the copy.
                    v.copy_from_slice(val);
                } else {
                    self.bytes = self.bytes - v.len() + val.len();
                    *v = val.into();
                }
                self.hashtable |= val.len() > LISTPACK_VALUE_MAX;
                false
            }
            RawEntryMut::Vacant(slot) => {
                self.bytes += field.len() + val.len() + ELEMENT_OVERHEAD;
                slot.insert_hashed_nocheck(hash, Member::from_slice(field), val.into());
                self.hashtable |= self.map.len() > LISTPACK_MAX
                    || field.len() > LISTPACK_VALUE_MAX
                    || val.len() > LISTPACK_VALUE_MAX;
                true
            }
        }
    }

    /// Removes a field; true when it existed.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        // Small hashes keep insertion order like Redis's listpack encoding; big ones (a hash
        // table in Redis, unordered) take the O(1) removal.
        let removed = if !self.hashtable {
            self.map.shift_remove(field)
        } else {
            self.map.swap_remove(field)
        };
        match removed {
            Some(v) => {
                self.bytes -= field.len() + v.len() + ELEMENT_OVERHEAD;
                true
            }
            None => false,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map.iter().map(|(k, v)| (&k[..], &v[..]))
    }

    /// The element at a position (for cursor-based scans and random picks).
    pub fn get_index(&self, i: usize) -> Option<(&[u8], &[u8])> {
        self.map.get_index(i).map(|(k, v)| (&k[..], &v[..]))
    }
}

/// A set of members; positions give SSCAN its cursor and SPOP/SRANDMEMBER O(1) picks.
#[derive(Default, Clone)]
pub struct SetValue {
    members: Members,
    bytes: usize,
    /// Redis converts an intset to a hash table once (a non-integer member, or too many) and
    /// never back.
    hashtable: bool,
}

fn is_integer(m: &[u8]) -> bool {
    m.len() <= 20 && crate::command::args::parse_i64(m).is_some()
}

impl SetValue {
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, m: &[u8]) -> bool {
        self.members.contains(m)
    }

    /// Adds a member; true when it is new.
    pub fn insert(&mut self, m: &[u8]) -> bool {
        if self.members.contains(m) {
            return false;
        }
        self.bytes += m.len() + ELEMENT_OVERHEAD;
        self.members.insert(Member::from_slice(m));
        self.hashtable |= !is_integer(m) || self.members.len() > INTSET_MAX;
        true
    }

    /// Removes a member; true when it was there.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        if self.members.swap_remove(m) {
            self.forget(m);
            true
        } else {
            false
        }
    }

    fn forget(&mut self, m: &[u8]) {
        self.bytes -= m.len() + ELEMENT_OVERHEAD;
    }

    /// Removes and returns the member at a position (SPOP).
    pub fn take_index(&mut self, i: usize) -> Option<Member> {
        let m = self.members.swap_remove_index(i)?;
        self.forget(&m);
        Some(m)
    }

    pub fn get_index(&self, i: usize) -> Option<&[u8]> {
        self.members.get_index(i).map(|m| &m[..])
    }

    /// Redis 7.0 keeps small all-integer sets as a sorted intset.
    pub fn is_intset(&self) -> bool {
        !self.hashtable
    }

    /// Members in the order Redis returns them: ascending for an intset, else stored order.
    pub fn ordered(&self) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = self.members.iter().map(|m| &m[..]).collect();
        if self.is_intset() {
            v.sort_by_key(|m| crate::command::args::parse_i64(m).unwrap_or(0));
        }
        v
    }
}

/// A list: a double-ended queue of elements.
#[derive(Default, Clone)]
pub struct ListValue {
    items: VecDeque<Box<[u8]>>,
    bytes: usize,
}

impl ListValue {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn cost(v: &[u8]) -> usize {
        v.len() + 16
    }

    pub fn push_front(&mut self, v: &[u8]) {
        self.bytes += Self::cost(v);
        self.items.push_front(v.into());
    }

    pub fn push_back(&mut self, v: &[u8]) {
        self.bytes += Self::cost(v);
        self.items.push_back(v.into());
    }

    pub fn pop_front(&mut self) -> Option<Box<[u8]>> {
        let v = self.items.pop_front()?;
        self.bytes -= Self::cost(&v);
        Some(v)
    }

    pub fn pop_back(&mut self) -> Option<Box<[u8]>> {
        let v = self.items.pop_back()?;
        self.bytes -= Self::cost(&v);
        Some(v)
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.items.get(i).map(|v| &v[..])
    }

    pub fn set(&mut self, i: usize, v: &[u8]) -> bool {
        match self.items.get_mut(i) {
            Some(slot) => {
                self.bytes = self.bytes - slot.len() + v.len();
                *slot = v.into();
                true
            }
            None => false,
        }
    }

    pub fn insert(&mut self, i: usize, v: &[u8]) {
        self.bytes += Self::cost(v);
        self.items.insert(i, v.into());
    }

    pub fn remove(&mut self, i: usize) -> Option<Box<[u8]>> {
        let v = self.items.remove(i)?;
        self.bytes -= Self::cost(&v);
        Some(v)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &[u8]> + ExactSizeIterator {
        self.items.iter().map(|v| &v[..])
    }

    /// Keeps only positions `start..=end` (LTRIM); an empty range empties the list.
    pub fn retain_range(&mut self, range: Option<(usize, usize)>) {
        match range {
            None => {
                self.items.clear();
                self.bytes = 0;
            }
            Some((s, e)) => {
                self.items.truncate(e + 1);
                self.items.drain(..s);
                self.bytes = self.items.iter().map(|v| Self::cost(v)).sum();
            }
        }
    }
}

/// Redis's zset-max-listpack-entries / -value: beyond either a sorted set is a skiplist.
pub const ZSET_LISTPACK_MAX: usize = 128;

/// A sorted set: member → score, plus the (score, member) order with ranks.
#[derive(Default, Clone)]
pub struct ZSetValue {
    scores: IndexMap<Member, f64, foldhash::fast::RandomState>,
    tree: super::ranktree::RankTree,
    bytes: usize,
    /// Redis converts a listpack sorted set to a skiplist once and never back.
    skiplist: bool,
}

impl ZSetValue {
    /// An empty set with the encoding Redis gives a computed set of `n` members, the longest
    /// `longest` bytes (ZUNIONSTORE and ZINTERSTORE build a skiplist and convert it to a
    /// listpack only when it is small enough).
    pub fn for_result(n: usize, longest: usize) -> ZSetValue {
        ZSetValue {
            skiplist: n > ZSET_LISTPACK_MAX || longest > LISTPACK_VALUE_MAX,
            ..ZSetValue::default()
        }
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Sets a member's score; returns the previous score, if any. Like Redis, a listpack keeps
    /// a score as text it reads `-0` back from as `0`, while a skiplist keeps `-0`.
    pub fn insert(&mut self, member: &[u8], score: f64) -> Option<f64> {
        match self.scores.get_mut(member) {
            Some(old) => {
                let score = if self.skiplist { score } else { score + 0.0 };
                let prev = *old;
                if prev != score {
                    *old = score;
                    self.tree.update(prev, score, member);
                }
                Some(prev)
            }
            None => {
                // A member that makes the set a skiplist is added to the skiplist.
                self.skiplist |=
                    self.scores.len() + 1 > ZSET_LISTPACK_MAX || member.len() > LISTPACK_VALUE_MAX;
                let score = if self.skiplist { score } else { score + 0.0 };
                self.scores.insert(Member::from_slice(member), score);
                self.tree.insert(score, member);
                self.bytes += member.len() + ELEMENT_OVERHEAD;
                None
            }
        }
    }

    /// Removes a member; returns its score if it was there.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let score = self.scores.swap_remove(member)?;
        self.tree.remove(score, member);
        self.bytes -= member.len() + ELEMENT_OVERHEAD;
        Some(score)
    }

    /// Removes and returns the lowest element (`max`: the highest), as ZPOPMIN/ZPOPMAX take
    /// it: straight off the end of the order, and the member handed over, not copied.
    pub fn pop(&mut self, max: bool) -> Option<(f64, Member)> {
        let (score, m) = self.tree.pop(max)?;
        let (_, member, _) = self.scores.swap_remove_full(m.as_ref())?;
        self.bytes -= member.len() + ELEMENT_OVERHEAD;
        Some((score, member))
    }

    /// The element at a rank in ascending order.
    pub fn at(&self, rank: usize) -> Option<(f64, &[u8])> {
        self.tree.get(rank)
    }

    /// Number of elements ordered before the given (score, member).
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let s = self.score(member)?;
        Some(self.tree.rank_of((s, member)))
    }

    /// Number of leading elements (in order) for which `before` holds.
    pub fn count_while(&self, before: impl Fn((f64, &[u8])) -> bool) -> usize {
        self.tree.count_while(before)
    }

    /// Members and scores by insertion position (ZSCAN's cursor).
    pub fn get_index(&self, i: usize) -> Option<(&[u8], f64)> {
        self.scores.get_index(i).map(|(m, s)| (&m[..], *s))
    }
}
