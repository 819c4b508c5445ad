//! One key of the L1 store in one heap block, reached through an 8-byte pointer.
//!
//! Memory per key is a first-class target (DESIGN.md "L1 store"): a key with a string value is a
//! single allocation holding a 16-byte header, the optional expiry, the key and the value, so a
//! 16-byte key with a 100-byte value costs one 144-byte malloc chunk plus its slot in the index.
//! Values are copied in on store (a slice of the read buffer would pin the whole buffer).
//! Other data types keep a pointer to their [`Object`] in the block instead of inline bytes.
//!
//! This module is the only `unsafe` code of the store; it exposes a safe API and is tested on its
//! own. It knows nothing of hashing, expiry policy or eviction.

use super::value::Object;
use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;

const KIND_STR: u8 = 0;
const KIND_OBJ: u8 = 1;
const FLAG_EXPIRE: u8 = 1;

#[repr(C)]
struct Header {
    lru: u32,
    key_len: u32,
    val_len: u32,
    kind: u8,
    flags: u8,
    _pad: u16,
}

const HEADER: usize = std::mem::size_of::<Header>();

/// A stored value as the handlers see it.
pub enum ValueRef<'a> {
    Str(&'a [u8]),
    Obj(&'a Object),
}

/// A key, its value, its expiry (unix ms) and its LRU clock.
pub struct Entry {
    ptr: NonNull<Header>,
}

// SAFETY: an Entry owns its block exclusively (like a Box), and Object is Send + Sync.
unsafe impl Send for Entry {}
unsafe impl Sync for Entry {}

impl Entry {
    /// A string entry; the bytes of `key` and `val` are copied into the block.
    pub fn new_str(key: &[u8], val: &[u8], expire_ms: Option<u64>, lru: u32) -> Entry {
        Self::build(key, Payload::Str(val), expire_ms, lru)
    }

    /// An entry holding a data-type object.
    pub fn new_obj(key: &[u8], obj: Box<Object>, expire_ms: Option<u64>, lru: u32) -> Entry {
        Self::build(key, Payload::Obj(obj), expire_ms, lru)
    }

    fn layout(key_len: usize, val_len: usize, expire: bool, obj: bool) -> Layout {
        let size = HEADER + 8 * expire as usize + 8 * obj as usize + key_len + val_len;
        // Header alignment is 4; the u64 expiry and the object pointer need 8.
        match Layout::from_size_align(size, 8) {
            Ok(l) => l,
            Err(_) => handle_alloc_error(Layout::new::<u64>()),
        }
    }

    fn build(key: &[u8], payload: Payload<'_>, expire_ms: Option<u64>, lru: u32) -> Entry {
        let (val_len, is_obj) = match &payload {
            Payload::Str(v) => (v.len(), false),
            Payload::Obj(_) => (0, true),
        };
        let key_len = u32::try_from(key.len()).expect("key length checked by the protocol limit");
        let val_len32 = u32::try_from(val_len).expect("value length checked by the protocol limit");
        let layout = Self::layout(key.len(), val_len, expire_ms.is_some(), is_obj);
        // SAFETY: layout has non-zero size (HEADER > 0); every byte written below lies inside it.
        unsafe {
            let raw = alloc(layout);
            if raw.is_null() {
                handle_alloc_error(layout);
            }
            let hdr = raw as *mut Header;
            hdr.write(Header {
                lru,
                key_len,
                val_len: val_len32,
                kind: if is_obj { KIND_OBJ } else { KIND_STR },
                flags: if expire_ms.is_some() { FLAG_EXPIRE } else { 0 },
                _pad: 0,
            });
            let mut off = HEADER;
            if let Some(at) = expire_ms {
                (raw.add(off) as *mut u64).write(at);
                off += 8;
            }
            let val_src: &[u8] = match payload {
                Payload::Obj(obj) => {
                    (raw.add(off) as *mut *mut Object).write(Box::into_raw(obj));
                    off += 8;
                    &[]
                }
                Payload::Str(v) => v,
            };
            std::ptr::copy_nonoverlapping(key.as_ptr(), raw.add(off), key.len());
            off += key.len();
            std::ptr::copy_nonoverlapping(val_src.as_ptr(), raw.add(off), val_src.len());
            Entry {
                ptr: NonNull::new_unchecked(hdr),
            }
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: ptr points to a live, initialised block owned by self.
        unsafe { self.ptr.as_ref() }
    }

    fn base(&self) -> *mut u8 {
        self.ptr.as_ptr() as *mut u8
    }

    fn has_expire(&self) -> bool {
        self.header().flags & FLAG_EXPIRE != 0
    }

    fn is_obj(&self) -> bool {
        self.header().kind == KIND_OBJ
    }

    fn obj_offset(&self) -> usize {
        HEADER + 8 * self.has_expire() as usize
    }

    fn key_offset(&self) -> usize {
        self.obj_offset() + 8 * self.is_obj() as usize
    }

    pub fn key(&self) -> &[u8] {
        let h = self.header();
        // SAFETY: key_len bytes at key_offset were written by build() and live as long as self.
        unsafe {
            std::slice::from_raw_parts(self.base().add(self.key_offset()), h.key_len as usize)
        }
    }

    fn obj_ptr(&self) -> *mut Object {
        // SAFETY: only called for KIND_OBJ blocks, where build() wrote the pointer at obj_offset.
        unsafe { (self.base().add(self.obj_offset()) as *const *mut Object).read() }
    }

    pub fn value(&self) -> ValueRef<'_> {
        let h = self.header();
        if self.is_obj() {
            // SAFETY: the pointer came from Box::into_raw and is owned by this entry.
            ValueRef::Obj(unsafe { &*self.obj_ptr() })
        } else {
            let off = self.key_offset() + h.key_len as usize;
            // SAFETY: val_len bytes follow the key, written by build().
            ValueRef::Str(unsafe {
                std::slice::from_raw_parts(self.base().add(off), h.val_len as usize)
            })
        }
    }

    /// The string value, or None for an object.
    pub fn as_str(&self) -> Option<&[u8]> {
        match self.value() {
            ValueRef::Str(s) => Some(s),
            ValueRef::Obj(_) => None,
        }
    }

    pub fn obj(&self) -> Option<&Object> {
        match self.value() {
            ValueRef::Obj(o) => Some(o),
            ValueRef::Str(_) => None,
        }
    }

    pub fn obj_mut(&mut self) -> Option<&mut Object> {
        if self.is_obj() {
            // SAFETY: unique access through &mut self; the box is owned by this entry.
            Some(unsafe { &mut *self.obj_ptr() })
        } else {
            None
        }
    }

    pub fn expire_ms(&self) -> Option<u64> {
        if self.has_expire() {
            // SAFETY: FLAG_EXPIRE means build() wrote a u64 right after the header.
            Some(unsafe { (self.base().add(HEADER) as *const u64).read() })
        } else {
            None
        }
    }

    pub fn lru(&self) -> u32 {
        self.header().lru
    }

    pub fn set_lru(&mut self, clock: u32) {
        // SAFETY: unique access through &mut self.
        unsafe { self.ptr.as_mut().lru = clock }
    }

    /// Sets or clears the expiry; rebuilds the block only when the slot appears or disappears.
    pub fn set_expire(&mut self, expire_ms: Option<u64>) {
        match (self.has_expire(), expire_ms) {
            (true, Some(at)) => {
                // SAFETY: the slot exists (FLAG_EXPIRE) and we have unique access.
                unsafe { (self.base().add(HEADER) as *mut u64).write(at) }
            }
            (false, None) => {}
            _ => {
                let lru = self.lru();
                let rebuilt = match self.take_obj() {
                    Some(obj) => Entry::new_obj(self.key(), obj, expire_ms, lru),
                    None => {
                        Entry::new_str(self.key(), self.as_str().unwrap_or(&[]), expire_ms, lru)
                    }
                };
                *self = rebuilt;
            }
        }
    }

    /// Replaces the value with a string, keeping key, expiry and clock.
    pub fn set_str(&mut self, val: &[u8]) {
        let h = self.header();
        if !self.is_obj() && h.val_len as usize == val.len() {
            let off = self.key_offset() + h.key_len as usize;
            // SAFETY: same length as the existing value region, unique access.
            unsafe { std::ptr::copy_nonoverlapping(val.as_ptr(), self.base().add(off), val.len()) }
            return;
        }
        *self = Entry::new_str(self.key(), val, self.expire_ms(), self.lru());
    }

    /// The same value and expiry under another key (RENAME, MOVE).
    pub fn with_key(mut self, key: &[u8]) -> Entry {
        let (lru, expire) = (self.lru(), self.expire_ms());
        match self.take_obj() {
            Some(obj) => Entry::new_obj(key, obj, expire, lru),
            None => Entry::new_str(key, self.as_str().unwrap_or(&[]), expire, lru),
        }
    }

    /// A deep copy under another key (COPY).
    pub fn duplicate(&self, key: &[u8]) -> Entry {
        match self.value() {
            ValueRef::Str(s) => Entry::new_str(key, s, self.expire_ms(), self.lru()),
            ValueRef::Obj(o) => {
                Entry::new_obj(key, Box::new(o.clone()), self.expire_ms(), self.lru())
            }
        }
    }

    /// Moves the object out, leaving this entry an empty string (so Drop frees it once).
    fn take_obj(&mut self) -> Option<Box<Object>> {
        if !self.is_obj() {
            return None;
        }
        let p = self.obj_ptr();
        // SAFETY: we turn the block into a string block of length 0 in place: kind changes, the
        // pointer slot is now part of the (unused) tail, and ownership of the box moves out.
        unsafe {
            let key = self.key().to_vec();
            let expire = self.expire_ms();
            let lru = self.lru();
            let obj = Box::from_raw(p);
            // Rebuild as an empty string entry; the old block is freed without dropping the box.
            let old = std::mem::replace(self, Entry::new_str(&key, &[], expire, lru));
            old.free_block_only();
            Some(obj)
        }
    }

    /// Frees the block without touching the object it may point to (ownership moved out).
    fn free_block_only(self) {
        let layout = self.block_layout();
        let p = self.base();
        std::mem::forget(self);
        // SAFETY: p was allocated with exactly this layout.
        unsafe { dealloc(p, layout) }
    }

    fn block_layout(&self) -> Layout {
        let h = self.header();
        Self::layout(
            h.key_len as usize,
            h.val_len as usize,
            self.has_expire(),
            self.is_obj(),
        )
    }

    /// Bytes this entry costs, as the allocator will round them, including the object.
    pub fn mem_usage(&self) -> usize {
        let block = malloc_size(self.block_layout().size());
        block + self.obj().map_or(0, |o| o.mem_usage())
    }
}

/// The size glibc's malloc actually reserves for a request (8-byte header, 16-byte granules).
pub fn malloc_size(n: usize) -> usize {
    (n + 8 + 15).max(32) & !15
}

enum Payload<'a> {
    Str(&'a [u8]),
    Obj(Box<Object>),
}

impl Drop for Entry {
    fn drop(&mut self) {
        if self.is_obj() {
            // SAFETY: the box is owned by this entry and dropped exactly once.
            drop(unsafe { Box::from_raw(self.obj_ptr()) });
        }
        let layout = self.block_layout();
        // SAFETY: allocated in build() with this layout.
        unsafe { dealloc(self.base(), layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::value::HashValue;
    use proptest::prelude::*;

    #[test]
    fn string_roundtrip_and_sizes() {
        let e = Entry::new_str(b"key:000000000001", &[7u8; 100], None, 5);
        assert_eq!(e.key(), b"key:000000000001");
        assert_eq!(e.as_str().unwrap(), &[7u8; 100][..]);
        assert_eq!(e.expire_ms(), None);
        assert_eq!(e.lru(), 5);
        assert_eq!(e.mem_usage(), 144);
    }

    #[test]
    fn object_survives_expire_changes() {
        let mut h = HashValue::default();
        h.insert(b"f", b"v");
        let mut e = Entry::new_obj(b"h", Box::new(Object::Hash(h)), None, 1);
        e.set_expire(Some(42));
        assert_eq!(e.expire_ms(), Some(42));
        e.set_expire(None);
        let Some(Object::Hash(h)) = e.obj_mut() else {
            panic!("not a hash")
        };
        assert_eq!(h.get(b"f"), Some(&b"v"[..]));
        assert_eq!(e.key(), b"h");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn any_key_value_expire_sequence_reads_back(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            vals in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
            exps in proptest::collection::vec(proptest::option::of(any::<u64>()), 1..6),
        ) {
            let mut e = Entry::new_str(&key, &vals[0], exps[0], 0);
            for (i, v) in vals.iter().enumerate() {
                e.set_str(v);
                let x = exps[i % exps.len()];
                e.set_expire(x);
                e.set_lru(i as u32);
                prop_assert_eq!(e.key(), &key[..]);
                prop_assert_eq!(e.as_str().unwrap(), &v[..]);
                prop_assert_eq!(e.expire_ms(), x);
                prop_assert_eq!(e.lru(), i as u32);
            }
        }
    }
}
