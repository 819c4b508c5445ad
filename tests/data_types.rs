//! Sets and lists against the real redis-server and against a reference model.
//!
//! 1. A fixed script of set and list commands (error cases included) must give byte-identical
//!    replies on Strata and on redis-server. Sets whose order Redis leaves to its hash table are
//!    compared sorted; all-integer sets (intsets) are ordered, so they are compared as bytes.
//! 2. A model-based proptest: random LPUSH/RPUSH/LPOP/RPOP/LRANGE/LINDEX/LSET/LREM/LTRIM/
//!    LINSERT/LMOVE and SADD/SREM/SISMEMBER/SCARD/SMEMBERS/SINTER/SUNION/SDIFF/SMOVE sequences
//!    applied to Strata and to a VecDeque/BTreeSet model give the same replies.

mod support;

use proptest::prelude::*;
use redis::{Connection, Value};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;
use support::{RedisServer, Strata};

const SCRIPT: &[&str] = &[
    "SADD s 3 1 2",
    "SMEMBERS s",
    "SADD s 2",
    "SCARD s",
    "SISMEMBER s 1",
    "SMISMEMBER s 1 9",
    "SREM s 1 9",
    "SADD t 2 3 4",
    "SINTER s t",
    "SUNION s t",
    "SDIFF t s",
    "SUNIONSTORE u s t",
    "SMEMBERS u",
    "SINTERSTORE none s nosuch",
    "EXISTS none",
    "SINTERCARD 2 s t LIMIT 1",
    "SINTERCARD 2 s t",
    "SINTERCARD 0 s",
    "SINTERCARD 3 s t",
    "SINTERCARD 1 s LIMIT -1",
    "SINTERCARD 1 s FOO",
    "SMOVE s t 3",
    "SMOVE s nosuch 2",
    "SMOVE nosuch t 2",
    "SPOP nosuch",
    "SPOP nosuch 3",
    "SPOP s -1",
    "SPOP s x",
    "SRANDMEMBER nosuch",
    "SRANDMEMBER nosuch 5",
    "SRANDMEMBER s 0",
    "SET str x",
    "SADD str 1",
    "SMOVE t str 4",
    "SINTER s str",
    "OBJECT ENCODING t",
    "SADD t a",
    "SREM t a",
    "OBJECT ENCODING t",
    "SSCAN s 0",
    "SSCAN s x",
    "SADD",
    "RPUSH l a b c d",
    "LPUSH l z",
    "LRANGE l 0 -1",
    "LRANGE l -100 100",
    "LRANGE l 5 10",
    "LRANGE l 2 1",
    "LINDEX l -1",
    "LINDEX l 99",
    "LINDEX l x",
    "LSET l 1 A",
    "LSET l 99 A",
    "LSET nolist 0 A",
    "LINSERT l BEFORE c X",
    "LINSERT l AFTER nope X",
    "LINSERT l MIDDLE c X",
    "LINSERT nolist BEFORE c X",
    "RPUSH l c c",
    "LREM l -2 c",
    "LREM l 0 nothing",
    "LRANGE l 0 -1",
    "LPOS l c",
    "LPOS l nope",
    "LPOS l c RANK -1 COUNT 0",
    "LPOS l c RANK 0",
    "LPOS l c COUNT -1",
    "LPOS l c MAXLEN -1",
    "LPOS l c MAXLEN 1",
    "LPOS l c FOO 1",
    "LTRIM l 1 -2",
    "LRANGE l 0 -1",
    "LTRIM l 5 1",
    "EXISTS l",
    "RPUSH l a b c d e",
    "LPOP l 2",
    "LPOP l 0",
    "RPOP nolist 2",
    "RPOP nolist",
    "LPOP l -1",
    "LMOVE l l2 LEFT RIGHT",
    "LMOVE l l2 UP RIGHT",
    "LMOVE nolist l2 LEFT LEFT",
    "LMOVE l str LEFT LEFT",
    "RPOPLPUSH l2 l",
    "LRANGE l 0 -1",
    "LLEN l",
    "LLEN str",
    "LPUSHX nolist a",
    "RPUSHX l q",
    "TYPE l",
    "TYPE s",
    "OBJECT ENCODING l",
    "LPUSH str a",
    "LPUSH",
    "BLPOP q x",
    "BLPOP q -1",
    "BLPOP nolist 0.01",
    "BRPOP nolist l2 0.01",
    "BLMOVE nolist l2 LEFT LEFT 0.01",
    "BLMOVE l2 l3 LEFT RIGHT 1",
    "BLPOP str 0.01",
    "MULTI",
    "BLPOP nolist 0",
    "EXEC",
    "RPUSH m1 a b c",
    "RPUSH m2 x",
    "LMPOP 2 nolist m1 LEFT",
    "LMPOP 2 m1 m2 RIGHT COUNT 5",
    "EXISTS m1",
    "LMPOP 1 m1 LEFT",
    "LMPOP 0 m2 LEFT",
    "LMPOP x m2 LEFT",
    "LMPOP 2 m2 LEFT",
    "LMPOP 1 m2 UP",
    "LMPOP 1 m2 LEFT COUNT 0",
    "LMPOP 1 m2 LEFT COUNT -1",
    "LMPOP 1 m2 LEFT COUNT 1 COUNT 1",
    "LMPOP 1 str LEFT",
    "LMPOP 1 m2 UP COUNT 0",
    "BLMPOP 0 1 m2 LEFT COUNT 3",
    "BLMPOP x 1 m2 LEFT",
    "BLMPOP 0.01 1 nolist LEFT",
    "BLMPOP 0 0 nolist LEFT",
    "BLMPOP 0 1 nolist SIDEWAYS",
    "BLMPOP 0.01 1 str LEFT",
    "MULTI",
    "BLMPOP 0 1 nolist LEFT",
    "EXEC",
];

#[test]
fn set_and_list_replies_are_byte_identical_to_redis() {
    let strata = Strata::start();
    let redis = RedisServer::start();
    let diffs = support::differing_replies(&mut redis.raw(), &mut strata.raw(), SCRIPT);
    assert!(
        diffs.is_empty(),
        "{} replies differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn hashtable_sets_hold_the_same_members_as_redis() {
    let strata = Strata::start();
    let redis = RedisServer::start();
    for conn in [&mut strata.conn(), &mut redis.conn()] {
        let _: () = redis::cmd("SADD")
            .arg("w")
            .arg(&["x", "y", "z", "1"])
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("SADD")
            .arg("v")
            .arg(&["y", "q"])
            .query(conn)
            .unwrap();
    }
    for cmd in [
        &["SMEMBERS", "w"][..],
        &["SUNION", "w", "v"],
        &["SDIFF", "w", "v"],
        &["SINTER", "w", "v"],
    ] {
        let get = |c: &mut Connection| {
            let mut v: Vec<String> = redis::cmd(cmd[0]).arg(&cmd[1..]).query(c).unwrap();
            v.sort();
            v
        };
        assert_eq!(get(&mut strata.conn()), get(&mut redis.conn()), "{cmd:?}");
    }
    // SPOP and SRANDMEMBER draw members of the set, distinct or repeated as the count says.
    let mut c = strata.conn();
    let picks: Vec<String> = redis::cmd("SRANDMEMBER")
        .arg("w")
        .arg(10)
        .query(&mut c)
        .unwrap();
    assert_eq!(picks.iter().collect::<BTreeSet<_>>().len(), 4);
    let picks: Vec<String> = redis::cmd("SRANDMEMBER")
        .arg("w")
        .arg(-10)
        .query(&mut c)
        .unwrap();
    assert_eq!(picks.len(), 10);
    assert!(picks
        .iter()
        .all(|p| ["x", "y", "z", "1"].contains(&p.as_str())));
    let popped: Vec<String> = redis::cmd("SPOP").arg("w").arg(3).query(&mut c).unwrap();
    assert_eq!(popped.len(), 3);
    let left: i64 = redis::cmd("SCARD").arg("w").query(&mut c).unwrap();
    assert_eq!(left, 1);
}

const ZSCRIPT: &[&str] = &[
    "ZADD z 1 a 2 b 3 c",
    "ZADD z 1.5 a 0.1 d",
    "ZADD z NX 9 a 4 e",
    "ZADD z XX CH 5 a 6 nope",
    "ZADD z GT CH 1 a 7 b",
    "ZADD z LT CH 9 c 0 c",
    "ZADD z INCR 2 a",
    "ZADD z INCR NX 2 a",
    "ZADD z NX XX 1 a",
    "ZADD z GT LT 1 a",
    "ZADD z INCR 1 a 2 b",
    "ZADD z 1",
    "ZADD z nan a",
    "ZADD z x a",
    "ZADD z -inf lo +inf hi",
    "ZRANGE z 0 -1 WITHSCORES",
    "ZRANGE z 0 -1 REV",
    "ZRANGE z -3 100",
    "ZRANGE z 5 1",
    "ZRANGE z (1 7 BYSCORE WITHSCORES",
    "ZRANGE z 7 (1 BYSCORE REV",
    "ZRANGE z -inf +inf BYSCORE LIMIT 1 2",
    "ZRANGE z -inf +inf BYSCORE LIMIT -1 2",
    "ZRANGE z 0 -1 LIMIT 1 2",
    "ZRANGE z - + BYLEX WITHSCORES",
    "ZRANGE z x y BYSCORE",
    "ZRANGEBYSCORE z -inf +inf",
    "ZRANGEBYSCORE z (0.1 5 WITHSCORES LIMIT 0 2",
    "ZREVRANGEBYSCORE z +inf -inf WITHSCORES",
    "ZREVRANGE z 0 1 WITHSCORES",
    "ZREVRANGE z 0 1 FOO",
    "ZCOUNT z -inf +inf",
    "ZCOUNT z (1 3",
    "ZCOUNT z a b",
    "ZSCORE z a",
    "ZSCORE z nope",
    "ZMSCORE z a nope b",
    "ZRANK z a",
    "ZREVRANK z a",
    "ZRANK z nope",
    "ZCARD z",
    "ZINCRBY z 2.5 d",
    "ZINCRBY z x d",
    "ZREM z nope d",
    "ZPOPMIN z",
    "ZPOPMAX z 2",
    "ZPOPMIN z -1",
    "ZPOPMIN nosuch",
    "ZPOPMIN nosuch 2",
    "ZADD l 0 a 0 b 0 c 0 d 0 e",
    "ZRANGEBYLEX l - +",
    "ZRANGEBYLEX l [b (d",
    "ZRANGEBYLEX l (b + LIMIT 1 1",
    "ZREVRANGEBYLEX l + [c",
    "ZLEXCOUNT l [b [d",
    "ZLEXCOUNT l b d",
    "ZREMRANGEBYLEX l [a [b",
    "ZRANGE l 0 -1",
    "ZADD r 1 a 2 b 3 c 4 d 5 e",
    "ZREMRANGEBYRANK r 0 1",
    "ZREMRANGEBYSCORE r (4 +inf",
    "ZRANGE r 0 -1 WITHSCORES",
    "ZADD u1 1 a 2 b",
    "ZADD u2 3 b 4 c",
    "SADD us x b",
    "ZUNIONSTORE out 2 u1 u2",
    "ZRANGE out 0 -1 WITHSCORES",
    "ZUNIONSTORE out 3 u1 u2 us WEIGHTS 1 2 10 AGGREGATE MAX",
    "ZRANGE out 0 -1 WITHSCORES",
    "ZINTERSTORE out 2 u1 u2 AGGREGATE MIN",
    "ZRANGE out 0 -1 WITHSCORES",
    "ZINTERSTORE out 2 u1 nosuch",
    "EXISTS out",
    "ZUNIONSTORE out 0 u1",
    "ZUNIONSTORE out 3 u1",
    "ZUNIONSTORE out 1 u1 WEIGHTS x",
    "ZUNIONSTORE out 1 u1 AGGREGATE AVG",
    "SET str x",
    "ZADD str 1 a",
    "ZUNIONSTORE out 1 str",
    "ZSCAN u1 0",
    "TYPE u1",
    "OBJECT ENCODING u1",
    // Redis 6.2/7.0 forms: replies, counts, ranges stored.
    "ZUNION 2 u1 u2",
    "ZUNION 3 u1 u2 us WEIGHTS 1 2 10 AGGREGATE MAX WITHSCORES",
    "ZUNION 1 u1 WITHSCORES WITHSCORES",
    "ZUNION 1 u1 WEIGHTS -0 WITHSCORES",
    "ZUNIONSTORE out 1 u1 WEIGHTS -0",
    "ZRANGE out 0 -1 WITHSCORES",
    "ZINTER 2 u1 u2 WITHSCORES",
    "ZINTER 2 u1 u2 AGGREGATE MAX AGGREGATE MIN WITHSCORES",
    "ZINTER 2 u1 nosuch WITHSCORES",
    "ZDIFF 2 u1 u2 WITHSCORES",
    "ZDIFF 1 u1",
    "ZDIFF 2 nosuch u1",
    "ZDIFF 2 u1 us WITHSCORES",
    "ZDIFF 1 u1 WEIGHTS 1",
    "ZDIFF 1 u1 AGGREGATE SUM",
    "ZDIFFSTORE dout 2 u2 u1",
    "ZRANGE dout 0 -1 WITHSCORES",
    "ZDIFFSTORE dout 2 u1 u1",
    "EXISTS dout",
    "ZDIFFSTORE dout 1 u1 WITHSCORES",
    "ZDIFFSTORE dout 2 u1",
    "ZINTERCARD 2 u1 u2",
    "ZINTERCARD 1 r",
    "ZINTERCARD 1 r LIMIT 2",
    "ZINTERCARD 1 r LIMIT 0",
    "ZINTERCARD 1 r LIMIT -1",
    "ZINTERCARD 1 r LIMIT x",
    "ZINTERCARD 0 r",
    "ZINTERCARD 2 r",
    "ZINTERCARD 1 r WITHSCORES",
    "ZINTERCARD 2 u1 str",
    "ZUNION 0 u1",
    "ZUNION 2 u1",
    "ZUNION x u1",
    "ZUNION 1 str",
    "ZINTER 1 u1 WEIGHTS nan",
    "ZADD rs 1 a 2 b 3 c 4 d 5 e",
    "ZRANGESTORE rd rs 1 3",
    "ZRANGE rd 0 -1 WITHSCORES",
    "ZRANGESTORE rd rs (1 +inf BYSCORE LIMIT 1 2",
    "ZRANGE rd 0 -1 WITHSCORES",
    "ZRANGESTORE rd rs +inf -inf BYSCORE REV LIMIT 0 2",
    "ZRANGE rd 0 -1 WITHSCORES",
    "ZRANGESTORE rd rs [b (e BYLEX",
    "ZRANGESTORE rd rs 10 20",
    "EXISTS rd",
    "ZRANGESTORE rd nosuch 0 -1",
    "ZRANGESTORE rd rs 0 -1 WITHSCORES",
    "ZRANGESTORE rd str 0 -1",
    "ZRANGESTORE rd rs x 1",
    "ZRANGESTORE rd rs 0 1 LIMIT 0 1",
    "ZRANGE rs 0 -1 REV REV",
    "ZRANGE rs 0 -1 BYSCORE BYSCORE",
    "ZRANGE rs 0 -1 BYSCORE BYLEX",
    "ZRANGE rs 0 -1 LIMIT 2 -1",
    "ZRANGE rs 0 -1 LIMIT 2 3",
    "ZRANGE rs 0 -1 WITHSCORES WITHSCORES",
    "ZRANGE rs (1 5 BYSCORE LIMIT 1 -1 WITHSCORES",
    "ZRANDMEMBER rs 10",
    "ZRANDMEMBER rs 5 WITHSCORES",
    "ZRANDMEMBER rs 0",
    "ZRANDMEMBER rs 0 WITHSCORES",
    "ZRANDMEMBER nosuch",
    "ZRANDMEMBER nosuch 3",
    "ZRANDMEMBER str",
    "ZRANDMEMBER str 2",
    "ZRANDMEMBER rs x",
    "ZRANDMEMBER rs 1 WITHSCORE",
    "ZRANDMEMBER rs 1 WITHSCORES x",
    "ZRANDMEMBER rs -9223372036854775808",
    "ZRANDMEMBER rs 5000000000000000000 WITHSCORES",
    "ZRANDMEMBER rs 5000000000000000000",
    "ZADD one 7 only",
    "ZRANDMEMBER one",
    "ZRANDMEMBER one -3 WITHSCORES",
    "ZRANDMEMBER one 1",
    "ZADD mp1 1 a 2 b 3 c",
    "ZADD mp2 5 x",
    "ZMPOP 2 nosuch mp1 MIN",
    "ZMPOP 2 mp1 mp2 MAX COUNT 2",
    "ZMPOP 1 mp1 MIN COUNT 10",
    "EXISTS mp1",
    "ZMPOP 1 mp1 MIN",
    "ZMPOP 0 mp2 MIN",
    "ZMPOP x mp2 MIN",
    "ZMPOP 2 mp2 MIN",
    "ZMPOP 1 mp2 UP",
    "ZMPOP 1 mp2 MIN COUNT 0",
    "ZMPOP 1 mp2 MIN COUNT x",
    "ZMPOP 1 mp2 MIN COUNT 1 COUNT 1",
    "ZMPOP 1 mp2 MIN LIMIT 1",
    "ZMPOP 1 str MIN",
    "ZMPOP 1 mp2 UP COUNT 0",
    "ZMPOP 9223372036854775807 mp2 MIN",
    "BZPOPMIN mp2 0",
    "ZADD mp2 5 x 6 y",
    "BZPOPMAX nosuch mp2 0",
    "BZPOPMIN mp2 -1",
    "BZPOPMIN mp2 x",
    "BZPOPMIN str 0",
    "BZMPOP 0 1 mp2 MAX COUNT 3",
    "BZMPOP -1 1 mp2 MAX",
    "BZMPOP 0 0 mp2 MAX",
    "BZMPOP 0 1 mp2 SIDEWAYS",
    "MULTI",
    "BZPOPMIN nosuch 0",
    "BZMPOP 0 1 nosuch MIN",
    "EXEC",
    "HSET rh f v",
    "HRANDFIELD rh -9223372036854775808",
    "HRANDFIELD rh 5000000000000000000",
    "HRANDFIELD rh 5000000000000000000 WITHVALUES",
    "HRANDFIELD rh -2 WITHVALUES",
];

#[test]
fn sorted_set_replies_are_byte_identical_to_redis() {
    let strata = Strata::start();
    let redis = RedisServer::start();
    for resp3 in [false, true] {
        let (mut a, mut b) = (redis.raw(), strata.raw());
        let _ = (a.call(&[b"FLUSHALL"]), b.call(&[b"FLUSHALL"]));
        if resp3 {
            a.call(&[b"HELLO", b"3"]);
            b.call(&[b"HELLO", b"3"]);
        }
        let diffs = support::differing_replies(&mut a, &mut b, ZSCRIPT);
        assert!(
            diffs.is_empty(),
            "resp3={resp3}: {} replies differ:\n{}",
            diffs.len(),
            diffs.join("\n")
        );
    }
}

#[test]
fn zrandmember_picks_members_with_their_scores() {
    let strata = Strata::start();
    let mut c = strata.conn();
    let scores: HashMap<String, f64> = (0..20).map(|i| (format!("m{i}"), i as f64 / 2.0)).collect();
    for (m, s) in &scores {
        let _: i64 = redis::cmd("ZADD")
            .arg("z")
            .arg(*s)
            .arg(m)
            .query(&mut c)
            .unwrap();
    }
    let mut seen = BTreeSet::new();
    for _ in 0..50 {
        // A positive count below the size: that many distinct members.
        let some: Vec<String> = redis::cmd("ZRANDMEMBER")
            .arg("z")
            .arg(7)
            .query(&mut c)
            .unwrap();
        assert_eq!(some.len(), 7);
        assert_eq!(some.iter().collect::<BTreeSet<_>>().len(), 7, "{some:?}");
        assert!(some.iter().all(|m| scores.contains_key(m)));
        seen.extend(some);
        // A negative count: that many, repetition allowed, each with its own score.
        let pairs: Vec<(String, f64)> = redis::cmd("ZRANDMEMBER")
            .arg("z")
            .arg(-30)
            .arg("WITHSCORES")
            .query(&mut c)
            .unwrap();
        assert_eq!(pairs.len(), 30);
        assert!(
            pairs.iter().all(|(m, s)| scores.get(m) == Some(s)),
            "{pairs:?}"
        );
        let one: String = redis::cmd("ZRANDMEMBER").arg("z").query(&mut c).unwrap();
        assert!(scores.contains_key(&one));
    }
    // 350 draws of 7 from 20 leave none out unless the picks are not random.
    assert_eq!(seen.len(), 20);
    // A huge negative count is refused before any reply is built.
    let err = redis::cmd("ZRANDMEMBER")
        .arg("z")
        .arg(-4_000_000_000_000_000i64)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string().contains("client-output-buffer-limit"),
        "{err}"
    );
}

fn blpop_in_thread(port: u16, keys: &[&str], timeout: &str) -> std::thread::JoinHandle<Value> {
    let mut args: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    args.push(timeout.to_string());
    std::thread::spawn(move || {
        let mut c = support::connect(port);
        redis::cmd("BLPOP").arg(&args).query(&mut c).unwrap()
    })
}

fn blocked_clients(c: &mut Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("clients").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn blocked_clients_are_served_in_order_by_pushes_from_other_connections() {
    let strata = Strata::start();
    let mut c = strata.conn();
    let first = blpop_in_thread(strata.port, &["jobs"], "10");
    assert!(support::wait_until(
        Duration::from_secs(5),
        || blocked_clients(&mut c) == 1
    ));
    let second = blpop_in_thread(strata.port, &["other", "jobs"], "10");
    assert!(support::wait_until(
        Duration::from_secs(5),
        || blocked_clients(&mut c) == 2
    ));
    let _: () = redis::cmd("RPUSH")
        .arg("jobs")
        .arg("a")
        .arg("b")
        .query(&mut c)
        .unwrap();
    let as_pair = |v: Value| norm(v);
    assert_eq!(
        as_pair(first.join().unwrap()),
        R::List(vec![R::Str("jobs".into()), R::Str("a".into())])
    );
    assert_eq!(
        as_pair(second.join().unwrap()),
        R::List(vec![R::Str("jobs".into()), R::Str("b".into())])
    );
    assert_eq!(blocked_clients(&mut c), 0);
    let len: i64 = redis::cmd("LLEN").arg("jobs").query(&mut c).unwrap();
    assert_eq!(len, 0);
}

/// BZPOPMIN, BZPOPMAX, BZMPOP and BLMPOP block like BLPOP and are woken, in the order they
/// blocked, by a write from another connection.
#[test]
fn sorted_set_and_multi_key_pops_block_until_a_write() {
    let strata = Strata::start();
    let mut c = strata.conn();
    let port = strata.port;
    let blocked = |args: &'static [&'static str]| {
        std::thread::spawn(move || {
            let mut b = support::connect(port);
            norm(redis::cmd(args[0]).arg(&args[1..]).query(&mut b).unwrap())
        })
    };
    let s = |x: &str| R::Str(x.into());
    let min = blocked(&["BZPOPMIN", "nothing", "zq", "10"]);
    assert!(support::wait_until(
        Duration::from_secs(5),
        || blocked_clients(&mut c) == 1
    ));
    let max = blocked(&["BZPOPMAX", "zq", "10"]);
    assert!(support::wait_until(
        Duration::from_secs(5),
        || blocked_clients(&mut c) == 2
    ));
    let mpop = blocked(&["BZMPOP", "10", "1", "zq", "MAX", "COUNT", "5"]);
    assert!(support::wait_until(
        Duration::from_secs(5),
        || blocked_clients(&mut c) == 3
    ));
    let _: i64 = redis::cmd("ZADD")
        .arg(&["zq", "1", "a", "2", "b", "3", "c", "4", "d"])
        .query(&mut c)
        .unwrap();
    assert_eq!(min.join().unwrap(), R::List(vec![s("zq"), s("a"), s("1")]));
    assert_eq!(max.join().unwrap(), R::List(vec![s("zq"), s("d"), s("4")]));
    assert_eq!(
        mpop.join().unwrap(),
        R::List(vec![
            s("zq"),
            R::List(vec![
                R::List(vec![s("c"), s("3")]),
                R::List(vec![s("b"), s("2")])
            ]),
        ])
    );
    let left: i64 = redis::cmd("EXISTS").arg("zq").query(&mut c).unwrap();
    assert_eq!(left, 0, "the emptied sorted set is deleted");
    let lists = blocked(&["BLMPOP", "10", "2", "l1", "l2", "RIGHT", "COUNT", "2"]);
    assert!(support::wait_until(
        Duration::from_secs(5),
        || blocked_clients(&mut c) == 1
    ));
    let _: i64 = redis::cmd("RPUSH")
        .arg(&["l2", "x", "y", "z"])
        .query(&mut c)
        .unwrap();
    assert_eq!(
        lists.join().unwrap(),
        R::List(vec![s("l2"), R::List(vec![s("z"), s("y")])])
    );
    // Timeouts answer nil; inside MULTI they answer at once.
    let v: Value = redis::cmd("BZPOPMIN")
        .arg(&["none", "0.1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(v, Value::Nil);
    let v: Value = redis::cmd("BLMPOP")
        .arg(&["0.1", "1", "none", "LEFT"])
        .query(&mut c)
        .unwrap();
    assert_eq!(v, Value::Nil);
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn blocking_timeouts_disconnects_and_blmove() {
    let strata = Strata::start();
    let mut c = strata.conn();
    // A timeout answers nil after about the time asked for.
    let t = std::time::Instant::now();
    let v: Value = redis::cmd("BLPOP")
        .arg("empty")
        .arg("0.2")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, Value::Nil);
    assert!(
        t.elapsed() >= Duration::from_millis(190),
        "{:?}",
        t.elapsed()
    );
    // A blocked client that disconnects is forgotten; the server keeps serving.
    let mut raw = strata.raw();
    raw.cmd(&[b"BLPOP", b"gone", b"0"]);
    assert!(support::wait_until(
        Duration::from_secs(5),
        || blocked_clients(&mut c) == 1
    ));
    drop(raw);
    assert!(support::wait_until(
        Duration::from_secs(5),
        || blocked_clients(&mut c) == 0
    ));
    let _: () = redis::cmd("RPUSH")
        .arg("gone")
        .arg("x")
        .query(&mut c)
        .unwrap();
    let len: i64 = redis::cmd("LLEN").arg("gone").query(&mut c).unwrap();
    assert_eq!(len, 1, "nobody should have taken the element");
    // BLMOVE waits for its source and moves the element.
    let port = strata.port;
    let mover = std::thread::spawn(move || {
        let mut c = support::connect(port);
        redis::cmd("BLMOVE")
            .arg(&["src", "dst", "LEFT", "RIGHT", "10"])
            .query::<Value>(&mut c)
            .unwrap()
    });
    assert!(support::wait_until(
        Duration::from_secs(5),
        || blocked_clients(&mut c) == 1
    ));
    let _: () = redis::cmd("LPUSH")
        .arg("src")
        .arg("m")
        .query(&mut c)
        .unwrap();
    assert_eq!(norm(mover.join().unwrap()), R::Str("m".into()));
    let dst: Vec<String> = redis::cmd("LRANGE")
        .arg("dst")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(dst, vec!["m".to_string()]);
}

#[test]
fn huge_counts_and_a_million_members_stay_bounded() {
    let strata = Strata::start();
    let mut c = strata.conn();
    let _: () = redis::cmd("SADD")
        .arg("s")
        .arg(&["a", "b"])
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg("l")
        .arg(&["a", "b"])
        .query(&mut c)
        .unwrap();
    // A negative count asks for that many picks: refused before building a huge reply.
    let e = redis::cmd("SRANDMEMBER")
        .arg("s")
        .arg(-1_000_000_000i64)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("client-output-buffer-limit"), "{e}");
    let e = redis::cmd("HRANDFIELD")
        .arg("h")
        .arg(-1_000_000_000i64)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("client-output-buffer-limit"), "{e}");
    // Counts larger than the collection are clamped, as Redis does.
    let all: Vec<String> = redis::cmd("SPOP")
        .arg("s")
        .arg(i64::MAX)
        .query(&mut c)
        .unwrap();
    assert_eq!(all.len(), 2);
    let all: Vec<String> = redis::cmd("LRANGE")
        .arg("l")
        .arg(0)
        .arg(i64::MAX)
        .query(&mut c)
        .unwrap();
    assert_eq!(all, vec!["a", "b"]);
    let pos: Vec<i64> = redis::cmd("LPOS")
        .arg("l")
        .arg("b")
        .arg("COUNT")
        .arg(i64::MAX)
        .query(&mut c)
        .unwrap();
    assert_eq!(pos, vec![1]);
    // A million-member set: built, counted, scanned, deleted; memory comes back.
    let before = support::rss_kib(strata.pid());
    for chunk in 0..100 {
        let members: Vec<String> = (0..10_000)
            .map(|i| format!("m{}", chunk * 10_000 + i))
            .collect();
        let _: () = redis::cmd("SADD")
            .arg("big")
            .arg(&members)
            .query(&mut c)
            .unwrap();
    }
    let n: i64 = redis::cmd("SCARD").arg("big").query(&mut c).unwrap();
    assert_eq!(n, 1_000_000);
    let is: i64 = redis::cmd("SISMEMBER")
        .arg("big")
        .arg("m999999")
        .query(&mut c)
        .unwrap();
    assert_eq!(is, 1);
    let mut cursor = 0u64;
    let mut seen = 0usize;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg("big")
            .arg(cursor)
            .arg("COUNT")
            .arg(50_000)
            .query(&mut c)
            .unwrap();
        seen += batch.len();
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(seen, 1_000_000, "SSCAN returns every member once");
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("big")
        .query(&mut c)
        .unwrap();
    assert!(
        usage > 10_000_000,
        "MEMORY USAGE of a million members: {usage}"
    );
    let _: () = redis::cmd("DEL").arg("big").query(&mut c).unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    let dataset: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory_dataset:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(dataset < 1 << 20, "dataset {dataset} bytes after DEL");
    let grown = support::rss_kib(strata.pid()).saturating_sub(before);
    assert!(grown < 1024 * 1024, "RSS grew {grown} KiB");
}

#[derive(Debug, Clone)]
enum Op {
    Push(bool, u8, Vec<u8>),
    Pop(bool, u8, Option<u8>),
    Range(u8, i8, i8),
    Index(u8, i8),
    Set(u8, i8, u8),
    Rem(u8, i8, u8),
    Trim(u8, i8, i8),
    Insert(u8, bool, u8, u8),
    Move(u8, u8, bool, bool),
    SAdd(u8, Vec<u8>),
    SRem(u8, Vec<u8>),
    SIsMember(u8, u8),
    SCard(u8),
    SMembers(u8),
    SCombine(u8, u8, u8),
    SMove(u8, u8, u8),
    ZAdd(u8, i8, u8),
    ZIncr(u8, i8, u8),
    ZRem(u8, u8),
    ZRank(u8, u8),
    ZRange(u8, i8, i8),
    ZPopMin(u8),
    ZCount(u8, i8, i8),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0u8..3;
    let v = 0u8..4;
    prop_oneof![
        (
            any::<bool>(),
            k.clone(),
            prop::collection::vec(v.clone(), 1..4)
        )
            .prop_map(|(l, k, v)| Op::Push(l, k, v)),
        (any::<bool>(), k.clone(), prop::option::of(0u8..4)).prop_map(|(l, k, c)| Op::Pop(l, k, c)),
        (k.clone(), -5i8..5, -5i8..5).prop_map(|(k, a, b)| Op::Range(k, a, b)),
        (k.clone(), -5i8..5).prop_map(|(k, i)| Op::Index(k, i)),
        (k.clone(), -5i8..5, v.clone()).prop_map(|(k, i, v)| Op::Set(k, i, v)),
        (k.clone(), -3i8..3, v.clone()).prop_map(|(k, c, v)| Op::Rem(k, c, v)),
        (k.clone(), -5i8..5, -5i8..5).prop_map(|(k, a, b)| Op::Trim(k, a, b)),
        (k.clone(), any::<bool>(), v.clone(), v.clone())
            .prop_map(|(k, a, p, v)| Op::Insert(k, a, p, v)),
        (k.clone(), k.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(a, b, f, t)| Op::Move(a, b, f, t)),
        (k.clone(), prop::collection::vec(v.clone(), 1..4)).prop_map(|(k, v)| Op::SAdd(k, v)),
        (k.clone(), prop::collection::vec(v.clone(), 1..3)).prop_map(|(k, v)| Op::SRem(k, v)),
        (k.clone(), v.clone()).prop_map(|(k, v)| Op::SIsMember(k, v)),
        k.clone().prop_map(Op::SCard),
        k.clone().prop_map(Op::SMembers),
        (0u8..3, k.clone(), k.clone()).prop_map(|(o, a, b)| Op::SCombine(o, a, b)),
        (k.clone(), k.clone(), v.clone()).prop_map(|(a, b, v)| Op::SMove(a, b, v)),
        (k.clone(), -3i8..3, v.clone()).prop_map(|(k, s, m)| Op::ZAdd(k, s, m)),
        (k.clone(), -3i8..3, v.clone()).prop_map(|(k, s, m)| Op::ZIncr(k, s, m)),
        (k.clone(), v.clone()).prop_map(|(k, m)| Op::ZRem(k, m)),
        (k.clone(), v.clone()).prop_map(|(k, m)| Op::ZRank(k, m)),
        (k.clone(), -5i8..5, -5i8..5).prop_map(|(k, a, b)| Op::ZRange(k, a, b)),
        k.clone().prop_map(Op::ZPopMin),
        (k.clone(), -4i8..4, -4i8..4).prop_map(|(k, a, b)| Op::ZCount(k, a, b)),
    ]
}

/// What a reply means, independent of protocol details.
#[derive(Debug, PartialEq, Clone)]
enum R {
    Int(i64),
    Str(String),
    Nil,
    List(Vec<R>),
    Err,
    Ok,
}

fn norm(v: Value) -> R {
    match v {
        Value::Int(i) => R::Int(i),
        Value::BulkString(b) => R::Str(String::from_utf8_lossy(&b).into_owned()),
        Value::SimpleString(s) if s == "OK" => R::Ok,
        Value::Okay => R::Ok,
        Value::SimpleString(s) => R::Str(s),
        Value::Nil => R::Nil,
        Value::Array(a) | Value::Set(a) => R::List(a.into_iter().map(norm).collect()),
        Value::ServerError(_) => R::Err,
        other => R::Str(format!("{other:?}")),
    }
}

#[derive(Default)]
struct Model {
    lists: HashMap<u8, VecDeque<u8>>,
    sets: HashMap<u8, BTreeSet<u8>>,
    zsets: HashMap<u8, HashMap<u8, i64>>,
}

fn zkey(k: u8) -> String {
    format!("z{k}")
}

impl Model {
    /// The sorted set in Redis's order: by score, then by member.
    fn zordered(&self, k: u8) -> Vec<(i64, u8)> {
        let mut v: Vec<(i64, u8)> = self
            .zsets
            .get(&k)
            .map(|z| z.iter().map(|(m, s)| (*s, *m)).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn lkey(k: u8) -> String {
    format!("l{k}")
}
fn skey(k: u8) -> String {
    format!("s{k}")
}
fn s(v: u8) -> R {
    R::Str(v.to_string())
}

fn span(a: i8, b: i8, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let (mut a, mut b) = (a as i64, b as i64);
    if a < 0 {
        a += len;
    }
    if b < 0 {
        b += len;
    }
    if a < 0 {
        a = 0;
    }
    if a > b || a >= len {
        return None;
    }
    Some((a as usize, b.min(len - 1) as usize))
}

impl Model {
    fn apply(&mut self, op: &Op) -> (Vec<String>, R) {
        let mut cmd: Vec<String>;
        let reply = match op.clone() {
            Op::Push(left, k, vals) => {
                cmd = vec![if left { "LPUSH" } else { "RPUSH" }.into(), lkey(k)];
                let l = self.lists.entry(k).or_default();
                for v in vals {
                    cmd.push(v.to_string());
                    if left {
                        l.push_front(v)
                    } else {
                        l.push_back(v)
                    }
                }
                R::Int(l.len() as i64)
            }
            Op::Pop(left, k, count) => {
                cmd = vec![if left { "LPOP" } else { "RPOP" }.into(), lkey(k)];
                if let Some(c) = count {
                    cmd.push(c.to_string());
                }
                let l = self.lists.entry(k).or_default();
                let exists = !l.is_empty();
                let n = count.unwrap_or(1) as usize;
                let mut got = Vec::new();
                for _ in 0..n {
                    if let Some(v) = if left { l.pop_front() } else { l.pop_back() } {
                        got.push(s(v));
                    }
                }
                match (count, exists) {
                    (_, false) => R::Nil,
                    (None, true) => got.pop().unwrap_or(R::Nil),
                    (Some(_), true) => R::List(got),
                }
            }
            Op::Range(k, a, b) => {
                cmd = vec!["LRANGE".into(), lkey(k), a.to_string(), b.to_string()];
                let l = self.lists.entry(k).or_default();
                R::List(match span(a, b, l.len()) {
                    None => vec![],
                    Some((x, y)) => l.range(x..=y).map(|v| s(*v)).collect(),
                })
            }
            Op::Index(k, i) => {
                cmd = vec!["LINDEX".into(), lkey(k), i.to_string()];
                let l = self.lists.entry(k).or_default();
                let i = if i < 0 {
                    l.len() as i64 + i as i64
                } else {
                    i as i64
                };
                l.get(i as usize)
                    .filter(|_| i >= 0)
                    .map_or(R::Nil, |v| s(*v))
            }
            Op::Set(k, i, v) => {
                cmd = vec!["LSET".into(), lkey(k), i.to_string(), v.to_string()];
                let l = self.lists.entry(k).or_default();
                let i = if i < 0 {
                    l.len() as i64 + i as i64
                } else {
                    i as i64
                };
                match l.get_mut(i as usize).filter(|_| i >= 0) {
                    Some(x) => {
                        *x = v;
                        R::Ok
                    }
                    None => R::Err,
                }
            }
            Op::Rem(k, c, v) => {
                cmd = vec!["LREM".into(), lkey(k), c.to_string(), v.to_string()];
                let l = self.lists.entry(k).or_default();
                let mut idx: Vec<usize> = (0..l.len()).filter(|&i| l[i] == v).collect();
                if c < 0 {
                    idx.reverse();
                }
                if c != 0 {
                    idx.truncate(c.unsigned_abs() as usize);
                }
                idx.sort_unstable_by(|a, b| b.cmp(a));
                for &i in &idx {
                    l.remove(i);
                }
                R::Int(idx.len() as i64)
            }
            Op::Trim(k, a, b) => {
                cmd = vec!["LTRIM".into(), lkey(k), a.to_string(), b.to_string()];
                let l = self.lists.entry(k).or_default();
                *l = match span(a, b, l.len()) {
                    None => VecDeque::new(),
                    Some((x, y)) => l.range(x..=y).copied().collect(),
                };
                R::Ok
            }
            Op::Insert(k, after, p, v) => {
                cmd = vec![
                    "LINSERT".into(),
                    lkey(k),
                    if after { "AFTER" } else { "BEFORE" }.into(),
                    p.to_string(),
                    v.to_string(),
                ];
                let l = self.lists.entry(k).or_default();
                if l.is_empty() {
                    R::Int(0)
                } else {
                    match l.iter().position(|x| *x == p) {
                        None => R::Int(-1),
                        Some(i) => {
                            l.insert(if after { i + 1 } else { i }, v);
                            R::Int(l.len() as i64)
                        }
                    }
                }
            }
            Op::Move(a, b, from_left, to_left) => {
                let side = |l: bool| if l { "LEFT" } else { "RIGHT" }.to_string();
                cmd = vec![
                    "LMOVE".into(),
                    lkey(a),
                    lkey(b),
                    side(from_left),
                    side(to_left),
                ];
                let src = self.lists.entry(a).or_default();
                match if from_left {
                    src.pop_front()
                } else {
                    src.pop_back()
                } {
                    None => R::Nil,
                    Some(v) => {
                        let dst = self.lists.entry(b).or_default();
                        if to_left {
                            dst.push_front(v)
                        } else {
                            dst.push_back(v)
                        }
                        s(v)
                    }
                }
            }
            Op::SAdd(k, vals) => {
                cmd = vec!["SADD".into(), skey(k)];
                let set = self.sets.entry(k).or_default();
                let mut n = 0;
                for v in vals {
                    cmd.push(v.to_string());
                    n += set.insert(v) as i64;
                }
                R::Int(n)
            }
            Op::SRem(k, vals) => {
                cmd = vec!["SREM".into(), skey(k)];
                let set = self.sets.entry(k).or_default();
                let mut n = 0;
                for v in vals {
                    cmd.push(v.to_string());
                    n += set.remove(&v) as i64;
                }
                R::Int(n)
            }
            Op::SIsMember(k, v) => {
                cmd = vec!["SISMEMBER".into(), skey(k), v.to_string()];
                R::Int(self.sets.entry(k).or_default().contains(&v) as i64)
            }
            Op::SCard(k) => {
                cmd = vec!["SCARD".into(), skey(k)];
                R::Int(self.sets.entry(k).or_default().len() as i64)
            }
            Op::SMembers(k) => {
                cmd = vec!["SMEMBERS".into(), skey(k)];
                // Integer members: Redis's intset order (ascending) is what BTreeSet gives.
                R::List(
                    self.sets
                        .entry(k)
                        .or_default()
                        .iter()
                        .map(|v| s(*v))
                        .collect(),
                )
            }
            Op::SCombine(o, a, b) => {
                let name = ["SINTER", "SUNION", "SDIFF"][o as usize];
                cmd = vec![name.into(), skey(a), skey(b)];
                let x = self.sets.get(&a).cloned().unwrap_or_default();
                let y = self.sets.get(&b).cloned().unwrap_or_default();
                let r: BTreeSet<u8> = match o {
                    0 => x.intersection(&y).copied().collect(),
                    1 => x.union(&y).copied().collect(),
                    _ => x.difference(&y).copied().collect(),
                };
                R::List(r.iter().map(|v| s(*v)).collect())
            }
            Op::ZAdd(k, sc, m) => {
                cmd = vec!["ZADD".into(), zkey(k), sc.to_string(), m.to_string()];
                let z = self.zsets.entry(k).or_default();
                R::Int(z.insert(m, sc as i64).is_none() as i64)
            }
            Op::ZIncr(k, by, m) => {
                cmd = vec!["ZINCRBY".into(), zkey(k), by.to_string(), m.to_string()];
                let z = self.zsets.entry(k).or_default();
                let v = z.entry(m).or_insert(0);
                *v += by as i64;
                R::Str(v.to_string())
            }
            Op::ZRem(k, m) => {
                cmd = vec!["ZREM".into(), zkey(k), m.to_string()];
                let z = self.zsets.entry(k).or_default();
                R::Int(z.remove(&m).is_some() as i64)
            }
            Op::ZRank(k, m) => {
                cmd = vec!["ZRANK".into(), zkey(k), m.to_string()];
                match self.zordered(k).iter().position(|(_, mm)| *mm == m) {
                    Some(r) => R::Int(r as i64),
                    None => R::Nil,
                }
            }
            Op::ZRange(k, a, b) => {
                cmd = vec![
                    "ZRANGE".into(),
                    zkey(k),
                    a.to_string(),
                    b.to_string(),
                    "WITHSCORES".into(),
                ];
                let z = self.zordered(k);
                R::List(match span(a, b, z.len()) {
                    None => vec![],
                    Some((x, y)) => z[x..=y]
                        .iter()
                        .flat_map(|(sc, m)| [s(*m), R::Str(sc.to_string())])
                        .collect(),
                })
            }
            Op::ZPopMin(k) => {
                cmd = vec!["ZPOPMIN".into(), zkey(k)];
                match self.zordered(k).first().copied() {
                    None => R::List(vec![]),
                    Some((sc, m)) => {
                        self.zsets.entry(k).or_default().remove(&m);
                        R::List(vec![s(m), R::Str(sc.to_string())])
                    }
                }
            }
            Op::ZCount(k, a, b) => {
                cmd = vec!["ZCOUNT".into(), zkey(k), a.to_string(), format!("({b}")];
                let n = self
                    .zordered(k)
                    .iter()
                    .filter(|(sc, _)| *sc >= a as i64 && *sc < b as i64)
                    .count();
                R::Int(n as i64)
            }
            Op::SMove(a, b, v) => {
                cmd = vec!["SMOVE".into(), skey(a), skey(b), v.to_string()];
                let moved = self.sets.entry(a).or_default().remove(&v);
                if moved {
                    self.sets.entry(b).or_default().insert(v);
                }
                R::Int(moved as i64)
            }
        };
        (cmd, reply)
    }
}

thread_local! {
    static SERVER: Strata = Strata::start();
}

// Model-based test: random command sequences agree with a reference model.
proptest! {
    #![proptest_config(ProptestConfig { cases: 150, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn lists_and_sets_agree_with_a_reference_model(ops in prop::collection::vec(op(), 1..60)) {
        SERVER.with(|server| {
            let mut c = server.conn();
            let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
            let mut model = Model::default();
            for op in &ops {
                let (cmd, want) = model.apply(op);
                let got = match redis::cmd(&cmd[0]).arg(&cmd[1..]).query::<Value>(&mut c) {
                    Ok(v) => norm(v),
                    Err(_) => R::Err,
                };
                prop_assert_eq!(&got, &want, "{:?}", cmd);
            }
            Ok(())
        })?;
    }
}
