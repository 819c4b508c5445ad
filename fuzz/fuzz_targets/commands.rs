//! Fuzz target: arbitrary bytes as one client's input, executed against a real `App`.
//!
//! Each input gets a fresh `App` (so a crash reproduces from its input alone), one session
//! built the way `server::connection` builds it, and the framer; every framed command goes
//! through `strata::command::execute` — table lookup, arity, the guard chain, MULTI queueing,
//! the store gate, the handler and the store. Nothing here may panic, and every command must
//! leave a well-formed reply behind (the buffer only ever grows by complete replies, which is
//! checked cheaply by its last two bytes).
//!
//! The first input byte picks the configuration, so the paths that only exist under a memory
//! bound (eviction by each policy, the OOM refusal) or a password (NOAUTH, AUTH, HELLO AUTH)
//! are reached too. SHUTDOWN is skipped (it would only stop a server that is not running here);
//! Strata has no DEBUG command. A SETRANGE whose offset asks for more than 1 MiB is skipped
//! as well: it is a legal 512 MB allocation that would only slow the fuzzer down (its bound is
//! covered by the tests).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use strata::app::App;
use strata::config::{ByteSize, Config, EvictionPolicy};
use strata::server::frame::Framer;
use strata::server::reply::Reply;
use strata::server::session::{ClientInfo, Session};

const POLICIES: [EvictionPolicy; 4] = [
    EvictionPolicy::AllkeysLru,
    EvictionPolicy::VolatileLru,
    EvictionPolicy::AllkeysRandom,
    EvictionPolicy::Noeviction,
];

fn skipped(args: &[Bytes]) -> bool {
    let name = args[0].to_ascii_lowercase();
    match &name[..] {
        b"shutdown" | b"debug" => true,
        b"setrange" => args
            .get(2)
            .and_then(|o| std::str::from_utf8(o).ok())
            .and_then(|o| o.parse::<i64>().ok())
            .is_some_and(|o| o > 1 << 20),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let (ctl, input) = match data.split_first() {
        Some((c, rest)) => (*c, rest),
        None => return,
    };
    let mut cfg = Config::default();
    cfg.http.listen.clear();
    cfg.l1.maxmemory_policy = POLICIES[(ctl & 3) as usize];
    if ctl & 4 != 0 {
        // Small enough that a few keys reach it.
        cfg.l1.maxmemory = ByteSize(4096);
    }
    if ctl & 8 != 0 {
        cfg.server.requirepass = "pw".into();
    }
    cfg.server.slowlog_log_slower_than = if ctl & 16 != 0 { 0 } else { 10_000 };
    let authenticated = cfg.server.requirepass.is_empty();
    let max_bulk = cfg.server.proto_max_bulk_len.0 as usize;
    let app = App::new(cfg, None);

    let info = Arc::new(ClientInfo::new(
        app.clients.next_id(),
        None,
        None,
        strata::command::unix_ms(),
    ));
    app.clients.register(info.clone());
    let mut session = Session::new(info.clone(), authenticated);
    let mut out = Reply::new(false);
    let mut framer = Framer::new(max_bulk);
    let mut buf = BytesMut::from(input);

    loop {
        let args = match framer.next(&mut buf, session.authenticated) {
            Ok(Some(a)) => a,
            // Incomplete input or a protocol error: the connection would wait or close.
            Ok(None) | Err(_) => break,
        };
        if args.is_empty() || skipped(&args) {
            continue;
        }
        let before = out.len();
        strata::command::execute(&app, &mut session, &mut out, &args);
        if out.len() > before {
            assert!(out.buf.ends_with(b"\r\n"), "a reply was left unterminated");
        }
        if session.close {
            break;
        }
        // Keep memory flat on long pipelines: the bytes were produced, that is what counts.
        if out.len() > 1 << 20 {
            out.buf.clear();
        }
    }
    strata::command::transactions::unwatch_all(&app, &mut session);
    app.clients.unregister(info.id);
});
