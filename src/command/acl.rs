//! ACL WHOAMI, LIST, USERS and CAT: what the configured users (`[[users]]`, compiled in
//! `guard::acl`) look like from a client. The users are static configuration: there is no
//! SETUSER, DELUSER, LOAD, SAVE or LOG.

use super::table::{cmd, Command, ADMIN, LOADING, NOSCRIPT, STALE};
use super::{CmdError, CmdResult, Ctx};
use bytes::Bytes;

const S_ADMIN: &[&str] = &["admin", "slow", "dangerous"];
const S_SLOW: &[&str] = &["slow"];

pub static ACL: &[Command] = &[
    cmd(
        "whoami",
        2,
        NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_SLOW,
        "server",
        "Returns the authenticated username of the current connection.",
        whoami,
    ),
    cmd(
        "list",
        2,
        ADMIN | NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_ADMIN,
        "server",
        "Dumps the effective rules in ACL file format.",
        list,
    ),
    cmd(
        "users",
        2,
        ADMIN | NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_ADMIN,
        "server",
        "Lists all ACL users.",
        users,
    ),
    cmd(
        "cat",
        -2,
        NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_SLOW,
        "server",
        "Lists the ACL categories, or the commands inside a category.",
        cat,
    ),
];

fn whoami(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    ctx.out.bulk(ctx.session.user.as_bytes());
    Ok(())
}

fn list(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    let requirepass = ctx.app.config.read().server.requirepass.clone();
    let lines: Vec<String> = ctx
        .app
        .acl
        .users()
        .map(|u| u.describe(&requirepass))
        .collect();
    ctx.out.array(lines.len());
    for l in lines {
        ctx.out.bulk(l.as_bytes());
    }
    Ok(())
}

fn users(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    let names: Vec<String> = ctx.app.acl.users().map(|u| u.name.clone()).collect();
    ctx.out.array(names.len());
    for n in names {
        ctx.out.bulk(n.as_bytes());
    }
    Ok(())
}

fn cat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    use super::table::REGISTRY;
    use crate::guard::acl::{all_categories, categories};
    match args.len() {
        2 => {
            let cats = all_categories();
            ctx.out.array(cats.len());
            for c in cats {
                ctx.out.bulk(c.as_bytes());
            }
        }
        3 => {
            let want = String::from_utf8_lossy(&args[2]).to_ascii_lowercase();
            if !all_categories().contains(&want.as_str()) {
                return Err(CmdError::msg(format!(
                    "ERR Unknown category '{}'",
                    String::from_utf8_lossy(&args[2])
                )));
            }
            let names: Vec<&String> = (0..REGISTRY.all.len())
                .filter(|&i| categories(REGISTRY.all[i]).contains(&want.as_str()))
                .map(|i| &REGISTRY.full_names[i])
                .collect();
            ctx.out.array(names.len());
            for n in names {
                ctx.out.bulk(n.as_bytes());
            }
        }
        _ => return Err(super::error::arity("acl|cat")),
    }
    Ok(())
}
