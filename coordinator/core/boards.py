"""The RingRift boards and config keys (`{board_type}_{num_players}p`), shared by events and the trainer."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.core.errors import EventError
from coordinator.core.inputs import split_config_key


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


def parse_config_key(config_key: str) -> tuple[str, int]:
    """Split `hex8_2p` into ("hex8", 2), validating both parts (the whole text: no trailing newline)."""
    board_type, players = split_config_key(config_key, "config key")
    make_config_key(board_type, players)
    return board_type, players
