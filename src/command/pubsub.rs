//! Pub/sub commands: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH and PUBSUB
//! CHANNELS/NUMSUB/NUMPAT, with Redis's confirmations (`subscribe`, channel, count) as arrays
//! in RESP2 and pushes in RESP3. Delivery between connections is `server::pubsub`; the RESP2
//! subscribed-mode restriction is enforced by the guard chain.

use super::table::{cmd, Command, LOADING, STALE};
use super::{CmdResult, Ctx};
use crate::app::App;
use crate::server::reply::Reply;
use crate::server::session::Session;
use bytes::Bytes;

const S_PUBSUB: &[&str] = &["pubsub", "slow"];

pub static PUBSUB: &[Command] = &[
    cmd(
        "channels",
        -2,
        super::table::PUBSUB | LOADING | STALE,
        (0, 0, 0),
        S_PUBSUB,
        "pubsub",
        "Returns the active channels.",
        pubsub_channels,
    ),
    cmd(
        "numsub",
        -2,
        super::table::PUBSUB | LOADING | STALE,
        (0, 0, 0),
        S_PUBSUB,
        "pubsub",
        "Returns a count of subscribers to channels.",
        pubsub_numsub,
    ),
    cmd(
        "numpat",
        2,
        super::table::PUBSUB | LOADING | STALE,
        (0, 0, 0),
        S_PUBSUB,
        "pubsub",
        "Returns a count of unique pattern subscriptions.",
        pubsub_numpat,
    ),
    cmd(
        "help",
        2,
        LOADING | STALE,
        (0, 0, 0),
        &["slow"],
        "pubsub",
        "Returns helpful text about the different subcommands.",
        pubsub_help,
    ),
];

fn confirm(out: &mut Reply, kind: &[u8], name: Option<&[u8]>, count: usize) {
    out.push(3);
    out.bulk(kind);
    match name {
        Some(n) => out.bulk(n),
        None => out.null(),
    }
    out.int(count as i64);
}

#[derive(Clone, Copy)]
enum Kind {
    Channel,
    Pattern,
}

fn subscribe_generic(ctx: &mut Ctx<'_>, args: &[Bytes], kind: Kind) -> CmdResult {
    let Some(sub) = ctx.session.outbox() else {
        return Err(super::error::SCRIPT_DENIED);
    };
    let resp3 = ctx.session.resp3;
    for name in &args[1..] {
        let list = match kind {
            Kind::Channel => &mut ctx.session.channels,
            Kind::Pattern => &mut ctx.session.patterns,
        };
        if !list.contains(name) {
            // A copy: a slice would keep the whole read buffer it came in alive for as
            // long as the subscription lasts.
            let name = Bytes::copy_from_slice(name);
            list.push(name.clone());
            match kind {
                Kind::Channel => ctx.app.pubsub.subscribe(&name, &sub, resp3),
                Kind::Pattern => ctx.app.pubsub.psubscribe(&name, &sub, resp3),
            }
        }
        let what: &[u8] = match kind {
            Kind::Channel => b"subscribe",
            Kind::Pattern => b"psubscribe",
        };
        confirm(ctx.out, what, Some(name), ctx.session.subscriptions());
    }
    Ok(())
}

fn unsubscribe_generic(ctx: &mut Ctx<'_>, args: &[Bytes], kind: Kind) -> CmdResult {
    let what: &[u8] = match kind {
        Kind::Channel => b"unsubscribe",
        Kind::Pattern => b"punsubscribe",
    };
    let current = match kind {
        Kind::Channel => &ctx.session.channels,
        Kind::Pattern => &ctx.session.patterns,
    };
    let names: Vec<Bytes> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        current.clone()
    };
    if names.is_empty() {
        confirm(ctx.out, what, None, ctx.session.subscriptions());
        return Ok(());
    }
    let id = ctx.session.id();
    for name in names {
        let list = match kind {
            Kind::Channel => &mut ctx.session.channels,
            Kind::Pattern => &mut ctx.session.patterns,
        };
        if let Some(p) = list.iter().position(|c| *c == name) {
            list.remove(p);
            match kind {
                Kind::Channel => ctx.app.pubsub.unsubscribe(&name, id),
                Kind::Pattern => ctx.app.pubsub.punsubscribe(&name, id),
            }
        }
        confirm(ctx.out, what, Some(&name), ctx.session.subscriptions());
    }
    Ok(())
}

/// Drops every subscription of a session (disconnect, RESET).
pub fn unsubscribe_all(app: &App, session: &mut Session) {
    let id = session.id();
    for c in session.channels.drain(..) {
        app.pubsub.unsubscribe(&c, id);
    }
    for p in session.patterns.drain(..) {
        app.pubsub.punsubscribe(&p, id);
    }
}

pub fn subscribe(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    subscribe_generic(ctx, args, Kind::Channel)
}

pub fn psubscribe(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    subscribe_generic(ctx, args, Kind::Pattern)
}

pub fn unsubscribe(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    unsubscribe_generic(ctx, args, Kind::Channel)
}

pub fn punsubscribe(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    unsubscribe_generic(ctx, args, Kind::Pattern)
}

pub fn publish(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let n = ctx.app.pubsub.publish(&args[1], &args[2]);
    ctx.out.int(n as i64);
    Ok(())
}

fn pubsub_channels(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    if args.len() > 3 {
        return Err(super::error::arity("pubsub|channels"));
    }
    let chans = ctx.app.pubsub.channels(args.get(2).map(|p| &p[..]));
    ctx.out.array(chans.len());
    for c in chans {
        ctx.out.bulk(&c);
    }
    Ok(())
}

fn pubsub_numsub(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    ctx.out.array((args.len() - 2) * 2);
    for c in &args[2..] {
        ctx.out.bulk(c);
        ctx.out.int(ctx.app.pubsub.numsub(c) as i64);
    }
    Ok(())
}

fn pubsub_numpat(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    ctx.out.int(ctx.app.pubsub.numpat() as i64);
    Ok(())
}

fn pubsub_help(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    super::connection::help(
        ctx,
        "PUBSUB",
        &[
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
        ],
    )
}
