//! The PostgreSQL test harness (tests/support/pg.rs) against real PostgreSQL 15: the shared
//! cluster's replicas stream and see the primary's writes, replicas refuse writes (25006), paused
//! replay lags by bytes until resumed, kill/stop/restart, promotion and repointing on clusters of
//! their own, processes gone after a drop and after the test binary aborts, and the
//! node_exporter-format metrics endpoint.
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use support::pg::{sweep_stale_dirs, unique_name, Lsn, MetricsServer, PgCluster};
use support::{http_get, process_gone, wait_until};

const DEADLINE: Duration = Duration::from_secs(10);

/// Reaps `pid` if it is our exited child; true once it is gone.
fn reaped(pid: u32) -> bool {
    // SAFETY: waitpid on a specific pid, without blocking.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
    r == pid as libc::pid_t || process_gone(pid)
}

/// Polls until `query` on `name` returns `want` as its first value; returns how long it took.
fn wait_value(c: &PgCluster, name: &str, query: &str, want: &str) -> Duration {
    let t0 = Instant::now();
    let seen = wait_until(DEADLINE, || {
        c.try_sql(name, query)
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .and_then(|row| row.into_iter().next().flatten())
            .as_deref()
            == Some(want)
    });
    assert!(
        seen,
        "{name}: {query} did not return {want} within {DEADLINE:?}"
    );
    t0.elapsed()
}

#[test]
fn shared_cluster_replicas_stream() {
    let c = PgCluster::shared();
    eprintln!(
        "shared cluster (p0 + 3 replicas) started in {:?}",
        c.started_in()
    );
    assert!(std::ptr::eq(c, PgCluster::shared()), "one shared cluster");
    let names: Vec<&str> = c.instances().iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["p0", "r1", "r2", "r3"]);
    assert_eq!(c.primary().name, "p0");
    assert_eq!(c.replicas().len(), 3);
    for inst in c.instances() {
        assert_eq!(
            inst.url(),
            format!("postgres://postgres@127.0.0.1:{}/postgres", inst.port)
        );
        assert!(c.is_running(&inst.name));
        let version = c.scalar(&inst.name, "SHOW server_version_num").unwrap();
        assert!(version.starts_with("15"), "{version}");
        assert_eq!(
            c.scalar(&inst.name, "SHOW cluster_name").as_deref(),
            Some(inst.name.as_str())
        );
    }

    let mut streaming = c.sql(
        "p0",
        "SELECT application_name, state FROM pg_stat_replication ORDER BY 1",
    );
    streaming.sort();
    let want: Vec<Vec<Option<String>>> = ["r1", "r2", "r3"]
        .iter()
        .map(|r| vec![Some(r.to_string()), Some("streaming".to_string())])
        .collect();
    assert_eq!(streaming, want);

    let p0 = c.lsn("p0");
    assert!(!p0.in_recovery);
    assert!(p0.current.is_some() && p0.receive.is_none() && p0.replay.is_none());
    for r in ["r1", "r2", "r3"] {
        let w = c.lsn(r);
        assert!(w.in_recovery, "{r} in recovery");
        assert!(w.receive.is_some() && w.replay.is_some() && w.current.is_none());
        assert_eq!(c.upstream(r).unwrap().name, "p0");
        assert_eq!(
            c.scalar(r, "SELECT status FROM pg_stat_wal_receiver")
                .as_deref(),
            Some("streaming")
        );
    }
}

#[test]
fn writes_on_the_primary_reach_every_replica() {
    let c = PgCluster::shared();
    let schema = unique_name("harness");
    c.exec(
        "p0",
        &format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id int PRIMARY KEY, v text); \
             INSERT INTO {schema}.t VALUES (1, 'one'), (2, NULL)"
        ),
    );
    assert_eq!(
        c.exec(
            "p0",
            &format!("UPDATE {schema}.t SET v = 'uno' WHERE id = 1")
        ),
        1
    );
    for r in ["r1", "r2", "r3"] {
        let took = wait_value(
            c,
            r,
            &format!("SELECT v FROM {schema}.t WHERE id = 1"),
            "uno",
        );
        eprintln!("write visible on {r} after {took:?}");
        assert_eq!(
            c.sql(r, &format!("SELECT id, v FROM {schema}.t ORDER BY id")),
            vec![
                vec![Some("1".into()), Some("uno".into())],
                vec![Some("2".into()), None]
            ]
        );
        c.wait_caught_up(r);
        // The replica first: other tests write on p0 meanwhile.
        let replica = c.lsn(r);
        let primary = c.lsn("p0");
        assert!(replica.replay.unwrap() <= primary.current.unwrap());
    }
}

#[test]
fn writing_on_a_replica_fails_with_25006() {
    let c = PgCluster::shared();
    let table = unique_name("ro");
    c.exec("p0", &format!("CREATE TABLE {table} (id int)"));
    c.wait_caught_up("r2");
    let err = c
        .try_exec("r2", &format!("INSERT INTO {table} VALUES (1)"))
        .unwrap_err();
    assert_eq!(err.code.as_deref(), Some("25006"), "{err}");
    let err = c
        .try_sql("r2", "SELECT nextval('no_such_seq')")
        .unwrap_err();
    assert_eq!(err.code.as_deref(), Some("42P01"), "{err}");
    assert_eq!(c.exec("p0", &format!("INSERT INTO {table} VALUES (1)")), 1);
}

#[test]
fn lsn_text_form_round_trips() {
    for text in [
        "0/0",
        "0/3000148",
        "1/0",
        "FFFFFFFF/FFFFFFFF",
        "16/B374D848",
    ] {
        assert_eq!(Lsn::parse(text).unwrap().to_string(), text);
    }
    assert_eq!(Lsn::parse("1/2").unwrap(), Lsn(0x1_0000_0002));
    assert!(Lsn::parse("1/2/3").is_none() && Lsn::parse("x").is_none());
    assert!(Lsn::parse("0/100").unwrap() > Lsn::parse("0/FF").unwrap());
}

#[test]
fn paused_replay_lags_until_resumed_then_kill_stop_and_restart() {
    let c = PgCluster::start(1);
    eprintln!("cluster p0 + 1 replica started in {:?}", c.started_in());
    c.exec("p0", "CREATE TABLE t (id int, pad text)");
    c.wait_caught_up("r1");
    assert_eq!(c.lag_bytes("r1"), 0);

    c.pause_replay("r1");
    c.exec(
        "p0",
        "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g",
    );
    // The WAL arrives but is not replayed.
    let received = c.lsn("p0").current.unwrap();
    assert!(wait_until(DEADLINE, || c.lsn("r1").receive >= Some(received)));
    let lag1 = c.lag_bytes("r1");
    assert!(lag1 > 100_000, "lag {lag1} bytes after 100 kB of rows");
    assert_eq!(
        c.scalar("r1", "SELECT count(*) FROM t").as_deref(),
        Some("0")
    );
    c.exec(
        "p0",
        "INSERT INTO t SELECT g, repeat('y', 100) FROM generate_series(1, 1000) g",
    );
    let lag2 = c.lag_bytes("r1");
    assert!(lag2 > lag1, "lag grows: {lag1} then {lag2}");

    c.resume_replay("r1");
    let took = c.wait_caught_up("r1");
    eprintln!("lag {lag2} bytes cleared in {took:?} after resume");
    assert_eq!(c.lag_bytes("r1"), 0);
    assert_eq!(
        c.scalar("r1", "SELECT count(*) FROM t").as_deref(),
        Some("2000")
    );

    // Crash the primary and bring it back: crash recovery, the replica reconnects.
    let pid = c.postmaster_pid("p0").unwrap();
    c.kill("p0");
    assert!(!c.is_running("p0") && process_gone(pid));
    assert!(c.try_sql("p0", "SELECT 1").unwrap_err().code.is_none());
    let t0 = Instant::now();
    c.start_instance("p0");
    c.wait_streaming("r1");
    eprintln!(
        "p0 restarted after a crash, r1 streaming again in {:?}",
        t0.elapsed()
    );
    c.exec("p0", "INSERT INTO t VALUES (-1, 'after crash')");
    wait_value(&c, "r1", "SELECT count(*) FROM t WHERE id = -1", "1");

    // Stop the replica cleanly, write meanwhile, restart it: it catches up.
    c.stop("r1");
    assert!(!c.is_running("r1"));
    c.exec("p0", "INSERT INTO t VALUES (-2, 'while r1 was down')");
    c.start_instance("r1");
    c.wait_streaming("r1");
    c.wait_caught_up("r1");
    assert_eq!(
        c.scalar("r1", "SELECT pad FROM t WHERE id = -2").as_deref(),
        Some("while r1 was down")
    );
}

#[test]
fn promote_a_replica_and_repoint_the_other_then_drop_stops_everything() {
    let c = PgCluster::start(2);
    eprintln!("cluster p0 + 2 replicas started in {:?}", c.started_in());
    c.exec("p0", "CREATE TABLE f (id int); INSERT INTO f VALUES (1)");
    c.wait_caught_up("r1");
    c.wait_caught_up("r2");

    c.kill("p0");
    // With p0 down, lag is measured against what the replica received.
    c.wait_caught_up("r2");
    assert_eq!(c.lag_bytes("r2"), 0);
    let t0 = Instant::now();
    c.promote("r1");
    eprintln!("r1 promoted in {:?}", t0.elapsed());
    assert_eq!(c.primary().name, "r1");
    assert!(!c.lsn("r1").in_recovery);
    assert!(c.upstream("r1").is_none());
    assert_eq!(
        c.replicas()
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>(),
        ["r2"]
    );
    assert_eq!(c.exec("r1", "INSERT INTO f VALUES (2)"), 1);
    // r2 still follows the dead p0, so it cannot see the new write.
    assert!(c.lsn("r2").in_recovery);

    let t0 = Instant::now();
    c.repoint("r2", "r1");
    assert_eq!(c.upstream("r2").unwrap().name, "r1");
    c.wait_streaming("r2");
    eprintln!("r2 streaming from r1 {:?} after repoint", t0.elapsed());
    wait_value(&c, "r2", "SELECT count(*) FROM f", "2");
    assert_eq!(
        c.scalar("r2", "SELECT received_tli FROM pg_stat_wal_receiver")
            .as_deref(),
        Some("2"),
        "r2 follows r1's new timeline"
    );
    assert_eq!(
        c.scalar("r2", "SELECT sender_port FROM pg_stat_wal_receiver"),
        Some(c.port("r1").to_string())
    );
    c.wait_caught_up("r2");
    assert_eq!(c.lag_bytes("r2"), 0);

    let pids: Vec<u32> = ["r1", "r2"]
        .iter()
        .map(|n| c.postmaster_pid(n).unwrap())
        .collect();
    let dir = c.dir.clone();
    drop(c);
    assert!(pids.iter().all(|&p| process_gone(p)), "postmasters stopped");
    assert!(!dir.exists(), "{} deleted", dir.display());
}

/// Run only as a child of `postgres_dies_with_an_aborted_test_binary` (a no-op otherwise):
/// starts a lone primary, prints its postmaster pid and directory, then aborts — no unwinding, no
/// drop, no exit handler.
#[test]
fn abort_child() {
    if std::env::var_os("STRATA_PG_ABORT_CHILD").is_none() {
        return;
    }
    let c = PgCluster::start(0);
    for inst in c.instances() {
        println!("PID {}", c.postmaster_pid(&inst.name).unwrap());
    }
    println!("DIR {}", c.dir.display());
    std::process::abort();
}

#[test]
fn postgres_dies_with_an_aborted_test_binary() {
    // The aborted child's orphans are reparented to this process, which reaps them (this
    // machine's init reaps orphans only every few seconds).
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "abort_child", "--nocapture", "--test-threads=1"])
        .env("STRATA_PG_ABORT_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the child aborts");
    // A line may start with the harness's "test abort_child ... ".
    let field = |l: &str, key: &str| Some(l[l.find(key)? + key.len()..].trim().to_string());
    let pids: Vec<u32> = stdout
        .lines()
        .filter_map(|l| field(l, "PID ")?.parse().ok())
        .collect();
    let dir: PathBuf = stdout
        .lines()
        .find_map(|l| field(l, "DIR "))
        .unwrap_or_else(|| {
            panic!(
                "child output: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .into();
    assert_eq!(pids.len(), 1, "{stdout}");
    assert!(
        wait_until(DEADLINE, || pids.iter().all(|&p| reaped(p))),
        "postmasters {pids:?} outlived their aborted test binary"
    );
    sweep_stale_dirs();
    assert!(!dir.exists(), "stale {} swept", dir.display());
}

#[test]
fn metrics_server_serves_what_was_set() {
    let m = MetricsServer::start();
    assert_eq!(m.url(), format!("http://127.0.0.1:{}/metrics", m.port));
    m.set(r#"node_cpu_seconds_total{cpu="0",mode="idle"}"#, 1234.5);
    m.set(r#"node_cpu_seconds_total{cpu="0",mode="user"}"#, 100.0);
    m.set("node_memory_MemAvailable_bytes", 8.0e9);
    m.set("node_memory_MemTotal_bytes", 16.0e9);
    m.set("node_load1", 0.25);
    m.set("node_load15", 0.5);

    let (status, body) = http_get(m.port, "/metrics");
    assert_eq!(status, 200);
    let values: BTreeMap<&str, f64> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, v) = l.rsplit_once(' ').unwrap();
            (series, v.parse().unwrap())
        })
        .collect();
    assert_eq!(values.len(), 6, "{body}");
    assert_eq!(
        values[r#"node_cpu_seconds_total{cpu="0",mode="idle"}"#],
        1234.5
    );
    assert_eq!(values["node_memory_MemAvailable_bytes"], 8.0e9);
    assert_eq!(values["node_load1"], 0.25);
    assert!(body.contains("# TYPE node_cpu_seconds_total counter\n"));
    assert!(body.contains("# TYPE node_load1 gauge\n"));
    assert_eq!(body.matches("# TYPE node_cpu_seconds_total").count(), 1);

    m.set("node_load1", 3.5);
    m.remove("node_load15");
    let (_, body) = http_get(m.port, "/metrics");
    assert!(body.contains("\nnode_load1 3.5\n"), "{body}");
    assert!(!body.contains("node_load15"));

    assert_eq!(http_get(m.port, "/other").0, 404);
    m.set_status(503);
    assert_eq!(http_get(m.port, "/metrics").0, 503);
    m.set_status(200);
    m.clear();
    assert_eq!(http_get(m.port, "/metrics"), (200, String::new()));
    assert_eq!(m.requests(), 5);
}

#[tokio::test]
async fn helpers_are_callable_inside_an_async_test() {
    let c = PgCluster::shared();
    assert_eq!(c.scalar("r1", "SELECT 40 + 2").as_deref(), Some("42"));
    assert_eq!(c.lag_bytes("p0"), 0);
}
