//! The `cjson` library scripts get, behaving as lua-cjson 2.1.0 does inside Redis 7.0.
//!
//! Encoding: a table whose keys are all positive integers is an array (holes become `null`;
//! an "excessively sparse" one is refused), any other table an object (number keys become
//! strings, other key types are refused), the empty table is `{}`; numbers use `%.14g`; NaN/Inf
//! are refused; `/` is escaped as `\/`; `cjson.null` and `nil` encode as `null`; nesting is
//! limited. Decoding follows lua-cjson's tokenizer — including its leniencies (hex numbers,
//! leading zeros, `Infinity`/`NaN`, input ending at a NUL byte) and its exact error texts
//! (`Expected value but found T_END at character 1`). `null` decodes to `cjson.null`, a NULL
//! light userdata. The `encode_*`/`decode_*` configuration functions work on a per-instance
//! configuration, as lua-cjson's do.
//!
//! Written by hand rather than over serde_json because the observable behaviour — key order of
//! the Lua table walk, number formatting, error messages — is lua-cjson's, not JSON's. It
//! deliberately does not grow beyond lua-cjson: no pretty printing, no ordered objects.

use super::lua::{arg_error, fail, Raw};
use crate::server::reply::format_g;
use mlua::{LightUserData, Lua, MultiValue, Table, Value};
use parking_lot::Mutex;
use std::sync::Arc;

/// Nesting is capped here whatever the configuration says, so a raised limit cannot exhaust the
/// native stack (lua-cjson is bounded by the Lua C stack instead).
const HARD_DEPTH: i64 = 1000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Invalid {
    Off,
    On,
    Null,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub encode_max_depth: i64,
    pub decode_max_depth: i64,
    pub precision: usize,
    pub sparse_convert: bool,
    pub sparse_ratio: i64,
    pub sparse_safe: i64,
    pub encode_invalid: Invalid,
    pub decode_invalid: bool,
    pub keep_buffer: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            encode_max_depth: 1000,
            decode_max_depth: 1000,
            precision: 14,
            sparse_convert: false,
            sparse_ratio: 2,
            sparse_safe: 10,
            encode_invalid: Invalid::Off,
            decode_invalid: true,
            keep_buffer: true,
        }
    }
}

fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

fn is_null(v: &Value) -> bool {
    matches!(v, Value::LightUserData(p) if p.0.is_null())
}

fn type_of(v: &Value) -> &'static str {
    super::lua::type_name(Some(v))
}

// ---------------------------------------------------------------------------------------------
// Encoding

struct Encoder<'a> {
    cfg: &'a Config,
    out: Vec<u8>,
}

impl Encoder<'_> {
    fn number(&mut self, n: f64, what: &Value) -> Result<(), String> {
        if n.is_nan() || n.is_infinite() {
            match self.cfg.encode_invalid {
                Invalid::Off => {
                    return Err(format!(
                        "Cannot serialise {}: must not be NaN or Inf",
                        type_of(what)
                    ))
                }
                Invalid::Null => {
                    self.out.extend_from_slice(b"null");
                    return Ok(());
                }
                Invalid::On => {
                    let s = if n.is_nan() {
                        "nan"
                    } else if n > 0.0 {
                        "inf"
                    } else {
                        "-inf"
                    };
                    self.out.extend_from_slice(s.as_bytes());
                    return Ok(());
                }
            }
        }
        self.out
            .extend_from_slice(format_g(n, self.cfg.precision).as_bytes());
        Ok(())
    }

    fn string(&mut self, s: &[u8]) {
        self.out.push(b'"');
        for &c in s {
            match c {
                b'"' => self.out.extend_from_slice(b"\\\""),
                b'\\' => self.out.extend_from_slice(b"\\\\"),
                b'/' => self.out.extend_from_slice(b"\\/"),
                0x08 => self.out.extend_from_slice(b"\\b"),
                b'\t' => self.out.extend_from_slice(b"\\t"),
                b'\n' => self.out.extend_from_slice(b"\\n"),
                0x0c => self.out.extend_from_slice(b"\\f"),
                b'\r' => self.out.extend_from_slice(b"\\r"),
                c if c < 0x20 || c == 0x7f => self
                    .out
                    .extend_from_slice(format!("\\u{:04x}", c).as_bytes()),
                c => self.out.push(c),
            }
        }
        self.out.push(b'"');
    }

    fn value(&mut self, v: &Value, depth: i64) -> Result<(), String> {
        match v {
            Value::String(s) => self.string(&s.as_bytes()),
            Value::Integer(i) => self.number(*i as f64, v)?,
            Value::Number(n) => self.number(*n, v)?,
            Value::Boolean(true) => self.out.extend_from_slice(b"true"),
            Value::Boolean(false) => self.out.extend_from_slice(b"false"),
            Value::Nil => self.out.extend_from_slice(b"null"),
            v if is_null(v) => self.out.extend_from_slice(b"null"),
            Value::Table(t) => {
                let depth = depth + 1;
                if depth > self.cfg.encode_max_depth.min(HARD_DEPTH) {
                    return Err(format!("Cannot serialise, excessive nesting ({depth})"));
                }
                match self.array_length(t)? {
                    Some(len) if len > 0 => {
                        self.out.push(b'[');
                        for i in 1..=len {
                            if i > 1 {
                                self.out.push(b',');
                            }
                            let item: Value = t.raw_get(i).map_err(|e| e.to_string())?;
                            self.value(&item, depth)?;
                        }
                        self.out.push(b']');
                    }
                    _ => self.object(t, depth)?,
                }
            }
            other => {
                return Err(format!(
                    "Cannot serialise {}: type not supported",
                    type_of(other)
                ))
            }
        }
        Ok(())
    }

    /// lua-cjson's `lua_array_length`: `None` for an object, `Some(max index)` for an array.
    fn array_length(&self, t: &Table) -> Result<Option<usize>, String> {
        let mut max = 0f64;
        let mut items = 0f64;
        for pair in t.pairs::<Value, Value>() {
            let (k, _) = pair.map_err(|e| e.to_string())?;
            let k = match k {
                Value::Integer(i) => i as f64,
                Value::Number(n) => n,
                _ => return Ok(None),
            };
            if k == 0.0 || k.floor() != k || k < 1.0 {
                return Ok(None);
            }
            max = max.max(k);
            items += 1.0;
        }
        let c = self.cfg;
        if c.sparse_ratio > 0 && max > items * c.sparse_ratio as f64 && max > c.sparse_safe as f64 {
            if !c.sparse_convert {
                return Err("Cannot serialise table: excessively sparse array".into());
            }
            return Ok(None);
        }
        if max > i32::MAX as f64 {
            return Ok(None);
        }
        Ok(Some(max as usize))
    }

    fn object(&mut self, t: &Table, depth: i64) -> Result<(), String> {
        self.out.push(b'{');
        let mut first = true;
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair.map_err(|e| e.to_string())?;
            if !first {
                self.out.push(b',');
            }
            first = false;
            match &k {
                Value::Integer(i) => {
                    self.out.push(b'"');
                    self.number(*i as f64, &k)?;
                    self.out.extend_from_slice(b"\":");
                }
                Value::Number(n) => {
                    self.out.push(b'"');
                    self.number(*n, &k)?;
                    self.out.extend_from_slice(b"\":");
                }
                Value::String(s) => {
                    self.string(&s.as_bytes());
                    self.out.push(b':');
                }
                other => {
                    return Err(format!(
                        "Cannot serialise {}: table key must be a number or string",
                        type_of(other)
                    ))
                }
            }
            self.value(&v, depth)?;
        }
        self.out.push(b'}');
        Ok(())
    }
}

/// `cjson.encode(value)`.
pub fn encode(cfg: &Config, v: &Value) -> Result<Vec<u8>, String> {
    let mut e = Encoder {
        cfg,
        out: Vec::new(),
    };
    e.value(v, 0)?;
    Ok(e.out)
}

// ---------------------------------------------------------------------------------------------
// Decoding

#[derive(Debug)]
enum Tok {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    Str(Vec<u8>),
    Num(f64),
    Bool(bool),
    Null,
    Colon,
    Comma,
    End,
    Error(&'static str),
}

impl Tok {
    fn name(&self) -> &'static str {
        match self {
            Tok::ObjBegin => "T_OBJ_BEGIN",
            Tok::ObjEnd => "T_OBJ_END",
            Tok::ArrBegin => "T_ARR_BEGIN",
            Tok::ArrEnd => "T_ARR_END",
            Tok::Str(_) => "T_STRING",
            Tok::Num(_) => "T_NUMBER",
            Tok::Bool(_) => "T_BOOLEAN",
            Tok::Null => "T_NULL",
            Tok::Colon => "T_COLON",
            Tok::Comma => "T_COMMA",
            Tok::End => "T_END",
            Tok::Error(e) => e,
        }
    }
}

struct Token {
    tok: Tok,
    index: usize,
}

struct Parser<'a, 'l> {
    lua: &'l Lua,
    data: &'a [u8],
    ptr: usize,
    depth: i64,
    cfg: &'a Config,
}

fn hex_val(c: u8) -> Option<u32> {
    (c as char).to_digit(16)
}

/// C's `strtod` on the longest valid prefix of `s`: returns the value and the bytes consumed
/// (0 when nothing parses).
pub fn strtod(s: &[u8]) -> (f64, usize) {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let mut i = 0;
    let neg = match at(0) {
        b'-' => {
            i = 1;
            true
        }
        b'+' => {
            i = 1;
            false
        }
        _ => false,
    };
    let sign = if neg { -1.0 } else { 1.0 };
    let rest = &s[i.min(s.len())..];
    let starts_ci = |w: &[u8]| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w);
    if starts_ci(b"infinity") {
        return (sign * f64::INFINITY, i + 8);
    }
    if starts_ci(b"inf") {
        return (sign * f64::INFINITY, i + 3);
    }
    if starts_ci(b"nan") {
        let mut j = i + 3;
        if at(j) == b'(' {
            let mut k = j + 1;
            while at(k).is_ascii_alphanumeric() || at(k) == b'_' {
                k += 1;
            }
            if at(k) == b')' {
                j = k + 1;
            }
        }
        return (f64::NAN, j);
    }
    if at(i) == b'0'
        && (at(i + 1) | 0x20) == b'x'
        && (hex_val(at(i + 2)).is_some() || (at(i + 2) == b'.' && hex_val(at(i + 3)).is_some()))
    {
        let mut j = i + 2;
        let mut mant = 0f64;
        let mut exp: i64 = 0;
        while let Some(d) = hex_val(at(j)) {
            mant = mant * 16.0 + d as f64;
            j += 1;
        }
        if at(j) == b'.' {
            j += 1;
            while let Some(d) = hex_val(at(j)) {
                mant = mant * 16.0 + d as f64;
                exp -= 4;
                j += 1;
            }
        }
        if (at(j) | 0x20) == b'p' {
            let mut k = j + 1;
            let eneg = match at(k) {
                b'-' => {
                    k += 1;
                    true
                }
                b'+' => {
                    k += 1;
                    false
                }
                _ => false,
            };
            if at(k).is_ascii_digit() {
                let mut e: i64 = 0;
                while at(k).is_ascii_digit() {
                    e = (e * 10 + (at(k) - b'0') as i64).min(1 << 20);
                    k += 1;
                }
                exp += if eneg { -e } else { e };
                j = k;
            }
        }
        return (sign * mant * 2f64.powi(exp.clamp(-4000, 4000) as i32), j);
    }
    let start = i;
    let mut j = i;
    let mut digits = 0;
    while at(j).is_ascii_digit() {
        j += 1;
        digits += 1;
    }
    if at(j) == b'.' {
        j += 1;
        while at(j).is_ascii_digit() {
            j += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return (0.0, 0);
    }
    if (at(j) | 0x20) == b'e' {
        let mut k = j + 1;
        if at(k) == b'+' || at(k) == b'-' {
            k += 1;
        }
        if at(k).is_ascii_digit() {
            while at(k).is_ascii_digit() {
                k += 1;
            }
            j = k;
        }
    }
    let text = std::str::from_utf8(&s[start..j]).unwrap_or("0");
    let text = if text.starts_with('.') {
        format!("0{text}")
    } else {
        text.to_string()
    };
    let v: f64 = text.trim_end_matches('.').parse().unwrap_or(0.0);
    (sign * v, j)
}

impl Parser<'_, '_> {
    fn ch(&self, i: usize) -> u8 {
        self.data.get(i).copied().unwrap_or(0)
    }

    fn starts_with(&self, w: &[u8]) -> bool {
        self.data.len() >= self.ptr + w.len() && &self.data[self.ptr..self.ptr + w.len()] == w
    }

    /// lua-cjson's `json_is_invalid_number`: forms strtod takes but strict JSON does not.
    fn is_invalid_number(&self) -> bool {
        let mut p = self.ptr;
        if self.ch(p) == b'+' {
            return true;
        }
        if self.ch(p) == b'-' {
            p += 1;
        }
        if self.ch(p) == b'0' {
            let c2 = self.ch(p + 1);
            return (c2 | 0x20) == b'x' || c2.is_ascii_digit();
        } else if self.ch(p) <= b'9' {
            return false;
        }
        let rest = &self.data[p.min(self.data.len())..];
        let ci = |w: &[u8]| rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(w);
        ci(b"inf") || ci(b"nan")
    }

    fn number(&mut self) -> Tok {
        let (v, used) = strtod(&self.data[self.ptr..]);
        if used == 0 {
            return Tok::Error("invalid number");
        }
        self.ptr += used;
        Tok::Num(v)
    }

    fn next(&mut self) -> Token {
        while matches!(self.ch(self.ptr), b' ' | b'\t' | b'\r' | b'\n') {
            self.ptr += 1;
        }
        let index = self.ptr;
        let c = self.ch(self.ptr);
        let single = match c {
            0 => {
                return Token {
                    tok: Tok::End,
                    index,
                }
            }
            b'{' => Some(Tok::ObjBegin),
            b'}' => Some(Tok::ObjEnd),
            b'[' => Some(Tok::ArrBegin),
            b']' => Some(Tok::ArrEnd),
            b':' => Some(Tok::Colon),
            b',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(tok) = single {
            self.ptr += 1;
            return Token { tok, index };
        }
        if !matches!(
            c,
            b'"' | b'-' | b'0'..=b'9' | b'f' | b'i' | b'I' | b'n' | b'N' | b't' | b'+'
        ) {
            return Token {
                tok: Tok::Error("invalid token"),
                index,
            };
        }
        let tok = if c == b'"' {
            return self.string();
        } else if c == b'-' || c.is_ascii_digit() {
            if !self.cfg.decode_invalid && self.is_invalid_number() {
                Tok::Error("invalid number")
            } else {
                self.number()
            }
        } else if self.starts_with(b"true") {
            self.ptr += 4;
            Tok::Bool(true)
        } else if self.starts_with(b"false") {
            self.ptr += 5;
            Tok::Bool(false)
        } else if self.starts_with(b"null") {
            self.ptr += 4;
            Tok::Null
        } else if self.cfg.decode_invalid && self.is_invalid_number() {
            self.number()
        } else {
            Tok::Error("invalid token")
        };
        // An error token points where the scanner stopped, as lua-cjson reports it.
        let index = if matches!(tok, Tok::Error(_)) {
            self.ptr
        } else {
            index
        };
        Token { tok, index }
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let mut v = 0;
        for i in 0..4 {
            v = v * 16 + hex_val(self.ch(at + i))?;
        }
        Some(v)
    }

    /// A `\uXXXX` escape (with its surrogate pair) at `ptr`, appended as UTF-8.
    fn unicode_escape(&mut self, buf: &mut Vec<u8>) -> Option<()> {
        let mut cp = self.hex4(self.ptr + 2)?;
        let mut len = 6;
        if cp & 0xF800 == 0xD800 {
            if cp & 0x400 != 0 {
                return None;
            }
            if self.ch(self.ptr + 6) != b'\\' || self.ch(self.ptr + 7) != b'u' {
                return None;
            }
            let low = self.hex4(self.ptr + 8)?;
            if low & 0xFC00 != 0xDC00 {
                return None;
            }
            cp = (((cp & 0x3FF) << 10) | (low & 0x3FF)) + 0x10000;
            len = 12;
        }
        let mut tmp = [0u8; 4];
        match cp {
            0..=0x7F => buf.push(cp as u8),
            0x80..=0x7FF => {
                buf.push(0xC0 | (cp >> 6) as u8);
                buf.push(0x80 | (cp & 0x3F) as u8);
            }
            0x800..=0xFFFF => {
                tmp[0] = 0xE0 | (cp >> 12) as u8;
                tmp[1] = 0x80 | ((cp >> 6) & 0x3F) as u8;
                tmp[2] = 0x80 | (cp & 0x3F) as u8;
                buf.extend_from_slice(&tmp[..3]);
            }
            _ => {
                tmp[0] = 0xF0 | (cp >> 18) as u8;
                tmp[1] = 0x80 | ((cp >> 12) & 0x3F) as u8;
                tmp[2] = 0x80 | ((cp >> 6) & 0x3F) as u8;
                tmp[3] = 0x80 | (cp & 0x3F) as u8;
                buf.extend_from_slice(&tmp);
            }
        }
        self.ptr += len;
        Some(())
    }

    fn string(&mut self) -> Token {
        let index = self.ptr;
        self.ptr += 1;
        let mut buf = Vec::new();
        loop {
            let c = self.ch(self.ptr);
            match c {
                b'"' => break,
                0 => {
                    return Token {
                        tok: Tok::Error("unexpected end of string"),
                        index: self.ptr,
                    }
                }
                b'\\' => {
                    let e = match self.ch(self.ptr + 1) {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b't' => b'\t',
                        b'n' => b'\n',
                        b'f' => 0x0c,
                        b'r' => b'\r',
                        b'u' => {
                            if self.unicode_escape(&mut buf).is_none() {
                                return Token {
                                    tok: Tok::Error("invalid unicode escape code"),
                                    index: self.ptr,
                                };
                            }
                            continue;
                        }
                        _ => {
                            return Token {
                                tok: Tok::Error("invalid escape code"),
                                index: self.ptr,
                            }
                        }
                    };
                    buf.push(e);
                    self.ptr += 2;
                }
                c => {
                    buf.push(c);
                    self.ptr += 1;
                }
            }
        }
        self.ptr += 1;
        Token {
            tok: Tok::Str(buf),
            index,
        }
    }

    fn error(&self, expected: &str, t: &Token) -> String {
        format!(
            "Expected {expected} but found {} at character {}",
            t.tok.name(),
            t.index + 1
        )
    }

    fn descend(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > self.cfg.decode_max_depth.min(HARD_DEPTH) {
            return Err(format!(
                "Found too many nested data structures ({}) at character {}",
                self.depth, self.ptr
            ));
        }
        Ok(())
    }

    fn value(&mut self, t: Token) -> Result<Value, String> {
        let lerr = |e: mlua::Error| e.to_string();
        match t.tok {
            Tok::Str(s) => Ok(Value::String(self.lua.create_string(s).map_err(lerr)?)),
            Tok::Num(n) => Ok(Value::Number(n)),
            Tok::Bool(b) => Ok(Value::Boolean(b)),
            Tok::Null => Ok(null()),
            Tok::ObjBegin => self.object(),
            Tok::ArrBegin => self.array(),
            _ => Err(self.error("value", &t)),
        }
    }

    fn object(&mut self) -> Result<Value, String> {
        let lerr = |e: mlua::Error| e.to_string();
        self.descend()?;
        let table = self.lua.create_table().map_err(lerr)?;
        let mut t = self.next();
        if matches!(t.tok, Tok::ObjEnd) {
            self.depth -= 1;
            return Ok(Value::Table(table));
        }
        loop {
            let key = match t.tok {
                Tok::Str(ref s) => self.lua.create_string(s).map_err(lerr)?,
                _ => return Err(self.error("object key string", &t)),
            };
            let c = self.next();
            if !matches!(c.tok, Tok::Colon) {
                return Err(self.error("colon", &c));
            }
            let vt = self.next();
            let v = self.value(vt)?;
            table.raw_set(key, v).map_err(lerr)?;
            let n = self.next();
            match n.tok {
                Tok::ObjEnd => {
                    self.depth -= 1;
                    return Ok(Value::Table(table));
                }
                Tok::Comma => {}
                _ => return Err(self.error("comma or object end", &n)),
            }
            t = self.next();
        }
    }

    fn array(&mut self) -> Result<Value, String> {
        let lerr = |e: mlua::Error| e.to_string();
        self.descend()?;
        let table = self.lua.create_table().map_err(lerr)?;
        let mut t = self.next();
        if matches!(t.tok, Tok::ArrEnd) {
            self.depth -= 1;
            return Ok(Value::Table(table));
        }
        let mut i = 1;
        loop {
            let v = self.value(t)?;
            table.raw_set(i, v).map_err(lerr)?;
            i += 1;
            let n = self.next();
            match n.tok {
                Tok::ArrEnd => {
                    self.depth -= 1;
                    return Ok(Value::Table(table));
                }
                Tok::Comma => {}
                _ => return Err(self.error("comma or array end", &n)),
            }
            t = self.next();
        }
    }
}

/// `cjson.decode(text)`.
pub fn decode(lua: &Lua, cfg: &Config, data: &[u8]) -> Result<Value, String> {
    if data.len() >= 2 && (data[0] == 0 || data[1] == 0) {
        return Err("JSON parser does not support UTF-16 or UTF-32".into());
    }
    let mut p = Parser {
        lua,
        data,
        ptr: 0,
        depth: 0,
        cfg,
    };
    let t = p.next();
    let v = p.value(t)?;
    let end = p.next();
    if !matches!(end.tok, Tok::End) {
        return Err(p.error("the end", &end));
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// The Lua module

type Shared = Arc<Mutex<Config>>;

fn too_many(lua: &Lua, fname: &str, max: usize, args: &MultiValue) -> Option<Raw> {
    (args.len() > max).then(|| {
        fail(
            lua,
            &format!(
                "bad argument #{} to '{fname}' (found too many arguments)",
                max + 1
            ),
        )
    })
}

/// lua-cjson's `json_integer_option`: reads argument `i` if given, then reports the setting.
fn int_option(
    lua: &Lua,
    args: &MultiValue,
    i: usize,
    fname: &str,
    setting: &mut i64,
    min: i64,
    max: i64,
) -> Result<Value, String> {
    match args.get(i - 1) {
        None | Some(Value::Nil) => {}
        Some(v) => {
            let n = lua
                .coerce_number(v.clone())
                .ok()
                .flatten()
                .ok_or_else(|| arg_error(i, fname, "number", Some(v)))? as i64;
            if n < min || n > max {
                return Err(format!(
                    "bad argument #1 to '{fname}' (expected integer between {min} and {max})"
                ));
            }
            *setting = n;
        }
    }
    Ok(Value::Integer(*setting))
}

/// lua-cjson's `json_enum_option` for on/off settings (booleans or "on"/"off").
fn bool_option(
    args: &MultiValue,
    i: usize,
    fname: &str,
    setting: &mut bool,
) -> Result<Value, String> {
    match args.get(i - 1) {
        None | Some(Value::Nil) => {}
        Some(Value::Boolean(b)) => *setting = *b,
        Some(Value::String(s)) if &*s.as_bytes() == b"on" => *setting = true,
        Some(Value::String(s)) if &*s.as_bytes() == b"off" => *setting = false,
        Some(Value::String(s)) => {
            return Err(format!(
                "bad argument #{i} to '{fname}' (invalid option '{}')",
                s.to_string_lossy()
            ))
        }
        Some(v) => return Err(arg_error(i, fname, "string", Some(v))),
    }
    Ok(Value::Boolean(*setting))
}

fn raw_fn<F>(lua: &Lua, t: &Table, name: &str, f: F) -> mlua::Result<()>
where
    F: Fn(&Lua, MultiValue) -> Raw + mlua::MaybeSend + 'static,
{
    t.raw_set(name, lua.create_function(f)?)
}

/// The raw functions of one cjson instance (its own configuration), for the prelude to lift.
pub fn open(lua: &Lua) -> mlua::Result<Table> {
    let cfg: Shared = Arc::new(Mutex::new(Config::default()));
    let t = lua.create_table()?;
    t.raw_set("_NAME", "cjson")?;
    t.raw_set("_VERSION", "2.1.0")?;
    t.raw_set("null", null())?;

    let c = cfg.clone();
    raw_fn(lua, &t, "encode", move |lua, args| {
        if args.len() != 1 {
            return fail(lua, "bad argument #1 to 'encode' (expected 1 argument)");
        }
        let cfg = c.lock().clone();
        match encode(&cfg, &args[0]) {
            Ok(s) => Ok((true, Value::String(lua.create_string(s)?))),
            Err(m) => fail(lua, &m),
        }
    })?;
    let c = cfg.clone();
    raw_fn(lua, &t, "decode", move |lua, args| {
        if args.len() != 1 {
            return fail(lua, "bad argument #1 to 'decode' (expected 1 argument)");
        }
        let text = match &args[0] {
            v @ (Value::String(_) | Value::Integer(_) | Value::Number(_)) => {
                lua.coerce_string(v.clone())?
            }
            _ => None,
        };
        let Some(text) = text else {
            return fail(lua, &arg_error(1, "decode", "string", args.front()));
        };
        let cfg = c.lock().clone();
        match decode(lua, &cfg, &text.as_bytes()) {
            Ok(v) => Ok((true, v)),
            Err(m) => fail(lua, &m),
        }
    })?;

    let c = cfg.clone();
    t.raw_set(
        "encode_sparse_array",
        lua.create_function(
            move |lua, args: MultiValue| -> mlua::Result<(bool, Value, Value, Value)> {
                let name = "encode_sparse_array";
                let err = |lua: &Lua, m: String| -> mlua::Result<(bool, Value, Value, Value)> {
                    Ok((
                        false,
                        Value::String(lua.create_string(m)?),
                        Value::Nil,
                        Value::Nil,
                    ))
                };
                if args.len() > 3 {
                    return err(
                        lua,
                        format!("bad argument #4 to '{name}' (found too many arguments)"),
                    );
                }
                let mut cfg = c.lock();
                let r = (|| {
                    let a = bool_option(&args, 1, name, &mut cfg.sparse_convert)?;
                    let b = int_option(
                        lua,
                        &args,
                        2,
                        name,
                        &mut cfg.sparse_ratio,
                        0,
                        i32::MAX as i64,
                    )?;
                    let d = int_option(
                        lua,
                        &args,
                        3,
                        name,
                        &mut cfg.sparse_safe,
                        0,
                        i32::MAX as i64,
                    )?;
                    Ok::<_, String>((a, b, d))
                })();
                match r {
                    Ok((a, b, d)) => Ok((true, a, b, d)),
                    Err(m) => err(lua, m),
                }
            },
        )?,
    )?;
    for (name, which) in [
        ("encode_max_depth", 0),
        ("decode_max_depth", 1),
        ("encode_number_precision", 2),
    ] {
        let c = cfg.clone();
        raw_fn(lua, &t, name, move |lua, args| {
            if let Some(r) = too_many(lua, name, 1, &args) {
                return r;
            }
            let mut cfg = c.lock();
            let r = match which {
                0 => int_option(
                    lua,
                    &args,
                    1,
                    name,
                    &mut cfg.encode_max_depth,
                    1,
                    i32::MAX as i64,
                ),
                1 => int_option(
                    lua,
                    &args,
                    1,
                    name,
                    &mut cfg.decode_max_depth,
                    1,
                    i32::MAX as i64,
                ),
                _ => {
                    let mut p = cfg.precision as i64;
                    let r = int_option(lua, &args, 1, name, &mut p, 1, 14);
                    cfg.precision = p as usize;
                    r
                }
            };
            match r {
                Ok(v) => Ok((true, v)),
                Err(m) => fail(lua, &m),
            }
        })?;
    }
    for (name, which) in [("encode_keep_buffer", 0), ("decode_invalid_numbers", 1)] {
        let c = cfg.clone();
        raw_fn(lua, &t, name, move |lua, args| {
            if let Some(r) = too_many(lua, name, 1, &args) {
                return r;
            }
            let mut cfg = c.lock();
            let setting = if which == 0 {
                &mut cfg.keep_buffer
            } else {
                &mut cfg.decode_invalid
            };
            match bool_option(&args, 1, name, setting) {
                Ok(v) => Ok((true, v)),
                Err(m) => fail(lua, &m),
            }
        })?;
    }
    let c = cfg.clone();
    raw_fn(lua, &t, "encode_invalid_numbers", move |lua, args| {
        let name = "encode_invalid_numbers";
        if let Some(r) = too_many(lua, name, 1, &args) {
            return r;
        }
        let mut cfg = c.lock();
        match args.front() {
            None | Some(Value::Nil) => {}
            Some(Value::Boolean(b)) => {
                cfg.encode_invalid = if *b { Invalid::On } else { Invalid::Off }
            }
            Some(Value::String(s)) => {
                cfg.encode_invalid = match &*s.as_bytes() {
                    b"off" => Invalid::Off,
                    b"on" => Invalid::On,
                    b"null" => Invalid::Null,
                    _ => {
                        return fail(
                            lua,
                            &format!(
                                "bad argument #1 to '{name}' (invalid option '{}')",
                                s.to_string_lossy()
                            ),
                        )
                    }
                }
            }
            Some(v) => return fail(lua, &arg_error(1, name, "string", Some(v))),
        }
        let v = match cfg.encode_invalid {
            Invalid::Off => Value::Boolean(false),
            Invalid::On => Value::Boolean(true),
            Invalid::Null => Value::String(lua.create_string("null")?),
        };
        Ok((true, v))
    })?;
    t.raw_set("new", lua.create_function(|lua, ()| open(lua))?)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(lua: &Lua, src: &str) -> Result<String, String> {
        let v: Value = lua.load(src).eval().unwrap();
        encode(&Config::default(), &v).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn dec_err(lua: &Lua, text: &str) -> String {
        decode(lua, &Config::default(), text.as_bytes()).unwrap_err()
    }

    fn dec_num(lua: &Lua, text: &str) -> f64 {
        decode(lua, &Config::default(), text.as_bytes())
            .map(|v| match v {
                Value::Number(n) => n,
                other => panic!("{other:?}"),
            })
            .unwrap()
    }

    // Expected values below were produced by Redis 7.0.15's cjson.
    #[test]
    fn encodes_like_lua_cjson() {
        let lua = Lua::new();
        assert_eq!(enc(&lua, "{1,2,3}").unwrap(), "[1,2,3]");
        assert_eq!(enc(&lua, "{a=1}").unwrap(), r#"{"a":1}"#);
        assert_eq!(enc(&lua, "{}").unwrap(), "{}");
        assert_eq!(enc(&lua, "{[1]=1,[2]=2,[4]=4}").unwrap(), "[1,2,null,4]");
        assert_eq!(
            enc(&lua, "{[1]=1,[20]=2}").unwrap_err(),
            "Cannot serialise table: excessively sparse array"
        );
        assert_eq!(
            enc(&lua, "{1, 'a', true, false, nil, {x='y/z'}}").unwrap(),
            r#"[1,"a",true,false,null,{"x":"y\/z"}]"#
        );
        assert_eq!(
            enc(&lua, r#"'a"b\\c\n\t\1\127\200'"#).unwrap(),
            "\"a\\\"b\\\\c\\n\\t\\u0001\\u007f\u{fffd}\""
        );
        assert_eq!(enc(&lua, "0.1").unwrap(), "0.1");
        assert_eq!(enc(&lua, "1/3").unwrap(), "0.33333333333333");
        assert_eq!(enc(&lua, "1e20").unwrap(), "1e+20");
        assert_eq!(enc(&lua, "-0").unwrap(), "-0");
        assert_eq!(enc(&lua, "123456789012345").unwrap(), "1.2345678901234e+14");
        assert_eq!(
            enc(&lua, "1/0").unwrap_err(),
            "Cannot serialise number: must not be NaN or Inf"
        );
        assert_eq!(
            enc(&lua, "function() end").unwrap_err(),
            "Cannot serialise function: type not supported"
        );
        assert_eq!(
            enc(&lua, "{[true]=1}").unwrap_err(),
            "Cannot serialise boolean: table key must be a number or string"
        );
        assert_eq!(enc(&lua, "{[1.5]=1}").unwrap(), r#"{"1.5":1}"#);
        assert_eq!(enc(&lua, "{[0]=1}").unwrap(), r#"{"0":1}"#);
        assert_eq!(enc(&lua, "{[-1]=1}").unwrap(), r#"{"-1":1}"#);
        assert_eq!(enc(&lua, "nil").unwrap(), "null");
        assert_eq!(enc(&lua, "{['a\\0b']=1}").unwrap(), r#"{"a\u0000b":1}"#);
        assert_eq!(
            enc(&lua, "(function() local t = {} t[1] = t return t end)()").unwrap_err(),
            "Cannot serialise, excessive nesting (1001)"
        );
    }

    #[test]
    fn decodes_like_lua_cjson() {
        let lua = Lua::new();
        assert_eq!(dec_num(&lua, "0x10"), 16.0);
        assert_eq!(dec_num(&lua, "1e2"), 100.0);
        assert_eq!(dec_num(&lua, "01"), 1.0);
        assert_eq!(dec_num(&lua, "  5  "), 5.0);
        assert_eq!(dec_num(&lua, "-2.5e-1"), -0.25);
        assert!(dec_num(&lua, "Infinity").is_infinite());
        assert!(dec_num(&lua, "nan").is_nan());
        let s = decode(&lua, &Config::default(), br#""\u00e9\ud83d\ude00\n\/""#).unwrap();
        match s {
            Value::String(s) => assert_eq!(&*s.as_bytes(), "é😀\n/".as_bytes()),
            other => panic!("{other:?}"),
        }
        assert!(is_null(&decode(&lua, &Config::default(), b"null").unwrap()));
        assert_eq!(
            dec_err(&lua, ""),
            "Expected value but found T_END at character 1"
        );
        assert_eq!(
            dec_err(&lua, "[1,"),
            "Expected value but found T_END at character 4"
        );
        assert_eq!(
            dec_err(&lua, r#"{"a" 1}"#),
            "Expected colon but found T_NUMBER at character 6"
        );
        assert_eq!(
            dec_err(&lua, "nul"),
            "Expected value but found invalid token at character 1"
        );
        assert_eq!(
            dec_err(&lua, "[1] x"),
            "Expected the end but found invalid token at character 5"
        );
        assert_eq!(
            dec_err(&lua, r#""\x""#),
            "Expected value but found invalid escape code at character 2"
        );
        assert_eq!(
            dec_err(&lua, "-"),
            "Expected value but found invalid number at character 1"
        );
        assert_eq!(
            dec_err(&lua, "[1,2,]"),
            "Expected value but found T_ARR_END at character 6"
        );
        assert_eq!(
            dec_err(&lua, r#"{"a":1,}"#),
            "Expected object key string but found T_OBJ_END at character 8"
        );
        assert_eq!(
            dec_err(&lua, "{1:2}"),
            "Expected object key string but found T_NUMBER at character 2"
        );
        assert_eq!(
            dec_err(&lua, r#""abc"#),
            "Expected value but found unexpected end of string at character 5"
        );
        assert_eq!(
            dec_err(&lua, "[1 2]"),
            "Expected comma or array end but found T_NUMBER at character 4"
        );
        let deep = format!("{}{}", "[".repeat(1001), "]".repeat(1001));
        assert_eq!(
            dec_err(&lua, &deep),
            "Found too many nested data structures (1001) at character 1001"
        );
        assert_eq!(
            dec_err(&lua, "a\0"),
            "JSON parser does not support UTF-16 or UTF-32"
        );
    }

    #[test]
    fn round_trip_through_lua() {
        let lua = Lua::new();
        let v = decode(
            &lua,
            &Config::default(),
            br#"{"a":[1,2.5,"x",true,false,null],"b":{"c":{}}}"#,
        )
        .unwrap();
        lua.globals().set("v", v).unwrap();
        let ok: bool = lua
            .load("return v.a[1] == 1 and v.a[2] == 2.5 and v.a[3] == 'x' and v.a[4] == true and v.a[5] == false and #v.a == 6 and type(v.b.c) == 'table'")
            .eval()
            .unwrap();
        assert!(ok);
        let v: Value = lua.globals().get("v").unwrap();
        let back = encode(&Config::default(), &v).unwrap();
        let again = decode(&lua, &Config::default(), &back).unwrap();
        assert_eq!(
            encode(&Config::default(), &again).unwrap(),
            back,
            "{}",
            String::from_utf8_lossy(&back)
        );
    }

    #[test]
    fn strtod_prefixes() {
        assert_eq!(strtod(b"12abc"), (12.0, 2));
        assert_eq!(strtod(b"1e"), (1.0, 1));
        assert_eq!(strtod(b"1.5e+3,"), (1500.0, 6));
        assert_eq!(strtod(b".5"), (0.5, 2));
        assert_eq!(strtod(b"5."), (5.0, 2));
        assert_eq!(strtod(b"0x1p4"), (16.0, 5));
        assert_eq!(strtod(b"0x"), (0.0, 1));
        assert_eq!(strtod(b"-"), (0.0, 0));
        assert_eq!(strtod(b"+7"), (7.0, 2));
        assert_eq!(strtod(b"-inf").0, f64::NEG_INFINITY);
    }
}
