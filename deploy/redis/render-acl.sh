#!/usr/bin/env bash
# Render users.acl from users.acl.template with passwords from the environment:
#   EXPORTER_PASSWORD=... WORKER_PASSWORD=... COORDINATOR_PASSWORD=... VIEWER_PASSWORD=... \
#     [REPLICA_PASSWORD=... SENTINEL_PASSWORD=...] deploy/redis/render-acl.sh > /etc/redis/users.acl
# The four role passwords are required. REPLICA_PASSWORD and SENTINEL_PASSWORD are optional: without
# one, its user (replica: a replica's link to the primary; sentinel: Sentinel's monitoring) is left out.
set -euo pipefail
for var in EXPORTER_PASSWORD WORKER_PASSWORD COORDINATOR_PASSWORD VIEWER_PASSWORD; do
    if [ -z "${!var:-}" ]; then echo "render-acl.sh: $var is not set" >&2; exit 1; fi
done
here="$(cd "$(dirname "$0")" && pwd)"
python3 - "$here/users.acl.template" <<'PY'
import os, re, string, sys
OPTIONAL = {"REPLICA_PASSWORD", "SENTINEL_PASSWORD"}
# ACL files take no comments: the template's comment lines stay in the template.
lines = [line for line in open(sys.argv[1]) if line.strip() and not line.startswith("#")]
out = []
for line in lines:
    missing = {name for name in re.findall(r"\$\{(\w+)\}", line) if not os.environ.get(name)}
    if missing and missing <= OPTIONAL:
        print(f"render-acl.sh: {', '.join(sorted(missing))} not set: left out {line.split()[1]!r}",
              file=sys.stderr)
        continue
    out.append(string.Template(line).substitute(os.environ))
print("".join(out), end="")
PY
