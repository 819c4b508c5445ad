"""redis-py straight at Strata, on RESP3 (redis-py 8's default) and on RESP2.

Every test takes the `r` fixture, parametrized over both protocols, on a flushed server. The
expected values and error texts are Redis's: `STRATA_TEST_AGAINST_REDIS=1` runs this file
against a real redis-server to check the tests themselves (tests of things Redis 7.0 lacks,
such as CLIENT SETINFO, skip there).
"""
import datetime
import socket
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from conftest import RedisServerProcess, StrataProcess, against_redis, wait_until


@pytest.fixture(params=[3, 2], ids=["resp3", "resp2"])
def protocol(request):
    return request.param


@pytest.fixture
def r(strata, protocol):
    client = redis.Redis(port=strata.port, protocol=protocol)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def conn(strata, protocol):
    """One dedicated connection (for connection state: name, db, MULTI, WATCH)."""
    client = redis.Redis(port=strata.port, protocol=protocol, single_connection_client=True)
    yield client
    client.close()


def other_client(strata, protocol, **kw):
    return redis.Redis(port=strata.port, protocol=protocol, **kw)


def redis_7_2_only():
    if against_redis():
        pytest.skip("the reference redis-server (7.0) predates this feature")


# --------------------------------------------------------------------------------------------
# Connection


def test_ping_echo(r):
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.echo(b"\x00\xff\r\n") == b"\x00\xff\r\n"


def _s(value):
    """redis-py decodes some replies on one protocol and not the other: compare as str."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple)):
        return [_s(v) for v in value]
    if isinstance(value, dict):
        return {_s(k): _s(v) for k, v in value.items()}
    return value


def raw_call(conn, *args):
    """Sends one command on a single-connection client and returns the reply unparsed by
    redis-py's per-command callbacks (which turn e.g. QUEUED into False)."""
    conn.connection.send_command(*args)
    return conn.connection.read_response()


def _as_dict(reply):
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2]))


def test_hello(conn, protocol):
    reply = conn.execute_command("HELLO")
    assert isinstance(reply, dict if protocol == 3 else list)
    info = _as_dict(reply)
    assert info[b"server"] == b"redis"
    assert info[b"proto"] == protocol
    assert info[b"mode"] == b"standalone"
    assert info[b"role"] == b"master"
    assert info[b"modules"] == []
    assert isinstance(info[b"version"], bytes)
    assert info[b"id"] == conn.client_id()
    # Same protocol again, with SETNAME.
    info = _as_dict(conn.execute_command("HELLO", protocol, "SETNAME", "via-hello"))
    assert info[b"proto"] == protocol
    assert _s(conn.client_getname()) == "via-hello"
    with pytest.raises(redis.ResponseError) as e:
        conn.execute_command("HELLO", 4)
    assert str(e.value) == "NOPROTO unsupported protocol version"
    with pytest.raises(redis.ResponseError) as e:
        conn.execute_command("HELLO", 1)
    assert str(e.value) == "NOPROTO unsupported protocol version"
    # The connection still works on its protocol.
    conn.hset("h", mapping={"a": "1"})
    assert conn.hgetall("h") == {b"a": b"1"}


def test_select_sixteen_databases(strata, protocol, r):
    clients = [other_client(strata, protocol, db=i) for i in range(16)]
    try:
        for i, c in enumerate(clients):
            c.set("k", f"db{i}")
        for i, c in enumerate(clients):
            assert c.get("k") == f"db{i}".encode()
            assert c.dbsize() == 1
        clients[3].flushdb()
        assert clients[3].get("k") is None
        assert clients[4].get("k") == b"db4"
        keyspace = r.info("keyspace")
        assert "db3" not in keyspace
        assert keyspace["db4"]["keys"] == 1
        assert len(keyspace) == 15
    finally:
        for c in clients:
            c.close()
    for bad, msg in [(16, "DB index is out of range"), (-1, "DB index is out of range"),
                     ("x", "value is not an integer or out of range")]:
        with pytest.raises(redis.ResponseError) as e:
            r.execute_command("SELECT", bad)
        assert str(e.value) == msg


def test_client_id_setname_getname_list_info(conn, strata, protocol):
    my_id = conn.client_id()
    assert isinstance(my_id, int) and my_id > 0
    assert conn.client_getname() is None
    assert conn.client_setname("tester") is True
    assert _s(conn.client_getname()) == "tester"
    mine = [c for c in conn.client_list() if int(c["id"]) == my_id]
    assert len(mine) == 1
    assert mine[0]["name"] == "tester"
    assert str(mine[0]["resp"]) == str(protocol)
    assert mine[0]["db"] == "0"
    assert mine[0]["cmd"] == "client|list"
    assert mine[0]["addr"].startswith("127.0.0.1:")
    assert mine[0]["laddr"] == f"127.0.0.1:{strata.port}"
    info = conn.client_info()
    assert int(info["id"]) == my_id
    assert info["name"] == "tester"
    assert info["cmd"] == "client|info"
    with pytest.raises(redis.ResponseError) as e:
        conn.client_setname("has space")
    assert str(e.value) == "Client names cannot contain spaces, newlines or special characters."
    assert conn.client_setname("") is True
    assert conn.client_getname() is None
    with pytest.raises(redis.ResponseError) as e:
        conn.execute_command("CLIENT", "NOSUCH")
    assert str(e.value) == "unknown subcommand 'NOSUCH'. Try CLIENT HELP."


def test_client_setinfo(conn):
    redis_7_2_only()
    # redis-py 8 sends these on connect.
    info = conn.client_info()
    assert info["lib-name"] == "redis-py"
    assert info["lib-ver"] == redis.__version__
    assert conn.client_setinfo("lib-name", "mylib") is True
    assert conn.client_setinfo("lib-ver", "1.2.3") is True
    info = conn.client_info()
    assert (info["lib-name"], info["lib-ver"]) == ("mylib", "1.2.3")
    with pytest.raises(redis.ResponseError):
        conn.client_setinfo("lib-name", "has space")
    with pytest.raises(redis.ResponseError):
        conn.execute_command("CLIENT", "SETINFO", "nosuch", "x")


def test_client_kill(conn, strata, protocol):
    victim = other_client(strata, protocol, single_connection_client=True)
    try:
        victim_id = victim.client_id()
        assert victim_id in {int(c["id"]) for c in conn.client_list()}
        assert conn.client_kill_filter(_id=victim_id) == 1
        wait_until(lambda: victim_id not in {int(c["id"]) for c in conn.client_list()},
                   message="killed client to leave CLIENT LIST")
        assert conn.client_kill_filter(_id=victim_id) == 0
    finally:
        victim.close()


def test_client_list_counts_connections(r, strata, protocol):
    before = r.info("clients")["connected_clients"]
    extra = [other_client(strata, protocol, single_connection_client=True) for _ in range(3)]
    try:
        for c in extra:
            c.ping()
        wait_until(lambda: r.info("clients")["connected_clients"] == before + 3,
                   message="connected_clients to count 3 more")
    finally:
        for c in extra:
            c.close()
    wait_until(lambda: r.info("clients")["connected_clients"] == before,
               message="connected_clients to drop back")


def test_command_introspection(r):
    count = r.command_count()
    table = r.command()
    assert count == len(table)
    get = table["get"]
    assert get["arity"] == 2
    assert set(_s(get["flags"])) >= {"readonly", "fast"}
    assert (get["first_key_pos"], get["last_key_pos"], get["step_count"]) == (1, 1, 1)
    assert "@string" in _s(get["acl_categories"])
    assert table["set"]["arity"] == -3
    assert "write" in _s(table["set"]["flags"])
    mset = table["mset"]
    assert (mset["first_key_pos"], mset["last_key_pos"], mset["step_count"]) == (1, -1, 2)
    names = {n.decode() for n in r.command_list()}
    for name in ("get", "set", "hset", "multi", "exec", "watch", "client|list", "config|get"):
        assert name in names
    info = r.execute_command("COMMAND INFO", "get", "nosuchcommand")
    assert info[0][0] == b"get" and info[1] is None
    docs = _as_dict(_as_dict(r.execute_command("COMMAND DOCS", "get"))[b"get"])
    assert docs[b"group"] == b"string"


# --------------------------------------------------------------------------------------------
# Strings


def test_set_get_options(r):
    assert r.get("missing") is None
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("new", "x", xx=True) is None
    assert r.get("new") is None
    assert r.set("k", "w", xx=True) is True
    assert r.set("k", "x", get=True) == b"w"
    assert r.set("absent", "y", get=True) is None
    assert r.get("absent") == b"y"
    # NX + GET (allowed since Redis 7.0).
    assert r.set("k", "z", nx=True, get=True) == b"x"
    assert r.get("k") == b"x"
    # Expiry options.
    r.set("ex", "v", ex=100)
    assert 95 <= r.ttl("ex") <= 100
    r.set("px", "v", px=100_000)
    assert 95_000 <= r.pttl("px") <= 100_000
    now = int(time.time())
    r.set("exat", "v", exat=now + 100)
    assert r.expiretime("exat") == now + 100
    r.set("pxat", "v", pxat=(now + 100) * 1000 + 123)
    assert r.pexpiretime("pxat") == (now + 100) * 1000 + 123
    # A plain SET clears the TTL; KEEPTTL keeps it.
    r.set("ex", "v2", keepttl=True)
    assert 95 <= r.ttl("ex") <= 100
    r.set("ex", "v3")
    assert r.ttl("ex") == -1
    # SET overwrites any type.
    r.hset("h", "f", "1")
    assert r.set("h", "s") is True
    assert r.type("h") == b"string"


@pytest.mark.parametrize("args,message", [
    (("SET", "k", "v", "EX", 0), "invalid expire time in 'set' command"),
    (("SET", "k", "v", "EX", -5), "invalid expire time in 'set' command"),
    (("SET", "k", "v", "PX", 0), "invalid expire time in 'set' command"),
    (("SET", "k", "v", "EX", "abc"), "value is not an integer or out of range"),
    (("SET", "k", "v", "NX", "XX"), "syntax error"),
    (("SET", "k", "v", "EX", 10, "PX", 100), "syntax error"),
    (("SET", "k", "v", "KEEPTTL", "EX", 10), "syntax error"),
    (("SET", "k", "v", "BOGUS"), "syntax error"),
    (("SETEX", "k", 0, "v"), "invalid expire time in 'setex' command"),
    (("PSETEX", "k", -1, "v"), "invalid expire time in 'psetex' command"),
    (("GETEX", "k", "EX", 1, "PX", 1), "syntax error"),
    (("GETEX", "k", "PERSIST", "EX", 1), "syntax error"),
    (("INCRBY", "k", "1.5"), "value is not an integer or out of range"),
    (("INCRBYFLOAT", "k", "abc"), "value is not a valid float"),
    (("SETRANGE", "k", -1, "x"), "offset is out of range"),
    (("SETRANGE", "k", 600_000_000, "x"),
     "string exceeds maximum allowed size (proto-max-bulk-len)"),
    (("GETRANGE", "k", "a", 1), "value is not an integer or out of range"),
    (("MSET", "a"), "wrong number of arguments for 'mset' command"),
    (("MSET", "a", 1, "b"), "wrong number of arguments for 'mset' command"),
    (("GET",), "wrong number of arguments for 'get' command"),
    (("GET", "a", "b"), "wrong number of arguments for 'get' command"),
])
def test_string_errors(r, args, message):
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command(*args)
    assert str(e.value) == message
    assert r.exists("k") == 0


@pytest.mark.filterwarnings("ignore:Call to deprecated setex")
def test_setnx_setex_psetex_getset_getdel(r):
    assert r.setnx("n", "1") is True
    assert r.setnx("n", "2") is False
    assert r.get("n") == b"1"
    assert r.setex("se", 100, "v") is True
    assert 95 <= r.ttl("se") <= 100
    assert r.psetex("pse", 100_000, "v") is True
    assert 95_000 <= r.pttl("pse") <= 100_000
    assert r.getset("n", "3") == b"1"
    assert r.getset("gs-new", "x") is None
    r.expire("n", 100)
    assert r.getset("n", "4") == b"3"
    assert r.ttl("n") == -1  # GETSET clears the TTL
    assert r.getdel("n") == b"4"
    assert r.exists("n") == 0
    assert r.getdel("n") is None


def test_getex(r):
    assert r.getex("missing", ex=10) is None
    r.set("g", "v")
    assert r.getex("g") == b"v"
    assert r.ttl("g") == -1
    assert r.getex("g", ex=100) == b"v"
    assert 95 <= r.ttl("g") <= 100
    assert r.getex("g", px=50_000) == b"v"
    assert 45_000 <= r.pttl("g") <= 50_000
    now = int(time.time())
    assert r.getex("g", exat=now + 200) == b"v"
    assert r.expiretime("g") == now + 200
    assert r.getex("g", pxat=(now + 300) * 1000) == b"v"
    assert r.pexpiretime("g") == (now + 300) * 1000
    assert r.getex("g", persist=True) == b"v"
    assert r.ttl("g") == -1


def test_mget_mset_msetnx(r):
    assert r.mset({"a": "1", "b": "2", "c": "3"}) is True
    assert r.mget("a", "b", "nosuch", "c") == [b"1", b"2", None, b"3"]
    assert r.mget(["a"]) == [b"1"]
    r.hset("h", "f", "v")
    assert r.mget("a", "h") == [b"1", None]  # wrong type reads as nil in MGET
    assert r.msetnx({"x": "1", "a": "9"}) is False
    assert r.get("x") is None and r.get("a") == b"1"
    assert r.msetnx({"x": "1", "y": "2"}) is True
    assert r.mget("x", "y") == [b"1", b"2"]
    r.expire("a", 100)
    r.mset({"a": "new"})
    assert r.ttl("a") == -1


def test_append_strlen_getrange_setrange(r):
    assert r.append("s", "Hello") == 5
    assert r.append("s", " World") == 11
    assert r.strlen("s") == 11
    assert r.strlen("missing") == 0
    assert r.getrange("s", 0, 4) == b"Hello"
    assert r.getrange("s", -5, -1) == b"World"
    assert r.getrange("s", 6, 1000) == b"World"
    assert r.getrange("s", 5, 2) == b""
    assert r.getrange("s", -100, 2) == b"Hel"
    assert r.getrange("missing", 0, 10) == b""
    assert r.substr("s", 0, 0) == b"H"
    assert r.setrange("s", 6, "Redis") == 11
    assert r.get("s") == b"Hello Redis"
    assert r.setrange("pad", 5, "x") == 6
    assert r.get("pad") == b"\x00\x00\x00\x00\x00x"
    assert r.setrange("empty", 0, "") == 0
    assert r.exists("empty") == 0
    r.set("i", 10)
    assert r.append("i", "5") == 3
    assert r.incr("i") == 106


def test_incr_family(r):
    assert r.incr("n") == 1
    assert r.incr("n", 10) == 11
    assert r.incrby("n", -20) == -9
    assert r.decr("n") == -10
    assert r.decrby("n", 5) == -15
    assert r.get("n") == b"-15"
    r.set("n", 9223372036854775806)
    assert r.incr("n") == 9223372036854775807
    with pytest.raises(redis.ResponseError) as e:
        r.incr("n")
    assert str(e.value) == "increment or decrement would overflow"
    r.set("m", -9223372036854775808)
    with pytest.raises(redis.ResponseError) as e:
        r.decr("m")
    assert str(e.value) == "increment or decrement would overflow"
    for bad in ("abc", "1.5", " 1", "1 ", "", "99999999999999999999", "0x10"):
        r.set("bad", bad)
        with pytest.raises(redis.ResponseError) as e:
            r.incr("bad")
        assert str(e.value) == "value is not an integer or out of range", bad
        assert r.get("bad") == bad.encode()
    # INCR keeps the TTL.
    r.set("t", 1, ex=100)
    r.incr("t")
    assert 95 <= r.ttl("t") <= 100


def test_incrbyfloat(r):
    assert r.incrbyfloat("f", 1.5) == 1.5
    assert r.incrbyfloat("f", "-0.5") == 1.0
    assert r.get("f") == b"1"
    r.set("f", "10.50")
    assert r.incrbyfloat("f", 0.1) == pytest.approx(10.6)
    assert r.get("f") == b"10.6"
    r.set("f", "0.1")
    r.incrbyfloat("f", 0.2)
    assert r.get("f") == b"0.3"
    r.set("f", 3)
    r.incrbyfloat("f", "1.0e3")
    assert r.get("f") == b"1003"
    r.set("f", "5.0e3")
    assert r.incrbyfloat("f", 1) == 5001
    r.set("bad", "abc")
    with pytest.raises(redis.ResponseError) as e:
        r.incrbyfloat("bad", 1)
    assert str(e.value) == "value is not a valid float"
    with pytest.raises(redis.ResponseError) as e:
        r.incrbyfloat("f", "inf")
    assert str(e.value) == "increment would produce NaN or Infinity"


def test_string_commands_on_a_hash(r):
    r.hset("h", "f", "v")
    wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value"
    for call in (
        lambda: r.get("h"),
        lambda: r.append("h", "x"),
        lambda: r.incr("h"),
        lambda: r.incrbyfloat("h", 1),
        lambda: r.strlen("h"),
        lambda: r.getrange("h", 0, 1),
        lambda: r.setrange("h", 0, "x"),
        lambda: r.getdel("h"),
        lambda: r.getex("h", ex=1),
        lambda: r.getset("h", "x"),
        lambda: r.set("h", "x", get=True),
    ):
        with pytest.raises(redis.ResponseError) as e:
            call()
        assert str(e.value) == wrongtype
    assert r.hgetall("h") == {b"f": b"v"}
    assert r.ttl("h") == -1


# --------------------------------------------------------------------------------------------
# Hashes


def test_hash_commands(r):
    assert r.hset("h", "a", "1") == 1
    assert r.hset("h", mapping={"a": "2", "b": "3", "c": "4"}) == 2
    assert r.hget("h", "a") == b"2"
    assert r.hget("h", "nope") is None
    assert r.hget("missing", "a") is None
    assert r.execute_command("HMSET", "h", "d", "5", "e", "6") in (True, b"OK")
    assert r.hmget("h", ["a", "nope", "e"]) == [b"2", None, b"6"]
    assert r.hmget("missing", "a", "b") == [None, None]
    assert r.hsetnx("h", "a", "9") == 0
    assert r.hsetnx("h", "f", "7") == 1
    assert r.hgetall("h") == {b"a": b"2", b"b": b"3", b"c": b"4", b"d": b"5", b"e": b"6", b"f": b"7"}
    assert r.hgetall("missing") == {}
    assert r.hlen("h") == 6
    assert r.hlen("missing") == 0
    assert sorted(r.hkeys("h")) == [b"a", b"b", b"c", b"d", b"e", b"f"]
    assert sorted(r.hvals("h")) == [b"2", b"3", b"4", b"5", b"6", b"7"]
    assert r.hexists("h", "a") is True
    assert r.hexists("h", "zz") is False
    assert r.hstrlen("h", "a") == 1
    assert r.hstrlen("h", "zz") == 0
    assert r.hdel("h", "a", "b", "nope") == 2
    assert r.hdel("h", "a") == 0
    assert r.hlen("h") == 4
    # Deleting the last field deletes the key.
    r.hset("one", "f", "v")
    assert r.hdel("one", "f") == 1
    assert r.exists("one") == 0
    assert r.type("one") == b"none"
    assert r.type("h") == b"hash"


def test_hincrby_hincrbyfloat(r):
    assert r.hincrby("h", "n", 5) == 5
    assert r.hincrby("h", "n", -7) == -2
    r.hset("h", "big", 9223372036854775807)
    with pytest.raises(redis.ResponseError) as e:
        r.hincrby("h", "big", 1)
    assert str(e.value) == "increment or decrement would overflow"
    r.hset("h", "s", "abc")
    with pytest.raises(redis.ResponseError) as e:
        r.hincrby("h", "s", 1)
    assert str(e.value) == "hash value is not an integer"
    with pytest.raises(redis.ResponseError) as e:
        r.hincrbyfloat("h", "s", 1)
    assert str(e.value) == "hash value is not a float"
    assert r.hincrbyfloat("h", "f", 1.5) == 1.5
    assert r.hincrbyfloat("h", "f", 0.25) == 1.75
    assert r.hget("h", "f") == b"1.75"
    assert r.hincrbyfloat("h", "n", 0.5) == -1.5
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("HINCRBY", "h", "n", "x")
    assert str(e.value) == "value is not an integer or out of range"


def test_hrandfield(r):
    fields = {f"f{i}": str(i) for i in range(10)}
    r.hset("h", mapping=fields)
    assert r.hrandfield("h").decode() in fields
    assert r.hrandfield("missing") is None
    got = r.hrandfield("h", 5)
    assert len(got) == 5 and len(set(got)) == 5
    assert {g.decode() for g in got} <= set(fields)
    assert sorted(r.hrandfield("h", 100)) == sorted(f.encode() for f in fields)
    many = r.hrandfield("h", -30)
    assert len(many) == 30 and {g.decode() for g in many} <= set(fields)
    pairs = r.hrandfield("h", 3, withvalues=True)
    flat = pairs if not isinstance(pairs[0], list) else [x for p in pairs for x in p]
    assert len(flat) == 6
    for f, v in zip(flat[::2], flat[1::2]):
        assert fields[f.decode()] == v.decode()
    assert r.hrandfield("missing", 3) == []


def test_hash_errors(r):
    r.set("s", "v")
    for call in (lambda: r.hget("s", "f"), lambda: r.hset("s", "f", "v"),
                 lambda: r.hgetall("s"), lambda: r.hlen("s"), lambda: r.hincrby("s", "f", 1)):
        with pytest.raises(redis.ResponseError) as e:
            call()
        assert str(e.value) == "WRONGTYPE Operation against a key holding the wrong kind of value"
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("HSET", "h", "f")
    assert str(e.value) == "wrong number of arguments for 'hset' command"
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("HSET", "h", "f", "v", "g")
    assert str(e.value) == "wrong number of arguments for 'hset' command"
    assert r.exists("h") == 0


def test_hscan_iter(r):
    fields = {f"field:{i}": f"v{i}" for i in range(1000)}
    fields.update({f"other:{i}": "o" for i in range(50)})
    r.hset("big", mapping=fields)
    seen = {}
    for f, v in r.hscan_iter("big", count=37):
        seen[f.decode()] = v.decode()
    assert seen == fields
    matched = {f.decode() for f, _ in r.hscan_iter("big", match="other:*", count=10)}
    assert matched == {f"other:{i}" for i in range(50)}
    cursor, page = r.hscan("small-missing", 0)
    assert (cursor, page) == (0, {})
    r.hset("small", mapping={"a": "1", "b": "2"})
    cursor, page = r.hscan("small", 0)
    assert cursor == 0 and page == {b"a": b"1", b"b": b"2"}


# --------------------------------------------------------------------------------------------
# Keys and expiry


def test_del_unlink_exists_type(r):
    r.mset({"a": 1, "b": 2, "c": 3})
    r.hset("h", "f", "v")
    assert r.exists("a", "b", "nope") == 2
    assert r.exists("a", "a", "a") == 3
    assert r.type("a") == b"string"
    assert r.type("h") == b"hash"
    assert r.type("nope") == b"none"
    assert r.delete("a", "nope") == 1
    assert r.unlink("b", "c", "h") == 3
    assert r.exists("a", "b", "c", "h") == 0
    assert r.delete("a") == 0


def test_expire_family(r):
    r.set("k", "v")
    assert r.ttl("k") == -1
    assert r.pttl("k") == -1
    assert r.ttl("nope") == -2
    assert r.pttl("nope") == -2
    assert r.expiretime("k") == -1
    assert r.expiretime("nope") == -2
    assert r.pexpiretime("nope") == -2
    assert r.expire("k", 100) is True
    assert 95 <= r.ttl("k") <= 100
    assert r.pexpire("k", 200_000) is True
    assert 195_000 <= r.pttl("k") <= 200_000
    at = int(time.time()) + 300
    assert r.expireat("k", at) is True
    assert r.expiretime("k") == at
    assert r.pexpiretime("k") == at * 1000
    assert r.pexpireat("k", at * 1000 + 500) is True
    assert r.pexpiretime("k") == at * 1000 + 500
    assert r.expireat("k", datetime.datetime.now() + datetime.timedelta(seconds=50))
    assert 45 <= r.ttl("k") <= 50
    assert r.persist("k") is True
    assert r.persist("k") is False
    assert r.ttl("k") == -1
    assert r.expire("nope", 10) is False
    assert r.persist("nope") is False
    # A time in the past deletes the key.
    r.set("past", "v")
    assert r.expire("past", -1) is True
    assert r.exists("past") == 0
    r.set("past", "v")
    assert r.expireat("past", int(time.time()) - 10) is True
    assert r.exists("past") == 0
    r.set("past", "v")
    assert r.pexpire("past", 0) is True
    assert r.get("past") is None


def test_expire_conditions(r):
    r.set("k", "v")
    # On a key without TTL: NX sets, XX and GT refuse, LT sets.
    assert r.expire("k", 100, xx=True) is False
    assert r.expire("k", 100, gt=True) is False
    assert r.ttl("k") == -1
    assert r.expire("k", 100, nx=True) is True
    assert r.expire("k", 200, nx=True) is False
    assert r.expire("k", 200, xx=True) is True
    assert 195 <= r.ttl("k") <= 200
    assert r.expire("k", 100, gt=True) is False
    assert r.expire("k", 300, gt=True) is True
    assert r.expire("k", 400, lt=True) is False
    assert r.expire("k", 50, lt=True) is True
    assert 45 <= r.ttl("k") <= 50
    r.set("p", "v")
    assert r.expire("p", 100, lt=True) is True
    assert r.pexpire("k", 10_000, lt=True) is True
    assert r.pexpire("k", 5_000, gt=True) is False
    assert r.pexpireat("k", int(time.time() * 1000) + 60_000, gt=True) is True
    assert r.expireat("k", int(time.time()) + 30, lt=True) is True
    for args, message in [
        (("EXPIRE", "k", 10, "NX", "XX"),
         "NX and XX, GT or LT options at the same time are not compatible"),
        (("EXPIRE", "k", 10, "GT", "LT"), "GT and LT options at the same time are not compatible"),
        (("EXPIRE", "k", 10, "NX", "GT"),
         "NX and XX, GT or LT options at the same time are not compatible"),
        (("EXPIRE", "k", 10, "FOO"), "Unsupported option FOO"),
        (("EXPIRE", "k", "ten"), "value is not an integer or out of range"),
        (("EXPIRE", "k", 9223372036854775807), "invalid expire time in 'expire' command"),
        (("PEXPIRE", "k", 9223372036854775807), "invalid expire time in 'pexpire' command"),
    ]:
        with pytest.raises(redis.ResponseError) as e:
            r.execute_command(*args)
        assert str(e.value) == message, args


def test_lazy_expiry(r):
    r.set("short", "v", px=100)
    r.hset("hshort", "f", "v")
    r.pexpire("hshort", 100)
    assert r.get("short") in (b"v", None)
    wait_until(lambda: r.get("short") is None, timeout=5, message="string key to expire")
    wait_until(lambda: r.hgetall("hshort") == {}, timeout=5, message="hash key to expire")
    assert r.exists("short", "hshort") == 0
    assert r.ttl("short") == -2
    assert r.set("short", "again", nx=True) is True


def test_active_expiry_reclaims_untouched_keys(strata, protocol, r):
    c = other_client(strata, protocol, db=5)
    try:
        expired_before = r.info("stats")["expired_keys"]
        with c.pipeline(transaction=False) as p:
            for i in range(300):
                p.set(f"vol:{i}", "x", px=100)
            p.set("keeper", "stays")
            p.execute()
        # Never read the volatile keys: only active expiry can remove them.
        wait_until(lambda: c.dbsize() == 1, timeout=10, message="active expiry to empty db5")
        assert r.info("keyspace")["db5"]["keys"] == 1
        assert r.info("keyspace")["db5"]["expires"] == 0
        assert r.info("stats")["expired_keys"] - expired_before >= 300
        assert c.get("keeper") == b"stays"
    finally:
        c.close()


def test_touch_keys_randomkey_dbsize(r):
    assert r.randomkey() is None
    assert r.dbsize() == 0
    keys = ["user:1", "user:2", "user:10", "admin:1", "a*b", "a?b", "hello", "hallo", "hxllo"]
    r.mset({k: "v" for k in keys})
    assert r.dbsize() == len(keys)
    assert r.touch("user:1", "user:2", "nope") == 2
    assert r.randomkey().decode() in keys

    def keys_of(pattern):
        return sorted(k.decode() for k in r.keys(pattern))

    assert keys_of("*") == sorted(keys)
    assert keys_of("user:*") == ["user:1", "user:10", "user:2"]
    assert keys_of("user:?") == ["user:1", "user:2"]
    assert keys_of("h[ae]llo") == ["hallo", "hello"]
    assert keys_of("h[^e]llo") == ["hallo", "hxllo"]
    assert keys_of("h[a-f]llo") == ["hallo", "hello"]
    assert keys_of("a\\*b") == ["a*b"]
    assert keys_of("a\\?b") == ["a?b"]
    assert keys_of("nomatch*") == []


def test_scan_iter(r):
    with r.pipeline(transaction=False) as p:
        for i in range(500):
            p.set(f"s:{i}", i)
        for i in range(100):
            p.hset(f"h:{i}", "f", i)
        p.execute()
    all_keys = {k.decode() for k in r.scan_iter(count=23)}
    assert all_keys == {f"s:{i}" for i in range(500)} | {f"h:{i}" for i in range(100)}
    assert {k.decode() for k in r.scan_iter(match="h:*", count=50)} == {f"h:{i}" for i in range(100)}
    assert {k.decode() for k in r.scan_iter(_type="hash", count=50)} == {f"h:{i}" for i in range(100)}
    assert {k.decode() for k in r.scan_iter(match="s:1?", _type="string")} == {
        f"s:{i}" for i in range(10, 20)
    }
    assert list(r.scan_iter(_type="list")) == []
    cursor, page = r.scan(0, count=10)
    assert isinstance(cursor, int) and isinstance(page, list)
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("SCAN", "notanumber")
    assert str(e.value) == "invalid cursor"


def test_scan_guarantee_under_concurrent_writes(r):
    """SCAN returns every key that exists for the whole iteration, while others come and go."""
    stable = {f"stable:{i}" for i in range(400)}
    r.mset({k: 1 for k in stable})
    r.mset({f"doomed:{i}": 1 for i in range(200)})
    seen = set()
    cursor, step = 0, 0
    while True:
        cursor, page = r.scan(cursor, count=20)
        seen.update(k.decode() for k in page)
        step += 1
        # Mutate the keyspace between pages.
        r.mset({f"new:{step}:{j}": 1 for j in range(10)})
        r.delete(*[f"doomed:{step * 2}", f"doomed:{step * 2 + 1}"])
        if cursor == 0:
            break
        assert step < 10_000
    assert stable <= seen


def test_rename_renamenx(r):
    r.set("a", "1", ex=100)
    assert r.rename("a", "b") is True
    assert r.get("a") is None and r.get("b") == b"1"
    assert 95 <= r.ttl("b") <= 100
    assert r.rename("b", "b") is True
    r.set("c", "2")
    assert r.renamenx("b", "c") is False
    assert r.renamenx("b", "d") is True
    assert r.get("d") == b"1"
    r.hset("h", "f", "v")
    assert r.rename("h", "c") is True  # overwrites a string with the hash
    assert r.hgetall("c") == {b"f": b"v"}
    with pytest.raises(redis.ResponseError) as e:
        r.rename("nope", "x")
    assert str(e.value) == "no such key"
    with pytest.raises(redis.ResponseError) as e:
        r.renamenx("nope", "x")
    assert str(e.value) == "no such key"


def test_flushdb_flushall_swapdb_move_copy(strata, protocol, r):
    db1 = other_client(strata, protocol, db=1)
    try:
        r.set("k0", "zero")
        db1.set("k1", "one")
        assert r.swapdb(0, 1) is True
        assert r.get("k1") == b"one" and r.get("k0") is None
        assert db1.get("k0") == b"zero"
        assert r.swapdb(0, 1) is True
        # MOVE
        assert r.move("k0", 1) is True
        assert r.exists("k0") == 0 and db1.get("k0") == b"zero"
        r.set("k0", "again")
        assert r.move("k0", 1) is False  # exists in the target
        assert r.get("k0") == b"again"
        assert r.move("nope", 1) is False
        with pytest.raises(redis.ResponseError) as e:
            r.move("k0", 0)
        assert str(e.value) == "source and destination objects are the same"
        # COPY
        r.set("src", "v", ex=100)
        assert r.copy("src", "dst") is True
        assert r.get("dst") == b"v" and 95 <= r.ttl("dst") <= 100
        r.set("dst2", "old")
        assert r.copy("src", "dst2") is False
        assert r.copy("src", "dst2", replace=True) is True
        assert r.get("dst2") == b"v"
        r.hset("hsrc", mapping={"a": "1"})
        assert r.copy("hsrc", "hcopy", destination_db=1) is True
        assert db1.hgetall("hcopy") == {b"a": b"1"}
        r.hset("hsrc", "b", "2")
        assert db1.hgetall("hcopy") == {b"a": b"1"}  # a copy, not a shared value
        assert r.copy("nope", "x") is False
        # FLUSHDB only the current db, FLUSHALL all of them
        assert r.flushdb() is True
        assert r.dbsize() == 0 and db1.dbsize() > 0
        r.set("x", 1)
        assert r.flushall() is True
        assert r.dbsize() == 0 and db1.dbsize() == 0
        assert r.execute_command("FLUSHDB", "ASYNC") in (True, b"OK")
        assert r.execute_command("FLUSHALL", "SYNC") in (True, b"OK")
    finally:
        db1.close()


def test_object_and_memory_usage(r):
    r.set("int", "12345")
    r.set("short", "hello")
    r.set("long", "x" * 100)
    r.hset("h", "f", "v")
    assert r.object("encoding", "int") == b"int"
    assert r.object("encoding", "short") == b"embstr"
    assert r.object("encoding", "long") == b"raw"
    assert r.object("encoding", "h") == b"listpack"
    assert r.object("encoding", "nope") is None
    assert isinstance(r.object("refcount", "short"), int)
    assert r.object("idletime", "short") >= 0
    assert r.memory_usage("long") >= 100
    assert r.memory_usage("nope") is None
    r.set("big", "x" * 100_000)
    assert r.memory_usage("big") >= 100_000


# --------------------------------------------------------------------------------------------
# Transactions


@pytest.mark.parametrize("transaction", [True, False], ids=["multi", "plain"])
def test_pipeline(r, transaction):
    with r.pipeline(transaction=transaction) as p:
        p.set("a", "1").incr("a").get("a").hset("h", "f", "v").hget("h", "f").exists("a", "h")
        p.expire("a", 100).ttl("a").delete("a").get("a")
        res = p.execute()
    assert res[7] in (99, 100)
    res[7] = 100
    assert res == [True, 2, b"2", 1, b"v", 2, True, 100, 1, None]
    # Many commands in one pipeline.
    with r.pipeline(transaction=transaction) as p:
        for i in range(1000):
            p.incr("counter")
        res = p.execute()
    assert res == list(range(1, 1001))


def test_multi_exec_discard_by_hand(conn):
    assert raw_call(conn, "MULTI") == b"OK"
    assert raw_call(conn, "SET", "a", "1") == b"QUEUED"
    assert raw_call(conn, "INCR", "a") == b"QUEUED"
    assert raw_call(conn, "GET", "a") == b"QUEUED"
    assert raw_call(conn, "EXEC") == [b"OK", 2, b"2"]
    assert raw_call(conn, "MULTI") == b"OK"
    assert raw_call(conn, "SET", "a", "discarded") == b"QUEUED"
    assert raw_call(conn, "DISCARD") == b"OK"
    assert conn.get("a") == b"2"
    assert raw_call(conn, "MULTI") == b"OK"
    assert raw_call(conn, "EXEC") == []


def test_transaction_errors(conn):
    for args, message in [
        (("EXEC",), "EXEC without MULTI"),
        (("DISCARD",), "DISCARD without MULTI"),
    ]:
        with pytest.raises(redis.ResponseError) as e:
            conn.execute_command(*args)
        assert str(e.value) == message
    conn.execute_command("MULTI")
    with pytest.raises(redis.ResponseError) as e:
        conn.execute_command("MULTI")
    assert str(e.value) == "MULTI calls can not be nested"
    with pytest.raises(redis.ResponseError) as e:
        conn.execute_command("WATCH", "a")
    assert str(e.value) == "WATCH inside MULTI is not allowed"
    conn.execute_command("DISCARD")
    # A command rejected while queueing aborts the whole transaction.
    conn.execute_command("MULTI")
    conn.execute_command("SET", "x", "1")
    with pytest.raises(redis.ResponseError) as e:
        conn.execute_command("SET", "onlykey")
    assert str(e.value) == "wrong number of arguments for 'set' command"
    with pytest.raises(redis.ResponseError) as e:
        conn.execute_command("NOSUCHCMD", "a")
    assert str(e.value).startswith("unknown command 'NOSUCHCMD'")
    with pytest.raises(redis.exceptions.ExecAbortError) as e:
        conn.execute_command("EXEC")
    assert str(e.value) == "Transaction discarded because of previous errors."
    assert conn.exists("x") == 0
    # A command failing at run time does not undo the others.
    conn.execute_command("MULTI")
    conn.execute_command("SET", "s", "text")
    conn.execute_command("INCR", "s")
    conn.execute_command("SET", "t", "1")
    res = conn.execute_command("EXEC")
    assert res[0] == b"OK" and res[2] == b"OK"
    assert isinstance(res[1], redis.ResponseError)
    assert str(res[1]) == "value is not an integer or out of range"
    assert conn.get("t") == b"1"


def test_watch_concurrent_modification(r, strata, protocol):
    other = other_client(strata, protocol)
    try:
        r.set("w", "0")
        with r.pipeline() as p:
            p.watch("w")
            assert p.get("w") == b"0"
            other.set("w", "changed")
            p.multi()
            p.set("w", "mine")
            with pytest.raises(redis.WatchError):
                p.execute()
        assert r.get("w") == b"changed"
        # Unmodified: the transaction commits.
        with r.pipeline() as p:
            p.watch("w")
            p.multi()
            p.set("w", "mine")
            assert p.execute() == [True]
        assert r.get("w") == b"mine"
        # Deleting, expiring or flushing a watched key also aborts.
        modifications = [
            ("delete", lambda: other.delete("w")),
            ("expire", lambda: other.pexpire("w", 1)),
            ("flushdb", lambda: other.flushdb()),
            ("other watched key", lambda: other.hset("w2", "f", "v")),
        ]
        for what, modify in modifications:
            r.set("w", "0")
            with r.pipeline() as p:
                p.watch("w", "w2")
                modify()
                if what == "expire":
                    wait_until(lambda: other.exists("w") == 0, message="watched key to expire")
                p.multi()
                p.set("w", "mine")
                with pytest.raises(redis.WatchError):
                    p.execute()
                    pytest.fail(f"EXEC went through after {what}")
        # A watched key that does not exist and stays absent does not abort.
        r.delete("nokey")
        with r.pipeline() as p:
            p.watch("nokey")
            other.set("unrelated", "1")
            p.multi()
            p.set("w", "ok")
            assert p.execute() == [True]
        # UNWATCH forgets.
        with r.pipeline() as p:
            p.watch("w")
            other.set("w", "x")
            p.unwatch()
            p.multi()
            p.set("w", "after-unwatch")
            assert p.execute() == [True]
        assert r.get("w") == b"after-unwatch"
    finally:
        other.close()


def test_watch_own_modification_aborts(conn):
    conn.set("w", "0")
    conn.execute_command("WATCH", "w")
    conn.set("w", "1")
    conn.execute_command("MULTI")
    conn.execute_command("SET", "w", "2")
    assert conn.execute_command("EXEC") is None
    assert conn.get("w") == b"1"


def test_transaction_helper_retries(r, strata, protocol):
    other = other_client(strata, protocol)
    attempts = []
    r.set("bal", 100)
    try:
        def debit(pipe):
            balance = int(pipe.get("bal"))
            attempts.append(balance)
            if len(attempts) == 1:
                other.incrby("bal", 50)  # a concurrent writer on the first try
            pipe.multi()
            pipe.set("bal", balance - 30)

        r.transaction(debit, "bal")
    finally:
        other.close()
    assert attempts == [100, 150]
    assert r.get("bal") == b"120"


def test_exec_is_atomic(strata, protocol, r):
    """A reader never sees half of a MULTI/EXEC that writes two keys (on different shards)."""
    r.mset({"left": 0, "right": 0})
    stop = threading.Event()
    torn = []

    def reader():
        c = other_client(strata, protocol)
        try:
            while not stop.is_set():
                a, b = c.mget("left", "right")
                if a != b:
                    torn.append((a, b))
        finally:
            c.close()

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(300):
            with r.pipeline(transaction=True) as p:
                p.incr("left").incr("right")
                p.execute()
    finally:
        stop.set()
        t.join(10)
    assert torn == []
    assert r.mget("left", "right") == [b"300", b"300"]


# --------------------------------------------------------------------------------------------
# Server


def test_info(r):
    info = r.info()
    for field in ("redis_version", "tcp_port", "uptime_in_seconds", "connected_clients",
                  "used_memory", "used_memory_human", "maxmemory", "maxmemory_policy",
                  "total_commands_processed", "keyspace_hits", "keyspace_misses",
                  "expired_keys", "evicted_keys", "role"):
        assert field in info, field
    assert info["connected_clients"] >= 1
    assert isinstance(info["used_memory"], int)
    assert info["role"] == "master"
    assert info["maxmemory_policy"] in ("allkeys-lru", "noeviction")
    # Hits and misses are counted exactly.
    r.set("hit", "v")
    stats = r.info("stats")
    r.get("hit")
    r.get("miss")
    r.get("miss2")
    after = r.info("stats")
    assert after["keyspace_hits"] - stats["keyspace_hits"] == 1
    assert after["keyspace_misses"] - stats["keyspace_misses"] == 2
    assert after["total_commands_processed"] > stats["total_commands_processed"]
    # Sections.
    server = r.info("server")
    assert "redis_version" in server and "used_memory" not in server
    assert "used_memory" in r.info("memory")
    everything = r.info("everything")
    assert "redis_version" in everything and "used_memory" in everything
    assert "db0" in r.info("all")
    multi = r.execute_command("INFO", "server", "clients")
    assert "redis_version" in multi and "connected_clients" in multi
    assert r.info("nosuchsection") == {}
    # used_memory follows the data.
    before = r.info("memory")["used_memory"]
    r.set("megabyte", b"m" * (1 << 20))
    assert r.info("memory")["used_memory"] - before >= 1 << 20
    r.delete("megabyte")
    wait_until(lambda: r.info("memory")["used_memory"] - before < 1 << 19,
               message="used_memory to drop after DEL")


def test_info_keyspace(strata, protocol, r):
    assert r.info("keyspace") == {}
    r.set("a", 1)
    r.set("b", 2, ex=1000)
    r.hset("h", "f", "v")
    c = other_client(strata, protocol, db=3)
    try:
        c.set("x", 1, ex=1000)
        ks = r.info("keyspace")
        assert set(ks) == {"db0", "db3"}
        assert (ks["db0"]["keys"], ks["db0"]["expires"]) == (3, 1)
        assert (ks["db3"]["keys"], ks["db3"]["expires"]) == (1, 1)
        assert isinstance(ks["db0"]["avg_ttl"], int)
    finally:
        c.close()


def test_config_get_set(r):
    assert r.config_get("maxmemory") == {"maxmemory": "0"}
    assert r.config_get("nosuchparam") == {}
    got = r.config_get("maxmemory*")
    assert {"maxmemory", "maxmemory-policy"} <= set(got)
    multi = r.execute_command("CONFIG GET", "maxmemory", "maxclients")
    multi = _s(_as_dict(multi))
    assert multi == {"maxmemory": "0", "maxclients": "10000"}
    try:
        assert r.config_set("maxmemory", "100mb") is True
        assert r.config_get("maxmemory") == {"maxmemory": "104857600"}
        assert r.info("memory")["maxmemory"] == 104857600
        assert r.config_set("maxmemory-policy", "volatile-lru") is True
        assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
        assert r.execute_command("CONFIG SET", "slowlog-max-len", "64",
                                 "slowlog-log-slower-than", "5000") in (True, b"OK")
        assert r.config_get("slowlog-*") == {"slowlog-max-len": "64",
                                            "slowlog-log-slower-than": "5000"}
        with pytest.raises(redis.ResponseError) as e:
            r.config_set("nosuchparam", "1")
        assert str(e.value) == "Unknown option or number of arguments for CONFIG SET - 'nosuchparam'"
        with pytest.raises(redis.ResponseError) as e:
            r.config_set("maxmemory-policy", "bogus")
        assert str(e.value).startswith(
            "CONFIG SET failed (possibly related to argument 'maxmemory-policy') - "
        )
        assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
    finally:
        r.execute_command("CONFIG SET", "maxmemory", "0", "maxmemory-policy", "allkeys-lru",
                          "slowlog-max-len", "128", "slowlog-log-slower-than", "10000")
    assert r.config_get("maxmemory") == {"maxmemory": "0"}


def test_slowlog(r):
    try:
        r.config_set("slowlog-log-slower-than", 0)
        assert r.slowlog_reset() is True
        r.set("slow-key", "slow-value")
        entries = r.slowlog_get(10)
        assert any(e["command"] == b"SET slow-key slow-value" for e in entries), entries
        entry = next(e for e in entries if e["command"] == b"SET slow-key slow-value")
        assert entry["duration"] >= 0 and abs(entry["start_time"] - time.time()) < 60
        assert entry["client_address"].startswith(b"127.0.0.1:")
        assert r.slowlog_len() >= 1
        r.config_set("slowlog-log-slower-than", -1)
        r.slowlog_reset()
        r.set("not-logged", "x")
        assert r.slowlog_len() == 0
    finally:
        r.config_set("slowlog-log-slower-than", 10000)


def test_time_dbsize_lastsave(r):
    secs, usecs = r.time()
    assert abs(secs + usecs / 1e6 - time.time()) < 5
    assert 0 <= usecs < 1_000_000
    r.mset({"a": 1, "b": 2})
    assert r.dbsize() == 2
    assert isinstance(r.lastsave(), datetime.datetime)


def test_oom_with_noeviction(r):
    try:
        r.set("before", "x")
        r.execute_command("CONFIG SET", "maxmemory-policy", "noeviction", "maxmemory", "1")
        with pytest.raises(redis.exceptions.OutOfMemoryError) as e:
            r.set("k", "v")
        assert str(e.value) == "command not allowed when used memory > 'maxmemory'."
        # Reads and deletes still work.
        assert r.get("before") == b"x"
        assert r.delete("before") == 1
    finally:
        r.execute_command("CONFIG SET", "maxmemory", "0", "maxmemory-policy", "allkeys-lru")
    assert r.set("k", "v") is True


def test_allkeys_lru_evicts_instead_of_failing(r):
    base = r.info("memory")["used_memory"]
    evicted_before = r.info("stats")["evicted_keys"]
    try:
        r.execute_command("CONFIG SET", "maxmemory-policy", "allkeys-lru",
                          "maxmemory", str(base + 2 * 1024 * 1024))
        value = "x" * 1024
        with r.pipeline(transaction=False) as p:
            for i in range(8000):  # about 8 MB of values into 2 MB of room
                p.set(f"lru:{i}", value)
            p.execute()
        assert r.info("stats")["evicted_keys"] > evicted_before
        assert r.dbsize() < 8000
        assert r.get("lru:7999") == value.encode()  # the newest key survives
    finally:
        r.config_set("maxmemory", 0)


# --------------------------------------------------------------------------------------------
# Binary safety and misc protocol


def test_binary_safe_keys_and_values(r):
    key = b"bin\x00key\r\n\xff"
    value = bytes(range(256)) * 4
    assert r.set(key, value) is True
    assert r.get(key) == value
    assert r.strlen(key) == 1024
    assert r.getrange(key, 0, 3) == b"\x00\x01\x02\x03"
    assert r.append(key, b"\r\n\x00") == 1027
    assert r.get(key)[-3:] == b"\r\n\x00"
    assert key in r.keys("*")
    assert key in set(r.scan_iter(match=b"bin\x00*"))
    r.hset(b"h\x00", b"f\x00\xff", b"\r\n")
    assert r.hgetall(b"h\x00") == {b"f\x00\xff": b"\r\n"}
    r.mset({b"\x01": b"\x02", b"\x03": b""})
    assert r.mget(b"\x01", b"\x03") == [b"\x02", b""]
    assert r.rename(key, b"\xfe\xfd") is True
    assert r.get(b"\xfe\xfd")[:4] == b"\x00\x01\x02\x03"
    assert r.set(b"", b"empty-key") is True
    assert r.get(b"") == b"empty-key"


def test_unknown_command_and_arity_errors(r):
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("FOOBAR", "a", "b")
    assert str(e.value) == "unknown command 'FOOBAR', with args beginning with: 'a' 'b' "
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("FOOBAR")
    assert str(e.value) == "unknown command 'FOOBAR', with args beginning with: "
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("HGET", "h")
    assert str(e.value) == "wrong number of arguments for 'hget' command"
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("CONFIG", "GET")
    assert str(e.value) == "wrong number of arguments for 'config|get' command"
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("CONFIG")
    assert str(e.value) == "wrong number of arguments for 'config' command"


def test_large_value_round_trip(r):
    value = b"\xab" * (8 * 1024 * 1024)
    assert r.set("big", value) is True
    assert r.get("big") == value
    assert r.strlen("big") == len(value)


# --------------------------------------------------------------------------------------------
# Server options (each its own server)


def _server(extra_env=None, redis_args=()):
    if against_redis():
        return RedisServerProcess(extra_args=redis_args)
    return StrataProcess(extra_env=extra_env)


def test_requirepass(protocol):
    srv = _server({"STRATA_SERVER_REQUIREPASS": "s3cret"}, ("--requirepass", "s3cret"))
    try:
        # No retries: redis-py retries AuthenticationError (a ConnectionError) with backoff.
        no_retry = Retry(NoBackoff(), 0)
        anon = redis.Redis(port=srv.port, protocol=protocol, retry=no_retry)
        with pytest.raises(redis.AuthenticationError) as e:
            anon.get("k")
        if protocol == 2:
            assert str(e.value) == "Authentication required."
        else:  # the HELLO 3 that redis-py sends on connect is refused (7.2's text; 7.0's
            # lacks "<proto> ")
            assert str(e.value) in {
                f"HELLO must be called with the client already authenticated, otherwise the "
                f"HELLO {proto}AUTH <user> <pass> option can be used to authenticate the client "
                f"and select the RESP protocol version at the same time"
                for proto in ("<proto> ", "")
            }
        anon.close()
        wrong = redis.Redis(port=srv.port, protocol=protocol, password="nope", retry=no_retry)
        with pytest.raises(redis.AuthenticationError) as e:
            wrong.ping()
        assert str(e.value) == "invalid username-password pair or user is disabled."
        wrong.close()
        good = redis.Redis(port=srv.port, protocol=protocol, password="s3cret")
        assert good.set("k", "v") is True and good.get("k") == b"v"
        good.close()
        named = redis.Redis(port=srv.port, protocol=protocol, username="default",
                            password="s3cret")
        assert named.get("k") == b"v"
        named.close()
        # AUTH on an open connection (a raw socket: redis-py itself would send CLIENT SETINFO
        # unauthenticated on connect, which Redis 7.2+ refuses with NOAUTH).
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            f = s.makefile("rb")
            s.sendall(b"GET k\r\n")
            assert f.readline() == b"-NOAUTH Authentication required.\r\n"
            s.sendall(b"AUTH bad\r\n")
            assert f.readline() == (
                b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
            )
            s.sendall(b"AUTH s3cret\r\n")
            assert f.readline() == b"+OK\r\n"
            s.sendall(b"GET k\r\n")
            assert f.readline() + f.readline() == b"$1\r\nv\r\n"
    finally:
        srv.stop()


def test_idle_timeout_disconnects():
    srv = _server({"STRATA_SERVER_TIMEOUT": "1"}, ("--timeout", "1"))
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"PING\r\n")
        assert s.recv(100) == b"+PONG\r\n"
        t0 = time.monotonic()
        s.settimeout(10)
        assert s.recv(100) == b""  # the server closes the idle connection
        assert 0.5 <= time.monotonic() - t0 <= 8
        s.close()
    finally:
        srv.stop()


def test_maxclients():
    srv = _server({"STRATA_SERVER_MAXCLIENTS": "3"}, ("--maxclients", "3"))
    socks = []
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(b"PING\r\n")
            assert s.recv(100) == b"+PONG\r\n"
            socks.append(s)
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        socks.append(s)
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
        assert data == b"-ERR max number of clients reached\r\n"
        # A slot frees up when a client leaves.
        socks.pop(0).close()

        def can_connect():
            c = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            try:
                c.sendall(b"PING\r\n")
                return c.recv(100) == b"+PONG\r\n"
            finally:
                c.close()

        wait_until(can_connect, message="a free client slot")
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_pubsub(r, strata, protocol):
    p = r.pubsub()
    p.subscribe("chan")
    p.psubscribe("ch*")
    for _ in range(2):
        wait_until(lambda: p.get_message(timeout=0.1), message="subscribe confirmation")
    assert r.pubsub_numsub("chan") == [(b"chan", 1)]
    assert r.pubsub_numpat() == 1
    assert b"chan" in r.pubsub_channels()
    # One direct subscriber and one pattern subscriber on the same connection: 2 receivers.
    assert r.publish("chan", "hello") == 2
    got = [wait_until(lambda: p.get_message(timeout=0.1), message="published message") for _ in range(2)]
    kinds = sorted((m["type"], m["data"]) for m in got)
    assert kinds == [("message", b"hello"), ("pmessage", b"hello")]
    assert [m["pattern"] for m in got if m["type"] == "pmessage"] == [b"ch*"]
    assert r.publish("nobody", "x") == 0
    p.unsubscribe("chan")
    p.punsubscribe("ch*")
    for _ in range(2):
        wait_until(lambda: p.get_message(timeout=0.1), message="unsubscribe confirmation")
    assert r.publish("chan", "again") == 0
    p.close()


def test_pubsub_resp2_subscribed_mode_rules(strata):
    import socket
    s = socket.create_connection(("127.0.0.1", strata.port))
    s.sendall(b"SUBSCRIBE a\r\nGET x\r\nPING\r\nUNSUBSCRIBE\r\nGET x\r\n")
    want = (b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
            b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
            b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"
            b"$-1\r\n")
    got = b""
    s.settimeout(5)
    while len(got) < len(want):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    s.close()
    assert got == want
