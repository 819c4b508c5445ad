//! The slow log (SLOWLOG GET/LEN/RESET): commands that took longer than
//! `slowlog_log_slower_than` microseconds, newest first, bounded by `slowlog_max_len`.
//! Arguments are truncated as Redis truncates them (32 arguments, 128 bytes each).

use crate::server::session::Session;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const MAX_ARGS: usize = 32;
const MAX_ARG_LEN: usize = 128;

pub struct SlowEntry {
    pub id: u64,
    pub time_s: u64,
    pub micros: u64,
    pub args: Vec<Vec<u8>>,
    pub client: String,
    pub name: Vec<u8>,
}

#[derive(Default)]
pub struct SlowLog {
    entries: Mutex<VecDeque<SlowEntry>>,
    next_id: AtomicU64,
    pub threshold_us: AtomicI64,
    pub max_len: AtomicUsize,
}

impl SlowLog {
    pub fn maybe_record(&self, session: &Session, args: &[Bytes], took: Duration) {
        let threshold = self.threshold_us.load(Ordering::Relaxed);
        let micros = took.as_micros() as u64;
        if threshold < 0 || micros < threshold as u64 {
            return;
        }
        let max = self.max_len.load(Ordering::Relaxed);
        if max == 0 {
            return;
        }
        let mut kept: Vec<Vec<u8>> = Vec::new();
        for (i, a) in args.iter().enumerate() {
            if i == MAX_ARGS - 1 && args.len() > MAX_ARGS {
                kept.push(format!("... ({} more arguments)", args.len() - i).into_bytes());
                break;
            }
            if a.len() > MAX_ARG_LEN {
                let mut v = a[..MAX_ARG_LEN].to_vec();
                v.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - MAX_ARG_LEN).as_bytes(),
                );
                kept.push(v);
            } else {
                kept.push(a.to_vec());
            }
        }
        let entry = SlowEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            time_s: crate::command::unix_ms() / 1000,
            micros,
            args: kept,
            client: session
                .info
                .addr
                .map_or_else(String::new, |a| a.to_string()),
            name: session.info.name.lock().to_vec(),
        };
        let mut e = self.entries.lock();
        e.push_front(entry);
        e.truncate(max);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        self.entries.lock().clear();
    }

    /// Runs `f` over the newest `n` entries.
    pub fn with_newest<R>(
        &self,
        n: usize,
        f: impl FnOnce(&mut dyn Iterator<Item = &SlowEntry>) -> R,
    ) -> R {
        let e = self.entries.lock();
        f(&mut e.iter().take(n))
    }
}
