//! Lua scripting through real clients against the real binary: the scripts Django and redis-py
//! send, EVALSHA and the script cache, error texts, the sandbox, the time limit, RESP3 — and,
//! wherever the answer is deterministic, the same commands sent to the machine's redis-server
//! (7.0.15) with the raw replies compared byte for byte.

mod support;

use redis::Value;
use std::time::{Duration, Instant};
use support::{Raw, RedisServer, Strata};

fn q(raw: &mut Raw, args: &[&[u8]]) -> String {
    raw.cmd(args);
    String::from_utf8_lossy(&raw.reply()).into_owned()
}

fn eval_args<'a>(script: &'a str, keys: &[&'a str], argv: &[&'a str]) -> Vec<Vec<u8>> {
    let mut v = vec![
        b"EVAL".to_vec(),
        script.as_bytes().to_vec(),
        keys.len().to_string().into_bytes(),
    ];
    v.extend(keys.iter().map(|k| k.as_bytes().to_vec()));
    v.extend(argv.iter().map(|a| a.as_bytes().to_vec()));
    v
}

/// Sends every command to Strata and to Redis on fresh connections (HELLO 3 first if asked) and
/// asserts the raw replies are identical.
fn same_as_redis(resp3: bool, cmds: &[Vec<Vec<u8>>]) {
    let strata = Strata::start();
    let redis = RedisServer::start();
    let mut a = strata.raw();
    let mut b = redis.raw();
    if resp3 {
        q(&mut a, &[b"HELLO", b"3"]);
        q(&mut b, &[b"HELLO", b"3"]);
    }
    for c in cmds {
        let args: Vec<&[u8]> = c.iter().map(|x| x.as_slice()).collect();
        let ours = q(&mut a, &args);
        let theirs = q(&mut b, &args);
        assert_eq!(
            ours,
            theirs,
            "reply to {:?} differs (RESP{})",
            args.iter()
                .map(|x| String::from_utf8_lossy(x))
                .collect::<Vec<_>>(),
            if resp3 { 3 } else { 2 }
        );
    }
}

/// The SHA1 Redis names a script by, computed independently of the server.
fn sha1_of(data: &[u8]) -> Sha1Hex {
    Sha1Hex(sha1_smol::Sha1::from(data).digest().bytes())
}

struct Sha1Hex([u8; 20]);

impl std::fmt::LowerHex for Sha1Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

fn cmd(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

const DJANGO_INCR: &str = "local exists = redis.call('EXISTS', KEYS[1]) if (exists == 1) then return redis.call('INCRBY', KEYS[1], ARGV[1]) else return false end";

#[test]
fn django_redis_incr_script() {
    let s = Strata::start();
    let mut con = s.conn();
    let missing: Value = redis::cmd("EVAL")
        .arg(DJANGO_INCR)
        .arg(1)
        .arg(":1:counter")
        .arg(5)
        .query(&mut con)
        .unwrap();
    assert_eq!(missing, Value::Nil);
    let _: () = redis::cmd("SET")
        .arg(":1:counter")
        .arg(10)
        .query(&mut con)
        .unwrap();
    let n: i64 = redis::cmd("EVAL")
        .arg(DJANGO_INCR)
        .arg(1)
        .arg(":1:counter")
        .arg(5)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 15);
    let n: i64 = redis::cmd("EVAL")
        .arg(DJANGO_INCR)
        .arg(1)
        .arg(":1:counter")
        .arg(-20)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, -5);
    // The key holds a non-integer: INCRBY's error reaches the client with the script location.
    let _: () = redis::cmd("SET")
        .arg(":1:counter")
        .arg("abc")
        .query(&mut con)
        .unwrap();
    let err = redis::cmd("EVAL")
        .arg(DJANGO_INCR)
        .arg(1)
        .arg(":1:counter")
        .arg(1)
        .query::<Value>(&mut con)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("value is not an integer or out of range"),
        "{text}"
    );
}

const LOCK_ACQUIRE: &str = "return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])";
const LOCK_RELEASE: &str = "local token = redis.call('get', KEYS[1])
if not token or token ~= ARGV[1] then
    return 0
end
redis.call('del', KEYS[1])
return 1";
const LOCK_EXTEND: &str = "local token = redis.call('get', KEYS[1])
if not token or token ~= ARGV[1] then
    return 0
end
local expiration = redis.call('pttl', KEYS[1])
if not expiration then
    expiration = 0
end
if expiration < 0 then
    return 0
end
local newttl = ARGV[2]
if ARGV[3] == \"0\" then
    newttl = ARGV[2] + expiration
end
redis.call('pexpire', KEYS[1], newttl)
return 1";

#[test]
fn redis_py_lock_scripts() {
    let s = Strata::start();
    let mut con = s.conn();
    let eval = |con: &mut redis::Connection, script: &str, args: &[&str]| -> Value {
        redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg("lock:job")
            .arg(args)
            .query(con)
            .unwrap()
    };
    assert_eq!(
        eval(&mut con, LOCK_ACQUIRE, &["tok-a", "10000"]),
        Value::Okay
    );
    // Held: a second acquire fails (SET NX → null → false → nil).
    assert_eq!(
        eval(&mut con, LOCK_ACQUIRE, &["tok-b", "10000"]),
        Value::Nil
    );
    let pttl: i64 = redis::cmd("PTTL").arg("lock:job").query(&mut con).unwrap();
    assert!(pttl > 9000 && pttl <= 10000, "{pttl}");
    // Extending adds to the remaining time; a foreign token cannot extend or release.
    assert_eq!(
        eval(&mut con, LOCK_EXTEND, &["tok-a", "5000", "0"]),
        Value::Int(1)
    );
    let pttl: i64 = redis::cmd("PTTL").arg("lock:job").query(&mut con).unwrap();
    assert!(pttl > 14000 && pttl <= 15000, "{pttl}");
    assert_eq!(
        eval(&mut con, LOCK_EXTEND, &["tok-b", "5000", "1"]),
        Value::Int(0)
    );
    assert_eq!(eval(&mut con, LOCK_RELEASE, &["tok-b"]), Value::Int(0));
    assert_eq!(eval(&mut con, LOCK_RELEASE, &["tok-a"]), Value::Int(1));
    let exists: i64 = redis::cmd("EXISTS")
        .arg("lock:job")
        .query(&mut con)
        .unwrap();
    assert_eq!(exists, 0);
    assert_eq!(eval(&mut con, LOCK_RELEASE, &["tok-a"]), Value::Int(0));
    assert_eq!(
        eval(&mut con, LOCK_ACQUIRE, &["tok-b", "10000"]),
        Value::Okay
    );
}

#[test]
fn lock_scripts_answer_as_redis() {
    let mut cmds = vec![eval_args(LOCK_ACQUIRE, &["l"], &["a", "100000"])];
    cmds.push(eval_args(LOCK_ACQUIRE, &["l"], &["b", "100000"]));
    cmds.push(eval_args(LOCK_RELEASE, &["l"], &["b"]));
    cmds.push(eval_args(LOCK_EXTEND, &["l"], &["a", "100000", "1"]));
    cmds.push(eval_args(LOCK_RELEASE, &["l"], &["a"]));
    cmds.push(eval_args(LOCK_RELEASE, &["l"], &["a"]));
    cmds.push(eval_args(DJANGO_INCR, &["c"], &["1"]));
    cmds.push(cmd(&["SET", "c", "41"]));
    cmds.push(eval_args(DJANGO_INCR, &["c"], &["1"]));
    // Scripts inside a transaction (redis-py pipelines wrap everything in MULTI/EXEC).
    cmds.push(cmd(&["MULTI"]));
    cmds.push(eval_args(DJANGO_INCR, &["c"], &["1"]));
    cmds.push(eval_args(LOCK_ACQUIRE, &["l2"], &["a", "100000"]));
    cmds.push(eval_args(
        "return redis.call('incr', 'nope', 'x')",
        &[],
        &[],
    ));
    cmds.push(cmd(&["EXEC"]));
    same_as_redis(false, &cmds);
    same_as_redis(true, &cmds);
}

#[test]
fn evalsha_script_load_and_noscript() {
    let s = Strata::start();
    let mut r = s.raw();
    let sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
    assert_eq!(
        q(&mut r, &[b"EVALSHA", sha.as_bytes(), b"0"]),
        "-NOSCRIPT No matching script. Please use EVAL.\r\n"
    );
    assert_eq!(
        q(&mut r, &[b"SCRIPT", b"LOAD", b"return 1"]),
        format!("$40\r\n{sha}\r\n")
    );
    assert_eq!(q(&mut r, &[b"EVALSHA", sha.as_bytes(), b"0"]), ":1\r\n");
    // Case does not matter.
    assert_eq!(
        q(&mut r, &[b"EVALSHA", sha.to_uppercase().as_bytes(), b"0"]),
        ":1\r\n"
    );
    assert_eq!(
        q(&mut r, &[b"SCRIPT", b"EXISTS", sha.as_bytes(), b"nope"]),
        "*2\r\n:1\r\n:0\r\n"
    );
    // EVAL caches what it runs: EVALSHA works afterwards.
    let body = "return ARGV[1] .. '!'";
    let sha2 = {
        let out = q(&mut r, &[b"SCRIPT", b"LOAD", body.as_bytes()]);
        out.lines().nth(1).unwrap().to_string()
    };
    assert_eq!(q(&mut r, &[b"SCRIPT", b"FLUSH"]), "+OK\r\n");
    assert_eq!(
        q(&mut r, &[b"EVALSHA", sha2.as_bytes(), b"0", b"x"]),
        "-NOSCRIPT No matching script. Please use EVAL.\r\n"
    );
    assert_eq!(
        q(&mut r, &[b"EVAL", body.as_bytes(), b"0", b"x"]),
        "$2\r\nx!\r\n"
    );
    assert_eq!(
        q(&mut r, &[b"EVALSHA", sha2.as_bytes(), b"0", b"y"]),
        "$2\r\ny!\r\n"
    );
    assert_eq!(
        q(&mut r, &[b"EVALSHA_RO", sha2.as_bytes(), b"0", b"z"]),
        "$2\r\nz!\r\n"
    );
    assert_eq!(q(&mut r, &[b"SCRIPT", b"FLUSH", b"SYNC"]), "+OK\r\n");
    assert_eq!(
        q(&mut r, &[b"SCRIPT", b"EXISTS", sha.as_bytes()]),
        "*1\r\n:0\r\n"
    );

    // What client libraries do: EVALSHA, and on NOSCRIPT fall back to EVAL.
    let mut con = s.conn();
    let body = "return redis.call('incrby', KEYS[1], ARGV[1])";
    let sha = format!("{:x}", sha1_of(body.as_bytes()));
    let first = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("n")
        .arg(3)
        .query::<i64>(&mut con)
        .unwrap_err();
    assert_eq!(first.code(), Some("NOSCRIPT"));
    let n: i64 = redis::cmd("EVAL")
        .arg(body)
        .arg(1)
        .arg("n")
        .arg(3)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 3);
    let n: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("n")
        .arg(4)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 7);
}

#[test]
fn argument_and_cache_errors_as_redis() {
    let sha = "0123456789012345678901234567890123456789";
    same_as_redis(
        false,
        &[
            cmd(&["EVAL", "return 1", "-1"]),
            cmd(&["EVAL", "return 1", "2", "a"]),
            cmd(&["EVAL", "return 1", "x"]),
            cmd(&["EVAL"]),
            cmd(&["EVAL", "return 1"]),
            cmd(&["EVALSHA", "abc", "x"]),
            cmd(&["EVALSHA", sha, "x"]),
            cmd(&["EVALSHA", sha, "5"]),
            cmd(&["EVALSHA", sha, "0"]),
            cmd(&["EVAL", "return (", "0"]),
            cmd(&["EVAL", "\x1bLua", "0"]),
            cmd(&["SCRIPT", "LOAD", "return ("]),
            cmd(&["SCRIPT", "LOAD", "return 1"]),
            cmd(&[
                "SCRIPT",
                "EXISTS",
                "E0E1F9FABFC9D4800C877A703B823AC0578FF8DB",
                "x",
            ]),
            cmd(&["SCRIPT", "FLUSH", "bogus"]),
            cmd(&["SCRIPT", "FLUSH", "sync", "sync"]),
            cmd(&["SCRIPT", "FLUSH", "ASYNC"]),
            cmd(&["SCRIPT"]),
            cmd(&["SCRIPT", "LOAD"]),
            cmd(&["SCRIPT", "EXISTS"]),
            cmd(&["SCRIPT", "NOSUB"]),
            cmd(&["SCRIPT", "KILL"]),
            cmd(&["SCRIPT", "HELP"]),
        ],
    );
}

#[test]
fn call_and_pcall_errors_as_redis() {
    let cmds = vec![
        cmd(&["SET", "s", "abc"]),
        eval_args("return redis.call('incr','s')", &[], &[]),
        eval_args("return redis.pcall('incr','s')", &[], &[]),
        eval_args("local x = 1\n\nreturn redis.call('incr','s')", &[], &[]),
        eval_args("redis.call('incr','s') return 1", &[], &[]),
        eval_args("return redis.call('incr','a','b')", &[], &[]),
        eval_args("return redis.call()", &[], &[]),
        eval_args("return redis.pcall()", &[], &[]),
        eval_args("return redis.call({})", &[], &[]),
        eval_args("return redis.call('get', {})", &[], &[]),
        eval_args("return redis.call('nosuch')", &[], &[]),
        eval_args("return redis.pcall('nosuch')", &[], &[]),
        eval_args("return redis.pcall('client')", &[], &[]),
        eval_args("return redis.pcall('client', 'nosub')", &[], &[]),
        eval_args("return redis.call('eval', 'return 1', 0)", &[], &[]),
        eval_args("return redis.pcall('script', 'load', 'return 1')", &[], &[]),
        eval_args("return redis.pcall('multi')", &[], &[]),
        eval_args("return redis.pcall('select', '99')", &[], &[]),
        eval_args("local ok, e = pcall(redis.call, 'incr', 's') return e", &[], &[]),
        eval_args(
            "local e = redis.pcall('incr', 's') return {e.err, tostring(e.ignore_error_stats_update)}",
            &[],
            &[],
        ),
        eval_args(
            "local ok, e = xpcall(function() redis.call('incr','s') end, function(e) return e.err end) return e",
            &[],
            &[],
        ),
        eval_args(
            "return coroutine.resume(coroutine.create(function() redis.call('incr','s') end))",
            &[],
            &[],
        ),
        eval_args(
            "local f = function() return redis.call('incr','s') end\nreturn f()",
            &[],
            &[],
        ),
        cmd(&["EVAL_RO", "return redis.call('set','a','b')", "0"]),
        cmd(&["EVAL_RO", "return redis.call('get','a')", "0"]),
        cmd(&["EVAL_RO", "return redis.pcall('del','a')", "0"]),
        eval_args("x = 1", &[], &[]),
        eval_args("return x", &[], &[]),
        eval_args("error('boom')", &[], &[]),
        eval_args("error('x', 0)", &[], &[]),
        eval_args("error(nil)", &[], &[]),
        eval_args("error({err='MYERR custom'})", &[], &[]),
        eval_args("local t = nil\nreturn t.x", &[], &[]),
        eval_args("return pairs(nil)", &[], &[]),
        eval_args("return bit.band('x')", &[], &[]),
        eval_args("return cjson.decode('[1,')", &[], &[]),
        eval_args("return cjson.encode(function() end)", &[], &[]),
        eval_args("return redis.sha1hex()", &[], &[]),
        eval_args("return redis.setresp(4)", &[], &[]),
        eval_args("return redis.log()", &[], &[]),
        eval_args("return redis.log('a', 'b')", &[], &[]),
        eval_args("return redis.log(9, 'b')", &[], &[]),
        eval_args("return redis.set_repl()", &[], &[]),
        eval_args("return redis.set_repl(99)", &[], &[]),
        eval_args("return redis.acl_check_cmd('nosuch')", &[], &[]),
        eval_args("return redis.acl_check_cmd('get', 'x')", &[], &[]),
        eval_args("return math.random(0)", &[], &[]),
    ];
    same_as_redis(false, &cmds);
}

#[test]
fn error_and_status_reply_helpers() {
    same_as_redis(
        false,
        &[
            eval_args("return redis.status_reply('fine')", &[], &[]),
            eval_args("return redis.error_reply('My err')", &[], &[]),
            eval_args("return redis.error_reply('oops')", &[], &[]),
            eval_args("return redis.error_reply('-X y')", &[], &[]),
            eval_args("return redis.error_reply()", &[], &[]),
            eval_args("return redis.status_reply(1)", &[], &[]),
            eval_args("return {err='raw error'}", &[], &[]),
            eval_args("return {ok='a\\r\\nb'}", &[], &[]),
            eval_args("return {ok='x', err='y'}", &[], &[]),
            eval_args("return {err=5}", &[], &[]),
            eval_args("return redis.error_reply('WRONGTYPE custom')", &[], &[]),
        ],
    );
    // Through a client: a status is a status, an error is an error with its code.
    let s = Strata::start();
    let mut con = s.conn();
    let v: Value = redis::cmd("EVAL")
        .arg("return redis.status_reply('fine')")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, Value::SimpleString("fine".into()));
    let e = redis::cmd("EVAL")
        .arg("return redis.error_reply('MYCODE went wrong')")
        .arg(0)
        .query::<Value>(&mut con)
        .unwrap_err();
    assert_eq!(e.code(), Some("MYCODE"));
}

#[test]
fn cjson_and_bit_as_redis() {
    let scripts = [
        "return cjson.encode({1,2,3})",
        "return cjson.encode({a={b={c={}}}})",
        "return cjson.encode({[1]=1,[2]=2,[4]=4})",
        "return cjson.encode({[1]=1,[20]=2})",
        "return cjson.encode({1, 'a', true, false, cjson.null, {x='y/z'}})",
        "return cjson.encode('a\"b\\\\c\\n\\t\\1\\127')",
        "return cjson.encode(1/3)",
        "return cjson.encode(123456789012345)",
        "return cjson.encode(1/0)",
        "return cjson.encode({[true]=1})",
        "return cjson.encode()",
        "local t = {} t[1] = t return cjson.encode(t)",
        "return cjson.decode('[1,2,{\"a\":null}]')[3].a == cjson.null",
        "local t = cjson.decode('{\"a\":[1,2.5,\"x\",true,false]}') return {t.a[1], t.a[3], tostring(t.a[4]), tostring(t.a[5]), #t.a}",
        "return cjson.decode('\"\\\\u00e9\\\\ud83d\\\\ude00\"')",
        "return cjson.decode('{\"a\" 1}')",
        "return cjson.decode('[1] x')",
        "return cjson.decode('0x10')",
        "return cjson.decode(string.rep('[', 1001) .. string.rep(']', 1001))",
        "return cjson.encode(cjson.decode('{\"k\":[1,2,3]}'))",
        "return {cjson.encode_sparse_array()}",
        "return cjson.encode_max_depth()",
        "return tostring(cjson.null)",
        "return {bit.tobit(2^32+5), bit.tobit(-1), bit.tobit(2^31), bit.tobit(1.5), bit.tobit(2.5)}",
        "return {bit.tohex(255), bit.tohex(-1), bit.tohex(255, -4), bit.tohex(255, 2)}",
        "return {bit.bnot(0), bit.band(0xff, 0x0f, 0x3), bit.bor(1,2,4), bit.bxor(5,3)}",
        "return {bit.lshift(1, 31), bit.rshift(-1, 28), bit.arshift(-256, 4), bit.rol(0x80000001, 1), bit.ror(1, 1), bit.bswap(0x12345678)}",
        "return bit.band('3', 5)",
        "return bit.band()",
    ];
    let cmds: Vec<_> = scripts.iter().map(|s| eval_args(s, &[], &[])).collect();
    same_as_redis(false, &cmds);

    // Round trip of a realistic document through a script.
    let s = Strata::start();
    let mut con = s.conn();
    let doc = r#"{"user":{"id":42,"tags":["a","b"],"active":true,"score":1.5}}"#;
    let out: String = redis::cmd("EVAL")
        .arg("local d = cjson.decode(ARGV[1]) d.user.id = d.user.id + 1 return cjson.encode(d)")
        .arg(0)
        .arg(doc)
        .query(&mut con)
        .unwrap();
    let back: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(back["user"]["id"], 43);
    assert_eq!(back["user"]["tags"][1], "b");
    assert_eq!(back["user"]["active"], true);
    assert_eq!(back["user"]["score"], 1.5);
}

#[test]
fn sandbox_as_redis() {
    let scripts = [
        "return type(os)",
        "local ok = pcall(function() return io end) return ok",
        "return rawget(_G, 'os') == nil and rawget(_G, 'io') == nil and rawget(_G, 'debug') == nil",
        "return {rawget(_G, 'require'), rawget(_G, 'dofile'), rawget(_G, 'loadfile'), rawget(_G, 'print'), rawget(_G, 'setfenv'), rawget(_G, 'getfenv'), rawget(_G, 'newproxy'), rawget(_G, 'package'), rawget(_G, 'module')}",
        "string.x = 1",
        "redis.call = nil",
        "rawset(_G, 'x', 1)",
        "setmetatable(_G, nil)",
        "table.insert(string, 1)",
        "return loadstring('x=1')()",
        "return loadstring('return 1 + 1')()",
        "return {loadstring(string.dump(function() return 1 end))}",
        "KEYS[1] = 'x' return KEYS[1]",
        "table.insert(KEYS, 'a') return #KEYS",
        "local t = {} t.x = 1 return t.x",
        "return type(getmetatable(_G))",
        "return tostring(getmetatable('').__index == string)",
        "return rawget(_G, 'redis') ~= nil",
        "return _VERSION",
        "return redis.REDIS_VERSION_NUM",
        "return {math.random(1000), math.random(1000), math.random(5, 10)}",
        "math.randomseed(7) return math.random(1000000)",
        "return {pcall(error)}",
        "return coroutine.wrap(function() coroutine.yield(5) end)()",
        "return gcinfo() > 0",
        "return string.format('%5.2f|%d|%s', 3.14159, 42, 'x')",
        "return tostring(0.1) .. ' ' .. tostring(1e20) .. ' ' .. 7/2",
    ];
    let cmds: Vec<_> = scripts.iter().map(|s| eval_args(s, &[], &[])).collect();
    same_as_redis(false, &cmds);
}

#[test]
fn reply_conversions_as_redis_resp2_and_resp3() {
    let mut cmds = vec![
        cmd(&["HSET", "h", "a", "1", "b", "2"]),
        cmd(&["SET", "n", "10"]),
    ];
    for s in [
        "return 3.99",
        "return -3.99",
        "return 1/0",
        "return 'x'",
        "return true",
        "return false",
        "return nil",
        "return {1, 2, nil, 3}",
        "return {1, 'a', {2, false, true}}",
        "return {double=3.5}",
        "return {double=0.1}",
        "return {map={a=1}}",
        "return {set={a=true}}",
        "return {big_number='123'}",
        "return {verbatim_string={format='mkd', string='# x'}}",
        "redis.setresp(3) return true",
        "redis.setresp(3) return false",
        "return redis.call('hgetall', 'h')",
        "return redis.call('get', 'nokey')",
        "return redis.call('mget', 'n', 'nokey')",
        "return redis.call('incrbyfloat', 'f', '1.5')",
        "redis.setresp(3) return redis.call('hgetall', 'h')",
        "redis.setresp(3) local r = redis.call('hgetall', 'h') return {type(r.map), r.map.a, r.map.b}",
        "redis.setresp(3) return redis.call('get', 'nokey') == nil",
        "redis.setresp(3) return {redis.call('get', 'nokey'), 1}",
        "redis.setresp(3) return redis.call('exists', 'h')",
        "return redis.call('ping')",
        "return {redis.call('ping')}",
        "return redis.call('set', 'k', 'v', 'EX', 100)",
        "return redis.call('ttl', 'k')",
        "redis.call('set', 'fk', 0.1) return redis.call('get', 'fk')",
        "redis.call('set', 'fk', 1e20) return redis.call('get', 'fk')",
        "redis.call('set', 'fk', 123456789012) return redis.call('get', 'fk')",
        "return select('#', redis.setresp(2))",
    ] {
        cmds.push(eval_args(s, &[], &[]));
    }
    cmds.push(eval_args(
        "return {KEYS[1], KEYS[2], ARGV[1], #KEYS, #ARGV}",
        &["k1", "k2"],
        &["a1"],
    ));
    same_as_redis(false, &cmds);
    same_as_redis(true, &cmds);
}

#[test]
fn resp3_client_through_the_redis_crate() {
    let s = Strata::start();
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{}/?protocol=resp3", s.port)).unwrap();
    let mut con = client.get_connection().unwrap();
    let v: Value = redis::cmd("EVAL")
        .arg("redis.setresp(3) return {map={a=1}, double=nil}")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        v,
        Value::Map(vec![(Value::BulkString(b"a".to_vec()), Value::Int(1))])
    );
    let v: Value = redis::cmd("EVAL")
        .arg("redis.setresp(3) return false")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, Value::Boolean(false));
    let v: Value = redis::cmd("EVAL")
        .arg("return {double=2.5}")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, Value::Double(2.5));
    let v: Value = redis::cmd("EVAL")
        .arg("return nil")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, Value::Nil);
}

#[test]
fn shebang_flags_as_redis() {
    same_as_redis(
        false,
        &[
            eval_args(
                "#!lua flags=no-writes\nreturn redis.call('set','a','b')",
                &[],
                &[],
            ),
            eval_args(
                "#!lua flags=no-writes\nreturn redis.call('get','a')",
                &[],
                &[],
            ),
            eval_args("#!lua\nreturn redis.call('set','a','b')", &[], &[]),
            eval_args("#!lua flags=bogus\nreturn 1", &[], &[]),
            eval_args("#!foo\nreturn 1", &[], &[]),
            eval_args("#!lua name=foo\nreturn 1", &[], &[]),
            eval_args("#!lua", &[], &[]),
            eval_args("#!lua\nerror('x')", &[], &[]),
            eval_args("#!lua flags=\nreturn 3", &[], &[]),
            cmd(&["EVAL_RO", "#!lua\nreturn 1", "0"]),
            cmd(&["EVAL_RO", "#!lua flags=no-writes\nreturn 1", "0"]),
        ],
    );
}

#[test]
fn select_inside_a_script_stays_inside() {
    let s = Strata::start();
    let mut r = s.raw();
    assert_eq!(
        q(
            &mut r,
            &[
                b"EVAL",
                b"redis.call('select', 3) redis.call('set', 'k', 'in3') return redis.call('get', 'k')",
                b"0"
            ]
        ),
        "$3\r\nin3\r\n"
    );
    assert_eq!(q(&mut r, &[b"GET", b"k"]), "$-1\r\n");
    assert_eq!(q(&mut r, &[b"SELECT", b"3"]), "+OK\r\n");
    assert_eq!(q(&mut r, &[b"GET", b"k"]), "$3\r\nin3\r\n");
    // A script starts in the caller's database.
    assert_eq!(
        q(&mut r, &[b"EVAL", b"return redis.call('get', 'k')", b"0"]),
        "$3\r\nin3\r\n"
    );
}

#[test]
fn scripts_are_atomic() {
    let s = Strata::start();
    let script = "local v = tonumber(redis.call('get', KEYS[1]) or '0') redis.call('set', KEYS[1], v + 1) return v + 1";
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let client = s.client();
            std::thread::spawn(move || {
                let mut con = client.get_connection().unwrap();
                for _ in 0..100 {
                    let _: i64 = redis::cmd("EVAL")
                        .arg(script)
                        .arg(1)
                        .arg("counter")
                        .query(&mut con)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut con = s.conn();
    let n: i64 = redis::cmd("GET").arg("counter").query(&mut con).unwrap();
    assert_eq!(n, 400);
}

#[test]
fn runaway_script_is_aborted_and_the_server_stays_responsive() {
    let s = Strata::with_config("[server]\nlua_time_limit_ms = 300\n");
    let port = s.port;
    let mut a = s.raw();
    let mut b = s.raw();
    assert_eq!(q(&mut b, &[b"SET", b"before", b"1"]), "+OK\r\n");

    // Another client asks while the script runs: it waits, then gets its answer.
    let waiter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let mut c = Raw::connect(port);
        let r = q(&mut c, &[b"GET", b"before"]);
        (r, Instant::now())
    });
    let start = Instant::now();
    let reply = q(
        &mut a,
        &[b"EVAL", b"local i = 0\nwhile true do i = i + 1 end", b"0"],
    );
    let took = start.elapsed();
    assert!(
        reply.starts_with(
            "-ERR Script killed by timeout: it ran longer than lua-time-limit (300 ms) script: "
        ),
        "{reply}"
    );
    assert!(reply.contains(", on @user_script:2."), "{reply}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let (r, _) = waiter.join().unwrap();
    assert_eq!(r, "$1\r\n1\r\n");

    // pcall and coroutines cannot swallow the termination.
    let reply = q(
        &mut a,
        &[
            b"EVAL",
            b"while true do pcall(function() while true do end end) end",
            b"0",
        ],
    );
    assert!(
        reply.starts_with("-ERR Script killed by timeout"),
        "{reply}"
    );
    let reply = q(
        &mut a,
        &[
            b"EVAL",
            b"while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
            b"0",
        ],
    );
    assert!(
        reply.starts_with("-ERR Script killed by timeout"),
        "{reply}"
    );

    // Everything works afterwards, on the same and on other connections.
    assert_eq!(q(&mut a, &[b"PING"]), "+PONG\r\n");
    assert_eq!(q(&mut a, &[b"EVAL", b"return 42", b"0"]), ":42\r\n");
    assert_eq!(q(&mut b, &[b"GET", b"before"]), "$1\r\n1\r\n");
    let mut c = s.raw();
    assert_eq!(
        q(&mut c, &[b"EVAL", b"return redis.call('incr', 'x')", b"0"]),
        ":1\r\n"
    );
}

#[test]
fn hostile_inputs_do_not_hurt_the_server() {
    let mut s = Strata::start();
    let mut r = s.raw();
    for script in [
        "local t = {} t[1] = t return t",
        "local t = {} t.map = t return t",
        "return string.rep('x', 1024 * 1024)",
        "return cjson.decode(string.rep('[', 100000))",
        "local function f() return f() + 1 end return f()",
        "local function f(n) if n == 0 then return {} end return {f(n - 1)} end return f(150)",
        "return loadstring(string.rep('(', 100000))",
        "error(setmetatable({}, {__tostring = function() error('again') end}))",
        "error({foo = 1})",
        "error(coroutine.create(function() end))",
        "return redis.call('eval', 'return 1', '0')",
        "return redis.call('get', string.rep('k', 100000))",
        "return unpack({1, 2, 3}, 1, 1e6)",
        "collectgarbage('stop') return 1",
        "return table.insert({}, -1e10, 1)",
    ] {
        let reply = q(&mut r, &[b"EVAL", script.as_bytes(), b"0"]);
        assert!(!reply.is_empty(), "{script}");
    }
    assert_eq!(q(&mut r, &[b"PING"]), "+PONG\r\n");
    assert!(s.alive());
}
