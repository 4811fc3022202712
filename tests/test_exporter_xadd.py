"""tests.support.exports.xadd_like_an_exporter, which the integration tests send events with, is what an
exporter runs: redis-cli's XADD with every field as given (a repeated name too), answering the id."""

from __future__ import annotations

from tests.support.exports import xadd_like_an_exporter
from tests.support.streams import raw_xrange


def test_every_field_goes_as_given_and_the_entry_id_comes_back(redis_server, real_conn):
    entry_id = xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "samples", "1", "samples", "2")
    [(got_id, fields)] = raw_xrange(real_conn)  # as Redis sent it: redis-py would fold the pairs into a dict
    assert got_id.decode() == entry_id
    assert fields == [b"type", b"NPZ_EXPORT_COMPLETE", b"samples", b"1", b"samples", b"2"]
