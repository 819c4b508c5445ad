//! List commands (LPUSH/RPUSH, LPOP/RPOP with count, LMPOP, LRANGE, LINDEX, LSET, LINSERT,
//! LREM, LTRIM, LPOS, LMOVE, RPOPLPUSH) with Redis's index arithmetic and error texts.
//!
//! The blocking variants (BLPOP, BRPOP, BLMPOP, BLMOVE, BRPOPLPUSH; the sorted sets' BZPOP*
//! use the same two helpers) try at once and, with nothing to pop, leave a `Block` on the
//! session: the connection waits on the keys (`server::blocking`, in the order clients
//! blocked) and runs the command again when one of them is written, or answers nil at the
//! timeout. Inside MULTI or a script they answer at once, as in Redis.

use super::args::{index_range, int, is, pop_count};
use super::error::{CmdError, CmdResult, NO_SUCH_KEY, SYNTAX};
use super::{typed, Ctx};
use crate::cache::value::ListValue;
use bytes::Bytes;

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Left,
    Right,
}

fn end_of(arg: &[u8]) -> Result<End, CmdError> {
    if is(arg, "left") {
        Ok(End::Left)
    } else if is(arg, "right") {
        Ok(End::Right)
    } else {
        Err(SYNTAX)
    }
}

fn push(ctx: &mut Ctx<'_>, args: &[Bytes], end: End, only_existing: bool) -> CmdResult {
    let add = |l: &mut ListValue| {
        for v in &args[2..] {
            match end {
                End::Left => l.push_front(v),
                End::Right => l.push_back(v),
            }
        }
        Ok(l.len())
    };
    let len = if only_existing {
        typed::update(ctx, &args[1], add)?.unwrap_or(0)
    } else {
        typed::write(ctx, &args[1], add)?
    };
    ctx.out.int(len as i64);
    Ok(())
}

pub fn lpush(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    push(ctx, args, End::Left, false)
}

pub fn rpush(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    push(ctx, args, End::Right, false)
}

pub fn lpushx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    push(ctx, args, End::Left, true)
}

pub fn rpushx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    push(ctx, args, End::Right, true)
}

/// Up to `n` elements off one end of a list, in the order they come off.
fn pop_n(l: &mut ListValue, end: End, n: usize) -> Vec<Box<[u8]>> {
    let n = n.min(l.len());
    (0..n)
        .filter_map(|_| match end {
            End::Left => l.pop_front(),
            End::Right => l.pop_back(),
        })
        .collect()
}

fn pop(ctx: &mut Ctx<'_>, args: &[Bytes], end: End) -> CmdResult {
    let count = pop_count(args)?;
    let popped = typed::update(ctx, &args[1], |l: &mut ListValue| {
        Ok(pop_n(l, end, count.unwrap_or(1)))
    })?;
    let out = &mut *ctx.out;
    match (count, popped) {
        (None, Some(v)) if !v.is_empty() => out.bulk(&v[0]),
        (None, _) => out.null(),
        (Some(_), None) => out.null_array(),
        (Some(_), Some(v)) => {
            out.array(v.len());
            for x in v {
                out.bulk(&x);
            }
        }
    }
    Ok(())
}

pub fn lpop(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    pop(ctx, args, End::Left)
}

pub fn rpop(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    pop(ctx, args, End::Right)
}

pub fn llen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    typed::read(ctx, &args[1], |l: Option<&ListValue>, out| {
        out.int(l.map_or(0, |l| l.len()) as i64)
    })
}

/// A possibly negative index into a list of `len` elements.
fn index(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

pub fn lrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (start, end) = (int(&args[2])?, int(&args[3])?);
    typed::read(ctx, &args[1], |l: Option<&ListValue>, out| {
        match l.and_then(|l| index_range(start, end, l.len()).map(|r| (l, r))) {
            None => out.array(0),
            Some((l, (s, e))) => {
                out.array(e - s + 1);
                for v in l.iter().skip(s).take(e - s + 1) {
                    out.bulk(v);
                }
            }
        }
    })
}

// LINDEX and LSET look the key up before they read the index, as Redis does: a missing key or
// one of another type answers first.
pub fn lindex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    typed::read(ctx, &args[1], |l: Option<&ListValue>, out| {
        let Some(l) = l else {
            out.null();
            return Ok(());
        };
        match index(int(&args[2])?, l.len()).and_then(|i| l.get(i)) {
            Some(v) => out.bulk(v),
            None => out.null(),
        }
        Ok(())
    })?
}

pub fn lset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let done = typed::update(ctx, &args[1], |l: &mut ListValue| {
        let at = index(int(&args[2])?, l.len()).ok_or(CmdError::new("ERR index out of range"))?;
        l.set(at, &args[3]);
        Ok(())
    })?;
    done.ok_or(NO_SUCH_KEY)?;
    ctx.out.ok();
    Ok(())
}

pub fn linsert(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let after = if is(&args[2], "after") {
        true
    } else if is(&args[2], "before") {
        false
    } else {
        return Err(SYNTAX);
    };
    let (pivot, value) = (&args[3], &args[4]);
    let r = typed::update(ctx, &args[1], |l: &mut ListValue| {
        let at = l.iter().position(|v| v == &pivot[..]);
        Ok(match at {
            Some(p) => {
                l.insert(if after { p + 1 } else { p }, value);
                l.len() as i64
            }
            None => -1,
        })
    })?;
    ctx.out.int(r.unwrap_or(0));
    Ok(())
}

pub fn lrem(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let count = int(&args[2])?;
    let target = &args[3];
    let removed = typed::update(ctx, &args[1], |l: &mut ListValue| {
        let limit = if count == 0 {
            usize::MAX
        } else {
            count.unsigned_abs() as usize
        };
        let mut hits: Vec<usize> = l
            .iter()
            .enumerate()
            .filter(|(_, v)| *v == &target[..])
            .map(|(i, _)| i)
            .collect();
        if count < 0 {
            hits.reverse();
        }
        hits.truncate(limit);
        hits.sort_unstable_by(|a, b| b.cmp(a));
        for &i in &hits {
            l.remove(i);
        }
        Ok(hits.len())
    })?;
    ctx.out.int(removed.unwrap_or(0) as i64);
    Ok(())
}

pub fn ltrim(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (start, end) = (int(&args[2])?, int(&args[3])?);
    typed::update(ctx, &args[1], |l: &mut ListValue| {
        let r = index_range(start, end, l.len());
        l.retain_range(r);
        Ok(())
    })?;
    ctx.out.ok();
    Ok(())
}

pub fn lpos(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let mut rank: i64 = 1;
    let mut count: Option<usize> = None;
    let mut maxlen: usize = 0;
    let mut i = 3;
    while i < args.len() {
        let Some(v) = args.get(i + 1) else {
            return Err(SYNTAX);
        };
        if is(&args[i], "rank") {
            rank = int(v)?;
            if rank == 0 || rank == i64::MIN {
                return Err(CmdError::new("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list"));
            }
        } else if is(&args[i], "count") {
            let c = int(v)?;
            if c < 0 {
                return Err(CmdError::new("ERR COUNT can't be negative"));
            }
            count = Some(c as usize);
        } else if is(&args[i], "maxlen") {
            let m = int(v)?;
            if m < 0 {
                return Err(CmdError::new("ERR MAXLEN can't be negative"));
            }
            maxlen = m as usize;
        } else {
            return Err(SYNTAX);
        }
        i += 2;
    }
    let target = &args[2];
    typed::read(ctx, &args[1], |l: Option<&ListValue>, out| {
        let mut found = Vec::new();
        if let Some(l) = l {
            let want = match count {
                Some(0) => usize::MAX,
                Some(c) => c,
                None => 1,
            };
            let scan = if maxlen == 0 {
                l.len()
            } else {
                maxlen.min(l.len())
            };
            let mut skip = rank.unsigned_abs() - 1;
            let positions: Box<dyn Iterator<Item = (usize, &[u8])>> = if rank > 0 {
                Box::new(l.iter().enumerate().take(scan))
            } else {
                Box::new(l.iter().enumerate().rev().take(scan))
            };
            for (p, v) in positions {
                if v == &target[..] {
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    found.push(p);
                    if found.len() >= want {
                        break;
                    }
                }
            }
        }
        match count {
            None => match found.first() {
                Some(&p) => out.int(p as i64),
                None => out.null(),
            },
            Some(_) => {
                out.array(found.len());
                for p in found {
                    out.int(p as i64);
                }
            }
        }
    })
}

fn lmove_generic(ctx: &mut Ctx<'_>, src: &[u8], dst: &[u8], from: End, to: End) -> CmdResult {
    // As Redis checks: a missing source answers nil whatever the destination holds; otherwise
    // both must be lists (the destination may be absent) before anything moves.
    let has = typed::read(ctx, src, |l: Option<&ListValue>, _| {
        l.is_some_and(|l| !l.is_empty())
    })?;
    if !has {
        ctx.out.null();
        return Ok(());
    }
    typed::read(ctx, dst, |_: Option<&ListValue>, _| ())?;
    let moved = typed::update(ctx, src, |l: &mut ListValue| {
        Ok(match from {
            End::Left => l.pop_front(),
            End::Right => l.pop_back(),
        })
    })?
    .flatten();
    let Some(v) = moved else {
        ctx.out.null();
        return Ok(());
    };
    typed::write(ctx, dst, |l: &mut ListValue| {
        match to {
            End::Left => l.push_front(&v),
            End::Right => l.push_back(&v),
        }
        Ok(())
    })?;
    ctx.out.bulk(&v);
    Ok(())
}

pub fn lmove(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let from = end_of(&args[3])?;
    let to = end_of(&args[4])?;
    lmove_generic(ctx, &args[1], &args[2], from, to)
}

pub fn rpoplpush(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    lmove_generic(ctx, &args[1], &args[2], End::Right, End::Left)
}

/// The timeout of a blocking command: seconds, fractions allowed; 0 waits forever.
pub(super) fn block_timeout(arg: &[u8]) -> Result<Option<std::time::Duration>, CmdError> {
    let secs = super::args::parse_f64(arg)
        .filter(|v| v.is_finite())
        .ok_or(CmdError::new("ERR timeout is not a float or out of range"))?;
    if secs < 0.0 {
        return Err(CmdError::new("ERR timeout is negative"));
    }
    Ok((secs > 0.0).then(|| std::time::Duration::from_secs_f64(secs.min(1e9))))
}

/// Nothing to serve yet: inside MULTI or a script a blocking command answers at once (as
/// Redis does); otherwise the connection waits on `keys` and runs the command again.
pub(super) fn block_on(ctx: &mut Ctx<'_>, keys: &[Bytes], timeout: Option<std::time::Duration>) {
    if ctx.in_exec || ctx.in_script {
        ctx.out.null_array();
        return;
    }
    ctx.session.block = Some(crate::server::session::Block {
        keys: keys.to_vec(),
        deadline: timeout.map(|t| std::time::Instant::now() + t),
    });
}

fn bpop(ctx: &mut Ctx<'_>, args: &[Bytes], end: End) -> CmdResult {
    let timeout = block_timeout(&args[args.len() - 1])?;
    let keys = &args[1..args.len() - 1];
    for key in keys {
        let popped = typed::update(ctx, key, |l: &mut ListValue| {
            Ok(match end {
                End::Left => l.pop_front(),
                End::Right => l.pop_back(),
            })
        })?
        .flatten();
        if let Some(v) = popped {
            ctx.out.array(2);
            ctx.out.bulk(key);
            ctx.out.bulk(&v);
            return Ok(());
        }
    }
    block_on(ctx, keys, timeout);
    Ok(())
}

pub fn blpop(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    bpop(ctx, args, End::Left)
}

pub fn brpop(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    bpop(ctx, args, End::Right)
}

fn bmove(ctx: &mut Ctx<'_>, src: &Bytes, dst: &[u8], from: End, to: End, t: &[u8]) -> CmdResult {
    let timeout = block_timeout(t)?;
    let has = typed::read(ctx, src, |l: Option<&ListValue>, _| {
        l.is_some_and(|l| !l.is_empty())
    })?;
    if has {
        return lmove_generic(ctx, src, dst, from, to);
    }
    block_on(ctx, std::slice::from_ref(src), timeout);
    Ok(())
}

pub fn blmove(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let from = end_of(&args[3])?;
    let to = end_of(&args[4])?;
    bmove(ctx, &args[1], &args[2], from, to, &args[5])
}

pub fn brpoplpush(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    bmove(ctx, &args[1], &args[2], End::Right, End::Left, &args[3])
}

/// LMPOP's and BLMPOP's pop: up to `count` elements from the first of `keys` that holds a
/// list, replied as `[key, [elements]]`; false (nothing written) when every list is empty.
fn mpop(ctx: &mut Ctx<'_>, keys: &[Bytes], end: End, count: usize) -> Result<bool, CmdError> {
    for key in keys {
        let popped = typed::update(ctx, key, |l: &mut ListValue| Ok(pop_n(l, end, count)))?;
        if let Some(v) = popped.filter(|v| !v.is_empty()) {
            let out = &mut *ctx.out;
            out.array(2);
            out.bulk(key);
            out.array(v.len());
            for x in v {
                out.bulk(&x);
            }
            return Ok(true);
        }
    }
    Ok(false)
}

/// LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count].
pub fn lmpop(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (keys, left, count) = super::args::mpop_args(args, 1, ["left", "right"])?;
    let end = if left { End::Left } else { End::Right };
    if !mpop(ctx, keys, end, count)? {
        ctx.out.null_array();
    }
    Ok(())
}

/// BLMPOP timeout numkeys key [key ...] LEFT|RIGHT [COUNT count].
pub fn blmpop(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (keys, left, count) = super::args::mpop_args(args, 2, ["left", "right"])?;
    let timeout = block_timeout(&args[1])?;
    let end = if left { End::Left } else { End::Right };
    if !mpop(ctx, keys, end, count)? {
        block_on(ctx, keys, timeout);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::index;
    use crate::command::args::index_range as range;

    #[test]
    fn redis_index_arithmetic() {
        assert_eq!(range(0, -1, 3), Some((0, 2)));
        assert_eq!(range(-100, 100, 3), Some((0, 2)));
        assert_eq!(range(5, 10, 3), None);
        assert_eq!(range(2, 1, 3), None);
        assert_eq!(range(0, 0, 0), None);
        assert_eq!(index(-1, 3), Some(2));
        assert_eq!(index(3, 3), None);
        assert_eq!(index(-4, 3), None);
    }
}
