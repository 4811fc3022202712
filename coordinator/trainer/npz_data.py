"""RingRift training data (NPZ): reading it for the trainer, and writing valid synthetic files.

Format (see the exporters' spec): `features` (N, C, H, W) float32, `globals` (N, 20) float32,
`values` (N,) float32, ragged `policy_indices`/`policy_values` object arrays (loading needs
`allow_pickle=True`), optional `values_mp` (N, 4) with `num_players` (N,), optional
`sample_weights` (N,). C comes from the data; H and the policy size from the board type.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coordinator.core.boards import BOARDS, MAX_PLAYERS

GLOBAL_FEATURES = 20
REQUIRED_KEYS = ("features", "globals", "values", "policy_indices", "policy_values")


class BadTrainingData(ValueError):
    """The NPZ file is unreadable or does not match the format or the board."""


@dataclass(frozen=True)
class TrainingData:
    features: np.ndarray  # (N, C, H, W) float32
    globals: np.ndarray  # (N, 20) float32
    values: np.ndarray  # (N, 4) float32, per player; columns past num_players are 0
    value_mask: np.ndarray  # (N, 4) float32, 1 where a player's value is known
    policy_indices: np.ndarray  # (N, K) int64, padded with 0
    policy_values: np.ndarray  # (N, K) float32, padded with 0
    sample_weights: np.ndarray  # (N,) float32

    @property
    def channels(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.features.shape[0])


def check_npz(path: str | os.PathLike[str], board_type: str) -> int:
    """A cheap look before any GPU time is spent: a zip with the required arrays, and array
    headers (not data) with the board's shapes. Returns the sample count; raises BadTrainingData."""
    _require_zip(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [k for k in REQUIRED_KEYS if f"{k}.npy" not in names]
            if missing:
                raise BadTrainingData(f"{path}: missing required arrays: {', '.join(missing)}")
            features = _header_shape(archive, "features.npy")
            globals_ = _header_shape(archive, "globals.npy")
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        if isinstance(exc, BadTrainingData):
            raise
        raise BadTrainingData(f"{path}: unreadable NPZ: {exc}") from exc
    _check_shapes(path, board_type, features, globals_)
    return int(features[0])


def _require_zip(path: str | os.PathLike[str]) -> None:
    if not Path(path).is_file():
        raise BadTrainingData(f"{path}: no such file")
    # np.load on anything but a zip would unpickle the whole file: refuse that outright.
    if not zipfile.is_zipfile(path):
        raise BadTrainingData(f"{path}: not an NPZ (zip) file")


def _check_shapes(path: object, board_type: str, features: tuple[int, ...], globals_: tuple[int, ...]) -> None:
    size = BOARDS[board_type].size
    if len(features) != 4 or features[2:] != (size, size) or features[0] == 0:
        raise BadTrainingData(f"{path}: features must be (N>0, C, {size}, {size}) for {board_type}, got {features}")
    if globals_ != (features[0], GLOBAL_FEATURES):
        raise BadTrainingData(f"{path}: globals must be ({features[0]}, {GLOBAL_FEATURES}), got {globals_}")


def _header_shape(archive: zipfile.ZipFile, name: str) -> tuple[int, ...]:
    with archive.open(name) as member:
        major, _minor = np.lib.format.read_magic(member)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _fortran, _dtype = read(member)
    return tuple(shape)


def load_training_data(path: str | os.PathLike[str], board_type: str) -> TrainingData:
    board = BOARDS[board_type]
    _require_zip(path)
    try:
        with np.load(path, allow_pickle=True) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        raise BadTrainingData(f"{path}: not a readable NPZ file: {exc}") from exc
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise BadTrainingData(f"{path}: missing required arrays: {', '.join(missing)}")
    features = np.asarray(arrays["features"], dtype=np.float32)
    glob = np.asarray(arrays["globals"], dtype=np.float32)
    _check_shapes(path, board_type, features.shape, glob.shape)
    n = features.shape[0]
    values, mask = _values(arrays, n, path)
    indices, probs = _pad_policies(arrays["policy_indices"], arrays["policy_values"], n, board.policy_size, path)
    weights = np.asarray(arrays.get("sample_weights", np.ones(n)), dtype=np.float32).reshape(n)
    return TrainingData(features, glob, values, mask, indices, probs, weights)


def _values(arrays: dict[str, np.ndarray], n: int, path: object) -> tuple[np.ndarray, np.ndarray]:
    scalar = np.asarray(arrays["values"], dtype=np.float32).reshape(-1)
    if scalar.shape != (n,):
        raise BadTrainingData(f"{path}: values must be ({n},), got {scalar.shape}")
    values = np.zeros((n, MAX_PLAYERS), dtype=np.float32)
    mask = np.zeros((n, MAX_PLAYERS), dtype=np.float32)
    if "values_mp" in arrays and "num_players" in arrays:
        values[:] = np.asarray(arrays["values_mp"], dtype=np.float32).reshape(n, MAX_PLAYERS)
        players = np.asarray(arrays["num_players"]).reshape(n)
        mask[:] = np.arange(MAX_PLAYERS)[None, :] < players[:, None]
    else:
        values[:, 0], mask[:, 0] = scalar, 1.0
    return np.clip(values, -1.0, 1.0), mask


def _pad_policies(
    indices: np.ndarray, probs: np.ndarray, n: int, policy_size: int, path: object
) -> tuple[np.ndarray, np.ndarray]:
    if len(indices) != n or len(probs) != n:
        raise BadTrainingData(f"{path}: policy arrays must have {n} rows")
    width = max(1, max(len(row) for row in indices))
    padded_idx = np.zeros((n, width), dtype=np.int64)
    padded_val = np.zeros((n, width), dtype=np.float32)
    for i, (idx, val) in enumerate(zip(indices, probs)):
        idx, val = np.asarray(idx, dtype=np.int64), np.asarray(val, dtype=np.float32)
        if idx.shape != val.shape:
            raise BadTrainingData(f"{path}: row {i}: policy indices and values differ in length")
        if idx.size and (idx.min() < 0 or idx.max() >= policy_size):
            raise BadTrainingData(f"{path}: row {i}: policy index outside 0..{policy_size - 1}")
        padded_idx[i, : idx.size], padded_val[i, : val.size] = idx, val
    return padded_idx, padded_val


def write_synthetic_npz(
    path: str | os.PathLike[str],
    board_type: str,
    num_players: int,
    samples: int = 1024,
    channels: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a valid NPZ whose targets follow from its features, so a trainer can learn them.

    The value is a smooth function of two planes' densities; the best move is the one cell lit in
    plane 2. Written to a temporary file and renamed, as the exporters do.
    """
    board = BOARDS[board_type]
    rng = np.random.default_rng(seed)
    c = channels or (40 if board_type.startswith("hex") else 56)
    h = board.size
    features = (rng.random((samples, c, h, h)) < 0.3).astype(np.float32)
    best = rng.integers(0, h * h, size=samples)
    features[:, 2] = 0.0
    features[np.arange(samples), 2, best // h, best % h] = 1.0
    glob = rng.normal(size=(samples, GLOBAL_FEATURES)).astype(np.float32)
    values = np.tanh(8.0 * (features[:, 0].mean(axis=(1, 2)) - features[:, 1].mean(axis=(1, 2)))).astype(np.float32)
    values_mp = np.zeros((samples, MAX_PLAYERS), dtype=np.float32)
    values_mp[:, 0] = values
    values_mp[:, 1:num_players] = -values[:, None] / (num_players - 1)
    policy_indices = np.empty(samples, dtype=object)
    policy_values = np.empty(samples, dtype=object)
    for i in range(samples):
        others = rng.choice(board.policy_size, size=int(rng.integers(3, 12)), replace=False)
        idx = np.unique(np.concatenate([[best[i]], others])).astype(np.int32)
        val = np.where(idx == best[i], 0.7, 0.3 / (len(idx) - 1)).astype(np.float32)
        policy_indices[i], policy_values[i] = idx, val / val.sum()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp.npz")
    np.savez_compressed(
        tmp, features=features, globals=glob, values=values, values_mp=values_mp,
        num_players=np.full(samples, num_players, dtype=np.int32),
        policy_indices=policy_indices, policy_values=policy_values, export_version=np.int32(1),
    )
    os.replace(tmp, target)
    return target
