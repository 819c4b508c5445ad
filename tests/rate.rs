//! RATE and CL.THROTTLE from the outside, through the `redis` crate against the real binary:
//! replies and errors standalone; RATE's replies and its log through a real redis-server as L2;
//! concurrent calls batched into one script each exact, in order, and failing alone; two Strata
//! instances sharing one L2 enforcing one limit together; and the local fallback (and what INFO
//! says) when L2 dies and comes back.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use support::{encode, rate_log_len, wait_until, Raw, RedisServer, Strata};

fn rate(c: &mut redis::Connection, args: &[&str]) -> Vec<i64> {
    redis::cmd("RATE").arg(args).query(c).expect("RATE")
}

/// Makes RATE's L2 key for `str` a string that is not a log (one byte), so that a window call
/// on it fails with WRONGTYPE.
fn plant_wrong_type(cu: &mut redis::Connection) {
    let _: () = redis::cmd("SET")
        .arg("strata:rate:{str}")
        .arg("x")
        .query(cu)
        .expect("SET");
}

fn throttle(c: &mut redis::Connection, args: &[&str]) -> Vec<i64> {
    redis::cmd("CL.THROTTLE")
        .arg(args)
        .query(c)
        .expect("CL.THROTTLE")
}

fn error(c: &mut redis::Connection, cmd: &str, args: &[&str]) -> String {
    redis::cmd(cmd)
        .arg(args)
        .query::<redis::Value>(c)
        .expect_err("an error reply")
        .to_string()
}

fn info(c: &mut redis::Connection) -> String {
    redis::cmd("INFO").arg("ratelimit").query(c).expect("INFO")
}

/// A `name:value` field of an INFO text, as a number.
fn info_field(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number in {text}"))
}

/// The scripts an upstream ran since its stats were reset (EVALSHA and EVAL, NOSCRIPT included).
fn scripts_run(up: &mut redis::Connection) -> i64 {
    let stats: String = redis::cmd("INFO").arg("commandstats").query(up).unwrap();
    ["cmdstat_evalsha:", "cmdstat_eval:"]
        .iter()
        .filter_map(|p| stats.lines().find_map(|l| l.strip_prefix(p)))
        .map(|l| {
            l.split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

fn tiered(upstream_port: u16, extra: &str) -> Strata {
    let s = Strata::with_config(&format!(
        "[l2]\nurl = \"redis://127.0.0.1:{upstream_port}\"\ntimeout_ms = 300\n{extra}"
    ));
    let mut c = s.conn();
    assert!(
        wait_until(Duration::from_secs(5), || {
            redis::cmd("INCR").arg("__up").query::<i64>(&mut c).is_ok()
        }),
        "Strata never reached its upstream"
    );
    s
}

/// RATE's replies on fresh keys `k`, `c` and `big` (two of the calls are denied), wherever the
/// windows live.
fn window_replies(c: &mut redis::Connection) {
    assert_eq!(rate(c, &["k", "3", "10"]), [1, 3, 2, 0, 10_000]);
    assert_eq!(rate(c, &["k", "3", "10"]), [1, 3, 1, 0, 10_000]);
    assert_eq!(rate(c, &["k", "3", "10"]), [1, 3, 0, 0, 10_000]);
    let denied = rate(c, &["k", "3", "10"]);
    assert_eq!(denied[..3], [0, 3, 0]);
    assert!((9_000..=10_000).contains(&denied[3]), "{denied:?}");
    assert!((9_000..=10_000).contains(&denied[4]), "{denied:?}");
    // A denied call counts nothing; COST counts several units; the default policy is 100/60s.
    assert_eq!(rate(c, &["c", "COST", "5"]), [1, 100, 95, 0, 60_000]);
    assert_eq!(
        rate(c, &["c", "100", "60", "cost", "95"]),
        [1, 100, 0, 0, 60_000]
    );
    // A cost above the limit can never be admitted: denied, retry_after -1, nothing counted.
    assert_eq!(rate(c, &["big", "5", "10", "COST", "6"]), [0, 5, 5, -1, 0]);
    assert_eq!(
        rate(c, &["big", "5", "10", "COST", "5"]),
        [1, 5, 0, 0, 10_000]
    );
}

#[test]
fn rate_replies_and_errors_standalone() {
    let s = Strata::start();
    let mut c = s.conn();
    window_replies(&mut c);

    let not_int = "value is not an integer or out of range";
    for (args, want) in [
        (&["k", "x", "10"][..], not_int),
        (&["k", "10", "1.5"], not_int),
        (&["k", "10"], "syntax error"),
        (&["k", "COST"], "syntax error"),
        (&["k", "10", "10", "FOO", "1"], "syntax error"),
        (&["k", "10", "10", "COST", "x"], not_int),
        (&["k", "0", "10"], "limit must be a positive integer"),
        (&["k", "10", "-1"], "window must be a positive integer"),
        (&["k", "COST", "0"], "COST must be a positive integer"),
        (&["k", "1", "99999999999"], "window must be at most"),
    ] {
        let e = error(&mut c, "RATE", args);
        assert!(e.contains(want), "RATE {args:?}: {e}");
    }
    let e = error(&mut c, "RATE", &[]);
    assert!(e.contains("wrong number of arguments for 'rate'"), "{e}");

    // RESP3 gets the same five integers.
    let mut raw = s.raw();
    let hello = raw.call(&[b"HELLO", b"3"]);
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    let r = raw.call(&[b"RATE", b"r3", b"2", b"5"]);
    assert_eq!(r, b"*5\r\n:1\r\n:2\r\n:1\r\n:0\r\n:5000\r\n");
    let r = raw.call(&[b"CL.THROTTLE", b"r3", b"1", b"1", b"5"]);
    assert_eq!(r, b"*5\r\n:0\r\n:2\r\n:1\r\n:-1\r\n:5\r\n");

    let i = info(&mut c);
    assert!(i.contains("rate_limiter_mode:local\r\n"), "{i}");
    assert!(i.contains("rate_allowed:7\r\n"), "{i}");
    assert!(i.contains("rate_denied:2\r\n"), "{i}");
}

/// Pipelined RATE calls, which the connection frames ahead of their turn to load their limiter
/// entries early, are counted exactly and in order, mixed with other commands.
#[test]
fn pipelined_rate_calls_are_exact_and_in_order() {
    const LIMITS: [usize; 5] = [1, 3, 7, 20, 1000];
    let s = Strata::start();
    let mut c = s.conn();
    let mut pipe = redis::pipe();
    let mut order = Vec::new();
    for i in 0..400 {
        let k = (i * 7 + i / 50) % LIMITS.len();
        pipe.cmd("RATE").arg(format!("p{k}")).arg(LIMITS[k]).arg(60);
        order.push(Some(k));
        if i % 9 == 4 {
            pipe.cmd("INCR").arg("n");
            order.push(None);
        }
    }
    let replies: Vec<redis::Value> = pipe.query(&mut c).expect("pipeline");
    assert_eq!(replies.len(), order.len());
    let (mut used, mut incr) = ([0usize; LIMITS.len()], 0);
    for (reply, k) in replies.iter().zip(&order) {
        let Some(k) = *k else {
            incr += 1;
            assert_eq!(reply, &redis::Value::Int(incr));
            continue;
        };
        let v: Vec<i64> = redis::from_redis_value(reply.clone()).expect("RATE reply");
        let admit = used[k] < LIMITS[k];
        used[k] += admit as usize;
        let remaining = (LIMITS[k] - used[k]) as i64;
        assert_eq!(
            v[..3],
            [admit as i64, LIMITS[k] as i64, remaining],
            "key p{k}"
        );
    }
}

/// Requests framed ahead while the client was authenticated are framed again, with the
/// unauthenticated limits, once RESET has logged it out: an 11-argument request is then a
/// protocol error, as in Redis, though it arrived in the same read as the RATE calls that
/// framed it ahead.
#[test]
fn requests_framed_ahead_are_framed_again_after_reset() {
    let s = Strata::with_config("[server]\nrequirepass = \"pw\"\n");
    let mut wire = encode(&[b"AUTH", b"pw"]);
    for _ in 0..3 {
        wire.extend(encode(&[b"RATE", b"a", b"5", b"10"]));
    }
    wire.extend(encode(&[b"RESET"]));
    wire.extend(encode(&[&b"ECHO"[..]; 11]));
    let mut want = b"+OK\r\n".to_vec();
    for left in [4, 3, 2] {
        want.extend(format!("*5\r\n:1\r\n:5\r\n:{left}\r\n:0\r\n:10000\r\n").as_bytes());
    }
    want.extend(b"+RESET\r\n-ERR Protocol error: unauthenticated multibulk length\r\n");
    let mut raw = Raw::connect(s.port);
    raw.send(&wire);
    let got = raw.read_exact_or_eof(want.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    raw.set_timeout(Duration::from_secs(5));
    assert!(
        raw.closed(),
        "the connection stays open after the protocol error"
    );
}

#[test]
fn cl_throttle_replies_as_redis_cell() {
    let s = Strata::start();
    let mut c = s.conn();
    // redis-cell's README example: 30 per 60 s with a burst of 15.
    assert_eq!(
        throttle(&mut c, &["user123", "15", "30", "60"]),
        [0, 16, 15, -1, 2]
    );
    for left in (0..15).rev() {
        let r = throttle(&mut c, &["user123", "15", "30", "60"]);
        assert_eq!(r[..4], [0, 16, left, -1], "{r:?}");
    }
    assert_eq!(
        throttle(&mut c, &["user123", "15", "30", "60"]),
        [1, 16, 0, 2, 32]
    );
    // Quantity: more than the burst can never pass (retry -1); 0 only looks.
    assert_eq!(
        throttle(&mut c, &["q", "4", "1", "1", "6"]),
        [1, 5, 5, -1, 0]
    );
    assert_eq!(
        throttle(&mut c, &["q", "4", "1", "1", "2"]),
        [0, 5, 3, -1, 2]
    );
    assert_eq!(
        throttle(&mut c, &["q", "4", "1", "1", "0"]),
        [0, 5, 3, -1, 2]
    );

    let not_int = "value is not an integer or out of range";
    for (args, want) in [
        (&["k", "x", "1", "1"][..], not_int),
        (&["k", "1", "1", "1", "x"], not_int),
        (&["k", "1", "0", "1"], "zero rates are not supported"),
        (&["k", "1", "1", "0"], "zero rates are not supported"),
        (&["k", "-1", "1", "1"], "max_burst must not be negative"),
        (&["k", "1", "1", "1", "-1"], "quantity must not be negative"),
        (
            &["k", "1", "1", "1", "1", "1"],
            "wrong number of arguments for 'cl.throttle'",
        ),
        (
            &["k", "1", "1"],
            "wrong number of arguments for 'cl.throttle'",
        ),
    ] {
        let e = error(&mut c, "CL.THROTTLE", args);
        assert!(e.contains(want), "CL.THROTTLE {args:?}: {e}");
    }
}

#[test]
fn default_policy_and_bypass_come_from_the_config() {
    let s = Strata::with_config("[rate]\ndefault = \"2/1m\"\nbypass = [\"internal:*\"]\n");
    let mut c = s.conn();
    assert_eq!(rate(&mut c, &["a"]), [1, 2, 1, 0, 60_000]);
    assert_eq!(rate(&mut c, &["a"]), [1, 2, 0, 0, 60_000]);
    assert_eq!(rate(&mut c, &["a"])[0], 0);
    for _ in 0..5 {
        assert_eq!(rate(&mut c, &["internal:x", "1", "60"]), [1, 1, 1, 0, 0]);
        assert_eq!(
            throttle(&mut c, &["internal:y", "0", "1", "60"]),
            [0, 1, 1, -1, 0]
        );
    }
    let i = info(&mut c);
    assert!(i.contains("rate_default:2/60s\r\n"), "{i}");
    assert!(i.contains("rate_bypassed:10\r\n"), "{i}");
}

// Feature: db-cache-optimization, Property 28: Distributed Rate Limiting
#[test]
fn two_instances_sharing_l2_enforce_one_limit() {
    let up = RedisServer::start();
    let (a, b) = (tiered(up.port, ""), tiered(up.port, ""));
    let (mut ca, mut cb) = (a.conn(), b.conn());

    // Alternating between the instances: one window of 10, not 10 each.
    let mut allowed = 0;
    for i in 0..30 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        let r = rate(c, &["shared", "10", "60"]);
        allowed += r[0];
        if r[0] == 1 {
            assert_eq!(r[2], 10 - allowed, "{r:?}");
        } else {
            assert!(r[3] > 0 && r[3] <= 60_000, "{r:?}");
        }
    }
    assert_eq!(allowed, 10);
    let mut cu = up.conn();
    let n = rate_log_len(&mut cu, "strata:rate:{shared}");
    assert_eq!(n, 10, "the log lives in L2");

    // GCRA too: a burst of 5 across both instances.
    let limited: Vec<i64> = (0..10)
        .map(|i| {
            let c = if i % 2 == 0 { &mut ca } else { &mut cb };
            throttle(c, &["cell", "4", "1", "60"])[0]
        })
        .collect();
    assert_eq!(limited, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);

    // Concurrent clients on both instances: exactly the limit gets through.
    let ports = [a.port, b.port];
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let port = ports[t % 2];
            std::thread::spawn(move || {
                let mut c = support::connect(port);
                (0..40)
                    .map(|_| rate(&mut c, &["busy", "37", "60"])[0])
                    .sum::<i64>()
            })
        })
        .collect();
    let total: i64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 37);

    for c in [&mut ca, &mut cb] {
        let i = info(c);
        assert!(i.contains("rate_limiter_mode:l2\r\n"), "{i}");
    }
}

// Feature: db-cache-optimization, Property 29: Sliding Window Rate Limiting
/// Through L2 the replies are the standalone ones; a denied call waits for the oldest calls whose
/// expiry frees enough units, however far past the first one they are; and a key's log expires
/// no sooner than its newest call leaves the window, and within two windows.
#[test]
fn rate_through_l2_replies_as_standalone() {
    let up = RedisServer::start();
    let s = tiered(up.port, "");
    let mut c = s.conn();
    let started = Instant::now();
    window_replies(&mut c);

    // Costs 1, 2, 3, 4 some 300 ms apart fill a limit of 10. A cost of 4 then waits for the
    // third call to leave (1 + 2 + 3 >= 4): 300 ms (not 600 or 900) before the last one does.
    for cost in ["1", "2", "3", "4"] {
        assert_eq!(rate(&mut c, &["steps", "10", "10", "COST", cost])[0], 1);
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = rate(&mut c, &["steps", "10", "10", "COST", "4"]);
    assert_eq!(r[..3], [0, 10, 0], "{r:?}");
    assert!((299..599).contains(&(r[4] - r[3])), "{r:?}");

    let mut cu = up.conn();
    let n = rate_log_len(&mut cu, "strata:rate:{steps}");
    assert_eq!(n, 4, "one entry per admitted call");
    let ttl: i64 = redis::cmd("PTTL")
        .arg("strata:rate:{k}")
        .query(&mut cu)
        .unwrap();
    let newest_left = 10_000 - started.elapsed().as_millis() as i64;
    assert!(ttl >= newest_left && ttl <= 20_001, "{ttl} ms");
}

#[test]
fn l2_down_falls_back_to_the_local_limiter_and_info_says_so() {
    let mut up = Some(RedisServer::start());
    let port = up.as_ref().unwrap().port;
    let s = tiered(port, "");
    let mut c = s.conn();
    assert_eq!(rate(&mut c, &["fb", "3", "60"]), [1, 3, 2, 0, 60_000]);
    assert!(info(&mut c).contains("rate_limiter_mode:l2\r\n"));

    drop(up.take());
    // Never hangs: every call answers promptly, from this instance's own window.
    let started = Instant::now();
    let got: Vec<i64> = (0..5)
        .map(|_| rate(&mut c, &["fb", "3", "60"])[0])
        .collect();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        got,
        [1, 1, 1, 0, 0],
        "the local window holds the limit on its own"
    );
    assert_eq!(throttle(&mut c, &["fbc", "0", "1", "60"])[0], 0);
    assert_eq!(throttle(&mut c, &["fbc", "0", "1", "60"])[0], 1);
    let i = info(&mut c);
    assert!(i.contains("rate_limiter_mode:local_fallback\r\n"), "{i}");
    assert!(!i.contains("rate_l2_fallbacks:0\r\n"), "{i}");

    // L2 comes back: calls reach it again, and INFO says so.
    let _up = RedisServer::start_on(port);
    assert!(
        wait_until(Duration::from_secs(15), || {
            rate(&mut c, &["back", "100", "60"]);
            info(&mut c).contains("rate_limiter_mode:l2\r\n")
        }),
        "{}",
        info(&mut c)
    );
    let mut cu = _up.conn();
    let n = rate_log_len(&mut cu, "strata:rate:{back}");
    assert!(n >= 1);
}

// Feature: db-cache-optimization, Property 28: Distributed Rate Limiting
/// The QUERY limits of two Strata processes' limiters sharing one L2 (the limiter QUERY calls,
/// driven directly): one per-user and one global count, and a refused call counts in neither.
#[test]
fn query_limits_hold_across_instances_sharing_l2() {
    use strata::config::{Config, RatePolicy};
    let up = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let app = || {
            let mut cfg = Config::default();
            cfg.l2.url = up.url();
            cfg.rate.query_per_user = RatePolicy::new(3, 60);
            cfg.rate.query_global = RatePolicy::new(5, 60);
            cfg.rate.bypass = vec!["svc-*".into()];
            let app = strata::app::App::new(cfg, None);
            let l2 = app.l2.clone().expect("tiered");
            l2.start();
            (app, l2)
        };
        let ((a, la), (b, lb)) = (app(), app());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(la.is_up() && lb.is_up()) {
            assert!(Instant::now() < deadline, "L2 never came up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut got = Vec::new();
        for (i, user) in ["u1", "u1", "u1", "u1", "u2", "u2", "u3"]
            .iter()
            .enumerate()
        {
            let limiter = if i % 2 == 0 { &a.rate } else { &b.rate };
            got.push(limiter.check_query(user, false).await);
        }
        let ok: Vec<bool> = got.iter().map(|r| r.is_ok()).collect();
        // u1's 4th is over its own limit (and so not counted globally): u2 still gets 2.
        assert_eq!(ok, [true, true, true, false, true, true, false], "{got:?}");
        let e = got[3].as_ref().unwrap_err();
        assert!(
            e.starts_with("RATELIMITED QUERY rate limit of user 'u1'"),
            "{e}"
        );
        let e = got[6].as_ref().unwrap_err();
        assert!(e.starts_with("RATELIMITED global QUERY rate limit"), "{e}");
        assert!(e.ends_with(" ms"), "{e}");
        // Admins and bypassed users pass, counted nowhere.
        assert!(a.rate.check_query("root", true).await.is_ok());
        assert!(b.rate.check_query("svc-batch", false).await.is_ok());
        assert_eq!(a.rate.mode(), "l2");
    });
    let mut cu = up.conn();
    let global = rate_log_len(&mut cu, "strata:qrate:{query}:global");
    assert_eq!(global, 5);
}

// Feature: db-cache-optimization, Property 29: Sliding Window Rate Limiting
/// Many connections pipelining RATE at once through one tiered Strata: the calls reach L2 in
/// batches (fewer scripts than calls), and every key still admits exactly its limit, each
/// admitted call seeing a distinct remaining count (as if the calls had run one by one); the
/// calls on a key holding a string fail with WRONGTYPE, alone, while the calls around them in
/// the same moment succeed.
#[test]
fn concurrent_rate_calls_through_l2_are_exact_and_fail_alone() {
    const LIMITS: [i64; 4] = [7, 11, 13, 17];
    const CONNS: usize = 20;
    const PER_CONN: usize = 24;
    let up = RedisServer::start();
    let s = tiered(up.port, "");
    let mut cu = up.conn();
    plant_wrong_type(&mut cu);
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut cu)
        .unwrap();

    let start = Arc::new(Barrier::new(CONNS));
    let port = s.port;
    let threads: Vec<_> = (0..CONNS)
        .map(|t| {
            let start = start.clone();
            std::thread::spawn(move || {
                let mut c = support::connect(port);
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                let mut keys = Vec::new();
                for i in 0..PER_CONN {
                    if i == PER_CONN / 2 {
                        pipe.cmd("RATE").arg("str").arg(5).arg(60);
                        keys.push(None);
                    }
                    let k = (t + i) % LIMITS.len();
                    pipe.cmd("RATE").arg(format!("k{k}")).arg(LIMITS[k]).arg(60);
                    keys.push(Some(k));
                }
                start.wait();
                let replies: Vec<redis::Value> = pipe.query(&mut c).expect("pipeline");
                keys.into_iter().zip(replies).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_key: HashMap<usize, Vec<Vec<i64>>> = HashMap::new();
    let mut errors = 0;
    for t in threads {
        for (key, reply) in t.join().unwrap() {
            match (key, reply) {
                (Some(k), redis::Value::Array(items)) => {
                    let r: Vec<i64> = items
                        .iter()
                        .map(|v| match v {
                            redis::Value::Int(n) => *n,
                            v => panic!("k{k}: {v:?}"),
                        })
                        .collect();
                    by_key.entry(k).or_default().push(r);
                }
                (None, redis::Value::ServerError(e)) => {
                    let e = format!("{} {}", e.code(), e.details().unwrap_or(""));
                    assert!(e.starts_with("WRONGTYPE "), "{e}");
                    errors += 1;
                }
                (k, v) => panic!("{k:?}: {v:?}"),
            }
        }
    }
    assert_eq!(
        errors, CONNS,
        "every call on the string key fails, and only those"
    );
    for (k, &limit) in LIMITS.iter().enumerate() {
        let replies = &by_key[&k];
        assert_eq!(replies.len(), CONNS * PER_CONN / LIMITS.len());
        let mut remaining: Vec<i64> = Vec::new();
        for r in replies {
            assert_eq!(r.len(), 5, "k{k}: {r:?}");
            assert_eq!(r[1], limit, "k{k}: {r:?}");
            if r[0] == 1 {
                assert_eq!((r[3], r[4]), (0, 60_000), "k{k}: {r:?}");
                remaining.push(r[2]);
            } else {
                assert_eq!(r[2], 0, "k{k}: {r:?}");
                assert!((1..=60_000).contains(&r[3]), "k{k}: {r:?}");
                assert!((1..=60_000).contains(&r[4]), "k{k}: {r:?}");
            }
        }
        // Exactly the limit admitted, each with its own place in the order.
        remaining.sort_unstable();
        assert_eq!(remaining, (0..limit).collect::<Vec<_>>(), "k{k}");
        let n = rate_log_len(&mut cu, format!("strata:rate:{{k{k}}}"));
        assert_eq!(n, limit, "k{k}: one entry per admitted call");
    }
    let calls = (CONNS * (PER_CONN + 1)) as i64;
    let scripts = scripts_run(&mut cu);
    assert!(
        scripts < calls,
        "{scripts} scripts for {calls} calls: not batched"
    );
    let i = info(&mut s.conn());
    assert_eq!(info_field(&i, "rate_allowed"), LIMITS.iter().sum::<i64>());
    assert_eq!(
        info_field(&i, "rate_denied"),
        calls - CONNS as i64 - LIMITS.iter().sum::<i64>()
    );
    assert_eq!(info_field(&i, "rate_l2_errors"), CONNS as i64);
    assert_eq!(info_field(&i, "rate_l2_fallbacks"), 0);
    assert!(i.contains("rate_limiter_mode:l2\r\n"), "{i}");
}

/// Calls made at once go to L2 as one script (the limiter of a Strata driven directly, in
/// one runtime, so that they are all waiting when the batch is made): they are applied in the
/// order they were made, exactly as a model applying them one by one says — a key twice counts
/// twice, a refused call counts nothing, a cost over the limit can never pass — and a call on
/// a key holding a string fails alone, with Redis's WRONGTYPE error.
#[test]
fn one_batch_applies_its_calls_in_order_and_fails_only_the_wrong_one() {
    use strata::guard::rate::Window;
    let up = RedisServer::start();
    let mut cu = up.conn();
    plant_wrong_type(&mut cu);
    // (key, limit, cost): three keys, costs 1 to 4 (4 is over c's limit), two calls on str.
    let limits = [("a", 5u64), ("b", 8), ("c", 3)];
    let mut seed = 7u64;
    let mut calls: Vec<(&str, u64, u64)> = (0..60)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (key, limit) = limits[(seed >> 33) as usize % limits.len()];
            (key, limit, 1 + (seed >> 40) % 4)
        })
        .collect();
    calls.insert(9, ("str", 5, 1));
    calls.insert(40, ("str", 5, 1));
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut cu)
        .unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let got = rt.block_on(async {
        let mut cfg = strata::config::Config::default();
        cfg.l2.url = up.url();
        let app = strata::app::App::new(cfg, None);
        let l2 = app.l2.clone().expect("tiered");
        l2.start();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !l2.is_up() {
            assert!(Instant::now() < deadline, "L2 never came up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rate = &app.rate;
        futures_util::future::join_all(calls.iter().map(|&(key, limit, cost)| {
            let w = Window {
                limit,
                window_ms: 60_000,
            };
            rate.rate(key.as_bytes(), w, cost)
        }))
        .await
    });
    // At most EVALSHA answered NOSCRIPT and EVAL: one batch.
    let scripts = scripts_run(&mut cu);
    assert!(
        scripts <= 2,
        "{scripts} scripts for {} calls: not one batch",
        calls.len()
    );

    let mut used: HashMap<&str, u64> = HashMap::new();
    let mut admitted: HashMap<&str, i64> = HashMap::new();
    for (i, (&(key, limit, cost), got)) in calls.iter().zip(&got).enumerate() {
        if key == "str" {
            let e = got.as_ref().expect_err("a string key");
            assert!(e.starts_with("WRONGTYPE "), "call {i}: {e}");
            continue;
        }
        let v = got.as_ref().unwrap_or_else(|e| panic!("call {i}: {e}"));
        let u = used.entry(key).or_default();
        let allowed = *u + cost <= limit;
        assert_eq!(v.allowed, allowed, "call {i} {key} cost {cost}: {v:?}");
        assert_eq!(v.limit, limit as i64, "call {i}: {v:?}");
        if allowed {
            *u += cost;
            *admitted.entry(key).or_default() += 1;
            assert_eq!(v.remaining, (limit - *u) as i64, "call {i}: {v:?}");
            assert_eq!(
                (v.retry_after_ms, v.reset_after_ms),
                (0, 60_000),
                "call {i}"
            );
        } else {
            assert_eq!(v.remaining, (limit - *u) as i64, "call {i}: {v:?}");
            if cost > limit {
                assert_eq!(v.retry_after_ms, -1, "call {i}: {v:?}");
            } else {
                assert!((1..=60_000).contains(&v.retry_after_ms), "call {i}: {v:?}");
            }
        }
    }
    for (key, _) in limits {
        let n = rate_log_len(&mut cu, format!("strata:rate:{{{key}}}"));
        assert_eq!(n, admitted[key], "{key}: one entry per admitted call");
    }
}

/// One call of the window script's property test: its policy (cost; limit and window in ms per
/// window) and its keys (distinct, one per window). A key is named after its window as well:
/// a log is always checked against one window length (RATE's callers give a key one policy;
/// a key checked against a shorter window drops what left that window, in either place, but not
/// at the same moment).
#[derive(Clone, Debug)]
struct ScriptCall {
    cost: u64,
    windows: Vec<(u64, u64)>,
    keys: Vec<usize>,
}

impl ScriptCall {
    fn names(&self) -> Vec<String> {
        self.keys
            .iter()
            .zip(&self.windows)
            .map(|(k, (_, ms))| format!("p{k}:{ms}"))
            .collect()
    }
}

/// The window script's replies to one batch at a simulated `TIME` (µs): per call, its five
/// integers per window, or its error.
fn script_batch(
    cu: &mut redis::Connection,
    now_us: u64,
    calls: &[ScriptCall],
) -> Vec<Result<Vec<[i64; 5]>, String>> {
    let body = strata::guard::limiter::WINDOW_LUA.replace(
        "local t = rcall('TIME')",
        &format!(
            "local t = {{'{}', '{}'}}",
            now_us / 1_000_000,
            now_us % 1_000_000
        ),
    );
    assert_ne!(body, strata::guard::limiter::WINDOW_LUA, "TIME not found");
    // One policy per call, then where each one starts.
    let mut policies: Vec<u64> = Vec::new();
    let mut starts = Vec::new();
    for c in calls {
        starts.push(2 + policies.len() as u64);
        policies.push(c.windows.len() as u64);
        policies.push(c.cost);
        for &(limit, ms) in &c.windows {
            policies.extend([limit, ms]);
        }
    }
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(body);
    cmd.arg(calls.iter().map(|c| c.keys.len()).sum::<usize>());
    for c in calls {
        for name in c.names() {
            cmd.arg(format!("strata:rate:{{{name}}}"));
        }
    }
    cmd.arg(policies.len()).arg(&policies).arg(&starts);
    let reply: Vec<redis::Value> = cmd.query(cu).expect("EVAL");
    let mut it = reply.into_iter();
    let int = |v: Option<redis::Value>| match v {
        Some(redis::Value::Int(n)) => n,
        v => panic!("not an integer: {v:?}"),
    };
    calls
        .iter()
        .map(|c| match it.next() {
            Some(redis::Value::Int(r)) if r < 0 && c.windows.len() == 1 => {
                let (limit, ms) = c.windows[0];
                Ok(vec![[1, limit as i64, -1 - r, 0, ms as i64]])
            }
            Some(redis::Value::Int(n)) => {
                assert_eq!(n, 5 * c.windows.len() as i64);
                Ok((0..c.windows.len())
                    .map(|_| [(); 5].map(|_| int(it.next())))
                    .collect())
            }
            Some(redis::Value::BulkString(e)) => Err(String::from_utf8_lossy(&e).into_owned()),
            v => panic!("unexpected reply {v:?}"),
        })
        .collect()
}

/// A policy of the window script's tests: cost, then limit and window (ms) per window.
type Policy = (u64, Vec<(u64, u64)>);

/// A batch of the window script's tests: how far the clock moves before it (ms), then per call
/// its policy (an index into the policies), its first key and the distance to its second.
type Batch = (i64, Vec<(usize, usize, usize)>);

/// Replays batches through the window script (on a flushed upstream, its `TIME` simulated from
/// `start_ms`) and through a `LocalLimiter` on the same clock, and compares every reply.
fn replay(
    up: &RedisServer,
    start_ms: u64,
    policies: &[Policy],
    batches: &[Batch],
) -> Result<(), proptest::test_runner::TestCaseError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use strata::guard::rate::{LocalLimiter, Space, Window};

    let mut cu = up.conn();
    let _: () = redis::cmd("FLUSHALL").query(&mut cu).unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut cu).unwrap();
    let mut now_ms = start_ms;
    let clock_ms = Arc::new(AtomicU64::new(now_ms));
    let c = clock_ms.clone();
    let local =
        LocalLimiter::with_clock(1000, Arc::new(move || c.load(Ordering::SeqCst) * 1_000_000));
    // The largest limit each key was checked against (its log's bound: two windows of calls).
    let mut limits: HashMap<String, u64> = HashMap::new();
    for (step, picks) in batches {
        now_ms = now_ms.saturating_add_signed(*step);
        clock_ms.store(now_ms, Ordering::SeqCst);
        let calls: Vec<ScriptCall> = picks
            .iter()
            .map(|&(p, k, d)| {
                let (cost, windows) = policies[p % policies.len()].clone();
                let keys = (0..windows.len()).map(|i| (k + i * d) % 3).collect();
                ScriptCall {
                    cost,
                    windows,
                    keys,
                }
            })
            .collect();
        let got = script_batch(&mut cu, now_ms * 1000, &calls);
        for (i, (call, got)) in calls.iter().zip(got).enumerate() {
            let names = call.names();
            let checks: Vec<(Space, &[u8], Window)> = names
                .iter()
                .zip(&call.windows)
                .map(|(n, &(limit, window_ms))| {
                    (Space::Rate, n.as_bytes(), Window { limit, window_ms })
                })
                .collect();
            let want: Vec<[i64; 5]> = local
                .windows(&checks, call.cost)
                .iter()
                .map(|v| v.as_array())
                .collect();
            proptest::prop_assert_eq!(
                got,
                Ok(want),
                "call {} of the batch at {}: {:?}",
                i,
                now_ms,
                call
            );
        }
        // Each log holds at most two windows of calls: at most twice its largest limit.
        for call in &calls {
            for (name, &(limit, _)) in call.names().into_iter().zip(&call.windows) {
                let most = limits.entry(name).or_default();
                *most = (*most).max(limit);
            }
        }
        for (name, most) in &limits {
            let n = rate_log_len(&mut cu, format!("strata:rate:{{{name}}}"));
            proptest::prop_assert!(n as u64 <= 2 * most, "{}: {} records", name, n);
        }
    }
    Ok(())
}

/// An hour ahead of the real clock (ms), so that no key the script writes expires while a test
/// runs.
fn simulated_start() -> u64 {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    unix_ms + 3_600_000
}

// Feature: db-cache-optimization, Property 29: Sliding Window Rate Limiting
/// The window script L2 runs, on a real redis-server with its `TIME` replaced by a simulated
/// clock (whole milliseconds), answers every call of every batch exactly as the in-process log
/// does (`LocalLimiter`, the L1 state, driven by the same clock): admitted or not, remaining,
/// retry and reset, for single windows (RATE) and pairs of windows recorded all or nothing (the
/// QUERY limits), with calls of one batch sharing one time; and no log ever holds more than
/// two windows of calls (twice its largest limit). Limits up to 150 and batches of up to 64
/// calls make logs longer than the 64 records the script reads at once, so its reads further
/// back are checked as well. (The clock only moves forward here: when it goes back,
/// both count from their newest entry, but the local log forgets an expired entry as soon as a
/// call sees it, the script only once per window.)
#[test]
fn the_l2_window_script_replies_as_the_local_log() {
    use proptest::prelude::*;

    let up = RedisServer::start();
    let policy = (
        prop_oneof![3 => Just(1u64), 1 => 2u64..=6],
        prop::collection::vec(
            (
                prop_oneof![1u64..=10, 60u64..=150],
                prop::sample::select(vec![1u64, 2, 5, 50, 300]),
            ),
            1..=2,
        ),
    );
    let step = prop_oneof![
        3 => Just(0i64),
        4 => 1i64..=5,
        2 => 20i64..=400,
        1 => 400i64..=2000,
    ];
    let strategy = (
        prop::collection::vec(policy, 1..=3),
        prop::collection::vec(
            (
                step,
                prop::collection::vec((0usize..3, 0usize..3, 1usize..3), 1..=64),
            ),
            1..=20,
        ),
    );
    let mut runner =
        proptest::test_runner::TestRunner::new(proptest::test_runner::Config::with_cases(100));
    let result = runner.run(&strategy, |(policies, batches)| {
        replay(&up, simulated_start(), &policies, &batches)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The window script past its 64-record tail, step by step: a window of 300 ms, 100 calls
/// 100 ms into a period, 50 more 100 ms later; the first call of the next period rewrites a log
/// whose live records start before the tail; then, once the first 50 have left, admitted and
/// denied calls (the denied ones searching records before the tail for their retry time) reply
/// as the local log does.
#[test]
fn the_l2_window_script_reads_a_long_log_past_its_tail() {
    let up = RedisServer::start();
    // Key 0 alone: one window of 300 ms, limit 1000 at cost 1; cost 900 and cost 960 on it.
    let policies: Vec<Policy> = vec![
        (1, vec![(1000, 300)]),
        (900, vec![(1000, 300)]),
        (960, vec![(1000, 300)]),
    ];
    let start = simulated_start() / 300 * 300 + 100;
    let ones = |n| vec![(0usize, 0usize, 1usize); n];
    let batches: Vec<Batch> = vec![
        (0, ones(50)),
        (0, ones(50)),
        (100, ones(50)),
        // 350 ms after the first calls: the next period (its first call rewrites the log).
        (150, ones(2)),
        // 420 ms: the first 100 have left; 52 are live.
        (70, vec![(0, 0, 1), (1, 0, 1), (2, 0, 1), (0, 0, 1)]),
        (1, vec![(2, 0, 1), (1, 0, 1)]),
    ];
    if let Err(e) = replay(&up, start, &policies, &batches) {
        panic!("{e}");
    }
}

/// A RATE log an older Strata kept in L2 as a sorted set is dropped and started again as a
/// string log; a key holding another type fails with WRONGTYPE and keeps its value.
#[test]
fn an_older_sorted_set_log_is_replaced_and_other_types_fail() {
    let up = RedisServer::start();
    let s = tiered(up.port, "");
    let mut c = s.conn();
    let mut cu = up.conn();
    let _: () = redis::cmd("ZADD")
        .arg("strata:rate:{old}")
        .arg(1)
        .arg("00000000000000000:1:1")
        .query(&mut cu)
        .unwrap();
    assert_eq!(rate(&mut c, &["old", "5", "60"]), [1, 5, 4, 0, 60_000]);
    assert_eq!(rate(&mut c, &["old", "5", "60"]), [1, 5, 3, 0, 60_000]);
    let kind: String = redis::cmd("TYPE")
        .arg("strata:rate:{old}")
        .query(&mut cu)
        .unwrap();
    assert_eq!(kind, "string");
    assert_eq!(rate_log_len(&mut cu, "strata:rate:{old}"), 2);

    let _: () = redis::cmd("RPUSH")
        .arg("strata:rate:{list}")
        .arg("x")
        .query(&mut cu)
        .unwrap();
    let e = error(&mut c, "RATE", &["list", "5", "60"]);
    assert!(e.contains("WRONGTYPE"), "{e}");
    let len: i64 = redis::cmd("LLEN")
        .arg("strata:rate:{list}")
        .query(&mut cu)
        .unwrap();
    assert_eq!(len, 1);
}
