"""The RingRift boards and the one config-key rule (`{board_type}_{num_players}p`), shared by events,
settings and the trainer.

A config key is a board of BOARDS, `_`, a player count in MIN_PLAYERS..MAX_PLAYERS and `p`, matched in
full (ASCII only: `hex8_2p\\n` and `hex８_2p` are refused). Events (`coordinator/bus/schemas.py`),
`training.per_config` (settings) and names (`coordinator/core/inputs.py`) all ask this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coordinator.core.errors import EventError


@dataclass(frozen=True)
class Board:
    name: str
    size: int  # H = W of the feature planes
    policy_size: int  # the move index space


BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board("square8", 8, 7_000),
        Board("square19", 19, 67_000),
        Board("hex8", 9, 4_500),
        Board("hexagonal", 25, 91_876),
    )
}
MIN_PLAYERS, MAX_PLAYERS = 2, 4
# The form of a key; its board and player range are checked apart, so the reason names the part
# that is wrong (`hex9_2p`: the board; `hex8_5p`: the range; `hex8_10p`, `hex8-2p`: the form).
CONFIG_KEY = re.compile(r"([a-z0-9]+)_([0-9])p", re.ASCII)
# What a config key that is slightly off looks like (`hex8_2p\n`, `Hex8_2p`, `hex8_٣p`): such a
# field name is refused by the exact rule instead of being ignored as metadata.
LOOSE_CONFIG_KEY = re.compile(r"\s*[A-Za-z0-9]+_\d+[pP]\s*")


def check_board_type(board_type: str) -> None:
    """One of BOARDS, exactly."""
    if board_type not in BOARDS:
        raise EventError(f"unknown board_type {board_type[:40]!r} (expected one of: {', '.join(BOARDS)})")


def make_config_key(board_type: str, num_players: int) -> str:
    """Validate a board type and player count and return their config key, e.g. `hex8_2p`."""
    check_board_type(board_type)
    if not MIN_PLAYERS <= num_players <= MAX_PLAYERS:
        raise EventError(f"num_players must be {MIN_PLAYERS}..{MAX_PLAYERS}, got {num_players}")
    return f"{board_type}_{num_players}p"


def split_config_key(text: str, field: str = "config_key") -> tuple[str, int]:
    """(board type, players) of a text of the exact form `<board_type>_<players>p`; the board and
    the player range are not checked (`parse_config_key` does)."""
    match = CONFIG_KEY.fullmatch(text)
    if not match:
        raise EventError(f"{field} {text[:80]!r} is not of the form <board_type>_<players>p")
    return match.group(1), int(match.group(2))


def parse_config_key(config_key: str) -> tuple[str, int]:
    """Split `hex8_2p` into ("hex8", 2), validating both parts (the whole text: no trailing newline)."""
    board_type, players = split_config_key(config_key, "config key")
    make_config_key(board_type, players)
    return board_type, players


def is_config_key_field(name: str) -> bool:
    """A field name meant as a config key (CURRICULUM_WEIGHTS_UPDATED's weights): of the
    config-key form, or close to it (LOOSE_CONFIG_KEY)."""
    return LOOSE_CONFIG_KEY.fullmatch(name) is not None
