//! Model-based tests: random sequences of string, hash and key commands on a small key space
//! (so that keys collide, change type, expire and get renamed over each other) are applied to
//! Strata and to an oracle, and every reply must agree.
//!
//! Two oracles: a simple in-test reference model (HashMaps, written from Redis's documented
//! semantics), and the machine's real redis-server 7.0.15. One Strata (and one redis-server) per
//! test, flushed between cases.

mod support;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use std::cell::RefCell;
use std::collections::HashMap;
use support::{encode, Raw, RedisServer, Strata};

// ---------------------------------------------------------------------------------------------
// Commands

const KEYS: &[&str] = &["k0", "k1", "k2", "k3", "k4"];
const FIELDS: &[&str] = &["f0", "f1", "f2"];
/// Values chosen so that counters, non-numbers and the i64 edges all occur.
const VALUES: &[&str] = &[
    "0",
    "1",
    "-5",
    "10",
    "abc",
    "",
    "007",
    "9223372036854775807",
    "-9223372036854775808",
    "x y",
];
const INCREMENTS: &[i64] = &[1, -1, 100, i64::MAX, i64::MIN + 1];

#[derive(Debug, Clone)]
enum SetOpt {
    Plain,
    Nx,
    Xx,
    Get,
    Ex(i64),
    KeepTtl,
}

#[derive(Debug, Clone)]
enum Op {
    Set(usize, usize, SetOpt),
    SetNx(usize, usize),
    Get(usize),
    GetDel(usize),
    GetRange(usize, i64, i64),
    Del(Vec<usize>),
    Incr(usize),
    IncrBy(usize, i64),
    Decr(usize),
    Append(usize, usize),
    Strlen(usize),
    MSet(Vec<(usize, usize)>),
    MGet(Vec<usize>),
    HSet(usize, Vec<(usize, usize)>),
    HGet(usize, usize),
    HDel(usize, Vec<usize>),
    HLen(usize),
    HExists(usize, usize),
    HGetAll(usize),
    HIncrBy(usize, usize, i64),
    Exists(Vec<usize>),
    Type(usize),
    Expire(usize, i64),
    Persist(usize),
    Ttl(usize),
    Rename(usize, usize),
    RenameNx(usize, usize),
    DbSize,
}

impl Op {
    fn args(&self) -> Vec<Vec<u8>> {
        let k = |i: &usize| KEYS[*i].as_bytes().to_vec();
        let f = |i: &usize| FIELDS[*i].as_bytes().to_vec();
        let v = |i: &usize| VALUES[*i].as_bytes().to_vec();
        let n = |x: &i64| x.to_string().into_bytes();
        let w = |s: &str| s.as_bytes().to_vec();
        match self {
            Op::Set(key, val, opt) => {
                let mut a = vec![w("SET"), k(key), v(val)];
                match opt {
                    SetOpt::Plain => {}
                    SetOpt::Nx => a.push(w("NX")),
                    SetOpt::Xx => a.push(w("XX")),
                    SetOpt::Get => a.push(w("GET")),
                    SetOpt::Ex(t) => a.extend([w("EX"), n(t)]),
                    SetOpt::KeepTtl => a.push(w("KEEPTTL")),
                }
                a
            }
            Op::SetNx(key, val) => vec![w("SETNX"), k(key), v(val)],
            Op::Get(key) => vec![w("GET"), k(key)],
            Op::GetDel(key) => vec![w("GETDEL"), k(key)],
            Op::GetRange(key, s, e) => vec![w("GETRANGE"), k(key), n(s), n(e)],
            Op::Del(keys) => [vec![w("DEL")], keys.iter().map(k).collect()].concat(),
            Op::Incr(key) => vec![w("INCR"), k(key)],
            Op::IncrBy(key, by) => vec![w("INCRBY"), k(key), n(by)],
            Op::Decr(key) => vec![w("DECR"), k(key)],
            Op::Append(key, val) => vec![w("APPEND"), k(key), v(val)],
            Op::Strlen(key) => vec![w("STRLEN"), k(key)],
            Op::MSet(pairs) => {
                let mut a = vec![w("MSET")];
                for (key, val) in pairs {
                    a.extend([k(key), v(val)]);
                }
                a
            }
            Op::MGet(keys) => [vec![w("MGET")], keys.iter().map(k).collect()].concat(),
            Op::HSet(key, pairs) => {
                let mut a = vec![w("HSET"), k(key)];
                for (field, val) in pairs {
                    a.extend([f(field), v(val)]);
                }
                a
            }
            Op::HGet(key, field) => vec![w("HGET"), k(key), f(field)],
            Op::HDel(key, fields) => {
                [vec![w("HDEL"), k(key)], fields.iter().map(f).collect()].concat()
            }
            Op::HLen(key) => vec![w("HLEN"), k(key)],
            Op::HExists(key, field) => vec![w("HEXISTS"), k(key), f(field)],
            Op::HGetAll(key) => vec![w("HGETALL"), k(key)],
            Op::HIncrBy(key, field, by) => vec![w("HINCRBY"), k(key), f(field), n(by)],
            Op::Exists(keys) => [vec![w("EXISTS")], keys.iter().map(k).collect()].concat(),
            Op::Type(key) => vec![w("TYPE"), k(key)],
            Op::Expire(key, t) => vec![w("EXPIRE"), k(key), n(t)],
            Op::Persist(key) => vec![w("PERSIST"), k(key)],
            Op::Ttl(key) => vec![w("TTL"), k(key)],
            Op::Rename(a, b) => vec![w("RENAME"), k(a), k(b)],
            Op::RenameNx(a, b) => vec![w("RENAMENX"), k(a), k(b)],
            Op::DbSize => vec![w("DBSIZE")],
        }
    }

    /// Replies whose order Redis does not define for every encoding (compared as sets).
    fn unordered_pairs(&self) -> bool {
        matches!(self, Op::HGetAll(_))
    }
}

fn key() -> impl Strategy<Value = usize> + Clone {
    0..KEYS.len()
}
fn field() -> impl Strategy<Value = usize> + Clone {
    0..FIELDS.len()
}
fn value() -> impl Strategy<Value = usize> + Clone {
    0..VALUES.len()
}
/// Long TTLs only (nothing really expires during a case), plus the "delete now" ones.
fn ttl() -> impl Strategy<Value = i64> {
    prop_oneof![Just(-1i64), Just(0), 1000i64..100_000]
}

fn op() -> impl Strategy<Value = Op> {
    let set_opt = prop_oneof![
        3 => Just(SetOpt::Plain),
        1 => Just(SetOpt::Nx),
        1 => Just(SetOpt::Xx),
        1 => Just(SetOpt::Get),
        1 => (1000i64..100_000).prop_map(SetOpt::Ex),
        1 => Just(SetOpt::KeepTtl),
    ];
    let keys = proptest::collection::vec(key(), 1..4);
    let pairs = proptest::collection::vec((key(), value()), 1..4);
    let hpairs = proptest::collection::vec((field(), value()), 1..4);
    let inc = proptest::sample::select(INCREMENTS);
    prop_oneof![
        4 => (key(), value(), set_opt).prop_map(|(k, v, o)| Op::Set(k, v, o)),
        1 => (key(), value()).prop_map(|(k, v)| Op::SetNx(k, v)),
        3 => key().prop_map(Op::Get),
        1 => key().prop_map(Op::GetDel),
        1 => (key(), -6i64..6, -6i64..6).prop_map(|(k, s, e)| Op::GetRange(k, s, e)),
        2 => keys.clone().prop_map(Op::Del),
        2 => key().prop_map(Op::Incr),
        1 => (key(), inc.clone()).prop_map(|(k, b)| Op::IncrBy(k, b)),
        1 => key().prop_map(Op::Decr),
        2 => (key(), value()).prop_map(|(k, v)| Op::Append(k, v)),
        1 => key().prop_map(Op::Strlen),
        1 => pairs.prop_map(Op::MSet),
        1 => keys.clone().prop_map(Op::MGet),
        3 => (key(), hpairs).prop_map(|(k, p)| Op::HSet(k, p)),
        2 => (key(), field()).prop_map(|(k, f)| Op::HGet(k, f)),
        2 => (key(), proptest::collection::vec(field(), 1..3)).prop_map(|(k, f)| Op::HDel(k, f)),
        1 => key().prop_map(Op::HLen),
        1 => (key(), field()).prop_map(|(k, f)| Op::HExists(k, f)),
        2 => key().prop_map(Op::HGetAll),
        1 => (key(), field(), inc).prop_map(|(k, f, b)| Op::HIncrBy(k, f, b)),
        1 => keys.prop_map(Op::Exists),
        1 => key().prop_map(Op::Type),
        2 => (key(), ttl()).prop_map(|(k, t)| Op::Expire(k, t)),
        1 => key().prop_map(Op::Persist),
        2 => key().prop_map(Op::Ttl),
        1 => (key(), key()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (key(), key()).prop_map(|(a, b)| Op::RenameNx(a, b)),
        1 => Just(Op::DbSize),
    ]
}

// ---------------------------------------------------------------------------------------------
// Replies

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

fn parse(buf: &[u8]) -> (Resp, usize) {
    let end = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("complete line");
    let line = std::str::from_utf8(&buf[1..end]).expect("utf8 line");
    let next = end + 2;
    match buf[0] {
        b'+' => (Resp::Simple(line.to_string()), next),
        b'-' => (Resp::Error(line.to_string()), next),
        b':' => (Resp::Int(line.parse().expect("int")), next),
        b'$' => {
            let n: i64 = line.parse().expect("len");
            if n < 0 {
                (Resp::Bulk(None), next)
            } else {
                let n = n as usize;
                (Resp::Bulk(Some(buf[next..next + n].to_vec())), next + n + 2)
            }
        }
        b'*' => {
            let n: i64 = line.parse().expect("len");
            if n < 0 {
                return (Resp::Array(None), next);
            }
            let mut items = Vec::new();
            let mut p = next;
            for _ in 0..n {
                let (v, used) = parse(&buf[p..]);
                items.push(v);
                p += used;
            }
            (Resp::Array(Some(items)), p)
        }
        other => panic!("unexpected reply type {:?}", other as char),
    }
}

fn send(raw: &mut Raw, op: &Op) -> Resp {
    let args = op.args();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    raw.send(&encode(&args));
    parse(&raw.reply()).0
}

/// Replies compared the way `op` needs: flat field/value arrays as sets of pairs, and TTLs with
/// one second of slack (time passes between the EXPIRE and the TTL).
fn agree(op: &Op, want: &Resp, got: &Resp) -> bool {
    match (op, want, got) {
        (Op::Ttl(_), Resp::Int(w), Resp::Int(g)) if *w >= 0 => *g == *w || *g == *w - 1,
        (_, Resp::Array(Some(w)), Resp::Array(Some(g))) if op.unordered_pairs() => {
            let pairs = |v: &[Resp]| {
                let mut p: Vec<(Resp, Resp)> =
                    v.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
                p.sort_by_key(|(a, _)| format!("{a:?}"));
                p
            };
            w.len() == g.len() && pairs(w) == pairs(g)
        }
        _ => want == got,
    }
}

// ---------------------------------------------------------------------------------------------
// The reference model

#[derive(Debug, Clone)]
enum Val {
    Str(Vec<u8>),
    Hash(HashMap<Vec<u8>, Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Entry {
    val: Val,
    /// The TTL in seconds given when it was set (nothing expires within a case).
    ttl: Option<i64>,
}

#[derive(Default)]
struct Model {
    db: HashMap<Vec<u8>, Entry>,
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INT: &str = "ERR value is not an integer or out of range";
const OVERFLOW: &str = "ERR increment or decrement would overflow";

fn ok() -> Resp {
    Resp::Simple("OK".into())
}
fn err(s: &str) -> Resp {
    Resp::Error(s.into())
}
fn bulk(v: &[u8]) -> Resp {
    Resp::Bulk(Some(v.to_vec()))
}
fn nil() -> Resp {
    Resp::Bulk(None)
}

/// Redis's string2ll: exactly the canonical decimal form of an i64.
fn as_int(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let n: i64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

impl Model {
    fn apply(&mut self, op: &Op) -> Resp {
        let k = |i: &usize| KEYS[*i].as_bytes().to_vec();
        let f = |i: &usize| FIELDS[*i].as_bytes().to_vec();
        let v = |i: &usize| VALUES[*i].as_bytes().to_vec();
        match op {
            Op::Set(key, val, opt) => {
                let key = k(key);
                let old = self.db.get(&key).cloned();
                let exists = old.is_some();
                let mut reply = ok();
                if let SetOpt::Get = opt {
                    reply = match &old {
                        None => nil(),
                        Some(Entry {
                            val: Val::Str(s), ..
                        }) => bulk(s),
                        Some(_) => return err(WRONGTYPE),
                    };
                }
                let write = match opt {
                    SetOpt::Nx => !exists,
                    SetOpt::Xx => exists,
                    _ => true,
                };
                if !write {
                    return nil();
                }
                let ttl = match opt {
                    SetOpt::Ex(t) => Some(*t),
                    SetOpt::KeepTtl => old.and_then(|e| e.ttl),
                    _ => None,
                };
                self.db.insert(
                    key,
                    Entry {
                        val: Val::Str(v(val)),
                        ttl,
                    },
                );
                reply
            }
            Op::SetNx(key, val) => match self.db.entry(k(key)) {
                std::collections::hash_map::Entry::Occupied(_) => Resp::Int(0),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Entry {
                        val: Val::Str(v(val)),
                        ttl: None,
                    });
                    Resp::Int(1)
                }
            },
            Op::Get(key) => match self.db.get(&k(key)).map(|e| &e.val) {
                None => nil(),
                Some(Val::Str(s)) => bulk(s),
                Some(Val::Hash(_)) => err(WRONGTYPE),
            },
            Op::GetDel(key) => match self.db.get(&k(key)).map(|e| e.val.clone()) {
                None => nil(),
                Some(Val::Str(s)) => {
                    self.db.remove(&k(key));
                    bulk(&s)
                }
                Some(Val::Hash(_)) => err(WRONGTYPE),
            },
            Op::GetRange(key, start, end) => {
                let s = match self.db.get(&k(key)).map(|e| &e.val) {
                    None => Vec::new(),
                    Some(Val::Str(s)) => s.clone(),
                    Some(Val::Hash(_)) => return err(WRONGTYPE),
                };
                let len = s.len() as i64;
                let (mut a, mut b) = (*start, *end);
                if a < 0 && b < 0 && a > b {
                    return bulk(b"");
                }
                if a < 0 {
                    a += len;
                }
                if b < 0 {
                    b += len;
                }
                a = a.max(0);
                b = b.max(0);
                if b >= len {
                    b = len - 1;
                }
                if a > b || len == 0 {
                    return bulk(b"");
                }
                bulk(&s[a as usize..=b as usize])
            }
            Op::Del(keys) => {
                let n = keys
                    .iter()
                    .filter(|key| self.db.remove(&k(key)).is_some())
                    .count();
                Resp::Int(n as i64)
            }
            Op::Incr(key) => self.incr(k(key), 1),
            Op::IncrBy(key, by) => self.incr(k(key), *by),
            Op::Decr(key) => self.incr(k(key), -1),
            Op::Append(key, val) => {
                let key = k(key);
                match self.db.get_mut(&key) {
                    None => {
                        let s = v(val);
                        let n = s.len();
                        self.db.insert(
                            key,
                            Entry {
                                val: Val::Str(s),
                                ttl: None,
                            },
                        );
                        Resp::Int(n as i64)
                    }
                    Some(Entry {
                        val: Val::Str(s), ..
                    }) => {
                        s.extend(v(val));
                        Resp::Int(s.len() as i64)
                    }
                    Some(_) => err(WRONGTYPE),
                }
            }
            Op::Strlen(key) => match self.db.get(&k(key)).map(|e| &e.val) {
                None => Resp::Int(0),
                Some(Val::Str(s)) => Resp::Int(s.len() as i64),
                Some(Val::Hash(_)) => err(WRONGTYPE),
            },
            Op::MSet(pairs) => {
                for (key, val) in pairs {
                    self.db.insert(
                        k(key),
                        Entry {
                            val: Val::Str(v(val)),
                            ttl: None,
                        },
                    );
                }
                ok()
            }
            Op::MGet(keys) => Resp::Array(Some(
                keys.iter()
                    .map(|key| match self.db.get(&k(key)).map(|e| &e.val) {
                        Some(Val::Str(s)) => bulk(s),
                        _ => nil(),
                    })
                    .collect(),
            )),
            Op::HSet(key, pairs) => {
                let key = k(key);
                let entry = self.db.entry(key).or_insert(Entry {
                    val: Val::Hash(HashMap::new()),
                    ttl: None,
                });
                let Val::Hash(h) = &mut entry.val else {
                    return err(WRONGTYPE);
                };
                let mut added = 0;
                for (field, val) in pairs {
                    if h.insert(f(field), v(val)).is_none() {
                        added += 1;
                    }
                }
                Resp::Int(added)
            }
            Op::HGet(key, field) => match self.db.get(&k(key)).map(|e| &e.val) {
                None => nil(),
                Some(Val::Hash(h)) => h.get(&f(field)).map_or_else(nil, |x| bulk(x)),
                Some(Val::Str(_)) => err(WRONGTYPE),
            },
            Op::HDel(key, fields) => {
                let key = k(key);
                let (n, empty) = match self.db.get_mut(&key).map(|e| &mut e.val) {
                    None => return Resp::Int(0),
                    Some(Val::Str(_)) => return err(WRONGTYPE),
                    Some(Val::Hash(h)) => {
                        let n = fields
                            .iter()
                            .filter(|field| h.remove(&f(field)).is_some())
                            .count();
                        (n, h.is_empty())
                    }
                };
                if empty {
                    self.db.remove(&key);
                }
                Resp::Int(n as i64)
            }
            Op::HLen(key) => match self.db.get(&k(key)).map(|e| &e.val) {
                None => Resp::Int(0),
                Some(Val::Hash(h)) => Resp::Int(h.len() as i64),
                Some(Val::Str(_)) => err(WRONGTYPE),
            },
            Op::HExists(key, field) => match self.db.get(&k(key)).map(|e| &e.val) {
                None => Resp::Int(0),
                Some(Val::Hash(h)) => Resp::Int(h.contains_key(&f(field)) as i64),
                Some(Val::Str(_)) => err(WRONGTYPE),
            },
            Op::HGetAll(key) => match self.db.get(&k(key)).map(|e| &e.val) {
                None => Resp::Array(Some(Vec::new())),
                Some(Val::Hash(h)) => Resp::Array(Some(
                    h.iter().flat_map(|(a, b)| [bulk(a), bulk(b)]).collect(),
                )),
                Some(Val::Str(_)) => err(WRONGTYPE),
            },
            Op::HIncrBy(key, field, by) => {
                let key = k(key);
                let entry = self.db.entry(key).or_insert(Entry {
                    val: Val::Hash(HashMap::new()),
                    ttl: None,
                });
                let Val::Hash(h) = &mut entry.val else {
                    return err(WRONGTYPE);
                };
                let cur = match h.get(&f(field)) {
                    None => 0,
                    Some(x) => match as_int(x) {
                        Some(n) => n,
                        None => return err("ERR hash value is not an integer"),
                    },
                };
                match cur.checked_add(*by) {
                    Some(n) => {
                        h.insert(f(field), n.to_string().into_bytes());
                        Resp::Int(n)
                    }
                    None => err(OVERFLOW),
                }
            }
            Op::Exists(keys) => Resp::Int(
                keys.iter()
                    .filter(|key| self.db.contains_key(&k(key)))
                    .count() as i64,
            ),
            Op::Type(key) => Resp::Simple(
                match self.db.get(&k(key)).map(|e| &e.val) {
                    None => "none",
                    Some(Val::Str(_)) => "string",
                    Some(Val::Hash(_)) => "hash",
                }
                .into(),
            ),
            Op::Expire(key, t) => {
                let key = k(key);
                if !self.db.contains_key(&key) {
                    return Resp::Int(0);
                }
                if *t <= 0 {
                    self.db.remove(&key);
                } else if let Some(e) = self.db.get_mut(&key) {
                    e.ttl = Some(*t);
                }
                Resp::Int(1)
            }
            Op::Persist(key) => match self.db.get_mut(&k(key)) {
                Some(e) if e.ttl.is_some() => {
                    e.ttl = None;
                    Resp::Int(1)
                }
                _ => Resp::Int(0),
            },
            Op::Ttl(key) => match self.db.get(&k(key)) {
                None => Resp::Int(-2),
                Some(e) => Resp::Int(e.ttl.unwrap_or(-1)),
            },
            Op::Rename(a, b) => {
                let (a, b) = (k(a), k(b));
                let Some(e) = self.db.remove(&a) else {
                    return err("ERR no such key");
                };
                self.db.insert(b, e);
                ok()
            }
            Op::RenameNx(a, b) => {
                let (a, b) = (k(a), k(b));
                if !self.db.contains_key(&a) {
                    return err("ERR no such key");
                }
                if self.db.contains_key(&b) {
                    return Resp::Int(0);
                }
                let e = self.db.remove(&a).expect("checked");
                self.db.insert(b, e);
                Resp::Int(1)
            }
            Op::DbSize => Resp::Int(self.db.len() as i64),
        }
    }

    fn incr(&mut self, key: Vec<u8>, by: i64) -> Resp {
        let (cur, ttl) = match self.db.get(&key) {
            None => (0, None),
            Some(Entry {
                val: Val::Str(s),
                ttl,
            }) => match as_int(s) {
                Some(n) => (n, *ttl),
                None => return err(NOT_INT),
            },
            Some(_) => return err(WRONGTYPE),
        };
        match cur.checked_add(by) {
            Some(n) => {
                self.db.insert(
                    key,
                    Entry {
                        val: Val::Str(n.to_string().into_bytes()),
                        ttl,
                    },
                );
                Resp::Int(n)
            }
            None => err(OVERFLOW),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The properties

thread_local! {
    // One server per test (each test runs on its own thread), stopped when the test ends.
    static STRATA: RefCell<Option<(Strata, Raw)>> = const { RefCell::new(None) };
    static PAIR: RefCell<Option<(Strata, Raw, RedisServer, Raw)>> = const { RefCell::new(None) };
}

fn flush(raw: &mut Raw) {
    assert_eq!(raw.call(&[b"FLUSHALL"]), b"+OK\r\n");
}

fn show(op: &Op) -> String {
    op.args()
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn config() -> ProptestConfig {
    ProptestConfig {
        // The minimal failing sequence is printed; no regression files in the source tree.
        failure_persistence: None,
        ..ProptestConfig::with_cases(300)
    }
}

// Model-based test: random command sequences agree with a reference model.
proptest! {
    #![proptest_config(config())]
    #[test]
    fn strata_agrees_with_the_reference_model(ops in proptest::collection::vec(op(), 1..40)) {
        STRATA.with(|cell| {
            let mut cell = cell.borrow_mut();
            let (_, raw) = cell.get_or_insert_with(|| {
                let s = Strata::start();
                let r = s.raw();
                (s, r)
            });
            flush(raw);
            let mut model = Model::default();
            for (i, op) in ops.iter().enumerate() {
                let want = model.apply(op);
                let got = send(raw, op);
                prop_assert!(
                    agree(op, &want, &got),
                    "step {i}: {}\n  model:  {want:?}\n  strata: {got:?}",
                    show(op)
                );
            }
            // The whole keyspace agrees at the end, too.
            let size = send(raw, &Op::DbSize);
            prop_assert_eq!(size, Resp::Int(model.db.len() as i64));
            Ok(())
        })?;
    }
}

// Model-based test: random command sequences agree with redis-server as the oracle.
proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(200)
    })]
    #[test]
    fn strata_agrees_with_redis_server(ops in proptest::collection::vec(op(), 1..40)) {
        PAIR.with(|cell| {
            let mut cell = cell.borrow_mut();
            let (_, sraw, _, rraw) = cell.get_or_insert_with(|| {
                let s = Strata::start();
                let r = RedisServer::start();
                let sr = s.raw();
                let rr = r.raw();
                (s, sr, r, rr)
            });
            flush(sraw);
            flush(rraw);
            for (i, op) in ops.iter().enumerate() {
                let want = send(rraw, op);
                let got = send(sraw, op);
                prop_assert!(
                    agree(op, &want, &got),
                    "step {i}: {}\n  redis:  {want:?}\n  strata: {got:?}",
                    show(op)
                );
            }
            Ok(())
        })?;
    }
}
