"""Differential tests: the same traffic against a real redis-server and against Strata.

* `test_random_commands_match_redis`: seeded random sequences of string, hash, key and
  transaction commands over a small keyspace, sent through redis-py on RESP2 and RESP3 to both
  servers; every reply (errors by their text) must be equal, then the whole keyspace.
* `test_wire_replies_match_redis`: raw RESP bytes, no client library in between, for a script of
  commands on RESP2 and after `HELLO 3`, so reply *types* (map vs array, `_` null, verbatim
  strings, ...) are compared exactly, not just what redis-py makes of them.

* `test_error_texts_match_redis`: commands with more than one fault, where the error Redis
  reports first is part of its behaviour.
* `test_incrbyfloat_formatting_matches_redis`: INCRBYFLOAT results Redis computes exactly.

The reference is Debian's redis-server (7.0); nothing here touches what Strata takes from a newer
Redis on purpose (CLIENT SETINFO, HELLO's 7.2 NOAUTH text).
"""
import random
import socket
import time

import pytest
import redis

SEEDS = [1, 2, 3, 4, 5, 6]
OPS_PER_SEED = 400


# --------------------------------------------------------------------------------------------
# Random command sequences through redis-py

KEYS = ["k1", "k2", "k3", "h1", "h2", "n1"]
FIELDS = ["f1", "f2", "f3", "n"]
# Float increments are exact binary fractions and values stay far from 2**53, so INCRBYFLOAT
# results do not depend on the float width (Redis computes in x87 long double); formatting
# of inexact results has its own test below, integer overflow its own tests in test_redis_py.
VALUES = ["0", "1", "-3", "10", "abc", "", "1.5", "-0", "007", " 1", "x" * 50]
FLOATS = ["0.5", "-1.5", "2", "1e3", "0.25", "abc", "2.5e-1", "-0"]
INTS = ["1", "-1", "5", "100", "0", "x", "1000000", "-1000000"]
BIG_TTL = ["1000", "2000", "5000"]
# Absolute expiry times (seconds) well after every relative TTL above.
ABS_BASE = int(time.time()) + 100_000


def gen_command(rng):
    k = rng.choice(KEYS)
    k2 = rng.choice(KEYS)
    f = rng.choice(FIELDS)
    v = rng.choice(VALUES)
    i = rng.choice(INTS)
    choices = [
        lambda: ["SET", k, v] + rng.choice([[], ["NX"], ["XX"], ["GET"], ["KEEPTTL"],
                                            ["EX", rng.choice(BIG_TTL)], ["NX", "GET"],
                                            ["PX", rng.choice(BIG_TTL) + "000"], ["XX", "GET"],
                                            ["EX", "0"], ["NX", "XX"]]),
        lambda: ["GET", k],
        lambda: ["GETSET", k, v],
        lambda: ["GETDEL", k],
        lambda: ["GETEX", k] + rng.choice([[], ["PERSIST"], ["EX", rng.choice(BIG_TTL)]]),
        lambda: ["SETNX", k, v],
        lambda: ["SETEX", k, rng.choice(BIG_TTL + ["0"]), v],
        lambda: ["MGET", k, k2, "nosuch"],
        lambda: ["MSET", k, v, k2, rng.choice(VALUES)],
        lambda: ["MSETNX", k, v, k2, rng.choice(VALUES)],
        lambda: ["APPEND", k, v],
        lambda: ["STRLEN", k],
        lambda: ["INCR", k],
        lambda: ["DECR", k],
        lambda: ["INCRBY", k, i],
        lambda: ["DECRBY", k, i],
        lambda: ["INCRBYFLOAT", k, rng.choice(FLOATS)],
        lambda: ["GETRANGE", k, str(rng.randint(-5, 5)), str(rng.randint(-5, 60))],
        lambda: ["SETRANGE", k, str(rng.randint(0, 8)), v],
        lambda: ["HSET", k, f, v] + rng.choice([[], [rng.choice(FIELDS), rng.choice(VALUES)]]),
        lambda: ["HSETNX", k, f, v],
        lambda: ["HGET", k, f],
        lambda: ["HMGET", k, f, rng.choice(FIELDS)],
        lambda: ["HGETALL", k],
        lambda: ["HDEL", k, f, rng.choice(FIELDS)],
        lambda: ["HEXISTS", k, f],
        lambda: ["HINCRBY", k, f, i],
        lambda: ["HINCRBYFLOAT", k, f, rng.choice(FLOATS)],
        lambda: ["HLEN", k],
        lambda: ["HSTRLEN", k, f],
        lambda: ["HKEYS", k],
        lambda: ["HVALS", k],
        lambda: ["DEL", k, k2],
        lambda: ["UNLINK", k],
        lambda: ["EXISTS", k, k2, k],
        lambda: ["TYPE", k],
        lambda: ["EXPIRE", k, rng.choice(BIG_TTL)] + rng.choice([[], ["NX"], ["XX"]]),
        # GT/LT compare expiry times: absolute ones, so the outcome cannot depend on how many
        # milliseconds passed between two relative TTLs.
        lambda: ["EXPIREAT", k, str(ABS_BASE + rng.choice([0, 1000, 2000]))]
        + rng.choice([[], ["NX"], ["XX"], ["GT"], ["LT"]]),
        lambda: ["PEXPIRE", k, rng.choice(BIG_TTL) + "000"],
        lambda: ["EXPIRE", k, "-1"],
        lambda: ["PERSIST", k],
        lambda: ["TTL", k],
        lambda: ["PTTL", k],
        lambda: ["EXPIRETIME", k],
        lambda: ["TOUCH", k, k2],
        lambda: ["RENAME", k, k2],
        lambda: ["RENAMENX", k, k2],
        lambda: ["COPY", k, k2] + rng.choice([[], ["REPLACE"]]),
        lambda: ["DBSIZE"],
        lambda: ["KEYS", rng.choice(["*", "k*", "h?", "[kn]1"])],
        lambda: ["MULTI_BLOCK", [gen_simple(rng) for _ in range(rng.randint(0, 3))]],
    ]
    return rng.choice(choices)()


def gen_simple(rng):
    while True:
        cmd = gen_command(rng)
        if cmd[0] != "MULTI_BLOCK":
            return cmd


def normalize(cmd, reply):
    """Makes replies that legitimately differ between two servers comparable."""
    name = cmd[0]
    if isinstance(reply, Exception):
        return ("error", type(reply).__name__, str(reply))
    if name in ("TTL", "PTTL", "EXPIRETIME"):
        return reply if reply < 0 else "has-ttl"
    if name in ("HKEYS", "HVALS", "KEYS"):
        return sorted(reply)
    if name == "HGETALL" and isinstance(reply, list):
        return dict(zip(reply[::2], reply[1::2]))
    return reply


def run(client, cmd):
    try:
        if cmd[0] == "MULTI_BLOCK":
            with client.pipeline(transaction=True) as p:
                for sub in cmd[1]:
                    p.execute_command(*sub)
                replies = p.execute(raise_on_error=False)
            return [normalize(sub, rep) for sub, rep in zip(cmd[1], replies)]
        return normalize(cmd, client.execute_command(*cmd))
    except redis.ResponseError as e:
        return ("error", type(e).__name__, str(e))


def snapshot(client):
    state = {}
    for key in sorted(client.keys("*")):
        t = client.type(key)
        if t == b"string":
            state[key] = ("string", client.get(key), client.ttl(key) >= 0)
        elif t == b"hash":
            state[key] = ("hash", client.hgetall(key), client.ttl(key) >= 0)
        else:
            state[key] = (t,)
    return state


def compare_traffic(ours, ref, commands, run, snapshot, label):
    """Flushes both servers, sends each of `commands` (generated lazily, so a generator may
    look at the reference first) to the reference and then to Strata, fails at the first reply
    that differs, naming the commands before it, and finally compares the keyspaces."""
    ours.flushall()
    ref.flushall()
    history = []
    for n, cmd in enumerate(commands):
        history.append(cmd)
        want = run(ref, cmd)
        got = run(ours, cmd)
        if got != want:
            recent = "\n".join(f"  {c}" for c in history[-8:])
            pytest.fail(
                f"op {n}: {cmd}\n  redis:  {want!r}\n  strata: {got!r}\n"
                f"last commands ({label}):\n{recent}"
            )
    assert snapshot(ours) == snapshot(ref)


@pytest.mark.parametrize("protocol", [3, 2], ids=["resp3", "resp2"])
@pytest.mark.parametrize("seed", SEEDS)
def test_random_commands_match_redis(strata, redis_server, protocol, seed):
    rng = random.Random(seed * 10 + protocol)
    ours = redis.Redis(port=strata.port, protocol=protocol)
    ref = redis.Redis(port=redis_server.port, protocol=protocol)
    try:
        commands = (gen_command(rng) for _ in range(OPS_PER_SEED))
        compare_traffic(ours, ref, commands, run, snapshot, f"seed {seed}, protocol {protocol}")
    finally:
        ours.close()
        ref.close()


# --------------------------------------------------------------------------------------------
# Raw wire replies


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read_reply(f):
    """Reads one complete RESP2/RESP3 reply and returns its raw bytes."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"connection closed mid-reply: {line!r}")
    kind, rest = line[:1], line[1:-2]
    if kind in (b"$", b"=", b"!"):
        n = int(rest)
        return line if n < 0 else line + f.read(n + 2)
    if kind in (b"*", b"~", b">", b"%", b"|"):
        n = int(rest)
        if n < 0:
            return line
        parts = [line]
        for _ in range(n * (2 if kind in (b"%", b"|") else 1)):
            parts.append(read_reply(f))
        return b"".join(parts)
    return line  # + - : _ , # (


class Wire:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.sock.makefile("rb")

    def call(self, *args):
        self.sock.sendall(encode(*args))
        return read_reply(self.f)

    def inline(self, line):
        self.sock.sendall(line)
        return read_reply(self.f)

    def close(self):
        self.f.close()
        self.sock.close()


# (command, how to compare): "exact" bytes, or "type" (first byte only, for replies carrying
# ids, versions, addresses or times).
WIRE_SCRIPT = [
    (("PING",), "exact"),
    (("PING", "hi"), "exact"),
    # Commands flagged no_multi are refused inside MULTI, which the refusal aborts.
    (("MULTI",), "exact"),
    (("SAVE",), "exact"),
    (("SHUTDOWN",), "exact"),
    (("EXEC",), "exact"),
    (("ECHO", "x\r\ny"), "exact"),
    (("SET", "s", "v"), "exact"),
    (("GET", "s"), "exact"),
    (("GET", "nosuch"), "exact"),
    (("MGET", "s", "nosuch"), "exact"),
    (("SET", "s", "w", "GET"), "exact"),
    (("SET", "s2", "w", "NX", "GET"), "exact"),
    (("SET", "s2", "x", "NX"), "exact"),
    (("SETNX", "s2", "x"), "exact"),
    (("INCR", "n"), "exact"),
    (("INCRBYFLOAT", "n", "1.5"), "exact"),
    (("INCR", "s"), "exact"),
    (("HSET", "h", "f", "v"), "exact"),
    (("HGETALL", "h"), "exact"),
    (("HGETALL", "nosuch"), "exact"),
    (("HGET", "h", "nosuch"), "exact"),
    (("HMGET", "h", "f", "nosuch"), "exact"),
    (("HINCRBYFLOAT", "h", "x", "2.5"), "exact"),
    (("HRANDFIELD", "h", "-1", "WITHVALUES"), "type"),
    (("HRANDFIELD", "nosuch", "1", "WITHVALUES"), "exact"),
    (("HRANDFIELD", "nosuch"), "exact"),
    (("HSCAN", "h", "0"), "type"),
    (("HSET", "one", "a", "1"), "exact"),
    (("HSCAN", "one", "0"), "exact"),
    (("HRANDFIELD", "one", "1", "WITHVALUES"), "exact"),
    (("EXISTS", "s", "h", "nosuch"), "exact"),
    (("TYPE", "h"), "exact"),
    (("TTL", "s"), "exact"),
    (("EXPIRE", "s", "100"), "exact"),
    (("PERSIST", "s"), "exact"),
    (("EXPIRETIME", "nosuch"), "exact"),
    (("OBJECT", "ENCODING", "nosuch"), "exact"),
    (("CONFIG", "GET", "maxmemory"), "exact"),
    (("CONFIG", "GET", "nosuchparam"), "exact"),
    (("CLIENT", "GETNAME"), "exact"),
    (("CLIENT", "SETNAME", "wire"), "exact"),
    (("CLIENT", "GETNAME"), "exact"),
    (("CLIENT", "ID"), "type"),
    (("CLIENT", "INFO"), "type"),
    (("CLIENT", "LIST"), "type"),
    (("INFO", "server"), "type"),
    (("TIME",), "type"),
    (("DBSIZE",), "exact"),
    (("KEYS", "nomatch*"), "exact"),
    (("SCAN", "0", "MATCH", "nomatch*"), "exact"),
    (("MEMORY", "USAGE", "nosuch"), "exact"),
    (("COMMAND", "INFO", "nosuchcommand"), "exact"),
    (("COMMAND", "COUNT"), "type"),
    (("MULTI",), "exact"),
    (("SET", "t", "1"), "exact"),
    (("HGETALL", "one"), "exact"),
    (("GET", "nosuch"), "exact"),
    (("INCR", "s"), "exact"),
    (("EXEC",), "exact"),
    (("WATCH", "t"), "exact"),
    (("@other", "SET", "t", "2"), "exact"),
    (("MULTI",), "exact"),
    (("GET", "t"), "exact"),
    (("EXEC",), "exact"),
    (("MULTI",), "exact"),
    (("SET", "onlykey"), "exact"),
    (("EXEC",), "exact"),
    (("EXEC",), "exact"),
    (("GET",), "exact"),
    (("NOSUCHCOMMAND", "a", "b"), "exact"),
    (("CLIENT", "NOSUCH"), "exact"),
    (("SELECT", "99"), "exact"),
    (("HELLO", "9"), "exact"),
    (("SELECT", "2"), "exact"),
    (("GET", "s"), "exact"),
    (("SELECT", "0"), "exact"),
    (("SET", b"\x00bin\r\n", b"\xff\x00\r\n"), "exact"),
    (("GET", b"\x00bin\r\n"), "exact"),
    (("@inline", b"PING\r\n"), "exact"),
    (("@inline", b"SET inl 'a b'\r\n"), "exact"),
    (("@inline", b"GET inl\r\n"), "exact"),
    (("@inline", b"ECHO \"x\\ty\"\r\n"), "exact"),
    (("@inline", b"\r\nPING\r\n"), "exact"),
    (("@pipelined", 200), "exact"),
    (("FLUSHALL",), "exact"),
]


def run_wire(port, protocol):
    w = Wire(port)
    other = Wire(port)
    out = []
    try:
        if protocol == 3:
            hello = w.call("HELLO", "3")
            out.append(("HELLO 3", hello[:1]))
        for args, how in WIRE_SCRIPT:
            if args[0] == "@other":
                reply = other.call(*args[1:])
            elif args[0] == "@inline":
                reply = w.inline(args[1])
            elif args[0] == "@pipelined":
                n = args[1]
                w.sock.sendall(b"".join(encode("INCR", "pipe") for _ in range(n)))
                reply = b"".join(read_reply(w.f) for _ in range(n))
            else:
                reply = w.call(*args)
            out.append((args, reply if how == "exact" else reply[:1]))
        # RESET goes back to RESP2, database 0, no name.
        out.append(("SELECT 5", w.call("SELECT", "5")))
        out.append(("RESET", w.call("RESET")))
        out.append(("after RESET: HSET", w.call("HSET", "r", "f", "v")))
        out.append(("after RESET: HGETALL", w.call("HGETALL", "r")))
        out.append(("after RESET: CLIENT GETNAME", w.call("CLIENT", "GETNAME")))
        out.append(("after RESET: DBSIZE", w.call("DBSIZE")))
        out.append(("after RESET: GET nosuch", w.call("GET", "nosuch")))
        out.append(("FLUSHALL", w.call("FLUSHALL")))
    finally:
        w.close()
        other.close()
    return out


@pytest.mark.parametrize("protocol", [3, 2], ids=["resp3", "resp2"])
def test_wire_replies_match_redis(strata, redis_server, protocol):
    redis.Redis(port=redis_server.port).flushall()
    redis.Redis(port=strata.port).flushall()
    want = run_wire(redis_server.port, protocol)
    got = run_wire(strata.port, protocol)
    mismatches = [
        f"{w_args}: redis {w_reply!r} strata {g_reply!r}"
        for (w_args, w_reply), (_, g_reply) in zip(want, got)
        if w_reply != g_reply
    ]
    assert not mismatches, "\n".join(mismatches)
    assert len(got) == len(want)


# --------------------------------------------------------------------------------------------
# Error texts and which fault Redis reports first


FAULTS = [
    ("INCRBYFLOAT", "h", "abc"),
    ("INCRBYFLOAT", "s", "abc"),
    ("INCRBY", "h", "abc"),
    ("INCRBY", "nosuch", "9223372036854775808"),
    ("DECRBY", "nosuch", "-9223372036854775808"),
    ("EXPIRE", "s", "x", "NX", "XX"),
    ("EXPIRE", "s", "10", "xx", "gt"),
    ("SET", "s", "v", "EX", "abc", "NX", "XX"),
    ("SET", "s", "v", "PX", "9223372036854775807"),
    ("SET", "s", "v", "EXAT", "0"),
    ("SET", "h", "v", "GET"),
    ("HINCRBY", "s", "f", "x"),
    ("HINCRBYFLOAT", "s", "f", "x"),
    ("HINCRBY", "h", "f", "9223372036854775807"),
    ("SETRANGE", "h", "-1", "x"),
    ("SETRANGE", "h", "0", "x"),
    ("GETRANGE", "h", "x", "1"),
    ("GETRANGE", "s", "0", "9223372036854775808"),
    ("GETEX", "h", "EX", "0"),
    ("GETEX", "nosuch", "EX", "0"),
    ("GETEX", "s", "EX", "-1"),
    ("GETEX", "s", "FOO"),
    ("SETEX", "h", "0", "v"),
    ("APPEND", "h", "x"),
    ("RENAME", "nosuch", "nosuch"),
    ("RENAME", "h", "h"),
    ("RENAMENX", "h", "h"),
    ("COPY", "s", "s"),
    ("COPY", "s", "x", "DB", "99"),
    ("COPY", "s", "x", "FOO"),
    ("MOVE", "s", "99"),
    ("MOVE", "s", "x"),
    ("SWAPDB", "0", "99"),
    ("SWAPDB", "a", "1"),
    ("SWAPDB", "0", "b"),
    ("SELECT", "1.5"),
    ("CONFIG", "SET", "maxmemory", "abc"),
    ("CONFIG", "SET", "maxclients", "x"),
    ("CONFIG", "SET", "maxmemory"),
    ("CLIENT", "KILL", "10.0.0.1:1"),
    ("CLIENT", "KILL", "ID", "x"),
    ("CLIENT", "KILL", "FOO", "x"),
    ("CLIENT", "SETNAME", "a", "b"),
    ("SCAN", "0", "COUNT", "0"),
    ("SCAN", "0", "COUNT", "x"),
    ("SCAN", "0", "FOO"),
    ("SCAN", "0", "MATCH"),
    ("HSCAN", "h", "0", "COUNT", "0"),
    ("HSCAN", "s", "0"),
    ("HRANDFIELD", "h", "x"),
    ("HRANDFIELD", "s", "1"),
    ("HRANDFIELD", "h", "1", "FOO"),
    ("HELLO", "3", "AUTH"),
    ("HELLO", "3", "FOO"),
    ("HELLO", "x"),
    ("AUTH", "a", "b", "c"),
    ("PING", "a", "b"),
    ("ECHO",),
    ("MEMORY", "USAGE", "s", "SAMPLES", "x"),
    ("MEMORY", "USAGE", "s", "FOO", "1"),
    ("FLUSHALL", "FOO"),
    ("FLUSHDB", "ASYNC", "SYNC"),
    ("OBJECT", "ENCODING"),
    ("OBJECT", "FOO", "s"),
    ("TOUCH",),
    ("KEYS",),
    ("MSETNX", "a", "1", "b"),
    ("HMSET", "h", "f"),
    ("HSETNX", "s", "f", "v"),
    ("HSTRLEN", "s", "f"),
    ("EXPIREAT", "s", "x"),
    ("PEXPIREAT", "s", "-1", "NX"),
    ("TTL", "h", "x"),
    ("TYPE",),
    ("DBSIZE", "x"),
    ("TIME", "x"),
    ("SLOWLOG", "GET", "x"),
    ("SLOWLOG", "FOO"),
    ("CONFIG", "FOO"),
    ("COMMAND", "FOO"),
    ("MULTI", "x"),
    ("UNWATCH", "x"),
    ("WATCH",),
]


@pytest.mark.parametrize("args", FAULTS, ids=lambda a: " ".join(a))
def test_error_texts_match_redis(strata, redis_server, args):
    results = []
    for port in (redis_server.port, strata.port):
        c = redis.Redis(port=port, protocol=3, single_connection_client=True)
        try:
            c.flushall()
            c.set("s", "v")
            c.hset("h", "f", "1")
            c.connection.send_command(*args)
            try:
                results.append(("ok", c.connection.read_response()))
            except redis.ResponseError as e:
                results.append(("error", str(e)))
        finally:
            c.close()
    want, got = results
    assert got == want


@pytest.mark.parametrize("start,increment", [
    ("0.1", "0.2"),
    ("10.5", "0.1"),
    ("5.0e3", "1"),
    ("3.14159265358979", "0"),
    ("9223372036854775807", "2"),
    ("1e17", "1"),
    ("-1.5", "1.5"),
])
def test_incrbyfloat_formatting_matches_redis(strata, redis_server, start, increment):
    results = []
    for port in (redis_server.port, strata.port):
        c = redis.Redis(port=port)
        try:
            c.set("f", start)
            c.incrbyfloat("f", increment)
            results.append(c.get("f"))
        finally:
            c.close()
    want, got = results
    assert got == want


# --------------------------------------------------------------------------------------------
# Scripts: EVAL replies byte for byte (Lua to RESP conversion, redis.call/pcall results and
# errors, cjson and bit, the sandbox, error texts with the script's sha)

SCRIPTS = [
    'return 3.7',
    'return -3.7',
    'return 2^53',
    'return 1e20',
    'return -0.0',
    'return 0/0',
    'return 1/0',
    'return true',
    'return false',
    'return nil',
    'return {1, 2, nil, 4}',
    "return {1, {2, {3, 'x'}}, 'y'}",
    'return {a=1}',
    "return {err='my error'}",
    "return {err='-NOPE nope'}",
    "return {ok='fine'}",
    "return redis.error_reply('boom')",
    "return redis.error_reply('ERR boom')",
    "return redis.status_reply('PONG2')",
    'return {ok=1}',
    'return {err=1}',
    "return {1, true, false, 'a'}",
    "return redis.call('GET', KEYS[1])",
    "return redis.call('GET', 'nosuch')",
    "return type(redis.call('GET', 'nosuch'))",
    "return redis.call('INCR', 'n')",
    "return type(redis.call('INCR', 'n'))",
    "return redis.call('LRANGE', 'l', 0, -1)",
    "return redis.call('HGETALL', 'h')",
    "return redis.call('SET', 'x', 'y')",
    "return type(redis.call('SET', 'x', 'y'))",
    "return redis.call('SET', 'x', 'y')['ok']",
    "return redis.pcall('INCR', KEYS[1])",
    "local r = redis.pcall('INCR', KEYS[1]); return type(r)",
    "local r = redis.pcall('INCR', KEYS[1]); return r['err']",
    "return redis.call('INCR', KEYS[1])",
    "return redis.call('NOSUCH')",
    "return redis.pcall('NOSUCH')",
    "return redis.call('GET')",
    'return redis.call()',
    'return redis.call(1)',
    "return redis.call('GET', {})",
    'return ARGV[1] .. ARGV[2]',
    'return #KEYS + #ARGV',
    'return tonumber(ARGV[2]) + 1',
    'return cjson.encode({1, 2, 3})',
    'return cjson.encode({a=1})',
    'return cjson.encode({})',
    "return cjson.encode({1.5, 'x', true, false})",
    'return cjson.encode(1e20)',
    'return cjson.encode(0.1)',
    'return cjson.encode(cjson.null)',
    'return cjson.decode(\'[1,2,{"a":null}]\')[3][\'a\'] == cjson.null and 1 or 0',
    'return cjson.decode(\'{"a":[1,2,3]}\')[\'a\'][2]',
    "return cjson.decode('[1.5]')[1] * 2",
    "return cjson.decode('not json')",
    'return bit.band(0xff, 0x0f)',
    'return bit.tohex(255)',
    'return bit.bor(1, 2, 4)',
    'return bit.lshift(1, 40)',
    'return bit.tobit(2^32 + 5)',
    "return string.format('%d %s %5.2f', 42, 'x', 3.14159)",
    'return tostring(1e15)',
    'return tostring(1e16)',
    'return tostring(0.1)',
    'return tostring(123456789012)',
    "return string.rep('ab', 3)",
    "return table.concat({1, 2, 3}, ',')",
    'return math.floor(-3.5)',
    'return math.huge',
    'return type(loadstring)',
    'return type(os)',
    'return type(io)',
    'return type(dofile)',
    '---',
    "return redis.sha1hex('')",
    'x = 1',
    'return undefined_var',
    "error('custom')",
    "error({err='tbl'})",
    "return redis.call('SET', KEYS[1], ARGV[1], 'PX')",
    "redis.log(redis.LOG_WARNING, 'hello'); return 1",
    'return redis.REPL_ALL',
    'return redis.setresp(3)',
    "redis.setresp(3); return redis.call('HGETALL', 'h')",
    "redis.setresp(3); return type(redis.call('HGETALL', 'h'))",
    'return {double=3.14}',
    'return {map={a=1}}',
    'return {set={a=true}}',
    "return {big_number='123'}",
    "return redis.call('PING')",
    "return redis.call('ECHO', 'x')",
    "return 'a' + 1",
    "return #redis.call('KEYS', '*')",
    'local t = {}; for i = 1, 5 do t[i] = i * 1.5 end; return t',
    'return {0.5, -0.5, 1.999}',
    "return string.byte('A')",
    'return string.char(72, 105)',
    "return select('#', 1, 2, 3)",
    'return unpack({1, 2, 3})',
    "return pcall(error, 'e')",
    "local ok, e = pcall(error, 'e'); return e",
    "local ok, e = pcall(redis.call, 'INCR', KEYS[1]); return e",
    "local ok, e = pcall(redis.call, 'NOSUCH'); return e",
    "return redis.call('EVAL', 'return 1', 0)",
    "return redis.call('MULTI')",
    "return redis.call('BLPOP', 'l', 0)",
    "return redis.call('SUBSCRIBE', 'c')",
    "redis.call('ZADD', 'zz', 1.5, 'a', 2, 'b'); return redis.call('ZRANGE', 'zz', 0, -1, 'WITHSCORES')",
    "redis.setresp(3); redis.call('ZADD', 'zz', 1.5, 'a', 2, 'b'); return redis.call('ZRANGE', 'zz', 0, -1, 'WITHSCORES')",
    "redis.setresp(3); return redis.call('ZSCORE', 'zz', 'a')",
    "redis.setresp(3); local r = redis.call('ZSCORE', 'zz', 'a'); return type(r) == 'table' and r['double'] or r",
    "redis.setresp(3); redis.call('SADD', 'ss', 'x'); return redis.call('SMEMBERS', 'ss')",
    "redis.setresp(3); local r = redis.call('SMEMBERS', 'ss'); return type(r['set'])",
    "redis.setresp(3); local r = redis.call('HGETALL', 'h'); return r['map']['f']",
    "redis.setresp(3); return redis.call('HGETALL', 'h')",
    "redis.setresp(3); return redis.call('GET', 'nosuch')",
    "redis.setresp(3); return type(redis.call('GET', 'nosuch'))",
    "redis.setresp(3); return redis.call('EXISTS', 'h') == 1",
    "redis.setresp(3); return redis.call('HELLO')",
    "return redis.call('ZPOPMIN', 'zz')",
    "redis.setresp(3); return redis.call('ZPOPMIN', 'zz', 5)",
    "return redis.call('LPOS', 'l', 'a', 'COUNT', 0)",
    "return redis.call('OBJECT', 'ENCODING', 'l')",
    "return redis.call('TYPE', 'l')",
    "return type(redis.call('TYPE', 'l'))",
    "return redis.call('TYPE', 'l')['ok']",
    "return {1.5, redis.call('INCRBYFLOAT', 'fl', '1.5')}",
    'redis.setresp(3); return {double=1/0}',
    'redis.setresp(3); return {double=0/0}',
    'return redis.setresp(4)',
    "return redis.call('SINTERCARD', 1, 'ss', 'LIMIT', 'x')",
    "return redis.pcall('ZADD', 'zz', 'nan', 'x')",
    "return redis.call('SPOP', 'ss', 0)",
    "return redis.call('DBSIZE') >= 0",
]


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_scripts_match_redis(strata, redis_server, protocol):
    ours, ref = Wire(strata.port), Wire(redis_server.port)
    try:
        for w in (ours, ref):
            if protocol == 3:
                w.call("HELLO", "3")
            w.call("FLUSHALL")
            for setup in (["SET", "str", "hello"], ["SET", "n", "10"], ["RPUSH", "l", "a", "b"],
                          ["HSET", "h", "f", "v"]):
                w.call(*setup)
        for script in SCRIPTS:
            args = ["EVAL", script, "1", "str", "argv1", "2"]
            assert ours.call(*args) == ref.call(*args), script
    finally:
        ours.close()
        ref.close()


# --------------------------------------------------------------------------------------------
# The command table as COMMAND reports it


def command_table(port):
    c = redis.Redis(port=port)
    c.response_callbacks.clear()
    table = {}
    try:
        for entry in c.execute_command("COMMAND"):
            for e in [entry] + list(entry[9]):
                # arity, flags, first key, last key, step, ACL categories, tips
                table[e[0]] = (e[1], sorted(e[2]), e[3], e[4], e[5], sorted(e[6]), sorted(e[7]))
    finally:
        c.close()
    return table


def test_command_table_matches_redis(strata, redis_server):
    """Every command and subcommand both servers have is described alike: arity, flags (so
    `noscript` and `movablekeys`), key positions, ACL categories and tips."""
    ours, ref = command_table(strata.port), command_table(redis_server.port)
    common = sorted(set(ours) & set(ref))
    assert len(common) > 150
    differ = {name: (ours[name], ref[name]) for name in common if ours[name] != ref[name]}
    assert differ == {}
