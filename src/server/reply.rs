//! The reply writer: handlers describe a reply (integer, bulk, array, map, double, ...) and this
//! module writes it in the connection's protocol, RESP2 or RESP3, straight into the output
//! buffer. RESP3 types degrade to their RESP2 forms exactly as Redis degrades them (map → flat
//! array, double → bulk string, boolean → integer, null → `$-1` or `*-1`).
//!
//! Writing bytes directly (rather than building reply values) keeps the hot path free of
//! allocations; MULTI/EXEC and scripts capture replies by giving the handler another writer.

use std::io::Write;

/// An output buffer plus the protocol it speaks.
pub struct Reply {
    pub buf: Vec<u8>,
    pub resp3: bool,
}

impl Reply {
    pub fn new(resp3: bool) -> Reply {
        Reply {
            buf: Vec::with_capacity(16 * 1024),
            resp3,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// `<prefix><n>\r\n`, assembled on the stack and appended in one copy (every integer,
    /// length and count header goes through here).
    fn line(&mut self, prefix: u8, n: i64) {
        if (0..10).contains(&n) {
            self.buf
                .extend_from_slice(&[prefix, b'0' + n as u8, b'\r', b'\n']);
            return;
        }
        let mut b = itoa::Buffer::new();
        let digits = b.format(n).as_bytes();
        // At most 1 + 20 + 2 bytes.
        let mut line = [0u8; 24];
        line[0] = prefix;
        line[1..1 + digits.len()].copy_from_slice(digits);
        line[1 + digits.len()..3 + digits.len()].copy_from_slice(b"\r\n");
        let len = self.buf.len();
        self.buf.reserve(line.len());
        // SAFETY: `reserve` made room for all 24 bytes after `len`; a fixed-size copy is a few
        // moves where a slice's variable length would call memcpy. Only the line's own bytes
        // are then counted as initialized.
        unsafe {
            std::ptr::copy_nonoverlapping(line.as_ptr(), self.buf.as_mut_ptr().add(len), 24);
            self.buf.set_len(len + 3 + digits.len());
        }
    }

    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// A status reply; CR and LF would end it early, so they become spaces (as in `error`).
    pub fn simple(&mut self, s: &str) {
        self.buf.push(b'+');
        self.buf.extend(
            s.bytes()
                .map(|c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
        );
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error reply; `msg` starts with its code (`ERR ...`, `WRONGTYPE ...`). Newlines in the
    /// message would break the protocol, so they become spaces, as Redis does.
    pub fn error(&mut self, msg: &str) {
        self.buf.push(b'-');
        self.buf.extend(
            msg.bytes()
                .map(|c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
        );
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.line(b':', n);
    }

    /// An array of integers (RATE's and CL.THROTTLE's five).
    pub fn ints(&mut self, ns: &[i64]) {
        self.array(ns.len());
        for &n in ns {
            self.int(n);
        }
    }

    pub fn bulk(&mut self, data: &[u8]) {
        self.line(b'$', data.len() as i64);
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn bulk_int(&mut self, n: i64) {
        let mut b = itoa::Buffer::new();
        let s = b.format(n);
        self.line(b'$', s.len() as i64);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// The null bulk string (`$-1` / `_`).
    pub fn null(&mut self) {
        if self.resp3 {
            self.buf.extend_from_slice(b"_\r\n");
        } else {
            self.buf.extend_from_slice(b"$-1\r\n");
        }
    }

    /// The null array (`*-1` / `_`).
    pub fn null_array(&mut self) {
        if self.resp3 {
            self.buf.extend_from_slice(b"_\r\n");
        } else {
            self.buf.extend_from_slice(b"*-1\r\n");
        }
    }

    pub fn array(&mut self, n: usize) {
        self.line(b'*', n as i64);
    }

    /// A map of `n` pairs; RESP2 sees a flat array of 2n elements.
    pub fn map(&mut self, n: usize) {
        if self.resp3 {
            self.line(b'%', n as i64);
        } else {
            self.line(b'*', 2 * n as i64);
        }
    }

    /// A set of `n` elements; RESP2 sees an array.
    pub fn set(&mut self, n: usize) {
        self.line(if self.resp3 { b'~' } else { b'*' }, n as i64);
    }

    /// A push message of `n` elements (pub/sub); RESP2 sees an array.
    pub fn push(&mut self, n: usize) {
        self.line(if self.resp3 { b'>' } else { b'*' }, n as i64);
    }

    pub fn boolean(&mut self, v: bool) {
        if self.resp3 {
            self.buf
                .extend_from_slice(if v { b"#t\r\n" } else { b"#f\r\n" });
        } else {
            self.int(v as i64);
        }
    }

    /// A double, formatted as Redis 7.0 formats doubles (`%.17g`, inf/-inf).
    pub fn double(&mut self, v: f64) {
        // The common integral score takes no String and no exact-digit float formatting.
        let mut digits = itoa::Buffer::new();
        let formatted;
        let s = match integral(v) {
            Some(n) => digits.format(n),
            None => {
                formatted = format_double(v);
                formatted.as_str()
            }
        };
        if self.resp3 {
            self.buf.push(b',');
            self.buf.extend_from_slice(s.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(s.as_bytes());
        }
    }

    /// A double whose text the caller chose, e.g. PostgreSQL's shortest round-trip form of a
    /// float8 (`0.1`, `1e+20`, `NaN`). RESP2 gets `text` as a bulk string, unchanged; RESP3 gets
    /// a double: `text` when `v` is finite, else `inf`, `-inf` or `nan`, the only spellings
    /// RESP3 allows for those.
    pub fn double_text(&mut self, v: f64, text: &str) {
        if !self.resp3 {
            self.bulk(text.as_bytes());
            return;
        }
        let text = if v.is_nan() {
            "nan"
        } else if v.is_infinite() {
            if v > 0.0 {
                "inf"
            } else {
                "-inf"
            }
        } else {
            text
        };
        self.buf.push(b',');
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A verbatim string (INFO, CLIENT INFO, ...); RESP2 sees a bulk string.
    pub fn verbatim(&mut self, text: &str) {
        if self.resp3 {
            self.line(b'=', text.len() as i64 + 4);
            self.buf.extend_from_slice(b"txt:");
            self.buf.extend_from_slice(text.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text.as_bytes());
        }
    }

    /// Appends already-encoded RESP (a reply captured by another writer).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Writes formatted text as one bulk string.
    pub fn bulk_fmt(&mut self, args: std::fmt::Arguments<'_>) {
        let mut tmp = Vec::new();
        let _ = tmp.write_fmt(args);
        self.bulk(&tmp);
    }
}

/// `v` as an integer when `%.17g` prints it as one: integral, below 10^15 in magnitude (exact,
/// and far from the 17 digits where `%g` switches to an exponent), and not `-0`.
fn integral(v: f64) -> Option<i64> {
    (v.fract() == 0.0 && v.abs() < 1e15 && (v != 0.0 || v.is_sign_positive())).then_some(v as i64)
}

/// C's `%.17g`, which Redis 7.0 uses for doubles in replies (`inf` and `-inf` spelled so).
pub fn format_double(v: f64) -> String {
    if let Some(n) = integral(v) {
        return itoa::Buffer::new().format(n).to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v.is_nan() {
        // glibc prints the sign of a NaN (0/0 is negative on x86), and so does Redis.
        return if v.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    format_g(v, 17)
}

/// C's `%.<prec>g`.
pub fn format_g(v: f64, prec: usize) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{:.*e}", prec - 1, v);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= prec as i32 {
        let mant = trim_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{:.*}", decimals, v)).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_lines_match_std_formatting() {
        let mut edge = vec![0, 1, -1, 9, 10, -10, 99, 100, 1000, i64::MAX, i64::MIN];
        edge.extend((0..19).flat_map(|e| {
            let p = 10i64.pow(e);
            [p - 1, p, p + 1, -p, 1 - p]
        }));
        for n in edge {
            let mut r = Reply::new(false);
            r.int(n);
            assert_eq!(r.buf, format!(":{n}\r\n").into_bytes());
        }
    }

    #[test]
    fn integer_arrays_of_any_length() {
        for len in [0, 1, 5, 7, 8, 14, 15, 17] {
            let ns: Vec<i64> = (0..len).map(|i| (i as i64 - 3) * 1_000_003).collect();
            let (mut one, mut each) = (Reply::new(false), Reply::new(false));
            one.ints(&ns);
            each.array(ns.len());
            for &n in &ns {
                each.buf.extend_from_slice(format!(":{n}\r\n").as_bytes());
            }
            assert_eq!(one.buf, each.buf, "{len} integers");
        }
    }

    #[test]
    fn g17_matches_c() {
        assert_eq!(format_double(1.5), "1.5");
        assert_eq!(format_double(0.1), "0.10000000000000001");
        assert_eq!(format_double(3.0), "3");
        assert_eq!(format_double(-2.25), "-2.25");
        assert_eq!(format_double(1e20), "1e+20");
        assert_eq!(format_double(1.5e-7), "1.4999999999999999e-07");
        assert_eq!(format_double(123456789.0), "123456789");
        assert_eq!(format_double(f64::INFINITY), "inf");
        assert_eq!(format_g(0.30000000000000004, 15), "0.3");
    }

    #[test]
    fn integral_doubles_print_as_g17_does() {
        for v in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            12345.0,
            -98765.0,
            999_999_999_999_999.0,
            1e15,
            -1e15,
            1e16,
            123_456_789_012_345_680.0,
            4.5,
            -0.5,
            1e-300,
        ] {
            assert_eq!(format_double(v), format_g(v, 17), "{v:e}");
            let (mut a, mut b) = (Reply::new(false), Reply::new(true));
            a.double(v);
            b.double(v);
            let s = format_g(v, 17);
            assert_eq!(a.buf, format!("${}\r\n{s}\r\n", s.len()).into_bytes());
            assert_eq!(b.buf, format!(",{s}\r\n").into_bytes());
        }
    }

    #[test]
    fn double_text_keeps_the_callers_text() {
        let mut r = Reply::new(false);
        r.double_text(0.1, "0.1");
        r.double_text(f64::NAN, "NaN");
        r.double_text(f64::NEG_INFINITY, "-Infinity");
        assert_eq!(r.buf, b"$3\r\n0.1\r\n$3\r\nNaN\r\n$9\r\n-Infinity\r\n");
        let mut r = Reply::new(true);
        r.double_text(1e20, "1e+20");
        r.double_text(f64::NAN, "NaN");
        r.double_text(f64::INFINITY, "Infinity");
        r.double_text(f64::NEG_INFINITY, "-Infinity");
        assert_eq!(r.buf, b",1e+20\r\n,nan\r\n,inf\r\n,-inf\r\n");
    }

    #[test]
    fn resp2_degrades_resp3_types() {
        let mut r = Reply::new(false);
        r.map(1);
        r.boolean(true);
        r.double(1.5);
        r.null();
        assert_eq!(r.buf, b"*2\r\n:1\r\n$3\r\n1.5\r\n$-1\r\n");
        let mut r = Reply::new(true);
        r.map(1);
        r.boolean(true);
        r.double(1.5);
        r.null();
        assert_eq!(r.buf, b"%1\r\n#t\r\n,1.5\r\n_\r\n");
    }
}
