#!/usr/bin/env bash
# Render sentinel.conf with the `sentinel` ACL user's password from the environment:
#   SENTINEL_PASSWORD=... deploy/redis/render-sentinel.sh > /etc/redis/sentinel.conf
# Sentinel must hold the password itself (it sends it), so it cannot be hashed: it is written as one
# double-quoted config word with every byte outside printable ASCII, and `"`, `\` and space, as
# \xHH, which Redis's config parser reads back byte for byte. A newline or a space in the password
# cannot start a new directive or a new argument (a `sentinel notification-script` line, say).
set -euo pipefail
if [ -z "${SENTINEL_PASSWORD:-}" ]; then echo "render-sentinel.sh: SENTINEL_PASSWORD is not set" >&2; exit 1; fi
here="$(cd "$(dirname "$0")" && pwd)"
python3 - "$here/sentinel.conf" <<'PY'
import os, re, sys

raw = os.environb[b"SENTINEL_PASSWORD"]
word = '"' + "".join(chr(b) if 0x20 < b < 0x7f and b not in b'"\\' else f"\\x{b:02x}" for b in raw) + '"'
text = open(sys.argv[1]).read()
names = set(re.findall(r"\$\{(\w+)\}", text))
if names != {"SENTINEL_PASSWORD"}:
    print(f"render-sentinel.sh: sentinel.conf may only use ${{SENTINEL_PASSWORD}}, not {sorted(names)}", file=sys.stderr)
    sys.exit(1)
rendered = text.replace("${SENTINEL_PASSWORD}", word)
assert rendered.count("\n") == text.count("\n")
print(rendered, end="")
PY
