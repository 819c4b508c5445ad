//! Tags on keys, for standalone mode: which keys carry which tag, so that `TAGINVAL` can remove
//! every key carrying a tag at once. (In tiered mode the same state lives in L2, as one set per
//! tag, so every instance sees it: see `command/tags.rs`.)
//!
//! The index maps (database, tag) to the keys of that database the tag was attached to (tags,
//! like keys, belong to one database). A key that was deleted
//! or expired since stays in the index until the tag is invalidated or the index is pruned, so
//! the index is bounded: once it holds more memberships than `4 × keys + 100 000`, memberships
//! of keys that no longer exist are dropped.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};

/// (database, tag) → the keys carrying the tag.
type Index = HashMap<(usize, Vec<u8>), HashSet<Vec<u8>>>;

#[derive(Default)]
pub struct TagIndex {
    tags: Mutex<Index>,
}

impl TagIndex {
    /// Attaches tags to a key; returns how many were new to it.
    pub fn add(&self, db: usize, key: &[u8], tags: &[&[u8]]) -> usize {
        let mut t = self.tags.lock();
        tags.iter()
            .filter(|tag| {
                t.entry((db, tag.to_vec()))
                    .or_default()
                    .insert(key.to_vec())
            })
            .count()
    }

    /// Removes the tags and returns the distinct keys that carried any of them.
    pub fn take(&self, db: usize, tags: &[&[u8]]) -> HashSet<Vec<u8>> {
        let mut t = self.tags.lock();
        let mut keys = HashSet::new();
        for tag in tags {
            if let Some(k) = t.remove(&(db, tag.to_vec())) {
                keys.extend(k);
            }
        }
        keys
    }

    /// Memberships held (for the bound and for INFO).
    pub fn len(&self) -> usize {
        self.tags.lock().values().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops memberships of keys for which `exists` is false, when the index has grown past
    /// its bound for `keys` live keys.
    pub fn prune_if_large(&self, keys: usize, exists: impl Fn(usize, &[u8]) -> bool) {
        let mut t = self.tags.lock();
        let n: usize = t.values().map(|s| s.len()).sum();
        if n <= keys.saturating_mul(4) + 100_000 {
            return;
        }
        t.retain(|(db, _), members| {
            members.retain(|k| exists(*db, k));
            !members.is_empty()
        });
    }

    pub fn clear(&self) {
        self.tags.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_returns_each_key_once_and_forgets_the_tags() {
        let t = TagIndex::default();
        assert_eq!(t.add(0, b"a", &[b"x", b"y"]), 2);
        assert_eq!(t.add(0, b"a", &[b"x"]), 0);
        t.add(0, b"b", &[b"y"]);
        t.add(1, b"a", &[b"z"]);
        let keys = t.take(0, &[b"x", b"y"]);
        assert_eq!(keys.len(), 2);
        assert!(t.take(0, &[b"x"]).is_empty());
        assert!(
            t.take(0, &[b"z"]).is_empty(),
            "z was attached in database 1"
        );
        assert_eq!(t.len(), 1);
    }
}
