"""Django's cache framework pointed at Strata.

Four configurations, each a cache alias and each test runs on all four:

* ``django_redis-resp3`` / ``django_redis-resp2``: ``django_redis.cache.RedisCache``, the protocol
  passed as ``OPTIONS["CONNECTION_POOL_KWARGS"]["protocol"]`` (django-redis hands those kwargs to
  redis-py's ``ConnectionPool.from_url``).
* ``django_builtin-resp3`` / ``django_builtin-resp2``: Django's own
  ``django.core.cache.backends.redis.RedisCache``. Its ``OPTIONS`` are passed unchanged to
  ``ConnectionPool.from_url`` (see ``RedisCacheClient.__init__``), so ``OPTIONS["protocol"]``
  selects RESP2/RESP3 the same way; ``test_protocol_in_use`` checks on the server side (CLIENT INFO
  ``resp=``) that it took effect.

Django's built-in backend has no ttl/expire/persist/keys/delete_pattern/iter_keys/lock; for it,
those tests drive the same operations through the backend's own redis-py client
(``cache._cache.get_client()``, which is what Django users reach for) on the backend's key names
(``cache.make_key``), so both backends' connections and key layouts are exercised.

Each alias uses its own database (SELECT), so ``clear()`` (FLUSHDB) of one must not touch the
others; ``test_clear_is_per_database`` checks that.
"""
import dataclasses
import datetime
import decimal
import os
import threading
import time
import uuid

import django
import pytest
import redis
from conftest import wait_until
from django.conf import settings
from django.test.utils import override_settings

ALIASES = {
    # alias: (backend kind, protocol, database)
    "django_redis-resp3": ("django_redis", 3, 1),
    "django_redis-resp2": ("django_redis", 2, 2),
    "django_builtin-resp3": ("builtin", 3, 3),
    "django_builtin-resp2": ("builtin", 2, 4),
}
DEFAULT_TIMEOUT = 300
# A database no alias uses, for the isolation check.
SPARE_DB = 9


def caches_setting(port):
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    for alias, (kind, protocol, db) in ALIASES.items():
        location = f"redis://127.0.0.1:{port}/{db}"
        if kind == "django_redis":
            caches[alias] = {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": location,
                "KEY_PREFIX": alias,
                "TIMEOUT": DEFAULT_TIMEOUT,
                "OPTIONS": {
                    "CLIENT_CLASS": "django_redis.client.DefaultClient",
                    "CONNECTION_POOL_KWARGS": {"protocol": protocol},
                },
            }
        else:
            caches[alias] = {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": location,
                "KEY_PREFIX": alias,
                "TIMEOUT": DEFAULT_TIMEOUT,
                "OPTIONS": {"protocol": protocol},
            }
    return caches


@pytest.fixture(scope="module")
def django_caches(strata):
    conf = caches_setting(strata.port)
    if not settings.configured:
        settings.configure(CACHES=conf, INSTALLED_APPS=[], USE_TZ=True)
        django.setup()
        from django.core.cache import caches

        yield caches
        for alias in ALIASES:
            caches[alias].close()
    else:
        # Someone configured Django first (another test module): swap the CACHES in.
        with override_settings(CACHES=conf):
            from django.core.cache import caches

            yield caches
            for alias in ALIASES:
                caches[alias].close()


class Backend:
    def __init__(self, alias, cache, port):
        self.alias = alias
        self.kind, self.protocol, self.db = ALIASES[alias]
        self.cache = cache
        self.port = port
        if self.kind == "django_redis":
            from django_redis import get_redis_connection

            self.raw = get_redis_connection(alias, write=True)
        else:
            self.raw = cache._cache.get_client(write=True)

    @property
    def is_django_redis(self):
        return self.kind == "django_redis"

    def key(self, key, version=None):
        """The name the backend stores `key` under."""
        return self.cache.make_key(key, version=version)


@pytest.fixture(params=list(ALIASES))
def backend(request, django_caches, strata):
    b = Backend(request.param, django_caches[request.param], strata.port)
    b.cache.clear()
    return b


# --------------------------------------------------------------------------------------------
# Connection


def test_protocol_in_use(backend):
    """The protocol option reaches redis-py, and the server agrees (CLIENT INFO resp=N)."""
    raw = backend.raw
    assert raw.connection_pool.connection_kwargs["protocol"] == backend.protocol
    info = raw.client_info()
    assert str(info["resp"]) == str(backend.protocol)
    assert str(info["db"]) == str(backend.db)


# --------------------------------------------------------------------------------------------
# Basic operations


def test_set_get_delete(backend):
    c = backend.cache
    assert c.get("missing") is None
    assert c.get("missing", "dflt") == "dflt"
    c.set("k", "value")
    assert c.get("k") == "value"
    c.set("k", "other")
    assert c.get("k") == "other"
    assert c.delete("k") is True
    assert c.get("k") is None
    assert c.delete("k") is False
    # The stored name is prefix:version:key.
    c.set("named", 1)
    assert backend.raw.exists(f"{backend.alias}:1:named") == 1
    # Integers are stored unpickled (so INCR works on them).
    assert backend.raw.get(f"{backend.alias}:1:named") == b"1"


def test_add(backend):
    c = backend.cache
    assert c.add("a", "first") is True
    assert c.add("a", "second") is False
    assert c.get("a") == "first"
    assert c.add("a2", "x", timeout=100) is True
    assert 95 <= backend.raw.ttl(backend.key("a2")) <= 100
    if backend.is_django_redis:
        # django-redis's set(nx=/xx=)
        assert c.set("nx", 1, nx=True) is True
        assert c.set("nx", 2, nx=True) is False
        assert c.set("xx-missing", 1, xx=True) is False
        assert c.get("xx-missing") is None
        assert c.set("nx", 3, xx=True) is True
        assert c.get("nx") == 3


def test_get_many_set_many_delete_many(backend):
    c = backend.cache
    data = {f"m{i}": {"i": i, "s": "x" * i} for i in range(20)}
    assert c.set_many(data) in ([], None)  # failed keys: [] (Django), None (django-redis)
    got = c.get_many(list(data) + ["absent1", "absent2"])
    assert got == data
    c.set_many({"t1": 1, "t2": 2}, timeout=100)
    for k in ("t1", "t2"):
        assert 95 <= backend.raw.ttl(backend.key(k)) <= 100
    c.delete_many([f"m{i}" for i in range(10)] + ["absent3"])
    assert c.get_many(list(data)) == {f"m{i}": data[f"m{i}"] for i in range(10, 20)}
    assert c.get_many([]) == {}


def test_has_key(backend):
    c = backend.cache
    assert c.has_key("hk") is False
    c.set("hk", "v")
    assert c.has_key("hk") is True
    assert "hk" in c
    c.set("hk-none", None)
    assert c.has_key("hk-none") is True
    assert c.get("hk-none", "dflt") is None
    c.delete("hk")
    assert c.has_key("hk") is False


def test_incr_decr(backend):
    c = backend.cache
    c.set("n", 10)
    assert c.incr("n") == 11
    assert c.incr("n", 10) == 21
    assert c.decr("n") == 20
    assert c.decr("n", 25) == -5
    assert c.get("n") == -5
    assert backend.raw.get(backend.key("n")) == b"-5"
    with pytest.raises(ValueError):
        c.incr("does-not-exist")
    with pytest.raises(ValueError):
        c.decr("does-not-exist")
    # incr on a missing key must not create it.
    assert c.has_key("does-not-exist") is False


def test_incr_keeps_ttl(backend):
    c = backend.cache
    c.set("nt", 1, timeout=100)
    assert c.incr("nt") == 2
    assert 95 <= backend.raw.ttl(backend.key("nt")) <= 100


def test_incr_overflow(backend):
    c = backend.cache
    c.set("big", 2**63 - 1)
    if backend.is_django_redis:
        # INCRBY fails inside django-redis's script with "increment or decrement would
        # overflow"; django-redis then falls back to Python arithmetic and stores the sum.
        assert c.incr("big") == 2**63
        assert c.get("big") == 2**63
    else:
        with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
            c.incr("big")
        assert c.get("big") == 2**63 - 1


def test_incr_is_atomic_under_concurrency(backend):
    c = backend.cache
    c.set("counter", 0)
    threads, per_thread = 4, 50
    errors = []

    def worker():
        try:
            for _ in range(per_thread):
                c.incr("counter")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errors, errors
    assert c.get("counter") == threads * per_thread


# --------------------------------------------------------------------------------------------
# Expiry


def test_timeouts(backend):
    c, raw = backend.cache, backend.raw
    # Default timeout from settings.
    c.set("t-default", "v")
    assert DEFAULT_TIMEOUT - 5 <= raw.ttl(backend.key("t-default")) <= DEFAULT_TIMEOUT
    # Positive.
    c.set("t-pos", "v", timeout=100)
    assert 95 <= raw.ttl(backend.key("t-pos")) <= 100
    assert 95_000 <= raw.pttl(backend.key("t-pos")) <= 100_000
    # None: never expires.
    c.set("t-none", "v", timeout=None)
    assert raw.ttl(backend.key("t-none")) == -1
    assert c.get("t-none") == "v"
    # 0 and negative: not stored, and an existing value is removed.
    c.set("t-zero", "v", timeout=0)
    assert c.get("t-zero") is None
    c.set("t-pos", "v2", timeout=0)
    assert c.get("t-pos") is None
    assert raw.exists(backend.key("t-pos")) == 0
    c.set("t-neg", "v")
    c.set("t-neg", "v", timeout=-1)
    assert c.get("t-neg") is None
    # add with timeout 0 stores nothing.
    c.add("t-add0", "v", timeout=0)
    assert c.get("t-add0") is None
    if backend.is_django_redis:
        assert c.ttl("t-none") is None
        assert c.ttl("t-missing") == 0
        assert DEFAULT_TIMEOUT - 5 <= c.ttl("t-default") <= DEFAULT_TIMEOUT


def test_short_timeout_really_expires(backend):
    c, raw = backend.cache, backend.raw
    # Django's built-in backend sends whole seconds (EX); django-redis sends milliseconds (PX).
    timeout = 0.3 if backend.is_django_redis else 1
    start = time.monotonic()
    c.set("short", "v", timeout=timeout)
    assert c.get("short") == "v" or time.monotonic() - start >= timeout
    wait_until(lambda: c.get("short") is None, timeout=timeout + 5, message="key to expire")
    gone_after = time.monotonic() - start
    # Not before its time (50 ms of slack for clock granularity).
    assert gone_after >= timeout - 0.05
    assert c.has_key("short") is False
    assert c.get_many(["short"]) == {}
    assert raw.exists(backend.key("short")) == 0
    # An expired key can be added again.
    assert c.add("short", "again") is True
    assert c.get("short") == "again"


def test_touch(backend):
    c, raw = backend.cache, backend.raw
    assert c.touch("touch-missing", 10) is False
    c.set("tk", "v", timeout=100)
    assert c.touch("tk", 1000) is True
    assert 995 <= raw.ttl(backend.key("tk")) <= 1000
    assert c.touch("tk", None) is True
    assert raw.ttl(backend.key("tk")) == -1
    assert c.get("tk") == "v"
    # touch with 0 expires the key at once.
    c.touch("tk", 0)
    assert c.get("tk") is None


def test_ttl_expire_persist(backend):
    c, raw = backend.cache, backend.raw
    c.set("e", "v", timeout=None)
    k = backend.key("e")
    if backend.is_django_redis:
        assert c.ttl("e") is None
        assert c.expire("e", 100) is True
        assert 95 <= c.ttl("e") <= 100
        assert 95_000 <= c.pttl("e") <= 100_000
        assert c.persist("e") is True
        assert c.ttl("e") is None
        assert c.persist("e") is False
        assert c.pexpire("e", 50_000) is True
        assert 45 <= c.ttl("e") <= 50
        assert c.expire_at("e", datetime.datetime.now() + datetime.timedelta(seconds=200))
        assert 195 <= c.ttl("e") <= 200
        assert c.expire("nope", 10) is False
        assert c.ttl("nope") == 0
        assert c.pttl("nope") == 0
    else:
        assert raw.ttl(k) == -1
        assert raw.expire(k, 100) is True
        assert 95 <= raw.ttl(k) <= 100
        assert raw.persist(k) is True
        assert raw.ttl(k) == -1
        assert raw.persist(k) is False
        assert raw.pexpire(k, 50_000) is True
        assert 45 <= raw.ttl(k) <= 50
        assert raw.expireat(k, datetime.datetime.now() + datetime.timedelta(seconds=200))
        assert 195 <= raw.ttl(k) <= 200
        assert raw.expire(backend.key("nope"), 10) is False
        assert raw.ttl(backend.key("nope")) == -2
    assert c.get("e") == "v"


# --------------------------------------------------------------------------------------------
# Key listing


def _stored_names(backend, pattern):
    """Key names (without prefix and version) matching `pattern`, listed the backend's way."""
    if backend.is_django_redis:
        return sorted(backend.cache.keys(pattern))
    prefix = backend.key("")
    return sorted(k.decode()[len(prefix):] for k in backend.raw.keys(backend.key(pattern)))


def test_keys_iter_keys_delete_pattern(backend):
    c, raw = backend.cache, backend.raw
    dp = [f"dp:{i}" for i in range(25)]
    c.set_many({k: k for k in dp})
    c.set_many({"other:1": 1, "other:2": 2})
    assert _stored_names(backend, "dp:*") == sorted(dp)
    assert _stored_names(backend, "dp:1?") == sorted(f"dp:{i}" for i in range(10, 20))
    assert _stored_names(backend, "*") == sorted(dp + ["other:1", "other:2"])
    assert _stored_names(backend, "nothing*") == []
    if backend.is_django_redis:
        # A small itersize forces many SCAN round trips with a cursor.
        listed = list(c.iter_keys("dp:*", itersize=3))
        assert set(listed) == set(dp)
        assert c.delete_pattern("dp:*", itersize=4) == 25
        assert c.delete_pattern("dp:*") == 0
    else:
        listed = [k.decode() for k in raw.scan_iter(match=backend.key("dp:*"), count=3)]
        assert set(listed) == {backend.key(k) for k in dp}
        with raw.pipeline() as p:
            for k in raw.scan_iter(match=backend.key("dp:*"), count=4):
                p.delete(k)
            assert sum(p.execute()) == 25
    assert _stored_names(backend, "dp:*") == []
    assert c.get("other:1") == 1 and c.get("other:2") == 2


def test_hash_helpers(backend):
    if not backend.is_django_redis:
        pytest.skip("hash helpers are django-redis API")
    c = backend.cache
    assert c.hset("h", "f1", "v1") == 1
    assert c.hset("h", "f2", {"x": 1}) == 1
    assert c.hlen("h") == 2
    assert sorted(c.hkeys("h")) == ["f1", "f2"]
    assert c.hexists("h", "f1") is True
    assert c.hdel("h", "f1") == 1
    assert c.hexists("h", "f1") is False


def test_set_helpers(backend):
    """django-redis's set API (values are pickled/encoded by the client, so members are objects)."""
    if not backend.is_django_redis:
        pytest.skip("set helpers are django-redis API")
    c = backend.cache
    assert c.sadd("s1", "a", "b", "c") == 3
    assert c.sadd("s1", "a") == 0
    assert c.scard("s1") == 3
    assert c.smembers("s1") == {"a", "b", "c"}
    assert c.sismember("s1", "a") is True
    assert c.sismember("s1", "z") is False
    assert c.smismember("s1", "a", "z") == [True, False]
    assert c.sadd("s2", "b", "c", "d") == 3
    assert c.sinter("s1", "s2") == {"b", "c"}
    assert c.sunion("s1", "s2") == {"a", "b", "c", "d"}
    assert c.sdiff("s1", "s2") == {"a"}
    assert c.sinterstore("s3", "s1", "s2") == 2
    assert c.smembers("s3") == {"b", "c"}
    assert c.sunionstore("s4", "s1", "s2") == 4
    assert c.sdiffstore("s5", "s2", "s1") == 1
    assert c.smembers("s5") == {"d"}
    assert c.smove("s1", "s2", "a") is True
    assert c.smove("s1", "s2", "nope") is False
    assert c.sismember("s2", "a") is True
    assert c.srandmember("s2") in {"a", "b", "c", "d"}
    assert set(c.srandmember("s2", 2)) <= {"a", "b", "c", "d"}
    popped = c.spop("s2")
    assert popped in {"a", "b", "c", "d"} and c.scard("s2") == 3
    assert c.srem("s2", *c.smembers("s2")) == 3
    assert c.scard("s2") == 0
    assert c.sadd("big", *range(300)) == 300
    assert set(c.sscan_iter("big")) == set(range(300))
    # Integers are stored as their digits (an intset), and one SSCAN returns an intset whole.
    assert c.sscan("big") == set(range(300))


def test_sorted_sets_through_the_backends_client(backend):
    """django-redis has no sorted-set helpers; Django code uses the backend's redis-py client."""
    r = backend.raw
    key = backend.key("board")
    assert r.zadd(key, {"ann": 3, "bob": 1, "cy": 2}) == 3
    assert r.zadd(key, {"bob": 5}, gt=True, ch=True) == 1
    pairs = lambda v: [tuple(x) for x in v]  # redis-py gives lists on RESP3, tuples on RESP2
    assert pairs(r.zrange(key, 0, -1, withscores=True)) == [(b"cy", 2.0), (b"ann", 3.0), (b"bob", 5.0)]
    assert r.zrevrange(key, 0, 0) == [b"bob"]
    assert r.zrangebyscore(key, "(2", "+inf") == [b"ann", b"bob"]
    assert r.zincrby(key, 0.5, "cy") == 2.5
    assert r.zscore(key, "cy") == 2.5
    assert r.zrank(key, "cy") == 0 and r.zrevrank(key, "cy") == 2
    assert r.zcount(key, "-inf", "+inf") == 3
    # Without a count RESP3 replies with one flat pair (redis-py passes it through).
    assert r.zpopmin(key) in ([(b"cy", 2.5)], [b"cy", 2.5])
    assert r.zrem(key, "ann", "nobody") == 1
    assert r.zcard(key) == 1


# --------------------------------------------------------------------------------------------
# Lock


def _lock(backend, name, **kw):
    if backend.is_django_redis:
        return backend.cache.lock(name, **kw)
    return backend.raw.lock(backend.key(name), **kw)


def test_lock_acquire_contention_release(backend):
    a = _lock(backend, "lk", timeout=10)
    b = _lock(backend, "lk", timeout=10)
    assert a.acquire(blocking=False) is True
    assert a.locked() is True
    assert a.owned() is True
    # Contention: a second holder cannot take it.
    assert b.acquire(blocking=False) is False
    t0 = time.monotonic()
    assert b.acquire(blocking=True, blocking_timeout=0.3, sleep=0.02) is False
    assert time.monotonic() - t0 >= 0.25
    assert b.owned() is False
    a.release()
    assert a.locked() is False
    assert b.acquire(blocking=False) is True
    # A holder whose token no longer matches (its lock expired and was taken) is refused by
    # the release script, and the real holder keeps the lock.
    stale = _lock(backend, "lk", timeout=10)
    stale.local.token = b"not-the-holders-token"
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        stale.release()
    assert b.owned() is True
    stale.local.token = b"not-the-holders-token"  # release() forgot it
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        stale.extend(5)
    # extend adds time to the holder's lock.
    assert b.extend(20) is True
    assert backend.raw.pttl(b.name) > 10_000
    b.release()
    assert backend.raw.exists(b.name) == 0


def test_lock_blocks_until_released(backend):
    holder = _lock(backend, "lk2", timeout=10)
    assert holder.acquire(blocking=False)
    released = threading.Event()
    result = {}

    started = threading.Event()

    def waiter():
        try:
            w = _lock(backend, "lk2", timeout=10, sleep=0.02)
            started.set()
            result["acquired"] = w.acquire(blocking=True, blocking_timeout=10)
            result["after_release"] = released.is_set()
            if result["acquired"]:
                w.release()
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            result["error"] = repr(e)

    t = threading.Thread(target=waiter)
    t.start()
    assert started.wait(5)
    # Give the waiter a few failed attempts (its poll interval is 20 ms) before releasing; the
    # assertion does not depend on this timing, it only makes the wait real.
    time.sleep(0.1)
    released.set()
    try:
        holder.release()
    except Exception:
        backend.raw.delete(holder.name)  # free the waiter so no thread outlives the test
        raise
    finally:
        t.join(15)
    assert result == {"acquired": True, "after_release": True}


def test_lock_times_out(backend):
    a = _lock(backend, "lk3", timeout=0.3)
    assert a.acquire(blocking=False)
    b = _lock(backend, "lk3", timeout=10, sleep=0.02)
    t0 = time.monotonic()
    assert b.acquire(blocking=True, blocking_timeout=5) is True
    assert time.monotonic() - t0 >= 0.2
    b.release()
    with _lock(backend, "lk4", timeout=5) as held:
        assert held.owned()
    assert backend.raw.exists(held.name) == 0


# --------------------------------------------------------------------------------------------
# clear, get_or_set, versions


def test_clear_is_per_database(backend):
    c = backend.cache
    c.set_many({"c1": 1, "c2": 2})
    spare = redis.Redis(port=backend.port, db=SPARE_DB, protocol=backend.protocol)
    try:
        spare.set("survivor", "yes")
        assert backend.raw.dbsize() >= 2
        c.clear()
        assert backend.raw.dbsize() == 0
        assert c.get("c1") is None
        assert spare.get("survivor") == b"yes"
    finally:
        spare.delete("survivor")
        spare.close()


def test_get_or_set(backend):
    c = backend.cache
    assert c.get_or_set("gs", "d1") == "d1"
    assert c.get_or_set("gs", "d2") == "d1"
    calls = []

    def compute():
        calls.append(1)
        return {"computed": True}

    assert c.get_or_set("gs2", compute) == {"computed": True}
    assert c.get_or_set("gs2", compute) == {"computed": True}
    assert len(calls) == 1
    assert c.get_or_set("gs3", "x", timeout=100) == "x"
    assert 95 <= backend.raw.ttl(backend.key("gs3")) <= 100


def test_versioned_keys(backend):
    c = backend.cache
    c.set("vk", "v1")
    c.set("vk", "v2", version=2)
    assert c.get("vk") == "v1"
    assert c.get("vk", version=1) == "v1"
    assert c.get("vk", version=2) == "v2"
    assert backend.raw.get(f"{backend.alias}:2:vk") is not None
    assert c.incr_version("vk") == 2
    assert c.get("vk", version=1) is None
    assert c.get("vk", version=2) == "v1"
    assert c.decr_version("vk", version=2) == 1
    assert c.get("vk") == "v1"
    assert c.get("vk", version=2) is None
    with pytest.raises(ValueError):
        c.incr_version("no-such-key")
    c.delete("vk", version=1)
    assert c.get("vk") is None
    if backend.is_django_redis:
        # django-redis moves the TTL with the value.
        c.set("vt", "x", timeout=100)
        assert c.incr_version("vt") == 2
        assert 95 <= c.ttl("vt", version=2) <= 100


# --------------------------------------------------------------------------------------------
# Values and keys


@dataclasses.dataclass
class Point:
    x: int
    y: float
    tags: tuple


def test_pickled_objects(backend):
    c = backend.cache
    values = {
        "dict": {"a": 1, "b": [1, 2, {"c": None}]},
        "list": [1, "two", 3.0, None, True],
        "tuple": (1, 2, 3),
        "set": {1, 2, 3},
        "frozenset": frozenset({"a"}),
        "datetime": datetime.datetime(2024, 2, 29, 12, 30, 45, 123456, tzinfo=datetime.timezone.utc),
        "date": datetime.date(1999, 12, 31),
        "decimal": decimal.Decimal("3.14159265358979323846"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "dataclass": Point(1, 2.5, ("a", "b")),
        "float": 1.5,
        "bool": True,
        "negative": -42,
        "bigint": 2**100,
        "bytes": b"\x00\x01\xff binary \r\n",
        "str": "plain",
        "empty": "",
    }
    for k, v in values.items():
        c.set(k, v)
    for k, v in values.items():
        got = c.get(k)
        assert got == v, k
        assert type(got) is type(v), k
    assert c.get_many(list(values)) == values


def test_large_values(backend):
    c = backend.cache
    blob = os.urandom(1 << 20)
    text = "é" * (1 << 19)  # 1 MB of UTF-8
    c.set("blob", blob)
    c.set("text", text)
    assert c.get("blob") == blob
    assert c.get("text") == text
    assert c.get_many(["blob", "text"]) == {"blob": blob, "text": text}
    assert backend.raw.strlen(backend.key("blob")) >= 1 << 20
    # Overwrite with a small value and back.
    c.set("blob", b"small")
    assert c.get("blob") == b"small"


def test_unicode_keys(backend):
    c = backend.cache
    data = {"ключ": "значение", "日本語キー": "値", "emoji-🙂": "😀", "straße": "groß", "ascii": "ü"}
    for k, v in data.items():
        c.set(k, v)
        assert c.get(k) == v
    assert c.get_many(list(data)) == data
    assert c.has_key("ключ")
    assert _stored_names(backend, "*") == sorted(data)
    c.set("ключ-n", 5)
    assert c.incr("ключ-n") == 6
    c.delete("ключ")
    assert c.get("ключ") is None


# --------------------------------------------------------------------------------------------
# Pipelines through the backend's redis-py client


@pytest.mark.parametrize("transaction", [True, False], ids=["multi", "plain"])
def test_pipeline(backend, transaction):
    raw = backend.raw
    k1, k2, h = backend.key("p1"), backend.key("p2"), backend.key("ph")
    with raw.pipeline(transaction=transaction) as p:
        p.set(k1, "a")
        p.get(k1)
        p.incr(k2)
        p.incrby(k2, 5)
        p.expire(k1, 100)
        p.ttl(k1)
        p.hset(h, mapping={"f": "1", "g": "2"})
        p.hgetall(h)
        p.mget([k1, k2, backend.key("none")])
        p.delete(k1)
        p.exists(k1)
        res = p.execute()
    assert res[5] in (99, 100), res
    res[5] = 100
    assert res == [
        True, b"a", 1, 6, True, 100, 2, {b"f": b"1", b"g": b"2"}, [b"a", b"6", None], 1, 0,
    ]
    # A command failing at run time does not stop the others.
    with raw.pipeline(transaction=transaction) as p:
        p.set(k1, "not-a-number")
        p.incr(k1)
        p.append(k1, "!")
        res = p.execute(raise_on_error=False)
    assert res[0] is True and res[2] == 13
    assert isinstance(res[1], redis.ResponseError)
    assert str(res[1]) == "value is not an integer or out of range"
    assert raw.get(k1) == b"not-a-number!"
    with raw.pipeline(transaction=transaction) as p:
        p.incr(k1)
        with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
            p.execute()
    # The cache sees what the pipeline wrote.
    assert backend.cache.get("p2") == 6
