"""A secret as one Redis config word: `python3 config_word.py NAME` prints the environment variable
NAME's bytes double-quoted, every byte other than printable ASCII (and `"`, `\\`, space) as \\xHH,
which Redis's config parser reads back byte for byte. No character of the secret can then start a
new argument or a new directive. Used by render-sentinel.sh (`sentinel auth-pass`) and for a
node's `masterauth` line (deploy/README.md)."""

from __future__ import annotations

import os
import sys


def config_word(raw: bytes) -> str:
    return '"' + "".join(chr(b) if 0x20 < b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in raw) + '"'


if __name__ == "__main__":
    name = sys.argv[1]
    if not os.environ.get(name):
        sys.exit(f"config_word.py: {name} is not set")
    print(config_word(os.environb[name.encode()]))
