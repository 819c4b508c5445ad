//! A Cluster upstream's topology and the health of each of its masters.
//!
//! `CLUSTER SLOTS` says which master owns each of the 16384 hash slots; [`Topology`] keeps that
//! map and one [`Node`] per master. Each node has its own circuit breaker, its own up/down
//! state and its own `CLIENT TRACKING ON BCAST` connection (the tracker), so one failed master
//! makes only the keys in its slots fail open while every other master's keys keep going to L2
//! and stay coherent. Nodes are kept by address across topology refreshes, so a master's
//! breaker history survives a refresh that leaves it in place. The L2 relay
//! (`cache::l2`) decides when a node fails or comes back; this module only holds the state and
//! answers which nodes a call needs.

use crate::guard::breaker::{Breaker, Settings, State};
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Hash slots of a Cluster.
pub const SLOTS: usize = 16384;

/// No master owns the slot (not covered, or the map is not known yet).
const NOBODY: u16 = u16::MAX;

/// A key's Cluster hash slot: CRC16 (XMODEM) of its hash tag (the part between the first `{`
/// and the next `}`, when not empty) or of the whole key, modulo 16384 — Cluster's rule.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS as u16
}

/// One master of the Cluster upstream.
pub struct Node {
    pub addr: (String, u16),
    up: AtomicBool,
    breaker: Mutex<Breaker>,
    /// Moves on each time the node fails, so a failure reported by an older tracker (or twice)
    /// is handled once.
    generation: AtomicU64,
    /// The node's tracking connection while it is up.
    pub tracker: Mutex<Option<MultiplexedConnection>>,
    /// Reconnection attempts in the current outage, and when the next one is due (unix ms).
    pub attempts: AtomicU64,
    pub next_try_ms: AtomicU64,
    /// A call to the node could not reach it: the watcher checks the node (the client
    /// library's own connection may only have been repairing itself).
    pub suspect: AtomicBool,
}

/// What INFO, `/metrics` and `/readyz` show of a node.
pub struct NodeStatus {
    pub addr: String,
    pub up: bool,
    pub breaker: State,
    pub opened: u64,
}

impl Node {
    fn new(addr: (String, u16), settings: Settings) -> Node {
        Node {
            addr,
            up: AtomicBool::new(false),
            breaker: Mutex::new(Breaker::new(settings)),
            generation: AtomicU64::new(1),
            tracker: Mutex::new(None),
            attempts: AtomicU64::new(0),
            next_try_ms: AtomicU64::new(0),
            suspect: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> String {
        format!("{}:{}", self.addr.0, self.addr.1)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks the node down after a failure seen at `gen` and drops its tracker; true when it
    /// was up until now (false: that failure was already handled, or the node was down).
    pub fn fail(&self, gen: u64) -> bool {
        if self
            .generation
            .compare_exchange(gen, gen + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.suspect.store(false, Ordering::Relaxed);
        *self.tracker.lock() = None;
        self.up.swap(false, Ordering::AcqRel)
    }

    /// The node is reachable again (its new tracker is installed).
    pub fn restore(&self) {
        self.attempts.store(0, Ordering::Relaxed);
        self.next_try_ms.store(0, Ordering::Relaxed);
        self.up.store(true, Ordering::Release);
    }

    /// Schedules the next reconnection attempt after a failed one: 1 s, 2 s, 4 s, then every
    /// 4 s (the schedule of the whole upstream, per node).
    pub fn retry_later(&self, now_ms: u64, backoff_ms: &[u64]) {
        let n = self.attempts.fetch_add(1, Ordering::Relaxed) as usize;
        let wait = backoff_ms[n.min(backoff_ms.len() - 1)];
        self.next_try_ms.store(now_ms + wait, Ordering::Relaxed);
    }

    /// Whether a call may go to this node now; `trial` lets a HALF_OPEN breaker's one trial
    /// through (only single-node calls carry trials, so a refused sibling never strands one).
    pub fn admits(&self, now_ms: u64, trial: bool) -> bool {
        if !self.is_up() {
            return false;
        }
        let mut b = self.breaker.lock();
        if trial {
            b.allow(now_ms)
        } else {
            b.state(now_ms) == State::Closed
        }
    }

    pub fn record(&self, now_ms: u64, ok: bool) {
        self.breaker.lock().record(now_ms, ok);
    }

    pub fn status(&self, now_ms: u64) -> NodeStatus {
        let b = self.breaker.lock();
        NodeStatus {
            addr: self.name(),
            up: self.is_up(),
            breaker: b.state(now_ms),
            opened: b.opened,
        }
    }
}

/// The masters and which of them owns each slot.
pub struct Topology {
    pub nodes: Vec<Arc<Node>>,
    owner: Box<[u16]>,
}

impl Default for Topology {
    fn default() -> Topology {
        Topology {
            nodes: Vec::new(),
            owner: vec![NOBODY; SLOTS].into_boxed_slice(),
        }
    }
}

/// A `CLUSTER SLOTS` reply as ranges: (first slot, last slot, master address).
pub fn parse_slots(v: &Value) -> Vec<(u16, u16, (String, u16))> {
    let mut out = Vec::new();
    let Value::Array(ranges) = v else {
        return out;
    };
    for r in ranges {
        let Value::Array(parts) = r else { continue };
        let (Some(Value::Int(from)), Some(Value::Int(to)), Some(Value::Array(node))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        if let (Some(Value::BulkString(host)), Some(Value::Int(port))) = (node.first(), node.get(1))
        {
            let addr = (String::from_utf8_lossy(host).into_owned(), *port as u16);
            out.push((*from as u16, (*to as u16).min(SLOTS as u16 - 1), addr));
        }
    }
    out
}

impl Topology {
    /// The topology `ranges` describe, reusing this one's nodes that are still masters (with
    /// their state); new masters start down, with no tracker.
    pub fn rebuild(&self, ranges: &[(u16, u16, (String, u16))], settings: Settings) -> Topology {
        let mut addrs: Vec<(String, u16)> = ranges.iter().map(|r| r.2.clone()).collect();
        addrs.sort();
        addrs.dedup();
        let nodes: Vec<Arc<Node>> = addrs
            .into_iter()
            .map(|a| match self.nodes.iter().find(|n| n.addr == a) {
                Some(n) => n.clone(),
                None => Arc::new(Node::new(a, settings)),
            })
            .collect();
        let mut owner = vec![NOBODY; SLOTS].into_boxed_slice();
        for (from, to, addr) in ranges {
            if let Some(i) = nodes.iter().position(|n| &n.addr == addr) {
                for s in *from..=*to {
                    owner[s as usize] = i as u16;
                }
            }
        }
        Topology { nodes, owner }
    }

    /// Whether `other` has the same masters owning the same slots.
    pub fn same_as(&self, other: &Topology) -> bool {
        self.owner == other.owner
            && self.nodes.len() == other.nodes.len()
            && self
                .nodes
                .iter()
                .zip(&other.nodes)
                .all(|(a, b)| a.addr == b.addr)
    }

    /// The index of the master owning `key`'s slot.
    pub fn owner_of(&self, key: &[u8]) -> Option<usize> {
        match self.owner[key_slot(key) as usize] {
            NOBODY => None,
            i => Some(i as usize),
        }
    }

    /// The masters a call on `keys` needs: the owners of their slots, or every master for a
    /// keyless call (KEYS, DBSIZE, FLUSHDB fan out; the rest go to any node). `None` when a
    /// key's slot has no known owner.
    pub fn nodes_for(&self, keys: &[&[u8]]) -> Option<Vec<usize>> {
        if keys.is_empty() {
            return Some((0..self.nodes.len()).collect());
        }
        let mut out: Vec<usize> = Vec::with_capacity(1);
        for k in keys {
            let i = self.owner_of(k)?;
            if !out.contains(&i) {
                out.push(i);
            }
        }
        Some(out)
    }

    pub fn index_of(&self, node: &Node) -> Option<usize> {
        self.nodes.iter().position(|n| std::ptr::eq(&**n, node))
    }

    pub fn by_addr(&self, addr: &(String, u16)) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| &n.addr == addr)
    }

    pub fn masters(&self) -> Vec<(String, u16)> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            failure_ratio: 0.5,
            window_s: 60,
            min_calls: 2,
            open_ms: 1000,
        }
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
        ])
    }

    fn slots(ranges: &[(i64, i64, i64)]) -> Value {
        Value::Array(
            ranges
                .iter()
                .map(|(a, b, p)| Value::Array(vec![Value::Int(*a), Value::Int(*b), node("h", *p)]))
                .collect(),
        )
    }

    #[test]
    fn key_slots_follow_cluster_rules() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn owners_follow_cluster_slots_and_nodes_survive_a_refresh() {
        let t = Topology::default().rebuild(
            &parse_slots(&slots(&[(0, 5460, 1), (5461, 10922, 2), (10923, 16383, 3)])),
            settings(),
        );
        assert_eq!(t.masters().len(), 3);
        // "foo" is slot 12182: the third master.
        assert_eq!(t.owner_of(b"foo"), Some(2));
        assert_eq!(t.nodes_for(&[b"foo", b"{foo}x"]), Some(vec![2]));
        assert_eq!(t.nodes_for(&[]), Some(vec![0, 1, 2]));
        t.nodes[2].restore();
        // A failover moves the third master's slots to a new node; the others keep their state.
        let t2 = t.rebuild(
            &parse_slots(&slots(&[(0, 5460, 1), (5461, 10922, 2), (10923, 16383, 4)])),
            settings(),
        );
        assert!(!t2.same_as(&t));
        assert!(Arc::ptr_eq(&t.nodes[0], &t2.nodes[0]));
        assert_eq!(t2.nodes[2].addr.1, 4);
        assert!(
            !t2.nodes[2].is_up(),
            "a new master starts down until tracked"
        );
        assert!(t2.same_as(&t2.rebuild(
            &parse_slots(&slots(&[(0, 5460, 1), (5461, 10922, 2), (10923, 16383, 4)])),
            settings()
        )));
        // An uncovered slot has no owner.
        let partial = Topology::default().rebuild(&parse_slots(&slots(&[(0, 100, 1)])), settings());
        assert_eq!(partial.nodes_for(&[b"foo"]), None);
    }

    // Feature: db-cache-optimization, Property 41: Connection Retry with Backoff (per master)
    // Feature: db-cache-optimization, Property 42: Circuit Breaker State Machine (per master)
    #[test]
    fn a_node_fails_once_per_generation_and_its_breaker_is_its_own() {
        let t = Topology::default().rebuild(
            &parse_slots(&slots(&[(0, 8191, 1), (8192, 16383, 2)])),
            settings(),
        );
        let (a, b) = (&t.nodes[0], &t.nodes[1]);
        a.restore();
        b.restore();
        let g = a.generation();
        assert!(a.fail(g));
        assert!(!a.fail(g), "the same failure is handled once");
        assert!(
            !a.fail(a.generation()),
            "a node that is down does not fail again"
        );
        assert!(!a.admits(0, true));
        assert!(b.admits(0, true));
        // Failures on b open b's breaker only.
        b.record(10, false);
        b.record(10, false);
        assert!(!b.admits(20, false));
        assert_eq!(b.status(20).breaker, State::Open);
        a.restore();
        assert!(a.admits(20, false));
        // Once b's open time is over, only a single-node call carries its trial.
        assert!(!b.admits(1_100, false));
        assert!(b.admits(1_100, true));
        assert!(!b.admits(1_100, true), "one trial at a time");
        b.record(1_100, true);
        assert_eq!(b.status(1_100).breaker, State::Closed);
        // The backoff schedule per node.
        b.retry_later(5_000, &[1000, 2000, 4000]);
        assert_eq!(b.next_try_ms.load(Ordering::Relaxed), 6_000);
        b.retry_later(6_000, &[1000, 2000, 4000]);
        b.retry_later(8_000, &[1000, 2000, 4000]);
        b.retry_later(12_000, &[1000, 2000, 4000]);
        assert_eq!(b.next_try_ms.load(Ordering::Relaxed), 16_000);
    }
}
