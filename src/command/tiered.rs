//! Tiered mode: how an admitted command runs when an upstream Valkey/Redis (L2) is configured.
//!
//! The table decides the route. `LOCAL` commands (connection, server and admin commands) run
//! on this instance as in standalone mode. `CACHED` reads (GET, MGET) look in L1 first; a miss
//! reads L2 on a tracking connection and fills L1 (`L2::fill`, which drops the fill if the key
//! was invalidated meanwhile). Everything else is relayed to L2 and the client gets L2's reply
//! verbatim; the keys a write touches leave L1 (write-through). Transactions are queued here as
//! in standalone mode and sent as one MULTI … EXEC pipeline at EXEC; WATCH, blocking pops and
//! pub/sub take a dedicated upstream connection for the client. When L2 is unavailable,
//! `l2.fail_open` decides what still runs on L1 alone (TTLs capped at `l1.ttl`) and what
//! answers `-UNAVAILABLE L2 unavailable`.

use super::table::{Command, BLOCKING, CACHED, LOCAL, REGISTRY, WRITE};
use crate::app::App;
use crate::cache::l2::{Keys, L2Error, L2};
use crate::config::FailOpen;
use crate::server::reply::Reply;
use crate::server::session::Session;
use bytes::{Bytes, BytesMut};
use redis::Value;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

pub const UNAVAILABLE: &str = "UNAVAILABLE L2 unavailable";

/// The client's socket, for commands that wait upstream (a blocking pop ends when the client
/// goes away, as it does in Redis).
pub struct Io<'a> {
    pub stream: &'a mut crate::server::tls::Stream,
    pub rbuf: &'a mut BytesMut,
    /// The client's pub/sub outbox (messages forwarded from its upstream subscriptions).
    pub mailbox: &'a mut crate::server::pubsub::Mailbox,
}

/// Runs an admitted command (`idx` from the table) in tiered mode, and records its statistics
/// (commands that run on this instance record theirs in `call`, as in standalone mode).
pub async fn run(
    app: &App,
    l2: &Arc<L2>,
    session: &mut Session,
    out: &mut Reply,
    idx: usize,
    args: &[Bytes],
    io: Option<Io<'_>>,
) {
    let c = REGISTRY.all[idx];
    let top = REGISTRY.parent[idx].map_or(c, |p| REGISTRY.all[p]);
    if top.flag(LOCAL) {
        return route(app, l2, session, out, idx, args, io).await;
    }
    let start = quanta::Instant::now();
    route(app, l2, session, out, idx, args, io).await;
    let took = start.elapsed();
    app.metrics.commands[idx].record(took);
    app.slowlog.maybe_record(session, args, took);
}

async fn route(
    app: &App,
    l2: &Arc<L2>,
    session: &mut Session,
    out: &mut Reply,
    idx: usize,
    args: &[Bytes],
    io: Option<Io<'_>>,
) {
    let c = REGISTRY.all[idx];
    let top = REGISTRY.parent[idx].map_or(c, |p| REGISTRY.all[p]);
    let name = c.name;
    if c.flag(CACHED) {
        return cached_read(app, l2, session, out, idx, args).await;
    }
    if REGISTRY.full_names[idx] == "memory|usage" {
        // The key lives in L2: ask there.
        return relay(app, l2, session, out, idx, args).await;
    }
    if l2.is_cluster() {
        match name {
            // A Cluster has database 0 only, and says so.
            "select" if args[1][..] != b"0"[..] => {
                return refuse(app, out, "ERR SELECT is not allowed in cluster mode");
            }
            "swapdb" | "move" => {
                return refuse(
                    app,
                    out,
                    &format!(
                        "ERR {} is not allowed in cluster mode",
                        name.to_ascii_uppercase()
                    ),
                );
            }
            "scan" => return cluster_scan(app, l2, session, out, idx, args).await,
            _ => {}
        }
    }
    if top.flag(LOCAL) {
        super::run_local(app, session, out, idx, args);
        if matches!(name, "discard" | "reset") {
            // Dropping the dedicated connection ends its WATCHes upstream.
            session.upstream = None;
        }
        return;
    }
    match name {
        "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" => {
            return subscribe(app, l2, session, out, idx, args, io).await
        }
        "exec" => return exec(app, l2, session, out).await,
        "tagadd" => return super::tags::tagadd_l2(app, l2, session, out, args).await,
        "taginval" => return super::tags::taginval_l2(app, l2, session, out, args).await,
        "rate" | "cl.throttle" => return super::rate::run_l2(app, out, idx, args).await,
        "watch" | "unwatch" => return watch(app, l2, session, out, args).await,
        _ => {}
    }
    if c.flag(BLOCKING) {
        return blocking(app, l2, session, out, idx, args, io).await;
    }
    relay(app, l2, session, out, idx, args).await
}

/// Builds the upstream form of a client command.
fn upstream(args: &[Bytes]) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(&a[..]);
    }
    cmd
}

/// The keys a command may change: its key arguments (EVAL's declared keys included).
pub fn written_keys<'a>(c: &Command, args: &'a [Bytes]) -> Vec<&'a [u8]> {
    c.key_indexes(args).map(|i| &args[i][..]).collect()
}

/// Removes from L1 every key a command wrote, and whole databases for the flushing commands.
fn drop_written(app: &App, l2: &L2, db: usize, c: &Command, args: &[Bytes]) {
    match c.name {
        "flushdb" => {
            let _g = app.store.exclusive();
            app.store.flush_db(db);
        }
        "flushall" | "swapdb" => {
            let _g = app.store.exclusive();
            app.store.flush_all();
        }
        _ if c.flag(WRITE) || c.name.starts_with("eval") => {
            for k in written_keys(c, args) {
                l2.invalidate(db, k);
            }
        }
        _ => {}
    }
}

/// Whether a RESP2 client sees a nil reply of this command as a null array (`*-1`) rather
/// than a null bulk string (the upstream client library does not tell them apart).
fn nil_is_array(name: &str, argc: usize) -> bool {
    match name {
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" | "exec" | "blmpop" | "lmpop" | "zmpop"
        | "bzmpop" | "xread" | "xreadgroup" => true,
        "lpop" | "rpop" => argc == 3,
        _ => false,
    }
}

/// Writes an upstream reply to the client in the client's protocol.
pub fn write_value(out: &mut Reply, v: &Value, nil_array: bool) {
    match v {
        Value::Nil if nil_array => out.null_array(),
        Value::Nil => out.null(),
        Value::Int(n) => out.int(*n),
        Value::BulkString(b) => out.bulk(b),
        Value::Array(items) => {
            out.array(items.len());
            items.iter().for_each(|i| write_value(out, i, false));
        }
        Value::SimpleString(s) => out.simple(s),
        Value::Okay => out.ok(),
        Value::Map(pairs) => {
            out.map(pairs.len());
            for (k, v) in pairs {
                write_value(out, k, false);
                write_value(out, v, false);
            }
        }
        Value::Attribute { data, .. } => write_value(out, data, nil_array),
        Value::Set(items) => {
            out.set(items.len());
            items.iter().for_each(|i| write_value(out, i, false));
        }
        Value::Double(d) => out.double(*d),
        Value::Boolean(b) => out.boolean(*b),
        Value::VerbatimString { text, .. } => out.verbatim(text),
        Value::BigNumber(n) => out.bulk(n),
        Value::Push { data, .. } => {
            out.push(data.len());
            data.iter().for_each(|i| write_value(out, i, false));
        }
        Value::ServerError(e) => out.error(&server_error_text(e)),
        _ => out.error("ERR unsupported reply from L2"),
    }
}

/// An error reply that tiered mode produces itself (counted like every error reply).
pub fn refuse(app: &App, out: &mut Reply, msg: &str) {
    app.metrics.error_replies.inc();
    out.error(msg);
}

/// A failed upstream call as the client sees it: the upstream's own error, verbatim, or
/// UNAVAILABLE when there was no answer.
fn write_error(out: &mut Reply, e: &redis::RedisError) {
    match e.code() {
        Some(code) => out.error(&format!("{code} {}", e.detail().unwrap_or(""))),
        None => out.error(UNAVAILABLE),
    }
}

/// The error line exactly as the upstream sent it (code, then details).
fn server_error_text(e: &redis::ServerError) -> String {
    match e.details() {
        Some(d) => format!("{} {d}", e.code()),
        None => e.code().to_string(),
    }
}

/// Whether a command keeps working on L1 alone while L2 is unavailable (`fail_open = plain`):
/// reads and plain writes; not the ones whose meaning depends on one shared state.
fn plain(c: &Command, args: &[Bytes]) -> bool {
    match c.name {
        "set" => !args.iter().skip(3).any(|a| {
            a.eq_ignore_ascii_case(b"nx")
                || a.eq_ignore_ascii_case(b"xx")
                || a.eq_ignore_ascii_case(b"get")
        }),
        "get" | "mget" | "setex" | "psetex" | "mset" | "del" | "unlink" | "exists" | "expire"
        | "pexpire" | "expireat" | "pexpireat" | "persist" | "ttl" | "pttl" | "type" | "strlen"
        | "touch" | "getrange" | "hget" | "hmget" | "hgetall" | "hset" | "hmset" | "hdel"
        | "hexists" | "hlen" | "hkeys" | "hvals" | "smembers" | "sismember" | "scard"
        | "lrange" | "llen" | "zrange" | "zscore" | "zcard" | "dbsize" | "keys" | "scan"
        | "publish" => true,
        _ => false,
    }
}

/// Whether `l2.fail_open` lets these commands (one, or a transaction's) run on L1 alone.
fn runs_on_l1<'a>(l2: &L2, cmds: impl IntoIterator<Item = &'a [Bytes]>) -> bool {
    match l2.config().fail_open {
        FailOpen::All => true,
        FailOpen::Plain => cmds
            .into_iter()
            .all(|a| super::resolve(a).is_ok_and(|i| plain(REGISTRY.all[i], a))),
        FailOpen::None => false,
    }
}

/// L2 is unavailable: run on L1 alone if `l2.fail_open` allows this command, else refuse.
fn fail_open(
    app: &App,
    l2: &L2,
    session: &mut Session,
    out: &mut Reply,
    idx: usize,
    args: &[Bytes],
) {
    let c = REGISTRY.all[idx];
    if !runs_on_l1(l2, [args]) {
        refuse(app, out, UNAVAILABLE);
        return;
    }
    super::run_local(app, session, out, idx, args);
    cap_local_writes(app, l2, session.db, written_keys(c, args));
}

/// Each instance is on its own while L2 is unavailable: nothing it writes may outlive `l1.ttl`.
fn cap_local_writes(app: &App, l2: &L2, db: usize, keys: Vec<&[u8]>) {
    let now = super::unix_ms();
    let cap = now + l2.l1_ttl_ms;
    for k in keys {
        app.store.access(db, k, now, |slot| {
            if let Some(e) = slot.get() {
                if e.expire_ms().is_none_or(|at| at > cap) {
                    if let Some(e) = slot.get_mut() {
                        e.set_expire(Some(cap));
                    }
                }
            }
        });
    }
    l2.bound_l1(now);
}

async fn relay(
    app: &App,
    l2: &Arc<L2>,
    session: &mut Session,
    out: &mut Reply,
    idx: usize,
    args: &[Bytes],
) {
    let c = REGISTRY.all[idx];
    let mut pipe = redis::pipe();
    pipe.ignore_errors().add_command(upstream(args));
    match l2
        .run(
            session.db,
            session.resp3,
            false,
            &pipe,
            Keys::These(&written_keys(c, args)),
        )
        .await
    {
        Ok((replies, _)) => {
            drop_written(app, l2, session.db, c, args);
            if c.name == "select" {
                return;
            }
            let v = replies.first().unwrap_or(&Value::Nil);
            if matches!(v, Value::ServerError(_)) {
                app.metrics.commands[idx].failed.inc();
                app.metrics.error_replies.inc();
            }
            write_value(out, v, !session.resp3 && nil_is_array(c.name, args.len()));
        }
        Err(L2Error::Unavailable) => fail_open(app, l2, session, out, idx, args),
    }
}

/// GET and MGET: L1 first; what L1 lacks is read from L2 (value and remaining TTL, on a
/// tracking connection) and filled into L1.
async fn cached_read(
    app: &App,
    l2: &Arc<L2>,
    session: &mut Session,
    out: &mut Reply,
    idx: usize,
    args: &[Bytes],
) {
    let db = session.db;
    let now = super::session_now(session);
    if args.len() == 2 {
        // GET that L1 can answer: written straight from the entry, nothing copied.
        let hit = app
            .store
            .read(db, &args[1], now, |e| match e.and_then(|e| e.as_str()) {
                Some(v) => {
                    out.bulk(v);
                    true
                }
                None => false,
            });
        if hit {
            return;
        }
    }
    let keys: Vec<&Bytes> = args.iter().skip(1).collect();
    // (A single GET already looked in L1 above.)
    let mut found: Vec<Option<Vec<u8>>> = keys
        .iter()
        .filter(|_| args.len() > 2)
        .map(|k| {
            app.store.read(db, k, now, |e| {
                e.and_then(|e| e.as_str()).map(|v| v.to_vec())
            })
        })
        .collect();
    if found.is_empty() {
        found.push(None);
    }
    let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
    let mut error: Option<Value> = None;
    if !missing.is_empty() {
        let epochs: Vec<u64> = missing.iter().map(|&i| l2.epoch(db, keys[i])).collect();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &i in &missing {
            pipe.cmd("GET")
                .arg(&keys[i][..])
                .cmd("PTTL")
                .arg(&keys[i][..]);
        }
        match l2.run(db, true, true, &pipe, Keys::First).await {
            Ok((replies, gen)) => {
                for (j, &i) in missing.iter().enumerate() {
                    let pttl = match replies.get(2 * j + 1) {
                        Some(Value::Int(t)) => *t,
                        _ => -2,
                    };
                    match replies.get(2 * j) {
                        Some(Value::BulkString(v)) => {
                            l2.stats
                                .hits
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            l2.fill(db, keys[i], v, pttl, epochs[j], gen, now);
                            found[i] = Some(v.clone());
                        }
                        Some(e @ Value::ServerError(_)) if args.len() == 2 => {
                            error = Some(e.clone())
                        }
                        _ => {
                            l2.stats
                                .misses
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }
            Err(L2Error::Unavailable) => return fail_open(app, l2, session, out, idx, args),
        }
    }
    if let Some(e) = error {
        app.metrics.commands[idx].failed.inc();
        app.metrics.error_replies.inc();
        return write_value(out, &e, false);
    }
    if REGISTRY.all[idx].name == "get" {
        match &found[0] {
            Some(v) => out.bulk(v),
            None => out.null(),
        }
    } else {
        out.array(found.len());
        for v in &found {
            match v {
                Some(v) => out.bulk(v),
                None => out.null(),
            }
        }
    }
}

/// EXEC: the locally queued transaction goes upstream as one MULTI … EXEC pipeline, on the
/// client's dedicated connection when it WATCHes keys.
async fn exec(app: &App, l2: &Arc<L2>, session: &mut Session, out: &mut Reply) {
    session
        .info
        .multi
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let Some(m) = session.multi.take() else {
        session.upstream = None;
        out.error("ERR EXEC without MULTI");
        return;
    };
    if m.aborted {
        session.upstream_key = None;
        if let Some(mut con) = session.upstream.take() {
            let _ = con.query(&redis::cmd("UNWATCH")).await;
        }
        out.error("EXECABORT Transaction discarded because of previous errors.");
        return;
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors().cmd("MULTI");
    for q in &m.queued {
        pipe.add_command(upstream(q));
    }
    pipe.cmd("EXEC");
    // On a Cluster the whole transaction goes to the node of its (first) key's slot; keys on
    // other slots get the node's CROSSSLOT/MOVED errors, as with Cluster itself.
    let first_key = session.upstream_key.take().or_else(|| {
        m.queued.iter().find_map(|q| {
            let c = REGISTRY.all[super::resolve(q).ok()?];
            written_keys(c, q).first().map(|k| k.to_vec())
        })
    });
    let result = match session.upstream.take() {
        Some(mut con) => con
            .pipeline(&pipe, first_key.as_deref())
            .await
            .map_err(|_| L2Error::Unavailable),
        None if l2.is_cluster() => match l2.dedicated(0, session.resp3, None).await {
            Ok(mut con) => con
                .pipeline(&pipe, first_key.as_deref())
                .await
                .map_err(|_| L2Error::Unavailable),
            Err(e) => Err(e),
        },
        None => l2
            .run(session.db, session.resp3, false, &pipe, Keys::First)
            .await
            .map(|(v, _)| v),
    };
    match result {
        Ok(replies) => {
            for q in &m.queued {
                if let Ok(i) = super::resolve(q) {
                    drop_written(app, l2, session.db, REGISTRY.all[i], q);
                }
            }
            match replies.last() {
                Some(v) => write_value(out, v, !session.resp3),
                None => out.null_array(),
            }
        }
        Err(_) => {
            // Fail-open: a transaction of plain commands (django-redis's set_many, say) runs on
            // L1 alone like its commands would one by one; anything else is refused.
            if !runs_on_l1(l2, m.queued.iter().map(|q| &q[..])) {
                refuse(app, out, UNAVAILABLE);
                return;
            }
            let written: Vec<Vec<u8>> = m
                .queued
                .iter()
                .filter_map(|q| Some((REGISTRY.all[super::resolve(q).ok()?], q)))
                .flat_map(|(c, q)| written_keys(c, q).into_iter().map(|k| k.to_vec()))
                .collect();
            session.multi = Some(m);
            match super::resolve(&[Bytes::from_static(b"EXEC")]) {
                Ok(exec) => {
                    super::run_local(app, session, out, exec, &[Bytes::from_static(b"EXEC")])
                }
                Err(e) => out.error(e.as_str()),
            }
            cap_local_writes(
                app,
                l2,
                session.db,
                written.iter().map(|k| &k[..]).collect(),
            );
        }
    }
}

/// WATCH/UNWATCH: they live on the client's dedicated upstream connection.
async fn watch(app: &App, l2: &Arc<L2>, session: &mut Session, out: &mut Reply, args: &[Bytes]) {
    let is_watch = args[0].eq_ignore_ascii_case(b"watch");
    if is_watch && session.multi.is_some() {
        out.error("ERR WATCH inside MULTI is not allowed");
        return;
    }
    if session.upstream.is_none() {
        if !is_watch {
            out.ok();
            return;
        }
        match l2.dedicated(session.db, session.resp3, None).await {
            Ok(c) => session.upstream = Some(c),
            Err(_) => {
                refuse(app, out, UNAVAILABLE);
                return;
            }
        }
    }
    if is_watch && session.upstream_key.is_none() {
        session.upstream_key = args.get(1).map(|k| k.to_vec());
    }
    let Some(con) = session.upstream.as_mut() else {
        return;
    };
    match con.query(&upstream(args)).await {
        Ok(v) => write_value(out, &v, false),
        Err(e) => {
            session.upstream = None;
            app.metrics.error_replies.inc();
            write_error(out, &e);
        }
    }
    if !is_watch {
        session.upstream = None;
        session.upstream_key = None;
    }
}

/// Blocking pops wait upstream on the client's own connection, so a push through any Strata
/// instance (or straight to L2) wakes them; the wait ends early if the client goes away.
async fn blocking(
    app: &App,
    l2: &Arc<L2>,
    session: &mut Session,
    out: &mut Reply,
    idx: usize,
    args: &[Bytes],
    io: Option<Io<'_>>,
) {
    let c = REGISTRY.all[idx];
    if session.multi.is_some() || io.is_none() {
        // Inside a transaction (or a script) a blocking pop does not block.
        return relay(app, l2, session, out, idx, args).await;
    }
    let mut con = match l2.dedicated(session.db, session.resp3, None).await {
        Ok(c) => c,
        Err(_) => return fail_open(app, l2, session, out, idx, args),
    };
    let Some(io) = io else { return };
    let cmd = upstream(args);
    let call = con.query(&cmd);
    tokio::pin!(call);
    let info = session.info.clone();
    let r = loop {
        tokio::select! {
            r = &mut call => break Some(r),
            _ = info.ending(app) => break None,
            n = io.stream.read_buf(io.rbuf) => match n {
                Ok(0) | Err(_) => break None,
                Ok(_) => continue,
            },
        }
    };
    match r {
        // The client left: dropping the connection ends the upstream wait.
        None => session.close = true,
        Some(Ok(v)) => {
            drop_written(app, l2, session.db, c, args);
            write_value(out, &v, !session.resp3 && nil_is_array(c.name, args.len()));
        }
        Some(Err(e)) => {
            app.metrics.error_replies.inc();
            write_error(out, &e);
        }
    }
}

/// SUBSCRIBE and friends: the local handler keeps the client's subscription state and writes
/// the confirmations; the same subscriptions are mirrored on the client's own upstream
/// connection, whose messages are forwarded into the client's outbox. A PUBLISH through any
/// instance (relayed to L2) or straight to L2 reaches it, and PUBLISH counts are L2's.
async fn subscribe(
    app: &App,
    l2: &Arc<L2>,
    session: &mut Session,
    out: &mut Reply,
    idx: usize,
    args: &[Bytes],
    io: Option<Io<'_>>,
) {
    let name = REGISTRY.all[idx].name;
    let unsubscribing = matches!(name, "unsubscribe" | "punsubscribe");
    let names: Vec<Vec<u8>> = match (args.len() > 1, name) {
        (true, _) => args[1..].iter().map(|a| a.to_vec()).collect(),
        (false, "unsubscribe") => session.channels.iter().map(|a| a.to_vec()).collect(),
        (false, _) => session.patterns.iter().map(|a| a.to_vec()).collect(),
    };
    if unsubscribing {
        // Upstream first: every message the upstream sent before its confirmation is then in
        // this client's outbox, and goes out before our confirmation, as Redis orders them.
        if let Some(con) = session.upstream_pubsub.as_mut() {
            if !names.is_empty() && con.subscribe(name, &names).await.is_err() {
                session.upstream_pubsub = None;
                session.info.kill();
            }
        }
        if let Some(mb) = io.map(|io| io.mailbox) {
            while let Ok(m) = mb.rx.try_recv() {
                out.raw(&m);
                mb.written(m.len());
            }
        }
        super::run_local(app, session, out, idx, args);
        if session.channels.is_empty() && session.patterns.is_empty() {
            session.upstream_pubsub = None;
        }
        return;
    }
    super::run_local(app, session, out, idx, args);
    let Some(sub) = session.outbox() else {
        return;
    };
    if session.upstream_pubsub.is_none() {
        let pubsub = app.pubsub_handle();
        let info = session.info.clone();
        // Runs on the upstream connection's task, in the order the upstream sent the pushes.
        let forward: crate::cache::l2::PushFn = Arc::new(move |p: redis::PushInfo| {
            let text = |v: Option<&Value>| match v {
                Some(Value::BulkString(b)) => b.clone(),
                _ => Vec::new(),
            };
            match p.kind {
                redis::PushKind::Message => {
                    pubsub.forward(&sub, None, &text(p.data.first()), &text(p.data.get(1)))
                }
                redis::PushKind::PMessage => pubsub.forward(
                    &sub,
                    Some(&text(p.data.first())),
                    &text(p.data.get(1)),
                    &text(p.data.get(2)),
                ),
                // Its subscriptions are gone with the connection: drop the client so that it
                // reconnects and subscribes again.
                redis::PushKind::Disconnection => info.kill(),
                _ => {}
            }
        });
        match l2.dedicated(session.db, true, Some(forward)).await {
            Ok(c) => session.upstream_pubsub = Some(c),
            Err(_) => {
                // A subscription that only exists here would never see a PUBLISH through L2.
                refuse(app, out, UNAVAILABLE);
                return;
            }
        }
    }
    let Some(con) = session.upstream_pubsub.as_mut() else {
        return;
    };
    let r = con.subscribe(name, &names).await;
    if r.is_err() {
        session.upstream_pubsub = None;
        session.info.kill();
    } else if session.channels.is_empty() && session.patterns.is_empty() {
        session.upstream_pubsub = None;
    }
}

/// SCAN over a Cluster: the masters one after the other. The cursor carries the master's index
/// in its low bits: `node_cursor * masters + index`; 0 starts at the first master, and the scan
/// ends after the last one returns 0.
async fn cluster_scan(
    app: &App,
    l2: &Arc<L2>,
    session: &mut Session,
    out: &mut Reply,
    idx: usize,
    args: &[Bytes],
) {
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return refuse(app, out, "ERR invalid cursor");
    };
    let masters = match l2.cluster_masters().await {
        Ok(m) if !m.is_empty() => m,
        _ => return fail_open(app, l2, session, out, idx, args),
    };
    let n = masters.len() as u64;
    let (mut node, inner) = ((cursor % n) as usize, cursor / n);
    let mut cmd = redis::Cmd::new();
    cmd.arg("SCAN").arg(inner);
    for a in &args[2..] {
        cmd.arg(&a[..]);
    }
    let reply = match l2.on_node(session.resp3, &masters[node], cmd).await {
        Ok(v) => v,
        Err(_) => return fail_open(app, l2, session, out, idx, args),
    };
    let (next, keys) = match reply {
        Value::Array(mut parts) if parts.len() == 2 => {
            let keys = parts.pop().unwrap_or(Value::Nil);
            let next = match parts.pop() {
                Some(Value::BulkString(c)) => {
                    String::from_utf8_lossy(&c).parse::<u64>().unwrap_or(0)
                }
                _ => 0,
            };
            (next, keys)
        }
        other => return write_value(out, &other, false),
    };
    let cursor = if next != 0 {
        next * n + node as u64
    } else {
        node += 1;
        if node as u64 == n {
            0
        } else {
            node as u64
        }
    };
    out.array(2);
    out.bulk(cursor.to_string().as_bytes());
    write_value(out, &keys, false);
}
