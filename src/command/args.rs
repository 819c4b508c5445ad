//! Argument parsing with Redis's rules: integers as `string2ll` reads them (no `+`, no leading
//! zeros, no spaces), floats as `strtod` reads them (NaN refused), option words matched without
//! regard to case.

use super::error::{CmdError, NOT_FLOAT, NOT_INTEGER};

/// Redis's string2ll: optional '-', digits without leading zeros, within i64.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !(b'1'..=b'9').contains(&digits[0]) {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else {
        i64::try_from(v).ok()
    }
}

pub fn int(s: &[u8]) -> Result<i64, CmdError> {
    parse_i64(s).ok_or(NOT_INTEGER)
}

/// An integer of at least `min`, with the one error Redis gives (`getRangeLongFromObjectOrReply`
/// with a message) both for a number too small and for no number at all.
pub fn int_at_least(s: &[u8], min: i64, msg: &'static str) -> Result<i64, CmdError> {
    parse_i64(s).filter(|&v| v >= min).ok_or(CmdError::new(msg))
}

/// strtod-like: no surrounding spaces, NaN refused, `inf`/`+inf`/`-inf` accepted.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(s).ok()?;
    if t.is_empty() || t.trim() != t {
        return None;
    }
    let lower = t.to_ascii_lowercase();
    let v: f64 = match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => match parse_hex(&lower) {
            Some(v) => v,
            None => t.parse().ok()?,
        },
    };
    if v.is_nan() {
        None
    } else {
        Some(v)
    }
}

/// strtod's hexadecimal integers ("0x10", "-0X1f").
fn parse_hex(t: &str) -> Option<f64> {
    let (neg, rest) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let digits = rest.strip_prefix("0x")?;
    let v = u64::from_str_radix(digits, 16).ok()? as f64;
    Some(if neg { -v } else { v })
}

pub fn float(s: &[u8]) -> Result<f64, CmdError> {
    parse_f64(s).ok_or(NOT_FLOAT)
}

/// The optional COUNT of LPOP/RPOP/SPOP/ZPOPMIN/ZPOPMAX (`cmd key [count]`), with Redis's error
/// text.
pub fn pop_count(args: &[bytes::Bytes]) -> Result<Option<usize>, CmdError> {
    match args.len() {
        2 => Ok(None),
        3 => int_at_least(&args[2], 0, "ERR value is out of range, must be positive")
            .map(|c| Some(c as usize)),
        _ => Err(super::error::SYNTAX),
    }
}

/// The `numkeys key [key ...] <where> [COUNT count]` of LMPOP/BLMPOP/ZMPOP/BZMPOP, `numkeys`
/// at `args[at]`, checked in Redis's order: the keys, whether `where` is the first of the two
/// `words` (LEFT/RIGHT, MIN/MAX), and the count (1 without COUNT).
pub fn mpop_args<'a>(
    args: &'a [bytes::Bytes],
    at: usize,
    words: [&str; 2],
) -> Result<(&'a [bytes::Bytes], bool, usize), CmdError> {
    let numkeys = int_at_least(&args[at], 1, "ERR numkeys should be greater than 0")? as u64;
    let where_at = (at as u64 + 1)
        .checked_add(numkeys)
        .filter(|&w| w < args.len() as u64)
        .ok_or(super::error::SYNTAX)? as usize;
    let first = match &args[where_at] {
        w if is(w, words[0]) => true,
        w if is(w, words[1]) => false,
        _ => return Err(super::error::SYNTAX),
    };
    let mut count = None;
    let mut i = where_at + 1;
    while i < args.len() {
        if count.is_none() && i + 1 < args.len() && is(&args[i], "count") {
            count = Some(int_at_least(
                &args[i + 1],
                1,
                "ERR count should be greater than 0",
            )?);
            i += 2;
        } else {
            return Err(super::error::SYNTAX);
        }
    }
    Ok((&args[at + 1..where_at], first, count.unwrap_or(1) as usize))
}

/// Redis's index arithmetic for LRANGE, LTRIM, ZRANGE and ZREMRANGEBYRANK: negative indexes
/// count from the end, the start clamps to 0 and the stop to the last element; the inclusive
/// interval, or None when it is empty.
pub fn index_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if stop < 0 { len + stop } else { stop };
    if s < 0 {
        s = 0;
    }
    if s > e || s >= len {
        return None;
    }
    if e >= len {
        e = len - 1;
    }
    Some((s as usize, e as usize))
}

/// Case-insensitive comparison of an argument with an option word.
pub fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_like_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        for bad in [&b"01"[..], b"+1", b" 1", b"1 ", b"", b"-", b"-0", b"1a"] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn floats_like_strtod() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"5.0e3"), Some(5000.0));
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"abc"), None);
        assert_eq!(parse_f64(b"0x10"), Some(16.0));
        assert_eq!(parse_f64(b"-0x1f"), Some(-31.0));
    }
}
