//! Hash commands (HSET, HGET, HGETALL, HINCRBY, HSCAN, ...), with Redis's replies: maps in
//! RESP3, flat arrays in RESP2, and the key removed when its last field goes.

use super::args::{float, int, parse_f64, parse_i64};
use super::error::{CmdError, CmdResult, HASH_NOT_FLOAT, HASH_NOT_INT, OVERFLOW};
use super::keys::member_scan;
use super::strings::add_floats;
use super::{typed, Ctx};
use crate::cache::glob::glob_match;
use crate::cache::value::HashValue;
use bytes::Bytes;
use rand::Rng;

fn read<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&HashValue>, &mut crate::server::reply::Reply) -> R,
) -> Result<R, CmdError> {
    typed::read(ctx, key, f)
}

fn write<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(&mut HashValue) -> Result<R, CmdError>,
) -> Result<R, CmdError> {
    typed::write(ctx, key, f)
}

fn pairs(args: &[Bytes], name: &str) -> CmdResult {
    if args.len() % 2 != 0 {
        return Err(super::error::arity(name));
    }
    Ok(())
}

pub fn hset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    pairs(args, "hset")?;
    let n = write(ctx, &args[1], |h| {
        Ok(args[2..]
            .chunks(2)
            .filter(|fv| h.insert(&fv[0], &fv[1]))
            .count())
    })?;
    ctx.out.int(n as i64);
    Ok(())
}

pub fn hmset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    pairs(args, "hmset")?;
    write(ctx, &args[1], |h| {
        for fv in args[2..].chunks(2) {
            h.insert(&fv[0], &fv[1]);
        }
        Ok(())
    })?;
    ctx.out.ok();
    Ok(())
}

pub fn hsetnx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let set = write(ctx, &args[1], |h| {
        if h.get(&args[2]).is_some() {
            Ok(false)
        } else {
            h.insert(&args[2], &args[3]);
            Ok(true)
        }
    })?;
    ctx.out.int(set as i64);
    Ok(())
}

pub fn hget(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    read(ctx, &args[1], |h, out| {
        match h.and_then(|h| h.get(&args[2])) {
            Some(v) => out.bulk(v),
            None => out.null(),
        }
    })
}

pub fn hmget(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    read(ctx, &args[1], |h, out| {
        out.array(args.len() - 2);
        for f in &args[2..] {
            match h.and_then(|h| h.get(f)) {
                Some(v) => out.bulk(v),
                None => out.null(),
            }
        }
    })
}

pub fn hgetall(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    read(ctx, &args[1], |h, out| match h {
        None => out.map(0),
        Some(h) => {
            out.map(h.len());
            for (k, v) in h.iter() {
                out.bulk(k);
                out.bulk(v);
            }
        }
    })
}

pub fn hkeys(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    read(ctx, &args[1], |h, out| {
        out.array(h.map_or(0, |h| h.len()));
        for (k, _) in h.into_iter().flat_map(|h| h.iter()) {
            out.bulk(k);
        }
    })
}

pub fn hvals(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    read(ctx, &args[1], |h, out| {
        out.array(h.map_or(0, |h| h.len()));
        for (_, v) in h.into_iter().flat_map(|h| h.iter()) {
            out.bulk(v);
        }
    })
}

pub fn hdel(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let n = typed::update(ctx, &args[1], |h: &mut HashValue| {
        Ok(args[2..].iter().filter(|f| h.remove(f)).count())
    })?;
    ctx.out.int(n.unwrap_or(0) as i64);
    Ok(())
}

pub fn hexists(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    read(ctx, &args[1], |h, out| {
        out.int(h.and_then(|h| h.get(&args[2])).is_some() as i64)
    })
}

pub fn hlen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    read(ctx, &args[1], |h, out| {
        out.int(h.map_or(0, |h| h.len()) as i64)
    })
}

pub fn hstrlen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    read(ctx, &args[1], |h, out| {
        out.int(h.and_then(|h| h.get(&args[2])).map_or(0, |v| v.len()) as i64)
    })
}

pub fn hincrby(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let by = int(&args[3])?;
    let v = write(ctx, &args[1], |h| {
        let cur = match h.get(&args[2]) {
            None => 0,
            Some(s) => parse_i64(s).ok_or(HASH_NOT_INT)?,
        };
        let v = cur.checked_add(by).ok_or(OVERFLOW)?;
        h.insert(&args[2], itoa::Buffer::new().format(v).as_bytes());
        Ok(v)
    })?;
    ctx.out.int(v);
    Ok(())
}

pub fn hincrbyfloat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    // Redis parses the increment before it looks at the key.
    if float(&args[3])?.is_infinite() {
        return Err(CmdError::new("ERR value is NaN or Infinity"));
    }
    let s = write(ctx, &args[1], |h| {
        let cur: Vec<u8> = match h.get(&args[2]) {
            None => b"0".to_vec(),
            Some(s) => {
                parse_f64(s).ok_or(HASH_NOT_FLOAT)?;
                s.to_vec()
            }
        };
        let s = add_floats(&cur, &args[3])?;
        h.insert(&args[2], s.as_bytes());
        Ok(s)
    })?;
    ctx.out.bulk(s.as_bytes());
    Ok(())
}

pub fn hrandfield(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (count, withvalues) = super::random_count(ctx, args, "withvalues")?;
    read(ctx, &args[1], |h, out| {
        let Some(h) = h else {
            match count {
                None => out.null(),
                Some(_) => out.array(0),
            }
            return;
        };
        let Some(c) = count else {
            let (k, _) = h
                .get_index(rand::rng().random_range(0..h.len()))
                .unwrap_or((b"", b""));
            out.bulk(k);
            return;
        };
        // A count at least the hash's size: the whole hash in its own order (a listpack's is
        // insertion order), as Redis answers it.
        let picks = super::random_picks(h.len(), c);
        if withvalues && out.resp3 {
            out.array(picks.len());
        } else {
            out.array(picks.len() * if withvalues { 2 } else { 1 });
        }
        for i in picks {
            if let Some((k, v)) = h.get_index(i) {
                if withvalues && out.resp3 {
                    out.array(2);
                }
                out.bulk(k);
                if withvalues {
                    out.bulk(v);
                }
            }
        }
    })
}

pub fn hscan(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let Some((cursor, o)) = member_scan::<HashValue>(ctx, args)? else {
        return Ok(());
    };
    read(ctx, &args[1], |h, out| {
        let mut items: Vec<(&[u8], &[u8])> = Vec::new();
        let mut next = 0u64;
        if let Some(h) = h {
            // A listpack hash is returned whole by one call, as Redis does.
            let (start, end) = if h.is_listpack() {
                (0, h.len())
            } else {
                let s = (cursor as usize).min(h.len());
                (s, (s + o.count).min(h.len()))
            };
            for i in start..end {
                if let Some((k, v)) = h.get_index(i) {
                    if o.pattern.as_ref().is_none_or(|p| glob_match(p, k, false)) {
                        items.push((k, v));
                    }
                }
            }
            if end < h.len() {
                next = end as u64;
            }
        }
        out.array(2);
        out.bulk(next.to_string().as_bytes());
        out.array(items.len() * 2);
        for (k, v) in items {
            out.bulk(k);
            out.bulk(v);
        }
    })
}
