//! The database tier as one object: the configured PostgreSQL instances with their pools,
//! routing state and statistics, the catalog cache, the shapes of statements seen, and the
//! background tasks that keep the routing state current (lag probes, CPU scrapes, pool
//! maintenance). `QUERY` (in `command::query`) drives it: `shape` classifies a statement once
//! per distinct text, `begin_read` picks an instance and resolves what the read depends on,
//! `ReadConn::run` runs it, and `write` runs a write on the primary and says what it
//! invalidated and at which WAL position.
//!
//! Statements run as prepared statements with every argument sent as a text parameter, so
//! PostgreSQL infers the types and parses the values itself; nothing is spliced into SQL.
//! Results are streamed and cut off at `max_result_bytes`. Errors keep PostgreSQL's SQLSTATE.

use super::balancer::{Balancer, Candidate, Ewma};
use super::catalog::{Catalog, CatalogError, SearchPath};
use super::classify::{classify, Classified, ClassifyError, Kind};
use super::pool::{PoolError, PoolSettings, Priority, Role, ServerPools};
use super::router::{
    choose, lsn_text, parse_lsn, LagSample, PrimaryHistory, ReadNeeds, ReplicaState, ReplicaView,
    Target,
};
use super::value::{column_names, PgValue, ValueError};
use crate::cache::query::QueryResult;
use crate::config::{DatabaseConfig, InstanceConfig};
use crate::observe::metrics::{DbLabel, DbSeries};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{pin_mut, TryStreamExt};
use lru::LruCache;
use parking_lot::Mutex;
use smallvec::SmallVec;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, OnceCell};
use tokio_postgres::types::{Format, IsNull, ToSql, Type};

/// Statement shapes remembered (distinct SQL texts).
const SHAPES: usize = 10_000;

/// Why a database operation failed; `Display` is the full RESP error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbError {
    /// PostgreSQL's error: SQLSTATE and message.
    Sql { code: String, message: String },
    /// No instance could answer.
    Unavailable(String),
    /// The connection broke while a write ran: it may or may not have committed. Holds the
    /// full error text of what broke it.
    Interrupted(String),
    /// A refusal with its full text (classification, pool exhaustion, size).
    Refused(String),
    /// A replica refused the read as a write (SQLSTATE 25006): run it as a write instead (its
    /// shape now says so).
    IsWrite,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Sql { code, message } => write!(f, "SQLERR {code} {message}"),
            DbError::Unavailable(why) => write!(f, "UNAVAILABLE {why}"),
            DbError::Interrupted(why) => {
                write!(f, "UNAVAILABLE {why} (the write may have been applied)")
            }
            DbError::Refused(text) => f.write_str(text),
            DbError::IsWrite => f.write_str("ERR statement writes"),
        }
    }
}

impl DbError {
    /// A driver error from `instance`: PostgreSQL's own error keeps its SQLSTATE; a lost
    /// connection makes the instance unavailable.
    fn from_pg(instance: &str, e: &tokio_postgres::Error) -> DbError {
        match e.as_db_error() {
            Some(db) => DbError::Sql {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
            },
            None => {
                let text = e.to_string();
                if let Some(counts) = text.strip_prefix("expected ") {
                    // tokio-postgres checks the parameter count before sending.
                    return DbError::Refused(format!(
                        "ERR wrong number of ARGS: expected {counts}"
                    ));
                }
                DbError::Unavailable(format!("database instance {instance} unreachable: {e}"))
            }
        }
    }

    fn code(&self) -> Option<&str> {
        match self {
            DbError::Sql { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<ClassifyError> for DbError {
    fn from(e: ClassifyError) -> DbError {
        DbError::Refused(e.to_string())
    }
}

fn pool_error(instance: &str, e: PoolError) -> DbError {
    match e {
        PoolError::Exhausted { .. } => DbError::Refused(format!("ERR {e}")),
        other => DbError::Unavailable(format!("database instance {instance} unreachable: {other}")),
    }
}

fn catalog_error(instance: &str, e: CatalogError) -> DbError {
    DbError::from_pg(instance, &e.0)
}

/// One argument, sent to PostgreSQL in the text format: the server infers the parameter's
/// type and parses the text itself, exactly as for a literal.
#[derive(Debug)]
pub struct TextArg<'a>(pub &'a [u8]);

impl ToSql for TextArg<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A statement as Strata understands it, classified once per distinct SQL text.
pub struct Shape {
    /// The SQL text, as the client sent it.
    pub sql: String,
    pub classified: Classified,
    /// A replica refused it as a write (SQLSTATE 25006): it runs on the primary from now on.
    pub runs_as_write: AtomicBool,
    /// A 128-bit hash of the normalized SQL: what cache keys are built from.
    pub fingerprint: [u8; 16],
}

impl Shape {
    pub fn kind(&self) -> Kind {
        if self.runs_as_write.load(Ordering::Relaxed) && self.classified.kind == Kind::Read {
            Kind::Write
        } else {
            self.classified.kind
        }
    }
}

/// Per-instance counters (DB.STATUS, INFO and /metrics read them).
#[derive(Default)]
pub struct InstanceStats {
    pub queries: AtomicU64,
    pub errors: AtomicU64,
    pub usec: AtomicU64,
}

/// One PostgreSQL server. Its role is not its own: `Database::roles` says which instance is
/// the primary now, and a failover changes it.
pub struct Instance {
    /// Its place in `Database::instances` (the configured primary is 0).
    pub index: usize,
    pub name: String,
    pub weight: u32,
    pub metrics_url: String,
    pub pg: tokio_postgres::Config,
    /// The same server as `database.admin_user` (health checks, promotion, repointing).
    pub admin: tokio_postgres::Config,
    /// Where it listens, as replicas reach it (host, port), from its URL.
    pub host: String,
    pub port: u16,
    /// Replaced when the instance changes role (a replica has no write pool).
    pools: parking_lot::RwLock<Arc<ServerPools>>,
    pub lag: ReplicaState,
    pub health: super::health::HealthState,
    pub breaker: Mutex<crate::guard::breaker::Breaker>,
    pub ewma: Ewma,
    /// Busy CPU fraction from the instance's metrics URL (None: unknown).
    pub cpu: Mutex<Option<f64>>,
    pub stats: InstanceStats,
    latency: prometheus_client::metrics::family::Family<
        DbLabel,
        prometheus_client::metrics::histogram::Histogram,
    >,
    /// This instance's series of `latency` as primary and as replica, looked up once (a
    /// lookup builds the label's two strings and hashes them).
    latency_as: [std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>; 2],
}

impl Instance {
    /// Its connection pools (a snapshot: a role change installs new ones).
    pub fn pools(&self) -> Arc<ServerPools> {
        self.pools.read().clone()
    }

    /// Whether its breaker lets client traffic through (HALF_OPEN's trial is the background
    /// check's, never a client's).
    pub fn breaker_closed(&self) -> bool {
        self.breaker.lock().state(crate::command::unix_ms()) == crate::guard::breaker::State::Closed
    }

    /// Counts a call's outcome for the breaker (only failures of the server, not SQL errors).
    pub fn breaker_record(&self, ok: bool) {
        let now = crate::command::unix_ms();
        let mut b = self.breaker.lock();
        if b.state(now) == crate::guard::breaker::State::Closed {
            b.record(now, ok);
        }
    }

    /// Whether it may get traffic at all: its checks pass and its breaker is closed.
    pub fn in_rotation(&self) -> bool {
        !self.lag.is_down() && self.health.healthy() && self.breaker_closed()
    }

    fn observe(&self, role: &'static str, started: Instant, ok: bool) {
        let took = started.elapsed();
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        self.stats
            .usec
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if !ok {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_as[usize::from(role == "replica")]
            .get_or_init(|| {
                self.latency
                    .get_or_create(&DbLabel {
                        instance: self.name.clone(),
                        role: role.into(),
                    })
                    .clone()
            })
            .observe(took.as_secs_f64());
        self.ewma.observe(took.as_secs_f64() * 1000.0);
    }

    /// The balancer's view of this replica.
    pub fn candidate(&self) -> Candidate {
        Candidate {
            id: self.index,
            weight: self.weight,
            cpu: *self.cpu.lock(),
            ewma_ms: self.ewma.value(),
        }
    }
}

/// What a read asks for.
#[derive(Debug, Clone)]
pub struct ReadOpts {
    pub max_lag: Duration,
    /// Read your writes: the WAL position the serving replica must have replayed (0: none).
    pub min_lsn: u64,
    pub strong: bool,
    pub priority: Priority,
    /// The result may be cached: resolve the tags it depends on (skipped otherwise).
    pub cacheable: bool,
    /// Whose rights the statement runs with.
    pub run_as: RunAs,
}

/// Whose rights a QUERY statement runs with: an ACL user's `db_role` and `query_readonly`.
/// The default (no role, not read-only) runs the statement as it is, as the pool's login role.
#[derive(Debug, Clone, Default)]
pub struct RunAs {
    pub role: Option<Arc<str>>,
    pub read_only: bool,
}

impl RunAs {
    /// The command that opens the statement's transaction, or None when it needs none.
    fn begin(&self) -> Option<String> {
        if self.role.is_none() && !self.read_only {
            return None;
        }
        let mut s = String::from(if self.read_only {
            "BEGIN READ ONLY"
        } else {
            "BEGIN"
        });
        if let Some(role) = &self.role {
            s.push_str("; SET LOCAL ROLE ");
            s.push_str(&quote_ident(role));
        }
        Some(s)
    }
}

/// A PostgreSQL identifier, double-quoted (embedded quotes doubled): any role name, never SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Where a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Primary,
    /// A replica, by instance index.
    Replica(usize),
}

/// Who is the primary now, and what changed lately.
#[derive(Debug, Default)]
pub struct Roles {
    /// The writable primary's index; `None` while none is (failover or switchover under way).
    pub primary: Option<usize>,
    /// The last role changes, newest last (DB.STATUS).
    pub changes: std::collections::VecDeque<String>,
}

/// Called after the roles changed (a failover, a switchover, a change made outside Strata):
/// the new primary's WAL position, from which cached results must be proven again.
pub type OnRolesChanged = Box<dyn Fn(u64) + Send + Sync>;

/// A write's outcome: its reply, and what it invalidated.
pub struct Written {
    /// RETURNING rows, or `None` for a statement without result columns.
    pub rows: Option<QueryResult>,
    pub affected: u64,
    /// The primary's WAL position after the commit.
    pub lsn: u64,
    /// `table:<schema>.<table>` tags to invalidate.
    pub tags: Vec<String>,
    /// DDL, or a write whose targets are unknown: everything cached may be stale.
    pub flush_all: bool,
}

pub struct Database {
    /// Every instance, in configuration order (the configured primary first).
    pub instances: Vec<Instance>,
    pub roles: parking_lot::RwLock<Roles>,
    pub history: PrimaryHistory,
    pub health: crate::config::HealthConfig,
    settings: PoolSettings,
    /// The shutdown signal the background tasks (and pools created later) watch.
    shutdown: Mutex<Option<watch::Receiver<bool>>>,
    /// Set by the command layer: what to do after a role change.
    pub on_roles_changed: std::sync::OnceLock<OnRolesChanged>,
    /// Where notifications go (set at start).
    pub alerts: std::sync::OnceLock<Arc<crate::observe::alerts::Alerts>>,
    /// Serializes failovers and switchovers.
    pub switching: tokio::sync::Mutex<()>,
    /// The shared lease a failover needs when several instances share L2.
    pub lease: std::sync::OnceLock<super::health::Lease>,
    pub failovers: AtomicU64,
    balancer: Balancer,
    pub catalog: Catalog,
    search_path: OnceCell<SearchPath>,
    /// Read on every QUERY (a read lock and a `peek`: hits never contend).
    shapes: parking_lot::RwLock<LruCache<Bytes, Arc<Shape>, foldhash::fast::RandomState>>,
    pub max_result_bytes: u64,
    pub max_lag: Duration,
    pub query_ttl: Duration,
    lag_probe: Duration,
    metrics_interval: Duration,
    /// The newest write position through this instance (read-your-writes ends once every
    /// replica has replayed past a connection's write).
    pub last_write_lsn: AtomicU64,
    pub probes: AtomicU64,
    /// The LISTEN loop for DB.TRACK notifications.
    pub listener: Mutex<Option<super::track::ListenerHandle>>,
}

/// Builds a connection config for an instance, filling what its URL leaves out from the
/// `[database]` section.
pub fn pg_config(
    db: &DatabaseConfig,
    inst: &InstanceConfig,
    admin: bool,
) -> tokio_postgres::Config {
    let mut pg: tokio_postgres::Config = inst.url.parse().unwrap_or_default();
    let (user, password) = if admin && !db.admin_user.is_empty() {
        (&db.admin_user, &db.admin_password)
    } else {
        (&db.user, &db.password)
    };
    if (admin && !db.admin_user.is_empty()) || pg.get_user().is_none() {
        if !user.is_empty() {
            pg.user(user);
        }
        if !password.is_empty() {
            pg.password(password);
        }
    }
    if pg.get_dbname().is_none() && !db.dbname.is_empty() {
        pg.dbname(&db.dbname);
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_millis(db.connect_timeout_ms));
    }
    pg.application_name("strata");
    super::tls::apply(db, &mut pg);
    pg
}

impl Database {
    pub fn new(
        cfg: &DatabaseConfig,
        health: &crate::config::HealthConfig,
        breaker: &crate::config::BreakerConfig,
        series: &DbSeries,
    ) -> Arc<Database> {
        let settings = PoolSettings {
            min: cfg.pool_min,
            max: cfg.pool_max,
            reserved: cfg.pool_reserved,
            idle_timeout: Duration::from_secs(cfg.idle_timeout_s),
            acquire_timeout: Duration::from_millis(cfg.acquire_timeout_ms),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            statement_timeout_ms: cfg.statement_timeout_ms,
        };
        let breaker = crate::guard::breaker::Settings {
            failure_ratio: breaker.failure_rate,
            window_s: breaker.window_s.max(1),
            min_calls: breaker.min_calls.max(1),
            open_ms: breaker.open_s.max(1) * 1000,
        };
        let instance = |index: usize, inst: &InstanceConfig| {
            let pg = pg_config(cfg, inst, false);
            let (host, port) = host_port(&pg);
            Instance {
                index,
                name: inst.name.clone(),
                weight: inst.weight,
                metrics_url: inst.metrics_url.clone(),
                pools: parking_lot::RwLock::new(ServerPools::new(
                    &inst.name,
                    pg.clone(),
                    index == 0,
                    settings.clone(),
                )),
                admin: pg_config(cfg, inst, true),
                host,
                port,
                pg,
                lag: ReplicaState::default(),
                health: super::health::HealthState::default(),
                breaker: Mutex::new(crate::guard::breaker::Breaker::new(breaker)),
                ewma: Ewma::default(),
                cpu: Mutex::new(None),
                stats: InstanceStats::default(),
                latency: series.latency.clone(),
                latency_as: Default::default(),
            }
        };
        Arc::new(Database {
            instances: std::iter::once(&cfg.primary)
                .chain(&cfg.replicas)
                .enumerate()
                .map(|(i, c)| instance(i, c))
                .collect(),
            roles: parking_lot::RwLock::new(Roles {
                primary: Some(0),
                ..Roles::default()
            }),
            health: health.clone(),
            settings: settings.clone(),
            shutdown: Mutex::new(None),
            on_roles_changed: std::sync::OnceLock::new(),
            alerts: std::sync::OnceLock::new(),
            switching: tokio::sync::Mutex::new(()),
            lease: std::sync::OnceLock::new(),
            failovers: AtomicU64::new(0),
            history: PrimaryHistory::default(),
            balancer: Balancer::new(),
            catalog: Catalog::new(10_000),
            search_path: OnceCell::new(),
            shapes: parking_lot::RwLock::new(LruCache::with_hasher(
                NonZeroUsize::new(SHAPES).unwrap_or(NonZeroUsize::MIN),
                foldhash::fast::RandomState::default(),
            )),
            max_result_bytes: cfg.max_result_bytes.0,
            max_lag: Duration::from_millis(cfg.max_replica_lag_ms),
            query_ttl: Duration::from_secs(cfg.query_ttl_s),
            lag_probe: Duration::from_millis(cfg.lag_probe_ms),
            metrics_interval: Duration::from_millis(cfg.metrics_interval_ms),
            last_write_lsn: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            listener: Mutex::new(None),
        })
    }

    /// Every instance, in configuration order.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter()
    }

    /// The primary's index now (`None` while no instance is the writable primary).
    pub fn primary_index(&self) -> Option<usize> {
        self.roles.read().primary
    }

    /// The primary now.
    pub fn primary(&self) -> Option<&Instance> {
        self.primary_index().map(|i| &self.instances[i])
    }

    pub fn is_primary(&self, index: usize) -> bool {
        self.primary_index() == Some(index)
    }

    /// "primary" or "replica", as the roles stand now.
    pub fn role_of(&self, index: usize) -> &'static str {
        if self.is_primary(index) {
            "primary"
        } else {
            "replica"
        }
    }

    /// The instances that are not the primary now.
    pub fn replicas(&self) -> impl Iterator<Item = &Instance> {
        let primary = self.primary_index();
        self.instances
            .iter()
            .filter(move |i| Some(i.index) != primary)
    }

    pub fn by_name(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// The instance a target names; `None` for the primary while there is none.
    pub fn instance(&self, target: Target) -> Option<&Instance> {
        match target {
            Target::Primary => self.primary(),
            Target::Replica(i) => self.instances.get(i),
        }
    }

    /// The writable primary, or why there is none: writes fail fast while the primary is
    /// unreachable, its breaker is open, or a failover is under way.
    pub fn writable_primary(&self) -> Result<&Instance, DbError> {
        let Some(p) = self.primary() else {
            return Err(DbError::Unavailable(
                "no writable primary (a failover or switchover is under way)".into(),
            ));
        };
        if let Some(since) = p.health.unreachable_since() {
            let after = self.health.failover_after_s;
            let down = since.elapsed().as_secs();
            let plan = match self.health.mode {
                crate::config::HealthMode::Builtin => {
                    format!("failover after {after} s")
                }
                crate::config::HealthMode::External => "failover is external".into(),
            };
            return Err(DbError::Unavailable(format!(
                "no writable primary: {} unreachable for {down} s ({plan})",
                p.name
            )));
        }
        if !p.breaker_closed() {
            return Err(DbError::Unavailable(format!(
                "no writable primary: the circuit breaker of {} is open",
                p.name
            )));
        }
        Ok(p)
    }

    /// Makes `new` the primary (`None`: no writable primary for now): new pools for the
    /// instances whose role changed, the lag history restarted, the LISTEN loop retargeted.
    pub fn set_primary(&self, new: Option<usize>, why: &str) {
        let old = {
            let mut roles = self.roles.write();
            let old = roles.primary;
            if old == new {
                return;
            }
            roles.primary = new;
            let stamp = now_rfc3339();
            let name =
                |i: Option<usize>| i.map_or("none".to_string(), |i| self.instances[i].name.clone());
            roles.changes.push_back(format!(
                "{stamp} primary {} -> {}: {why}",
                name(old),
                name(new)
            ));
            while roles.changes.len() > 16 {
                roles.changes.pop_front();
            }
            old
        };
        for i in [old, new].into_iter().flatten() {
            let inst = &self.instances[i];
            let pools = ServerPools::new(
                &inst.name,
                inst.pg.clone(),
                Some(i) == new,
                self.settings.clone(),
            );
            if let Some(shutdown) = self.shutdown.lock().clone() {
                pools.spawn_maintenance(shutdown);
            }
            *inst.pools.write() = pools;
        }
        if let Some(p) = new {
            self.history.reset();
            if let Some(l) = self.listener.lock().as_ref() {
                let mut pg = self.instances[p].pg.clone();
                pg.application_name("strata-listen");
                l.set_target(pg);
            }
            self.instances[p].lag.record_up();
        }
        tracing::warn!(old = ?old.map(|i| &self.instances[i].name), new = ?new.map(|i| &self.instances[i].name), why, "primary changed");
    }

    /// Starts the background work: pool maintenance, lag probes, health checks, CPU scrapes.
    pub fn start(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        *self.shutdown.lock() = Some(shutdown.clone());
        for inst in self.instances() {
            inst.pools().spawn_maintenance(shutdown.clone());
        }
        for i in 0..self.instances.len() {
            tokio::spawn(probe(self.clone(), i, shutdown.clone()));
            tokio::spawn(super::health::check_loop(self.clone(), i, shutdown.clone()));
            if !self.instances[i].metrics_url.is_empty() {
                tokio::spawn(scrape_cpu(self.clone(), i, shutdown.clone()));
            }
        }
        tokio::spawn(super::health::supervise(self.clone(), shutdown));
    }

    /// The statement's shape: classified once per distinct text (DDL forgets them all).
    pub fn shape(&self, sql: &Bytes, admin: bool) -> Result<Arc<Shape>, DbError> {
        if let Some(s) = self.shapes.read().peek(sql) {
            if admin || s.classified.kind != Kind::Ddl {
                return Ok(s.clone());
            }
        }
        let text = std::str::from_utf8(sql)
            .map_err(|_| DbError::Refused("ERR QUERY SQL must be valid UTF-8".into()))?;
        let classified = classify(text, admin)?;
        let fingerprint = {
            use std::hash::{BuildHasher, Hasher};
            let mut a = foldhash::quality::FixedState::with_seed(1).build_hasher();
            let mut b = foldhash::quality::FixedState::with_seed(2).build_hasher();
            a.write(classified.normalized.as_bytes());
            b.write(classified.normalized.as_bytes());
            ((u128::from(a.finish()) << 64) | u128::from(b.finish())).to_le_bytes()
        };
        let shape = Arc::new(Shape {
            sql: text.to_string(),
            fingerprint,
            classified,
            runs_as_write: AtomicBool::new(false),
        });
        // A copy: the request's slice would keep its whole read buffer alive.
        self.shapes
            .write()
            .put(Bytes::copy_from_slice(sql), shape.clone());
        Ok(shape)
    }

    /// Forgets everything learnt about the schema (after DDL).
    pub fn schema_changed(&self) {
        self.catalog.invalidate();
        self.shapes.write().clear();
    }

    /// Where a read runs (Properties 10 and 12): an eligible replica chosen by the balancer,
    /// else the primary.
    pub fn route_read(&self, opts: &ReadOpts) -> Target {
        if opts.strong {
            return Target::Primary;
        }
        let needs = ReadNeeds {
            max_lag: opts.max_lag,
            min_lsn: opts.min_lsn,
            now: Instant::now(),
        };
        let replicas: Vec<ReplicaView> = self
            .replicas()
            .map(|r| ReplicaView {
                sample: r.lag.sample(),
                down: !r.in_rotation() || !r.health.is_replica(),
                candidate: r.candidate(),
            })
            .collect();
        choose(&replicas, &needs, &self.balancer)
    }

    /// How often the fast lag probe runs.
    pub fn lag_probe_period(&self) -> Duration {
        self.lag_probe
    }

    /// Tells the command layer the roles changed (it drops the cached QUERY results: they may
    /// reflect writes the new primary's timeline lost).
    pub async fn roles_changed(&self) {
        let lsn = self.primary_lsn().await;
        if let Some(f) = self.on_roles_changed.get() {
            f(lsn);
        }
    }

    /// Whether every replica has replayed past `lsn` (read-your-writes can end).
    pub fn replicas_past(&self, lsn: u64) -> bool {
        self.replicas()
            .all(|r| r.weight == 0 || r.lag.sample().is_some_and(|s| s.replay_lsn >= lsn))
    }

    async fn search_path(
        &self,
        client: &tokio_postgres::Client,
        at: &str,
    ) -> Result<&SearchPath, DbError> {
        self.search_path
            .get_or_try_init(|| async {
                SearchPath::current(client)
                    .await
                    .map_err(|e| catalog_error(at, e))
            })
            .await
    }

    /// Picks the instance for a read, takes a connection there and resolves the tags the
    /// result depends on.
    pub async fn begin_read(
        &self,
        shape: Arc<Shape>,
        opts: &ReadOpts,
    ) -> Result<ReadConn<'_>, DbError> {
        let mut target = self.route_read(opts);
        let mut tried = Vec::new();
        let (at, conn) = loop {
            let at = match target {
                Target::Replica(i) => &self.instances[i],
                Target::Primary => self.read_primary()?,
            };
            match self.connect(at, Role::Read, opts.priority).await {
                Ok(c) => break (at, c),
                Err(e) if matches!(target, Target::Replica(_)) => {
                    // The replica failed: out of rotation until its probe passes; the read
                    // goes to another eligible replica, else the primary.
                    at.lag.record_failure();
                    tracing::warn!(instance = %at.name, error = %e, "replica unusable, reading elsewhere");
                    tried.push(at.index);
                    target = self.route_read(opts);
                    if let Target::Replica(i) = target {
                        if tried.contains(&i) {
                            target = Target::Primary;
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let target = if self.is_primary(at.index) {
            Target::Primary
        } else {
            Target::Replica(at.index)
        };
        // The position the replica had replayed before this read started: what it proves.
        let proof = match target {
            Target::Primary => u64::MAX,
            Target::Replica(_) => at.lag.sample().map_or(0, |s| s.replay_lsn),
        };
        let (tags, volatile) = if opts.cacheable {
            self.read_tags(&shape.classified, &conn, &at.name).await?
        } else {
            (Vec::new(), true)
        };
        Ok(ReadConn {
            db: self,
            shape,
            target,
            at,
            conn,
            proof,
            tags,
            volatile,
            run_as: opts.run_as.clone(),
        })
    }

    /// The primary for a read no replica can serve.
    fn read_primary(&self) -> Result<&Instance, DbError> {
        match self.primary() {
            Some(p) if p.in_rotation() => Ok(p),
            Some(p) => Err(DbError::Unavailable(format!(
                "no replica can serve the read and the primary {} is unavailable",
                p.name
            ))),
            None => Err(DbError::Unavailable(
                "no replica can serve the read and there is no primary (failover under way)".into(),
            )),
        }
    }

    async fn connect(
        &self,
        inst: &Instance,
        role: Role,
        priority: Priority,
    ) -> Result<super::pool::Conn, DbError> {
        let r = inst.pools().get(role, priority).await;
        match &r {
            Ok(_) => inst.breaker_record(true),
            Err(PoolError::Exhausted { .. }) => {}
            Err(_) => inst.breaker_record(false),
        }
        r.map_err(|e| pool_error(&inst.name, e))
    }

    /// The `table:` tags of a read and whether it calls something that is not immutable.
    async fn read_tags(
        &self,
        c: &Classified,
        conn: &super::pool::Conn,
        at: &str,
    ) -> Result<(Vec<String>, bool), DbError> {
        let client: &tokio_postgres::Client = conn.client();
        let path = self.search_path(client, at).await?;
        let names: Vec<_> = c.relations.iter().cloned().collect();
        let tables = self
            .catalog
            .resolve(client, &names, path)
            .await
            .map_err(|e| catalog_error(at, e))?;
        let deps = self
            .catalog
            .read_dependencies(client, &tables)
            .await
            .map_err(|e| catalog_error(at, e))?;
        let calls: Vec<_> = c.calls.iter().cloned().collect();
        let volatile = c.volatile
            || deps.volatile
            || self
                .catalog
                .volatile(client, &calls, path)
                .await
                .map_err(|e| catalog_error(at, e))?;
        Ok((
            deps.tags.iter().map(|t| format!("table:{t}")).collect(),
            volatile,
        ))
    }

    /// Runs a write (or DDL) on the primary; says what it invalidated.
    pub async fn write(
        &self,
        shape: &Shape,
        args: &[Bytes],
        priority: Priority,
        run_as: &RunAs,
    ) -> Result<Written, DbError> {
        let at = self.writable_primary()?;
        let conn = self.connect(at, Role::Write, priority).await?;
        let c = &shape.classified;
        let ddl = c.kind == Kind::Ddl;
        let (tags, flush_all) = if ddl || !c.parsed {
            (Vec::new(), true)
        } else {
            let client = conn.client();
            let path = self.search_path(client, &at.name).await?;
            let names: Vec<_> = c.writes.iter().cloned().collect();
            let tables = self
                .catalog
                .resolve(client, &names, path)
                .await
                .map_err(|e| catalog_error(&at.name, e))?;
            let tags = self
                .catalog
                .write_invalidations(client, &tables, path)
                .await
                .map_err(|e| catalog_error(&at.name, e))?;
            // A write that names no table (a volatile function doing the writing) may have
            // changed anything.
            let unknown = tags.is_empty() && !c.locking;
            (tags.iter().map(|t| format!("table:{t}")).collect(), unknown)
        };
        let started = Instant::now();
        let run = run_as_statement(&conn, run_as, &shape.sql, args, self.max_result_bytes).await;
        at.observe("primary", started, run.is_ok());
        at.breaker_record(!matches!(run, Err(DbError::Unavailable(_))));
        let (rows, affected) = match run {
            Ok(r) => r,
            Err(e) => {
                if ddl {
                    self.schema_changed();
                }
                // The connection broke while the statement ran (lost, or ended by the server
                // with a FATAL error: classes 08 and 57): it may have committed.
                let broke = match &e {
                    DbError::Unavailable(_) => true,
                    DbError::Sql { code, .. } => code.starts_with("08") || code.starts_with("57P"),
                    _ => false,
                };
                if broke {
                    return Err(DbError::Interrupted(e.to_string()));
                }
                return Err(e);
            }
        };
        if ddl {
            self.schema_changed();
        }
        let lsn = match current_lsn(conn.client()).await {
            Some(lsn) => lsn,
            None => self.primary_lsn().await,
        };
        self.last_write_lsn.fetch_max(lsn, Ordering::Relaxed);
        Ok(Written {
            rows,
            affected,
            lsn,
            tags,
            flush_all,
        })
    }
}

impl Database {
    /// Starts LISTENing on the primary for DB.TRACK's notifications.
    pub fn listen(
        &self,
        on_notify: super::track::OnNotify,
        on_reconnect: super::track::OnReconnect,
        shutdown: watch::Receiver<bool>,
    ) {
        let Some(primary) = self.primary() else {
            return;
        };
        let mut pg = primary.pg.clone();
        pg.application_name("strata-listen");
        *self.listener.lock() = Some(super::track::Listener::spawn(
            pg,
            on_notify,
            on_reconnect,
            shutdown,
        ));
    }

    /// DB.TRACK: installs the triggers (as the admin user) and returns the tables tracked.
    pub async fn track(&self, tables: &[String]) -> Result<Vec<String>, DbError> {
        let primary = self.writable_primary()?;
        let name = &primary.name;
        let (client, connection) = super::tls::connect(&primary.admin)
            .await
            .map_err(|e| DbError::from_pg(name, &e))?;
        let task = tokio::spawn(connection);
        let r = super::track::install(&client, tables).await;
        drop(client);
        let _ = task.await;
        r.map_err(|e| DbError::Refused(e.to_string()))
    }

    /// The primary's current WAL position (a write that committed before this call is at or
    /// before it); the last probed position if the primary cannot be asked.
    pub async fn primary_lsn(&self) -> u64 {
        let asked = match self.writable_primary() {
            Ok(p) => match self.connect(p, Role::Write, Priority::Critical).await {
                Ok(conn) => current_lsn(conn.client()).await,
                Err(_) => None,
            },
            Err(_) => None,
        };
        asked
            .or_else(|| self.history.latest_before(Instant::now()).map(|s| s.1))
            .unwrap_or(0)
    }
}

/// A read with its instance chosen and its connection taken.
pub struct ReadConn<'a> {
    db: &'a Database,
    shape: Arc<Shape>,
    pub target: Target,
    at: &'a Instance,
    conn: super::pool::Conn,
    /// The replay position the source had reached before the read (u64::MAX: the primary).
    pub proof: u64,
    pub tags: Vec<String>,
    /// Calls something not immutable (not cached without an explicit TTL).
    pub volatile: bool,
    run_as: RunAs,
}

impl ReadConn<'_> {
    /// Runs the read. A replica refusing it as a write (25006) marks its shape a write and
    /// answers `DbError::IsWrite`: the caller runs it as one (on the primary, invalidating).
    pub async fn run(self, args: &[Bytes]) -> Result<(QueryResult, Source, u64), DbError> {
        let db = self.db;
        let inst = self.at;
        let started = Instant::now();
        let sql = &self.shape.sql;
        let r = run_as_statement(&self.conn, &self.run_as, sql, args, db.max_result_bytes).await;
        let role = match self.target {
            Target::Primary => "primary",
            Target::Replica(_) => "replica",
        };
        inst.observe(role, started, r.is_ok());
        inst.breaker_record(!matches!(r, Err(DbError::Unavailable(_))));
        let source = match self.target {
            Target::Primary => Source::Primary,
            Target::Replica(i) => Source::Replica(i),
        };
        match r {
            Ok((rows, affected)) => Ok((
                rows.unwrap_or_else(|| affected_result(affected)),
                source,
                self.proof,
            )),
            Err(e) if e.code() == Some("25006") => {
                self.shape.runs_as_write.store(true, Ordering::Relaxed);
                Err(DbError::IsWrite)
            }
            Err(e) => {
                if matches!(e, DbError::Unavailable(_)) {
                    inst.lag.record_failure();
                }
                Err(e)
            }
        }
    }
}

fn affected_result(n: u64) -> QueryResult {
    QueryResult {
        columns: vec!["rows".into()],
        rows: vec![vec![PgValue::Int(n as i64)]],
    }
}

/// Runs one statement as `run_as` says. With a role (or read-only), the statement runs in its
/// own transaction: `BEGIN [READ ONLY]; SET LOCAL ROLE "<role>"`, the statement, then COMMIT
/// (ROLLBACK after an error). SET LOCAL ends with the transaction whatever happens on the
/// server, so the role cannot outlive the statement there; and should this future be dropped
/// before COMMIT or ROLLBACK completed (the client went away), the connection is closed
/// instead of going back to the pool, so no later statement can run inside that transaction.
async fn run_as_statement(
    conn: &super::pool::Conn,
    run_as: &RunAs,
    sql: &str,
    args: &[Bytes],
    max_bytes: u64,
) -> Result<(Option<QueryResult>, u64), DbError> {
    let Some(begin) = run_as.begin() else {
        return run_statement(conn, sql, args, max_bytes).await;
    };
    struct Armed<'c>(Option<&'c super::pool::Conn>);
    impl Drop for Armed<'_> {
        fn drop(&mut self) {
            if let Some(c) = self.0 {
                c.poison();
            }
        }
    }
    let mut armed = Armed(Some(conn));
    let name = conn.server().to_string();
    let pg = |e: tokio_postgres::Error| DbError::from_pg(&name, &e);
    conn.client().batch_execute(&begin).await.map_err(pg)?;
    let r = run_statement(conn, sql, args, max_bytes).await;
    let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.client().batch_execute(end).await;
    match (r, ended) {
        (Ok(v), Ok(())) => {
            armed.0 = None;
            Ok(v)
        }
        (Err(e), Ok(())) => {
            armed.0 = None;
            Err(e)
        }
        // The transaction's end is unknown: the connection is not reused.
        (Ok(_), Err(e)) => Err(pg(e)),
        (Err(e), Err(_)) => Err(e),
    }
}

/// Runs one statement with text arguments, streaming the result and refusing it past
/// `max_bytes`. Returns the rows (`None` without result columns) and the rows affected.
async fn run_statement(
    conn: &super::pool::Conn,
    sql: &str,
    args: &[Bytes],
    max_bytes: u64,
) -> Result<(Option<QueryResult>, u64), DbError> {
    let pg = |e: tokio_postgres::Error| DbError::from_pg(conn.server(), &e);
    let params: SmallVec<[TextArg<'_>; 8]> = args.iter().map(|a| TextArg(a)).collect();
    let refs: SmallVec<[&(dyn ToSql + Sync); 8]> =
        params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let (stmt, stream) =
        conn.query_stream(sql, &refs)
            .await
            .map_err(|e| match e.as_db_error() {
                // PostgreSQL's own text for a wrong parameter count names the protocol message;
                // say it in QUERY's terms.
                Some(db) if db.code().code() == "08P01" && db.message().contains("parameters") => {
                    DbError::Refused(format!("ERR wrong number of ARGS: {}", db.message()))
                }
                _ => pg(e),
            })?;
    pin_mut!(stream);
    let columns = column_names(stmt.columns());
    let mut rows = Vec::new();
    let mut size = columns.iter().map(|c| c.len() + 24).sum::<usize>() as u64;
    while let Some(row) = stream.try_next().await.map_err(pg)? {
        size += row_size(&row);
        if size > max_bytes {
            return Err(DbError::Refused(format!(
                "ERR query result exceeds database.max_result_bytes ({max_bytes} bytes)"
            )));
        }
        rows.push(
            super::value::row_values(&row)
                .map_err(|e: ValueError| DbError::Refused(format!("ERR {}", e.message())))?,
        );
    }
    let affected = stream.rows_affected().unwrap_or(rows.len() as u64);
    if stmt.columns().is_empty() {
        return Ok((None, affected));
    }
    Ok((Some(QueryResult { columns, rows }), affected))
}

/// The raw size of a row as received (its values' bytes plus per-value overhead).
fn row_size(row: &tokio_postgres::Row) -> u64 {
    (0..row.len())
        .map(|i| {
            24 + row
                .try_get::<_, Option<RawBytes>>(i)
                .ok()
                .flatten()
                .map_or(0, |r| r.0 as u64)
        })
        .sum()
}

/// The length of a value's raw bytes, for any type.
struct RawBytes(usize);

impl<'a> tokio_postgres::types::FromSql<'a> for RawBytes {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawBytes(raw.len()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The primary's current WAL position.
async fn current_lsn(client: &tokio_postgres::Client) -> Option<u64> {
    let row = client
        .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])
        .await
        .ok()?;
    parse_lsn(row.try_get::<_, &str>(0).ok()?)
}

/// Keeps a dedicated connection to one instance for probes, reconnecting with backoff
/// (1 s, 2 s, 4 s, then every 4 s).
pub(super) struct ProbeConn {
    pg: tokio_postgres::Config,
    client: Option<tokio_postgres::Client>,
    /// Why the last attempt failed.
    error: Option<String>,
    failures: u32,
    retry_at: Instant,
}

impl ProbeConn {
    pub(super) fn new(pg: &tokio_postgres::Config) -> ProbeConn {
        let mut pg = pg.clone();
        pg.application_name("strata-probe");
        ProbeConn {
            pg,
            client: None,
            error: None,
            failures: 0,
            retry_at: Instant::now(),
        }
    }

    pub(super) async fn query_text(
        &mut self,
        sql: &str,
        timeout: Duration,
    ) -> Option<Vec<Option<String>>> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            if Instant::now() < self.retry_at {
                return None;
            }
            match tokio::time::timeout(timeout, super::tls::connect(&self.pg)).await {
                Ok(Ok((client, connection))) => {
                    tokio::spawn(connection);
                    self.client = Some(client);
                    self.failures = 0;
                }
                r => {
                    self.error = Some(match r {
                        Ok(Err(e)) => super::error_chain(&e),
                        _ => format!("connect timed out after {} ms", timeout.as_millis()),
                    });
                    self.failures += 1;
                    let backoff = [1, 2, 4][(self.failures as usize - 1).min(2)];
                    self.retry_at = Instant::now() + Duration::from_secs(backoff);
                    return None;
                }
            }
        }
        let client = self.client.as_ref()?;
        match tokio::time::timeout(timeout, client.simple_query(sql)).await {
            Ok(Ok(msgs)) => msgs.into_iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            }),
            r => {
                self.error = Some(match r {
                    Ok(Err(e)) => super::error_chain(&e),
                    _ => format!("no answer within {} ms", timeout.as_millis()),
                });
                self.client = None;
                None
            }
        }
    }

    /// Why the last connect or query failed.
    pub(super) fn last_error(&self) -> Option<String> {
        self.error.clone()
    }
}

/// A periodic schedule (a late tick delays the next) that ends with the shutdown signal.
pub(super) struct Every {
    tick: tokio::time::Interval,
    shutdown: watch::Receiver<bool>,
}

impl Every {
    pub(super) fn new(period: Duration, shutdown: watch::Receiver<bool>) -> Every {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Every { tick, shutdown }
    }

    /// Waits for the next tick; false once shutting down.
    pub(super) async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.tick.tick() => true,
            _ = self.shutdown.changed() => false,
        }
    }
}

/// The fast lag probe of one instance, every `lag_probe_ms`: the primary's WAL position (its
/// history is what replica lag is measured against), a replica's replay position. Whichever
/// role the instance has when the probe runs.
async fn probe(db: Arc<Database>, index: usize, shutdown: watch::Receiver<bool>) {
    let inst = &db.instances[index];
    let mut conn = ProbeConn::new(&inst.pg);
    let mut every = Every::new(db.lag_probe, shutdown);
    while every.next().await {
        let sent = Instant::now();
        let row = conn
            .query_text(
                "SELECT pg_catalog.pg_is_in_recovery()::text, \
                 CASE WHEN pg_catalog.pg_is_in_recovery() \
                 THEN pg_catalog.pg_last_wal_replay_lsn() \
                 ELSE pg_catalog.pg_current_wal_lsn() END::text",
                db.lag_probe * 4,
            )
            .await;
        db.probes.fetch_add(1, Ordering::Relaxed);
        let parsed = match row.as_deref() {
            Some([Some(rec), Some(lsn)]) => parse_lsn(lsn).map(|l| (rec == "true", l)),
            _ => None,
        };
        inst.health.reachable(parsed.is_some());
        // Probes count as calls for the breaker: an instance that stopped answering opens it
        // even when no client traffic goes there.
        inst.breaker_record(parsed.is_some());
        let primary = db.is_primary(index);
        match parsed {
            Some((false, lsn)) if primary => {
                db.history.record(sent, lsn);
                inst.lag.record_up();
            }
            Some((true, replay_lsn)) if !primary => {
                if let Some(lag) = db.history.lag(replay_lsn, sent) {
                    inst.lag.record(LagSample {
                        at: sent,
                        replay_lsn,
                        lag,
                    });
                }
            }
            // Reachable, but not in the role Strata has it in: the health check sorts it out.
            Some(_) => inst.lag.record_up(),
            None => inst.lag.record_failure(),
        }
    }
}

/// Every `metrics_interval_ms`, the instance's CPU from its node_exporter metrics.
async fn scrape_cpu(db: Arc<Database>, index: usize, shutdown: watch::Receiver<bool>) {
    let inst = &db.instances[index];
    let mut tracker = super::nodemetrics::CpuTracker::default();
    let mut every = Every::new(db.metrics_interval, shutdown);
    while every.next().await {
        match super::nodemetrics::scrape(&inst.metrics_url, Duration::from_secs(2)).await {
            Ok(sample) => {
                if let Some(busy) = tracker.update(&sample) {
                    *inst.cpu.lock() = Some(busy);
                }
                *inst.health.node.lock() =
                    (sample.mem_used_fraction(), sample.disk_used_fraction());
            }
            Err(e) => {
                tracing::debug!(instance = %inst.name, error = %e, "metrics scrape failed");
                *inst.cpu.lock() = None;
            }
        }
    }
}

/// The host and port a config names (its first host; 5432 by default).
fn host_port(pg: &tokio_postgres::Config) -> (String, u16) {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    (host, pg.get_ports().first().copied().unwrap_or(5432))
}

/// Now, as RFC 3339 UTC text to the second (role change history).
fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// DB.STATUS's LSN text.
pub fn lsn_or_dash(lsn: Option<u64>) -> String {
    lsn.map_or_else(|| "-".to_string(), lsn_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_as_opens_a_transaction_only_when_needed_and_quotes_the_role() {
        assert_eq!(RunAs::default().begin(), None);
        let ro = RunAs {
            role: None,
            read_only: true,
        };
        assert_eq!(ro.begin().as_deref(), Some("BEGIN READ ONLY"));
        let role = RunAs {
            role: Some(Arc::from("we\"ird; DROP TABLE t")),
            read_only: false,
        };
        assert_eq!(
            role.begin().as_deref(),
            Some("BEGIN; SET LOCAL ROLE \"we\"\"ird; DROP TABLE t\"")
        );
    }
}
