//! RATE and CL.THROTTLE: rate limiting as commands.
//!
//! `RATE <key> [<limit> <window-seconds>] [COST <n>]` → `[allowed 1|0, limit, remaining,
//! retry_after_ms, reset_after_ms]`, an exact sliding window (`rate.default` when no limit and
//! window are given). `CL.THROTTLE <key> <max_burst> <count_per_period> <period> [<quantity>]`
//! → redis-cell's `[limited 0|1, max_burst + 1, remaining, retry_after_s | -1, reset_after_s]`
//! (0 means allowed there). Both are five integers in RESP2 and RESP3 alike.
//!
//! This file only parses and replies; the algorithms are `guard::rate`, and where the state
//! lives (L1, or L2 shared by every instance, with the local fallback) is `guard::limiter`.
//! The table's handlers run on this instance's state (standalone mode, and transactions that
//! run locally); in tiered mode `tiered::route` sends the commands to [`run_l2`].

use super::args::parse_i64;
use super::error::{arity, CmdError, NOT_INTEGER, SYNTAX};
use super::table::REGISTRY;
use super::{CmdResult, Ctx};
use crate::app::App;
use crate::config::MAX_RATE_WINDOW_S;
use crate::guard::rate::{Cell, Window};
use crate::server::reply::Reply;
use bytes::Bytes;

/// A parsed RATE call.
struct RateArgs {
    window: Window,
    cost: u64,
}

fn positive(arg: &[u8], what: &str) -> Result<i64, CmdError> {
    let n = parse_i64(arg).ok_or(NOT_INTEGER)?;
    if n <= 0 {
        return Err(CmdError::msg(format!(
            "ERR {what} must be a positive integer"
        )));
    }
    Ok(n)
}

#[inline]
fn parse_rate(app: &App, args: &[Bytes]) -> Result<RateArgs, CmdError> {
    let mut window = app.rate.default_window();
    let mut cost = 1;
    let mut i = 2;
    if args.len() >= 4 && !args[2].eq_ignore_ascii_case(b"cost") {
        let limit = positive(&args[2], "limit")?;
        let secs = positive(&args[3], "window")?;
        if secs as u64 > MAX_RATE_WINDOW_S {
            return Err(CmdError::msg(format!(
                "ERR window must be at most {MAX_RATE_WINDOW_S} seconds"
            )));
        }
        window = Window {
            limit: limit as u64,
            window_ms: secs as u64 * 1000,
        };
        i = 4;
    }
    while i < args.len() {
        if args[i].eq_ignore_ascii_case(b"cost") && i + 1 < args.len() {
            cost = positive(&args[i + 1], "COST")? as u64;
            i += 2;
        } else {
            return Err(SYNTAX);
        }
    }
    Ok(RateArgs { window, cost })
}

fn parse_throttle(args: &[Bytes]) -> Result<Cell, CmdError> {
    if args.len() > 6 {
        return Err(arity("cl.throttle"));
    }
    let int = |a: &Bytes| parse_i64(a).ok_or(NOT_INTEGER);
    let quantity = match args.get(5) {
        Some(q) => int(q)?,
        None => 1,
    };
    Cell::new(int(&args[2])?, int(&args[3])?, int(&args[4])?, quantity).map_err(CmdError::new)
}

/// RATE on this instance's state.
pub fn rate(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let a = parse_rate(ctx.app, args)?;
    let v = ctx.app.rate.rate_local(&args[1], a.window, a.cost);
    ctx.out.ints(&v.as_array());
    Ok(())
}

/// CL.THROTTLE on this instance's state.
pub fn throttle(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let c = parse_throttle(args)?;
    let t = ctx.app.rate.throttle_local(&args[1], &c);
    ctx.out.ints(&t.as_array());
    Ok(())
}

/// Tiered mode: RATE and CL.THROTTLE counted in L2 (or locally while L2 is unavailable).
pub async fn run_l2(app: &App, out: &mut Reply, idx: usize, args: &[Bytes]) {
    let r = match REGISTRY.all[idx].name {
        "rate" => match parse_rate(app, args) {
            Ok(a) => app
                .rate
                .rate(&args[1], a.window, a.cost)
                .await
                .map(|v| v.as_array())
                .map_err(CmdError::msg),
            Err(e) => Err(e),
        },
        _ => match parse_throttle(args) {
            Ok(c) => app
                .rate
                .throttle(&args[1], &c)
                .await
                .map(|t| t.as_array())
                .map_err(CmdError::msg),
            Err(e) => Err(e),
        },
    };
    match r {
        Ok(fields) => out.ints(&fields),
        Err(e) => {
            app.metrics.commands[idx].failed.inc();
            app.metrics.error_replies.inc();
            out.error(e.as_str());
        }
    }
}
