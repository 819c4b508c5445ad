"""Tiered mode from the outside: one real redis-server (the upstream, L2) and two Strata
instances, A and B, in tiered mode in front of it (docs/tiering.md), each on its own free
loopback port.

What is checked, through clients only (redis-py, Django + django-redis):

* locks: django-redis ``cache.lock()`` from two Django *processes*, one per instance, excludes
  each other (a non-atomic read-modify-write of a shared counter under the lock loses no
  update, and no two critical sections overlap in time); release, blocking timeout, expiry.
* coherence of the Django cache API across instances (set/get, delete, incr, get_many/set_many,
  ttl, delete_pattern, clear), on RESP2 and RESP3 connections; every read that could be served
  by a stale L1 entry is made after the other instance cached the old value, and invalidation
  is asynchronous, so such reads poll with a deadline.
* redis-py: writes made straight to the upstream reach both L1s; pub/sub and BLPOP across
  instances; WATCH across instances.
* fail-open: the upstream is SIGKILLed; plain commands keep working on L1, shared-state
  commands are refused with ``-UNAVAILABLE``; the upstream is restarted on the same port and
  every instance drops what it wrote alone during the outage.

``STRATA_TEST_AGAINST_REDIS=1`` points "A" and "B" straight at the upstream redis-server (a check
of the tests themselves: everything except the fail-open tests, which skip, must pass there).
"""
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager

import django
import pytest
import redis
from conftest import RedisServerProcess, StrataProcess, against_redis, free_port, wait_until
from django.conf import settings
from django.test.utils import override_settings

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (scripts/test installs it)",
)

# Databases used on the upstream (SELECT goes through to it): one per client protocol so that
# the clear() of one parametrization does not empty the other's.
DB_FOR_PROTOCOL = {2: 3, 3: 4}
LOCK_DB = 5
UNAVAILABLE = "UNAVAILABLE L2 unavailable"
# How long an invalidation may take to reach the other instance's L1 before a test fails.
# Typically a few ms; generous so a loaded CI machine does not make the tests flaky.
COHERENCE_DEADLINE = 3.0


# --------------------------------------------------------------------------------------------
# Processes


class Instance:
    """A Strata instance in tiered mode (or, against Redis, the upstream itself)."""

    def __init__(self, name, upstream_port):
        self.name = name
        self.proc = None
        if against_redis():
            self.port = upstream_port
            return
        self.http_port = free_port()
        self.proc = StrataProcess(
            extra_env={
                "STRATA_L2_URL": f"redis://127.0.0.1:{upstream_port}",
                "STRATA_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            }
        )
        self.port = self.proc.port
        try:
            wait_until(
                lambda: self.readyz()[0] == 200, timeout=10, message=f"{name}: /readyz 200"
            )
        except BaseException:
            self.proc.stop()
            raise

    def readyz(self):
        """(status, body) of GET /readyz."""
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return None, repr(e)

    def client(self, protocol=2, db=0, **kw):
        return redis.Redis(port=self.port, protocol=protocol, db=db, socket_timeout=10, **kw)

    def log(self):
        return self.proc.log() if self.proc else ""

    def stop(self):
        if self.proc:
            self.proc.stop()


class Cluster:
    def __init__(self):
        self.upstream = RedisServerProcess()
        self.a = self.b = None
        try:
            self.a = Instance("A", self.upstream.port)
            self.b = Instance("B", self.upstream.port)
        except BaseException:
            self.stop()
            raise

    def up(self, db=0, protocol=2):
        """A client of the upstream itself."""
        return redis.Redis(port=self.upstream.port, db=db, protocol=protocol, socket_timeout=10)

    def restart_upstream(self):
        """A fresh, empty redis-server on the port the instances are configured with."""
        port = self.upstream.port
        self.upstream.stop()
        self.upstream = wait_until(
            lambda: _try_start_redis(port), timeout=10, message=f"redis-server back on {port}"
        )

    def logs(self):
        return "\n".join(f"--- {i.name} log:\n{i.log()}" for i in (self.a, self.b) if i)

    def stop(self):
        for i in (self.a, self.b):
            if i:
                i.stop()
        self.upstream.stop()


def _try_start_redis(port):
    try:
        return RedisServerProcess(port=port)
    except RuntimeError:
        return None  # the port is not free yet


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    yield c
    c.stop()


@pytest.fixture
def fresh_cluster():
    """A cluster of its own, for tests that kill the upstream."""
    if against_redis():
        pytest.skip("fail-open is Strata's behaviour; plain Redis has no upstream")
    c = Cluster()
    yield c
    c.stop()


def info_tiering(instance):
    with instance.client() as r:
        return r.info("tiering")


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------------------------
# Django


def cache_conf(port, db, protocol, prefix):
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{port}/{db}",
        "KEY_PREFIX": prefix,
        "TIMEOUT": 300,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "CONNECTION_POOL_KWARGS": {"protocol": protocol, "socket_timeout": 10},
        },
    }


@contextmanager
def django_caches(conf):
    """Django's `caches` with CACHES = conf (configuring Django if nobody did yet)."""
    if not settings.configured:
        settings.configure(
            CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    conf = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}, **conf}
    with override_settings(CACHES=conf):
        from django.core.cache import caches

        yield caches


@pytest.fixture(scope="module")
def caches(cluster):
    conf = {}
    for protocol, db in DB_FOR_PROTOCOL.items():
        for inst in (cluster.a, cluster.b):
            conf[f"{inst.name}{protocol}"] = cache_conf(inst.port, db, protocol, "tiered")
    with django_caches(conf) as c:
        yield c


class Pair:
    """The same Django cache (same database, same key prefix) reached through A and through B."""

    def __init__(self, caches, cluster, protocol):
        from django_redis import get_redis_connection

        self.protocol = protocol
        self.db = DB_FOR_PROTOCOL[protocol]
        self.a = caches[f"A{protocol}"]
        self.b = caches[f"B{protocol}"]
        self.raw_a = get_redis_connection(f"A{protocol}", write=True)
        self.raw_b = get_redis_connection(f"B{protocol}", write=True)
        self.up = cluster.up(db=self.db)

    def key(self, name):
        return self.a.make_key(name)


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def pair(request, caches, cluster):
    p = Pair(caches, cluster, request.param)
    yield p
    p.up.close()


def eventually(fn, expected, message, timeout=COHERENCE_DEADLINE):
    """Polls fn() until it equals `expected`; returns the seconds it took."""
    t0 = time.monotonic()
    last = []

    def check():
        last[:] = [fn()]
        return last[0] == expected

    deadline = t0 + timeout
    while not check():
        if time.monotonic() >= deadline:
            pytest.fail(f"{message}: still {last[0]!r} after {timeout}s (expected {expected!r})")
        time.sleep(0.005)
    return time.monotonic() - t0


# --------------------------------------------------------------------------------------------
# Startup and L1


def test_instances_are_tiered_and_ready(cluster):
    if against_redis():
        pytest.skip("Strata only")
    for inst in (cluster.a, cluster.b):
        status, body = inst.readyz()
        assert status == 200, body
        assert "l2: up" in body, body
        info = info_tiering(inst)
        assert info["mode"] == "tiered"
        assert info["l2_url"] == f"redis://127.0.0.1:{cluster.upstream.port}"
        assert info["l2_status"] == "up"
        with inst.client() as r:
            r.get("x")  # upstream connections are opened on first use
    # Both instances are clients of the upstream, with tracking connections (flag t).
    with cluster.up() as up:
        flags = [c["flags"] for c in up.client_list()]
    assert sum("t" in f for f in flags) >= 2, flags


def test_repeated_reads_are_served_from_l1(cluster):
    """The coherence tests below are only meaningful if reads really come from L1: a second GET
    of a key makes no upstream call."""
    if against_redis():
        pytest.skip("Strata only")
    key = unique("l1")
    with cluster.up() as up, cluster.b.client() as b:
        up.set(key, "v")
        assert b.get(key) == b"v"  # miss: filled from L2
        calls = info_tiering(cluster.b)["l2_calls"]
        for _ in range(5):
            assert b.get(key) == b"v"
            assert b.mget([key, key]) == [b"v", b"v"]
        assert info_tiering(cluster.b)["l2_calls"] == calls


# --------------------------------------------------------------------------------------------
# 1. Locks


LOCK_WORKER = r"""
import json, sys, time
import django
from django.conf import settings

port, db, n, mode, protocol = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
                                int(sys.argv[5]))
settings.configure(INSTALLED_APPS=[], USE_TZ=True, CACHES={"default": {
    "BACKEND": "django_redis.cache.RedisCache",
    "LOCATION": f"redis://127.0.0.1:{port}/{db}",
    "KEY_PREFIX": "lockrace",
    "TIMEOUT": None,
    "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient",
                "CONNECTION_POOL_KWARGS": {"socket_timeout": 10, "protocol": protocol}},
}})
django.setup()
from django.core.cache import cache

cache.get("counter")  # connected (and the counter cached in this instance's L1) before the start
print("ready", flush=True)
sys.stdin.readline()

def critical_section():
    t0 = time.monotonic()
    value = cache.get("counter")
    time.sleep(0.001)  # widens the race window: without the lock, updates get lost
    cache.set("counter", value + 1)
    return [t0, time.monotonic()]

intervals = []
for _ in range(n):
    if mode == "lock":
        with cache.lock("counter-lock", timeout=10, sleep=0.002, blocking_timeout=20):
            intervals.append(critical_section())
    else:
        intervals.append(critical_section())
print(json.dumps({"intervals": intervals}), flush=True)
"""


def run_lock_workers(cluster, mode, n, protocols=(2, 2)):
    """Two Django processes, one per instance (connected with protocols[0] to A and protocols[1]
    to B), each running `n` read-modify-write increments of the shared counter. Returns each
    process's critical-section (start, end) intervals (time.monotonic() is one clock for every
    process of the machine) and the final counter, read on the upstream."""
    counter = "lockrace:1:counter"
    with cluster.up(db=LOCK_DB) as up:
        up.delete("lockrace:1:counter-lock")
        up.set(counter, 0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOCK_WORKER, str(inst.port), str(LOCK_DB), str(n), mode,
             str(protocol)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for inst, protocol in zip((cluster.a, cluster.b), protocols)
    ]
    try:
        for p in procs:
            line = p.stdout.readline()
            assert line == "ready\n", f"worker did not start: {line!r} {p.stderr.read()}"
        for p in procs:  # both start together
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0, f"worker failed:\n{err}\n{cluster.logs()}"
            results.append(json.loads(out)["intervals"])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    with cluster.up(db=LOCK_DB) as up:
        final = int(up.get(counter))
    return results, final


def overlapping(intervals_a, intervals_b):
    """Pairs of critical sections, one of each process, that overlap in time."""
    return [
        (x, y) for x in intervals_a for y in intervals_b if x[0] < y[1] and y[0] < x[1]
    ]


def test_lock_from_two_django_processes_on_two_instances_excludes(cluster):
    n = 40
    # The process on A speaks RESP2, the one on B RESP3.
    (ia, ib), final = run_lock_workers(cluster, "lock", n, protocols=(2, 3))
    # The two processes really competed: their runs overlapped in time.
    assert max(ia[0][0], ib[0][0]) < min(ia[-1][1], ib[-1][1]), "the workers did not overlap"
    # Mutual exclusion: no two critical sections overlapped, and no update was lost.
    assert overlapping(ia, ib) == []
    assert final == 2 * n
    # Both instances read the final value (after the invalidations of the last writes).
    for inst in (cluster.a, cluster.b):
        with inst.client(db=LOCK_DB) as r:
            eventually(lambda: r.get("lockrace:1:counter"), str(2 * n).encode(), inst.name)


def test_without_the_lock_updates_are_lost(cluster):
    """Control: the same workers without the lock overlap and lose updates, so the test above
    would catch a lock that does not exclude."""
    n = 40
    (ia, ib), final = run_lock_workers(cluster, "nolock", n)
    assert overlapping(ia, ib), "the workers never overlapped"
    assert final < 2 * n


def test_lock_release_and_blocking_timeout_across_instances(caches, cluster):
    a, b = caches["A2"], caches["B2"]
    name = unique("lk")
    la = a.lock(name, timeout=10)
    lb = b.lock(name, timeout=10, sleep=0.01)
    assert la.acquire(blocking=False) is True
    assert la.owned() is True
    # B sees A's lock and cannot take it.
    assert lb.locked() is True
    assert lb.owned() is False
    assert lb.acquire(blocking=False) is False
    t0 = time.monotonic()
    assert lb.acquire(blocking=True, blocking_timeout=0.3) is False
    assert time.monotonic() - t0 >= 0.25
    # A waiter on B gets the lock once A releases it, not before.
    released = threading.Event()
    result = {}

    def waiter():
        try:
            # thread_local=False: the main thread checks and releases it afterwards.
            w = b.lock(name, timeout=10, sleep=0.005, thread_local=False)
            result["acquired"] = w.acquire(blocking=True, blocking_timeout=10)
            result["after_release"] = released.is_set()
            result["t"] = time.monotonic()
            result["lock"] = w
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            result["error"] = repr(e)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)  # a few failed attempts of the waiter; the assertions do not depend on it
    released.set()
    t_release = time.monotonic()
    try:
        la.release()
    finally:
        t.join(15)
    assert result.get("acquired") is True, result
    assert result["after_release"] is True
    assert result["t"] - t_release < 1.0
    w = result["lock"]
    # Now B holds it: A cannot take it, and A's stale release is refused.
    assert w.owned() is True
    assert a.lock(name, timeout=10).acquire(blocking=False) is False
    stale = a.lock(name, timeout=10)
    stale.local.token = b"not-the-holders-token"
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        stale.release()
    assert w.owned() is True
    # B's extend is seen on the upstream; B's release frees it for A at once.
    assert w.extend(20) is True
    with cluster.up(db=DB_FOR_PROTOCOL[2]) as up:
        assert up.pttl(w.name) > 10_000
    w.release()
    assert a.lock(name, timeout=10).acquire(blocking=False) is True


def test_lock_expiry_lets_the_other_instance_in(caches):
    a, b = caches["A2"], caches["B2"]
    name = unique("lk-exp")
    la = a.lock(name, timeout=0.4)
    assert la.acquire(blocking=False)
    lb = b.lock(name, timeout=10, sleep=0.01)
    t0 = time.monotonic()
    assert lb.acquire(blocking=True, blocking_timeout=5) is True
    assert time.monotonic() - t0 >= 0.3  # not before A's lock expired
    # A's lock is gone: its release is refused, B keeps the lock.
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        la.release()
    assert lb.owned() is True
    lb.release()
    assert lb.locked() is False


# --------------------------------------------------------------------------------------------
# 2. Django cache API coherence across instances


def test_protocol_in_use(pair):
    for raw in (pair.raw_a, pair.raw_b):
        info = raw.client_info()
        assert str(info["resp"]) == str(pair.protocol)
        assert str(info["db"]) == str(pair.db)


def test_set_on_a_get_on_b(pair):
    a, b = pair.a, pair.b
    k = unique("k")
    assert b.get(k) is None  # B looked the key up (a miss) before anyone wrote it
    a.set(k, {"v": 1})
    # B held nothing for the key (misses are not cached): A's write is visible at once.
    assert b.get(k) == {"v": 1}
    # B has the value in L1 now; A overwrites it: B's L1 entry is invalidated.
    assert b.get(k) == {"v": 1}
    a.set(k, {"v": 2})
    assert a.get(k) == {"v": 2}  # read-your-writes on A, at once
    eventually(lambda: b.get(k), {"v": 2}, "B sees A's overwrite")
    # And the other way round.
    assert a.get(k) == {"v": 2}
    b.set(k, "from-b")
    assert b.get(k) == "from-b"
    eventually(lambda: a.get(k), "from-b", "A sees B's overwrite")
    assert pair.up.exists(pair.key(k)) == 1


def test_delete_on_b_seen_by_a(pair):
    a, b = pair.a, pair.b
    k = unique("del")
    a.set(k, "v")
    assert a.get(k) == "v" and b.get(k) == "v"  # cached in both L1s
    assert b.delete(k) is True
    assert b.get(k) is None
    eventually(lambda: a.get(k), None, "A sees B's delete")
    assert a.has_key(k) is False
    assert a.delete(k) is False
    assert pair.up.exists(pair.key(k)) == 0


def test_incr_decr_across_instances(pair):
    a, b = pair.a, pair.b
    k = unique("n")
    a.set(k, 10)
    assert a.get(k) == 10 and b.get(k) == 10
    assert a.incr(k) == 11
    assert b.incr(k, 5) == 16  # B's INCR runs on the shared value, not on its cached 10
    assert a.decr(k, 2) == 14
    for c, who in ((a, "A"), (b, "B")):
        eventually(lambda: c.get(k), 14, f"{who} sees the counter")
    assert pair.up.get(pair.key(k)) == b"14"
    with pytest.raises(ValueError):
        b.incr(unique("missing"))


def test_incr_is_atomic_across_instances(pair):
    """Concurrent incr through both instances: none is lost (INCR runs on L2, not on L1)."""
    a, b = pair.a, pair.b
    k = unique("ctr")
    a.set(k, 0)
    per_thread, errors = 50, []

    def worker(c):
        try:
            for _ in range(per_thread):
                c.incr(k)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(c,)) for c in (a, b, a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errors, errors
    for c, who in ((a, "A"), (b, "B")):
        eventually(lambda: c.get(k), 4 * per_thread, f"{who} sees every increment")


def test_get_many_set_many_across_instances(pair):
    a, b = pair.a, pair.b
    p = unique("m")
    data = {f"{p}:{i}": {"i": i} for i in range(10)}
    keys = list(data)
    # B caches half of the keys (the other half it looks up, as misses).
    assert b.get_many(keys[:5]) == {}
    a.set_many({k: "old" for k in keys[:5]})
    assert b.get_many(keys[:5]) == {k: "old" for k in keys[:5]}  # at once: B held none of them
    a.set_many(data)
    eventually(lambda: b.get_many(keys + [p + ":absent"]), data, "B sees A's set_many")
    update = {k: {"i": -1} for k in keys[::2]}
    b.set_many(update)
    assert b.get_many(keys) == {**data, **update}
    eventually(lambda: a.get_many(keys), {**data, **update}, "A sees B's set_many")
    b.delete_many(keys[:3])
    expected = {k: v for k, v in {**data, **update}.items() if k not in keys[:3]}
    eventually(lambda: a.get_many(keys), expected, "A sees B's delete_many")


def test_ttl_across_instances(pair):
    a, b = pair.a, pair.b
    k = unique("ttl")
    a.set(k, "v", timeout=100)
    assert 95 <= b.ttl(k) <= 100
    assert b.get(k) == "v"
    assert b.persist(k) is True
    assert a.ttl(k) is None
    assert a.expire(k, 50) is True
    assert 45 <= b.ttl(k) <= 50
    assert b.ttl(unique("missing")) == 0
    # A value's TTL bounds its L1 entry: it is gone on both instances once it expires on L2.
    k2 = unique("short")
    start = time.monotonic()
    a.set(k2, "short-lived", timeout=0.4)
    assert a.get(k2) == "short-lived" and b.get(k2) == "short-lived"  # both cached it
    for c, who in ((a, "A"), (b, "B")):
        eventually(lambda: c.get(k2), None, f"{who} drops the expired value")
    assert time.monotonic() - start >= 0.35  # not before its time


def test_delete_pattern_across_instances(pair):
    a, b = pair.a, pair.b
    p = unique("dp")
    keys = [f"{p}:{i}" for i in range(12)]
    a.set_many({k: k for k in keys})
    a.set(p + "-other", "stays")
    assert len(a.get_many(keys)) == 12 and len(b.get_many(keys)) == 12  # cached in both L1s
    assert b.delete_pattern(f"{p}:*", itersize=5) == 12
    assert b.get_many(keys) == {}
    eventually(lambda: a.get_many(keys), {}, "A sees B's delete_pattern")
    assert a.get(p + "-other") == "stays"
    assert sorted(a.keys(f"{p}*")) == [p + "-other"]


def test_clear_across_instances(pair, caches):
    a, b = pair.a, pair.b
    other_protocol = 3 if pair.protocol == 2 else 2
    other = caches[f"A{other_protocol}"]  # another database
    p = unique("clr")
    data = {f"{p}:{i}": i for i in range(5)}
    a.set_many(data)
    other.set(p, "other-db")
    assert a.get_many(list(data)) == data and b.get_many(list(data)) == data
    b.clear()
    assert b.get_many(list(data)) == {}
    eventually(lambda: a.get_many(list(data)), {}, "A sees B's clear")
    assert pair.up.dbsize() == 0
    # FLUSHDB empties one database only.
    assert other.get(p) == "other-db"
    assert caches[f"B{other_protocol}"].get(p) == "other-db"


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_redis_py_client_on_tiered_instances(cluster, protocol):
    """Plain redis-py on both protocols: reply shapes through the relay, and coherence."""
    k, h = unique("rk"), unique("rh")
    with cluster.a.client(protocol) as a, cluster.b.client(protocol) as b:
        assert str(a.client_info()["resp"]) == str(protocol)
        assert a.set(k, "v1") is True
        assert b.get(k) == b"v1"
        assert a.set(k, "v2", get=True) == b"v1"
        eventually(lambda: b.get(k), b"v2", "B sees SET GET")
        assert b.mget([k, k + "-none"]) == [b"v2", None]
        assert a.hset(h, mapping={"f": "1", "g": "2"}) == 2
        assert b.hgetall(h) == {b"f": b"1", b"g": b"2"}
        assert b.hincrby(h, "f", 5) == 6
        assert a.hget(h, "f") == b"6"
        assert a.zadd(k + "z", {"x": 1.5, "y": 2}) == 2
        pairs = [tuple(x) for x in b.zrange(k + "z", 0, -1, withscores=True)]
        assert pairs == [(b"x", 1.5), (b"y", 2.0)]
        with a.pipeline(transaction=True) as p:
            p.incr(k + "n").incrby(k + "n", 4).get(k + "n")
            assert p.execute() == [1, 5, b"5"]
        assert b.get(k + "n") == b"5"
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            b.get(h)


# --------------------------------------------------------------------------------------------
# 3. redis-py: upstream writes, pub/sub, blocking pops, WATCH


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_write_straight_to_upstream_reaches_both_l1s(cluster, protocol):
    k1, k2 = unique("up1"), unique("up2")
    with cluster.up() as up, cluster.a.client(protocol) as a, cluster.b.client(protocol) as b:
        up.mset({k1: "old1", k2: "old2"})
        for r in (a, b):  # both instances cache the old values (GET and MGET fills)
            assert r.get(k1) == b"old1"
            assert r.mget([k1, k2]) == [b"old1", b"old2"]
        up.set(k1, "new1")
        for r, who in ((a, "A"), (b, "B")):
            eventually(lambda: r.get(k1), b"new1", f"{who} sees the upstream SET")
            eventually(lambda: r.mget([k1, k2]), [b"new1", b"old2"], f"{who} MGET")
        up.delete(k2)
        for r, who in ((a, "A"), (b, "B")):
            eventually(lambda: r.mget([k1, k2]), [b"new1", None], f"{who} sees the upstream DEL")
        up.append(k1, "+")
        up.pexpire(k1, 300)
        for r, who in ((a, "A"), (b, "B")):
            eventually(lambda: r.get(k1), b"new1+", f"{who} sees APPEND")
        for r, who in ((a, "A"), (b, "B")):
            eventually(lambda: r.get(k1), None, f"{who} sees the upstream expiry")


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_pubsub_across_instances(cluster, protocol):
    ch = unique("news")
    with cluster.a.client(protocol) as a, cluster.b.client(protocol) as b:
        pa = a.pubsub(ignore_subscribe_messages=False)
        pb = b.pubsub(ignore_subscribe_messages=False)
        try:
            pa.subscribe(ch)
            pa.psubscribe(ch[:-2] + "*")
            pb.subscribe(ch)
            confirmations = [pa.get_message(timeout=2), pa.get_message(timeout=2)]
            assert [m["type"] for m in confirmations] == ["subscribe", "psubscribe"]
            assert pb.get_message(timeout=2)["type"] == "subscribe"
            # Every subscription is a subscription on the upstream, whoever publishes.
            assert dict(b.pubsub_numsub(ch)) == {ch.encode(): 2}
            assert b.publish(ch, "hello") == 3  # A's channel + A's pattern + B's channel
            got = [pa.get_message(timeout=2), pa.get_message(timeout=2)]
            assert sorted((m["type"], m["data"]) for m in got) == [
                ("message", b"hello"),
                ("pmessage", b"hello"),
            ]
            m = pb.get_message(timeout=2)
            assert (m["type"], m["channel"], m["data"]) == ("message", ch.encode(), b"hello")
            # Published straight on the upstream: delivered too.
            with cluster.up() as up:
                assert up.publish(ch, "direct") == 3
            m = pb.get_message(timeout=2)
            assert (m["type"], m["data"]) == ("message", b"direct")
            got = [pa.get_message(timeout=2), pa.get_message(timeout=2)]
            assert sorted((m["type"], m["data"]) for m in got) == [
                ("message", b"direct"),
                ("pmessage", b"direct"),
            ], got
            pa.unsubscribe(ch)
            pa.punsubscribe()
            got = [pa.get_message(timeout=2), pa.get_message(timeout=2)]
            assert [m and m["type"] for m in got] == ["unsubscribe", "punsubscribe"], got
            assert a.publish(ch, "last") == 1  # B only
            m = pb.get_message(timeout=2)
            assert (m["type"], m["data"]) == ("message", b"last")
        finally:
            pa.close()
            pb.close()


def _resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


_PUSH_KINDS = (b"message", b"subscribe", b"unsubscribe")


def _read_push_kinds(sock, n, timeout=2.0):
    """Reads from a RESP2 subscriber socket until `n` push messages came (or `timeout`); returns
    their kinds in arrival order. (Channel names and payloads in these tests never spell a
    kind, so picking the kind lines out of the stream is exact.)"""
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        kinds = [line.decode() for line in buf.split(b"\r\n") if line in _PUSH_KINDS]
        remaining = deadline - time.monotonic()
        if len(kinds) >= n or remaining <= 0:
            return kinds
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            return kinds
        buf += data


def test_pubsub_message_published_before_unsubscribe_comes_first(cluster):
    """Redis: a message PUBLISH delivered to a subscriber (PUBLISH returned 1) before the
    subscriber sent UNSUBSCRIBE is in its stream before the unsubscribe confirmation."""
    rounds, misordered = 200, []
    with cluster.up() as publisher, socket.create_connection(("127.0.0.1", cluster.a.port)) as s:
        for i in range(rounds):
            ch = f"order-{i}"
            s.sendall(_resp("SUBSCRIBE", ch))
            assert _read_push_kinds(s, 1) == ["subscribe"]
            assert publisher.publish(ch, "payload") == 1
            s.sendall(_resp("UNSUBSCRIBE", ch))
            kinds = _read_push_kinds(s, 2)
            if kinds != ["message", "unsubscribe"]:
                misordered.append((i, kinds))
                if len(misordered) == 3:
                    break  # enough to show it; keeps the test fast
    assert misordered == [], f"misordered rounds (round, kinds in arrival order): {misordered}"


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_blpop_on_a_woken_by_rpush_on_b(cluster, protocol):
    q = unique("q")
    result = {}
    with cluster.a.client(protocol) as a, cluster.b.client(protocol) as b, cluster.up() as up:
        blocked_before = up.info("clients")["blocked_clients"]

        def popper():
            try:
                result["value"] = a.blpop([q], timeout=10)
                result["t"] = time.monotonic()
            except Exception as e:  # noqa: BLE001 - reported below
                result["error"] = repr(e)

        t = threading.Thread(target=popper)
        t.start()
        try:
            # The pop blocks on the upstream (a connection of its own).
            wait_until(
                lambda: up.info("clients")["blocked_clients"] > blocked_before,
                timeout=5,
                message="BLPOP blocked on the upstream",
            )
            assert "value" not in result
            t_push = time.monotonic()
            assert b.rpush(q, "job1") == 1
        finally:
            t.join(10)
            if t.is_alive():
                up.rpush(q, "unblock")
                t.join(5)
        assert "error" not in result, result
        assert list(result["value"]) == [q.encode(), b"job1"]
        assert result["t"] - t_push < 2
        assert b.llen(q) == 0
        # A timeout elapses, with a nil reply.
        t0 = time.monotonic()
        assert a.blpop([q], timeout=0.3) is None
        assert 0.25 <= time.monotonic() - t0 < 3
        # Data already there: served at once, through either instance.
        b.rpush(q, "x", "y")
        assert list(a.brpop([q], timeout=1)) == [q.encode(), b"y"]
        assert list(b.blpop([q], timeout=1)) == [q.encode(), b"x"]


def test_watch_across_instances(cluster):
    k = unique("w")
    with cluster.a.client() as a, cluster.b.client() as b, cluster.up() as up:
        a.set(k, "0")
        # Untouched: the transaction runs.
        with a.pipeline() as p:
            p.watch(k)
            assert p.get(k) == b"0"
            p.multi()
            p.set(k, "1")
            assert p.execute() == [True]
        # Changed through B: EXEC aborts.
        with a.pipeline() as p:
            p.watch(k)
            assert p.get(k) == b"1"
            b.set(k, "from-b")
            p.multi()
            p.set(k, "from-a")
            with pytest.raises(redis.WatchError):
                p.execute()
        assert a.get(k) == b"from-b"
        # Changed straight on the upstream: EXEC aborts as well.
        with b.pipeline() as p:
            p.watch(k)
            up.set(k, "direct")
            p.multi()
            p.set(k, "from-b-again")
            with pytest.raises(redis.WatchError):
                p.execute()
        eventually(lambda: b.get(k), b"direct", "B sees the upstream write")


# --------------------------------------------------------------------------------------------
# 4. Fail-open


@contextmanager
def outage_caches(cl):
    conf = {
        "FA": cache_conf(cl.a.port, 0, 2, "outage"),
        "FB": cache_conf(cl.b.port, 0, 2, "outage"),
    }
    with django_caches(conf) as c:
        yield c["FA"], c["FB"]


def test_fail_open_plain_commands_keep_working(fresh_cluster):
    cl = fresh_cluster
    with outage_caches(cl) as (fa, fb):
        fa.set("before", "old")
        assert fa.get("before") == "old" and fb.get("before") == "old"
        cl.upstream.kill()
        # At once, with no wait for the instances to notice: no exception.
        fa.set("during", {"written": "in the outage"})
        assert fa.get("during") == {"written": "in the outage"}
        fa.set("m1", 1, timeout=100)
        fa.set("m2", "two", timeout=100)
        assert fa.get_many(["m1", "m2", "absent"]) == {"m1": 1, "m2": "two"}
        # Written to L1 alone, a value lives at most l1.ttl (60 s by default).
        assert 55 <= fa.ttl("m1") <= 60
        assert fa.expire("m2", 50) is True
        assert fa.has_key("m2") is True
        assert fa.delete("m1") is True
        assert fa.get("m1") is None
        # Each instance is its own cache now: B never saw A's outage writes.
        fb.set("b-only", "b")
        assert fb.get("b-only") == "b"
        assert fb.get("during") is None
        for inst in (cl.a, cl.b):
            wait_until(
                lambda: "l2: down" in inst.readyz()[1], timeout=5, message="/readyz l2 down"
            )
            assert inst.readyz()[0] == 200  # still serving, still in the load balancer


def test_fail_open_shared_state_commands_are_refused(fresh_cluster):
    cl = fresh_cluster
    with cl.a.client() as r, cl.a.client(protocol=3) as r3, outage_caches(cl) as (fa, _):
        r.set("n", 1)
        cl.upstream.kill()
        assert r.set("plain", "v") is True  # plain commands still work (on L1)
        for client in (r, r3):
            for call in (
                lambda: client.incr("n"),
                lambda: client.incrby("n", 5),
                lambda: client.set("lk", "x", nx=True),
                lambda: client.eval("return 1", 0),
                lambda: client.lpop("list"),
            ):
                with pytest.raises(redis.ResponseError) as e:
                    call()
                assert str(e.value) == UNAVAILABLE
            # A transaction with a shared-state command is refused; one made only of plain
            # writes (django-redis's set_many) runs on L1 like its commands would.
            with client.pipeline(transaction=True) as p:
                p.set("t", 1)
                p.incr("t")
                with pytest.raises(redis.ResponseError, match=UNAVAILABLE):
                    p.execute()
            with client.pipeline(transaction=True) as p:
                p.set("t", 1)
                p.set("u", 2)
                assert p.execute() == [True, True]
        # django-redis: a lock cannot be taken (it would not exclude anyone) ...
        with pytest.raises(redis.ResponseError, match=UNAVAILABLE):
            fa.lock("outage-lock", timeout=5).acquire(blocking=False)
        # ... nor can add() (SET NX) succeed.
        with pytest.raises(redis.ResponseError, match=UNAVAILABLE):
            fa.add("added", 1)
        assert fa.get("added") is None


@pytest.mark.xfail(
    strict=True,
    reason="django-redis's incr() treats any ResponseError from its EVAL as an INCRBY overflow "
    "and falls back to a non-atomic TTL+GET+SET, which fail-open=plain serves on L1: the "
    "-UNAVAILABLE reply is swallowed and each instance counts on its own",
)
def test_fail_open_django_redis_incr_raises(fresh_cluster):
    cl = fresh_cluster
    with outage_caches(cl) as (fa, fb):
        cl.upstream.kill()
        fa.set("n", 10)
        fb.set("n", 10)
        with pytest.raises(Exception):  # noqa: B017 - any error: what matters is no value
            fa.incr("n")


def test_fail_open_django_set_many_keeps_working(fresh_cluster):
    cl = fresh_cluster
    with outage_caches(cl) as (fa, _):
        cl.upstream.kill()
        fa.set("single", 1)  # a plain SET works
        fa.set_many({"m1": 1, "m2": "two"}, timeout=100)
        assert fa.get_many(["m1", "m2"]) == {"m1": 1, "m2": "two"}


def test_fail_open_recovery_drops_outage_writes(fresh_cluster):
    cl = fresh_cluster
    with outage_caches(cl) as (fa, fb):
        fa.set("before", "old")
        assert fa.get("before") == "old" and fb.get("before") == "old"
        cl.upstream.kill()
        fa.set("during", "stale-a")
        fb.set("during", "stale-b")
        fa.set("before", "overwritten-in-outage")
        assert fa.get("during") == "stale-a" and fb.get("during") == "stale-b"
        t_restart = time.monotonic()
        cl.restart_upstream()
        key = fa.make_key("fresh")
        with cl.up() as up:
            up.set(key, 42)  # what the new upstream holds (an int, as django-redis stores it)
        for c, who in ((fa, "A"), (fb, "B")):
            eventually(lambda: c.get("fresh"), 42, f"{who} reads the new upstream", timeout=12)
        recovered_after = time.monotonic() - t_restart
        # No outage value survives, on either instance (the new upstream has none of them).
        for c in (fa, fb):
            assert c.get("during") is None
            assert c.get("before") is None
            assert c.get_many(["during", "before", "fresh"]) == {"fresh": 42}
        # Shared-state commands work again, on the new upstream.
        assert fa.incr("fresh") == 43
        eventually(lambda: fb.get("fresh"), 43, "B sees A's incr after recovery")
        lock = fb.lock("after", timeout=5)
        assert lock.acquire(blocking=False) is True
        assert fa.lock("after", timeout=5).acquire(blocking=False) is False
        lock.release()
        for inst in (cl.a, cl.b):
            wait_until(lambda: "l2: up" in inst.readyz()[1], timeout=5, message="/readyz l2 up")
        # Reconnection is attempted 1 s after the loss, then backs off (2 s, 4 s).
        assert recovered_after < 8, recovered_after
