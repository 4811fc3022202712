"""The chaos run's fault proxy (bench/proxy.py) on a real redis-server: each fault does what it
says to the one route it is applied to, and heal undoes it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from bench.proxy import FaultProxy
from coordinator.ops.local_redis import LocalRedis


@pytest.fixture
def proxy(redis_server) -> Iterator[FaultProxy]:
    p = FaultProxy(("127.0.0.1", redis_server.port)).start()
    yield p
    p.close()


def client(url: str, timeout_s: float = 5.0) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout_s, retry=None)


def test_cut_refuses_one_route_until_healed(proxy):
    cut, other = client(proxy.add("cut")), client(proxy.add("other"))
    assert cut.ping() and other.ping()
    proxy.cut("cut")
    with pytest.raises(redis.ConnectionError):
        cut.ping()
    assert other.ping()  # per route
    proxy.heal("cut")
    assert cut.ping()


def test_latency_delays_each_way(proxy):
    slow = client(proxy.add("slow"), timeout_s=0.2)
    proxy.latency("slow", 0.3)  # one way already exceeds the client's timeout
    with pytest.raises(redis.TimeoutError):
        slow.ping()


def test_holding_replies_lets_commands_through_and_delivers_on_heal(proxy, redis_server):
    held, direct = client(proxy.add("held"), timeout_s=0.5), redis.Redis(port=redis_server.port)
    conn = held.connection_pool.get_connection()  # connected (handshake done) before the hold
    proxy.hold("held", "down")
    conn.send_command("SET", "k", "v")
    assert not conn.can_read(timeout=0.5)  # no reply yet...
    assert direct.get("k") == b"v"  # ...though the command reached Redis: only its reply is held
    proxy.heal("held")
    assert conn.read_response() == b"OK"  # delivered, in order, on heal
    held.connection_pool.release(conn)


def test_holding_requests_keeps_them_from_redis(proxy, redis_server):
    held, direct = client(proxy.add("mute"), timeout_s=0.5), redis.Redis(port=redis_server.port)
    assert held.ping()
    proxy.hold("mute", "up")
    with pytest.raises(redis.TimeoutError):
        held.set("never-before-heal", "1")
    assert direct.get("never-before-heal") is None


def test_set_upstream_moves_every_route_to_another_server(proxy):
    url = proxy.add("moved")
    c = redis.Redis.from_url(url)
    c.set("where", "first")
    with LocalRedis() as second:
        proxy.set_upstream(("127.0.0.1", second.port))
        assert proxy.connections("moved") == 0  # open connections dropped, as on a failover
        assert c.get("where") is None  # the reconnect went to the new server
        c.close()
