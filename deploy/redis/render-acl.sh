#!/usr/bin/env bash
# Render users.acl from users.acl.template with passwords from the environment:
#   EXPORTER_PASSWORD=... WORKER_PASSWORD=... COORDINATOR_PASSWORD=... VIEWER_PASSWORD=... \
#     deploy/redis/render-acl.sh > /etc/redis/users.acl
set -euo pipefail
for var in EXPORTER_PASSWORD WORKER_PASSWORD COORDINATOR_PASSWORD VIEWER_PASSWORD; do
    if [ -z "${!var:-}" ]; then echo "render-acl.sh: $var is not set" >&2; exit 1; fi
done
here="$(cd "$(dirname "$0")" && pwd)"
python3 - "$here/users.acl.template" <<'PY'
import os, string, sys
# ACL files take no comments: the template's comment lines stay in the template.
lines = [line for line in open(sys.argv[1]) if line.strip() and not line.startswith("#")]
print(string.Template("".join(lines)).substitute(os.environ), end="")
PY
