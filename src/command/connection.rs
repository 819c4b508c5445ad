//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET, CLIENT and COMMAND.
//!
//! COMMAND reads the command table (it never lists commands of its own); CLIENT reads and
//! acts on the shared client registry.

use super::args::{int, is};
use super::error::{self, CmdError, CmdResult, DB_INDEX, SYNTAX};
use super::table::{cmd, Command, ADMIN, LOADING, NOSCRIPT, REGISTRY, STALE};
use super::Ctx;
use crate::server::session::ClientInfo;
use bytes::Bytes;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const S_CONN: &[&str] = &["connection"];
const S_SLOW_CONN: &[&str] = &["slow", "connection"];

pub static CLIENT: &[Command] = &[
    cmd(
        "id",
        2,
        NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_SLOW_CONN,
        "connection",
        "Returns the unique client ID of the connection.",
        client_id,
    ),
    cmd(
        "setname",
        3,
        NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_SLOW_CONN,
        "connection",
        "Sets the connection name.",
        client_setname,
    ),
    cmd(
        "getname",
        2,
        NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_SLOW_CONN,
        "connection",
        "Returns the name of the connection.",
        client_getname,
    ),
    cmd(
        "setinfo",
        4,
        NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_SLOW_CONN,
        "connection",
        "Sets information specific to the client or connection.",
        client_setinfo,
    ),
    cmd(
        "list",
        -2,
        ADMIN | NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_SLOW_CONN,
        "connection",
        "Lists open connections.",
        client_list,
    )
    .with_tips(&["nondeterministic_output"]),
    cmd(
        "info",
        2,
        NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_SLOW_CONN,
        "connection",
        "Returns information about the connection.",
        client_info,
    )
    .with_tips(&["nondeterministic_output"]),
    cmd(
        "kill",
        -3,
        ADMIN | NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_SLOW_CONN,
        "connection",
        "Terminates open connections.",
        client_kill,
    ),
    cmd(
        "no-evict",
        3,
        ADMIN | NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_SLOW_CONN,
        "connection",
        "Sets the client eviction mode of the connection.",
        client_onoff,
    ),
    cmd(
        "no-touch",
        3,
        NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_SLOW_CONN,
        "connection",
        "Controls whether commands sent by the client affect the LRU/LFU of accessed keys.",
        client_onoff,
    ),
    cmd(
        "help",
        2,
        LOADING | STALE,
        (0, 0, 0),
        S_SLOW_CONN,
        "connection",
        "Returns helpful text about the different subcommands.",
        client_help,
    ),
];

pub static COMMAND: &[Command] = &[
    cmd(
        "count",
        2,
        LOADING | STALE,
        (0, 0, 0),
        S_CONN,
        "server",
        "Returns a count of commands.",
        command_count,
    ),
    cmd(
        "info",
        -2,
        LOADING | STALE,
        (0, 0, 0),
        S_CONN,
        "server",
        "Returns information about one, multiple or all commands.",
        command_info,
    )
    .with_tips(&["nondeterministic_output_order"]),
    cmd(
        "docs",
        -2,
        LOADING | STALE,
        (0, 0, 0),
        S_CONN,
        "server",
        "Returns documentary information about one, multiple or all commands.",
        command_docs,
    )
    .with_tips(&["nondeterministic_output_order"]),
    cmd(
        "list",
        -2,
        LOADING | STALE,
        (0, 0, 0),
        S_CONN,
        "server",
        "Returns a list of command names.",
        command_list,
    )
    .with_tips(&["nondeterministic_output_order"]),
    cmd(
        "getkeys",
        -4,
        LOADING | STALE,
        (0, 0, 0),
        S_CONN,
        "server",
        "Extracts the key names from an arbitrary command.",
        command_getkeys,
    ),
    cmd(
        "help",
        2,
        LOADING | STALE,
        (0, 0, 0),
        S_CONN,
        "server",
        "Returns helpful text about the different subcommands.",
        command_help,
    ),
];

/// A container command called without a subcommand (COMMAND alone is handled: it lists all).
pub fn container_without_subcommand(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    if is(&args[0], "command") {
        let all: Vec<usize> = REGISTRY.top_level().collect();
        ctx.out.array(all.len());
        for i in all {
            write_command_info(ctx, i);
        }
        return Ok(());
    }
    Err(error::arity(
        &String::from_utf8_lossy(&args[0]).to_lowercase(),
    ))
}

pub fn ping(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    if args.len() <= 2 && !ctx.session.resp3 && ctx.session.subscriptions() > 0 {
        // Subscribed RESP2 clients read pushes, so PING answers in that shape.
        ctx.out.array(2);
        ctx.out.bulk(b"pong");
        ctx.out.bulk(args.get(1).map_or(&b""[..], |a| &a[..]));
        return Ok(());
    }
    match args.len() {
        1 => ctx.out.simple("PONG"),
        2 => ctx.out.bulk(&args[1]),
        _ => return Err(error::arity("ping")),
    }
    Ok(())
}

pub fn echo(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    ctx.out.bulk(&args[1]);
    Ok(())
}

/// Checks a user/password pair against the ACL users (`guard::acl`: digests compared in
/// constant time) and makes the connection that user.
fn authenticate(ctx: &mut Ctx<'_>, user: &[u8], pass: &[u8]) -> Result<(), CmdError> {
    let required = ctx.app.config.read().server.requirepass.clone();
    let u = ctx.app.acl.authenticate(user, pass, &required)?;
    set_user(ctx.session, u);
    Ok(())
}

/// The connection runs as `user` from now on.
pub fn set_user(session: &mut crate::server::session::Session, user: Arc<crate::guard::acl::User>) {
    session.authenticated = true;
    session.user = user.name.clone();
    *session.info.user.lock() = Arc::from(user.name.as_str());
    session.acl = Some(user);
    // Statement shapes were classified for the previous user's rights (DDL is admin-only).
    session.query_shapes.clear();
}

pub fn auth(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let (user, pass) = match args.len() {
        2 => (&b"default"[..], &args[1][..]),
        3 => (&args[1][..], &args[2][..]),
        _ => return Err(SYNTAX),
    };
    if args.len() == 2
        && !ctx
            .app
            .acl
            .default_user()
            .needs_password(&ctx.app.config.read().server.requirepass)
    {
        return Err(CmdError::new("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"));
    }
    authenticate(ctx, user, pass)?;
    ctx.out.ok();
    Ok(())
}

fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

pub fn hello(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let mut proto = None;
    let mut i = 1;
    if args.len() > 1 {
        let v = super::args::parse_i64(&args[1]).ok_or(CmdError::new(
            "ERR Protocol version is not an integer or out of range",
        ))?;
        if v != 2 && v != 3 {
            return Err(CmdError::new("NOPROTO unsupported protocol version"));
        }
        proto = Some(v);
        i = 2;
    }
    let mut name = None;
    let mut authed = false;
    while i < args.len() {
        let more = args.len() - i - 1;
        if is(&args[i], "auth") && more >= 2 {
            authenticate(ctx, &args[i + 1], &args[i + 2])?;
            authed = true;
            i += 3;
        } else if is(&args[i], "setname") && more >= 1 {
            if !valid_client_name(&args[i + 1]) {
                return Err(CmdError::new(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                ));
            }
            name = Some(Bytes::copy_from_slice(&args[i + 1]));
            i += 2;
        } else {
            return Err(CmdError::msg(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&args[i])
            )));
        }
    }
    if authed {
        ctx.session.authenticated = true;
    }
    if !ctx.session.authenticated {
        return Err(CmdError::new("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
    }
    if let Some(n) = name {
        *ctx.session.info.name.lock() = n;
    }
    if let Some(p) = proto {
        ctx.session.resp3 = p == 3;
        ctx.out.resp3 = p == 3;
        ctx.session.info.resp.store(p as usize, Ordering::Relaxed);
    }
    let out = &mut *ctx.out;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(crate::app::REDIS_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(if ctx.session.resp3 { 3 } else { 2 });
    out.bulk(b"id");
    out.int(ctx.session.id() as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
    Ok(())
}

pub fn select(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let db = int(&args[1])?;
    if db < 0 || db as usize >= ctx.app.store.databases() {
        return Err(DB_INDEX);
    }
    if ctx.in_script {
        // Scripts run on their own session; the caller's database is untouched.
        ctx.session.db = db as usize;
    } else {
        ctx.session.select(db as usize);
    }
    ctx.out.ok();
    Ok(())
}

pub fn quit(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    ctx.session.close = true;
    ctx.out.ok();
    Ok(())
}

pub fn reset(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    super::transactions::unwatch_all(ctx.app, ctx.session);
    super::pubsub::unsubscribe_all(ctx.app, ctx.session);
    ctx.session.multi = None;
    ctx.session.select(0);
    ctx.session.resp3 = false;
    ctx.out.resp3 = false;
    ctx.session.info.resp.store(2, Ordering::Relaxed);
    *ctx.session.info.name.lock() = Bytes::new();
    let default = ctx.app.acl.default_user();
    let open = !default.needs_password(&ctx.app.config.read().server.requirepass);
    set_user(ctx.session, default);
    ctx.session.authenticated = open;
    ctx.out.simple("RESET");
    Ok(())
}

// CLIENT

fn client_id(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    ctx.out.int(ctx.session.id() as i64);
    Ok(())
}

fn client_setname(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    if !valid_client_name(&args[2]) {
        return Err(CmdError::new(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    *ctx.session.info.name.lock() = Bytes::copy_from_slice(&args[2]);
    ctx.out.ok();
    Ok(())
}

fn client_getname(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    let name = ctx.session.info.name.lock().clone();
    if name.is_empty() {
        ctx.out.null();
    } else {
        ctx.out.bulk(&name);
    }
    Ok(())
}

fn client_setinfo(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let val = Bytes::copy_from_slice(&args[3]);
    if !valid_client_name(&val) {
        return Err(CmdError::msg(format!(
            "ERR {} cannot contain spaces, newlines or special characters.",
            String::from_utf8_lossy(&args[2]).to_ascii_lowercase()
        )));
    }
    let mut lib = ctx.session.info.lib.lock();
    if is(&args[2], "lib-name") {
        lib.0 = val;
    } else if is(&args[2], "lib-ver") {
        lib.1 = val;
    } else {
        return Err(CmdError::msg(format!(
            "ERR Unrecognized option '{}'",
            String::from_utf8_lossy(&args[2])
        )));
    }
    drop(lib);
    ctx.out.ok();
    Ok(())
}

fn client_line(c: &ClientInfo, now: u64) -> String {
    let mut s = String::new();
    let addr = c.addr.map_or_else(String::new, |a| a.to_string());
    let laddr = c.laddr.map_or_else(String::new, |a| a.to_string());
    let lib = c.lib.lock().clone();
    let _ = write!(
        s,
        "id={} addr={} laddr={} fd=8 name={} age={} idle={} flags={} db={} sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=16384 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}",
        c.id,
        addr,
        laddr,
        String::from_utf8_lossy(&c.name.lock()),
        now.saturating_sub(c.created_ms) / 1000,
        now.saturating_sub(c.last_ms.load(Ordering::Relaxed)) / 1000,
        if c.multi.load(Ordering::Relaxed) { "x" } else { "N" },
        c.db.load(Ordering::Relaxed),
        if c.multi.load(Ordering::Relaxed) { 0 } else { -1 },
        match c.last_cmd.load(Ordering::Relaxed) {
            0 => "NULL",
            i => REGISTRY.full_names[i - 1].as_str(),
        },
        c.user.lock(),
        c.resp.load(Ordering::Relaxed),
        String::from_utf8_lossy(&lib.0),
        String::from_utf8_lossy(&lib.1),
    );
    s
}

fn client_list(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 2;
    while i < args.len() {
        if is(&args[i], "type") && i + 1 < args.len() {
            let t = &args[i + 1];
            if !(is(t, "normal") || is(t, "master") || is(t, "replica") || is(t, "pubsub")) {
                return Err(CmdError::msg(format!(
                    "ERR Unknown client type '{}'",
                    String::from_utf8_lossy(t)
                )));
            }
            if !is(t, "normal") {
                ids = Some(Vec::new());
            }
            i += 2;
        } else if is(&args[i], "id") && i + 1 < args.len() {
            let mut v = Vec::new();
            for a in &args[i + 1..] {
                let n = int(a)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(CmdError::new("ERR Invalid client ID"))?;
                v.push(n as u64);
            }
            ids = Some(v);
            i = args.len();
        } else {
            return Err(SYNTAX);
        }
    }
    let now = ctx.now;
    let mut text = String::new();
    for c in ctx.app.clients.all() {
        if ids.as_ref().is_some_and(|v| !v.contains(&c.id)) {
            continue;
        }
        text.push_str(&client_line(&c, now));
        text.push('\n');
    }
    ctx.out.verbatim(&text);
    Ok(())
}

fn client_info(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    let line = client_line(&ctx.session.info, ctx.now) + "\n";
    ctx.out.verbatim(&line);
    Ok(())
}

fn client_kill(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let clients = ctx.app.clients.all();
    let me = ctx.session.id();
    if args.len() == 3 {
        // Old form: CLIENT KILL addr:port
        let target = String::from_utf8_lossy(&args[2]).into_owned();
        let found = clients
            .iter()
            .find(|c| c.addr.is_some_and(|a| a.to_string() == target));
        return match found {
            Some(c) => {
                if c.id == me {
                    ctx.session.close = true;
                } else {
                    c.kill();
                }
                ctx.out.ok();
                Ok(())
            }
            None => Err(CmdError::new("ERR No such client")),
        };
    }
    let mut id = None;
    let mut addr = None;
    let mut laddr = None;
    let mut skipme = true;
    let mut i = 2;
    while i + 1 < args.len() {
        let v = &args[i + 1];
        if is(&args[i], "id") {
            id = Some(
                int(v)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(CmdError::new("ERR client-id should be greater than 0"))?
                    as u64,
            );
        } else if is(&args[i], "addr") {
            addr = Some(String::from_utf8_lossy(v).into_owned());
        } else if is(&args[i], "laddr") {
            laddr = Some(String::from_utf8_lossy(v).into_owned());
        } else if is(&args[i], "skipme") {
            skipme = if is(v, "yes") {
                true
            } else if is(v, "no") {
                false
            } else {
                return Err(SYNTAX);
            };
        } else if is(&args[i], "type") || is(&args[i], "user") || is(&args[i], "maxage") {
            // Accepted filters that every Strata client matches (normal clients, default user).
        } else {
            return Err(SYNTAX);
        }
        i += 2;
    }
    if i != args.len() {
        return Err(SYNTAX);
    }
    let mut killed = 0;
    for c in &clients {
        if id.is_some_and(|x| x != c.id)
            || addr
                .as_ref()
                .is_some_and(|a| c.addr.is_none_or(|x| &x.to_string() != a))
            || laddr
                .as_ref()
                .is_some_and(|a| c.laddr.is_none_or(|x| &x.to_string() != a))
        {
            continue;
        }
        if c.id == me {
            if skipme {
                continue;
            }
            ctx.session.close = true;
        } else {
            c.kill();
        }
        killed += 1;
    }
    ctx.out.int(killed);
    Ok(())
}

fn client_onoff(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    if is(&args[2], "on") || is(&args[2], "off") {
        ctx.out.ok();
        Ok(())
    } else {
        Err(SYNTAX)
    }
}

pub(crate) fn help(ctx: &mut Ctx<'_>, name: &str, lines: &[&str]) -> CmdResult {
    ctx.out.array(lines.len() + 1);
    ctx.out.simple(&format!(
        "{name} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ));
    for l in lines {
        ctx.out.simple(l);
    }
    Ok(())
}

fn client_help(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    help(
        ctx,
        "CLIENT",
        &[
            "ID",
            "    Return the ID of the current connection.",
            "GETNAME",
            "    Return the name of the current connection.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
            "SETINFO <option> <value>",
            "    Set client meta attr (LIB-NAME, LIB-VER).",
            "LIST [TYPE <type>] [ID <id> [<id> ...]]",
            "    Return information about client connections.",
            "INFO",
            "    Return information about the current client connection.",
            "KILL <ip:port> | KILL <option> <value> [<option> <value> [...]]",
            "    Kill connections (ID, ADDR, LADDR, SKIPME).",
        ],
    )
}

// COMMAND

fn write_command_info(ctx: &mut Ctx<'_>, i: usize) {
    let reg = &*REGISTRY;
    let c = reg.all[i];
    let out = &mut *ctx.out;
    out.array(10);
    out.bulk(reg.full_names[i].as_bytes());
    out.int(c.arity as i64);
    let flags = c.flag_names();
    out.set(flags.len());
    for f in flags {
        out.simple(f);
    }
    out.int(c.first_key as i64);
    out.int(c.last_key as i64);
    out.int(c.step as i64);
    let cats = crate::guard::acl::categories(c);
    out.set(cats.len());
    for cat in cats {
        out.simple(&format!("@{cat}"));
    }
    out.set(c.tips.len());
    for tip in c.tips {
        out.bulk(tip.as_bytes());
    }
    // Key specifications are not described (first/last/step are); Redis 7.0 sends them, and
    // the subcommands, as sets.
    out.set(0);
    let subs: Vec<usize> = reg.subcommands_of(i).collect();
    out.set(subs.len());
    for s in subs {
        write_command_info(ctx, s);
    }
}

fn command_count(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    ctx.out.int(REGISTRY.top_level().count() as i64);
    Ok(())
}

fn command_info(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    if args.len() == 2 {
        let all: Vec<usize> = REGISTRY.top_level().collect();
        ctx.out.array(all.len());
        for i in all {
            write_command_info(ctx, i);
        }
        return Ok(());
    }
    ctx.out.array(args.len() - 2);
    for name in &args[2..] {
        match lookup_full(name) {
            Some(i) => write_command_info(ctx, i),
            None => ctx.out.null(),
        }
    }
    Ok(())
}

/// Finds `get` or `client|list`.
fn lookup_full(name: &[u8]) -> Option<usize> {
    let reg = &*REGISTRY;
    match name.iter().position(|&c| c == b'|') {
        Some(p) => reg.lookup_sub(reg.lookup(&name[..p])?, &name[p + 1..]),
        None => reg.lookup(name),
    }
}

fn write_command_doc(ctx: &mut Ctx<'_>, i: usize) {
    let reg = &*REGISTRY;
    let c = reg.all[i];
    let subs: Vec<usize> = reg.subcommands_of(i).collect();
    ctx.out.bulk(reg.full_names[i].as_bytes());
    ctx.out.map(3 + (!subs.is_empty()) as usize);
    ctx.out.bulk(b"summary");
    ctx.out.bulk(c.summary.as_bytes());
    ctx.out.bulk(b"since");
    ctx.out.bulk(b"1.0.0");
    ctx.out.bulk(b"group");
    ctx.out.bulk(c.group.as_bytes());
    if !subs.is_empty() {
        ctx.out.bulk(b"subcommands");
        ctx.out.map(subs.len());
        for s in subs {
            write_command_doc(ctx, s);
        }
    }
}

fn command_docs(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let ids: Vec<usize> = if args.len() == 2 {
        REGISTRY.top_level().collect()
    } else {
        args[2..].iter().filter_map(|n| lookup_full(n)).collect()
    };
    ctx.out.map(ids.len());
    for i in ids {
        write_command_doc(ctx, i);
    }
    Ok(())
}

fn command_list(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let reg = &*REGISTRY;
    let mut names: Vec<&str> = Vec::new();
    match args.len() {
        2 => names.extend((0..reg.all.len()).map(|i| reg.full_names[i].as_str())),
        5 if is(&args[2], "filterby") => {
            let v = String::from_utf8_lossy(&args[4]).to_ascii_lowercase();
            for i in 0..reg.all.len() {
                let c = reg.all[i];
                let keep = if is(&args[3], "aclcat") {
                    c.acl.contains(&v.trim_start_matches('@'))
                } else if is(&args[3], "pattern") {
                    crate::cache::glob::glob_match(v.as_bytes(), reg.full_names[i].as_bytes(), true)
                } else if is(&args[3], "module") {
                    false
                } else {
                    return Err(SYNTAX);
                };
                if keep {
                    names.push(&reg.full_names[i]);
                }
            }
        }
        _ => return Err(SYNTAX),
    }
    ctx.out.array(names.len());
    for n in names {
        ctx.out.bulk(n.as_bytes());
    }
    Ok(())
}

/// COMMAND GETKEYS: the keys a full command would touch, found as dispatch finds them (from
/// the table), with Redis's checks in Redis's order.
fn command_getkeys(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let reg = &*REGISTRY;
    let target = &args[2..];
    let Some(i) = reg.lookup_command(target) else {
        return Err(CmdError::new("ERR Invalid command specified"));
    };
    let c = reg.all[i];
    if c.first_key <= 0 && c.movable.is_none() {
        return Err(CmdError::new("ERR The command has no key arguments"));
    }
    if !c.arity_ok(target.len()) {
        return Err(CmdError::new(
            "ERR Invalid number of arguments specified for command",
        ));
    }
    // A `numkeys` that is not a count of the arguments there is invalid, as in Redis (the
    // dispatch path reports it in each command's own words).
    let keys: Vec<usize> = c.key_indexes(target).collect();
    if !c.numkeys_ok(target) || (keys.is_empty() && !c.flag(super::table::NO_MANDATORY_KEYS)) {
        return Err(CmdError::new("ERR Invalid arguments specified for command"));
    }
    ctx.out.array(keys.len());
    for k in keys {
        ctx.out.bulk(&target[k]);
    }
    Ok(())
}

fn command_help(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    help(
        ctx,
        "COMMAND",
        &[
            "(no subcommand)",
            "    Return details about all commands.",
            "COUNT",
            "    Return the total number of commands.",
            "INFO [<command-name> ...]",
            "    Return details about multiple commands.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple commands.",
            "LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>)]",
            "    Return a list of all commands.",
            "GETKEYS <full-command>",
            "    Return the keys from a full Redis command.",
        ],
    )
}
