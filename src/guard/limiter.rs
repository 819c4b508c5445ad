//! The rate limiter behind RATE, CL.THROTTLE and the built-in QUERY limits: where the state
//! lives, and what happens when that place is unavailable.
//!
//! Standalone, the state is this process's [`LocalLimiter`]. With `[l2]` configured it lives in
//! Valkey, so every Strata instance counts against the same limits: each call is applied by an
//! atomic Lua script (a log string per sliding window, a TAT string per GCRA key) that reads
//! the time with `TIME` on the Valkey server, so instances whose clocks disagree still agree on
//! the window. Redis 7 and Valkey replicate scripts by effects, which is what makes `TIME`
//! before a write allowed. Keys: `strata:rate:{<key>}` (RATE), `strata:cell:{<key>}`
//! (CL.THROTTLE), `strata:qrate:{query}:user:<id>` and `strata:qrate:{query}:global` (QUERY
//! limits; one hash tag, so both are checked by one script on one Cluster node).
//!
//! Sliding-window calls (RATE, the QUERY limits) on a standalone upstream are batched: the calls
//! made while earlier ones are on their way to L2 go together as one script, which applies them
//! one after the other exactly as separate scripts would, and answers each on its own (an error
//! fails only its call). Nothing waits for a batch to fill: a call made alone goes alone. What a
//! batch saves is the fixed cost of a script (`EVALSHA`, `TIME`, the round trip), most of a
//! call's cost on Redis 7.0. On a Cluster each call is its own script, as calls on different
//! keys live in different slots. CL.THROTTLE is one script per call.
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
use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::Value;
use smallvec::SmallVec;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use tokio::sync::{mpsc, oneshot};

/// The sliding-window script: a batch of calls, applied in order, each exactly as if it were
/// alone (a later call sees what an earlier one recorded: one key twice counts twice). KEYS:
/// every call's logs, call after call. ARGV: the number `m` of policy arguments, the batch's
/// distinct policies (per policy its number of windows `n`, its cost, then per window its limit
/// and window in milliseconds), then per call where its policy starts in ARGV. (A batch of RATE
/// calls with one policy is two arguments a call: less for Strata to write, for Redis to read
/// and for the script to convert.) Reply, flat, call after call: `-1 - remaining` when the
/// call's only window admits it (the common case: one integer), `5n` and five integers per
/// window otherwise, or the error text (a string) when the call failed (say `WRONGTYPE`, the
/// key holding something else): the calls run under one `pcall` that the script resumes after a
/// failed call, so one call's error fails only that call. A table per call would cost Redis 7.0
/// more to convert than the flat array.
///
/// A log is a string of 16-byte records, oldest first: the time of an admitted call in
/// microseconds and the units counted up to and including it, two little-endian doubles
/// (`struct.pack('<dd')`; exact for integers below 2^53). The first record is an anchor at time
/// 0 holding the count before the oldest kept record, so the units in the window are the newest
/// record's count minus the count of the last record that left it. Every call of a batch shares
/// one `TIME`; records of one microsecond stay in the order they were added.
///
/// An admitted call is two commands: a `GETRANGE` of the log's last 64 records (which hold
/// every live record unless more than 63 are live; then `STRLEN` and one `GETRANGE` per step of
/// a binary search reach further back) and an `APPEND` of its record. Only the first admitted
/// call of each period of one window (periods aligned on multiples of the window) rewrites the
/// log instead, with `SET ... PXAT`: a new anchor, the live records and its own, expiring at the
/// end of the next period. A key therefore holds at most two windows of records and expires one
/// to two windows after the last call it admitted. A denied call finds the record whose expiry
/// frees enough units by binary search over the live ones. A log written by an older Strata (a
/// sorted set) is dropped; a string that is not a log fails with `WRONGTYPE`. A call is recorded
/// in every window only if every window admits it.
///
/// Why a string and not a sorted set: on Redis 7.0 a `ZADD` into a small sorted set walks and
/// validates its listpack and reads its member and score back, and the sorted set needed three
/// commands a call (its newest member, its oldest live member, the `ZADD`); the log's
/// `GETRANGE` and `APPEND` cost the upstream about 40 % less per call (`benches/rate.sh`).
pub const WINDOW_LUA: &str = r#"
local rcall, rpcall, sub, format = redis.call, redis.pcall, string.sub, string.format
local floor, ceil, max = math.floor, math.ceil, math.max
local pack, unpack = struct.pack, struct.unpack
local argv, keys = ARGV, KEYS
local t = rcall('TIME')
local now = t[1] * 1000000 + t[2]
-- A record's bytes and layout; the tail read at once (64 records).
local W, F, TAIL = 16, '<dd', '-1024'
local WRONG = {err = 'WRONGTYPE Operation against a key holding the wrong kind of value'}
-- The batch's policies by their place in ARGV, read once: {n, cost, windows...}; a window is
-- {limit, ms, µs, start of the period of TIME (µs), end of the next period (ms, for PXAT)}.
local policies = setmetatable({}, {__index = function(ps, at)
  local i = at + 0
  local n = argv[i] + 0
  local p = {n, argv[i + 1] + 0}
  for w = 1, n do
    local limit, wms = argv[i + 2 * w] + 0, argv[i + 2 * w + 1] + 0
    local win = wms * 1000
    local period = floor(now / win)
    p[2 + w] = {limit, wms, win, period * win, format('%d', (period + 2) * wms + 1)}
  end
  ps[at] = p
  return p
end})
-- Record i of the log at key (time, count), from the tail r when it holds it (r starts at
-- record off), else read on its own.
local function get(key, r, off, i)
  if i >= off then return unpack(F, r, (i - off) * W + 1) end
  return unpack(F, rcall('GETRANGE', key, i * W, i * W + W - 1))
end
-- A pending write: a whole log with its expiry (SET), or a record to append.
local function write(whole, key, val, expire)
  if whole then rcall('SET', key, val, 'PXAT', expire) else rcall('APPEND', key, val) end
end
local out, o = {}, 0
-- One call of policy p on keys[k + 1] on.
local function call(p, k)
  local n, cost = p[1], p[2]
  local pend, res, all = nil, nil, true
  for i = 1, n do
    local w, key = p[2 + i], keys[k + i]
    local limit, win = w[1], w[3]
    local r = rpcall('GETRANGE', key, TAIL, '-1')
    if type(r) == 'table' then
      -- Not a string: an older Strata's log (a sorted set) is dropped, anything else fails.
      if rcall('TYPE', key).ok ~= 'zset' then error(r) end
      rcall('DEL', key)
      r = ''
    end
    local len = #r
    if len % W ~= 0 then error(WRONG) end
    local m = len / W
    -- Records before the tail are needed only when the whole tail is live: then the log's
    -- length is read and `off` is the tail's first record; otherwise the tail is taken for the
    -- whole log (what precedes it has left the window).
    local at, used, top, base, ls, fl, off, last = now, 0, 0, 0, nil, nil, 0, m - 1
    if m > 0 then
      ls, top = unpack(F, r, len - W + 1)
      -- The newest record is later than TIME (the clock went back): count at its time.
      if ls > now then at = ls end
      local bound = at - win
      local lo, hi = 1, m
      if unpack(F, r, 1) > bound then
        local bytes = rcall('STRLEN', key)
        if bytes == len or bytes % W ~= 0 then error(WRONG) end
        off = bytes / W - m
        last, hi = off + m - 1, off
      end
      -- The first live record (last + 1 when none is).
      while lo < hi do
        local mid = floor((lo + hi) / 2)
        if get(key, r, off, mid) > bound then hi = mid else lo = mid + 1 end
      end
      fl = lo
      local _, b = get(key, r, off, fl - 1)
      base = b
      used = top - base
    end
    if cost <= limit and used + cost <= limit then
      local rec = pack(F, at, top + cost)
      local whole, val = false, rec
      if m == 0 then
        whole, val = true, pack(F, 0, 0) .. rec
      elseif at == now and ls < w[4] then
        -- The first call of its period drops what left the window and moves the expiry.
        local live
        if fl >= off then
          live = sub(r, (fl - off) * W + 1)
        else
          live = rcall('GETRANGE', key, fl * W, '-1')
        end
        whole, val = true, pack(F, 0, base) .. live .. rec
      end
      -- Recorded only once every window has admitted the call.
      if n == 1 then
        write(whole, key, val, w[5])
        o = o + 1
        out[o] = used + cost - limit - 1
        return
      elseif i < n then
        pend = pend or {}
        pend[#pend + 1] = {whole, key, val, w[5]}
      elseif all then
        write(whole, key, val, w[5])
        for _, q in ipairs(pend) do write(q[1], q[2], q[3], q[4]) end
      end
      res = res or {}
      res[5 * i - 4], res[5 * i - 3], res[5 * i - 2] = 1, limit, limit - used - cost
      res[5 * i - 1], res[5 * i] = 0, w[2]
    else
      all = false
      local retry, reset = -1, 0
      if cost <= limit then
        -- The first live record whose expiry frees enough units.
        local need, lo, hi = used + cost - limit, fl, last
        while lo < hi do
          local mid = floor((lo + hi) / 2)
          local _, c = get(key, r, off, mid)
          if c - base >= need then hi = mid else lo = mid + 1 end
        end
        retry = ceil((get(key, r, off, lo) + win - at) / 1000)
      end
      if used > 0 then reset = ceil((ls + win - at) / 1000) end
      res = res or {}
      res[5 * i - 4], res[5 * i - 3], res[5 * i - 2] = 0, limit, max(limit - used, 0)
      res[5 * i - 1], res[5 * i] = retry, reset
    end
  end
  out[o + 1] = 5 * n
  for j = 1, 5 * n do out[o + 1 + j] = res[j] end
  o = o + 1 + 5 * n
end
-- The calls from the one at (k, j) on; a call that fails leaves (k, j) on itself.
local k, j, na = 0, argv[1] + 2, #argv
local function calls()
  while j <= na do
    local p = policies[argv[j]]
    call(p, k)
    k, j = k + p[1], j + 1
  end
end
while j <= na do
  local ok, err = pcall(calls)
  if not ok then
    if type(err) == 'table' then err = err.err end
    o = o + 1
    out[o] = tostring(err)
    k, j = k + policies[argv[j]][1], j + 1
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

/// Most calls in one batch: one script must not hold Redis for long (a call costs Redis 7.0 some
/// 25 to 50 k instructions, so a full batch stays well under a millisecond).
const BATCH_MAX: usize = 64;

/// Batches in flight at once: while one runs on the upstream the next gathers the calls that
/// arrive meanwhile (group commit: no timer, no wait at one client).
const IN_FLIGHT: usize = 2;

/// The windows of one sliding-window call: an L2 key and its policy each (RATE has one, the
/// QUERY limits two).
type Windows = SmallVec<[(Vec<u8>, Window); 2]>;

/// One verdict per window.
type Verdicts = SmallVec<[Verdict; 2]>;

/// One sliding-window call for L2.
struct Call {
    windows: Windows,
    cost: u64,
}

/// What L2 made of one call.
enum Outcome {
    Verdicts(Verdicts),
    /// L2 answered this call (or its whole batch) with an error: its text, for the client.
    Error(String),
    /// L2 is unavailable: the call is answered locally.
    Unavailable,
}

/// The error a call gets when L2's reply cannot be read.
const UNEXPECTED: &str = "ERR unexpected reply from L2";

/// A call waiting for its batch, and where its outcome goes. (The queue is unbounded, but each
/// caller waits for its outcome: it holds at most one call per request in progress.)
type Queued = (Call, oneshot::Sender<Outcome>);

/// Gathers concurrent sliding-window calls into batches, one script each (standalone L2): the
/// fixed cost of an `EVALSHA`, its `TIME` and its round trip are paid once per batch instead
/// of once per call. Its task starts with the first call, in that call's runtime (Strata runs
/// one, which L2's connections belong to as well; should it be shut down, the next call starts
/// another task), and ends when the limiter is dropped.
#[derive(Default)]
struct Batcher {
    tx: parking_lot::Mutex<Option<mpsc::UnboundedSender<Queued>>>,
}

impl Batcher {
    /// Queues a call for the batching task (starting it if need be); gives the call back when
    /// no task can run (outside a tokio runtime).
    fn queue(&self, l2: &Arc<L2>, q: Queued) -> Result<(), Queued> {
        let mut tx = self.tx.lock();
        let q = match tx.as_ref() {
            Some(t) => match t.send(q) {
                Ok(()) => return Ok(()),
                // The task is gone (its runtime was shut down): start another.
                Err(e) => e.0,
            },
            None => q,
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Err(q);
        };
        let (t, rx) = mpsc::unbounded_channel();
        rt.spawn(batches(l2.clone(), rx));
        let sent = t.send(q).map_err(|e| e.0);
        *tx = Some(t);
        sent
    }

    /// A call's outcome, in a batch with whatever other calls are waiting.
    async fn call(&self, l2: &Arc<L2>, call: Call) -> Outcome {
        let (reply, rx) = oneshot::channel();
        match self.queue(l2, (call, reply)) {
            // No outcome: the batch was dropped with its runtime.
            Ok(()) => rx.await.unwrap_or(Outcome::Unavailable),
            Err((call, _)) => one(l2, call).await,
        }
    }
}

/// The batching task: takes the first waiting call, then every call already waiting behind it
/// (up to `BATCH_MAX`, without waiting for more), and sends them as one script; up to
/// `IN_FLIGHT` batches at once. Ends when the limiter is dropped and its batches are answered.
async fn batches(l2: Arc<L2>, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let l2 = &l2;
    let mut flying = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some(()) = flying.next(), if !flying.is_empty() => {}
            q = rx.recv(), if open && flying.len() < IN_FLIGHT => match q {
                Some((call, reply)) => {
                    let (mut calls, mut replies) = (vec![call], vec![reply]);
                    while calls.len() < BATCH_MAX {
                        match rx.try_recv() {
                            Ok((call, reply)) => {
                                calls.push(call);
                                replies.push(reply);
                            }
                            Err(_) => break,
                        }
                    }
                    flying.push(async move {
                        let outcomes = run_windows(l2, &calls).await;
                        for (reply, o) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(o);
                        }
                    });
                }
                None => open = false,
            },
            else => break,
        }
    }
}

/// One call on its own (on a Cluster, whose calls live on different nodes; or outside a tokio
/// runtime, where no batching task can run).
async fn one(l2: &Arc<L2>, call: Call) -> Outcome {
    let calls = [call];
    run_windows(l2, &calls)
        .await
        .pop()
        .unwrap_or(Outcome::Unavailable)
}

/// A count as the script takes it (limits and costs are at most `i64::MAX` anyway).
fn sat(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Runs `script` on L2 by its SHA, loading it with EVAL when L2 does not have it yet, and
/// returns its reply (None: L2 is unavailable). `args` writes what follows the script (the key
/// count, the keys and the arguments); `keys` are the keys it touches, for L2's routing.
async fn eval_script(
    l2: &Arc<L2>,
    script: &Script,
    keys: &[&[u8]],
    args: impl Fn(&mut redis::Cmd),
) -> Option<Value> {
    let send = |verb: &str, first: &str| {
        let mut cmd = redis::cmd(verb);
        cmd.arg(first);
        args(&mut cmd);
        let mut pipe = redis::pipe();
        pipe.ignore_errors().add_command(cmd);
        async move {
            match l2.run(0, false, false, &pipe, Keys::These(keys)).await {
                Ok((v, _)) => Some(v.into_iter().next().unwrap_or(Value::Nil)),
                Err(L2Error::Unavailable) => None,
            }
        }
    };
    let reply = send("EVALSHA", &script.sha).await?;
    if matches!(&reply, Value::ServerError(e) if e.code() == "NOSCRIPT") {
        return send("EVAL", script.body).await;
    }
    Some(reply)
}

/// Runs calls as one window script (by its SHA, loading it with EVAL when L2 does not have it
/// yet): one outcome per call, in order.
async fn run_windows(l2: &Arc<L2>, calls: &[Call]) -> Vec<Outcome> {
    let keys: Vec<&[u8]> = calls
        .iter()
        .flat_map(|c| c.windows.iter().map(|(k, _)| &k[..]))
        .collect();
    // The batch's distinct policies (a call's cost and windows): each one's first call, and
    // where it starts in ARGV; and each call's policy.
    let mut policies: SmallVec<[(usize, usize); 2]> = SmallVec::new();
    let mut of = Vec::with_capacity(calls.len());
    let mut next = 2;
    for (i, c) in calls.iter().enumerate() {
        let same = |p: &&(usize, usize)| {
            let d = &calls[p.0];
            d.cost == c.cost
                && d.windows.len() == c.windows.len()
                && d.windows.iter().zip(&c.windows).all(|(a, b)| a.1 == b.1)
        };
        match policies.iter().find(same) {
            Some(p) => of.push(p.1),
            None => {
                policies.push((i, next));
                of.push(next);
                next += 2 + 2 * c.windows.len();
            }
        }
    }
    let args = |cmd: &mut redis::Cmd| {
        cmd.arg(keys.len());
        for k in &keys {
            cmd.arg(*k);
        }
        cmd.arg(next - 2);
        for &(i, _) in &policies {
            let c = &calls[i];
            cmd.arg(c.windows.len()).arg(sat(c.cost));
            for (_, w) in &c.windows {
                cmd.arg(sat(w.limit)).arg(w.window_ms);
            }
        }
        for at in &of {
            cmd.arg(*at);
        }
    };
    let all = |o: &dyn Fn() -> Outcome| calls.iter().map(|_| o()).collect();
    let Some(reply) = eval_script(l2, &WINDOW, &keys, args).await else {
        return all(&|| Outcome::Unavailable);
    };
    match reply {
        Value::Array(items) => outcomes(calls, &items),
        // The whole script failed (no call was answered): every call gets the error.
        Value::ServerError(e) => {
            let text = server_error(&e);
            all(&|| Outcome::Error(text.clone()))
        }
        _ => all(&|| Outcome::Error(UNEXPECTED.into())),
    }
}

/// The calls' outcomes from the script's flat reply.
fn outcomes(calls: &[Call], items: &[Value]) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(calls.len());
    let mut it = items.iter();
    let int = |v: Option<&Value>| match v {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    for c in calls {
        let n = c.windows.len();
        let o = match it.next() {
            // The only window admitted the call: -1 - its remaining units.
            Some(Value::Int(r)) if *r < 0 && n == 1 => {
                let w = c.windows[0].1;
                Some(Outcome::Verdicts(smallvec::smallvec![Verdict {
                    allowed: true,
                    limit: sat(w.limit),
                    remaining: -1 - r,
                    retry_after_ms: 0,
                    reset_after_ms: w.window_ms as i64,
                }]))
            }
            Some(Value::Int(m)) if *m == 5 * n as i64 => (0..n)
                .map(|_| {
                    let f: SmallVec<[i64; 5]> = (0..5).filter_map(|_| int(it.next())).collect();
                    (f.len() == 5).then(|| Verdict {
                        allowed: f[0] != 0,
                        limit: f[1],
                        remaining: f[2],
                        retry_after_ms: f[3],
                        reset_after_ms: f[4],
                    })
                })
                .collect::<Option<Verdicts>>()
                .map(Outcome::Verdicts),
            Some(Value::BulkString(e)) => Some(Outcome::Error(error_line(e))),
            Some(Value::ServerError(e)) => Some(Outcome::Error(server_error(e))),
            _ => None,
        };
        match o {
            Some(o) => out.push(o),
            // Past a reply it cannot read, the rest is out of step: all unexpected.
            None => break,
        }
    }
    while out.len() < calls.len() {
        out.push(Outcome::Error(UNEXPECTED.into()));
    }
    out
}

/// A server error as the client gets it.
fn server_error(e: &redis::ServerError) -> String {
    match e.details() {
        Some(d) => format!("{} {d}", e.code()),
        None => e.code().to_string(),
    }
}

/// An error a call of the window script caught, as an error line for the client: one line,
/// with an error code (`ERR` when it has none of its own, as Redis does).
fn error_line(e: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(e)
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let code = text.split(' ').next().unwrap_or("");
    if !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase()) {
        text
    } else {
        format!("ERR {text}")
    }
}

/// Counters for INFO's `# Ratelimit` section.
#[derive(Default)]
pub struct RateStats {
    /// RATE verdicts from L2 (those of the local limiter are counted there).
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
    /// Calls that L2 answered with an error.
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
    /// Sliding-window calls for a standalone L2, sent in batches.
    batcher: Batcher,
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
            batcher: Batcher::default(),
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

    /// Loads ahead what a coming RATE call on this instance's state will read: its table
    /// entry, or (`log`, once that is loaded) its log's records. See `LocalLimiter::prefetch`.
    pub fn prefetch_local(&self, key: &[u8], log: bool) {
        match log {
            true => self.local.prefetch_log(Space::Rate, key),
            false => self.local.prefetch(Space::Rate, key),
        }
    }

    /// RATE on this instance's state (standalone mode, or inside a transaction).
    pub fn rate_local(&self, key: &[u8], w: Window, cost: u64) -> Verdict {
        if self.bypassed(key) {
            bump(&self.stats.bypassed);
            return Verdict::bypass(w.limit);
        }
        // Counted by the local limiter (see `info`).
        self.local.window(Space::Rate, key, w, cost)
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
        match self.windows_l2(l2, smallvec::smallvec![(k, w)], cost).await {
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
            Ok(_) => Err(self.l2_error(UNEXPECTED.into())),
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
                let windows = checks.iter().map(|(_, _, k, w)| (k.clone(), *w)).collect();
                // A QUERY is not refused because the limiter's store failed: count locally.
                self.windows_l2(l2, windows, 1).await.ok()
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
                Verdicts::from_vec(self.local.windows(&local, 1))
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

    /// Sliding windows checked together in L2 (one call of the window script: batched with
    /// other calls on a standalone L2, on its own on a Cluster).
    async fn windows_l2(
        &self,
        l2: &Arc<L2>,
        windows: Windows,
        cost: u64,
    ) -> Result<Verdicts, Remote> {
        let call = Call { windows, cost };
        let outcome = if l2.is_cluster() {
            one(l2, call).await
        } else {
            self.batcher.call(l2, call).await
        };
        match outcome {
            Outcome::Verdicts(v) => {
                self.fallback.store(false, Ordering::Relaxed);
                Ok(v)
            }
            Outcome::Error(e) => {
                self.fallback.store(false, Ordering::Relaxed);
                Err(Remote::Error(self.l2_error(e)))
            }
            Outcome::Unavailable => {
                self.fallback.store(true, Ordering::Relaxed);
                bump(&self.stats.l2_fallbacks);
                Err(Remote::Unavailable)
            }
        }
    }

    fn l2_error(&self, e: String) -> String {
        bump(&self.stats.l2_errors);
        e
    }

    /// Runs a script (CL.THROTTLE's) on L2 by its SHA (loading it with EVAL when L2 does not
    /// have it yet) and returns its integer array (an integer reply is an array of one).
    async fn eval(
        &self,
        l2: &Arc<L2>,
        script: &Script,
        keys: &[&[u8]],
        args: &[i64],
    ) -> Result<Vec<i64>, Remote> {
        let args = |cmd: &mut redis::Cmd| {
            cmd.arg(keys.len());
            for k in keys {
                cmd.arg(*k);
            }
            for a in args {
                cmd.arg(*a);
            }
        };
        let Some(reply) = eval_script(l2, script, keys, args).await else {
            self.fallback.store(true, Ordering::Relaxed);
            bump(&self.stats.l2_fallbacks);
            return Err(Remote::Unavailable);
        };
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
            Value::ServerError(e) => Err(Remote::Error(self.l2_error(server_error(&e)))),
            _ => Err(Remote::Error(self.l2_error(UNEXPECTED.into()))),
        }
    }

    /// INFO's `# Ratelimit` section.
    pub fn info(&self, cfg: &RateConfig) -> String {
        let s = &self.stats;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // RATE calls answered in L2 are counted here, those answered locally by the local
        // limiter.
        let (local_allowed, local_denied) = self.local.verdicts();
        let mut out = String::from("# Ratelimit\r\n");
        let _ = write!(
            out,
            "rate_limiter_mode:{}\r\nrate_default:{}\r\nrate_query_per_user:{}\r\nrate_query_global:{}\r\nrate_allowed:{}\r\nrate_denied:{}\r\nthrottle_allowed:{}\r\nthrottle_limited:{}\r\nquery_rate_allowed:{}\r\nquery_rate_denied:{}\r\nrate_bypassed:{}\r\nrate_l2_fallbacks:{}\r\nrate_l2_errors:{}\r\nrate_local_keys:{}\r\nrate_local_evicted_keys:{}\r\n\r\n",
            self.mode(),
            cfg.default,
            cfg.query_per_user,
            cfg.query_global,
            g(&s.rate_allowed) + local_allowed,
            g(&s.rate_denied) + local_denied,
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

    fn call(windows: &[(u64, u64)]) -> Call {
        Call {
            windows: windows
                .iter()
                .map(|&(limit, window_ms)| (b"k".to_vec(), Window { limit, window_ms }))
                .collect(),
            cost: 1,
        }
    }

    fn verdicts(o: &Outcome) -> Vec<[i64; 5]> {
        match o {
            Outcome::Verdicts(v) => v.iter().map(|v| v.as_array()).collect(),
            Outcome::Error(e) => panic!("error {e}"),
            Outcome::Unavailable => panic!("unavailable"),
        }
    }

    fn error(o: &Outcome) -> &str {
        match o {
            Outcome::Error(e) => e,
            _ => panic!("not an error"),
        }
    }

    /// The window script's flat reply, call by call: `-1 - remaining` for an admitted call of
    /// one window, a count then five integers per window, or an error string; a reply out of
    /// step makes that call and the rest unexpected, never another call's verdict.
    #[test]
    fn batch_replies_are_read_call_by_call() {
        let calls = [
            call(&[(10, 1000)]),
            call(&[(3, 2000)]),
            call(&[(5, 1000)]),
            call(&[(4, 1000), (9, 60_000)]),
            call(&[(7, 1000)]),
        ];
        let ints = |v: &[i64]| v.iter().map(|&n| Value::Int(n)).collect::<Vec<_>>();
        let mut reply = ints(&[-8, 5, 0, 3, 0, 1500, 2000]);
        reply.push(Value::BulkString(
            b"WRONGTYPE Operation against a key holding the wrong kind of value".to_vec(),
        ));
        reply.extend(ints(&[10, 1, 4, 2, 0, 1000, 0, 9, 9, 700, 800, -1]));
        let got = outcomes(&calls, &reply);
        assert_eq!(got.len(), 5);
        assert_eq!(verdicts(&got[0]), [[1, 10, 7, 0, 1000]]);
        assert_eq!(verdicts(&got[1]), [[0, 3, 0, 1500, 2000]]);
        assert_eq!(
            error(&got[2]),
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        );
        assert_eq!(verdicts(&got[3]), [[1, 4, 2, 0, 1000], [0, 9, 9, 700, 800]]);
        assert_eq!(verdicts(&got[4]), [[1, 7, 0, 0, 1000]]);

        // A two-window call cannot answer one integer; what follows is out of step.
        let got = outcomes(&calls[3..], &ints(&[-1, -1]));
        assert_eq!(error(&got[0]), UNEXPECTED);
        assert_eq!(error(&got[1]), UNEXPECTED);
        // Too short: the calls left without a reply are unexpected.
        let got = outcomes(&calls[..2], &ints(&[-1, 5, 0, 3]));
        assert_eq!(verdicts(&got[0]), [[1, 10, 0, 0, 1000]]);
        assert_eq!(error(&got[1]), UNEXPECTED);
    }

    #[test]
    fn caught_errors_become_error_lines_with_a_code() {
        assert_eq!(
            error_line(b"WRONGTYPE Operation against"),
            "WRONGTYPE Operation against"
        );
        assert_eq!(
            error_line(b"OOM command not allowed"),
            "OOM command not allowed"
        );
        assert_eq!(
            error_line(b"user_script:9: attempt to compare nil"),
            "ERR user_script:9: attempt to compare nil"
        );
        assert_eq!(error_line(b"bad\r\nline"), "ERR bad  line");
        assert_eq!(error_line(b""), "ERR ");
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
