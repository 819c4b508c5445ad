//! Request framing: turns the bytes a client sent into commands (argument vectors).
//!
//! Multibulk requests (`*N\r\n$len\r\n...`) are walked here, header by header, with Redis's
//! exact limits and error texts: the limits hold *before* a frame is complete (a `$600000000`
//! header is refused at once, not after buffering 600 MB), which a decoding crate does not do.
//! The walk notes where each argument lies, and the arguments are zero-copy slices of the read
//! buffer. (The `redis-protocol` crate decoded the complete frames after the walk until the
//! sixth session; that second parse was a sixth of a PING's instructions. It still decodes
//! replies, in scripting.) Inline commands (`PING\r\n`, with Redis's quoting rules), which
//! redis-cli and telnet users send, are parsed here too.
//! A framing error is fatal for the connection, as in Redis.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Longest inline request or count line Redis accepts (PROTO_INLINE_MAX_SIZE).
pub const INLINE_MAX: usize = 64 * 1024;

/// Unauthenticated clients may only send small requests (as Redis limits them).
const UNAUTH_MAX_ARGS: i64 = 10;
const UNAUTH_MAX_BULK: i64 = 16384;

/// A request with more arguments than this does not leave its range list or argument vector
/// behind.
const RANGES_KEPT: usize = 1024;

/// Empties an argument vector [`Framer::next_into`] filled, so that the read buffer's bytes
/// are released; its allocation is kept only when small.
pub fn recycle(args: &mut Vec<Bytes>) {
    if args.capacity() > RANGES_KEPT {
        *args = Vec::new();
    } else {
        args.clear();
    }
}

/// A framing error; the text follows `-ERR Protocol error: ` on the wire.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// Requests walked ahead of the one being run, at most (see [`Framer::peek`]).
const AHEAD: usize = 2;
/// Requests with more arguments than this are not walked ahead (their ranges would be held
/// twice as long), only when their turn comes.
const AHEAD_MAX_ARGS: i64 = 64;

/// Parser limits and the per-connection resume hint.
pub struct Framer {
    pub max_bulk: usize,
    /// Bytes the buffer must hold before a multibulk walk can make progress.
    need: usize,
    /// Where each argument of the requests walked lies, relative to its request's start:
    /// from `taken` on, those of the requests in `ahead`, in order, then those of the request
    /// being walked.
    ranges: Vec<(usize, usize)>,
    taken: usize,
    /// Complete requests already walked (authenticated clients only), front first: each
    /// one's length in bytes and number of arguments.
    ahead: VecDeque<(usize, usize)>,
    /// Bytes those requests take at the front of the buffer.
    ahead_len: usize,
}

enum Walk {
    /// A whole request of this many bytes; its arguments' ranges are in `Framer::ranges`.
    Complete(usize),
    Incomplete(usize),
    /// A multibulk count of zero or less: skip this many bytes.
    Empty(usize),
}

/// A length line, as Redis's string2ll reads it (no `+`, no leading zeros).
fn parse_int(line: &[u8]) -> Option<i64> {
    crate::command::args::parse_i64(line)
}

/// The common header `<digits>\r\n` starting at `at` (a plain non-negative number of at most
/// 18 digits, no leading zero): its value and the position of its `\r`, in one pass. `None`
/// for anything else, which the general path (`find_crlf` and `parse_int`) then reads.
#[inline]
fn plain_header(buf: &[u8], at: usize) -> Option<(i64, usize)> {
    let digits = buf.get(at..)?;
    let mut v: i64 = 0;
    for (i, &c) in digits.iter().enumerate().take(19) {
        match c {
            b'0'..=b'9' if i < 18 && (i > 0 || c != b'0' || digits.get(1) == Some(&b'\r')) => {
                v = v * 10 + (c - b'0') as i64;
            }
            b'\r' if i > 0 && digits.get(i + 1) == Some(&b'\n') => return Some((v, at + i)),
            _ => return None,
        }
    }
    None
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
        Framer {
            max_bulk,
            need: 0,
            ranges: Vec::new(),
            taken: 0,
            ahead: VecDeque::new(),
            ahead_len: 0,
        }
    }

    /// The command name and first argument of the next two requests after the one last
    /// taken, for those already walked that have them. Reads only: a hint for prefetching
    /// what a request will touch, available while the ones before it run.
    pub fn peek<'b>(&self, buf: &'b [u8]) -> [Option<(&'b [u8], &'b [u8])>; 2] {
        let arg = |at: usize, i: usize| {
            let (s, e) = self.ranges[i];
            buf.get(at + s..at + e)
        };
        let two = |at: usize, first: usize, n: usize| match n >= 2 {
            true => Some((arg(at, first)?, arg(at, first + 1)?)),
            false => None,
        };
        match (self.ahead.front(), self.ahead.get(1)) {
            (Some(&(len, n)), next) => [
                two(0, self.taken, n),
                next.and_then(|&(_, m)| two(len, self.taken + n, m)),
            ],
            (None, _) => [None, None],
        }
    }

    /// Walks the complete requests after those already walked, up to [`AHEAD`], so that
    /// [`Framer::peek`] sees them; they are then taken without another walk. Stops at anything
    /// else (an inline request, an incomplete or a large one, an error): that is framed, and
    /// any error reported, when its turn comes. Only for authenticated clients (whose limits
    /// the walk applies; the requests are walked again if the client is not by then).
    pub fn walk_ahead(&mut self, buf: &[u8], authenticated: bool) {
        while authenticated && self.ahead.len() < AHEAD {
            let Some(rest) = buf.get(self.ahead_len..) else {
                return;
            };
            if rest.first() != Some(&b'*') {
                return;
            }
            let first = self.ranges.len();
            match self.walk(rest, true, AHEAD_MAX_ARGS) {
                Ok(Walk::Complete(len)) => {
                    self.ahead.push_back((len, self.ranges.len() - first));
                    self.ahead_len += len;
                }
                Ok(Walk::Empty(len)) => {
                    self.ahead.push_back((len, 0));
                    self.ahead_len += len;
                }
                _ => {
                    self.ranges.truncate(first);
                    return;
                }
            }
        }
    }

    /// Takes the next complete command off the front of `buf`. `Ok(None)`: need more bytes.
    /// An empty vector is an empty request (blank inline line, `*0`), which Redis ignores.
    pub fn next(
        &mut self,
        buf: &mut BytesMut,
        authenticated: bool,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut args = Vec::new();
        Ok(self
            .next_into(buf, authenticated, &mut args)?
            .then_some(args))
    }

    /// [`Framer::next`] into `args` (emptied first), so that a connection allocates one
    /// argument vector rather than one per request. `Ok(false)`: need more bytes; `Ok(true)`
    /// with no arguments: an empty request. Empty `args` with [`recycle`] once it is used.
    pub fn next_into(
        &mut self,
        buf: &mut BytesMut,
        authenticated: bool,
        args: &mut Vec<Bytes>,
    ) -> Result<bool, ProtocolError> {
        args.clear();
        if let Some((len, n)) = self.ahead.pop_front() {
            self.ahead_len -= len;
            if authenticated {
                self.take(buf, len, n, args);
                return Ok(true);
            }
            // Walked with an authenticated client's limits: walk again with the others'.
            self.ahead.clear();
            self.ahead_len = 0;
        }
        if buf.is_empty() || buf.len() < self.need {
            return Ok(false);
        }
        if buf[0] != b'*' {
            return self.inline(buf, args);
        }
        // No request is walked ahead here: what `ranges` holds is an incomplete walk's.
        self.ranges.clear();
        self.taken = 0;
        match self.walk(buf, authenticated, i64::MAX)? {
            Walk::Incomplete(need) => {
                self.need = need;
                Ok(false)
            }
            Walk::Empty(n) => {
                self.need = 0;
                let _ = buf.split_to(n);
                Ok(true)
            }
            Walk::Complete(n) => {
                self.need = 0;
                let count = self.ranges.len();
                self.take(buf, n, count, args);
                Ok(true)
            }
        }
    }

    /// Takes the walked request of `len` bytes and `n` arguments off the front of `buf`.
    #[inline(always)]
    fn take(&mut self, buf: &mut BytesMut, len: usize, n: usize, args: &mut Vec<Bytes>) {
        let frozen = buf.split_to(len).freeze();
        let taken = self.taken + n;
        let ranges = &self.ranges[self.taken..taken];
        args.extend(ranges.iter().map(|&(s, e)| frozen.slice(s..e)));
        self.taken = taken;
        if taken == self.ranges.len() {
            self.ranges.clear();
            self.taken = 0;
            if self.ranges.capacity() > RANGES_KEPT {
                self.ranges = Vec::new();
            }
        } else if taken >= RANGES_KEPT / 8 {
            // Requests are walked ahead while earlier ones are taken: drop the taken ranges
            // now and then (at most AHEAD requests of AHEAD_MAX_ARGS each are left to move).
            self.ranges.drain(..taken);
            self.taken = 0;
        }
    }

    /// Checks a multibulk request's headers against the limits, as far as the buffer goes,
    /// adding its arguments' ranges to `ranges` (whose caller drops them if it is not
    /// complete). A request of more than `most` arguments is left as if incomplete.
    #[inline(always)]
    fn walk(&mut self, buf: &[u8], authenticated: bool, most: i64) -> Result<Walk, ProtocolError> {
        let (count, end) = match plain_header(buf, 1) {
            Some(header) => header,
            None => {
                let Some(end) = find_crlf(buf, 1) else {
                    if buf.len() > INLINE_MAX {
                        return Err(ProtocolError("too big mbulk count string".into()));
                    }
                    return Ok(Walk::Incomplete(0));
                };
                (parse_int(&buf[1..end]).unwrap_or(i64::MAX), end)
            }
        };
        if count > i32::MAX as i64 {
            return Err(ProtocolError("invalid multibulk length".into()));
        }
        if !authenticated && count > UNAUTH_MAX_ARGS {
            return Err(ProtocolError("unauthenticated multibulk length".into()));
        }
        if count <= 0 {
            // Redis ignores an empty or negative multibulk count: nothing to run.
            return Ok(Walk::Empty(end + 2));
        }
        if count > most {
            return Ok(Walk::Incomplete(0));
        }
        let mut pos = end + 2;
        self.ranges.reserve((count as usize).min(RANGES_KEPT));
        for _ in 0..count {
            if pos >= buf.len() {
                return Ok(Walk::Incomplete(0));
            }
            if buf[pos] != b'$' {
                return Err(ProtocolError(format!(
                    "expected '$', got '{}'",
                    buf[pos] as char
                )));
            }
            let (len, end) = match plain_header(buf, pos + 1) {
                Some(header) => header,
                None => {
                    let Some(end) = find_crlf(buf, pos + 1) else {
                        if buf.len() - pos > INLINE_MAX {
                            return Err(ProtocolError("too big bulk count string".into()));
                        }
                        return Ok(Walk::Incomplete(0));
                    };
                    let len = parse_int(&buf[pos + 1..end])
                        .ok_or_else(|| ProtocolError("invalid bulk length".into()))?;
                    (len, end)
                }
            };
            if !authenticated && len > UNAUTH_MAX_BULK {
                return Err(ProtocolError("unauthenticated bulk length".into()));
            }
            if len < 0 || len > self.max_bulk as i64 {
                return Err(ProtocolError("invalid bulk length".into()));
            }
            let start = end + 2;
            let next = start + len as usize + 2;
            if next > buf.len() {
                return Ok(Walk::Incomplete(next));
            }
            self.ranges.push((start, start + len as usize));
            pos = next;
        }
        Ok(Walk::Complete(pos))
    }

    /// An inline request: one line, split like Redis's sdssplitargs. A line without quotes or
    /// unusual whitespace (what redis-cli and redis-benchmark send) is split where it lies, its
    /// arguments zero-copy slices as a multibulk request's are; any other goes through
    /// [`split_args`].
    fn inline(&mut self, buf: &mut BytesMut, args: &mut Vec<Bytes>) -> Result<bool, ProtocolError> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > INLINE_MAX {
                return Err(ProtocolError("too big inline request".into()));
            }
            return Ok(false);
        };
        let line = buf.split_to(nl + 1).freeze();
        let end = match nl > 0 && line[nl - 1] == b'\r' {
            true => nl - 1,
            false => nl,
        };
        let body = &line[..end];
        let plain = |c: &u8| !matches!(c, b'"' | b'\'' | 0 | b'\r' | b'\n' | 0x0b | 0x0c);
        if body.iter().all(plain) {
            let blank = |c: u8| c == b' ' || c == b'\t';
            let mut i = 0;
            while i < end {
                if blank(body[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < end && !blank(body[i]) {
                    i += 1;
                }
                args.push(line.slice(start..i));
            }
            return Ok(true);
        }
        let split =
            split_args(body).ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))?;
        args.extend(split.into_iter().map(Bytes::from));
        Ok(true)
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

        /// The one-pass header read agrees with the general one wherever it answers.
        #[test]
        fn plain_headers_read_as_the_general_path(
            data in proptest::collection::vec(prop_oneof![
                4 => b'0'..=b'9', 1 => Just(b'\r'), 1 => Just(b'\n'), 1 => Just(b'-'),
                1 => Just(b'+'), 1 => any::<u8>()], 0..24)
        ) {
            if let Some((v, cr)) = plain_header(&data, 0) {
                prop_assert_eq!(find_crlf(&data, 0), Some(cr));
                prop_assert_eq!(parse_int(&data[..cr]), Some(v));
            }
        }

        /// An inline line splits the same through the zero-copy path as through `split_args`.
        #[test]
        fn inline_lines_split_as_sdssplitargs(
            line in proptest::collection::vec(prop_oneof![
                6 => b'a'..=b'e', 3 => Just(b' '), 1 => Just(b'\t'), 1 => Just(b'"'),
                1 => Just(b'\''), 1 => Just(0u8), 1 => Just(0x0bu8), 1 => Just(0x0cu8),
                1 => Just(b'\r'), 1 => Just(b'\\')], 0..30)
        ) {
            let mut wire = line.clone();
            wire.push(b'\n');
            let framed = parse_all(&wire).map(|cmds| cmds.concat());
            match split_args(&line) {
                Some(want) => {
                    let got = framed.unwrap();
                    prop_assert_eq!(got.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), want);
                }
                None => prop_assert!(framed.is_err()),
            }
        }

        /// Walking requests ahead (and peeking at them) changes nothing that is framed: the
        /// same requests, the same error at the same point, whether the client's
        /// authentication changes on the way or not; and a peek shows the requests that come.
        #[test]
        fn walking_ahead_frames_the_same(
            reqs in proptest::collection::vec(prop_oneof![
                6 => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..5)
                    .prop_map(|args| {
                        let mut w = format!("*{}\r\n", args.len()).into_bytes();
                        for a in &args {
                            w.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                            w.extend_from_slice(a);
                            w.extend_from_slice(b"\r\n");
                        }
                        w
                    }),
                1 => Just(b"*0\r\n".to_vec()),
                1 => Just(b"PING a\r\n".to_vec()),
                1 => Just(b"*11\r\n".iter().copied().chain((0..11).flat_map(|_| *b"$1\r\nx\r\n")).collect()),
                1 => Just(b"*1\r\n$99999\r\n".to_vec()),
                1 => Just(b"*1\r\n$x\r\n".to_vec()),
            ], 1..12),
            cuts in proptest::collection::vec(0usize..300, 0..4),
            auth in proptest::collection::vec(any::<bool>(), 12),
        ) {
            let wire = reqs.concat();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();
            // Framed plainly, and with a walk ahead and a peek after every request taken.
            let run = |ahead: bool| {
                let mut f = Framer::new(64 * 1024);
                let (mut buf, mut fed, mut out, mut peeks) = (BytesMut::new(), 0, Vec::new(), Vec::new());
                let mut args = Vec::new();
                for &cut in &cuts {
                    buf.extend_from_slice(&wire[fed..cut]);
                    fed = cut;
                    loop {
                        let authenticated = auth[out.len() % auth.len()];
                        match f.next_into(&mut buf, authenticated, &mut args) {
                            Ok(true) => out.push(args.iter().map(|a| a.to_vec()).collect::<Vec<_>>()),
                            Ok(false) => break,
                            Err(e) => return (out, Some(e), peeks),
                        }
                        if ahead {
                            f.walk_ahead(&buf, authenticated);
                            let [a, b] = f.peek(&buf);
                            peeks.push((out.len(), a.map(|(n, k)| (n.to_vec(), k.to_vec())), b.map(|(n, k)| (n.to_vec(), k.to_vec()))));
                        }
                    }
                }
                (out, None, peeks)
            };
            let (plain, plain_err, _) = run(false);
            let (walked, walked_err, peeks) = run(true);
            prop_assert_eq!(&walked, &plain);
            prop_assert_eq!(walked_err, plain_err);
            // What a peek showed is what came next (when it came).
            for (at, next, after) in peeks {
                for (k, seen) in [(0, next), (1, after)] {
                    if let (Some((name, key)), Some(req)) = (seen, plain.get(at + k)) {
                        prop_assert_eq!(&req[0], &name);
                        prop_assert_eq!(&req[1], &key);
                    }
                }
            }
        }
    }
}
