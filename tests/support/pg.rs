//! PostgreSQL for database tests: a real PostgreSQL 15 primary with streaming replicas on free
//! loopback ports (`PgCluster`), the fault injection the health, routing and failover tests need
//! (stop, kill, restart, pause replay, promote, repoint), synchronous SQL helpers built on
//! tokio-postgres, and a node_exporter-format metrics endpoint (`MetricsServer`).
//!
//! One cluster per test binary: `PgCluster::shared()` starts a primary and three replicas on first
//! use; its tests keep to their own schemas or tables (`unique_name`). The shared cluster is never
//! faulted: a test that stops, kills, pauses, promotes or repoints starts its own small cluster
//! with `PgCluster::start(n)`, which is stopped when dropped.
//!
//! Instances are named `p0` (the first primary) and `r1`..`rN` (replicas); a name stays with its
//! instance whatever its role becomes. Each instance's `cluster_name` is its name, so a replica's
//! `application_name` in `pg_stat_replication` is its name too.
//!
//! `sql`/`exec` (and the helpers built on them) open a new connection per call, from any test,
//! sync or async: session state (SET, BEGIN) does not carry over to the next call, so send a
//! transaction as one multi-statement call. `try_sql`/`try_exec` return the SQLSTATE of a failure.
//!
//! Processes never outlive the test binary. initdb and postgres refuse to run as root, so when the
//! tests run as root every PostgreSQL program runs as the `postgres` user (`Command::uid`/`gid`,
//! what `runuser -u postgres` does, without a PAM session or an extra process in between). Each
//! postmaster the harness starts is our own child (not daemonized by `pg_ctl start`), spawned
//! from one long-lived thread with `PR_SET_PDEATHSIG = SIGQUIT`, so it gets an immediate shutdown
//! when the test binary dies without exiting (abort, SIGKILL, any fatal signal); its backends
//! follow it. When the binary exits normally an `atexit` handler shuts down what is left (the
//! shared cluster lives in a `static` and is never dropped) and waits for it, then deletes the
//! data directories; a directory left by a killed binary is deleted by the next binary that
//! starts a cluster (after stopping any postmaster still running from it). Dropping a `PgCluster`
//! shuts its instances down (immediate) and deletes its directory. `stop` and `kill` send the
//! postmaster the signals `pg_ctl stop -m fast` / `-m immediate` send (SIGINT / SIGQUIT) and wait
//! for it to exit.
//!
//! A postmaster may also be started outside the harness, e.g. by `pg_ctl start` in the resync
//! script (`deploy/pg-resync.sh`, see `resync_command`), which may also have stopped ours. Such a
//! postmaster is not our child: the harness finds it through the `postmaster.pid` in the
//! instance's data directory (the pid on its first line, accepted only while `/proc/<pid>/cwd` is
//! that directory, so a stale file or a reused pid is not mistaken for it). `postmaster_pid`,
//! `is_running`, `stop`, `kill`, `start_instance`, the drop and the exit handler all handle it:
//! they signal that pid and wait until it is gone. It has no parent-death signal, so each cluster
//! also runs a watchdog (`sh`, blocked reading a pipe only this process writes to): when the test
//! binary dies, however, the pipe closes and the watchdog sends SIGQUIT to every postmaster still
//! running from the cluster's data directories. The harness does not know what such a postmaster
//! replicates from: tell it with `set_upstream`.
//!
//! Replicas reconnect after 100 ms instead of PostgreSQL's default 5 s
//! (`wal_retrieve_retry_interval`), so restart and repoint tests do not wait.
use super::free_port;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;

/// Where the PostgreSQL 15 server programs are (`STRATA_PG_BIN` overrides).
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Replicas of the shared cluster.
pub const SHARED_REPLICAS: usize = 3;
/// How long an instance may take to accept connections after its postmaster starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the `wait_*` helpers wait before they fail the test.
const WAIT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one helper statement (connect included) may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a postmaster may take to shut down before it is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(10);

/// Rows of a simple query: every value in PostgreSQL's text form, `None` for NULL.
pub type Rows = Vec<Vec<Option<String>>>;

/// A name unique within this test binary (`prefix_<pid>_<n>`), for schemas and tables in the
/// shared cluster.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An error from a helper statement: the SQLSTATE when PostgreSQL answered with an error (e.g.
/// `25006` when writing on a replica), else `None` (cannot connect, connection lost, timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub code: Option<String>,
    pub message: String,
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "[{code}] {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> PgError {
        let message = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => {
                let mut m = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    let s_text = s.to_string();
                    if !m.contains(&s_text) {
                        m.push_str(": ");
                        m.push_str(&s_text);
                    }
                    source = s.source();
                }
                m
            }
        };
        PgError {
            code: e.code().map(|c| c.code().to_string()),
            message,
        }
    }
}

/// A WAL position (`pg_lsn`), ordered; displays as PostgreSQL does (`0/3000148`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's text form `X/Y` (hexadecimal halves).
    pub fn parse(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.trim().split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some(Lsn(hi << 32 | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// An instance's WAL positions, read in one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPositions {
    pub in_recovery: bool,
    /// `pg_last_wal_receive_lsn()`: WAL received from the primary (replicas).
    pub receive: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()`: WAL replayed (replicas).
    pub replay: Option<Lsn>,
    /// `pg_current_wal_lsn()` (primaries only).
    pub current: Option<Lsn>,
}

impl WalPositions {
    /// How far this instance's data goes: the current LSN of a primary, the replay LSN of a
    /// replica.
    pub fn position(&self) -> Option<Lsn> {
        if self.in_recovery {
            self.replay
        } else {
            self.current
        }
    }
}

/// One PostgreSQL instance of a cluster.
#[derive(Debug, Clone)]
pub struct PgInstance {
    /// `p0`, `r1`, ... (also its `cluster_name` and replication `application_name`).
    pub name: String,
    pub port: u16,
    /// Its data directory.
    pub dir: PathBuf,
}

impl PgInstance {
    /// `postgres://postgres@127.0.0.1:<port>/postgres` (trust authentication, no password).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

struct Node {
    /// The postmaster the harness started (our child); one started outside the harness is found
    /// through its `postmaster.pid` instead (`running_postmaster`).
    child: Option<Child>,
    /// The instance this one replicates from (index), `None` for a primary.
    upstream: Option<usize>,
}

struct State {
    nodes: Vec<Node>,
    /// The instance the harness considers the primary (the last one promoted).
    primary: usize,
}

/// A PostgreSQL 15 primary with streaming replicas, stopped (immediate) and deleted on drop.
pub struct PgCluster {
    /// The temp directory holding every data directory, socket and log (`<name>.log`).
    pub dir: PathBuf,
    instances: Vec<PgInstance>,
    state: Mutex<State>,
    started_in: Duration,
    /// Stops postmasters started outside the harness when this process dies (`spawn_watchdog`).
    watchdog: Option<Child>,
}

impl PgCluster {
    /// Starts a primary (`p0`) and `replicas` streaming replicas (`r1`..), each cloned with
    /// `pg_basebackup -R -X stream -c fast` and started in parallel; returns once every replica
    /// streams (`pg_stat_replication` on the primary shows it as `streaming`).
    pub fn start(replicas: usize) -> PgCluster {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        static SETUP: Once = Once::new();
        SETUP.call_once(|| {
            sweep_stale_dirs();
            // SAFETY: registers a plain extern "C" function that never unwinds.
            unsafe { libc::atexit(stop_all_at_exit) };
        });
        let t0 = Instant::now();
        let dir = std::env::temp_dir().join(format!(
            "strata-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        make_owned_dir(&dir);
        lock(&LIVE).dirs.push(dir.clone());
        let instances: Vec<PgInstance> = (0..=replicas)
            .map(|i| {
                let name = if i == 0 {
                    "p0".to_string()
                } else {
                    format!("r{i}")
                };
                PgInstance {
                    port: free_port(),
                    dir: dir.join(&name),
                    name,
                }
            })
            .collect();
        let socket = dir.join(format!(".s.PGSQL.{}", instances[0].port));
        assert!(
            socket.as_os_str().len() < 100,
            "temp dir too long for a unix socket path: {}",
            socket.display()
        );
        let nodes = (0..=replicas)
            .map(|i| Node {
                child: None,
                upstream: (i > 0).then_some(0),
            })
            .collect();
        let watchdog = Some(spawn_watchdog(&dir));
        // Built before anything runs, so a failed start (a panic) drops it and stops what ran.
        let mut cluster = PgCluster {
            dir,
            instances,
            state: Mutex::new(State { nodes, primary: 0 }),
            started_in: Duration::ZERO,
            watchdog,
        };
        cluster.init_primary(replicas);
        cluster.spawn(0);
        cluster.wait_ready(0);
        std::thread::scope(|s| {
            for i in 1..=replicas {
                let c = &cluster;
                s.spawn(move || {
                    c.clone_replica(i);
                    c.spawn(i);
                    c.wait_ready(i);
                });
            }
        });
        for inst in &cluster.instances[1..] {
            cluster.wait_streaming(&inst.name);
        }
        cluster.started_in = t0.elapsed();
        cluster
    }

    /// The cluster shared by every test of this binary: a primary and `SHARED_REPLICAS`
    /// replicas, started on first use, shut down when the binary exits. Never fault it.
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| PgCluster::start(SHARED_REPLICAS))
    }

    /// How long `start` took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Every instance, `p0` first.
    pub fn instances(&self) -> &[PgInstance] {
        &self.instances
    }

    pub fn instance(&self, name: &str) -> &PgInstance {
        &self.instances[self.index(name)]
    }

    /// The current primary: `p0` until another instance is promoted with `promote`.
    pub fn primary(&self) -> &PgInstance {
        &self.instances[lock(&self.state).primary]
    }

    /// The instances that replicate from another (not promoted), in name order.
    pub fn replicas(&self) -> Vec<&PgInstance> {
        let st = lock(&self.state);
        (0..self.instances.len())
            .filter(|&i| st.nodes[i].upstream.is_some())
            .map(|i| &self.instances[i])
            .collect()
    }

    /// The instance `name` replicates from (`None` for a primary).
    pub fn upstream(&self, name: &str) -> Option<&PgInstance> {
        let i = self.index(name);
        let up = lock(&self.state).nodes[i].upstream;
        up.map(|u| &self.instances[u])
    }

    pub fn port(&self, name: &str) -> u16 {
        self.instance(name).port
    }

    pub fn url(&self, name: &str) -> String {
        self.instance(name).url()
    }

    /// The instance's data directory.
    pub fn data_dir(&self, name: &str) -> &Path {
        &self.instance(name).dir
    }

    /// The directory of the PostgreSQL 15 programs the harness runs (`STRATA_PG_BIN`, else
    /// `DEFAULT_PG_BIN`).
    pub fn pg_bin(&self) -> PathBuf {
        pg_bin_dir()
    }

    /// The `primary_conninfo` that makes `replica` stream from `primary`:
    /// `host=127.0.0.1 port=<primary's port> user=postgres application_name=<replica>`.
    pub fn primary_conninfo(&self, replica: &str, primary: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres application_name={replica}",
            self.port(primary)
        )
    }

    /// The shipped resync script as `health.resync_command` for this cluster, with Strata's
    /// `{name}` placeholder: `'<repo>/deploy/pg-resync.sh' --data '<cluster dir>/{name}' --bin
    /// '<pg_bin>' --no-sync` (no fsync of the copy, like the clusters' `fsync = off`). Run as
    /// root it runs PostgreSQL's programs as `postgres`; the server log stays `log_path(name)`.
    /// The postmaster it starts is not our child (see the module doc), and the harness does not
    /// know it replicates until told with `set_upstream`.
    pub fn resync_command(&self) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/pg-resync.sh");
        format!(
            "{} --data {} --bin {} --no-sync",
            sh_quote(&script),
            sh_quote(&self.dir.join("{name}")),
            sh_quote(&self.pg_bin())
        )
    }

    /// The pid of the instance's postmaster while it runs, whether the harness started it or
    /// something else did (`pg_ctl start`; found through `postmaster.pid`).
    pub fn postmaster_pid(&self, name: &str) -> Option<u32> {
        let i = self.index(name);
        if let Some(pid) = self.child_pid(i) {
            return Some(pid);
        }
        running_postmaster(&self.instances[i].dir)
    }

    /// The pid of our own postmaster child while it runs; forgets it once it exited (e.g. a
    /// resync script stopped it).
    fn child_pid(&self, i: usize) -> Option<u32> {
        let mut st = lock(&self.state);
        let child = st.nodes[i].child.as_mut()?;
        if matches!(child.try_wait(), Ok(None)) {
            return Some(child.id());
        }
        let mut exited = st.nodes[i].child.take().expect("checked above");
        drop(st);
        reap_child(&mut exited);
        None
    }

    /// True while the instance's postmaster runs (started by the harness or not).
    pub fn is_running(&self, name: &str) -> bool {
        self.postmaster_pid(name).is_some()
    }

    /// Fast shutdown (what `pg_ctl stop -m fast` does); returns once the postmaster exited.
    pub fn stop(&self, name: &str) {
        self.halt(self.index(name), libc::SIGINT);
    }

    /// Immediate shutdown, a crash for PostgreSQL (what `pg_ctl stop -m immediate` does);
    /// returns once the postmaster exited. `start_instance` runs crash recovery.
    pub fn kill(&self, name: &str) {
        self.halt(self.index(name), libc::SIGQUIT);
    }

    /// Starts a stopped or killed instance again with its data directory, as our child;
    /// returns once it accepts connections (a replica may not stream yet: see
    /// `wait_streaming`).
    pub fn start_instance(&self, name: &str) {
        let i = self.index(name);
        assert!(!self.is_running(name), "{name} is already running");
        self.spawn(i);
        self.wait_ready(i);
    }

    /// `pg_wal_replay_pause()` on a replica; returns once replay is paused. WAL keeps arriving.
    pub fn pause_replay(&self, name: &str) {
        self.exec(name, "SELECT pg_wal_replay_pause()");
        self.wait_for(name, "replay to pause", || {
            let state = self.scalar(name, "SELECT pg_get_wal_replay_pause_state()");
            (state.as_deref() == Some("paused")).then_some(())
        });
    }

    /// `pg_wal_replay_resume()` on a replica.
    pub fn resume_replay(&self, name: &str) {
        self.exec(name, "SELECT pg_wal_replay_resume()");
    }

    /// `SELECT pg_promote()` on a replica; returns once it is out of recovery (a new timeline).
    /// The harness then counts it as the primary; other replicas still follow the old one
    /// until `repoint`ed.
    pub fn promote(&self, name: &str) {
        let i = self.index(name);
        let done = self.scalar(name, "SELECT pg_promote()");
        assert_eq!(done.as_deref(), Some("t"), "pg_promote() on {name}");
        self.wait_for(name, "promotion", || {
            (self.scalar(name, "SELECT pg_is_in_recovery()").as_deref() == Some("f")).then_some(())
        });
        let mut st = lock(&self.state);
        st.nodes[i].upstream = None;
        st.primary = i;
    }

    /// Points a replica at another instance: `ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1
    /// port=<its port> user=postgres application_name=<replica>'` (`primary_conninfo`), then
    /// `SELECT pg_reload_conf()` (two statements; no restart). Returns at once: see
    /// `wait_streaming`.
    pub fn repoint(&self, replica: &str, new_primary: &str) {
        let (r, p) = (self.index(replica), self.index(new_primary));
        let conninfo = self.primary_conninfo(replica, new_primary);
        self.try_batch(
            replica,
            &[
                &format!("ALTER SYSTEM SET primary_conninfo = '{conninfo}'"),
                "SELECT pg_reload_conf()",
            ],
        )
        .unwrap_or_else(|e| panic!("repoint {replica} at {new_primary}: {e}"));
        lock(&self.state).nodes[r].upstream = Some(p);
    }

    /// Records that `name` now replicates from `upstream` (`None`: it is a primary of its own),
    /// after something outside the harness made it so, e.g. a resync script; runs nothing. The
    /// harness's primary stays the one last promoted.
    pub fn set_upstream(&self, name: &str, upstream: Option<&str>) {
        let i = self.index(name);
        let up = upstream.map(|u| self.index(u));
        assert_ne!(up, Some(i), "{name} cannot replicate from itself");
        lock(&self.state).nodes[i].upstream = up;
    }

    /// The instance's WAL positions: receive and replay LSNs on a replica, the current LSN on
    /// a primary.
    pub fn lsn(&self, name: &str) -> WalPositions {
        self.try_lsn(name)
            .unwrap_or_else(|e| panic!("{name}: reading WAL positions: {e}"))
    }

    /// `lsn` that returns the error (e.g. the instance is down).
    pub fn try_lsn(&self, name: &str) -> Result<WalPositions, PgError> {
        let rows = self.try_sql(
            name,
            "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), \
             CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END",
        )?;
        let row = &rows[0];
        let lsn = |k: usize| row[k].as_deref().and_then(Lsn::parse);
        Ok(WalPositions {
            in_recovery: row[0].as_deref() == Some("t"),
            receive: lsn(1),
            replay: lsn(2),
            current: lsn(3),
        })
    }

    /// Where a replica should get to: its upstream's position, or what it received itself
    /// while the upstream is down. `None` for a primary.
    fn replay_target(&self, name: &str) -> Option<Lsn> {
        let up = self.upstream(name)?;
        match self.try_lsn(&up.name).ok().and_then(|w| w.position()) {
            Some(lsn) => Some(lsn),
            None => Some(self.lsn(name).receive.unwrap_or_default()),
        }
    }

    /// Bytes of WAL the replica has not replayed yet: its upstream's position (what it received
    /// itself while the upstream is down) minus its replay LSN; 0 for a primary. The target is
    /// read first, so this is never negative.
    pub fn lag_bytes(&self, name: &str) -> u64 {
        let Some(target) = self.replay_target(name) else {
            return 0;
        };
        let replay = self.lsn(name).replay.unwrap_or_default();
        target.0.saturating_sub(replay.0)
    }

    /// Waits until the replica has replayed everything its upstream had when called (what it
    /// received itself while the upstream is down); returns how long that took. Fails the test
    /// after 20 s (e.g. while replay is paused).
    pub fn wait_caught_up(&self, name: &str) -> Duration {
        let t0 = Instant::now();
        let Some(target) = self.replay_target(name) else {
            return Duration::ZERO;
        };
        self.wait_for(name, &format!("replay to reach {target}"), || {
            let replay = self.try_lsn(name).ok()?.replay?;
            (replay >= target).then_some(())
        });
        t0.elapsed()
    }

    /// Waits until the replica streams from its upstream (`pg_stat_replication` there shows it
    /// as `streaming`).
    pub fn wait_streaming(&self, name: &str) -> Duration {
        let t0 = Instant::now();
        let up = self
            .upstream(name)
            .unwrap_or_else(|| panic!("{name} is not a replica"));
        let query =
            format!("SELECT state FROM pg_stat_replication WHERE application_name = '{name}'");
        self.wait_for(name, &format!("streaming from {}", up.name), || {
            let rows = self.try_sql(&up.name, &query).ok()?;
            rows.iter()
                .any(|r| r[0].as_deref() == Some("streaming"))
                .then_some(())
        });
        t0.elapsed()
    }

    /// Runs `query` (one or more statements, simple query protocol) on a new connection to the
    /// instance; returns every row. Fails the test on an error.
    pub fn sql(&self, name: &str, query: &str) -> Rows {
        self.try_sql(name, query)
            .unwrap_or_else(|e| panic!("{name}: {query}: {e}"))
    }

    /// `sql` that returns the error (e.g. `code == Some("25006")` on a replica).
    pub fn try_sql(&self, name: &str, query: &str) -> Result<Rows, PgError> {
        let messages = self.try_batch(name, &[query])?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|k| row.get(k).map(str::to_string))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    /// The first column of the first row (`None` if NULL or no row).
    pub fn scalar(&self, name: &str, query: &str) -> Option<String> {
        self.sql(name, query)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    }

    /// Runs statements; returns the row count of the last one. Fails the test on an error.
    pub fn exec(&self, name: &str, stmt: &str) -> u64 {
        self.try_exec(name, stmt)
            .unwrap_or_else(|e| panic!("{name}: {stmt}: {e}"))
    }

    /// `exec` that returns the error.
    pub fn try_exec(&self, name: &str, stmt: &str) -> Result<u64, PgError> {
        let messages = self.try_batch(name, &[stmt])?;
        Ok(messages
            .iter()
            .rev()
            .find_map(|m| match m {
                SimpleQueryMessage::CommandComplete(n) => Some(*n),
                _ => None,
            })
            .unwrap_or(0))
    }

    /// Each query in turn on one new connection (one simple query each).
    fn try_batch(&self, name: &str, queries: &[&str]) -> Result<Vec<SimpleQueryMessage>, PgError> {
        let port = self.port(name);
        let queries: Vec<String> = queries.iter().map(|q| q.to_string()).collect();
        block_on(async move {
            let work = async {
                let mut cfg = tokio_postgres::Config::new();
                cfg.host("127.0.0.1")
                    .port(port)
                    .user("postgres")
                    .dbname("postgres")
                    .application_name("strata-test-harness")
                    .connect_timeout(Duration::from_secs(5));
                let (client, connection) = cfg.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                let mut out = Vec::new();
                for q in &queries {
                    out.extend(client.simple_query(q).await?);
                }
                Ok::<_, PgError>(out)
            };
            match tokio::time::timeout(STATEMENT_TIMEOUT, work).await {
                Ok(result) => result,
                Err(_) => Err(PgError {
                    code: None,
                    message: format!("timed out after {STATEMENT_TIMEOUT:?}"),
                }),
            }
        })
    }

    /// Polls `f` until it returns `Some`, failing the test after `WAIT_TIMEOUT`.
    fn wait_for<T>(&self, name: &str, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{name}: no {what} within {WAIT_TIMEOUT:?}; log tail:\n{}",
                    self.log_tail(name)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn index(&self, name: &str) -> usize {
        self.instances
            .iter()
            .position(|i| i.name == name)
            .unwrap_or_else(|| {
                let names: Vec<&str> = self.instances.iter().map(|i| i.name.as_str()).collect();
                panic!("no instance {name:?} (instances: {names:?})")
            })
    }

    /// The instance's server log (`<cluster dir>/<name>.log`).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// The last 40 lines of the instance's server log.
    pub fn log_tail(&self, name: &str) -> String {
        let text = fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn init_primary(&self, replicas: usize) {
        let p0 = &self.instances[0];
        let mut initdb = pg_command("initdb", &self.dir);
        initdb.arg("-D").arg(&p0.dir).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "--no-instructions",
        ]);
        run(initdb, "initdb");
        // Each pg_basebackup -X stream holds two WAL senders while it runs, all in parallel.
        let senders = 10.max(3 * replicas + 2);
        append_conf(
            &p0.dir,
            &format!(
                "listen_addresses = '127.0.0.1'\n\
                 port = {port}\n\
                 unix_socket_directories = '{sockets}'\n\
                 wal_level = replica\n\
                 max_wal_senders = {senders}\n\
                 max_replication_slots = {senders}\n\
                 hot_standby = on\n\
                 wal_keep_size = '256MB'\n\
                 cluster_name = 'p0'\n\
                 fsync = off\n\
                 wal_log_hints = on\n\
                 max_connections = 300\n\
                 wal_retrieve_retry_interval = '100ms'\n",
                port = p0.port,
                sockets = self.dir.display(),
            ),
        );
    }

    fn clone_replica(&self, i: usize) {
        let (p0, r) = (&self.instances[0], &self.instances[i]);
        let mut backup = pg_command("pg_basebackup", &self.dir);
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &p0.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&r.dir)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
        run(backup, &format!("pg_basebackup for {}", r.name));
        // The copied postgresql.conf has the primary's port and name; later lines win.
        append_conf(
            &r.dir,
            &format!("port = {}\ncluster_name = '{}'\n", r.port, r.name),
        );
    }

    /// Starts the instance's postmaster as our child, tied to this process.
    fn spawn(&self, i: usize) {
        let inst = &self.instances[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(&inst.name))
            .expect("open server log");
        // PostgreSQL's account may append to it too (`pg_ctl start -l` in a resync script).
        if let Some((uid, gid)) = owner() {
            std::os::unix::fs::chown(self.log_path(&inst.name), Some(uid), Some(gid))
                .expect("chown server log");
        }
        let mut cmd = pg_command("postgres", &self.dir);
        cmd.arg("-D")
            .arg(&inst.dir)
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        let child = spawn_tied(cmd).unwrap_or_else(|e| panic!("start {}: {e}", inst.name));
        lock(&LIVE).pids.push(child.id());
        let mut st = lock(&self.state);
        if let Some(mut old) = st.nodes[i].child.replace(child) {
            let _ = old.wait();
        }
    }

    /// Waits until the postmaster reports `ready` (primary) or `standby` (hot standby accepting
    /// connections) in its postmaster.pid, as `pg_ctl -w start` does.
    fn wait_ready(&self, i: usize) {
        let inst = &self.instances[i];
        let pid_file = inst.dir.join("postmaster.pid");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let pid = {
                let mut st = lock(&self.state);
                let child = st.nodes[i].child.as_mut().expect("spawned");
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{} exited during startup ({status}); log tail:\n{}",
                        inst.name,
                        self.log_tail(&inst.name)
                    );
                }
                child.id()
            };
            if let Ok(text) = fs::read_to_string(&pid_file) {
                let lines: Vec<&str> = text.lines().collect();
                let ours = lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str());
                let status = lines.get(7).map(|l| l.trim()).unwrap_or("");
                if ours && (status == "ready" || status == "standby") {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} not ready within {START_TIMEOUT:?}; log tail:\n{}",
                    inst.name,
                    self.log_tail(&inst.name)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends the postmaster `signal` and waits until it exited (SIGKILL after `STOP_TIMEOUT`):
    /// our child is reaped, one started outside the harness waited for.
    fn halt(&self, i: usize, signal: libc::c_int) {
        let inst = &self.instances[i];
        if self.child_pid(i).is_some() {
            let mut child = lock(&self.state).nodes[i].child.take().expect("running");
            // SAFETY: plain kill(2) on our own child's pid, which is not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            reap_child(&mut child);
        } else if let Some(pid) = running_postmaster(&inst.dir) {
            // SAFETY: kill(2) on the pid postmaster.pid names, just checked to be a postmaster
            // running from this data directory.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
            wait_postmaster_gone(pid, &inst.dir, STOP_TIMEOUT);
        } else {
            panic!("{} is not running", inst.name)
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut children: Vec<Child> = lock(&self.state)
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        // Postmasters started outside the harness (what postmaster.pid names and is not ours).
        let outside: Vec<(u32, &Path)> = self
            .instances
            .iter()
            .filter_map(|inst| Some((running_postmaster(&inst.dir)?, inst.dir.as_path())))
            .filter(|(pid, _)| !children.iter().any(|c| c.id() == *pid))
            .collect();
        for child in &children {
            // SAFETY: kill(2) on our own unreaped children.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
        }
        for &(pid, _) in &outside {
            // SAFETY: kill(2) on a pid just checked to be a postmaster of this cluster.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGQUIT) };
        }
        for child in &mut children {
            reap_child(child);
        }
        for &(pid, dir) in &outside {
            wait_postmaster_gone(pid, dir, STOP_TIMEOUT);
        }
        // Nothing is left for the watchdog: closing its pipe ends it.
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
        lock(&LIVE).dirs.retain(|d| d != &self.dir);
    }
}

/// Waits for our postmaster child to exit (SIGKILL after `STOP_TIMEOUT`) and forgets its pid.
fn reap_child(child: &mut Child) {
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            _ => break,
        }
    }
    let pid = child.id();
    lock(&LIVE).pids.retain(|&p| p != pid);
}

/// Postmasters running and cluster directories existing, for the exit handler.
struct Registry {
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

static LIVE: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    dirs: Vec::new(),
});

/// At exit: immediate shutdown of every postmaster still running (the shared cluster, and any
/// started outside the harness in a cluster directory), wait for them, delete the cluster
/// directories.
extern "C" fn stop_all_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let (pids, dirs) = {
            let mut live = lock(&LIVE);
            (
                std::mem::take(&mut live.pids),
                std::mem::take(&mut live.dirs),
            )
        };
        let outside: Vec<(u32, PathBuf)> = dirs
            .iter()
            .flat_map(|d| running_postmasters_in(d))
            .filter(|(pid, _)| !pids.contains(pid))
            .collect();
        for &pid in &pids {
            // SAFETY: kill(2) on our own children, which are not reaped (they are in LIVE).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGQUIT) };
        }
        for (pid, _) in &outside {
            // SAFETY: kill(2) on pids just checked to be postmasters of our clusters.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGQUIT) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for &pid in &pids {
            loop {
                // SAFETY: waitpid(2)/kill(2) on a pid we spawned.
                let r = unsafe {
                    libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG)
                };
                let gone = r == pid as libc::pid_t
                    || (r < 0 && unsafe { libc::kill(pid as libc::pid_t, 0) } != 0);
                if gone {
                    break;
                }
                if Instant::now() >= deadline {
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGKILL);
                        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
                    }
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        for (pid, dir) in &outside {
            wait_postmaster_gone(
                *pid,
                dir,
                deadline.saturating_duration_since(Instant::now()),
            );
        }
        for dir in dirs {
            let _ = fs::remove_dir_all(dir);
        }
    });
}

/// The pid of the postmaster running from `data_dir`, whoever started it: the first line of its
/// `postmaster.pid`, accepted only while `/proc/<pid>/cwd` is `data_dir` (a postmaster works in
/// its data directory), so a stale file (after SIGKILL), a reused pid or a zombie gives `None`.
fn running_postmaster(data_dir: &Path) -> Option<u32> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    // A single-user backend (pg_rewind's crash recovery) writes its pid negated: not a server.
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    postmaster_alive(pid, data_dir).then_some(pid)
}

/// True while `pid` runs in `data_dir`.
fn postmaster_alive(pid: u32, data_dir: &Path) -> bool {
    let Ok(cwd) = fs::read_link(format!("/proc/{pid}/cwd")) else {
        return false;
    };
    fs::canonicalize(data_dir).is_ok_and(|d| d == cwd)
}

/// The postmasters running from the data directories inside a cluster directory.
fn running_postmasters_in(cluster_dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = fs::read_dir(cluster_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter_map(|d| Some((running_postmaster(&d)?, d)))
        .collect()
}

/// Waits until a postmaster that is not our `Child` left `data_dir` (exited), reaping it if it
/// became our child (orphans go to a subreaper); SIGKILL after `timeout`.
fn wait_postmaster_gone(pid: u32, data_dir: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut killed = false;
    loop {
        reap_if_our_zombie(pid);
        if !postmaster_alive(pid, data_dir) {
            return;
        }
        if Instant::now() >= deadline {
            if killed {
                return;
            }
            // SAFETY: kill(2) on a pid just checked to run in the data directory.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(POLL);
    }
}

/// Reaps `pid` when it is an exited child of this process (checked in /proc first, so a live
/// child, e.g. a `Command` another test waits for, is never touched).
fn reap_if_our_zombie(pid: u32) {
    if super::proc_stat(pid) == Some(('Z', std::process::id())) {
        // SAFETY: waitpid on our own exited child, without blocking.
        unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
    }
}

/// Starts the cluster's watchdog: `sh` blocked reading a pipe whose only writer is this process
/// (close-on-exec, so no other child holds it). When the pipe closes — this process exited or
/// died, however, or the cluster was dropped — it sends SIGQUIT (immediate shutdown) to every
/// postmaster still running from the cluster's data directories, by the same `postmaster.pid` and
/// `/proc/<pid>/cwd` check as `running_postmaster`. Our own postmasters have the parent-death
/// signal already; this is for those started outside the harness, which are nobody's child here.
fn spawn_watchdog(cluster_dir: &Path) -> Child {
    const SCRIPT: &str = r#"read -r _
for f in "$1"/*/postmaster.pid; do
  read -r pid < "$f" 2>/dev/null || continue
  [ -n "$pid" ] && [ "$(readlink "/proc/$pid/cwd")" = "${f%/postmaster.pid}" ] && kill -QUIT "$pid"
done
exit 0"#;
    let dir = fs::canonicalize(cluster_dir).expect("canonical cluster dir");
    Command::new("/bin/sh")
        .args(["-c", SCRIPT, "strata-pg-watchdog"])
        .arg(dir)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the cluster watchdog")
}

/// Deletes cluster directories (`strata-pg-<pid>-<n>` in the temp dir) whose test binary is
/// gone (it was killed before its exit handler ran), after stopping any postmaster still running
/// from them. Called by the first `start` of a binary.
pub fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("strata-pg-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            // Its watchdog stopped what ran outside the harness, unless it died too.
            for (pid, dir) in running_postmasters_in(&entry.path()) {
                // SAFETY: kill(2) on a pid just checked to be a postmaster of that directory.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGQUIT) };
                wait_postmaster_gone(pid, &dir, Duration::from_secs(10));
            }
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The account PostgreSQL runs as: `postgres` when we are root (initdb and postgres refuse
/// root), else our own (`None`).
fn owner() -> Option<(u32, u32)> {
    static OWNER: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *OWNER.get_or_init(|| {
        // SAFETY: geteuid never fails; getpwnam's result is read at once, before any other
        // getpw* call could overwrite it (only this OnceLock calls it).
        unsafe {
            if libc::geteuid() != 0 {
                return None;
            }
            let pw = libc::getpwnam(c"postgres".as_ptr());
            assert!(
                !pw.is_null(),
                "running as root needs a `postgres` user (scripts/test installs postgresql-15)"
            );
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    })
}

/// A directory the PostgreSQL account owns, mode 0700.
fn make_owned_dir(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).expect("chmod temp dir");
    if let Some((uid, gid)) = owner() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown temp dir");
    }
}

/// Where the PostgreSQL programs are: `STRATA_PG_BIN`, else `DEFAULT_PG_BIN`.
fn pg_bin_dir() -> PathBuf {
    std::env::var_os("STRATA_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PG_BIN))
}

/// `path` as one `sh` word (single-quoted).
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// A PostgreSQL program, run as the PostgreSQL account with a clean environment.
fn pg_command(program: &str, cwd: &Path) -> Command {
    let path = pg_bin_dir().join(program);
    assert!(
        path.exists(),
        "{} is missing: the tests need the PostgreSQL 15 server (scripts/test installs \
         postgresql-15)",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null());
    if let Some((uid, gid)) = owner() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn append_conf(data_dir: &Path, lines: &str) {
    let path = data_dir.join("postgresql.conf");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    writeln!(f, "\n# strata test harness\n{lines}").expect("write postgresql.conf");
}

/// Spawns `cmd` so that it gets SIGQUIT (PostgreSQL's immediate shutdown) when this process
/// dies. The parent-death signal fires when the *thread* that forked the child ends, and each
/// test runs on its own short-lived thread, so every spawn happens on one thread that lives as
/// long as the process.
fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    type Job = Box<dyn FnOnce() + Send>;
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pg-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("spawn the pg-spawner thread");
        tx
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: runs in the forked child before exec, after the uid change (a uid change would
    // clear the parent-death signal); prctl and getppid are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGQUIT as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent died before prctl took effect: do not start an orphan.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .send(Box::new(move || {
            let _ = tx.send(cmd.spawn());
        }))
        .expect("pg-spawner thread alive");
    rx.recv().expect("pg-spawner answered")
}

/// Runs a future on the harness's own runtime thread and waits for it, so the SQL helpers are
/// plain functions callable from sync tests and from inside `#[tokio::test]` alike.
fn block_on<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pg-harness")
            .enable_all()
            .build()
            .expect("pg harness runtime")
    });
    let (tx, rx) = mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().expect("pg harness task panicked")
}

/// A node_exporter-format metrics endpoint: `GET /metrics` answers the Prometheus text format
/// with the values `set` so far (`# TYPE` counter for names ending in `_total`, else gauge).
/// Stopped on drop.
pub struct MetricsServer {
    pub port: u16,
    state: Arc<MetricsState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct MetricsState {
    /// family → labels (`{cpu="0",mode="idle"}` or empty) → value.
    families: Mutex<BTreeMap<String, BTreeMap<String, f64>>>,
    status: AtomicU16,
    requests: AtomicU64,
    stop: AtomicBool,
}

impl MetricsServer {
    pub fn start() -> MetricsServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind metrics server");
        let port = listener.local_addr().expect("metrics addr").port();
        let state = Arc::new(MetricsState {
            families: Mutex::new(BTreeMap::new()),
            status: AtomicU16::new(200),
            requests: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("metrics-server".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = conn {
                        let st = st.clone();
                        std::thread::spawn(move || serve_metrics(stream, &st));
                    }
                }
            })
            .expect("spawn metrics server");
        MetricsServer {
            port,
            state,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>/metrics`, what `metrics_url` takes.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    /// Sets a series, e.g. `node_cpu_seconds_total{cpu="0",mode="idle"}`,
    /// `node_memory_MemAvailable_bytes`, `node_load1`.
    pub fn set(&self, name_with_labels: &str, value: f64) {
        let (family, labels) = split_series(name_with_labels);
        lock(&self.state.families)
            .entry(family.to_string())
            .or_default()
            .insert(labels.to_string(), value);
    }

    /// Removes a series (a family without series disappears).
    pub fn remove(&self, name_with_labels: &str) {
        let (family, labels) = split_series(name_with_labels);
        let mut families = lock(&self.state.families);
        if let Some(series) = families.get_mut(family) {
            series.remove(labels);
            if series.is_empty() {
                families.remove(family);
            }
        }
    }

    /// Removes every series.
    pub fn clear(&self) {
        lock(&self.state.families).clear();
    }

    /// Makes `GET /metrics` answer this status (200 by default; anything else with no metrics).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Requests answered so far (any path).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The body `GET /metrics` answers now.
    pub fn render(&self) -> String {
        render_metrics(&lock(&self.state.families))
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `name{labels}` → (`name`, `{labels}`), checking the Prometheus name syntax.
fn split_series(series: &str) -> (&str, &str) {
    let (family, labels) = match series.find('{') {
        Some(k) => (&series[..k], &series[k..]),
        None => (series, ""),
    };
    let valid_name = family.chars().enumerate().all(|(k, c)| {
        c == '_' || c == ':' || c.is_ascii_alphabetic() || (k > 0 && c.is_ascii_digit())
    });
    assert!(
        !family.is_empty() && valid_name && (labels.is_empty() || labels.ends_with('}')),
        "not a Prometheus series: {series:?}"
    );
    (family, if labels == "{}" { "" } else { labels })
}

fn render_metrics(families: &BTreeMap<String, BTreeMap<String, f64>>) -> String {
    let mut out = String::new();
    for (family, series) in families {
        let kind = if family.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        out.push_str(&format!(
            "# HELP {family} Set by the test harness.\n# TYPE {family} {kind}\n"
        ));
        for (labels, v) in series {
            let value = if v.is_nan() {
                "NaN".to_string()
            } else if v.is_infinite() {
                if *v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
            } else {
                v.to_string()
            };
            out.push_str(&format!("{family}{labels} {value}\n"));
        }
    }
    out
}

fn serve_metrics(mut stream: TcpStream, st: &MetricsState) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    if head.is_empty() {
        return;
    }
    st.requests.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&head);
    let mut words = text.split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("").split('?').next().unwrap_or("");
    let (status, body) = if method == "GET" && path == "/metrics" {
        match st.status.load(Ordering::SeqCst) {
            200 => (200, render_metrics(&lock(&st.families))),
            other => (other, "error set by the test\n".to_string()),
        }
    } else {
        (404, "not found\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        if status == 200 { "OK" } else { "Error" },
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
