//! The few sandbox functions written against the Lua C API, because only a C function behaves
//! like Redis's C functions where scripts can see it: an error it raises carries the *caller's*
//! line (`user_script:3: bad argument #1 to 'pairs' ...`), `return f(...)` keeps the caller's
//! frame (Lua 5.1 only erases Lua frames in tail calls), and the error handler finds the script
//! line one level up. Lua-written wrappers get all three wrong.
//!
//! - [`lifted`] turns a Rust function returning `ok, values...` into a Lua function that returns
//!   the values or raises the error (with the caller's position for a string, as `luaL_error`
//!   does; a table is raised as it is, as `redis.call` raises `{err=...}`).
//! - `next`, `pairs`, `rawget`, `rawset`, `setmetatable`, `table.insert`: the stock functions
//!   (same checks, same messages), except that they see through read-only proxies and refuse to
//!   write into them.
//! - [`rethrow`] wraps `pcall`, `xpcall` and `coroutine.resume` so an error caught after the run
//!   was killed is raised again; `pcall` also hands back `{err=...}` tables as their text, as
//!   Redis 7.0's own `pcall` does.
//!
//! Nothing else belongs here: everything that can be written with mlua's safe API is.

use mlua::ffi::{self, lua_State};
use mlua::{Function, Lua, Table};
use std::os::raw::{c_char, c_int};

const RO: &[u8] = b"Attempt to modify a readonly table\0";

fn cstr(s: &'static [u8]) -> *const c_char {
    s.as_ptr() as *const c_char
}

/// Raises `msg` (NUL-terminated) prefixed with the caller's position, as `luaL_error` does.
unsafe fn raise_at_caller(l: *mut lua_State, msg: &'static [u8]) -> ! {
    ffi::luaL_where(l, 1);
    ffi::lua_pushstring(l, cstr(msg));
    ffi::lua_concat(l, 2);
    ffi::lua_error(l)
}

/// Raises the read-only error without a position, as Redis's VM does from a C function.
unsafe fn raise_read_only(l: *mut lua_State) -> ! {
    ffi::lua_pushstring(l, cstr(RO));
    ffi::lua_error(l)
}

/// True when the value at `idx` is a read-only proxy (upvalue 1 maps proxies to tables).
unsafe fn is_proxy(l: *mut lua_State, idx: c_int) -> bool {
    ffi::luaL_checkstack(l, 2, std::ptr::null());
    ffi::lua_pushvalue(l, idx);
    ffi::lua_rawget(l, ffi::lua_upvalueindex(1));
    let r = ffi::lua_isnil(l, -1) == 0;
    ffi::lua_pop(l, 1);
    r
}

/// Replaces a proxy at `idx` by the table it stands for.
unsafe fn unproxy(l: *mut lua_State, idx: c_int) {
    ffi::luaL_checkstack(l, 2, std::ptr::null());
    ffi::lua_pushvalue(l, idx);
    ffi::lua_rawget(l, ffi::lua_upvalueindex(1));
    if ffi::lua_isnil(l, -1) == 0 {
        ffi::lua_replace(l, idx);
    } else {
        ffi::lua_pop(l, 1);
    }
}

/// Upvalue 1: a function returning `ok, ...`; upvalue 2: how many values to return (-1: all).
unsafe extern "C-unwind" fn lifted(l: *mut lua_State) -> c_int {
    let n = ffi::lua_gettop(l);
    ffi::luaL_checkstack(l, 2, std::ptr::null());
    ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
    ffi::lua_insert(l, 1);
    ffi::lua_call(l, n, ffi::LUA_MULTRET);
    let got = ffi::lua_gettop(l);
    if got == 0 {
        return 0;
    }
    if ffi::lua_toboolean(l, 1) != 0 {
        let want = ffi::lua_tointeger(l, ffi::lua_upvalueindex(2)) as c_int;
        let avail = got - 1;
        let k = if want < 0 { avail } else { want.min(avail) };
        ffi::lua_settop(l, 1 + k);
        ffi::lua_remove(l, 1);
        return k;
    }
    ffi::lua_settop(l, 2);
    if ffi::lua_type(l, 2) == ffi::LUA_TSTRING {
        ffi::luaL_where(l, 1);
        ffi::lua_insert(l, 2);
        ffi::lua_concat(l, 2);
    }
    ffi::lua_error(l)
}

unsafe extern "C-unwind" fn next(l: *mut lua_State) -> c_int {
    ffi::luaL_checktype(l, 1, ffi::LUA_TTABLE);
    ffi::lua_settop(l, 2);
    unproxy(l, 1);
    if ffi::lua_next(l, 1) != 0 {
        2
    } else {
        ffi::lua_pushnil(l);
        1
    }
}

/// Upvalue 2: the `next` above.
unsafe extern "C-unwind" fn pairs(l: *mut lua_State) -> c_int {
    ffi::luaL_checktype(l, 1, ffi::LUA_TTABLE);
    ffi::luaL_checkstack(l, 3, std::ptr::null());
    ffi::lua_pushvalue(l, ffi::lua_upvalueindex(2));
    ffi::lua_pushvalue(l, 1);
    ffi::lua_pushnil(l);
    3
}

unsafe extern "C-unwind" fn rawget(l: *mut lua_State) -> c_int {
    ffi::luaL_checktype(l, 1, ffi::LUA_TTABLE);
    ffi::luaL_checkany(l, 2);
    ffi::lua_settop(l, 2);
    unproxy(l, 1);
    ffi::lua_rawget(l, 1);
    1
}

unsafe extern "C-unwind" fn rawset(l: *mut lua_State) -> c_int {
    ffi::luaL_checktype(l, 1, ffi::LUA_TTABLE);
    ffi::luaL_checkany(l, 2);
    ffi::luaL_checkany(l, 3);
    if is_proxy(l, 1) {
        raise_read_only(l);
    }
    ffi::lua_settop(l, 3);
    ffi::lua_rawset(l, 1);
    1
}

unsafe extern "C-unwind" fn setmetatable(l: *mut lua_State) -> c_int {
    let t = ffi::lua_type(l, 2);
    ffi::luaL_checktype(l, 1, ffi::LUA_TTABLE);
    if t != ffi::LUA_TNIL && t != ffi::LUA_TTABLE {
        ffi::luaL_argerror(l, 2, cstr(b"nil or table expected\0"));
    }
    if is_proxy(l, 1) {
        raise_read_only(l);
    }
    if ffi::luaL_getmetafield(l, 1, cstr(b"__metatable\0")) != ffi::LUA_TNIL {
        raise_at_caller(l, b"cannot change a protected metatable\0");
    }
    ffi::lua_settop(l, 2);
    ffi::lua_setmetatable(l, 1);
    1
}

/// Lua 5.1's `table.insert`.
unsafe extern "C-unwind" fn tinsert(l: *mut lua_State) -> c_int {
    ffi::luaL_checktype(l, 1, ffi::LUA_TTABLE);
    let mut e = (ffi::lua_objlen(l, 1) as c_int).saturating_add(1);
    let pos = match ffi::lua_gettop(l) {
        2 => e,
        3 => {
            let pos = ffi::luaL_checkinteger(l, 2) as c_int;
            if is_proxy(l, 1) {
                raise_read_only(l);
            }
            if pos > e {
                e = pos;
            }
            ffi::luaL_checkstack(l, 1, std::ptr::null());
            // Lua shifts every slot down to `pos`; a far negative `pos` would make that an
            // uninterruptible loop of billions of steps, so the walk stops a million below 1.
            let mut i = e;
            while i > pos.max(-(1 << 20)) {
                ffi::lua_rawgeti_(l, 1, i - 1);
                ffi::lua_rawseti_(l, 1, i);
                i -= 1;
            }
            pos
        }
        _ => raise_at_caller(l, b"wrong number of arguments to 'insert'\0"),
    };
    if is_proxy(l, 1) {
        raise_read_only(l);
    }
    ffi::lua_rawseti_(l, 1, pos);
    0
}

/// Upvalue 1: the wrapped function (`pcall`, `xpcall`, `coroutine.resume`); upvalue 2: a function
/// telling whether the run was killed; upvalue 3: whether a caught error table `{err=...}` is
/// replaced by its message (Redis 7.0's `pcall` does that, so scripts written for Redis 6, where
/// `redis.call` raised strings, keep working). A failure caught after the kill is raised again.
unsafe extern "C-unwind" fn rethrow(l: *mut lua_State) -> c_int {
    let n = ffi::lua_gettop(l);
    ffi::luaL_checkstack(l, 2, std::ptr::null());
    ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
    ffi::lua_insert(l, 1);
    ffi::lua_call(l, n, ffi::LUA_MULTRET);
    let got = ffi::lua_gettop(l);
    if got >= 1 && ffi::lua_toboolean(l, 1) == 0 {
        ffi::luaL_checkstack(l, 2, std::ptr::null());
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(2));
        ffi::lua_call(l, 0, 1);
        let killed = ffi::lua_toboolean(l, -1) != 0;
        ffi::lua_pop(l, 1);
        if killed {
            ffi::lua_settop(l, 2);
            ffi::lua_error(l);
        }
        if got >= 2
            && ffi::lua_toboolean(l, ffi::lua_upvalueindex(3)) != 0
            && ffi::lua_type(l, 2) == ffi::LUA_TTABLE
        {
            ffi::lua_getfield(l, 2, cstr(b"err\0"));
            if ffi::lua_isstring(l, -1) != 0 {
                ffi::lua_replace(l, 2);
            } else {
                ffi::lua_pop(l, 1);
            }
        }
    }
    got
}

/// Builds a C closure of `f` over the given upvalues.
fn closure(lua: &Lua, f: ffi::lua_CFunction, upvalues: mlua::MultiValue) -> mlua::Result<Function> {
    let n = upvalues.len() as c_int;
    // SAFETY: `exec_raw` leaves exactly the upvalues on the stack, in a protected call; the
    // closure pops them and leaves one function, which is what we read back.
    unsafe {
        lua.exec_raw::<Function>(upvalues, |state| {
            ffi::lua_pushcclosure(state, f, n);
        })
    }
}

/// `f` (returning `ok, ...`) as a Lua function returning up to `nret` values (-1: all).
pub fn lift(lua: &Lua, f: Function, nret: i64) -> mlua::Result<Function> {
    closure(
        lua,
        lifted,
        mlua::MultiValue::from_iter([mlua::Value::Function(f), mlua::Value::Integer(nret)]),
    )
}

/// The proxy-aware base functions, keyed by name; `backing` maps each proxy to its table.
pub fn base(lua: &Lua, backing: &Table) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let b = || mlua::MultiValue::from_iter([mlua::Value::Table(backing.clone())]);
    let next_fn = closure(lua, next, b())?;
    t.raw_set("next", next_fn.clone())?;
    t.raw_set(
        "pairs",
        closure(
            lua,
            pairs,
            mlua::MultiValue::from_iter([
                mlua::Value::Table(backing.clone()),
                mlua::Value::Function(next_fn),
            ]),
        )?,
    )?;
    t.raw_set("rawget", closure(lua, rawget, b())?)?;
    t.raw_set("rawset", closure(lua, rawset, b())?)?;
    t.raw_set("setmetatable", closure(lua, setmetatable, b())?)?;
    t.raw_set("insert", closure(lua, tinsert, b())?)?;
    Ok(t)
}

/// `f` (pcall, xpcall, coroutine.resume) re-raising what it caught once `killed()` is true;
/// with `unwrap`, error tables come back as their `err` text.
pub fn rethrowing(
    lua: &Lua,
    f: Function,
    killed: Function,
    unwrap: bool,
) -> mlua::Result<Function> {
    closure(
        lua,
        rethrow,
        mlua::MultiValue::from_iter([
            mlua::Value::Function(f),
            mlua::Value::Function(killed),
            mlua::Value::Boolean(unwrap),
        ]),
    )
}
