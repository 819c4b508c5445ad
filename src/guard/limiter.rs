//! The rate limiter behind RATE, CL.THROTTLE and the built-in QUERY limits: where the state
//! lives, and what happens when that place is unavailable.
//!
//! Standalone, the state is this process's [`LocalLimiter`]. With `[l2]` configured it lives in
//! Valkey, so every Strata instance counts against the same limits: each call is one atomic Lua
//! script (a sorted-set log per sliding window, a TAT string per GCRA key) that reads the time
//! with `TIME` on the Valkey server, so instances whose clocks disagree still agree on the
//! window. Redis 7 and Valkey replicate scripts by effects, which is what makes `TIME` before a
//! write allowed. Keys: `strata:rate:{<key>}` (RATE), `strata:cell:{<key>}` (CL.THROTTLE),
//! `strata:qrate:{query}:user:<id>` and `strata:qrate:{query}:global` (QUERY limits; one hash
//! tag, so both are checked by one script on one Cluster node).
//!
//! When L2 is unavailable (down, breaker open, timing out) a call never waits for it: the local
//! limiter answers instead — each instance then enforces the limits on its own — and INFO's
//! `# Ratelimit` section says `rate_limiter_mode:local_fallback` until a call reaches L2 again.
//! The local windows and the L2 windows are not merged when L2 returns.
//!
//! QUERY limits: a call is admitted only if both the per-user and the global window admit it,
//! and then it counts in both; a refused call counts in neither (one atomic check of the two
//! windows, locally and in L2). Admin users and USER ids matching `rate.bypass` are neither
//! limited nor counted.

use super::rate::{Cell, LocalLimiter, Space, Throttle, Verdict, Window};
use crate::cache::glob::glob_match;
use crate::cache::l2::{Keys, L2Error, L2};
use crate::config::{RateConfig, RatePolicy};
use redis::Value;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

/// The sliding-window script. KEYS: one sorted set per window. ARGV: cost, then per key its
/// limit and window in milliseconds. Members are `<cumulative cost before the call,
/// zero-padded>:<cost>:<time>`, scored by the time in microseconds: members of one microsecond
/// sort in the order they were added, and the count in the window is the newest member's
/// cumulative cost after it minus the first live member's before it. A denied call finds the
/// entry whose expiry frees enough units by binary search over offsets from the first live one.
/// The time is in the member so that no score is ever read (Redis 7.0 prints scores with
/// `%.17g`: `WITHSCORES` costs more than the `ZRANGE` itself).
///
/// An admitted call is `TIME`, two `ZRANGE`s and a `ZADD`. Only the first call of each period
/// of one window (periods aligned on multiples of the window) also drops the entries that left
/// the window and sets the key to expire at the end of the next period: a key holds at most two
/// windows of entries and expires one to two windows after the last call it admitted. A log
/// written by an older Strata (members without a time) is dropped. The call is recorded in
/// every window only if every window admits it. Reply: the remaining units when the only window
/// admits the call (a table reply costs Redis 7.0 as much as a `redis.call`), else five integers
/// per key.
///
/// Numbers are formatted as little as possible (a `string.format` costs a third of a
/// `redis.call`): the score of a call at `TIME` is pasted from `TIME`'s two strings, the cost is
/// `ARGV[1]` as given, other times are whole microseconds formatted with `%d` (`%.0f` goes
/// through the C library's floating-point printer), and constant arguments are strings (a Lua
/// number passed to `redis.call` is formatted with `%.14g` on every call).
const WINDOW_LUA: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local cost = tonumber(ARGV[1])
local n, out, pend, all = #KEYS, {}, {}, true
local M = '^(%d+):(%d+):(%d+)$'
local function record(key, score, member, expire, cut)
  if cut then redis.call('ZREMRANGEBYSCORE', key, '-inf', cut) end
  redis.call('ZADD', key, score, member)
  if expire then redis.call('PEXPIREAT', key, expire) end
end
for i = 1, n do
  local key, limit, wms = KEYS[i], tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local win = wms * 1000
  local at, used, top, base, ls, first, live = now, 0, 0, 0, nil, nil, nil
  local last = redis.call('ZRANGE', key, '-1', '-1')[1]
  if last then
    local b, k, s = string.match(last, M)
    if not s then
      -- A log in an older layout.
      redis.call('DEL', key)
      last = nil
    else
      top, ls = b + k, tonumber(s)
      if ls > at then at = ls end
      if ls > at - win then
        -- Something is live: the count starts before the oldest live entry.
        live = string.format('(%d', at - win)
        first = redis.call('ZRANGE', key, live, '+inf', 'BYSCORE', 'LIMIT', '0', '1')[1]
        base = tonumber((string.match(first, M)))
        used = top - base
      end
    end
  end
  if cost <= limit and used + cost <= limit then
    local score, expire, cut = nil, false, false
    if at == now then
      score = t[1] .. string.sub('00000' .. t[2], -6)
    else
      score = string.format('%d', at)
    end
    -- The first call of its period trims the log and moves the expiry past the next period.
    local period = math.floor(at / win)
    if not last or math.floor(ls / win) < period then
      expire = string.format('%d', (period + 2) * wms + 1)
      if last then cut = string.format('%d', at - win) end
    end
    local member = string.format('%017d:', top) .. ARGV[1] .. ':' .. score
    -- Recorded only once every window has admitted the call.
    if i < n then
      pend[#pend + 1] = {key, score, member, expire, cut}
    elseif all then
      record(key, score, member, expire, cut)
      for _, p in ipairs(pend) do record(p[1], p[2], p[3], p[4], p[5]) end
      if n == 1 then return limit - used - cost end
    end
    out[5 * i - 4], out[5 * i - 3], out[5 * i - 2] = 1, limit, limit - used - cost
    out[5 * i - 1], out[5 * i] = 0, wms
  else
    all = false
    local retry, reset = -1, 0
    if cost <= limit then
      local need, e = used + cost - limit, first
      local b, k = string.match(first, M)
      if b + k - base < need then
        e = last
        local lo, hi = 1, redis.call('ZCOUNT', key, live, '+inf') - 2
        while lo <= hi do
          local mid = math.floor((lo + hi) / 2)
          local m = redis.call('ZRANGE', key, live, '+inf', 'BYSCORE', 'LIMIT', mid, 1)[1]
          b, k = string.match(m, M)
          if b + k - base >= need then e, hi = m, mid - 1 else lo = mid + 1 end
        end
      end
      local _, _, s = string.match(e, M)
      retry = math.ceil((s + win - at) / 1000)
    end
    if used > 0 then reset = math.ceil((ls + win - at) / 1000) end
    out[5 * i - 4], out[5 * i - 3], out[5 * i - 2] = 0, limit, math.max(limit - used, 0)
    out[5 * i - 1], out[5 * i] = retry, reset
  end
end
return out
"#;

/// The GCRA script (redis-cell's algorithm, in microseconds). KEYS[1]: the TAT. ARGV:
/// emission interval, tolerance and increment in nanoseconds (validated by `Cell::new`), and
/// the limit. Reply: `[limited, limit, remaining, retry_after_s, reset_after_s]`.
const CELL_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ei = tonumber(ARGV[1]) / 1000
local dvt = tonumber(ARGV[2]) / 1000
local inc = tonumber(ARGV[3]) / 1000
local limit = tonumber(ARGV[4])
local function trunc(x) if x < 0 then return math.ceil(x) end return math.floor(x) end
local function secs(us)
  local whole = trunc(us / 1000000)
  if trunc((us - whole * 1000000) / 1000) > 0 then whole = whole + 1 end
  return whole
end
local v = redis.call('GET', KEYS[1])
local tat = (v and tonumber(v)) or now
local new_tat = math.max(now, tat) + inc
local diff = now - (new_tat - dvt)
local limited, retry, ttl = 0, -1, 0
if diff < 0 then
  limited = 1
  if inc <= dvt then retry = -diff end
  ttl = tat - now
else
  ttl = new_tat - now
  local px = math.floor(ttl / 1000)
  if px > 0 then
    redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', string.format('%d', px))
  else
    redis.call('DEL', KEYS[1])
  end
end
local remaining = 0
local nxt = dvt - ttl
if nxt > -ei then remaining = trunc(trunc(nxt) / trunc(ei)) end
local r = -1
if retry >= 0 then r = secs(retry) end
return {limited, limit, remaining, r, secs(ttl)}
"#;

struct Script {
    body: &'static str,
    sha: String,
}

impl Script {
    fn new(body: &'static str) -> Script {
        Script {
            body,
            sha: sha1_smol::Sha1::from(body).digest().to_string(),
        }
    }
}

static WINDOW: LazyLock<Script> = LazyLock::new(|| Script::new(WINDOW_LUA));
static CELL: LazyLock<Script> = LazyLock::new(|| Script::new(CELL_LUA));

/// Counters for INFO's `# Ratelimit` section.
#[derive(Default)]
pub struct RateStats {
    pub rate_allowed: AtomicU64,
    pub rate_denied: AtomicU64,
    pub throttle_allowed: AtomicU64,
    pub throttle_limited: AtomicU64,
    pub query_allowed: AtomicU64,
    pub query_denied: AtomicU64,
    /// Calls that matched `rate.bypass` (or came from an admin, for QUERY).
    pub bypassed: AtomicU64,
    /// Calls answered by the local limiter because L2 was unavailable.
    pub l2_fallbacks: AtomicU64,
    /// Scripts that L2 answered with an error.
    pub l2_errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Why a call through L2 has no verdict.
enum Remote {
    /// L2 is unavailable: answer locally.
    Unavailable,
    /// L2 answered with an error (its text, for the client).
    Error(String),
}

pub struct RateLimiter {
    local: LocalLimiter,
    l2: Option<Arc<L2>>,
    default: Window,
    query_user: Option<Window>,
    query_global: Option<Window>,
    bypass: Vec<Vec<u8>>,
    /// The last call meant for L2 was answered locally.
    fallback: AtomicBool,
    pub stats: RateStats,
}

fn window_of(p: RatePolicy) -> Option<Window> {
    (!p.is_off()).then_some(Window {
        limit: p.limit,
        window_ms: p.window_s * 1000,
    })
}

/// A user id fit for an error line (no CR/LF, bounded).
fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl RateLimiter {
    pub fn new(cfg: &RateConfig, l2: Option<Arc<L2>>) -> RateLimiter {
        RateLimiter::with_local(cfg, l2, LocalLimiter::new(cfg.max_keys))
    }

    /// With a given local limiter (tests inject one with their own clock).
    pub fn with_local(cfg: &RateConfig, l2: Option<Arc<L2>>, local: LocalLimiter) -> RateLimiter {
        RateLimiter {
            local,
            l2,
            default: window_of(cfg.default).unwrap_or(Window {
                limit: 100,
                window_ms: 60_000,
            }),
            query_user: window_of(cfg.query_per_user),
            query_global: window_of(cfg.query_global),
            bypass: cfg.bypass.iter().map(|p| p.as_bytes().to_vec()).collect(),
            fallback: AtomicBool::new(false),
            stats: RateStats::default(),
        }
    }

    /// RATE's policy when the call names none (`rate.default`).
    pub fn default_window(&self) -> Window {
        self.default
    }

    /// Whether `key` (a RATE or CL.THROTTLE key, or a QUERY USER id) matches `rate.bypass`.
    pub fn bypassed(&self, key: &[u8]) -> bool {
        self.bypass.iter().any(|p| glob_match(p, key, false))
    }

    /// Whether calls are counted in L2 (false standalone, or while falling back).
    pub fn mode(&self) -> &'static str {
        match &self.l2 {
            None => "local",
            Some(l2) if l2.is_up() && !self.fallback.load(Ordering::Relaxed) => "l2",
            Some(_) => "local_fallback",
        }
    }

    fn count_rate(&self, v: &Verdict) {
        bump(if v.allowed {
            &self.stats.rate_allowed
        } else {
            &self.stats.rate_denied
        });
    }

    fn count_throttle(&self, t: &Throttle) {
        bump(if t.limited {
            &self.stats.throttle_limited
        } else {
            &self.stats.throttle_allowed
        });
    }

    /// RATE on this instance's state (standalone mode, or inside a transaction).
    pub fn rate_local(&self, key: &[u8], w: Window, cost: u64) -> Verdict {
        if self.bypassed(key) {
            bump(&self.stats.bypassed);
            return Verdict::bypass(w.limit);
        }
        let v = self.local.window(Space::Rate, key, w, cost);
        self.count_rate(&v);
        v
    }

    /// RATE where the state lives: L2 when configured (falling back to the local state when it
    /// is unavailable), else this instance. `Err` carries an error L2 answered with.
    pub async fn rate(&self, key: &[u8], w: Window, cost: u64) -> Result<Verdict, String> {
        let Some(l2) = &self.l2 else {
            return Ok(self.rate_local(key, w, cost));
        };
        if self.bypassed(key) {
            bump(&self.stats.bypassed);
            return Ok(Verdict::bypass(w.limit));
        }
        let k = [b"strata:rate:{".as_slice(), key, b"}"].concat();
        match self.windows_l2(l2, &[(&k, w)], cost).await {
            Ok(v) => {
                let v = v[0];
                self.count_rate(&v);
                Ok(v)
            }
            Err(Remote::Unavailable) => Ok(self.rate_local(key, w, cost)),
            Err(Remote::Error(e)) => Err(e),
        }
    }

    /// CL.THROTTLE on this instance's state.
    pub fn throttle_local(&self, key: &[u8], c: &Cell) -> Throttle {
        if self.bypassed(key) {
            bump(&self.stats.bypassed);
            return Throttle {
                limited: false,
                limit: c.limit,
                remaining: c.limit,
                retry_after_s: -1,
                reset_after_s: 0,
            };
        }
        let t = self.local.throttle(key, c);
        self.count_throttle(&t);
        t
    }

    /// CL.THROTTLE where the state lives (see [`RateLimiter::rate`]).
    pub async fn throttle(&self, key: &[u8], c: &Cell) -> Result<Throttle, String> {
        let Some(l2) = &self.l2 else {
            return Ok(self.throttle_local(key, c));
        };
        if self.bypassed(key) {
            return Ok(self.throttle_local(key, c));
        }
        let k = [b"strata:cell:{".as_slice(), key, b"}"].concat();
        let args = [c.emission_ns, c.tolerance_ns, c.increment_ns, c.limit];
        match self.eval(l2, &CELL, &[&k], &args).await {
            Ok(n) if n.len() == 5 => {
                let t = Throttle {
                    limited: n[0] != 0,
                    limit: n[1],
                    remaining: n[2],
                    retry_after_s: n[3],
                    reset_after_s: n[4],
                };
                self.count_throttle(&t);
                Ok(t)
            }
            Ok(_) => Err(self.l2_error("ERR unexpected reply from L2".into())),
            Err(Remote::Unavailable) => Ok(self.throttle_local(key, c)),
            Err(Remote::Error(e)) => Err(e),
        }
    }

    /// The built-in QUERY limits, for a QUERY about to reach PostgreSQL: `Ok` when it may run
    /// (and is now counted), else the full error line (`RATELIMITED ... retry after <ms> ms`).
    pub async fn check_query(&self, user: &str, admin: bool) -> Result<(), String> {
        if admin || self.bypassed(user.as_bytes()) {
            bump(&self.stats.bypassed);
            return Ok(());
        }
        // (per-user?, local key, L2 key, window)
        let mut checks: Vec<(bool, Vec<u8>, Vec<u8>, Window)> = Vec::with_capacity(2);
        if let Some(w) = self.query_user {
            checks.push((
                true,
                [b"u:".as_slice(), user.as_bytes()].concat(),
                [b"strata:qrate:{query}:user:".as_slice(), user.as_bytes()].concat(),
                w,
            ));
        }
        if let Some(w) = self.query_global {
            checks.push((
                false,
                b"g".to_vec(),
                b"strata:qrate:{query}:global".to_vec(),
                w,
            ));
        }
        if checks.is_empty() {
            return Ok(());
        }
        let remote = match &self.l2 {
            Some(l2) => {
                let keys: Vec<(&[u8], Window)> =
                    checks.iter().map(|(_, _, k, w)| (&k[..], *w)).collect();
                // A QUERY is not refused because the limiter's store failed: count locally.
                self.windows_l2(l2, &keys, 1).await.ok()
            }
            None => None,
        };
        let verdicts = match remote {
            Some(v) => v,
            None => {
                let local: Vec<(Space, &[u8], Window)> = checks
                    .iter()
                    .map(|(_, k, _, w)| (Space::Query, &k[..], *w))
                    .collect();
                self.local.windows(&local, 1)
            }
        };
        if verdicts.iter().all(|v| v.allowed) {
            bump(&self.stats.query_allowed);
            return Ok(());
        }
        bump(&self.stats.query_denied);
        let mut what = Vec::new();
        let mut retry = 0;
        for ((per_user, _, _, w), v) in checks.iter().zip(&verdicts) {
            if v.allowed {
                continue;
            }
            retry = retry.max(v.retry_after_ms);
            what.push(match per_user {
                true => format!(
                    "QUERY rate limit of user '{}' ({} per {} s)",
                    printable(user),
                    w.limit,
                    w.window_ms / 1000
                ),
                false => format!(
                    "global QUERY rate limit ({} per {} s)",
                    w.limit,
                    w.window_ms / 1000
                ),
            });
        }
        Err(format!(
            "RATELIMITED {} exceeded, retry after {retry} ms",
            what.join(" and ")
        ))
    }

    /// Sliding windows checked together in L2 (one script call).
    async fn windows_l2(
        &self,
        l2: &Arc<L2>,
        keys: &[(&[u8], Window)],
        cost: u64,
    ) -> Result<Vec<Verdict>, Remote> {
        let names: Vec<&[u8]> = keys.iter().map(|(k, _)| *k).collect();
        let mut args = vec![cost.min(i64::MAX as u64) as i64];
        for (_, w) in keys {
            args.push(w.limit.min(i64::MAX as u64) as i64);
            args.push(w.window_ms as i64);
        }
        let n = self.eval(l2, &WINDOW, &names, &args).await?;
        match n[..] {
            // One window admitted the call: the script answered only its remaining units.
            [remaining] if keys.len() == 1 => Ok(vec![Verdict {
                allowed: true,
                limit: args[1],
                remaining,
                retry_after_ms: 0,
                reset_after_ms: args[2],
            }]),
            _ if n.len() == 5 * keys.len() => Ok(n
                .chunks(5)
                .map(|c| Verdict {
                    allowed: c[0] != 0,
                    limit: c[1],
                    remaining: c[2],
                    retry_after_ms: c[3],
                    reset_after_ms: c[4],
                })
                .collect()),
            _ => Err(Remote::Error(
                self.l2_error("ERR unexpected reply from L2".into()),
            )),
        }
    }

    fn l2_error(&self, e: String) -> String {
        bump(&self.stats.l2_errors);
        e
    }

    /// Runs a script on L2 by its SHA (loading it with EVAL when L2 does not have it yet) and
    /// returns its integer array (an integer reply is an array of one).
    async fn eval(
        &self,
        l2: &Arc<L2>,
        script: &Script,
        keys: &[&[u8]],
        args: &[i64],
    ) -> Result<Vec<i64>, Remote> {
        let build = |verb: &str, first: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(first).arg(keys.len());
            for k in keys {
                cmd.arg(*k);
            }
            for a in args {
                cmd.arg(*a);
            }
            let mut pipe = redis::pipe();
            pipe.ignore_errors().add_command(cmd);
            pipe
        };
        let mut reply = self.run(l2, &build("EVALSHA", &script.sha), keys).await?;
        if matches!(&reply, Value::ServerError(e) if e.code() == "NOSCRIPT") {
            reply = self.run(l2, &build("EVAL", script.body), keys).await?;
        }
        self.fallback.store(false, Ordering::Relaxed);
        match reply {
            Value::Array(items) => Ok(items
                .iter()
                .map(|v| match v {
                    Value::Int(n) => *n,
                    _ => 0,
                })
                .collect()),
            Value::Int(n) => Ok(vec![n]),
            Value::ServerError(e) => Err(Remote::Error(self.l2_error(match e.details() {
                Some(d) => format!("{} {d}", e.code()),
                None => e.code().to_string(),
            }))),
            _ => Err(Remote::Error(
                self.l2_error("ERR unexpected reply from L2".into()),
            )),
        }
    }

    async fn run(
        &self,
        l2: &Arc<L2>,
        pipe: &redis::Pipeline,
        keys: &[&[u8]],
    ) -> Result<Value, Remote> {
        match l2.run(0, false, false, pipe, Keys::These(keys)).await {
            Ok((v, _)) => Ok(v.into_iter().next().unwrap_or(Value::Nil)),
            Err(L2Error::Unavailable) => {
                self.fallback.store(true, Ordering::Relaxed);
                bump(&self.stats.l2_fallbacks);
                Err(Remote::Unavailable)
            }
        }
    }

    /// INFO's `# Ratelimit` section.
    pub fn info(&self, cfg: &RateConfig) -> String {
        let s = &self.stats;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::from("# Ratelimit\r\n");
        let _ = write!(
            out,
            "rate_limiter_mode:{}\r\nrate_default:{}\r\nrate_query_per_user:{}\r\nrate_query_global:{}\r\nrate_allowed:{}\r\nrate_denied:{}\r\nthrottle_allowed:{}\r\nthrottle_limited:{}\r\nquery_rate_allowed:{}\r\nquery_rate_denied:{}\r\nrate_bypassed:{}\r\nrate_l2_fallbacks:{}\r\nrate_l2_errors:{}\r\nrate_local_keys:{}\r\nrate_local_evicted_keys:{}\r\n\r\n",
            self.mode(),
            cfg.default,
            cfg.query_per_user,
            cfg.query_global,
            g(&s.rate_allowed),
            g(&s.rate_denied),
            g(&s.throttle_allowed),
            g(&s.throttle_limited),
            g(&s.query_allowed),
            g(&s.query_denied),
            g(&s.bypassed),
            g(&s.l2_fallbacks),
            g(&s.l2_errors),
            self.local.keys(),
            g(&self.local.evicted),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::rate::Clock;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn limiter(
        user: RatePolicy,
        global: RatePolicy,
        bypass: &[&str],
    ) -> (Arc<AtomicU64>, RateLimiter) {
        let t = Arc::new(AtomicU64::new(1_000_000));
        let c = t.clone();
        let clock: Clock = Arc::new(move || c.load(Ordering::SeqCst) * 1_000_000);
        let cfg = RateConfig {
            query_per_user: user,
            query_global: global,
            bypass: bypass.iter().map(|s| s.to_string()).collect(),
            ..RateConfig::default()
        };
        let l = RateLimiter::with_local(&cfg, None, LocalLimiter::with_clock(10_000, clock));
        (t, l)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// QUERY calls: (ms since the previous one, which user of five, whether an admin).
    fn calls() -> impl Strategy<Value = Vec<(u64, usize, bool)>> {
        prop::collection::vec((0u64..300, 0usize..5, prop::bool::weighted(0.1)), 1..300)
    }

    /// The model of the QUERY limits: a call is admitted iff both windows have room, and then
    /// counts in both; admins and bypassed users are admitted and counted nowhere.
    fn model_admits(
        history: &[(u64, usize)],
        now: u64,
        user: usize,
        pu: Window,
        gl: Window,
    ) -> bool {
        let inside = |t: &u64, w: Window| now - t < w.window_ms;
        let mine = history
            .iter()
            .filter(|(t, u)| *u == user && inside(t, pu))
            .count() as u64;
        let all = history.iter().filter(|(t, _)| inside(t, gl)).count() as u64;
        mine < pu.limit && all < gl.limit
    }

    /// The most calls any window of `w` holds.
    fn peak(times: &[u64], w: Window) -> u64 {
        times
            .iter()
            .map(|&t| {
                times
                    .iter()
                    .filter(|&&u| u <= t && t - u < w.window_ms)
                    .count() as u64
            })
            .max()
            .unwrap_or(0)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        // Feature: db-cache-optimization, Property 26: Per-User Rate Limiting
        // Feature: db-cache-optimization, Property 27: Global Rate Limiting
        // Feature: db-cache-optimization, Property 30: Admin Rate Limit Bypass
        /// check_query admits exactly what the model admits: no user ever gets more than its
        /// limit in any window, all users together never more than the global limit, refused
        /// calls count nowhere, and admins and bypassed users are never refused.
        #[test]
        fn query_rate_limits_match_the_model(
            per_user in 1u64..8,
            global in 1u64..20,
            window_ms in 100u64..3000,
            calls in calls(),
        ) {
            let pu = Window { limit: per_user, window_ms };
            let gl = Window { limit: global, window_ms };
            let (clock, l) = limiter(
                RatePolicy::new(per_user, 1),
                RatePolicy::new(global, 1),
                &["svc-*"],
            );
            // Policies in whole seconds come from the config; the test wants ms windows.
            let l = RateLimiter { query_user: Some(pu), query_global: Some(gl), ..l };
            let users = ["alice", "bob", "carol", "svc-batch", "dave"];
            let mut now = 1_000_000u64;
            let mut history: Vec<(u64, usize)> = Vec::new();
            let mut per: HashMap<usize, Vec<u64>> = HashMap::new();
            for (dt, u, admin) in calls {
                now += dt;
                clock.store(now, Ordering::SeqCst);
                let got = block_on(l.check_query(users[u], admin));
                if admin || users[u].starts_with("svc-") {
                    prop_assert!(got.is_ok(), "admin or bypassed user refused: {:?}", got);
                    continue;
                }
                let want = model_admits(&history, now, u, pu, gl);
                prop_assert_eq!(got.is_ok(), want, "user {} at {}: {:?}", users[u], now, got);
                match got {
                    Ok(()) => {
                        history.push((now, u));
                        per.entry(u).or_default().push(now);
                    }
                    Err(e) => {
                        prop_assert!(e.starts_with("RATELIMITED "), "{}", e);
                        prop_assert!(e.ends_with(" ms"), "{}", e);
                    }
                }
            }
            for times in per.values() {
                prop_assert!(peak(times, pu) <= per_user);
            }
            let all: Vec<u64> = history.iter().map(|(t, _)| *t).collect();
            prop_assert!(peak(&all, gl) <= global);
        }
    }

    #[test]
    fn query_rate_limit_errors_name_the_limit_and_the_wait() {
        let (clock, l) = limiter(RatePolicy::new(2, 60), RatePolicy::new(3, 60), &[]);
        assert!(block_on(l.check_query("u1", false)).is_ok());
        clock.fetch_add(1000, Ordering::SeqCst);
        assert!(block_on(l.check_query("u1", false)).is_ok());
        let e = block_on(l.check_query("u1", false)).unwrap_err();
        assert_eq!(
            e,
            "RATELIMITED QUERY rate limit of user 'u1' (2 per 60 s) exceeded, retry after 59000 ms"
        );
        assert!(block_on(l.check_query("u2", false)).is_ok());
        let e = block_on(l.check_query("u\r\n3", false)).unwrap_err();
        assert_eq!(
            e,
            "RATELIMITED global QUERY rate limit (3 per 60 s) exceeded, retry after 59000 ms"
        );
        assert!(block_on(l.check_query("root", true)).is_ok());
        // "off" switches a limit off.
        let (_, l) = limiter(RatePolicy::OFF, RatePolicy::OFF, &[]);
        for _ in 0..1000 {
            assert!(block_on(l.check_query("u", false)).is_ok());
        }
    }

    #[test]
    fn rate_bypass_keys_are_always_allowed_with_the_full_limit() {
        let (_, l) = limiter(
            RatePolicy::new(1, 60),
            RatePolicy::new(1, 60),
            &["internal:*"],
        );
        let w = Window {
            limit: 2,
            window_ms: 1000,
        };
        for _ in 0..10 {
            assert_eq!(
                l.rate_local(b"internal:x", w, 1).as_array(),
                [1, 2, 2, 0, 0]
            );
        }
        assert!(l.rate_local(b"x", w, 1).allowed);
        assert!(l.rate_local(b"x", w, 1).allowed);
        assert!(!l.rate_local(b"x", w, 1).allowed);
        let c = Cell::new(0, 1, 60, 1).unwrap();
        for _ in 0..3 {
            assert_eq!(
                l.throttle_local(b"internal:y", &c).as_array(),
                [0, 1, 1, -1, 0]
            );
        }
        let info = l.info(&RateConfig::default());
        assert!(info.contains("rate_limiter_mode:local\r\n"), "{info}");
        assert!(info.contains("rate_bypassed:13\r\n"), "{info}");
        assert!(info.contains("rate_denied:1\r\n"), "{info}");
    }
}
