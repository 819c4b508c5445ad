//! The connection pools (src/db/pool.rs) against real PostgreSQL 15: the minimum opens in the
//! background, 200 concurrent acquirers never push a server past its budget while the
//! statistics add up and match `pg_stat_activity`, an acquire that cannot be served fails after
//! the acquire timeout with a clear error and leaves nothing behind, critical work gets the
//! reserved connections while normal work is exhausted, idle connections beyond the minimum
//! are closed, a cached statement whose result type changed under it (outside DDL, SQLSTATE
//! 0A000) is prepared again transparently, killed backends are discarded and replaced, session
//! settings apply, and an unreachable server fails quickly. Every test names its connections
//! with its own application_name, so counts in `pg_stat_activity` are exact.
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::db::pool::{PoolError, PoolSettings, Priority, Role, ServerPools};
use support::pg::{unique_name, PgCluster};
use tokio_postgres::error::SqlState;

/// How to connect to `instance` of the shared cluster as `app`.
fn config(instance: &str, app: &str) -> tokio_postgres::Config {
    let mut cfg: tokio_postgres::Config = PgCluster::shared().url(instance).parse().expect("url");
    cfg.application_name(app);
    cfg
}

/// Backends of `app` on `instance`, as PostgreSQL counts them.
fn backends(instance: &str, app: &str) -> usize {
    PgCluster::shared()
        .scalar(
            instance,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"),
        )
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Polls `cond` until it holds (10 s at most).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 10 s");
}

fn settings(min: usize, max: usize, reserved: usize) -> PoolSettings {
    PoolSettings {
        min,
        max,
        reserved,
        ..PoolSettings::default()
    }
}

// Feature: db-cache-optimization, Property 13: Connection Pool Bounds
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimum_opens_in_the_background() {
    let app = unique_name("pool_min");
    let pools = ServerPools::new("p0", config("p0", &app), true, settings(3, 8, 2));
    eventually("3 idle connections", || pools.stats(Role::Write).idle == 3).await;
    assert_eq!(backends("p0", &app), 3);
    let t = pools.totals();
    assert_eq!((t.size, t.idle, t.in_use, t.opening), (3, 3, 0, 0));
    assert_eq!((t.min, t.max, t.reserved), (3, 8, 2));
    assert_eq!(
        pools.stats(Role::Read).size,
        0,
        "the write pool holds the minimum"
    );

    // A read on the primary takes one of them rather than opening another.
    let conn = pools.get(Role::Read, Priority::Normal).await.unwrap();
    let rows = conn.query("SELECT 40 + $1::int", &[&2i32]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 42);
    assert_eq!(conn.server(), "p0");
    assert_eq!(
        (conn.role(), conn.priority()),
        (Role::Read, Priority::Normal)
    );
    assert_eq!(
        (
            pools.stats(Role::Read).in_use,
            pools.stats(Role::Write).idle
        ),
        (1, 2)
    );
    assert_eq!(backends("p0", &app), 3);
    drop(conn);
    assert_eq!(pools.stats(Role::Read).idle, 1);
    assert_eq!(pools.totals().acquired_total, 1);

    // A replica keeps its minimum in its read pool, and has no write pool.
    let app_r = unique_name("pool_min_r");
    let replica = ServerPools::new("r1", config("r1", &app_r), false, settings(2, 8, 2));
    eventually("2 idle on r1", || replica.stats(Role::Read).idle == 2).await;
    assert_eq!(backends("r1", &app_r), 2);
    assert!(!replica.has_pool(Role::Write) && replica.has_pool(Role::Read));
    let e = replica
        .get(Role::Write, Priority::Critical)
        .await
        .unwrap_err();
    assert!(matches!(e, PoolError::NoPool { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "no write pool on database server r1 (a replica)"
    );
}

// Feature: db-cache-optimization, Property 13: Connection Pool Bounds
// Feature: db-cache-optimization, Property 15: Pool Statistics
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_acquirers_never_exceed_max() {
    const MAX: usize = 12;
    let app = unique_name("pool_max");
    let s = PoolSettings {
        acquire_timeout: Duration::from_secs(30),
        ..settings(2, MAX, 3)
    };
    let pools = ServerPools::new("p0", config("p0", &app), true, s);
    let stop = Arc::new(AtomicBool::new(false));

    // Watches the pool's own numbers...
    let stats_watch = {
        let (pools, stop) = (pools.clone(), stop.clone());
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = pools.totals();
                assert!(t.size + t.opening <= MAX, "{t:?}");
                assert_eq!(t.size, t.idle + t.in_use, "{t:?}");
                let (w, r) = (pools.stats(Role::Write), pools.stats(Role::Read));
                for s in [&w, &r] {
                    assert_eq!(s.size, s.idle + s.in_use, "{s:?}");
                }
                assert!(t.size >= w.size + r.size && t.waiting >= w.waiting + r.waiting);
                peak = peak.max(t.size);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            peak
        })
    };
    // ... and PostgreSQL's.
    let pg_watch = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(backends("p0", &app));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let pools = pools.clone();
            tokio::spawn(async move {
                let role = if i % 2 == 0 { Role::Write } else { Role::Read };
                let priority = if i % 10 == 0 {
                    Priority::Critical
                } else {
                    Priority::Normal
                };
                let conn = pools.get(role, priority).await.map_err(|e| e.to_string())?;
                conn.execute("SELECT pg_sleep(0.02)", &[])
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let peak = stats_watch.await.unwrap();
    let pg_peak = pg_watch.await.unwrap();
    eprintln!("peak: {peak} connections in the pool, {pg_peak} seen by PostgreSQL");
    assert!(pg_peak <= MAX, "PostgreSQL saw {pg_peak} connections");
    assert!(peak >= MAX - 3, "the pool never used its budget: {peak}");

    let t = pools.totals();
    assert_eq!((t.in_use, t.waiting, t.opening), (0, 0, 0), "{t:?}");
    assert_eq!(
        (t.acquired_total, t.timeouts_total, t.wait.count),
        (200, 0, 200)
    );
    assert!(t.wait.quantile(0.99).is_some());
    assert_eq!(t.size, t.idle);
    assert_eq!(backends("p0", &app), t.size, "statistics match PostgreSQL");
    let (w, r) = (pools.stats(Role::Write), pools.stats(Role::Read));
    assert_eq!((w.acquired_total, r.acquired_total), (100, 100));
}

// Feature: db-cache-optimization, Property 16: Pool Exhaustion
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_fails_after_the_acquire_timeout_and_leaks_nothing() {
    let app = unique_name("pool_exhaust");
    let s = PoolSettings {
        acquire_timeout: Duration::from_millis(300),
        ..settings(0, 3, 1)
    };
    let pools = ServerPools::new("p0", config("p0", &app), true, s);
    let a = pools.get(Role::Write, Priority::Normal).await.unwrap();
    let b = pools.get(Role::Write, Priority::Normal).await.unwrap();

    let t0 = Instant::now();
    let e = pools.get(Role::Write, Priority::Normal).await.unwrap_err();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with(
            "database pool exhausted (server p0, write pool: 2 in use, 1 waiting; waited 3"
        ) && text.ends_with(" ms)"),
        "{text}"
    );
    let w = pools.stats(Role::Write);
    assert_eq!((w.timeouts_total, w.waiting, w.in_use), (1, 0, 2));

    // An acquire dropped while it waits leaves no trace.
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        pools.get(Role::Read, Priority::Normal),
    )
    .await;
    assert!(dropped.is_err());
    assert_eq!(pools.totals().waiting, 0);
    assert_eq!(
        pools.totals().timeouts_total,
        1,
        "a cancel is not a timeout"
    );

    // A waiter gets the connection given back.
    let waiter = {
        let pools = pools.clone();
        tokio::spawn(async move { pools.get(Role::Read, Priority::Normal).await })
    };
    eventually("one waiting", || pools.stats(Role::Read).waiting == 1).await;
    drop(a);
    let c = waiter.await.unwrap().unwrap();
    c.query("SELECT 1", &[]).await.unwrap();
    assert_eq!(pools.stats(Role::Read).in_use, 1);
    assert_eq!(backends("p0", &app), 2, "the waiter reused a connection");

    drop((b, c));
    let t = pools.totals();
    assert_eq!((t.in_use, t.waiting, t.opening), (0, 0, 0), "{t:?}");
    assert_eq!((t.size, t.idle), (2, 2));
    assert_eq!(backends("p0", &app), 2);
}

// Feature: db-cache-optimization, Property 11: Critical Operation Priority
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_work_gets_a_connection_while_normal_work_is_exhausted() {
    let app = unique_name("pool_critical");
    let s = PoolSettings {
        acquire_timeout: Duration::from_millis(300),
        ..settings(0, 4, 2)
    };
    let pools = ServerPools::new("p0", config("p0", &app), true, s);
    let n1 = pools.get(Role::Read, Priority::Normal).await.unwrap();
    let n2 = pools.get(Role::Write, Priority::Normal).await.unwrap();
    let e = pools.get(Role::Read, Priority::Normal).await.unwrap_err();
    assert!(matches!(e, PoolError::Exhausted { .. }), "{e:?}");

    let t0 = Instant::now();
    let c1 = pools.get(Role::Read, Priority::Critical).await.unwrap();
    let c2 = pools.get(Role::Write, Priority::Critical).await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    for c in [&c1, &c2] {
        let rows = c.query("SELECT 1", &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i32>(0), 1);
    }
    assert_eq!(pools.totals().critical_in_use, 2);
    assert_eq!(backends("p0", &app), 4);

    // Critical work may go beyond the reserve when connections are free: now 3 critical and
    // 1 normal hold the whole budget.
    drop(n1);
    let c3 = pools.get(Role::Read, Priority::Critical).await.unwrap();
    assert_eq!(pools.totals().critical_in_use, 3);

    // A normal waiter (within its share, but the budget is spent) and a later critical one:
    // the next connection back goes to the critical one.
    let normal_waiter = {
        let pools = pools.clone();
        tokio::spawn(async move { pools.get(Role::Write, Priority::Normal).await })
    };
    eventually("normal waiting", || pools.totals().waiting == 1).await;
    let critical_waiter = {
        let pools = pools.clone();
        tokio::spawn(async move { pools.get(Role::Read, Priority::Critical).await })
    };
    eventually("both waiting", || pools.totals().waiting == 2).await;
    drop(c1);
    let c4 = critical_waiter.await.unwrap().unwrap();
    assert_eq!(c4.priority(), Priority::Critical);
    assert_eq!(
        pools.stats(Role::Write).waiting,
        1,
        "the normal waiter still waits"
    );
    drop(c2);
    let n3 = normal_waiter.await.unwrap().unwrap();
    drop((n2, n3, c3, c4));
    let t = pools.totals();
    assert_eq!((t.in_use, t.waiting, t.size), (0, 0, 4));
    assert_eq!(backends("p0", &app), 4);
}

// Feature: db-cache-optimization, Property 14: Idle Connection Cleanup
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_minimum_are_closed() {
    let app = unique_name("pool_idle");
    let s = PoolSettings {
        idle_timeout: Duration::from_millis(300),
        ..settings(2, 10, 2)
    };
    let pools = ServerPools::new("p0", config("p0", &app), true, s);
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let maintenance = pools.spawn_maintenance(rx);
    eventually("2 idle", || pools.stats(Role::Write).idle == 2).await;

    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(pools.get(Role::Write, Priority::Normal).await.unwrap());
    }
    assert_eq!(backends("p0", &app), 6);
    drop(held);
    assert_eq!(pools.totals().idle, 6);
    assert_eq!(
        pools.prune_idle(),
        0,
        "nothing has been idle for 300 ms yet"
    );

    let t0 = Instant::now();
    eventually("pruned to min", || pools.totals().size == 2).await;
    eprintln!("pruned to min {:?} after release", t0.elapsed());
    eventually("PostgreSQL sees 2", || backends("p0", &app) == 2).await;

    // Never below the minimum, however long they stay idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(pools.prune_idle(), 0);
    assert_eq!(pools.totals().size, 2);
    assert_eq!(backends("p0", &app), 2);

    shutdown.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), maintenance)
        .await
        .expect("maintenance stops on shutdown")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_statement_is_prepared_again_after_outside_ddl() {
    let c = PgCluster::shared();
    let app = unique_name("pool_ddl");
    let table = unique_name("pool_ddl_t");
    c.exec(
        "p0",
        &format!("CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (1)"),
    );
    let pools = ServerPools::new("p0", config("p0", &app), true, settings(0, 2, 1));
    let conn = pools.get(Role::Write, Priority::Normal).await.unwrap();
    let pid = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, i32>(0);
    let backend = pid(conn.query("SELECT pg_backend_pid()", &[]).await.unwrap());

    let select = format!("SELECT * FROM {table}");
    let rows = conn.query(&select, &[]).await.unwrap();
    assert_eq!(rows[0].len(), 1);
    assert_eq!(conn.statement_cache.size(), 2, "both statements cached");
    // The same statement prepared outside the cache shows what the server says after the DDL.
    let raw = conn.client().prepare(&select).await.unwrap();

    c.exec(
        "p0",
        &format!("ALTER TABLE {table} ADD COLUMN v text DEFAULT 'x'"),
    );
    let e = conn.client().query(&raw, &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");

    let rows = conn.query(&select, &[]).await.unwrap();
    assert_eq!(rows[0].len(), 2);
    assert_eq!(rows[0].get::<_, Option<String>>(1).as_deref(), Some("x"));

    // `execute` too, on the statement cached just now.
    c.exec("p0", &format!("ALTER TABLE {table} ADD COLUMN w int"));
    assert_eq!(conn.execute(&select, &[]).await.unwrap(), 1);
    assert_eq!(conn.query(&select, &[]).await.unwrap()[0].len(), 3);
    assert_eq!(
        pid(conn.query("SELECT pg_backend_pid()", &[]).await.unwrap()),
        backend,
        "the same connection throughout"
    );
    drop(conn);
    assert_eq!(pools.totals().idle, 1, "the connection went back");
}

// Feature: db-cache-optimization, Property 15: Pool Statistics
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backends_are_discarded_and_replaced() {
    let c = PgCluster::shared();
    let app = unique_name("pool_kill");
    let pools = ServerPools::new("p0", config("p0", &app), true, settings(2, 6, 1));
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let _maintenance = pools.spawn_maintenance(rx);
    eventually("2 idle", || pools.stats(Role::Write).idle == 2).await;

    // A connection in use is killed: its next statement fails, and it is not given back.
    let conn = pools.get(Role::Write, Priority::Normal).await.unwrap();
    let rows = conn.query("SELECT pg_backend_pid()", &[]).await.unwrap();
    let killed: i32 = rows[0].get(0);
    c.sql("p0", &format!("SELECT pg_terminate_backend({killed})"));
    assert!(conn.query("SELECT 1", &[]).await.is_err());
    drop(conn);
    assert_eq!(pools.totals().in_use, 0);
    let alive = |pid: i32| {
        c.scalar(
            "p0",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        )
        .as_deref()
            == Some("1")
    };
    eventually("replaced", || {
        let t = pools.totals();
        t.size == 2 && t.idle == 2 && !alive(killed) && backends("p0", &app) == 2
    })
    .await;

    // Idle connections are killed: an acquire still gets a working connection.
    c.sql(
        "p0",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'"
        ),
    );
    eventually("all killed", || backends("p0", &app) == 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let conn = pools.get(Role::Read, Priority::Normal).await.unwrap();
    let rows = conn.query("SELECT 7", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 7);
    drop(conn);
    eventually("back to the minimum", || {
        let t = pools.totals();
        t.size >= 2 && t.size == t.idle && backends("p0", &app) == t.size
    })
    .await;
    // `discard` closes a working connection instead of returning it.
    let size = pools.totals().size;
    let conn = pools.get(Role::Write, Priority::Normal).await.unwrap();
    conn.discard();
    assert_eq!(pools.totals().size, size - 1);
    eventually("topped up", || pools.totals().size == size).await;
    shutdown.send_replace(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_apply_and_an_unreachable_server_fails_quickly() {
    let app = unique_name("pool_session");
    let s = PoolSettings {
        statement_timeout_ms: 200,
        ..settings(0, 2, 1)
    };
    let pools = ServerPools::new("p0", config("p0", &app), true, s);
    let conn = pools.get(Role::Write, Priority::Normal).await.unwrap();
    let rows = conn.query("SHOW statement_timeout", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "200ms");
    let rows = conn.query("SHOW application_name", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), app);
    let e = conn.execute("SELECT pg_sleep(2)", &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
    assert_eq!(conn.execute("SELECT 1", &[]).await.unwrap(), 1);
    drop(conn);
    assert_eq!(
        pools.totals().idle,
        1,
        "a statement error does not break a connection"
    );

    // Nothing listens there: acquires fail at once with the reason, nothing stays counted.
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(support::free_port())
        .user("postgres")
        .dbname("postgres");
    let down = ServerPools::new(
        "down",
        cfg,
        true,
        PoolSettings {
            connect_timeout: Duration::from_secs(2),
            ..settings(2, 4, 1)
        },
    );
    let t0 = Instant::now();
    let e = down.get(Role::Write, Priority::Normal).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(matches!(e, PoolError::Connect { code: None, .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("cannot connect to database server down: "),
        "{e}"
    );
    eventually("background attempts over", || down.totals().opening == 0).await;
    let t = down.totals();
    assert_eq!((t.size, t.in_use, t.waiting), (0, 0, 0));
}
