//! High availability from the outside: the real `strata` binary in front of a PostgreSQL 15
//! primary with three streaming replicas of each test's own (faults are injected: killed,
//! stopped, paused, cut off). Health checks run every second here and the primary is failed
//! over after 2 s, so that the tests are quick; the behaviour is the same at the defaults.
//!
//! Killing the primary while clients read and write: reads never fail, writes fail fast with
//! `-UNAVAILABLE` until the replica with the most received WAL is promoted, then succeed on it;
//! no acknowledged write is lost (synchronous replication); the other replicas follow the new
//! primary. Cutting Strata off from a live primary: no promotion. A stopped replica leaves the
//! rotation within a check and comes back; a paused one stops getting reads; a replica pointed
//! elsewhere is repointed (Property 25); role changes made outside Strata are followed.

mod support;

use redis::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::pg::{unique_name, PgCluster};
use support::proxy::Proxy;
use support::query::{json, query, status, status_summary};
use support::sinks::{HttpSink, SmtpSink};
use support::{free_port, wait_until, RedisServer, Strata};

/// Each test runs its own cluster: one at a time on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const FAILOVER_AFTER_S: u64 = 2;

/// A local sink for every alert channel: generic webhook, Slack, PagerDuty, SMTP.
struct Channels {
    webhook: HttpSink,
    slack: HttpSink,
    pagerduty: HttpSink,
    smtp: SmtpSink,
}

impl Channels {
    fn start() -> Channels {
        Channels {
            webhook: HttpSink::start(),
            slack: HttpSink::start(),
            pagerduty: HttpSink::start(),
            smtp: SmtpSink::start(),
        }
    }

    fn config(&self) -> String {
        format!(
            "[alerts]
webhook_url = \"{}\"
slack_webhook_url = \"{}\"
             pagerduty_url = \"{}\"
pagerduty_routing_key = \"test-key\"
             smtp_host = \"127.0.0.1\"
smtp_port = {}
smtp_tls = \"none\"
             email_from = \"strata@example.com\"
email_to = [\"oncall@example.com\"]
",
            self.webhook.url("/hook"),
            self.slack.url("/slack"),
            self.pagerduty.url("/v2/enqueue"),
            self.smtp.port()
        )
    }

    /// What each channel received, as (channel, status, key): status is firing, resolved or
    /// event.
    fn received(&self) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        for r in self.webhook.received() {
            let j = r.json();
            out.push((
                "webhook",
                j["status"].as_str().unwrap_or("").to_string(),
                j["key"].as_str().unwrap_or("").to_string(),
            ));
        }
        for r in self.slack.received() {
            let text = r.json()["text"].as_str().unwrap_or("").to_string();
            let status = ["FIRING", "RESOLVED", "EVENT"]
                .into_iter()
                .find(|s| text.contains(s))
                .unwrap_or("")
                .to_ascii_lowercase();
            let key = text.rsplit('(').next().unwrap_or("").trim_end_matches(')');
            out.push(("slack", status, key.to_string()));
        }
        for r in self.pagerduty.received() {
            let j = r.json();
            let key = j["payload"]["custom_details"]["key"]
                .as_str()
                .or(j["dedup_key"].as_str())
                .unwrap_or("")
                .to_string();
            let status = match j["event_action"].as_str() {
                Some("resolve") => "resolved",
                _ if j["dedup_key"].as_str() == Some(key.as_str()) => "firing",
                _ => "event",
            };
            out.push(("pagerduty", status.to_string(), key));
        }
        for m in self.smtp.received() {
            let subject = m.subject().unwrap_or_default();
            let status = subject
                .split(':')
                .next()
                .unwrap_or("")
                .rsplit(' ')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            let key = m
                .body()
                .lines()
                .find_map(|l| l.strip_prefix("key: ").map(str::to_string))
                .unwrap_or_default();
            out.push(("email", status, key));
        }
        out
    }

    /// How many notifications with this status and key (prefix) each channel got.
    fn counts(&self, status: &str, key: &str) -> HashMap<&'static str, usize> {
        let mut n: HashMap<&'static str, usize> = ["webhook", "slack", "pagerduty", "email"]
            .into_iter()
            .map(|c| (c, 0))
            .collect();
        for (channel, s, k) in self.received() {
            if s == status && k.starts_with(key) {
                *n.entry(channel).or_default() += 1;
            }
        }
        n
    }

    /// Waits until every channel got one such notification; then checks it stays one.
    fn assert_once(&self, status: &str, key: &str) {
        let all_one = |n: &HashMap<&str, usize>| n.values().all(|&v| v == 1);
        assert!(
            wait_until(Duration::from_secs(15), || self
                .counts(status, key)
                .values()
                .all(|&v| v >= 1)),
            "{status} {key}: {:?}; received {:?}",
            self.counts(status, key),
            self.received()
        );
        std::thread::sleep(Duration::from_millis(300));
        let n = self.counts(status, key);
        assert!(all_one(&n), "{status} {key} more than once: {n:?}");
    }
}

/// Strata's config for cluster `c`, the primary reached at `primary_port`.
fn config(c: &PgCluster, primary_port: u16, health: &str) -> String {
    let mut cfg = format!(
        "[http]\nlisten = \"127.0.0.1:{}\"\n\
         [health]\ninterval_s = 1\ncheck_timeout_ms = 1000\nfailover_after_s = {FAILOVER_AFTER_S}\n\
         lag_alert_s = 1\n{health}\n[breaker]\nmin_calls = 10\nopen_s = 2\n\
         [database]\nlag_probe_ms = 50\npool_min = 1\npool_max = 10\nconnect_timeout_ms = 1000\n\
         acquire_timeout_ms = 2000\n\
         [database.primary]\nname = \"p0\"\nurl = \"postgres://postgres@127.0.0.1:{primary_port}/postgres\"\n",
        free_port()
    );
    for r in c.replicas() {
        cfg.push_str(&format!(
            "[[database.replicas]]\nname = \"{}\"\nurl = \"{}\"\n",
            r.name,
            r.url()
        ));
    }
    cfg.push_str(support::query::NO_QUERY_LIMITS);
    cfg
}

fn strata(c: &PgCluster, health: &str) -> Strata {
    let s = Strata::with_config(&config(c, c.port("p0"), health));
    wait_all_up(&s, 4);
    s
}

/// Waits until `n` instances are up in DB.STATUS with their first check done.
fn wait_all_up(s: &Strata, n: usize) {
    let mut conn = s.conn();
    assert!(
        wait_until(Duration::from_secs(20), || {
            status(&mut conn)
                .iter()
                .filter(|i| i["status"] == "up" && i["health"] == "ok")
                .count()
                == n
        }),
        "instances never all up: {:?}",
        status(&mut conn)
    );
}

fn instance(s: &Strata, name: &str) -> HashMap<String, String> {
    status(&mut s.conn())
        .into_iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in DB.STATUS"))
}

fn primary_name(s: &Strata) -> String {
    status(&mut s.conn())
        .into_iter()
        .find(|i| i["role"] == "primary")
        .map(|i| i["name"].clone())
        .unwrap_or_default()
}

fn make_table(c: &PgCluster, prefix: &str) -> String {
    let t = unique_name(prefix);
    c.exec("p0", &format!("CREATE TABLE {t} (id bigint PRIMARY KEY)"));
    for r in c.replicas() {
        c.wait_caught_up(&r.name);
    }
    t
}

fn err_text(r: redis::RedisResult<Value>) -> Option<String> {
    r.err().map(|e| e.to_string())
}

/// What the client threads saw.
#[derive(Default)]
struct Seen {
    acked: Mutex<Vec<i64>>,
    write_errors: Mutex<Vec<(Instant, String)>>,
    read_errors: Mutex<Vec<String>>,
    reads: AtomicU64,
    /// When the first write after the fault succeeded.
    first_ok_after: Mutex<Option<Instant>>,
}

/// Readers (NOCACHE, so that every read reaches PostgreSQL) and one writer, until `stop`.
fn clients(
    s: &Strata,
    t: &str,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Seen>,
    fault_at: &Arc<Mutex<Option<Instant>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut handles = Vec::new();
    for _ in 0..2 {
        let (client, t, stop, seen) = (s.client(), t.to_string(), stop.clone(), seen.clone());
        handles.push(std::thread::spawn(move || {
            let mut c = client.get_connection().expect("reader connection");
            while !stop.load(Ordering::SeqCst) {
                let r = query(&mut c, &format!("SELECT count(*) FROM {t}"), &["NOCACHE"]);
                match err_text(r) {
                    None => seen.reads.fetch_add(1, Ordering::Relaxed),
                    Some(e) => {
                        seen.read_errors.lock().unwrap().push(e);
                        0
                    }
                };
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    let (client, t, stop, seen, fault_at) = (
        s.client(),
        t.to_string(),
        stop.clone(),
        seen.clone(),
        fault_at.clone(),
    );
    handles.push(std::thread::spawn(move || {
        let mut c = client.get_connection().expect("writer connection");
        let mut id = 0i64;
        while !stop.load(Ordering::SeqCst) {
            id += 1;
            let started = Instant::now();
            let r = query(
                &mut c,
                &format!("INSERT INTO {t} VALUES ($1)"),
                &["ARGS", "1", &id.to_string()],
            );
            match err_text(r) {
                None => {
                    seen.acked.lock().unwrap().push(id);
                    let fault = *fault_at.lock().unwrap();
                    if fault.is_some_and(|f| started > f) {
                        seen.first_ok_after
                            .lock()
                            .unwrap()
                            .get_or_insert(Instant::now());
                    }
                }
                Some(e) => seen.write_errors.lock().unwrap().push((started, e)),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }));
    handles
}

/// SIGKILL to a postmaster and every process it started, children first stopped from
/// noticing (all are killed at once).
fn kill9(postmaster: u32) {
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if support::proc_stat(pid).is_some_and(|(_, ppid)| ppid == postmaster) {
            pids.push(pid);
        }
    }
    for pid in pids {
        // SAFETY: kill(2) on the test cluster's own PostgreSQL processes.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

/// The replica `name` streams from the instance listening on `port`.
fn streams_from(c: &PgCluster, name: &str, port: u16) -> bool {
    c.try_sql(name, "SELECT status, sender_port FROM pg_stat_wal_receiver")
        .ok()
        .and_then(|rows| rows.into_iter().next())
        .is_some_and(|r| {
            r[0].as_deref() == Some("streaming") && r[1].as_deref() == Some(&port.to_string())
        })
}

// Feature: db-cache-optimization, Property 5: Primary Failover
#[test]
fn killing_the_primary_promotes_the_replica_with_the_most_wal_and_loses_no_acknowledged_write() {
    let lost = kill_the_primary(true);
    assert_eq!(
        lost, 0,
        "acknowledged writes lost with synchronous replication"
    );
}

/// The same with asynchronous replication: reports how many acknowledged writes the promoted
/// replica had not received (docs/operations.md).
#[test]
fn killing_the_primary_with_asynchronous_replication_reports_lost_writes() {
    let lost = kill_the_primary(false);
    eprintln!("asynchronous replication: {lost} acknowledged writes lost");
}

/// Kills the primary under read and write traffic and checks the failover; returns how many
/// acknowledged writes the new primary lacks.
fn kill_the_primary(synchronous: bool) -> usize {
    let _serial = serial();
    let c = PgCluster::start(3);
    if synchronous {
        // A commit is acknowledged once a standby has it.
        c.exec(
            "p0",
            "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (r1, r2, r3)'",
        );
        c.exec("p0", "SELECT pg_reload_conf()");
        // The replicas carry the same setting, as copies of the primary's configuration do:
        // the promoted one must not wait for itself or for the dead primary.
        for r in ["r1", "r2", "r3"] {
            c.exec(
                r,
                "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (p0, r1, r2, r3)'",
            );
            c.exec(r, "SELECT pg_reload_conf()");
        }
    }
    let t = make_table(&c, "ha_kill");
    let channels = Channels::start();
    let s = strata(&c, &channels.config());
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let fault_at = Arc::new(Mutex::new(None));
    let handles = clients(&s, &t, &stop, &seen, &fault_at);
    assert!(wait_until(Duration::from_secs(10), || seen
        .acked
        .lock()
        .unwrap()
        .len()
        >= 50));
    let before: Vec<_> = ["r1", "r2", "r3"]
        .iter()
        .map(|r| (r.to_string(), c.lsn(r).receive))
        .collect();
    let killed = Instant::now();
    // kill -9 of the whole server, postmaster and backends: a crash with no shutdown at all.
    kill9(c.postmaster_pid("p0").expect("p0 runs"));
    // A write that started before the processes were gone may still succeed: count from when
    // nothing of p0 answers any more.
    let pg_dead = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_err();
    assert!(wait_until(Duration::from_secs(5), || pg_dead(c.port("p0"))));
    *fault_at.lock().unwrap() = Some(Instant::now());
    let resumed = wait_until(Duration::from_secs(30), || {
        seen.first_ok_after.lock().unwrap().is_some()
    });
    // A little more traffic on the new primary.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().unwrap();
    }
    assert!(
        resumed,
        "writes never resumed; errors: {:?}",
        seen.write_errors
            .lock()
            .unwrap()
            .iter()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
    );
    let outage = seen.first_ok_after.lock().unwrap().unwrap() - killed;
    let new = primary_name(&s);
    assert_ne!(new, "p0");
    assert!(!new.is_empty(), "{:?}", status(&mut s.conn()));
    // Reads never failed: replicas served them throughout.
    let read_errors = seen.read_errors.lock().unwrap().clone();
    assert!(read_errors.is_empty(), "read errors: {read_errors:?}");
    assert!(seen.reads.load(Ordering::Relaxed) > 0);
    // Writes failed fast, with UNAVAILABLE, and for no longer than failover_after_s + 5 s.
    for (_, e) in seen.write_errors.lock().unwrap().iter() {
        assert!(e.contains("UNAVAILABLE"), "{e}");
    }
    assert!(
        outage <= Duration::from_secs(FAILOVER_AFTER_S + 5),
        "write outage {outage:?}"
    );
    // No acknowledged write lost.
    let rows = c.sql(&new, &format!("SELECT id FROM {t}"));
    let present: HashSet<i64> = rows
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    let acked = seen.acked.lock().unwrap().clone();
    let lost: Vec<_> = acked.iter().filter(|id| !present.contains(id)).collect();
    // The promoted replica had received the most WAL when the primary died (they all had
    // at least what they had before).
    let best = before.iter().map(|(_, l)| *l).max().unwrap();
    let promoted_before = before.iter().find(|(n, _)| *n == new).unwrap().1;
    assert!(promoted_before.is_some() && best.is_some());
    if synchronous {
        let names = c.scalar(&new, "SHOW synchronous_standby_names").unwrap();
        assert!(
            names.starts_with("ANY 1 (") && !names.contains(&format!("\"{new}\"")),
            "{names}"
        );
    }
    // The other replicas stream from the new primary.
    let port = c.port(&new);
    for r in ["r1", "r2", "r3"].iter().filter(|r| **r != new) {
        assert!(
            wait_until(Duration::from_secs(15), || streams_from(&c, r, port)),
            "{r} does not stream from {new}"
        );
    }
    // Feature: db-cache-optimization, Property 6: Administrator Notification
    channels.assert_once("event", "failover_started");
    channels.assert_once("event", "failover_finished");
    channels.assert_once("firing", "instance_down:p0");
    let (failovers, changes) = status_summary(&mut s.conn());
    assert_eq!(failovers, 1);
    assert!(
        changes.iter().any(|ch| ch.contains(&format!("-> {new}"))),
        "{changes:?}"
    );
    eprintln!(
        "failover (synchronous: {synchronous}): write outage {outage:?}, {} writes acked, {} write errors, {} reads, {} lost",
        acked.len(),
        seen.write_errors.lock().unwrap().len(),
        seen.reads.load(Ordering::Relaxed),
        lost.len()
    );
    lost.len()
}

#[test]
fn cut_off_from_a_live_primary_strata_does_not_promote() {
    let _serial = serial();
    let c = PgCluster::start(3);
    let t = make_table(&c, "ha_cut");
    let proxy = Proxy::start(c.port("p0"));
    let channels = Channels::start();
    let s = Strata::with_config(&config(&c, proxy.port(), &channels.config()));
    wait_all_up(&s, 4);
    let mut conn = s.conn();
    query(&mut conn, &format!("INSERT INTO {t} VALUES (1)"), &[]).unwrap();
    proxy.block();
    // Well past failover_after_s: the replicas still stream from p0, so nothing is promoted.
    std::thread::sleep(Duration::from_secs(FAILOVER_AFTER_S * 3));
    let e = err_text(query(
        &mut conn,
        &format!("INSERT INTO {t} VALUES (2)"),
        &[],
    ))
    .expect("a write while cut off fails");
    assert!(e.contains("UNAVAILABLE"), "{e}");
    for r in ["r1", "r2", "r3"] {
        assert_eq!(
            c.scalar(r, "SELECT pg_is_in_recovery()").as_deref(),
            Some("t")
        );
    }
    assert_eq!(primary_name(&s), "p0");
    assert_eq!(status_summary(&mut conn).0, 0);
    // Reads still work, from the replicas.
    let j = json(
        &mut conn,
        &format!("SELECT count(*) AS n FROM {t}"),
        &["NOCACHE"],
    );
    assert!(j["source"].as_str().unwrap().starts_with("replica:"), "{j}");
    channels.assert_once("firing", "primary_cut_off:p0");
    assert!(channels
        .counts("event", "failover_started")
        .values()
        .all(|&n| n == 0));
    proxy.unblock();
    assert!(
        wait_until(Duration::from_secs(15), || query(
            &mut conn,
            &format!("INSERT INTO {t} VALUES (3)"),
            &[]
        )
        .is_ok()),
        "writes did not resume after the partition healed"
    );
    channels.assert_once("resolved", "primary_cut_off:p0");
}

// Feature: db-cache-optimization, Property 7: Unhealthy Instance Removal
// Feature: db-cache-optimization, Property 24: Replica Capacity
#[test]
fn a_stopped_replica_leaves_the_rotation_within_one_interval_and_returns() {
    let _serial = serial();
    let c = PgCluster::start(3);
    let channels = Channels::start();
    let s = strata(&c, &channels.config());
    let mut conn = s.conn();
    // Reads reach all three replicas (once each has fresh lag samples and response times).
    let all = ["replica:r1", "replica:r2", "replica:r3"];
    assert!(
        wait_until(Duration::from_secs(15), || {
            let seen: HashSet<String> = (0..30)
                .map(|_| {
                    json(&mut conn, "SELECT 1", &["NOCACHE"])["source"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            all.iter().all(|r| seen.contains(*r))
        }),
        "reads never reached all three replicas: {:?}",
        status(&mut conn)
    );
    let stopped = Instant::now();
    c.stop("r2");
    assert!(
        wait_until(Duration::from_secs(3), || instance(&s, "r2")["status"]
            == "down"),
        "r2 still up: {:?}",
        instance(&s, "r2")
    );
    let detected = stopped.elapsed();
    assert!(detected <= Duration::from_millis(1500), "{detected:?}");
    for _ in 0..60 {
        let j = json(&mut conn, "SELECT 1", &["NOCACHE"]);
        assert_ne!(j["source"], "replica:r2");
    }
    // Down and breaker open, each once on every channel.
    channels.assert_once("firing", "instance_down:r2");
    assert!(
        wait_until(Duration::from_secs(5), || instance(&s, "r2")["breaker"]
            == "open"),
        "{:?}",
        instance(&s, "r2")
    );
    channels.assert_once("firing", "breaker_open:r2");
    c.start_instance("r2");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let i = instance(&s, "r2");
            i["status"] == "up" && i["health"] == "ok"
        }),
        "r2 never came back: {:?}",
        instance(&s, "r2")
    );
    assert!(wait_until(Duration::from_secs(10), || (0..30).any(
        |_| json(&mut conn, "SELECT 1", &["NOCACHE"])["source"] == "replica:r2"
    )));
    channels.assert_once("resolved", "instance_down:r2");
    channels.assert_once("resolved", "breaker_open:r2");
    eprintln!("stopped replica detected in {detected:?}");
}

// Feature: db-cache-optimization, Property 8: Health Check Frequency
#[test]
fn every_instance_is_checked_once_per_interval_even_beside_a_hanging_one() {
    let _serial = serial();
    let c = PgCluster::start(3);
    // r3 is reached through a relay that will hang: its checks time out.
    let proxy = Proxy::start(c.port("r3"));
    let cfg = config(&c, c.port("p0"), "").replace(
        &c.url("r3"),
        &format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port()),
    );
    let s = Strata::with_config(&cfg);
    wait_all_up(&s, 4);
    proxy.block();
    let port = http_port(&cfg);
    let checks = |_: &Strata| -> HashMap<String, u64> {
        let (_, body) = support::http_get(port, "/metrics");
        body.lines()
            .filter(|l| l.starts_with("strata_db_health_checks_total{"))
            .map(|l| {
                let name = l
                    .split("instance=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                (
                    name.to_string(),
                    l.rsplit(' ').next().unwrap().parse().unwrap(),
                )
            })
            .collect()
    };
    let first = checks(&s);
    std::thread::sleep(Duration::from_secs(6));
    let second = checks(&s);
    for name in ["p0", "r1", "r2"] {
        let n = second[name] - first[name];
        assert!((5..=7).contains(&n), "{name}: {n} checks in 6 s");
    }
    // The hanging one is checked too (each check times out after 1 s), and is out.
    assert!(second["r3"] > first["r3"]);
    assert_eq!(instance(&s, "r3")["status"], "down");
}

/// The /metrics port of a config made by `config`.
fn http_port(cfg: &str) -> u16 {
    cfg.split("listen = \"127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|p| p.parse().ok())
        .expect("http listen port")
}

// Feature: db-cache-optimization, Property 23: Replication Lag Alerts
#[test]
fn a_paused_replica_gets_no_reads_until_it_catches_up() {
    let _serial = serial();
    let c = PgCluster::start(3);
    let t = make_table(&c, "ha_lag");
    let channels = Channels::start();
    let s = strata(&c, &channels.config());
    let mut conn = s.conn();
    c.pause_replay("r1");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, t, url) = (stop.clone(), t.clone(), c.url("p0"));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    client
                        .execute(&format!("INSERT INTO {t} VALUES ({i})"), &[])
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || instance(&s, "r1")["lag_ms"]
            .parse::<u64>()
            .is_ok_and(|l| l > 1500)),
        "{:?}",
        instance(&s, "r1")
    );
    for _ in 0..40 {
        let j = json(&mut conn, "SELECT 1", &["NOCACHE"]);
        assert_ne!(j["source"], "replica:r1");
    }
    channels.assert_once("firing", "replication_lag:r1");
    c.resume_replay("r1");
    assert!(
        wait_until(Duration::from_secs(10), || instance(&s, "r1")["lag_ms"]
            == "0"),
        "{:?}",
        instance(&s, "r1")
    );
    channels.assert_once("resolved", "replication_lag:r1");
    // Only r1 lagged.
    assert!(channels.received().iter().all(|(_, _, k)| {
        !k.starts_with("replication_lag:r2") && !k.starts_with("replication_lag:r3")
    }));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
}

// Feature: db-cache-optimization, Property 25: Automatic Replica Resync
#[test]
fn a_replica_pointed_nowhere_is_repointed_and_returns_to_rotation() {
    let _serial = serial();
    let c = PgCluster::start(3);
    let s = strata(&c, "");
    let dead = free_port();
    c.exec(
        "r2",
        &format!(
            "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={dead} user=postgres application_name=r2'"
        ),
    );
    c.exec("r2", "SELECT pg_reload_conf()");
    assert!(
        wait_until(Duration::from_secs(5), || !streams_from(
            &c,
            "r2",
            c.port("p0")
        )),
        "r2 kept streaming"
    );
    assert!(
        wait_until(Duration::from_secs(15), || streams_from(
            &c,
            "r2",
            c.port("p0")
        )),
        "Strata did not repoint r2: {:?}",
        instance(&s, "r2")
    );
    let i = instance(&s, "r2");
    assert!(i["repoints"].parse::<u64>().unwrap() >= 1, "{i:?}");
    assert!(wait_until(Duration::from_secs(10), || instance(&s, "r2")
        ["status"]
        == "up"));
}

#[test]
fn external_mode_follows_a_promotion_made_outside_and_never_promotes() {
    let _serial = serial();
    let c = PgCluster::start(3);
    let t = make_table(&c, "ha_ext");
    let s = strata(&c, "mode = \"external\"");
    let mut conn = s.conn();
    c.kill("p0");
    std::thread::sleep(Duration::from_secs(FAILOVER_AFTER_S * 2));
    for r in ["r1", "r2", "r3"] {
        assert_eq!(
            c.scalar(r, "SELECT pg_is_in_recovery()").as_deref(),
            Some("t")
        );
    }
    let e = err_text(query(
        &mut conn,
        &format!("INSERT INTO {t} VALUES (1)"),
        &[],
    ))
    .unwrap();
    assert!(e.contains("UNAVAILABLE") && e.contains("external"), "{e}");
    // The operator (or Patroni) promotes r3 and repoints the others.
    c.promote("r3");
    c.repoint("r1", "r3");
    c.repoint("r2", "r3");
    assert!(
        wait_until(Duration::from_secs(10), || primary_name(&s) == "r3"),
        "{:?}",
        status(&mut conn)
    );
    assert!(wait_until(Duration::from_secs(10), || query(
        &mut conn,
        &format!("INSERT INTO {t} VALUES (2)"),
        &[]
    )
    .is_ok()));
    assert_eq!(
        status_summary(&mut conn).0,
        0,
        "Strata promoted nothing itself"
    );
}

#[test]
fn db_failover_switches_over_and_rejoins_the_old_primary() {
    let _serial = serial();
    let c = PgCluster::start(3);
    let t = make_table(&c, "ha_switch");
    let s = strata(&c, &format!("resync_command = {:?}", c.resync_command()));
    let mut conn = s.conn();
    for id in 1..=20 {
        query(&mut conn, &format!("INSERT INTO {t} VALUES ({id})"), &[]).unwrap();
    }
    let e = redis::cmd("DB.FAILOVER")
        .arg("TO")
        .arg("nope")
        .query::<String>(&mut conn)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("no database instance is called 'nope'"),
        "{e}"
    );
    let out: String = redis::cmd("DB.FAILOVER")
        .arg("TO")
        .arg("r2")
        .query(&mut conn)
        .expect("DB.FAILOVER");
    assert!(out.contains("switched over from p0 to r2"), "{out}");
    assert!(out.contains("p0 rejoined as a replica"), "{out}");
    assert_eq!(primary_name(&s), "r2");
    query(&mut conn, &format!("INSERT INTO {t} VALUES (21)"), &[]).expect("write after switchover");
    assert_eq!(
        c.scalar("r2", &format!("SELECT count(*) FROM {t}"))
            .as_deref(),
        Some("21"),
        "every acknowledged write is on the new primary"
    );
    let port = c.port("r2");
    for r in ["p0", "r1", "r3"] {
        assert!(
            wait_until(Duration::from_secs(15), || streams_from(&c, r, port)),
            "{r} does not stream from r2"
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            let i = instance(&s, "p0");
            i["role"] == "replica" && i["status"] == "up" && i["in_recovery"] == "true"
        }),
        "{:?}",
        instance(&s, "p0")
    );
    // The old primary serves reads again, and is not read-only when promoted later.
    assert_eq!(
        c.scalar("p0", "SHOW default_transaction_read_only")
            .as_deref(),
        Some("off")
    );
    assert_eq!(status_summary(&mut conn).0, 1);
}

/// Two Strata instances sharing L2: only the holder of the lease promotes; the other follows
/// the new roles.
#[test]
fn with_several_instances_only_the_lease_holder_promotes_and_the_others_follow() {
    let _serial = serial();
    let c = PgCluster::start(3);
    let t = make_table(&c, "ha_lease");
    let up = RedisServer::start();
    let l2 = format!(
        "[l2]\nurl = \"redis://127.0.0.1:{}\"\ntimeout_ms = 500\n",
        up.port
    );
    let a = Strata::with_config(&(l2.clone() + &config(&c, c.port("p0"), "")));
    let b = Strata::with_config(&(l2 + &config(&c, c.port("p0"), "")));
    wait_all_up(&a, 4);
    wait_all_up(&b, 4);
    c.kill("p0");
    let new = |s: &Strata| {
        let p = primary_name(s);
        (!p.is_empty() && p != "p0").then_some(p)
    };
    assert!(wait_until(Duration::from_secs(20), || new(&a).is_some()
        && new(&b).is_some()));
    let (pa, pb) = (new(&a).unwrap(), new(&b).unwrap());
    assert_eq!(pa, pb, "both instances write to the same new primary");
    let promoted = ["r1", "r2", "r3"]
        .iter()
        .filter(|r| c.scalar(r, "SELECT pg_is_in_recovery()").as_deref() == Some("f"))
        .count();
    assert_eq!(promoted, 1, "exactly one replica promoted");
    let failovers = status_summary(&mut a.conn()).0 + status_summary(&mut b.conn()).0;
    assert_eq!(failovers, 1, "only the lease holder failed over");
    for s in [&a, &b] {
        let mut conn = s.conn();
        assert!(wait_until(Duration::from_secs(10), || query(
            &mut conn,
            &format!("INSERT INTO {t} SELECT coalesce(max(id), 0) + 1 FROM {t}"),
            &[]
        )
        .is_ok()));
    }
}

// Feature: db-cache-optimization, Property 25: Automatic Replica Resync
/// A replica promoted by mistake (a split brain) gets no traffic and is rejoined as a replica
/// through resync_command (pg_rewind), with the outcome notified.
#[test]
fn an_instance_running_as_a_second_primary_is_resynced_as_a_replica() {
    let _serial = serial();
    let c = PgCluster::start(3);
    let t = make_table(&c, "ha_stale");
    let channels = Channels::start();
    let s = strata(
        &c,
        &format!(
            "resync_command = {:?}\n{}",
            c.resync_command(),
            channels.config()
        ),
    );
    let mut conn = s.conn();
    c.promote("r3");
    c.exec("r3", &format!("INSERT INTO {t} VALUES (42)"));
    channels.assert_once("firing", "stale_primary:r3");
    for _ in 0..30 {
        let j = json(&mut conn, "SELECT 1", &["NOCACHE"]);
        assert_ne!(j["source"], "replica:r3");
    }
    assert_eq!(primary_name(&s), "p0");
    c.set_upstream("r3", Some("p0"));
    assert!(
        wait_until(Duration::from_secs(30), || streams_from(
            &c,
            "r3",
            c.port("p0")
        )),
        "r3 was not resynced: {:?}",
        instance(&s, "r3")
    );
    channels.assert_once("event", "resync_run");
    channels.assert_once("resolved", "stale_primary:r3");
    // Its split-brain write is gone; the primary's rows are there.
    c.exec("p0", &format!("INSERT INTO {t} VALUES (7)"));
    c.wait_caught_up("r3");
    assert_eq!(
        c.scalar("r3", &format!("SELECT string_agg(id::text, ',') FROM {t}"))
            .as_deref(),
        Some("7")
    );
    let i = instance(&s, "r3");
    assert!(i["last_resync"].contains("succeeded"), "{i:?}");
    assert!(wait_until(Duration::from_secs(10), || instance(&s, "r3")
        ["status"]
        == "up"));
}
