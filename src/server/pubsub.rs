//! Pub/sub delivery between connections: who is subscribed to which channel or pattern, and
//! the per-connection outbox that PUBLISH writes into.
//!
//! Each connection owns a [`Mailbox`] (an unbounded channel drained by its own task into its
//! socket). PUBLISH encodes the message once per protocol (RESP2 array or RESP3 push) and
//! sends it to every subscriber; the bytes queued but not yet written are counted, and a
//! subscriber whose backlog passes `client_output_buffer_limit_pubsub` is disconnected, so a
//! slow subscriber costs bounded memory (Redis's pubsub output-buffer class). The command
//! syntax lives in `command/pubsub.rs`; this module only routes bytes.

use super::reply::Reply;
use super::session::ClientInfo;
use crate::cache::glob::glob_match;
use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The sending side of one connection's outbox.
pub struct Subscriber {
    tx: mpsc::UnboundedSender<Bytes>,
    pending: Arc<AtomicUsize>,
    resp3: AtomicBool,
    info: Arc<ClientInfo>,
}

impl Subscriber {
    fn deliver(&self, msg: &Bytes, limit: usize) -> bool {
        if self.info.killed.load(Ordering::Acquire) {
            return false;
        }
        let backlog = self.pending.fetch_add(msg.len(), Ordering::AcqRel) + msg.len();
        if backlog > limit {
            // Too slow a reader: drop it rather than buffer without bound.
            self.info.kill();
            return false;
        }
        self.tx.send(msg.clone()).is_ok()
    }
}

/// One connection's outbox: the subscriber handle others publish to, and the receiver its
/// connection task drains.
pub struct Mailbox {
    pub subscriber: Arc<Subscriber>,
    pub rx: mpsc::UnboundedReceiver<Bytes>,
    pending: Arc<AtomicUsize>,
}

impl Mailbox {
    pub fn new(info: Arc<ClientInfo>) -> Mailbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        Mailbox {
            subscriber: Arc::new(Subscriber {
                tx,
                pending: pending.clone(),
                resp3: AtomicBool::new(false),
                info,
            }),
            rx,
            pending,
        }
    }

    /// Records that `n` queued bytes were written to the socket.
    pub fn written(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::AcqRel);
    }
}

type Subs = HashMap<Bytes, HashMap<u64, Arc<Subscriber>>>;

/// The server-wide subscription tables.
#[derive(Default)]
pub struct PubSub {
    channels: RwLock<Subs>,
    patterns: RwLock<Subs>,
    /// Disconnect a subscriber with more than this many bytes queued (0 = no limit).
    pub limit: AtomicUsize,
}

fn add(table: &RwLock<Subs>, name: &Bytes, sub: &Arc<Subscriber>) {
    table
        .write()
        .entry(name.clone())
        .or_default()
        .insert(sub.info.id, sub.clone());
}

fn remove(table: &RwLock<Subs>, name: &[u8], id: u64) {
    let mut t = table.write();
    if let Some(m) = t.get_mut(name) {
        m.remove(&id);
        if m.is_empty() {
            t.remove(name);
        }
    }
}

/// `message`/`pmessage` encoded for one protocol.
fn encode(resp3: bool, pattern: Option<&[u8]>, channel: &[u8], msg: &[u8]) -> Bytes {
    let mut r = Reply::new(resp3);
    match pattern {
        None => {
            r.push(3);
            r.bulk(b"message");
        }
        Some(p) => {
            r.push(4);
            r.bulk(b"pmessage");
            r.bulk(p);
        }
    }
    r.bulk(channel);
    r.bulk(msg);
    Bytes::from(r.buf)
}

impl PubSub {
    pub fn subscribe(&self, channel: &Bytes, sub: &Arc<Subscriber>, resp3: bool) {
        sub.resp3.store(resp3, Ordering::Relaxed);
        add(&self.channels, channel, sub);
    }

    pub fn unsubscribe(&self, channel: &[u8], id: u64) {
        remove(&self.channels, channel, id);
    }

    pub fn psubscribe(&self, pattern: &Bytes, sub: &Arc<Subscriber>, resp3: bool) {
        sub.resp3.store(resp3, Ordering::Relaxed);
        add(&self.patterns, pattern, sub);
    }

    pub fn punsubscribe(&self, pattern: &[u8], id: u64) {
        remove(&self.patterns, pattern, id);
    }

    /// Sends `msg` to every subscriber of `channel` and of a matching pattern; returns how
    /// many received it (Redis's PUBLISH reply).
    pub fn publish(&self, channel: &[u8], msg: &[u8]) -> usize {
        let limit = match self.limit.load(Ordering::Relaxed) {
            0 => usize::MAX,
            n => n,
        };
        let mut cache: [Option<Bytes>; 2] = [None, None];
        let mut n = 0;
        if let Some(subs) = self.channels.read().get(channel) {
            for s in subs.values() {
                let resp3 = s.resp3.load(Ordering::Relaxed);
                let m = cache[resp3 as usize]
                    .get_or_insert_with(|| encode(resp3, None, channel, msg))
                    .clone();
                n += s.deliver(&m, limit) as usize;
            }
        }
        for (pattern, subs) in self.patterns.read().iter() {
            if !glob_match(pattern, channel, false) {
                continue;
            }
            for s in subs.values() {
                let m = encode(s.resp3.load(Ordering::Relaxed), Some(pattern), channel, msg);
                n += s.deliver(&m, limit) as usize;
            }
        }
        n
    }

    /// Delivers one message that arrived from L2 (tiered mode) to one local subscriber.
    pub fn forward(&self, sub: &Subscriber, pattern: Option<&[u8]>, channel: &[u8], msg: &[u8]) {
        let limit = match self.limit.load(Ordering::Relaxed) {
            0 => usize::MAX,
            n => n,
        };
        let m = encode(sub.resp3.load(Ordering::Relaxed), pattern, channel, msg);
        sub.deliver(&m, limit);
    }

    /// Active channels (with at least one subscriber), optionally filtered by a pattern.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.channels
            .read()
            .keys()
            .filter(|c| pattern.is_none_or(|p| glob_match(p, c, false)))
            .cloned()
            .collect()
    }

    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.channels.read().get(channel).map_or(0, |m| m.len())
    }

    /// Patterns with at least one subscriber (PUBSUB NUMPAT counts unique patterns).
    pub fn numpat(&self) -> usize {
        self.patterns.read().len()
    }
}
