#!/usr/bin/env bash
# Render users.acl from users.acl.template with passwords from the environment:
#   EXPORTER_PASSWORD=... WORKER_PASSWORD=... COORDINATOR_PASSWORD=... VIEWER_PASSWORD=... \
#     [REPLICA_PASSWORD=... SENTINEL_PASSWORD=...] deploy/redis/render-acl.sh > /etc/redis/users.acl
# The four role passwords are required. REPLICA_PASSWORD and SENTINEL_PASSWORD are optional: without
# one, its user (replica: a replica's link to the primary; sentinel: Sentinel's monitoring) is left out.
#
# A password never becomes ACL syntax: the file holds only `#<sha256 hex>` of each password (Redis's
# own hashed-password form), computed in Python from the environment's bytes. No password passes
# through a shell word, an eval or the template's text, so spaces, newlines, `nopass` or `$(...)` in
# one are just part of that password (a passphrase with spaces works as typed). The template may use
# only `${<NAME>_PASSWORD_SHA256}` placeholders, and every rendered line is checked to be one `user`
# line with the template's own words before anything is printed.
set -euo pipefail
for var in EXPORTER_PASSWORD WORKER_PASSWORD COORDINATOR_PASSWORD VIEWER_PASSWORD; do
    if [ -z "${!var:-}" ]; then echo "render-acl.sh: $var is not set" >&2; exit 1; fi
done
here="$(cd "$(dirname "$0")" && pwd)"
python3 - "$here/users.acl.template" <<'PY'
import hashlib, os, re, sys
OPTIONAL = {"REPLICA_PASSWORD", "SENTINEL_PASSWORD"}
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
HASHED = re.compile(r"(\w+_PASSWORD)_SHA256")


def fail(message: str) -> None:
    print(f"render-acl.sh: {message}", file=sys.stderr)
    sys.exit(1)


def sha256_of(name: str) -> str:
    return hashlib.sha256(os.environb[name.encode()]).hexdigest()  # the bytes as given, as Redis hashes them


# ACL files take no comments: the template's comment lines stay in the template.
lines = [line.rstrip("\n") for line in open(sys.argv[1]) if line.strip() and not line.startswith("#")]
out = []
for line in lines:
    names = PLACEHOLDER.findall(line)
    raw = [name for name in names if not HASHED.fullmatch(name)]
    if raw:
        fail(f"the template may only use ${{<NAME>_PASSWORD_SHA256}}, not {', '.join(raw)}")
    wanted = {HASHED.fullmatch(name).group(1) for name in names}
    missing = {name for name in wanted if not os.environ.get(name)}
    if missing and missing <= OPTIONAL:
        print(f"render-acl.sh: {', '.join(sorted(missing))} not set: left out {line.split()[1]!r}",
              file=sys.stderr)
        continue
    if missing:
        fail(f"{', '.join(sorted(missing))} not set")
    rendered = PLACEHOLDER.sub(lambda m: sha256_of(HASHED.fullmatch(m.group(1)).group(1)), line)
    # The substitution cannot add words or lines (it inserts 64 hex digits); checked anyway.
    if len(rendered.split()) != len(line.split()) or not re.fullmatch(r"user [\x21-\x7e ]+", rendered):
        fail(f"rendering {line.split()[1]!r} did not give one plain user line")
    out.append(rendered + "\n")
print("".join(out), end="")
PY
