//! String commands: GET/SET and their variants, counters, ranges, MGET/MSET.
//!
//! Values are stored as bytes; counters parse and re-format them on each use, exactly as Redis
//! treats integer-looking strings. INCRBYFLOAT prints without exponent and trims the noise of
//! binary doubles the way Redis's long-double formatting does ("0.1" + "0.2" → "0.3").

use super::args::{float, int, is, parse_f64, parse_i64};
use super::error::{
    invalid_expire, CmdError, CmdResult, NOT_INTEGER, OFFSET_RANGE, OVERFLOW, SYNTAX, TOO_BIG,
    WRONG_TYPE,
};
use super::Ctx;
use crate::cache::entry::{Entry, ValueRef};
use crate::cache::store::Slot;
use bytes::Bytes;

/// Redis's limit on a string built by APPEND/SETRANGE: proto-max-bulk-len.
fn max_string(ctx: &Ctx<'_>) -> usize {
    ctx.app.config.read().server.proto_max_bulk_len.0 as usize
}

/// The string held by a slot: Ok(None) when absent, WRONGTYPE for another type.
pub fn string_of(slot: &Slot) -> Result<Option<&[u8]>, CmdError> {
    match slot.get().map(|e| e.value()) {
        None => Ok(None),
        Some(ValueRef::Str(s)) => Ok(Some(s)),
        Some(ValueRef::Obj(_)) => Err(WRONG_TYPE),
    }
}

/// Time units of expiry options.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Millis,
}

/// Turns an EX/PX/EXAT/PXAT argument into an absolute unix-ms time, with Redis's checks.
pub fn expire_at(
    arg: &[u8],
    unit: Unit,
    absolute: bool,
    now: u64,
    cmd: &str,
) -> Result<u64, CmdError> {
    let v = int(arg)?;
    if v <= 0 || (unit == Unit::Seconds && v > i64::MAX / 1000) {
        return Err(invalid_expire(cmd));
    }
    let ms = if unit == Unit::Seconds { v * 1000 } else { v };
    let at = if absolute {
        ms
    } else {
        ms.checked_add(now as i64)
            .ok_or_else(|| invalid_expire(cmd))?
    };
    Ok(at as u64)
}

pub fn get(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let out = &mut *ctx.out;
    ctx.app.store.read(ctx.session.db, &args[1], ctx.now, |e| {
        match e.map(|e| e.value()) {
            None => {
                out.null();
                Ok(())
            }
            Some(ValueRef::Str(s)) => {
                out.bulk(s);
                Ok(())
            }
            Some(ValueRef::Obj(_)) => Err(WRONG_TYPE),
        }
    })
}

#[derive(PartialEq, Eq)]
enum Cond {
    Always,
    Nx,
    Xx,
}

enum Ttl {
    None,
    Keep,
    At(u64),
}

/// An expiry option as written (EX/PX/EXAT/PXAT and its argument), parsed once the whole
/// option list is known to be well-formed — Redis reports a syntax error before a bad number.
struct ExpireArg<'a> {
    arg: &'a [u8],
    unit: Unit,
    absolute: bool,
}

impl ExpireArg<'_> {
    fn resolve(&self, now: u64, cmd: &str) -> Result<u64, CmdError> {
        expire_at(self.arg, self.unit, self.absolute, now, cmd)
    }
}

/// Recognises EX/PX/EXAT/PXAT followed by a value.
fn expire_option<'a>(args: &'a [Bytes], i: usize) -> Option<ExpireArg<'a>> {
    let a = &args[i];
    let arg = args.get(i + 1)?;
    let (unit, absolute) = if is(a, "ex") {
        (Unit::Seconds, false)
    } else if is(a, "px") {
        (Unit::Millis, false)
    } else if is(a, "exat") {
        (Unit::Seconds, true)
    } else if is(a, "pxat") {
        (Unit::Millis, true)
    } else {
        return None;
    };
    Some(ExpireArg {
        arg,
        unit,
        absolute,
    })
}

pub fn set(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let mut cond = Cond::Always;
    let mut keep_ttl = false;
    let mut expire: Option<ExpireArg<'_>> = None;
    let mut get = false;
    let mut i = 3;
    while i < args.len() {
        let a = &args[i];
        let has_ttl = keep_ttl || expire.is_some();
        if is(a, "nx") && cond == Cond::Always {
            cond = Cond::Nx;
        } else if is(a, "xx") && cond == Cond::Always {
            cond = Cond::Xx;
        } else if is(a, "get") && !get {
            get = true;
        } else if is(a, "keepttl") && !has_ttl {
            keep_ttl = true;
        } else if let Some(e) = expire_option(args, i).filter(|_| !has_ttl) {
            expire = Some(e);
            i += 1;
        } else {
            return Err(SYNTAX);
        }
        i += 1;
    }
    let ttl = match (&expire, keep_ttl) {
        (Some(e), _) => Ttl::At(e.resolve(ctx.now, "set")?),
        (None, true) => Ttl::Keep,
        (None, false) => Ttl::None,
    };
    let key = &args[1];
    let val = &args[2];
    let out = &mut *ctx.out;
    let store = &ctx.app.store;
    store.access(ctx.session.db, key, ctx.now, |slot| {
        let old = string_of(slot);
        if get {
            // SET ... GET reads the key first, and counts as a lookup like GET.
            store.count_lookup(slot.exists());
            old.clone()?;
        }
        let exists = slot.exists();
        let ok = match cond {
            Cond::Always => true,
            Cond::Nx => !exists,
            Cond::Xx => exists,
        };
        if get {
            match old? {
                Some(v) => out.bulk(v),
                None => out.null(),
            }
        }
        if !ok {
            if !get {
                out.null();
            }
            return Ok(());
        }
        let expire = match ttl {
            Ttl::None => None,
            Ttl::Keep => slot.get().and_then(|e| e.expire_ms()),
            Ttl::At(at) => Some(at),
        };
        slot.put(Entry::new_str(key, val, expire, 0));
        if !get {
            out.ok();
        }
        Ok(())
    })
}

fn set_with(ctx: &mut Ctx<'_>, key: &[u8], val: &[u8], expire: Option<u64>) {
    ctx.app.store.access(ctx.session.db, key, ctx.now, |slot| {
        slot.put(Entry::new_str(key, val, expire, 0));
    });
}

pub fn setnx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (key, val) = (&args[1], &args[2]);
    let created = ctx.app.store.access(ctx.session.db, key, ctx.now, |slot| {
        if slot.exists() {
            false
        } else {
            slot.put(Entry::new_str(key, val, None, 0));
            true
        }
    });
    ctx.out.int(created as i64);
    Ok(())
}

pub fn setex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let at = expire_at(&args[2], Unit::Seconds, false, ctx.now, "setex")?;
    set_with(ctx, &args[1], &args[3], Some(at));
    ctx.out.ok();
    Ok(())
}

pub fn psetex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let at = expire_at(&args[2], Unit::Millis, false, ctx.now, "psetex")?;
    set_with(ctx, &args[1], &args[3], Some(at));
    ctx.out.ok();
    Ok(())
}

pub fn getset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (key, val) = (&args[1], &args[2]);
    let out = &mut *ctx.out;
    let store = &ctx.app.store;
    store.access(ctx.session.db, key, ctx.now, |slot| {
        store.count_lookup(slot.exists());
        match string_of(slot)? {
            Some(v) => out.bulk(v),
            None => out.null(),
        }
        slot.put(Entry::new_str(key, val, None, 0));
        Ok(())
    })
}

pub fn getdel(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let out = &mut *ctx.out;
    let store = &ctx.app.store;
    store.access(ctx.session.db, &args[1], ctx.now, |slot| {
        store.count_lookup(slot.exists());
        match string_of(slot)? {
            Some(v) => out.bulk(v),
            None => {
                out.null();
                return Ok(());
            }
        }
        slot.take();
        Ok(())
    })
}

pub fn getex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let mut persist = false;
    let mut expire: Option<ExpireArg<'_>> = None;
    let mut i = 2;
    while i < args.len() {
        let has = persist || expire.is_some();
        if is(&args[i], "persist") && !has {
            persist = true;
        } else if let Some(e) = expire_option(args, i).filter(|_| !has) {
            expire = Some(e);
            i += 1;
        } else {
            return Err(SYNTAX);
        }
        i += 1;
    }
    let out = &mut *ctx.out;
    let now = ctx.now;
    let store = &ctx.app.store;
    store.access(ctx.session.db, &args[1], now, |slot| {
        store.count_lookup(slot.exists());
        let Some(v) = string_of(slot)? else {
            out.null();
            return Ok(());
        };
        // As Redis: the key is looked up and type-checked before the expiry is validated.
        let at = match &expire {
            Some(e) => Some(e.resolve(now, "getex")?),
            None => None,
        };
        out.bulk(v);
        match (at, persist) {
            (Some(at), _) if at <= now => {
                slot.take();
            }
            (Some(at), _) => {
                if let Some(e) = slot.get_mut() {
                    e.set_expire(Some(at));
                }
            }
            (None, true) => {
                if let Some(e) = slot.get_mut() {
                    e.set_expire(None);
                }
            }
            (None, false) => {}
        }
        Ok(())
    })
}

pub fn mget(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    ctx.out.array(args.len() - 1);
    for key in &args[1..] {
        let out = &mut *ctx.out;
        ctx.app.store.read(ctx.session.db, key, ctx.now, |e| {
            match e.and_then(|e| e.as_str()) {
                Some(v) => out.bulk(v),
                None => out.null(),
            }
        });
    }
    Ok(())
}

fn pairs_arity(args: &[Bytes], name: &str) -> CmdResult {
    if args.len() % 2 == 0 {
        return Err(super::error::arity(name));
    }
    Ok(())
}

pub fn mset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    pairs_arity(args, "mset")?;
    for kv in args[1..].chunks(2) {
        set_with(ctx, &kv[0], &kv[1], None);
    }
    ctx.out.ok();
    Ok(())
}

pub fn msetnx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    pairs_arity(args, "msetnx")?;
    let db = ctx.session.db;
    let any = args[1..]
        .chunks(2)
        .any(|kv| ctx.app.store.exists(db, &kv[0], ctx.now));
    if !any {
        for kv in args[1..].chunks(2) {
            set_with(ctx, &kv[0], &kv[1], None);
        }
    }
    ctx.out.int(!any as i64);
    Ok(())
}

pub fn append(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (key, add) = (&args[1], &args[2]);
    let max = max_string(ctx);
    let len = ctx.app.store.access(ctx.session.db, key, ctx.now, |slot| {
        let cur = string_of(slot)?;
        let total = cur.map_or(0, |c| c.len()) + add.len();
        if total > max {
            return Err(TOO_BIG);
        }
        let mut v = Vec::with_capacity(total);
        v.extend_from_slice(cur.unwrap_or(&[]));
        v.extend_from_slice(add);
        match slot.get_mut() {
            Some(e) => e.set_str(&v),
            None => slot.put(Entry::new_str(key, &v, None, 0)),
        }
        Ok(total)
    })?;
    ctx.out.int(len as i64);
    Ok(())
}

pub fn strlen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let n = ctx.app.store.read(ctx.session.db, &args[1], ctx.now, |e| {
        match e.map(|e| e.value()) {
            None => Ok(0),
            Some(ValueRef::Str(s)) => Ok(s.len()),
            Some(ValueRef::Obj(_)) => Err(WRONG_TYPE),
        }
    })?;
    ctx.out.int(n as i64);
    Ok(())
}

/// Adds `by` to the integer at `key`, creating it at 0.
fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], by: i64) -> CmdResult {
    let v = ctx.app.store.access(ctx.session.db, key, ctx.now, |slot| {
        let cur = match string_of(slot)? {
            None => 0,
            Some(s) => parse_i64(s).ok_or(NOT_INTEGER)?,
        };
        let v = cur.checked_add(by).ok_or(OVERFLOW)?;
        let mut b = itoa::Buffer::new();
        let s = b.format(v).as_bytes();
        match slot.get_mut() {
            Some(e) => e.set_str(s),
            None => slot.put(Entry::new_str(key, s, None, 0)),
        }
        Ok(v)
    })?;
    ctx.out.int(v);
    Ok(())
}

pub fn incr(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    incr_by(ctx, &args[1], 1)
}

pub fn decr(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    incr_by(ctx, &args[1], -1)
}

pub fn incrby(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let by = int(&args[2])?;
    incr_by(ctx, &args[1], by)
}

pub fn decrby(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let by = int(&args[2])?;
    if by == i64::MIN {
        return Err(CmdError::new("ERR decrement would overflow"));
    }
    incr_by(ctx, &args[1], -by)
}

/// `cur + by` as Redis computes INCRBYFLOAT (see `float80`).
pub fn add_floats(cur: &[u8], by: &[u8]) -> Result<String, CmdError> {
    super::float80::add(cur, by)
}

pub fn incrbyfloat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let key = &args[1];
    let by = &args[2];
    let s = ctx.app.store.access(ctx.session.db, key, ctx.now, |slot| {
        let cur: &[u8] = match string_of(slot)? {
            None => b"0",
            Some(s) => {
                parse_f64(s).ok_or(super::error::NOT_FLOAT)?;
                s
            }
        };
        float(by)?;
        let s = add_floats(cur, by)?;
        match slot.get_mut() {
            Some(e) => e.set_str(s.as_bytes()),
            None => slot.put(Entry::new_str(key, s.as_bytes(), None, 0)),
        }
        Ok(s)
    })?;
    ctx.out.bulk(s.as_bytes());
    Ok(())
}

/// Redis's GETRANGE index arithmetic; None = empty result.
pub fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return None;
    }
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    if s < 0 {
        s = 0;
    }
    if e < 0 {
        e = 0;
    }
    if e >= len {
        e = len - 1;
    }
    if s > e {
        return None;
    }
    Some((s as usize, e as usize))
}

pub fn getrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let start = int(&args[2])?;
    let end = int(&args[3])?;
    let out = &mut *ctx.out;
    ctx.app.store.read(ctx.session.db, &args[1], ctx.now, |e| {
        let s = match e.map(|e| e.value()) {
            None => &[][..],
            Some(ValueRef::Str(s)) => s,
            Some(ValueRef::Obj(_)) => return Err(WRONG_TYPE),
        };
        match clamp_range(start, end, s.len()) {
            Some((a, b)) => out.bulk(&s[a..=b]),
            None => out.bulk(b""),
        }
        Ok(())
    })
}

pub fn setrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let offset = int(&args[2])?;
    if offset < 0 {
        return Err(OFFSET_RANGE);
    }
    let offset = offset as usize;
    let (key, val) = (&args[1], &args[3]);
    let max = max_string(ctx);
    let len = ctx.app.store.access(ctx.session.db, key, ctx.now, |slot| {
        let cur = string_of(slot)?;
        let cur_len = cur.map_or(0, |c| c.len());
        if val.is_empty() {
            return Ok(cur_len);
        }
        if offset.saturating_add(val.len()) > max {
            return Err(TOO_BIG);
        }
        let mut v = cur.unwrap_or(&[]).to_vec();
        if v.len() < offset + val.len() {
            v.resize(offset + val.len(), 0);
        }
        v[offset..offset + val.len()].copy_from_slice(val);
        let n = v.len();
        match slot.get_mut() {
            Some(e) => e.set_str(&v),
            None => slot.put(Entry::new_str(key, &v, None, 0)),
        }
        Ok(n)
    })?;
    ctx.out.int(len as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(clamp_range(0, 3, 10), Some((0, 3)));
        assert_eq!(clamp_range(-3, -1, 10), Some((7, 9)));
        assert_eq!(clamp_range(0, -100, 10), Some((0, 0)));
        assert_eq!(clamp_range(5, 2, 10), None);
        assert_eq!(clamp_range(-1, -5, 10), None);
        assert_eq!(clamp_range(0, 100, 10), Some((0, 9)));
    }
}
