//! Commands: the table, the dispatcher and one file per command family.
//!
//! Data flows one way: the connection hands an argument vector to [`execute`], which looks the
//! command up in the table, checks arity, runs the guard chain (`guard::admit`), queues it if a
//! MULTI is open, takes the store gate (shared, or exclusive for multi-key and whole-store
//! commands), runs the handler, and records statistics. Handlers only parse their arguments,
//! apply them to the store and write the reply; they never repeat these checks.

pub mod acl;
pub mod args;
pub mod connection;
pub mod error;
pub mod float80;
pub mod hashes;
pub mod keys;
pub mod lists;
pub mod pubsub;
pub mod query;
pub mod rate;
pub mod scripting;
pub mod server;
pub mod sets;
pub mod strings;
pub mod table;
pub mod tags;
pub mod tiered;
pub mod transactions;
pub mod typed;
pub mod zsets;

use crate::app::App;
use crate::server::reply::Reply;
use crate::server::session::Session;
use bytes::Bytes;
pub use error::{CmdError, CmdResult};
use table::{Command, DATABASE, EXCLUSIVE, NOQUEUE, REGISTRY};

/// Everything a handler may touch while it runs.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub session: &'a mut Session,
    pub out: &'a mut Reply,
    /// Unix time in milliseconds, read once per command (scripts and EXEC keep one time).
    pub now: u64,
    /// Inside EVAL: the gate is already held and some commands are refused.
    pub in_script: bool,
    /// Inside EXEC: the gate is already held.
    pub in_exec: bool,
}

impl Ctx<'_> {
    pub fn db(&self) -> usize {
        self.session.db
    }
}

/// Refuses a reply of `elements` elements that could not fit the client's output buffer limit
/// (SRANDMEMBER/HRANDFIELD with a huge negative count would otherwise build gigabytes).
pub fn reply_fits(ctx: &Ctx<'_>, elements: u64) -> Result<(), CmdError> {
    let limit = ctx.app.config.read().server.client_output_buffer_limit.0;
    if elements.saturating_mul(16) > limit {
        return Err(CmdError::new(
            "ERR reply would exceed client-output-buffer-limit",
        ));
    }
    Ok(())
}

/// HRANDFIELD's and ZRANDMEMBER's `key [count [<word>]]` (`word` WITHVALUES or WITHSCORES):
/// the count (`None` without one) and whether the word was given, checked in Redis's order.
pub fn random_count(
    ctx: &Ctx<'_>,
    args: &[Bytes],
    word: &str,
) -> Result<(Option<i64>, bool), CmdError> {
    let Some(count) = args.get(2) else {
        return Ok((None, false));
    };
    let count = args::int(count)?;
    if count == i64::MIN {
        return Err(CmdError::new(
            "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        ));
    }
    let with = match args.get(3) {
        None => false,
        Some(w) if args.len() == 4 && args::is(w, word) => true,
        Some(_) => return Err(error::SYNTAX),
    };
    if with && count.unsigned_abs() > (i64::MAX / 2) as u64 {
        return Err(CmdError::new("ERR value is out of range"));
    }
    if count < 0 {
        reply_fits(ctx, count.unsigned_abs())?;
    }
    Ok((Some(count), with))
}

/// The positions (in `0..len`, `len` > 0) a random pick of `count` elements returns, as Redis
/// picks them: all of them, in order, for a count at least `len`; that many distinct ones for
/// a smaller positive count; for a negative one, its magnitude drawn with repetition.
pub fn random_picks(len: usize, count: i64) -> Vec<usize> {
    use rand::seq::IndexedRandom;
    use rand::Rng;
    let mut rng = rand::rng();
    if count >= len as i64 {
        (0..len).collect()
    } else if count >= 0 {
        let all: Vec<usize> = (0..len).collect();
        all.choose_multiple(&mut rng, count as usize)
            .copied()
            .collect()
    } else {
        (0..count.unsigned_abs())
            .map(|_| rng.random_range(0..len))
            .collect()
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The text Redis gives for an unknown command: the name and up to the first arguments.
fn unknown_command(args: &[Bytes]) -> CmdError {
    let mut s = format!(
        "ERR unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(&args[0])
            .chars()
            .take(128)
            .collect::<String>()
    );
    for a in args.iter().skip(1) {
        let a = String::from_utf8_lossy(a);
        if s.len() + a.len() > 256 {
            break;
        }
        s.push_str(&format!("'{a}' "));
    }
    CmdError::msg(s)
}

/// Resolves `args` to a command (or subcommand) index and checks its arity.
pub fn resolve(args: &[Bytes]) -> Result<usize, CmdError> {
    let reg = &*REGISTRY;
    if args.is_empty() {
        return Err(CmdError::new("ERR empty command"));
    }
    let Some(mut idx) = reg.lookup(&args[0]) else {
        return Err(unknown_command(args));
    };
    let top = reg.all[idx];
    if !top.subcommands.is_empty() && args.len() >= 2 {
        match reg.lookup_sub(idx, &args[1]) {
            Some(s) => idx = s,
            None => {
                return Err(CmdError::msg(format!(
                    "ERR unknown subcommand '{}'. Try {} HELP.",
                    String::from_utf8_lossy(&args[1])
                        .chars()
                        .take(128)
                        .collect::<String>(),
                    top.name.to_ascii_uppercase()
                )))
            }
        }
    }
    let c = reg.all[idx];
    // Subcommand arity counts the container's name too, as in Redis (CLIENT SETNAME is 3).
    if !c.arity_ok(args.len()) {
        return Err(error::arity(&reg.full_names[idx]));
    }
    Ok(idx)
}

/// Whether running this command needs the exclusive side of the store gate.
fn needs_exclusive(c: &Command, args: &[Bytes]) -> bool {
    c.flag(EXCLUSIVE) || c.key_indexes(args).nth(1).is_some()
}

/// Runs one client request: the full admission path, then the handler (standalone mode).
pub fn execute(app: &App, session: &mut Session, out: &mut Reply, args: &[Bytes]) {
    if let Some(idx) = admit(app, session, out, args) {
        run_local(app, session, out, idx, args);
    }
}

/// Runs one client request in either mode: standalone on L1, or tiered through L2.
pub async fn dispatch(
    app: &App,
    session: &mut Session,
    out: &mut Reply,
    args: &[Bytes],
    io: Option<tiered::Io<'_>>,
) {
    let Some(idx) = admit(app, session, out, args) else {
        return;
    };
    if REGISTRY.all[idx].flag(DATABASE) {
        if query::run_cached(app, session, out, idx, args) {
            return;
        }
        return query::run(app, session, out, idx, args).await;
    }
    match &app.l2 {
        None => run_local(app, session, out, idx, args),
        Some(l2) => tiered::run(app, l2, session, out, idx, args, io).await,
    }
}

/// Whether requests like `args` have memory worth loading ahead of their turn ([`prefetch`]):
/// RATE on this instance's limiter, whose state for a key is spread over cache lines that
/// a large key set keeps cold.
pub fn prefetches(app: &App, args: &[Bytes]) -> bool {
    args.first().is_some_and(|name| local_rate(app, name))
}

fn local_rate(app: &App, name: &[u8]) -> bool {
    name.len() == 4 && name.eq_ignore_ascii_case(b"rate") && app.l2.is_none()
}

/// A hint for a request that runs soon: start loading the memory it will read, so that its
/// cache misses overlap with the work of the requests before it. `next`: it runs right after
/// the one about to run (its first lines were asked for one request earlier, so the ones they
/// point to can be now); otherwise, the one after that. No effect on what any request does.
pub fn prefetch(app: &App, name: &[u8], key: &[u8], next: bool) {
    if local_rate(app, name) {
        app.rate.prefetch_local(key, next);
    }
}

/// The front half of every request: resolve the command and check its arity, run the guard
/// chain, and queue it if a MULTI is open. Returns the command's index when it is to run now;
/// otherwise the reply (an error, or QUEUED) is written.
pub fn admit(app: &App, session: &mut Session, out: &mut Reply, args: &[Bytes]) -> Option<usize> {
    if args.is_empty() {
        return None;
    }
    let idx = match resolve(args) {
        Ok(i) => i,
        Err(e) => {
            app.metrics.error_replies.inc();
            if session.multi.is_some() && args[0].eq_ignore_ascii_case(b"exec") {
                // A malformed EXEC ends the transaction, as Redis's execCommandAbort does.
                transactions::abort(app, session);
                session.upstream = None;
                let why = e.as_str().strip_prefix("ERR ").unwrap_or(e.as_str());
                out.error(&format!(
                    "EXECABORT Transaction discarded because of: {why}"
                ));
                return None;
            }
            if let Some(m) = session.multi.as_mut() {
                m.aborted = true;
            }
            out.error(e.as_str());
            return None;
        }
    };
    let c = REGISTRY.all[idx];
    if let Err(e) = crate::guard::admit(app, session, idx, c, args) {
        if let Some(m) = session.multi.as_mut() {
            m.aborted = true;
        }
        app.metrics.commands[idx].rejected.inc();
        app.metrics.error_replies.inc();
        out.error(e.as_str());
        return None;
    }
    if let Some(m) = session.multi.as_mut() {
        if !c.flag(NOQUEUE) {
            m.queued.push(args.to_vec());
            out.simple("QUEUED");
            return None;
        }
    }
    session
        .info
        .last_cmd
        .store(idx + 1, std::sync::atomic::Ordering::Relaxed);
    Some(idx)
}

/// The back half on this instance: take the store gate (shared, or exclusive for multi-key and
/// whole-store commands) and run the handler.
pub fn run_local(app: &App, session: &mut Session, out: &mut Reply, idx: usize, args: &[Bytes]) {
    let c = REGISTRY.all[idx];
    let exclusive = needs_exclusive(c, args);
    let store = &app.store;
    let _gate = if exclusive {
        either::Left(store.exclusive())
    } else {
        either::Right(store.shared())
    };
    let now = session_now(session);
    let mut ctx = Ctx {
        app,
        session,
        out,
        now,
        in_script: false,
        in_exec: false,
    };
    call(&mut ctx, idx, args);
}

/// The time a session's command runs at: its batch clock, or the real clock for a session
/// no connection drives.
pub fn session_now(session: &Session) -> u64 {
    match session.now_ms {
        0 => unix_ms(),
        t => t,
    }
}

/// Runs a resolved, admitted command with the gate already held; records its statistics.
pub fn call(ctx: &mut Ctx<'_>, idx: usize, args: &[Bytes]) {
    let c = REGISTRY.all[idx];
    // quanta reads the TSC: two reads per command cost far less than two clock_gettime calls.
    let start = quanta::Instant::now();
    let r = (c.handler)(ctx, args);
    let elapsed = start.elapsed();
    if elapsed >= std::time::Duration::from_millis(1) && ctx.session.now_ms != 0 {
        // A slow command: the commands after it in the batch must not run at a stale time.
        ctx.session.now_ms = unix_ms();
    }
    let stats = &ctx.app.metrics.commands[idx];
    stats.record(elapsed);
    if let Err(e) = r {
        stats.failed.inc();
        ctx.app.metrics.error_replies.inc();
        ctx.out.error(e.as_str());
    }
    ctx.app.slowlog.maybe_record(ctx.session, args, elapsed);
}

mod either {
    //! A guard that is one of two lock guards; dropping it releases whichever it holds.
    pub enum Either<A, B> {
        Left(A),
        Right(B),
    }
    pub use Either::{Left, Right};
}
