//! TAGADD and TAGINVAL: attach tags to keys, and remove at once every key that carries a tag.
//!
//! `TAGADD key tag [tag ...]` → the number of tags newly attached (0 when the key does not
//! exist). `TAGINVAL tag [tag ...]` → the number of existing keys that carried any of the tags,
//! now deleted, plus the QUERY results carrying them on this instance (QUERY's TAGS, or its
//! `table:<schema>.<table>` tags), which leave every instance's cache and L2 too. Tags of keys
//! belong to the selected database, like keys.
//!
//! Standalone, the tag index is in this process (`cache::tags`). In tiered mode it lives in L2 —
//! one set `strata:tag:{<tag>}` per tag, holding key names — so every instance sees the same
//! tags. TAGINVAL drains each set with SPOP (a TAGADD racing with it either lands before the
//! drain, and its key is deleted, or after it, and the tag stays attached for the next
//! TAGINVAL: a key can never lose its tag without being deleted) and deletes the keys one by one
//! (the keys live on different slots of a Cluster). Deleting a key in L2 sends an invalidation
//! to every instance whose L1 holds it, and the invalidation epoch stops any fill that read the
//! old value from landing afterwards, so nothing deleted is served again.

use super::tiered::{refuse, write_value, UNAVAILABLE};
use super::{CmdResult, Ctx};
use crate::app::App;
use crate::cache::l2::{Keys, L2};
use crate::server::reply::Reply;
use crate::server::session::Session;
use bytes::Bytes;
use redis::Value;
use std::sync::Arc;

/// Tags drained from an L2 tag set per round trip.
const DRAIN_BATCH: usize = 1000;

fn tag_key(tag: &[u8]) -> Vec<u8> {
    let mut k = b"strata:tag:{".to_vec();
    k.extend_from_slice(tag);
    k.push(b'}');
    k
}

fn tags_of(args: &[Bytes], from: usize) -> Vec<&[u8]> {
    args[from..].iter().map(|a| &a[..]).collect()
}

pub fn tagadd(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (db, key, now) = (ctx.db(), &args[1], ctx.now);
    let store = &ctx.app.store;
    if !store.exists(db, key, now) {
        ctx.out.int(0);
        return Ok(());
    }
    let n = ctx.app.tags.add(db, key, &tags_of(args, 2));
    let keys = (0..store.databases()).map(|d| store.dbsize(d)).sum();
    ctx.app
        .tags
        .prune_if_large(keys, |d, k| store.exists(d, k, now));
    ctx.out.int(n as i64);
    Ok(())
}

pub fn taginval(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let db = ctx.db();
    let keys = ctx.app.tags.take(db, &tags_of(args, 1));
    let n = keys
        .iter()
        .filter(|k| ctx.app.store.access(db, k, ctx.now, |s| s.take().is_some()))
        .count();
    let results = ctx.app.queries.invalidate(&query_tags(args), 0);
    ctx.out.int((n + results) as i64);
    Ok(())
}

/// The tags as QUERY results carry them (QUERY ... TAGS, or `table:<schema>.<table>`).
fn query_tags(args: &[Bytes]) -> Vec<String> {
    args[1..]
        .iter()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect()
}

/// Runs one upstream pipeline; `None` (after writing the error) when L2 is unavailable.
async fn upstream(
    app: &App,
    l2: &Arc<L2>,
    session: &Session,
    out: &mut Reply,
    pipe: &redis::Pipeline,
) -> Option<Vec<Value>> {
    match l2
        .run(session.db, session.resp3, false, pipe, Keys::First)
        .await
    {
        Ok((v, _)) => Some(v),
        Err(_) => {
            refuse(app, out, UNAVAILABLE);
            None
        }
    }
}

fn first_error(v: &[Value]) -> Option<&Value> {
    v.iter().find(|v| matches!(v, Value::ServerError(_)))
}

/// TAGADD in tiered mode: the tag sets live in L2.
pub async fn tagadd_l2(
    app: &App,
    l2: &Arc<L2>,
    session: &mut Session,
    out: &mut Reply,
    args: &[Bytes],
) {
    let key = &args[1][..];
    let mut exists = redis::pipe();
    exists.ignore_errors().cmd("EXISTS").arg(key);
    let Some(v) = upstream(app, l2, session, out, &exists).await else {
        return;
    };
    if !matches!(v.first(), Some(Value::Int(1))) {
        out.int(0);
        return;
    }
    let mut add = redis::pipe();
    add.ignore_errors();
    for tag in &args[2..] {
        add.cmd("SADD").arg(tag_key(tag)).arg(key);
    }
    let Some(v) = upstream(app, l2, session, out, &add).await else {
        return;
    };
    if let Some(e) = first_error(&v) {
        return write_value(out, e, false);
    }
    out.int(v.iter().filter(|v| matches!(v, Value::Int(1))).count() as i64);
}

/// TAGINVAL in tiered mode: drain each tag set in L2, delete its keys in L2 (which invalidates
/// them in every instance's L1) and here at once.
pub async fn taginval_l2(
    app: &App,
    l2: &Arc<L2>,
    session: &mut Session,
    out: &mut Reply,
    args: &[Bytes],
) {
    let mut keys: std::collections::HashSet<Vec<u8>> = Default::default();
    for tag in &args[1..] {
        loop {
            let mut pop = redis::pipe();
            pop.ignore_errors()
                .cmd("SPOP")
                .arg(tag_key(tag))
                .arg(DRAIN_BATCH);
            let Some(v) = upstream(app, l2, session, out, &pop).await else {
                return;
            };
            match v.into_iter().next() {
                Some(Value::Array(members)) | Some(Value::Set(members)) if !members.is_empty() => {
                    let got = members.len();
                    keys.extend(members.into_iter().filter_map(|m| match m {
                        Value::BulkString(b) => Some(b),
                        _ => None,
                    }));
                    if got < DRAIN_BATCH {
                        break;
                    }
                }
                Some(e @ Value::ServerError(_)) => return write_value(out, &e, false),
                _ => break,
            }
        }
    }
    // QUERY results carrying the tags, here, in L2 and on every other instance.
    let tags = query_tags(args);
    let results = app.queries.invalidate(&tags, 0);
    super::query::announce(app, &tags, 0, false).await;
    if keys.is_empty() {
        out.int(results as i64);
        return;
    }
    let mut del = redis::pipe();
    del.ignore_errors();
    for k in &keys {
        del.cmd("DEL").arg(&k[..]);
    }
    let Some(v) = upstream(app, l2, session, out, &del).await else {
        return;
    };
    for k in &keys {
        l2.invalidate(session.db, k);
    }
    out.int((v.iter().filter(|v| matches!(v, Value::Int(1))).count() + results) as i64);
}
