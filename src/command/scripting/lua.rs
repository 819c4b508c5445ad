//! The Lua 5.1 virtual machine scripts run in, sandboxed as Redis 7.0 sandboxes it.
//!
//! What a script sees: the base functions Redis keeps (`assert`, `error`, `pcall`, `xpcall`,
//! `type`, `tostring`, `tonumber`, `pairs`, `ipairs`, `next`, `select`, `unpack`, `rawget`,
//! `rawset`, `rawequal`, `getmetatable`, `setmetatable`, `collectgarbage`, `gcinfo`, `load`,
//! `loadstring`), the `string`, `table`, `math`, `coroutine` libraries, `bit`, `cjson`, `redis`,
//! and per call `KEYS`/`ARGV`. Not there: `io`, `os`, `debug`, `package`/`require`, `dofile`,
//! `loadfile`, `print`, `getfenv`/`setfenv`, `newproxy`, `cmsgpack`, `struct`.
//!
//! Redis 7.0 makes the globals and every library table read-only with a patched VM. Stock Lua
//! cannot mark a table read-only, so each one is replaced by an empty *proxy* whose metatable
//! reads through to the real table and refuses writes ("Attempt to modify a readonly table"); the
//! few functions that write raw (`rawset`, `setmetatable`, `table.insert`) refuse proxies, and
//! `rawget`/`next`/`pairs` see through them (those are C functions, see `native`). Reading an
//! undefined global raises "Script attempted to access nonexistent global variable".
//! `loadstring`/`load` compile text only (bytecode could corrupt the VM) and give the chunk the
//! sandbox's globals.
//!
//! Bounds: the VM has a memory limit ([`MEMORY_LIMIT`]); a hook runs every
//! [`HOOK_EVERY`] instructions and, once the run is past its deadline, raises an error — and keeps
//! raising it: `pcall`, `xpcall` and `coroutine.resume` re-raise any error they catch after the
//! deadline, so a script cannot swallow its own termination. A C library call that never returns
//! to the VM (a pathological `string.find` pattern) is not interruptible, as in Redis.
//!
//! This module knows nothing about commands: `redis.call` reaches the command layer through a
//! per-run dispatcher that `scripting.rs` installs in a slot for the duration of one run.

use super::{bit, cjson, convert, native};
use mlua::chunk::ChunkMode;
use mlua::state::{GcIncParams, GcMode};
use mlua::{
    Function, HookTriggers, LightUserData, Lua, LuaOptions, MultiValue, StdLib, Table, Value,
    VmState,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The Lua heap may not grow past this; allocations beyond it fail with "not enough memory".
pub const MEMORY_LIMIT: usize = 1 << 30;
/// The time-limit hook runs after this many VM instructions (Redis uses the same count).
pub const HOOK_EVERY: u32 = 100_000;
/// How deep a returned table may nest before the reply says "reached lua stack limit".
pub const MAX_REPLY_DEPTH: usize = 1000;

/// The chunk name of our own Lua code (the read-only and missing-global metamethods): the error
/// handler skips these frames so the error points at the script's line.
const INTERNAL: &str = "=strata";
const ENV_KEY: &str = "strata.env";

/// The result of a raw library function: `(true, value)` on success, `(false, message)` to have
/// its lifted wrapper (`native::lift`) raise `message` at the caller's line.
pub type Raw = mlua::Result<(bool, Value)>;

pub fn fail(lua: &Lua, msg: &str) -> Raw {
    Ok((false, Value::String(lua.create_string(msg)?)))
}

/// A failure raised as Redis raises its own errors: an error table `{err = "ERR ..."}`.
pub fn fail_table(lua: &Lua, msg: &str) -> Raw {
    Ok((false, Value::Table(convert::err_table(lua, msg, false)?)))
}

/// `luaL_typename`, with "no value" for a missing argument.
pub fn type_name(v: Option<&Value>) -> &'static str {
    match v {
        None => "no value",
        Some(Value::Nil) => "nil",
        Some(Value::Boolean(_)) => "boolean",
        Some(Value::Integer(_)) | Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Table(_)) => "table",
        Some(Value::Function(_)) => "function",
        Some(Value::Thread(_)) => "thread",
        Some(_) => "userdata",
    }
}

/// `luaL_typerror`'s text.
pub fn arg_error(i: usize, fname: &str, expected: &str, got: Option<&Value>) -> String {
    format!(
        "bad argument #{i} to '{fname}' ({expected} expected, got {})",
        type_name(got)
    )
}

/// The innermost message of an mlua error (a callback error wraps the real cause).
pub fn root_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => root_message(cause),
        mlua::Error::RuntimeError(s) | mlua::Error::MemoryError(s) => s.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// State of the run in progress, shared with the hook and the `redis.*` functions.
pub struct RunState {
    epoch: Instant,
    /// Nanoseconds since `epoch` after which the run is killed; `u64::MAX` = no deadline.
    deadline_ns: AtomicU64,
    killed: AtomicBool,
    running: AtomicBool,
    /// `redis.setresp(3)` was called: commands answer the script in RESP3.
    resp3: AtomicBool,
}

impl Default for RunState {
    fn default() -> Self {
        RunState {
            epoch: Instant::now(),
            deadline_ns: AtomicU64::new(u64::MAX),
            killed: AtomicBool::new(false),
            running: AtomicBool::new(false),
            resp3: AtomicBool::new(false),
        }
    }
}

impl RunState {
    /// Starts a run; `limit_ms` 0 means no time limit.
    pub fn begin(&self, limit_ms: u64) {
        let deadline = if limit_ms == 0 {
            u64::MAX
        } else {
            (self.epoch.elapsed().as_nanos() as u64).saturating_add(limit_ms * 1_000_000)
        };
        self.deadline_ns.store(deadline, Ordering::Relaxed);
        self.killed.store(false, Ordering::Relaxed);
        self.resp3.store(false, Ordering::Relaxed);
        self.running.store(true, Ordering::Relaxed);
    }

    pub fn end(&self) {
        self.running.store(false, Ordering::Relaxed);
        self.deadline_ns.store(u64::MAX, Ordering::Relaxed);
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    pub fn resp3(&self) -> bool {
        self.resp3.load(Ordering::Relaxed)
    }

    /// Called by the hook: true once the deadline has passed (and from then on).
    fn overdue(&self) -> bool {
        if self.is_killed() {
            return true;
        }
        let deadline = self.deadline_ns.load(Ordering::Relaxed);
        if deadline != u64::MAX && self.epoch.elapsed().as_nanos() as u64 > deadline {
            self.kill();
            return true;
        }
        false
    }
}

/// The message a killed script's caller gets (before the location suffix).
pub fn kill_message(limit_ms: u64) -> String {
    format!("ERR Script killed by timeout: it ran longer than lua-time-limit ({limit_ms} ms)")
}

/// Redis's `redisLrand48`/`redisSrand48`: the 48-bit LCG behind `math.random`.
pub mod rand48 {
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The state before any seeding (X0, X1, X2 = 0x330E, 0xABCD, 0x1234).
    pub const INITIAL: u64 = 0x1234_ABCD_330E;
    const MASK: u64 = (1 << 48) - 1;

    pub fn next(state: &AtomicU64) -> i32 {
        let x = state.load(Ordering::Relaxed);
        let n = 0x5_DEEC_E66D_u64.wrapping_mul(x).wrapping_add(0xB) & MASK;
        state.store(n, Ordering::Relaxed);
        (n >> 17) as i32
    }

    pub fn seed(state: &AtomicU64, seed: i32) {
        let s = seed as u32 as u64;
        state.store(
            0x330E | ((s & 0xFFFF) << 16) | ((s >> 16) << 32),
            Ordering::Relaxed,
        );
    }
}

/// How a run ended, when it did not return a value.
pub enum RunError {
    /// The script raised an error: Redis's error table fields.
    Script {
        msg: String,
        source: Option<String>,
        line: Option<String>,
    },
    /// The VM failed outside the script's control (memory, internal error).
    Fatal(String),
}

/// One Lua state with the sandbox installed.
pub struct Vm {
    pub lua: Lua,
    /// The real globals table behind the `_G` proxy (KEYS/ARGV are set here).
    globals: Table,
    env: Table,
    /// `slot[1]` is the dispatcher while a run is in progress.
    slot: Table,
    xpcall: Function,
    handler: Function,
    runs: u32,
}

impl Vm {
    pub fn new(run: Arc<RunState>, rand: Arc<AtomicU64>, memory_limit: usize) -> mlua::Result<Vm> {
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH,
            LuaOptions::default(),
        )?;
        lua.set_memory_limit(memory_limit)?;
        let xpcall: Function = lua.globals().get("xpcall")?;
        let slot = lua.create_table()?;
        let raw = raw_library(&lua, &run, &rand, &slot)?;
        let (env, globals): (Table, Table) = lua
            .load(PRELUDE)
            .set_name(INTERNAL)
            .set_mode(ChunkMode::Text)
            .call(raw)?;
        lua.set_named_registry_value(ENV_KEY, env.clone())?;
        let handler = error_handler(&lua, run.clone())?;
        let hook_run = run;
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_lua, _debug| {
                if hook_run.overdue() {
                    Err(mlua::Error::runtime("Script killed by timeout"))
                } else {
                    Ok(VmState::Continue)
                }
            },
        )?;
        Ok(Vm {
            lua,
            globals,
            env,
            slot,
            xpcall,
            handler,
            runs: 0,
        })
    }

    /// Compiles a script body as `@user_script` (text only) with the sandbox's globals.
    pub fn compile(&self, body: &[u8]) -> Result<Function, String> {
        if body.first() == Some(&0x1b) {
            // Redis's VM refuses bytecode by parsing it as text.
            return Err("user_script:1: unexpected symbol near 'char(27)'".into());
        }
        self.lua
            .load(body)
            .set_name("@user_script")
            .set_mode(ChunkMode::Text)
            .set_environment(self.env.clone())
            .into_function()
            .map_err(|e| root_message(&e))
    }

    /// Runs `func` with KEYS/ARGV set and `dispatch` answering `redis.call`/`redis.pcall` (it
    /// returns the reply and whether it is an error). Returns the script's first return value.
    pub fn run<F>(
        &mut self,
        func: &Function,
        keys: &[bytes::Bytes],
        argv: &[bytes::Bytes],
        dispatch: F,
    ) -> Result<Value, RunError>
    where
        F: FnMut(&Lua, MultiValue) -> mlua::Result<(Value, bool)>,
    {
        let fatal = |e: mlua::Error| RunError::Fatal(root_message(&e));
        let lua = &self.lua;
        let seq = |items: &[bytes::Bytes]| -> mlua::Result<Table> {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, a) in items.iter().enumerate() {
                t.raw_set(i + 1, lua.create_string(a)?)?;
            }
            Ok(t)
        };
        let keys_t = seq(keys).map_err(fatal)?;
        let argv_t = seq(argv).map_err(fatal)?;
        self.globals.raw_set("KEYS", keys_t).map_err(fatal)?;
        self.globals.raw_set("ARGV", argv_t).map_err(fatal)?;
        let slot = &self.slot;
        let xpcall = &self.xpcall;
        let handler = &self.handler;
        let outcome = lua.scope(|scope| {
            let d = scope.create_function_mut(dispatch)?;
            slot.raw_set(1, d)?;
            let r = xpcall.call::<(bool, Value)>((func.clone(), handler.clone()));
            slot.raw_set(1, Value::Nil)?;
            r
        });
        let result = match outcome {
            Ok((true, v)) => Ok(v),
            Ok((false, Value::Table(t))) => Err(script_error(lua, &t)),
            Ok((false, other)) => Err(RunError::Fatal(tostring(lua, &other))),
            Err(e) => Err(fatal(e)),
        };
        gc_maintenance(lua, &mut self.runs);
        result
    }

    pub fn used_memory(&self) -> usize {
        self.lua.used_memory()
    }
}

/// Undoes what a script may have done to the collector (`collectgarbage('stop')` would
/// otherwise outlive it) and steps it every 50 runs, as Redis does, so a full cycle never lands
/// on one script.
fn gc_maintenance(lua: &Lua, runs: &mut u32) {
    lua.gc_restart();
    lua.gc_set_mode(GcMode::Incremental(
        GcIncParams::default().pause(200).step_multiplier(200),
    ));
    *runs += 1;
    if *runs >= 50 {
        *runs = 0;
        let _ = lua.gc_step();
    }
}

/// Reads Redis's error table: `err`, `source`, `line` (strings or numbers).
fn script_error(lua: &Lua, t: &Table) -> RunError {
    let field = |name: &str| -> Option<String> {
        let v: Value = t.raw_get(name).ok()?;
        match v {
            Value::String(_) | Value::Integer(_) | Value::Number(_) => lua
                .coerce_string(v)
                .ok()
                .flatten()
                .map(|s| s.to_string_lossy()),
            _ => None,
        }
    };
    RunError::Script {
        msg: field("err").unwrap_or_else(|| "ERR unknown error".into()),
        source: field("source"),
        line: field("line"),
    }
}

/// Lua's `tostring` for an error value (numbers as `%.14g`, tables as `table: 0x...`).
pub fn tostring(lua: &Lua, v: &Value) -> String {
    match v {
        Value::Error(e) => root_message(e),
        Value::String(s) => s.to_string_lossy(),
        Value::Integer(_) | Value::Number(_) => lua
            .coerce_string(v.clone())
            .ok()
            .flatten()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default(),
        other => other.to_string().unwrap_or_else(|_| "?".into()),
    }
}

/// Redis's `__redis__err__handler`: turns any error into `{err=..., source=..., line=...}`,
/// locating the script line that raised it.
fn error_handler(lua: &Lua, run: Arc<RunState>) -> mlua::Result<Function> {
    lua.create_function(move |lua, err: Value| -> mlua::Result<Table> {
        let t = if run.is_killed() {
            convert::err_table(lua, "Script killed by timeout", false)?
        } else {
            match err {
                Value::Table(t) => t,
                other => {
                    let t = lua.create_table()?;
                    t.raw_set("err", format!("ERR {}", tostring(lua, &other)))?;
                    t
                }
            }
        };
        if let Some((source, line)) = locate(lua) {
            t.raw_set("source", source)?;
            t.raw_set("line", line)?;
        }
        Ok(t)
    })
}

/// The frame that raised the error: Redis looks one level above the handler and, if that is a C
/// function (`error`, `redis.call`), one more. Level 0 is this handler, so the raiser is level 1;
/// our own wrapper frames are skipped as well.
fn locate(lua: &Lua) -> Option<(String, i64)> {
    let info = |level: usize| {
        lua.inspect_stack(level, |d| {
            let s = d.source();
            (
                s.what,
                s.source.map(|c| c.into_owned()),
                d.current_line().map(|l| l as i64).unwrap_or(-1),
            )
        })
    };
    let mut level = 1;
    let mut i = info(level)?;
    if i.0 == "C" {
        level += 1;
        i = info(level)?;
    }
    while i.1.as_deref() == Some(INTERNAL) && level < 64 {
        level += 1;
        i = info(level)?;
    }
    Some((i.1.unwrap_or_default(), i.2))
}

/// `luaL_checkint`: a number (or numeric string), truncated to a C int.
fn check_int(lua: &Lua, args: &MultiValue, i: usize, fname: &str) -> Result<i32, String> {
    let v = args.get(i - 1);
    match v.and_then(|v| lua.coerce_number(v.clone()).ok().flatten()) {
        Some(n) => Ok(n as i64 as i32),
        None => Err(arg_error(i, fname, "number", v)),
    }
}

/// The Rust half of the library, handed to the prelude.
fn raw_library(
    lua: &Lua,
    run: &Arc<RunState>,
    rand: &Arc<AtomicU64>,
    slot: &Table,
) -> mlua::Result<Table> {
    let raw = lua.create_table()?;
    raw.raw_set("slot", slot.clone())?;
    raw.raw_set("bit", bit::open(lua)?)?;
    raw.raw_set("cjson", cjson::open(lua)?)?;
    raw.raw_set("version", crate::app::REDIS_VERSION)?;
    raw.raw_set("version_num", version_num(crate::app::REDIS_VERSION))?;

    let r = run.clone();
    let killed = lua.create_function(move |_, ()| Ok(r.is_killed()))?;
    raw.raw_set(
        "rethrow",
        lua.create_function(move |lua, (f, unwrap): (Function, bool)| {
            native::rethrowing(lua, f, killed.clone(), unwrap)
        })?,
    )?;
    raw.raw_set(
        "lift",
        lua.create_function(|lua, (f, n): (Function, i64)| native::lift(lua, f, n))?,
    )?;
    let backing = lua.create_table()?;
    raw.raw_set("backing", backing.clone())?;
    raw.raw_set("base", native::base(lua, &backing)?)?;

    let s = slot.clone();
    raw.raw_set(
        "call",
        lua.create_function(move |lua, args: MultiValue| -> Raw {
            match s.raw_get::<Value>(1)? {
                Value::Function(d) => {
                    let (v, failed): (Value, bool) = d.call(args)?;
                    Ok((!failed, v))
                }
                _ => fail_table(
                    lua,
                    "redis.call/pcall can only be called inside a script invocation",
                ),
            }
        })?,
    )?;
    let s = slot.clone();
    raw.raw_set(
        "pcall",
        lua.create_function(move |lua, args: MultiValue| -> Raw {
            match s.raw_get::<Value>(1)? {
                Value::Function(d) => {
                    let (v, _): (Value, bool) = d.call(args)?;
                    Ok((true, v))
                }
                _ => fail_table(
                    lua,
                    "redis.call/pcall can only be called inside a script invocation",
                ),
            }
        })?,
    )?;

    raw.raw_set(
        "loadstring",
        lua.create_function(|lua, args: MultiValue| -> mlua::Result<MultiValue> {
            let text = match args.front() {
                Some(v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => {
                    lua.coerce_string(v.clone())?
                }
                _ => None,
            };
            let Some(text) = text else {
                let msg = arg_error(1, "loadstring", "string", args.front());
                return failure(lua, &msg);
            };
            let text = text.as_bytes().to_vec();
            let name = match args.get(1) {
                None | Some(Value::Nil) => text.clone(),
                Some(v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => lua
                    .coerce_string(v.clone())?
                    .map(|s| s.as_bytes().to_vec())
                    .unwrap_or_default(),
                Some(v) => return failure(lua, &arg_error(2, "loadstring", "string", Some(v))),
            };
            load_chunk(lua, &text, &name)
        })?,
    )?;
    raw.raw_set(
        "load",
        lua.create_function(|lua, args: MultiValue| -> mlua::Result<MultiValue> {
            let reader = match args.front() {
                Some(Value::Function(f)) => f.clone(),
                other => return failure(lua, &arg_error(1, "load", "function", other)),
            };
            let name = match args.get(1) {
                None | Some(Value::Nil) => b"=(load)".to_vec(),
                Some(v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => lua
                    .coerce_string(v.clone())?
                    .map(|s| s.as_bytes().to_vec())
                    .unwrap_or_default(),
                Some(v) => return failure(lua, &arg_error(2, "load", "string", Some(v))),
            };
            let mut text = Vec::new();
            loop {
                let piece = match reader.call::<Value>(()) {
                    Ok(p) => p,
                    Err(e) => return nil_and(lua, &root_message(&e)),
                };
                match piece {
                    Value::Nil => break,
                    Value::String(_) | Value::Integer(_) | Value::Number(_) => {
                        let s = lua.coerce_string(piece)?;
                        let bytes = s.map(|s| s.as_bytes().to_vec()).unwrap_or_default();
                        if bytes.is_empty() {
                            break;
                        }
                        text.extend_from_slice(&bytes);
                    }
                    _ => return nil_and(lua, "reader function must return a string"),
                }
            }
            load_chunk(lua, &text, &name)
        })?,
    )?;

    let st = rand.clone();
    raw.raw_set(
        "random",
        lua.create_function(move |lua, args: MultiValue| -> Raw {
            // The draw comes first, as in Redis: a failed call still advances the sequence.
            let r = (rand48::next(&st) % i32::MAX) as f64 / i32::MAX as f64;
            let v = match args.len() {
                0 => r,
                1 => {
                    let u = match check_int(lua, &args, 1, "random") {
                        Ok(u) => u,
                        Err(m) => return fail(lua, &m),
                    };
                    if u < 1 {
                        return fail(lua, "bad argument #1 to 'random' (interval is empty)");
                    }
                    (r * u as f64).floor() + 1.0
                }
                2 => {
                    let l = match check_int(lua, &args, 1, "random") {
                        Ok(v) => v,
                        Err(m) => return fail(lua, &m),
                    };
                    let u = match check_int(lua, &args, 2, "random") {
                        Ok(v) => v,
                        Err(m) => return fail(lua, &m),
                    };
                    if l > u {
                        return fail(lua, "bad argument #2 to 'random' (interval is empty)");
                    }
                    (r * (u as f64 - l as f64 + 1.0)).floor() + l as f64
                }
                _ => return fail(lua, "wrong number of arguments"),
            };
            Ok((true, Value::Number(v)))
        })?,
    )?;
    let st = rand.clone();
    raw.raw_set(
        "randomseed",
        lua.create_function(move |lua, args: MultiValue| -> Raw {
            match check_int(lua, &args, 1, "randomseed") {
                Ok(s) => {
                    rand48::seed(&st, s);
                    Ok((true, Value::Nil))
                }
                Err(m) => fail(lua, &m),
            }
        })?,
    )?;

    raw.raw_set(
        "error_reply",
        lua.create_function(|lua, args: MultiValue| -> mlua::Result<Table> {
            match (args.len(), args.front()) {
                (1, Some(Value::String(s))) => {
                    let s = s.to_string_lossy();
                    let text = if s.starts_with('-') {
                        s
                    } else {
                        format!("-{s}")
                    };
                    convert::err_table(lua, &text, false)
                }
                _ => convert::err_table(lua, "wrong number or type of arguments", false),
            }
        })?,
    )?;
    raw.raw_set(
        "status_reply",
        lua.create_function(|lua, args: MultiValue| -> mlua::Result<Table> {
            match (args.len(), args.front()) {
                (1, Some(Value::String(s))) => {
                    let t = lua.create_table()?;
                    t.raw_set("ok", s.clone())?;
                    Ok(t)
                }
                _ => convert::err_table(lua, "wrong number or type of arguments", false),
            }
        })?,
    )?;
    raw.raw_set(
        "sha1hex",
        lua.create_function(|lua, args: MultiValue| -> Raw {
            if args.len() != 1 {
                return fail_table(lua, "wrong number of arguments");
            }
            let data = args
                .front()
                .and_then(|v| match v {
                    Value::String(_) | Value::Integer(_) | Value::Number(_) => {
                        lua.coerce_string(v.clone()).ok().flatten()
                    }
                    _ => None,
                })
                .map(|s| s.as_bytes().to_vec())
                .unwrap_or_default();
            let hex = sha1_smol::Sha1::from(&data).digest().to_string();
            Ok((true, Value::String(lua.create_string(hex)?)))
        })?,
    )?;
    raw.raw_set(
        "log",
        lua.create_function(|lua, args: MultiValue| -> Raw {
            if args.len() < 2 {
                return fail_table(lua, "redis.log() requires two arguments or more.");
            }
            let level = match args
                .front()
                .and_then(|v| lua.coerce_number(v.clone()).ok().flatten())
            {
                Some(n) => n as i64,
                None => return fail_table(lua, "First argument must be a number (log level)."),
            };
            if !(0..=3).contains(&level) {
                return fail_table(lua, "Invalid debug level.");
            }
            let mut msg = String::new();
            for (j, v) in args.iter().enumerate().skip(1) {
                let s = match v {
                    Value::String(_) | Value::Integer(_) | Value::Number(_) => {
                        lua.coerce_string(v.clone()).ok().flatten()
                    }
                    _ => None,
                };
                if let Some(s) = s {
                    if j != 1 {
                        msg.push(' ');
                    }
                    msg.push_str(&s.to_string_lossy());
                }
            }
            match level {
                0 => tracing::debug!(target: "strata::lua", "{msg}"),
                1 => tracing::debug!(target: "strata::lua", verbose = true, "{msg}"),
                2 => tracing::info!(target: "strata::lua", "{msg}"),
                _ => tracing::warn!(target: "strata::lua", "{msg}"),
            }
            Ok((true, Value::Nil))
        })?,
    )?;
    let r = run.clone();
    raw.raw_set(
        "setresp",
        lua.create_function(move |lua, args: MultiValue| -> Raw {
            if args.len() != 1 {
                return fail_table(lua, "redis.setresp() requires one argument.");
            }
            let n = args
                .front()
                .and_then(|v| lua.coerce_number(v.clone()).ok().flatten())
                .unwrap_or(0.0) as i64;
            match n {
                2 | 3 => {
                    r.resp3.store(n == 3, Ordering::Relaxed);
                    Ok((true, Value::Nil))
                }
                _ => fail_table(lua, "RESP version must be 2 or 3."),
            }
        })?,
    )?;
    raw.raw_set(
        "set_repl",
        lua.create_function(|lua, args: MultiValue| -> Raw {
            if args.len() != 1 {
                return fail_table(lua, "redis.set_repl() requires two arguments.");
            }
            let flags = args
                .front()
                .and_then(|v| lua.coerce_number(v.clone()).ok().flatten())
                .unwrap_or(0.0) as i64;
            if flags & !3 != 0 {
                return fail_table(
                    lua,
                    "Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.",
                );
            }
            Ok((true, Value::Nil))
        })?,
    )?;
    raw.raw_set(
        "acl_check_cmd",
        lua.create_function(|lua, args: MultiValue| -> Raw {
            let argv = match convert::lua_args(&args) {
                Ok(a) => a,
                Err(msg) => return fail_table(lua, msg),
            };
            if crate::command::table::REGISTRY
                .lookup_command(&argv)
                .is_none()
            {
                return fail_table(lua, "Invalid command passed to redis.acl_check_cmd()");
            }
            // No ACL rules exist yet: the script's user may run every command.
            Ok((true, Value::Boolean(true)))
        })?,
    )?;
    raw.raw_set(
        "null",
        Value::LightUserData(LightUserData(std::ptr::null_mut())),
    )?;
    Ok(raw)
}

/// `false, message`: the lifted function raises `message` at the caller's line.
fn failure(lua: &Lua, msg: &str) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_iter([
        Value::Boolean(false),
        Value::String(lua.create_string(msg)?),
    ]))
}

/// `true, nil, message`: the lifted function returns `nil, message`, as `loadstring` does.
fn nil_and(lua: &Lua, msg: &str) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_iter([
        Value::Boolean(true),
        Value::Nil,
        Value::String(lua.create_string(msg)?),
    ]))
}

/// `loadstring`/`load`: compiles text only (bytecode is refused) with the sandbox's globals.
fn load_chunk(lua: &Lua, text: &[u8], name: &[u8]) -> mlua::Result<MultiValue> {
    // A C string ends at the first NUL; so does the chunk name.
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    let env: Table = lua.named_registry_value(ENV_KEY)?;
    let f = lua
        .load(text)
        .set_name(String::from_utf8_lossy(name))
        .set_mode(ChunkMode::Text)
        .set_environment(env)
        .into_function();
    match f {
        Ok(f) => Ok(MultiValue::from_iter([
            Value::Boolean(true),
            Value::Function(f),
        ])),
        Err(e) => nil_and(lua, &root_message(&e)),
    }
}

/// "7.0.15" → 0x07000f, as `REDIS_VERSION_NUM`.
fn version_num(v: &str) -> i64 {
    let mut n = 0i64;
    for part in v.split('.').take(3) {
        n = (n << 8) | part.parse::<i64>().unwrap_or(0);
    }
    n
}

/// The Lua half of the sandbox. Runs once per VM with the stock globals; returns the `_G` proxy
/// scripts get and the real table behind it.
const PRELUDE: &str = r#"
local raw = ...
local error, type, tostring, pairs = error, type, tostring, pairs
local setmetatable, getmetatable = setmetatable, getmetatable
local RO = 'Attempt to modify a readonly table'
local lift = raw.lift
local base = raw.base

-- proxy -> the real table it stands for (the native next/pairs/rawget/... read it)
local backing = raw.backing
local function deny() error(RO, 2) end
local function freeze(real, meta)
  local p = {}
  backing[p] = real
  setmetatable(p, {__index = real, __newindex = deny, __metatable = meta or false})
  return p
end
local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end
local function liftall(t)
  local c = {}
  for k, f in pairs(t) do
    if type(f) == 'function' then c[k] = lift(f, 1) else c[k] = f end
  end
  return c
end

local G = {}
G.assert = assert
G.collectgarbage = collectgarbage
G.error = error
G.gcinfo = gcinfo
G.getmetatable = getmetatable
G.ipairs = ipairs
G.rawequal = rawequal
G.select = select
G.tonumber = tonumber
G.tostring = tostring
G.type = type
G.unpack = unpack
G._VERSION = _VERSION
G.next = base.next
G.pairs = base.pairs
G.rawget = base.rawget
G.rawset = base.rawset
G.setmetatable = base.setmetatable
-- Once a run is killed, whatever pcall & co. catch is raised again.
G.pcall = raw.rethrow(pcall, true)
G.xpcall = raw.rethrow(xpcall, false)
G.loadstring = lift(raw.loadstring, -1)
G.load = lift(raw.load, -1)

local co = copy(coroutine)
co.resume = raw.rethrow(coroutine.resume, false)
G.coroutine = freeze(co)

local tbl = copy(table)
tbl.insert = base.insert
G.table = freeze(tbl)
G.string = freeze(string)

local m = copy(math)
m.random = lift(raw.random, 1)
m.randomseed = lift(raw.randomseed, 0)
G.math = freeze(m)

G.bit = freeze(liftall(raw.bit))

local function build_cjson(r)
  local c = liftall(r)
  c.encode_sparse_array = lift(r.encode_sparse_array, 3)
  c.new = function() return build_cjson(r.new()) end
  return c
end
G.cjson = freeze(build_cjson(raw.cjson))

local R = {}
R.call = lift(raw.call, 1)
R.pcall = lift(raw.pcall, 1)
R.error_reply = raw.error_reply
R.status_reply = raw.status_reply
R.sha1hex = lift(raw.sha1hex, 1)
R.log = lift(raw.log, 0)
R.setresp = lift(raw.setresp, 0)
R.set_repl = lift(raw.set_repl, 0)
R.replicate_commands = function() return true end
R.breakpoint = function() return false end
R.debug = function() end
R.acl_check_cmd = lift(raw.acl_check_cmd, 1)
R.LOG_DEBUG, R.LOG_VERBOSE, R.LOG_NOTICE, R.LOG_WARNING = 0, 1, 2, 3
R.REPL_NONE, R.REPL_AOF, R.REPL_SLAVE, R.REPL_REPLICA, R.REPL_ALL = 0, 1, 2, 2, 3
R.REDIS_VERSION = raw.version
R.REDIS_VERSION_NUM = raw.version_num
G.redis = freeze(R)

setmetatable(G, {__index = function(_, k)
  error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
end})
local env = freeze(G, freeze({}))
G._G = env

-- Strings find their methods through the read-only string table, and getmetatable('') hands
-- out a read-only view of the metatable.
local smt = getmetatable('')
smt.__index = G.string
smt.__metatable = freeze(smt)

return env, G
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> Vm {
        Vm::new(
            Arc::new(RunState::default()),
            Arc::new(AtomicU64::new(rand48::INITIAL)),
            64 << 20,
        )
        .unwrap()
    }

    /// Runs a script without redis.call and returns its value or error text.
    fn eval(vm: &mut Vm, src: &str) -> Result<Value, String> {
        let f = vm.compile(src.as_bytes())?;
        vm.run(&f, &[], &[], |lua, _| {
            Ok((
                Value::Table(convert::err_table(lua, "no commands here", false)?),
                true,
            ))
        })
        .map_err(|e| match e {
            RunError::Script { msg, source, line } => {
                format!(
                    "{msg} @{}:{}",
                    source.unwrap_or_default(),
                    line.unwrap_or_default()
                )
            }
            RunError::Fatal(m) => format!("fatal: {m}"),
        })
    }

    fn num(v: &Value) -> Option<f64> {
        match v {
            Value::Integer(i) => Some(*i as f64),
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    fn text(v: &Value) -> String {
        match v {
            Value::String(s) => s.to_string_lossy(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn rand48_matches_redis() {
        // First draws of a fresh Redis 7.0.15: math.random(1000) → 397, then 841.
        let st = AtomicU64::new(rand48::INITIAL);
        let draw = |st: &AtomicU64| (rand48::next(st) % i32::MAX) as f64 / i32::MAX as f64;
        assert_eq!((draw(&st) * 1000.0).floor() + 1.0, 397.0);
        assert_eq!((draw(&st) * 1000.0).floor() + 1.0, 841.0);
        rand48::seed(&st, 7);
        assert_eq!((draw(&st) * 1_000_000.0).floor() + 1.0, 266445.0);
    }

    #[test]
    fn version_number() {
        assert_eq!(version_num("7.0.15"), 458767);
    }

    #[test]
    fn globals_are_protected() {
        let mut vm = vm();
        assert_eq!(
            eval(&mut vm, "x = 1").unwrap_err(),
            "ERR user_script:1: Attempt to modify a readonly table @@user_script:1"
        );
        assert_eq!(
            eval(&mut vm, "return x").unwrap_err(),
            "ERR user_script:1: Script attempted to access nonexistent global variable 'x' @@user_script:1"
        );
        assert_eq!(
            eval(&mut vm, "\n\nstring.x = 1").unwrap_err(),
            "ERR user_script:3: Attempt to modify a readonly table @@user_script:3"
        );
        assert_eq!(
            eval(&mut vm, "rawset(_G, 'x', 1)").unwrap_err(),
            "ERR Attempt to modify a readonly table @@user_script:1"
        );
        assert_eq!(
            eval(&mut vm, "setmetatable(_G, nil)").unwrap_err(),
            "ERR Attempt to modify a readonly table @@user_script:1"
        );
        assert!(eval(&mut vm, "table.insert(redis, 1)").is_err());
        assert!(eval(&mut vm, "getmetatable('').__index = {}").is_err());
        let v = eval(&mut vm, "return tostring(rawget(_G, 'redis') == redis)").unwrap();
        assert_eq!(text(&v), "true");
        let v = eval(
            &mut vm,
            "return tostring(getmetatable('').__index == string)",
        )
        .unwrap();
        assert_eq!(text(&v), "true");
        let v = eval(
            &mut vm,
            "local n = 0 for k in pairs(_G) do n = n + 1 end return n > 20",
        )
        .unwrap();
        assert_eq!(v, Value::Boolean(true));
        // Locals, KEYS and methods still work.
        let v = eval(
            &mut vm,
            "local t = {} t.x = 'a' KEYS[1] = 'k' return t.x:upper() .. KEYS[1]",
        )
        .unwrap();
        assert_eq!(text(&v), "Ak");
    }

    #[test]
    fn dangerous_functions_are_absent() {
        let mut vm = vm();
        for name in [
            "os", "io", "debug", "package", "require", "dofile", "loadfile", "print", "getfenv",
            "setfenv", "newproxy", "module",
        ] {
            let err = eval(&mut vm, &format!("return {name}")).unwrap_err();
            assert!(err.contains("nonexistent global"), "{name}: {err}");
        }
    }

    #[test]
    fn loadstring_is_text_only_and_sandboxed() {
        let mut vm = vm();
        let v = eval(&mut vm, "return loadstring('return 1 + 1')()").unwrap();
        assert_eq!(num(&v), Some(2.0));
        let v = eval(
            &mut vm,
            "return loadstring(string.dump(function() return 1 end))",
        )
        .unwrap();
        assert_eq!(v, Value::Nil);
        let err = eval(&mut vm, "return loadstring('x=1')()").unwrap_err();
        assert_eq!(
            err,
            "ERR [string \"x=1\"]:1: Attempt to modify a readonly table @x=1:1"
        );
        let v = eval(
            &mut vm,
            "local parts = {'return ', '40', '+2'} local i = 0 return load(function() i = i + 1 return parts[i] end)()",
        )
        .unwrap();
        assert_eq!(num(&v), Some(42.0));
    }

    #[test]
    fn error_locations_like_redis() {
        let mut vm = vm();
        assert_eq!(
            eval(&mut vm, "local a = 1\nerror('boom')").unwrap_err(),
            "ERR user_script:2: boom @@user_script:2"
        );
        assert_eq!(
            eval(&mut vm, "error({err='MYERR x'})").unwrap_err(),
            "MYERR x @@user_script:1"
        );
        assert_eq!(
            eval(&mut vm, "error('x', 0)").unwrap_err(),
            "ERR x @@user_script:1"
        );
        assert_eq!(
            eval(&mut vm, "error(nil)").unwrap_err(),
            "ERR nil @@user_script:1"
        );
        assert_eq!(
            eval(&mut vm, "local x\n\nreturn x.y").unwrap_err(),
            "ERR user_script:3: attempt to index local 'x' (a nil value) @@user_script:3"
        );
        assert_eq!(
            eval(&mut vm, "return bit.band('x')").unwrap_err(),
            "ERR user_script:1: bad argument #1 to 'band' (number expected, got string) @@user_script:1"
        );
        assert_eq!(
            eval(&mut vm, "\nreturn redis.call('get', 'a')").unwrap_err(),
            "ERR no commands here @@user_script:2"
        );
        assert_eq!(
            eval(&mut vm, "return redis.sha1hex()").unwrap_err(),
            "ERR wrong number of arguments @@user_script:1"
        );
        assert_eq!(
            eval(&mut vm, "return redis.setresp(4)").unwrap_err(),
            "ERR RESP version must be 2 or 3. @@user_script:1"
        );
        // C-function behaviour: the caller's line, also through tail calls.
        assert_eq!(
            eval(&mut vm, "\nreturn pairs(nil)").unwrap_err(),
            "ERR user_script:2: bad argument #1 to 'pairs' (table expected, got nil) @@user_script:2"
        );
        assert_eq!(
            eval(&mut vm, "table.insert(string, 1)").unwrap_err(),
            "ERR Attempt to modify a readonly table @@user_script:1"
        );
        // Redis 7.0's pcall hands back a redis.call error table as its text.
        let v = eval(
            &mut vm,
            "local ok, e = pcall(redis.call, 'get', 'a') return e",
        )
        .unwrap();
        assert_eq!(text(&v), "ERR no commands here");
        let v = eval(&mut vm, "local ok, e = xpcall(function() redis.call('get', 'a') end, function(e) return type(e) end) return e").unwrap();
        assert_eq!(text(&v), "table");
        let v = eval(&mut vm, "local ok, e = pcall(error, 'x') return e").unwrap();
        assert_eq!(text(&v), "x");
        let v = eval(
            &mut vm,
            "local ok, e = pcall(function() local a = nil; return a.b end) return e",
        )
        .unwrap();
        assert_eq!(
            text(&v),
            "user_script:1: attempt to index local 'a' (a nil value)"
        );
    }

    #[test]
    fn redis_helpers() {
        let mut vm = vm();
        let v = eval(&mut vm, "return redis.sha1hex('')").unwrap();
        assert_eq!(text(&v), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        let v = eval(&mut vm, "return redis.error_reply('My err').err").unwrap();
        assert_eq!(text(&v), "My err");
        let v = eval(&mut vm, "return redis.error_reply('oops').err").unwrap();
        assert_eq!(text(&v), "ERR oops");
        let v = eval(&mut vm, "return redis.status_reply('fine').ok").unwrap();
        assert_eq!(text(&v), "fine");
        let v = eval(&mut vm, "return redis.status_reply(1).err").unwrap();
        assert_eq!(text(&v), "ERR wrong number or type of arguments");
        let v = eval(&mut vm, "return redis.REDIS_VERSION_NUM").unwrap();
        assert_eq!(num(&v), Some(458767.0));
        let v = eval(&mut vm, "return redis.replicate_commands()").unwrap();
        assert_eq!(v, Value::Boolean(true));
        let v = eval(&mut vm, "return redis.set_repl(redis.REPL_ALL)").unwrap();
        assert_eq!(v, Value::Nil);
        assert!(eval(&mut vm, "redis.log(redis.LOG_WARNING, 'hello', 1)").is_ok());
    }

    #[test]
    fn runaway_script_is_killed_even_under_pcall() {
        let run = Arc::new(RunState::default());
        let mut vm = Vm::new(
            run.clone(),
            Arc::new(AtomicU64::new(rand48::INITIAL)),
            64 << 20,
        )
        .unwrap();
        let f = vm
            .compile(b"while true do pcall(function() while true do end end) end")
            .unwrap();
        run.begin(50);
        let start = Instant::now();
        let r = vm.run(&f, &[], &[], |_, _| Ok((Value::Nil, false)));
        run.end();
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        match r {
            Err(RunError::Script { msg, .. }) => assert!(msg.contains("killed"), "{msg}"),
            _ => panic!("script was not killed"),
        }
        // Coroutines are covered too.
        let f = vm
            .compile(b"while true do coroutine.resume(coroutine.create(function() while true do end end)) end")
            .unwrap();
        run.begin(50);
        let r = vm.run(&f, &[], &[], |_, _| Ok((Value::Nil, false)));
        run.end();
        assert!(matches!(r, Err(RunError::Script { .. })));
        // The VM is usable afterwards.
        let f = vm.compile(b"return 1").unwrap();
        run.begin(50);
        let r = vm.run(&f, &[], &[], |_, _| Ok((Value::Nil, false)));
        run.end();
        assert!(matches!(r, Ok(v) if num(&v) == Some(1.0)));
    }

    #[test]
    fn memory_is_bounded() {
        let mut vm = vm();
        let err = eval(
            &mut vm,
            "local t = {} local s = string.rep('x', 1024 * 1024) for i = 1, 100000 do t[i] = s .. i end",
        )
        .unwrap_err();
        assert!(err.contains("not enough memory"), "{err}");
        let v = eval(&mut vm, "return 'still alive'").unwrap();
        assert_eq!(text(&v), "still alive");
    }

    #[test]
    fn compile_errors() {
        let vm = vm();
        assert_eq!(
            vm.compile(b"return (").unwrap_err(),
            "user_script:1: unexpected symbol near '<eof>'"
        );
        assert_eq!(
            vm.compile(b"\x1bLua").unwrap_err(),
            "user_script:1: unexpected symbol near 'char(27)'"
        );
    }
}
