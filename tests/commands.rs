//! Standard commands through the `redis` crate (sync API) against the real `strata` binary.
//!
//! Where a behaviour is plain Redis semantics, the same assertions run first against the
//! machine's `redis-server` 7.0.15 and then against Strata (`on_both`): a failure against
//! redis-server means the test is wrong, a failure against Strata means Strata is. Strata-only
//! behaviour (limits, HTTP, signals, its config file) runs against Strata alone.

mod support;

use redis::{Connection, ConnectionLike, FromRedisValue, RedisError, Value};
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{free_port, http_get, wait_until, Raw, RedisServer, Strata};

// ---------------------------------------------------------------------------------------------
// Helpers

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// Runs a command that must succeed and converts its reply.
fn q<T: FromRedisValue>(con: &mut Connection, args: &[&str]) -> T {
    cmd(args)
        .query(con)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// The reply as the server sent it, errors (also nested ones) included as values.
fn val(con: &mut Connection, args: &[&str]) -> Value {
    con.req_command(&cmd(args))
        .unwrap_or_else(|e| panic!("{args:?}: connection error {e}"))
}

/// The error line of a server error, as it went over the wire after `-`.
fn err_text(e: &RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(c), Some(d)) => format!("{c} {d}"),
        (Some(c), None) => c.to_string(),
        _ => e.to_string(),
    }
}

/// Runs a command that must fail; returns its error line.
fn e(con: &mut Connection, args: &[&str]) -> String {
    match cmd(args).query::<Value>(con) {
        Ok(v) => panic!("{args:?} should have failed, got {v:?}"),
        Err(err) => err_text(&err),
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// One server under test: a port to open connections to.
struct Target {
    name: &'static str,
    port: u16,
}

impl Target {
    fn conn(&self) -> Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .expect("client")
            .get_connection()
            .expect("connect")
    }
}

/// Runs `f` against a fresh redis-server first (which proves the expectations are Redis's), then
/// against a fresh Strata.
fn on_both(f: impl Fn(&Target)) {
    on_both_with("", f)
}

fn on_both_with(strata_config: &str, f: impl Fn(&Target)) {
    let redis = RedisServer::start();
    let strata = Strata::with_config(strata_config);
    for t in [
        Target {
            name: "redis-server (the test's own expectations are wrong)",
            port: redis.port,
        },
        Target {
            name: "strata",
            port: strata.port,
        },
    ] {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&t))) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("against {}: {msg}", t.name);
        }
    }
}

/// `field:value` lines of an INFO reply.
fn info(con: &mut Connection, section: &str) -> HashMap<String, String> {
    let text: String = if section.is_empty() {
        q(con, &["INFO"])
    } else {
        q(con, &["INFO", section])
    };
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn info_u64(con: &mut Connection, section: &str, field: &str) -> u64 {
    info(con, section)
        .get(field)
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
        .parse()
        .unwrap_or_else(|_| panic!("INFO {field} is not a number"))
}

// ---------------------------------------------------------------------------------------------
// Strings

#[test]
fn set_with_every_option_and_its_errors() {
    on_both(|t| {
        let mut c = t.conn();
        assert_eq!(q::<String>(&mut c, &["SET", "k", "v"]), "OK");
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "k"]), s("v"));
        // NX / XX
        assert_eq!(val(&mut c, &["SET", "k", "v2", "NX"]), Value::Nil);
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "k"]), s("v"));
        assert_eq!(q::<String>(&mut c, &["SET", "fresh", "1", "NX"]), "OK");
        assert_eq!(q::<String>(&mut c, &["SET", "k", "v3", "XX"]), "OK");
        assert_eq!(val(&mut c, &["SET", "missing", "x", "XX"]), Value::Nil);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "missing"]), 0);
        // GET returns the old value (nil when there was none), also combined with NX / XX.
        assert_eq!(
            q::<Option<String>>(&mut c, &["SET", "k", "v4", "GET"]),
            s("v3")
        );
        assert_eq!(
            q::<Option<String>>(&mut c, &["SET", "new", "n", "GET"]),
            None
        );
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "new"]), s("n"));
        assert_eq!(
            q::<Option<String>>(&mut c, &["SET", "k", "v5", "NX", "GET"]),
            s("v4")
        );
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "k"]), s("v4"));
        assert_eq!(
            q::<Option<String>>(&mut c, &["SET", "k", "v5", "XX", "GET"]),
            s("v4")
        );
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "k"]), s("v5"));
        // EX / PX / EXAT / PXAT / KEEPTTL
        assert_eq!(q::<String>(&mut c, &["SET", "k", "v", "EX", "100"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 100);
        let pttl: i64 = q(&mut c, &["PTTL", "k"]);
        assert!((99_000..=100_000).contains(&pttl), "PTTL {pttl}");
        assert_eq!(q::<String>(&mut c, &["SET", "k", "v", "px", "50000"]), "OK");
        let pttl: i64 = q(&mut c, &["PTTL", "k"]);
        assert!((49_000..=50_000).contains(&pttl), "PTTL {pttl}");
        let at = unix_secs() + 1000;
        assert_eq!(
            q::<String>(&mut c, &["SET", "k", "v", "EXAT", &at.to_string()]),
            "OK"
        );
        assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), at);
        let pat = unix_ms() + 500_000;
        assert_eq!(
            q::<String>(&mut c, &["SET", "k", "v", "PXAT", &pat.to_string()]),
            "OK"
        );
        assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), pat);
        assert_eq!(q::<String>(&mut c, &["SET", "k", "w", "KEEPTTL"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), pat);
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "k"]), s("w"));
        assert_eq!(q::<String>(&mut c, &["SET", "k", "x"]), "OK");
        assert_eq!(
            q::<i64>(&mut c, &["TTL", "k"]),
            -1,
            "a plain SET clears the TTL"
        );
        // A time already in the past stores nothing.
        assert_eq!(
            q::<String>(&mut c, &["SET", "past", "v", "EXAT", "1"]),
            "OK"
        );
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "past"]), 0);
        assert_eq!(
            q::<String>(&mut c, &["SET", "past", "v", "PXAT", "1"]),
            "OK"
        );
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "past"]), 0);
        // Errors, as Redis spells them.
        let invalid = "ERR invalid expire time in 'set' command";
        assert_eq!(e(&mut c, &["SET", "k", "v", "EX", "0"]), invalid);
        assert_eq!(e(&mut c, &["SET", "k", "v", "EX", "-5"]), invalid);
        assert_eq!(e(&mut c, &["SET", "k", "v", "PX", "0"]), invalid);
        assert_eq!(
            e(&mut c, &["SET", "k", "v", "PX", "9223372036854775807"]),
            invalid
        );
        assert_eq!(
            e(&mut c, &["SET", "k", "v", "EX", "9223372036854775"]),
            invalid
        );
        assert_eq!(
            e(&mut c, &["SET", "k", "v", "EX", "abc"]),
            "ERR value is not an integer or out of range"
        );
        for bad in [
            &["SET", "k", "v", "NX", "XX"][..],
            &["SET", "k", "v", "EX", "10", "PX", "100"],
            &["SET", "k", "v", "KEEPTTL", "EX", "10"],
            &["SET", "k", "v", "EX", "10", "KEEPTTL"],
            &["SET", "k", "v", "EX"],
            &["SET", "k", "v", "foo"],
        ] {
            assert_eq!(e(&mut c, bad), "ERR syntax error", "{bad:?}");
        }
        assert_eq!(
            e(&mut c, &["SET", "k"]),
            "ERR wrong number of arguments for 'set' command"
        );
        assert_eq!(
            q::<i64>(&mut c, &["TTL", "k"]),
            -1,
            "failed SETs change nothing"
        );
        // GET on another type is WRONGTYPE; a plain SET overwrites any type.
        assert_eq!(q::<i64>(&mut c, &["HSET", "h", "f", "v"]), 1);
        assert_eq!(
            e(&mut c, &["SET", "h", "v", "GET"]),
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        );
        assert_eq!(q::<String>(&mut c, &["TYPE", "h"]), "hash");
        assert_eq!(q::<String>(&mut c, &["SET", "h", "v"]), "OK");
        assert_eq!(q::<String>(&mut c, &["TYPE", "h"]), "string");
        // The older forms.
        assert_eq!(q::<i64>(&mut c, &["SETNX", "k", "v"]), 0);
        assert_eq!(q::<i64>(&mut c, &["SETNX", "nx", "v"]), 1);
        assert_eq!(q::<String>(&mut c, &["SETEX", "sx", "100", "v"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["TTL", "sx"]), 100);
        assert_eq!(q::<String>(&mut c, &["PSETEX", "psx", "100000", "v"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["TTL", "psx"]), 100);
        assert_eq!(
            e(&mut c, &["SETEX", "sx", "0", "v"]),
            "ERR invalid expire time in 'setex' command"
        );
        assert_eq!(
            e(&mut c, &["PSETEX", "sx", "-1", "v"]),
            "ERR invalid expire time in 'psetex' command"
        );
        assert_eq!(
            q::<Option<String>>(&mut c, &["GETSET", "sx", "new"]),
            s("v")
        );
        assert_eq!(
            q::<i64>(&mut c, &["TTL", "sx"]),
            -1,
            "GETSET clears the TTL"
        );
        assert_eq!(q::<Option<String>>(&mut c, &["GETSET", "gs", "1"]), None);
    });
}

#[test]
fn getex_and_getdel() {
    on_both(|t| {
        let mut c = t.conn();
        q::<()>(&mut c, &["SET", "k", "v"]);
        assert_eq!(q::<Option<String>>(&mut c, &["GETEX", "k"]), s("v"));
        assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
        assert_eq!(
            q::<Option<String>>(&mut c, &["GETEX", "k", "EX", "100"]),
            s("v")
        );
        assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 100);
        assert_eq!(
            q::<Option<String>>(&mut c, &["GETEX", "k", "PX", "200000"]),
            s("v")
        );
        assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 200);
        let at = unix_secs() + 300;
        q::<Option<String>>(&mut c, &["GETEX", "k", "EXAT", &at.to_string()]);
        assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), at);
        let pat = unix_ms() + 400_000;
        q::<Option<String>>(&mut c, &["GETEX", "k", "PXAT", &pat.to_string()]);
        assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), pat);
        assert_eq!(
            q::<Option<String>>(&mut c, &["GETEX", "k", "PERSIST"]),
            s("v")
        );
        assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
        assert_eq!(
            q::<Option<String>>(&mut c, &["GETEX", "nokey", "EX", "10"]),
            None
        );
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "nokey"]), 0);
        assert_eq!(
            e(&mut c, &["GETEX", "k", "EX", "0"]),
            "ERR invalid expire time in 'getex' command"
        );
        assert_eq!(
            e(&mut c, &["GETEX", "k", "EX", "10", "PX", "10"]),
            "ERR syntax error"
        );
        assert_eq!(e(&mut c, &["GETEX", "k", "foo"]), "ERR syntax error");
        assert_eq!(e(&mut c, &["GETEX", "k", "EX"]), "ERR syntax error");
        assert_eq!(q::<Option<String>>(&mut c, &["GETDEL", "k"]), s("v"));
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "k"]), 0);
        assert_eq!(q::<Option<String>>(&mut c, &["GETDEL", "k"]), None);
        q::<i64>(&mut c, &["HSET", "h", "f", "v"]);
        let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
        assert_eq!(e(&mut c, &["GETDEL", "h"]), wrongtype);
        assert_eq!(e(&mut c, &["GETEX", "h"]), wrongtype);
        assert_eq!(e(&mut c, &["GET", "h"]), wrongtype);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "h"]), 1);
    });
}

#[test]
fn mset_msetnx_mget() {
    on_both(|t| {
        let mut c = t.conn();
        assert_eq!(q::<String>(&mut c, &["MSET", "a", "1", "b", "2"]), "OK");
        assert_eq!(
            q::<Vec<Option<String>>>(&mut c, &["MGET", "a", "nokey", "b"]),
            vec![s("1"), None, s("2")]
        );
        let arity = "ERR wrong number of arguments for 'mset' command";
        assert_eq!(e(&mut c, &["MSET", "a"]), arity);
        assert_eq!(e(&mut c, &["MSET", "a", "1", "b"]), arity);
        assert_eq!(
            e(&mut c, &["MSETNX", "a", "1", "b"]),
            "ERR wrong number of arguments for 'msetnx' command"
        );
        // MSETNX sets all or nothing.
        assert_eq!(q::<i64>(&mut c, &["MSETNX", "a", "9", "c", "3"]), 0);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "c"]), 0);
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "a"]), s("1"));
        assert_eq!(q::<i64>(&mut c, &["MSETNX", "c", "3", "d", "4"]), 1);
        assert_eq!(
            q::<Vec<Option<String>>>(&mut c, &["MGET", "c", "d"]),
            vec![s("3"), s("4")]
        );
        // MSET overwrites and clears TTLs; MGET gives nil (not an error) for other types.
        q::<()>(&mut c, &["EXPIRE", "a", "100"]);
        q::<()>(&mut c, &["MSET", "a", "x", "a", "y"]);
        assert_eq!(
            q::<Option<String>>(&mut c, &["GET", "a"]),
            s("y"),
            "last wins"
        );
        assert_eq!(q::<i64>(&mut c, &["TTL", "a"]), -1);
        q::<i64>(&mut c, &["HSET", "h", "f", "v"]);
        assert_eq!(
            q::<Vec<Option<String>>>(&mut c, &["MGET", "h", "a"]),
            vec![None, s("y")]
        );
    });
}

#[test]
fn append_setrange_getrange() {
    on_both(|t| {
        let mut c = t.conn();
        assert_eq!(q::<i64>(&mut c, &["APPEND", "k", "hello"]), 5);
        assert_eq!(q::<i64>(&mut c, &["APPEND", "k", " world"]), 11);
        assert_eq!(q::<String>(&mut c, &["GET", "k"]), "hello world");
        assert_eq!(q::<i64>(&mut c, &["STRLEN", "k"]), 11);
        assert_eq!(q::<i64>(&mut c, &["STRLEN", "nokey"]), 0);
        // APPEND keeps the TTL.
        q::<()>(&mut c, &["EXPIRE", "k", "100"]);
        q::<i64>(&mut c, &["APPEND", "k", "!"]);
        assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 100);
        q::<()>(&mut c, &["SET", "k", "hello world"]);
        assert_eq!(q::<i64>(&mut c, &["SETRANGE", "k", "6", "Redis"]), 11);
        assert_eq!(q::<String>(&mut c, &["GET", "k"]), "hello Redis");
        // Padding with zero bytes, on a new key too.
        assert_eq!(q::<i64>(&mut c, &["SETRANGE", "pad", "5", "ab"]), 7);
        assert_eq!(
            q::<Vec<u8>>(&mut c, &["GET", "pad"]),
            b"\0\0\0\0\0ab".to_vec()
        );
        assert_eq!(q::<i64>(&mut c, &["SETRANGE", "k", "0", ""]), 11);
        assert_eq!(q::<i64>(&mut c, &["SETRANGE", "empty", "3", ""]), 0);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "empty"]), 0);
        assert_eq!(
            e(&mut c, &["SETRANGE", "k", "-1", "x"]),
            "ERR offset is out of range"
        );
        assert_eq!(
            e(&mut c, &["SETRANGE", "k", "536870912", "x"]),
            "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
        );
        // GETRANGE with Redis's index arithmetic.
        for (start, end, want) in [
            ("0", "3", "hell"),
            ("-3", "-1", "dis"),
            ("0", "-1", "hello Redis"),
            ("-100", "-50", "h"),
            ("-100", "2", "hel"),
            ("5", "2", ""),
            ("-1", "-5", ""),
            ("100", "200", ""),
            ("6", "1000", "Redis"),
        ] {
            assert_eq!(
                q::<String>(&mut c, &["GETRANGE", "k", start, end]),
                want,
                "GETRANGE k {start} {end}"
            );
        }
        assert_eq!(q::<String>(&mut c, &["GETRANGE", "nokey", "0", "-1"]), "");
        assert_eq!(q::<String>(&mut c, &["SUBSTR", "k", "0", "4"]), "hello");
        assert_eq!(
            e(&mut c, &["GETRANGE", "k", "a", "1"]),
            "ERR value is not an integer or out of range"
        );
        q::<i64>(&mut c, &["HSET", "h", "f", "v"]);
        let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
        assert_eq!(e(&mut c, &["APPEND", "h", "x"]), wrongtype);
        assert_eq!(e(&mut c, &["SETRANGE", "h", "0", "x"]), wrongtype);
        assert_eq!(e(&mut c, &["GETRANGE", "h", "0", "1"]), wrongtype);
        assert_eq!(e(&mut c, &["STRLEN", "h"]), wrongtype);
    });
}

#[test]
fn incr_family_with_overflow_and_non_integers() {
    on_both(|t| {
        let mut c = t.conn();
        assert_eq!(q::<i64>(&mut c, &["INCR", "n"]), 1);
        assert_eq!(q::<i64>(&mut c, &["INCRBY", "n", "10"]), 11);
        assert_eq!(q::<i64>(&mut c, &["DECR", "n"]), 10);
        assert_eq!(q::<i64>(&mut c, &["DECRBY", "n", "3"]), 7);
        assert_eq!(q::<i64>(&mut c, &["INCRBY", "n", "-7"]), 0);
        assert_eq!(q::<i64>(&mut c, &["DECR", "new"]), -1);
        assert_eq!(q::<String>(&mut c, &["GET", "n"]), "0");
        // INCR keeps the TTL.
        q::<()>(&mut c, &["EXPIRE", "n", "100"]);
        q::<i64>(&mut c, &["INCR", "n"]);
        assert_eq!(q::<i64>(&mut c, &["TTL", "n"]), 100);
        // Overflow in both directions; the value is left as it was.
        let overflow = "ERR increment or decrement would overflow";
        q::<()>(&mut c, &["SET", "n", "9223372036854775806"]);
        assert_eq!(q::<i64>(&mut c, &["INCR", "n"]), i64::MAX);
        assert_eq!(e(&mut c, &["INCR", "n"]), overflow);
        assert_eq!(e(&mut c, &["INCRBY", "n", "1"]), overflow);
        assert_eq!(q::<String>(&mut c, &["GET", "n"]), "9223372036854775807");
        q::<()>(&mut c, &["SET", "n", "-9223372036854775808"]);
        assert_eq!(e(&mut c, &["DECR", "n"]), overflow);
        assert_eq!(e(&mut c, &["DECRBY", "n", "1"]), overflow);
        assert_eq!(
            e(&mut c, &["DECRBY", "n", "-9223372036854775808"]),
            "ERR decrement would overflow"
        );
        // Anything that is not exactly a 64-bit integer.
        let not_int = "ERR value is not an integer or out of range";
        for bad in [
            "abc",
            " 1",
            "1 ",
            "1.5",
            "+1",
            "01",
            "99999999999999999999",
            "",
        ] {
            q::<()>(&mut c, &["SET", "s", bad]);
            assert_eq!(e(&mut c, &["INCR", "s"]), not_int, "INCR on {bad:?}");
            assert_eq!(q::<String>(&mut c, &["GET", "s"]), bad, "value unchanged");
        }
        assert_eq!(e(&mut c, &["INCRBY", "n", "abc"]), not_int);
        assert_eq!(e(&mut c, &["INCRBY", "n", "1.0"]), not_int);
        assert_eq!(e(&mut c, &["INCRBY", "n", "9223372036854775808"]), not_int);
        q::<i64>(&mut c, &["HSET", "h", "f", "v"]);
        assert_eq!(
            e(&mut c, &["INCR", "h"]),
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        );
    });
}

#[test]
fn incrbyfloat_formats_like_redis() {
    on_both(|t| {
        let mut c = t.conn();
        // The examples of the Redis documentation.
        q::<()>(&mut c, &["SET", "mykey", "10.50"]);
        assert_eq!(
            q::<String>(&mut c, &["INCRBYFLOAT", "mykey", "0.1"]),
            "10.6"
        );
        assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "mykey", "-5"]), "5.6");
        q::<()>(&mut c, &["SET", "mykey", "5.0e3"]);
        assert_eq!(
            q::<String>(&mut c, &["INCRBYFLOAT", "mykey", "2.0e2"]),
            "5200"
        );
        assert_eq!(q::<String>(&mut c, &["GET", "mykey"]), "5200");
        // Cases from Redis's own test suite (tests/unit/type/incr.tcl).
        assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "novar", "1"]), "1");
        assert_eq!(
            q::<String>(&mut c, &["INCRBYFLOAT", "novar", "0.25"]),
            "1.25"
        );
        q::<()>(&mut c, &["SET", "novar", "1.5"]);
        assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "novar", "1.5"]), "3");
        q::<()>(&mut c, &["SET", "novar", "17179869184"]);
        assert_eq!(
            q::<String>(&mut c, &["INCRBYFLOAT", "novar", "1.5"]),
            "17179869185.5"
        );
        q::<()>(&mut c, &["SET", "novar", "17179869184"]);
        assert_eq!(
            q::<String>(&mut c, &["INCRBYFLOAT", "novar", "17179869184"]),
            "34359738368"
        );
        q::<()>(&mut c, &["SET", "foo", "1"]);
        assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "foo", "-1.1"]), "-0.1");
        assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f2", "0.1"]), "0.1");
        assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f2", "0.2"]), "0.3");
        q::<()>(&mut c, &["SET", "f3", "1"]);
        assert_eq!(
            q::<String>(&mut c, &["INCRBYFLOAT", "f3", "1e20"]),
            "100000000000000000000"
        );
        // "No negative zero": 1/41 then -1/41 is 0, not -0 and not binary noise.
        assert_eq!(
            q::<String>(&mut c, &["INCRBYFLOAT", "nz", "0.024390243902439025"]),
            "0.02439024390243902"
        );
        assert_eq!(
            q::<String>(&mut c, &["INCRBYFLOAT", "nz", "-0.024390243902439025"]),
            "0"
        );
        // Errors.
        let not_float = "ERR value is not a valid float";
        for bad in ["    11", "11  ", "abc"] {
            q::<()>(&mut c, &["SET", "bad", bad]);
            assert_eq!(
                e(&mut c, &["INCRBYFLOAT", "bad", "1"]),
                not_float,
                "{bad:?}"
            );
        }
        // A value with an embedded NUL ("1\02") is not a float.
        q::<()>(&mut c, &["SET", "nul", "1"]);
        q::<i64>(&mut c, &["SETRANGE", "nul", "2", "2"]);
        assert_eq!(e(&mut c, &["INCRBYFLOAT", "nul", "1"]), not_float);
        assert_eq!(e(&mut c, &["INCRBYFLOAT", "foo", "nan"]), not_float);
        assert_eq!(e(&mut c, &["INCRBYFLOAT", "foo", "x"]), not_float);
        q::<()>(&mut c, &["SET", "zero", "0"]);
        assert_eq!(
            e(&mut c, &["INCRBYFLOAT", "zero", "+inf"]),
            "ERR increment would produce NaN or Infinity"
        );
        assert_eq!(q::<String>(&mut c, &["GET", "zero"]), "0");
    });
}

// ---------------------------------------------------------------------------------------------
// Hashes

#[test]
fn hash_commands() {
    on_both(|t| {
        let mut c = t.conn();
        assert_eq!(q::<i64>(&mut c, &["HSET", "h", "a", "1", "b", "2"]), 2);
        assert_eq!(q::<i64>(&mut c, &["HSET", "h", "a", "3", "c", "4"]), 1);
        assert_eq!(q::<Option<String>>(&mut c, &["HGET", "h", "a"]), s("3"));
        assert_eq!(q::<Option<String>>(&mut c, &["HGET", "h", "zz"]), None);
        assert_eq!(q::<Option<String>>(&mut c, &["HGET", "nokey", "a"]), None);
        assert_eq!(
            q::<Vec<Option<String>>>(&mut c, &["HMGET", "h", "a", "zz", "b"]),
            vec![s("3"), None, s("2")]
        );
        let all: HashMap<String, String> = q(&mut c, &["HGETALL", "h"]);
        let want: HashMap<String, String> = [("a", "3"), ("b", "2"), ("c", "4")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(all, want);
        assert_eq!(q::<i64>(&mut c, &["HLEN", "h"]), 3);
        let mut keys: Vec<String> = q(&mut c, &["HKEYS", "h"]);
        keys.sort();
        assert_eq!(keys, ["a", "b", "c"]);
        let mut vals: Vec<String> = q(&mut c, &["HVALS", "h"]);
        vals.sort();
        assert_eq!(vals, ["2", "3", "4"]);
        assert_eq!(q::<i64>(&mut c, &["HEXISTS", "h", "a"]), 1);
        assert_eq!(q::<i64>(&mut c, &["HEXISTS", "h", "zz"]), 0);
        assert_eq!(q::<i64>(&mut c, &["HSTRLEN", "h", "a"]), 1);
        assert_eq!(q::<i64>(&mut c, &["HSETNX", "h", "a", "9"]), 0);
        assert_eq!(q::<i64>(&mut c, &["HSETNX", "h", "n", "9"]), 1);
        assert_eq!(q::<String>(&mut c, &["HMSET", "h", "m", "1"]), "OK");
        // Counters.
        assert_eq!(q::<i64>(&mut c, &["HINCRBY", "h", "b", "5"]), 7);
        assert_eq!(q::<i64>(&mut c, &["HINCRBY", "h", "new", "-3"]), -3);
        assert_eq!(
            e(&mut c, &["HINCRBY", "h", "b", "9223372036854775807"]),
            "ERR increment or decrement would overflow"
        );
        assert_eq!(
            e(&mut c, &["HINCRBY", "h", "b", "x"]),
            "ERR value is not an integer or out of range"
        );
        q::<i64>(&mut c, &["HSET", "h", "s", "str"]);
        assert_eq!(
            e(&mut c, &["HINCRBY", "h", "s", "1"]),
            "ERR hash value is not an integer"
        );
        assert_eq!(
            q::<String>(&mut c, &["HINCRBYFLOAT", "h", "f", "1.5"]),
            "1.5"
        );
        assert_eq!(
            q::<String>(&mut c, &["HINCRBYFLOAT", "h", "f", "0.1"]),
            "1.6"
        );
        assert_eq!(
            e(&mut c, &["HINCRBYFLOAT", "h", "s", "1"]),
            "ERR hash value is not a float"
        );
        // HDEL; the key goes with its last field.
        assert_eq!(q::<i64>(&mut c, &["HDEL", "h", "a", "zz", "a"]), 1);
        assert_eq!(q::<Option<String>>(&mut c, &["HGET", "h", "a"]), None);
        assert_eq!(q::<i64>(&mut c, &["HDEL", "nokey", "a"]), 0);
        let fields: Vec<String> = q(&mut c, &["HKEYS", "h"]);
        let mut args = vec!["HDEL", "h"];
        args.extend(fields.iter().map(|f| f.as_str()));
        assert_eq!(q::<i64>(&mut c, &args), fields.len() as i64);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "h"]), 0);
        assert_eq!(q::<i64>(&mut c, &["HLEN", "h"]), 0);
        assert_eq!(
            q::<HashMap<String, String>>(&mut c, &["HGETALL", "h"]).len(),
            0
        );
        // HSCAN returns every field of a hash.
        for i in 0..300 {
            q::<i64>(&mut c, &["HSET", "big", &format!("f{i}"), &i.to_string()]);
        }
        let mut seen = HashMap::new();
        let mut cursor = "0".to_string();
        loop {
            let (next, items): (String, Vec<String>) =
                q(&mut c, &["HSCAN", "big", &cursor, "COUNT", "20"]);
            for kv in items.chunks(2) {
                seen.insert(kv[0].clone(), kv[1].clone());
            }
            cursor = next;
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 300);
        assert_eq!(seen.get("f17").map(String::as_str), Some("17"));
        // Arity and type errors.
        let hset_arity = "ERR wrong number of arguments for 'hset' command";
        assert_eq!(e(&mut c, &["HSET", "h", "a"]), hset_arity);
        assert_eq!(e(&mut c, &["HSET", "h", "a", "1", "b"]), hset_arity);
        q::<()>(&mut c, &["SET", "str", "v"]);
        let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
        for args in [
            &["HGET", "str", "a"][..],
            &["HSET", "str", "a", "b"],
            &["HGETALL", "str"],
            &["HDEL", "str", "a"],
            &["HLEN", "str"],
            &["HINCRBY", "str", "a", "1"],
        ] {
            assert_eq!(e(&mut c, args), wrongtype, "{args:?}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Keys and expiry

#[test]
fn expire_options_ttl_persist_expiretime() {
    on_both(|t| {
        let mut c = t.conn();
        q::<()>(&mut c, &["SET", "k", "v"]);
        // Without a TTL: XX and GT refuse, LT and NX accept.
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100", "XX"]), 0);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100", "GT"]), 0);
        assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100", "NX"]), 1);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "200", "NX"]), 0);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "50", "GT"]), 0);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "200", "GT"]), 1);
        assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 200);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "300", "LT"]), 0);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100", "LT"]), 1);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "150", "XX"]), 1);
        assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 150);
        q::<()>(&mut c, &["SET", "k2", "v"]);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k2", "100", "LT"]), 1);
        assert_eq!(q::<i64>(&mut c, &["TTL", "k2"]), 100);
        // Option errors.
        assert_eq!(
            e(&mut c, &["EXPIRE", "k", "10", "NX", "XX"]),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            e(&mut c, &["EXPIRE", "k", "10", "GT", "LT"]),
            "ERR GT and LT options at the same time are not compatible"
        );
        assert_eq!(
            e(&mut c, &["EXPIRE", "k", "10", "FOO"]),
            "ERR Unsupported option FOO"
        );
        assert_eq!(
            e(&mut c, &["EXPIRE", "k", "abc"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            e(&mut c, &["EXPIRE", "k", "9223372036854775807"]),
            "ERR invalid expire time in 'expire' command"
        );
        assert_eq!(
            e(&mut c, &["PEXPIRE", "k", "9223372036854775807"]),
            "ERR invalid expire time in 'pexpire' command"
        );
        // PEXPIRE / PTTL / EXPIREAT / PEXPIREAT / EXPIRETIME / PEXPIRETIME.
        assert_eq!(q::<i64>(&mut c, &["PEXPIRE", "k", "123456"]), 1);
        let pttl: i64 = q(&mut c, &["PTTL", "k"]);
        assert!((122_000..=123_456).contains(&pttl), "PTTL {pttl}");
        assert_eq!(q::<i64>(&mut c, &["EXPIREAT", "k", "4102444800"]), 1);
        assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), 4102444800);
        assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), 4102444800000);
        assert_eq!(q::<i64>(&mut c, &["PEXPIREAT", "k", "4102444800123"]), 1);
        assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), 4102444800123);
        assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), 4102444800);
        // Missing keys and keys without TTL.
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "nokey", "10"]), 0);
        assert_eq!(q::<i64>(&mut c, &["TTL", "nokey"]), -2);
        assert_eq!(q::<i64>(&mut c, &["PTTL", "nokey"]), -2);
        assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "nokey"]), -2);
        assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]), 1);
        assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]), 0);
        assert_eq!(q::<i64>(&mut c, &["PERSIST", "nokey"]), 0);
        assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
        assert_eq!(q::<i64>(&mut c, &["PTTL", "k"]), -1);
        assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), -1);
        // A time in the past deletes the key at once.
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "-1"]), 1);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "k"]), 0);
        q::<()>(&mut c, &["SET", "k", "v"]);
        assert_eq!(q::<i64>(&mut c, &["PEXPIREAT", "k", "1"]), 1);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "k"]), 0);
        // A short TTL really expires (polled, with a deadline).
        q::<()>(&mut c, &["SET", "short", "v", "PX", "100"]);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "short"]), 1);
        assert!(wait_until(Duration::from_secs(3), || q::<i64>(
            &mut c,
            &["EXISTS", "short"]
        ) == 0));
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "short"]), None);
        assert_eq!(q::<i64>(&mut c, &["TTL", "short"]), -2);
        // TOUCH and EXISTS count repeats.
        q::<()>(&mut c, &["SET", "a", "1"]);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "a", "a", "nokey"]), 2);
        assert_eq!(q::<i64>(&mut c, &["TOUCH", "a", "nokey"]), 1);
    });
}

#[test]
fn active_expiry_removes_keys_nobody_reads() {
    on_both(|t| {
        let mut c = t.conn();
        for i in 0..200 {
            q::<()>(&mut c, &["SET", &format!("tmp{i}"), "v", "PX", "50"]);
        }
        q::<()>(&mut c, &["SET", "stay", "v"]);
        assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 201);
        assert!(
            wait_until(Duration::from_secs(5), || q::<i64>(&mut c, &["DBSIZE"])
                == 1),
            "expired keys still counted by DBSIZE: {}",
            q::<i64>(&mut c, &["DBSIZE"])
        );
        assert!(info_u64(&mut c, "stats", "expired_keys") >= 200);
    });
}

#[test]
fn rename_copy_move_swapdb() {
    on_both(|t| {
        let mut c = t.conn();
        q::<()>(&mut c, &["SET", "a", "1", "EX", "100"]);
        assert_eq!(q::<String>(&mut c, &["RENAME", "a", "b"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "a"]), 0);
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "b"]), s("1"));
        assert_eq!(q::<i64>(&mut c, &["TTL", "b"]), 100, "RENAME keeps the TTL");
        assert_eq!(e(&mut c, &["RENAME", "nokey", "c"]), "ERR no such key");
        assert_eq!(e(&mut c, &["RENAMENX", "nokey", "c"]), "ERR no such key");
        assert_eq!(q::<String>(&mut c, &["RENAME", "b", "b"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["RENAMENX", "b", "b"]), 0);
        q::<()>(&mut c, &["SET", "c", "3"]);
        assert_eq!(q::<i64>(&mut c, &["RENAMENX", "b", "c"]), 0);
        assert_eq!(q::<String>(&mut c, &["RENAME", "b", "c"]), "OK");
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "c"]), s("1"));
        assert_eq!(
            q::<i64>(&mut c, &["TTL", "c"]),
            100,
            "overwritten with the TTL"
        );
        q::<i64>(&mut c, &["HSET", "h", "f", "v"]);
        assert_eq!(q::<i64>(&mut c, &["RENAMENX", "h", "h2"]), 1);
        assert_eq!(q::<String>(&mut c, &["TYPE", "h2"]), "hash");
        // COPY
        assert_eq!(q::<i64>(&mut c, &["COPY", "c", "d"]), 1);
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "d"]), s("1"));
        assert_eq!(q::<i64>(&mut c, &["TTL", "d"]), 100, "COPY keeps the TTL");
        assert_eq!(q::<i64>(&mut c, &["COPY", "h2", "d"]), 0);
        assert_eq!(q::<i64>(&mut c, &["COPY", "h2", "d", "REPLACE"]), 1);
        assert_eq!(q::<String>(&mut c, &["TYPE", "d"]), "hash");
        // The copy is independent of the original.
        q::<i64>(&mut c, &["HSET", "d", "f", "changed"]);
        assert_eq!(q::<Option<String>>(&mut c, &["HGET", "h2", "f"]), s("v"));
        assert_eq!(q::<i64>(&mut c, &["COPY", "nokey", "e"]), 0);
        assert_eq!(
            e(&mut c, &["COPY", "c", "c"]),
            "ERR source and destination objects are the same"
        );
        assert_eq!(q::<i64>(&mut c, &["COPY", "c", "c", "DB", "1"]), 1);
        assert_eq!(
            e(&mut c, &["COPY", "c", "x", "DB", "16"]),
            "ERR DB index is out of range"
        );
        assert_eq!(e(&mut c, &["COPY", "c", "x", "FOO"]), "ERR syntax error");
        // MOVE
        assert_eq!(q::<i64>(&mut c, &["MOVE", "c", "1"]), 0, "exists in db 1");
        assert_eq!(q::<i64>(&mut c, &["MOVE", "h2", "2"]), 1);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "h2"]), 0);
        assert_eq!(q::<i64>(&mut c, &["MOVE", "nokey", "2"]), 0);
        assert_eq!(
            e(&mut c, &["MOVE", "c", "0"]),
            "ERR source and destination objects are the same"
        );
        assert_eq!(
            e(&mut c, &["MOVE", "c", "16"]),
            "ERR DB index is out of range"
        );
        let mut other = t.conn();
        q::<()>(&mut other, &["SELECT", "2"]);
        assert_eq!(
            q::<Option<String>>(&mut other, &["HGET", "h2", "f"]),
            s("v")
        );
        q::<()>(&mut other, &["SELECT", "1"]);
        assert_eq!(q::<Option<String>>(&mut other, &["GET", "c"]), s("1"));
        // SWAPDB is seen by connections already on either database.
        q::<()>(&mut c, &["FLUSHALL"]);
        q::<()>(&mut c, &["SET", "where", "zero"]);
        q::<()>(&mut other, &["SET", "where", "one"]);
        assert_eq!(q::<String>(&mut c, &["SWAPDB", "0", "1"]), "OK");
        assert_eq!(q::<String>(&mut c, &["GET", "where"]), "one");
        assert_eq!(q::<String>(&mut other, &["GET", "where"]), "zero");
        assert_eq!(
            e(&mut c, &["SWAPDB", "0", "16"]),
            "ERR DB index is out of range"
        );
        assert_eq!(
            e(&mut c, &["SWAPDB", "x", "1"]),
            "ERR invalid first DB index"
        );
        assert_eq!(
            e(&mut c, &["SWAPDB", "0", "y"]),
            "ERR invalid second DB index"
        );
    });
}

#[test]
fn scan_returns_every_key_exactly_once_with_match_count_type() {
    let server = Strata::start();
    let mut c = server.conn();
    let mut want = HashSet::new();
    for i in 0..2000 {
        let k = format!("user:{i}");
        q::<()>(&mut c, &["SET", &k, "v"]);
        want.insert(k);
    }
    for i in 0..100 {
        q::<i64>(&mut c, &["HSET", &format!("hash:{i}"), "f", "v"]);
    }
    let scan_all = |c: &mut Connection, extra: &[&str]| -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor = "0".to_string();
        let mut rounds = 0;
        loop {
            let mut args = vec!["SCAN", cursor.as_str()];
            args.extend_from_slice(extra);
            let (next, keys): (String, Vec<String>) = q(c, &args);
            out.extend(keys);
            rounds += 1;
            assert!(rounds < 100_000, "SCAN never finished");
            cursor = next;
            if cursor == "0" {
                return out;
            }
        }
    };
    for count in ["1", "10", "1000"] {
        let keys = scan_all(&mut c, &["MATCH", "user:*", "COUNT", count]);
        let unique: HashSet<String> = keys.iter().cloned().collect();
        assert_eq!(unique.len(), keys.len(), "a key came twice (COUNT {count})");
        assert_eq!(unique, want, "COUNT {count}");
    }
    let hashes = scan_all(&mut c, &["TYPE", "hash"]);
    assert_eq!(hashes.len(), 100);
    assert!(hashes.iter().all(|k| k.starts_with("hash:")));
    let strings = scan_all(&mut c, &["TYPE", "string", "COUNT", "100"]);
    assert_eq!(strings.len(), 2000);
    let one = scan_all(&mut c, &["MATCH", "user:1?9"]);
    let mut one_sorted = one.clone();
    one_sorted.sort();
    let mut expected: Vec<String> = (0..10).map(|d| format!("user:1{d}9")).collect();
    expected.sort();
    assert_eq!(one_sorted, expected);
    assert_eq!(e(&mut c, &["SCAN", "abc"]), "ERR invalid cursor");
    assert_eq!(e(&mut c, &["SCAN", "0", "COUNT", "0"]), "ERR syntax error");
    assert_eq!(e(&mut c, &["SCAN", "0", "MATCH"]), "ERR syntax error");
    // Keys present for the whole scan are returned even while others come and go.
    let mut seen = HashSet::new();
    let mut cursor = "0".to_string();
    let mut step = 0;
    loop {
        let (next, keys): (String, Vec<String>) =
            q(&mut c, &["SCAN", &cursor, "MATCH", "user:*", "COUNT", "50"]);
        seen.extend(keys);
        step += 1;
        q::<i64>(&mut c, &["DEL", &format!("user:{}", 1000 + step)]);
        q::<()>(&mut c, &["SET", &format!("user:new{step}"), "v"]);
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    for i in 0..1000 {
        assert!(
            seen.contains(&format!("user:{i}")),
            "user:{i} missed under churn"
        );
    }
}

#[test]
fn keys_randomkey_dbsize_flushdb_flushall() {
    on_both(|t| {
        let mut c = t.conn();
        assert_eq!(val(&mut c, &["RANDOMKEY"]), Value::Nil);
        for k in ["hello", "hallo", "hxllo", "hllo", "heeeello", "other"] {
            q::<()>(&mut c, &["SET", k, "v"]);
        }
        let keys = |c: &mut Connection, p: &str| {
            let mut v: Vec<String> = q(c, &["KEYS", p]);
            v.sort();
            v
        };
        assert_eq!(keys(&mut c, "h?llo"), ["hallo", "hello", "hxllo"]);
        assert_eq!(
            keys(&mut c, "h*llo"),
            ["hallo", "heeeello", "hello", "hllo", "hxllo"]
        );
        assert_eq!(keys(&mut c, "h[ae]llo"), ["hallo", "hello"]);
        assert_eq!(keys(&mut c, "h[^e]llo"), ["hallo", "hxllo"]);
        assert_eq!(keys(&mut c, "h[a-b]llo"), ["hallo"]);
        assert_eq!(keys(&mut c, "*").len(), 6);
        assert_eq!(keys(&mut c, "nomatch*").len(), 0);
        assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 6);
        for _ in 0..20 {
            let k: String = q(&mut c, &["RANDOMKEY"]);
            assert_eq!(q::<i64>(&mut c, &["EXISTS", &k]), 1, "RANDOMKEY gave {k}");
        }
        // FLUSHDB clears only the selected database; FLUSHALL clears all.
        q::<()>(&mut c, &["SELECT", "5"]);
        q::<()>(&mut c, &["SET", "five", "5"]);
        assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 1);
        q::<()>(&mut c, &["SELECT", "0"]);
        assert_eq!(q::<String>(&mut c, &["FLUSHDB"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
        assert_eq!(val(&mut c, &["RANDOMKEY"]), Value::Nil);
        q::<()>(&mut c, &["SELECT", "5"]);
        assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 1);
        assert_eq!(q::<String>(&mut c, &["FLUSHALL"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
        assert_eq!(q::<String>(&mut c, &["FLUSHDB", "ASYNC"]), "OK");
        assert_eq!(q::<String>(&mut c, &["FLUSHALL", "SYNC"]), "OK");
        assert_eq!(e(&mut c, &["FLUSHDB", "foo"]), "ERR syntax error");
        assert_eq!(
            e(&mut c, &["KEYS"]),
            "ERR wrong number of arguments for 'keys' command"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Transactions

#[test]
fn multi_exec_discard_and_execabort() {
    on_both(|t| {
        let mut c = t.conn();
        assert_eq!(q::<String>(&mut c, &["MULTI"]), "OK");
        assert_eq!(q::<String>(&mut c, &["SET", "a", "1"]), "QUEUED");
        assert_eq!(q::<String>(&mut c, &["INCR", "a"]), "QUEUED");
        assert_eq!(q::<String>(&mut c, &["GET", "a"]), "QUEUED");
        assert_eq!(
            val(&mut c, &["EXEC"]),
            Value::Array(vec![
                Value::Okay,
                Value::Int(2),
                Value::BulkString(b"2".to_vec())
            ])
        );
        // A command that fails while running does not stop the others.
        q::<()>(&mut c, &["SET", "s", "abc"]);
        q::<String>(&mut c, &["MULTI"]);
        q::<String>(&mut c, &["INCR", "s"]);
        q::<String>(&mut c, &["SET", "t", "1"]);
        match val(&mut c, &["EXEC"]) {
            Value::Array(items) => {
                assert_eq!(items.len(), 2);
                match &items[0] {
                    Value::ServerError(se) => assert_eq!(
                        format!("{} {}", se.code(), se.details().unwrap_or("")),
                        "ERR value is not an integer or out of range"
                    ),
                    other => panic!("expected an error, got {other:?}"),
                }
                assert_eq!(items[1], Value::Okay);
            }
            other => panic!("EXEC gave {other:?}"),
        }
        // DISCARD drops the queue.
        q::<String>(&mut c, &["MULTI"]);
        q::<String>(&mut c, &["SET", "d", "1"]);
        assert_eq!(q::<String>(&mut c, &["DISCARD"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "d"]), 0);
        // A command refused while queuing aborts the whole transaction.
        q::<String>(&mut c, &["MULTI"]);
        q::<String>(&mut c, &["SET", "e", "1"]);
        assert_eq!(
            e(&mut c, &["NOSUCHCOMMAND", "x"]),
            "ERR unknown command 'NOSUCHCOMMAND', with args beginning with: 'x' "
        );
        assert_eq!(
            e(&mut c, &["EXEC"]),
            "EXECABORT Transaction discarded because of previous errors."
        );
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "e"]), 0);
        q::<String>(&mut c, &["MULTI"]);
        q::<String>(&mut c, &["SET", "e", "1"]);
        assert_eq!(
            e(&mut c, &["GET", "a", "b"]),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            e(&mut c, &["EXEC"]),
            "EXECABORT Transaction discarded because of previous errors."
        );
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "e"]), 0);
        // State errors.
        assert_eq!(e(&mut c, &["EXEC"]), "ERR EXEC without MULTI");
        assert_eq!(e(&mut c, &["DISCARD"]), "ERR DISCARD without MULTI");
        q::<String>(&mut c, &["MULTI"]);
        assert_eq!(e(&mut c, &["MULTI"]), "ERR MULTI calls can not be nested");
        assert_eq!(
            e(&mut c, &["WATCH", "x"]),
            "ERR WATCH inside MULTI is not allowed"
        );
        assert_eq!(val(&mut c, &["EXEC"]), Value::Array(vec![]));
        // The redis crate's own transaction helper (MULTI ... EXEC in one pipeline).
        let (x, y): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg("p")
            .cmd("INCRBY")
            .arg("p")
            .arg(10)
            .query(&mut c)
            .expect("atomic pipeline");
        assert_eq!((x, y), (1, 11));
    });
}

#[test]
fn watch_aborts_exec_when_another_client_modifies_the_key() {
    on_both(|t| {
        let mut c = t.conn();
        let mut other = t.conn();
        q::<()>(&mut c, &["SET", "w", "1"]);
        // Untouched: EXEC runs.
        q::<String>(&mut c, &["WATCH", "w"]);
        q::<String>(&mut c, &["MULTI"]);
        q::<String>(&mut c, &["INCR", "w"]);
        assert_eq!(val(&mut c, &["EXEC"]), Value::Array(vec![Value::Int(2)]));
        // Only read by the other client: EXEC runs.
        q::<String>(&mut c, &["WATCH", "w"]);
        q::<Option<String>>(&mut other, &["GET", "w"]);
        q::<String>(&mut c, &["MULTI"]);
        q::<String>(&mut c, &["INCR", "w"]);
        assert_eq!(val(&mut c, &["EXEC"]), Value::Array(vec![Value::Int(3)]));
        // Written by the other client (even to the same value): EXEC gives nil, nothing runs.
        for write in [
            &["SET", "w", "3"][..],
            &["INCR", "w"],
            &["DEL", "w"],
            &["EXPIRE", "w", "100"],
            &["RENAME", "src", "w"],
            &["FLUSHDB"],
        ] {
            q::<()>(&mut c, &["SET", "w", "3"]);
            q::<()>(&mut c, &["SET", "src", "x"]);
            q::<String>(&mut c, &["WATCH", "w"]);
            q::<Value>(&mut other, write);
            q::<String>(&mut c, &["MULTI"]);
            q::<String>(&mut c, &["SET", "marker", "ran"]);
            assert_eq!(val(&mut c, &["EXEC"]), Value::Nil, "after {write:?}");
            assert_eq!(
                q::<i64>(&mut c, &["EXISTS", "marker"]),
                0,
                "after {write:?}"
            );
        }
        // A write to the same key name in another database is not a change.
        q::<()>(&mut c, &["SET", "w", "1"]);
        q::<String>(&mut c, &["WATCH", "w"]);
        q::<()>(&mut other, &["SELECT", "1"]);
        q::<()>(&mut other, &["SET", "w", "2"]);
        q::<String>(&mut c, &["MULTI"]);
        q::<String>(&mut c, &["GET", "w"]);
        assert_eq!(
            val(&mut c, &["EXEC"]),
            Value::Array(vec![Value::BulkString(b"1".to_vec())])
        );
        // UNWATCH forgets; EXEC and DISCARD end the watch.
        q::<String>(&mut c, &["WATCH", "w"]);
        q::<String>(&mut c, &["UNWATCH"]);
        q::<()>(&mut other, &["SELECT", "0"]);
        q::<()>(&mut other, &["SET", "w", "9"]);
        q::<String>(&mut c, &["MULTI"]);
        q::<String>(&mut c, &["GET", "w"]);
        assert_eq!(
            val(&mut c, &["EXEC"]),
            Value::Array(vec![Value::BulkString(b"9".to_vec())])
        );
        // A watched key that did not exist and is created by someone else.
        q::<String>(&mut c, &["WATCH", "created"]);
        q::<()>(&mut other, &["SET", "created", "1"]);
        q::<String>(&mut c, &["MULTI"]);
        q::<String>(&mut c, &["GET", "created"]);
        assert_eq!(val(&mut c, &["EXEC"]), Value::Nil);
    });
}

#[test]
fn watch_aborts_exec_when_the_key_expires_before_exec() {
    // hz = 1 slows Strata's active expiry so that nothing but EXEC itself notices the expiry.
    on_both_with("[server]\nhz = 1\n", |t| {
        let mut c = t.conn();
        for round in 0..5 {
            q::<()>(&mut c, &["SET", "wx", "v", "PX", "30"]);
            q::<String>(&mut c, &["WATCH", "wx"]);
            // The TTL passing is the event under test: wait it out.
            std::thread::sleep(Duration::from_millis(80));
            q::<String>(&mut c, &["MULTI"]);
            q::<String>(&mut c, &["SET", "marker", "ran"]);
            assert_eq!(
                val(&mut c, &["EXEC"]),
                Value::Nil,
                "round {round}: the watched key expired, EXEC must abort"
            );
            assert_eq!(q::<i64>(&mut c, &["EXISTS", "marker"]), 0);
        }
        // A key that is already gone when watched is not a change.
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "wx"]), None);
        q::<String>(&mut c, &["WATCH", "wx"]);
        q::<String>(&mut c, &["MULTI"]);
        q::<String>(&mut c, &["SET", "marker", "ran"]);
        assert_eq!(val(&mut c, &["EXEC"]), Value::Array(vec![Value::Okay]));
    });
}

// ---------------------------------------------------------------------------------------------
// Connection

#[test]
fn select_over_sixteen_databases() {
    on_both(|t| {
        let mut c = t.conn();
        for db in 0..16 {
            assert_eq!(q::<String>(&mut c, &["SELECT", &db.to_string()]), "OK");
            q::<()>(&mut c, &["SET", "which", &db.to_string()]);
            for i in 0..db {
                q::<()>(&mut c, &["SET", &format!("k{i}"), "v"]);
            }
        }
        for db in 0..16 {
            q::<()>(&mut c, &["SELECT", &db.to_string()]);
            assert_eq!(q::<String>(&mut c, &["GET", "which"]), db.to_string());
            assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), db + 1);
        }
        let range = "ERR DB index is out of range";
        assert_eq!(e(&mut c, &["SELECT", "16"]), range);
        assert_eq!(e(&mut c, &["SELECT", "-1"]), range);
        assert_eq!(
            e(&mut c, &["SELECT", "x"]),
            "ERR value is not an integer or out of range"
        );
        // The selection is per connection; a new connection starts on 0.
        let mut fresh = t.conn();
        assert_eq!(q::<String>(&mut fresh, &["GET", "which"]), "0");
        let kv: HashMap<String, String> = info(&mut fresh, "keyspace");
        assert_eq!(kv.len(), 16, "{kv:?}");
        assert!(kv["db7"].starts_with("keys=8,expires=0"), "{kv:?}");
        // A URL with a database number selects it.
        let mut on5 = redis::Client::open(format!("redis://127.0.0.1:{}/5", t.port))
            .expect("client")
            .get_connection()
            .expect("connect");
        assert_eq!(q::<String>(&mut on5, &["GET", "which"]), "5");
    });
}

/// CLIENT LIST as one map per client (`id` → fields).
fn client_list(c: &mut Connection) -> HashMap<String, HashMap<String, String>> {
    let text: String = q(c, &["CLIENT", "LIST"]);
    text.lines()
        .map(|l| {
            let fields: HashMap<String, String> = l
                .split(' ')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (fields["id"].clone(), fields)
        })
        .collect()
}

#[test]
fn client_id_setname_getname_list_kill() {
    on_both(|t| {
        let mut a = t.conn();
        let mut b = t.conn();
        let id_a: i64 = q(&mut a, &["CLIENT", "ID"]);
        let id_b: i64 = q(&mut b, &["CLIENT", "ID"]);
        assert!(id_a > 0 && id_b > 0 && id_a != id_b);
        assert_eq!(val(&mut a, &["CLIENT", "GETNAME"]), Value::Nil);
        assert_eq!(
            q::<String>(&mut a, &["CLIENT", "SETNAME", "worker-1"]),
            "OK"
        );
        assert_eq!(q::<String>(&mut a, &["CLIENT", "GETNAME"]), "worker-1");
        assert_eq!(
            e(&mut a, &["CLIENT", "SETNAME", "has space"]),
            "ERR Client names cannot contain spaces, newlines or special characters."
        );
        q::<()>(&mut b, &["SELECT", "3"]);
        let list = client_list(&mut a);
        let me = &list[&id_a.to_string()];
        assert_eq!(me["name"], "worker-1");
        assert_eq!(me["db"], "0");
        assert_eq!(me["cmd"], "client|list");
        assert!(me["addr"].starts_with("127.0.0.1:"));
        assert_eq!(list[&id_b.to_string()]["db"], "3");
        let info: String = q(&mut a, &["CLIENT", "INFO"]);
        assert!(info.starts_with(&format!("id={id_a} ")), "{info}");
        assert!(info.contains(" name=worker-1 "), "{info}");
        // CLIENT KILL by id closes the other connection.
        assert_eq!(
            q::<i64>(&mut a, &["CLIENT", "KILL", "ID", &id_b.to_string()]),
            1
        );
        assert!(cmd(&["PING"]).query::<String>(&mut b).is_err());
        assert!(wait_until(Duration::from_secs(5), || !client_list(&mut a)
            .contains_key(&id_b.to_string())));
        assert_eq!(q::<i64>(&mut a, &["CLIENT", "KILL", "ID", "999999"]), 0);
        assert_eq!(
            e(&mut a, &["CLIENT", "KILL", "ID", "0"]),
            "ERR client-id should be greater than 0"
        );
        // The old form: CLIENT KILL addr:port.
        let mut d = t.conn();
        let id_d: i64 = q(&mut d, &["CLIENT", "ID"]);
        let addr = client_list(&mut a)[&id_d.to_string()]["addr"].clone();
        assert_eq!(q::<String>(&mut a, &["CLIENT", "KILL", &addr]), "OK");
        assert!(cmd(&["PING"]).query::<String>(&mut d).is_err());
        assert_eq!(
            e(&mut a, &["CLIENT", "KILL", "127.0.0.1:1"]),
            "ERR No such client"
        );
        // SKIPME defaults to yes: a connection does not kill itself by address filter.
        let own_addr = client_list(&mut a)[&id_a.to_string()]["addr"].clone();
        assert_eq!(q::<i64>(&mut a, &["CLIENT", "KILL", "ADDR", &own_addr]), 0);
        assert_eq!(q::<String>(&mut a, &["PING"]), "PONG");
        assert_eq!(
            e(&mut a, &["CLIENT", "NOSUCH"]),
            "ERR unknown subcommand 'NOSUCH'. Try CLIENT HELP."
        );
        assert_eq!(
            e(&mut a, &["CLIENT", "ID", "x"]),
            "ERR wrong number of arguments for 'client|id' command"
        );
    });
}

/// One COMMAND INFO entry: (arity, flags, first key, last key, step, ACL categories in order).
type Info = (i64, HashSet<String>, i64, i64, i64, Vec<String>);

fn command_info(c: &mut Connection, name: &str) -> Option<Info> {
    let v = val(c, &["COMMAND", "INFO", name]);
    let Value::Array(mut items) = v else {
        panic!("COMMAND INFO {name}: {v:?}");
    };
    let entry = items.pop()?;
    let Value::Array(f) = entry else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(n) => *n,
        other => panic!("COMMAND INFO {name}: expected an integer, got {other:?}"),
    };
    let flags = match &f[2] {
        Value::Array(x) | Value::Set(x) => x
            .iter()
            .map(|v| match v {
                Value::SimpleString(s) => s.clone(),
                Value::Okay => "OK".into(),
                other => panic!("flag {other:?}"),
            })
            .collect(),
        other => panic!("flags {other:?}"),
    };
    let categories = match &f[6] {
        Value::Array(x) | Value::Set(x) => x
            .iter()
            .map(|v| match v {
                Value::SimpleString(s) => s.clone(),
                other => panic!("category {other:?}"),
            })
            .collect(),
        other => panic!("categories {other:?}"),
    };
    Some((
        int(&f[1]),
        flags,
        int(&f[3]),
        int(&f[4]),
        int(&f[5]),
        categories,
    ))
}

/// Every command DESIGN.md names under "Standard commands" (without subcommands).
const DESIGN_COMMANDS: &[&str] = &[
    "ping",
    "echo",
    "hello",
    "auth",
    "select",
    "quit",
    "reset",
    "client",
    "command",
    "get",
    "set",
    "setnx",
    "setex",
    "psetex",
    "getset",
    "getdel",
    "getex",
    "mget",
    "mset",
    "msetnx",
    "append",
    "strlen",
    "incr",
    "decr",
    "incrby",
    "decrby",
    "incrbyfloat",
    "getrange",
    "setrange",
    "hset",
    "hget",
    "hmget",
    "hgetall",
    "hdel",
    "hexists",
    "hincrby",
    "hlen",
    "hkeys",
    "hvals",
    "hsetnx",
    "hscan",
    "del",
    "unlink",
    "exists",
    "type",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "ttl",
    "pttl",
    "expiretime",
    "persist",
    "touch",
    "keys",
    "scan",
    "rename",
    "renamenx",
    "randomkey",
    "dbsize",
    "flushdb",
    "flushall",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "eval",
    "evalsha",
    "script",
    "info",
    "config",
    "time",
    "slowlog",
    "memory",
];

#[test]
fn command_count_info_docs_agree_with_redis() {
    let strata = Strata::start();
    let redis = RedisServer::start();
    let mut c = strata.conn();
    let mut r = redis.conn();
    let count: i64 = q(&mut c, &["COMMAND", "COUNT"]);
    let all = val(&mut c, &["COMMAND"]);
    let Value::Array(all) = all else {
        panic!("COMMAND: {all:?}")
    };
    assert_eq!(count as usize, all.len(), "COMMAND COUNT vs COMMAND");
    let listed: Vec<String> = q(&mut c, &["COMMAND", "LIST"]);
    assert!(listed.len() >= count as usize);
    assert!(count as usize >= DESIGN_COMMANDS.len());
    // Arity, key positions, the flags clients act on and the ACL categories (in Redis's order)
    // match Redis's for every command both know.
    const CLIENT_FLAGS: &[&str] = &["write", "readonly", "denyoom", "admin", "noscript", "fast"];
    let mut diffs = Vec::new();
    for name in DESIGN_COMMANDS {
        if command_info(&mut c, name).is_none() {
            diffs.push(format!("{name}: missing from COMMAND INFO"));
        }
        assert!(
            listed.iter().any(|l| l == name),
            "{name} not in COMMAND LIST"
        );
    }
    for name in &listed {
        let Some((r_arity, r_flags, r_first, r_last, r_step, r_cats)) = command_info(&mut r, name)
        else {
            continue; // Strata's own (QUERY, RATE, ...)
        };
        let (arity, flags, first, last, step, cats) =
            command_info(&mut c, name).expect("a listed command has COMMAND INFO");
        if cats != r_cats {
            diffs.push(format!("{name}: categories {cats:?} != redis {r_cats:?}"));
        }
        if (arity, first, last, step) != (r_arity, r_first, r_last, r_step) {
            diffs.push(format!(
                "{name}: arity/keys {:?} != redis {:?}",
                (arity, first, last, step),
                (r_arity, r_first, r_last, r_step)
            ));
        }
        for f in CLIENT_FLAGS {
            if flags.contains(*f) != r_flags.contains(*f) {
                diffs.push(format!("{name}: flag {f} differs from redis"));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "COMMAND INFO differences:\n{}",
        diffs.join("\n")
    );
    assert_eq!(
        val(&mut c, &["COMMAND", "INFO", "nosuchcommand"]),
        Value::Array(vec![Value::Nil])
    );
    let get = command_info(&mut c, "get").expect("get");
    assert_eq!(get.0, 2);
    assert!(get.1.contains("readonly") && get.1.contains("fast"));
    let mset = command_info(&mut c, "mset").expect("mset");
    assert_eq!((mset.0, mset.2, mset.3, mset.4), (-3, 1, -1, 2));
    // COMMAND DOCS: a map from name to its documentation (summary, group, ...).
    let docs: HashMap<String, HashMap<String, Value>> = q(&mut c, &["COMMAND", "DOCS", "get"]);
    let get_doc = &docs["get"];
    assert!(matches!(&get_doc["summary"], Value::BulkString(b) if !b.is_empty()));
    assert_eq!(get_doc["group"], Value::BulkString(b"string".to_vec()));
    let docs: HashMap<String, Value> = q(&mut c, &["COMMAND", "DOCS"]);
    assert_eq!(docs.len(), count as usize);
}

// ---------------------------------------------------------------------------------------------
// Server: INFO and CONFIG

#[test]
fn info_reports_hits_misses_memory_clients_and_keyspace() {
    on_both(|t| {
        let mut c = t.conn();
        for section in ["server", "clients", "memory", "stats", "keyspace"] {
            let text: String = q(&mut c, &["INFO", section]);
            let title = format!("# {}{}", section[..1].to_uppercase(), &section[1..]);
            assert!(text.starts_with(&title), "INFO {section}: {text}");
        }
        let all = info(&mut c, "");
        for f in [
            "redis_version",
            "connected_clients",
            "used_memory",
            "keyspace_hits",
            "keyspace_misses",
            "total_commands_processed",
        ] {
            assert!(all.contains_key(f), "INFO lacks {f}");
        }
        let only_keyspace: String = q(&mut c, &["INFO", "keyspace"]);
        assert!(!only_keyspace.contains("used_memory"));
        // Hits and misses count GET/MGET/HGET lookups.
        let hits = info_u64(&mut c, "stats", "keyspace_hits");
        let misses = info_u64(&mut c, "stats", "keyspace_misses");
        q::<()>(&mut c, &["SET", "present", "v"]);
        q::<i64>(&mut c, &["HSET", "h", "f", "v"]);
        q::<Option<String>>(&mut c, &["GET", "present"]);
        q::<Option<String>>(&mut c, &["GET", "absent"]);
        q::<Vec<Option<String>>>(&mut c, &["MGET", "present", "absent", "present"]);
        q::<Option<String>>(&mut c, &["HGET", "h", "f"]);
        q::<Option<String>>(&mut c, &["HGET", "nohash", "f"]);
        assert_eq!(info_u64(&mut c, "stats", "keyspace_hits") - hits, 4);
        assert_eq!(info_u64(&mut c, "stats", "keyspace_misses") - misses, 3);
        // used_memory follows the data.
        q::<()>(&mut c, &["FLUSHALL"]);
        let before = info_u64(&mut c, "memory", "used_memory");
        let value = "x".repeat(1000);
        for i in 0..2000 {
            q::<()>(&mut c, &["SET", &format!("mem:{i}"), &value]);
        }
        let after = info_u64(&mut c, "memory", "used_memory");
        assert!(
            after >= before + 2_000_000,
            "used_memory {before} -> {after} after storing 2 MB"
        );
        q::<()>(&mut c, &["FLUSHALL"]);
        let flushed = info_u64(&mut c, "memory", "used_memory");
        assert!(
            flushed < after - 1_500_000,
            "used_memory {after} -> {flushed} after FLUSHALL"
        );
        // connected_clients counts open connections.
        let n = info_u64(&mut c, "clients", "connected_clients");
        let mut extra: Vec<Connection> = (0..3).map(|_| t.conn()).collect();
        for x in &mut extra {
            assert_eq!(q::<String>(x, &["PING"]), "PONG");
        }
        assert_eq!(info_u64(&mut c, "clients", "connected_clients"), n + 3);
        drop(extra);
        assert!(wait_until(Duration::from_secs(5), || info_u64(
            &mut c,
            "clients",
            "connected_clients"
        ) == n));
        // dbN:keys=...,expires=...
        for i in 0..5 {
            q::<()>(&mut c, &["SET", &format!("k{i}"), "v"]);
        }
        q::<()>(&mut c, &["EXPIRE", "k0", "100"]);
        q::<()>(&mut c, &["SELECT", "3"]);
        q::<()>(&mut c, &["SET", "three", "v"]);
        let ks = info(&mut c, "keyspace");
        assert!(ks["db0"].starts_with("keys=5,expires=1,"), "{ks:?}");
        assert!(ks["db3"].starts_with("keys=1,expires=0,"), "{ks:?}");
        assert!(!ks.contains_key("db1"), "{ks:?}");
    });
}

#[test]
fn config_get_and_set() {
    on_both(|t| {
        let mut c = t.conn();
        let get = |c: &mut Connection, k: &str| -> HashMap<String, String> {
            q(c, &["CONFIG", "GET", k])
        };
        assert_eq!(get(&mut c, "maxmemory")["maxmemory"], "0");
        assert_eq!(get(&mut c, "databases")["databases"], "16");
        assert_eq!(get(&mut c, "timeout")["timeout"], "0");
        assert_eq!(get(&mut c, "maxclients")["maxclients"], "10000");
        assert_eq!(
            q::<String>(&mut c, &["CONFIG", "SET", "maxmemory", "10mb"]),
            "OK"
        );
        assert_eq!(get(&mut c, "maxmemory")["maxmemory"], "10485760");
        assert_eq!(info_u64(&mut c, "memory", "maxmemory"), 10485760);
        assert_eq!(
            q::<String>(
                &mut c,
                &["CONFIG", "SET", "maxmemory-policy", "allkeys-random"]
            ),
            "OK"
        );
        assert_eq!(
            get(&mut c, "maxmemory-policy")["maxmemory-policy"],
            "allkeys-random"
        );
        assert_eq!(info(&mut c, "memory")["maxmemory_policy"], "allkeys-random");
        // Several at once, and globs.
        assert_eq!(
            q::<String>(
                &mut c,
                &[
                    "CONFIG",
                    "SET",
                    "maxmemory",
                    "0",
                    "maxmemory-policy",
                    "noeviction"
                ]
            ),
            "OK"
        );
        let many = get(&mut c, "maxmemory*");
        assert_eq!(many["maxmemory"], "0");
        assert_eq!(many["maxmemory-policy"], "noeviction");
        assert!(many.contains_key("maxmemory-samples"));
        assert!(get(&mut c, "nosuchparameter").is_empty());
        // Errors.
        assert_eq!(
            e(&mut c, &["CONFIG", "SET", "nosuch", "1"]),
            "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"
        );
        assert_eq!(
            e(&mut c, &["CONFIG", "SET", "maxmemory", "1xx"]),
            "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value"
        );
        assert!(e(&mut c, &["CONFIG", "SET", "maxmemory-policy", "foo"]).starts_with(
            "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) must be one of the following:"
        ));
        assert_eq!(
            e(&mut c, &["CONFIG", "GET"]),
            "ERR wrong number of arguments for 'config|get' command"
        );
        assert_eq!(
            e(&mut c, &["CONFIG", "SET", "maxmemory"]),
            "ERR wrong number of arguments for 'config|set' command"
        );
        // Timeout changes take effect for the next reads.
        assert_eq!(
            q::<String>(&mut c, &["CONFIG", "SET", "timeout", "300"]),
            "OK"
        );
        assert_eq!(get(&mut c, "timeout")["timeout"], "300");
    });
}

// ---------------------------------------------------------------------------------------------
// Memory bound

#[test]
fn maxmemory_allkeys_lru_evicts_cold_keys() {
    let server =
        Strata::with_config("[l1]\nmaxmemory = \"2mb\"\nmaxmemory_policy = \"allkeys-lru\"\n");
    let mut c = server.conn();
    let max = 2 * 1024 * 1024u64;
    let value = "v".repeat(1000);
    q::<()>(&mut c, &["SET", "hot", "keep me"]);
    for i in 0..6000 {
        // Every write succeeds: the policy makes room instead of refusing.
        q::<()>(&mut c, &["SET", &format!("key:{i:05}"), &value]);
        if i % 50 == 0 {
            q::<Option<String>>(&mut c, &["GET", "hot"]);
        }
    }
    let used = info_u64(&mut c, "memory", "used_memory");
    assert!(
        used <= max + max / 10,
        "used_memory {used} over maxmemory {max}"
    );
    let evicted = info_u64(&mut c, "stats", "evicted_keys");
    assert!(evicted > 3000, "evicted_keys {evicted}");
    let dbsize: i64 = q(&mut c, &["DBSIZE"]);
    assert!(dbsize < 3000 && dbsize > 500, "DBSIZE {dbsize}");
    assert_eq!(
        dbsize as u64 + evicted,
        6001,
        "every key is either there or evicted"
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["GET", "hot"]),
        s("keep me"),
        "a key read all the time is not the least recently used"
    );
    let alive = |c: &mut Connection, range: std::ops::Range<i32>| {
        range
            .filter(|i| q::<i64>(c, &["EXISTS", &format!("key:{i:05}")]) == 1)
            .count()
    };
    let oldest = alive(&mut c, 0..1000);
    let newest = alive(&mut c, 5000..6000);
    assert!(
        newest > oldest * 3 && newest > 300,
        "LRU keeps recent keys: {oldest} of the oldest 1000 and {newest} of the newest 1000 survive"
    );
}

#[test]
fn maxmemory_noeviction_refuses_writes_with_redis_error() {
    let server =
        Strata::with_config("[l1]\nmaxmemory = \"1mb\"\nmaxmemory_policy = \"noeviction\"\n");
    let mut c = server.conn();
    let value = "v".repeat(1000);
    let mut stored = 0;
    let mut refused = None;
    for i in 0..5000 {
        match cmd(&["SET", &format!("key:{i}"), &value]).query::<Value>(&mut c) {
            Ok(_) => stored += 1,
            Err(err) => {
                refused = Some(err_text(&err));
                break;
            }
        }
    }
    assert_eq!(
        refused.as_deref(),
        Some("OOM command not allowed when used memory > 'maxmemory'."),
        "after {stored} writes"
    );
    assert!(stored > 100, "only {stored} keys fitted in 1mb");
    assert_eq!(info_u64(&mut c, "stats", "evicted_keys"), 0);
    // Reads and deletes still work; so do writes once memory is freed.
    assert_eq!(
        q::<Option<String>>(&mut c, &["GET", "key:0"]),
        Some(value.clone())
    );
    assert_eq!(
        e(&mut c, &["APPEND", "key:0", "x"]),
        "OOM command not allowed when used memory > 'maxmemory'."
    );
    assert_eq!(
        e(&mut c, &["HSET", "h", "f", "v"]),
        "OOM command not allowed when used memory > 'maxmemory'."
    );
    for i in 0..stored / 2 {
        q::<i64>(&mut c, &["DEL", &format!("key:{i}")]);
    }
    assert_eq!(q::<String>(&mut c, &["SET", "after", "ok"]), "OK");
    assert_eq!(
        q::<i64>(&mut c, &["DBSIZE"]),
        (stored - stored / 2 + 1) as i64
    );
    // CONFIG SET maxmemory 0 lifts the bound.
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
    for i in 0..2000 {
        q::<()>(&mut c, &["SET", &format!("more:{i}"), &value]);
    }
}

// ---------------------------------------------------------------------------------------------
// Limits and security

#[test]
fn requirepass_needs_auth() {
    let server = Strata::with_config("[server]\nrequirepass = \"secret\"\n");
    let mut raw = server.raw();
    assert_eq!(
        raw.call(&[b"PING"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        raw.call(&[b"SET", b"k", b"v"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        raw.call(&[b"AUTH", b"wrong"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        raw.call(&[b"AUTH", b"default", b"wrong"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        raw.call(&[b"AUTH", b"nobody", b"secret"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        raw.call(&[b"PING"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(raw.call(&[b"AUTH", b"secret"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(raw.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    // AUTH with the user name, and HELLO ... AUTH.
    let mut raw2 = server.raw();
    assert_eq!(raw2.call(&[b"AUTH", b"default", b"secret"]), b"+OK\r\n");
    assert_eq!(raw2.call(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    let mut raw3 = server.raw();
    let hello = raw3.call(&[b"HELLO", b"3", b"AUTH", b"default", b"secret"]);
    assert!(
        hello.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(raw3.call(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    // RESET forgets the authentication.
    assert_eq!(raw3.call(&[b"RESET"]), b"+RESET\r\n");
    assert_eq!(
        raw3.call(&[b"GET", b"k"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    // Through the redis crate: the URL carries the password; without it commands fail.
    let url = format!("redis://:secret@127.0.0.1:{}/", server.port);
    let mut c = redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("authenticated connection");
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "v");
    let unauthenticated = redis::Client::open(server.url())
        .expect("client")
        .get_connection();
    if let Ok(mut c) = unauthenticated {
        let err = cmd(&["GET", "k"])
            .query::<Value>(&mut c)
            .expect_err("NOAUTH");
        assert_eq!(err.code(), Some("NOAUTH"));
    }
}

#[test]
fn maxclients_refuses_the_extra_client() {
    let server = Strata::with_config("[server]\nmaxclients = 3\n");
    // The harness's own readiness probe may still hold a slot for a moment: connect with retry.
    let connect = || {
        let mut got = None;
        let ok = wait_until(Duration::from_secs(5), || {
            let mut r = server.raw();
            r.send(b"PING\r\n");
            let pong = r.read_exact_or_eof(7) == b"+PONG\r\n";
            if pong {
                got = Some(r);
            }
            pong
        });
        assert!(ok, "cannot get a client slot");
        got.expect("connected")
    };
    let mut clients: Vec<Raw> = (0..3).map(|_| connect()).collect();
    let mut extra = server.raw();
    assert_eq!(
        extra.read_exact_or_eof(64),
        b"-ERR max number of clients reached\r\n"
    );
    assert!(extra.closed());
    // The others are unaffected.
    for c in &mut clients {
        assert_eq!(c.call(&[b"PING"]), b"+PONG\r\n");
    }
    clients.pop();
    // A slot frees up when one leaves.
    drop(connect());
    let mut c = conn_retry(&server);
    assert!(info_u64(&mut c, "stats", "rejected_connections") >= 1);
}

/// A redis-crate connection, retried while the server is still at maxclients.
fn conn_retry(server: &Strata) -> Connection {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attempt = server.client().get_connection().and_then(|mut c| {
            cmd(&["PING"]).query::<String>(&mut c)?;
            Ok(c)
        });
        match attempt {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("cannot connect: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn idle_timeout_closes_idle_clients_only() {
    let server = Strata::with_config("[server]\ntimeout = 1\n");
    let mut idle = server.raw();
    assert_eq!(idle.call(&[b"PING"]), b"+PONG\r\n");
    let mut busy = server.raw();
    let start = Instant::now();
    idle.set_timeout(Duration::from_millis(100));
    let mut closed_after = None;
    while start.elapsed() < Duration::from_secs(6) {
        assert_eq!(
            busy.call(&[b"PING"]),
            b"+PONG\r\n",
            "an active client stays"
        );
        let mut b = [0u8; 16];
        match std::io::Read::read(&mut idle.stream, &mut b) {
            Ok(0) => {
                closed_after = Some(start.elapsed());
                break;
            }
            Ok(n) => panic!("unexpected bytes {:?}", &b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed_after = Some(start.elapsed());
                break;
            }
            Err(_) => {} // read timeout: still open
        }
    }
    let after = closed_after.expect("the idle client was not closed within 6 s");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before the 1 s timeout"
    );
    assert_eq!(busy.call(&[b"PING"]), b"+PONG\r\n");
}

/// SIGTERM stops the server, successfully and within 5 s.
fn terminates_promptly(server: &mut Strata) {
    let start = Instant::now();
    assert!(
        server.terminate(),
        "strata did not exit successfully on SIGTERM"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        start.elapsed()
    );
}

/// CLIENT KILL ends a connection wherever it waits: for its next request, in a blocking
/// command, or on a write the client does not read (long before `client_output_stall_s`).
/// SIGTERM ends them all. On the single-threaded runtime (`threads = 1`), which the benchmarks
/// use and no other test does.
#[test]
fn kill_and_shutdown_reach_a_client_wherever_it_waits() {
    let mut server = Strata::with_config("[server]\nthreads = 1\n");
    let mut a = server.conn();
    let id = |c: &mut Connection| q::<i64>(c, &["CLIENT", "ID"]).to_string();
    let gone = |a: &mut Connection, id: &str| {
        wait_until(Duration::from_secs(5), || !client_list(a).contains_key(id))
    };
    let big = "x".repeat(4 << 20);
    q::<()>(&mut a, &["SET", "big", &big]);

    let mut idle = server.conn();
    let idle_id = id(&mut idle);
    let mut stalled = server.raw();
    let stalled_id = String::from_utf8(stalled.call(&[b"CLIENT", b"ID"])).unwrap();
    let stalled_id = stalled_id.trim_start_matches(':').trim_end().to_string();
    // 80 MB of replies the client never reads: the server's write blocks.
    stalled.send(&b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(20));
    let mut b2 = server.raw();
    b2.send(b"*3\r\n$5\r\nBLPOP\r\n$4\r\nnone\r\n$1\r\n0\r\n");
    let mut b2_id = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let list = client_list(&mut a);
            let found = list.into_iter().find(|(_, f)| f["cmd"] == "blpop");
            found.map(|(i, _)| b2_id = i).is_some()
        }),
        "the BLPOP client is listed"
    );

    for victim in [&idle_id, &stalled_id, &b2_id] {
        assert_eq!(q::<i64>(&mut a, &["CLIENT", "KILL", "ID", victim]), 1);
        assert!(
            gone(&mut a, victim),
            "client {victim} still listed after CLIENT KILL"
        );
    }
    assert!(cmd(&["PING"]).query::<String>(&mut idle).is_err());
    assert!(
        b2.closed(),
        "the killed BLPOP client's connection is closed"
    );

    // SIGTERM with a client blocked in BLPOP and one whose write is blocked.
    let mut stalled = server.raw();
    stalled.send(&b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(20));
    let mut b3 = server.raw();
    b3.send(b"*3\r\n$5\r\nBLPOP\r\n$4\r\nnone\r\n$1\r\n0\r\n");
    std::thread::sleep(Duration::from_millis(300));
    terminates_promptly(&mut server);
    assert!(
        b3.closed(),
        "the BLPOP client's connection is closed by the shutdown"
    );
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let mut server = Strata::start();
    let mut c = server.conn();
    q::<()>(&mut c, &["SET", "k", "v"]);
    let mut raw = server.raw();
    assert_eq!(raw.call(&[b"PING"]), b"+PONG\r\n");
    let port = server.port;
    terminates_promptly(&mut server);
    assert!(raw.closed(), "client connections are closed");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port is no longer accepting"
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP: /metrics and /healthz

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("metric {name} not found"))
        .trim()
        .parse()
        .expect("metric value")
}

#[test]
fn metrics_and_healthz_over_http() {
    let http = free_port();
    let server = Strata::with_config(&format!("[http]\nlisten = \"127.0.0.1:{http}\"\n"));
    assert!(wait_until(Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", http)).is_ok()
    }));
    let (status, body) = http_get(http, "/healthz");
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "ok");
    let (status, _) = http_get(http, "/readyz");
    assert_eq!(status, 200);
    let (status, _) = http_get(http, "/nosuchpath");
    assert_eq!(status, 404);
    let (status, before) = http_get(http, "/metrics");
    assert_eq!(status, 200);
    let get_calls = metric(&before, "strata_commands_total{cmd=\"get\"}");
    let set_calls = metric(&before, "strata_commands_total{cmd=\"set\"}");
    let hits = metric(&before, "strata_keyspace_hits_total");
    let misses = metric(&before, "strata_keyspace_misses_total");
    let mut c = server.conn();
    q::<()>(&mut c, &["SET", "k", "v"]);
    for _ in 0..5 {
        q::<Option<String>>(&mut c, &["GET", "k"]);
    }
    q::<Option<String>>(&mut c, &["GET", "nokey"]);
    let _ = e(&mut c, &["GET", "a", "b"]);
    let (_, after) = http_get(http, "/metrics");
    assert_eq!(
        metric(&after, "strata_commands_total{cmd=\"get\"}") - get_calls,
        6.0
    );
    assert_eq!(
        metric(&after, "strata_commands_total{cmd=\"set\"}") - set_calls,
        1.0
    );
    assert_eq!(metric(&after, "strata_keyspace_hits_total") - hits, 5.0);
    assert_eq!(metric(&after, "strata_keyspace_misses_total") - misses, 1.0);
    assert!(metric(&after, "strata_connected_clients") >= 1.0);
    assert!(metric(&after, "strata_used_memory_bytes") > 0.0);
    assert_eq!(metric(&after, "strata_cache_entries"), 1.0);
    assert!(
        metric(&after, "strata_command_duration_seconds_count{cmd=\"get\"}") >= 6.0,
        "latency histogram counts every GET"
    );
    assert!(after.contains("strata_command_duration_seconds_bucket{le=\"0.001\",cmd=\"get\"}"));
    assert!(after.contains("strata_evicted_keys_total"));
    assert!(after.contains("strata_expired_keys_total"));
}

// ---------------------------------------------------------------------------------------------
// Differential: byte-identical replies to redis-server

/// Commands whose replies must be byte-identical on both servers, run in order on one
/// connection each. Arguments are separated by spaces; `\s` stands for a space inside one.
const DIFFERENTIAL: &[&str] = &[
    "PING",
    "PING hello",
    "ECHO hi",
    "ECHO",
    "SET k v",
    "GET k",
    "GET nokey",
    "SET k v2 NX",
    "SET k v3 XX GET",
    "SET k v EX 0",
    "SET k v EX abc",
    "SET k v NX XX",
    "SET k v EX 10 PX 10",
    "SET k v KEEPTTL EX 10",
    "SET k v EXAT 1",
    "EXISTS k",
    "SET k v EX 1000",
    "TTL k",
    "SET k v2 KEEPTTL",
    "TTL k",
    "PERSIST k",
    "TTL k",
    "GETEX k EX 500",
    "TTL k",
    "GETEX k PERSIST",
    "GETDEL k",
    "GETDEL k",
    "MSET a 1 b 2 c 3",
    "MGET a b nokey c",
    "MSET a",
    "MSETNX a 1 z 2",
    "MSETNX y 1 z 2",
    "APPEND a 23",
    "APPEND newkey abc",
    "STRLEN a",
    "SETRANGE a 1 X",
    "SETRANGE a 10 Y",
    "GET a",
    "SETRANGE a -1 x",
    "GETRANGE a 0 2",
    "GETRANGE a -3 -1",
    "GETRANGE a 5 1",
    "GETRANGE nokey 0 -1",
    "INCR counter",
    "INCRBY counter 41",
    "DECR counter",
    "DECRBY counter 2",
    "INCRBY counter abc",
    "INCR a",
    "SET big 9223372036854775807",
    "INCR big",
    "DECRBY big -9223372036854775808",
    "INCRBYFLOAT fl 10.5",
    "INCRBYFLOAT fl 0.1",
    "INCRBYFLOAT fl -5",
    "INCRBYFLOAT fl abc",
    "SET fl 5.0e3",
    "INCRBYFLOAT fl 2.0e2",
    "INCRBYFLOAT nz 0.024390243902439025",
    "INCRBYFLOAT nz -0.024390243902439025",
    "SETNX a x",
    "SETEX sx 100 v",
    "SETEX sx 0 v",
    "PSETEX psx 100000 v",
    "GETSET sx new",
    "TTL sx",
    "HSET h f1 v1 f2 v2 f3 v3",
    "HSET h f1",
    "HGET h f1",
    "HGET h nofield",
    "HMGET h f1 nofield f3",
    "HGETALL h",
    "HDEL h f1",
    "HGETALL h",
    "HKEYS h",
    "HVALS h",
    "HSET h f1 again",
    "HGETALL h",
    "HLEN h",
    "HEXISTS h f2",
    "HSETNX h f2 x",
    "HINCRBY h n 5",
    "HINCRBY h f2 1",
    "HINCRBYFLOAT h fl 1.5",
    "HSTRLEN h f2",
    "HSCAN h 0",
    "HGETALL nokey",
    "HGET a f",
    "GET h",
    "TYPE h",
    "TYPE a",
    "TYPE nokey",
    "EXPIRE h 1000",
    "EXPIRE h 100 NX",
    "EXPIRE h 2000 GT",
    "EXPIRE h 10 XX LT",
    "TTL h",
    "EXPIRE h 10 NX XX",
    "EXPIRE h 10 FOO",
    "EXPIRETIME nokey",
    "PEXPIREAT h 4102444800123",
    "PEXPIRETIME h",
    "EXPIRETIME h",
    "RENAME h h2",
    "RENAME nokey x",
    "RENAMENX h2 a",
    "COPY h2 h3",
    "COPY h2 h3",
    "COPY h2 h2",
    "COPY h2 x DB 16",
    "MOVE h3 1",
    "MOVE h3 1",
    "DEL a b nokey",
    "UNLINK c",
    "EXISTS a b c y z",
    "TOUCH y z nokey",
    "DBSIZE",
    "OBJECT ENCODING counter",
    "OBJECT ENCODING y",
    "OBJECT ENCODING h2",
    "OBJECT ENCODING nokey",
    "SELECT 1",
    "GET h3",
    "HGETALL h3",
    "SELECT 16",
    "SELECT x",
    "SELECT 0",
    "SWAPDB 0 1",
    "DBSIZE",
    "SWAPDB 0 1",
    "SCAN x",
    "SCAN 0 COUNT 0",
    "MULTI",
    "SET t 1",
    "INCR t",
    "GET t",
    "EXEC",
    "MULTI",
    "SET t 1",
    "NOSUCH x",
    "EXEC",
    "MULTI",
    "INCR a",
    "HSET a f v",
    "EXEC",
    "EXEC",
    "DISCARD",
    "MULTI",
    "MULTI",
    "DISCARD",
    "WATCH t",
    "UNWATCH",
    "NOSUCH",
    "nosuch a b",
    "GET",
    "GET a b",
    "CLIENT NOSUCH",
    "CLIENT",
    "CONFIG GET maxmemory",
    "CONFIG GET maxclients",
    "CONFIG SET nosuch 1",
    "CLIENT SETNAME has\\sspace",
    "CLIENT GETNAME",
    "HELLO 4",
    "HELLO x",
    "HELLO 3 FOO",
    "FLUSHDB foo",
    "FLUSHALL",
    "DBSIZE",
    "KEYS *",
    "RANDOMKEY",
    // COMMAND GETKEYS: fixed, stepped, numkeys and container keys, and each error.
    "COMMAND GETKEYS SET k v",
    "COMMAND GETKEYS MSET a 1 b 2",
    "COMMAND GETKEYS MGET a b c",
    "COMMAND GETKEYS EVAL return\\s1 2 x y z",
    "COMMAND GETKEYS EVAL return\\s1 0",
    "COMMAND GETKEYS ZUNIONSTORE dst 2 a b WEIGHTS 1 2",
    "COMMAND GETKEYS ZUNIONSTORE dst 5 a",
    "COMMAND GETKEYS ZUNIONSTORE dst x a",
    "COMMAND GETKEYS LMOVE a b LEFT RIGHT",
    "COMMAND GETKEYS OBJECT ENCODING k",
    "COMMAND GETKEYS OBJECT NOSUCH k",
    "COMMAND GETKEYS PING",
    "COMMAND GETKEYS PING x",
    "COMMAND GETKEYS GET a b",
    "COMMAND GETKEYS NOSUCH k",
    "COMMAND GETKEYS GET",
    "COMMAND GETKEYS",
];

#[test]
fn replies_are_byte_identical_to_redis() {
    let strata = Strata::start();
    let redis = RedisServer::start();
    let diffs = support::differing_replies(&mut redis.raw(), &mut strata.raw(), DIFFERENTIAL);
    assert!(
        diffs.is_empty(),
        "{} of {} replies differ from redis-server:\n{}",
        diffs.len(),
        DIFFERENTIAL.len(),
        diffs.join("\n")
    );
}
