//! Fairness for blocking commands (BLPOP, BRPOP, BLMOVE, ...): clients blocked on the same key
//! are served in the order they blocked, as Redis serves them.
//!
//! Each blocked connection holds a ticket in the queue of every key it waits on. Only a client
//! at the front of all its keys' queues retries its command when a key changes; when a client
//! leaves (served, timed out or gone) the next client in each of its queues is woken.
//! Waking itself rides on the store's watch flags (`cache::store::Watch`).

use crate::cache::store::WatchFlag;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

/// (database, key) → the tickets waiting on it, oldest first, with each waiter's wake flag.
type Queues = HashMap<(usize, Bytes), VecDeque<(u64, WatchFlag)>>;

#[derive(Default)]
pub struct BlockQueues {
    queues: Mutex<Queues>,
    next: AtomicU64,
}

impl BlockQueues {
    /// Joins the back of the queue of each key; returns this client's ticket.
    pub fn enter(&self, db: usize, keys: &[Bytes], flag: &WatchFlag) -> u64 {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let mut q = self.queues.lock();
        for k in keys {
            q.entry((db, k.clone()))
                .or_default()
                .push_back((ticket, flag.clone()));
        }
        ticket
    }

    /// True when no client that blocked earlier waits ahead of us on any of these keys. (The
    /// oldest blocked client always qualifies, so waiting always makes progress; a client
    /// blocked on several keys may wait behind an older one on a key that has no data yet.)
    pub fn may_try(&self, db: usize, keys: &[Bytes], ticket: u64) -> bool {
        let q = self.queues.lock();
        keys.iter().all(|k| {
            q.get(&(db, k.clone()))
                .and_then(|v| v.front())
                .is_some_and(|(t, _)| *t == ticket)
        })
    }

    /// Leaves every queue and wakes whoever is now at the front of each.
    pub fn leave(&self, db: usize, keys: &[Bytes], ticket: u64) {
        let mut q = self.queues.lock();
        for k in keys {
            let id = (db, k.clone());
            let Some(v) = q.get_mut(&id) else { continue };
            v.retain(|(t, _)| *t != ticket);
            match v.front() {
                Some((_, next)) => next.fire(),
                None => {
                    q.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn oldest_goes_first_and_leaving_wakes_the_next() {
        let q = BlockQueues::default();
        let (fa, fb): (WatchFlag, WatchFlag) = (Arc::default(), Arc::default());
        let jobs = [Bytes::from_static(b"jobs")];
        let both = [Bytes::from_static(b"other"), Bytes::from_static(b"jobs")];
        let a = q.enter(0, &jobs, &fa);
        let b = q.enter(0, &both, &fb);
        assert!(q.may_try(0, &jobs, a));
        assert!(!q.may_try(0, &both, b), "b is behind a on jobs");
        q.leave(0, &jobs, a);
        assert!(fb.dirty.load(Ordering::Acquire), "b is woken when a leaves");
        assert!(q.may_try(0, &both, b));
        q.leave(0, &both, b);
        assert!(q.queues.lock().is_empty());
    }
}
