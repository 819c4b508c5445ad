//! Per-connection state: selected database, protocol version, authentication, client name,
//! MULTI queue and WATCHed keys. One `Session` per connection (and a throwaway one for each
//! script run, as Redis runs scripts on a fake client).
//!
//! The fields other connections may read (CLIENT LIST, CLIENT KILL) live in the shared
//! [`ClientInfo`]; everything else is private to the connection's task.

use super::pubsub::Subscriber;
use crate::app::App;
use crate::cache::store::WatchFlag;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;

/// A blocking command (BLPOP, ...) that found nothing: the keys it waits on and until when.
pub struct Block {
    pub keys: Vec<Bytes>,
    pub deadline: Option<std::time::Instant>,
}

/// Commands queued between MULTI and EXEC.
#[derive(Default)]
pub struct MultiState {
    pub queued: Vec<Vec<Bytes>>,
    /// A queued command was refused (unknown, wrong arity): EXEC answers EXECABORT.
    pub aborted: bool,
}

/// Why a connection is ended from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Killed,
    Shutdown,
}

/// What other connections may see or do to this one.
pub struct ClientInfo {
    pub id: u64,
    pub addr: Option<SocketAddr>,
    pub laddr: Option<SocketAddr>,
    pub created_ms: u64,
    pub last_ms: AtomicU64,
    pub db: AtomicUsize,
    pub name: Mutex<Bytes>,
    pub lib: Mutex<(Bytes, Bytes)>,
    /// The ACL user (CLIENT LIST's `user=`).
    pub user: Mutex<Arc<str>>,
    /// Registry index + 1 of the last command run (0 = none yet); one relaxed store per command.
    pub last_cmd: AtomicUsize,
    pub resp: AtomicUsize,
    pub multi: AtomicBool,
    pub killed: AtomicBool,
    /// The connection task's waker while it waits (for a request, on a blocked write, on a
    /// blocking command): woken when the client is killed or the server shuts down.
    pub wake: AtomicWaker,
}

impl ClientInfo {
    pub fn new(id: u64, addr: Option<SocketAddr>, laddr: Option<SocketAddr>, now: u64) -> Self {
        ClientInfo {
            id,
            addr,
            laddr,
            created_ms: now,
            last_ms: AtomicU64::new(now),
            db: AtomicUsize::new(0),
            name: Mutex::new(Bytes::new()),
            lib: Mutex::new((Bytes::new(), Bytes::new())),
            user: Mutex::new(Arc::from("default")),
            last_cmd: AtomicUsize::new(0),
            resp: AtomicUsize::new(2),
            multi: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            wake: AtomicWaker::new(),
        }
    }

    /// Marks the client killed and wakes its connection.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.wake.wake();
    }

    /// Resolves once the connection must end from outside: CLIENT KILL (or a pub/sub backlog
    /// over its limit) or the server shutting down. Both set a flag and then wake the client's
    /// waker, so a wait costs one waker registration, not a place in a waiter list taken and
    /// given back around every read (that was a fifth of a PING's instructions).
    pub fn ending<'a>(&'a self, app: &'a App) -> impl Future<Output = Ending> + 'a {
        std::future::poll_fn(move |cx| {
            self.wake.register(cx.waker());
            if self.killed.load(Ordering::Acquire) {
                Poll::Ready(Ending::Killed)
            } else if app.is_shutting_down() {
                Poll::Ready(Ending::Shutdown)
            } else {
                Poll::Pending
            }
        })
    }
}

pub struct Session {
    pub db: usize,
    pub resp3: bool,
    pub authenticated: bool,
    pub user: String,
    /// The ACL user's rules (None: the built-in default user, who may run everything).
    pub acl: Option<Arc<crate::guard::acl::User>>,
    pub multi: Option<MultiState>,
    pub watched: Vec<(usize, Vec<u8>)>,
    pub watch_flag: WatchFlag,
    /// Set by QUIT (and fatal errors): close once the replies are written.
    pub close: bool,
    pub info: Arc<ClientInfo>,
    /// This connection's pub/sub outbox (None for the sessions scripts run on); handed out by
    /// [`Session::outbox`].
    pub subscriber: Option<Arc<Subscriber>>,
    /// The outbox was handed out (to a channel, a pattern, the tracking relay): from then on the
    /// connection also waits on its mailbox, which until then cannot receive anything.
    pub listening: bool,
    /// Subscribed channels and patterns, in subscription order.
    pub channels: Vec<Bytes>,
    pub patterns: Vec<Bytes>,
    /// Set by a blocking command that must wait; the connection waits and runs it again.
    pub block: Option<Block>,
    /// Unix time in milliseconds that this connection's commands run at: read once per batch
    /// of pipelined commands (as Redis caches its clock per event-loop turn) and again after
    /// any command that ran for a millisecond or more.
    pub now_ms: u64,
    /// Tiered mode: this client's own upstream connection while it WATCHes keys.
    pub upstream: Option<crate::cache::l2::Dedicated>,
    /// The key whose slot the WATCHes are on (a Cluster runs the EXEC on that node).
    pub upstream_key: Option<Vec<u8>>,
    /// Tiered mode: this client's upstream connection for its pub/sub subscriptions.
    pub upstream_pubsub: Option<crate::cache::l2::Dedicated>,
    /// The WAL position of this connection's last QUERY write (read your writes; 0: none).
    pub db_write_lsn: u64,
    /// The shapes of the statements this connection ran last (SQL text → shape).
    pub query_shapes: Vec<(Bytes, Arc<crate::db::database::Shape>)>,
}

impl Session {
    pub fn new(info: Arc<ClientInfo>, authenticated: bool) -> Session {
        Session {
            db: 0,
            resp3: false,
            authenticated,
            user: "default".into(),
            acl: None,
            multi: None,
            watched: Vec::new(),
            watch_flag: Arc::new(Default::default()),
            close: false,
            info,
            subscriber: None,
            listening: false,
            channels: Vec::new(),
            patterns: Vec::new(),
            block: None,
            now_ms: 0,
            upstream: None,
            upstream_key: None,
            upstream_pubsub: None,
            db_write_lsn: 0,
            query_shapes: Vec::new(),
        }
    }

    /// This connection's outbox, for a command that registers it to receive messages.
    pub fn outbox(&mut self) -> Option<Arc<Subscriber>> {
        self.listening = true;
        self.subscriber.clone()
    }

    /// Channels plus patterns this connection is subscribed to.
    pub fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    pub fn id(&self) -> u64 {
        self.info.id
    }

    pub fn select(&mut self, db: usize) {
        self.db = db;
        self.info.db.store(db, Ordering::Relaxed);
    }
}
