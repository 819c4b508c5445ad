//! Server commands: INFO (Redis's sections and field names), CONFIG GET/SET/RESETSTAT for the
//! keys that exist, TIME, SLOWLOG, MEMORY, LASTSAVE, SAVE/BGSAVE and SHUTDOWN.
//!
//! CONFIG speaks Redis's kebab-case names (`maxmemory-policy`) and maps them onto the TOML
//! keys of `config/strata.toml` (`l1.maxmemory_policy`); one table below holds that mapping.

use super::args::{int, is};
use super::error::{CmdError, CmdResult, SYNTAX};
use super::table::{cmd, Command, ADMIN, LOADING, NOSCRIPT, READONLY, STALE};
use super::Ctx;
use crate::app::{App, REDIS_VERSION};
use crate::cache::glob::glob_match;
use crate::config::{ByteSize, Config, EvictionPolicy};
use bytes::Bytes;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

const S_ADM: &[&str] = &["admin", "slow", "dangerous"];

pub static CONFIG: &[Command] = &[
    cmd(
        "get",
        -3,
        ADMIN | NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_ADM,
        "server",
        "Returns the effective values of configuration parameters.",
        config_get,
    ),
    cmd(
        "set",
        -4,
        ADMIN | NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_ADM,
        "server",
        "Sets configuration parameters in-flight.",
        config_set,
    )
    .with_tips(&["request_policy:all_nodes", "response_policy:all_succeeded"]),
    cmd(
        "resetstat",
        2,
        ADMIN | NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_ADM,
        "server",
        "Resets the server's statistics.",
        config_resetstat,
    ),
    cmd(
        "rewrite",
        2,
        ADMIN | NOSCRIPT | LOADING | STALE,
        (0, 0, 0),
        S_ADM,
        "server",
        "Persists the effective configuration to file.",
        config_rewrite,
    ),
    cmd(
        "help",
        2,
        LOADING | STALE,
        (0, 0, 0),
        &["slow"],
        "server",
        "Returns helpful text about the different subcommands.",
        config_help,
    ),
];

pub static SLOWLOG: &[Command] = &[
    cmd(
        "get",
        -2,
        ADMIN | LOADING | STALE,
        (0, 0, 0),
        S_ADM,
        "server",
        "Returns the slow log's entries.",
        slowlog_get,
    )
    .with_tips(&["nondeterministic_output", "request_policy:all_nodes"]),
    cmd(
        "len",
        2,
        ADMIN | LOADING | STALE,
        (0, 0, 0),
        S_ADM,
        "server",
        "Returns the number of entries in the slow log.",
        slowlog_len,
    )
    .with_tips(&[
        "nondeterministic_output",
        "request_policy:all_nodes",
        "response_policy:agg_sum",
    ]),
    cmd(
        "reset",
        2,
        ADMIN | LOADING | STALE,
        (0, 0, 0),
        S_ADM,
        "server",
        "Clears all entries from the slow log.",
        slowlog_reset,
    )
    .with_tips(&["request_policy:all_nodes", "response_policy:all_succeeded"]),
    cmd(
        "help",
        2,
        LOADING | STALE,
        (0, 0, 0),
        &["slow"],
        "server",
        "Show helpful text about the different subcommands",
        slowlog_help,
    ),
];

pub static MEMORY: &[Command] = &[
    cmd(
        "usage",
        -3,
        READONLY,
        (2, 2, 1),
        &["read", "slow"],
        "server",
        "Estimates the memory usage of a key.",
        memory_usage,
    ),
    cmd(
        "doctor",
        2,
        0,
        (0, 0, 0),
        &["slow"],
        "server",
        "Outputs a memory problems report.",
        memory_doctor,
    )
    .with_tips(&[
        "nondeterministic_output",
        "request_policy:all_shards",
        "response_policy:special",
    ]),
    cmd(
        "stats",
        2,
        0,
        (0, 0, 0),
        &["slow"],
        "server",
        "Returns details about memory usage.",
        memory_stats,
    )
    .with_tips(&[
        "nondeterministic_output",
        "request_policy:all_shards",
        "response_policy:special",
    ]),
    cmd(
        "help",
        2,
        LOADING | STALE,
        (0, 0, 0),
        &["slow"],
        "server",
        "Returns helpful text about the different subcommands.",
        memory_help,
    ),
];

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b < 1024.0 {
        format!("{bytes}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}M", b / 1024.0 / 1024.0)
    } else {
        format!("{:.2}G", b / 1024.0 / 1024.0 / 1024.0)
    }
}

/// Resident set size of this process, from /proc.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn cpu_times() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_stime), t(ru.ru_utime))
}

const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "errorstats",
    "cluster",
    "tiering",
    "database",
    "ratelimit",
    "keyspace",
];

/// Builds the INFO text for the requested sections.
pub fn info_text(app: &App, sections: &[String]) -> String {
    let all = sections.iter().any(|s| s == "all" || s == "everything");
    let want = |name: &str| {
        if sections.is_empty() || sections.iter().any(|s| s == "default") {
            DEFAULT_SECTIONS.contains(&name)
        } else {
            all && name != "modules" || sections.iter().any(|s| s == name)
        }
    };
    let mut s = String::new();
    let cfg = app.config.read();
    let store = &app.store;
    let st = &store.stats;
    let uptime = app.started.elapsed().as_secs();
    if want("server") {
        let _ = write!(
            s,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nstrata_version:{}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:0\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\natomicvar_api:c11-builtin\r\nprocess_id:{}\r\nprocess_supervised:no\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nhz:{}\r\nconfigured_hz:{}\r\nexecutable:{}\r\nconfig_file:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            app.run_id,
            app.port.load(Ordering::Relaxed),
            super::unix_ms() * 1000,
            uptime / 86400,
            cfg.server.hz,
            cfg.server.hz,
            std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
            app.config_file.clone().unwrap_or_default(),
        );
    }
    if want("clients") {
        let _ = write!(
            s,
            "# Clients\r\nconnected_clients:{}\r\ncluster_connections:0\r\nmaxclients:{}\r\nclient_recent_max_input_buffer:0\r\nclient_recent_max_output_buffer:0\r\nblocked_clients:{}\r\ntracking_clients:0\r\nclients_in_timeout_table:0\r\n\r\n",
            app.clients.count(),
            cfg.server.maxclients,
            app.blocked_clients.load(Ordering::Relaxed)
        );
    }
    if want("memory") {
        // used_memory is the store's exact count, the number maxmemory is held to; the
        // process's own footprint at start is reported apart, as used_memory_startup.
        let dataset = store.used_memory();
        let used = dataset;
        let rss = rss_bytes();
        let _ = write!(
            s,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_peak:{used}\r\nused_memory_startup:{}\r\nused_memory_dataset:{dataset}\r\nmaxmemory:{}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmem_fragmentation_ratio:{:.2}\r\nmem_allocator:libc\r\nused_memory_lua:{}\r\nnumber_of_cached_scripts:{}\r\n\r\n",
            human(used),
            human(rss),
            app.startup_rss,
            store.maxmemory(),
            human(store.maxmemory()),
            store.policy().name(),
            if used > 0 { rss as f64 / used as f64 } else { 1.0 },
            app.scripts.used_memory(),
            app.scripts.count(),
        );
    }
    if want("persistence") {
        let _ = write!(
            s,
            "# Persistence\r\nloading:0\r\nasync_loading:0\r\nrdb_changes_since_last_save:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:ok\r\naof_enabled:0\r\naof_rewrite_in_progress:0\r\n\r\n",
            app.started_ms / 1000
        );
    }
    if want("stats") {
        let calls: u64 = app.metrics.commands.iter().map(|c| c.calls.get()).sum();
        let _ = write!(
            s,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{calls}\r\ninstantaneous_ops_per_sec:0\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:0\r\npubsub_patterns:0\r\ntotal_error_replies:{}\r\n\r\n",
            app.clients.total_connections.load(Ordering::Relaxed),
            app.metrics.net_input_bytes.get(),
            app.metrics.net_output_bytes.get(),
            app.clients.rejected_connections.load(Ordering::Relaxed),
            st.expired.load(Ordering::Relaxed),
            st.evicted.load(Ordering::Relaxed),
            st.hits.load(Ordering::Relaxed),
            st.misses.load(Ordering::Relaxed),
            app.metrics.error_replies.get(),
        );
    }
    if want("replication") {
        s.push_str(
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n\r\n",
        );
    }
    if want("cpu") {
        let (sys, user) = cpu_times();
        let _ = write!(
            s,
            "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\n\r\n"
        );
    }
    if want("modules") {
        s.push_str("# Modules\r\n\r\n");
    }
    if want("commandstats") {
        s.push_str("# Commandstats\r\n");
        let reg = &*crate::command::table::REGISTRY;
        for (i, c) in app.metrics.commands.iter().enumerate() {
            let calls = c.calls.get();
            let rejected = c.rejected.get();
            if calls == 0 && rejected == 0 {
                continue;
            }
            let usec = c.usec.load(Ordering::Relaxed);
            let _ = write!(
                s,
                "cmdstat_{}:calls={calls},usec={usec},usec_per_call={:.2},rejected_calls={rejected},failed_calls={}\r\n",
                reg.full_names[i],
                if calls > 0 { usec as f64 / calls as f64 } else { 0.0 },
                c.failed.get()
            );
        }
        s.push_str("\r\n");
    }
    if want("errorstats") {
        s.push_str("# Errorstats\r\n\r\n");
    }
    if want("cluster") {
        s.push_str("# Cluster\r\ncluster_enabled:0\r\n\r\n");
    }
    if want("tiering") {
        s.push_str(&tiering_info(app, &cfg));
    }
    if want("database") {
        s.push_str(&database_info(app));
    }
    if want("ratelimit") {
        s.push_str(&app.rate.info(&cfg.rate));
    }
    if want("keyspace") {
        s.push_str("# Keyspace\r\n");
        for db in 0..store.databases() {
            let n = store.dbsize(db);
            if n > 0 {
                let _ = write!(
                    s,
                    "db{db}:keys={n},expires={},avg_ttl=0\r\n",
                    store.volatile_count(db)
                );
            }
        }
        s.push_str("\r\n");
    }
    while s.ends_with("\r\n\r\n") {
        s.truncate(s.len() - 2);
    }
    s
}

/// INFO's `# Database` section: the QUERY cache, and per instance its role, state, lag,
/// statement counts and pool statistics.
fn database_info(app: &App) -> String {
    let q = &app.queries;
    let mut s = format!(
        "# Database\r\ndatabase_enabled:{}\r\nquery_cache_entries:{}\r\nquery_cache_bytes:{}\r\nquery_cache_hits:{}\r\nquery_cache_misses:{}\r\nquery_cache_fills:{}\r\nquery_cache_fills_dropped:{}\r\nquery_cache_invalidations:{}\r\n",
        app.db.is_some() as u8,
        q.len(),
        q.used_bytes(),
        q.stats.hits.load(Ordering::Relaxed),
        q.stats.misses.load(Ordering::Relaxed),
        q.stats.fills.load(Ordering::Relaxed),
        q.stats.fills_dropped.load(Ordering::Relaxed),
        q.stats.invalidated.load(Ordering::Relaxed),
    );
    if let Some(db) = &app.db {
        for (i, inst) in db.instances().enumerate() {
            let lag = inst
                .lag
                .sample()
                .map_or("-".to_string(), |l| l.lag.as_millis().to_string());
            // The server's pools together (a replica has only a read pool).
            let p = inst.pools().totals();
            let _ = write!(
                s,
                "db{i}:name={},role={},status={},lag_ms={lag},queries={},errors={},pool_size={},pool_idle={},pool_in_use={},pool_waiting={},pool_timeouts={},pool_wait_p50_us={},pool_wait_p99_us={}\r\n",
                inst.name,
                db.role_of(inst.index),
                if inst.in_rotation() { "up" } else { "down" },
                inst.stats.queries.load(Ordering::Relaxed),
                inst.stats.errors.load(Ordering::Relaxed),
                p.size,
                p.idle,
                p.in_use,
                p.waiting,
                p.timeouts_total,
                p.wait.quantile(0.5).map_or(0, |d| d.as_micros()),
                p.wait.quantile(0.99).map_or(0, |d| d.as_micros()),
            );
        }
    }
    s.push_str("\r\n");
    s
}

/// INFO's `# Tiering` section: the L2 upstream, its breaker, and the L1/L2 counters.
fn tiering_info(app: &App, cfg: &crate::config::Config) -> String {
    let Some(l2) = &app.l2 else {
        return "# Tiering\r\nmode:standalone\r\n\r\n".to_string();
    };
    let st = &l2.stats;
    let calls = st.calls.load(Ordering::Relaxed);
    let mut s = String::new();
    let _ = write!(
        s,
        "# Tiering\r\nmode:tiered\r\nl2_url:{}\r\nl2_status:{}\r\nl2_fail_open:{}\r\nl2_breaker_state:{}\r\nl2_breaker_opened:{}\r\nl2_reconnect_attempts:{}\r\nl2_reconnects:{}\r\nl2_hits:{}\r\nl2_misses:{}\r\nl2_calls:{calls}\r\nl2_errors:{}\r\nl2_avg_latency_us:{}\r\nl1_max_entries:{}\r\nl1_ttl:{}\r\nl1_fills:{}\r\nl1_fills_dropped:{}\r\nl1_invalidations:{}\r\n\r\n",
        redact(&cfg.l2.url),
        if l2.is_up() { "up" } else { "down" },
        match cfg.l2.fail_open {
            crate::config::FailOpen::Plain => "plain",
            crate::config::FailOpen::All => "all",
            crate::config::FailOpen::None => "none",
        },
        l2.breaker_state().name(),
        l2.breaker_opened(),
        l2.attempts.load(Ordering::Relaxed),
        st.reconnects.load(Ordering::Relaxed),
        st.hits.load(Ordering::Relaxed),
        st.misses.load(Ordering::Relaxed),
        st.errors.load(Ordering::Relaxed),
        st.call_us.load(Ordering::Relaxed).checked_div(calls).unwrap_or(0),
        l2.max_entries,
        l2.l1_ttl_ms / 1000,
        st.fills.load(Ordering::Relaxed),
        st.fills_dropped.load(Ordering::Relaxed),
        st.invalidations.load(Ordering::Relaxed),
    );
    if l2.is_cluster() {
        // Each master of a Cluster upstream has its own health and breaker.
        s.truncate(s.len() - 2);
        let nodes = l2.nodes();
        let _ = write!(
            s,
            "l2_cluster_masters:{}\r\nl2_cluster_masters_down:{}\r\n",
            nodes.len(),
            nodes.iter().filter(|n| !n.up).count()
        );
        for (i, n) in nodes.iter().enumerate() {
            let _ = write!(
                s,
                "l2_master{i}:addr={},status={},breaker={},breaker_opened={}\r\n",
                n.addr,
                if n.up { "up" } else { "down" },
                n.breaker.name(),
                n.opened
            );
        }
        s.push_str("\r\n");
    }
    s
}

/// A URL without its password, for INFO.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(i), Some(at)) if at > i => format!("{}***{}", &url[..i + 3], &url[at..]),
        _ => url.to_string(),
    }
}

pub fn info(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let sections: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let text = info_text(ctx.app, &sections);
    ctx.out.verbatim(&text);
    Ok(())
}

pub fn time(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ctx.out.array(2);
    ctx.out.bulk(d.as_secs().to_string().as_bytes());
    ctx.out.bulk(d.subsec_micros().to_string().as_bytes());
    Ok(())
}

pub fn lastsave(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    ctx.out.int((ctx.app.started_ms / 1000) as i64);
    Ok(())
}

pub fn save(_ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    Err(CmdError::new(
        "ERR Strata is a cache and keeps no snapshot: persistence is not supported",
    ))
}

pub fn shutdown(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    for a in &args[1..] {
        if is(a, "abort") {
            return Err(CmdError::new("ERR No shutdown in progress."));
        }
        if !(is(a, "nosave") || is(a, "save") || is(a, "now") || is(a, "force")) {
            return Err(SYNTAX);
        }
    }
    tracing::warn!("SHUTDOWN requested by client {}", ctx.session.id());
    ctx.app.shutdown();
    ctx.session.close = true;
    Ok(())
}

// CONFIG

/// How CONFIG reads and writes a value.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Mem,
    Bool,
    Str,
    Policy,
}

/// Redis's CONFIG name, the TOML key it stands for, its kind, and whether CONFIG SET may
/// change it at run time. Values are validated by the same code that validates the file.
const CONFIG_KEYS: &[(&str, &str, Kind, bool)] = &[
    ("bind", "server.bind", Kind::Str, false),
    ("port", "server.port", Kind::Int, false),
    ("databases", "server.databases", Kind::Int, false),
    ("maxclients", "server.maxclients", Kind::Int, true),
    ("timeout", "server.timeout", Kind::Int, true),
    ("tcp-keepalive", "server.tcp_keepalive", Kind::Int, true),
    ("requirepass", "server.requirepass", Kind::Str, true),
    ("protected-mode", "server.protected_mode", Kind::Bool, true),
    (
        "proto-max-bulk-len",
        "server.proto_max_bulk_len",
        Kind::Mem,
        true,
    ),
    (
        "client-query-buffer-limit",
        "server.client_query_buffer_limit",
        Kind::Mem,
        true,
    ),
    (
        "slowlog-log-slower-than",
        "server.slowlog_log_slower_than",
        Kind::Int,
        true,
    ),
    ("slowlog-max-len", "server.slowlog_max_len", Kind::Int, true),
    ("hz", "server.hz", Kind::Int, true),
    (
        "lua-time-limit",
        "server.lua_time_limit_ms",
        Kind::Int,
        true,
    ),
    ("maxmemory", "l1.maxmemory", Kind::Mem, true),
    (
        "maxmemory-policy",
        "l1.maxmemory_policy",
        Kind::Policy,
        true,
    ),
    ("maxmemory-samples", "l1.maxmemory_samples", Kind::Int, true),
    ("loglevel", "log.level", Kind::Str, false),
];

/// Settings Strata does not have but clients ask about (redis-benchmark reads these): fixed
/// answers, and CONFIG SET accepts only the value that is already true.
const FIXED_KEYS: &[(&str, &str)] = &[("save", ""), ("appendonly", "no")];

fn lookup<'t>(t: &'t toml::Table, path: &str) -> Option<&'t toml::Value> {
    let (section, key) = path.split_once('.')?;
    t.get(section)?.as_table()?.get(key)
}

fn render(v: &toml::Value, kind: Kind) -> String {
    match (v, kind) {
        (toml::Value::Boolean(b), _) => if *b { "yes" } else { "no" }.into(),
        (toml::Value::String(s), _) => s.clone(),
        (other, _) => other.to_string(),
    }
}

/// Converts a CONFIG SET argument to the TOML value of its key, with Redis's error texts.
fn parse_value(v: &str, kind: Kind) -> Result<toml::Value, &'static str> {
    match kind {
        Kind::Int => v
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| "argument couldn't be parsed into an integer"),
        Kind::Mem => ByteSize::parse(v)
            .and_then(|b| i64::try_from(b.0).ok())
            .map(toml::Value::Integer)
            .ok_or("argument must be a memory value"),
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            "yes" => Ok(toml::Value::Boolean(true)),
            "no" => Ok(toml::Value::Boolean(false)),
            _ => Err("argument must be 'yes' or 'no'"),
        },
        Kind::Str => Ok(toml::Value::String(v.to_string())),
        Kind::Policy => EvictionPolicy::parse(v)
            .map(|p| toml::Value::String(p.name().to_string()))
            .ok_or("argument(s) must be one of the following: volatile-lru, allkeys-lru, allkeys-random, noeviction"),
    }
}

fn config_get(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let table = ctx.app.config.read().to_table();
    let mut found: Vec<(&str, String)> = Vec::new();
    for pat in &args[2..] {
        let keys = CONFIG_KEYS
            .iter()
            .filter_map(|(name, path, kind, _)| Some((*name, render(lookup(&table, path)?, *kind))))
            .chain(FIXED_KEYS.iter().map(|(n, v)| (*n, v.to_string())));
        for (name, value) in keys {
            if glob_match(pat, name.as_bytes(), true) && !found.iter().any(|(n, _)| *n == name) {
                found.push((name, value));
            }
        }
    }
    ctx.out.map(found.len());
    for (n, v) in found {
        ctx.out.bulk(n.as_bytes());
        ctx.out.bulk(v.as_bytes());
    }
    Ok(())
}

fn config_set(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    if args.len() % 2 != 0 {
        return Err(super::error::arity("config|set"));
    }
    let failed = |name: &str, why: &str| {
        CmdError::msg(format!(
            "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
        ))
    };
    let mut table = ctx.app.config.read().to_table();
    for pair in args[2..].chunks(2) {
        let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
        let value = String::from_utf8_lossy(&pair[1]).into_owned();
        if let Some((_, fixed)) = FIXED_KEYS.iter().find(|(n, _)| *n == name) {
            if !value.eq_ignore_ascii_case(fixed) {
                return Err(failed(&name, "Strata is a cache without persistence"));
            }
            continue;
        }
        let Some(&(_, path, kind, mutable)) = CONFIG_KEYS.iter().find(|(n, ..)| *n == name) else {
            return Err(CmdError::msg(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
            )));
        };
        if !mutable {
            return Err(failed(&name, "can't set immutable config"));
        }
        let v = parse_value(&value, kind).map_err(|why| failed(&name, why))?;
        let (section, key) = path.split_once('.').unwrap_or((path, ""));
        if let Some(t) = table.get_mut(section).and_then(|s| s.as_table_mut()) {
            t.insert(key.to_string(), v);
        }
    }
    let cfg = Config::from_table(table)
        .and_then(|c| c.validate().map(|_| c))
        .map_err(|e| CmdError::msg(format!("ERR CONFIG SET failed - {e}")))?;
    *ctx.app.config.write() = cfg;
    ctx.app.apply_config();
    ctx.out.ok();
    Ok(())
}

fn config_resetstat(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    ctx.app.slowlog.reset();
    ctx.out.ok();
    Ok(())
}

fn config_rewrite(_ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    Err(CmdError::new(
        "ERR Strata's configuration file is managed by the operator; CONFIG REWRITE is not supported",
    ))
}

fn config_help(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    super::connection::help(
        ctx,
        "CONFIG",
        &[
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
        ],
    )
}

// SLOWLOG

fn slowlog_get(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    let n = match args.get(2) {
        None => 10,
        Some(a) => {
            let bad = CmdError::new("ERR count should be greater than or equal to -1");
            let n = super::args::parse_i64(a).ok_or(bad.clone())?;
            if n < -1 {
                return Err(bad);
            }
            if n == -1 {
                usize::MAX
            } else {
                n as usize
            }
        }
    };
    let out = &mut *ctx.out;
    ctx.app.slowlog.with_newest(n, |it| {
        let entries: Vec<_> = it.collect();
        out.array(entries.len());
        for e in entries {
            out.array(6);
            out.int(e.id as i64);
            out.int(e.time_s as i64);
            out.int(e.micros as i64);
            out.array(e.args.len());
            for a in &e.args {
                out.bulk(a);
            }
            out.bulk(e.client.as_bytes());
            out.bulk(&e.name);
        }
    });
    Ok(())
}

fn slowlog_len(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    ctx.out.int(ctx.app.slowlog.len() as i64);
    Ok(())
}

fn slowlog_reset(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    ctx.app.slowlog.reset();
    ctx.out.ok();
    Ok(())
}

fn slowlog_help(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    super::connection::help(
        ctx,
        "SLOWLOG",
        &[
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
        ],
    )
}

// MEMORY

fn memory_usage(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult {
    if args.len() > 3 {
        if args.len() != 5 || !is(&args[3], "samples") {
            return Err(SYNTAX);
        }
        int(&args[4])?;
    }
    match ctx
        .app
        .store
        .memory_usage(ctx.session.db, &args[2], ctx.now)
    {
        Some(n) => ctx.out.int(n as i64),
        None => ctx.out.null(),
    }
    Ok(())
}

fn memory_doctor(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    ctx.out
        .verbatim("Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.");
    Ok(())
}

fn memory_stats(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    let used = ctx.app.store.used_memory();
    let keys: usize = (0..ctx.app.store.databases())
        .map(|d| ctx.app.store.dbsize(d))
        .sum();
    let out = &mut *ctx.out;
    out.map(4);
    out.bulk(b"peak.allocated");
    out.int(used as i64);
    out.bulk(b"total.allocated");
    out.int(used as i64);
    out.bulk(b"keys.count");
    out.int(keys as i64);
    out.bulk(b"keys.bytes-per-key");
    out.int(if keys > 0 {
        (used / keys as u64) as i64
    } else {
        0
    });
    Ok(())
}

fn memory_help(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    super::connection::help(
        ctx,
        "MEMORY",
        &[
            "DOCTOR",
            "    Return memory problems reports.",
            "STATS",
            "    Return information about the memory usage of the server.",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value.",
        ],
    )
}
