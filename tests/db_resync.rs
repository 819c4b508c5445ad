//! The replica resync hook shipped in `deploy/pg-resync.sh`, run as Strata runs
//! `health.resync_command` (`sh -c`, placeholders substituted, `STRATA_*` environment), against
//! real PostgreSQL 15 clusters: an old primary that crashed and lost a transaction in a failover
//! rejoins the new primary through pg_rewind; a split-brain old primary whose WAL from the fork
//! point was recycled (so pg_rewind cannot work) rejoins through pg_basebackup; an unreachable
//! primary fails the hook with a clear message and leaves the instance alone. Also the harness's
//! handling of postmasters it did not start (`pg_ctl start` in the script): stop, start, drop,
//! and the exit handler and watchdog when the test binary exits or aborts.
mod support;

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};
use support::pg::{sweep_stale_dirs, Lsn, PgCluster};
use support::{free_port, parent_of, process_gone, wait_until};

const DEADLINE: Duration = Duration::from_secs(20);

/// What one run of the hook did.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn output(&self) -> String {
        format!(
            "{} in {:?}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs the cluster's `resync_command` for `name` the way Strata runs `health.resync_command`:
/// placeholders substituted, then `sh -c`, with the `STRATA_*` variables; the primary is
/// `primary` at `primary_port` (another port makes it unreachable).
fn resync(c: &PgCluster, name: &str, primary: &str, primary_port: u16) -> Run {
    let port = c.port(name).to_string();
    let primary_port = primary_port.to_string();
    let conninfo =
        format!("host=127.0.0.1 port={primary_port} user=postgres application_name={name}");
    let vars = [
        ("name", "STRATA_INSTANCE", name),
        ("host", "STRATA_INSTANCE_HOST", "127.0.0.1"),
        ("port", "STRATA_INSTANCE_PORT", &port),
        ("primary_name", "STRATA_PRIMARY_NAME", primary),
        ("primary_host", "STRATA_PRIMARY_HOST", "127.0.0.1"),
        ("primary_port", "STRATA_PRIMARY_PORT", &primary_port),
    ];
    let mut command = c.resync_command();
    for (placeholder, _, value) in vars {
        command = command.replace(&format!("{{{placeholder}}}"), value);
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&command)
        .env("STRATA_PRIMARY_CONNINFO", &conninfo);
    for (_, var, value) in vars {
        cmd.env(var, value);
    }
    let t0 = Instant::now();
    let out = cmd.output().expect("run the resync command");
    let run = Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: t0.elapsed(),
    };
    eprintln!("resync {name} from {primary}: {command}\n{}", run.output());
    run
}

/// Polls until `query` on `name` returns `want` as its first value.
fn wait_value(c: &PgCluster, name: &str, query: &str, want: &str) {
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
        "{name}: {query} did not return {want} within {DEADLINE:?}; log tail:\n{}",
        c.log_tail(name)
    );
}

/// p0, resynced from r1, holds r1's timeline: its row 3, none of the rows only p0 had written
/// (`why`), and what r1 writes next.
fn assert_follows_new_timeline(c: &PgCluster, why: &str) {
    wait_value(
        c,
        "p0",
        "SELECT v FROM t WHERE id = 3",
        "on the new timeline",
    );
    assert_eq!(
        c.scalar("p0", "SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
            .as_deref(),
        Some("1,3"),
        "{why}"
    );
    c.exec("r1", "INSERT INTO t VALUES (4, 'after the resync')");
    wait_value(c, "p0", "SELECT count(*) FROM t WHERE id = 4", "1");
}

/// Checks that `name` is back as a streaming standby of `primary` with its own identity, and
/// that its postmaster is the one the script started (not the harness's child).
fn assert_streams_from(c: &PgCluster, name: &str, primary: &str) -> u32 {
    c.set_upstream(name, Some(primary));
    let pid = c.postmaster_pid(name).expect("running after the resync");
    assert_ne!(
        parent_of(pid),
        std::process::id(),
        "started by pg_ctl, not by the harness"
    );
    let took = c.wait_streaming(name);
    eprintln!("{name} streaming from {primary} {took:?} after the resync");
    assert_eq!(
        c.scalar(name, "SELECT status FROM pg_stat_wal_receiver")
            .as_deref(),
        Some("streaming")
    );
    assert_eq!(
        c.scalar(name, "SELECT sender_port FROM pg_stat_wal_receiver"),
        Some(c.port(primary).to_string())
    );
    assert_eq!(
        c.scalar(name, "SELECT received_tli FROM pg_stat_wal_receiver")
            .as_deref(),
        Some("2"),
        "{name} follows {primary}'s new timeline"
    );
    assert_eq!(
        c.scalar(name, "SELECT pg_is_in_recovery()").as_deref(),
        Some("t")
    );
    assert_eq!(
        c.scalar(name, "SHOW port"),
        Some(c.port(name).to_string()),
        "its own port, not the primary's"
    );
    assert_eq!(
        c.scalar(name, "SHOW cluster_name").as_deref(),
        Some(name),
        "its own cluster_name, not the primary's"
    );
    pid
}

// Feature: db-cache-optimization, Property 25: Automatic Replica Resync
#[test]
fn crashed_old_primary_rejoins_through_pg_rewind_and_an_unreachable_primary_fails_cleanly() {
    let c = PgCluster::start(2);
    eprintln!("cluster p0 + 2 replicas started in {:?}", c.started_in());
    c.exec(
        "p0",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'before')",
    );
    c.wait_caught_up("r1");
    c.wait_caught_up("r2");

    // A partition cuts the replicas off; p0 commits a transaction no replica receives.
    for r in ["r1", "r2"] {
        c.exec(r, "ALTER SYSTEM SET primary_conninfo = ''");
        c.exec(r, "SELECT pg_reload_conf()");
    }
    wait_value(&c, "p0", "SELECT count(*) FROM pg_stat_replication", "0");
    c.exec("p0", "INSERT INTO t VALUES (2, 'lost in the failover')");
    // p0 crashes (immediate shutdown: no shutdown checkpoint, crash recovery needed); r1 is
    // promoted (timeline 2), r2 follows it, and r1 takes writes.
    let crashed = c.postmaster_pid("p0").unwrap();
    c.kill("p0");
    c.promote("r1");
    c.repoint("r2", "r1");
    c.wait_streaming("r2");
    c.exec("r1", "INSERT INTO t VALUES (3, 'on the new timeline')");

    let run = resync(&c, "p0", "r1", c.port("r1"));
    assert!(run.status.success(), "{}", run.output());
    assert!(
        run.stdout.contains("resync: pg_rewind ok\n"),
        "{}",
        run.output()
    );
    assert!(!run.stdout.contains("pg_basebackup"), "{}", run.output());
    // pg_rewind really rewound: p0 had WAL past the fork point.
    assert!(
        run.stdout.contains("servers diverged at WAL location"),
        "{}",
        run.output()
    );
    eprintln!("p0 resynced through pg_rewind in {:?}", run.took);

    let pid = assert_streams_from(&c, "p0", "r1");
    assert_ne!(pid, crashed);
    assert_follows_new_timeline(&c, "the transaction the failover lost is gone from p0");

    // An unreachable primary: the hook fails with a clear message and touches nothing.
    let r2 = c.postmaster_pid("r2").unwrap();
    let run = resync(&c, "r2", "r1", free_port());
    assert!(!run.status.success(), "{}", run.output());
    assert!(
        run.stderr
            .contains("resync: error: primary unreachable (host=127.0.0.1 port="),
        "{}",
        run.output()
    );
    assert!(run.stderr.contains("r2 left as it was"), "{}", run.output());
    assert!(!run.stdout.contains("pg_rewind"), "{}", run.output());
    assert_eq!(c.postmaster_pid("r2"), Some(r2), "r2 was not stopped");
    c.wait_streaming("r2");

    // The harness stops a postmaster it did not start, and the hook is idempotent: a replica
    // that is already in sync comes back through pg_rewind ("no rewind required").
    c.stop("p0");
    assert!(!c.is_running("p0") && process_gone(pid));
    let run = resync(&c, "p0", "r1", c.port("r1"));
    assert!(run.status.success(), "{}", run.output());
    assert!(
        run.stdout.contains("no rewind required") && run.stdout.contains("resync: pg_rewind ok"),
        "{}",
        run.output()
    );
    let pid = assert_streams_from(&c, "p0", "r1");
    wait_value(&c, "p0", "SELECT count(*) FROM t", "3");

    // Dropping the cluster stops it too.
    let others: Vec<u32> = ["r1", "r2"]
        .iter()
        .map(|n| c.postmaster_pid(n).unwrap())
        .collect();
    let dir = c.dir.clone();
    drop(c);
    assert!(process_gone(pid), "p0 (started by pg_ctl) stopped by drop");
    assert!(others.iter().all(|&p| process_gone(p)));
    assert!(!dir.exists(), "{} deleted", dir.display());
}

// Feature: db-cache-optimization, Property 25: Automatic Replica Resync
#[test]
fn split_brain_old_primary_whose_wal_was_recycled_rejoins_through_pg_basebackup() {
    let c = PgCluster::start(1);
    eprintln!("cluster p0 + 1 replica started in {:?}", c.started_in());
    c.exec(
        "p0",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'before')",
    );
    c.wait_caught_up("r1");
    c.kill("p0");
    c.promote("r1");
    c.exec("r1", "INSERT INTO t VALUES (3, 'on the new timeline')");
    // Where r1's timeline 2 forked from timeline 1 (`1<TAB><lsn><TAB>reason`).
    let history = c
        .scalar("r1", "SELECT pg_read_file('pg_wal/00000002.history')")
        .unwrap();
    let fork = history
        .lines()
        .find_map(|l| Lsn::parse(l.split('\t').nth(1)?))
        .unwrap_or_else(|| panic!("timeline history: {history:?}"));
    let fork_segment = c.data_dir("p0").join("pg_wal").join(format!(
        "00000001{:08X}{:08X}",
        fork.0 >> 32,
        (fork.0 & 0xFFFF_FFFF) >> 24
    ));
    assert!(fork_segment.exists(), "{}", fork_segment.display());

    // Split brain: p0 comes back as a primary, takes writes, and checkpoints until the WAL
    // segment holding the fork point is recycled, which pg_rewind needs to find the last
    // common checkpoint.
    c.start_instance("p0");
    assert!(!c.lsn("p0").in_recovery, "p0 is a primary again");
    c.exec("p0", "ALTER SYSTEM SET wal_keep_size = 0");
    c.exec("p0", "SELECT pg_reload_conf()");
    for k in 0..20 {
        if !fork_segment.exists() {
            break;
        }
        c.exec(
            "p0",
            &format!("INSERT INTO t VALUES ({}, 'split brain')", 100 + k),
        );
        c.exec("p0", "SELECT pg_switch_wal()");
        c.exec("p0", "CHECKPOINT");
    }
    assert!(
        !fork_segment.exists(),
        "{} still there after 20 checkpoints",
        fork_segment.display()
    );
    let split = c.postmaster_pid("p0").unwrap();

    let run = resync(&c, "p0", "r1", c.port("r1"));
    assert!(run.status.success(), "{}", run.output());
    assert!(
        run.stdout.contains("resync: p0 stopped (fast)\n"),
        "the running split-brain primary was stopped first\n{}",
        run.output()
    );
    assert!(
        run.stdout
            .contains("resync: pg_rewind failed, pg_basebackup ok\n"),
        "{}",
        run.output()
    );
    assert!(
        run.stdout
            .contains(fork_segment.file_name().unwrap().to_str().unwrap()),
        "pg_rewind failed for the recycled segment\n{}",
        run.output()
    );
    eprintln!("p0 resynced through pg_basebackup in {:?}", run.took);
    assert!(process_gone(split));

    assert_streams_from(&c, "p0", "r1");
    assert_follows_new_timeline(&c, "the split-brain writes are gone from p0");

    // `kill` and `start_instance` on a postmaster the harness did not start.
    let pid = c.postmaster_pid("p0").unwrap();
    c.kill("p0");
    assert!(!c.is_running("p0") && process_gone(pid));
    c.start_instance("p0");
    assert_eq!(
        parent_of(c.postmaster_pid("p0").unwrap()),
        std::process::id()
    );
    c.wait_streaming("p0");
}

/// Run only as a child of `postmasters_started_outside_the_harness_die_with_the_test_binary`
/// (a no-op otherwise): starts a lone primary, restarts it with `pg_ctl start` (not our
/// child), prints its pid and directory, then exits (`exit`: the exit handler runs, no drop) or
/// aborts (`abort`: nothing of ours runs).
#[test]
fn external_postmaster_child() {
    let Some(mode) = std::env::var_os("STRATA_PG_EXTERNAL_CHILD") else {
        return;
    };
    let c = PgCluster::start(0);
    c.stop("p0");
    let pg_ctl = c.pg_bin().join("pg_ctl");
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(pg_ctl);
        cmd
    } else {
        Command::new(pg_ctl)
    };
    let out = cmd
        .arg("-D")
        .arg(c.data_dir("p0"))
        .arg("-l")
        .arg(c.log_path("p0"))
        .args(["-w", "start"])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid = c.postmaster_pid("p0").unwrap();
    assert_ne!(parent_of(pid), std::process::id());
    println!("PID {pid}");
    println!("DIR {}", c.dir.display());
    if mode == "abort" {
        std::process::abort();
    }
    std::process::exit(0);
}

#[test]
fn postmasters_started_outside_the_harness_die_with_the_test_binary() {
    for mode in ["exit", "abort"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "external_postmaster_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("STRATA_PG_EXTERNAL_CHILD", mode)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), mode == "exit", "{stdout}\n{stderr}");
        // A line may start with the harness's "test external_postmaster_child ... ".
        let field = |key: &str| {
            stdout
                .lines()
                .find_map(|l| Some(l[l.find(key)? + key.len()..].trim().to_string()))
                .unwrap_or_else(|| panic!("{mode} child output: {stdout}\n{stderr}"))
        };
        let pid: u32 = field("PID ").parse().unwrap();
        let dir = PathBuf::from(field("DIR "));
        let t0 = Instant::now();
        assert!(
            wait_until(DEADLINE, || process_gone(pid)),
            "postmaster {pid} outlived its test binary ({mode})"
        );
        eprintln!(
            "{mode}: the pg_ctl-started postmaster was gone {:?} after its binary ended",
            t0.elapsed()
        );
        if mode == "exit" {
            assert!(!dir.exists(), "{} deleted at exit", dir.display());
        } else {
            sweep_stale_dirs();
            assert!(!dir.exists(), "stale {} swept", dir.display());
        }
    }
}
