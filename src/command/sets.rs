//! Set commands (SADD, SMEMBERS, SPOP, SINTER, SMOVE, SSCAN, ...) with Redis 7.0's replies:
//! set types in RESP3, small all-integer sets (intsets) listed in ascending order, random
//! picks with Redis's count rules.
//!
//! Multi-key commands run under the exclusive gate (the table's key positions say so), so a
//! SINTERSTORE reads its inputs and writes its destination atomically.

use super::args::{int, int_at_least, is, pop_count};
use super::error::{CmdError, CmdResult, SYNTAX};
use super::keys::member_scan;
use super::{typed, Ctx};
use crate::cache::entry::Entry;
use crate::cache::glob::glob_match;
use crate::cache::value::{Member, Object, SetValue};
use crate::server::reply::Reply;
use bytes::Bytes;
use rand::seq::IndexedRandom;
use rand::Rng;

fn write_members(out: &mut Reply, members: &[&[u8]]) {
    out.set(members.len());
    for m in members {
        out.bulk(m);
    }
}

pub fn sadd(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let n = typed::write(ctx, &args[1], |s: &mut SetValue| {
        Ok(args[2..].iter().filter(|m| s.insert(m)).count())
    })?;
    ctx.out.int(n as i64);
    Ok(())
}

pub fn srem(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let n = typed::update(ctx, &args[1], |s: &mut SetValue| {
        Ok(args[2..].iter().filter(|m| s.remove(m)).count())
    })?;
    ctx.out.int(n.unwrap_or(0) as i64);
    Ok(())
}

pub fn smembers(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    typed::read(ctx, &args[1], |s: Option<&SetValue>, out| {
        write_members(out, &s.map(|s| s.ordered()).unwrap_or_default())
    })
}

pub fn sismember(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    typed::read(ctx, &args[1], |s: Option<&SetValue>, out| {
        out.int(s.is_some_and(|s| s.contains(&args[2])) as i64)
    })
}

pub fn smismember(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    typed::read(ctx, &args[1], |s: Option<&SetValue>, out| {
        out.array(args.len() - 2);
        for m in &args[2..] {
            out.int(s.is_some_and(|s| s.contains(m)) as i64);
        }
    })
}

pub fn scard(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    typed::read(ctx, &args[1], |s: Option<&SetValue>, out| {
        out.int(s.map_or(0, |s| s.len()) as i64)
    })
}

pub fn spop(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let count = pop_count(args)?;
    let popped = typed::update(ctx, &args[1], |s: &mut SetValue| {
        if count.is_some_and(|c| c >= s.len()) {
            // The whole set, in the order Redis replies it (an intset's is ascending).
            let all: Vec<Member> = s.ordered().into_iter().map(Member::from_slice).collect();
            while let Some(_m) = s.take_index(0) {}
            return Ok(all);
        }
        let mut rng = rand::rng();
        let n = count.unwrap_or(1).min(s.len());
        Ok((0..n)
            .filter_map(|_| s.take_index(rng.random_range(0..s.len())))
            .collect::<Vec<_>>())
    })?;
    match (count, popped) {
        (None, None) => ctx.out.null(),
        (None, Some(v)) => match v.first() {
            Some(m) => ctx.out.bulk(m),
            None => ctx.out.null(),
        },
        (Some(_), v) => {
            let v = v.unwrap_or_default();
            let refs: Vec<&[u8]> = v.iter().map(|m| &m[..]).collect();
            write_members(ctx.out, &refs);
        }
    }
    Ok(())
}

pub fn srandmember(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let count = match args.len() {
        2 => None,
        3 => {
            let c = int(&args[2])?;
            if c < -(i64::MAX / 2) {
                return Err(CmdError::new("ERR value is out of range"));
            }
            if c < 0 {
                super::reply_fits(ctx, c.unsigned_abs())?;
            }
            Some(c)
        }
        _ => return Err(SYNTAX),
    };
    typed::read(ctx, &args[1], |s: Option<&SetValue>, out| {
        let mut rng = rand::rng();
        let Some(c) = count else {
            match s.filter(|s| !s.is_empty()) {
                Some(s) => out.bulk(s.get_index(rng.random_range(0..s.len())).unwrap_or(b"")),
                None => out.null(),
            }
            return;
        };
        let Some(s) = s.filter(|s| !s.is_empty()) else {
            out.array(0);
            return;
        };
        if c >= s.len() as i64 {
            // The whole set, in the order Redis replies it (an intset's is ascending).
            let all = s.ordered();
            out.array(all.len());
            for m in all {
                out.bulk(m);
            }
            return;
        }
        let picks: Vec<usize> = if c >= 0 {
            let idx: Vec<usize> = (0..s.len()).collect();
            idx.choose_multiple(&mut rng, (c as usize).min(s.len()))
                .copied()
                .collect()
        } else {
            (0..c.unsigned_abs())
                .map(|_| rng.random_range(0..s.len()))
                .collect()
        };
        out.array(picks.len());
        for i in picks {
            out.bulk(s.get_index(i).unwrap_or(b""));
        }
    })
}

/// Every member of the set at `key` (None when the key is absent).
fn members_of(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Option<Vec<Box<[u8]>>>, CmdError> {
    typed::read(ctx, key, |s: Option<&SetValue>, _| {
        s.map(|s| s.ordered().into_iter().map(Box::from).collect())
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Inter,
    Union,
    Diff,
}

/// The members of SINTER/SUNION/SDIFF over `keys`, in Redis's order.
fn combine(ctx: &mut Ctx<'_>, keys: &[Bytes], op: Op) -> Result<Vec<Box<[u8]>>, CmdError> {
    let mut sets: Vec<Option<Vec<Box<[u8]>>>> = Vec::with_capacity(keys.len());
    for k in keys {
        sets.push(members_of(ctx, k)?);
    }
    let lookup = |v: &Option<Vec<Box<[u8]>>>| -> std::collections::HashSet<Box<[u8]>> {
        v.iter().flatten().cloned().collect()
    };
    Ok(match op {
        Op::Inter => {
            if sets.iter().any(|s| s.is_none()) {
                return Ok(Vec::new());
            }
            // Walk the smallest set, as Redis does, testing membership in the others.
            let smallest = (0..sets.len())
                .min_by_key(|&i| sets[i].as_ref().map_or(0, |s| s.len()))
                .unwrap_or(0);
            let others: Vec<_> = (0..sets.len())
                .filter(|&i| i != smallest)
                .map(|i| lookup(&sets[i]))
                .collect();
            sets[smallest]
                .iter()
                .flatten()
                .filter(|m| others.iter().all(|o| o.contains(*m)))
                .cloned()
                .collect()
        }
        Op::Union => {
            let mut seen = std::collections::HashSet::new();
            let mut v = Vec::new();
            for m in sets.iter().flatten().flatten() {
                if seen.insert(m.clone()) {
                    v.push(m.clone());
                }
            }
            v
        }
        Op::Diff => {
            let rest: Vec<_> = sets[1..].iter().map(lookup).collect();
            sets[0]
                .iter()
                .flatten()
                .filter(|m| rest.iter().all(|o| !o.contains(*m)))
                .cloned()
                .collect()
        }
    })
}

fn combine_reply(ctx: &mut Ctx<'_>, keys: &[Bytes], op: Op) -> CmdResult {
    let v = combine(ctx, keys, op)?;
    let mut refs: Vec<&[u8]> = v.iter().map(|m| &m[..]).collect();
    sort_like_intset(&mut refs);
    write_members(ctx.out, &refs);
    Ok(())
}

/// A result that Redis would build as an intset comes out in ascending order.
fn sort_like_intset(v: &mut [&[u8]]) {
    let mut probe = SetValue::default();
    if v.len() <= crate::cache::value::INTSET_MAX {
        for m in v.iter() {
            probe.insert(m);
        }
        if probe.is_intset() {
            v.sort_by_key(|m| super::args::parse_i64(m).unwrap_or(0));
        }
    }
}

fn combine_store(ctx: &mut Ctx<'_>, args: &[Bytes], op: Op) -> CmdResult {
    let v = combine(ctx, &args[2..], op)?;
    let dst = &args[1];
    let mut set = SetValue::default();
    for m in &v {
        set.insert(m);
    }
    let n = set.len();
    ctx.app.store.access(ctx.session.db, dst, ctx.now, |slot| {
        if n == 0 {
            slot.take();
        } else {
            slot.put(Entry::new_obj(dst, Box::new(Object::Set(set)), None, 0));
        }
    });
    ctx.out.int(n as i64);
    Ok(())
}

pub fn sinter(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    combine_reply(ctx, &args[1..], Op::Inter)
}

pub fn sunion(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    combine_reply(ctx, &args[1..], Op::Union)
}

pub fn sdiff(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    combine_reply(ctx, &args[1..], Op::Diff)
}

pub fn sinterstore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    combine_store(ctx, args, Op::Inter)
}

pub fn sunionstore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    combine_store(ctx, args, Op::Union)
}

pub fn sdiffstore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    combine_store(ctx, args, Op::Diff)
}

pub fn sintercard(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let numkeys = int_at_least(&args[1], 1, "ERR numkeys should be greater than 0")? as usize;
    if numkeys > args.len() - 2 {
        return Err(CmdError::new(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    let mut limit = 0usize;
    let mut i = 2 + numkeys;
    while i < args.len() {
        if is(&args[i], "limit") && i + 1 < args.len() {
            limit = int_at_least(&args[i + 1], 0, "ERR LIMIT can't be negative")? as usize;
            i += 2;
        } else {
            return Err(SYNTAX);
        }
    }
    let v = combine(ctx, &args[2..2 + numkeys], Op::Inter)?;
    let n = if limit > 0 {
        v.len().min(limit)
    } else {
        v.len()
    };
    ctx.out.int(n as i64);
    Ok(())
}

pub fn smove(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (src, dst, member) = (&args[1], &args[2], &args[3]);
    // A missing source answers 0 whatever the destination holds (as Redis checks); otherwise
    // both keys must be sets (or the destination absent) before anything moves.
    let in_src = typed::read(ctx, src, |s: Option<&SetValue>, _| {
        s.map(|s| s.contains(member))
    })?;
    let Some(in_src) = in_src else {
        ctx.out.int(0);
        return Ok(());
    };
    typed::read(ctx, dst, |_: Option<&SetValue>, _| ())?;
    if src == dst || !in_src {
        ctx.out.int(in_src as i64);
        return Ok(());
    }
    typed::update(ctx, src, |s: &mut SetValue| Ok(s.remove(member)))?;
    typed::write(ctx, dst, |s: &mut SetValue| Ok(s.insert(member)))?;
    ctx.out.int(1);
    Ok(())
}

/// Sets up to this size are returned whole by one SSCAN call, as Redis does for intsets.
const SCAN_WHOLE: usize = 128;

pub fn sscan(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let Some((cursor, o)) = member_scan::<SetValue>(ctx, args)? else {
        return Ok(());
    };
    typed::read(ctx, &args[1], |s: Option<&SetValue>, out| {
        let mut items: Vec<&[u8]> = Vec::new();
        let mut next = 0u64;
        if let Some(s) = s {
            if s.len() <= SCAN_WHOLE || s.is_intset() {
                items = s.ordered();
            } else {
                let start = (cursor as usize).min(s.len());
                let end = (start + o.count).min(s.len());
                items = (start..end).filter_map(|i| s.get_index(i)).collect();
                if end < s.len() {
                    next = end as u64;
                }
            }
            items.retain(|m| o.pattern.as_ref().is_none_or(|p| glob_match(p, m, false)));
        }
        out.array(2);
        out.bulk(next.to_string().as_bytes());
        out.array(items.len());
        for m in items {
            out.bulk(m);
        }
    })
}
