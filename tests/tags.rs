//! TAGADD / TAGINVAL from the outside: standalone, and in tiered mode with two Strata instances
//! sharing one real redis-server, where TAGINVAL through either instance must remove exactly
//! the keys carrying the tags, from L2 and from both L1s.

mod support;

use proptest::prelude::*;
use redis::Commands;
use std::time::Duration;
use support::{wait_until, RedisServer, Strata};

fn tiered(upstream: &RedisServer) -> Strata {
    let s = Strata::with_config(&format!(
        "[l2]\nurl = \"redis://127.0.0.1:{}\"\n",
        upstream.port
    ));
    let mut c = s.conn();
    assert!(wait_until(Duration::from_secs(5), || {
        redis::cmd("INCR").arg("__up").query::<i64>(&mut c).is_ok()
    }));
    s
}

fn tagadd(c: &mut redis::Connection, key: &str, tags: &[&str]) -> i64 {
    redis::cmd("TAGADD").arg(key).arg(tags).query(c).unwrap()
}

fn taginval(c: &mut redis::Connection, tags: &[&str]) -> i64 {
    redis::cmd("TAGINVAL").arg(tags).query(c).unwrap()
}

#[test]
fn standalone_tags_follow_redis_conventions() {
    let s = Strata::start();
    let mut c = s.conn();
    let _: () = c.set("a", 1).unwrap();
    let _: () = c.sadd("b", "x").unwrap();
    assert_eq!(tagadd(&mut c, "a", &["t1", "t2"]), 2);
    assert_eq!(tagadd(&mut c, "a", &["t1"]), 0);
    assert_eq!(tagadd(&mut c, "b", &["t2"]), 1);
    assert_eq!(tagadd(&mut c, "missing", &["t1"]), 0);
    assert_eq!(taginval(&mut c, &["t1"]), 1);
    assert!(!c.exists::<_, bool>("a").unwrap());
    assert!(c.exists::<_, bool>("b").unwrap());
    assert_eq!(taginval(&mut c, &["t1", "t2"]), 1);
    assert_eq!(taginval(&mut c, &["never"]), 0);
    // Tags belong to a database.
    let _: () = c.set("d", 1).unwrap();
    assert_eq!(tagadd(&mut c, "d", &["t"]), 1);
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c).unwrap();
    assert_eq!(taginval(&mut c, &["t"]), 0);
    // Wrong arity is Redis's error.
    let e = redis::cmd("TAGADD")
        .arg("k")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("wrong number of arguments for 'tagadd'"),
        "{e}"
    );
    let e = redis::cmd("TAGINVAL").query::<i64>(&mut c).unwrap_err();
    assert!(
        e.to_string()
            .contains("wrong number of arguments for 'taginval'"),
        "{e}"
    );
}

const TAGS: [&str; 4] = ["t0", "t1", "t2", "t3"];

// Feature: db-cache-optimization, Property 43: Tag-Based Cache Invalidation
/// Keys tagged through either instance and cached in both L1s: TAGINVAL through either
/// instance removes exactly the keys carrying one of its tags — from L2 and from both L1s —
/// and no other key. (One upstream and two instances serve all 100 cases; they are stopped
/// when the test ends.)
#[test]
fn taginval_removes_exactly_the_tagged_keys_everywhere() {
    let up = RedisServer::start();
    let (a, b) = (tiered(&up), tiered(&up));
    let env = Env { up, a, b };
    let strategy = (
        proptest::collection::vec((0u8..16, any::<bool>()), 8),
        1u8..16,
        any::<bool>(),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(100));
    let result = runner.run(&strategy, |(tagging, inval, via_a)| {
        let mut conns = [env.a.conn(), env.b.conn()];
        let _: () = redis::cmd("FLUSHALL").query(&mut conns[0]).unwrap();
        let mut carried = vec![false; tagging.len()];
        let dropped: Vec<&str> = TAGS
            .iter()
            .enumerate()
            .filter(|(i, _)| inval & (1 << i) != 0)
            .map(|(_, t)| *t)
            .collect();
        for (i, (mask, through_a)) in tagging.iter().enumerate() {
            let c = &mut conns[!*through_a as usize];
            let key = format!("k{i}");
            let _: () = c.set(&key, i).unwrap();
            let tags: Vec<&str> = TAGS
                .iter()
                .enumerate()
                .filter(|(j, _)| mask & (1 << j) != 0)
                .map(|(_, t)| *t)
                .collect();
            if !tags.is_empty() {
                prop_assert_eq!(tagadd(c, &key, &tags), tags.len() as i64);
            }
            carried[i] = tags.iter().any(|t| dropped.contains(t));
        }
        // Both instances cache every key.
        for c in conns.iter_mut() {
            for i in 0..tagging.len() {
                let v: Option<i64> = c.get(format!("k{i}")).unwrap();
                prop_assert_eq!(v, Some(i as i64));
            }
        }
        let n = taginval(&mut conns[!via_a as usize], &dropped);
        prop_assert_eq!(n, carried.iter().filter(|c| **c).count() as i64);
        let mut up = env.up.conn();
        for (i, gone) in carried.iter().enumerate() {
            let key = format!("k{i}");
            let want = if *gone { None } else { Some(i as i64) };
            prop_assert_eq!(up.get::<_, Option<i64>>(&key).unwrap(), want);
            // The instance that ran TAGINVAL at once; the other within its invalidation delay.
            let issuer: Option<i64> = conns[!via_a as usize].get(&key).unwrap();
            prop_assert_eq!(issuer, want);
            let other = &mut conns[via_a as usize];
            prop_assert!(
                wait_until(Duration::from_secs(2), || {
                    other.get::<_, Option<i64>>(&key).unwrap() == want
                }),
                "key {} on the other instance",
                key
            );
        }

        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

struct Env {
    up: RedisServer,
    a: Strata,
    b: Strata,
}

#[test]
fn a_fill_that_read_before_taginval_is_never_served_after_it() {
    let up = RedisServer::start();
    let (a, b) = (tiered(&up), tiered(&up));
    let (mut ca, mut cb, mut cu) = (a.conn(), b.conn(), up.conn());
    // Many rounds of: B reads (and fills) while A invalidates; afterwards neither serves
    // the deleted value, ever.
    for round in 0..200 {
        let key = format!("r{round}");
        let _: () = cu.set(&key, "old").unwrap();
        assert_eq!(tagadd(&mut ca, &key, &["hot"]), 1);
        let reader = std::thread::spawn({
            let mut cb2 = b.conn();
            let key = key.clone();
            move || {
                for _ in 0..5 {
                    let _: Option<String> = cb2.get(&key).unwrap();
                }
            }
        });
        assert_eq!(taginval(&mut ca, &["hot"]), 1);
        reader.join().unwrap();
        assert!(
            wait_until(Duration::from_millis(500), || cb
                .get::<_, Option<String>>(&key)
                .unwrap()
                .is_none()),
            "round {round}: B still serves the invalidated value"
        );
        // And it stays gone: no late fill lands afterwards.
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(cb.get::<_, Option<String>>(&key).unwrap(), None);
        assert_eq!(ca.get::<_, Option<String>>(&key).unwrap(), None);
    }
}
