"""deploy/: each file checked by the real tool where this machine has it.

Redis and Sentinel configs: a real redis-server, replica and sentinel started with them (and a forced
failover, which only works if the replica and sentinel ACL users can do their jobs). systemd units:
`systemd-analyze verify`. Kubernetes manifests: Kubernetes' own JSON schemas (kubernetes-validate).
The Dockerfile and the compose file: their commands parsed by the real CLIs' parsers, their paths,
variables and pins checked against the repository; the compose file is also validated the way
`docker compose config` does it, without Docker, in tests/test_compose_file.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shlex
import string
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis
import yaml

from coordinator.core.connection import parse_sentinel_url
from coordinator.core.settings import load_settings, parse_settings
from coordinator.ops import cli
from coordinator.ops.local_redis import free_port, redis_server_binary
from tests.support.acl import ADMIN, ROLE_PASSWORDS, render_acl, with_admin
from tests.support.polling import or_none, wait_for
from tests.support.tools import console_script, require

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
PASSWORDS = {**ROLE_PASSWORDS, "replica": "rp-pw", "sentinel": "se-pw"}
MASTER = "mymaster"
METRICS_PORT = 9108
KILL_GRACE_S = load_settings(ROOT / "config/distributed_hosts.yaml").training.kill_grace_s


# --- Redis and Sentinel ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def acl_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("acl") / "users.acl"
    path.write_text(with_admin(render_acl(PASSWORDS).stdout))
    return path


def conf_copy(tmp_path: Path, name: str) -> Path:
    """A node's own copy of redis.conf (CONFIG REWRITE writes to it), its `dir` in tmp_path: Redis
    enters the file's `dir` while reading it, before a --dir override applies."""
    data = tmp_path / name
    data.mkdir()
    text = (DEPLOY / "redis/redis.conf").read_text()
    assert re.search(r"^dir /var/lib/redis$", text, re.M)
    copy = tmp_path / f"{name}.conf"
    copy.write_text(re.sub(r"^dir .*$", f"dir {data}", text, flags=re.M))
    return copy


def connect_as(port: int, user: str, password: str) -> redis.Redis:
    return redis.Redis(port=port, username=user, password=password, socket_timeout=5, decode_responses=True)


def start_server(procs: list[subprocess.Popen[bytes]], conf: Path, acl: Path, *args: str) -> int:
    """redis-server with `conf` and command-line overrides only for where it runs; returns its port."""
    port = free_port()
    log = conf.with_suffix(".log")
    procs.append(subprocess.Popen(
        [redis_server_binary(), str(conf), "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no",
         "--aclfile", str(acl), "--logfile", str(log), "--repl-diskless-sync-delay", "0", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    client = connect_as(port, "coordinator", PASSWORDS["coordinator"])
    wait_for(lambda: _up(client, procs[-1], log), timeout_s=15, interval_s=0.02)
    return port


def _up(client: redis.Redis, proc: subprocess.Popen[bytes], log: Path) -> bool:
    """The server answers PING; False while it is not listening yet; fails with its log once it has exited."""
    if or_none(client.ping, redis.ConnectionError):
        return True
    if proc.poll() is not None:
        raise AssertionError(f"redis-server exited: {log.read_text()[-2000:] if log.exists() else ''}")
    return False


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_redis_conf_runs_with_aof_noeviction_and_the_acl_users(tmp_path, acl_file, processes):
    port = start_server(processes, conf_copy(tmp_path, "primary"), acl_file)
    coordinator = connect_as(port, "coordinator", PASSWORDS["coordinator"])
    assert coordinator.info("persistence")["aof_enabled"] == 1
    assert coordinator.info("memory")["maxmemory_policy"] == "noeviction"
    with pytest.raises(redis.exceptions.NoPermissionError):  # the ACL keeps CONFIG from every role
        coordinator.config_get("appendonly")
    admin = connect_as(port, *ADMIN)
    assert {k: admin.config_get(k)[k] for k in ("appendonly", "appendfsync", "maxmemory-policy", "maxmemory",
                                                "protected-mode", "masteruser")} == {
        "appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction",
        "maxmemory": str(4 * 1024**3), "protected-mode": "yes", "masteruser": "replica"}
    assert admin.config_get("aclfile")["aclfile"] == str(acl_file)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, retry=None).ping()  # the default user is off (retry=None: no 4 s of backoff)


def sentinel_conf_copy(tmp_path: Path, primary_port: int) -> Path:
    """sentinel.conf rendered as deploy/README.md says, pointed at the test's primary."""
    text = string.Template((DEPLOY / "redis/sentinel.conf").read_text()).substitute(
        SENTINEL_PASSWORD=PASSWORDS["sentinel"])
    monitor = f"sentinel monitor {MASTER} redis-primary 6379 2"
    assert monitor in text
    copy = tmp_path / "sentinel.conf"
    copy.write_text(text.replace(monitor, f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2"))
    return copy


def _promotable(sentinel: redis.Redis) -> bool:
    """Ask for a forced failover (REPLICAOF, CONFIG REWRITE, ...); False while Sentinel has no
    replica it considers up to date (NOGOODSLAVE)."""
    try:
        sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)
        return True
    except redis.ResponseError as exc:
        if "NOGOODSLAVE" in str(exc):
            return False
        raise


def start_sentinel(processes: list[subprocess.Popen[bytes]], conf: Path) -> redis.Redis:
    port = free_port()
    processes.append(subprocess.Popen(
        [redis_server_binary(), str(conf), "--sentinel", "--port", str(port), "--bind", "127.0.0.1",
         "--logfile", str(conf.with_suffix(".log"))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    sentinel = redis.Redis(port=port, socket_timeout=5, decode_responses=True)
    wait_for(lambda: _up(sentinel, processes[-1], conf.with_suffix(".log")), timeout_s=15)
    return sentinel


@pytest.mark.integration
def test_sentinel_conf_watches_mymaster_and_its_users_can_fail_over(tmp_path, acl_file, processes):
    primary_conf, replica_conf = conf_copy(tmp_path, "primary"), conf_copy(tmp_path, "replica")
    auth = ("--masterauth", PASSWORDS["replica"])
    primary = start_server(processes, primary_conf, acl_file, *auth)
    replica = start_server(processes, replica_conf, acl_file, *auth, "--replicaof", "127.0.0.1", str(primary))
    viewer = connect_as(replica, "viewer", PASSWORDS["viewer"])  # the replica logs in as "replica"
    wait_for(lambda: viewer.info("replication").get("master_link_status") == "up", timeout_s=20)

    sentinel = start_sentinel(processes, sentinel_conf_copy(tmp_path, primary))
    masters = sentinel.sentinel_masters()
    assert set(masters) == {MASTER}
    assert masters[MASTER]["quorum"] == 2 and masters[MASTER]["port"] == primary
    # The replica is known only from the primary's INFO, which Sentinel reads as its ACL user; it
    # is promotable once Sentinel has read the replica's own INFO too.
    wait_for(lambda: sentinel.sentinel_master(MASTER)["num-slaves"] == 1, timeout_s=20)
    wait_for(lambda: _promotable(sentinel), timeout_s=30, interval_s=0.2)
    wait_for(lambda: sentinel.sentinel_get_master_addr_by_name(MASTER) == ("127.0.0.1", replica), timeout_s=30)
    wait_for(lambda: viewer.info("replication")["role"] == "master", timeout_s=10)
    assert "# Generated by CONFIG REWRITE" in replica_conf.read_text()  # Sentinel rewrote the node's file
    for port in (primary, replica):
        denied = [e for e in connect_as(port, *ADMIN).acl_log() if e["username"] in ("replica", "sentinel")]
        assert denied == [], denied


def test_render_acl_leaves_out_the_optional_users_without_passwords():
    without = render_acl(ROLE_PASSWORDS)  # the required four only
    assert {line.split()[1] for line in without.stdout.splitlines()} == {"default", *ROLE_PASSWORDS}
    assert "REPLICA_PASSWORD not set" in without.stderr and "SENTINEL_PASSWORD not set" in without.stderr
    both = render_acl({**ROLE_PASSWORDS, "replica": "r", "sentinel": "s"}).stdout
    assert f"user replica on #{hashlib.sha256(b'r').hexdigest()} " in both
    assert f"user sentinel on #{hashlib.sha256(b's').hexdigest()} " in both


# --- Commands: every one in deploy/ must parse with the real CLI ----------------------------------------

def assert_command_parses(argv: list[str]) -> None:
    """`ringrift-train ...` through its argparse parser, `rq worker ...` through RQ's click command."""
    program, *args = argv
    if Path(program).name == "ringrift-train":
        cli._parser().parse_args(args)  # exits (SystemExit) on an unknown command or option
    elif Path(program).name == "rq":
        from rq.cli.cli import main as rq_main

        assert args[0] == "worker", argv
        params = rq_main.commands["worker"].make_context("worker", args[1:]).params
        assert params["queues"] == ("training",), argv
        if params.get("config"):
            assert importlib.util.find_spec(params["config"]) is not None, params["config"]
    else:
        raise AssertionError(f"unexpected program {program!r} in {argv}")


def parsed_ringrift(argv: list[str]):
    assert Path(argv[0]).name == "ringrift-train", argv
    return cli._parser().parse_args(argv[1:])


# --- Dockerfile --------------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def pip_install_targets(command: str) -> list[str]:
    """The non-option words after `pip install` in a shell command: what it installs."""
    words = shlex.split(command)
    start = next(i for i in range(len(words) - 1) if words[i:i + 2] == ["pip", "install"]) + 2
    targets = []
    for word in words[start:]:
        if word in ("&&", ";", "|"):
            break
        if not word.startswith("-"):
            targets.append(word)
    return targets


def test_dockerfile_installs_like_the_readme_and_pins_torch_like_pyproject():
    steps = dockerfile_instructions()
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    assert args["BASE_IMAGE"] == "python:3.11-slim" and ("FROM", "${BASE_IMAGE}") in steps
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'train = ["torch=={args["TORCH_VERSION"]}"]' in pyproject
    installs = [a for kind, a in steps if kind == "RUN" and "pip install" in a]
    project = [t for a in installs for t in pip_install_targets(a) if t.startswith(".")]
    assert project == [".[train]"]
    cluster = readme_section("Running on a cluster")
    readme_targets = [pip_install_targets(m) for m in re.findall(r"`(pip install [^`]+)`", cluster)]
    assert [".[train]"] in readme_targets, "README's cluster section must give the image's install command"
    for kind, a in steps:
        if kind == "COPY":
            *sources, _ = shlex.split(a)
            assert all((ROOT / s).exists() for s in sources), a
    assert ("ENTRYPOINT", '["tini", "--"]') in steps


# --- docker-compose.yml ------------------------------------------------------------------------------

COMPOSE = DEPLOY / "docker-compose.yml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def deploy_readme_variables() -> set[str]:
    return set(re.findall(r"`\$?\{?([A-Z][A-Z0-9_]+)", (DEPLOY / "README.md").read_text()))


def test_compose_services_run_real_commands_with_a_gpu_and_documented_variables():
    services = compose()["services"]
    assert set(services) == {"redis", "coordinator", "worker"}
    coordinator, worker = services["coordinator"], services["worker"]
    run = parsed_ringrift(coordinator["command"])
    assert run.func is cli._run and run.metrics_port == METRICS_PORT
    assert f"./coordinator.yaml:{run.config_path}:ro" in coordinator["volumes"]
    assert "redis://coordinator:" in coordinator["environment"]["REDIS_URL"]
    assert_command_parses(worker["command"])
    assert "redis://worker:" in worker["command"][worker["command"].index("--url") + 1]
    probe = worker["healthcheck"]["test"][1:]
    assert parsed_ringrift(probe).func is cli._worker_alive
    assert probe[2] == worker["command"][worker["command"].index("--name") + 1]
    [gpu] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    redis_service = services["redis"]
    assert redis_service["image"].startswith("redis:7")
    assert "./redis/redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis_service["volumes"]
    assert any(v.endswith(":/etc/redis/users.acl:ro") for v in redis_service["volumes"])
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE.read_text()))
    assert used and used <= deploy_readme_variables(), used - deploy_readme_variables()


def test_compose_mounts_the_settings_paths_and_names_a_known_node():
    settings = parse_settings(yaml.safe_load((DEPLOY / "coordinator.yaml").read_text()), "deploy/coordinator.yaml")
    services = compose()["services"]
    for name in ("coordinator", "worker"):
        targets = {v.split(":")[1] for v in services[name]["volumes"]}
        assert {settings.training.models_root, *settings.training.data_roots} <= targets, name
    node = re.fullmatch(r"\$\{RINGRIFT_NODE:-([\w-]+)\}", services["worker"]["environment"]["RINGRIFT_NODE"])
    assert node and node.group(1) in settings.hosts


# --- systemd -----------------------------------------------------------------------------------------

SYSTEMD = DEPLOY / "systemd"
VENV_BIN = "/opt/ringrift/venv/bin"


def unit(name: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file (a key may repeat)."""
    keys: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


def env_file_variables(name: str) -> set[str]:
    lines = (SYSTEMD / name).read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if re.match(r"^[A-Z_]+=", line)}


def test_systemd_units_stop_gently_and_run_real_commands():
    worker, coordinator = unit("ringrift-worker@.service"), unit("ringrift-coordinator.service")
    for keys in (worker, coordinator):
        assert keys["KillMode"] == ["mixed"] and keys["Restart"] == ["on-failure"]
        assert int(keys["TimeoutStopSec"][0]) > KILL_GRACE_S
        assert keys["ExecStart"][0].startswith(f"{VENV_BIN}/")
    assert {"CUDA_VISIBLE_DEVICES=%i", "RINGRIFT_NODE=%H"} <= set(worker["Environment"])
    assert worker["EnvironmentFile"] == ["/etc/ringrift/worker.env"]
    worker_argv = shlex.split(worker["ExecStart"][0].replace("%H", "host").replace("%i", "0"))
    assert worker_argv[worker_argv.index("--name") + 1] == "host-gpu0"
    assert_command_parses(worker_argv)
    run = parsed_ringrift(shlex.split(coordinator["ExecStart"][0]))
    assert run.func is cli._run and run.metrics_port == METRICS_PORT
    assert run.config_path == "/etc/ringrift/coordinator.yaml"
    for keys, example in ((worker, "worker.env.example"), (coordinator, "coordinator.env.example")):
        used = set(re.findall(r"\$\{(\w+)\}", keys["ExecStart"][0])) | {"REDIS_URL"}
        assert used <= env_file_variables(example), example


def test_systemd_analyze_verifies_the_units(tmp_path):
    analyze = require("systemd-analyze")
    bin_dir = Path(console_script("rq")).parent
    assert (bin_dir / "ringrift-train").exists(), bin_dir
    copies = {"ringrift-coordinator.service": "ringrift-coordinator.service",
              "ringrift-worker@.service": "ringrift-worker@0.service"}  # an instance, as systemctl starts it
    for source, target in copies.items():
        (tmp_path / target).write_text((SYSTEMD / source).read_text().replace(VENV_BIN, str(bin_dir)))
    done = subprocess.run([analyze, "verify", *(str(tmp_path / t) for t in copies.values())],
                          capture_output=True, text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if any(t in line for t in copies.values())]  # verify warns (exit 0) on unknown keys
    assert done.returncode == 0 and complaints == [], done.stdout + done.stderr


# --- Kubernetes --------------------------------------------------------------------------------------

K8S = DEPLOY / "k8s"


def manifests() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(kind: str, name: str) -> dict:
    [doc] = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_k8s_manifests_validate_against_the_kubernetes_schemas():
    import kubernetes_validate

    docs = manifests()
    assert {d["kind"] for d in docs} >= {"Deployment", "StatefulSet", "Secret", "ConfigMap"}
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}") from None
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {
        "kustomization.yaml", "secret.example.yaml"}


def container(workload: dict) -> dict:
    [only] = workload["spec"]["template"]["spec"]["containers"]
    return only


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c["env"]}


def test_k8s_coordinator_probes_its_metrics_port_and_runs_the_deploy_settings():
    deployment = find("Deployment", "ringrift-coordinator")
    assert deployment["spec"]["replicas"] == 1
    c = container(deployment)
    run = parsed_ringrift(c["args"])
    assert run.func is cli._run and run.metrics_port == METRICS_PORT
    assert [p["containerPort"] for p in c["ports"]] == [METRICS_PORT]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/metrics", "port": METRICS_PORT}
    config = find("ConfigMap", "ringrift-coordinator-config")["data"]["coordinator.yaml"]
    assert yaml.safe_load(config) == yaml.safe_load((DEPLOY / "coordinator.yaml").read_text())
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert str(Path(run.config_path).parent) in mounts
    settings = parse_settings(yaml.safe_load(config), "ringrift-coordinator-config")
    assert {settings.training.models_root, *settings.training.data_roots} <= mounts
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= settings.training.kill_grace_s


def test_k8s_workers_take_one_gpu_and_probe_their_own_heartbeat():
    workers = find("StatefulSet", "ringrift-worker")
    pod = workers["spec"]["template"]["spec"]
    c = container(workers)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["terminationGracePeriodSeconds"] >= KILL_GRACE_S * 10  # a running epoch may finish
    assert_command_parses(c["args"])
    assert c["args"][c["args"].index("--name") + 1] == "$(RQ_WORKER_NAME)"
    env = env_of(c)
    assert env["RQ_WORKER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["RINGRIFT_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    for probe in ("livenessProbe", "readinessProbe"):
        shell, flag, script = c[probe]["exec"]["command"]
        assert (shell, flag) == ("sh", "-c")
        argv = shlex.split(script.removeprefix("exec "))
        assert parsed_ringrift(argv).func is cli._worker_alive and argv[2] == "$RQ_WORKER_NAME", script
        assert float(argv[argv.index("--max-age") + 1]) > 60 - 15  # idle heartbeat period at --worker-ttl 60
    assert c["args"][c["args"].index("--worker-ttl") + 1] == "60"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    settings = parse_settings(yaml.safe_load((DEPLOY / "coordinator.yaml").read_text()))
    assert {settings.training.models_root, *settings.training.data_roots} <= mounts


def test_k8s_env_references_resolve_to_the_secret_and_the_redis_pointer():
    secret, pointer = find("Secret", "ringrift-redis-auth"), find("ConfigMap", "ringrift-redis")["data"]
    assert set(secret["stringData"].values()) == {"CHANGE-ME"}, "the Secret is a template: no real passwords"
    referenced = set()
    for workload, role in ((find("Deployment", "ringrift-coordinator"), "coordinator"),
                           (find("StatefulSet", "ringrift-worker"), "worker")):
        defined: set[str] = set()
        for e in container(workload)["env"]:
            source = e.get("valueFrom", {})
            if "secretKeyRef" in source:
                assert source["secretKeyRef"]["name"] == "ringrift-redis-auth"
                assert source["secretKeyRef"]["key"] == f"{role.upper()}_PASSWORD"
                referenced.add(source["secretKeyRef"]["key"])
            if "configMapKeyRef" in source:
                assert source["configMapKeyRef"]["key"] in pointer
            assert set(re.findall(r"\$\((\w+)\)", e.get("value", ""))) <= defined, e  # defined earlier
            defined.add(e["name"])
        url = env_of(container(workload))["REDIS_URL"]["value"]
        assert url.startswith(f"$(REDIS_SCHEME)://{role}:$(REDIS_PASSWORD)@")
        rendered = re.sub(r"\$\((\w+)\)", lambda m: {**pointer, "REDIS_PASSWORD": "pw"}[m.group(1)], url)
        assert parse_sentinel_url(rendered).master_name == MASTER
    assert referenced == set(secret["stringData"])


# --- ringrift-train worker-alive ---------------------------------------------------------------------

@pytest.mark.integration
def test_worker_alive_reads_a_real_rq_workers_heartbeat(redis_server, real_conn, rq_workers, monkeypatch, capsys):
    from rq.utils import utcformat

    from coordinator.core.keys import rq_worker_key
    from coordinator.ops.workers_pool import stop_workers

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    [proc] = rq_workers(1)
    key = "rq:worker:test-worker-0"  # what RQ itself wrote: the key the command reads must be this one
    assert rq_worker_key("test-worker-0") == key
    wait_for(lambda: real_conn.hget(key, "last_heartbeat"), timeout_s=30)

    assert cli.main(["worker-alive", "test-worker-0", "--max-age", "60"]) == 0
    assert "alive" in capsys.readouterr().out
    probe = subprocess.run([console_script("ringrift-train"), "worker-alive", "test-worker-0"], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "REDIS_URL": redis_server.url})
    assert probe.returncode == 0, probe.stderr

    assert cli.main(["worker-alive", "nobody"]) == 1
    assert "not registered" in capsys.readouterr().err
    # A worker silent for 10 minutes, its hash in RQ's format (a live worker's own would be rewritten).
    stale = {**real_conn.hgetall(key), b"last_heartbeat": utcformat(datetime.now(timezone.utc) - timedelta(minutes=10))}
    real_conn.hset("rq:worker:stale-worker", mapping=stale)
    assert cli.main(["worker-alive", "stale-worker", "--max-age", "120"]) == 1
    assert "older than --max-age 120 s" in capsys.readouterr().err

    stop_workers([proc])  # RQ marks the hash with `death` and keeps it 60 s, heartbeat and all
    assert cli.main(["worker-alive", "test-worker-0"]) == 1
    assert "stopped at" in capsys.readouterr().err
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert cli.main(["worker-alive", "test-worker-0"]) == 1
    assert "cannot read its heartbeat" in capsys.readouterr().err


def test_worker_alive_is_documented_in_operating_it():
    assert "ringrift-train worker-alive NAME" in readme_section("Operating it")

