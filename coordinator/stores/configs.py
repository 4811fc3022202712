"""The per-config hash (`<prefix>:config:<key>`) and the priority sorted set: their layout and values."""

from __future__ import annotations

# The score of a config that may not train now (queued or running, blocked, ...): below every score
# the formula gives, so `ZREVRANGEBYSCORE priority +inf 0` reads only the eligible.
INELIGIBLE = -1.0
