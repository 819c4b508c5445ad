//! Replica lag from the outside, on a PostgreSQL cluster of this test binary's own (replay is
//! paused here, which would disturb other tests): a replica whose replay is paused stops getting
//! reads once its lag passes MAXLAG, reads fall back to the primary when no replica is eligible,
//! a connection reads its own writes even then, a paused replica's result is never cached, and
//! the database series on /metrics move with the traffic.

mod support;

use redis::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::pg::{unique_name, PgCluster};
use support::query::{database_section, json, status};
use support::{free_port, http_get, wait_until, Strata};

/// The tests here pause and resume replicas of the one cluster: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held by a test: one test at a time, and every replica replaying again when it ends, even
/// by a panic.
struct Serial(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

impl Drop for Serial {
    fn drop(&mut self) {
        let c = PgCluster::shared();
        for r in c.replicas() {
            c.resume_replay(&r.name);
        }
    }
}

fn serial() -> Serial {
    Serial(SERIAL.lock().unwrap_or_else(|p| p.into_inner()))
}

fn strata(extra: &str) -> Strata {
    let http = format!("[http]\nlisten = \"127.0.0.1:{}\"\n", free_port());
    Strata::with_config(&(http + &database_section(PgCluster::shared(), extra)))
}

/// Sources of `n` NOCACHE reads.
fn sources(c: &mut redis::Connection, n: usize, rest: &[&str]) -> HashMap<String, usize> {
    let mut args = vec!["NOCACHE"];
    args.extend_from_slice(rest);
    let mut seen = HashMap::new();
    for _ in 0..n {
        let j = json(c, "SELECT 1", &args);
        *seen
            .entry(j["source"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    seen
}

/// Whether NOCACHE reads reach `n` different replicas.
fn replicas_up(c: &mut redis::Connection, n: usize) -> bool {
    let seen = sources(c, 30, &[]);
    seen.keys().filter(|k| k.starts_with("replica:")).count() == n
}

/// Keeps writing on the primary so a paused replica falls behind.
fn writer(stop: Arc<AtomicBool>, table: String) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let c = PgCluster::shared();
        while !stop.load(Ordering::SeqCst) {
            c.exec("p0", &format!("INSERT INTO {table} VALUES (1)"));
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

// Feature: db-cache-optimization, Property 12: Replica Lag Fallback
// Feature: db-cache-optimization, Property 22: Replication Lag Bounds
#[test]
fn a_paused_replica_gets_no_reads_beyond_maxlag() {
    let _serial = serial();
    let s = strata("max_replica_lag_ms = 300");
    let c = PgCluster::shared();
    let mut r = s.conn();
    assert!(
        wait_until(Duration::from_secs(15), || replicas_up(&mut r, 3)),
        "three replicas in rotation"
    );
    let t = unique_name("lag");
    c.exec("p0", &format!("CREATE TABLE {t} (n int)"));
    for r in c.replicas() {
        c.wait_caught_up(&r.name);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(stop.clone(), t.clone());

    c.pause_replay("r1");
    std::thread::sleep(Duration::from_millis(600));
    let seen = sources(&mut r, 60, &[]);
    assert!(
        !seen.contains_key("replica:r1"),
        "paused r1 served reads: {seen:?}"
    );
    assert!(seen.keys().all(|k| k.starts_with("replica:")), "{seen:?}");
    // A bigger MAXLAG admits it again.
    let seen = sources(&mut r, 60, &["MAXLAG", "60000"]);
    assert!(
        seen.contains_key("replica:r1"),
        "MAXLAG 60000 admits r1: {seen:?}"
    );

    // Nothing read from the lagging replica is cached: a read through r1 (MAXLAG large) of the
    // table a write just changed is answered but not stored.
    let mut w2 = s.conn();
    json(&mut w2, &format!("INSERT INTO {t} VALUES (2)"), &[]);
    let mut from_r1 = 0;
    let sql = format!("SELECT count(*)::int FROM {t} WHERE n = 2 AND $1::int > 0");
    for i in 1..=30 {
        let i = i.to_string();
        let args = ["ARGS", "1", i.as_str(), "MAXLAG", "60000"];
        let j = json(&mut r, &sql, &args);
        if j["source"] == "replica:r1" {
            from_r1 += 1;
            assert_eq!(j["rows"][0][0], 0, "r1 was paused before the write");
        }
        // Whatever answered, the cache holds nothing older than the write.
        let again = json(&mut r, &sql, &args);
        if again["source"] == "l1" {
            assert_eq!(
                again["rows"][0][0], 1,
                "a result older than the write was cached"
            );
        }
    }
    assert!(from_r1 > 0, "some reads went to r1");

    // Every replica paused: reads go to the primary.
    c.pause_replay("r2");
    c.pause_replay("r3");
    std::thread::sleep(Duration::from_millis(600));
    let seen = sources(&mut r, 20, &[]);
    assert_eq!(seen.get("primary"), Some(&20), "{seen:?}");

    // Resumed, they come back.
    for name in ["r1", "r2", "r3"] {
        c.resume_replay(name);
    }
    stop.store(true, Ordering::SeqCst);
    w.join().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || sources(&mut r, 60, &[]).len()
            == 3),
        "all replicas back in rotation"
    );
}

/// Read your writes while the replicas are behind: the writing connection's reads come from the
/// primary (or a replica past the write), so they always see the write.
#[test]
fn read_your_writes_while_replicas_lag() {
    let _serial = serial();
    let s = strata("max_replica_lag_ms = 60000");
    let c = PgCluster::shared();
    let t = unique_name("ryw_lag");
    c.exec(
        "p0",
        &format!("CREATE TABLE {t} (id int primary key, n int); INSERT INTO {t} VALUES (1, 0)"),
    );
    for r in c.replicas() {
        c.wait_caught_up(&r.name);
    }
    let mut r = s.conn();
    let mut other = s.conn();
    // r2 stays paused through this test only briefly; the others keep replaying.
    c.pause_replay("r2");
    for i in 1..=20 {
        json(&mut r, &format!("UPDATE {t} SET n = {i} WHERE id = 1"), &[]);
        let j = json(&mut r, &format!("SELECT n FROM {t} WHERE id = 1"), &[]);
        assert_eq!(j["rows"][0][0], i, "{j}");
        assert_ne!(j["source"], "replica:r2", "r2 has not replayed the write");
        // Another connection, within its MAXLAG, may read older data, but never from the cache.
        let o = json(&mut other, &format!("SELECT n FROM {t} WHERE id = 1"), &[]);
        if o["source"] == "l1" {
            assert_eq!(o["rows"][0][0], i, "cached stale value: {o}");
        }
    }
    c.resume_replay("r2");
}

// Feature: db-cache-optimization, Property 38: Database Metrics Exposure
#[test]
fn database_series_on_metrics_move_with_traffic() {
    let _serial = serial();
    let s = strata("");
    let mut r = s.conn();
    let port = s.http_port.expect("http port");
    let value = |body: &str, series: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(wait_until(Duration::from_secs(15), || replicas_up(
        &mut r, 3
    )));
    let (_, before) = http_get(port, "/metrics");
    sources(&mut r, 30, &[]);
    let _ = redis::cmd("QUERY")
        .arg("SELECT * FROM no_such_table_here")
        .query::<Value>(&mut r);
    json(&mut r, "SELECT 42", &["CONSISTENCY", "STRONG"]);
    let (_, after) = http_get(port, "/metrics");
    let sum = |body: &str, name: &str| -> f64 {
        ["p0", "r1", "r2", "r3"]
            .iter()
            .map(|i| {
                let role = if *i == "p0" { "primary" } else { "replica" };
                value(
                    body,
                    &format!("strata_db_{name}{{instance=\"{i}\",role=\"{role}\"}}"),
                )
            })
            .sum()
    };
    assert!(
        sum(&after, "queries_total") >= sum(&before, "queries_total") + 31.0,
        "{after}"
    );
    assert!(sum(&after, "errors_total") >= sum(&before, "errors_total") + 1.0);
    assert!(
        value(
            &after,
            "strata_db_query_duration_seconds_count{instance=\"p0\",role=\"primary\"}"
        ) > value(
            &before,
            "strata_db_query_duration_seconds_count{instance=\"p0\",role=\"primary\"}"
        )
    );
    for series in [
        "strata_db_replica_lag_seconds{instance=\"r1\",role=\"replica\"}",
        "strata_db_instance_up{instance=\"r3\",role=\"replica\"} 1",
        "strata_db_pool_connections{instance=\"p0\",pool=\"write\"}",
        "strata_db_pool_idle{instance=\"r2\",pool=\"read\"}",
        "strata_db_pool_wait_seconds_bucket{le=\"+Inf\",instance=\"r1\",pool=\"read\"}",
        "strata_query_cache_entries",
        "strata_cache_hits_total{layer=\"query\"}",
    ] {
        assert!(after.contains(series), "{series} missing from /metrics");
    }
    // INFO database agrees.
    let info: String = redis::cmd("INFO").arg("database").query(&mut r).unwrap();
    assert!(
        info.contains("database_enabled:1") && info.contains("db1:name=r1,role=replica"),
        "{info}"
    );
}

// Feature: db-cache-optimization, Property 36: Traffic Reduction on High CPU
#[test]
fn a_replica_at_high_cpu_gets_a_smaller_share() {
    let _serial = serial();
    let c = PgCluster::shared();
    let metrics = Arc::new(support::pg::MetricsServer::start());
    let busy = Arc::new(std::sync::Mutex::new(0.05f64));
    let stop = Arc::new(AtomicBool::new(false));
    // node_exporter's CPU counters, advancing as a machine at `busy` would.
    let ticker = {
        let (busy, stop, m) = (busy.clone(), stop.clone(), metrics.clone());
        std::thread::spawn(move || {
            let (mut idle, mut user) = (1000.0, 100.0);
            while !stop.load(Ordering::SeqCst) {
                let b = *busy.lock().unwrap();
                user += b * 0.05;
                idle += (1.0 - b) * 0.05;
                m.set(r#"node_cpu_seconds_total{cpu="0",mode="idle"}"#, idle);
                m.set(r#"node_cpu_seconds_total{cpu="0",mode="user"}"#, user);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut cfg = format!(
        "[database]\nlag_probe_ms = 50\npool_min = 2\nmetrics_interval_ms = 200\n\
         [database.primary]\nname = \"{}\"\nurl = \"{}\"\n",
        c.primary().name,
        c.primary().url()
    );
    for r in c.replicas() {
        let extra = if r.name == "r2" {
            format!("metrics_url = \"{}\"\n", metrics.url())
        } else {
            String::new()
        };
        cfg.push_str(&format!(
            "[[database.replicas]]\nname = \"{}\"\nurl = \"{}\"\n{extra}",
            r.name,
            r.url()
        ));
    }
    cfg.push_str(support::query::NO_QUERY_LIMITS);
    let s = Strata::with_config(&cfg);
    let mut r = s.conn();
    assert!(wait_until(Duration::from_secs(15), || replicas_up(
        &mut r, 3
    )));
    let cpu = |r: &mut redis::Connection| -> f64 {
        status(r)
            .into_iter()
            .find(|i| i["name"] == "r2")
            .and_then(|i| i["cpu"].parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(wait_until(Duration::from_secs(5), || (0.0..20.0)
        .contains(&cpu(&mut r))));
    let share = |r: &mut redis::Connection| {
        let seen = sources(r, 300, &[]);
        *seen.get("replica:r2").unwrap_or(&0) as f64 / 300.0
    };
    let before = share(&mut r);
    *busy.lock().unwrap() = 0.95;
    assert!(
        wait_until(Duration::from_secs(5), || cpu(&mut r) >= 80.0),
        "DB.STATUS shows r2's CPU: {:?}",
        status(&mut r)
    );
    let after = share(&mut r);
    assert!(
        after < before * 0.75,
        "r2's share at 95 % CPU ({after:.2}) is well below its share at 5 % ({before:.2})"
    );
    stop.store(true, Ordering::SeqCst);
    ticker.join().unwrap();
}
