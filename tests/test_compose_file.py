"""deploy/docker-compose.yml checked as `docker compose config` checks it, without Docker: its
variables interpolated the way Compose does, the result validated against the Compose
Specification's own JSON schema (the one docker compose validates with), then what Compose's
loader checks beyond the schema: depends_on targets, named volumes, durations, restart policies,
and that the files, build context and worker class it names exist.

tests/data/compose-spec.json is `schema/compose-spec.json` of github.com/compose-spec/compose-spec
(Apache-2.0), last changed there in a08f8d5 (2025-10-28); refresh it from there.
tests/test_deploy.py checks what the services run (commands, mounts, variables documented).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from rq import Worker

DEPLOY = Path(__file__).parent.parent / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "data/compose-spec.json"
# What deploy/docker-compose.yml's header tells an operator to export (values for the test only).
ENV = {"REDIS_ACL_FILE": "./users.acl", "WORKER_PASSWORD": "wk", "COORDINATOR_PASSWORD": "co", "VIEWER_PASSWORD": "vw"}
# `$$` (a literal $), or `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`, `${NAME?error}`.
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
GO_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")
RESTART = re.compile(r"no|always|unless-stopped|on-failure(:\d+)?")
DURATION_KEYS = ("interval", "timeout", "start_period", "start_interval")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's interpolation of every string value (not keys) of the parsed file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value
    rest = VARIABLE.sub("", value)
    assert "$" not in rest, f"a form of variable this test does not interpolate: {value!r}"
    return VARIABLE.sub(lambda m: _substitute(m, env), value)


def _substitute(match: re.Match[str], env: Mapping[str, str]) -> str:
    if match.group(0) == "$$":
        return "$"
    name, op, arg = match.group("name", "op", "arg")
    unset = name not in env or (op is not None and op.startswith(":") and env[name] == "")
    if op in (":?", "?") and unset:
        raise ValueError(f"required variable {name} is missing a value: {arg}")
    if op in (":-", "-") and unset:
        return arg
    return env.get(name, "")


def rendered(env: Mapping[str, str] = ENV) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env)


def test_the_compose_file_is_valid_under_the_compose_specification_schema():
    schema = json.loads(SCHEMA.read_text())
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in jsonschema.Draft7Validator(schema).iter_errors(rendered())]
    assert problems == []


@pytest.mark.parametrize("name", sorted(ENV))
def test_each_secret_the_header_names_is_required(name):
    """Without it Compose refuses to start (`${NAME:?...}`), instead of running with an empty password."""
    with pytest.raises(ValueError, match=f"required variable {name} "):
        rendered({k: v for k, v in ENV.items() if k != name})


def test_what_the_services_name_exists():
    spec = rendered()
    services, volumes = spec["services"], spec.get("volumes") or {}
    named_used = set()
    for name, service in services.items():
        assert set(service.get("depends_on") or {}) <= set(services) - {name}, name
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert source == ENV["REDIS_ACL_FILE"] or (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                named_used.add(source)
        durations = [service.get("stop_grace_period"), *(service.get("healthcheck", {}).get(k) for k in DURATION_KEYS)]
        assert all(GO_DURATION.fullmatch(d) for d in durations if d is not None), (name, durations)
        assert RESTART.fullmatch(service.get("restart", "no")), name
        if "build" in service:
            context = DEPLOY / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file(), name
    assert named_used == set(volumes)  # each named volume declared, each declared one used


def test_the_worker_class_is_importable_and_an_rq_worker():
    module, _, name = rendered()["services"]["worker"]["environment"]["RQ_WORKER_CLASS"].rpartition(".")
    assert issubclass(getattr(importlib.import_module(module), name), Worker)
