//! Fuzz target: arbitrary bytes through the request framer and the command table.
//!
//! The input is what a client could send on one connection. It is framed twice — all at once,
//! and in small chunks as a socket might deliver it — for an unauthenticated and an
//! authenticated connection, and every command produced is resolved against the command table
//! (`strata::command::resolve`: lookup, subcommand, arity). Nothing here may panic.
//!
//! Beyond "no panic" it checks what a connection relies on:
//! - every `Ok(Some(_))` consumes at least one byte (otherwise the read loop would spin);
//! - how the bytes are split into reads does not change the commands: the commands framed from
//!   chunks are the commands framed from the whole buffer, except that one side may stop early
//!   on an error (a limit can trip on a partial buffer that a later newline would have
//!   satisfied, as in Redis), so one list must be a prefix of the other.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use strata::server::frame::Framer;

/// Commands framed from `input` fed in pieces of `chunk` bytes; `true` if framing ended in an
/// error (the connection would be closed there). `ahead`: walk requests ahead and peek at
/// them after each one taken, as a connection does in a pipeline of RATE calls.
fn frame(
    input: &[u8],
    chunk: usize,
    authenticated: bool,
    max_bulk: usize,
    ahead: bool,
) -> (Vec<Vec<Bytes>>, bool) {
    let mut framer = Framer::new(max_bulk);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match framer.next(&mut buf, authenticated) {
                Ok(Some(args)) => {
                    assert!(buf.len() < before, "a framed command consumed no input");
                    if !args.is_empty() {
                        // Must not panic, whatever the arguments; the result itself is an
                        // index or a Redis error text.
                        match strata::command::resolve(&args) {
                            Ok(_) => {}
                            Err(e) => assert!(!e.as_str().is_empty()),
                        }
                    }
                    out.push(args);
                    if ahead {
                        framer.walk_ahead(&buf, authenticated);
                        let _ = framer.peek(&buf);
                    }
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    // First byte: chunk size for the split run and a small or the default bulk limit.
    let (ctl, input) = match data.split_first() {
        Some((c, rest)) => (*c, rest),
        None => (0, data),
    };
    let chunk = (ctl & 0x3f) as usize + 1;
    let max_bulk = if ctl & 0x40 != 0 {
        1024
    } else {
        512 * 1024 * 1024
    };
    for authenticated in [false, true] {
        let (whole, whole_err) = frame(input, usize::MAX, authenticated, max_bulk, false);
        let (split, split_err) = frame(input, chunk, authenticated, max_bulk, false);
        let walked = frame(input, chunk, authenticated, max_bulk, true);
        assert_eq!(
            walked,
            (split.clone(), split_err),
            "walking ahead changes what is framed"
        );
        let n = whole.len().min(split.len());
        assert_eq!(
            whole[..n],
            split[..n],
            "chunked framing disagrees with whole-buffer framing"
        );
        if !whole_err && !split_err {
            assert_eq!(whole.len(), split.len(), "chunked framing lost commands");
        }
    }
});
