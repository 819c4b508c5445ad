//! The upstream Valkey/Redis (L2) of tiered mode: its connections, its health and the
//! coherence of L1 with it.
//!
//! Per database there is a *link*: `pool_size` multiplexed RESP3 connections with
//! `CLIENT TRACKING ON` (every read that fills L1 goes through one of them, so the upstream
//! remembers the key and pushes an `invalidate` when anyone changes it), and `pool_size`
//! plain RESP2 connections for relaying RESP2 clients' commands unchanged (RESP3 reply shapes
//! differ from RESP2 ones, e.g. ZRANGE WITHSCORES, so each client protocol has its own).
//! Links are opened on first use while L2 is up.
//!
//! Coherence: an invalidation bumps the key's *epoch* and removes the key from L1 under the L1
//! shard lock; a fill remembers the epoch before its read and stores the value under the same
//! lock only if the epoch (and the link generation) did not move, so a fill can never land after
//! the invalidation of what it read. Any connection failure marks L2 down: the generation moves
//! on, every link is dropped and L1 is flushed (invalidations may have been missed); a
//! background supervisor reconnects with backoff 1 s, 2 s, 4 s, then every 4 s, flushes L1
//! again and marks L2 up. No client request ever waits for a reconnection attempt.

use crate::cache::cluster::{key_slot, parse_slots, Node, NodeStatus, Topology};
use crate::cache::entry::Entry;
use crate::cache::store::Store;
use crate::config::{L1Config, L2Config};
use crate::guard::breaker::{Breaker, Settings, State};
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::histogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Slots in the invalidation-epoch table; keys share a slot by hash (a shared slot only ever
/// makes a fill give up, never lets a stale one through).
const EPOCH_SLOTS: usize = 1 << 14;

/// Error codes with which an upstream says it cannot serve at all right now: they count as an
/// outage (fail open, breaker failure), not as the command's answer. MOVED and ASK only reach
/// us when the client library could not follow them (a Cluster whose nodes disagree while it
/// comes back).
fn outage(code: &str) -> bool {
    matches!(
        code,
        "CLUSTERDOWN" | "MASTERDOWN" | "LOADING" | "TRYAGAIN" | "MOVED" | "ASK"
    )
}

/// The certificates for a TLS upstream from `l2.tls_*` (None when none is configured: plain
/// TCP, or TLS with the system's trust store). Unreadable files were refused by validation.
fn tls_certificates(cfg: &L2Config) -> Option<redis::TlsCertificates> {
    if cfg.tls_ca_file.is_empty() && cfg.tls_cert_file.is_empty() {
        return None;
    }
    let read = |f: &str| (!f.is_empty()).then(|| std::fs::read(f).ok()).flatten();
    Some(redis::TlsCertificates {
        client_tls: match (read(&cfg.tls_cert_file), read(&cfg.tls_key_file)) {
            (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
                client_cert,
                client_key,
            }),
            _ => None,
        },
        root_cert: read(&cfg.tls_ca_file),
    })
}

/// A server error as a reply value (the text the upstream sent).
fn server_error(e: &redis::RedisError) -> redis::ServerError {
    let text = match e.detail() {
        Some(d) => format!("-{} {d}\r\n", e.code().unwrap_or("ERR")),
        None => format!("-{}\r\n", e.code().unwrap_or("ERR")),
    };
    match redis::parse_redis_value(text.as_bytes()) {
        Ok(Value::ServerError(se)) => se,
        _ => redis::parse_redis_value(b"-ERR L2 error\r\n")
            .ok()
            .and_then(|v| match v {
                Value::ServerError(se) => Some(se),
                _ => None,
            })
            .expect("a literal error line parses"),
    }
}

/// The reconnection schedule: 1 s, 2 s, 4 s, then every 4 s.
pub const BACKOFF_MS: [u64; 3] = [1000, 2000, 4000];

/// Receives the pushes (pub/sub messages) of a dedicated connection, in order, on the
/// connection's own task: it must not block.
pub type PushFn = Arc<dyn Fn(PushInfo) + Send + Sync>;

/// Which keys an upstream call touches: on a Cluster they decide which masters it needs (each
/// master has its own health and breaker; a down one makes only its keys fail open).
#[derive(Clone, Copy)]
pub enum Keys<'a> {
    /// Each command's first argument is its key (GET/PTTL fills, tag sets, result entries).
    First,
    /// The keys of the one command sent; none: a keyless command, which needs every master.
    These(&'a [&'a [u8]]),
}

/// Why an upstream call produced no upstream reply.
#[derive(Debug, Clone)]
pub enum L2Error {
    /// L2 is down or its breaker is open: the caller falls back per `l2.fail_open`.
    Unavailable,
}

/// Counters for INFO and /metrics.
#[derive(Default)]
pub struct L2Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub fills: AtomicU64,
    pub fills_dropped: AtomicU64,
    pub invalidations: AtomicU64,
    pub errors: AtomicU64,
    pub reconnects: AtomicU64,
    /// Upstream round trips, and their total time in microseconds.
    pub calls: AtomicU64,
    pub call_us: AtomicU64,
}

struct Link {
    tracking: Vec<MultiplexedConnection>,
    plain: Vec<MultiplexedConnection>,
}

/// The shared connections to a Cluster upstream: one cluster connection per protocol (they route
/// each command to the node owning its slot, fan KEYS/DBSIZE/FLUSHDB out to every master). Each
/// master's `CLIENT TRACKING ON BCAST` connection, whose invalidations cover every key written
/// on that node whatever connection read it, belongs to its [`Node`] in the topology.
struct ClusterLink {
    resp2: ClusterConnection,
    resp3: ClusterConnection,
}

/// A connection to the upstream of one client's own (WATCH, blocking pops, pub/sub).
#[derive(Clone)]
pub enum Dedicated {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Dedicated {
    pub async fn query(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<Value> {
        match self {
            Dedicated::Node(c) => cmd.query_async(c).await,
            Dedicated::Cluster(c) => cmd.query_async(c).await,
        }
    }

    /// Sends a pipeline; on a Cluster all of it goes to the node owning `slot_key`'s slot.
    pub async fn pipeline(
        &mut self,
        pipe: &redis::Pipeline,
        slot_key: Option<&[u8]>,
    ) -> redis::RedisResult<Vec<Value>> {
        match self {
            Dedicated::Node(c) => pipe.query_async(c).await,
            Dedicated::Cluster(c) => {
                let n = pipe.cmd_iter().count();
                c.route_pipeline(pipe.clone(), 0, n, route_for(slot_key))
                    .await
            }
        }
    }

    pub async fn subscribe(&mut self, kind: &str, names: &[Vec<u8>]) -> redis::RedisResult<()> {
        match (self, kind) {
            (Dedicated::Node(c), "subscribe") => c.subscribe(names).await,
            (Dedicated::Node(c), "psubscribe") => c.psubscribe(names).await,
            (Dedicated::Node(c), "unsubscribe") => c.unsubscribe(names).await,
            (Dedicated::Node(c), _) => c.punsubscribe(names).await,
            (Dedicated::Cluster(c), "subscribe") => c.subscribe(names).await,
            (Dedicated::Cluster(c), "psubscribe") => c.psubscribe(names).await,
            (Dedicated::Cluster(c), "unsubscribe") => c.unsubscribe(names).await,
            (Dedicated::Cluster(c), _) => c.punsubscribe(names).await,
        }
    }
}

/// Where a pipeline for `key`'s slot goes on a Cluster (any node when there is no key).
fn route_for(key: Option<&[u8]>) -> SingleNodeRoutingInfo {
    match key {
        Some(k) => SingleNodeRoutingInfo::SpecificNode(Route::new(key_slot(k), SlotAddr::Master)),
        None => SingleNodeRoutingInfo::Random,
    }
}

/// A command's first argument (its key, for the commands sent with [`Keys::First`]).
fn first_arg(cmd: &redis::Cmd) -> Option<&[u8]> {
    match cmd.args_iter().nth(1) {
        Some(redis::Arg::Simple(k)) => Some(k),
        _ => None,
    }
}

/// Whether replies (or the error for all of them) say the upstream cannot serve at all.
fn refused(r: &redis::RedisResult<Vec<Value>>) -> bool {
    match r {
        Ok(v) => v
            .iter()
            .any(|v| matches!(v, Value::ServerError(e) if outage(e.code()))),
        Err(e) => e.code().is_some_and(outage),
    }
}

pub struct L2 {
    cfg: L2Config,
    info: redis::ConnectionInfo,
    /// CA / client certificates for a `rediss://` upstream (None: plain TCP or system roots).
    tls: Option<redis::TlsCertificates>,
    store: Arc<Store>,
    pub l1_ttl_ms: u64,
    pub max_entries: usize,
    epochs: Box<[AtomicU64]>,
    links: Vec<tokio::sync::Mutex<Option<Arc<Link>>>>,
    /// Set when the upstream is a Cluster (`l2.cluster`): its seed nodes.
    seeds: Vec<String>,
    cluster: tokio::sync::Mutex<Option<Arc<ClusterLink>>>,
    /// The Cluster's masters, their slots and their health (empty until first connected).
    topology: RwLock<Arc<Topology>>,
    next: AtomicUsize,
    generation: AtomicU64,
    up: AtomicBool,
    ready: AtomicBool,
    breaker: Mutex<Breaker>,
    wake: tokio::sync::Notify,
    /// Wakes the Cluster watcher when a master fails.
    cluster_wake: tokio::sync::Notify,
    pub stats: L2Stats,
    /// Reconnection attempts made so far in the current outage (INFO, tests of the schedule).
    pub attempts: AtomicU64,
    /// Round-trip times of upstream calls (the `strata_l2_request_duration_seconds` series).
    latency: Histogram,
}

impl L2 {
    pub fn new(
        cfg: &L2Config,
        l1: &L1Config,
        store: Arc<Store>,
        databases: usize,
        latency: Histogram,
    ) -> Arc<L2> {
        let url = if cfg.url.is_empty() {
            cfg.cluster.first().cloned().unwrap_or_default()
        } else {
            cfg.url.clone()
        };
        let mut info: redis::ConnectionInfo =
            redis::IntoConnectionInfo::into_connection_info(url.as_str()).unwrap_or_else(|_| {
                redis::IntoConnectionInfo::into_connection_info("redis://127.0.0.1:6379")
                    .expect("a literal URL parses")
            });
        let mut rs = info.redis_settings().clone();
        if !cfg.username.is_empty() {
            rs = rs.set_username(&cfg.username);
        }
        if !cfg.password.is_empty() {
            rs = rs.set_password(&cfg.password);
        }
        info = info.set_redis_settings(rs.set_lib_name("strata", env!("CARGO_PKG_VERSION")));
        Arc::new(L2 {
            cfg: cfg.clone(),
            info,
            tls: tls_certificates(cfg),
            store,
            l1_ttl_ms: l1.ttl.saturating_mul(1000),
            max_entries: l1.max_entries,
            epochs: (0..EPOCH_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            links: (0..databases)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            seeds: cfg.cluster.clone(),
            cluster: tokio::sync::Mutex::new(None),
            topology: RwLock::new(Arc::new(Topology::default())),
            next: AtomicUsize::new(0),
            generation: AtomicU64::new(1),
            up: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            breaker: Mutex::new(Breaker::new(Settings::from_l2(cfg))),
            wake: tokio::sync::Notify::new(),
            cluster_wake: tokio::sync::Notify::new(),
            stats: L2Stats::default(),
            attempts: AtomicU64::new(0),
            latency,
        })
    }

    pub fn config(&self) -> &L2Config {
        &self.cfg
    }

    /// Starts the supervisor that brings L2 up and back up after failures (and, on a Cluster,
    /// the watcher that follows its topology and brings single masters back).
    pub fn start(self: &Arc<Self>) {
        tokio::spawn(supervise(self.clone()));
        if self.is_cluster() {
            tokio::spawn(watch_cluster(self.clone()));
        }
    }

    /// Whether L2 has been up at least once (and the warm-up patterns are loaded).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The upstream's breaker; on a Cluster the worst of its masters' breakers.
    pub fn breaker_state(&self) -> State {
        let own = self.breaker.lock().state(crate::command::unix_ms());
        let rank = |s: &State| match s {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        };
        self.nodes()
            .into_iter()
            .map(|n| n.breaker)
            .chain([own])
            .max_by_key(rank)
            .unwrap_or(own)
    }

    /// Times the breakers opened (the upstream's, plus every Cluster master's).
    pub fn breaker_opened(&self) -> u64 {
        self.breaker.lock().opened + self.nodes().iter().map(|n| n.opened).sum::<u64>()
    }

    /// The Cluster's masters and their health (empty for a single upstream).
    pub fn nodes(&self) -> Vec<NodeStatus> {
        let now = crate::command::unix_ms();
        let topo = self.topology();
        topo.nodes.iter().map(|n| n.status(now)).collect()
    }

    fn topology(&self) -> Arc<Topology> {
        self.topology.read().clone()
    }

    /// Whether a call may go upstream now (L2 up and the breaker lets it through).
    pub fn admit(&self) -> Result<(), L2Error> {
        if !self.is_up() {
            return Err(L2Error::Unavailable);
        }
        if self.breaker.lock().allow(crate::command::unix_ms()) {
            Ok(())
        } else {
            Err(L2Error::Unavailable)
        }
    }

    fn record(&self, ok: bool) {
        self.breaker.lock().record(crate::command::unix_ms(), ok);
        if !ok {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Marks L2 down after a connection failure seen on generation `gen` (a failure of an
    /// older generation was already handled).
    pub fn failed(&self, gen: u64) {
        if self
            .generation
            .compare_exchange(gen, gen + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.up.store(false, Ordering::Release);
            self.flush_l1();
            tracing::warn!("L2 connection lost; L1 flushed, reconnecting in the background");
            self.wake.notify_one();
        }
    }

    /// Empties L1 (every database): invalidations may have been missed.
    fn flush_l1(&self) {
        let _gate = self.store.exclusive();
        self.store.flush_all();
    }

    fn epoch_slot(&self, db: usize, key: &[u8]) -> &AtomicU64 {
        let h = self.store.hash(key) ^ (db as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.epochs[(h as usize) & (EPOCH_SLOTS - 1)]
    }

    /// The key's invalidation epoch, read before the upstream read that may fill L1.
    pub fn epoch(&self, db: usize, key: &[u8]) -> u64 {
        self.epoch_slot(db, key).load(Ordering::Acquire)
    }

    /// Removes a key from L1 because it changed upstream (or is about to be changed by us).
    pub fn invalidate(&self, db: usize, key: &[u8]) {
        self.forget(db, key);
        self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a key from L1 and moves its epoch on (a fill in flight will not land).
    fn forget(&self, db: usize, key: &[u8]) {
        let now = crate::command::unix_ms();
        self.store.access(db, key, now, |slot| {
            self.epoch_slot(db, key).fetch_add(1, Ordering::AcqRel);
            slot.take();
        });
    }

    /// Stores a value read from L2 in L1, unless it was invalidated (or L2 went down) since
    /// the read started. `pttl` is L2's remaining TTL in ms (-1: none).
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &self,
        db: usize,
        key: &[u8],
        val: &[u8],
        pttl: i64,
        epoch: u64,
        gen: u64,
        now: u64,
    ) {
        if pttl == -2 || pttl == 0 {
            return;
        }
        let ttl = if pttl > 0 {
            (pttl as u64).min(self.l1_ttl_ms)
        } else {
            self.l1_ttl_ms
        };
        let stored = self.store.access(db, key, now, |slot| {
            if self.epoch(db, key) != epoch || self.generation() != gen || !self.is_up() {
                return false;
            }
            slot.put(Entry::new_str(key, val, Some(now + ttl), now as u32));
            true
        });
        if stored {
            self.stats.fills.fetch_add(1, Ordering::Relaxed);
            self.bound_l1(now);
        } else {
            self.stats.fills_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Evicts least recently used keys while L1 holds more than `l1.max_entries` keys or more
    /// than `l1.maxmemory` bytes (a near cache never refuses a fill: it evicts).
    pub fn bound_l1(&self, now: u64) {
        // Eviction never interleaves with a transaction or script holding the exclusive gate.
        let _gate = self.store.shared();
        let total = |s: &Store| (0..s.databases()).map(|d| s.dbsize(d)).sum::<usize>();
        while total(&self.store) > self.max_entries
            || (self.store.maxmemory() > 0 && self.store.used_memory() > self.store.maxmemory())
        {
            if !self.store.evict_one(now) {
                break;
            }
        }
    }

    fn client(
        &self,
        db: usize,
        protocol: ProtocolVersion,
    ) -> Result<redis::Client, redis::RedisError> {
        let rs = self
            .info
            .redis_settings()
            .clone()
            .set_db(db as i64)
            .set_protocol(protocol);
        let info = self.info.clone().set_redis_settings(rs);
        match &self.tls {
            Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
            None => redis::Client::open(info),
        }
    }

    fn conn_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(self.cfg.connect_timeout_ms)))
            .set_response_timeout(Some(Duration::from_millis(self.cfg.timeout_ms)))
    }

    async fn open_link(self: &Arc<Self>, db: usize, gen: u64) -> Result<Link, redis::RedisError> {
        let mut tracking = Vec::with_capacity(self.cfg.pool_size);
        let mut plain = Vec::with_capacity(self.cfg.pool_size);
        for _ in 0..self.cfg.pool_size {
            let weak: Weak<L2> = Arc::downgrade(self);
            let push = move |p: PushInfo| {
                if let Some(l2) = weak.upgrade() {
                    if l2.on_push(db, p) {
                        l2.failed(gen);
                    }
                }
                Ok::<(), ()>(())
            };
            let client = self.client(db, ProtocolVersion::RESP3)?;
            let mut c = client
                .get_multiplexed_async_connection_with_config(
                    &self.conn_config().set_push_sender(push),
                )
                .await?;
            redis::cmd("CLIENT")
                .arg("TRACKING")
                .arg("ON")
                .query_async::<()>(&mut c)
                .await?;
            tracking.push(c);
            let client = self.client(db, ProtocolVersion::RESP2)?;
            plain.push(
                client
                    .get_multiplexed_async_connection_with_config(&self.conn_config())
                    .await?,
            );
        }
        Ok(Link { tracking, plain })
    }

    /// Whether the upstream is a Cluster (only database 0 exists there).
    pub fn is_cluster(&self) -> bool {
        !self.seeds.is_empty()
    }

    fn cluster_client(
        &self,
        protocol: ProtocolVersion,
        push: Option<PushFn>,
        timeout: bool,
    ) -> redis::RedisResult<ClusterClient> {
        let mut b = ClusterClient::builder(self.seeds.clone())
            .use_protocol(protocol)
            .connection_timeout(Duration::from_millis(self.cfg.connect_timeout_ms))
            // A request that meets a connection the library is still repairing (a master that
            // restarted, a failover it has not seen yet) is retried after 20, 40, 80 ms while
            // its slot map is refreshed; the library's default waits start at 1.28 s.
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .retry_wait_formula(10, 2);
        if timeout {
            b = b.response_timeout(Duration::from_millis(self.cfg.timeout_ms));
        }
        if !self.cfg.username.is_empty() {
            b = b.username(&self.cfg.username);
        }
        if !self.cfg.password.is_empty() {
            b = b.password(&self.cfg.password);
        }
        if let Some(f) = push {
            b = b.push_sender(move |p: PushInfo| {
                f(p);
                Ok::<(), ()>(())
            });
        }
        if let Some(certs) = &self.tls {
            b = b.certs(certs.clone());
        }
        b.build()
    }

    /// Opens the cluster connections and a tracker on every master. A master that cannot be
    /// reached is down on its own (the watcher retries it); only a Cluster none of whose
    /// masters answers fails the whole upstream.
    async fn open_cluster(self: &Arc<Self>) -> redis::RedisResult<ClusterLink> {
        let mut resp2 = self
            .cluster_client(ProtocolVersion::RESP2, None, true)?
            .get_async_connection()
            .await?;
        let resp3 = self
            .cluster_client(ProtocolVersion::RESP3, None, true)?
            .get_async_connection()
            .await?;
        let slots = resp2
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let topo = Arc::new(
            self.topology()
                .rebuild(&parse_slots(&slots), Settings::from_l2(&self.cfg)),
        );
        let now = crate::command::unix_ms();
        for node in &topo.nodes {
            // Whatever a master was before, it starts over with a fresh tracker.
            node.fail(node.generation());
            match self.open_tracker(node).await {
                Ok(()) => node.restore(),
                Err(e) => {
                    tracing::warn!(node = %node.name(), error = %e, "cannot track an L2 Cluster master");
                    node.retry_later(now, &BACKOFF_MS);
                }
            }
        }
        if !topo.nodes.iter().any(|n| n.is_up()) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no L2 Cluster master answers",
            )));
        }
        *self.topology.write() = topo;
        Ok(ClusterLink { resp2, resp3 })
    }

    /// Opens `node`'s `CLIENT TRACKING ON BCAST` connection; when it drops, the node fails.
    async fn open_tracker(self: &Arc<Self>, node: &Arc<Node>) -> redis::RedisResult<()> {
        let (host, port) = &node.addr;
        let rs = self
            .info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let scheme = if self.seeds.iter().any(|u| u.starts_with("rediss://")) {
            "rediss"
        } else {
            "redis"
        };
        let info = redis::IntoConnectionInfo::into_connection_info(
            format!("{scheme}://{host}:{port}").as_str(),
        )?
        .set_redis_settings(rs);
        let gen = node.generation();
        let (weak, weak_node) = (Arc::downgrade(self), Arc::downgrade(node));
        let push = move |p: PushInfo| {
            if let (Some(l2), Some(node)) = (weak.upgrade(), weak_node.upgrade()) {
                if l2.on_push(0, p) {
                    l2.node_failed(&node, gen);
                }
            }
            Ok::<(), ()>(())
        };
        let client = match &self.tls {
            Some(certs) => redis::Client::build_with_tls(info, certs.clone())?,
            None => redis::Client::open(info)?,
        };
        let mut c = client
            .get_multiplexed_async_connection_with_config(&self.conn_config().set_push_sender(push))
            .await?;
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .query_async::<()>(&mut c)
            .await?;
        *node.tracker.lock() = Some(c);
        Ok(())
    }

    /// A Cluster master stopped answering (its tracker dropped, or a call to it could not
    /// connect), seen at the node's generation `gen`. Its keys leave L1 and fail open until the
    /// watcher has it back; the other masters' keys keep going to L2. With no master left, the
    /// whole upstream is down.
    fn node_failed(&self, node: &Node, gen: u64) {
        if !node.fail(gen) {
            return;
        }
        // Fills in flight were read before the failure: none of them lands.
        self.generation.fetch_add(1, Ordering::AcqRel);
        let topo = self.topology();
        if let Some(i) = topo.index_of(node) {
            self.forget_node_keys(&topo, i);
            tracing::warn!(node = %node.name(), "L2 Cluster master lost; its keys fail open until it is back");
            if topo.nodes.iter().all(|n| !n.is_up()) {
                self.failed(self.generation());
            }
        }
        self.cluster_wake.notify_one();
    }

    /// Removes from L1 every key in the slots of master `i` (database 0: a Cluster has no other).
    fn forget_node_keys(&self, topo: &Topology, i: usize) {
        for k in self.store.keys(0, b"*", 0) {
            if topo.owner_of(&k) == Some(i) {
                self.forget(0, &k);
            }
        }
    }

    /// Checks that every master in `nodes` is up and its breaker closed; a call needing one
    /// master may be its HALF_OPEN breaker's trial.
    fn admit_nodes(&self, topo: &Topology, nodes: &[usize]) -> Result<(), L2Error> {
        let now = crate::command::unix_ms();
        let trial = nodes.len() == 1;
        match nodes.iter().all(|&i| topo.nodes[i].admits(now, trial)) {
            true => Ok(()),
            false => Err(L2Error::Unavailable),
        }
    }

    /// Counts a Cluster call's outcome against the masters it needed (`gens` from
    /// [`Self::admit_nodes`]) and turns it into replies. A call that could not reach its one
    /// master makes the watcher check that master; a failure of a call spread over several
    /// masters is not pinned on any (their trackers tell which one died). Server errors are
    /// answers.
    fn settle(
        &self,
        topo: &Topology,
        nodes: &[usize],
        r: redis::RedisResult<Vec<Value>>,
        n: usize,
    ) -> Result<Vec<Value>, L2Error> {
        let now = crate::command::unix_ms();
        let refused = refused(&r);
        let lost = matches!(&r, Err(e) if e.code().is_none());
        let ok = !refused && !lost;
        if !ok {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        if ok || nodes.len() == 1 {
            for &i in nodes {
                topo.nodes[i].record(now, ok);
            }
        }
        match r {
            _ if refused => Err(L2Error::Unavailable),
            Ok(v) => Ok(v),
            Err(e) if e.code().is_some() => Ok(vec![Value::ServerError(server_error(&e)); n]),
            Err(e) => {
                if let [i] = nodes {
                    if !e.is_timeout() {
                        tracing::warn!(node = %topo.nodes[*i].name(), error = %e, "L2 call failed");
                        topo.nodes[*i].suspect.store(true, Ordering::Relaxed);
                        self.cluster_wake.notify_one();
                    }
                }
                Err(L2Error::Unavailable)
            }
        }
    }

    async fn cluster_link(self: &Arc<Self>) -> Result<(Arc<ClusterLink>, u64), L2Error> {
        self.open_once(
            &self.cluster,
            |_| self.open_cluster(),
            "the L2 cluster connections",
        )
        .await
    }

    /// The masters of the Cluster upstream (SCAN walks them one after the other).
    pub async fn cluster_masters(self: &Arc<Self>) -> Result<Vec<(String, u16)>, L2Error> {
        self.cluster_link().await?;
        Ok(self.topology().masters())
    }

    /// Runs one command on one Cluster master, by address (SCAN across the masters).
    pub async fn on_node(
        self: &Arc<Self>,
        resp3: bool,
        node: &(String, u16),
        cmd: redis::Cmd,
    ) -> Result<Value, L2Error> {
        if !self.is_up() {
            return Err(L2Error::Unavailable);
        }
        let (link, _) = self.cluster_link().await?;
        let topo = self.topology();
        let i = topo
            .nodes
            .iter()
            .position(|n| &n.addr == node)
            .ok_or(L2Error::Unavailable)?;
        self.admit_nodes(&topo, &[i])?;
        let mut con = if resp3 {
            link.resp3.clone()
        } else {
            link.resp2.clone()
        };
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: node.0.clone(),
            port: node.1,
        });
        let r = con.route_command(cmd, route).await.map(|v| vec![v]);
        let v = self.settle(&topo, &[i], r, 1)?;
        Ok(v.into_iter().next().unwrap_or(Value::Nil))
    }

    /// Counts a call's outcome for the breaker; a connection failure marks L2 down. Server
    /// errors are answers, not failures.
    fn outcome(&self, r: Result<(), &redis::RedisError>, gen: u64) -> Result<(), L2Error> {
        match r {
            Ok(()) => {
                self.record(true);
                Ok(())
            }
            Err(e) if e.code().is_some() => {
                self.record(true);
                Ok(())
            }
            Err(e) => {
                self.record(false);
                if !e.is_timeout() {
                    tracing::warn!(error = %e, "L2 call failed");
                    self.failed(gen);
                }
                Err(L2Error::Unavailable)
            }
        }
    }

    /// Applies a tracking connection's push; true when it says the connection is lost.
    fn on_push(&self, db: usize, p: PushInfo) -> bool {
        match p.kind {
            PushKind::Invalidate => match p.data.first() {
                Some(Value::Array(keys)) => {
                    for k in keys {
                        if let Value::BulkString(k) = k {
                            self.invalidate(db, k);
                        }
                    }
                }
                // `invalidate nil`: the upstream flushed; everything this link read is gone.
                _ => {
                    let _gate = self.store.exclusive();
                    self.epochs
                        .iter()
                        .for_each(|e| _ = e.fetch_add(1, Ordering::AcqRel));
                    self.store.flush_db(db);
                }
            },
            PushKind::Disconnection => return true,
            _ => {}
        }
        false
    }

    /// The link of a database, opened on first use.
    async fn link(self: &Arc<Self>, db: usize) -> Result<(Arc<Link>, u64), L2Error> {
        let slot = self.links.get(db).ok_or(L2Error::Unavailable)?;
        self.open_once(slot, |gen| self.open_link(db, gen), "an L2 connection")
            .await
    }

    /// The connections in `slot`, opened by `open` on first use (under the slot's lock, so
    /// once), and kept unless L2 failed meanwhile. A failure to open marks L2 down.
    async fn open_once<T, Fut>(
        &self,
        slot: &tokio::sync::Mutex<Option<Arc<T>>>,
        open: impl FnOnce(u64) -> Fut,
        what: &str,
    ) -> Result<(Arc<T>, u64), L2Error>
    where
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let gen = self.generation();
        let mut slot = slot.lock().await;
        if let Some(l) = slot.as_ref() {
            return Ok((l.clone(), gen));
        }
        match open(gen).await {
            Ok(l) => {
                let l = Arc::new(l);
                if self.generation() == gen {
                    *slot = Some(l.clone());
                }
                Ok((l, gen))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open {what}");
                self.record(false);
                self.failed(gen);
                Err(L2Error::Unavailable)
            }
        }
    }

    /// Sends a pipeline upstream on database `db` and returns every reply (server errors are
    /// `Value::ServerError` entries). `tracking` picks a connection whose reads are tracked
    /// (RESP3); otherwise the connection speaks the client's protocol. `keys` tells a Cluster
    /// which masters the call needs.
    pub async fn run(
        self: &Arc<Self>,
        db: usize,
        resp3: bool,
        tracking: bool,
        pipe: &redis::Pipeline,
        keys: Keys<'_>,
    ) -> Result<(Vec<Value>, u64), L2Error> {
        let start = std::time::Instant::now();
        let r = if self.is_cluster() {
            self.run_cluster(resp3 || tracking, pipe, keys).await
        } else {
            self.run_single(db, resp3, tracking, pipe).await
        };
        let took = start.elapsed();
        self.latency.observe(took.as_secs_f64());
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats
            .call_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        r
    }

    async fn run_single(
        self: &Arc<Self>,
        db: usize,
        resp3: bool,
        tracking: bool,
        pipe: &redis::Pipeline,
    ) -> Result<(Vec<Value>, u64), L2Error> {
        self.admit()?;
        let (link, gen) = self.link(db).await?;
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let mut con = if tracking || resp3 {
            link.tracking[i % link.tracking.len()].clone()
        } else {
            link.plain[i % link.plain.len()].clone()
        };
        let r = pipe.query_async::<Vec<Value>>(&mut con).await;
        // A reply that says the upstream cannot serve (a server still loading) is an outage,
        // not an answer: the caller fails open.
        if refused(&r) {
            self.record(false);
            return Err(L2Error::Unavailable);
        }
        self.outcome(r.as_ref().map(|_| ()), gen)?;
        match r {
            Ok(v) => Ok((v, gen)),
            // A server error for the whole pipeline: every reply is that error.
            Err(e) => Ok((
                vec![Value::ServerError(server_error(&e)); pipe.cmd_iter().count()],
                gen,
            )),
        }
    }

    /// A call on a Cluster: admitted only if every master it needs is up with a closed
    /// breaker. A single command goes as a command, so that the client library routes it as
    /// Cluster needs (KEYS/DBSIZE/FLUSHDB to every master with their replies combined, MGET/DEL
    /// split by slot); a pipeline is split by the slot of each command's first argument, one
    /// pipeline per slot, all at once, and the replies come back in order.
    async fn run_cluster(
        self: &Arc<Self>,
        resp3: bool,
        pipe: &redis::Pipeline,
        keys: Keys<'_>,
    ) -> Result<(Vec<Value>, u64), L2Error> {
        if !self.is_up() {
            return Err(L2Error::Unavailable);
        }
        let (link, gen) = self.cluster_link().await?;
        let con = if resp3 { &link.resp3 } else { &link.resp2 };
        let topo = self.topology();
        let cmds: Vec<&redis::Cmd> = pipe.cmd_iter().collect();
        if let [cmd] = cmds[..] {
            let first: Vec<&[u8]> = first_arg(cmd).into_iter().collect();
            let needed = match keys {
                Keys::These(k) => topo.nodes_for(k),
                Keys::First => topo.nodes_for(&first),
            }
            .ok_or(L2Error::Unavailable)?;
            self.admit_nodes(&topo, &needed)?;
            let r = cmd
                .query_async::<Value>(&mut con.clone())
                .await
                .map(|v| vec![v]);
            return Ok((self.settle(&topo, &needed, r, 1)?, gen));
        }
        // One group per slot: (slot, the commands' positions, their pipeline, owning master).
        let mut groups: Vec<(u16, Vec<usize>, redis::Pipeline, usize)> = Vec::new();
        for (i, cmd) in cmds.iter().enumerate() {
            let key = first_arg(cmd).unwrap_or_default();
            let slot = key_slot(key);
            let g = match groups.iter().position(|g| g.0 == slot) {
                Some(g) => g,
                None => {
                    let owner = topo.owner_of(key).ok_or(L2Error::Unavailable)?;
                    let mut p = redis::pipe();
                    p.ignore_errors();
                    groups.push((slot, Vec::new(), p, owner));
                    groups.len() - 1
                }
            };
            groups[g].1.push(i);
            groups[g].2.add_command((*cmd).clone());
        }
        let mut needed: Vec<usize> = groups.iter().map(|g| g.3).collect();
        needed.sort_unstable();
        needed.dedup();
        self.admit_nodes(&topo, &needed)?;
        let calls = groups.iter().map(|(slot, idx, p, _)| {
            let mut c = con.clone();
            let route = SingleNodeRoutingInfo::SpecificNode(Route::new(*slot, SlotAddr::Master));
            async move { c.route_pipeline(p.clone(), 0, idx.len(), route).await }
        });
        let results = futures_util::future::join_all(calls).await;
        let mut out = vec![Value::Nil; cmds.len()];
        let mut unavailable = false;
        for ((_, idx, _, owner), r) in groups.iter().zip(results) {
            match self.settle(&topo, &[*owner], r, idx.len()) {
                Ok(v) => idx.iter().zip(v).for_each(|(i, v)| out[*i] = v),
                Err(_) => unavailable = true,
            }
        }
        if unavailable {
            return Err(L2Error::Unavailable);
        }
        Ok((out, gen))
    }

    /// A connection of its own for one client (WATCH, blocking pops, pub/sub): no tracking
    /// and no response timeout (a blocking pop may wait as long as the client asked).
    pub async fn dedicated(
        &self,
        db: usize,
        resp3: bool,
        push: Option<PushFn>,
    ) -> Result<Dedicated, L2Error> {
        self.admit()?;
        let proto = if resp3 || push.is_some() {
            ProtocolVersion::RESP3
        } else {
            ProtocolVersion::RESP2
        };
        let opened = if self.is_cluster() {
            match self.cluster_client(proto, push, false) {
                Ok(client) => client.get_async_connection().await.map(Dedicated::Cluster),
                Err(e) => Err(e),
            }
        } else {
            let mut cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_millis(self.cfg.connect_timeout_ms)))
                .set_response_timeout(None);
            if let Some(f) = push {
                cfg = cfg.set_push_sender(move |p: PushInfo| {
                    f(p);
                    Ok::<(), ()>(())
                });
            }
            match self.client(db, proto) {
                Ok(client) => client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .map(Dedicated::Node),
                Err(e) => Err(e),
            }
        };
        match opened {
            Ok(c) => {
                self.record(true);
                Ok(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a dedicated L2 connection");
                self.record(false);
                Err(L2Error::Unavailable)
            }
        }
    }

    /// One connection attempt of the supervisor: a fresh connection answering PING.
    async fn probe(&self) -> bool {
        if self.is_cluster() {
            let Ok(client) = self.cluster_client(ProtocolVersion::RESP2, None, true) else {
                return false;
            };
            return match client.get_async_connection().await {
                Ok(mut c) => redis::cmd("PING").query_async::<()>(&mut c).await.is_ok(),
                Err(_) => false,
            };
        }
        let Ok(client) = self.client(0, ProtocolVersion::RESP2) else {
            return false;
        };
        let cfg = self.conn_config();
        match client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
        {
            Ok(mut c) => redis::cmd("PING").query_async::<()>(&mut c).await.is_ok(),
            Err(_) => false,
        }
    }

    /// Loads keys matching the `l2.warm` patterns (database 0) into L1, at most
    /// `l1.max_entries` of them, through the tracking connections like any fill. Returns how
    /// many were loaded.
    pub async fn warm(self: &Arc<Self>) -> usize {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        'patterns: for pattern in &self.cfg.warm {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::pipe();
                scan.cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                let Ok((v, _)) = self.run(0, false, false, &scan, Keys::These(&[])).await else {
                    break 'patterns;
                };
                let Some((next, found)) = v
                    .into_iter()
                    .next()
                    .and_then(|v| redis::from_redis_value::<(u64, Vec<Vec<u8>>)>(v).ok())
                else {
                    break;
                };
                keys.extend(found);
                if keys.len() >= self.max_entries {
                    keys.truncate(self.max_entries);
                    break 'patterns;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        keys.sort();
        keys.dedup();
        let mut loaded = 0;
        for chunk in keys.chunks(500) {
            let epochs: Vec<u64> = chunk.iter().map(|k| self.epoch(0, k)).collect();
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for k in chunk {
                pipe.cmd("GET").arg(&k[..]).cmd("PTTL").arg(&k[..]);
            }
            let Ok((v, gen)) = self.run(0, true, true, &pipe, Keys::First).await else {
                break;
            };
            let now = crate::command::unix_ms();
            for (i, k) in chunk.iter().enumerate() {
                if let (Some(Value::BulkString(val)), Some(Value::Int(pttl))) =
                    (v.get(2 * i), v.get(2 * i + 1))
                {
                    self.fill(0, k, val, *pttl, epochs[i], gen, now);
                    loaded += 1;
                }
            }
        }
        loaded
    }

    async fn drop_links(&self) {
        for l in &self.links {
            *l.lock().await = None;
        }
        *self.cluster.lock().await = None;
        for n in &self.topology().nodes {
            n.fail(n.generation());
        }
    }

    /// Reads `CLUSTER SLOTS` (from a master that is up, else any node) and, when the masters
    /// or their slots changed (a failover, a resharding), installs the new topology: masters
    /// that left lose their trackers, new ones are tracked by [`Self::reconnect_nodes`], and
    /// L1 forgets everything (a write on a master's new slots before its tracker existed was
    /// not seen).
    async fn refresh_topology(&self, link: &ClusterLink) {
        let topo = self.topology();
        let route = match topo.nodes.iter().find(|n| n.is_up()) {
            Some(n) => SingleNodeRoutingInfo::ByAddress {
                host: n.addr.0.clone(),
                port: n.addr.1,
            },
            None => SingleNodeRoutingInfo::Random,
        };
        let Ok(slots) = link
            .resp2
            .clone()
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(route),
            )
            .await
        else {
            return;
        };
        let ranges = parse_slots(&slots);
        if ranges.is_empty() {
            return;
        }
        let next = topo.rebuild(&ranges, Settings::from_l2(&self.cfg));
        if next.same_as(&topo) {
            return;
        }
        tracing::info!(
            masters = ?next.masters(),
            "L2 Cluster topology changed; tracking its masters again"
        );
        for old in &topo.nodes {
            if next.by_addr(&old.addr).is_none() {
                old.fail(old.generation());
            }
        }
        *self.topology.write() = Arc::new(next);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.flush_l1();
    }

    /// Tries to track again every master that is down and due (1 s, 2 s, 4 s, then every 4 s
    /// after its failure). A master that is back first loses its keys from L1 (what was
    /// written while it was away, upstream or failing open here, was not seen), then is up.
    async fn reconnect_nodes(self: &Arc<Self>) {
        let topo = self.topology();
        for (i, node) in topo.nodes.iter().enumerate() {
            let now = crate::command::unix_ms();
            if node.is_up() {
                // A call could not reach it: it has failed if its tracker cannot either.
                if node.suspect.swap(false, Ordering::Relaxed) {
                    let gen = node.generation();
                    let tracker = node.tracker.lock().clone();
                    if let Some(mut t) = tracker {
                        if !serving(&mut t).await {
                            self.node_failed(node, gen);
                        }
                    }
                }
                continue;
            }
            if node.next_try_ms.load(Ordering::Relaxed) > now {
                continue;
            }
            let back = match self.open_tracker(node).await {
                // It serves again once it says the Cluster is fine (a restarted master refuses
                // with CLUSTERDOWN until it has rejoined).
                Ok(()) => {
                    let tracker = node.tracker.lock().clone();
                    match tracker {
                        Some(mut t) => serving(&mut t).await,
                        None => false,
                    }
                }
                Err(_) => false,
            };
            match back {
                true => {
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    self.forget_node_keys(&topo, i);
                    node.restore();
                    // A fail-open write that raced the line above is forgotten too.
                    self.forget_node_keys(&topo, i);
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(node = %node.name(), "L2 Cluster master is back");
                }
                false => {
                    *node.tracker.lock() = None;
                    node.retry_later(now, &BACKOFF_MS);
                }
            }
        }
    }
}

/// Whether a Cluster node answers on `con` and says its Cluster can serve.
async fn serving(con: &mut MultiplexedConnection) -> bool {
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async::<String>(con)
        .await
        .is_ok_and(|i| i.contains("cluster_state:ok"))
}

/// How often the Cluster watcher reads the topology.
const TOPOLOGY_REFRESH_MS: u64 = 1000;

/// Follows a Cluster upstream while it is up: reads its topology every second and brings
/// failed masters back on their own schedule, without touching the masters that are fine.
async fn watch_cluster(l2: Arc<L2>) {
    let mut refreshed = 0u64;
    loop {
        tokio::select! {
            _ = l2.cluster_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if !l2.is_up() {
            continue;
        }
        // Opening the link (first use, after an outage) tracks every master itself.
        let link = match l2.cluster.try_lock() {
            Ok(slot) => slot.clone(),
            Err(_) => continue,
        };
        let Some(link) = link else { continue };
        let now = crate::command::unix_ms();
        if now >= refreshed + TOPOLOGY_REFRESH_MS {
            refreshed = now;
            l2.refresh_topology(&link).await;
        }
        l2.reconnect_nodes().await;
    }
}

/// Keeps L2 up: waits for a failure, then reconnects in the background with backoff. Before
/// L2 is used again, L1 is flushed (invalidations sent while it was down were missed).
async fn supervise(l2: Arc<L2>) {
    let mut attempt = 0usize;
    loop {
        if l2.is_up() {
            attempt = 0;
            l2.wake.notified().await;
            continue;
        }
        l2.drop_links().await;
        l2.attempts.fetch_add(1, Ordering::Relaxed);
        if l2.probe().await {
            finish_reconnect(&l2).await;
            continue;
        }
        let wait = BACKOFF_MS[attempt.min(BACKOFF_MS.len() - 1)];
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

async fn finish_reconnect(l2: &Arc<L2>) {
    l2.flush_l1();
    l2.generation.fetch_add(1, Ordering::AcqRel);
    l2.attempts.store(0, Ordering::Relaxed);
    l2.up.store(true, Ordering::Release);
    if l2.ready() {
        l2.stats.reconnects.fetch_add(1, Ordering::Relaxed);
    } else {
        let n = l2.warm().await;
        if !l2.cfg.warm.is_empty() {
            tracing::info!(keys = n, "L1 warmed from L2");
        }
    }
    l2.ready.store(true, Ordering::Release);
    tracing::info!("L2 is up");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn l2(ttl_s: u64) -> (Arc<L2>, Arc<Store>) {
        let store = Arc::new(Store::new(2));
        let l1 = L1Config {
            ttl: ttl_s,
            max_entries: 10,
            ..L1Config::default()
        };
        let cfg = L2Config {
            url: "redis://127.0.0.1:1".into(),
            ..L2Config::default()
        };
        let l2 = L2::new(&cfg, &l1, store.clone(), 2, Histogram::new([1.0]));
        l2.up.store(true, Ordering::Release);
        (l2, store)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        // Feature: db-cache-optimization, Property 17: L2 Read-Through
        /// A value read from L2 lands in L1 with a TTL no longer than L2's remaining TTL (nor
        /// l1.ttl), unless the key was invalidated (or L2 went down) while the read was in
        /// flight, in which case it does not land at all.
        #[test]
        fn fills_never_outlive_l2_and_never_follow_their_invalidation(
            pttl in prop_oneof![Just(-2i64), Just(-1i64), 1i64..200_000],
            ttl_s in 1u64..100,
            invalidated in any::<bool>(),
            went_down in any::<bool>(),
        ) {
            let (l2, store) = l2(ttl_s);
            let now = 1_000_000;
            let epoch = l2.epoch(0, b"k");
            let gen = l2.generation();
            if invalidated {
                l2.invalidate(0, b"k");
            }
            if went_down {
                l2.failed(gen);
            }
            l2.fill(0, b"k", b"v", pttl, epoch, gen, now);
            let stored = store.read(0, b"k", now, |e| e.and_then(|e| e.expire_ms()));
            if invalidated || went_down || pttl == -2 {
                prop_assert_eq!(stored, None);
            } else {
                let at = stored.expect("filled with an expiry");
                let bound = if pttl > 0 { (pttl as u64).min(ttl_s * 1000) } else { ttl_s * 1000 };
                prop_assert!(at <= now + bound && at > now);
                // Once past the bound, L1 no longer serves it.
                prop_assert!(store.read(0, b"k", now + bound, |e| e.is_none()));
            }
        }
    }

    // Feature: db-cache-optimization, Property 18: LRU Cache Behavior
    #[test]
    fn tiered_l1_holds_at_most_max_entries() {
        let (l2, store) = l2(60);
        let gen = l2.generation();
        for i in 0..100u32 {
            let k = format!("k{i}");
            let e = l2.epoch(0, k.as_bytes());
            l2.fill(0, k.as_bytes(), b"v", -1, e, gen, 1_000 + i as u64);
            assert!(store.dbsize(0) <= 10);
        }
        // The most recent fill is always kept.
        assert!(store.read(0, b"k99", 2_000, |e| e.is_some()));
    }

    #[test]
    fn tiered_l1_holds_at_most_its_maxmemory() {
        let (l2, store) = l2(60);
        store.set_limits(4096, crate::config::EvictionPolicy::AllkeysLru, 5);
        let gen = l2.generation();
        let big = vec![b'x'; 1000];
        for i in 0..8u32 {
            let k = format!("k{i}");
            let e = l2.epoch(0, k.as_bytes());
            l2.fill(0, k.as_bytes(), &big, -1, e, gen, 1_000 + i as u64);
            assert!(store.used_memory() <= 4096, "{}", store.used_memory());
        }
        assert!(store.dbsize(0) >= 1);
    }
}
