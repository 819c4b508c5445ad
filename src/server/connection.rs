//! One client connection: read bytes, frame every complete command in the buffer, execute them
//! in order, and write all their replies with one write (pipelining).
//!
//! Bounds: the unparsed input may not exceed `client_query_buffer_limit`; pending output is
//! flushed whenever it passes a threshold, a client whose output cannot be written for
//! `client_output_stall_s` seconds is disconnected, and so is one whose single reply exceeds
//! `client_output_buffer_limit` — so a client that never reads costs bounded memory. Idle
//! clients are closed after `timeout` seconds (0 = never). CLIENT KILL and shutdown interrupt
//! the read.

use super::frame::{recycle, Framer};
use super::pubsub::Mailbox;
use super::reply::Reply;
use super::session::{Block, ClientInfo, Ending, Session};
use super::tls::Stream;
use crate::app::App;
use crate::cache::store::{Watch, WatchFlag};
use crate::command::{self, pubsub, transactions};
use bytes::BytesMut;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Pending output is written out once it passes this size, even mid-batch.
const FLUSH_AT: usize = 64 * 1024;
/// A buffer that grew past this is replaced after use, so one big reply does not pin memory.
const SHRINK_ABOVE: usize = 1024 * 1024;

/// Why a connection ended (logged at debug level).
#[derive(Debug)]
enum Close {
    Eof,
    Quit,
    Killed,
    Shutdown,
    Idle,
    Protocol(String),
    QueryBufferLimit,
    OutputLimit,
    OutputStall,
    Io(#[allow(dead_code)] std::io::Error),
}

struct Limits {
    idle: Option<Duration>,
    query_limit: usize,
    output_limit: usize,
    stall: Duration,
}

fn limits(app: &App) -> Limits {
    let c = app.config.read();
    Limits {
        idle: (c.server.timeout > 0).then(|| Duration::from_secs(c.server.timeout)),
        query_limit: c.server.client_query_buffer_limit.0 as usize,
        output_limit: c.server.client_output_buffer_limit.0 as usize,
        stall: Duration::from_secs(c.server.client_output_stall_s.max(1)),
    }
}

/// The connection's reason to end when it is ended from outside.
fn stopped<'a>(app: &'a App, info: &'a ClientInfo) -> impl Future<Output = Close> + 'a {
    let ending = info.ending(app);
    async move {
        match ending.await {
            Ending::Killed => Close::Killed,
            Ending::Shutdown => Close::Shutdown,
        }
    }
}

async fn flush(
    app: &App,
    stream: &mut Stream,
    out: &mut Reply,
    lim: &Limits,
    info: &ClientInfo,
) -> Result<(), Close> {
    if out.is_empty() {
        return Ok(());
    }
    if out.len() > lim.output_limit {
        return Err(Close::OutputLimit);
    }
    // A client that does not read is cut off by CLIENT KILL (or the pub/sub backlog limit)
    // even while its write is blocked.
    // The flush sends what TLS still holds (a no-op on plain TCP).
    let write = tokio::time::timeout(lim.stall, async {
        stream.write_all(&out.buf).await?;
        stream.flush().await
    });
    // The write first: it almost always completes at once, and then the kill wait is never
    // registered.
    tokio::select! {
        biased;
        r = write => match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Close::Io(e)),
            Err(_) => return Err(Close::OutputStall),
        },
        c = stopped(app, info) => return Err(c),
    }
    app.metrics.net_output_bytes.inc_by(out.len() as u64);
    out.buf.clear();
    if out.buf.capacity() > SHRINK_ABOVE {
        out.buf = Vec::with_capacity(16 * 1024);
    }
    Ok(())
}

/// Waits until a blocking command (BLPOP, BLMOVE, ...) can be served, its timeout passes, or
/// the client goes away. The command is run again whenever one of its keys changes; other
/// commands the client pipelined behind it wait, as in Redis.
async fn wait_blocked(
    app: &App,
    stream: &mut Stream,
    session: &mut Session,
    out: &mut Reply,
    rbuf: &mut BytesMut,
    args: &[bytes::Bytes],
    block: Block,
) -> Result<(), Close> {
    let flag: WatchFlag = Arc::new(Watch::default());
    let db = session.db;
    for k in &block.keys {
        app.store.watch(db, k, &flag);
    }
    app.blocked_clients.fetch_add(1, Ordering::Relaxed);
    let ticket = app.block_queues.enter(db, &block.keys, &flag);
    let info = session.info.clone();
    let result = loop {
        // Registered first, tried second: a push between the first attempt and the
        // registration is not missed. Clients that blocked earlier on a key go first.
        if app.block_queues.may_try(db, &block.keys, ticket) {
            session.now_ms = command::unix_ms();
            command::execute(app, session, out, args);
            if session.block.take().is_none() {
                break Ok(());
            }
        }
        let deadline = async {
            match block.deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = flag.changed() => continue,
            _ = deadline => {
                out.null_array();
                break Ok(());
            }
            c = stopped(app, &info) => break Err(c),
            r = stream.read_buf(rbuf) => match r {
                Ok(0) => break Err(Close::Eof),
                Ok(_) => continue,
                Err(e) => break Err(Close::Io(e)),
            },
        }
    };
    for k in &block.keys {
        app.store.unwatch(db, k, &flag);
    }
    app.block_queues.leave(db, &block.keys, ticket);
    app.blocked_clients.fetch_sub(1, Ordering::Relaxed);
    result
}

pub async fn serve(app: Arc<App>, mut stream: Stream, info: Arc<ClientInfo>) {
    let default = app.acl.default_user();
    let authenticated = !default.needs_password(&app.config.read().server.requirepass);
    let mut session = Session::new(info.clone(), authenticated);
    session.acl = Some(default);
    let mut mailbox = Mailbox::new(info.clone());
    session.subscriber = Some(mailbox.subscriber.clone());
    let mut out = Reply::new(false);
    let reason = run(&app, &mut stream, &mut session, &mut out, &mut mailbox).await;
    // A protocol error is reported to the client before closing, as Redis does.
    if let Close::Protocol(msg) = &reason {
        out.error(&format!("ERR Protocol error: {msg}"));
        let lim = limits(&app);
        let _ = flush(&app, &mut stream, &mut out, &lim, &info).await;
    }
    tracing::debug!(client = info.id, ?reason, "connection closed");
    transactions::unwatch_all(&app, &mut session);
    pubsub::unsubscribe_all(&app, &mut session);
    app.clients.unregister(info.id);
}

async fn run(
    app: &App,
    stream: &mut Stream,
    session: &mut Session,
    out: &mut Reply,
    mailbox: &mut Mailbox,
) -> Close {
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let max_bulk = app.config.read().server.proto_max_bulk_len.0 as usize;
    let mut framer = Framer::new(max_bulk);
    let mut args = Vec::new();
    let info = session.info.clone();
    loop {
        let lim = limits(app);
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(16 * 1024);
        }
        let read = stream.read_buf(&mut rbuf);
        let n = tokio::select! {
            r = async {
                match lim.idle {
                    Some(d) => tokio::time::timeout(d, read).await.map_err(|_| Close::Idle),
                    None => Ok(read.await),
                }
            } => match r {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Close::Io(e),
                Err(c) => return c,
            },
            c = stopped(app, &info) => return c,
            Some(msg) = mailbox.rx.recv(), if session.listening => {
                // Published messages for this subscriber: write them (and any queued behind).
                let mut n = msg.len();
                out.raw(&msg);
                while out.len() < FLUSH_AT {
                    let Ok(m) = mailbox.rx.try_recv() else { break };
                    n += m.len();
                    out.raw(&m);
                }
                let r = flush(app, stream, out, &lim, &info).await;
                mailbox.written(n);
                if let Err(c) = r {
                    return c;
                }
                continue;
            }
        };
        if n == 0 {
            return Close::Eof;
        }
        if info.killed.load(Ordering::Acquire) {
            return Close::Killed;
        }
        app.metrics.net_input_bytes.inc_by(n as u64);
        app.busy_poll.touch();
        session.now_ms = command::unix_ms();
        info.last_ms.store(session.now_ms, Ordering::Relaxed);
        loop {
            match framer.next_into(&mut rbuf, session.authenticated, &mut args) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    if let Err(c) = flush(app, stream, out, &lim, &info).await {
                        return c;
                    }
                    return Close::Protocol(e.0);
                }
            };
            if command::prefetches(app, &args) {
                // Pipelines tend to repeat a command: frame the next two requests now and
                // start loading what they will touch while this one runs.
                framer.walk_ahead(&rbuf, session.authenticated);
                let [next, after] = framer.peek(&rbuf);
                if let Some((name, key)) = next {
                    command::prefetch(app, name, key, true);
                }
                if let Some((name, key)) = after {
                    command::prefetch(app, name, key, false);
                }
            }
            let io = command::tiered::Io {
                stream: &mut *stream,
                rbuf: &mut rbuf,
                mailbox: &mut *mailbox,
            };
            command::dispatch(app, session, out, &args, Some(io)).await;
            if let Some(block) = session.block.take() {
                // Replies so far go out before this client starts waiting.
                if let Err(c) = flush(app, stream, out, &lim, &info).await {
                    return c;
                }
                let waited = wait_blocked(app, stream, session, out, &mut rbuf, &args, block).await;
                if let Err(c) = waited {
                    return c;
                }
            }
            if session.close {
                let _ = flush(app, stream, out, &lim, &info).await;
                return Close::Quit;
            }
            recycle(&mut args);
            if out.len() >= FLUSH_AT {
                if let Err(c) = flush(app, stream, out, &lim, &info).await {
                    return c;
                }
            }
        }
        if rbuf.len() > lim.query_limit {
            return Close::QueryBufferLimit;
        }
        if let Err(c) = flush(app, stream, out, &lim, &info).await {
            return c;
        }
        if rbuf.is_empty() && rbuf.capacity() > SHRINK_ABOVE {
            rbuf = BytesMut::with_capacity(16 * 1024);
        }
    }
}
