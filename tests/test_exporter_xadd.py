"""tests.conftest.xadd_like_an_exporter, which the integration tests send events with, is what an
exporter runs: redis-cli's XADD with every field as given (a repeated name too), answering the id."""

from __future__ import annotations

import redis

from tests.conftest import xadd_like_an_exporter


def test_every_field_goes_as_given_and_the_entry_id_comes_back(redis_server, real_conn):
    entry_id = xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "samples", "1", "samples", "2")
    raw = redis.Redis(connection_pool=real_conn.connection_pool)
    raw.set_response_callback("XRANGE", lambda response, **_options: response)  # redis-py would fold pairs into a dict
    [(got_id, fields)] = raw.xrange("ringrift:events")
    assert got_id.decode() == entry_id
    assert fields == [b"type", b"NPZ_EXPORT_COMPLETE", b"samples", b"1", b"samples", b"2"]
