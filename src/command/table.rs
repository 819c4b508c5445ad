//! The one command table. Each command is declared once — name, arity, flags, key positions, ACL
//! categories, group, handler — and everything else reads it: dispatch (lookup and arity),
//! the guard chain (auth, no-script, out-of-memory, exclusive gate), key extraction, and
//! COMMAND COUNT/INFO/DOCS/LIST. A new command is one entry here plus its handler.

use super::{
    acl, connection as conn, hashes, keys, lists, pubsub, query, rate, scripting, server, sets,
    strings, tags, transactions as tx, zsets,
};
use super::{CmdResult, Ctx};
use bytes::Bytes;
use hashbrown::HashMap;
use std::sync::LazyLock;

pub type Handler = fn(&mut Ctx<'_>, &[Bytes]) -> CmdResult;

// Flags, as Valkey names them.
pub const WRITE: u32 = 1;
pub const READONLY: u32 = 1 << 1;
pub const DENYOOM: u32 = 1 << 2;
pub const ADMIN: u32 = 1 << 3;
pub const NOSCRIPT: u32 = 1 << 4;
pub const FAST: u32 = 1 << 5;
pub const NO_AUTH: u32 = 1 << 6;
pub const LOADING: u32 = 1 << 7;
pub const STALE: u32 = 1 << 8;
pub const NO_MULTI: u32 = 1 << 9;
/// Not queued by MULTI: runs at once (EXEC, DISCARD, MULTI, WATCH, QUIT, RESET).
pub const NOQUEUE: u32 = 1 << 10;
/// Needs the whole store to itself (the exclusive gate), whatever its keys.
pub const EXCLUSIVE: u32 = 1 << 11;
pub const PUBSUB: u32 = 1 << 13;
pub const BLOCKING: u32 = 1 << 14;
/// Tiered mode: runs on this instance (connection, server and admin commands), not on L2.
pub const LOCAL: u32 = 1 << 15;
/// Tiered mode: a read served from L1, filled from L2 on a miss (GET, MGET).
pub const CACHED: u32 = 1 << 16;
/// The database tier (QUERY, DB.*): runs asynchronously in `command::query`, in either mode.
pub const DATABASE: u32 = 1 << 17;
// Flags Redis reports in COMMAND and Strata only reports (it has no busy scripts, MONITOR,
// or asynchronous loading).
pub const ALLOW_BUSY: u32 = 1 << 18;
pub const SKIP_MONITOR: u32 = 1 << 19;
pub const SKIP_SLOWLOG: u32 = 1 << 20;
pub const NO_ASYNC_LOADING: u32 = 1 << 21;
pub const NO_MANDATORY_KEYS: u32 = 1 << 22;

const FLAG_NAMES: &[(u32, &str)] = &[
    (WRITE, "write"),
    (READONLY, "readonly"),
    (DENYOOM, "denyoom"),
    (ADMIN, "admin"),
    (NOSCRIPT, "noscript"),
    (FAST, "fast"),
    (NO_AUTH, "no_auth"),
    (LOADING, "loading"),
    (STALE, "stale"),
    (NO_MULTI, "no_multi"),
    (PUBSUB, "pubsub"),
    (BLOCKING, "blocking"),
    (ALLOW_BUSY, "allow_busy"),
    (SKIP_MONITOR, "skip_monitor"),
    (SKIP_SLOWLOG, "skip_slowlog"),
    (NO_ASYNC_LOADING, "no_async_loading"),
    (NO_MANDATORY_KEYS, "no_mandatory_keys"),
];

/// Where the keys of a command with a `numkeys` argument are (Redis's "movablekeys"): an
/// optional fixed key first (ZUNIONSTORE's destination), then `numkeys` keys right after the
/// `numkeys` argument.
#[derive(Clone, Copy)]
pub struct Movable {
    /// Position of a key that is always there (0: none).
    pub fixed: usize,
    /// Position of the `numkeys` argument.
    pub numkeys: usize,
}

pub struct Command {
    /// Lower-case name; subcommands carry only their own word.
    pub name: &'static str,
    /// Redis's convention: N exactly N arguments (name included), -N at least N.
    pub arity: i32,
    pub flags: u32,
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    /// ACL categories without the `@`.
    pub acl: &'static [&'static str],
    pub group: &'static str,
    pub summary: &'static str,
    pub handler: Handler,
    pub subcommands: &'static [Command],
    /// Keys given by a `numkeys` argument; first/last/step then describe only what Redis's
    /// COMMAND reports for them.
    pub movable: Option<Movable>,
    /// Command tips, as Redis 7.0 gives them.
    pub tips: &'static [&'static str],
}

impl Command {
    pub fn flag(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity;
        (a >= 0 && argc == a as usize) || (a < 0 && argc >= (-a) as usize)
    }

    /// This command with keys given by a `numkeys` argument at `numkeys` (and a fixed key at
    /// `fixed`, 0 for none).
    const fn movable_keys(mut self, fixed: usize, numkeys: usize) -> Command {
        self.movable = Some(Movable { fixed, numkeys });
        self
    }

    /// Positions of the key arguments in `args` (name at 0): from first/last/step, or for a
    /// command whose keys move, its fixed key and the `numkeys` keys (as many as are there).
    pub fn key_indexes(&self, args: &[Bytes]) -> impl Iterator<Item = usize> {
        let argc = args.len();
        let (fixed, moving, positions) = match self.movable {
            Some(m) => {
                let n = args
                    .get(m.numkeys)
                    .and_then(|a| super::args::parse_i64(a))
                    .unwrap_or(0)
                    .max(0) as usize;
                let start = (m.numkeys + 1).min(argc);
                let end = start.saturating_add(n).min(argc);
                let fixed = (m.fixed > 0 && m.fixed < argc).then_some(m.fixed);
                (fixed, start..end, (0..0).step_by(1))
            }
            None => (None, 0..0, self.key_positions(argc)),
        };
        fixed.into_iter().chain(moving).chain(positions)
    }

    /// Whether a command whose keys move has a `numkeys` that counts arguments that are
    /// there (commands with fixed key positions always do). [`Command::key_indexes`] takes
    /// as many as there are either way.
    pub fn numkeys_ok(&self, args: &[Bytes]) -> bool {
        self.movable.is_none_or(|m| {
            let left = args.len().saturating_sub(m.numkeys + 1) as i64;
            args.get(m.numkeys)
                .and_then(|a| super::args::parse_i64(a))
                .is_some_and(|n| (0..=left).contains(&n))
        })
    }

    /// Positions of the key arguments from first/last/step alone.
    fn key_positions(&self, argc: usize) -> std::iter::StepBy<std::ops::Range<usize>> {
        let first = self.first_key.max(0) as usize;
        let last = if self.last_key < 0 {
            (argc as i64 + self.last_key as i64).max(0) as usize
        } else {
            self.last_key as usize
        };
        let step = self.step.max(1) as usize;
        let range = if first == 0 || first >= argc {
            0..0
        } else {
            first..last.min(argc - 1) + 1
        };
        range.step_by(step)
    }

    /// The flags COMMAND reports, in Redis's words.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = FLAG_NAMES
            .iter()
            .filter(|(f, _)| self.flags & f != 0)
            .map(|(_, n)| *n)
            .collect();
        if self.movable.is_some() {
            names.push("movablekeys");
        }
        names
    }

    /// This command with the tips COMMAND reports for it (Redis 7's hints to clients:
    /// nondeterministic output, how a cluster client should route it and merge the replies).
    pub const fn with_tips(mut self, tips: &'static [&'static str]) -> Command {
        self.tips = tips;
        self
    }
}

#[allow(clippy::too_many_arguments)]
pub const fn cmd(
    name: &'static str,
    arity: i32,
    flags: u32,
    keys: (i32, i32, i32),
    acl: &'static [&'static str],
    group: &'static str,
    summary: &'static str,
    handler: Handler,
) -> Command {
    Command {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
        acl,
        group,
        summary,
        handler,
        subcommands: &[],
        movable: None,
        tips: &[],
    }
}

const fn container(
    name: &'static str,
    arity: i32,
    flags: u32,
    acl: &'static [&'static str],
    group: &'static str,
    summary: &'static str,
    subcommands: &'static [Command],
) -> Command {
    Command {
        name,
        arity,
        flags,
        first_key: 0,
        last_key: 0,
        step: 0,
        acl,
        group,
        summary,
        handler: conn::container_without_subcommand,
        subcommands,
        movable: None,
        tips: &[],
    }
}

const NOKEY: (i32, i32, i32) = (0, 0, 0);
const KEY1: (i32, i32, i32) = (1, 1, 1);
const ALLKEYS: (i32, i32, i32) = (1, -1, 1);

const S_STR: &[&str] = &["string"];
const S_KEY: &[&str] = &["keyspace"];
const S_HASH: &[&str] = &["hash"];
const S_SET: &[&str] = &["set"];
const S_LIST: &[&str] = &["list"];
const S_ZSET: &[&str] = &["sortedset"];
const S_CONN: &[&str] = &["connection"];
const S_TX: &[&str] = &["transaction"];
const S_SCRIPT: &[&str] = &["scripting"];
const S_SRV: &[&str] = &["admin", "dangerous"];
const S_SLOW: &[&str] = &["slow"];

const W: u32 = WRITE | DENYOOM;
const WF: u32 = WRITE | DENYOOM | FAST;
const RF: u32 = READONLY | FAST;

pub static COMMANDS: &[Command] = &[
    // Connection
    cmd("ping", -1, FAST | LOCAL, NOKEY, S_CONN, "connection", "Returns the server's liveliness response.", conn::ping).with_tips(&["request_policy:all_shards", "response_policy:all_succeeded"]),
    cmd("echo", 2, FAST | LOADING | STALE | LOCAL, NOKEY, S_CONN, "connection", "Returns the given string.", conn::echo),
    cmd("hello", -1, NO_AUTH | FAST | NOSCRIPT | LOADING | STALE | ALLOW_BUSY | LOCAL, NOKEY, S_CONN, "connection", "Handshakes with the server.", conn::hello),
    cmd("auth", -2, NO_AUTH | FAST | NOSCRIPT | LOADING | STALE | ALLOW_BUSY | LOCAL, NOKEY, S_CONN, "connection", "Authenticates the connection.", conn::auth),
    cmd("select", 2, FAST | LOADING | STALE | LOCAL, NOKEY, S_CONN, "connection", "Changes the selected database.", conn::select),
    cmd("quit", -1, NO_AUTH | FAST | NOSCRIPT | LOADING | STALE | ALLOW_BUSY | NOQUEUE | LOCAL, NOKEY, S_CONN, "connection", "Closes the connection.", conn::quit),
    cmd("reset", 1, NO_AUTH | FAST | NOSCRIPT | LOADING | STALE | ALLOW_BUSY | NOQUEUE | LOCAL, NOKEY, S_CONN, "connection", "Resets the connection.", conn::reset),
    container("client", -2, LOCAL, S_SLOW, "connection", "A container for client connection commands.", conn::CLIENT),
    container("acl", -2, LOCAL, S_SLOW, "server", "A container for Access List Control commands.", acl::ACL),
    container("command", -1, LOADING | STALE | LOCAL, S_CONN, "server", "Returns detailed information about all commands.", conn::COMMAND).with_tips(&["nondeterministic_output_order"]),
    // Strings
    cmd("get", 2, RF | CACHED, KEY1, S_STR, "string", "Returns the string value of a key.", strings::get),
    cmd("set", -3, W, KEY1, S_STR, "string", "Sets the string value of a key.", strings::set),
    cmd("setnx", 3, WF, KEY1, S_STR, "string", "Sets the value of a key only when it does not exist.", strings::setnx),
    cmd("setex", 4, W, KEY1, S_STR, "string", "Sets the value and expiration time of a key.", strings::setex),
    cmd("psetex", 4, W, KEY1, S_STR, "string", "Sets the value and expiration in milliseconds of a key.", strings::psetex),
    cmd("getset", 3, WF, KEY1, S_STR, "string", "Returns the previous value of a key after setting it.", strings::getset),
    cmd("getdel", 2, WRITE | FAST, KEY1, S_STR, "string", "Returns the value of a key after deleting it.", strings::getdel),
    cmd("getex", -2, WRITE | FAST, KEY1, S_STR, "string", "Returns the value of a key after setting its expiration.", strings::getex),
    cmd("mget", -2, RF | CACHED, ALLKEYS, S_STR, "string", "Returns the values of one or more keys.", strings::mget).with_tips(&["request_policy:multi_shard"]),
    cmd("mset", -3, W, (1, -1, 2), S_STR, "string", "Sets the values of multiple keys.", strings::mset).with_tips(&["request_policy:multi_shard", "response_policy:all_succeeded"]),
    cmd("msetnx", -3, W, (1, -1, 2), S_STR, "string", "Sets multiple keys only when none exists.", strings::msetnx).with_tips(&["request_policy:multi_shard", "response_policy:agg_min"]),
    cmd("append", 3, WF, KEY1, S_STR, "string", "Appends a string to the value of a key.", strings::append),
    cmd("strlen", 2, RF, KEY1, S_STR, "string", "Returns the length of a string value.", strings::strlen),
    cmd("incr", 2, WF, KEY1, S_STR, "string", "Increments the integer value of a key by one.", strings::incr),
    cmd("decr", 2, WF, KEY1, S_STR, "string", "Decrements the integer value of a key by one.", strings::decr),
    cmd("incrby", 3, WF, KEY1, S_STR, "string", "Increments the integer value of a key by a number.", strings::incrby),
    cmd("decrby", 3, WF, KEY1, S_STR, "string", "Decrements a number from the integer value of a key.", strings::decrby),
    cmd("incrbyfloat", 3, WF, KEY1, S_STR, "string", "Increment the floating point value of a key by a number.", strings::incrbyfloat),
    cmd("getrange", 4, READONLY, KEY1, S_STR, "string", "Returns a substring of the string stored at a key.", strings::getrange),
    cmd("substr", 4, READONLY, KEY1, S_STR, "string", "Returns a substring from a string value.", strings::getrange),
    cmd("setrange", 4, W, KEY1, S_STR, "string", "Overwrites a part of a string value from an offset.", strings::setrange),
    // Hashes
    cmd("hset", -4, WF, KEY1, S_HASH, "hash", "Creates or modifies the value of a field in a hash.", hashes::hset),
    cmd("hmset", -4, WF, KEY1, S_HASH, "hash", "Sets the values of multiple fields.", hashes::hmset),
    cmd("hsetnx", 4, WF, KEY1, S_HASH, "hash", "Sets the value of a field only when it doesn't exist.", hashes::hsetnx),
    cmd("hget", 3, RF, KEY1, S_HASH, "hash", "Returns the value of a field in a hash.", hashes::hget),
    cmd("hmget", -3, RF, KEY1, S_HASH, "hash", "Returns the values of all fields in a hash.", hashes::hmget),
    cmd("hgetall", 2, READONLY, KEY1, S_HASH, "hash", "Returns all fields and values in a hash.", hashes::hgetall).with_tips(&["nondeterministic_output_order"]),
    cmd("hdel", -3, WRITE | FAST, KEY1, S_HASH, "hash", "Deletes one or more fields and their values from a hash.", hashes::hdel),
    cmd("hexists", 3, RF, KEY1, S_HASH, "hash", "Determines whether a field exists in a hash.", hashes::hexists),
    cmd("hincrby", 4, WF, KEY1, S_HASH, "hash", "Increments the integer value of a field in a hash.", hashes::hincrby),
    cmd("hincrbyfloat", 4, WF, KEY1, S_HASH, "hash", "Increments the floating point value of a field.", hashes::hincrbyfloat),
    cmd("hlen", 2, RF, KEY1, S_HASH, "hash", "Returns the number of fields in a hash.", hashes::hlen),
    cmd("hstrlen", 3, RF, KEY1, S_HASH, "hash", "Returns the length of the value of a field.", hashes::hstrlen),
    cmd("hkeys", 2, READONLY, KEY1, S_HASH, "hash", "Returns all fields in a hash.", hashes::hkeys).with_tips(&["nondeterministic_output_order"]),
    cmd("hvals", 2, READONLY, KEY1, S_HASH, "hash", "Returns all values in a hash.", hashes::hvals).with_tips(&["nondeterministic_output_order"]),
    cmd("hrandfield", -2, READONLY, KEY1, S_HASH, "hash", "Returns random fields from a hash.", hashes::hrandfield).with_tips(&["nondeterministic_output"]),
    cmd("hscan", -3, READONLY, KEY1, S_HASH, "hash", "Iterates over fields and values of a hash.", hashes::hscan).with_tips(&["nondeterministic_output"]),
    // Sets
    cmd("sadd", -3, WF, KEY1, S_SET, "set", "Adds one or more members to a set.", sets::sadd),
    cmd("srem", -3, WRITE | FAST, KEY1, S_SET, "set", "Removes one or more members from a set.", sets::srem),
    cmd("smembers", 2, READONLY, KEY1, S_SET, "set", "Returns all members of a set.", sets::smembers).with_tips(&["nondeterministic_output_order"]),
    cmd("sismember", 3, RF, KEY1, S_SET, "set", "Determines whether a member belongs to a set.", sets::sismember),
    cmd("smismember", -3, RF, KEY1, S_SET, "set", "Determines whether multiple members belong to a set.", sets::smismember),
    cmd("scard", 2, RF, KEY1, S_SET, "set", "Returns the number of members in a set.", sets::scard),
    cmd("spop", -2, WRITE | FAST, KEY1, S_SET, "set", "Returns one or more random members from a set after removing them.", sets::spop).with_tips(&["nondeterministic_output"]),
    cmd("srandmember", -2, READONLY, KEY1, S_SET, "set", "Get one or multiple random members from a set.", sets::srandmember).with_tips(&["nondeterministic_output"]),
    cmd("smove", 4, WRITE | FAST, (1, 2, 1), S_SET, "set", "Moves a member from one set to another.", sets::smove),
    cmd("sinter", -2, READONLY, ALLKEYS, S_SET, "set", "Returns the intersect of multiple sets.", sets::sinter).with_tips(&["nondeterministic_output_order"]),
    cmd("sunion", -2, READONLY, ALLKEYS, S_SET, "set", "Returns the union of multiple sets.", sets::sunion).with_tips(&["nondeterministic_output_order"]),
    cmd("sdiff", -2, READONLY, ALLKEYS, S_SET, "set", "Returns the difference of multiple sets.", sets::sdiff).with_tips(&["nondeterministic_output_order"]),
    cmd("sinterstore", -3, W, ALLKEYS, S_SET, "set", "Stores the intersect of multiple sets in a key.", sets::sinterstore),
    cmd("sunionstore", -3, W, ALLKEYS, S_SET, "set", "Stores the union of multiple sets in a key.", sets::sunionstore),
    cmd("sdiffstore", -3, W, ALLKEYS, S_SET, "set", "Stores the difference of multiple sets in a key.", sets::sdiffstore),
    cmd("sintercard", -3, READONLY, NOKEY, S_SET, "set", "Returns the number of members of the intersect of multiple sets.", sets::sintercard).movable_keys(0, 1),
    cmd("sscan", -3, READONLY, KEY1, S_SET, "set", "Iterates over members of a set.", sets::sscan).with_tips(&["nondeterministic_output"]),
    // Lists
    cmd("lpush", -3, WF, KEY1, S_LIST, "list", "Prepends one or more elements to a list.", lists::lpush),
    cmd("rpush", -3, WF, KEY1, S_LIST, "list", "Appends one or more elements to a list.", lists::rpush),
    cmd("lpushx", -3, WF, KEY1, S_LIST, "list", "Prepends one or more elements to a list only when the list exists.", lists::lpushx),
    cmd("rpushx", -3, WF, KEY1, S_LIST, "list", "Appends an element to a list only when the list exists.", lists::rpushx),
    cmd("lpop", -2, WRITE | FAST, KEY1, S_LIST, "list", "Returns the first elements in a list after removing it.", lists::lpop),
    cmd("rpop", -2, WRITE | FAST, KEY1, S_LIST, "list", "Returns and removes the last elements of a list.", lists::rpop),
    cmd("llen", 2, RF, KEY1, S_LIST, "list", "Returns the length of a list.", lists::llen),
    cmd("lrange", 4, READONLY, KEY1, S_LIST, "list", "Returns a range of elements from a list.", lists::lrange),
    cmd("lindex", 3, READONLY, KEY1, S_LIST, "list", "Returns an element from a list by its index.", lists::lindex),
    cmd("lset", 4, W, KEY1, S_LIST, "list", "Sets the value of an element in a list by its index.", lists::lset),
    cmd("linsert", 5, W, KEY1, S_LIST, "list", "Inserts an element before or after another element in a list.", lists::linsert),
    cmd("lrem", 4, WRITE, KEY1, S_LIST, "list", "Removes elements from a list.", lists::lrem),
    cmd("ltrim", 4, WRITE, KEY1, S_LIST, "list", "Removes elements from both ends a list.", lists::ltrim),
    cmd("lpos", -3, READONLY, KEY1, S_LIST, "list", "Returns the index of matching elements in a list.", lists::lpos),
    cmd("lmove", 5, W, (1, 2, 1), S_LIST, "list", "Returns an element after popping it from one list and pushing it to another.", lists::lmove),
    cmd("rpoplpush", 3, W, (1, 2, 1), S_LIST, "list", "Returns the last element of a list after removing and pushing it to another list.", lists::rpoplpush),
    cmd("blpop", -3, WRITE | BLOCKING | NOSCRIPT, (1, -2, 1), S_LIST, "list", "Removes and returns the first element in a list. Blocks until an element is available otherwise.", lists::blpop),
    cmd("brpop", -3, WRITE | BLOCKING | NOSCRIPT, (1, -2, 1), S_LIST, "list", "Removes and returns the last element in a list. Blocks until an element is available otherwise.", lists::brpop),
    cmd("lmpop", -4, WRITE, NOKEY, S_LIST, "list", "Returns multiple elements from a list after removing them. Deletes the list if the last element was popped.", lists::lmpop).movable_keys(0, 1),
    cmd("blmpop", -5, WRITE | BLOCKING, NOKEY, S_LIST, "list", "Pops the first element from one of multiple lists. Blocks until an element is available otherwise. Deletes the list if the last element was popped.", lists::blmpop).movable_keys(0, 2),
    cmd("blmove", 6, W | BLOCKING | NOSCRIPT, (1, 2, 1), S_LIST, "list", "Pops an element from a list, pushes it to another list and returns it. Blocks until an element is available otherwise.", lists::blmove),
    cmd("brpoplpush", 4, W | BLOCKING | NOSCRIPT, (1, 2, 1), S_LIST, "list", "Pops an element from a list, pushes it to another list and returns it. Block until an element is available otherwise.", lists::brpoplpush),
    // Sorted sets
    cmd("zadd", -4, WF, KEY1, S_ZSET, "sorted_set", "Adds one or more members to a sorted set, or updates their scores.", zsets::zadd),
    cmd("zincrby", 4, WF, KEY1, S_ZSET, "sorted_set", "Increments the score of a member in a sorted set.", zsets::zincrby),
    cmd("zrem", -3, WRITE | FAST, KEY1, S_ZSET, "sorted_set", "Removes one or more members from a sorted set.", zsets::zrem),
    cmd("zcard", 2, RF, KEY1, S_ZSET, "sorted_set", "Returns the number of members in a sorted set.", zsets::zcard),
    cmd("zscore", 3, RF, KEY1, S_ZSET, "sorted_set", "Returns the score of a member in a sorted set.", zsets::zscore),
    cmd("zmscore", -3, RF, KEY1, S_ZSET, "sorted_set", "Returns the score of one or more members in a sorted set.", zsets::zmscore),
    cmd("zrank", 3, RF, KEY1, S_ZSET, "sorted_set", "Returns the index of a member in a sorted set ordered by ascending scores.", zsets::zrank),
    cmd("zrevrank", 3, RF, KEY1, S_ZSET, "sorted_set", "Returns the index of a member in a sorted set ordered by descending scores.", zsets::zrevrank),
    cmd("zcount", 4, RF, KEY1, S_ZSET, "sorted_set", "Returns the count of members in a sorted set that have scores within a range.", zsets::zcount),
    cmd("zlexcount", 4, RF, KEY1, S_ZSET, "sorted_set", "Returns the number of members in a sorted set within a lexicographical range.", zsets::zlexcount),
    cmd("zrange", -4, READONLY, KEY1, S_ZSET, "sorted_set", "Returns members in a sorted set within a range of indexes.", zsets::zrange),
    cmd("zrevrange", -4, READONLY, KEY1, S_ZSET, "sorted_set", "Returns members in a sorted set within a range of indexes in reverse order.", zsets::zrevrange),
    cmd("zrangebyscore", -4, READONLY, KEY1, S_ZSET, "sorted_set", "Returns members in a sorted set within a range of scores.", zsets::zrangebyscore),
    cmd("zrevrangebyscore", -4, READONLY, KEY1, S_ZSET, "sorted_set", "Returns members in a sorted set within a range of scores in reverse order.", zsets::zrevrangebyscore),
    cmd("zrangebylex", -4, READONLY, KEY1, S_ZSET, "sorted_set", "Returns members in a sorted set within a lexicographical range.", zsets::zrangebylex),
    cmd("zrevrangebylex", -4, READONLY, KEY1, S_ZSET, "sorted_set", "Returns members in a sorted set within a lexicographical range in reverse order.", zsets::zrevrangebylex),
    cmd("zremrangebyrank", 4, WRITE, KEY1, S_ZSET, "sorted_set", "Removes members in a sorted set within a range of indexes.", zsets::zremrangebyrank),
    cmd("zremrangebyscore", 4, WRITE, KEY1, S_ZSET, "sorted_set", "Removes members in a sorted set within a range of scores.", zsets::zremrangebyscore),
    cmd("zremrangebylex", 4, WRITE, KEY1, S_ZSET, "sorted_set", "Removes members in a sorted set within a lexicographical range.", zsets::zremrangebylex),
    cmd("zpopmin", -2, WRITE | FAST, KEY1, S_ZSET, "sorted_set", "Returns the lowest-scoring members from a sorted set after removing them.", zsets::zpopmin),
    cmd("zpopmax", -2, WRITE | FAST, KEY1, S_ZSET, "sorted_set", "Returns the highest-scoring members from a sorted set after removing them.", zsets::zpopmax),
    cmd("zunionstore", -4, W, KEY1, S_ZSET, "sorted_set", "Stores the union of multiple sorted sets in a key.", zsets::zunionstore).movable_keys(1, 2),
    cmd("zinterstore", -4, W, KEY1, S_ZSET, "sorted_set", "Stores the intersect of multiple sorted sets in a key.", zsets::zinterstore).movable_keys(1, 2),
    cmd("zunion", -3, READONLY, NOKEY, S_ZSET, "sorted_set", "Returns the union of multiple sorted sets.", zsets::zunion).movable_keys(0, 1),
    cmd("zinter", -3, READONLY, NOKEY, S_ZSET, "sorted_set", "Returns the intersect of multiple sorted sets.", zsets::zinter).movable_keys(0, 1),
    cmd("zdiff", -3, READONLY, NOKEY, S_ZSET, "sorted_set", "Returns the difference between multiple sorted sets.", zsets::zdiff).movable_keys(0, 1),
    cmd("zdiffstore", -4, W, KEY1, S_ZSET, "sorted_set", "Stores the difference of multiple sorted sets in a key.", zsets::zdiffstore).movable_keys(1, 2),
    cmd("zintercard", -3, READONLY, NOKEY, S_ZSET, "sorted_set", "Returns the number of members of the intersect of multiple sorted sets.", zsets::zintercard).movable_keys(0, 1),
    cmd("zrangestore", -5, W, (1, 2, 1), S_ZSET, "sorted_set", "Stores a range of members from sorted set in a key.", zsets::zrangestore),
    cmd("zrandmember", -2, READONLY, KEY1, S_ZSET, "sorted_set", "Returns one or more random members from a sorted set.", zsets::zrandmember).with_tips(&["nondeterministic_output"]),
    cmd("zmpop", -4, WRITE, NOKEY, S_ZSET, "sorted_set", "Returns the highest- or lowest-scoring members from one or more sorted sets after removing them. Deletes the sorted set if the last member was popped.", zsets::zmpop).movable_keys(0, 1),
    cmd("bzmpop", -5, WRITE | BLOCKING, NOKEY, S_ZSET, "sorted_set", "Removes and returns a member by score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.", zsets::bzmpop).movable_keys(0, 2),
    cmd("bzpopmin", -3, WRITE | BLOCKING | NOSCRIPT | FAST, (1, -2, 1), S_ZSET, "sorted_set", "Removes and returns the member with the lowest score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.", zsets::bzpopmin),
    cmd("bzpopmax", -3, WRITE | BLOCKING | NOSCRIPT | FAST, (1, -2, 1), S_ZSET, "sorted_set", "Removes and returns the member with the highest score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.", zsets::bzpopmax),
    cmd("zscan", -3, READONLY, KEY1, S_ZSET, "sorted_set", "Iterates over members and scores of a sorted set.", zsets::zscan).with_tips(&["nondeterministic_output"]),
    // Keys
    cmd("del", -2, WRITE, ALLKEYS, S_KEY, "generic", "Deletes one or more keys.", keys::del).with_tips(&["request_policy:multi_shard", "response_policy:agg_sum"]),
    cmd("unlink", -2, WRITE | FAST, ALLKEYS, S_KEY, "generic", "Asynchronously deletes one or more keys.", keys::del).with_tips(&["request_policy:multi_shard", "response_policy:agg_sum"]),
    cmd("exists", -2, RF, ALLKEYS, S_KEY, "generic", "Determines whether one or more keys exist.", keys::exists).with_tips(&["request_policy:multi_shard", "response_policy:agg_sum"]),
    cmd("type", 2, RF, KEY1, S_KEY, "generic", "Determines the type of value stored at a key.", keys::type_),
    cmd("expire", -3, WRITE | FAST, KEY1, S_KEY, "generic", "Sets the expiration time of a key in seconds.", keys::expire),
    cmd("pexpire", -3, WRITE | FAST, KEY1, S_KEY, "generic", "Sets the expiration time of a key in milliseconds.", keys::pexpire),
    cmd("expireat", -3, WRITE | FAST, KEY1, S_KEY, "generic", "Sets the expiration time of a key to a Unix timestamp.", keys::expireat),
    cmd("pexpireat", -3, WRITE | FAST, KEY1, S_KEY, "generic", "Sets the expiration time of a key to a Unix milliseconds timestamp.", keys::pexpireat),
    cmd("ttl", 2, RF, KEY1, S_KEY, "generic", "Returns the expiration time in seconds of a key.", keys::ttl).with_tips(&["nondeterministic_output"]),
    cmd("pttl", 2, RF, KEY1, S_KEY, "generic", "Returns the expiration time in milliseconds of a key.", keys::pttl).with_tips(&["nondeterministic_output"]),
    cmd("expiretime", 2, RF, KEY1, S_KEY, "generic", "Returns the expiration time of a key as a Unix timestamp.", keys::expiretime),
    cmd("pexpiretime", 2, RF, KEY1, S_KEY, "generic", "Returns the expiration time of a key as a Unix milliseconds timestamp.", keys::pexpiretime),
    cmd("persist", 2, WRITE | FAST, KEY1, S_KEY, "generic", "Removes the expiration time of a key.", keys::persist),
    cmd("touch", -2, RF, ALLKEYS, S_KEY, "generic", "Returns the number of existing keys out of those specified after updating the time they were last accessed.", keys::touch).with_tips(&["request_policy:multi_shard", "response_policy:agg_sum"]),
    cmd("keys", 2, READONLY, NOKEY, &["keyspace", "dangerous"], "generic", "Returns all key names that match a pattern.", keys::keys).with_tips(&["nondeterministic_output_order", "request_policy:all_shards"]),
    cmd("scan", -2, READONLY, NOKEY, S_KEY, "generic", "Iterates over the key names in the database.", keys::scan).with_tips(&["nondeterministic_output", "request_policy:special"]),
    cmd("rename", 3, WRITE, (1, 2, 1), S_KEY, "generic", "Renames a key and overwrites the destination.", keys::rename),
    cmd("renamenx", 3, WRITE | FAST, (1, 2, 1), S_KEY, "generic", "Renames a key only when the target key name doesn't exist.", keys::renamenx),
    cmd("randomkey", 1, READONLY, NOKEY, S_KEY, "generic", "Returns a random key name from the database.", keys::randomkey).with_tips(&["nondeterministic_output", "request_policy:all_shards"]),
    cmd("dbsize", 1, RF, NOKEY, S_KEY, "server", "Returns the number of keys in the database.", keys::dbsize).with_tips(&["request_policy:all_shards", "response_policy:agg_sum"]),
    cmd("flushdb", -1, WRITE | EXCLUSIVE, NOKEY, &["keyspace", "dangerous"], "server", "Remove all keys from the current database.", keys::flushdb).with_tips(&["request_policy:all_shards", "response_policy:all_succeeded"]),
    cmd("flushall", -1, WRITE | EXCLUSIVE, NOKEY, &["keyspace", "dangerous"], "server", "Removes all keys from all databases.", keys::flushall).with_tips(&["request_policy:all_shards", "response_policy:all_succeeded"]),
    cmd("swapdb", 3, WRITE | FAST | EXCLUSIVE, NOKEY, &["keyspace", "dangerous"], "server", "Swaps two Redis databases.", keys::swapdb),
    cmd("move", 3, WRITE | FAST | EXCLUSIVE, KEY1, S_KEY, "generic", "Moves a key to another database.", keys::move_),
    cmd("copy", -3, W | EXCLUSIVE, (1, 2, 1), S_KEY, "generic", "Copies the value of a key to a new key.", keys::copy),
    // Tags (Strata's own)
    cmd("tagadd", -3, WRITE | FAST, KEY1, &["keyspace", "fast"], "generic", "Attaches tags to a key (TAGINVAL removes every key carrying a tag).", tags::tagadd),
    cmd("taginval", -2, WRITE | EXCLUSIVE, NOKEY, &["keyspace", "slow"], "generic", "Deletes every key that carries any of the tags; returns how many.", tags::taginval),
    // Rate limiting (RATE is Strata's own; CL.THROTTLE is redis-cell's)
    cmd("rate", -2, WRITE | FAST | NOSCRIPT, KEY1, &["fast"], "generic", "Counts a call against a sliding-window rate limit: [allowed, limit, remaining, retry_after_ms, reset_after_ms].", rate::rate),
    cmd("cl.throttle", -5, WRITE | FAST | NOSCRIPT, KEY1, &["fast"], "generic", "GCRA rate limiting as redis-cell: [limited, limit, remaining, retry_after_s, reset_after_s].", rate::throttle),
    // The database tier (Strata's own)
    cmd("query", -2, DATABASE | NOSCRIPT, NOKEY, &["slow"], "database", "Runs an SQL statement: reads through the cache from replicas, writes on the primary.", query::not_in_transaction),
    cmd("db.status", 1, DATABASE | NOSCRIPT | LOCAL, NOKEY, &["admin", "slow"], "database", "Shows each PostgreSQL instance: role, lag, weight, CPU, response time, pools.", query::not_in_transaction),
    cmd("db.failover", -1, DATABASE | NOSCRIPT | ADMIN, NOKEY, &["admin", "slow", "dangerous"], "database", "Planned switchover: fences the primary, promotes a caught-up replica, rejoins the old primary.", query::not_in_transaction),
    cmd("db.track", -2, DATABASE | NOSCRIPT | ADMIN, NOKEY, &["admin", "slow", "dangerous"], "database", "Installs triggers so that writes made outside Strata invalidate the cache.", query::not_in_transaction),
    container("object", -2, 0, S_SLOW, "generic", "A container for object introspection commands.", keys::OBJECT),
    // Pub/sub
    cmd("subscribe", -2, PUBSUB | NOSCRIPT | LOADING | STALE, NOKEY, &["pubsub", "slow"], "pubsub", "Listens for messages published to channels.", pubsub::subscribe),
    cmd("unsubscribe", -1, PUBSUB | NOSCRIPT | LOADING | STALE, NOKEY, &["pubsub", "slow"], "pubsub", "Stops listening to messages posted to channels.", pubsub::unsubscribe),
    cmd("psubscribe", -2, PUBSUB | NOSCRIPT | LOADING | STALE, NOKEY, &["pubsub", "slow"], "pubsub", "Listens for messages published to channels that match one or more patterns.", pubsub::psubscribe),
    cmd("punsubscribe", -1, PUBSUB | NOSCRIPT | LOADING | STALE, NOKEY, &["pubsub", "slow"], "pubsub", "Stops listening to messages published to channels that match one or more patterns.", pubsub::punsubscribe),
    cmd("publish", 3, PUBSUB | LOADING | STALE | FAST, NOKEY, &["pubsub", "fast"], "pubsub", "Posts a message to a channel.", pubsub::publish),
    container("pubsub", -2, 0, S_SLOW, "pubsub", "A container for Pub/Sub commands.", pubsub::PUBSUB),
    // Transactions
    cmd("multi", 1, NOSCRIPT | FAST | ALLOW_BUSY | NOQUEUE | LOADING | STALE | LOCAL, NOKEY, S_TX, "transactions", "Starts a transaction.", tx::multi),
    cmd("exec", 1, NOSCRIPT | SKIP_SLOWLOG | LOADING | STALE | NOQUEUE | EXCLUSIVE, NOKEY, S_TX, "transactions", "Executes all commands in a transaction.", tx::exec),
    cmd("discard", 1, NOSCRIPT | FAST | ALLOW_BUSY | NOQUEUE | LOADING | STALE | LOCAL, NOKEY, S_TX, "transactions", "Discards a transaction.", tx::discard),
    cmd("watch", -2, NOSCRIPT | FAST | ALLOW_BUSY | NOQUEUE | LOADING | STALE, ALLKEYS, S_TX, "transactions", "Monitors changes to keys to determine the execution of a transaction.", tx::watch),
    cmd("unwatch", 1, NOSCRIPT | FAST | ALLOW_BUSY | LOADING | STALE, NOKEY, S_TX, "transactions", "Forgets about watched keys of a transaction.", tx::unwatch),
    // Scripting
    cmd("eval", -3, NOSCRIPT | SKIP_MONITOR | NO_MANDATORY_KEYS | STALE | EXCLUSIVE, NOKEY, S_SCRIPT, "scripting", "Executes a server-side Lua script.", scripting::eval).movable_keys(0, 2),
    cmd("evalsha", -3, NOSCRIPT | SKIP_MONITOR | NO_MANDATORY_KEYS | STALE | EXCLUSIVE, NOKEY, S_SCRIPT, "scripting", "Executes a server-side Lua script by SHA1 digest.", scripting::evalsha).movable_keys(0, 2),
    cmd("eval_ro", -3, NOSCRIPT | SKIP_MONITOR | NO_MANDATORY_KEYS | STALE | READONLY | EXCLUSIVE, NOKEY, S_SCRIPT, "scripting", "Executes a read-only server-side Lua script.", scripting::eval_ro).movable_keys(0, 2),
    cmd("evalsha_ro", -3, NOSCRIPT | SKIP_MONITOR | NO_MANDATORY_KEYS | STALE | READONLY | EXCLUSIVE, NOKEY, S_SCRIPT, "scripting", "Executes a read-only server-side Lua script by SHA1 digest.", scripting::evalsha_ro).movable_keys(0, 2),
    container("script", -2, 0, S_SLOW, "scripting", "A container for Lua scripts management commands.", scripting::SCRIPT),
    // Server
    cmd("info", -1, LOADING | STALE | LOCAL, NOKEY, &["slow", "dangerous"], "server", "Returns information and statistics about the server.", server::info).with_tips(&["nondeterministic_output", "request_policy:all_shards", "response_policy:special"]),
    container("config", -2, LOCAL, S_SLOW, "server", "A container for server configuration commands.", server::CONFIG),
    cmd("time", 1, LOADING | STALE | FAST | LOCAL, NOKEY, &["fast"], "server", "Returns the server time.", server::time).with_tips(&["nondeterministic_output"]),
    container("slowlog", -2, LOCAL, S_SLOW, "server", "A container for slow log commands.", server::SLOWLOG),
    container("memory", -2, LOCAL, S_SLOW, "server", "A container for memory diagnostics commands.", server::MEMORY),
    cmd("lastsave", 1, LOADING | STALE | FAST | LOCAL, NOKEY, &["fast", "admin", "dangerous"], "server", "Returns the Unix timestamp of the last successful save to disk.", server::lastsave).with_tips(&["nondeterministic_output"]),
    cmd("save", 1, ADMIN | NOSCRIPT | NO_ASYNC_LOADING | NO_MULTI | LOCAL, NOKEY, S_SRV, "server", "Synchronously saves the database(s) to disk.", server::save),
    cmd("bgsave", -1, ADMIN | NOSCRIPT | NO_ASYNC_LOADING | LOCAL, NOKEY, S_SRV, "server", "Asynchronously saves the database(s) to disk.", server::save),
    cmd("shutdown", -1, ADMIN | NOSCRIPT | ALLOW_BUSY | NO_MULTI | LOADING | STALE | NOQUEUE | LOCAL, NOKEY, S_SRV, "server", "Synchronously saves the database(s) to disk and shuts down the Redis server.", server::shutdown),
];

type Fixed = foldhash::fast::FixedState;

/// The table flattened for lookup: every command and subcommand has an index (for statistics).
pub struct Registry {
    pub all: Vec<&'static Command>,
    /// Full names as Redis prints them: `get`, `client|list`.
    pub full_names: Vec<String>,
    /// Keyed by the lower-case name's bytes, with a fast fixed hasher: every request looks its
    /// command up here (SipHash on `&str` was most of a PING's lookup).
    by_name: HashMap<&'static [u8], usize, Fixed>,
    subs: HashMap<(usize, &'static [u8]), usize, Fixed>,
    pub parent: Vec<Option<usize>>,
}

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut r = Registry {
        all: Vec::new(),
        full_names: Vec::new(),
        by_name: HashMap::default(),
        subs: HashMap::default(),
        parent: Vec::new(),
    };
    for c in COMMANDS {
        let i = r.all.len();
        r.all.push(c);
        r.full_names.push(c.name.to_string());
        r.parent.push(None);
        r.by_name.insert(c.name.as_bytes(), i);
        for s in c.subcommands {
            let j = r.all.len();
            r.all.push(s);
            r.full_names.push(format!("{}|{}", c.name, s.name));
            r.parent.push(Some(i));
            r.subs.insert((i, s.name.as_bytes()), j);
        }
    }
    r
});

/// Lower-cases a command word into a small buffer without allocating.
fn lower<'b>(word: &[u8], buf: &'b mut [u8; 32]) -> Option<&'b [u8]> {
    if word.len() > buf.len() {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(word) {
        *d = s.to_ascii_lowercase();
    }
    Some(&buf[..word.len()])
}

impl Registry {
    pub fn lookup(&self, name: &[u8]) -> Option<usize> {
        let mut buf = [0u8; 32];
        self.by_name.get(lower(name, &mut buf)?).copied()
    }

    pub fn lookup_sub(&self, parent: usize, name: &[u8]) -> Option<usize> {
        let mut buf = [0u8; 32];
        self.subs.get(&(parent, lower(name, &mut buf)?)).copied()
    }

    /// Redis's `lookupCommand`: the command `argv` names, or its subcommand when it is a
    /// container and a second word is given.
    pub fn lookup_command(&self, argv: &[Bytes]) -> Option<usize> {
        let idx = self.lookup(argv.first()?)?;
        match (self.all[idx].subcommands.is_empty(), argv.get(1)) {
            (false, Some(sub)) => self.lookup_sub(idx, sub),
            _ => Some(idx),
        }
    }

    /// Top-level commands (COMMAND COUNT / LIST / INFO without names).
    pub fn top_level(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.all.len()).filter(|&i| self.parent[i].is_none())
    }

    pub fn subcommands_of(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.all.len()).filter(move |&j| self.parent[j] == Some(i))
    }
}
