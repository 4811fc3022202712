"""What a sampler checks of a node's GPU slots while multi-GPU leases come and go (issue 27)."""

from __future__ import annotations


def assert_no_partial_hold(conn, keys, node: str, gpus: int, total: int) -> None:
    """Every owner on the node holds exactly `gpus` slots (and as many devices), within its total:
    one snapshot (MULTI), as a sampler sees the node between two scripts."""
    with conn.pipeline(transaction=True) as pipe:
        pipe.zrange(keys.node_slots(node), 0, -1)
        pipe.hgetall(keys.node_devices(node))
        raw_members, raw_devices = pipe.execute()
    members = [m.decode() for m in raw_members]
    owners: dict[str, int] = {}
    for member in members:
        owner = member.split("+", 1)[0]
        owners[owner] = owners.get(owner, 0) + 1
    assert all(count == gpus for count in owners.values()), owners
    assert len(members) <= total
    devices = {d.decode(): o.decode() for d, o in raw_devices.items()}
    for owner in owners:
        assert sum(1 for o in devices.values() if o == owner) == gpus
