//! Request framing: turns the bytes a client sent into commands (argument vectors).
//!
//! Multibulk requests (`*N\r\n$len\r\n...`) are decoded with the `redis-protocol` crate
//! (zero-copy ranges into the read buffer). Two things the crate does not do are done here, with
//! Redis's exact error texts: enforcing the protocol limits *before* a frame is complete (a
//! `$600000000` header is refused at once, not after buffering 600 MB), and inline commands
//! (`PING\r\n`, with Redis's quoting rules), which redis-cli and telnet users send.
//! A framing error is fatal for the connection, as in Redis.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::types::RangeFrame;

/// Longest inline request or count line Redis accepts (PROTO_INLINE_MAX_SIZE).
pub const INLINE_MAX: usize = 64 * 1024;

/// Unauthenticated clients may only send small requests (as Redis limits them).
const UNAUTH_MAX_ARGS: i64 = 10;
const UNAUTH_MAX_BULK: i64 = 16384;

/// A framing error; the text follows `-ERR Protocol error: ` on the wire.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// Parser limits and the per-connection resume hint.
pub struct Framer {
    pub max_bulk: usize,
    /// Bytes the buffer must hold before a multibulk walk can make progress.
    need: usize,
}

enum Walk {
    Complete,
    Incomplete(usize),
    /// A multibulk count of zero or less: skip this many bytes.
    Empty(usize),
}

/// A length line, as Redis's string2ll reads it (no `+`, no leading zeros).
fn parse_int(line: &[u8]) -> Option<i64> {
    crate::command::args::parse_i64(line)
}

/// Decimal digits of `n`.
fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Whether every length header of a decoded request was written the one way Redis accepts
/// (plain digits: no sign, no leading zeros, no spaces), judged from where each bulk starts:
/// `*<count>\r\n` then `$<len>\r\n<data>\r\n` per argument, nothing else in between.
fn canonical(items: &[RangeFrame]) -> bool {
    let mut pos = 1 + digits(items.len()) + 2;
    for item in items {
        let RangeFrame::BulkString((s, e)) = item else {
            return false;
        };
        if *s != pos + 1 + digits(e - s) + 2 {
            return false;
        }
        pos = e + 2;
    }
    true
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let hay = buf.get(from..)?;
    memchr_crlf(hay).map(|i| i + from)
}

fn memchr_crlf(hay: &[u8]) -> Option<usize> {
    hay.windows(2).position(|w| w == b"\r\n")
}

impl Framer {
    pub fn new(max_bulk: usize) -> Framer {
        Framer { max_bulk, need: 0 }
    }

    /// Takes the next complete command off the front of `buf`. `Ok(None)`: need more bytes.
    /// An empty vector is an empty request (blank inline line, `*0`), which Redis ignores.
    pub fn next(
        &mut self,
        buf: &mut BytesMut,
        authenticated: bool,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if buf.is_empty() || buf.len() < self.need {
            return Ok(None);
        }
        if buf[0] != b'*' {
            return self.inline(buf);
        }
        // The common case, a complete frame within the limits, is decoded in one pass; anything
        // else (incomplete, over a limit, malformed) takes the walk, which gives Redis's exact
        // error or how much more to read.
        if self.need == 0 {
            if let Ok(Some((RangeFrame::Array(items), amt))) = decode_range(buf) {
                if self.within_limits(&items, authenticated) && canonical(&items) {
                    let frozen = buf.split_to(amt).freeze();
                    // Sized up front (a collect through filter_map starts at 4 and regrows for
                    // every request of 5 or more arguments).
                    let mut args = Vec::with_capacity(items.len());
                    for i in &items {
                        if let RangeFrame::BulkString((s, e)) = i {
                            args.push(frozen.slice(*s..*e));
                        }
                    }
                    return Ok(Some(args));
                }
            }
        }
        match self.walk(buf, authenticated)? {
            Walk::Incomplete(need) => {
                self.need = need;
                return Ok(None);
            }
            Walk::Complete => self.need = 0,
            Walk::Empty(n) => {
                self.need = 0;
                let _ = buf.split_to(n);
                return Ok(Some(Vec::new()));
            }
        }
        let (frame, amt) = match decode_range(buf) {
            Ok(Some(x)) => x,
            Ok(None) => return Ok(None),
            Err(_) => return Err(ProtocolError("invalid multibulk length".into())),
        };
        let frozen = buf.split_to(amt).freeze();
        match frame {
            RangeFrame::Array(items) => {
                let mut args = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        RangeFrame::BulkString((s, e)) => args.push(frozen.slice(s..e)),
                        _ => return Err(ProtocolError("expected '$', got ':'".into())),
                    }
                }
                Ok(Some(args))
            }
            _ => Ok(Some(Vec::new())),
        }
    }

    /// Whether a decoded request is one the walk would accept: bulk strings only, at least one,
    /// each within the bulk limit, and the unauthenticated limits.
    fn within_limits(&self, items: &[RangeFrame], authenticated: bool) -> bool {
        let max = if authenticated {
            self.max_bulk
        } else {
            UNAUTH_MAX_BULK as usize
        };
        !items.is_empty()
            && (authenticated || items.len() as i64 <= UNAUTH_MAX_ARGS)
            && items.iter().all(|i| match i {
                RangeFrame::BulkString((s, e)) => e - s <= max,
                _ => false,
            })
    }

    /// Checks a multibulk request's headers against the limits, as far as the buffer goes.
    fn walk(&self, buf: &[u8], authenticated: bool) -> Result<Walk, ProtocolError> {
        let Some(end) = find_crlf(buf, 1) else {
            if buf.len() > INLINE_MAX {
                return Err(ProtocolError("too big mbulk count string".into()));
            }
            return Ok(Walk::Incomplete(0));
        };
        let count = parse_int(&buf[1..end])
            .filter(|&n| n <= i32::MAX as i64)
            .ok_or_else(|| ProtocolError("invalid multibulk length".into()))?;
        if !authenticated && count > UNAUTH_MAX_ARGS {
            return Err(ProtocolError("unauthenticated multibulk length".into()));
        }
        if count <= 0 {
            // Redis ignores an empty or negative multibulk count: nothing to run.
            return Ok(Walk::Empty(end + 2));
        }
        let mut pos = end + 2;
        for _ in 0..count.max(0) {
            if pos >= buf.len() {
                return Ok(Walk::Incomplete(0));
            }
            if buf[pos] != b'$' {
                return Err(ProtocolError(format!(
                    "expected '$', got '{}'",
                    buf[pos] as char
                )));
            }
            let Some(end) = find_crlf(buf, pos + 1) else {
                if buf.len() - pos > INLINE_MAX {
                    return Err(ProtocolError("too big bulk count string".into()));
                }
                return Ok(Walk::Incomplete(0));
            };
            let len = parse_int(&buf[pos + 1..end])
                .ok_or_else(|| ProtocolError("invalid bulk length".into()))?;
            if !authenticated && len > UNAUTH_MAX_BULK {
                return Err(ProtocolError("unauthenticated bulk length".into()));
            }
            if len < 0 || len > self.max_bulk as i64 {
                return Err(ProtocolError("invalid bulk length".into()));
            }
            let next = end + 2 + len as usize + 2;
            if next > buf.len() {
                return Ok(Walk::Incomplete(next));
            }
            pos = next;
        }
        Ok(Walk::Complete)
    }

    fn inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > INLINE_MAX {
                return Err(ProtocolError("too big inline request".into()));
            }
            return Ok(None);
        };
        let line = buf.split_to(nl + 1);
        let mut line = &line[..nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        split_args(line)
            .map(|v| Some(v.into_iter().map(Bytes::from).collect()))
            .ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))
    }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline line like Redis's sdssplitargs: spaces separate, "double quotes" take
/// escapes (\n \r \t \b \a \\ \" \xHH), 'single quotes' take \'. None = unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            return Some(out);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            if inq {
                if i >= line.len() {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 3 < line.len() && line[i + 1] == b'x' {
                    if let (Some(h), Some(l)) = (hex(line[i + 2]), hex(line[i + 3])) {
                        cur.push(h * 16 + l);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && i + 1 < line.len() {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        o => o,
                    });
                } else if c == b'"' {
                    // The closing quote must be followed by a space or the end.
                    if i + 1 < line.len() && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
                i += 1;
            } else if insq {
                if i >= line.len() {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 1 < line.len() && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 2;
                    continue;
                } else if c == b'\'' {
                    if i + 1 < line.len() && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else {
                if i >= line.len() {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        i += 1;
                        break;
                    }
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
                i += 1;
            }
        }
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut f = Framer::new(512 * 1024 * 1024);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(cmd) = f.next(&mut buf, true)? {
            out.push(cmd);
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_pipelines() {
        let cmds = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(&cmds[0][0][..], b"GET");
        assert_eq!(&cmds[1][0][..], b"PING");
    }

    #[test]
    fn incomplete_waits() {
        assert!(parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\n").unwrap().is_empty());
        assert!(parse_all(b"*2\r\n$3\r\nGE").unwrap().is_empty());
        assert!(parse_all(b"PING").unwrap().is_empty());
    }

    #[test]
    fn limits_refuse_early() {
        assert_eq!(
            parse_all(b"*1\r\n$600000000\r\n").unwrap_err().0,
            "invalid bulk length"
        );
        assert_eq!(
            parse_all(b"*1\r\n$-5\r\n").unwrap_err().0,
            "invalid bulk length"
        );
        assert_eq!(
            parse_all(b"*abc\r\n").unwrap_err().0,
            "invalid multibulk length"
        );
        assert_eq!(
            parse_all(b"*1\r\n:5\r\n").unwrap_err().0,
            "expected '$', got ':'"
        );
        let mut f = Framer::new(1 << 20);
        let mut buf = BytesMut::from(&b"*20\r\n"[..]);
        assert_eq!(
            f.next(&mut buf, false).unwrap_err().0,
            "unauthenticated multibulk length"
        );
        // Zero and negative counts are skipped, and what follows still runs.
        let cmds = parse_all(b"*0\r\n*-5\r\nPING\r\n").unwrap();
        assert_eq!(cmds.len(), 3);
        assert!(cmds[0].is_empty() && cmds[1].is_empty());
        assert_eq!(&cmds[2][0][..], b"PING");
    }

    /// Length headers Redis's string2ll refuses are refused, complete frame or not (the
    /// one-pass decode of complete frames must not accept what the walk refuses).
    #[test]
    fn only_plain_digit_lengths() {
        for (wire, err) in [
            (&b"*1\r\n$04\r\nPING\r\n"[..], "invalid bulk length"),
            (b"*1\r\n$+4\r\nPING\r\n", "invalid bulk length"),
            (b"*2\r\n$4\r\nECHO\r\n$-0\r\n\r\n", "invalid bulk length"),
            (b"*1\r\n$ 4\r\nPING\r\n", "invalid bulk length"),
            (b"*01\r\n$4\r\nPING\r\n", "invalid multibulk length"),
            (b"*+1\r\n$4\r\nPING\r\n", "invalid multibulk length"),
        ] {
            assert_eq!(parse_all(wire).unwrap_err().0, err, "{wire:?}");
        }
        let ok = parse_all(b"*2\r\n$4\r\nECHO\r\n$12\r\nhello world!\r\n").unwrap();
        assert_eq!(ok[0][1], Bytes::from_static(b"hello world!"));
    }

    #[test]
    fn inline_quoting() {
        let c = parse_all(b"SET k \"a b\\x41\\n\" 'it\\'s'\r\n").unwrap();
        assert_eq!(c[0].len(), 4);
        assert_eq!(&c[0][2][..], b"a bA\n");
        assert_eq!(&c[0][3][..], b"it's");
        assert_eq!(
            parse_all(b"SET \"k\r\n").unwrap_err().0,
            "unbalanced quotes in request"
        );
        assert!(parse_all(b"\r\n").unwrap()[0].is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// No input makes the framer panic, and a valid encoding always round-trips.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_all(&data);
        }

        #[test]
        fn encoded_commands_roundtrip(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..8), split in 0usize..400) {
            let mut wire = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                wire.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                wire.extend_from_slice(a);
                wire.extend_from_slice(b"\r\n");
            }
            let mut f = Framer::new(1 << 20);
            let cut = split.min(wire.len());
            let mut buf = BytesMut::from(&wire[..cut]);
            let first = f.next(&mut buf, true).unwrap();
            let cmd = match first {
                Some(c) => c,
                None => {
                    buf.extend_from_slice(&wire[cut..]);
                    f.next(&mut buf, true).unwrap().unwrap()
                }
            };
            prop_assert_eq!(cmd.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), args);
        }
    }
}
