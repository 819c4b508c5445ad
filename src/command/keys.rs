//! Commands on keys of any type: deletion, existence, type, expiry, iteration, renaming,
//! database-wide operations and OBJECT introspection.

use super::args::{int, is, parse_i64};
use super::error::{self, CmdError, CmdResult, DB_INDEX, NO_SUCH_KEY, SYNTAX};
use super::strings::Unit;
use super::table::{cmd, Command, LOADING, READONLY, STALE};
use super::Ctx;
use crate::cache::entry::ValueRef;
use crate::cache::glob::glob_match;
use bytes::Bytes;

pub static OBJECT: &[Command] = &[
    cmd(
        "encoding",
        3,
        READONLY,
        (2, 2, 1),
        &["keyspace", "slow"],
        "generic",
        "Returns the internal encoding of a Redis object.",
        object_encoding,
    )
    .with_tips(&["nondeterministic_output"]),
    cmd(
        "refcount",
        3,
        READONLY,
        (2, 2, 1),
        &["keyspace", "slow"],
        "generic",
        "Returns the reference count of a value of a key.",
        object_refcount,
    )
    .with_tips(&["nondeterministic_output"]),
    cmd(
        "idletime",
        3,
        READONLY,
        (2, 2, 1),
        &["keyspace", "slow"],
        "generic",
        "Returns the time since the last access to a Redis object.",
        object_idletime,
    )
    .with_tips(&["nondeterministic_output"]),
    cmd(
        "freq",
        3,
        READONLY,
        (2, 2, 1),
        &["keyspace", "slow"],
        "generic",
        "Returns the logarithmic access frequency counter of a Redis object.",
        object_freq,
    )
    .with_tips(&["nondeterministic_output"]),
    cmd(
        "help",
        2,
        LOADING | STALE,
        (0, 0, 0),
        &["keyspace", "slow"],
        "generic",
        "Returns helpful text about the different subcommands.",
        object_help,
    ),
];

pub fn del(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let mut n = 0;
    for key in &args[1..] {
        if ctx
            .app
            .store
            .access(ctx.session.db, key, ctx.now, |s| s.take().is_some())
        {
            n += 1;
        }
    }
    ctx.out.int(n);
    Ok(())
}

pub fn exists(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let n = args[1..]
        .iter()
        .filter(|k| {
            ctx.app
                .store
                .read(ctx.session.db, k, ctx.now, |e| e.is_some())
        })
        .count();
    ctx.out.int(n as i64);
    Ok(())
}

pub fn touch(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    exists(ctx, args)
}

/// The name TYPE prints for a stored value.
pub fn type_name(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Str(_) => "string",
        ValueRef::Obj(o) => o.type_name(),
    }
}

pub fn type_(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let t = ctx.app.store.read(ctx.session.db, &args[1], ctx.now, |e| {
        e.map_or("none", |e| type_name(e.value()))
    });
    ctx.out.simple(t);
    Ok(())
}

fn expire_generic(ctx: &mut Ctx<'_>, args: &[Bytes], unit: Unit, absolute: bool) -> CmdResult {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &args[3..] {
        if is(opt, "nx") {
            nx = true;
        } else if is(opt, "xx") {
            xx = true;
        } else if is(opt, "gt") {
            gt = true;
        } else if is(opt, "lt") {
            lt = true;
        } else {
            return Err(CmdError::msg(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CmdError::new(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(CmdError::new(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    // Redis validates the options before the number.
    let when = int(&args[2])?;
    let now = ctx.now as i64;
    let bad = || error::invalid_expire(&name);
    let mut at = when;
    if unit == Unit::Seconds {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return Err(bad());
        }
        at *= 1000;
    }
    if !absolute {
        at = at.checked_add(now).ok_or_else(bad)?;
    }
    let r = ctx
        .app
        .store
        .access(ctx.session.db, &args[1], ctx.now, |slot| {
            let Some(e) = slot.get() else {
                return 0;
            };
            let cur = e.expire_ms();
            let allowed = if nx {
                cur.is_none()
            } else if xx && cur.is_none() {
                false
            } else if gt {
                cur.is_some_and(|c| at > c as i64)
            } else if lt {
                cur.is_none_or(|c| at < c as i64)
            } else {
                true
            };
            if !allowed {
                return 0;
            }
            if at <= now {
                slot.take();
            } else if let Some(e) = slot.get_mut() {
                e.set_expire(Some(at as u64));
            }
            1
        });
    ctx.out.int(r);
    Ok(())
}

pub fn expire(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    expire_generic(ctx, args, Unit::Seconds, false)
}

pub fn pexpire(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    expire_generic(ctx, args, Unit::Millis, false)
}

pub fn expireat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    expire_generic(ctx, args, Unit::Seconds, true)
}

pub fn pexpireat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    expire_generic(ctx, args, Unit::Millis, true)
}

/// -2 for a missing key, -1 without expiry, else `f(expire_ms)`.
fn ttl_generic(ctx: &mut Ctx<'_>, key: &[u8], f: impl Fn(u64, u64) -> i64) -> CmdResult {
    let now = ctx.now;
    let v = ctx.app.store.read(ctx.session.db, key, now, |e| match e {
        None => -2,
        Some(e) => e.expire_ms().map_or(-1, |at| f(at, now)),
    });
    ctx.out.int(v);
    Ok(())
}

pub fn ttl(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    ttl_generic(ctx, &args[1], |at, now| ((at - now) as i64 + 500) / 1000)
}

pub fn pttl(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    ttl_generic(ctx, &args[1], |at, now| (at - now) as i64)
}

pub fn expiretime(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    ttl_generic(ctx, &args[1], |at, _| at as i64 / 1000)
}

pub fn pexpiretime(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    ttl_generic(ctx, &args[1], |at, _| at as i64)
}

pub fn persist(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let r = ctx
        .app
        .store
        .access(ctx.session.db, &args[1], ctx.now, |s| {
            if s.get().and_then(|e| e.expire_ms()).is_none() {
                return 0;
            }
            if let Some(e) = s.get_mut() {
                e.set_expire(None);
            }
            1
        });
    ctx.out.int(r);
    Ok(())
}

pub fn keys(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let keys = ctx.app.store.keys(ctx.session.db, &args[1], ctx.now);
    ctx.out.array(keys.len());
    for k in keys {
        ctx.out.bulk(&k);
    }
    Ok(())
}

/// Parses a SCAN-family cursor.
pub fn parse_cursor(arg: &[u8]) -> Result<u64, CmdError> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|s| !s.starts_with('+'))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(CmdError::new("ERR invalid cursor"))
}

/// MATCH / COUNT / (TYPE) options of the SCAN family.
pub struct ScanOpts {
    pub pattern: Option<Bytes>,
    pub count: usize,
    pub kind: Option<String>,
}

/// HSCAN, SSCAN and ZSCAN check in Redis's order: the cursor, then the key (a missing key is an
/// empty scan whatever the options say; another type is WRONGTYPE), then the options. The
/// cursor and options, or None once the empty reply is written.
pub fn member_scan<T: crate::cache::value::Typed>(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
) -> Result<Option<(u64, ScanOpts)>, CmdError> {
    let cursor = parse_cursor(&args[2])?;
    if !super::typed::read(ctx, &args[1], |v: Option<&T>, _| v.is_some())? {
        ctx.out.array(2);
        ctx.out.bulk(b"0");
        ctx.out.array(0);
        return Ok(None);
    }
    Ok(Some((cursor, scan_opts(&args[3..], false)?)))
}

pub fn scan_opts(args: &[Bytes], allow_type: bool) -> Result<ScanOpts, CmdError> {
    let mut o = ScanOpts {
        pattern: None,
        count: 10,
        kind: None,
    };
    let mut i = 0;
    while i < args.len() {
        if i + 1 >= args.len() {
            return Err(SYNTAX);
        }
        let v = &args[i + 1];
        if is(&args[i], "match") {
            o.pattern = (&v[..] != b"*").then(|| v.clone());
        } else if is(&args[i], "count") {
            let n = int(v)?;
            if n < 1 {
                return Err(SYNTAX);
            }
            o.count = n as usize;
        } else if allow_type && is(&args[i], "type") {
            o.kind = Some(String::from_utf8_lossy(v).to_ascii_lowercase());
        } else {
            return Err(SYNTAX);
        }
        i += 2;
    }
    Ok(o)
}

pub fn scan(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let cursor = parse_cursor(&args[1])?;
    let o = scan_opts(&args[2..], true)?;
    let (next, keys) = ctx
        .app
        .store
        .scan(ctx.session.db, cursor, o.count, ctx.now, |e| {
            o.pattern
                .as_ref()
                .is_none_or(|p| glob_match(p, e.key(), false))
                && o.kind.as_ref().is_none_or(|t| type_name(e.value()) == t)
        });
    ctx.out.array(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.array(keys.len());
    for k in keys {
        ctx.out.bulk(&k);
    }
    Ok(())
}

fn rename_generic(ctx: &mut Ctx<'_>, args: &[Bytes], nx: bool) -> Result<bool, CmdError> {
    let (src, dst) = (&args[1], &args[2]);
    let store = &ctx.app.store;
    let db = ctx.session.db;
    let now = ctx.now;
    if !store.exists(db, src, now) {
        return Err(NO_SUCH_KEY);
    }
    if src == dst {
        return Ok(!nx);
    }
    if nx && store.exists(db, dst, now) {
        return Ok(false);
    }
    let Some(e) = store.access(db, src, now, |s| s.take()) else {
        return Err(NO_SUCH_KEY);
    };
    let moved = e.with_key(dst);
    store.access(db, dst, now, |s| s.put(moved));
    Ok(true)
}

pub fn rename(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    rename_generic(ctx, args, false)?;
    ctx.out.ok();
    Ok(())
}

pub fn renamenx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let done = rename_generic(ctx, args, true)?;
    ctx.out.int(done as i64);
    Ok(())
}

pub fn randomkey(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    match ctx.app.store.random_key(ctx.session.db, ctx.now) {
        Some(k) => ctx.out.bulk(&k),
        None => ctx.out.null(),
    }
    Ok(())
}

pub fn dbsize(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    ctx.out.int(ctx.app.store.dbsize(ctx.session.db) as i64);
    Ok(())
}

fn flush_mode(args: &[Bytes]) -> CmdResult {
    match args.len() {
        1 => Ok(()),
        2 if is(&args[1], "async") || is(&args[1], "sync") => Ok(()),
        _ => Err(SYNTAX),
    }
}

pub fn flushdb(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    flush_mode(args)?;
    ctx.app.store.flush_db(ctx.session.db);
    ctx.out.ok();
    Ok(())
}

pub fn flushall(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    flush_mode(args)?;
    ctx.app.store.flush_all();
    ctx.out.ok();
    Ok(())
}

fn db_index(ctx: &Ctx<'_>, arg: &[u8], what: &'static str) -> Result<usize, CmdError> {
    let n = parse_i64(arg).ok_or(CmdError::new(what))?;
    if n < 0 || n as usize >= ctx.app.store.databases() {
        return Err(DB_INDEX);
    }
    Ok(n as usize)
}

pub fn swapdb(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let a = db_index(ctx, &args[1], "ERR invalid first DB index")?;
    let b = db_index(ctx, &args[2], "ERR invalid second DB index")?;
    ctx.app.store.swap_db(a, b);
    ctx.out.ok();
    Ok(())
}

pub fn move_(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let dst = db_index(ctx, &args[2], "ERR value is not an integer or out of range")?;
    let src = ctx.session.db;
    if src == dst {
        return Err(CmdError::new(
            "ERR source and destination objects are the same",
        ));
    }
    let store = &ctx.app.store;
    let key = &args[1];
    if !store.exists(src, key, ctx.now) || store.exists(dst, key, ctx.now) {
        ctx.out.int(0);
        return Ok(());
    }
    if let Some(e) = store.access(src, key, ctx.now, |s| s.take()) {
        store.access(dst, key, ctx.now, |s| s.put(e));
    }
    ctx.out.int(1);
    Ok(())
}

pub fn copy(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (src, dst) = (&args[1], &args[2]);
    let mut db = ctx.session.db;
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        if is(&args[i], "replace") {
            replace = true;
            i += 1;
        } else if is(&args[i], "db") && i + 1 < args.len() {
            db = db_index(
                ctx,
                &args[i + 1],
                "ERR value is not an integer or out of range",
            )?;
            i += 2;
        } else {
            return Err(SYNTAX);
        }
    }
    if db == ctx.session.db && src == dst {
        return Err(CmdError::new(
            "ERR source and destination objects are the same",
        ));
    }
    let store = &ctx.app.store;
    let Some(copy) = store.access(ctx.session.db, src, ctx.now, |s| {
        s.get().map(|e| e.duplicate(dst))
    }) else {
        ctx.out.int(0);
        return Ok(());
    };
    let done = store.access(db, dst, ctx.now, |s| {
        if s.exists() && !replace {
            return false;
        }
        s.put(copy);
        true
    });
    ctx.out.int(done as i64);
    Ok(())
}

fn object_encoding(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let enc = ctx
        .app
        .store
        .access(ctx.session.db, &args[2], ctx.now, |s| {
            s.get().map(|e| match e.value() {
                ValueRef::Str(v) if v.len() <= 20 && parse_i64(v).is_some() => "int",
                ValueRef::Str(v) if v.len() <= 44 => "embstr",
                ValueRef::Str(_) => "raw",
                ValueRef::Obj(o) => o.encoding(),
            })
        });
    match enc {
        Some(e) => ctx.out.bulk(e.as_bytes()),
        None => ctx.out.null(),
    }
    Ok(())
}

fn object_refcount(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    match ctx.app.store.exists(ctx.session.db, &args[2], ctx.now) {
        true => ctx.out.int(1),
        false => ctx.out.null(),
    }
    Ok(())
}

fn object_idletime(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let now = ctx.now;
    let idle = ctx.app.store.access(ctx.session.db, &args[2], now, |s| {
        s.get()
            .map(|e| (now as u32).wrapping_sub(e.lru()) as i64 / 1000)
    });
    match idle {
        Some(i) => ctx.out.int(i),
        None => ctx.out.null(),
    }
    Ok(())
}

fn object_freq(_ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    Err(CmdError::new("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."))
}

fn object_help(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    super::connection::help(
        ctx,
        "OBJECT",
        &[
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>.",
        ],
    )
}
