//! Tiered mode from the outside: Strata instances in front of one real redis-server (the L2),
//! driven through the `redis` crate. Coherence between instances, write-through, the command
//! families relayed upstream, blocking pops and pub/sub across instances, and fail-open when
//! the upstream dies and comes back.

mod support;

use redis::{Commands, Value};
use std::time::Duration;
use support::{wait_until, RedisServer, Strata};

fn tiered(upstream: &RedisServer, extra: &str) -> Strata {
    Strata::with_config(&format!(
        "[l2]\nurl = \"redis://127.0.0.1:{}\"\ntimeout_ms = 300\n{extra}",
        upstream.port
    ))
}

fn get(c: &mut redis::Connection, k: &str) -> Option<String> {
    c.get(k).expect("GET")
}

/// Waits (polling) until every connection reads `want` for `k`.
fn converges(conns: &mut [&mut redis::Connection], k: &str, want: Option<&str>) -> bool {
    wait_until(Duration::from_secs(2), || {
        conns.iter_mut().all(|c| get(c, k).as_deref() == want)
    })
}

/// Waits until the instance has connected to its upstream (its /readyz would say ready).
fn ready(s: &Strata) {
    let mut c = s.conn();
    assert!(
        wait_until(Duration::from_secs(5), || {
            redis::cmd("SET")
                .arg("__ready")
                .arg(1)
                .query::<String>(&mut c)
                .is_ok()
                && redis::cmd("INCR")
                    .arg("__ready_n")
                    .query::<i64>(&mut c)
                    .is_ok()
        }),
        "Strata never reached its upstream"
    );
}

// Feature: db-cache-optimization, Property 44: Write-Through Caching
// Feature: db-cache-optimization, Property 20: Cache Invalidation on Modification (cache side:
// a key written through either instance or straight to L2 is served by no instance stale)
#[test]
fn two_instances_stay_coherent_through_the_upstream() {
    let up = RedisServer::start();
    let (a, b) = (tiered(&up, ""), tiered(&up, ""));
    ready(&a);
    ready(&b);
    let (mut ca, mut cb, mut cu) = (a.conn(), b.conn(), up.conn());

    // Write through A, read through B and A (both fill their L1 from L2).
    let _: () = ca.set("k", "v1").unwrap();
    assert_eq!(get(&mut cb, "k").as_deref(), Some("v1"));
    assert_eq!(get(&mut ca, "k").as_deref(), Some("v1"));
    // Write-through: the write is in L2 when the client has its reply.
    let _: () = cb.set("k", "v2").unwrap();
    assert_eq!(get(&mut cu, "k").as_deref(), Some("v2"));
    assert!(converges(&mut [&mut ca, &mut cb], "k", Some("v2")));

    // A write straight to the upstream reaches both L1s.
    let _: () = cu.set("k", "v3").unwrap();
    assert!(converges(&mut [&mut ca, &mut cb], "k", Some("v3")));

    // DEL, EXPIRE and FLUSHDB through one instance are seen by the other.
    let _: () = ca.del("k").unwrap();
    assert!(converges(&mut [&mut ca, &mut cb], "k", None));
    let _: () = cu.set("e", "x").unwrap();
    assert_eq!(get(&mut cb, "e").as_deref(), Some("x"));
    let _: () = redis::cmd("PEXPIRE")
        .arg("e")
        .arg(50)
        .query(&mut ca)
        .unwrap();
    assert!(converges(&mut [&mut ca, &mut cb], "e", None));
    let _: () = cu.set("f", "y").unwrap();
    assert_eq!(get(&mut cb, "f").as_deref(), Some("y"));
    let _: () = redis::cmd("FLUSHDB").query(&mut ca).unwrap();
    assert!(converges(&mut [&mut ca, &mut cb], "f", None));

    // MGET mixes L1 hits, L2 hits and misses; a non-string is nil there, as in Redis.
    let _: () = cu.set("m1", "1").unwrap();
    let _: () = cu.hset("h", "f", "v").unwrap();
    assert_eq!(get(&mut ca, "m1").as_deref(), Some("1"));
    let _: () = cu.set("m2", "2").unwrap();
    let got: Vec<Option<String>> = ca.mget(&["m1", "m2", "h", "nope"]).unwrap();
    assert_eq!(got, vec![Some("1".into()), Some("2".into()), None, None]);
}

#[test]
fn every_family_runs_upstream_with_redis_replies() {
    let up = RedisServer::start();
    let s = tiered(&up, "");
    ready(&s);
    let (mut c, mut cu) = (s.conn(), up.conn());

    let _: () = c.hset("h", "a", "1").unwrap();
    let _: () = c.sadd("s", &["x", "y"]).unwrap();
    let _: () = c.rpush("l", &["1", "2", "3"]).unwrap();
    let _: () = c.zadd("z", "m", 1.5).unwrap();
    let n: i64 = c.incr("n", 5).unwrap();
    assert_eq!(n, 5);
    // Everything landed in the upstream.
    assert_eq!(cu.hget::<_, _, String>("h", "a").unwrap(), "1");
    assert_eq!(cu.scard::<_, i64>("s").unwrap(), 2);
    assert_eq!(cu.llen::<_, i64>("l").unwrap(), 3);
    assert_eq!(cu.zscore::<_, _, f64>("z", "m").unwrap(), 1.5);
    // Reads of every type come back as Redis gives them.
    let all: Vec<(String, f64)> = c.zrange_withscores("z", 0, -1).unwrap();
    assert_eq!(all, vec![("m".to_string(), 1.5)]);
    let l: Vec<String> = c.lrange("l", 0, -1).unwrap();
    assert_eq!(l, ["1", "2", "3"]);
    // Upstream errors reach the client verbatim.
    let e = redis::cmd("GET")
        .arg("h")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"));
    let e = redis::cmd("INCR")
        .arg("h")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");
    // Scripts run upstream and their keys leave L1.
    let _: () = c.set("sk", "1").unwrap();
    assert_eq!(get(&mut c, "sk").as_deref(), Some("1"));
    let v: i64 = redis::cmd("EVAL")
        .arg("return redis.call('INCRBY', KEYS[1], 41)")
        .arg(1)
        .arg("sk")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, 42);
    assert_eq!(get(&mut c, "sk").as_deref(), Some("42"));
    // SELECT: other databases are other upstream databases.
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    let _: () = c.set("k3", "db3").unwrap();
    let mut cu3 = redis::Client::open(format!("redis://127.0.0.1:{}/3", up.port))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(get(&mut cu3, "k3").as_deref(), Some("db3"));
    assert_eq!(get(&mut cu, "k3"), None);
}

#[test]
fn transactions_and_watch_work_across_instances() {
    let up = RedisServer::start();
    let (a, b) = (tiered(&up, ""), tiered(&up, ""));
    ready(&a);
    ready(&b);
    let (mut ca, mut cb) = (a.conn(), b.conn());

    let (x, y): (i64, i64) = redis::pipe()
        .atomic()
        .incr("t", 1)
        .incr("t", 10)
        .query(&mut ca)
        .unwrap();
    assert_eq!((x, y), (1, 11));

    // WATCH on A, a write through B, then EXEC on A: the transaction is aborted.
    let _: () = redis::cmd("WATCH").arg("w").query(&mut ca).unwrap();
    let _: () = cb.set("w", "theirs").unwrap();
    let _: () = redis::cmd("MULTI").query(&mut ca).unwrap();
    let _: () = redis::cmd("SET")
        .arg("w")
        .arg("mine")
        .query(&mut ca)
        .unwrap();
    let r: Value = redis::cmd("EXEC").query(&mut ca).unwrap();
    assert_eq!(r, Value::Nil);
    assert_eq!(get(&mut ca, "w").as_deref(), Some("theirs"));

    // Without interference it commits.
    let _: () = redis::cmd("WATCH").arg("w").query(&mut ca).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut ca).unwrap();
    let _: () = redis::cmd("SET")
        .arg("w")
        .arg("mine")
        .query(&mut ca)
        .unwrap();
    let r: Vec<String> = redis::cmd("EXEC").query(&mut ca).unwrap();
    assert_eq!(r, ["OK"]);
    assert!(converges(&mut [&mut ca, &mut cb], "w", Some("mine")));

    // A queued unknown command aborts the transaction, as in Redis.
    let mut raw = a.raw();
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert!(raw.call(&[b"NOPE"]).starts_with(b"-ERR unknown command"));
    assert_eq!(
        raw.call(&[b"EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
}

#[test]
fn blocking_pop_on_one_instance_is_woken_by_a_push_through_another() {
    let up = RedisServer::start();
    let (a, b) = (tiered(&up, ""), tiered(&up, ""));
    ready(&a);
    ready(&b);
    let waiter = std::thread::spawn({
        let mut ca = a.conn();
        move || -> (String, String) { ca.blpop("q", 5.0).unwrap() }
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut cb = b.conn();
    let _: () = cb.rpush("q", "hello").unwrap();
    assert_eq!(waiter.join().unwrap(), ("q".into(), "hello".into()));

    // A timeout is a null array for RESP2 clients, as in Redis.
    let mut raw = a.raw();
    assert_eq!(raw.call(&[b"BLPOP", b"empty", b"0.1"]), b"*-1\r\n");

    // A blocked client that disconnects takes nothing with it.
    let mut gone = a.raw();
    gone.cmd(&[b"BLPOP", b"q2", b"0"]);
    std::thread::sleep(Duration::from_millis(200));
    drop(gone);
    std::thread::sleep(Duration::from_millis(200));
    let _: () = cb.rpush("q2", "kept").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let left: Vec<String> = cb.lrange("q2", 0, -1).unwrap();
    assert_eq!(left, ["kept"]);
}

#[test]
fn pubsub_crosses_instances() {
    let up = RedisServer::start();
    let (a, b) = (tiered(&up, ""), tiered(&up, ""));
    ready(&a);
    ready(&b);
    let mut sub = a.raw();
    sub.set_timeout(Duration::from_secs(3));
    assert_eq!(
        sub.call(&[b"SUBSCRIBE", b"news"]),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    let mut cb = b.conn();
    let mut cu = up.conn();
    // The subscription is in place upstream once PUBLISH counts it.
    assert!(wait_until(Duration::from_secs(2), || {
        redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("news")
            .query::<(String, i64)>(&mut cb)
            .map(|(_, n)| n == 1)
            .unwrap_or(false)
    }));
    let n: i64 = cb.publish("news", "hi").unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        sub.reply(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    );
    let _: i64 = cu.publish("news", "direct").unwrap();
    assert_eq!(
        sub.reply(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$6\r\ndirect\r\n"
    );
    assert_eq!(
        sub.call(&[b"UNSUBSCRIBE"]),
        b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n"
    );
    assert!(wait_until(Duration::from_secs(2), || {
        cb.publish::<_, _, i64>("news", "x").unwrap() == 0
    }));
}

// Feature: db-cache-optimization, Property 45: Cache Fail-Open
#[test]
fn upstream_death_fails_open_and_its_return_serves_nothing_stale() {
    let up = RedisServer::start();
    let port = up.port;
    let s = tiered(&up, "");
    ready(&s);
    let mut c = s.conn();
    let _: () = c.set("k", "before").unwrap();
    assert_eq!(get(&mut c, "k").as_deref(), Some("before"));
    // Load from other clients across the kill and the restart: not one GET or SET fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|t| {
            let (mut lc, stop) = (s.conn(), stop.clone());
            std::thread::spawn(move || -> u64 {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = format!("load:{t}:{}", n % 100);
                    let _: () = lc.set(&k, n).expect("SET under load");
                    let _: Option<u64> = lc.get(&k).expect("GET under load");
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    drop(up);

    // Plain commands keep working on L1 alone; shared-state ones are refused.
    assert!(wait_until(Duration::from_secs(3), || {
        redis::cmd("INCR").arg("n").query::<i64>(&mut c).is_err()
    }));
    for i in 0..50 {
        let _: () = c.set(format!("p{i}"), i).expect("SET while L2 is down");
        let v: Option<i64> = c.get(format!("p{i}")).expect("GET while L2 is down");
        assert_eq!(v, Some(i));
    }
    let e = redis::cmd("INCR")
        .arg("n")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert_eq!(
        (e.code(), e.detail()),
        (Some("UNAVAILABLE"), Some("L2 unavailable"))
    );
    let e = redis::cmd("SET")
        .arg("lock")
        .arg(1)
        .arg("NX")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("UNAVAILABLE"));
    // Local writes are capped at l1.ttl.
    let ttl: i64 = c.ttl("p1").unwrap();
    assert!((1..=60).contains(&ttl), "ttl {ttl}");

    // The upstream returns with other data: nothing cached before or during the outage is
    // served once it is back.
    let up = RedisServer::start_on(port);
    let mut cu = up.conn();
    let _: () = cu.set("k", "after").unwrap();
    assert!(wait_until(Duration::from_secs(8), || {
        redis::cmd("INCR").arg("n").query::<i64>(&mut c).is_ok()
    }));
    assert_eq!(get(&mut c, "k").as_deref(), Some("after"));
    assert_eq!(get(&mut c, "p1"), None);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        assert!(l.join().expect("no client error under load") > 0);
    }
}

/// The value of one series in a Prometheus text exposition.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
}

fn with_http(up: &RedisServer, extra: &str) -> Strata {
    let http = support::free_port();
    Strata::with_config(&format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n[l2]\nurl = \"redis://127.0.0.1:{}\"\n{extra}",
        up.port
    ))
}

fn wait_ready(s: &Strata) -> String {
    let port = s.http_port.expect("http port");
    let mut body = String::new();
    assert!(wait_until(Duration::from_secs(5), || {
        let (code, b) = support::http_get(port, "/readyz");
        body = b;
        code == 200
    }));
    body
}

// Feature: db-cache-optimization, Property 39: Cache Metrics Exposure
#[test]
fn metrics_count_hits_misses_and_fills_per_layer() {
    let up = RedisServer::start();
    let s = with_http(&up, "");
    wait_ready(&s);
    let (mut c, mut cu) = (s.conn(), up.conn());
    let _: () = cu.set("present", "v").unwrap();
    let _: Option<String> = c.get("absent").unwrap(); // L1 miss, L2 miss
    let _: Option<String> = c.get("present").unwrap(); // L1 miss, L2 hit, fill
    let _: Option<String> = c.get("present").unwrap(); // L1 hit
    let _: Option<String> = c.get("present").unwrap(); // L1 hit
    let _: () = c.set("present", "w").unwrap(); // own write: invalidation
    let (_, text) = support::http_get(s.http_port.unwrap(), "/metrics");
    assert_eq!(metric(&text, "strata_cache_hits_total{layer=\"l1\"}"), 2.0);
    assert_eq!(
        metric(&text, "strata_cache_misses_total{layer=\"l1\"}"),
        2.0
    );
    assert_eq!(metric(&text, "strata_cache_hits_total{layer=\"l2\"}"), 1.0);
    assert_eq!(
        metric(&text, "strata_cache_misses_total{layer=\"l2\"}"),
        1.0
    );
    assert_eq!(metric(&text, "strata_cache_fills_total"), 1.0);
    assert!(metric(&text, "strata_cache_invalidations_total") >= 1.0);
    assert_eq!(metric(&text, "strata_l2_up"), 1.0);
    // Commands served through the tiers are counted per command like any other.
    assert_eq!(metric(&text, "strata_commands_total{cmd=\"get\"}"), 4.0);
    assert_eq!(metric(&text, "strata_commands_total{cmd=\"set\"}"), 1.0);
    assert_eq!(metric(&text, "strata_breaker_state"), 0.0);
    assert!(metric(&text, "strata_l2_request_duration_seconds_count") >= 3.0);
    let info: String = redis::cmd("INFO").arg("tiering").query(&mut c).unwrap();
    assert!(info.contains("l2_status:up"), "{info}");
    assert!(info.contains("l2_hits:1\r\n"), "{info}");
    assert!(info.contains("l1_fills:1\r\n"), "{info}");
}

// Feature: db-cache-optimization, Property 46: Cache Warming
#[test]
fn warm_patterns_are_in_l1_before_ready() {
    let up = RedisServer::start();
    let mut cu = up.conn();
    for i in 0..50 {
        let _: () = cu.set(format!("hot:{i}"), i).unwrap();
        let _: () = cu.set(format!("cold:{i}"), i).unwrap();
    }
    let _: () = cu.sadd("hot:set", "not a string").unwrap();
    let s = with_http(&up, "warm = [\"hot:*\"]\n");
    wait_ready(&s);
    // Ready means warmed: the 50 string keys matching hot:* were filled before /readyz said
    // ready, and reading them makes no L2 round trip (they are L1 hits); cold keys are not.
    let mut c = s.conn();
    let info = |c: &mut redis::Connection| -> String {
        redis::cmd("INFO").arg("tiering").query(c).unwrap()
    };
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in INFO"))
    };
    let before = info(&mut c);
    assert_eq!(field(&before, "l1_fills"), 50, "{before}");
    for i in 0..50 {
        let v: Option<i64> = c.get(format!("hot:{i}")).unwrap();
        assert_eq!(v, Some(i), "hot:{i}");
    }
    let after = info(&mut c);
    assert_eq!(
        field(&after, "l2_calls"),
        field(&before, "l2_calls"),
        "hot keys came from L1"
    );
    let v: Option<i64> = c.get("cold:1").unwrap();
    assert_eq!(v, Some(1));
    assert_eq!(
        field(&info(&mut c), "l2_calls"),
        field(&before, "l2_calls") + 1
    );
}

fn info_field(c: &mut redis::Connection, name: &str) -> String {
    let text: String = redis::cmd("INFO").arg("tiering").query(c).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{name} not in INFO:\n{text}"))
}

// Feature: db-cache-optimization, Property 41: Connection Retry with Backoff
#[test]
fn reconnection_backs_off_1_2_4_then_every_4_seconds_in_the_background() {
    let up = RedisServer::start();
    let s = tiered(&up, "");
    ready(&s);
    let mut c = s.conn();
    drop(up);
    let lost = std::time::Instant::now();
    // Attempts at about 0 s, 1 s, 3 s, 7 s, 11 s after the loss: sample between them.
    for (at_ms, want) in [(500u64, 1u64), (2000, 2), (5000, 3), (9000, 4)] {
        let wake = lost + Duration::from_millis(at_ms);
        while std::time::Instant::now() < wake {
            // Meanwhile client requests never wait for a reconnection attempt.
            let t = std::time::Instant::now();
            let _: Option<String> = c.get("k").unwrap();
            assert!(
                t.elapsed() < Duration::from_millis(250),
                "a GET waited {:?}",
                t.elapsed()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let n: u64 = info_field(&mut c, "l2_reconnect_attempts").parse().unwrap();
        assert_eq!(n, want, "attempts {at_ms} ms after the loss");
    }
    assert_eq!(info_field(&mut c, "l2_status"), "down");
}

// Feature: db-cache-optimization, Property 42: Circuit Breaker State Machine
#[test]
fn a_stalled_upstream_opens_the_breaker_and_a_good_trial_closes_it() {
    let up = RedisServer::start();
    let s = tiered(&up, "breaker_min_calls = 5\nbreaker_open_s = 1\n");
    ready(&s);
    let (mut c, mut cu) = (s.conn(), up.conn());
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query(&mut cu)
        .unwrap();
    // Every read times out upstream, so each fails open (a miss) instead of erroring.
    for i in 0..5 {
        let v: Option<String> = c.get(format!("k{i}")).unwrap();
        assert_eq!(v, None);
    }
    assert_eq!(info_field(&mut c, "l2_breaker_state"), "open");
    // Shared-state commands are refused at once while it is open.
    let t = std::time::Instant::now();
    let e = redis::cmd("INCR")
        .arg("n")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("UNAVAILABLE"));
    assert!(
        t.elapsed() < Duration::from_millis(90),
        "refused without calling L2"
    );
    // After the pause and the open time, one trial call succeeds and closes it.
    assert!(wait_until(Duration::from_secs(6), || {
        redis::cmd("INCR").arg("n").query::<i64>(&mut c).is_ok()
    }));
    assert_eq!(info_field(&mut c, "l2_breaker_state"), "closed");
    assert!(
        info_field(&mut c, "l2_breaker_opened")
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}

#[test]
fn a_tls_upstream_is_reached_with_its_ca_and_refused_without_it() {
    let dir = std::env::temp_dir().join(format!(
        "strata-tls-{}-{}",
        std::process::id(),
        support::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (up, ca) = RedisServer::start_tls(&dir);
    let cfg = |ca: &str| {
        Strata::with_config(&format!(
            "[l2]\nurl = \"rediss://127.0.0.1:{}\"\ntimeout_ms = 500\n{ca}",
            up.port
        ))
    };
    let with_ca = format!("tls_ca_file = \"{}\"\n", ca.display());
    let (a, b) = (cfg(&with_ca), cfg(&with_ca));
    ready(&a);
    ready(&b);
    let (mut ca_conn, mut cb) = (a.conn(), b.conn());
    let _: () = ca_conn.set("k", "v1").unwrap();
    assert_eq!(get(&mut cb, "k").as_deref(), Some("v1"));
    let _: () = cb.set("k", "v2").unwrap();
    assert!(converges(&mut [&mut ca_conn, &mut cb], "k", Some("v2")));
    // Without the CA the certificate is not trusted: the instance fails open, never in clear.
    let untrusting = cfg("");
    let mut cu = untrusting.conn();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&mut cu, "k"), None);
    let e = redis::cmd("INCR")
        .arg("n")
        .query::<i64>(&mut cu)
        .unwrap_err();
    assert_eq!(e.code(), Some("UNAVAILABLE"));
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
}
