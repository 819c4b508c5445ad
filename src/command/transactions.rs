//! MULTI/EXEC/DISCARD/WATCH/UNWATCH. Queued commands run under the exclusive store gate
//! (EXEC is flagged exclusive in the table), so a transaction is atomic across shards. WATCH
//! registers a flag with the store, which sets it when a watched key is modified or expires.

use super::error::{CmdError, CmdResult};
use super::Ctx;
use crate::app::App;
use crate::server::session::{MultiState, Session};
use bytes::Bytes;
use std::sync::atomic::Ordering;

pub fn multi(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    if ctx.session.multi.is_some() {
        return Err(CmdError::new("ERR MULTI calls can not be nested"));
    }
    ctx.session.multi = Some(MultiState::default());
    ctx.session.info.multi.store(true, Ordering::Relaxed);
    ctx.out.ok();
    Ok(())
}

/// Forgets every WATCH of the session and clears its dirty flag.
pub fn unwatch_all(app: &App, session: &mut Session) {
    for (db, key) in session.watched.drain(..) {
        app.store.unwatch(db, &key, &session.watch_flag);
    }
    session.watch_flag.dirty.store(false, Ordering::Release);
}

fn end_multi(ctx: &mut Ctx<'_>) -> Option<MultiState> {
    ctx.session.info.multi.store(false, Ordering::Relaxed);
    let m = ctx.session.multi.take();
    let dirty = ctx.session.watch_flag.dirty.load(Ordering::Acquire);
    unwatch_all(ctx.app, ctx.session);
    ctx.session.watch_flag.dirty.store(dirty, Ordering::Release);
    m
}

/// Ends a transaction without running it (DISCARD, a malformed EXEC).
pub fn abort(app: &App, session: &mut Session) {
    session.info.multi.store(false, Ordering::Relaxed);
    session.multi = None;
    unwatch_all(app, session);
}

/// Looks at every watched key: one whose TTL has passed since WATCH is removed now, which
/// marks the transaction dirty (Redis 7: an expired watched key aborts EXEC).
fn expire_watched(ctx: &mut Ctx<'_>) {
    for (db, key) in &ctx.session.watched {
        ctx.app.store.exists(*db, key, ctx.now);
    }
}

pub fn exec(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    expire_watched(ctx);
    let Some(m) = end_multi(ctx) else {
        return Err(CmdError::new("ERR EXEC without MULTI"));
    };
    let dirty = ctx.session.watch_flag.dirty.swap(false, Ordering::AcqRel);
    if m.aborted {
        return Err(CmdError::new(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    if dirty {
        ctx.out.null_array();
        return Ok(());
    }
    ctx.out.array(m.queued.len());
    let was = ctx.in_exec;
    ctx.in_exec = true;
    for args in m.queued {
        match super::resolve(&args) {
            Ok(idx) => super::call(ctx, idx, &args),
            Err(e) => ctx.out.error(e.as_str()),
        }
    }
    ctx.in_exec = was;
    Ok(())
}

pub fn discard(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    if end_multi(ctx).is_none() {
        return Err(CmdError::new("ERR DISCARD without MULTI"));
    }
    ctx.session.watch_flag.dirty.store(false, Ordering::Release);
    ctx.out.ok();
    Ok(())
}

pub fn watch(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    if ctx.session.multi.is_some() {
        return Err(CmdError::new("ERR WATCH inside MULTI is not allowed"));
    }
    let db = ctx.session.db;
    for key in &args[1..] {
        if ctx
            .session
            .watched
            .iter()
            .any(|(d, k)| *d == db && k[..] == key[..])
        {
            continue;
        }
        // A key already past its TTL is gone before we watch it, so it cannot abort EXEC.
        ctx.app.store.exists(db, key, ctx.now);
        ctx.app.store.watch(db, key, &ctx.session.watch_flag);
        ctx.session.watched.push((db, key.to_vec()));
    }
    ctx.out.ok();
    Ok(())
}

pub fn unwatch(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    unwatch_all(ctx.app, ctx.session);
    ctx.out.ok();
    Ok(())
}
