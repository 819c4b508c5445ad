//! The `bit` library scripts get, as Redis bundles it: LuaBitOp 1.0.2 (tobit, tohex, bnot, band,
//! bor, bxor, lshift, rshift, arshift, rol, ror, bswap) with its exact 32-bit semantics — numbers
//! are reduced to 32 bits the way LuaBitOp does it (adding 2^52+2^51 and keeping the low word, so
//! fractions round to nearest-even and large values wrap), and every result is a signed 32-bit
//! number.
//!
//! The operations are plain functions over `f64`/`u32` so they can be tested without a VM;
//! [`open`] wraps them as "raw" Lua functions that return `(true, result)` or
//! `(false, message)` — the sandbox prelude turns the latter into a Lua error raised at the
//! caller's line, as LuaBitOp's `luaL_typerror` does. It deliberately does not add operations
//! LuaBitOp lacks.

use super::lua::{arg_error, fail, Raw};
use mlua::{Lua, MultiValue, Table, Value};

/// LuaBitOp's `barg` conversion of a Lua number to 32 bits.
pub fn tobit_u32(n: f64) -> u32 {
    (n + 6_755_399_441_055_744.0).to_bits() as u32
}

/// The signed 32-bit value LuaBitOp returns to Lua.
pub fn ret(b: u32) -> f64 {
    b as i32 as f64
}

pub fn tohex(b: u32, n: Option<u32>) -> String {
    let mut n = n.map(|v| v as i32).unwrap_or(8);
    let digits: &[u8; 16] = if n < 0 {
        n = n.wrapping_neg();
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let n = n.clamp(0, 8) as usize;
    let mut buf = vec![0u8; n];
    let mut b = b;
    for slot in buf.iter_mut().rev() {
        *slot = digits[(b & 15) as usize];
        b >>= 4;
    }
    String::from_utf8(buf).unwrap_or_default()
}

pub fn bswap(b: u32) -> u32 {
    b.swap_bytes()
}

#[derive(Clone, Copy)]
enum Op {
    ToBit,
    Not,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    Sar,
    Rol,
    Ror,
    Swap,
    Hex,
}

const OPS: &[(&str, Op)] = &[
    ("tobit", Op::ToBit),
    ("bnot", Op::Not),
    ("band", Op::And),
    ("bor", Op::Or),
    ("bxor", Op::Xor),
    ("lshift", Op::Shl),
    ("rshift", Op::Shr),
    ("arshift", Op::Sar),
    ("rol", Op::Rol),
    ("ror", Op::Ror),
    ("bswap", Op::Swap),
    ("tohex", Op::Hex),
];

/// `barg` for argument `i` (1-based): `lua_tonumber`, refusing only what converts to 0 without
/// being a number, exactly as LuaBitOp does under Lua 5.1.
fn barg(lua: &Lua, name: &str, args: &MultiValue, i: usize) -> Result<u32, String> {
    let v = args.get(i - 1).cloned();
    let n = match &v {
        Some(v) => lua.coerce_number(v.clone()).ok().flatten(),
        None => None,
    };
    match n {
        Some(n) => Ok(tobit_u32(n)),
        None => Err(arg_error(i, name, "number", v.as_ref())),
    }
}

fn apply(lua: &Lua, name: &str, op: Op, args: &MultiValue) -> Result<Value, String> {
    let shift = |args: &MultiValue| -> Result<(u32, u32), String> {
        let b = barg(lua, name, args, 1)?;
        let n = barg(lua, name, args, 2)? & 31;
        Ok((b, n))
    };
    let r = match op {
        Op::ToBit => barg(lua, name, args, 1)?,
        Op::Not => !barg(lua, name, args, 1)?,
        Op::And | Op::Or | Op::Xor => {
            let mut b = barg(lua, name, args, 1)?;
            // LuaBitOp folds from the last argument down, so the highest bad index is reported.
            for i in (2..=args.len()).rev() {
                let x = barg(lua, name, args, i)?;
                match op {
                    Op::And => b &= x,
                    Op::Or => b |= x,
                    _ => b ^= x,
                }
            }
            b
        }
        Op::Shl => {
            let (b, n) = shift(args)?;
            b << n
        }
        Op::Shr => {
            let (b, n) = shift(args)?;
            b >> n
        }
        Op::Sar => {
            let (b, n) = shift(args)?;
            ((b as i32) >> n) as u32
        }
        Op::Rol => {
            let (b, n) = shift(args)?;
            b.rotate_left(n)
        }
        Op::Ror => {
            let (b, n) = shift(args)?;
            b.rotate_right(n)
        }
        Op::Swap => bswap(barg(lua, name, args, 1)?),
        Op::Hex => {
            let b = barg(lua, name, args, 1)?;
            let n = if args.len() >= 2 {
                Some(barg(lua, name, args, 2)?)
            } else {
                None
            };
            let s = tohex(b, n);
            return lua
                .create_string(s)
                .map(Value::String)
                .map_err(|e| e.to_string());
        }
    };
    Ok(Value::Number(ret(r)))
}

/// The raw functions, keyed by name, for the prelude to lift into the `bit` table.
pub fn open(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for &(name, op) in OPS {
        let f = lua.create_function(move |lua, args: MultiValue| -> Raw {
            match apply(lua, name, op, &args) {
                Ok(v) => Ok((true, v)),
                Err(msg) => fail(lua, &msg),
            }
        })?;
        t.raw_set(name, f)?;
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: u32) -> i32 {
        b as i32
    }

    #[test]
    fn tobit_wraps_and_rounds_like_luabitop() {
        assert_eq!(s(tobit_u32(4294967301.0)), 5);
        assert_eq!(s(tobit_u32(-1.0)), -1);
        assert_eq!(s(tobit_u32(2147483648.0)), i32::MIN);
        assert_eq!(s(tobit_u32(1.5)), 2);
        assert_eq!(s(tobit_u32(2.5)), 2);
        assert_eq!(s(tobit_u32(-1.5)), -2);
        assert_eq!(s(tobit_u32(f64::NAN)), 0);
    }

    #[test]
    fn hex_widths_and_case() {
        assert_eq!(tohex(255, None), "000000ff");
        assert_eq!(tohex(tobit_u32(-1.0), None), "ffffffff");
        assert_eq!(tohex(255, Some(tobit_u32(-4.0))), "00FF");
        assert_eq!(tohex(255, Some(2)), "ff");
        assert_eq!(tohex(255, Some(20)), "000000ff");
        assert_eq!(tohex(1, Some(0)), "");
        assert_eq!(tohex(1, Some(i32::MIN as u32)), "");
    }

    #[test]
    fn shifts_and_rotations_as_redis_answers() {
        // Values from Redis 7.0.15: bit.lshift(1,31), bit.lshift(1,32), bit.rshift(-1,28),
        // bit.arshift(-256,4), bit.rol(0x80000001,1), bit.ror(1,1), bit.bswap(0x12345678).
        let m1 = tobit_u32(-1.0);
        assert_eq!(ret(1 << 31), -2147483648.0);
        assert_eq!(ret(1u32 << (32 & 31)), 1.0);
        assert_eq!(ret(m1 >> 28), 15.0);
        assert_eq!(ret(((tobit_u32(-256.0) as i32) >> 4) as u32), -16.0);
        assert_eq!(ret(0x8000_0001u32.rotate_left(1)), 3.0);
        assert_eq!(ret(1u32.rotate_right(1)), -2147483648.0);
        assert_eq!(ret(bswap(0x1234_5678)), 2018915346.0);
    }

    #[test]
    fn through_lua() {
        let lua = Lua::new();
        let raw = open(&lua).unwrap();
        let band: mlua::Function = raw.get("band").unwrap();
        let (ok, v): (bool, Value) = band.call((0xff, 0x0f, 3)).unwrap();
        assert!(ok);
        assert_eq!(v, Value::Number(3.0));
        let (ok, v): (bool, Value) = band.call(("3", 5)).unwrap();
        assert!(ok);
        assert_eq!(v, Value::Number(1.0));
        let (ok, v): (bool, Value) = band.call("x").unwrap();
        assert!(!ok);
        assert_eq!(
            v.to_string().unwrap(),
            "bad argument #1 to 'band' (number expected, got string)"
        );
        let (ok, v): (bool, Value) = band.call(()).unwrap();
        assert!(!ok);
        assert_eq!(
            v.to_string().unwrap(),
            "bad argument #1 to 'band' (number expected, got no value)"
        );
    }
}
