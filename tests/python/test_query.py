"""QUERY from Python: redis-py's `execute_command("QUERY", ...)` and a Django view that uses
django-redis's connection, against the real binary in front of a real PostgreSQL primary and
streaming replica. Reads come from the replica and then the cache, writes go to the primary and
invalidate, and the view never shows a value older than the write it follows."""
import json

import pytest
import redis

from conftest import StrataProcess, wait_until


@pytest.fixture(scope="module")
def strata_db(postgres):
    postgres.psql(
        "primary",
        "CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL);"
        "INSERT INTO users VALUES (1, 'alice'), (2, 'bob');",
    )
    p = StrataProcess(
        extra_env={
            "STRATA_DATABASE_PRIMARY_URL": postgres.url("primary"),
            "STRATA_DATABASE_REPLICAS": f'[{{name = "replica1", url = "{postgres.url("replica")}"}}]',
            "STRATA_DATABASE_LAG_PROBE_MS": "50",
            "STRATA_DATABASE_POOL_MIN": "2",
        }
    )
    yield p
    p.stop()


def query_json(r, sql, *args, options=()):
    cmd = ["QUERY", sql]
    if args:
        cmd += ["ARGS", len(args), *args]
    return json.loads(r.execute_command(*cmd, *options, "FORMAT", "JSON"))


def test_reads_come_from_the_replica_then_the_cache_and_writes_from_the_primary(strata_db):
    r = redis.Redis(port=strata_db.port)
    sql = "SELECT name FROM users WHERE id = $1"
    first = wait_until(
        lambda: (lambda j: j if j["source"] == "replica:replica1" else None)(
            query_json(r, sql, 1, options=["NOCACHE"])
        ),
        message="a read served by the replica",
    )
    assert first["rows"] == [["alice"]]
    wait_until(lambda: query_json(r, sql, 1)["source"] == "l1", message="the result cached")
    # RESP reply through redis-py: column names, then rows.
    assert r.execute_command("QUERY", sql, "ARGS", 1, 2) == [[b"name"], [b"bob"]]
    written = query_json(r, "UPDATE users SET name = $1 WHERE id = $2 RETURNING pg_is_in_recovery()", "carol", 1)
    assert written["source"] == "primary" and written["rows"] == [[False]]
    # The same connection reads its write at once.
    assert query_json(r, sql, 1)["rows"] == [["carol"]]
    with pytest.raises(redis.ResponseError, match="42P01"):
        r.execute_command("QUERY", "SELECT * FROM nope")
    with pytest.raises(redis.ResponseError, match="QUERY does not run BEGIN"):
        r.execute_command("QUERY", "BEGIN")


def test_a_django_view_reads_through_the_cache_and_sees_writes(strata_db):
    pytest.importorskip("django")
    import django
    from django.conf import settings
    from django.http import JsonResponse
    from django.test import Client, override_settings
    from django.urls import path
    from django_redis import get_redis_connection

    if not settings.configured:
        settings.configure(INSTALLED_APPS=[], USE_TZ=True)
        django.setup()

    def user_view(request, uid):
        conn = get_redis_connection("default")
        raw = conn.execute_command(
            "QUERY", "SELECT id, name FROM users WHERE id = $1", "ARGS", 1, uid, "FORMAT", "JSON"
        )
        return JsonResponse(json.loads(raw))

    def rename_view(request, uid):
        conn = get_redis_connection("default")
        n = conn.execute_command(
            "QUERY", "UPDATE users SET name = $1 WHERE id = $2", "ARGS", 2,
            request.GET["name"], uid,
        )
        return JsonResponse({"updated": n})

    urls = type("urls", (), {"urlpatterns": [
        path("user/<int:uid>", user_view),
        path("rename/<int:uid>", rename_view),
    ]})
    caches = {"default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{strata_db.port}/0",
    }}
    with override_settings(ROOT_URLCONF=urls, CACHES=caches, ALLOWED_HOSTS=["testserver"]):
        client = Client()
        body = wait_until(
            lambda: (lambda j: j if j["source"] == "l1" else None)(client.get("/user/2").json()),
            message="the view's read served from the cache",
        )
        assert body["columns"] == ["id", "name"] and body["rows"] == [[2, "bob"]]
        assert client.get("/rename/2?name=dave").json() == {"updated": 1}
        # No view shows the pre-write name from the cache; replicas catch up within MAXLAG.
        seen = wait_until(
            lambda: (lambda j: j if j["rows"] == [[2, "dave"]] else None)(client.get("/user/2").json()),
            timeout=2.0, message="the renamed user",
        )
        assert seen["rows"] == [[2, "dave"]]
        for _ in range(20):
            j = client.get("/user/2").json()
            if j["source"] == "l1":
                assert j["rows"] == [[2, "dave"]], j
