//! Health of the PostgreSQL instances, and what Strata does about it (DESIGN.md "Health,
//! replication, failover"). Every instance has its own check loop (`check_loop`), so a slow
//! instance never delays the checks of the others: every `health.interval_s` it asks, on an
//! administrative connection, whether the server is in recovery, its WAL positions, its replay
//! delay and its WAL receiver's state. A failed check takes the instance out of rotation at once;
//! the next passing one brings it back. When the breaker of an instance is HALF_OPEN, its check
//! is the one trial that decides (client traffic never is).
//!
//! One supervisor (`supervise`) turns what the checks and the fast lag probes saw into actions:
//! it follows role changes made outside Strata, fails over when the primary has been unreachable
//! for `failover_after_s` and no replica still streams from it (builtin mode; the decision is
//! the pure `decide`), repoints a replica that stopped streaming and runs `resync_command` when
//! that does not help, and raises and resolves the alerts (instance down, breaker open,
//! replication lag). The actions themselves are in `failover`.

use super::database::{Database, Every, ProbeConn};
use super::router::parse_lsn;
use crate::config::HealthMode;
use crate::guard::breaker::State;
use crate::observe::alerts::{Alert, Severity};
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Takes (or renews) the failover lease for `ttl`; true when this instance holds it. Set by
/// the command layer when L2 is configured (several Strata instances); without it the only
/// instance acts.
pub type Lease = Arc<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// A replica's WAL receiver, as `pg_stat_wal_receiver` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub status: String,
    pub sender_host: String,
    pub sender_port: u16,
    pub timeline: u32,
}

/// What one health check saw.
#[derive(Debug, Clone)]
pub struct Report {
    pub at: SystemTime,
    pub took: Duration,
    /// Why the check failed (`None`: it passed).
    pub error: Option<String>,
    pub in_recovery: bool,
    /// The primary's insert position, or a replica's receive position.
    pub lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    /// Seconds since the last replayed transaction while there is WAL left to replay (0 when
    /// caught up with what it received).
    pub replay_delay_s: Option<f64>,
    pub receiver: Option<Receiver>,
    pub timeline: Option<u32>,
}

impl Report {
    fn failed(at: SystemTime, took: Duration, error: String) -> Report {
        Report {
            at,
            took,
            error: Some(error),
            in_recovery: false,
            lsn: None,
            replay_lsn: None,
            replay_delay_s: None,
            receiver: None,
            timeline: None,
        }
    }

    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Whether the instance streams WAL from an upstream now.
    pub fn streaming(&self) -> bool {
        self.receiver
            .as_ref()
            .is_some_and(|r| r.status == "streaming")
    }
}

/// What is being done about a replica that stopped replicating.
#[derive(Debug, Default, Clone)]
pub struct Repair {
    /// Consecutive checks that found it in recovery but not streaming.
    pub not_streaming: u32,
    /// Checks since it was last repointed (None: not repointed in this episode).
    pub since_repoint: Option<u32>,
    /// When the resync command last ran for it, and its outcome.
    pub resync_at: Option<Instant>,
    pub last_resync: Option<String>,
    pub repoints: u64,
    pub resyncs: u64,
}

/// An instance's health as the checks and probes see it.
pub struct HealthState {
    last: Mutex<Option<Report>>,
    /// The last check passed (true until a check fails).
    healthy: AtomicBool,
    /// When the current outage began (a failed probe or check); `None` while reachable.
    unreachable_since: Mutex<Option<Instant>>,
    pub checks: AtomicU64,
    pub failed_checks: AtomicU64,
    pub repair: Mutex<Repair>,
    /// Memory and disk use fractions from the node_exporter metrics, when scraped.
    pub node: Mutex<(Option<f64>, Option<f64>)>,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            last: Mutex::new(None),
            healthy: AtomicBool::new(true),
            unreachable_since: Mutex::new(None),
            checks: AtomicU64::new(0),
            failed_checks: AtomicU64::new(0),
            repair: Mutex::new(Repair::default()),
            node: Mutex::new((None, None)),
        }
    }
}

impl HealthState {
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether the last check found it in recovery (true before the first check).
    pub fn is_replica(&self) -> bool {
        self.last
            .lock()
            .as_ref()
            .is_none_or(|r| !r.ok() || r.in_recovery)
    }

    pub fn last(&self) -> Option<Report> {
        self.last.lock().clone()
    }

    pub fn unreachable_since(&self) -> Option<Instant> {
        *self.unreachable_since.lock()
    }

    /// Whether the instance answered (a fast lag probe, or a check): starts or ends an outage.
    pub fn reachable(&self, ok: bool) {
        let mut since = self.unreachable_since.lock();
        if ok {
            *since = None;
        } else if since.is_none() {
            *since = Some(Instant::now());
        }
    }

    /// Records a check (Property 7: a failed check takes the instance out of rotation at
    /// once, a passing one brings it back).
    pub fn record(&self, report: Report) {
        let ok = report.ok();
        self.checks.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed_checks.fetch_add(1, Ordering::Relaxed);
        }
        self.healthy.store(ok, Ordering::Relaxed);
        self.reachable(ok);
        *self.last.lock() = Some(report);
    }
}

/// The check's one query: role, positions, replay delay, WAL receiver, timeline.
const CHECK_SQL: &str = "SELECT pg_catalog.pg_is_in_recovery()::text, \
     (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn() \
      ELSE pg_catalog.pg_current_wal_lsn() END)::text, \
     pg_catalog.pg_last_wal_replay_lsn()::text, \
     (CASE WHEN pg_catalog.pg_is_in_recovery() \
      AND pg_catalog.pg_last_wal_receive_lsn() > pg_catalog.pg_last_wal_replay_lsn() \
      THEN extract(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp()) ELSE 0 END)::text, \
     (SELECT status FROM pg_catalog.pg_stat_wal_receiver), \
     (SELECT sender_host FROM pg_catalog.pg_stat_wal_receiver), \
     (SELECT sender_port FROM pg_catalog.pg_stat_wal_receiver)::text, \
     (SELECT received_tli FROM pg_catalog.pg_stat_wal_receiver)::text, \
     (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint())::text";

/// Runs one check on `conn`.
pub(super) async fn check(conn: &mut ProbeConn, timeout: Duration) -> Report {
    let at = SystemTime::now();
    let started = Instant::now();
    let Some(row) = conn.query_text(CHECK_SQL, timeout).await else {
        return Report::failed(
            at,
            started.elapsed(),
            conn.last_error().unwrap_or_else(|| "unreachable".into()),
        );
    };
    let col = |i: usize| row.get(i).cloned().flatten();
    let receiver = col(4).map(|status| Receiver {
        status,
        sender_host: col(5).unwrap_or_default(),
        sender_port: col(6).and_then(|p| p.parse().ok()).unwrap_or(0),
        timeline: col(7).and_then(|t| t.parse().ok()).unwrap_or(0),
    });
    Report {
        at,
        took: started.elapsed(),
        error: None,
        in_recovery: col(0).as_deref() == Some("true"),
        lsn: col(1).as_deref().and_then(parse_lsn),
        replay_lsn: col(2).as_deref().and_then(parse_lsn),
        replay_delay_s: col(3).and_then(|d| d.parse().ok()),
        receiver,
        timeline: col(8).and_then(|t| t.parse().ok()),
    }
}

/// Checks one instance every `health.interval_s` (Property 8), on its own connection and
/// task. While its breaker is HALF_OPEN the check is the trial that closes or reopens it.
pub async fn check_loop(db: Arc<Database>, index: usize, shutdown: watch::Receiver<bool>) {
    let inst = &db.instances[index];
    let mut conn = ProbeConn::new(&inst.admin);
    let timeout = Duration::from_millis(db.health.check_timeout_ms);
    let mut every = Every::new(Duration::from_secs(db.health.interval_s), shutdown);
    while every.next().await {
        let now = crate::command::unix_ms();
        let trial = {
            let mut b = inst.breaker.lock();
            b.state(now) == State::HalfOpen && b.allow(now)
        };
        let report = check(&mut conn, timeout).await;
        if trial {
            inst.breaker
                .lock()
                .record(crate::command::unix_ms(), report.ok());
        }
        if let Some(e) = &report.error {
            tracing::warn!(instance = %inst.name, error = %e, "health check failed");
        }
        inst.health.record(report);
    }
}

/// What one replica looks like to the failover decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    pub reachable: bool,
    pub in_recovery: bool,
    /// It still streams WAL from the old primary (then the primary is alive and Strata is the
    /// one cut off from it).
    pub streaming_from_primary: bool,
    /// `pg_last_wal_receive_lsn()`: what promotion will replay.
    pub received: u64,
}

/// The failover decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The primary is reachable.
    Healthy,
    /// Unreachable, but not for long enough yet.
    Wait,
    /// A replica still streams from the primary: do not promote.
    StillStreaming(usize),
    /// No replica can be promoted.
    NoCandidate,
    /// Promote this replica.
    Promote(usize),
}

/// Property 5: with the primary unreachable for `failover_after` (and no replica still
/// streaming from it), the reachable replica that has received the most WAL is promoted (the
/// lowest index among equals).
pub fn decide(
    down_for: Option<Duration>,
    failover_after: Duration,
    replicas: &[Candidate],
) -> Decision {
    let Some(down_for) = down_for else {
        return Decision::Healthy;
    };
    if down_for < failover_after {
        return Decision::Wait;
    }
    if let Some(c) = replicas
        .iter()
        .find(|c| c.reachable && c.streaming_from_primary)
    {
        return Decision::StillStreaming(c.index);
    }
    replicas
        .iter()
        .filter(|c| c.reachable && c.in_recovery)
        .fold(None::<&Candidate>, |best, c| match best {
            Some(b)
                if b.received > c.received || (b.received == c.received && b.index < c.index) =>
            {
                Some(b)
            }
            _ => Some(c),
        })
        .map_or(Decision::NoCandidate, |c| Decision::Promote(c.index))
}

/// Asks a replica, now, what the failover decision needs.
async fn observe(db: &Database, index: usize, timeout: Duration) -> Candidate {
    let inst = &db.instances[index];
    let mut conn = ProbeConn::new(&inst.admin);
    let report = check(&mut conn, timeout).await;
    let known_replica = |host: &str, port: u16| {
        db.instances.iter().any(|i| {
            i.index != index && !db.is_primary(i.index) && i.port == port && i.host == host
        })
    };
    Candidate {
        index,
        reachable: report.ok(),
        in_recovery: report.in_recovery,
        // Streaming from anything but another replica (a cascade) means from the primary,
        // whatever address it is known by there.
        streaming_from_primary: report.streaming()
            && report
                .receiver
                .as_ref()
                .is_some_and(|r| !known_replica(&r.sender_host, r.sender_port)),
        received: report.lsn.unwrap_or(0),
    }
}

impl Database {
    /// Sends an alert (fire) if alerts are configured.
    pub fn alert_fire(
        &self,
        key: String,
        event: &'static str,
        severity: Severity,
        summary: String,
    ) {
        match self.alerts.get() {
            Some(a) => {
                a.fire(Alert {
                    key,
                    event,
                    severity,
                    summary,
                    details: Vec::new(),
                });
            }
            None => tracing::warn!(%key, event, %summary, "alert"),
        }
    }

    pub fn alert_resolve(&self, key: &str, summary: &str) {
        if let Some(a) = self.alerts.get() {
            a.resolve(key, summary);
        }
    }

    /// A one-off notification (failover started/finished, resync run, role change).
    pub fn notify(&self, event: &'static str, severity: Severity, summary: String) {
        tracing::warn!(event, %summary, "notification");
        if let Some(a) = self.alerts.get() {
            a.notify(Alert {
                key: format!("{event}:{}", crate::command::unix_ms()),
                event,
                severity,
                summary,
                details: Vec::new(),
            });
        }
    }
}

/// The supervisor: every half second, alerts, role following, failover and replica repair.
pub async fn supervise(db: Arc<Database>, shutdown: watch::Receiver<bool>) {
    let mut every = Every::new(Duration::from_millis(500), shutdown);
    let mut seen_checks = vec![0u64; db.instances.len()];
    while every.next().await {
        alerts(&db);
        follow_roles(&db).await;
        if db.health.mode == HealthMode::Builtin {
            maybe_fail_over(&db).await;
        }
        for (i, seen) in seen_checks.iter_mut().enumerate() {
            let checks = db.instances[i].health.checks.load(Ordering::Relaxed);
            if checks != *seen {
                *seen = checks;
                if db.health.mode == HealthMode::Builtin {
                    repair(&db, i).await;
                }
            }
        }
    }
}

/// Raises and resolves the condition alerts: instance down, breaker open, replication lag.
fn alerts(db: &Database) {
    let lag_limit = Duration::from_secs(db.health.lag_alert_s);
    for inst in db.instances() {
        let name = &inst.name;
        let down_key = format!("instance_down:{name}");
        if inst.health.healthy() {
            db.alert_resolve(
                &down_key,
                &format!("PostgreSQL instance {name} is up again"),
            );
        } else if inst.health.checks.load(Ordering::Relaxed) > 0 {
            let why = inst.health.last().and_then(|r| r.error).unwrap_or_default();
            db.alert_fire(
                down_key,
                "instance_down",
                Severity::Critical,
                format!("PostgreSQL instance {name} failed its health check: {why}"),
            );
        }
        let breaker_key = format!("breaker_open:{name}");
        match inst.breaker.lock().state(crate::command::unix_ms()) {
            State::Closed => {
                db.alert_resolve(&breaker_key, &format!("circuit breaker of {name} closed"))
            }
            _ => db.alert_fire(
                breaker_key,
                "breaker_open",
                Severity::Critical,
                format!("circuit breaker of PostgreSQL instance {name} is open"),
            ),
        };
        if db.is_primary(inst.index) {
            if inst.health.unreachable_since().is_none() {
                db.alert_resolve(
                    &format!("primary_cut_off:{name}"),
                    &format!("primary {name} is reachable again"),
                );
                db.alert_resolve(
                    "failover_impossible",
                    &format!("primary {name} is reachable again"),
                );
            }
            continue;
        }
        let lag_key = format!("replication_lag:{name}");
        let lag = replica_lag(db, inst);
        match lag {
            Some(lag) if lag > lag_limit => db.alert_fire(
                lag_key,
                "lag_over_threshold",
                Severity::Warning,
                format!(
                    "replica {name} lags {:.1} s behind the primary (threshold {} s)",
                    lag.as_secs_f64(),
                    lag_limit.as_secs()
                ),
            ),
            Some(_) => db.alert_resolve(
                &lag_key,
                &format!("replica {name} is back under the lag threshold"),
            ),
            None => {}
        }
    }
}

/// A replica's lag: the fast probe's (against the primary's WAL history), or the health
/// check's replay delay, whichever is larger.
pub fn replica_lag(db: &Database, inst: &super::database::Instance) -> Option<Duration> {
    let probe = inst.lag.sample().map(|s| {
        // A sample that stopped coming (paused or stuck replica) ages.
        s.lag + s.at.elapsed().saturating_sub(db.lag_probe_period() * 4)
    });
    let check = inst
        .health
        .last()
        .and_then(|r| r.replay_delay_s)
        .map(|s| Duration::from_secs_f64(s.max(0.0)));
    match (probe, check) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Follows a role change made outside Strata (Patroni, an operator): the instance Strata has
/// as primary is in recovery now, or unreachable while another instance is a primary.
async fn follow_roles(db: &Database) {
    if db.switching.try_lock().is_err() {
        return;
    }
    let current = db.primary_index();
    let current_ok = current.is_some_and(|p| {
        let h = &db.instances[p].health;
        h.unreachable_since().is_none() && !h.last().is_some_and(|r| r.ok() && r.in_recovery)
    });
    if current_ok {
        return;
    }
    // The instances whose last check says "primary", newest timeline first.
    let mut primaries: Vec<(u32, usize)> = db
        .instances()
        .filter(|i| Some(i.index) != current && i.health.healthy())
        .filter_map(|i| {
            let r = i.health.last()?;
            (r.ok() && !r.in_recovery).then_some((r.timeline.unwrap_or(0), i.index))
        })
        .collect();
    primaries.sort_by(|a, b| b.cmp(a));
    if let Some(&(_, new)) = primaries.first() {
        let _guard = db.switching.lock().await;
        db.set_primary(Some(new), "followed a role change made outside Strata");
        db.roles_changed().await;
        db.notify(
            "role_change",
            Severity::Warning,
            format!(
                "{} is the primary now (changed outside Strata)",
                db.instances[new].name
            ),
        );
    }
}

/// Builtin failover: the primary unreachable for `failover_after_s`, nobody streaming from it.
async fn maybe_fail_over(db: &Database) {
    let Some(p) = db.primary_index() else {
        return;
    };
    let after = Duration::from_secs(db.health.failover_after_s);
    // Cheap before asking every replica: unreachable for long enough yet?
    if db.instances[p]
        .health
        .unreachable_since()
        .is_none_or(|s| s.elapsed() < after)
    {
        return;
    }
    let Ok(_guard) = db.switching.try_lock() else {
        return;
    };
    if db.primary_index() != Some(p) {
        return;
    }
    let timeout = Duration::from_millis(db.health.check_timeout_ms);
    let mut replicas = Vec::new();
    for i in (0..db.instances.len()).filter(|&i| i != p) {
        replicas.push(observe(db, i, timeout).await);
    }
    let since = db.instances[p].health.unreachable_since();
    match decide(since.map(|s| s.elapsed()), after, &replicas) {
        Decision::Promote(new) => {
            if let Some(lease) = db.lease.get() {
                if !lease(after * 2).await {
                    tracing::info!("another Strata instance holds the failover lease");
                    return;
                }
            }
            let old = &db.instances[p].name;
            let target = &db.instances[new].name;
            db.notify(
                "failover_started",
                Severity::Critical,
                format!(
                    "failover started: primary {old} unreachable for {} s, promoting {target}",
                    since.map_or(0, |s| s.elapsed().as_secs())
                ),
            );
            match super::failover::promote(db, p, new, "failover").await {
                Ok(summary) => {
                    db.failovers.fetch_add(1, Ordering::Relaxed);
                    db.notify(
                        "failover_finished",
                        Severity::Critical,
                        format!("failover finished: {summary}"),
                    );
                }
                Err(e) => db.notify(
                    "failover_failed",
                    Severity::Critical,
                    format!("failover from {old} to {target} failed: {e}"),
                ),
            }
        }
        Decision::StillStreaming(i) => {
            db.alert_fire(
                format!("primary_cut_off:{}", db.instances[p].name),
                "primary_cut_off",
                Severity::Critical,
                format!(
                    "Strata cannot reach primary {} but replica {} still streams from it: no failover",
                    db.instances[p].name, db.instances[i].name
                ),
            );
        }
        Decision::NoCandidate => {
            db.alert_fire(
                "failover_impossible".into(),
                "failover_impossible",
                Severity::Critical,
                format!(
                    "primary {} unreachable and no replica can be promoted",
                    db.instances[p].name
                ),
            );
        }
        Decision::Healthy | Decision::Wait => {}
    }
}

/// Repairs replication after a check of instance `i` (Property 25): a replica in recovery
/// that has not streamed for two checks is repointed at the primary; if it still does not
/// stream three checks later, `resync_command` runs (at most once a minute). An old primary
/// that came back as a primary beside the current one is rejoined through `resync_command`.
async fn repair(db: &Database, i: usize) {
    let Some(p) = db.primary_index() else {
        return;
    };
    if i == p || db.switching.try_lock().is_err() {
        return;
    }
    let inst = &db.instances[i];
    let Some(report) = inst.health.last().filter(|r| r.ok()) else {
        return;
    };
    let primary = &db.instances[p];
    if primary.health.unreachable_since().is_some() {
        return;
    }
    if !report.in_recovery {
        // A second primary: an old primary restarted after a failover.
        db.alert_fire(
            format!("stale_primary:{}", inst.name),
            "stale_primary",
            Severity::Critical,
            format!(
                "{} runs as a primary beside {}; it gets no traffic",
                inst.name, primary.name
            ),
        );
        resync_at_most_every_minute(db, i, p).await;
        return;
    }
    db.alert_resolve(
        &format!("stale_primary:{}", inst.name),
        &format!("{} is a replica again", inst.name),
    );
    // Streaming, but from a server that is neither the primary nor another replica (an old
    // primary back from the dead), or on an older timeline than the primary's: not replicating
    // from the primary either.
    let upstream_ok = report.receiver.as_ref().is_some_and(|w| {
        let from_known = db.instances().any(|i| {
            i.index != inst.index
                && (i.index == p || i.health.is_replica())
                && i.port == w.sender_port
                && i.host == w.sender_host
        });
        let primary_tli = primary.health.last().and_then(|r| r.timeline).unwrap_or(0);
        from_known && (w.timeline == 0 || w.timeline >= primary_tli)
    });
    let action = {
        let mut r = inst.health.repair.lock();
        if report.streaming() && upstream_ok {
            if r.not_streaming > 0 {
                tracing::info!(instance = %inst.name, "replica streams again");
            }
            r.not_streaming = 0;
            r.since_repoint = None;
            None
        } else {
            r.not_streaming += 1;
            match r.since_repoint {
                None if r.not_streaming >= 2 => {
                    r.since_repoint = Some(0);
                    r.repoints += 1;
                    Some(false)
                }
                Some(n) => {
                    r.since_repoint = Some(n + 1);
                    (n + 1 >= 3).then_some(true)
                }
                None => None,
            }
        }
    };
    match action {
        Some(false) => {
            let why = match &report.receiver {
                None => "its WAL receiver is not running".to_string(),
                Some(r) => format!("its WAL receiver is {}", r.status),
            };
            tracing::warn!(instance = %inst.name, %why, "replica not streaming: repointing it");
            match super::failover::repoint(db, i, p).await {
                Ok(()) => db.notify(
                    "replica_repointed",
                    Severity::Warning,
                    format!(
                        "replica {} stopped replicating ({why}); repointed at {}",
                        inst.name, primary.name
                    ),
                ),
                Err(e) => tracing::warn!(instance = %inst.name, error = %e, "repoint failed"),
            }
        }
        Some(true) => {
            resync_at_most_every_minute(db, i, p).await;
            inst.health.repair.lock().since_repoint = Some(0);
        }
        None => {}
    }
}

async fn resync_at_most_every_minute(db: &Database, i: usize, p: usize) {
    let inst = &db.instances[i];
    if db.health.resync_command.is_empty() {
        return;
    }
    {
        let mut r = inst.health.repair.lock();
        if r.resync_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        r.resync_at = Some(Instant::now());
        r.resyncs += 1;
    }
    let outcome = super::failover::resync(db, i, p).await;
    let (severity, text) = match &outcome {
        Ok(out) => (
            Severity::Warning,
            format!("resync of {} succeeded: {out}", inst.name),
        ),
        Err(e) => (
            Severity::Critical,
            format!("resync of {} failed: {e}", inst.name),
        ),
    };
    inst.health.repair.lock().last_resync = Some(text.clone());
    db.notify("resync_run", severity, text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(index: usize, reachable: bool, streaming: bool, received: u64) -> Candidate {
        Candidate {
            index,
            reachable,
            in_recovery: true,
            streaming_from_primary: streaming,
            received,
        }
    }

    #[test]
    fn waits_for_the_timeout_and_never_promotes_while_a_replica_streams() {
        let after = Duration::from_secs(30);
        let rs = [c(1, true, false, 10), c(2, true, false, 20)];
        assert_eq!(decide(None, after, &rs), Decision::Healthy);
        assert_eq!(
            decide(Some(Duration::from_secs(29)), after, &rs),
            Decision::Wait
        );
        assert_eq!(decide(Some(after), after, &rs), Decision::Promote(2));
        let streaming = [c(1, true, true, 10), c(2, true, false, 20)];
        assert_eq!(
            decide(Some(after), after, &streaming),
            Decision::StillStreaming(1)
        );
        let none = [c(1, false, false, 10)];
        assert_eq!(decide(Some(after), after, &none), Decision::NoCandidate);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        // Feature: db-cache-optimization, Property 5: Primary Failover
        #[test]
        fn promotes_the_reachable_replica_with_the_most_received_wal(
            down in proptest::option::of(0u64..120),
            after in 1u64..60,
            replicas in proptest::collection::vec(
                (any::<bool>(), any::<bool>(), any::<bool>(), 0u64..1000), 0..6),
        ) {
            let cands: Vec<Candidate> = replicas
                .iter()
                .enumerate()
                .map(|(i, &(reachable, in_recovery, streaming, received))| Candidate {
                    index: i + 1,
                    reachable,
                    in_recovery,
                    streaming_from_primary: streaming,
                    received,
                })
                .collect();
            let d = decide(down.map(Duration::from_secs), Duration::from_secs(after), &cands);
            match down {
                None => prop_assert_eq!(d, Decision::Healthy),
                Some(s) if s < after => prop_assert_eq!(d, Decision::Wait),
                Some(_) => {
                    let streaming = cands.iter().any(|c| c.reachable && c.streaming_from_primary);
                    let eligible: Vec<&Candidate> =
                        cands.iter().filter(|c| c.reachable && c.in_recovery).collect();
                    if streaming {
                        prop_assert!(matches!(d, Decision::StillStreaming(_)));
                    } else if eligible.is_empty() {
                        prop_assert_eq!(d, Decision::NoCandidate);
                    } else {
                        let Decision::Promote(i) = d else {
                            return Err(TestCaseError::fail(format!("{d:?}")));
                        };
                        let chosen = cands.iter().find(|c| c.index == i).unwrap();
                        prop_assert!(chosen.reachable && chosen.in_recovery);
                        let most = eligible.iter().map(|c| c.received).max().unwrap();
                        prop_assert_eq!(chosen.received, most);
                        // The lowest index among equals: deterministic across instances.
                        prop_assert!(eligible.iter().all(|c| c.received < most || c.index >= i));
                    }
                }
            }
        }

        // Feature: db-cache-optimization, Property 7: Unhealthy Instance Removal
        #[test]
        fn a_failed_check_removes_the_instance_until_one_passes(
            outcomes in proptest::collection::vec(any::<bool>(), 1..40)
        ) {
            let h = HealthState::default();
            for ok in outcomes {
                let r = if ok {
                    Report { error: None, in_recovery: true, ..Report::failed(SystemTime::now(), Duration::ZERO, String::new()) }
                } else {
                    Report::failed(SystemTime::now(), Duration::ZERO, "down".into())
                };
                h.record(r);
                prop_assert_eq!(h.healthy(), ok);
                prop_assert_eq!(h.unreachable_since().is_none(), ok);
                // The router's view: an unhealthy replica is never eligible.
                let sample = Some(super::super::router::LagSample {
                    at: Instant::now(),
                    replay_lsn: 10,
                    lag: Duration::ZERO,
                });
                let needs = super::super::router::ReadNeeds {
                    max_lag: Duration::from_secs(1),
                    min_lsn: 0,
                    now: Instant::now(),
                };
                prop_assert_eq!(
                    super::super::router::eligible(sample, !h.healthy(), 1, &needs),
                    ok
                );
            }
        }
    }
}
