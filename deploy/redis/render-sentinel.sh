#!/usr/bin/env bash
# Render sentinel.conf with the `sentinel` ACL user's password from the environment:
#   SENTINEL_PASSWORD=... deploy/redis/render-sentinel.sh > /etc/redis/sentinel.conf
# Sentinel must hold the password itself (it sends it), so it cannot be hashed: it is written as one
# double-quoted config word (config_word.py: every byte outside printable ASCII, and `"`, `\` and
# space, as \xHH), which Redis's config parser reads back byte for byte. A newline or a space in
# the password cannot start a new directive or argument (a `sentinel notification-script` line, say).
set -euo pipefail
if [ -z "${SENTINEL_PASSWORD:-}" ]; then echo "render-sentinel.sh: SENTINEL_PASSWORD is not set" >&2; exit 1; fi
here="$(cd "$(dirname "$0")" && pwd)"
python3 - "$here" <<'PY'
import os, re, sys

sys.dont_write_bytecode = True  # nothing written into deploy/redis
sys.path.insert(0, sys.argv[1])
from config_word import config_word

word = config_word(os.environb[b"SENTINEL_PASSWORD"])
text = open(os.path.join(sys.argv[1], "sentinel.conf")).read()
names = set(re.findall(r"\$\{(\w+)\}", text))
if names != {"SENTINEL_PASSWORD"}:
    print(f"render-sentinel.sh: sentinel.conf may only use ${{SENTINEL_PASSWORD}}, not {sorted(names)}", file=sys.stderr)
    sys.exit(1)
rendered = text.replace("${SENTINEL_PASSWORD}", word)
assert rendered.count("\n") == text.count("\n")
print(rendered, end="")
PY
