//! EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT LOAD/EXISTS/FLUSH/KILL/DEBUG/HELP: Lua 5.1
//! scripts with Redis 7.0's semantics.
//!
//! The table flags EVAL* as exclusive, so the dispatcher already holds the store's exclusive gate
//! when these handlers run: a script is atomic, and nothing here takes the gate again. Commands a
//! script calls are resolved here (with the error texts Redis gives scripts), checked against the
//! table flags (no-script, writes from read-only scripts, out of memory before the first write)
//! and run through `command::call` on the script's own session — Redis's fake Lua client: id 0,
//! authenticated, starting in the caller's database, so SELECT inside a script stays inside it.
//! Replies come back as RESP bytes and are converted to Lua values (see `convert`). Time is
//! frozen for the whole script (`ctx.now`), as in Redis.
//!
//! One VM serves all scripts (`Scripts`, created on first use, dropped by SCRIPT FLUSH); scripts
//! are compiled once and kept by SHA1. Shebang lines (`#!lua flags=no-writes,allow-oom`) are
//! honoured as in Redis 7.0. What Redis 7.0.15 really does was checked against it, including
//! where it differs from older documentation: `loadstring` and `load` exist (text only here),
//! creating a global fails with "Attempt to modify a readonly table", `pcall` hands back
//! `redis.call`'s error tables as their text, and `math.random`'s generator is seeded once per
//! process, not per script.
//!
//! Deliberate differences from Redis 7.0, all for bounds:
//! - A script running longer than `server.lua_time_limit_ms` (0 = no limit) is *aborted* with
//!   `ERR Script killed by timeout: it ran longer than lua-time-limit (N ms) script: <sha>, on
//!   @user_script:<line>.` Redis instead starts answering BUSY and waits for SCRIPT KILL; here the
//!   gate makes other clients wait, so the script must end by itself. Writes it made stay made.
//! - Scripts cached by EVAL (not SCRIPT LOAD) are kept in an LRU of [`EVAL_CACHE`] entries, as
//!   Redis 7.4 does; an evicted one answers NOSCRIPT to EVALSHA, which clients handle. The Lua
//!   heap has a memory limit (`lua::MEMORY_LIMIT`); `cjson` nesting is capped at 1000 levels.
//! - SCRIPT KILL cannot reach a running script (it waits for the gate), so it answers NOTBUSY;
//!   SCRIPT DEBUG only accepts NO (there is no Lua debugger). `cmsgpack` and `struct` are absent,
//!   and an error table without `err` (which crashes Redis 7.0.15) becomes `ERR unknown error`.
//!
//! This module does not parse RESP, sandbox Lua or encode JSON: `lua`, `native`, `convert`,
//! `cjson` and `bit` do.

mod bit;
mod cjson;
mod convert;
mod lua;
mod native;

use super::args::{int, is};
use super::error::{CmdError, CmdResult, OOM, SCRIPT_DENIED};
use super::table::{cmd, Command, ALLOW_BUSY, DENYOOM, LOADING, NOSCRIPT, REGISTRY, STALE, WRITE};
use super::Ctx;
use crate::app::App;
use crate::server::reply::Reply;
use crate::server::session::{ClientInfo, Session};
use bytes::Bytes;
use lru::LruCache;
use lua::{RunError, RunState, Vm};
use mlua::{Function, Lua, MultiValue, Value};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// How many EVAL-cached scripts are kept (SCRIPT LOAD-ed ones are never evicted).
pub const EVAL_CACHE: usize = 500;

const NOSCRIPT_ERR: CmdError = CmdError::new("NOSCRIPT No matching script. Please use EVAL.");
const RO_WRITE: &str = "Write commands are not allowed from read-only scripts.";
const UNKNOWN_CMD: &str = "Unknown Redis command called from script";
const WRONG_ARGS: &str = "Wrong number of args calling Redis command from script";

/// The script cache and the VM behind it, shared by all connections.
pub struct Scripts {
    cache: Mutex<Option<Cache>>,
    run: Arc<RunState>,
    /// `math.random`'s state: process-wide and never reset, as Redis's `redisLrand48` is.
    rand: Arc<AtomicU64>,
    /// Refreshed after every change, so INFO and /metrics never wait for a running script.
    stats_count: AtomicUsize,
    stats_memory: AtomicUsize,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            cache: Mutex::new(None),
            run: Arc::new(RunState::default()),
            rand: Arc::new(AtomicU64::new(lua::rand48::INITIAL)),
            stats_count: AtomicUsize::new(0),
            stats_memory: AtomicUsize::new(0),
        }
    }
}

impl Scripts {
    /// Number of cached scripts (INFO's `number_of_cached_scripts`).
    pub fn count(&self) -> usize {
        self.stats_count.load(Ordering::Relaxed)
    }

    /// Bytes used by the Lua heap (INFO's `used_memory_lua`).
    pub fn used_memory(&self) -> usize {
        self.stats_memory.load(Ordering::Relaxed)
    }

    fn refresh_stats(&self, cache: Option<&Cache>) {
        let (n, mem) = cache.map_or((0, 0), |c| (c.scripts.len(), c.vm.used_memory()));
        self.stats_count.store(n, Ordering::Relaxed);
        self.stats_memory.store(mem, Ordering::Relaxed);
    }

    fn cache<'g>(&self, guard: &'g mut Option<Cache>) -> Result<&'g mut Cache, CmdError> {
        if guard.is_none() {
            let vm =
                Vm::new(self.run.clone(), self.rand.clone(), lua::MEMORY_LIMIT).map_err(|e| {
                    CmdError::msg(format!(
                        "ERR Failed to start the Lua VM: {}",
                        lua::root_message(&e)
                    ))
                })?;
            *guard = Some(Cache {
                vm,
                scripts: HashMap::new(),
                eval_lru: LruCache::new(NonZeroUsize::MIN.saturating_add(EVAL_CACHE - 1)),
            });
        }
        guard
            .as_mut()
            .ok_or_else(|| CmdError::new("ERR Failed to start the Lua VM"))
    }
}

/// Shebang flags (`#!lua flags=...`); a script without a shebang has none.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Flags {
    no_writes: bool,
    allow_oom: bool,
}

struct Script {
    func: Function,
    flags: Option<Flags>,
    /// Loaded by SCRIPT LOAD: never evicted.
    loaded: bool,
}

struct Cache {
    vm: Vm,
    scripts: HashMap<String, Script>,
    eval_lru: LruCache<String, ()>,
}

impl Cache {
    /// A cached script, refreshing its place in the EVAL LRU.
    fn get(&mut self, sha: &str) -> Option<(Function, Option<Flags>)> {
        let s = self.scripts.get(sha)?;
        let r = (s.func.clone(), s.flags);
        if !s.loaded {
            self.eval_lru.get(sha);
        }
        Some(r)
    }

    fn add(
        &mut self,
        body: &[u8],
        sha: &str,
        loaded: bool,
    ) -> Result<(Function, Option<Flags>), CmdError> {
        let (flags, skip) = shebang(body)?;
        let func = self.vm.compile(&body[skip..]).map_err(|m| {
            CmdError::msg(format!("ERR Error compiling script (new function): {m}"))
        })?;
        self.scripts.insert(
            sha.to_string(),
            Script {
                func: func.clone(),
                flags,
                loaded,
            },
        );
        if !loaded {
            if let Some((old, ())) = self.eval_lru.push(sha.to_string(), ()) {
                if old != sha && self.scripts.get(&old).is_some_and(|s| !s.loaded) {
                    self.scripts.remove(&old);
                }
            }
        }
        Ok((func, flags))
    }

    /// SCRIPT LOAD: compiles if needed and pins the script.
    fn load(&mut self, body: &[u8], sha: &str) -> CmdResult {
        if let Some(s) = self.scripts.get_mut(sha) {
            if !s.loaded {
                s.loaded = true;
                self.eval_lru.pop(sha);
            }
            return Ok(());
        }
        self.add(body, sha, true).map(|_| ())
    }
}

pub fn sha1hex(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}

/// Redis's shebang parsing: the flags and how many bytes of the body the compiler skips (the
/// newline stays, so line numbers do not move).
fn shebang(body: &[u8]) -> Result<(Option<Flags>, usize), CmdError> {
    if !body.starts_with(b"#!") {
        return Ok((None, 0));
    }
    let Some(end) = body.iter().position(|&c| c == b'\n') else {
        return Err(CmdError::new("ERR Invalid script shebang"));
    };
    let line = String::from_utf8_lossy(&body[..end]);
    let mut parts = line.split_ascii_whitespace();
    let engine = parts.next().unwrap_or_default();
    if engine != "#!lua" {
        return Err(CmdError::msg(format!(
            "ERR Unexpected engine in script shebang: {engine}"
        )));
    }
    let mut flags = Flags::default();
    for part in parts {
        let Some(list) = part.strip_prefix("flags=") else {
            return Err(CmdError::msg(format!(
                "ERR Unknown lua shebang option: {part}"
            )));
        };
        if list.is_empty() {
            continue;
        }
        for f in list.split(',') {
            match f {
                "no-writes" => flags.no_writes = true,
                "allow-oom" => flags.allow_oom = true,
                "allow-stale" | "no-cluster" | "allow-cross-slot-keys" => {}
                other => {
                    return Err(CmdError::msg(format!(
                        "ERR Unexpected flag in script shebang: {other}"
                    )))
                }
            }
        }
    }
    Ok((Some(flags), end))
}

/// What `redis.call` needs while one script runs: the script's session and reply buffer.
struct CallEnv<'a> {
    app: &'a App,
    run: &'a RunState,
    session: Session,
    reply: Reply,
    now: u64,
    read_only: bool,
    /// Out of memory when the script started: commands that may grow memory are refused until
    /// the script has written (after which stopping half-way would be worse).
    oom: bool,
    wrote: bool,
}

/// An error `redis.call` raises (and `redis.pcall` returns) for a command that did not run.
fn refuse(lua: &Lua, text: &str) -> mlua::Result<(Value, bool)> {
    Ok((Value::Table(convert::err_table(lua, text, true)?), true))
}

impl CallEnv<'_> {
    fn dispatch(&mut self, lua: &Lua, args: MultiValue) -> mlua::Result<(Value, bool)> {
        let argv = match convert::lua_args(&args) {
            Ok(a) => a,
            Err(msg) => return Ok((Value::Table(convert::err_table(lua, msg, false)?), true)),
        };
        drop(args);
        let Some(idx) = REGISTRY.lookup_command(&argv) else {
            return refuse(lua, UNKNOWN_CMD);
        };
        let c = REGISTRY.all[idx];
        if !c.arity_ok(argv.len()) {
            return refuse(lua, WRONG_ARGS);
        }
        if c.flag(NOSCRIPT) {
            return refuse(lua, &format!("-{}", SCRIPT_DENIED.as_str()));
        }
        // The caller's ACL user, as Redis checks every command a script calls.
        if let Some(user) = &self.session.acl {
            if let Err(e) = user.check(idx, c, &argv) {
                let why = e.as_str().strip_prefix("NOPERM ").unwrap_or(e.as_str());
                return refuse(lua, &format!("-ERR ACL failure in script: {why}"));
            }
        }
        if self.read_only && c.flag(WRITE) {
            return refuse(lua, RO_WRITE);
        }
        if self.oom && !self.wrote && c.flag(DENYOOM) {
            return refuse(lua, &format!("-{}", OOM.as_str()));
        }
        if c.flag(WRITE) {
            self.wrote = true;
        }
        let resp3 = self.run.resp3();
        self.reply.buf.clear();
        self.reply.resp3 = resp3;
        self.session.resp3 = resp3;
        {
            let mut sub = Ctx {
                app: self.app,
                session: &mut self.session,
                out: &mut self.reply,
                now: self.now,
                in_script: true,
                in_exec: false,
            };
            super::call(&mut sub, idx, &argv);
        }
        let r = convert::reply_to_lua(lua, &self.reply.buf, resp3);
        if self.reply.buf.capacity() > 1 << 20 {
            self.reply.buf = Vec::with_capacity(16 * 1024);
        }
        r
    }
}

pub fn eval(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    eval_generic(ctx, args, false, false)
}

pub fn evalsha(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    eval_generic(ctx, args, true, false)
}

pub fn eval_ro(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    eval_generic(ctx, args, false, true)
}

pub fn evalsha_ro(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    eval_generic(ctx, args, true, true)
}

fn eval_generic(ctx: &mut Ctx<'_>, args: &[Bytes], by_sha: bool, ro: bool) -> CmdResult {
    if by_sha && args[1].len() != 40 {
        return Err(NOSCRIPT_ERR);
    }
    let numkeys = int(&args[2])?;
    if numkeys > (args.len() - 3) as i64 {
        return Err(CmdError::new(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    if numkeys < 0 {
        return Err(CmdError::new("ERR Number of keys can't be negative"));
    }
    let (keys, argv) = args[3..].split_at(numkeys as usize);
    let sha = if by_sha {
        String::from_utf8_lossy(&args[1]).to_ascii_lowercase()
    } else {
        sha1hex(&args[1])
    };

    let app: &App = ctx.app;
    let now = ctx.now;
    let scripts = &app.scripts;
    let mut guard = scripts.cache.lock();
    let cache = scripts.cache(&mut guard)?;
    let (func, flags) = match cache.get(&sha) {
        Some(s) => s,
        None if by_sha => return Err(NOSCRIPT_ERR),
        None => cache.add(&args[1], &sha, false)?,
    };
    scripts.refresh_stats(Some(cache));

    // Redis evicts before every command when maxmemory is set; the result also decides whether
    // the script may grow memory.
    let oom = app.store.maxmemory() > 0 && app.store.ensure_memory(now).is_err();
    if let Some(f) = flags {
        if ro && !f.no_writes {
            return Err(CmdError::new(
                "ERR Can not execute a script with write flag using *_ro command.",
            ));
        }
        if oom && !f.allow_oom && !f.no_writes {
            return Err(CmdError::new(
                "OOM allow-oom flag is not set on the script, can not run it when used memory > 'maxmemory'",
            ));
        }
    }
    let read_only = ro || flags.is_some_and(|f| f.no_writes);
    let allow_oom = flags.is_some_and(|f| f.allow_oom);

    let mut session = Session::new(Arc::new(ClientInfo::new(0, None, None, now)), true);
    session.select(ctx.session.db);
    session.user = ctx.session.user.clone();
    session.acl = ctx.session.acl.clone();
    let mut env = CallEnv {
        app,
        run: &scripts.run,
        session,
        // Grows on the first redis.call only: many scripts never call a command.
        reply: Reply {
            buf: Vec::new(),
            resp3: false,
        },
        now,
        read_only,
        oom: oom && !allow_oom,
        wrote: false,
    };
    let limit = app.config.read().server.lua_time_limit_ms;
    scripts.run.begin(limit);
    let result = cache
        .vm
        .run(&func, keys, argv, |lua, a| env.dispatch(lua, a));
    scripts.run.end();
    scripts.refresh_stats(Some(cache));
    let killed = scripts.run.is_killed();
    match result {
        Ok(v) => {
            convert::lua_to_reply(&v, ctx.out, scripts.run.resp3());
            Ok(())
        }
        Err(RunError::Script { msg, source, line }) => {
            let msg = if killed {
                lua::kill_message(limit)
            } else {
                msg
            };
            Err(CmdError::msg(match (source, line) {
                (Some(s), Some(l)) => format!("{msg} script: {sha}, on {s}:{l}."),
                _ => msg,
            }))
        }
        Err(RunError::Fatal(m)) => Err(CmdError::msg(if killed {
            format!("{} script: {sha}", lua::kill_message(limit))
        } else {
            let m: String = m.chars().take(100).collect();
            format!("ERR Error running script {sha}, {m}")
        })),
    }
}

// SCRIPT

const S_SCRIPT: &[&str] = &["scripting"];

pub static SCRIPT: &[Command] = &[
    cmd(
        "load",
        3,
        NOSCRIPT | STALE,
        (0, 0, 0),
        S_SCRIPT,
        "scripting",
        "Loads a server-side Lua script to the script cache.",
        script_load,
    )
    .with_tips(&["request_policy:all_nodes", "response_policy:all_succeeded"]),
    cmd(
        "exists",
        -3,
        NOSCRIPT,
        (0, 0, 0),
        S_SCRIPT,
        "scripting",
        "Determines whether server-side Lua scripts exist in the script cache.",
        script_exists,
    )
    .with_tips(&[
        "request_policy:all_shards",
        "response_policy:agg_logical_and",
    ]),
    cmd(
        "flush",
        -2,
        NOSCRIPT,
        (0, 0, 0),
        S_SCRIPT,
        "scripting",
        "Removes all server-side Lua scripts from the script cache.",
        script_flush,
    )
    .with_tips(&["request_policy:all_nodes", "response_policy:all_succeeded"]),
    cmd(
        "kill",
        2,
        NOSCRIPT | ALLOW_BUSY,
        (0, 0, 0),
        S_SCRIPT,
        "scripting",
        "Terminates a server-side Lua script during execution.",
        script_kill,
    )
    .with_tips(&["request_policy:all_shards", "response_policy:one_succeeded"]),
    cmd(
        "debug",
        3,
        NOSCRIPT,
        (0, 0, 0),
        S_SCRIPT,
        "scripting",
        "Sets the debug mode of server-side Lua scripts.",
        script_debug,
    ),
    cmd(
        "help",
        2,
        LOADING | STALE,
        (0, 0, 0),
        S_SCRIPT,
        "scripting",
        "Returns helpful text about the different subcommands.",
        script_help,
    ),
];

fn script_load(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let sha = sha1hex(&args[2]);
    let scripts = &ctx.app.scripts;
    let mut guard = scripts.cache.lock();
    let cache = scripts.cache(&mut guard)?;
    let loaded = cache.load(&args[2], &sha);
    scripts.refresh_stats(Some(cache));
    loaded?;
    ctx.out.bulk(sha.as_bytes());
    Ok(())
}

fn script_exists(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let guard = ctx.app.scripts.cache.lock();
    ctx.out.array(args.len() - 2);
    for a in &args[2..] {
        let sha = String::from_utf8_lossy(a).to_ascii_lowercase();
        let found = guard.as_ref().is_some_and(|c| c.scripts.contains_key(&sha));
        ctx.out.int(found as i64);
    }
    Ok(())
}

fn script_flush(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    match args.len() {
        2 => {}
        3 if is(&args[2], "sync") || is(&args[2], "async") => {}
        _ => {
            return Err(CmdError::new(
                "ERR SCRIPT FLUSH only support SYNC|ASYNC option",
            ))
        }
    }
    // Dropping the VM frees every compiled script and resets the Lua state, as Redis does.
    let old = ctx.app.scripts.cache.lock().take();
    drop(old);
    ctx.app.scripts.refresh_stats(None);
    ctx.out.ok();
    Ok(())
}

fn script_kill(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    let run = &ctx.app.scripts.run;
    if !run.is_running() {
        return Err(CmdError::new("NOTBUSY No scripts in execution right now."));
    }
    run.kill();
    ctx.out.ok();
    Ok(())
}

fn script_debug(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    if is(&args[2], "no") {
        ctx.out.ok();
        Ok(())
    } else if is(&args[2], "yes") || is(&args[2], "sync") {
        Err(CmdError::new(
            "ERR Strata has no Lua debugger: SCRIPT DEBUG only accepts NO",
        ))
    } else {
        Err(CmdError::new("ERR Use SCRIPT DEBUG YES/SYNC/NO"))
    }
}

fn script_help(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    super::connection::help(
        ctx,
        "SCRIPT",
        &[
            "DEBUG (YES|SYNC|NO)",
            "    Set the debug mode for subsequent scripts executed.",
            "EXISTS <sha1> [<sha1> ...]",
            "    Return information about the existence of the scripts in the script cache.",
            "FLUSH [ASYNC|SYNC]",
            "    Flush the Lua scripts cache. Very dangerous on replicas.",
            "    When called without the optional mode argument, the behavior is determined by the",
            "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
            "    * ASYNC: Asynchronously flush the scripts cache.",
            "    * SYNC: Synchronously flush the scripts cache.",
            "KILL",
            "    Kill the currently executing Lua script.",
            "LOAD <script>",
            "    Load a script into the scripts cache without executing it.",
            "HELP",
            "    Prints this help.",
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_flags_like_redis() {
        assert_eq!(shebang(b"return 1").unwrap(), (None, 0));
        assert_eq!(
            shebang(b"#!lua flags=no-writes,allow-oom\nreturn 1").unwrap(),
            (
                Some(Flags {
                    no_writes: true,
                    allow_oom: true
                }),
                31
            )
        );
        assert_eq!(
            shebang(b"#!lua\nreturn 1").unwrap(),
            (Some(Flags::default()), 5)
        );
        assert_eq!(
            shebang(b"#!lua flags=\nreturn 1").unwrap().0,
            Some(Flags::default())
        );
        assert_eq!(
            shebang(b"#!lua").unwrap_err().as_str(),
            "ERR Invalid script shebang"
        );
        assert_eq!(
            shebang(b"#!foo\nreturn 1").unwrap_err().as_str(),
            "ERR Unexpected engine in script shebang: #!foo"
        );
        assert_eq!(
            shebang(b"#!lua flags=bogus\nreturn 1")
                .unwrap_err()
                .as_str(),
            "ERR Unexpected flag in script shebang: bogus"
        );
        assert_eq!(
            shebang(b"#!lua name=foo\nreturn 1").unwrap_err().as_str(),
            "ERR Unknown lua shebang option: name=foo"
        );
    }

    #[test]
    fn lookup_follows_containers() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        assert!(REGISTRY.lookup_command(&[b("GET"), b("k")]).is_some());
        assert!(REGISTRY.lookup_command(&[b("nosuch")]).is_none());
        assert!(REGISTRY
            .lookup_command(&[b("client"), b("nosub")])
            .is_none());
        let c = REGISTRY.lookup_command(&[b("client")]).unwrap();
        assert!(!REGISTRY.all[c].arity_ok(1));
    }

    #[test]
    fn sha1_of_script() {
        assert_eq!(
            sha1hex(b"return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }
}
