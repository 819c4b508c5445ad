//! Tiered mode in front of a real 3-master Redis Cluster (started by the test with
//! `redis-server --cluster-enabled yes` and `redis-cli --cluster create`): two Strata instances
//! behave like one coherent Redis, with keys spread over the nodes.

mod support;

use redis::{Commands, Value};
use std::time::Duration;
use support::{wait_until, ClusterOpts, RedisCluster, Strata};

fn tiered(cluster: &RedisCluster) -> Strata {
    tiered_with(cluster, "", "timeout_ms = 1000\n")
}

/// A tiered Strata in front of `cluster`; `top` goes before the `[l2]` section, `l2` in it.
fn tiered_with(cluster: &RedisCluster, top: &str, l2: &str) -> Strata {
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    let s = Strata::with_config(&format!(
        "{top}[l2]\ncluster = [{}]\n{l2}",
        seeds.join(", ")
    ));
    let mut c = s.conn();
    assert!(
        wait_until(Duration::from_secs(10), || {
            redis::cmd("INCR").arg("__up").query::<i64>(&mut c).is_ok()
        }),
        "Strata never reached the cluster"
    );
    s
}

fn get(c: &mut redis::Connection, k: &str) -> Option<String> {
    c.get(k).expect("GET")
}

#[test]
fn two_instances_in_front_of_a_cluster() {
    let cluster = RedisCluster::start(3);
    let (a, b) = (tiered(&cluster), tiered(&cluster));
    let (mut ca, mut cb, mut cu) = (a.conn(), b.conn(), cluster.conn());

    // Keys on every node: written through A, read through B, present in the cluster.
    let keys: Vec<String> = (0..60).map(|i| format!("key:{i}")).collect();
    for k in &keys {
        let _: () = ca.set(k, format!("v-{k}")).unwrap();
    }
    for k in &keys {
        assert_eq!(get(&mut cb, k), Some(format!("v-{k}")));
        let direct: Option<String> = cu.get(k).unwrap();
        assert_eq!(direct, Some(format!("v-{k}")));
    }
    // A write straight to the cluster reaches both L1s (BCAST tracking on every master).
    for k in keys.iter().take(10) {
        assert_eq!(get(&mut ca, k), Some(format!("v-{k}")));
        let _: () = cu.set(k, "direct").unwrap();
    }
    for k in keys.iter().take(10) {
        assert!(
            wait_until(Duration::from_secs(2), || {
                get(&mut ca, k).as_deref() == Some("direct")
                    && get(&mut cb, k).as_deref() == Some("direct")
            }),
            "{k}"
        );
    }
    // MGET across slots, partly from L1.
    let got: Vec<Option<String>> = cb.mget(&["key:1", "key:2", "key:3", "nope"]).unwrap();
    assert_eq!(
        got,
        vec![
            Some("direct".into()),
            Some("direct".into()),
            Some("direct".into()),
            None
        ]
    );

    // Whole-keyspace commands see every node.
    let n: i64 = redis::cmd("DBSIZE").query(&mut ca).unwrap();
    assert_eq!(n, 61, "60 keys and the readiness counter");
    let mut found: Vec<String> = redis::cmd("KEYS").arg("key:*").query(&mut cb).unwrap();
    found.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(found, want);
    let mut scanned: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("key:*")
            .arg("COUNT")
            .arg(7)
            .query(&mut ca)
            .unwrap();
        scanned.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    scanned.sort();
    scanned.dedup();
    assert_eq!(scanned, want);
    let rk: Option<String> = redis::cmd("RANDOMKEY").query(&mut ca).unwrap();
    assert!(rk.is_some());

    // Cluster's rules reach the client verbatim.
    let e = redis::cmd("SELECT")
        .arg(1)
        .query::<()>(&mut ca)
        .unwrap_err();
    assert_eq!(
        (e.code(), e.detail()),
        (Some("ERR"), Some("SELECT is not allowed in cluster mode"))
    );
    let _: () = redis::cmd("SELECT").arg(0).query(&mut ca).unwrap();
    // Multi-key commands across slots are split per node, as Cluster-aware clients do.
    let _: () = redis::cmd("MSET")
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .query(&mut ca)
        .unwrap();
    let n: i64 = redis::cmd("DEL").arg("a").arg("b").query(&mut ca).unwrap();
    assert_eq!(n, 2);
    // A script over keys of several slots gets Cluster's CROSSSLOT error.
    let e = redis::cmd("EVAL")
        .arg("return redis.call('GET', KEYS[2])")
        .arg(2)
        .arg("a")
        .arg("b")
        .query::<Value>(&mut ca)
        .unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"), "{e}");
    let r: Value = redis::pipe()
        .atomic()
        .set("{t}x", 1)
        .incr("{t}y", 5)
        .query(&mut ca)
        .unwrap();
    assert_eq!(r, Value::Array(vec![Value::Okay, Value::Int(5)]));
    let e = redis::pipe()
        .atomic()
        .set("x1", 1)
        .set("x2", 2)
        .query::<Value>(&mut ca);
    assert!(
        e.is_err(),
        "a transaction across slots is refused, as by Cluster: {e:?}"
    );

    // Tags across slots.
    for k in ["key:1", "key:2", "key:3"] {
        let n: i64 = redis::cmd("TAGADD")
            .arg(k)
            .arg("grp")
            .query(&mut ca)
            .unwrap();
        assert_eq!(n, 1);
    }
    assert_eq!(get(&mut cb, "key:2").as_deref(), Some("direct"));
    let members: Vec<String> = cu.smembers("strata:tag:{grp}").unwrap();
    assert_eq!(members.len(), 3, "{members:?}");
    let n: i64 = redis::cmd("TAGINVAL").arg("grp").query(&mut cb).unwrap();
    assert_eq!(n, 3);
    for k in ["key:1", "key:2", "key:3"] {
        assert!(wait_until(Duration::from_secs(2), || get(&mut ca, k)
            .is_none()
            && get(&mut cb, k).is_none()));
    }

    // Blocking pop through A, woken by a push through B.
    let waiter = std::thread::spawn({
        let mut c = a.conn();
        move || -> (String, String) { c.blpop("queue", 5.0).unwrap() }
    });
    std::thread::sleep(Duration::from_millis(200));
    let _: () = cb.rpush("queue", "job").unwrap();
    assert_eq!(waiter.join().unwrap(), ("queue".into(), "job".into()));

    // Pub/sub across instances.
    let mut sub = a.raw();
    sub.set_timeout(Duration::from_secs(3));
    assert_eq!(
        sub.call(&[b"SUBSCRIBE", b"news"]),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert!(wait_until(Duration::from_secs(2), || {
        cb.publish::<_, _, i64>("news", "probe")
            .map(|n| n >= 1)
            .unwrap_or(false)
    }));
    let _: i64 = cb.publish("news", "hi").unwrap();
    let mut saw_hi = false;
    for _ in 0..20 {
        let m = sub.reply();
        if m == b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n" {
            saw_hi = true;
            break;
        }
    }
    assert!(saw_hi);

    // FLUSHDB through one instance empties every node and both L1s.
    let _: () = redis::cmd("FLUSHDB").query(&mut cb).unwrap();
    let n: i64 = redis::cmd("DBSIZE").query(&mut ca).unwrap();
    assert_eq!(n, 0);
    assert!(wait_until(Duration::from_secs(2), || get(&mut ca, "key:5").is_none()));
}

// Feature: db-cache-optimization, Property 28: Distributed Rate Limiting
/// RATE through a Cluster: each call is one script on the node of its key (calls on different
/// keys are not batched there, their keys being in different slots); concurrent calls on keys
/// spread over the nodes admit exactly each limit, and a key holding a string fails alone.
#[test]
fn rate_through_a_cluster_counts_each_key_on_its_node() {
    let cluster = RedisCluster::start(3);
    let s = tiered(&cluster);
    let mut cu = cluster.conn();
    let _: () = cu.set("strata:rate:{str}", "x").unwrap();
    let mut c = s.conn();
    let r: Vec<i64> = redis::cmd("RATE")
        .arg("solo")
        .arg(3)
        .arg(10)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, [1, 3, 2, 0, 10_000]);
    let e = redis::cmd("RATE")
        .arg("str")
        .arg(3)
        .arg(10)
        .query::<Vec<i64>>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"), "{e}");

    // Keys on every node, 8 clients at once, each key over its limit of 5.
    let port = s.port;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = support::connect(port);
                (0..30)
                    .map(|i| {
                        let k = (t + i) % 10;
                        let r: Vec<i64> = redis::cmd("RATE")
                            .arg(format!("key:{k}"))
                            .arg(5)
                            .arg(60)
                            .query(&mut c)
                            .expect("RATE");
                        (k, r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut remaining = vec![Vec::new(); 10];
    for t in threads {
        for (k, r) in t.join().unwrap() {
            assert_eq!(r[1], 5, "{r:?}");
            if r[0] == 1 {
                remaining[k].push(r[2]);
            }
        }
    }
    for (k, mut left) in remaining.into_iter().enumerate() {
        left.sort_unstable();
        assert_eq!(left, [0, 1, 2, 3, 4], "key:{k}");
        let n = support::rate_log_len(&mut cu, format!("strata:rate:{{key:{k}}}"));
        assert_eq!(n, 5, "key:{k}");
    }
}

// Feature: db-cache-optimization, Property 45: Cache Fail-Open (Cluster upstream)
#[test]
fn a_dead_cluster_fails_open_and_its_return_serves_nothing_stale() {
    let mut cluster = RedisCluster::start(3);
    let s = tiered(&cluster);
    let mut c = s.conn();
    for i in 0..20 {
        let _: () = c.set(format!("old:{i}"), i).unwrap();
        let v: Option<i64> = c.get(format!("old:{i}")).unwrap();
        assert_eq!(v, Some(i));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|t| {
            let (mut lc, stop) = (s.conn(), stop.clone());
            std::thread::spawn(move || -> u64 {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = format!("load:{t}:{}", n % 50);
                    let _: () = lc.set(&k, n).expect("SET under load");
                    let _: Option<u64> = lc.get(&k).expect("GET under load");
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    cluster.kill();
    assert!(wait_until(Duration::from_secs(5), || {
        redis::cmd("INCR").arg("n").query::<i64>(&mut c).is_err()
    }));
    let e = redis::cmd("INCR")
        .arg("n")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("UNAVAILABLE"));
    let _: () = c
        .set("during", 1)
        .expect("a plain SET while the cluster is down");
    cluster.restart();
    assert!(wait_until(Duration::from_secs(15), || {
        redis::cmd("INCR").arg("n").query::<i64>(&mut c).is_ok()
    }));
    for i in 0..20 {
        let v: Option<i64> = c.get(format!("old:{i}")).unwrap();
        assert_eq!(v, None, "old:{i} was served from before the outage");
    }
    assert_eq!(get(&mut c, "during"), None);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        assert!(l.join().expect("no client error under load") > 0);
    }
}

fn info(c: &mut redis::Connection) -> String {
    redis::cmd("INFO").arg("tiering").query(c).unwrap()
}

fn field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{name} not in INFO:\n{text}"))
}

/// The INFO line of the master on `port`: `addr=...,status=...,breaker=...,...`.
fn master_line(c: &mut redis::Connection, port: u16) -> String {
    let text = info(c);
    text.lines()
        .find(|l| l.starts_with("l2_master") && l.contains(&format!(":{port},")))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no master on {port} in INFO:\n{text}"))
}

/// Waits (10 s at most) until every instance counts `down` masters down.
fn wait_masters_down(instances: &mut [&mut redis::Connection], down: &str, what: &str) {
    for c in instances.iter_mut() {
        assert!(
            wait_until(Duration::from_secs(10), || field(
                &info(c),
                "l2_cluster_masters_down"
            ) == down),
            "{what}:\n{}",
            info(c)
        );
    }
}

/// Keys spread over the masters: (keys on `victim`, keys elsewhere).
fn keys_by_master(cluster: &RedisCluster, victim: u16, n: usize) -> (Vec<String>, Vec<String>) {
    (0..n)
        .map(|i| format!("k:{i}"))
        .partition(|k| cluster.master_of(k) == victim)
}

// Feature: db-cache-optimization, Property 45: Cache Fail-Open (one Cluster master)
#[test]
fn one_lost_master_fails_open_only_its_own_keys_and_comes_back_clean() {
    let mut cluster = RedisCluster::start_with(ClusterOpts {
        masters: 3,
        replicas: 0,
        node_timeout_ms: 2000,
        full_coverage: false,
    });
    let http = support::free_port();
    let a = tiered_with(
        &cluster,
        &format!("[http]\nlisten = \"127.0.0.1:{http}\"\n"),
        "timeout_ms = 500\n",
    );
    let b = tiered(&cluster);
    let (mut ca, mut cb) = (a.conn(), b.conn());
    let victim = cluster.master_of("k:0");
    let (dead, live) = keys_by_master(&cluster, victim, 60);
    assert!(!dead.is_empty() && !live.is_empty());
    for k in dead.iter().chain(&live) {
        let _: () = ca.set(k, "old").unwrap();
        assert_eq!(get(&mut cb, k).as_deref(), Some("old"), "{k} cached by B");
    }

    cluster.kill_node(victim);
    wait_masters_down(
        &mut [&mut ca, &mut cb],
        "1",
        "the lost master is seen as down",
    );
    assert!(master_line(&mut ca, victim).contains("status=down"));
    assert_eq!(field(&info(&mut ca), "l2_status"), "up");
    // The other masters' keys still go through L2, coherently: a write through A reaches B's
    // L1, shared-state commands work.
    for k in &live {
        let _: () = ca.set(k, "new").unwrap();
    }
    for k in &live {
        assert_eq!(get(&mut cb, k).as_deref(), Some("new"), "{k}");
    }
    let counter = |k: &str| format!("{{{k}}}:n");
    let n: i64 = redis::cmd("INCR")
        .arg(counter(&live[0]))
        .query(&mut ca)
        .unwrap();
    assert_eq!(n, 1);
    // The lost master's keys fail open: no error, nothing stale from before the loss (their L1
    // entries were dropped), and shared-state commands refuse.
    for k in &dead {
        assert_eq!(get(&mut ca, k), None, "{k}");
        assert_eq!(get(&mut cb, k), None, "{k}");
    }
    let _: () = ca.set(&dead[0], "local").expect("a plain SET fails open");
    assert_eq!(get(&mut ca, &dead[0]).as_deref(), Some("local"));
    let e = redis::cmd("INCR")
        .arg(counter(&dead[0]))
        .query::<i64>(&mut ca)
        .unwrap_err();
    assert_eq!(e.code(), Some("UNAVAILABLE"));
    // The instance does not flap: the other masters stay up, L2 as a whole stays up.
    std::thread::sleep(Duration::from_millis(1500));
    let text = info(&mut ca);
    assert_eq!(field(&text, "l2_status"), "up", "{text}");
    assert_eq!(field(&text, "l2_cluster_masters_down"), "1", "{text}");
    assert_eq!(get(&mut cb, &live[1]).as_deref(), Some("new"));
    let (_, metrics) = support::http_get(http, "/metrics");
    assert!(
        metrics.contains(&format!(
            "strata_l2_node_up{{node=\"127.0.0.1:{victim}\"}} 0"
        )),
        "{metrics}"
    );
    let (_, ready) = support::http_get(http, "/readyz");
    assert!(ready.contains("down (its keys fail open)"), "{ready}");

    // The master comes back (empty: no persistence). Nothing either instance held for its
    // slots survives: neither the fail-open write nor anything from before.
    cluster.restart_node(victim);
    cluster.wait_ok();
    wait_masters_down(&mut [&mut ca, &mut cb], "0", "the master is tracked again");
    let mut cu = cluster.conn();
    let _: () = cu.set(&dead[1], "direct").unwrap();
    assert_eq!(get(&mut ca, &dead[0]), None, "the fail-open write is gone");
    assert_eq!(get(&mut cb, &dead[0]), None);
    for c in [&mut ca, &mut cb] {
        assert_eq!(get(c, &dead[1]).as_deref(), Some("direct"));
    }
    // Tracked again: a write straight to the master reaches both L1s.
    let _: () = cu.set(&dead[1], "direct-2").unwrap();
    assert!(wait_until(Duration::from_secs(2), || {
        get(&mut ca, &dead[1]).as_deref() == Some("direct-2")
            && get(&mut cb, &dead[1]).as_deref() == Some("direct-2")
    }));
    let n: i64 = redis::cmd("INCR")
        .arg(counter(&dead[0]))
        .query(&mut ca)
        .unwrap_or_else(|e| panic!("{e}\n{}", info(&mut ca)));
    assert_eq!(n, 1, "shared state works again");
}

// Feature: db-cache-optimization, Property 42: Circuit Breaker State Machine (per Cluster master)
#[test]
fn a_stalled_master_opens_its_own_breaker_only() {
    let cluster = RedisCluster::start(3);
    let s = tiered_with(
        &cluster,
        "",
        "timeout_ms = 300\nbreaker_min_calls = 3\nbreaker_open_s = 1\n",
    );
    let mut c = s.conn();
    let victim = cluster.master_of("k:0");
    let (slow, fine) = keys_by_master(&cluster, victim, 40);
    let node = cluster
        .nodes
        .iter()
        .flatten()
        .find(|n| n.port == victim)
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query(&mut node.conn())
        .unwrap();
    // Each read on the stalled master times out upstream and fails open (a miss).
    for k in slow.iter().take(3) {
        assert_eq!(get(&mut c, k), None);
    }
    assert!(master_line(&mut c, victim).contains("breaker=open"));
    assert_eq!(field(&info(&mut c), "l2_breaker_state"), "open");
    for p in cluster
        .seeds()
        .iter()
        .filter_map(|u| u.rsplit(':').next()?.parse::<u16>().ok())
    {
        if p != victim {
            assert!(master_line(&mut c, p).contains("breaker=closed"));
        }
    }
    // Its keys are refused at once; the other masters' keys are served as usual.
    let t = std::time::Instant::now();
    let e = redis::cmd("INCR")
        .arg(&slow[0])
        .query::<i64>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("UNAVAILABLE"));
    // (A call to the stalled master would take the 300 ms timeout.)
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "refused without calling L2"
    );
    let n: i64 = redis::cmd("INCR").arg(&fine[0]).query(&mut c).unwrap();
    assert_eq!(n, 1);
    // After the pause and the open time, a trial closes it.
    assert!(wait_until(Duration::from_secs(6), || {
        redis::cmd("INCR")
            .arg(&slow[0])
            .query::<i64>(&mut c)
            .is_ok()
    }));
    let line = master_line(&mut c, victim);
    assert!(line.contains("breaker=closed"), "{line}");
    assert!(!line.contains("breaker_opened=0"), "{line}");
}

// Feature: db-cache-optimization, Property 44: Write-Through Caching (after a Cluster failover)
#[test]
fn a_cluster_failover_is_tracked_again() {
    let mut cluster = RedisCluster::start_with(ClusterOpts {
        masters: 3,
        replicas: 1,
        node_timeout_ms: 1000,
        full_coverage: true,
    });
    let (a, b) = (tiered(&cluster), tiered(&cluster));
    let (mut ca, mut cb) = (a.conn(), b.conn());
    let victim = cluster.master_of("fo:key");
    let _: () = ca.set("fo:key", "before").unwrap();
    assert_eq!(get(&mut cb, "fo:key").as_deref(), Some("before"));
    // Let the replica catch up before its master dies.
    std::thread::sleep(Duration::from_millis(300));
    cluster.kill_node(victim);
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::panic::catch_unwind(|| cluster.master_of("fo:key"))
                .map(|p| p != victim)
                .unwrap_or(false)
        }),
        "the replica never took over"
    );
    cluster.wait_ok();
    let promoted = cluster.master_of("fo:key");
    for c in [&mut ca, &mut cb] {
        assert!(
            wait_until(Duration::from_secs(10), || {
                let text = info(c);
                text.contains(&format!(":{promoted},status=up"))
                    && field(&text, "l2_cluster_masters_down") == "0"
            }),
            "the promoted master is tracked:\n{}",
            info(c)
        );
    }
    // Writes on the new master reach both L1s: straight to the cluster, and through A.
    let mut cu = cluster.conn();
    let _: () = cu.set("fo:key", "after").unwrap();
    assert!(wait_until(Duration::from_secs(2), || {
        get(&mut ca, "fo:key").as_deref() == Some("after")
            && get(&mut cb, "fo:key").as_deref() == Some("after")
    }));
    let _: () = ca.set("fo:key", "through-a").unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || get(&mut cb, "fo:key").as_deref()
            == Some("through-a")),
        "{}",
        info(&mut cb)
    );
    let _: () = cu.set("fo:key", "direct-again").unwrap();
    assert!(wait_until(Duration::from_secs(2), || {
        get(&mut ca, "fo:key").as_deref() == Some("direct-again")
            && get(&mut cb, "fo:key").as_deref() == Some("direct-again")
    }));
}
