//! The guard chain: the one place that decides whether an admitted, well-formed command may
//! run (Valkey's processCommand): authentication, the connection's ACL user (commands and
//! keys), pub/sub context, commands refused inside MULTI and the memory bound, before any
//! handler, so handlers never repeat checks. Scripts' `redis.call` applies the same ACL check
//! (`acl::User::check`).

pub mod acl;
pub mod breaker;
pub mod limiter;
pub mod rate;

use crate::app::App;
use crate::command::error::{CmdError, NOAUTH, OOM};
use crate::command::table::{Command, DENYOOM, NO_AUTH, NO_MULTI};
use crate::server::session::Session;
use bytes::Bytes;

/// What a RESP2 connection may send while it has subscriptions.
const SUBSCRIBED_MODE: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "ssubscribe",
    "sunsubscribe",
    "ping",
    "quit",
    "reset",
];

pub fn admit(
    app: &App,
    session: &Session,
    idx: usize,
    c: &Command,
    args: &[Bytes],
) -> Result<(), CmdError> {
    if !session.authenticated && !c.flag(NO_AUTH) {
        return Err(NOAUTH);
    }
    if let Some(user) = &session.acl {
        user.check(idx, c, args)?;
    }
    if !session.resp3 && session.subscriptions() > 0 && !SUBSCRIBED_MODE.contains(&c.name) {
        return Err(CmdError::msg(format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            c.name
        )));
    }
    if c.flag(NO_MULTI) && session.multi.is_some() {
        return Err(CmdError::new(
            "ERR Command not allowed inside a transaction",
        ));
    }
    if c.flag(DENYOOM) && app.store.maxmemory() > 0 {
        // Evicting changes the keyspace: it waits for (and never interleaves with) any
        // transaction or script holding the exclusive gate.
        let _gate = app.store.shared();
        if app.store.ensure_memory(crate::command::unix_ms()).is_err() {
            return Err(OOM);
        }
    }
    Ok(())
}
