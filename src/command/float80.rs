//! INCRBYFLOAT and HINCRBYFLOAT arithmetic exactly as Redis does it: both operands read as
//! x87 80-bit long doubles (strtold), added with round-to-nearest-even, and printed with
//! `%.17Lf` with trailing zeros trimmed (Redis's `ld2string(..., LD_STR_HUMAN)`). So
//! `0.1 + 0.2` prints `0.3`, `9223372036854775807 + 2` prints `9223372036854775809`, and
//! `5.6 + 5.0e3` prints `5005.60000000000000009`, as on Redis.
//!
//! The 80-bit arithmetic is `rustc_apfloat` (the Rust compiler's port of LLVM's APFloat); the
//! exact decimal expansion of the result uses big integers. Parsing validation (which strings
//! are numbers at all) stays in `args::parse_f64`.

use super::args::parse_f64;
use super::error::{CmdError, NAN_OR_INF};
use num_bigint::BigUint;
use rustc_apfloat::ieee::{Double, X87DoubleExtended};
use rustc_apfloat::{Float, FloatConvert, Round};

type F80 = X87DoubleExtended;

/// Reads a number the way strtold does (decimal or scientific; hex and inf via f64).
fn read(s: &[u8]) -> Option<F80> {
    let t = std::str::from_utf8(s).ok()?;
    let decimal = !t.is_empty()
        && t.bytes()
            .all(|c| c.is_ascii_digit() || b"+-.eE".contains(&c))
        && t.bytes().any(|c| c.is_ascii_digit());
    if decimal {
        if let Ok(v) = F80::from_str_r(t, Round::NearestTiesToEven) {
            return Some(v.value);
        }
    }
    let d = parse_f64(s)?;
    let mut loses = false;
    Some(FloatConvert::<F80>::convert(Double::from_bits(d.to_bits() as u128), &mut loses).value)
}

/// `%.17Lf` of a finite 80-bit value, trailing zeros and point trimmed, "-0" made "0".
fn format(v: F80) -> String {
    let bits = v.to_bits();
    let negative = (bits >> 79) & 1 == 1;
    let exp_field = ((bits >> 64) & 0x7fff) as i64;
    let sig = (bits & u64::MAX as u128) as u64;
    // value = sig * 2^e2 (the integer bit is explicit; denormals use the minimum exponent)
    let e2 = if exp_field == 0 { 1 } else { exp_field } - 16383 - 63;
    const DECIMALS: u32 = 17;
    let scaled: BigUint = if e2 >= 0 {
        (BigUint::from(sig) << e2 as usize) * BigUint::from(10u32).pow(DECIMALS)
    } else {
        // sig / 2^k = sig * 5^k / 10^k; keep 17 decimals, round half to even on the rest.
        let k = (-e2) as u32;
        let m = BigUint::from(sig) * BigUint::from(5u32).pow(k);
        if k <= DECIMALS {
            m * BigUint::from(10u32).pow(DECIMALS - k)
        } else {
            let div = BigUint::from(10u32).pow(k - DECIMALS);
            let q = &m / &div;
            let r = &m % &div;
            let twice = r * 2u32;
            let odd = q.bit(0);
            if twice > div || (twice == div && odd) {
                q + 1u32
            } else {
                q
            }
        }
    };
    let digits = scaled.to_string();
    let digits = format!("{:0>width$}", digits, width = DECIMALS as usize + 1);
    let (int, frac) = digits.split_at(digits.len() - DECIMALS as usize);
    let frac = frac.trim_end_matches('0');
    let mut s = String::new();
    if negative {
        s.push('-');
    }
    s.push_str(int);
    if !frac.is_empty() {
        s.push('.');
        s.push_str(frac);
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

/// `cur + by` as Redis computes and prints it. Both operands were validated by `parse_f64`.
pub fn add(cur: &[u8], by: &[u8]) -> Result<String, CmdError> {
    let (Some(a), Some(b)) = (read(cur), read(by)) else {
        return Err(super::error::NOT_FLOAT);
    };
    let sum = a.add_r(b, Round::NearestTiesToEven).value;
    if !sum.is_finite() {
        return Err(NAN_OR_INF);
    }
    Ok(format(sum))
}

#[cfg(test)]
mod tests {
    use super::add;

    fn a(x: &str, y: &str) -> String {
        add(x.as_bytes(), y.as_bytes()).unwrap()
    }

    #[test]
    fn matches_redis_long_double_results() {
        assert_eq!(a("0.1", "0.2"), "0.3");
        assert_eq!(a("10.50", "0.1"), "10.6");
        assert_eq!(a("10.6", "-5"), "5.6");
        assert_eq!(a("5.0e3", "2.0e2"), "5200");
        assert_eq!(a("9223372036854775807", "2"), "9223372036854775809");
        assert_eq!(a("1e17", "1"), "100000000000000001");
        assert_eq!(a("1", "1e20"), "100000000000000000000");
        assert_eq!(a("5.6", "5.0e3"), "5005.60000000000000009");
        assert_eq!(a("1", "-1.1"), "-0.1");
        assert_eq!(a("0x10", "1"), "17");
        assert_eq!(a("17179869184", "17179869184"), "34359738368");
        assert!(add(b"inf", b"1").is_err());
    }
}
