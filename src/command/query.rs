//! QUERY and the DB.* commands: the database tier as clients see it (DESIGN.md, "QUERY:
//! database read-through").
//!
//! A read is looked up in the QUERY result cache first (keyed by database, role, normalized
//! SQL and arguments; a hit costs no database round trip), then runs on the instance the router
//! picks, under single flight. Its result is stored — tagged `table:<schema>.<table>` for every
//! table it depends on plus the QUERY's TAGS — only if no write invalidated one of those tags
//! since the read began and its source had replayed every such write. A write runs on the
//! primary; after it commits, its tables' tags (cascades and trigger targets included) are
//! invalidated, and the connection reads its own writes from then on (reads go to the primary
//! or to replicas that replayed the write, until every replica has).
//!
//! These commands run asynchronously (they wait on PostgreSQL), so they are dispatched here
//! rather than through the synchronous handler in the table, which only answers for the cases
//! where nothing may wait: inside MULTI/EXEC.

use super::args::parse_i64;
use super::{CmdResult, Ctx};
use crate::app::App;
use crate::cache::l2::Keys;
use crate::cache::query::{render_into, Format};
use crate::cache::query_l2;
use crate::db::database::{lsn_or_dash, Database, DbError, ReadOpts, RunAs, Shape, Source};
use crate::db::pool::{Priority, Role};
use crate::server::reply::Reply;
use crate::server::session::Session;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const NO_DATABASE: &str = "ERR no database is configured (set [database.primary] url)";

/// The table's handler: reached only where a command cannot wait (inside MULTI/EXEC).
pub fn not_in_transaction(_: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    Err(super::CmdError::msg(format!(
        "ERR {} cannot run inside MULTI",
        String::from_utf8_lossy(&args[0]).to_ascii_uppercase()
    )))
}

/// The options of one QUERY.
#[derive(Debug, Default)]
struct Options<'a> {
    args: &'a [Bytes],
    ttl: Option<u64>,
    tags: Vec<String>,
    strong: bool,
    max_lag: Option<u64>,
    critical: bool,
    nocache: bool,
    json: bool,
    /// `USER <id>`: the end user the QUERY limits count against.
    user: Option<&'a Bytes>,
}

fn syntax() -> String {
    "ERR syntax error".into()
}

fn parse_count(arg: Option<&Bytes>, left: usize) -> Result<usize, String> {
    let n = arg
        .and_then(|a| parse_i64(a))
        .ok_or("ERR value is not an integer or out of range")?;
    if n < 0 || n as usize > left {
        return Err(syntax());
    }
    Ok(n as usize)
}

/// A word packed for a comparison that ignores case: up to 15 bytes, each OR 0x20, and the
/// length in the top byte; 0 for anything longer. Two words of letters only (every option word
/// is one) pack alike exactly when they are equal ignoring case.
const fn packed(w: &[u8]) -> u128 {
    if w.len() > 15 {
        return 0;
    }
    let mut v = 0u128;
    let mut i = 0;
    while i < w.len() {
        v |= (w[i] as u128) << (8 * i);
        i += 1;
    }
    folded(v, w.len())
}

/// Packed bytes `v` of a word of `len` bytes, each byte OR 0x20 and the length on top.
const fn folded(v: u128, len: usize) -> u128 {
    const CASE: u128 = (u128::MAX >> 8) / 0xff * 0x20; // 0x20 in each of the low 15 bytes
    v | CASE | ((len as u128) << 120)
}

/// [`packed`] for an argument, with one copy rather than a loop.
fn pack(w: Option<&Bytes>) -> u128 {
    match w {
        Some(w) if w.len() <= 15 => {
            let mut b = [0u8; 16];
            b[..w.len()].copy_from_slice(w);
            folded(u128::from_le_bytes(b), w.len())
        }
        _ => 0,
    }
}

/// The integer option value at `i`.
fn int_arg(args: &[Bytes], i: usize) -> Result<i64, String> {
    let a = args.get(i).ok_or_else(syntax)?;
    parse_i64(a).ok_or_else(|| "ERR value is not an integer or out of range".into())
}

/// An option value that is one of two words: true for `yes`, false for `no`.
fn choice(word: Option<&Bytes>, yes: u128, no: u128) -> Result<bool, String> {
    match pack(word) {
        w if w == yes => Ok(true),
        w if w == no => Ok(false),
        _ => Err(syntax()),
    }
}

fn parse(args: &[Bytes]) -> Result<Options<'_>, String> {
    const ARGS: u128 = packed(b"ARGS");
    const TAGS: u128 = packed(b"TAGS");
    const TTL: u128 = packed(b"TTL");
    const MAXLAG: u128 = packed(b"MAXLAG");
    const CONSISTENCY: u128 = packed(b"CONSISTENCY");
    const PRIORITY: u128 = packed(b"PRIORITY");
    const FORMAT: u128 = packed(b"FORMAT");
    const USER: u128 = packed(b"USER");
    const NOCACHE: u128 = packed(b"NOCACHE");
    let mut o = Options::default();
    let mut i = 2;
    // Option words compared packed (no allocation, no per-byte loop).
    while i < args.len() {
        match pack(args.get(i)) {
            ARGS => {
                let n = parse_count(args.get(i + 1), args.len().saturating_sub(i + 2))?;
                o.args = &args[i + 2..i + 2 + n];
                i += 2 + n;
            }
            TAGS => {
                let n = parse_count(args.get(i + 1), args.len().saturating_sub(i + 2))?;
                o.tags = args[i + 2..i + 2 + n]
                    .iter()
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .collect();
                i += 2 + n;
            }
            TTL => {
                let n = int_arg(args, i + 1)?;
                if n <= 0 || n > i64::MAX / 1000 {
                    return Err("ERR invalid expire time in 'query' command".into());
                }
                o.ttl = Some(n as u64);
                i += 2;
            }
            MAXLAG => {
                let n = int_arg(args, i + 1)?;
                if n < 0 {
                    return Err("ERR MAXLAG must be zero or more milliseconds".into());
                }
                o.max_lag = Some(n as u64);
                i += 2;
            }
            CONSISTENCY => {
                o.strong = choice(args.get(i + 1), packed(b"STRONG"), packed(b"EVENTUAL"))?;
                i += 2;
            }
            PRIORITY => {
                o.critical = choice(args.get(i + 1), packed(b"CRITICAL"), packed(b"NORMAL"))?;
                i += 2;
            }
            FORMAT => {
                o.json = choice(args.get(i + 1), packed(b"JSON"), packed(b"RESP"))?;
                i += 2;
            }
            USER => {
                // The QUERY limits' key; nothing else reads it.
                o.user = Some(args.get(i + 1).ok_or_else(syntax)?);
                i += 2;
            }
            NOCACHE => {
                o.nocache = true;
                i += 1;
            }
            _ => return Err(syntax()),
        }
    }
    Ok(o)
}

fn source_name(db: &Database, s: Source) -> String {
    match s {
        Source::Primary => "primary".into(),
        Source::Replica(i) => format!("replica:{}", db.instances[i].name),
    }
}

/// Runs QUERY, DB.STATUS or DB.TRACK and records the command's statistics.
pub async fn run(app: &App, session: &mut Session, out: &mut Reply, idx: usize, args: &[Bytes]) {
    let start = quanta::Instant::now();
    let before = out.len();
    match super::table::REGISTRY.all[idx].name {
        "query" => query(app, session, out, args).await,
        "db.status" => status(app, out),
        "db.track" => track(app, out, args).await,
        "db.failover" => failover(app, out, args).await,
        _ => out.error("ERR unknown database command"),
    }
    record(app, session, out, idx, args, start, before);
}

/// A QUERY that the connection's own shapes and the result cache answer, answered without
/// building the async path's futures (what most QUERYs are, and cost most in their number).
/// `true` when it answered, its statistics recorded; `false`: [`run`] takes the command from
/// the start, nothing having been written or changed.
pub fn run_cached(
    app: &App,
    session: &mut Session,
    out: &mut Reply,
    idx: usize,
    args: &[Bytes],
) -> bool {
    let start = quanta::Instant::now();
    let before = out.len();
    if super::table::REGISTRY.all[idx].name != "query" || app.db.is_none() {
        return false;
    }
    let Ok(opts) = parse(args) else {
        return false;
    };
    let Some(i) = session.query_shapes.iter().position(|(s, _)| *s == args[1]) else {
        return false;
    };
    if !cached(app, session, out, &session.query_shapes[i].1, &opts) {
        return false;
    }
    // The most recent shape last, as `query` keeps them.
    if i + 1 < session.query_shapes.len() {
        let shape = session.query_shapes.swap_remove(i);
        session.query_shapes.push(shape);
    }
    record(app, session, out, idx, args, start, before);
    true
}

/// A database command's statistics: its latency, whether it failed (its reply, written
/// from `before` on, is an error), the slow log.
fn record(
    app: &App,
    session: &Session,
    out: &Reply,
    idx: usize,
    args: &[Bytes],
    start: quanta::Instant,
    before: usize,
) {
    let took = start.elapsed();
    let stats = &app.metrics.commands[idx];
    stats.record(took);
    if out.buf.get(before) == Some(&b'-') {
        stats.failed.inc();
        app.metrics.error_replies.inc();
    }
    app.slowlog.maybe_record(session, args, took);
}

async fn query(app: &App, session: &mut Session, out: &mut Reply, args: &[Bytes]) {
    let Some(db) = &app.db else {
        return out.error(NO_DATABASE);
    };
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => return out.error(&e),
    };
    // The connection's own recent shapes first: no shared lock, no shared counter touched.
    let (sql, shape) = match session.query_shapes.iter().position(|(s, _)| *s == args[1]) {
        Some(i) => session.query_shapes.swap_remove(i),
        None => match db.shape(&args[1], session.acl.as_ref().is_none_or(|u| u.ddl)) {
            // A copy: a slice would keep the whole read buffer it came in alive.
            Ok(s) => (Bytes::copy_from_slice(&args[1]), s),
            Err(e) => return out.error(&e.to_string()),
        },
    };
    run_shape(app, db, session, out, &shape, &opts).await;
    if session.query_shapes.len() >= SESSION_SHAPES {
        session.query_shapes.remove(0);
    }
    session.query_shapes.push((sql, shape));
}

/// A read this instance's QUERY cache answers, answered without entering the read path (no
/// future built, nothing cloned): the common case, and the one a cache tier is for. `false`:
/// not a cacheable read, or not in the cache.
fn cached(
    app: &App,
    session: &Session,
    out: &mut Reply,
    shape: &Shape,
    opts: &Options<'_>,
) -> bool {
    if opts.nocache || opts.strong || shape.kind() != crate::db::classify::Kind::Read {
        return false;
    }
    let key = result_key(app, shape, role(session), opts);
    match app.queries.get(key, super::session_now(session)) {
        Some(hit) => {
            out.raw(hit.reply(format(session, opts)));
            true
        }
        None => false,
    }
}

/// A result's cache key: per PostgreSQL role (one role's rows are never served to another),
/// statement and arguments.
fn result_key(app: &App, shape: &Shape, role: &str, opts: &Options<'_>) -> u128 {
    let statement = u128::from_le_bytes(shape.fingerprint);
    app.queries.key(statement, &[role.as_bytes()], opts.args)
}

/// The PostgreSQL role a connection's statements run as ("" for the pool's login role).
fn role(session: &Session) -> &str {
    session
        .acl
        .as_ref()
        .and_then(|u| u.db_role.as_deref())
        .unwrap_or("")
}

/// The form a QUERY's result is written in.
fn format(session: &Session, opts: &Options<'_>) -> Format {
    if opts.json {
        Format::Json
    } else if session.resp3 {
        Format::Resp3
    } else {
        Format::Resp2
    }
}

/// Statement shapes each connection keeps for itself.
const SESSION_SHAPES: usize = 16;

async fn run_shape(
    app: &App,
    db: &Database,
    session: &mut Session,
    out: &mut Reply,
    shape: &Arc<Shape>,
    opts: &Options<'_>,
) {
    let priority = if opts.critical {
        Priority::Critical
    } else {
        Priority::Normal
    };
    let format = format(session, opts);
    if shape.kind() != crate::db::classify::Kind::Read {
        return write(app, db, session, out, shape, opts, priority, format).await;
    }
    match read(app, db, session, out, shape, opts, priority, format).await {
        Err(DbError::IsWrite) => write(app, db, session, out, shape, opts, priority, format).await,
        Err(e) => out.error(&e.to_string()),
        Ok(()) => {}
    }
}

/// The read path: the cache, else the database under single flight.
#[allow(clippy::too_many_arguments)]
async fn read(
    app: &App,
    db: &Database,
    session: &mut Session,
    out: &mut Reply,
    shape: &Arc<Shape>,
    opts: &Options<'_>,
    priority: Priority,
    format: Format,
) -> Result<(), DbError> {
    let cache = &app.queries;
    // Read your writes, until every replica has replayed this connection's last write.
    if session.db_write_lsn != 0 && db.replicas_past(session.db_write_lsn) {
        session.db_write_lsn = 0;
    }
    let cacheable = !opts.nocache && !opts.strong;
    let read = ReadOpts {
        max_lag: opts.max_lag.map_or(db.max_lag, Duration::from_millis),
        min_lsn: session.db_write_lsn,
        strong: opts.strong,
        priority,
        cacheable,
        run_as: run_as(session),
    };
    let key = result_key(app, shape, role(session), opts);
    let now = super::session_now(session);
    if cacheable {
        if let Some(hit) = cache.get(key, now) {
            out.raw(hit.reply(format));
            return Ok(());
        }
    }
    let generation = cache.generation();
    let explicit_ttl = opts.ttl.is_some();
    let ttl_ms = opts
        .ttl
        .unwrap_or(db.query_ttl.as_secs())
        .saturating_mul(1000);
    // Tiered: results are kept only while this instance hears the others' writes.
    let l2 = app.l2.as_ref().filter(|_| cacheable);
    let coherent = l2.is_none() || cache.coherent.load(Ordering::Acquire);
    if let Some(l2) = l2.filter(|_| coherent) {
        if let Some((result, tags, left_ms)) = query_l2::lookup(l2, key).await {
            let result = Arc::new(result);
            cache.store(
                key,
                result.clone(),
                &tags,
                left_ms,
                generation,
                super::unix_ms(),
            );
            render_into(out, &result, format, || "l2".into());
            return Ok(());
        }
    }
    let who = limited_user(session, opts);
    let fetch = || async {
        // Only what reaches PostgreSQL counts against the QUERY limits.
        app.rate
            .check_query(&who, is_admin(session))
            .await
            .map_err(DbError::Refused)?;
        let rc = db.begin_read(shape.clone(), &read).await?;
        if !cacheable {
            // Nothing is stored: no tags to look at.
            let (result, source, _) = rc.run(opts.args).await?;
            return Ok((Arc::new(result), source));
        }
        let mut tags = rc.tags.clone();
        tags.extend(opts.tags.iter().cloned());
        let versions = match l2 {
            Some(l2) if coherent => query_l2::versions(l2, &tags).await,
            _ => None,
        };
        let storable =
            (explicit_ttl || !rc.volatile) && coherent && (l2.is_none() || versions.is_some());
        let pending = cache
            .pending_lsn(&tags)
            .max(versions.as_ref().map_or(0, |v| v.lsn));
        let (result, source, proof) = rc.run(opts.args).await?;
        let result = Arc::new(result);
        if storable && proof >= pending {
            cache.store(
                key,
                result.clone(),
                &tags,
                ttl_ms,
                generation,
                super::unix_ms(),
            );
            if let (Some(l2), Some(v)) = (l2, versions) {
                let (l2, result) = (l2.clone(), result.clone());
                tokio::spawn(async move { query_l2::store(&l2, key, &result, &v, ttl_ms).await });
            }
        } else if storable {
            cache.stats.fills_dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok((result, source))
    };
    // Single flight for identical misses that started after the same invalidations and ask
    // nothing special of the replica.
    let got = if cacheable && read.min_lsn == 0 {
        let flight = cache.key(key, &[&generation.to_le_bytes()], &[]);
        cache.single_flight(flight, fetch).await
    } else {
        fetch().await
    };
    let (result, source) = got?;
    render_into(out, &result, format, || source_name(db, source));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn write(
    app: &App,
    db: &Database,
    session: &mut Session,
    out: &mut Reply,
    shape: &Shape,
    opts: &Options<'_>,
    priority: Priority,
    format: Format,
) {
    if let Some(u) = session.acl.as_ref().filter(|u| u.query_readonly) {
        return out.error(&format!(
            "NOPERM User {} has no permissions to run a write QUERY",
            u.name
        ));
    }
    if let Err(e) = app
        .rate
        .check_query(&limited_user(session, opts), is_admin(session))
        .await
    {
        return out.error(&e);
    }
    let written = match db.write(shape, opts.args, priority, &run_as(session)).await {
        Ok(w) => w,
        Err(e) => {
            if matches!(e, DbError::Interrupted(_)) {
                // Its outcome is unknown, and so are its tags' fates: drop everything cached.
                let lsn = db.primary_lsn().await;
                app.queries.flush(lsn);
                announce(app, &[], lsn, true).await;
            }
            return out.error(&e.to_string());
        }
    };
    let mut tags = written.tags.clone();
    tags.extend(opts.tags.iter().cloned());
    if written.flush_all {
        app.queries.flush(written.lsn);
    } else {
        app.queries.invalidate(&tags, written.lsn);
    }
    announce(app, &tags, written.lsn, written.flush_all).await;
    session.db_write_lsn = session.db_write_lsn.max(written.lsn);
    match written.rows {
        Some(rows) => render_into(out, &rows, format, || "primary".into()),
        None => out.int(written.affected as i64),
    }
}

/// Admin ACL users bypass the QUERY limits.
fn is_admin(session: &Session) -> bool {
    session.acl.as_ref().is_some_and(|u| u.admin)
}

/// Whose rights the connection's QUERYs run with (its ACL user's `db_role`, `query_readonly`).
fn run_as(session: &Session) -> RunAs {
    match &session.acl {
        Some(u) => RunAs {
            role: u.db_role.clone(),
            read_only: u.query_readonly,
        },
        None => RunAs::default(),
    }
}

/// Whom the QUERY limits count a QUERY against: its `USER <id>`, else the connection's user.
fn limited_user(session: &Session, opts: &Options<'_>) -> String {
    match opts.user {
        Some(u) => String::from_utf8_lossy(u).into_owned(),
        None => session.user.clone(),
    }
}

/// The L2 channel on which instances announce their writes to each other.
pub const INVALIDATE_CHANNEL: &str = "strata:query:invalidate";

/// Tiered mode: tells the other instances (through L2) which tags a write invalidated, and
/// bumps those tags' versions in L2 (so L2's results that read them are no longer valid), before
/// the writer's client gets its reply. A write this instance cannot announce (L2 unreachable)
/// reaches the others' caches only through DB.TRACK or their TTL (docs/database.md).
pub async fn announce(app: &App, tags: &[String], lsn: u64, flush: bool) {
    // Without a database there are no QUERY results to invalidate (nor version keys to make).
    let (Some(l2), Some(_)) = (&app.l2, &app.db) else {
        return;
    };
    let mut payload = format!("{} {lsn} {}", app.run_id, u8::from(flush));
    for t in tags {
        payload.push('\n');
        payload.push_str(t);
    }
    let mut pipe = redis::pipe();
    query_l2::bump(&mut pipe, tags, lsn, flush);
    pipe.cmd("PUBLISH").arg(INVALIDATE_CHANNEL).arg(payload);
    if l2.run(0, false, false, &pipe, Keys::First).await.is_err() {
        tracing::warn!("cannot announce a QUERY write to the other instances: L2 unavailable");
    }
}

/// Applies another instance's announcement; false when it is not one.
fn apply_announcement(app: &App, payload: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(payload) else {
        return false;
    };
    let mut lines = text.split('\n');
    let mut head = lines.next().unwrap_or("").split(' ');
    let (Some(from), Some(lsn), Some(flush)) = (head.next(), head.next(), head.next()) else {
        return false;
    };
    let Ok(lsn) = lsn.parse::<u64>() else {
        return false;
    };
    if from == app.run_id {
        return true;
    }
    if flush == "1" {
        app.queries.flush(lsn);
    } else {
        let tags: Vec<String> = lines.map(str::to_string).collect();
        app.queries.invalidate(&tags, lsn);
    }
    true
}

/// Empties the QUERY cache after invalidations may have been missed (a lost LISTEN or
/// announcement subscription): at once, so that fills in flight are dropped, and again at the
/// primary's position, so that results read from replicas behind a missed write are not kept.
async fn flush_missed(app: &App) {
    app.queries.flush(0);
    if let Some(db) = &app.db {
        let lsn = db.primary_lsn().await;
        app.queries.flush(lsn);
    }
}

/// Tiered mode: keeps a subscription to the other instances' announcements, reconnecting
/// after 1, 2, 4, then every 4 seconds. Whenever the subscription (re)starts or ends, the
/// QUERY cache is flushed at the primary's position: announcements may have been missed.
async fn follow_announcements(app: Arc<App>, l2: Arc<crate::cache::l2::L2>) {
    use crate::cache::l2::BACKOFF_MS;
    let mut shutdown = app.shutdown_signal();
    let mut failures = 0usize;
    loop {
        if app.is_shutting_down() {
            return;
        }
        // The L2 supervisor reconnects; subscribing before it has would only fail.
        while !l2.is_up() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.changed() => return,
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(10_000);
        let push: crate::cache::l2::PushFn = Arc::new(move |p: redis::PushInfo| match p.kind {
            redis::PushKind::Message => {
                let data = match p.data.get(1) {
                    Some(redis::Value::BulkString(b)) => b.clone(),
                    _ => Vec::new(),
                };
                // A backlog this deep means the cache cannot keep up: resubscribe and flush.
                if tx.try_send(Some(data)).is_err() {
                    let _ = tx.try_send(None);
                }
            }
            redis::PushKind::Disconnection => {
                let _ = tx.try_send(None);
            }
            _ => {}
        });
        let subscribed = match l2.dedicated(0, true, Some(push)).await {
            Ok(mut conn) => conn
                .subscribe("subscribe", &[INVALIDATE_CHANNEL.as_bytes().to_vec()])
                .await
                .ok()
                .map(|()| conn),
            Err(_) => None,
        };
        if let Some(_conn) = subscribed {
            failures = 0;
            flush_missed(&app).await;
            app.queries.coherent.store(true, Ordering::Release);
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(Some(payload)) => {
                            apply_announcement(&app, &payload);
                        }
                        _ => break,
                    },
                    _ = shutdown.changed() => return,
                }
            }
            app.queries.coherent.store(false, Ordering::Release);
            flush_missed(&app).await;
        }
        let wait = BACKOFF_MS[failures.min(BACKOFF_MS.len() - 1)];
        failures += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// DB.STATUS: one entry per instance (in configuration order) with its role, health, lag, the
/// weight in force, breaker, last check, CPU, response time and pool statistics, then the recent
/// role changes; a map in RESP3, a flat array in RESP2.
fn status(app: &App, out: &mut Reply) {
    let Some(db) = &app.db else {
        return out.error(NO_DATABASE);
    };
    let candidates: Vec<_> = db.replicas().map(|r| r.candidate()).collect();
    let changes: Vec<String> = db.roles.read().changes.iter().cloned().collect();
    let now_lsn = db
        .history
        .latest_before(std::time::Instant::now())
        .map(|s| s.1);
    out.array(db.instances.len() + 1);
    for inst in db.instances() {
        let primary = db.is_primary(inst.index);
        let sample = inst.lag.sample();
        let pools = inst.pools();
        let reads = pools.stats(Role::Read);
        let check = inst.health.last();
        let mut fields: Vec<(&str, String)> = vec![
            ("name", inst.name.clone()),
            ("role", db.role_of(inst.index).into()),
            (
                "status",
                if inst.in_rotation() { "up" } else { "down" }.into(),
            ),
            (
                "health",
                match &check {
                    None => "unchecked".into(),
                    Some(r) if r.ok() => "ok".into(),
                    Some(r) => format!("failing: {}", r.error.as_deref().unwrap_or("")),
                },
            ),
            (
                "last_check",
                check.as_ref().map_or("-".into(), |r| {
                    humantime::format_rfc3339_millis(r.at).to_string()
                }),
            ),
            (
                "check_ms",
                check.as_ref().map_or("-".into(), |r| {
                    format!("{:.3}", r.took.as_secs_f64() * 1000.0)
                }),
            ),
            (
                "in_recovery",
                check
                    .as_ref()
                    .filter(|r| r.ok())
                    .map_or("-".into(), |r| r.in_recovery.to_string()),
            ),
            (
                "timeline",
                check
                    .as_ref()
                    .and_then(|r| r.timeline)
                    .map_or("-".into(), |t| t.to_string()),
            ),
            (
                "breaker",
                inst.breaker.lock().state(super::unix_ms()).name().into(),
            ),
        ];
        if primary {
            let listener = db.listener.lock();
            let (state, pid) = match listener.as_ref() {
                Some(l) if l.is_connected() => (
                    "connected",
                    l.backend_pid().map_or("-".into(), |p| p.to_string()),
                ),
                Some(_) => ("connecting", "-".into()),
                None => ("off", "-".into()),
            };
            fields.push(("listener", state.into()));
            fields.push(("listener_pid", pid));
            fields.push(("wal_lsn", lsn_or_dash(now_lsn)));
        } else {
            let lag = crate::db::health::replica_lag(db, inst);
            fields.push((
                "lag_ms",
                lag.map_or("-".into(), |l| l.as_millis().to_string()),
            ));
            fields.push((
                "lag_bytes",
                match (sample, now_lsn) {
                    (Some(s), Some(p)) => p.saturating_sub(s.replay_lsn).to_string(),
                    _ => "-".into(),
                },
            ));
            fields.push((
                "sample_age_ms",
                sample.map_or("-".into(), |s| s.at.elapsed().as_millis().to_string()),
            ));
            fields.push(("replay_lsn", lsn_or_dash(sample.map(|s| s.replay_lsn))));
            fields.push((
                "receive_lsn",
                lsn_or_dash(check.as_ref().filter(|r| r.in_recovery).and_then(|r| r.lsn)),
            ));
            fields.push((
                "wal_receiver",
                match check.as_ref().filter(|r| r.ok()) {
                    None => "-".into(),
                    Some(r) => match &r.receiver {
                        Some(w) => format!("{} from {}:{}", w.status, w.sender_host, w.sender_port),
                        None => "none".into(),
                    },
                },
            ));
            let repair = inst.health.repair.lock().clone();
            fields.push(("repoints", repair.repoints.to_string()));
            fields.push(("resyncs", repair.resyncs.to_string()));
            fields.push((
                "last_resync",
                repair.last_resync.unwrap_or_else(|| "-".into()),
            ));
            fields.push(("weight", inst.weight.to_string()));
            fields.push((
                "effective_weight",
                format!(
                    "{:.2}",
                    crate::db::balancer::effective_weight(&inst.candidate(), &candidates)
                ),
            ));
        }
        let (mem, disk) = *inst.health.node.lock();
        let pct = |v: Option<f64>| v.map_or("-".into(), |c| format!("{:.1}", c * 100.0));
        fields.push(("cpu", pct(*inst.cpu.lock())));
        fields.push(("mem", pct(mem)));
        fields.push(("disk", pct(disk)));
        fields.push((
            "ewma_ms",
            inst.ewma.value().map_or("-".into(), |v| format!("{v:.3}")),
        ));
        fields.push((
            "queries",
            inst.stats.queries.load(Ordering::Relaxed).to_string(),
        ));
        fields.push((
            "errors",
            inst.stats.errors.load(Ordering::Relaxed).to_string(),
        ));
        fields.push(("pool_size", reads.size.to_string()));
        fields.push(("pool_idle", reads.idle.to_string()));
        fields.push(("pool_in_use", reads.in_use.to_string()));
        fields.push(("pool_waiting", reads.waiting.to_string()));
        if primary {
            let writes = pools.stats(Role::Write);
            fields.push(("write_pool_size", writes.size.to_string()));
            fields.push(("write_pool_in_use", writes.in_use.to_string()));
            fields.push(("write_pool_waiting", writes.waiting.to_string()));
        }
        out.map(fields.len());
        for (k, v) in fields {
            out.bulk(k.as_bytes());
            out.bulk(v.as_bytes());
        }
    }
    out.map(2);
    out.bulk(b"failovers");
    out.bulk(db.failovers.load(Ordering::Relaxed).to_string().as_bytes());
    out.bulk(b"role_changes");
    out.array(changes.len());
    for c in changes {
        out.bulk(c.as_bytes());
    }
}

/// The L2 key of the failover lease: only its holder promotes a replica.
const LEASE_KEY: &str = "strata:db:failover-lease";

/// Takes the failover lease for `ttl`, or renews it if this instance holds it already.
async fn take_lease(l2: &Arc<crate::cache::l2::L2>, id: &str, ttl: Duration) -> bool {
    let ms = ttl.as_millis().max(1) as u64;
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(LEASE_KEY)
        .arg(id)
        .arg("NX")
        .arg("PX")
        .arg(ms)
        .cmd("GET")
        .arg(LEASE_KEY);
    match l2.run(0, false, false, &pipe, Keys::First).await {
        Ok((values, _)) => match values.get(1) {
            Some(redis::Value::BulkString(holder)) if holder.as_slice() == id.as_bytes() => {
                let mut renew = redis::pipe();
                renew.cmd("PEXPIRE").arg(LEASE_KEY).arg(ms);
                let _ = l2.run(0, false, false, &renew, Keys::First).await;
                true
            }
            _ => false,
        },
        // L2 unreachable: acting alone could make two primaries; wait for it.
        Err(_) => false,
    }
}

/// DB.FAILOVER [TO <name>]: a planned switchover (docs/operations.md).
async fn failover(app: &App, out: &mut Reply, args: &[Bytes]) {
    let Some(db) = &app.db else {
        return out.error(NO_DATABASE);
    };
    let to = match args.len() {
        1 => None,
        3 if args[1].eq_ignore_ascii_case(b"TO") => {
            Some(String::from_utf8_lossy(&args[2]).into_owned())
        }
        _ => return out.error("ERR syntax error"),
    };
    match crate::db::failover::switchover(db, to.as_deref()).await {
        Ok(text) => out.bulk(text.as_bytes()),
        Err(e) => out.error(&format!("ERR switchover failed: {e}")),
    }
}

/// DB.TRACK <table> [<table> ...] | DB.TRACK *: installs the triggers that tell Strata about
/// writes made outside it; replies with the tables now tracked.
async fn track(app: &App, out: &mut Reply, args: &[Bytes]) {
    let Some(db) = &app.db else {
        return out.error(NO_DATABASE);
    };
    let tables: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    match db.track(&tables).await {
        Ok(tracked) => {
            out.array(tracked.len());
            for t in tracked {
                out.bulk(t.as_bytes());
            }
        }
        Err(e) => out.error(&e.to_string()),
    }
}

/// Starts the database tier: its background tasks, and the LISTEN connection through which
/// DB.TRACK's triggers report writes made outside Strata. A notification counts as a write at
/// the primary's position when it arrived (read after the notification, so at or past the
/// write's commit); every (re)connect of the listener flushes the QUERY cache, since
/// notifications may have been missed meanwhile.
pub fn start(app: &Arc<App>) {
    let Some(db) = &app.db else {
        return;
    };
    if let Some(l2) = &app.l2 {
        tokio::spawn(follow_announcements(app.clone(), l2.clone()));
        let (l2, id) = (l2.clone(), app.run_id.clone());
        let lease: crate::db::health::Lease = Arc::new(move |ttl: Duration| {
            let (l2, id) = (l2.clone(), id.clone());
            Box::pin(async move { take_lease(&l2, &id, ttl).await })
        });
        let _ = db.lease.set(lease);
    }
    let weak = Arc::downgrade(app);
    let _ = db.on_roles_changed.set(Box::new(move |lsn| {
        let Some(app) = weak.upgrade() else {
            return;
        };
        // Results cached before may reflect writes the new timeline lost.
        app.queries.flush(lsn);
        tokio::spawn(async move { announce(&app, &[], lsn, true).await });
    }));
    db.start(app.shutdown_signal());
    let on_notify = {
        let app = app.clone();
        Arc::new(move |tables: Vec<String>| {
            let app = app.clone();
            tokio::spawn(async move {
                let Some(db) = &app.db else {
                    return;
                };
                if tables.iter().any(|t| t == "*") {
                    // DDL (the names it touched follow in their own notifications).
                    db.schema_changed();
                }
                let tags: Vec<String> = tables
                    .iter()
                    .filter(|t| *t != "*")
                    .map(|t| format!("table:{t}"))
                    .collect();
                if !tags.is_empty() {
                    let lsn = db.primary_lsn().await;
                    app.queries.invalidate(&tags, lsn);
                }
            });
        })
    };
    let on_reconnect = {
        let app = app.clone();
        Arc::new(move || {
            // The first flush at once, on the listener's task, before any notification.
            app.queries.flush(0);
            let app = app.clone();
            tokio::spawn(async move { flush_missed(&app).await });
        })
    };
    db.listen(on_notify, on_reconnect, app.shutdown_signal());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WORDS: [&[u8]; 15] = [
        b"ARGS",
        b"TAGS",
        b"TTL",
        b"MAXLAG",
        b"CONSISTENCY",
        b"PRIORITY",
        b"FORMAT",
        b"USER",
        b"NOCACHE",
        b"STRONG",
        b"EVENTUAL",
        b"CRITICAL",
        b"NORMAL",
        b"JSON",
        b"RESP",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// An argument packs as an option word exactly when it equals the word ignoring case,
        /// whatever bytes it holds (letters flipped in case, bytes one bit off a letter, NUL
        /// padding, trailing spaces, longer than any word).
        #[test]
        fn option_words_match_ignoring_case_and_nothing_else(
            word in 0..WORDS.len(),
            edits in proptest::collection::vec((0..20usize, prop_oneof![
                Just(0x20u8), Just(0x40), Just(0x01), Just(0x80)]), 0..3),
            tail in prop_oneof![Just(vec![]), Just(vec![b' ']), Just(vec![0u8]),
                proptest::collection::vec(any::<u8>(), 0..14)],
        ) {
            let mut w = WORDS[word].to_vec();
            for (at, bit) in edits {
                if let Some(b) = w.get_mut(at) {
                    *b ^= bit;
                }
            }
            w.extend_from_slice(&tail);
            let arg = Bytes::from(w.clone());
            for other in WORDS {
                prop_assert_eq!(pack(Some(&arg)) == packed(other), w.eq_ignore_ascii_case(other));
            }
        }
    }

    #[test]
    fn options_parse_in_any_case() {
        let args: Vec<Bytes> = [
            "QUERY",
            "SELECT $1",
            "args",
            "1",
            "42",
            "Format",
            "json",
            "consistency",
            "Strong",
            "nocache",
            "TtL",
            "5",
        ]
        .into_iter()
        .map(Bytes::from)
        .collect();
        let o = parse(&args).unwrap();
        assert_eq!(o.args, &args[4..5]);
        assert!(o.json && o.strong && o.nocache);
        assert_eq!(o.ttl, Some(5));
        for bad in [
            &["ARG", "0"][..],
            &["ARGSX", "0"],
            &["FORMAT", "JSONX"],
            &["NOCACHE\0"],
        ] {
            let mut a: Vec<Bytes> = vec![Bytes::from("QUERY"), Bytes::from("SELECT 1")];
            a.extend(bad.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())));
            assert_eq!(parse(&a).unwrap_err(), "ERR syntax error", "{bad:?}");
        }
    }
}
