//! Tiered mode in front of a real 3-master Redis Cluster (started by the test with
//! `redis-server --cluster-enabled yes` and `redis-cli --cluster create`): two Strata instances
//! behave like one coherent Redis, with keys spread over the nodes.

mod support;

use redis::{Commands, Value};
use std::time::Duration;
use support::{wait_until, RedisCluster, Strata};

fn tiered(cluster: &RedisCluster) -> Strata {
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    let s = Strata::with_config(&format!(
        "[l2]\ncluster = [{}]\ntimeout_ms = 1000\n",
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
