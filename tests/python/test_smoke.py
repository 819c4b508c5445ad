"""redis-py against the real binary, on RESP3 (redis-py 8's default) and RESP2."""
import pytest
import redis


@pytest.mark.parametrize("protocol", [2, 3])
def test_set_get_incr(strata, protocol):
    r = redis.Redis(port=strata.port, protocol=protocol)
    assert r.ping()
    assert r.set("smoke:k", "v")
    assert r.get("smoke:k") == b"v"
    assert r.incr("smoke:n") >= 1
    r.hset("smoke:h", mapping={"a": "1", "b": "2"})
    assert r.hgetall("smoke:h") == {b"a": b"1", b"b": b"2"}
    with pytest.raises(redis.ResponseError, match="wrong kind of value"):
        r.incr("smoke:h")
