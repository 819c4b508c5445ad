//! Sorted-set commands (ZADD with NX/XX/GT/LT/CH/INCR, ZRANGE in all its forms and
//! ZRANGESTORE, ranks, score and lex ranges, pops (ZPOPMIN/ZPOPMAX, ZMPOP, and the blocking
//! BZPOPMIN/BZPOPMAX/BZMPOP), removals by range, ZUNION/ZINTER/ZDIFF and their STORE forms,
//! ZINTERCARD, ZRANDMEMBER, ZSCAN) with Redis 7.0's argument rules, error
//! texts and score formatting (`%.17g`, `inf`).
//!
//! Ranges are turned into rank intervals on the set's order-statistic index
//! (`cache::ranktree`), so every range costs O(log n) plus the elements it returns.

use super::args::{index_range, int, is, parse_f64};
use super::error::{CmdError, CmdResult, SYNTAX, WRONG_TYPE};
use super::keys::member_scan;
use super::{typed, Ctx};
use crate::cache::entry::{Entry, ValueRef};
use crate::cache::glob::glob_match;
use crate::cache::value::{Member, Object, ZSetValue};
use crate::server::reply::Reply;
use bytes::Bytes;
use smallvec::SmallVec;

const NOT_FLOAT: CmdError = CmdError::new("ERR value is not a valid float");
const MINMAX_FLOAT: CmdError = CmdError::new("ERR min or max is not a float");
const MINMAX_LEX: CmdError = CmdError::new("ERR min or max not valid string range item");

fn score(arg: &[u8]) -> Result<f64, CmdError> {
    parse_f64(arg).ok_or(NOT_FLOAT)
}

/// One end of a score range: the value and whether it is exclusive (`(1.5`).
fn score_bound(arg: &[u8]) -> Result<(f64, bool), CmdError> {
    match arg.first() {
        Some(b'(') => parse_f64(&arg[1..]).map(|v| (v, true)).ok_or(MINMAX_FLOAT),
        _ => parse_f64(arg).map(|v| (v, false)).ok_or(MINMAX_FLOAT),
    }
}

#[derive(Clone)]
enum Lex {
    Min,
    Max,
    Incl(Bytes),
    Excl(Bytes),
}

fn lex_bound(arg: &Bytes) -> Result<Lex, CmdError> {
    match arg.first() {
        Some(b'-') if arg.len() == 1 => Ok(Lex::Min),
        Some(b'+') if arg.len() == 1 => Ok(Lex::Max),
        Some(b'[') => Ok(Lex::Incl(arg.slice(1..))),
        Some(b'(') => Ok(Lex::Excl(arg.slice(1..))),
        _ => Err(MINMAX_LEX),
    }
}

/// A range of the order, as the predicates "before the start" and "not after the end".
enum Span {
    Score { min: (f64, bool), max: (f64, bool) },
    Lex { min: Lex, max: Lex },
}

impl Span {
    /// The span between two arguments: scores (`1`, `(1.5`, `-inf`) or lex items (`[a`, `-`).
    fn parse(lex: bool, min: &Bytes, max: &Bytes) -> Result<Span, CmdError> {
        Ok(if lex {
            Span::Lex {
                min: lex_bound(min)?,
                max: lex_bound(max)?,
            }
        } else {
            Span::Score {
                min: score_bound(min)?,
                max: score_bound(max)?,
            }
        })
    }

    /// Rank interval [lo, hi) of the elements inside the span.
    fn ranks(&self, z: &ZSetValue) -> (usize, usize) {
        let (lo, hi) = match self {
            Span::Score { min, max } => (
                z.count_while(|(s, _)| s < min.0 || (min.1 && s <= min.0)),
                z.count_while(|(s, _)| s < max.0 || (!max.1 && s <= max.0)),
            ),
            Span::Lex { min, max } => (
                z.count_while(|(_, m)| match min {
                    Lex::Min => false,
                    Lex::Max => true,
                    Lex::Incl(x) => m < &x[..],
                    Lex::Excl(x) => m <= &x[..],
                }),
                z.count_while(|(_, m)| match max {
                    Lex::Min => false,
                    Lex::Max => true,
                    Lex::Incl(x) => m <= &x[..],
                    Lex::Excl(x) => m < &x[..],
                }),
            ),
        };
        (lo, hi.max(lo))
    }
}

fn write_elements(out: &mut Reply, elems: &[(f64, impl AsRef<[u8]>)], withscores: bool) {
    if withscores && out.resp3 {
        out.array(elems.len());
        for (s, m) in elems {
            out.array(2);
            out.bulk(m.as_ref());
            out.double(*s);
        }
        return;
    }
    out.array(elems.len() * if withscores { 2 } else { 1 });
    for (s, m) in elems {
        out.bulk(m.as_ref());
        if withscores {
            out.double(*s);
        }
    }
}

// ZADD and friends

pub fn zadd(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < args.len() {
        let a = &args[i];
        if is(a, "nx") {
            nx = true;
        } else if is(a, "xx") {
            xx = true;
        } else if is(a, "gt") {
            gt = true;
        } else if is(a, "lt") {
            lt = true;
        } else if is(a, "ch") {
            ch = true;
        } else if is(a, "incr") {
            incr = true;
        } else {
            break;
        }
        i += 1;
    }
    let pairs = &args[i..];
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return Err(SYNTAX);
    }
    if nx && xx {
        return Err(CmdError::new(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return Err(CmdError::new(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if incr && pairs.len() > 2 {
        return Err(CmdError::new(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    let scores: Vec<f64> = pairs
        .chunks(2)
        .map(|p| score(&p[0]))
        .collect::<Result<_, _>>()?;
    let key = &args[1];
    let opts = ZaddOpts {
        nx,
        xx,
        gt,
        lt,
        incr,
    };
    let outcome = ctx.app.store.access(ctx.session.db, key, ctx.now, |slot| {
        let exists = typed::in_slot::<ZSetValue>(slot)?.is_some();
        if xx && !exists {
            return Ok((0, 0, None));
        }
        typed::write_slot(slot, key, |z: &mut ZSetValue| {
            let (mut added, mut changed, mut last) = (0, 0, None);
            for (p, &s) in pairs.chunks(2).zip(&scores) {
                match zadd_one(z, &p[1], s, &opts)? {
                    Added::New(v) => {
                        added += 1;
                        last = Some(v);
                    }
                    Added::Changed(v) => {
                        changed += 1;
                        last = Some(v);
                    }
                    Added::Same(v) => last = Some(v),
                    Added::Skipped => last = None,
                }
            }
            Ok((added, changed, last))
        })
    })?;
    let (added, changed, last) = outcome;
    if incr {
        match last {
            Some(v) => ctx.out.double(v),
            None => ctx.out.null(),
        }
    } else {
        ctx.out.int(added + if ch { changed } else { 0 });
    }
    Ok(())
}

struct ZaddOpts {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    incr: bool,
}

enum Added {
    New(f64),
    Changed(f64),
    Same(f64),
    Skipped,
}

fn zadd_one(z: &mut ZSetValue, member: &[u8], s: f64, o: &ZaddOpts) -> Result<Added, CmdError> {
    match z.score(member) {
        Some(cur) => {
            if o.nx {
                return Ok(Added::Skipped);
            }
            let new = if o.incr { cur + s } else { s };
            if new.is_nan() {
                return Err(CmdError::new("ERR resulting score is not a number (NaN)"));
            }
            if (o.gt && new <= cur) || (o.lt && new >= cur) {
                return Ok(Added::Skipped);
            }
            if new == cur {
                return Ok(Added::Same(cur));
            }
            z.insert(member, new);
            Ok(Added::Changed(new))
        }
        None => {
            if o.xx {
                return Ok(Added::Skipped);
            }
            z.insert(member, s);
            Ok(Added::New(s))
        }
    }
}

pub fn zincrby(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let by = score(&args[2])?;
    let member = &args[3];
    let opts = ZaddOpts {
        nx: false,
        xx: false,
        gt: false,
        lt: false,
        incr: true,
    };
    let v = typed::write(ctx, &args[1], |z: &mut ZSetValue| {
        match zadd_one(z, member, by, &opts)? {
            Added::New(v) | Added::Changed(v) | Added::Same(v) => Ok(v),
            Added::Skipped => Ok(f64::NAN),
        }
    })?;
    ctx.out.double(v);
    Ok(())
}

pub fn zrem(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let n = typed::update(ctx, &args[1], |z: &mut ZSetValue| {
        Ok(args[2..].iter().filter(|m| z.remove(m).is_some()).count())
    })?;
    ctx.out.int(n.unwrap_or(0) as i64);
    Ok(())
}

pub fn zcard(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    typed::read(ctx, &args[1], |z: Option<&ZSetValue>, out| {
        out.int(z.map_or(0, |z| z.len()) as i64)
    })
}

pub fn zscore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    typed::read(ctx, &args[1], |z: Option<&ZSetValue>, out| {
        match z.and_then(|z| z.score(&args[2])) {
            Some(s) => out.double(s),
            None => out.null(),
        }
    })
}

pub fn zmscore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    typed::read(ctx, &args[1], |z: Option<&ZSetValue>, out| {
        out.array(args.len() - 2);
        for m in &args[2..] {
            match z.and_then(|z| z.score(m)) {
                Some(s) => out.double(s),
                None => out.null(),
            }
        }
    })
}

fn rank_generic(ctx: &mut Ctx<'_>, args: &[Bytes], rev: bool) -> CmdResult {
    typed::read(ctx, &args[1], |z: Option<&ZSetValue>, out| {
        match z.and_then(|z| z.rank(&args[2]).map(|r| (r, z.len()))) {
            Some((r, len)) => out.int(if rev { len - 1 - r } else { r } as i64),
            None => out.null(),
        }
    })
}

pub fn zrank(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    rank_generic(ctx, args, false)
}

pub fn zrevrank(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    rank_generic(ctx, args, true)
}

pub fn zcount(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let span = Span::parse(false, &args[2], &args[3])?;
    typed::read(ctx, &args[1], |z: Option<&ZSetValue>, out| {
        let n = z.map_or(0, |z| {
            let (lo, hi) = span.ranks(z);
            hi - lo
        });
        out.int(n as i64)
    })
}

pub fn zlexcount(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let span = Span::parse(true, &args[2], &args[3])?;
    typed::read(ctx, &args[1], |z: Option<&ZSetValue>, out| {
        let n = z.map_or(0, |z| {
            let (lo, hi) = span.ranks(z);
            hi - lo
        });
        out.int(n as i64)
    })
}

// ZRANGE family

enum By {
    Index(i64, i64),
    Span(Span),
}

struct RangeReq {
    by: By,
    rev: bool,
    limit: Option<(i64, i64)>,
    withscores: bool,
}

/// The elements a range request selects, in reply order.
fn select(z: &ZSetValue, r: &RangeReq) -> Vec<(f64, Vec<u8>)> {
    let len = z.len();
    let (lo, hi) = match &r.by {
        By::Index(a, b) => {
            let Some((s, e)) = index_range(*a, *b, len) else {
                return Vec::new();
            };
            if r.rev {
                (len - 1 - e, len - s)
            } else {
                (s, e + 1)
            }
        }
        By::Span(span) => span.ranks(z),
    };
    let mut ranks: Box<dyn Iterator<Item = usize>> = if r.rev {
        Box::new((lo..hi).rev())
    } else {
        Box::new(lo..hi)
    };
    if let Some((offset, count)) = r.limit {
        if offset < 0 {
            return Vec::new();
        }
        ranks = Box::new(ranks.skip(offset as usize));
        if count >= 0 {
            ranks = Box::new(ranks.take(count as usize));
        }
    }
    ranks
        .filter_map(|i| z.at(i).map(|(s, m)| (s, m.to_vec())))
        .collect()
}

fn range_reply(ctx: &mut Ctx<'_>, key: &[u8], req: RangeReq) -> CmdResult {
    typed::read(ctx, key, |z: Option<&ZSetValue>, out| {
        let elems = z.map(|z| select(z, &req)).unwrap_or_default();
        write_elements(out, &elems, req.withscores);
    })
}

/// Parses `[WITHSCORES] [LIMIT offset count]` in any order (`allow_scores` false for BYLEX).
fn range_options(
    opts: &[Bytes],
    allow_scores: bool,
) -> Result<(bool, Option<(i64, i64)>), CmdError> {
    let (mut withscores, mut limit) = (false, None);
    let mut i = 0;
    while i < opts.len() {
        if allow_scores && is(&opts[i], "withscores") {
            withscores = true;
            i += 1;
        } else if is(&opts[i], "limit") && i + 2 < opts.len() {
            limit = Some((int(&opts[i + 1])?, int(&opts[i + 2])?));
            i += 3;
        } else {
            return Err(SYNTAX);
        }
    }
    Ok((withscores, limit))
}

/// ZRANGE's and ZRANGESTORE's `min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]
/// [WITHSCORES]`, `min` at `args[at]` (no WITHSCORES when storing), checked in Redis's order:
/// the options (each of BYSCORE/BYLEX and REV at most once), their conflicts, the range.
fn range_request(args: &[Bytes], at: usize, store: bool) -> Result<RangeReq, CmdError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Rank,
        Score,
        Lex,
    }
    let (mut kind, mut rev, mut withscores, mut limit) = (None, false, false, None);
    let mut i = at + 2;
    while i < args.len() {
        let a = &args[i];
        if !store && is(a, "withscores") {
            withscores = true;
        } else if is(a, "limit") && i + 2 < args.len() {
            limit = Some((int(&args[i + 1])?, int(&args[i + 2])?));
            i += 2;
        } else if !rev && is(a, "rev") {
            rev = true;
        } else if kind.is_none() && is(a, "bylex") {
            kind = Some(Kind::Lex);
        } else if kind.is_none() && is(a, "byscore") {
            kind = Some(Kind::Score);
        } else {
            return Err(SYNTAX);
        }
        i += 1;
    }
    let kind = kind.unwrap_or(Kind::Rank);
    // A count of -1 is Redis's "no LIMIT given".
    if kind == Kind::Rank && limit.is_some_and(|(_, count)| count != -1) {
        return Err(CmdError::new(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if withscores && kind == Kind::Lex {
        return Err(CmdError::new(
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    // With REV a score or lex range is given from the high end: `max min`.
    let (a, b) = if rev && kind != Kind::Rank {
        (&args[at + 1], &args[at])
    } else {
        (&args[at], &args[at + 1])
    };
    let (by, limit) = match kind {
        Kind::Rank => (By::Index(int(a)?, int(b)?), None),
        Kind::Score => (By::Span(Span::parse(false, a, b)?), limit),
        Kind::Lex => (By::Span(Span::parse(true, a, b)?), limit),
    };
    Ok(RangeReq {
        by,
        rev,
        limit,
        withscores,
    })
}

pub fn zrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let req = range_request(args, 2, false)?;
    range_reply(ctx, &args[1], req)
}

/// ZRANGESTORE dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]: the range stored
/// as a sorted set (an empty one deletes `dst`); the number of members stored.
pub fn zrangestore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let req = range_request(args, 3, true)?;
    let elems = typed::read(ctx, &args[2], |z: Option<&ZSetValue>, _| {
        z.map(|z| select(z, &req)).unwrap_or_default()
    })?;
    let n = store_zset(ctx, &args[1], elems.iter().map(|(s, m)| (*s, m.as_slice())));
    ctx.out.int(n as i64);
    Ok(())
}

/// ZRANDMEMBER key [count [WITHSCORES]].
pub fn zrandmember(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (count, withscores) = super::random_count(ctx, args, "withscores")?;
    typed::read(ctx, &args[1], |z: Option<&ZSetValue>, out| {
        let Some(z) = z else {
            match count {
                None => out.null(),
                Some(_) => out.array(0),
            }
            return;
        };
        let len = z.len();
        // Positions counted from the highest rank: a count at least the set's size gives the
        // whole set from the highest score down, as Redis 7.0 answers it.
        let picks = super::random_picks(len, count.unwrap_or(1));
        let elems: Vec<(f64, &[u8])> = picks
            .into_iter()
            .filter_map(|p| z.at(len - 1 - p))
            .collect();
        match (count, elems.first()) {
            (None, Some((_, m))) => out.bulk(m),
            (None, None) => out.null(),
            (Some(_), _) => write_elements(out, &elems, withscores),
        }
    })
}

pub fn zrevrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let withscores = match args.len() {
        4 => false,
        5 if is(&args[4], "withscores") => true,
        _ => return Err(SYNTAX),
    };
    let by = By::Index(int(&args[2])?, int(&args[3])?);
    range_reply(
        ctx,
        &args[1],
        RangeReq {
            by,
            rev: true,
            limit: None,
            withscores,
        },
    )
}

/// ZRANGEBYSCORE / ZREVRANGEBYSCORE / ZRANGEBYLEX / ZREVRANGEBYLEX: `key min max [options]`,
/// with `max min` for the REV forms; WITHSCORES only for scores.
fn by_span(ctx: &mut Ctx<'_>, args: &[Bytes], rev: bool, lex: bool) -> CmdResult {
    let (a, b) = if rev {
        (&args[3], &args[2])
    } else {
        (&args[2], &args[3])
    };
    // Options first, then the range (the order of Redis's errors).
    let (withscores, limit) = range_options(&args[4..], !lex)?;
    let span = Span::parse(lex, a, b)?;
    range_reply(
        ctx,
        &args[1],
        RangeReq {
            by: By::Span(span),
            rev,
            limit,
            withscores,
        },
    )
}

pub fn zrangebyscore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    by_span(ctx, args, false, false)
}

pub fn zrevrangebyscore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    by_span(ctx, args, true, false)
}

pub fn zrangebylex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    by_span(ctx, args, false, true)
}

pub fn zrevrangebylex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    by_span(ctx, args, true, true)
}

// Removal by range

fn remove_span(ctx: &mut Ctx<'_>, key: &[u8], by: By) -> CmdResult {
    let req = RangeReq {
        by,
        rev: false,
        limit: None,
        withscores: false,
    };
    let n = typed::update(ctx, key, |z: &mut ZSetValue| {
        let doomed = select(z, &req);
        for (_, m) in &doomed {
            z.remove(m);
        }
        Ok(doomed.len())
    })?;
    ctx.out.int(n.unwrap_or(0) as i64);
    Ok(())
}

pub fn zremrangebyrank(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let by = By::Index(int(&args[2])?, int(&args[3])?);
    remove_span(ctx, &args[1], by)
}

pub fn zremrangebyscore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let by = By::Span(Span::parse(false, &args[2], &args[3])?);
    remove_span(ctx, &args[1], by)
}

pub fn zremrangebylex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let by = By::Span(Span::parse(true, &args[2], &args[3])?);
    remove_span(ctx, &args[1], by)
}

// Pops

fn pop(ctx: &mut Ctx<'_>, args: &[Bytes], max: bool) -> CmdResult {
    let count = super::args::pop_count(args)?;
    // One element (the plain form) stays on the stack; its member is moved out of the set.
    let popped = typed::update(ctx, &args[1], |z: &mut ZSetValue| {
        let n = count.unwrap_or(1).min(z.len());
        let mut v = SmallVec::<[(f64, Member); 1]>::with_capacity(n);
        v.extend(std::iter::from_fn(|| z.pop(max)).take(n));
        Ok(v)
    })?
    .unwrap_or_default();
    let out = &mut *ctx.out;
    if count.is_some() && out.resp3 {
        write_elements(out, &popped, true);
    } else {
        out.array(popped.len() * 2);
        for (s, m) in &popped {
            out.bulk(m);
            out.double(*s);
        }
    }
    Ok(())
}

pub fn zpopmin(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    pop(ctx, args, false)
}

pub fn zpopmax(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    pop(ctx, args, true)
}

/// Members popped from a sorted set, with their scores, and the key they came from.
type Popped<'k> = (&'k Bytes, Vec<(f64, Member)>);

/// The pop of ZMPOP, BZMPOP, BZPOPMIN and BZPOPMAX: up to `count` lowest (or highest, `max`)
/// members of the first of `keys` that holds a sorted set; `None` when none does.
fn pop_first<'k>(
    ctx: &mut Ctx<'_>,
    keys: &'k [Bytes],
    max: bool,
    count: usize,
) -> Result<Option<Popped<'k>>, CmdError> {
    for key in keys {
        let popped = typed::update(ctx, key, |z: &mut ZSetValue| {
            let n = count.min(z.len());
            Ok(std::iter::from_fn(|| z.pop(max))
                .take(n)
                .collect::<Vec<_>>())
        })?;
        if let Some(v) = popped.filter(|v| !v.is_empty()) {
            return Ok(Some((key, v)));
        }
    }
    Ok(None)
}

/// ZMPOP's and BZMPOP's reply: `[key, [[member, score], ...]]`.
fn write_mpop(out: &mut Reply, key: &[u8], popped: &[(f64, Member)]) {
    out.array(2);
    out.bulk(key);
    out.array(popped.len());
    for (s, m) in popped {
        out.array(2);
        out.bulk(m);
        out.double(*s);
    }
}

/// BZPOPMIN / BZPOPMAX key [key ...] timeout: `[key, member, score]`, or the connection
/// blocks until one of the keys holds a sorted set.
fn bzpop(ctx: &mut Ctx<'_>, args: &[Bytes], max: bool) -> CmdResult {
    let timeout = super::lists::block_timeout(&args[args.len() - 1])?;
    let keys = &args[1..args.len() - 1];
    match pop_first(ctx, keys, max, 1)? {
        Some((key, popped)) => {
            let (s, m) = &popped[0];
            ctx.out.array(3);
            ctx.out.bulk(key);
            ctx.out.bulk(m);
            ctx.out.double(*s);
        }
        None => super::lists::block_on(ctx, keys, timeout),
    }
    Ok(())
}

pub fn bzpopmin(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    bzpop(ctx, args, false)
}

pub fn bzpopmax(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    bzpop(ctx, args, true)
}

/// ZMPOP numkeys key [key ...] MIN|MAX [COUNT count].
pub fn zmpop(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (keys, min, count) = super::args::mpop_args(args, 1, ["min", "max"])?;
    match pop_first(ctx, keys, !min, count)? {
        Some((key, popped)) => write_mpop(ctx.out, key, &popped),
        None => ctx.out.null_array(),
    }
    Ok(())
}

/// BZMPOP timeout numkeys key [key ...] MIN|MAX [COUNT count].
pub fn bzmpop(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (keys, min, count) = super::args::mpop_args(args, 2, ["min", "max"])?;
    let timeout = super::lists::block_timeout(&args[1])?;
    match pop_first(ctx, keys, !min, count)? {
        Some((key, popped)) => write_mpop(ctx.out, key, &popped),
        None => super::lists::block_on(ctx, keys, timeout),
    }
    Ok(())
}

// ZUNIONSTORE / ZINTERSTORE

#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

/// Members with their scores, as ZUNIONSTORE/ZINTERSTORE read an input key.
type Weighted = Vec<(Vec<u8>, f64)>;

/// The members and scores of a sorted set or a set (score 1), or None for a missing key.
fn weighted_input(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Option<Weighted>, CmdError> {
    ctx.app.store.read(ctx.session.db, key, ctx.now, |e| {
        match e.map(|e| e.value()) {
            None => Ok(None),
            Some(ValueRef::Obj(Object::ZSet(z))) => Ok(Some(
                (0..z.len())
                    .filter_map(|i| z.get_index(i).map(|(m, s)| (m.to_vec(), s)))
                    .collect(),
            )),
            Some(ValueRef::Obj(Object::Set(s))) => Ok(Some(
                (0..s.len())
                    .filter_map(|i| s.get_index(i).map(|m| (m.to_vec(), 1.0)))
                    .collect(),
            )),
            Some(_) => Err(WRONG_TYPE),
        }
    })
}

/// ZUNION, ZINTER and ZDIFF, their STORE forms and ZINTERCARD: one operation over `numkeys`
/// inputs, as Redis's zunionInterDiffGenericCommand does it.
#[derive(Clone, Copy, PartialEq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

/// What is done with the result: stored at `args[1]`, replied (WITHSCORES allowed), or only
/// counted (LIMIT allowed).
#[derive(Clone, Copy, PartialEq)]
enum Output {
    Store,
    Reply,
    Count,
}

fn set_op(ctx: &mut Ctx<'_>, args: &[Bytes], op: SetOp, into: Output) -> CmdResult {
    let at = if into == Output::Store { 2 } else { 1 };
    let numkeys = int(&args[at])?;
    if numkeys < 1 {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        return Err(CmdError::msg(format!(
            "ERR at least 1 input key is needed for '{name}' command"
        )));
    }
    if numkeys as u64 > (args.len() - at - 1) as u64 {
        return Err(SYNTAX);
    }
    let numkeys = numkeys as usize;
    let keys = &args[at + 1..at + 1 + numkeys];
    // Redis reads (and type-checks) the inputs before it parses the options.
    let mut inputs = Vec::with_capacity(numkeys);
    for k in keys {
        inputs.push(weighted_input(ctx, k)?);
    }
    let mut weights = vec![1.0; numkeys];
    let (mut agg, mut withscores, mut limit) = (Aggregate::Sum, false, 0usize);
    let combining = op != SetOp::Diff && into != Output::Count;
    let mut i = at + 1 + numkeys;
    while i < args.len() {
        let left = args.len() - i;
        if combining && left > numkeys && is(&args[i], "weights") {
            for (j, w) in weights.iter_mut().enumerate() {
                *w = parse_f64(&args[i + 1 + j])
                    .ok_or(CmdError::new("ERR weight value is not a float"))?;
            }
            i += 1 + numkeys;
        } else if combining && left >= 2 && is(&args[i], "aggregate") {
            let a = &args[i + 1];
            agg = if is(a, "sum") {
                Aggregate::Sum
            } else if is(a, "min") {
                Aggregate::Min
            } else if is(a, "max") {
                Aggregate::Max
            } else {
                return Err(SYNTAX);
            };
            i += 2;
        } else if into == Output::Reply && is(&args[i], "withscores") {
            withscores = true;
            i += 1;
        } else if into == Output::Count && left >= 2 && is(&args[i], "limit") {
            // Not a number and a negative one get the same error, as in Redis.
            limit =
                super::args::int_at_least(&args[i + 1], 0, "ERR LIMIT can't be negative")? as usize;
            i += 2;
        } else {
            return Err(SYNTAX);
        }
    }
    let result = combine(inputs, weights, op, agg);
    match into {
        Output::Count => {
            let n = if limit > 0 {
                result.len().min(limit)
            } else {
                result.len()
            };
            ctx.out.int(n as i64);
        }
        Output::Store => {
            let n = store_zset(
                ctx,
                &args[1],
                result.iter().map(|(m, s)| (*s, m.as_slice())),
            );
            ctx.out.int(n as i64);
        }
        Output::Reply => {
            // In rank order (score, then member), the scores as computed: Redis replies from
            // the result's skiplist, where a -0 stays -0 (stored, a small set would read it
            // back as 0).
            let mut elems: Vec<(f64, &[u8])> =
                result.iter().map(|(m, s)| (*s, m.as_slice())).collect();
            elems.sort_by(|a, b| {
                let by_score = a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal);
                by_score.then_with(|| a.1.cmp(b.1))
            });
            write_elements(ctx.out, &elems, withscores);
        }
    }
    Ok(())
}

/// The members of the union, intersection or difference of `inputs` (missing keys empty),
/// each with its weighted, aggregated score, in the order Redis adds them.
fn combine(
    inputs: Vec<Option<Weighted>>,
    weights: Vec<f64>,
    op: SetOp,
    agg: Aggregate,
) -> indexmap::IndexMap<Vec<u8>, f64> {
    let combine = |a: f64, b: f64| {
        let v = match agg {
            Aggregate::Sum => a + b,
            Aggregate::Min => a.min(b),
            Aggregate::Max => a.max(b),
        };
        if v.is_nan() {
            0.0
        } else {
            v
        }
    };
    let weigh = |s: f64, w: f64| {
        let v = s * w;
        if v.is_nan() {
            0.0
        } else {
            v
        }
    };
    let mut inputs: Vec<(Option<Weighted>, f64)> = inputs.into_iter().zip(weights).collect();
    // Redis combines the inputs from the smallest to the largest (a stable sort by size, a
    // missing key counting as empty), which decides where a NaN (inf - inf) is zeroed; a
    // difference keeps its first input first.
    if op != SetOp::Diff {
        inputs.sort_by_key(|(input, _)| input.as_ref().map_or(0, Vec::len));
    }
    let mut result: indexmap::IndexMap<Vec<u8>, f64> = indexmap::IndexMap::new();
    // The inputs after the first by member, so each lookup is O(1) however large they are.
    type ByMember<'a> = std::collections::HashMap<&'a [u8], f64, foldhash::fast::RandomState>;
    fn by_member(others: &[(Option<Weighted>, f64)]) -> Vec<(ByMember<'_>, f64)> {
        others
            .iter()
            .map(|(o, w)| {
                let members = o.iter().flatten().map(|(m, s)| (m.as_slice(), *s));
                (members.collect(), *w)
            })
            .collect()
    }
    match op {
        SetOp::Inter if inputs.iter().all(|(input, _)| input.is_some()) => {
            let (first, others) = inputs.split_first().expect("numkeys >= 1");
            let others = by_member(others);
            'member: for (m, s) in first.0.iter().flatten() {
                let mut acc = weigh(*s, first.1);
                for (other, w) in &others {
                    let Some(&o) = other.get(m.as_slice()) else {
                        continue 'member;
                    };
                    // Redis zeroes a NaN product only for the first input's score here; the
                    // aggregate zeroes a NaN sum.
                    acc = combine(acc, o * w);
                }
                result.insert(m.clone(), acc);
            }
        }
        SetOp::Inter => {}
        SetOp::Diff => {
            let (first, others) = inputs.split_first().expect("numkeys >= 1");
            let others = by_member(others);
            for (m, s) in first.0.iter().flatten() {
                if !others.iter().any(|(o, _)| o.contains_key(m.as_slice())) {
                    result.insert(m.clone(), *s);
                }
            }
        }
        SetOp::Union => {
            for (input, w) in &inputs {
                for (m, s) in input.iter().flatten() {
                    let v = weigh(*s, *w);
                    match result.get_mut(m) {
                        Some(acc) => *acc = combine(*acc, v),
                        None => {
                            result.insert(m.clone(), v);
                        }
                    }
                }
            }
        }
    }
    result
}

/// Stores these members and scores as the sorted set at `dst` (deleting `dst` when there
/// are none, as Redis does); the number stored.
fn store_zset<'a>(
    ctx: &mut Ctx<'_>,
    dst: &[u8],
    elems: impl ExactSizeIterator<Item = (f64, &'a [u8])> + Clone,
) -> usize {
    let longest = elems.clone().map(|(_, m)| m.len()).max().unwrap_or(0);
    let mut z = ZSetValue::for_result(elems.len(), longest);
    for (s, m) in elems {
        z.insert(m, s);
    }
    let n = z.len();
    ctx.app.store.access(ctx.session.db, dst, ctx.now, |slot| {
        if n == 0 {
            slot.take();
        } else {
            slot.put(Entry::new_obj(dst, Box::new(Object::ZSet(z)), None, 0));
        }
    });
    n
}

pub fn zunionstore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    set_op(ctx, args, SetOp::Union, Output::Store)
}

pub fn zinterstore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    set_op(ctx, args, SetOp::Inter, Output::Store)
}

pub fn zdiffstore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    set_op(ctx, args, SetOp::Diff, Output::Store)
}

pub fn zunion(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    set_op(ctx, args, SetOp::Union, Output::Reply)
}

pub fn zinter(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    set_op(ctx, args, SetOp::Inter, Output::Reply)
}

pub fn zdiff(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    set_op(ctx, args, SetOp::Diff, Output::Reply)
}

pub fn zintercard(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    set_op(ctx, args, SetOp::Inter, Output::Count)
}

/// Sorted sets up to this size are returned whole by one ZSCAN call (listpack in Redis).
const SCAN_WHOLE: usize = 128;

pub fn zscan(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let Some((cursor, o)) = member_scan::<ZSetValue>(ctx, args)? else {
        return Ok(());
    };
    typed::read(ctx, &args[1], |z: Option<&ZSetValue>, out| {
        let mut items: Vec<(&[u8], f64)> = Vec::new();
        let mut next = 0u64;
        if let Some(z) = z {
            let (start, end) = if z.len() <= SCAN_WHOLE {
                (0, z.len())
            } else {
                let s = (cursor as usize).min(z.len());
                (s, (s + o.count).min(z.len()))
            };
            if z.len() <= SCAN_WHOLE {
                // Small sets come back in score order, like a listpack.
                items = (0..z.len())
                    .filter_map(|i| z.at(i).map(|(s, m)| (m, s)))
                    .collect();
            } else {
                items = (start..end).filter_map(|i| z.get_index(i)).collect();
                if end < z.len() {
                    next = end as u64;
                }
            }
            items.retain(|(m, _)| o.pattern.as_ref().is_none_or(|p| glob_match(p, m, false)));
        }
        out.array(2);
        out.bulk(next.to_string().as_bytes());
        out.array(items.len() * 2);
        for (m, s) in items {
            out.bulk(m);
            out.bulk(crate::server::reply::format_double(s).as_bytes());
        }
    })
}
