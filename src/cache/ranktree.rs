//! The ordered index of a sorted set: (score, member) pairs in Redis's order (by score, then
//! by member bytes), with O(log n) insert, remove, rank and select — what Redis gets from its
//! skiplist with spans. It is a counted B+tree. A leaf is one allocation of up to 64 sorted
//! elements, their scores in one array and their members (inline up to 22 bytes) in another:
//! a search counts the lower scores in 512 contiguous bytes, branch-free, and reads members
//! only among equal scores. An inner node holds up to 32 children, each with its element count
//! (rank and select add these up) and, between neighbours, a separator key: the shortest key
//! that splits them, usually the right one's score with an empty member. 100 000 elements are
//! four levels deep, and the inner levels are small enough to stay in cache, so an operation
//! mostly misses it in the one leaf it works in (a treap missed at each of ~35 levels).
//! Non-root nodes are at least half full; a full leaf first shares with a neighbour that has
//! room and splits only when both are nearly full, so leaves run about three quarters full.
//! The first and last node of each level are exempt: an insert past the end of the last leaf
//! (or before the first) splits it lopsidedly, so ascending inserts (e.g. timestamps) leave
//! full leaves behind. A pop (ZPOPMIN/ZPOPMAX) walks that same edge without comparing keys, so
//! only edge nodes run short. A set of up to 128 elements (Redis's listpack size) has no tree
//! at all, just the two arrays, grown by doubling; it becomes a tree past 128 and turns back
//! at 64.
//!
//! Scores are never NaN here (the commands refuse NaN), so `f64`'s partial order is total.

use std::cmp::Ordering;
use std::mem;

/// Elements per leaf; a set of up to twice as many has no tree, just one sorted run.
const LEAF_CAP: usize = 64;
/// Array length of an inner node: 32 children plus the slot that takes a 33rd for the moment
/// before the node splits.
const INNER_SLOTS: usize = 33;
/// Members up to this long live inside their slot.
const INLINE: usize = 22;

/// A score and a member: an element, or a separator key.
type Slot = (f64, Member);

/// Redis's order of sorted-set elements.
pub fn order(a: (f64, &[u8]), b: (f64, &[u8])) -> Ordering {
    a.0.partial_cmp(&b.0)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a.1.cmp(b.1))
}

/// A member's bytes: inline when short (comparing them then reads the leaf's own memory, and
/// inserting or removing them costs no allocation), else on the heap. 24 bytes either way.
#[derive(Clone)]
enum Member {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Member {
    fn new(m: &[u8]) -> Member {
        if m.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..m.len()].copy_from_slice(m);
            Member::Inline {
                len: m.len() as u8,
                bytes,
            }
        } else {
            Member::Heap(m.into())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Member::Inline { len, bytes } => &bytes[..*len as usize],
            Member::Heap(b) => b,
        }
    }

    /// Bytes it holds on the heap.
    fn heap(&self) -> usize {
        match self {
            Member::Inline { .. } => 0,
            Member::Heap(b) => b.len(),
        }
    }
}

impl Default for Member {
    fn default() -> Self {
        Member::Inline {
            len: 0,
            bytes: [0; INLINE],
        }
    }
}

impl PartialEq for Member {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl AsRef<[u8]> for Member {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.bytes().fmt(f)
    }
}

/// The shortest key `k` with `left < k <= right`: `right`'s score with an empty member when
/// the scores differ, else `right`'s member cut just past where it departs from `left`'s.
fn separator(left: (f64, &[u8]), right: (f64, &[u8])) -> Slot {
    if left.0 < right.0 {
        return (right.0, Member::default());
    }
    let common = left
        .1
        .iter()
        .zip(right.1)
        .take_while(|(a, b)| a == b)
        .count();
    (right.0, Member::new(&right.1[..=common]))
}

/// The first index in `lo..hi` where `pred` fails, for a `pred` that holds on a prefix.
fn partition(mut lo: usize, mut hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Where `key` goes among sorted keys given as `scores` plus a member lookup: a branch-free
/// count of the lower scores (it vectorizes, and its loads do not wait on one another as a
/// binary search's do), then a binary search by member among equal scores only. With `le`,
/// the number of keys at or below `key`, else strictly below.
fn search<'a>(
    scores: &[f64],
    member: impl Fn(usize) -> &'a [u8],
    key: (f64, &[u8]),
    le: bool,
) -> usize {
    let i = scores.iter().filter(|&&s| s < key.0).count();
    if scores.get(i) != Some(&key.0) {
        return i;
    }
    let end = i + scores[i..].iter().take_while(|&&s| s == key.0).count();
    partition(i, end, |j| match member(j).cmp(key.1) {
        Ordering::Less => true,
        Ordering::Equal => le,
        Ordering::Greater => false,
    })
}

/// A sorted run of elements: a leaf's, or a small set's.
#[derive(Clone, Copy)]
struct Run<'a> {
    scores: &'a [f64],
    members: &'a [Member],
}

impl<'a> Run<'a> {
    fn key(self, j: usize) -> (f64, &'a [u8]) {
        (self.scores[j], self.members[j].bytes())
    }

    /// Number of elements before `k`.
    fn lower_bound(self, k: (f64, &[u8])) -> usize {
        search(self.scores, |j| self.members[j].bytes(), k, false)
    }

    /// Position of `k`, if it is there.
    fn find(self, k: (f64, &[u8])) -> Option<usize> {
        let i = self.lower_bound(k);
        (i < self.scores.len() && order(self.key(i), k) == Ordering::Equal).then_some(i)
    }

    fn count_while(self, before: &impl Fn((f64, &[u8])) -> bool) -> usize {
        partition(0, self.scores.len(), |j| before(self.key(j)))
    }
}

/// Gives element `pos` of a sorted run the score `new` and moves it to where that belongs.
fn rescore(scores: &mut [f64], members: &mut [Member], pos: usize, new: f64) {
    let old = scores[pos];
    let to = (new, members[pos].bytes());
    let dest = if new > old {
        let right = Run {
            scores: &scores[pos + 1..],
            members: &members[pos + 1..],
        };
        pos + right.lower_bound(to)
    } else {
        Run {
            scores: &scores[..pos],
            members: &members[..pos],
        }
        .lower_bound(to)
    };
    scores[pos] = new;
    if dest > pos {
        scores[pos..=dest].rotate_left(1);
        members[pos..=dest].rotate_left(1);
    } else {
        scores[dest..=pos].rotate_right(1);
        members[dest..=pos].rotate_right(1);
    }
}

/// The (score, member) order of one sorted set, with ranks.
#[derive(Clone, Default)]
pub struct RankTree(Tree<LEAF_CAP, INNER_SLOTS>);

impl RankTree {
    pub fn len(&self) -> usize {
        self.0.len
    }

    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// Inserts a pair that is not in the tree.
    pub fn insert(&mut self, score: f64, member: &[u8]) {
        self.0.insert((score, Member::new(member)));
    }

    /// Removes a pair; true when it was there.
    pub fn remove(&mut self, score: f64, member: &[u8]) -> bool {
        self.0.take((score, member)).is_some()
    }

    /// Removes and returns the first element (`last`: the last one) without searching: the
    /// walk follows the tree's left (right) edge, whose nodes may run below half full.
    pub fn pop(&mut self, last: bool) -> Option<(f64, impl AsRef<[u8]>)> {
        self.0.remove(if last { Which::Last } else { Which::First })
    }

    /// Moves `member` from score `old` to score `new`. When the new key falls in the same
    /// leaf (always so when its neighbours still bracket it, as in Redis's zslUpdateScore) only
    /// that leaf changes; otherwise it is a remove and an insert, reusing the member. A pair
    /// that is not there is just inserted.
    pub fn update(&mut self, old: f64, new: f64, member: &[u8]) {
        self.0.update((old, member), new);
    }

    /// Number of elements ordered before `key`.
    pub fn rank_of(&self, key: (f64, &[u8])) -> usize {
        self.0.rank_of(key)
    }

    /// Number of elements for which `before` holds, where `before` is true for a prefix of the
    /// order (e.g. "score < 3"). It is also asked about separator keys, which need not be
    /// elements, so it must be monotonic over all keys, as such thresholds are.
    pub fn count_while(&self, before: impl Fn((f64, &[u8])) -> bool) -> usize {
        self.0.count_while(before)
    }

    /// The element at a rank (0-based).
    pub fn get(&self, rank: usize) -> Option<(f64, &[u8])> {
        self.0.get(rank)
    }

    /// Bytes of the structure (for memory accounting): nodes, inline members and separators;
    /// the heap blocks of members longer than 22 bytes are the caller's to count.
    pub fn capacity_bytes(&self) -> usize {
        self.0.capacity_bytes()
    }

    /// Panics unless the structure is consistent: order, separators, counts, fill, accounting.
    /// O(n); for tests.
    pub fn check_invariants(&self) {
        self.0.check_invariants();
    }
}

/// A counted B+tree with leaves of up to `L` elements and inner nodes of up to `K - 1`
/// children (`K` is the arrays' length: the spare slot takes the overflow before a split).
/// Generic so that tests can run the same code with tiny nodes and many levels.
#[derive(Clone)]
struct Tree<const L: usize, const K: usize> {
    root: Root<L, K>,
    len: usize,
    stats: Stats,
}

impl<const L: usize, const K: usize> Default for Tree<L, K> {
    fn default() -> Self {
        Tree {
            root: Root::Small(Small::default()),
            len: 0,
            stats: Stats::default(),
        }
    }
}

#[derive(Clone)]
enum Root<const L: usize, const K: usize> {
    /// Up to `2 * L` elements.
    Small(Small),
    /// More than `L` elements (so at least two leaves, under an inner node).
    Node(Node<L, K>),
}

/// A set without a tree: one sorted run like a leaf's, but up to two leaves long and growing
/// by doubling.
#[derive(Clone, Default)]
struct Small {
    scores: Vec<f64>,
    members: Vec<Member>,
}

impl Small {
    fn run(&self) -> Run<'_> {
        Run {
            scores: &self.scores,
            members: &self.members,
        }
    }

    fn insert(&mut self, slot: Slot, max: usize) {
        let pos = self.run().lower_bound((slot.0, slot.1.bytes()));
        let (len, cap) = (self.scores.len(), self.scores.capacity());
        if len == cap {
            let more = (cap * 2).clamp(4.min(max), max) - len;
            self.scores.reserve_exact(more);
            self.members.reserve_exact(more);
        }
        self.scores.insert(pos, slot.0);
        self.members.insert(pos, slot.1);
    }

    fn capacity_bytes(&self) -> usize {
        self.scores.capacity() * mem::size_of::<f64>()
            + self.members.capacity() * mem::size_of::<Member>()
    }
}

/// What `capacity_bytes` counts of a tree, kept up to date by every structural change.
#[derive(Clone, Default, PartialEq, Debug)]
struct Stats {
    leaves: usize,
    inners: usize,
    /// Heap bytes of the separators' members.
    sep_heap: usize,
}

#[derive(Clone, Default)]
enum Node<const L: usize, const K: usize> {
    /// An unused child slot.
    #[default]
    Empty,
    Leaf(Box<Leaf<L>>),
    Inner(Box<Inner<L, K>>),
}

/// Elements `[..len]` in order; the slots past them hold default (heap-free) members.
#[derive(Clone)]
struct Leaf<const L: usize> {
    len: usize,
    scores: [f64; L],
    members: [Member; L],
}

/// Children `kids[..len]` with their element counts; `sep[j]` (score and member kept in two
/// arrays, so a search reads only scores) is the boundary between `kids[j]` and `kids[j + 1]`:
/// every key in `kids[j]` is below it, every key in `kids[j + 1]` at or above it. The slots
/// past the used ones are empty.
#[derive(Clone)]
struct Inner<const L: usize, const K: usize> {
    len: usize,
    counts: [u32; K],
    sep_scores: [f64; K],
    sep_members: [Member; K],
    kids: [Node<L, K>; K],
}

/// Whether a node is the first and/or the last of its level: those may be less than half full.
#[derive(Clone, Copy)]
struct Edges {
    first: bool,
    last: bool,
}

impl Edges {
    const ROOT: Edges = Edges {
        first: true,
        last: true,
    };

    fn kid(self, i: usize, len: usize) -> Edges {
        Edges {
            first: self.first && i == 0,
            last: self.last && i + 1 == len,
        }
    }
}

/// The element a removal takes: a given key, or the first or last in order (a pop, which
/// walks the edge of the tree without comparing keys).
#[derive(Clone, Copy)]
enum Which<'a> {
    Key((f64, &'a [u8])),
    First,
    Last,
}

impl Which<'_> {
    /// The position among `len` elements or children: `find` locates a key; the ends need no
    /// search. None when there is nothing to take.
    fn pick(self, len: usize, find: impl FnOnce((f64, &[u8])) -> Option<usize>) -> Option<usize> {
        match self {
            _ if len == 0 => None,
            Which::Key(k) => find(k),
            Which::First => Some(0),
            Which::Last => Some(len - 1),
        }
    }
}

/// A node's new right sibling after a split, and the separator between the two. `lopsided`
/// when the split left one side with everything but the new entry (an append past the last
/// element or before the first), which the parent repeats if it splits too.
struct Split<const L: usize, const K: usize> {
    sep: Slot,
    node: Node<L, K>,
    lopsided: bool,
}

/// Inserts `v` at `at` into `a[..len]` (`len < a.len()`).
fn shift_in<T>(a: &mut [T], len: usize, at: usize, v: T) {
    a[len] = v;
    a[at..=len].rotate_right(1);
}

/// Removes and returns `a[at]` from `a[..len]`, leaving a default at `a[len - 1]`.
fn shift_out<T: Default>(a: &mut [T], len: usize, at: usize) -> T {
    let v = mem::take(&mut a[at]);
    a[at..len].rotate_left(1);
    v
}

impl<const L: usize> Leaf<L> {
    fn new() -> Box<Self> {
        Box::new(Leaf {
            len: 0,
            scores: [0.0; L],
            members: std::array::from_fn(|_| Member::default()),
        })
    }

    fn run(&self) -> Run<'_> {
        Run {
            scores: &self.scores[..self.len],
            members: &self.members[..self.len],
        }
    }

    fn insert(&mut self, pos: usize, slot: Slot) {
        shift_in(&mut self.scores, self.len, pos, slot.0);
        shift_in(&mut self.members, self.len, pos, slot.1);
        self.len += 1;
    }

    fn remove(&mut self, pos: usize) -> Member {
        let n = self.len;
        self.len = n - 1;
        shift_out(&mut self.scores, n, pos);
        shift_out(&mut self.members, n, pos)
    }

    /// Moves the first `k` elements of `right` to the end of this leaf.
    fn pull(&mut self, right: &mut Self, k: usize) {
        let (l, r) = (self.len, right.len);
        self.scores[l..l + k].copy_from_slice(&right.scores[..k]);
        self.members[l..l + k].swap_with_slice(&mut right.members[..k]);
        right.scores.copy_within(k..r, 0);
        right.members[..r].rotate_left(k);
        self.len += k;
        right.len -= k;
    }

    /// Moves the last `k` elements of this leaf to the front of `right`.
    fn push(&mut self, right: &mut Self, k: usize) {
        let (l, r) = (self.len, right.len);
        right.scores.copy_within(..r, k);
        right.members[..r + k].rotate_right(k);
        right.scores[..k].copy_from_slice(&self.scores[l - k..l]);
        right.members[..k].swap_with_slice(&mut self.members[l - k..l]);
        self.len -= k;
        right.len += k;
    }

    /// The separator between this leaf and the next.
    fn separator(&self, right: &Self) -> Slot {
        separator(self.run().key(self.len - 1), right.run().key(0))
    }
}

impl<const L: usize, const K: usize> Inner<L, K> {
    fn new() -> Box<Self> {
        Box::new(Inner {
            len: 0,
            counts: [0; K],
            sep_scores: [0.0; K],
            sep_members: std::array::from_fn(|_| Member::default()),
            kids: std::array::from_fn(|_| Node::Empty),
        })
    }

    fn sep(&self, j: usize) -> (f64, &[u8]) {
        (self.sep_scores[j], self.sep_members[j].bytes())
    }

    /// The child whose range holds `key`: the number of separators at or below it.
    fn route(&self, key: (f64, &[u8])) -> usize {
        let n = self.len - 1;
        search(
            &self.sep_scores[..n],
            |j| self.sep_members[j].bytes(),
            key,
            true,
        )
    }

    /// The number of separators for which `pred` holds (true on a prefix).
    fn route_by(&self, pred: impl Fn((f64, &[u8])) -> bool) -> usize {
        partition(0, self.len - 1, |j| pred(self.sep(j)))
    }

    /// Whether `key` falls in child `i`'s range.
    fn covers(&self, i: usize, key: (f64, &[u8])) -> bool {
        (i == 0 || order(self.sep(i - 1), key) != Ordering::Greater)
            && (i + 1 == self.len || order(key, self.sep(i)) == Ordering::Less)
    }

    fn total(&self) -> usize {
        self.counts[..self.len].iter().map(|&c| c as usize).sum()
    }

    /// Inserts child `kid` at `at`; `sep` becomes the boundary on its left (on its right when
    /// `at` is 0). The node must have a child already.
    fn insert_kid(&mut self, at: usize, sep: Slot, count: u32, kid: Node<L, K>) {
        let n = self.len;
        debug_assert!(n >= 1 && at <= n && n < K);
        let j = at.saturating_sub(1);
        shift_in(&mut self.kids, n, at, kid);
        shift_in(&mut self.counts, n, at, count);
        shift_in(&mut self.sep_scores, n - 1, j, sep.0);
        shift_in(&mut self.sep_members, n - 1, j, sep.1);
        self.len = n + 1;
    }

    /// Removes child `at` with the boundary on its left (on its right when `at` is 0; none,
    /// returned as an empty key, when it was the only child).
    fn remove_kid(&mut self, at: usize) -> (Slot, u32, Node<L, K>) {
        let n = self.len;
        let kid = shift_out(&mut self.kids, n, at);
        let count = shift_out(&mut self.counts, n, at);
        let sep = if n > 1 {
            let j = at.saturating_sub(1);
            (
                shift_out(&mut self.sep_scores, n - 1, j),
                shift_out(&mut self.sep_members, n - 1, j),
            )
        } else {
            (0.0, Member::default())
        };
        self.len = n - 1;
        (sep, count, kid)
    }

    /// Moves children `at..` to a new node; returns the boundary between the halves with it.
    fn split_off(&mut self, at: usize) -> (Slot, Box<Self>) {
        let n = self.len;
        let mut r = Self::new();
        for j in at..n {
            r.kids[j - at] = mem::take(&mut self.kids[j]);
            r.counts[j - at] = mem::take(&mut self.counts[j]);
        }
        for j in at..n - 1 {
            r.sep_scores[j - at] = mem::take(&mut self.sep_scores[j]);
            r.sep_members[j - at] = mem::take(&mut self.sep_members[j]);
        }
        let up = (
            mem::take(&mut self.sep_scores[at - 1]),
            mem::take(&mut self.sep_members[at - 1]),
        );
        r.len = n - at;
        self.len = at;
        (up, r)
    }

    /// Appends `other`'s children; `sep` is the boundary between the two nodes.
    fn append(&mut self, sep: Slot, other: &mut Self) {
        let n = self.len;
        self.sep_scores[n - 1] = sep.0;
        self.sep_members[n - 1] = sep.1;
        for j in 0..other.len {
            self.kids[n + j] = mem::take(&mut other.kids[j]);
            self.counts[n + j] = other.counts[j];
        }
        for j in 0..other.len - 1 {
            self.sep_scores[n + j] = other.sep_scores[j];
            self.sep_members[n + j] = mem::take(&mut other.sep_members[j]);
        }
        self.len = n + other.len;
    }

    /// Before inserting into child `i`, a full leaf: if a neighbour has room for an eighth of
    /// a leaf, the two share their elements evenly, and the insert need not split.
    fn make_room(&mut self, i: usize, st: &mut Stats) -> bool {
        let roomy = |j: usize| self.counts[j] as usize <= L - L.div_ceil(8);
        let a = if i > 0 && roomy(i - 1) {
            i - 1
        } else if i + 1 < self.len && roomy(i + 1) {
            i
        } else {
            return false;
        };
        self.share(a, st);
        true
    }

    /// After a removal below child `i` (with edges `e`): drops it when empty, and when it is
    /// under half full (and not at an edge of its level) merges it with a neighbour, or evens
    /// the two out when they would not fit in one node.
    fn rebalance(&mut self, i: usize, e: Edges, st: &mut Stats) {
        let (width, min, cap) = match &self.kids[i] {
            Node::Leaf(l) => (l.len, L / 2, L),
            Node::Inner(n) => (n.len, (K - 1) / 2, K - 1),
            Node::Empty => unreachable!("empty child slot"),
        };
        if width == 0 {
            let (sep, _, kid) = self.remove_kid(i);
            st.sep_heap -= sep.1.heap();
            kid.release(st);
            return;
        }
        if width >= min || e.first || e.last {
            return;
        }
        // A node off the edges has a parent off the edges (at least half full) or the root.
        debug_assert!(self.len >= 2);
        let a = i.saturating_sub(1);
        if self.kids[a].width() + self.kids[a + 1].width() <= cap {
            self.merge(a, st);
        } else {
            self.share(a, st);
        }
    }

    /// Merges child `a + 1` into child `a`.
    fn merge(&mut self, a: usize, st: &mut Stats) {
        let (sep, count, right) = self.remove_kid(a + 1);
        self.counts[a] += count;
        match (&mut self.kids[a], right) {
            (Node::Leaf(l), Node::Leaf(mut r)) => {
                st.sep_heap -= sep.1.heap();
                st.leaves -= 1;
                let k = r.len;
                l.pull(&mut r, k);
            }
            (Node::Inner(l), Node::Inner(mut r)) => {
                st.inners -= 1;
                l.append(sep, &mut r);
            }
            _ => unreachable!("siblings of different heights"),
        }
    }

    /// Evens out children `a` and `a + 1`, which hold too much for one node.
    fn share(&mut self, a: usize, st: &mut Stats) {
        let (left, right) = self.kids.split_at_mut(a + 1);
        match (&mut left[a], &mut right[0]) {
            (Node::Leaf(l), Node::Leaf(r)) => {
                let want = (l.len + r.len) / 2;
                if l.len < want {
                    l.pull(r, want - l.len);
                } else {
                    l.push(r, l.len - want);
                }
                let sep = l.separator(r);
                st.sep_heap = st.sep_heap + sep.1.heap() - self.sep_members[a].heap();
                (self.sep_scores[a], self.sep_members[a]) = sep;
                self.counts[a] = l.len as u32;
                self.counts[a + 1] = r.len as u32;
            }
            (Node::Inner(l), Node::Inner(r)) => {
                let want = (l.len + r.len) / 2;
                // One child at a time, rotating the boundaries through this node's separator.
                while l.len < want {
                    let (s, c, kid) = r.remove_kid(0);
                    let p = (
                        mem::replace(&mut self.sep_scores[a], s.0),
                        mem::replace(&mut self.sep_members[a], s.1),
                    );
                    l.insert_kid(l.len, p, c, kid);
                    self.counts[a] += c;
                    self.counts[a + 1] -= c;
                }
                while l.len > want {
                    let (s, c, kid) = l.remove_kid(l.len - 1);
                    let p = (
                        mem::replace(&mut self.sep_scores[a], s.0),
                        mem::replace(&mut self.sep_members[a], s.1),
                    );
                    r.insert_kid(0, p, c, kid);
                    self.counts[a] -= c;
                    self.counts[a + 1] += c;
                }
            }
            _ => unreachable!("siblings of different heights"),
        }
    }
}

impl<const L: usize, const K: usize> Node<L, K> {
    /// Elements of a leaf, children of an inner node.
    fn width(&self) -> usize {
        match self {
            Node::Leaf(l) => l.len,
            Node::Inner(n) => n.len,
            Node::Empty => 0,
        }
    }

    /// Elements below.
    fn count(&self) -> usize {
        match self {
            Node::Leaf(l) => l.len,
            Node::Inner(n) => n.total(),
            Node::Empty => 0,
        }
    }

    /// Takes a node that is being dropped (empty, or emptied into a sibling) off the stats.
    fn release(self, st: &mut Stats) {
        match self {
            Node::Leaf(_) => st.leaves -= 1,
            Node::Inner(_) => st.inners -= 1,
            Node::Empty => {}
        }
    }

    fn insert(&mut self, slot: Slot, edges: Edges, st: &mut Stats) -> Option<Split<L, K>> {
        let n = match self {
            Node::Leaf(l) => return Self::leaf_insert(l, slot, edges, st),
            Node::Inner(n) => n,
            Node::Empty => unreachable!("empty child slot"),
        };
        let k = (slot.0, slot.1.bytes());
        let mut i = n.route(k);
        if matches!(&n.kids[i], Node::Leaf(l) if l.len == L) && n.make_room(i, st) {
            i = n.route(k);
        }
        let e = edges.kid(i, n.len);
        n.counts[i] += 1;
        let split = n.kids[i].insert(slot, e, st)?;
        let c = split.node.count() as u32;
        n.counts[i] -= c;
        n.insert_kid(i + 1, split.sep, c, split.node);
        if n.len < K {
            return None;
        }
        let cap = K - 1;
        let (at, lopsided) = match (split.lopsided, e.last, e.first) {
            (true, true, _) => (cap, true),
            (true, _, true) => (1, true),
            _ => (cap.div_ceil(2), false),
        };
        let (sep, right) = n.split_off(at);
        st.inners += 1;
        Some(Split {
            sep,
            node: Node::Inner(right),
            lopsided,
        })
    }

    fn leaf_insert(
        leaf: &mut Leaf<L>,
        slot: Slot,
        edges: Edges,
        st: &mut Stats,
    ) -> Option<Split<L, K>> {
        let pos = leaf.run().lower_bound((slot.0, slot.1.bytes()));
        if leaf.len < L {
            leaf.insert(pos, slot);
            return None;
        }
        let (at, lopsided) = if edges.last && pos == L {
            (L, true)
        } else if edges.first && pos == 0 {
            (1, true)
        } else {
            (L.div_ceil(2), false)
        };
        // The L + 1 elements split into [..at] here and [at..] in the new right sibling.
        let mut right = Leaf::new();
        st.leaves += 1;
        if pos < at {
            leaf.push(&mut right, L + 1 - at);
            leaf.insert(pos, slot);
        } else {
            leaf.push(&mut right, L - at);
            right.insert(pos - at, slot);
        }
        let sep = leaf.separator(&right);
        st.sep_heap += sep.1.heap();
        Some(Split {
            sep,
            node: Node::Leaf(right),
            lopsided,
        })
    }

    fn remove(&mut self, which: Which<'_>, edges: Edges, st: &mut Stats) -> Option<Slot> {
        match self {
            Node::Leaf(l) => {
                let pos = which.pick(l.len, |k| l.run().find(k))?;
                Some((l.scores[pos], l.remove(pos)))
            }
            Node::Inner(n) => {
                let i = which.pick(n.len, |k| Some(n.route(k)))?;
                let e = edges.kid(i, n.len);
                let slot = n.kids[i].remove(which, e, st)?;
                n.counts[i] -= 1;
                n.rebalance(i, e, st);
                Some(slot)
            }
            Node::Empty => unreachable!("empty child slot"),
        }
    }

    /// Gives element `k` the score `new` when the new key falls in the same leaf, moving it
    /// within the leaf if need be; false, changing nothing, otherwise.
    fn move_in_leaf(&mut self, k: (f64, &[u8]), new: f64) -> bool {
        let to = (new, k.1);
        let mut node = self;
        loop {
            match node {
                Node::Inner(n) => {
                    let i = n.route(k);
                    if !n.covers(i, to) {
                        return false;
                    }
                    node = &mut n.kids[i];
                }
                Node::Leaf(l) => {
                    let Some(pos) = l.run().find(k) else {
                        return false;
                    };
                    let n = l.len;
                    rescore(&mut l.scores[..n], &mut l.members[..n], pos, new);
                    return true;
                }
                Node::Empty => unreachable!("empty child slot"),
            }
        }
    }
}

impl<const L: usize, const K: usize> Tree<L, K> {
    fn insert(&mut self, slot: Slot) {
        self.len += 1;
        if let Root::Small(s) = &mut self.root {
            if s.scores.len() < 2 * L {
                s.insert(slot, 2 * L);
                return;
            }
            // Full: becomes a tree.
            self.root = Root::Node(Self::grow(s, &mut self.stats));
        }
        let Root::Node(root) = &mut self.root else {
            unreachable!("a small root was converted above")
        };
        if let Some(split) = root.insert(slot, Edges::ROOT, &mut self.stats) {
            // The root split: a new root above the two halves.
            let old = mem::take(root);
            let mut n = Inner::new();
            n.counts[0] = old.count() as u32;
            n.kids[0] = old;
            n.len = 1;
            let c = split.node.count() as u32;
            n.insert_kid(1, split.sep, c, split.node);
            *root = Node::Inner(n);
            self.stats.inners += 1;
        }
    }

    /// Removes an element; returns its member (which an update reuses).
    fn take(&mut self, k: (f64, &[u8])) -> Option<Member> {
        self.remove(Which::Key(k)).map(|(_, m)| m)
    }

    /// Removes the element `which` chooses; returns it.
    fn remove(&mut self, which: Which<'_>) -> Option<Slot> {
        let slot = match &mut self.root {
            Root::Small(s) => {
                let pos = which.pick(s.scores.len(), |k| s.run().find(k))?;
                (s.scores.remove(pos), s.members.remove(pos))
            }
            Root::Node(root) => {
                let slot = root.remove(which, Edges::ROOT, &mut self.stats)?;
                if self.len - 1 <= L {
                    // Down to a leaf's worth: back to a small set.
                    let mut s = Small {
                        scores: Vec::with_capacity(self.len - 1),
                        members: Vec::with_capacity(self.len - 1),
                    };
                    Self::shrink(root, &mut s);
                    self.root = Root::Small(s);
                    self.stats = Stats::default();
                } else {
                    // A root with one child hands the root over to it.
                    while let Node::Inner(n) = root {
                        if n.len > 1 {
                            break;
                        }
                        *root = mem::take(&mut n.kids[0]);
                        self.stats.inners -= 1;
                    }
                }
                slot
            }
        };
        self.len -= 1;
        if self.len == 0 {
            // Empty: give everything back.
            *self = Self::default();
        }
        Some(slot)
    }

    /// A full small set's elements as a tree: two full leaves under a root.
    fn grow(s: &mut Small, st: &mut Stats) -> Node<L, K> {
        let mut leaves = [Leaf::new(), Leaf::new()];
        let elements = s.scores.iter().zip(s.members.drain(..));
        for (j, (&score, member)) in elements.enumerate() {
            let leaf = &mut leaves[j / L];
            leaf.scores[j % L] = score;
            leaf.members[j % L] = member;
            leaf.len += 1;
        }
        let [left, right] = leaves;
        let sep = left.separator(&right);
        st.leaves += 2;
        st.inners += 1;
        st.sep_heap += sep.1.heap();
        let mut root = Inner::new();
        root.kids[0] = Node::Leaf(left);
        root.counts[0] = L as u32;
        root.len = 1;
        root.insert_kid(1, sep, L as u32, Node::Leaf(right));
        Node::Inner(root)
    }

    /// Moves the elements below `node` to the end of `s`.
    fn shrink(node: &mut Node<L, K>, s: &mut Small) {
        match node {
            Node::Leaf(l) => {
                s.scores.extend_from_slice(&l.scores[..l.len]);
                s.members
                    .extend(l.members[..l.len].iter_mut().map(mem::take));
            }
            Node::Inner(n) => {
                for kid in &mut n.kids[..n.len] {
                    Self::shrink(kid, s);
                }
            }
            Node::Empty => unreachable!("empty child slot"),
        }
    }

    fn update(&mut self, k: (f64, &[u8]), new: f64) {
        let moved = match &mut self.root {
            Root::Small(s) => match s.run().find(k) {
                Some(pos) => {
                    rescore(&mut s.scores, &mut s.members, pos, new);
                    true
                }
                None => false,
            },
            Root::Node(root) => root.move_in_leaf(k, new),
        };
        if !moved {
            let member = self.take(k).unwrap_or_else(|| Member::new(k.1));
            self.insert((new, member));
        }
    }

    /// The leaf below `node` that `at` chooses at each inner node, and the elements of the
    /// children left of the path.
    fn descend<'a>(&'a self, at: impl Fn(&Inner<L, K>) -> usize) -> (usize, Run<'a>) {
        let mut node = match &self.root {
            Root::Small(s) => return (0, s.run()),
            Root::Node(n) => n,
        };
        let mut acc = 0;
        loop {
            match node {
                Node::Inner(n) => {
                    let i = at(n);
                    acc += n.counts[..i].iter().map(|&c| c as usize).sum::<usize>();
                    node = &n.kids[i];
                }
                Node::Leaf(l) => return (acc, l.run()),
                Node::Empty => unreachable!("empty child slot"),
            }
        }
    }

    fn count_while(&self, before: impl Fn((f64, &[u8])) -> bool) -> usize {
        let (acc, run) = self.descend(|n| n.route_by(&before));
        acc + run.count_while(&before)
    }

    /// `count_while(|k| k < key)` by the searches insert and remove use.
    fn rank_of(&self, k: (f64, &[u8])) -> usize {
        let (acc, run) = self.descend(|n| n.route(k));
        acc + run.lower_bound(k)
    }

    fn get(&self, rank: usize) -> Option<(f64, &[u8])> {
        if rank >= self.len {
            return None;
        }
        let mut node = match &self.root {
            Root::Small(s) => return Some(s.run().key(rank)),
            Root::Node(n) => n,
        };
        let mut k = rank;
        loop {
            match node {
                Node::Inner(n) => {
                    let mut i = 0;
                    while i + 1 < n.len && k >= n.counts[i] as usize {
                        k -= n.counts[i] as usize;
                        i += 1;
                    }
                    node = &n.kids[i];
                }
                Node::Leaf(l) => return Some(l.run().key(k)),
                Node::Empty => unreachable!("empty child slot"),
            }
        }
    }

    fn capacity_bytes(&self) -> usize {
        match &self.root {
            Root::Small(s) => s.capacity_bytes(),
            Root::Node(_) => {
                self.stats.leaves * mem::size_of::<Leaf<L>>()
                    + self.stats.inners * mem::size_of::<Inner<L, K>>()
                    + self.stats.sep_heap
            }
        }
    }

    fn check_invariants(&self) {
        match &self.root {
            Root::Small(s) => {
                assert_eq!(s.scores.len(), self.len, "element count");
                assert_eq!(s.members.len(), self.len, "element count");
                assert!(s.scores.capacity() <= 2 * L, "small set over two leaves");
                assert!(s.members.capacity() <= 2 * L, "small set over two leaves");
                let run = s.run();
                assert!((1..self.len).all(|j| order(run.key(j - 1), run.key(j)).is_lt()));
                assert_eq!(self.stats, Stats::default(), "accounting");
                if self.len == 0 {
                    assert_eq!(self.capacity_bytes(), 0, "an empty set holds no memory");
                }
            }
            Root::Node(root) => {
                let mut st = Stats::default();
                let mut leaf_depth = None;
                let n = check(root, Edges::ROOT, (None, None), 0, &mut leaf_depth, &mut st);
                assert_eq!(n, self.len, "element count");
                assert_eq!(st, self.stats, "accounting");
                assert!(self.len > L, "a tree of {} elements", self.len);
                match root {
                    Node::Inner(n) => assert!(n.len >= 2, "inner root with {} children", n.len),
                    _ => panic!("a tree's root is an inner node"),
                }
            }
        }
    }
}

type Bound<'a> = Option<(f64, &'a [u8])>;

/// Checks a subtree whose keys must lie in `[lo, hi)`; returns its element count.
fn check<const L: usize, const K: usize>(
    node: &Node<L, K>,
    edges: Edges,
    (lo, hi): (Bound, Bound),
    depth: usize,
    leaf_depth: &mut Option<usize>,
    st: &mut Stats,
) -> usize {
    let in_range = |k: (f64, &[u8])| {
        lo.is_none_or(|lo| order(lo, k) != Ordering::Greater)
            && hi.is_none_or(|hi| order(k, hi) == Ordering::Less)
    };
    let root = depth == 0;
    let edge = edges.first || edges.last;
    match node {
        Node::Leaf(l) => {
            st.leaves += 1;
            assert_eq!(
                *leaf_depth.get_or_insert(depth),
                depth,
                "leaves at one depth"
            );
            assert!(l.len <= L, "leaf over capacity");
            assert!(root || l.len > 0, "empty leaf");
            assert!(root || edge || l.len >= L / 2, "leaf {} of {L} full", l.len);
            let run = l.run();
            assert!((1..l.len).all(|j| order(run.key(j - 1), run.key(j)).is_lt()));
            assert!(
                (0..l.len).all(|j| in_range(run.key(j))),
                "leaf outside its range"
            );
            assert!(l.members[l.len..].iter().all(|m| m.bytes().is_empty()));
            l.len
        }
        Node::Inner(n) => {
            st.inners += 1;
            assert!(
                n.len >= 1 && n.len < K,
                "inner node with {} children",
                n.len
            );
            assert!(
                root || edge || n.len >= (K - 1) / 2,
                "inner node {} of {} full",
                n.len,
                K - 1
            );
            let seps = n.len - 1;
            for j in 0..seps {
                assert!(in_range(n.sep(j)), "separator outside its range");
                assert!(j == 0 || order(n.sep(j - 1), n.sep(j)) == Ordering::Less);
                st.sep_heap += n.sep_members[j].heap();
            }
            assert!(n.sep_members[seps..].iter().all(|m| m.bytes().is_empty()));
            assert!(n.kids[n.len..].iter().all(|k| matches!(k, Node::Empty)));
            let mut total = 0;
            for j in 0..n.len {
                let b = (
                    if j == 0 { lo } else { Some(n.sep(j - 1)) },
                    if j == seps { hi } else { Some(n.sep(j)) },
                );
                let c = check(
                    &n.kids[j],
                    edges.kid(j, n.len),
                    b,
                    depth + 1,
                    leaf_depth,
                    st,
                );
                assert_eq!(c, n.counts[j] as usize, "child count");
                total += c;
            }
            total
        }
        Node::Empty => panic!("empty child"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{RngCore, SeedableRng};
    use std::collections::{BTreeSet, HashMap};

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

        /// Long random sequences of inserts, removes, updates and probes against a `BTreeSet`,
        /// first growing to a few hundred elements and then shrinking, on trees with tiny nodes
        /// (splits, merges and sharing at five or six levels) and on the production shape.
        #[test]
        fn matches_a_btreeset_model(
            grow in proptest::collection::vec(op(4, 1, 3), 0..1000),
            shrink in proptest::collection::vec(op(1, 5, 2), 0..1000),
        ) {
            let ops: Vec<Op> = grow.into_iter().chain(shrink).collect();
            run_model::<4, 5>(&ops)?;
            run_model::<7, 6>(&ops)?;
            run_model::<LEAF_CAP, INNER_SLOTS>(&ops)?;
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, i32),
        Remove(u16, i32),
        Update(u16, i32),
        /// ZPOPMIN (false) or ZPOPMAX (true).
        Pop(bool),
        Probe(i32),
    }

    /// Members 0..300 (binary numerals: many shared prefixes, varied lengths; a third of them
    /// too long to be inline), scores from a narrow range (many ties, so separators need member
    /// bytes) or a wide one.
    fn op(insert: u32, remove: u32, update: u32) -> impl Strategy<Value = Op> {
        let score = prop_oneof![-3i32..3, -1000i32..1000];
        prop_oneof![
            insert => (0u16..300, score.clone()).prop_map(|(m, s)| Op::Insert(m, s)),
            remove => (0u16..300, score.clone()).prop_map(|(m, s)| Op::Remove(m, s)),
            update => (0u16..300, score.clone()).prop_map(|(m, s)| Op::Update(m, s)),
            remove => any::<bool>().prop_map(Op::Pop),
            1 => score.prop_map(Op::Probe),
        ]
    }

    fn member(m: u16) -> Vec<u8> {
        if m % 3 == 0 {
            format!("a member too long to be inline {m:b}").into_bytes()
        } else {
            format!("{m:b}").into_bytes()
        }
    }

    /// Model scores are integers; the tree sees them in quarters (order-preserving).
    fn sc(s: i32) -> f64 {
        s as f64 / 4.0
    }

    fn run_model<const L: usize, const K: usize>(ops: &[Op]) -> Result<(), TestCaseError> {
        let mut t = Tree::<L, K>::default();
        let mut set: BTreeSet<(i32, Vec<u8>)> = BTreeSet::new();
        let mut scores: HashMap<Vec<u8>, i32> = HashMap::new();
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Insert(m, s) => {
                    let m = member(m);
                    if let std::collections::hash_map::Entry::Vacant(v) = scores.entry(m.clone()) {
                        t.insert((sc(s), Member::new(&m)));
                        set.insert((s, m));
                        v.insert(s);
                    }
                }
                Op::Remove(m, s) => {
                    let m = member(m);
                    match scores.remove(&m) {
                        Some(old) => {
                            set.remove(&(old, m.clone()));
                            let taken = t.take((sc(old), &m));
                            prop_assert_eq!(taken.as_ref().map(Member::bytes), Some(&m[..]));
                        }
                        None => prop_assert!(t.take((sc(s), &m)).is_none()),
                    }
                }
                Op::Update(m, s) => {
                    let m = member(m);
                    if let Some(old) = scores.insert(m.clone(), s) {
                        set.remove(&(old, m.clone()));
                        set.insert((s, m.clone()));
                        t.update((sc(old), &m), sc(s));
                        let rank = set.range(..(s, m.clone())).count();
                        prop_assert_eq!(t.count_while(|k| order(k, (sc(s), &m)).is_lt()), rank);
                        prop_assert_eq!(t.get(rank), Some((sc(s), &m[..])));
                    } else {
                        scores.remove(&m);
                    }
                }
                Op::Pop(last) => {
                    let want = if last {
                        set.pop_last()
                    } else {
                        set.pop_first()
                    };
                    let got = t.remove(if last { Which::Last } else { Which::First });
                    let got = got.map(|(s, m)| (s, m.bytes().to_vec()));
                    prop_assert_eq!(got, want.clone().map(|(s, m)| (sc(s), m)));
                    if let Some((_, m)) = want {
                        scores.remove(&m);
                    }
                }
                Op::Probe(s) => {
                    let below = set.iter().filter(|(x, _)| *x < s).count();
                    let upto = set.iter().filter(|(x, _)| *x <= s).count();
                    prop_assert_eq!(t.count_while(|k| k.0 < sc(s)), below);
                    prop_assert_eq!(t.count_while(|k| k.0 <= sc(s)), upto);
                    // A member-only predicate, meaningful within one score.
                    let m = member(s.unsigned_abs() as u16 % 300);
                    let lex = set.range(..(s, m.clone())).count();
                    prop_assert_eq!(t.count_while(|k| order(k, (sc(s), &m)).is_lt()), lex);
                    prop_assert_eq!(t.rank_of((sc(s), &m)), lex);
                }
            }
            prop_assert_eq!(t.len, set.len());
            if n % 25 == 0 || n + 1 == ops.len() {
                t.check_invariants();
                for (i, (s, m)) in set.iter().enumerate() {
                    prop_assert_eq!(t.get(i), Some((sc(*s), &m[..])));
                    prop_assert_eq!(t.rank_of((sc(*s), m)), i);
                }
                prop_assert_eq!(t.get(set.len()), None);
            }
        }
        Ok(())
    }

    /// Inserts `n` elements (1000 distinct scores, so ~n/1000 share each), checks every rank
    /// both ways, then removes them all in random order, checking the structure as it shrinks.
    fn fill_check_drain<const L: usize, const K: usize>(n: usize) {
        let mut rng = StdRng::seed_from_u64(0x2545_F491_4F6C_DD1D);
        let mut items: Vec<(f64, Vec<u8>)> = (0..n)
            .map(|i| ((rng.next_u64() % 1000) as f64, format!("m{i}").into_bytes()))
            .collect();
        let mut t = Tree::<L, K>::default();
        for (s, m) in &items {
            t.insert((*s, Member::new(m)));
        }
        t.check_invariants();
        let mut sorted = items.clone();
        sorted.sort_by(|a, b| order((a.0, &a.1), (b.0, &b.1)));
        for (i, (s, m)) in sorted.iter().enumerate() {
            assert_eq!(t.get(i), Some((*s, &m[..])));
            assert_eq!(t.count_while(|k| order(k, (*s, m)).is_lt()), i);
            assert_eq!(t.rank_of((*s, m)), i);
        }
        assert_eq!(t.get(n), None);
        items.shuffle(&mut rng);
        for (k, (s, m)) in items.iter().enumerate() {
            assert!(t.take((*s, m)).is_some());
            assert_eq!(t.len, n - k - 1);
            if k % 1000 == 0 {
                t.check_invariants();
            }
        }
        t.check_invariants();
        assert_eq!(t.len, 0);
        assert_eq!(t.capacity_bytes(), 0);
    }

    #[test]
    fn hundred_thousand_elements() {
        fill_check_drain::<LEAF_CAP, INNER_SLOTS>(100_000);
    }

    #[test]
    fn many_levels_of_tiny_nodes() {
        fill_check_drain::<4, 5>(20_000);
    }

    /// Depth of the production shape at 100k random elements.
    #[test]
    fn hundred_thousand_are_four_levels_deep() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut t = RankTree::default();
        for i in 0..100_000 {
            t.insert(
                (rng.next_u64() % 100_000) as f64,
                format!("element:{i:012}").as_bytes(),
            );
        }
        let Root::Node(node) = &t.0.root else {
            panic!("a tree")
        };
        let mut depth = 1;
        let mut node = node;
        while let Node::Inner(n) = node {
            depth += 1;
            node = &n.kids[0];
        }
        assert!(depth <= 4, "depth {depth}");
    }

    #[test]
    fn a_member_takes_24_bytes() {
        assert_eq!(mem::size_of::<Member>(), 24);
        assert_eq!(Member::new(&[7; INLINE]).heap(), 0);
        assert_eq!(Member::new(&[7; INLINE + 1]).heap(), INLINE + 1);
    }

    /// Bytes per element, against the treap's 40 per node (52 with its arena's slack) plus a
    /// heap block per member.
    #[test]
    fn memory_per_element() {
        let mut rng = StdRng::seed_from_u64(11);
        let per = |t: &RankTree| t.capacity_bytes() as f64 / t.len() as f64;
        let mut random = RankTree::default();
        let mut ascending = RankTree::default();
        let mut descending = RankTree::default();
        for i in 0..100_000 {
            let m = format!("element:{i:012}");
            random.insert((rng.next_u64() % 100_000) as f64, m.as_bytes());
            ascending.insert(i as f64, m.as_bytes());
            descending.insert(-i as f64, m.as_bytes());
        }
        for t in [&random, &ascending, &descending] {
            t.check_invariants();
        }
        assert!(per(&random) < 46.0, "random: {} bytes each", per(&random));
        // Lopsided splits at the ends leave full leaves behind.
        assert!(per(&ascending) < 34.0, "ascending: {}", per(&ascending));
        assert!(per(&descending) < 34.0, "descending: {}", per(&descending));
        let mut small = RankTree::default();
        for i in 0..3u8 {
            small.insert(0.0, &[i]);
        }
        assert_eq!(small.capacity_bytes(), 4 * 32);
        // Up to Redis's listpack size, one sorted run: 32 bytes an element when it is full.
        for i in 3..128u8 {
            small.insert(i as f64, &[i]);
        }
        small.check_invariants();
        assert_eq!(small.capacity_bytes(), 128 * 32);
        small.insert(-1.0, b"a tree now");
        small.check_invariants();
        assert!(matches!(small.0.root, Root::Node(_)));
    }

    /// A sliding window (append at the end, drop from the front) keeps the leaves full.
    #[test]
    fn sliding_window_stays_dense() {
        let mut t = RankTree::default();
        let el = |i: usize| format!("e{i:08}").into_bytes();
        for i in 0..10_000 {
            t.insert(i as f64, &el(i));
        }
        for i in 10_000..60_000 {
            t.insert(i as f64, &el(i));
            assert!(t.remove((i - 10_000) as f64, &el(i - 10_000)));
        }
        t.check_invariants();
        assert_eq!(t.len(), 10_000);
        assert_eq!(t.get(0), Some((50_000.0, &el(50_000)[..])));
        assert!(t.capacity_bytes() < 10_000 * 34, "{}", t.capacity_bytes());
    }

    /// Ascending (descending) inserts leave every node full but the last (first) of its level,
    /// inner nodes included.
    #[test]
    fn sorted_inserts_fill_every_level() {
        fn full_but_edge<const L: usize, const K: usize>(n: &Node<L, K>, e: Edges, skip: Edges) {
            let (width, cap) = match n {
                Node::Leaf(l) => (l.len, L),
                Node::Inner(i) => (i.len, K - 1),
                Node::Empty => panic!("empty child"),
            };
            assert!(width == cap || (e.first && skip.first) || (e.last && skip.last));
            if let Node::Inner(i) = n {
                for j in 0..i.len {
                    full_but_edge(&i.kids[j], e.kid(j, i.len), skip);
                }
            }
        }
        for descending in [false, true] {
            let mut t = Tree::<4, 5>::default();
            for i in 0..5000 {
                let s = if descending { -i } else { i };
                t.insert((s as f64, Member::default()));
            }
            t.check_invariants();
            let skip = Edges {
                first: descending,
                last: !descending,
            };
            let Root::Node(root) = &t.root else {
                panic!("a tree")
            };
            full_but_edge(root, Edges::ROOT, skip);
        }
    }

    fn in_leaf(t: &mut RankTree, k: (f64, &[u8]), new: f64) -> bool {
        match &mut t.0.root {
            Root::Node(n) => n.move_in_leaf(k, new),
            Root::Small(_) => panic!("a tree"),
        }
    }

    /// An update whose new key stays between the leaf's bounds touches only that leaf.
    #[test]
    fn update_in_place() {
        let mut t = RankTree::default();
        for i in 0..1000 {
            t.insert(i as f64 * 10.0, format!("m{i}").as_bytes());
        }
        let before = t.capacity_bytes();
        // Between its neighbours: only the score changes.
        assert!(in_leaf(&mut t, (500.0, b"m50"), 505.0));
        assert_eq!(t.get(50), Some((505.0, &b"m50"[..])));
        // Past its neighbours but within the leaf: moved inside the leaf.
        let (s, m) = t.get(40).map(|(s, m)| (s, m.to_vec())).unwrap();
        assert!(in_leaf(&mut t, (s, &m), 425.0));
        assert_eq!(t.get(42), Some((425.0, &b"m40"[..])));
        assert_eq!(t.rank_of((425.0, b"m40")), 42);
        // Far away: not in place, and nothing changed.
        assert!(!in_leaf(&mut t, (0.0, b"m0"), 9_999.5));
        assert_eq!(t.get(0), Some((0.0, &b"m0"[..])));
        t.update(0.0, 9_999.5, b"m0");
        assert_eq!(t.get(999), Some((9_999.5, &b"m0"[..])));
        assert_eq!(t.get(0), Some((10.0, &b"m1"[..])));
        t.check_invariants();
        assert_eq!(t.capacity_bytes(), before);
        // Updating a pair that is not there inserts it.
        t.update(1.0, 2.0, b"new");
        assert_eq!(t.len(), 1001);
        assert_eq!(t.rank_of((2.0, b"new")), 0);
    }

    #[test]
    fn clone_keeps_contents_and_accounting() {
        let mut t = RankTree::default();
        for i in 0..5000 {
            t.insert((i % 7) as f64, format!("m{i}").as_bytes());
        }
        let c = t.clone();
        c.check_invariants();
        assert_eq!(c.capacity_bytes(), t.capacity_bytes());
        assert!((0..5000).all(|i| c.get(i) == t.get(i)));
    }

    #[test]
    fn separators_are_short() {
        let l = |s: f64, m: &[u8]| (s, Member::new(m));
        let separator = |a: &Slot, b: &Slot| separator((a.0, a.1.bytes()), (b.0, b.1.bytes()));
        assert_eq!(separator(&l(1.0, b"zzz"), &l(2.0, b"abc")), l(2.0, b""));
        assert_eq!(
            separator(&l(1.0, b"abcd"), &l(1.0, b"abxy")),
            l(1.0, b"abx")
        );
        assert_eq!(separator(&l(1.0, b"ab"), &l(1.0, b"abc")), l(1.0, b"abc"));
        assert_eq!(separator(&l(1.0, b""), &l(1.0, b"a")), l(1.0, b"a"));
        assert_eq!(separator(&l(-0.0, b"b"), &l(0.0, b"c")), l(0.0, b"c"));
    }
}
