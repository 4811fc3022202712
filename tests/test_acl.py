"""Redis access by role: a real redis-server loaded with deploy/redis/users.acl (rendered)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import yaml

from coordinator.bus import intake
from coordinator.ops.local_redis import LocalRedis, free_port, redis_server_binary
from coordinator.ops.workers_pool import start_worker, stop_workers
from tests.support.acl import ADMIN, ROLE_PASSWORDS, as_role, render_acl, url, with_admin
from tests.support.polling import wait_for
from tests.support.streams import stream_events
from tests.support.tools import console_script
from tests.support.trainers import STUB_TRAINER

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parent.parent


SUBMISSION = '["type","EVALUATION_COMPLETED","config_key","hex8_2p","elo","1500"]'
OPERATIONS = {
    "RPUSH ringrift:intake (submit)": lambda c: c.rpush("ringrift:intake", SUBMISSION),
    "XADD ringrift:events": lambda c: c.xadd("ringrift:events", {"type": "EVALUATION_COMPLETED",
                                                                  "config_key": "hex8_2p", "elo": "1500"}),
    "XRANGE ringrift:events": lambda c: c.xrange("ringrift:events", count=1),
    "HGETALL ringrift:job:x": lambda c: c.hgetall("ringrift:job:x"),
    "HSET ringrift:job:x": lambda c: c.hset("ringrift:job:x", "state", "queued"),
    "RPUSH rq:queue:training (enqueue)": lambda c: c.rpush("rq:queue:training", "forged-job"),
    "SET ringrift:{lease}:train:hex8_2p": lambda c: c.set("ringrift:{lease}:train:hex8_2p", "forged"),
    "SET other:key": lambda c: c.set("other:key", "1"),
    "KEYS *": lambda c: c.keys("*"),
    "CONFIG GET *": lambda c: c.config_get("*"),
    "FLUSHALL": lambda c: c.flushall(),
}
# The exporter's one write is RPUSH to the intake (it had XADD ringrift:events until issue 14: with it,
# `MAXLEN 0` emptied the stream and the maximal id blocked every later `XADD *`).
ALLOWED = {
    "exporter": {"RPUSH ringrift:intake (submit)"},
    "viewer": {"XRANGE ringrift:events", "HGETALL ringrift:job:x"},
    "worker": {"RPUSH ringrift:intake (submit)", "XADD ringrift:events", "XRANGE ringrift:events",
               "HGETALL ringrift:job:x", "HSET ringrift:job:x", "RPUSH rq:queue:training (enqueue)",
               "SET ringrift:{lease}:train:hex8_2p"},
}
ALLOWED["coordinator"] = ALLOWED["worker"]


@pytest.mark.parametrize("role", sorted(ROLE_PASSWORDS))
def test_each_role_is_refused_outside_its_job(acl_server, role):
    conn = as_role(acl_server, role)
    matrix = {}
    for name, operation in OPERATIONS.items():
        try:
            operation(conn)
            matrix[name] = "allowed"
        except redis.exceptions.NoPermissionError:
            matrix[name] = "NOPERM"
    print(f"\n{role}: " + ", ".join(f"{k} -> {v}" for k, v in matrix.items()))
    assert {k for k, v in matrix.items() if v == "allowed"} == ALLOWED[role]
    as_role(acl_server, "coordinator").delete("rq:queue:training", "ringrift:{lease}:train:hex8_2p", "ringrift:intake")


def test_the_default_user_is_off(acl_server):
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=acl_server.port).ping()


MAX_ID = "18446744073709551615-18446744073709551615"
EXPORTER_ATTACKS = {
    "XADD ringrift:events MAXLEN 0 *": ("XADD", "ringrift:events", "MAXLEN", "0", "*", "type", "X"),
    f"XADD ringrift:events {MAX_ID}": ("XADD", "ringrift:events", MAX_ID, "type", "X"),
    "XTRIM ringrift:events MAXLEN 0": ("XTRIM", "ringrift:events", "MAXLEN", "0"),
    "XDEL ringrift:events <id>": ("XDEL", "ringrift:events", "0-1"),
    "DEL ringrift:events": ("DEL", "ringrift:events"),
    "XGROUP DESTROY": ("XGROUP", "DESTROY", "ringrift:events", "orchestrator"),
    "FCALL ringrift_publish 1 ringrift:events": ("FCALL", "ringrift_publish", "1", "ringrift:events", "type", "X"),
    "EVAL XADD": ("EVAL", "return redis.call('XADD', KEYS[1], 'MAXLEN', '0', '*', 'a', 'b')", "1", "ringrift:events"),
    # The intake itself: another exporter's waiting submissions cannot be popped, trimmed or deleted.
    "LTRIM ringrift:intake 1 0": ("LTRIM", "ringrift:intake", "1", "0"),
    "LPOP ringrift:intake": ("LPOP", "ringrift:intake"),
    "DEL ringrift:intake": ("DEL", "ringrift:intake"),
    "RPUSH ringrift:other": ("RPUSH", "ringrift:other", "x"),
}


def test_an_exporter_cannot_trim_delete_or_block_the_event_stream(acl_server):
    """Issue 14 point 7: as the exporter, every way to empty or block ringrift:events is refused; the
    stream keeps its entries, a later `XADD *` works, and the exporter's own way in (RPUSH to the
    intake, moved by the coordinator with `XADD *`) still appends, with an auto id."""
    from coordinator.bus import intake

    coordinator, exporter = as_role(acl_server, "coordinator"), as_role(acl_server, "exporter")
    coordinator.delete("ringrift:events", "ringrift:intake")
    before = [coordinator.xadd("ringrift:events", {"type": "EARLIER", "n": str(n)}) for n in range(3)]
    coordinator.rpush("ringrift:intake", SUBMISSION)  # another exporter's submission, not yet moved
    rows = {}
    for name, command in EXPORTER_ATTACKS.items():
        try:
            exporter.execute_command(*command)
            rows[name] = "allowed"
        except redis.exceptions.NoPermissionError:
            rows[name] = "NOPERM"
        except redis.exceptions.ResponseError as exc:  # EVAL/FCALL: refused inside the script
            rows[name] = "NOPERM" if "can't run this command" in str(exc) or "NOPERM" in str(exc) else str(exc)
    print("\nexporter attacks: " + ", ".join(f"{k} -> {v}" for k, v in rows.items()))
    assert rows == dict.fromkeys(EXPORTER_ATTACKS, "NOPERM")
    assert [i for i, _ in coordinator.xrange("ringrift:events")] == before
    intake.publish_export(exporter, {"config_key": "hex8_2p", "npz_path": "/data/x.npz", "samples": "10"})
    assert intake.move(coordinator) == intake.Moved(2, 0)  # the other exporter's, then this one
    after = coordinator.xrange("ringrift:events")
    assert [i for i, _ in after[:3]] == before and len(after) == 5
    assert after[-1][1][b"type"] == b"NPZ_EXPORT_COMPLETE" and after[-1][0] > before[-1]
    assert coordinator.xadd("ringrift:events", {"type": "LATER"}) > after[-1][0]


HOSTILE = {
    "exporter": "pw nopass",  # was: a password "pw" plus the rule `nopass` (any password accepted)
    "worker": "pw\nuser evil on >x ~* &* +@all",  # was: a second line, a full-rights user
    "coordinator": "$(touch {marker}) `touch {marker}` \"'; ${{HOME}} \\",  # shell metacharacters
    "viewer": "correct horse battery staple",  # was: redis-server refused to start
}


@pytest.fixture(scope="module")
def hostile_passwords(tmp_path_factory):
    marker = tmp_path_factory.mktemp("hostile") / "touched"
    passwords = {role: pw.format(marker=marker) for role, pw in HOSTILE.items()}
    rendered = render_acl(passwords).stdout
    acl = marker.parent / "users.acl"
    acl.write_text(with_admin(rendered))
    with LocalRedis(extra_args=("--aclfile", str(acl)), username=ADMIN[0], password=ADMIN[1]) as server:
        yield server, passwords, rendered, marker


def test_passwords_never_become_acl_syntax(hostile_passwords):
    """Issue 14 point 8: each hostile password is only a password: the file holds its SHA-256, the
    user accepts exactly it, no other user appears, and nothing in it ran in a shell."""
    server, passwords, rendered, marker = hostile_passwords
    lines = rendered.splitlines()
    assert [line.split()[1] for line in lines] == ["default", *HOSTILE]
    for pw in passwords.values():
        assert f"#{hashlib.sha256(pw.encode()).hexdigest()} " in rendered
        assert pw not in rendered
    admin = redis.Redis(port=server.port, username=ADMIN[0], password=ADMIN[1])
    assert set(admin.acl_users()) == {"default", *HOSTILE, ADMIN[0]}
    probe = socket.create_connection(("127.0.0.1", server.port), timeout=10)

    def accepts(user: str, password: str) -> bool:
        """AUTH in plain RESP on one socket (redis-py retries a refused AUTH for seconds)."""
        words = [b"AUTH", user.encode(), password.encode()]
        probe.sendall(b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
        reply = probe.recv(4096)
        assert reply.startswith((b"+OK", b"-WRONGPASS")), reply
        return reply.startswith(b"+OK")

    rows = {}
    for role, pw in passwords.items():
        assert accepts(role, pw), role
        refused = [wrong for wrong in ("anything", "x", "pw", "nopass", pw.split()[0], pw + " ") if wrong != pw]
        assert not any(accepts(role, wrong) for wrong in refused), role
        rows[role] = f"exact password only ({len(refused)} others refused)"
    assert not accepts("evil", "x")
    probe.close()
    admin.set("ringrift:keep", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis(port=server.port, username="worker", password=passwords["worker"]).flushall()
    assert admin.get("ringrift:keep") == b"1"
    assert not marker.exists()
    print("\nhostile passwords: " + ", ".join(f"{k} {HOSTILE[k]!r}: {v}" for k, v in rows.items()))


def test_render_acl_refuses_a_missing_required_password():
    done = render_acl({"exporter": "x"}, check=False)
    assert done.returncode == 1 and "WORKER_PASSWORD is not set" in done.stderr and not done.stdout


def test_roles_run_the_pipeline_end_to_end(acl_server, tmp_path, npz):
    """Exporter submits to the intake, `ringrift-train run` as coordinator, `rq worker training` as worker."""
    as_role(acl_server, "coordinator").delete("ringrift:events", "ringrift:intake")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "training": {"command": list(STUB_TRAINER), "check_npz": False, "models_root": str(tmp_path / "models"),
                     "data_roots": [str(tmp_path)], "default_epochs": 2},
        "events": {"block_ms": 100}}))
    env = {**os.environ, "REDIS_URL": url(acl_server, "coordinator")}
    with open(tmp_path / "service.log", "wb") as log:
        service = subprocess.Popen([console_script("ringrift-train"), "--config", str(config), "run"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    worker = start_worker(url(acl_server, "worker"), "acl-worker", "node-0", log_path=tmp_path / "worker.log")
    try:
        intake.publish_export(as_role(acl_server, "exporter"),
                              {"config_key": "hex8_2p", "npz_path": str(npz), "samples": "10"})
        viewer = as_role(acl_server, "viewer")
        [done] = wait_for(lambda: stream_events(viewer, "TRAINING_COMPLETE"), timeout_s=60)
        assert done.fields["config_key"] == "hex8_2p"
    finally:
        stop_workers([worker])
        service.terminate()
        service.wait(timeout=15)
    for log in ("service.log", "worker.log"):
        assert "NOPERM" not in (tmp_path / log).read_text(), (tmp_path / log).read_text()[-2000:]


INFO_FRESH_MS = 60_000  # an INFO reply never received reads as the age of the epoch


def test_the_sentinel_password_stays_one_config_word(tmp_path):
    """render-sentinel.sh: a password with a space, a newline and a directive after it is one quoted
    word; Sentinel starts, logs in to the primary with exactly that password, and no directive was
    added (no notification script)."""
    password = 'pw nopass\nsentinel notification-script mymaster /tmp/x "\\'
    env = {**os.environ, "SENTINEL_PASSWORD": password}
    rendered = subprocess.run([str(ROOT / "deploy/redis/render-sentinel.sh")], env=env, capture_output=True,
                              text=True, check=True).stdout
    template = (ROOT / "deploy/redis/sentinel.conf").read_text()
    assert rendered.count("\n") == template.count("\n") and rendered.count("notification-script") == 1
    acl = tmp_path / "users.acl"
    acl.write_text(with_admin(render_acl({**ROLE_PASSWORDS, "sentinel": password}).stdout))
    with LocalRedis(extra_args=("--aclfile", str(acl)), username=ADMIN[0], password=ADMIN[1]) as primary:
        conf = tmp_path / "sentinel.conf"
        conf.write_text(rendered.replace("sentinel monitor mymaster redis-primary 6379 2",
                                         f"sentinel monitor mymaster 127.0.0.1 {primary.port} 2"))
        port = free_port()
        proc = subprocess.Popen([redis_server_binary(), str(conf), "--sentinel", "--port", str(port), "--bind",
                                 "127.0.0.1", "--logfile", str(tmp_path / "sentinel.log")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sentinel = redis.Redis(port=port, decode_responses=True)

            def master() -> dict | None:
                try:
                    state = sentinel.sentinel_master("mymaster")
                except redis.exceptions.ConnectionError:
                    assert proc.poll() is None, (tmp_path / "sentinel.log").read_text()[-2000:]
                    return None
                # An INFO reply came back (info-refresh: its age in ms), so the link and its AUTH exist
                return state if int(state.get("info-refresh", 0)) < INFO_FRESH_MS else None

            state = wait_for(master, timeout_s=20)
            assert "notification-script" not in state
            admin = redis.Redis(port=primary.port, username=ADMIN[0], password=ADMIN[1])
            assert [e for e in admin.acl_log() if e["username"] == "sentinel"] == []  # its AUTH was accepted
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_masterauth_written_as_a_config_word_links_a_replica(tmp_path):
    """deploy/README's masterauth line (config_word.py) with a password holding a space, a newline
    and a directive: the replica links to its primary as `replica` and nothing else was configured."""
    password = 'pw nopass\nreplicaof 127.0.0.1 1 "\\'
    word = subprocess.run([sys.executable, str(ROOT / "deploy/redis/config_word.py"), "REPLICA_PASSWORD"],
                          env={**os.environ, "REPLICA_PASSWORD": password}, capture_output=True, text=True,
                          check=True).stdout.strip()
    acl = tmp_path / "users.acl"
    acl.write_text(with_admin(render_acl({**ROLE_PASSWORDS, "replica": password}).stdout))
    conf = tmp_path / "replica.conf"
    conf.write_text(f"masteruser replica\nmasterauth {word}\n")
    auth = dict(username=ADMIN[0], password=ADMIN[1])
    with LocalRedis(extra_args=("--aclfile", str(acl)), **auth) as primary:
        with LocalRedis(extra_args=("--include", str(conf), "--aclfile", str(acl),
                                    "--replicaof", "127.0.0.1", str(primary.port)), **auth) as replica:
            admin = redis.Redis(port=replica.port, **auth, decode_responses=True)
            wait_for(lambda: admin.info("replication")["master_link_status"] == "up", timeout_s=20)
            assert admin.config_get("masterauth")["masterauth"] == password
            assert admin.info("replication")["master_port"] == primary.port
