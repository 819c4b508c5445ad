//! The ordered index of a sorted set: (score, member) pairs in Redis's order (by score, then
//! by member bytes), with O(log n) insert, remove, rank and select — what Redis gets from its
//! skiplist with spans. It is an order-statistic treap (rotation-based insert and remove) whose
//! nodes live in one arena (`Vec`), linked by `u32` indices, each carrying its subtree's size.
//!
//! Scores are never NaN here (the commands refuse NaN), so `f64`'s partial order is total.

use std::cmp::Ordering;

const NIL: u32 = u32::MAX;

#[derive(Clone)]
struct Node {
    score: f64,
    member: Box<[u8]>,
    left: u32,
    right: u32,
    size: u32,
    prio: u32,
}

#[derive(Clone)]
pub struct RankTree {
    nodes: Vec<Node>,
    free: Vec<u32>,
    root: u32,
    seed: u32,
}

impl Default for RankTree {
    fn default() -> Self {
        RankTree {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            seed: 0x9E37_79B9,
        }
    }
}

/// Redis's order of sorted-set elements.
pub fn order(a: (f64, &[u8]), b: (f64, &[u8])) -> Ordering {
    a.0.partial_cmp(&b.0)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a.1.cmp(b.1))
}

impl RankTree {
    pub fn len(&self) -> usize {
        self.size(self.root) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.root == NIL
    }

    fn size(&self, t: u32) -> u32 {
        if t == NIL {
            0
        } else {
            self.nodes[t as usize].size
        }
    }

    fn update(&mut self, t: u32) {
        let n = &self.nodes[t as usize];
        let s = 1 + self.size(n.left) + self.size(n.right);
        self.nodes[t as usize].size = s;
    }

    fn key(&self, t: u32) -> (f64, &[u8]) {
        let n = &self.nodes[t as usize];
        (n.score, &n.member)
    }

    fn rotate_right(&mut self, t: u32) -> u32 {
        let l = self.nodes[t as usize].left;
        self.nodes[t as usize].left = self.nodes[l as usize].right;
        self.nodes[l as usize].right = t;
        self.update(t);
        self.update(l);
        l
    }

    fn rotate_left(&mut self, t: u32) -> u32 {
        let r = self.nodes[t as usize].right;
        self.nodes[t as usize].right = self.nodes[r as usize].left;
        self.nodes[r as usize].left = t;
        self.update(t);
        self.update(r);
        r
    }

    /// Inserts node `id` below `t` by key, rotating it up while its priority is higher: one
    /// walk down the path and back (a split-and-merge insert touches the path three times).
    fn insert_at(&mut self, t: u32, id: u32) -> u32 {
        if t == NIL {
            return id;
        }
        let goes_left = order(self.key(id), self.key(t)) == Ordering::Less;
        let mut t = t;
        if goes_left {
            let l = self.insert_at(self.nodes[t as usize].left, id);
            self.nodes[t as usize].left = l;
            if self.nodes[l as usize].prio > self.nodes[t as usize].prio {
                t = self.rotate_right(t);
            }
        } else {
            let r = self.insert_at(self.nodes[t as usize].right, id);
            self.nodes[t as usize].right = r;
            if self.nodes[r as usize].prio > self.nodes[t as usize].prio {
                t = self.rotate_left(t);
            }
        }
        self.update(t);
        t
    }

    /// Removes the node with `key` below `t`; returns the new subtree and the removed node.
    fn remove_at(&mut self, t: u32, key: (f64, &[u8])) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        let (left, right) = (self.nodes[t as usize].left, self.nodes[t as usize].right);
        match order(key, self.key(t)) {
            Ordering::Less => {
                let (l, gone) = self.remove_at(left, key);
                self.nodes[t as usize].left = l;
                self.update(t);
                (t, gone)
            }
            Ordering::Greater => {
                let (r, gone) = self.remove_at(right, key);
                self.nodes[t as usize].right = r;
                self.update(t);
                (t, gone)
            }
            Ordering::Equal => (self.merge(left, right), t),
        }
    }

    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].prio > self.nodes[b as usize].prio {
            let ar = self.nodes[a as usize].right;
            let m = self.merge(ar, b);
            self.nodes[a as usize].right = m;
            self.update(a);
            a
        } else {
            let bl = self.nodes[b as usize].left;
            let m = self.merge(a, bl);
            self.nodes[b as usize].left = m;
            self.update(b);
            b
        }
    }

    fn next_prio(&mut self) -> u32 {
        // xorshift32: priorities only need to be well spread, not unpredictable.
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.seed = x;
        x
    }

    /// Inserts a pair that is not in the tree.
    pub fn insert(&mut self, score: f64, member: &[u8]) {
        let node = Node {
            score,
            member: member.into(),
            left: NIL,
            right: NIL,
            size: 1,
            prio: self.next_prio(),
        };
        let id = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        let root = self.root;
        self.root = self.insert_at(root, id);
    }

    /// Removes a pair; true when it was there.
    pub fn remove(&mut self, score: f64, member: &[u8]) -> bool {
        let root = self.root;
        let (root, gone) = self.remove_at(root, (score, member));
        self.root = root;
        let found = gone != NIL;
        if found {
            self.nodes[gone as usize].member = Box::default();
            self.nodes[gone as usize].left = NIL;
            self.nodes[gone as usize].right = NIL;
            self.free.push(gone);
        }
        if self.root == NIL {
            // Empty: give the arena back.
            self.nodes.clear();
            self.free.clear();
        }
        found
    }

    /// Number of elements ordered before `key`.
    pub fn rank_of(&self, key: (f64, &[u8])) -> usize {
        self.count_while(|k| order(k, key) == Ordering::Less)
    }

    /// Number of elements for which `before` holds, where `before` is true for a prefix of the
    /// order (e.g. "score < 3").
    pub fn count_while(&self, before: impl Fn((f64, &[u8])) -> bool) -> usize {
        let mut t = self.root;
        let mut acc = 0;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if before((n.score, &n.member)) {
                acc += self.size(n.left) + 1;
                t = n.right;
            } else {
                t = n.left;
            }
        }
        acc as usize
    }

    /// The element at a rank (0-based).
    pub fn get(&self, rank: usize) -> Option<(f64, &[u8])> {
        let mut t = self.root;
        let mut k = rank as u32;
        while t != NIL {
            let n = &self.nodes[t as usize];
            let ls = self.size(n.left);
            match k.cmp(&ls) {
                Ordering::Less => t = n.left,
                Ordering::Equal => return Some((n.score, &n.member)),
                Ordering::Greater => {
                    k -= ls + 1;
                    t = n.right;
                }
            }
        }
        None
    }

    /// Bytes of the arena (for memory accounting).
    pub fn capacity_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Against a sorted reference: same order, ranks and lengths after any inserts/removes.
        #[test]
        fn behaves_like_a_sorted_set(ops in proptest::collection::vec((any::<bool>(), -20i32..20, 0u8..6), 1..200)) {
            let mut t = RankTree::default();
            let mut model: BTreeSet<(i32, Vec<u8>)> = BTreeSet::new();
            for (add, score, m) in ops {
                let member = vec![b'a' + m];
                if add {
                    if !model.iter().any(|(_, mm)| *mm == member) {
                        model.insert((score, member.clone()));
                        t.insert(score as f64, &member);
                    }
                } else if let Some(old) = model.iter().find(|(_, mm)| *mm == member).cloned() {
                    model.remove(&old);
                    prop_assert!(t.remove(old.0 as f64, &member));
                }
                prop_assert_eq!(t.len(), model.len());
                for (i, (s, m)) in model.iter().enumerate() {
                    prop_assert_eq!(t.get(i), Some((*s as f64, &m[..])));
                    prop_assert_eq!(t.rank_of((*s as f64, m)), i);
                }
                prop_assert_eq!(t.count_while(|k| k.0 < 0.0), model.iter().filter(|(s, _)| *s < 0).count());
            }
        }
    }
}
