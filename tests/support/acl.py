"""deploy/redis/render-acl.sh and the users it writes: the tests' passwords, connections by role."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import redis

from coordinator.ops.local_redis import LocalRedis

RENDER_ACL = Path(__file__).resolve().parents[2] / "deploy/redis/render-acl.sh"
# The four roles render-acl.sh requires (replica and sentinel are optional).
ROLE_PASSWORDS = {"exporter": "ex-pw", "worker": "wk-pw", "coordinator": "co-pw", "viewer": "vw-pw"}
ADMIN = ("test-admin", "ad-pw")  # the tests' own user: CONFIG, ACL LOG and ACL USERS are no role's business


def render_acl(passwords: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """render-acl.sh with exactly these roles' passwords (`<ROLE>_PASSWORD`), none from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PASSWORD")}
    env.update({f"{role.upper()}_PASSWORD": pw for role, pw in passwords.items()})
    return subprocess.run([str(RENDER_ACL)], env=env, capture_output=True, text=True, check=check, timeout=30)


def with_admin(rendered: str) -> str:
    """A rendered users file plus the tests' ADMIN user, with every right."""
    return rendered + f"user {ADMIN[0]} on >{ADMIN[1]} ~* &* +@all\n"


def url(server: LocalRedis, role: str) -> str:
    """The server's URL logged in as `role` with its ROLE_PASSWORDS password."""
    return f"redis://{role}:{ROLE_PASSWORDS[role]}@127.0.0.1:{server.port}/0"


def as_role(server: LocalRedis, role: str) -> redis.Redis:
    return redis.Redis.from_url(url(server, role))
