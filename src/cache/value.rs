//! The data-type objects a key can hold besides a plain string (which lives inline in its
//! [`Entry`](super::entry::Entry)), with the memory accounting the eviction policy reads.
//!
//! Objects keep a running byte count so that accounting is O(1) per mutation. Command semantics
//! (error texts, argument parsing) live in `command/`, not here.

use indexmap::IndexMap;

type Map = IndexMap<Box<[u8]>, Box<[u8]>, foldhash::fast::RandomState>;

/// Redis's hash-max-listpack-entries: up to this size a hash is a small, ordered listpack.
pub const LISTPACK_MAX: usize = 128;

/// Per-element bookkeeping the allocator and the map add on top of the bytes themselves.
const ELEMENT_OVERHEAD: usize = 48;

/// A value that is not a plain string.
#[derive(Clone)]
pub enum Object {
    Hash(HashValue),
}

impl Object {
    /// The name TYPE prints.
    pub fn type_name(&self) -> &'static str {
        match self {
            Object::Hash(_) => "hash",
        }
    }

    /// The name OBJECT ENCODING prints.
    pub fn encoding(&self) -> &'static str {
        match self {
            Object::Hash(h) if h.len() <= LISTPACK_MAX => "listpack",
            Object::Hash(_) => "hashtable",
        }
    }

    pub fn mem_usage(&self) -> usize {
        match self {
            Object::Hash(h) => 64 + h.bytes,
        }
    }

    /// True when the object holds no elements (Redis deletes such keys).
    pub fn is_empty(&self) -> bool {
        match self {
            Object::Hash(h) => h.map.is_empty(),
        }
    }
}

/// A hash: field → value, in insertion order (HSCAN's cursor is a position).
#[derive(Default, Clone)]
pub struct HashValue {
    map: Map,
    bytes: usize,
}

impl HashValue {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        self.map.get(field).map(|v| &v[..])
    }

    /// Sets a field; true when the field is new.
    pub fn insert(&mut self, field: &[u8], val: &[u8]) -> bool {
        match self.map.get_mut(field) {
            Some(v) => {
                self.bytes = self.bytes - v.len() + val.len();
                *v = val.into();
                false
            }
            None => {
                self.bytes += field.len() + val.len() + ELEMENT_OVERHEAD;
                self.map.insert(field.into(), val.into());
                true
            }
        }
    }

    /// Removes a field; true when it existed.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        // Small hashes keep insertion order like Redis's listpack encoding; big ones (a hash
        // table in Redis, unordered) take the O(1) removal.
        let removed = if self.map.len() <= LISTPACK_MAX {
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
