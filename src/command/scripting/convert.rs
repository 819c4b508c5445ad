//! Conversions between Redis replies and Lua values, with Redis 7.0's rules.
//!
//! Command reply → Lua (what `redis.call` returns): integer → number, bulk → string, status →
//! `{ok=...}`, error → `{err=...}`, null → `false` (RESP2) or `nil` (RESP3), array → table; after
//! `redis.setresp(3)` also map → `{map={...}}`, set → `{set={k=true}}`, double → `{double=n}`,
//! boolean → boolean, big number → `{big_number=s}`, verbatim → `{verbatim_string={...}}`.
//!
//! Lua → reply (what the script returns): number → integer (truncated as C casts it), string →
//! bulk, `true` → 1 (RESP3 scripts: boolean), `false` → null (RESP3 scripts: boolean), `nil` and
//! other types → null, tables with `err`/`ok`/`double`/`big_number`/`verbatim_string`/`map`/`set`
//! → that reply type, other tables → array up to the first `nil`. RESP3 types degrade for RESP2
//! callers as the reply writer degrades them.
//!
//! It also turns `redis.call` arguments into a command vector. It does not run commands.

use crate::server::reply::{format_double, Reply};
use bytes::Bytes;
use mlua::{Lua, MultiValue, Table, Value};
use redis_protocol::resp2::types::OwnedFrame as Frame2;
use redis_protocol::resp3::types::{OwnedFrame as Frame3, VerbatimStringFormat};

pub const NO_ARGS: &str = "Please specify at least one argument for this redis lib call";
pub const BAD_ARG: &str = "Lua redis lib command arguments must be strings or integers";

/// Redis's `luaPushErrorBuff` text rule: `-CODE msg` keeps its code, anything else gets `ERR`;
/// surrounding CR/LF of the message is trimmed.
pub fn error_text(raw: &str) -> String {
    let (code, msg) = match raw.strip_prefix('-') {
        Some(rest) => match rest.split_once(' ') {
            Some((code, msg)) => (code, msg),
            None => ("ERR", rest),
        },
        None => ("ERR", raw),
    };
    let msg = msg.trim_matches(|c| c == '\r' || c == '\n');
    format!("{code} {msg}")
}

/// An error table `{err = text}`, flagged as already counted when it came from a command.
pub fn err_table(lua: &Lua, raw: &str, ignore_stats: bool) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("err", error_text(raw))?;
    if ignore_stats {
        t.raw_set("ignore_error_stats_update", true)?;
    }
    Ok(t)
}

/// C's `%.17g` as Redis uses it to turn a Lua number into a command argument.
pub fn number_arg(n: f64) -> String {
    if n.is_nan() {
        return if n.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    format_double(n)
}

/// `redis.call` arguments → a command vector: strings as they are, numbers as `%.17g`.
pub fn lua_args(args: &MultiValue) -> Result<Vec<Bytes>, &'static str> {
    if args.is_empty() {
        return Err(NO_ARGS);
    }
    args.iter()
        .map(|v| match v {
            Value::String(s) => Ok(Bytes::copy_from_slice(&s.as_bytes())),
            Value::Integer(i) => Ok(Bytes::from(number_arg(*i as f64))),
            Value::Number(n) => Ok(Bytes::from(number_arg(*n))),
            _ => Err(BAD_ARG),
        })
        .collect()
}

/// `(long long)` of a double as x86 computes it: out of range and NaN give `i64::MIN`.
pub fn c_int64(n: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if (-LIMIT..LIMIT).contains(&n) {
        n as i64
    } else {
        i64::MIN
    }
}

/// Decodes one reply a command wrote and converts it; the flag says it is a top-level error
/// (which `redis.call` raises).
pub fn reply_to_lua(lua: &Lua, buf: &[u8], resp3: bool) -> mlua::Result<(Value, bool)> {
    if resp3 {
        match redis_protocol::resp3::decode::complete::decode(buf) {
            Ok(Some((f, _))) => {
                let err = matches!(f, Frame3::SimpleError { .. } | Frame3::BlobError { .. });
                Ok((resp3_value(lua, &f)?, err))
            }
            _ => undecodable(lua),
        }
    } else {
        match redis_protocol::resp2::decode::decode(buf) {
            Ok(Some((f, _))) => {
                let err = matches!(f, Frame2::Error(_));
                Ok((resp2_value(lua, &f)?, err))
            }
            _ => undecodable(lua),
        }
    }
}

fn undecodable(lua: &Lua) -> mlua::Result<(Value, bool)> {
    let t = err_table(lua, "ERR the command produced no valid reply", true)?;
    Ok((Value::Table(t), true))
}

fn single(lua: &Lua, key: &str, v: impl mlua::IntoLua) -> mlua::Result<Value> {
    let t = lua.create_table()?;
    t.raw_set(key, v)?;
    Ok(Value::Table(t))
}

fn resp2_value(lua: &Lua, f: &Frame2) -> mlua::Result<Value> {
    Ok(match f {
        Frame2::SimpleString(s) => single(lua, "ok", lua.create_string(s)?)?,
        Frame2::Error(e) => Value::Table(err_table(lua, &format!("-{e}"), true)?),
        Frame2::Integer(i) => Value::Number(*i as f64),
        Frame2::BulkString(b) => Value::String(lua.create_string(b)?),
        Frame2::Null => Value::Boolean(false),
        Frame2::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, resp2_value(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

fn resp3_value(lua: &Lua, f: &Frame3) -> mlua::Result<Value> {
    Ok(match f {
        Frame3::BlobString { data, .. } => Value::String(lua.create_string(data)?),
        Frame3::SimpleString { data, .. } => single(lua, "ok", lua.create_string(data)?)?,
        Frame3::SimpleError { data, .. } => {
            Value::Table(err_table(lua, &format!("-{data}"), true)?)
        }
        Frame3::BlobError { data, .. } => Value::Table(err_table(
            lua,
            &format!("-{}", String::from_utf8_lossy(data)),
            true,
        )?),
        Frame3::Boolean { data, .. } => Value::Boolean(*data),
        Frame3::Null => Value::Nil,
        Frame3::Number { data, .. } => Value::Number(*data as f64),
        Frame3::Double { data, .. } => single(lua, "double", *data)?,
        Frame3::BigNumber { data, .. } => single(lua, "big_number", lua.create_string(data)?)?,
        Frame3::VerbatimString { data, format, .. } => {
            let inner = lua.create_table()?;
            inner.raw_set("string", lua.create_string(data)?)?;
            let fmt = match format {
                VerbatimStringFormat::Text => "txt",
                VerbatimStringFormat::Markdown => "mkd",
            };
            inner.raw_set("format", fmt)?;
            single(lua, "verbatim_string", inner)?
        }
        Frame3::Array { data, .. } | Frame3::Push { data, .. } => {
            let t = lua.create_table_with_capacity(data.len(), 0)?;
            for (i, item) in data.iter().enumerate() {
                t.raw_set(i + 1, resp3_value(lua, item)?)?;
            }
            Value::Table(t)
        }
        Frame3::Map { data, .. } => {
            let t = lua.create_table_with_capacity(0, data.len())?;
            for (k, v) in data.iter() {
                let k = resp3_value(lua, k)?;
                if !matches!(k, Value::Nil) {
                    t.raw_set(k, resp3_value(lua, v)?)?;
                }
            }
            single(lua, "map", t)?
        }
        Frame3::Set { data, .. } => {
            let t = lua.create_table_with_capacity(0, data.len())?;
            for k in data.iter() {
                let k = resp3_value(lua, k)?;
                if !matches!(k, Value::Nil) {
                    t.raw_set(k, true)?;
                }
            }
            single(lua, "set", t)?
        }
        Frame3::Hello { .. } | Frame3::ChunkedString(_) => Value::Nil,
    })
}

/// Bytes of an error or status line: CR and LF become spaces, as Redis does.
fn line_bytes(s: &[u8]) -> Vec<u8> {
    s.iter()
        .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
        .collect()
}

fn raw_line(out: &mut Reply, prefix: u8, s: &[u8]) {
    out.raw(&[prefix]);
    out.raw(&line_bytes(s));
    out.raw(b"\r\n");
}

/// Writes a script's return value as the reply. `script_resp3` is the protocol the script chose
/// with `redis.setresp` (it decides how booleans convert); the caller's protocol is `out`'s.
pub fn lua_to_reply(v: &Value, out: &mut Reply, script_resp3: bool) {
    write_value(v, out, script_resp3, 0);
}

fn write_value(v: &Value, out: &mut Reply, resp3: bool, depth: usize) {
    match v {
        Value::String(s) => out.bulk(&s.as_bytes()),
        Value::Boolean(b) => {
            if resp3 {
                out.boolean(*b);
            } else if *b {
                out.int(1);
            } else {
                out.null();
            }
        }
        Value::Integer(i) => out.int(*i),
        Value::Number(n) => out.int(c_int64(*n)),
        Value::Table(t) => write_table(t, out, resp3, depth),
        _ => out.null(),
    }
}

fn field(t: &Table, name: &str) -> Value {
    t.raw_get(name).unwrap_or(Value::Nil)
}

fn write_table(t: &Table, out: &mut Reply, resp3: bool, depth: usize) {
    if depth >= super::lua::MAX_REPLY_DEPTH {
        out.error("ERR reached lua stack limit");
        return;
    }
    if let Value::String(s) = field(t, "err") {
        raw_line(out, b'-', &s.as_bytes());
        return;
    }
    if let Value::String(s) = field(t, "ok") {
        raw_line(out, b'+', &s.as_bytes());
        return;
    }
    match field(t, "double") {
        Value::Number(n) => return out.double(n),
        Value::Integer(i) => return out.double(i as f64),
        _ => {}
    }
    if let Value::String(s) = field(t, "big_number") {
        let digits = line_bytes(&s.as_bytes());
        if out.resp3 {
            raw_line(out, b'(', &digits);
        } else {
            out.bulk(&digits);
        }
        return;
    }
    if let Value::Table(vt) = field(t, "verbatim_string") {
        if let (Value::String(fmt), Value::String(text)) =
            (field(&vt, "format"), field(&vt, "string"))
        {
            let text = text.as_bytes();
            if out.resp3 {
                let mut ext = [b' '; 3];
                for (d, s) in ext.iter_mut().zip(fmt.as_bytes().iter()) {
                    *d = *s;
                }
                out.raw(format!("={}\r\n", text.len() + 4).as_bytes());
                out.raw(&ext);
                out.raw(b":");
                out.raw(&text);
                out.raw(b"\r\n");
            } else {
                out.bulk(&text);
            }
            return;
        }
    }
    if let Value::Table(mt) = field(t, "map") {
        let pairs: Vec<(Value, Value)> =
            mt.pairs::<Value, Value>().filter_map(Result::ok).collect();
        out.map(pairs.len());
        for (k, v) in &pairs {
            write_value(k, out, resp3, depth + 1);
            write_value(v, out, resp3, depth + 1);
        }
        return;
    }
    if let Value::Table(st) = field(t, "set") {
        let keys: Vec<Value> = st
            .pairs::<Value, Value>()
            .filter_map(|r| r.ok().map(|(k, _)| k))
            .collect();
        out.set(keys.len());
        for k in &keys {
            write_value(k, out, resp3, depth + 1);
        }
        return;
    }
    let mut items = Vec::new();
    for i in 1.. {
        match t.raw_get::<Value>(i) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(v) => items.push(v),
        }
    }
    out.array(items.len());
    for v in &items {
        write_value(v, out, resp3, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_of(lua: &Lua, src: &str, caller_resp3: bool, script_resp3: bool) -> Vec<u8> {
        let v: Value = lua.load(src).eval().unwrap();
        let mut out = Reply::new(caller_resp3);
        lua_to_reply(&v, &mut out, script_resp3);
        out.buf
    }

    #[test]
    fn error_text_keeps_or_adds_the_code() {
        assert_eq!(error_text("-WRONGTYPE Operation"), "WRONGTYPE Operation");
        assert_eq!(error_text("-oops"), "ERR oops");
        assert_eq!(error_text("my message"), "ERR my message");
        assert_eq!(error_text("-ERR x\r\n"), "ERR x");
        assert_eq!(error_text("-"), "ERR ");
    }

    #[test]
    fn numbers_as_arguments() {
        assert_eq!(number_arg(0.1), "0.10000000000000001");
        assert_eq!(number_arg(1e20), "1e+20");
        assert_eq!(number_arg(3.0), "3");
        assert_eq!(number_arg(-0.0), "-0");
        assert_eq!(number_arg(f64::INFINITY), "inf");
        assert_eq!(number_arg(123456789012.0), "123456789012");
        assert_eq!(number_arg(1e17), "1e+17");
    }

    #[test]
    fn lua_values_to_resp2() {
        let lua = Lua::new();
        assert_eq!(reply_of(&lua, "3.99", false, false), b":3\r\n");
        assert_eq!(reply_of(&lua, "-3.99", false, false), b":-3\r\n");
        assert_eq!(
            reply_of(&lua, "1/0", false, false),
            b":-9223372036854775808\r\n"
        );
        assert_eq!(
            reply_of(&lua, "0/0", false, false),
            b":-9223372036854775808\r\n"
        );
        assert_eq!(reply_of(&lua, "'x'", false, false), b"$1\r\nx\r\n");
        assert_eq!(reply_of(&lua, "true", false, false), b":1\r\n");
        assert_eq!(reply_of(&lua, "false", false, false), b"$-1\r\n");
        assert_eq!(reply_of(&lua, "nil", false, false), b"$-1\r\n");
        assert_eq!(
            reply_of(&lua, "{1, 2, nil, 3}", false, false),
            b"*2\r\n:1\r\n:2\r\n"
        );
        assert_eq!(
            reply_of(&lua, "{1, 'a', {2, false, true}}", false, false),
            b"*3\r\n:1\r\n$1\r\na\r\n*3\r\n:2\r\n$-1\r\n:1\r\n"
        );
        assert_eq!(reply_of(&lua, "{err='oops'}", false, false), b"-oops\r\n");
        assert_eq!(
            reply_of(&lua, "{ok='a\\r\\nb'}", false, false),
            b"+a  b\r\n"
        );
        assert_eq!(reply_of(&lua, "{ok='x', err='y'}", false, false), b"-y\r\n");
        assert_eq!(reply_of(&lua, "{err=5}", false, false), b"*0\r\n");
        assert_eq!(
            reply_of(&lua, "{double=0.1}", false, false),
            b"$19\r\n0.10000000000000001\r\n"
        );
        assert_eq!(
            reply_of(&lua, "{big_number='12\\r\\n3'}", false, false),
            b"$5\r\n12  3\r\n"
        );
        assert_eq!(
            reply_of(&lua, "{map={a=1}}", false, false),
            b"*2\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            reply_of(&lua, "{set={a=true}}", false, false),
            b"*1\r\n$1\r\na\r\n"
        );
        assert_eq!(reply_of(&lua, "{map=5}", false, false), b"*0\r\n");
        // A script that chose RESP3 sends booleans as booleans; RESP2 callers see integers.
        assert_eq!(reply_of(&lua, "false", false, true), b":0\r\n");
        assert_eq!(reply_of(&lua, "true", false, true), b":1\r\n");
    }

    #[test]
    fn lua_values_to_resp3() {
        let lua = Lua::new();
        assert_eq!(reply_of(&lua, "nil", true, false), b"_\r\n");
        assert_eq!(reply_of(&lua, "false", true, false), b"_\r\n");
        assert_eq!(reply_of(&lua, "false", true, true), b"#f\r\n");
        assert_eq!(reply_of(&lua, "true", true, true), b"#t\r\n");
        assert_eq!(reply_of(&lua, "{double=1/0}", true, false), b",inf\r\n");
        assert_eq!(
            reply_of(&lua, "{map={a=1}}", true, false),
            b"%1\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            reply_of(&lua, "{set={a=true}}", true, false),
            b"~1\r\n$1\r\na\r\n"
        );
        assert_eq!(
            reply_of(&lua, "{big_number='123'}", true, false),
            b"(123\r\n"
        );
        assert_eq!(
            reply_of(
                &lua,
                "{verbatim_string={format='mkd', string='# x'}}",
                true,
                false
            ),
            b"=7\r\nmkd:# x\r\n"
        );
        assert_eq!(
            reply_of(
                &lua,
                "{verbatim_string={format='toolong', string='# x'}}",
                true,
                false
            ),
            b"=7\r\ntoo:# x\r\n"
        );
        assert_eq!(
            reply_of(
                &lua,
                "{verbatim_string={format='ab', string='# x'}}",
                true,
                false
            ),
            b"=7\r\nab :# x\r\n"
        );
    }

    #[test]
    fn self_referencing_tables_are_bounded() {
        let lua = Lua::new();
        let out = reply_of(
            &lua,
            "(function() local t = {} t[1] = t return t end)()",
            false,
            false,
        );
        assert!(out.ends_with(b"-ERR reached lua stack limit\r\n"));
        assert_eq!(
            out.windows(4).filter(|w| w == b"*1\r\n").count(),
            crate::command::scripting::lua::MAX_REPLY_DEPTH
        );
    }

    #[test]
    fn replies_to_lua() {
        let lua = Lua::new();
        let g = lua.globals();
        let check = |buf: &[u8], resp3: bool, expr: &str| {
            let (v, _) = reply_to_lua(&lua, buf, resp3).unwrap();
            g.set("r", v).unwrap();
            let ok: bool = lua.load(expr).eval().unwrap();
            assert!(ok, "{expr} for {:?}", String::from_utf8_lossy(buf));
        };
        check(b":5\r\n", false, "r == 5");
        check(b"$3\r\nabc\r\n", false, "r == 'abc'");
        check(b"$-1\r\n", false, "r == false");
        check(b"*-1\r\n", false, "r == false");
        check(b"+OK\r\n", false, "r.ok == 'OK'");
        check(
            b"-WRONGTYPE x y\r\n",
            false,
            "r.err == 'WRONGTYPE x y' and r.ignore_error_stats_update == true",
        );
        check(
            b"*2\r\n$1\r\na\r\n$-1\r\n",
            false,
            "r[1] == 'a' and r[2] == false",
        );
        check(b"_\r\n", true, "r == nil");
        check(b"#t\r\n", true, "r == true");
        check(b",1.5\r\n", true, "r.double == 1.5");
        check(b"%1\r\n$1\r\na\r\n:1\r\n", true, "r.map.a == 1");
        check(b"~1\r\n$1\r\na\r\n", true, "r.set.a == true");
        check(b"(123\r\n", true, "r.big_number == '123'");
        check(
            b"=7\r\ntxt:abc\r\n",
            true,
            "r.verbatim_string.format == 'txt' and r.verbatim_string.string == 'abc'",
        );
        check(b"*2\r\n:1\r\n_\r\n", true, "r[1] == 1 and r[2] == nil");
        let (_, err) = reply_to_lua(&lua, b"-ERR x\r\n", false).unwrap();
        assert!(err);
        let (_, err) = reply_to_lua(&lua, b"*1\r\n-ERR x\r\n", false).unwrap();
        assert!(!err);
    }
}
