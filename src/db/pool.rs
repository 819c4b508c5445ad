//! Connection pools to one PostgreSQL server (DESIGN.md, "Pools, router, balancer"): a
//! `ServerPools` holds the pools Strata keeps on one instance — on the primary a `Write` pool and
//! a `Read` pool for fallback reads, on a replica a `Read` pool — and the one connection budget
//! they share: at most `max` connections from this Strata to that server, `reserved` of them
//! only for `Priority::Critical` work, at least `min` kept open (opened in the background, never
//! by a waiting caller), idle connections beyond `min` closed after `idle_timeout`, an acquire
//! that cannot be served within `acquire_timeout` failing with `PoolError::Exhausted`, and
//! statistics per pool (size, idle, in use, waiting, wait time).
//!
//! The accounting is `Ledger`, a plain struct with no I/O and no clock of its own (callers pass
//! `now`), so every bound is checked by model-based property tests. It owns the idle
//! connections themselves, so its counts *are* the pool: there is no second copy to drift. A
//! connection belongs to exactly one pool at a time; a pool with no idle connection of its own
//! takes an idle one from its sibling before opening a new one, which keeps the number of
//! server connections as low as the traffic allows.
//!
//! deadpool-postgres provides the connection wrapper (`ClientWrapper`: the per-connection
//! prepared-statement cache behind `prepare_cached`, the connection task aborted on drop), but
//! not its `Pool`: deadpool's pool is one semaphore per pool with its own idle queue, which can
//! neither share one budget among the pools of a server nor hold connections back for critical
//! work, and a budget kept beside it could not say which idle object its `get` would pop.
//!
//! Not here: choosing a server (router, balancer), health checks and breakers (a server that is
//! down only makes the background top-up retry quietly: 1 s, 2 s, then every 4 s), TLS (the
//! connections are opened by `db::tls::connect`), and session state — QUERY refuses statements that would leave state
//! on a pooled connection; a `Conn` is handed back as it is.

use deadpool_postgres::ClientWrapper;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::error::{Severity, SqlState};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

/// At most this many callers wait for a connection on one server; one more is refused at once
/// (`PoolError::Exhausted`) rather than queued.
pub const MAX_WAITERS: usize = 10_000;

/// Prepared statements kept per connection. deadpool's statement cache grows with every
/// distinct SQL text, so it is cleared when it reaches this size; the statements dropped from
/// it are closed on the server as well.
pub const MAX_CACHED_STATEMENTS: usize = 256;

/// How often `spawn_maintenance` closes expired idle connections and tops the pool up to `min`.
pub const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);

/// The longest acquire or connect timeout honoured (longer settings are cut to it).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Waits between background connection attempts while the server keeps refusing them.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Which pool of a server: writes go to the primary's `Write` pool; reads to a replica's `Read`
/// pool, or to the primary's `Read` pool when no replica can serve them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Write,
    Read,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Write => "write",
            Role::Read => "read",
        }
    }

    fn index(self) -> usize {
        match self {
            Role::Write => 0,
            Role::Read => 1,
        }
    }

    fn sibling(self) -> Role {
        match self {
            Role::Write => Role::Read,
            Role::Read => Role::Write,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Critical` work (QUERY ... PRIORITY CRITICAL, failover, health) may use the `reserved`
/// connections that `Normal` work never takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    Normal,
    Critical,
}

impl Priority {
    fn index(self) -> usize {
        match self {
            Priority::Normal => 0,
            Priority::Critical => 1,
        }
    }
}

/// The bounds of one server's pools (`[database] pool_min`, `pool_max`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections kept open to the server, idle or not (opened in the background; at most
    /// `max - reserved`, since background openings never use the reserve).
    pub min: usize,
    /// Connections to the server, all pools together, never exceeded.
    pub max: usize,
    /// Of `max`, the connections only `Priority::Critical` acquires may hold.
    pub reserved: usize,
    /// An idle connection beyond `min` is closed after this long unused.
    pub idle_timeout: Duration,
    /// How long `get` waits for a connection before `PoolError::Exhausted`.
    pub acquire_timeout: Duration,
    /// How long opening a connection (with its session settings) may take.
    pub connect_timeout: Duration,
    /// `SET statement_timeout` on every new connection, in ms; 0 leaves the server's setting.
    pub statement_timeout_ms: u64,
}

impl Default for PoolSettings {
    fn default() -> PoolSettings {
        PoolSettings {
            min: 10,
            max: 50,
            reserved: 5,
            idle_timeout: Duration::from_secs(300),
            acquire_timeout: Duration::from_millis(5000),
            connect_timeout: Duration::from_secs(5),
            statement_timeout_ms: 0,
        }
    }
}

impl PoolSettings {
    /// The settings made consistent, as the pools use them: `max` at least 1, `reserved`
    /// leaving at least one connection to normal work, `min` at most `max - reserved`, timeouts
    /// at most a day, `statement_timeout_ms` within what PostgreSQL accepts.
    pub fn normalized(&self) -> PoolSettings {
        let max = self.max.max(1);
        let reserved = self.reserved.min(max - 1);
        PoolSettings {
            min: self.min.min(max - reserved),
            max,
            reserved,
            idle_timeout: self.idle_timeout,
            acquire_timeout: self.acquire_timeout.min(MAX_TIMEOUT),
            connect_timeout: self.connect_timeout.min(MAX_TIMEOUT),
            statement_timeout_ms: self.statement_timeout_ms.min(i32::MAX as u64),
        }
    }
}

/// Upper bounds of the wait-time buckets. Fixed buckets rather than an HDR histogram: constant
/// memory, no extra dependency, and they map one to one onto the `le` buckets of the Prometheus
/// histogram these numbers are exported as; a quantile read from them is exact to one bucket.
pub const WAIT_BUCKETS: [Duration; 12] = [
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
    Duration::from_millis(2500),
    Duration::from_millis(5000),
];

/// How long successful acquires waited for their connection (queueing and connecting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitHistogram {
    pub count: u64,
    pub sum: Duration,
    pub max: Duration,
    /// `buckets[i]` counts waits in (`WAIT_BUCKETS[i-1]`, `WAIT_BUCKETS[i]`]; the last one
    /// counts those above the last bound. Not cumulative.
    pub buckets: [u64; WAIT_BUCKETS.len() + 1],
}

impl WaitHistogram {
    pub fn record(&mut self, wait: Duration) {
        let i = WAIT_BUCKETS.partition_point(|&bound| bound < wait);
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.count = self.count.saturating_add(1);
        self.sum = self.sum.saturating_add(wait);
        self.max = self.max.max(wait);
    }

    /// An upper bound of the `q` quantile (0.5 = p50, 0.99 = p99): the bound of the bucket
    /// that holds it (the largest wait seen for the last bucket); `None` before any wait.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen = seen.saturating_add(*n);
            if seen >= rank {
                return Some(WAIT_BUCKETS.get(i).map_or(self.max, |b| (*b).min(self.max)));
            }
        }
        Some(self.max)
    }

    fn merge(&mut self, other: &WaitHistogram) {
        self.count = self.count.saturating_add(other.count);
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a = a.saturating_add(*b);
        }
    }
}

/// A pool's (or, from `totals`, the whole server's) numbers at one moment.
/// `size == idle + in_use` always; `size + opening <= max` always.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections: `idle + in_use`.
    pub size: usize,
    pub idle: usize,
    /// Handed to callers (including those granted to a waiter that has not picked it up yet).
    pub in_use: usize,
    /// Of `in_use`, held by critical acquires.
    pub critical_in_use: usize,
    /// Connections being opened (for a caller, or in the background for `totals`).
    pub opening: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
    /// The server's budget, shared by its pools.
    pub max: usize,
    /// Connections this pool keeps open (the server's `min` for the pool that holds it).
    pub min: usize,
    pub reserved: usize,
    pub acquired_total: u64,
    pub timeouts_total: u64,
    pub wait: WaitHistogram,
}

/// Identifies a caller waiting in a `Ledger`.
pub type WaiterId = u64;

/// What a caller gets from the ledger: an idle connection, or the right to open one (the
/// budget already counts it).
#[derive(Debug)]
pub enum Grant<C> {
    Idle(C),
    Open,
}

/// The answer to `Ledger::acquire`.
#[derive(Debug)]
pub enum Acquire<C> {
    Ready(Grant<C>),
    /// Wait until the token given to `acquire` is woken, then `take` the grant; or `give_up`
    /// at the deadline, or `cancel`.
    Queued(WaiterId),
    /// `MAX_WAITERS` callers are already waiting.
    Full,
}

/// The answer to `Ledger::give_up`.
#[derive(Debug)]
pub enum GiveUp<C> {
    /// A grant arrived before the caller gave up: it is the caller's.
    Granted(Grant<C>),
    /// Removed from the queue; the pool's numbers when it gave up (`waiting` counts it).
    TimedOut { in_use: usize, waiting: usize },
    /// No such waiter.
    Unknown,
}

#[derive(Debug)]
struct IdleConn<C> {
    conn: C,
    since: Instant,
}

#[derive(Debug)]
struct RoleState<C> {
    /// Oldest first; connections are taken from the end (most recently used), so the cold
    /// ones at the front are the ones that expire.
    idle: Vec<IdleConn<C>>,
    /// By `Priority::index`.
    in_use: [usize; 2],
    opening: [usize; 2],
    waiting: usize,
    acquired_total: u64,
    timeouts_total: u64,
    wait: WaitHistogram,
}

impl<C> RoleState<C> {
    fn new() -> RoleState<C> {
        RoleState {
            idle: Vec::new(),
            in_use: [0; 2],
            opening: [0; 2],
            waiting: 0,
            acquired_total: 0,
            timeouts_total: 0,
            wait: WaitHistogram::default(),
        }
    }

    fn in_use(&self) -> usize {
        self.in_use[0] + self.in_use[1]
    }
}

#[derive(Debug)]
struct Waiter<W> {
    id: WaiterId,
    role: Role,
    priority: Priority,
    token: W,
}

#[derive(Debug)]
struct Granted<C> {
    id: WaiterId,
    role: Role,
    priority: Priority,
    grant: Grant<C>,
}

/// The budget and accounting of one server's pools, with the idle connections themselves
/// (`C`) and a wake-up token per waiting caller (`W`). Pure: no I/O, time passed in.
///
/// Rules: a normal acquire is served only while normal work holds (or is opening) fewer than
/// `max - reserved` connections; any acquire is served from its pool's idle connections, else
/// its sibling's, else by opening a new one while fewer than `max` exist or are being opened;
/// otherwise it waits. Waiters are served critical first, then in arrival order, whenever a
/// connection comes back or the budget frees; after every operation no waiter that could be
/// served is still waiting. Every mutating call may queue wake-up tokens: drain them with
/// `take_wakes` and wake those callers.
#[derive(Debug)]
pub struct Ledger<C, W> {
    settings: PoolSettings,
    /// The pool that holds the minimum (Write on the primary, Read on a replica).
    home: Role,
    roles: [RoleState<C>; 2],
    /// Connections opened in the background to reach `min` (not anyone's yet).
    background_opening: usize,
    waiters: VecDeque<Waiter<W>>,
    /// Grants made to waiters that have not picked them up yet.
    granted: Vec<Granted<C>>,
    wakes: Vec<W>,
    next_id: WaiterId,
}

impl<C, W> Ledger<C, W> {
    /// A ledger with no connections; `settings` are normalized.
    pub fn new(settings: &PoolSettings, home: Role) -> Ledger<C, W> {
        Ledger {
            settings: settings.normalized(),
            home,
            roles: [RoleState::new(), RoleState::new()],
            background_opening: 0,
            waiters: VecDeque::new(),
            granted: Vec::new(),
            wakes: Vec::new(),
            next_id: 0,
        }
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Open connections, all pools.
    fn size(&self) -> usize {
        self.roles.iter().map(|r| r.idle.len() + r.in_use()).sum()
    }

    /// Connections open or being opened: what the budget counts.
    fn total(&self) -> usize {
        self.size()
            + self.background_opening
            + self
                .roles
                .iter()
                .map(|r| r.opening[0] + r.opening[1])
                .sum::<usize>()
    }

    /// What counts against normal work's share: its connections in use and opening, and the
    /// background openings (which become idle connections anyone may take). So at most
    /// `max - reserved` connections are ever out of critical work's reach.
    fn normal_used(&self) -> usize {
        let n = Priority::Normal.index();
        self.background_opening
            + self
                .roles
                .iter()
                .map(|r| r.in_use[n] + r.opening[n])
                .sum::<usize>()
    }

    fn idle_total(&self) -> usize {
        self.roles.iter().map(|r| r.idle.len()).sum()
    }

    /// Whether an acquire of this priority could be served now (by any pool).
    fn could_serve(&self, priority: Priority) -> bool {
        let share_left = priority == Priority::Critical
            || self.normal_used() < self.settings.max - self.settings.reserved;
        share_left && (self.idle_total() > 0 || self.total() < self.settings.max)
    }

    fn try_serve(&mut self, role: Role, priority: Priority) -> Option<Grant<C>> {
        if !self.could_serve(priority) {
            return None;
        }
        let conn = match self.roles[role.index()].idle.pop() {
            Some(idle) => Some(idle.conn),
            None => self.roles[role.sibling().index()]
                .idle
                .pop()
                .map(|idle| idle.conn),
        };
        let state = &mut self.roles[role.index()];
        let p = priority.index();
        Some(match conn {
            Some(conn) => {
                state.in_use[p] += 1;
                Grant::Idle(conn)
            }
            None => {
                state.opening[p] += 1;
                Grant::Open
            }
        })
    }

    /// Serves waiters (critical first, then in arrival order) while anything is available.
    fn dispatch(&mut self) {
        for pass in [Priority::Critical, Priority::Normal] {
            let mut i = 0;
            while i < self.waiters.len() && self.could_serve(pass) {
                if self.waiters[i].priority != pass {
                    i += 1;
                    continue;
                }
                let (role, priority) = (self.waiters[i].role, self.waiters[i].priority);
                let Some(grant) = self.try_serve(role, priority) else {
                    i += 1;
                    continue;
                };
                if let Some(w) = self.waiters.remove(i) {
                    let state = &mut self.roles[role.index()];
                    state.waiting = state.waiting.saturating_sub(1);
                    self.granted.push(Granted {
                        id: w.id,
                        role,
                        priority,
                        grant,
                    });
                    self.wakes.push(w.token);
                }
            }
        }
    }

    /// A caller wants a connection of `role`: served now, or queued with `token` to wake.
    pub fn acquire(&mut self, role: Role, priority: Priority, token: W) -> Acquire<C> {
        self.acquire_with(role, priority, || token)
    }

    /// [`Ledger::acquire`] with the wake-up token made only if the caller has to queue.
    pub fn acquire_with(
        &mut self,
        role: Role,
        priority: Priority,
        token: impl FnOnce() -> W,
    ) -> Acquire<C> {
        // No waiter can be served (the invariant), so serving this caller now jumps no queue.
        if let Some(grant) = self.try_serve(role, priority) {
            return Acquire::Ready(grant);
        }
        if self.waiters.len() >= MAX_WAITERS {
            return Acquire::Full;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.waiters.push_back(Waiter {
            id,
            role,
            priority,
            token: token(),
        });
        self.roles[role.index()].waiting += 1;
        Acquire::Queued(id)
    }

    /// The grant made to a woken waiter (`None` while it has none).
    pub fn take(&mut self, id: WaiterId) -> Option<Grant<C>> {
        let i = self.granted.iter().position(|g| g.id == id)?;
        Some(self.granted.swap_remove(i).grant)
    }

    /// A waiter's deadline passed: it leaves the queue (counted as a timeout), unless a grant
    /// reached it first.
    pub fn give_up(&mut self, id: WaiterId) -> GiveUp<C> {
        if let Some(grant) = self.take(id) {
            return GiveUp::Granted(grant);
        }
        let Some(i) = self.waiters.iter().position(|w| w.id == id) else {
            return GiveUp::Unknown;
        };
        let Some(w) = self.waiters.remove(i) else {
            return GiveUp::Unknown;
        };
        let state = &mut self.roles[w.role.index()];
        let waiting = state.waiting;
        state.waiting = state.waiting.saturating_sub(1);
        state.timeouts_total = state.timeouts_total.saturating_add(1);
        GiveUp::TimedOut {
            in_use: state.in_use(),
            waiting,
        }
    }

    /// A waiter went away (its acquire was dropped): it leaves no trace; a grant it had not
    /// picked up goes back.
    pub fn cancel(&mut self, id: WaiterId, now: Instant) {
        if let Some(i) = self.waiters.iter().position(|w| w.id == id) {
            if let Some(w) = self.waiters.remove(i) {
                let state = &mut self.roles[w.role.index()];
                state.waiting = state.waiting.saturating_sub(1);
            }
            return;
        }
        if let Some(i) = self.granted.iter().position(|g| g.id == id) {
            let g = self.granted.swap_remove(i);
            match g.grant {
                Grant::Idle(conn) => self.release(g.role, g.priority, conn, now),
                Grant::Open => self.open_failed(g.role, g.priority),
            }
        }
    }

    /// A `Grant::Open` became an open connection, in use by its caller.
    pub fn opened(&mut self, role: Role, priority: Priority) {
        let state = &mut self.roles[role.index()];
        let p = priority.index();
        state.opening[p] = state.opening[p].saturating_sub(1);
        state.in_use[p] += 1;
    }

    /// A `Grant::Open` failed (or was abandoned): its place in the budget is free again.
    pub fn open_failed(&mut self, role: Role, priority: Priority) {
        let state = &mut self.roles[role.index()];
        let p = priority.index();
        state.opening[p] = state.opening[p].saturating_sub(1);
        self.dispatch();
    }

    /// An idle connection handed out turned out closed: it is gone and its caller opens a new
    /// one in its place (the budget does not change).
    pub fn reopen(&mut self, role: Role, priority: Priority) {
        let state = &mut self.roles[role.index()];
        let p = priority.index();
        state.in_use[p] = state.in_use[p].saturating_sub(1);
        state.opening[p] += 1;
    }

    /// A caller is done with a working connection: it becomes idle as of `now` (or goes
    /// straight to a waiter).
    pub fn release(&mut self, role: Role, priority: Priority, conn: C, now: Instant) {
        let state = &mut self.roles[role.index()];
        let p = priority.index();
        state.in_use[p] = state.in_use[p].saturating_sub(1);
        state.idle.push(IdleConn { conn, since: now });
        self.dispatch();
    }

    /// A caller's connection is broken and has been closed: its place in the budget is free.
    pub fn discard(&mut self, role: Role, priority: Priority) {
        let state = &mut self.roles[role.index()];
        let p = priority.index();
        state.in_use[p] = state.in_use[p].saturating_sub(1);
        self.dispatch();
    }

    /// How many connections to open in the background (at most `cap`) to reach `min`; they
    /// are counted in the budget, within normal work's share, from now on. Report each with
    /// `top_up_opened` or `top_up_failed`.
    pub fn plan_top_up(&mut self, cap: usize) -> usize {
        let total = self.total();
        let share = self.settings.max - self.settings.reserved;
        let n = self
            .settings
            .min
            .saturating_sub(total)
            .min(share.saturating_sub(self.normal_used()))
            .min(cap);
        self.background_opening += n;
        n
    }

    /// A background connection opened: idle in the pool that holds the minimum.
    pub fn top_up_opened(&mut self, conn: C, now: Instant) {
        self.background_opening = self.background_opening.saturating_sub(1);
        self.roles[self.home.index()]
            .idle
            .push(IdleConn { conn, since: now });
        self.dispatch();
    }

    pub fn top_up_failed(&mut self) {
        self.background_opening = self.background_opening.saturating_sub(1);
        self.dispatch();
    }

    /// Removes the idle connections unused for `idle_timeout` or longer at `now`, oldest
    /// first, as long as at least `min` connections stay open; returns them to be closed.
    pub fn prune(&mut self, now: Instant) -> Vec<C> {
        let removable = self.size().saturating_sub(self.settings.min);
        if removable == 0 {
            return Vec::new();
        }
        let timeout = self.settings.idle_timeout;
        let mut expired: Vec<(Instant, usize, usize)> = Vec::new();
        for (r, state) in self.roles.iter().enumerate() {
            for (i, idle) in state.idle.iter().enumerate() {
                if now.saturating_duration_since(idle.since) >= timeout {
                    expired.push((idle.since, r, i));
                }
            }
        }
        expired.sort_unstable();
        expired.truncate(removable);
        let mut out = Vec::with_capacity(expired.len());
        for (r, state) in self.roles.iter_mut().enumerate() {
            let mut indexes: Vec<usize> =
                expired.iter().filter(|e| e.1 == r).map(|e| e.2).collect();
            // Highest index first, so the lower ones stay valid.
            indexes.sort_unstable_by(|a, b| b.cmp(a));
            for i in indexes {
                if i < state.idle.len() {
                    out.push(state.idle.remove(i).conn);
                }
            }
        }
        self.dispatch();
        out
    }

    /// Removes the idle connections `dead` says are unusable (closed by the server), whatever
    /// `min` says; returns them to be dropped.
    pub fn remove_idle_if(&mut self, mut dead: impl FnMut(&C) -> bool) -> Vec<C> {
        let mut out = Vec::new();
        for state in &mut self.roles {
            for idle in std::mem::take(&mut state.idle) {
                if dead(&idle.conn) {
                    out.push(idle.conn);
                } else {
                    state.idle.push(idle);
                }
            }
        }
        self.dispatch();
        out
    }

    /// Counts a successful acquire of `role` and how long its caller waited.
    pub fn record_acquired(&mut self, role: Role, waited: Duration) {
        let state = &mut self.roles[role.index()];
        state.acquired_total = state.acquired_total.saturating_add(1);
        state.wait.record(waited);
    }

    /// The wake-up tokens of the waiters served since the last call.
    pub fn take_wakes(&mut self) -> Vec<W> {
        std::mem::take(&mut self.wakes)
    }

    pub fn stats(&self, role: Role) -> PoolStats {
        let state = &self.roles[role.index()];
        let in_use = state.in_use();
        PoolStats {
            size: state.idle.len() + in_use,
            idle: state.idle.len(),
            in_use,
            critical_in_use: state.in_use[Priority::Critical.index()],
            opening: state.opening[0] + state.opening[1],
            waiting: state.waiting,
            max: self.settings.max,
            min: if role == self.home {
                self.settings.min
            } else {
                0
            },
            reserved: self.settings.reserved,
            acquired_total: state.acquired_total,
            timeouts_total: state.timeouts_total,
            wait: state.wait.clone(),
        }
    }

    /// The whole server: both pools added up, background openings included.
    pub fn totals(&self) -> PoolStats {
        let mut t = PoolStats {
            max: self.settings.max,
            min: self.settings.min,
            reserved: self.settings.reserved,
            opening: self.background_opening,
            ..PoolStats::default()
        };
        for role in [Role::Write, Role::Read] {
            let s = self.stats(role);
            t.size += s.size;
            t.idle += s.idle;
            t.in_use += s.in_use;
            t.critical_in_use += s.critical_in_use;
            t.opening += s.opening;
            t.waiting += s.waiting;
            t.acquired_total = t.acquired_total.saturating_add(s.acquired_total);
            t.timeouts_total = t.timeouts_total.saturating_add(s.timeouts_total);
            t.wait.merge(&s.wait);
        }
        t
    }

    #[cfg(test)]
    fn grant_of(&self, id: WaiterId) -> Option<&Grant<C>> {
        self.granted.iter().find(|g| g.id == id).map(|g| &g.grant)
    }

    #[cfg(test)]
    fn idle_view(&self) -> Vec<(Role, &C, Instant)> {
        [Role::Write, Role::Read]
            .into_iter()
            .flat_map(|role| {
                self.roles[role.index()]
                    .idle
                    .iter()
                    .map(move |i| (role, &i.conn, i.since))
            })
            .collect()
    }
}

/// Why `ServerPools::get` gave no connection. The caller prefixes `-ERR ` (or its own code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolError {
    /// No connection within `acquire_timeout` (or too many callers already waiting).
    Exhausted {
        server: String,
        role: Role,
        in_use: usize,
        waiting: usize,
        waited: Duration,
    },
    /// Opening a connection failed; `code` is the SQLSTATE when the server answered.
    Connect {
        server: String,
        code: Option<String>,
        reason: String,
    },
    /// A replica has no write pool.
    NoPool { server: String, role: Role },
}

impl PoolError {
    fn connect(server: &str, e: &tokio_postgres::Error) -> PoolError {
        match e.as_db_error() {
            Some(db) => PoolError::Connect {
                server: server.to_string(),
                code: Some(db.code().code().to_string()),
                reason: format!("{} {}", db.code().code(), db.message()),
            },
            None => PoolError::Connect {
                server: server.to_string(),
                code: None,
                reason: e.to_string(),
            },
        }
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Exhausted {
                server,
                role,
                in_use,
                waiting,
                waited,
            } => write!(
                f,
                "database pool exhausted (server {server}, {role} pool: {in_use} in use, \
                 {waiting} waiting; waited {} ms)",
                waited.as_millis()
            ),
            PoolError::Connect { server, reason, .. } => {
                write!(f, "cannot connect to database server {server}: {reason}")
            }
            PoolError::NoPool { server, role } => {
                write!(f, "no {role} pool on database server {server} (a replica)")
            }
        }
    }
}

impl std::error::Error for PoolError {}

type PgLedger = Ledger<ClientWrapper, Arc<Notify>>;

/// When the background top-up may try again after failures: the first round opens all
/// that is missing; once a round failed, one probe at a time, 1 s, 2 s, then every 4 s after
/// the last failure, until one succeeds.
#[derive(Debug, Default)]
struct Retry {
    /// Failed rounds in a row.
    failures: usize,
    not_before: Option<Instant>,
    probing: bool,
}

impl Retry {
    /// How many connections a top-up at `now` may open (0: not yet).
    fn launch(&mut self, now: Instant) -> usize {
        match self.not_before {
            None => usize::MAX,
            Some(t) if now < t || self.probing => 0,
            Some(_) => {
                self.probing = true;
                1
            }
        }
    }

    fn failed(&mut self, now: Instant) {
        // The other failures of a round already counted change nothing.
        if self.probing || self.failures == 0 {
            self.probing = false;
            self.failures = self.failures.saturating_add(1);
            let delay = RETRY_DELAYS[(self.failures - 1).min(RETRY_DELAYS.len() - 1)];
            self.not_before = Some(now + delay);
        }
    }

    fn succeeded(&mut self) {
        *self = Retry::default();
    }
}

struct Inner {
    name: String,
    pg: tokio_postgres::Config,
    is_primary: bool,
    settings: PoolSettings,
    ledger: Mutex<PgLedger>,
    retry: Mutex<Retry>,
    /// Wakes the maintenance task (a connection was discarded: top up now).
    kick: Arc<Notify>,
}

impl Inner {
    /// Runs `f` on the ledger, then wakes the waiters it served (after unlocking).
    fn with<R>(&self, f: impl FnOnce(&mut PgLedger) -> R) -> R {
        let (r, wakes) = {
            let mut ledger = self.ledger.lock();
            let r = f(&mut ledger);
            (r, ledger.take_wakes())
        };
        for w in wakes {
            w.notify_one();
        }
        r
    }

    /// Opens one connection with the session settings, within `connect_timeout`.
    async fn connect(&self) -> Result<ClientWrapper, PoolError> {
        let open = async {
            let (client, connection) = super::tls::connect(&self.pg).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "database connection ended");
                }
            });
            let client = ClientWrapper::new(client, task);
            if self.settings.statement_timeout_ms > 0 {
                client
                    .simple_query(&format!(
                        "SET statement_timeout = {}",
                        self.settings.statement_timeout_ms
                    ))
                    .await?;
            }
            Ok::<_, tokio_postgres::Error>(client)
        };
        match tokio::time::timeout(self.settings.connect_timeout, open).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(PoolError::connect(&self.name, &e)),
            Err(_) => Err(PoolError::Connect {
                server: self.name.clone(),
                code: None,
                reason: format!(
                    "timed out after {} ms",
                    self.settings.connect_timeout.as_millis()
                ),
            }),
        }
    }

    /// Closes dead idle connections, and expired ones beyond `min`; returns how many.
    fn prune(&self) -> usize {
        let closed = self.with(|l| {
            let mut gone = l.remove_idle_if(|c| c.is_closed());
            gone.extend(l.prune(Instant::now()));
            gone
        });
        closed.len()
    }

    /// Opens, in the background, the connections missing to reach `min`. While the server
    /// refuses them, one attempt at a time, 1 s, 2 s, then every 4 s. Needs a Tokio runtime
    /// (does nothing without one).
    fn top_up(self: &Arc<Inner>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cap = self.retry.lock().launch(Instant::now());
        if cap == 0 {
            return;
        }
        let n = self.with(|l| l.plan_top_up(cap));
        if n == 0 && cap == 1 {
            // Nothing to open after all: the probe is not in flight.
            self.retry.lock().probing = false;
        }
        for _ in 0..n {
            let inner = self.clone();
            runtime.spawn(async move {
                let mut guard = OpenGuard {
                    inner: &inner,
                    caller: None,
                    armed: true,
                };
                match inner.connect().await {
                    Ok(client) => {
                        guard.armed = false;
                        inner.with(|l| l.top_up_opened(client, Instant::now()));
                        inner.retry.lock().succeeded();
                    }
                    Err(e) => {
                        drop(guard);
                        inner.retry.lock().failed(Instant::now());
                        tracing::debug!(server = %inner.name, error = %e, "pool top-up failed");
                    }
                }
            });
        }
    }
}

/// Gives an opening's place in the budget back unless disarmed (the open failed, or the
/// future doing it was dropped).
struct OpenGuard<'a> {
    inner: &'a Inner,
    /// `None` for a background opening.
    caller: Option<(Role, Priority)>,
    armed: bool,
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            match self.caller {
                Some((role, priority)) => self.inner.with(|l| l.open_failed(role, priority)),
                None => self.inner.with(|l| l.top_up_failed()),
            }
        }
    }
}

/// Takes a waiter out of the queue (or gives back its unclaimed grant) unless disarmed.
struct WaitGuard<'a> {
    inner: &'a Inner,
    id: WaiterId,
    armed: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let id = self.id;
            self.inner.with(|l| l.cancel(id, Instant::now()));
        }
    }
}

/// The pools Strata keeps on one PostgreSQL server, sharing one connection budget.
pub struct ServerPools {
    inner: Arc<Inner>,
}

impl fmt::Debug for ServerPools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerPools")
            .field("name", &self.inner.name)
            .field("is_primary", &self.inner.is_primary)
            .field("totals", &self.totals())
            .finish()
    }
}

impl ServerPools {
    /// The pools of server `name`, whose connections are opened with `pg` (the caller sets
    /// host, user, application_name, options, ...). Inside a Tokio runtime the `min`
    /// connections start opening in the background at once; `spawn_maintenance` keeps them.
    pub fn new(
        name: &str,
        pg: tokio_postgres::Config,
        is_primary: bool,
        settings: PoolSettings,
    ) -> Arc<ServerPools> {
        let settings = settings.normalized();
        let home = if is_primary { Role::Write } else { Role::Read };
        let inner = Arc::new(Inner {
            name: name.to_string(),
            pg,
            is_primary,
            ledger: Mutex::new(Ledger::new(&settings, home)),
            settings,
            retry: Mutex::new(Retry::default()),
            kick: Arc::new(Notify::new()),
        });
        inner.top_up();
        Arc::new(ServerPools { inner })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn is_primary(&self) -> bool {
        self.inner.is_primary
    }

    /// The settings in force (normalized).
    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    /// Whether this server has a pool of `role` (a replica has no write pool).
    pub fn has_pool(&self, role: Role) -> bool {
        role == Role::Read || self.inner.is_primary
    }

    /// A connection from the `role` pool, waiting at most `acquire_timeout` for one (a
    /// connection still has to be opened within `connect_timeout`). Cancel-safe: dropping the
    /// future leaves nothing behind.
    pub async fn get(&self, role: Role, priority: Priority) -> Result<Conn, PoolError> {
        let inner = &self.inner;
        if !self.has_pool(role) {
            return Err(PoolError::NoPool {
                server: inner.name.clone(),
                role,
            });
        }
        let start = Instant::now();
        // Made only when the caller has to wait (most acquires find a connection at once).
        let mut notify = None;
        let acquired = inner.with(|l| {
            l.acquire_with(role, priority, || {
                notify.insert(Arc::new(Notify::new())).clone()
            })
        });
        let grant = match (acquired, notify) {
            (Acquire::Ready(grant), _) => grant,
            (Acquire::Queued(id), Some(notify)) => self.wait(id, role, &notify, start).await?,
            (Acquire::Queued(_), None) => unreachable!("a queued caller has its wake-up token"),
            (Acquire::Full, _) => {
                let s = self.stats(role);
                return Err(PoolError::Exhausted {
                    server: inner.name.clone(),
                    role,
                    in_use: s.in_use,
                    waiting: s.waiting,
                    waited: start.elapsed(),
                });
            }
        };
        let client = match grant {
            Grant::Idle(client) if !client.is_closed() => client,
            Grant::Idle(dead) => {
                drop(dead);
                inner.with(|l| l.reopen(role, priority));
                self.open(role, priority).await?
            }
            Grant::Open => self.open(role, priority).await?,
        };
        inner.with(|l| l.record_acquired(role, start.elapsed()));
        Ok(Conn {
            client: Some(client),
            role,
            priority,
            broken: AtomicBool::new(false),
            inner: inner.clone(),
        })
    }

    async fn wait(
        &self,
        id: WaiterId,
        role: Role,
        notify: &Notify,
        start: Instant,
    ) -> Result<Grant<ClientWrapper>, PoolError> {
        let inner = &self.inner;
        let mut guard = WaitGuard {
            inner,
            id,
            armed: true,
        };
        let deadline = tokio::time::Instant::from_std(start + inner.settings.acquire_timeout);
        let timer = tokio::time::sleep_until(deadline);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                () = notify.notified() => {
                    if let Some(grant) = inner.with(|l| l.take(id)) {
                        guard.armed = false;
                        return Ok(grant);
                    }
                }
                () = &mut timer => {
                    guard.armed = false;
                    let (in_use, waiting) = match inner.with(|l| l.give_up(id)) {
                        GiveUp::Granted(grant) => return Ok(grant),
                        GiveUp::TimedOut { in_use, waiting } => (in_use, waiting),
                        GiveUp::Unknown => {
                            let s = self.stats(role);
                            (s.in_use, s.waiting)
                        }
                    };
                    return Err(PoolError::Exhausted {
                        server: inner.name.clone(),
                        role,
                        in_use,
                        waiting,
                        waited: start.elapsed(),
                    });
                }
            }
        }
    }

    /// Opens the connection a `Grant::Open` allows.
    async fn open(&self, role: Role, priority: Priority) -> Result<ClientWrapper, PoolError> {
        let inner = &self.inner;
        let mut guard = OpenGuard {
            inner,
            caller: Some((role, priority)),
            armed: true,
        };
        let client = inner.connect().await?;
        guard.armed = false;
        inner.with(|l| l.opened(role, priority));
        Ok(client)
    }

    /// The `role` pool's numbers (all zero but the bounds for a pool this server lacks).
    pub fn stats(&self, role: Role) -> PoolStats {
        self.inner.ledger.lock().stats(role)
    }

    /// The server's numbers: both pools, plus background openings.
    pub fn totals(&self) -> PoolStats {
        self.inner.ledger.lock().totals()
    }

    /// Closes idle connections the server has closed, and those idle for `idle_timeout` or
    /// longer as long as `min` stay open; returns how many were closed.
    pub fn prune_idle(&self) -> usize {
        self.inner.prune()
    }

    /// Starts opening, in the background, the connections missing to reach `min` (a no-op
    /// outside a Tokio runtime, or while waiting to retry after failures).
    pub fn top_up(&self) {
        self.inner.top_up();
    }

    /// Runs `prune_idle` and `top_up` every `MAINTENANCE_EVERY` (and at once after a broken
    /// connection was discarded) until `shutdown` turns true or the pools are dropped.
    /// Must be called inside a Tokio runtime.
    pub fn spawn_maintenance(
        self: &Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let kick = self.inner.kick.clone();
        tokio::spawn(async move {
            loop {
                if *shutdown.borrow() {
                    break;
                }
                match weak.upgrade() {
                    Some(inner) => {
                        inner.prune();
                        inner.top_up();
                    }
                    None => break,
                }
                tokio::select! {
                    () = tokio::time::sleep(MAINTENANCE_EVERY) => {}
                    () = kick.notified() => {}
                    changed = shutdown.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
            }
        })
    }
}

/// A pooled connection. Derefs to deadpool's `ClientWrapper` (and through it to
/// `tokio_postgres::Client`); goes back to its pool when dropped, or is closed and its place
/// freed when it is broken.
pub struct Conn {
    /// `Some` until dropped.
    client: Option<ClientWrapper>,
    role: Role,
    priority: Priority,
    /// Set when a statement failed in a way that leaves the connection unusable.
    broken: AtomicBool,
    inner: Arc<Inner>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("server", &self.inner.name)
            .field("role", &self.role)
            .field("priority", &self.priority)
            .finish()
    }
}

/// A cached statement whose result type changed under it (outside DDL): SQLSTATE 0A000
/// "cached plan must not change result type", raised before the statement runs.
fn is_stale_plan(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED)
}

/// An error after which the connection cannot be used again.
fn is_fatal(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.as_db_error()
            .and_then(|db| db.parsed_severity())
            .is_some_and(|s| matches!(s, Severity::Fatal | Severity::Panic))
}

impl Conn {
    pub fn role(&self) -> Role {
        self.role
    }

    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The name of the server this connection is to.
    pub fn server(&self) -> &str {
        &self.inner.name
    }

    fn wrapper(&self) -> &ClientWrapper {
        match &self.client {
            Some(client) => client,
            None => unreachable!("a Conn holds its client until it is dropped"),
        }
    }

    /// The plain client (for APIs taking a `tokio_postgres::GenericClient`).
    pub fn client(&self) -> &tokio_postgres::Client {
        self.wrapper()
    }

    async fn prepare(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let client = self.wrapper();
        if client.statement_cache.size() >= MAX_CACHED_STATEMENTS {
            client.statement_cache.clear();
        }
        client.prepare_cached(sql).await
    }

    fn note<T>(&self, r: Result<T, tokio_postgres::Error>) -> Result<T, tokio_postgres::Error> {
        if let Err(e) = &r {
            if is_fatal(e) {
                self.broken.store(true, Ordering::Relaxed);
            }
        }
        r
    }

    /// Runs `sql` through this connection's statement cache. When the server says the cached
    /// statement's result type changed (SQLSTATE 0A000 after outside DDL), the cache is
    /// cleared and the statement prepared and run once more.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let stmt = self.note(self.prepare(sql).await)?;
        let r = match self.wrapper().query(&stmt, params).await {
            Err(e) if is_stale_plan(&e) => {
                self.wrapper().statement_cache.clear();
                let stmt = self.note(self.prepare(sql).await)?;
                self.wrapper().query(&stmt, params).await
            }
            r => r,
        };
        self.note(r)
    }

    /// `query` for a caller that bounds the result itself: the prepared statement and its rows
    /// as they arrive (re-prepared once on SQLSTATE 0A000, as `query`).
    pub async fn query_stream(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(Statement, tokio_postgres::RowStream), tokio_postgres::Error> {
        let stmt = self.note(self.prepare(sql).await)?;
        let r = match self
            .wrapper()
            .query_raw(&stmt, params.iter().copied())
            .await
        {
            Err(e) if is_stale_plan(&e) => {
                self.wrapper().statement_cache.clear();
                let stmt = self.note(self.prepare(sql).await)?;
                let r = self
                    .wrapper()
                    .query_raw(&stmt, params.iter().copied())
                    .await;
                return self.note(r).map(|rows| (stmt, rows));
            }
            r => r,
        };
        self.note(r).map(|rows| (stmt, rows))
    }

    /// `query` for statements whose rows are not wanted: the number of rows affected.
    pub async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let stmt = self.note(self.prepare(sql).await)?;
        let r = match self.wrapper().execute(&stmt, params).await {
            Err(e) if is_stale_plan(&e) => {
                self.wrapper().statement_cache.clear();
                let stmt = self.note(self.prepare(sql).await)?;
                self.wrapper().execute(&stmt, params).await
            }
            r => r,
        };
        self.note(r)
    }

    /// Marks this connection to be closed when it is dropped instead of being returned (its
    /// session state is unknown, e.g. a transaction left open).
    pub fn poison(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    /// Closes this connection instead of returning it (the caller knows it is broken); its
    /// place in the budget is freed and the minimum restored in the background.
    pub fn discard(self) {
        self.broken.store(true, Ordering::Relaxed);
    }
}

impl Deref for Conn {
    type Target = ClientWrapper;

    fn deref(&self) -> &ClientWrapper {
        self.wrapper()
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut ClientWrapper {
        match &mut self.client {
            Some(client) => client,
            None => unreachable!("a Conn holds its client until it is dropped"),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let (role, priority) = (self.role, self.priority);
        if self.broken.load(Ordering::Relaxed) || client.is_closed() {
            // Closed before its place is given to someone else.
            drop(client);
            self.inner.with(|l| l.discard(role, priority));
            self.inner.kick.notify_one();
        } else {
            self.inner
                .with(|l| l.release(role, priority, client, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const ROLES: [Role; 2] = [Role::Write, Role::Read];

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(Role, Priority),
        /// The held connection at this index (modulo) goes back.
        Release(usize),
        /// ... is broken and closed.
        Discard(usize),
        /// ... was found closed at checkout: its caller opens a new one instead.
        Reopen(usize),
        /// A caller's opening completes, successfully or not.
        OpenDone(usize, bool),
        TopUp,
        /// A background opening completes.
        BackgroundDone(bool),
        AdvanceMs(u64),
        Prune,
        /// Idle connections whose id is a multiple of this were closed by the server.
        BreakIdle(u64),
        /// A woken waiter picks up its grant.
        Take(usize),
        /// A waiting (or woken) caller's acquire is dropped.
        Cancel(usize),
        /// A waiting (or woken) caller's deadline passes.
        Timeout(usize),
    }

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::Write), Just(Role::Read)]
    }

    fn priority() -> impl Strategy<Value = Priority> {
        prop_oneof![3 => Just(Priority::Normal), 1 => Just(Priority::Critical)]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            10 => (role(), priority()).prop_map(|(r, p)| Op::Acquire(r, p)),
            6 => any::<usize>().prop_map(Op::Release),
            1 => any::<usize>().prop_map(Op::Discard),
            1 => any::<usize>().prop_map(Op::Reopen),
            5 => (any::<usize>(), prop::bool::weighted(0.85)).prop_map(|(i, ok)| Op::OpenDone(i, ok)),
            2 => Just(Op::TopUp),
            3 => prop::bool::weighted(0.8).prop_map(Op::BackgroundDone),
            3 => (0u64..90_000).prop_map(Op::AdvanceMs),
            3 => Just(Op::Prune),
            1 => (2u64..6).prop_map(Op::BreakIdle),
            3 => any::<usize>().prop_map(Op::Take),
            1 => any::<usize>().prop_map(Op::Cancel),
            2 => any::<usize>().prop_map(Op::Timeout),
        ]
    }

    fn settings() -> impl Strategy<Value = PoolSettings> {
        (0usize..6, 1usize..12, 0usize..5, 1u64..60).prop_map(|(min, max, reserved, idle_s)| {
            PoolSettings {
                min,
                max,
                reserved,
                idle_timeout: Duration::from_secs(idle_s),
                ..PoolSettings::default()
            }
            .normalized()
        })
    }

    fn scenario() -> impl Strategy<Value = (PoolSettings, bool, Vec<Op>)> {
        (
            settings(),
            any::<bool>(),
            prop::collection::vec(op(), 1..160),
        )
    }

    /// What happened in one step, for the properties to look at.
    #[derive(Debug, Default)]
    struct Step {
        before: Option<PoolStats>,
        /// For an acquire: its priority, whether it was served at once, and the normal and
        /// critical usage (in use + opening + granted) before it.
        acquired: Option<(Priority, bool, usize, usize)>,
        pruned: Vec<(u64, Instant)>,
        /// Idle connections left after a prune, with their idle-since.
        idle_after_prune: Vec<Instant>,
        topped_up: bool,
        timed_out: Option<(Role, usize, usize)>,
        /// Waiters served in this step: (arrival token, priority).
        served: Vec<(u64, Priority)>,
    }

    /// The caller side of a ledger: what a correct ledger must be holding, by construction.
    struct Model {
        l: Ledger<u64, u64>,
        s: PoolSettings,
        now: Instant,
        next_conn: u64,
        next_token: u64,
        opened: u64,
        closed: u64,
        held: Vec<(Role, Priority, u64)>,
        opening: Vec<(Role, Priority)>,
        background: usize,
        /// (token, waiter id, role, priority), in arrival order.
        waiting: Vec<(u64, WaiterId, Role, Priority)>,
        /// (waiter id, role, priority, the idle connection granted if any).
        granted: Vec<(WaiterId, Role, Priority, Option<u64>)>,
        /// Idle connections: id -> (pool, idle since).
        idle: BTreeMap<u64, (Role, Instant)>,
        acquired: [u64; 2],
        timeouts: [u64; 2],
    }

    impl Model {
        fn new(s: &PoolSettings, primary: bool) -> Model {
            let home = if primary { Role::Write } else { Role::Read };
            Model {
                l: Ledger::new(s, home),
                s: s.normalized(),
                now: Instant::now(),
                next_conn: 1,
                next_token: 0,
                opened: 0,
                closed: 0,
                held: Vec::new(),
                opening: Vec::new(),
                background: 0,
                waiting: Vec::new(),
                granted: Vec::new(),
                idle: BTreeMap::new(),
                acquired: [0; 2],
                timeouts: [0; 2],
            }
        }

        fn home(&self) -> Role {
            self.l.home
        }

        /// Connections held, being opened or granted for `priority` (the spec's "used").
        fn used(&self, p: Priority) -> usize {
            self.held.iter().filter(|h| h.1 == p).count()
                + self.opening.iter().filter(|o| o.1 == p).count()
                + self.granted.iter().filter(|g| g.2 == p).count()
        }

        fn new_conn(&mut self) -> u64 {
            let c = self.next_conn;
            self.next_conn += 1;
            self.opened += 1;
            c
        }

        fn hold(&mut self, role: Role, p: Priority, grant: Grant<u64>) {
            match grant {
                Grant::Idle(c) => {
                    assert!(self.idle.remove(&c).is_some(), "{c} was not idle");
                    self.held.push((role, p, c));
                    self.acquired[role.index()] += 1;
                    self.l.record_acquired(role, Duration::ZERO);
                }
                Grant::Open => self.opening.push((role, p)),
            }
        }

        /// Moves the waiters the ledger woke to `granted`.
        fn collect_wakes(&mut self, step: &mut Step) {
            for token in self.l.take_wakes() {
                let pos = self
                    .waiting
                    .iter()
                    .position(|w| w.0 == token)
                    .unwrap_or_else(|| panic!("woke {token}, not waiting"));
                let (_, id, role, p) = self.waiting.remove(pos);
                step.served.push((token, p));
                let conn = match self.l.grant_of(id) {
                    Some(Grant::Idle(c)) => {
                        let c = *c;
                        assert!(self.idle.remove(&c).is_some(), "granted {c}, not idle");
                        Some(c)
                    }
                    Some(Grant::Open) => None,
                    None => panic!("woke {id} without a grant"),
                };
                self.granted.push((id, role, p, conn));
            }
        }

        fn apply(&mut self, op: &Op) -> Step {
            let mut step = Step {
                before: Some(self.l.totals()),
                ..Step::default()
            };
            match *op {
                Op::Acquire(role, p) => {
                    let normal = self.used(Priority::Normal);
                    let critical = self.used(Priority::Critical);
                    let token = self.next_token;
                    self.next_token += 1;
                    match self.l.acquire(role, p, token) {
                        Acquire::Ready(g) => {
                            step.acquired = Some((p, true, normal, critical));
                            self.hold(role, p, g);
                        }
                        Acquire::Queued(id) => {
                            step.acquired = Some((p, false, normal, critical));
                            self.waiting.push((token, id, role, p));
                        }
                        Acquire::Full => panic!("queue full"),
                    }
                }
                Op::Release(i) if !self.held.is_empty() => {
                    let (role, p, c) = self.held.remove(i % self.held.len());
                    self.idle.insert(c, (role, self.now));
                    self.l.release(role, p, c, self.now);
                }
                Op::Discard(i) if !self.held.is_empty() => {
                    let (role, p, _) = self.held.remove(i % self.held.len());
                    self.closed += 1;
                    self.l.discard(role, p);
                }
                Op::Reopen(i) if !self.held.is_empty() => {
                    let (role, p, _) = self.held.remove(i % self.held.len());
                    self.closed += 1;
                    self.l.reopen(role, p);
                    self.opening.push((role, p));
                }
                Op::OpenDone(i, ok) if !self.opening.is_empty() => {
                    let (role, p) = self.opening.remove(i % self.opening.len());
                    if ok {
                        let c = self.new_conn();
                        self.l.opened(role, p);
                        self.held.push((role, p, c));
                        self.acquired[role.index()] += 1;
                        self.l.record_acquired(role, Duration::from_millis(3));
                    } else {
                        self.l.open_failed(role, p);
                    }
                }
                Op::TopUp => {
                    self.background += self.l.plan_top_up(usize::MAX);
                    step.topped_up = true;
                }
                Op::BackgroundDone(ok) if self.background > 0 => {
                    self.background -= 1;
                    if ok {
                        let c = self.new_conn();
                        self.idle.insert(c, (self.home(), self.now));
                        self.l.top_up_opened(c, self.now);
                    } else {
                        self.l.top_up_failed();
                    }
                }
                Op::AdvanceMs(ms) => self.now += Duration::from_millis(ms),
                Op::Prune => {
                    for c in self.l.prune(self.now) {
                        let (_, since) = self
                            .idle
                            .remove(&c)
                            .unwrap_or_else(|| panic!("pruned {c}, not idle"));
                        self.closed += 1;
                        step.pruned.push((c, since));
                    }
                    step.idle_after_prune = self.idle.values().map(|v| v.1).collect();
                }
                Op::BreakIdle(m) => {
                    for c in self.l.remove_idle_if(|c| c % m == 0) {
                        assert!(c % m == 0 && self.idle.remove(&c).is_some());
                        self.closed += 1;
                    }
                    assert!(self.idle.keys().all(|c| c % m != 0), "a dead one stayed");
                }
                Op::Take(i) if !self.granted.is_empty() => {
                    let (id, role, p, _) = self.granted.remove(i % self.granted.len());
                    let g = self.l.take(id).expect("granted");
                    self.grant_to_held(role, p, g);
                }
                Op::Cancel(i) | Op::Timeout(i)
                    if !self.waiting.is_empty() || !self.granted.is_empty() =>
                {
                    let timeout = matches!(op, Op::Timeout(_));
                    let i = i % (self.waiting.len() + self.granted.len());
                    if i < self.waiting.len() {
                        let (_, id, role, _) = self.waiting.remove(i);
                        if timeout {
                            match self.l.give_up(id) {
                                GiveUp::TimedOut { in_use, waiting } => {
                                    self.timeouts[role.index()] += 1;
                                    step.timed_out = Some((role, in_use, waiting));
                                }
                                other => panic!("{other:?} for a waiter"),
                            }
                        } else {
                            self.l.cancel(id, self.now);
                        }
                    } else {
                        let (id, role, p, conn) = self.granted.remove(i - self.waiting.len());
                        if timeout {
                            match self.l.give_up(id) {
                                GiveUp::Granted(g) => self.grant_to_held(role, p, g),
                                other => panic!("{other:?} for a granted waiter"),
                            }
                        } else {
                            if let Some(c) = conn {
                                self.idle.insert(c, (role, self.now));
                            }
                            self.l.cancel(id, self.now);
                        }
                    }
                }
                _ => {}
            }
            self.collect_wakes(&mut step);
            step
        }

        fn grant_to_held(&mut self, role: Role, p: Priority, g: Grant<u64>) {
            match g {
                Grant::Idle(c) => {
                    self.held.push((role, p, c));
                    self.acquired[role.index()] += 1;
                    self.l.record_acquired(role, Duration::from_millis(40));
                }
                Grant::Open => self.opening.push((role, p)),
            }
        }

        /// Whether a waiter of this priority could be served, by the spec.
        fn servable(&self, p: Priority) -> bool {
            let t = self.l.totals();
            // Background openings count against normal work's share.
            let share = p == Priority::Critical
                || self.used(Priority::Normal) + self.background < self.s.max - self.s.reserved;
            share && (t.idle > 0 || t.size + t.opening < self.s.max)
        }

        /// Gives everything back: every holder releases, every opening succeeds, every waiter
        /// goes away.
        fn drain(&mut self) {
            for _ in 0..10_000 {
                let op = if !self.granted.is_empty() {
                    Op::Take(0)
                } else if !self.opening.is_empty() {
                    Op::OpenDone(0, true)
                } else if self.background > 0 {
                    Op::BackgroundDone(true)
                } else if !self.held.is_empty() {
                    Op::Release(0)
                } else if !self.waiting.is_empty() {
                    Op::Cancel(0)
                } else {
                    return;
                };
                self.apply(&op);
            }
            panic!("drain did not finish");
        }
    }

    fn run(s: &PoolSettings, primary: bool, ops: &[Op], mut check: impl FnMut(&Model, &Op, &Step)) {
        let mut m = Model::new(s, primary);
        for op in ops {
            let step = m.apply(op);
            check(&m, op, &step);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The budget holds under any sequence: never more than `max` connections open or
        /// opening; normal work never beyond `max - reserved`; a prune never takes the pool
        /// below `min`; a top-up brings open + opening to at least `min`.
        // Feature: db-cache-optimization, Property 13: Connection Pool Bounds
        #[test]
        fn pool_bounds((s, primary, ops) in scenario()) {
            run(&s, primary, &ops, |m, op, step| {
                let t = m.l.totals();
                assert!(t.size + t.opening <= s.max, "{t:?} over max after {op:?}");
                assert!(
                    m.used(Priority::Normal) + m.background <= s.max - s.reserved,
                    "normal share after {op:?}"
                );
                if let (Op::Prune, Some(before)) = (op, &step.before) {
                    assert!(t.size >= before.size.min(s.min), "pruned below min: {before:?} -> {t:?}");
                }
                if step.topped_up {
                    assert!(t.size + t.opening >= s.min, "top-up short of min: {t:?}");
                }
            });
        }

        /// A prune closes only connections idle for at least `idle_timeout`, the oldest first,
        /// and leaves none of them behind unless the pool is down to `min`; nothing else ever
        /// closes an idle connection that works.
        // Feature: db-cache-optimization, Property 14: Idle Connection Cleanup
        #[test]
        fn idle_cleanup((s, primary, ops) in scenario()) {
            run(&s, primary, &ops, |m, op, step| {
                let t = m.l.totals();
                if !matches!(op, Op::Prune) {
                    assert!(step.pruned.is_empty());
                    return;
                }
                let expired = |since: &Instant| m.now.saturating_duration_since(*since) >= s.idle_timeout;
                for (c, since) in &step.pruned {
                    assert!(expired(since), "{c} pruned after {:?}", m.now - *since);
                }
                let left: Vec<&Instant> = step.idle_after_prune.iter().filter(|x| expired(x)).collect();
                if !left.is_empty() {
                    assert!(t.size <= s.min, "expired idle connections left with {t:?}");
                }
                if !step.pruned.is_empty() {
                    assert!(t.size >= s.min);
                    let newest_pruned = step.pruned.iter().map(|p| p.1).max();
                    let oldest_left = left.iter().map(|x| **x).min();
                    if let (Some(a), Some(b)) = (newest_pruned, oldest_left) {
                        assert!(a <= b, "a newer connection was pruned before an older one");
                    }
                }
            });
        }

        /// The statistics add up and match what the callers hold: size = idle + in use per
        /// pool, totals = the sum of the pools, and every count equal to the model's.
        // Feature: db-cache-optimization, Property 15: Pool Statistics
        #[test]
        fn statistics_add_up((s, primary, ops) in scenario()) {
            run(&s, primary, &ops, |m, op, _| {
                let mut sum = PoolStats::default();
                for role in ROLES {
                    let st = m.l.stats(role);
                    assert_eq!(st.size, st.idle + st.in_use, "{role} after {op:?}");
                    let held = m.held.iter().filter(|h| h.0 == role).count();
                    let granted_idle = m.granted.iter().filter(|g| g.1 == role && g.3.is_some()).count();
                    let granted_open = m.granted.iter().filter(|g| g.1 == role && g.3.is_none()).count();
                    assert_eq!(st.in_use, held + granted_idle, "{role} in use after {op:?}");
                    assert_eq!(st.opening, m.opening.iter().filter(|o| o.0 == role).count() + granted_open);
                    assert_eq!(st.idle, m.idle.values().filter(|v| v.0 == role).count());
                    assert_eq!(st.waiting, m.waiting.iter().filter(|w| w.2 == role).count());
                    let critical = m.held.iter().filter(|h| h.0 == role && h.1 == Priority::Critical).count()
                        + m.granted.iter().filter(|g| g.1 == role && g.2 == Priority::Critical && g.3.is_some()).count();
                    assert_eq!(st.critical_in_use, critical);
                    assert_eq!(st.acquired_total, m.acquired[role.index()]);
                    assert_eq!(st.wait.count, st.acquired_total);
                    assert_eq!(st.wait.buckets.iter().sum::<u64>(), st.wait.count);
                    assert_eq!(st.timeouts_total, m.timeouts[role.index()]);
                    sum.size += st.size;
                    sum.idle += st.idle;
                    sum.in_use += st.in_use;
                    sum.opening += st.opening;
                    sum.waiting += st.waiting;
                }
                let t = m.l.totals();
                assert_eq!((t.size, t.idle, t.in_use, t.waiting), (sum.size, sum.idle, sum.in_use, sum.waiting));
                assert_eq!(t.opening, sum.opening + m.background);
                assert_eq!(t.size as u64, m.opened - m.closed, "connections lost or invented");
                let mut ledger_idle: Vec<(Role, u64, Instant)> =
                    m.l.idle_view().into_iter().map(|(r, c, t)| (r, *c, t)).collect();
                ledger_idle.sort_by_key(|x| x.1);
                let model_idle: Vec<(Role, u64, Instant)> =
                    m.idle.iter().map(|(c, (r, t))| (*r, *c, *t)).collect();
                assert_eq!(ledger_idle, model_idle);
            });
        }

        /// Nobody waits while the pool could serve them (so a timeout means the pool really
        /// was exhausted), waiters of one priority are served in arrival order, a timeout
        /// reports the pool's state in a clear error and leaves the queue, and once everyone
        /// has given back or gone away nothing is left in use, opening or waiting.
        // Feature: db-cache-optimization, Property 16: Pool Exhaustion
        #[test]
        fn exhaustion_times_out_without_leaks((s, primary, ops) in scenario()) {
            let mut m = Model::new(&s, primary);
            for op in &ops {
                let step = m.apply(op);
                for p in [Priority::Normal, Priority::Critical] {
                    if m.waiting.iter().any(|w| w.3 == p) {
                        assert!(!m.servable(p), "{p:?} waiter left waiting after {op:?}");
                    }
                }
                // Served in arrival order: no earlier waiter of the same priority passed over.
                for (token, p) in &step.served {
                    assert!(
                        !m.waiting.iter().any(|w| w.3 == *p && w.0 < *token),
                        "waiter {token} served before an earlier one after {op:?}"
                    );
                }
                if let Some((role, in_use, waiting)) = step.timed_out {
                    let e = PoolError::Exhausted {
                        server: "p0".into(), role, in_use, waiting, waited: Duration::from_millis(5000),
                    };
                    assert!(e.to_string().starts_with("database pool exhausted (server p0, "));
                    assert_eq!(in_use, m.l.stats(role).in_use);
                    assert_eq!(waiting, m.l.stats(role).waiting + 1);
                }
            }
            m.drain();
            let t = m.l.totals();
            assert_eq!((t.in_use, t.opening, t.waiting), (0, 0, 0), "{t:?}");
            assert_eq!(t.size, t.idle);
            assert_eq!(t.size as u64, m.opened - m.closed);
            assert!(m.l.granted.is_empty() && m.l.waiters.is_empty());
        }

        /// A critical acquire is served at once while critical work holds fewer than
        /// `reserved` connections, however much normal work holds; normal work is never served
        /// beyond its share; critical waiters are served before normal ones.
        // Feature: db-cache-optimization, Property 11: Critical Operation Priority
        #[test]
        fn critical_operations_get_reserved_connections((s, primary, ops) in scenario()) {
            run(&s, primary, &ops, |m, op, step| {
                if let Some((p, ready, normal, critical)) = step.acquired {
                    match p {
                        Priority::Critical if critical < s.reserved => {
                            assert!(ready, "critical queued with {critical} critical, {normal} normal in use ({s:?})");
                        }
                        Priority::Normal if normal >= s.max - s.reserved => {
                            assert!(!ready, "normal served beyond its share");
                        }
                        _ => {}
                    }
                }
                if step.served.iter().any(|x| x.1 == Priority::Normal) {
                    assert!(!m.waiting.iter().any(|w| w.3 == Priority::Critical), "normal served before a critical waiter after {op:?}");
                }
            });
        }
    }

    /// The generated scenarios reach the states the properties are about (so none of them
    /// holds vacuously): timeouts, waiters served, critical work served while normal work is
    /// at its share, prunes that close connections and prunes stopped by `min`.
    #[test]
    fn scenarios_reach_the_interesting_states() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let (mut timeouts, mut served, mut critical_over_normal, mut pruned, mut pruned_to_min) =
            (0, 0, 0, 0, 0);
        for _ in 0..200 {
            let (s, primary, ops) = scenario().new_tree(&mut runner).unwrap().current();
            run(&s, primary, &ops, |m, _, step| {
                timeouts += usize::from(step.timed_out.is_some());
                served += step.served.len();
                if let Some((Priority::Critical, true, normal, _)) = step.acquired {
                    critical_over_normal +=
                        usize::from(normal >= s.max - s.reserved && s.reserved > 0);
                }
                if !step.pruned.is_empty() {
                    pruned += 1;
                    pruned_to_min += usize::from(m.l.totals().size == s.min && s.min > 0);
                }
            });
        }
        eprintln!(
            "timeouts {timeouts}, served waiters {served}, critical past exhausted normal \
             {critical_over_normal}, prunes {pruned} (down to min {pruned_to_min})"
        );
        for (what, n) in [
            ("timeouts", timeouts),
            ("served waiters", served),
            (
                "critical acquires past exhausted normal work",
                critical_over_normal,
            ),
            ("prunes", pruned),
            ("prunes stopped by min", pruned_to_min),
        ] {
            assert!(n >= 10, "only {n} {what}");
        }
    }

    #[test]
    fn background_retries_back_off_1_2_4_then_every_4_seconds() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut r = Retry::default();
        assert_eq!(
            r.launch(t),
            usize::MAX,
            "the first round opens all that is missing"
        );
        // The whole round fails: that is one failure.
        for _ in 0..10 {
            r.failed(t);
        }
        assert_eq!(r.launch(t + Duration::from_millis(999)), 0);
        let mut at = t + s(1);
        for delay in [2, 4, 4, 4] {
            assert_eq!(r.launch(at), 1, "one probe");
            assert_eq!(r.launch(at), 0, "no second probe while one is in flight");
            r.failed(at);
            assert_eq!(r.launch(at + s(delay) - Duration::from_millis(1)), 0);
            at += s(delay);
        }
        assert_eq!(r.launch(at), 1);
        r.succeeded();
        assert_eq!(r.launch(at), usize::MAX);
    }

    /// Found by `critical_operations_get_reserved_connections`: connections being opened in
    /// the background must not take the reserve, or a critical acquire right after start-up
    /// would wait for them.
    #[test]
    fn background_openings_leave_the_reserve_alone() {
        let s = PoolSettings {
            min: 3,
            max: 5,
            reserved: 2,
            ..PoolSettings::default()
        };
        let mut l: Ledger<u32, u32> = Ledger::new(&s, Role::Write);
        assert_eq!(l.plan_top_up(usize::MAX), 3);
        assert!(matches!(
            l.acquire(Role::Write, Priority::Normal, 0),
            Acquire::Queued(_)
        ));
        for token in 1..3 {
            let got = l.acquire(Role::Read, Priority::Critical, token);
            assert!(matches!(got, Acquire::Ready(Grant::Open)), "{got:?}");
        }
        // A background connection opens: the normal waiter gets it.
        l.top_up_opened(9, Instant::now());
        assert_eq!(l.take_wakes(), vec![0]);
        let t = l.totals();
        assert_eq!((t.in_use, t.opening, t.waiting), (1, 4, 0));
        // Never more than `max - reserved` for the minimum, whatever `min` says.
        let s = PoolSettings {
            min: 4,
            max: 4,
            reserved: 3,
            ..PoolSettings::default()
        };
        assert_eq!(s.normalized().min, 1);
    }

    #[test]
    fn settings_are_normalized() {
        let s = PoolSettings {
            min: 80,
            max: 0,
            reserved: 9,
            acquire_timeout: Duration::MAX,
            statement_timeout_ms: u64::MAX,
            ..PoolSettings::default()
        }
        .normalized();
        assert_eq!((s.min, s.max, s.reserved), (1, 1, 0));
        assert_eq!(s.acquire_timeout, MAX_TIMEOUT);
        assert_eq!(s.statement_timeout_ms, i32::MAX as u64);
        let d = PoolSettings::default();
        assert_eq!((d.min, d.max, d.reserved), (10, 50, 5));
        assert_eq!(d.idle_timeout, Duration::from_secs(300));
        assert_eq!(d.acquire_timeout, Duration::from_millis(5000));
        assert_eq!(d.normalized(), d);
    }

    #[test]
    fn wait_histogram_buckets_and_quantiles() {
        let mut h = WaitHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in [0, 1, 3, 3, 7, 80, 6000] {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count, 7);
        assert_eq!(h.sum, Duration::from_millis(6094));
        assert_eq!(h.buckets[0], 2, "0 and 1 ms are <= 1 ms");
        assert_eq!(h.buckets[2], 2, "3 ms is in (2, 5]");
        assert_eq!(h.buckets[WAIT_BUCKETS.len()], 1);
        assert_eq!(h.quantile(0.5), Some(Duration::from_millis(5)));
        assert_eq!(h.quantile(0.99), Some(Duration::from_millis(6000)));
        assert_eq!(h.quantile(0.0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn exhausted_error_text() {
        let e = PoolError::Exhausted {
            server: "r1".into(),
            role: Role::Read,
            in_use: 45,
            waiting: 3,
            waited: Duration::from_millis(5001),
        };
        assert_eq!(
            e.to_string(),
            "database pool exhausted (server r1, read pool: 45 in use, 3 waiting; waited 5001 ms)"
        );
    }

    #[test]
    fn a_sibling_idle_connection_is_used_before_opening_and_before_waiting() {
        let s = PoolSettings {
            min: 0,
            max: 2,
            reserved: 0,
            ..PoolSettings::default()
        };
        let now = Instant::now();
        let mut l: Ledger<u32, u32> = Ledger::new(&s, Role::Write);
        assert!(matches!(
            l.acquire(Role::Write, Priority::Normal, 0),
            Acquire::Ready(Grant::Open)
        ));
        l.opened(Role::Write, Priority::Normal);
        l.release(Role::Write, Priority::Normal, 7, now);
        assert!(matches!(
            l.acquire(Role::Read, Priority::Normal, 1),
            Acquire::Ready(Grant::Idle(7))
        ));
        assert_eq!(
            (l.stats(Role::Read).in_use, l.stats(Role::Write).size),
            (1, 0)
        );
    }
}
