"""The scheduling simulator's world: what the coordinator cannot see (true Elo, true durations, the
samples each export file holds), shared by every policy of one seed.

The cluster: the 12 RingRift configs (square8, hex8, square19, hexagonal x 2, 3, 4 players).
Exports arrive every 1-4 h per config (x 0.5..1.5). An export file holds everything the config
exported so far (a cumulative snapshot, named by its sequence number): a training on file F covers
the samples exported up to F that the config's previous completed training did not cover.

A training's length: its board's GPU-hours per sample (on an H100) x the samples of the export it
trains on (the job record's `samples`, the figure its NPZ_EXPORT_COMPLETE gave): RingRift's trainer
makes one pass over its NPZ per epoch, and the coordinator learns seconds per epoch per sample per
(board, GPU class) from the epoch times (`coordinator/scheduling/speeds.py`). The cost per sample is
the board's, calibrated so that an export of typical size (`samples_per_h x export_every_h`) at 2
players takes BoardModel.gpu_hours; a config's players (x 1 + 0.15 per player above 2) and its
per-seed jitter (x 0.85..1.15) scale its export sizes, so its typical training (`Spec.gpu_hours`)
keeps the length it had when training time was fixed per config, and its `data_half` by as much as
its exports grew over those of that fixed-time world (a 4-player sample is worth less), so the gain
of a training on an export is unchanged. Exports jitter x 0.7..1.3 in size, trainings with them.

A training's expected Elo gain: `gain x room^1.5 x (1 - exp(-covered / data_half))`, room =
1 - elo / elo_room (returns diminish with data and with strength); the realised gain adds noise
N(0, 0.25 gain room + 3); an evaluation adds N(0, EVAL_NOISE_ELO) more. Curriculum weights are drawn
per seed (one config at 0.05). Workloads: `ringrift` (BOARD_MODELS: 0.5 GPU-h on hex8 to ~25 on
hexagonal 4p) and `short` (large boards shortened so that every training is under ~2 GPU-h).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

EVAL_NOISE_ELO = 12.0
EXPORT_SIZE = (0.7, 1.3)  # an export's samples x its config's typical export's
RESUME_OVERHEAD_H = 0.1  # a resumed attempt reloads its checkpoint and data before its first epoch
WORKLOADS = ("ringrift", "short")


@dataclass(frozen=True)
class BoardModel:
    gpu_hours: float  # one training on a typical export at 2 players (H100)
    export_every_h: float
    samples_per_h: float  # at 2 players
    elo_room: float  # Elo between the first model and the ceiling
    gain: float  # Elo of one training with ample data at the first model's strength
    data_half: float  # samples: 1 - 1/e of the gain


BOARD_MODELS = {
    "square8": BoardModel(0.75, 1.0, 20_000, 600, 35, 40_000),
    "hex8": BoardModel(0.5, 1.0, 25_000, 600, 30, 40_000),
    "square19": BoardModel(18.0, 3.0, 4_000, 900, 220, 60_000),
    "hexagonal": BoardModel(22.0, 4.0, 3_000, 900, 240, 60_000),
}
# `short`: the large boards' trainings at these GPU-hours (4 players x 1.3, jitter x 1.15: < ~2.1 h).
SHORT_GPU_HOURS = {"square19": 1.2, "hexagonal": 1.4}


@dataclass(frozen=True)
class Spec:
    key: str
    board: str
    players: int
    gpu_hours: float  # a training on an export of typical size, on an H100
    export_every_h: float
    samples_per_h: float
    elo_room: float
    gain: float
    data_half: float
    weight: float
    hours_per_sample: float  # the board's H100-hours of a training per sample of its export

    @property
    def typical_samples(self) -> float:
        return self.samples_per_h * self.export_every_h


def cluster(seed: int, workload: str = "ringrift") -> list[Spec]:
    """The 12 configs with per-seed jitter and curriculum weights (one config at 0.05)."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r} (one of {', '.join(WORKLOADS)})")
    rng = random.Random(seed)
    specs = []
    for board, m in BOARD_MODELS.items():
        hours = SHORT_GPU_HOURS.get(board, m.gpu_hours) if workload == "short" else m.gpu_hours
        per_sample = hours / (m.samples_per_h * m.export_every_h)
        for players in (2, 3, 4):
            more = players - 2
            size = (1 + 0.15 * more) * rng.uniform(0.85, 1.15)  # exports, and trainings, vs 2 players'
            worth = size / (1 - 0.15 * more)  # samples per sample of the fixed-time world's exports
            specs.append(Spec(f"{board}_{players}p", board, players, hours * size, m.export_every_h,
                              m.samples_per_h * size, m.elo_room * rng.uniform(0.8, 1.2),
                              m.gain * rng.uniform(0.7, 1.3), m.data_half * worth,
                              rng.choice((0.25, 0.5, 1.0, 1.5, 2.0)), per_sample))
    light = rng.randrange(len(specs))
    specs[light] = replace(specs[light], weight=0.05)
    return specs


def expected_gain(spec: Spec, elo: float, covered: float) -> float:
    """The Elo a training on `covered` new samples is expected to add at true strength `elo`."""
    room = max(0.0, 1.0 - elo / spec.elo_room)
    return spec.gain * room ** 1.5 * (1.0 - math.exp(-max(covered, 0.0) / spec.data_half))


@dataclass
class ConfigTruth:
    """One config's true state."""

    elo: float = 0.0
    exported: int = 0  # samples exported so far (the newest file holds them all)
    trained: int = 0  # samples the last completed training's file held
    file_samples: dict[str, int] | None = None  # export file -> the cumulative samples it holds
    file_export: dict[str, int] | None = None  # export file -> its export's samples (what a training passes over)
    seq: int = 0

    def __post_init__(self) -> None:
        self.file_samples, self.file_export = {}, {}

    @property
    def untrained(self) -> int:
        return self.exported - self.trained


class World:
    """The true side of one run: exports (the same for every policy of a seed), Elo, noise."""

    def __init__(self, specs: list[Spec], seed: int) -> None:
        self.specs = specs
        self.by_key = {s.key: s for s in specs}
        self.truth = {s.key: ConfigTruth() for s in specs}
        self.export_rng = random.Random(seed * 7919 + 1)  # exports: the same for every policy
        self.noise = random.Random(seed * 104729 + 3)  # training and evaluation noise, delays
        self.gained = {s.key: 0.0 for s in specs}

    def first_export_h(self, key: str) -> float:
        return self.export_rng.uniform(0, self.by_key[key].export_every_h)

    def export(self, key: str) -> tuple[str, int, float]:
        """A new export: (its file, its samples, hours until the next one)."""
        spec, t = self.by_key[key], self.truth[key]
        samples = int(spec.typical_samples * self.export_rng.uniform(*EXPORT_SIZE))
        t.seq += 1
        t.exported += samples
        path = f"{DATA_ROOT}/{key}/export-{t.seq:05d}.npz"
        assert t.file_samples is not None and t.file_export is not None
        t.file_samples[path] = t.exported
        t.file_export[path] = samples
        return path, samples, spec.export_every_h * self.export_rng.uniform(0.5, 1.5)

    def covered_by(self, key: str, npz_path: str) -> int:
        """The new samples a training on `npz_path` truly trains on."""
        t = self.truth[key]
        assert t.file_samples is not None
        return max(0, t.file_samples.get(npz_path, t.trained) - t.trained)

    def train(self, key: str, npz_path: str) -> tuple[float, float]:
        """A completed training on `npz_path`: its true gain, and the evaluated Elo of its model."""
        spec, t = self.by_key[key], self.truth[key]
        covered = self.covered_by(key, npz_path)
        room = max(0.0, 1.0 - t.elo / spec.elo_room)
        gain = expected_gain(spec, t.elo, covered) + self.noise.gauss(0.0, 0.25 * spec.gain * room + 3.0)
        t.elo += gain
        assert t.file_samples is not None
        t.trained = max(t.trained, t.file_samples.get(npz_path, t.trained))
        self.gained[key] += gain
        return gain, t.elo + self.noise.gauss(0.0, EVAL_NOISE_ELO)

    def training_hours(self, key: str, samples: float) -> float:
        """The H100-hours of a training of `key` on an export of `samples` (a typical one's when 0)."""
        spec = self.by_key[key]
        return spec.hours_per_sample * (samples if samples > 0 else spec.typical_samples)

    def hours_on(self, key: str, npz_path: str | None = None) -> float:
        """The H100-hours of a training on `npz_path` (None: the newest export, what a job gets now)."""
        t = self.truth[key]
        assert t.file_export is not None
        if npz_path is None:
            npz_path = f"{DATA_ROOT}/{key}/export-{t.seq:05d}.npz"
        return self.training_hours(key, t.file_export.get(npz_path, 0))

    def rate_now(self, key: str) -> float:
        """Curriculum-weighted expected Elo per GPU-hour of training the config now, on all it has."""
        spec, t = self.by_key[key], self.truth[key]
        return spec.weight * expected_gain(spec, t.elo, t.untrained) / self.hours_on(key)

    def rate_of_job(self, key: str, npz_path: str) -> float:
        """The same for a job on `npz_path` (what a preempted job was producing)."""
        spec, t = self.by_key[key], self.truth[key]
        return spec.weight * expected_gain(spec, t.elo, self.covered_by(key, npz_path)) / self.hours_on(key, npz_path)

    def weighted_elo(self) -> float:
        return sum(self.by_key[k].weight * g for k, g in self.gained.items())


DATA_ROOT = "/sim/data"
MODELS_ROOT = "/sim/models"
