"""Learned training speeds: how long an epoch takes per training sample, per workload and GPU class,
and the prior for a GPU class never timed (issue 26, step 3). Pure: no Redis (the estimates are
stored by `coordinator/stores/speeds.py`, fed by `coordinator/service/handlers.py`).

- **What is learned**: seconds per epoch per sample (s/sample), an exponentially weighted mean of
  each timed epoch's `epoch_time_s / samples` (`smoothed`: the newest weighs `gpus.speed_smoothing`,
  or 1/n while fewer than 1/smoothing epochs were seen, so the first few are a plain mean). RingRift's
  trainer makes one pass over its NPZ per epoch, so an epoch's time grows with the samples; per
  sample, trainings of one board on different exports are comparable, and a training's expected
  time is `epochs x samples x s/sample`. A mean of times (not of rates) keeps that product
  unbiased; the batch size a class trains with is part of its speed.
- **Workload**: the board (`hexagonal`), or `board/model` when the trainer's command names a model
  (`--model-version v5-heavy`: RingRift's architectures differ several-fold in cost per sample).
- **GPU class**: the GPU's class (`gpus.classes`), else its model name ("unknown" when none).
- **Prior** for a class never timed on a workload: the class's `relative_speed`, else
  `gpus.speed_priors` (by class name, else by the GPU's model words; RTX 4090 = 1). Where some
  class was timed on the workload, an untimed class's s/sample is the most-timed class's scaled by
  their priors; where none was, only relative speeds are known (`seconds_per_sample` is None).
- `relative(workload, cls)`: speed in prior units (an RTX 4090 = 1 by default), learned where timed,
  so it also normalises GPU-hours to 4090-hours (`cost.py`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

from coordinator.core.gpu_requirements import Gpu, gpu_class, model_matches
from coordinator.core.settings import GpuClass, SpeedPriors

UNKNOWN_CLASS = "unknown"
MODEL_FLAG = "--model-version"
_GB_SUFFIX = re.compile(r"^(.*)_(\d+)gb$")


@dataclass(frozen=True)
class Learned:
    """One (workload, class) estimate: seconds per epoch per sample, and how many epochs made it."""

    seconds_per_sample: float
    epochs: int


def smoothed(old: float | None, seen: int, observed: float, alpha: float) -> float:
    """The new estimate after one more epoch (`seen` before it): a mean while 1/(seen+1) > alpha,
    an exponentially weighted one after. The Lua of `stores/speeds.py` computes the same."""
    if old is None or seen <= 0:
        return observed
    return old + max(alpha, 1.0 / (seen + 1)) * (observed - old)


def workload_of(board_type: str, command: Sequence[str] = ()) -> str:
    """`board`, or `board/model` when the trainer's command names `--model-version X` (or `=X`)."""
    args = [a for part in command for a in (shlex.split(part) if " " in part else [part])]
    for i, arg in enumerate(args):
        if arg == MODEL_FLAG and i + 1 < len(args) and "{" not in args[i + 1]:
            return f"{board_type}/{args[i + 1]}"
        if arg.startswith(MODEL_FLAG + "=") and "{" not in arg:
            return f"{board_type}/{arg.split('=', 1)[1]}"
    return board_type


def class_key(gpu: Gpu | None, classes: Mapping[str, GpuClass]) -> str:
    """The name speeds are kept under for `gpu`: its class, else its model, else "unknown"."""
    if gpu is None or not (gpu.model or gpu.memory_gb):
        return UNKNOWN_CLASS
    return gpu_class(gpu, classes) or gpu.model.removeprefix("NVIDIA ").strip() or UNKNOWN_CLASS


def _normalised(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def prior_speed(cls: str, classes: Mapping[str, GpuClass], priors: SpeedPriors, gpu: Gpu | None = None) -> float:
    """The prior relative speed of class `cls` (module docstring); `gpu` gives the model and memory
    to match by words when the class says nothing (else the class's first model)."""
    known = classes.get(cls)
    if known is not None and known.relative_speed is not None:
        return known.relative_speed
    table = {f.name: getattr(priors, f.name) for f in fields(priors)}
    name = _normalised(cls)
    for key in (name, f"{name}gb"):
        if key in table and key != UNKNOWN_CLASS:
            return table[key]
    if gpu is not None and gpu.model:
        model, memory = gpu.model, gpu.memory_gb
    elif known is not None:
        model, memory = known.models[0], known.min_memory_gb or 0.0
    else:
        model, memory = cls, 0.0
    for key, speed in table.items():
        sized = _GB_SUFFIX.match(key)
        words, need = (sized.group(1), float(sized.group(2))) if sized else (key, 0.0)
        if key != UNKNOWN_CLASS and model_matches(words.replace("_", " "), model) and memory >= 0.85 * need:
            return speed
    return priors.unknown


@dataclass(frozen=True)
class SpeedTable:
    """Learned estimates by (workload, class) and the priors: what placement ranks GPUs by."""

    learned: Mapping[tuple[str, str], Learned]
    classes: Mapping[str, GpuClass]
    priors: SpeedPriors = SpeedPriors()

    def prior(self, cls: str, gpu: Gpu | None = None) -> float:
        return prior_speed(cls, self.classes, self.priors, gpu)

    def _anchor(self, workload: str) -> tuple[str, Learned] | None:
        """The class timed most on `workload` (ties: by name), or None."""
        timed = [(est.epochs, c, est) for (w, c), est in self.learned.items() if w == workload and est.epochs > 0]
        if not timed:
            return None
        _n, cls, est = max(timed, key=lambda t: (t[0], t[1]))
        return cls, est

    def seconds_per_sample(self, workload: str, cls: str, gpu: Gpu | None = None) -> float | None:
        """Learned, else scaled from the most-timed class by the priors; None when no class was timed."""
        own = self.learned.get((workload, cls))
        if own is not None and own.epochs > 0:
            return own.seconds_per_sample
        anchor = self._anchor(workload)
        if anchor is None:
            return None
        anchor_cls, est = anchor
        return est.seconds_per_sample * self.prior(anchor_cls) / self.prior(cls, gpu)

    def relative(self, workload: str, cls: str, gpu: Gpu | None = None) -> float:
        """Speed in prior units (RTX 4090 = 1 by default): the anchor class's prior x how much faster
        than it this class trains the workload; the prior alone where nothing was timed."""
        anchor = self._anchor(workload)
        mine = self.seconds_per_sample(workload, cls, gpu)
        if anchor is None or mine is None or mine <= 0:
            return self.prior(cls, gpu)
        anchor_cls, est = anchor
        return self.prior(anchor_cls) * est.seconds_per_sample / mine

    def expected_seconds(self, workload: str, cls: str, work: float, gpu: Gpu | None = None) -> float | None:
        """Seconds to train `work` sample-epochs (epochs left x samples) on class `cls`, or None."""
        per_sample = self.seconds_per_sample(workload, cls, gpu)
        return None if per_sample is None else work * per_sample

    def timed(self, workload: str, cls: str) -> bool:
        """Whether the class's figure on the workload was learned from its own epochs (not a prior)."""
        own = self.learned.get((workload, cls))
        return own is not None and own.epochs > 0

    def basis(self, workload: str, cls: str) -> str:
        """Where a class's figure comes from, in words: "learned from 12 epochs" or "prior"."""
        own = self.learned.get((workload, cls))
        return f"learned from {own.epochs} epochs" if own is not None and own.epochs > 0 else "prior"

    def observe(self, workload: str, cls: str, seconds_per_sample: float, alpha: float) -> SpeedTable:
        """The table after one more timed epoch (what the store does in Redis; for simulations)."""
        old = self.learned.get((workload, cls))
        new = Learned(smoothed(old.seconds_per_sample if old else None, old.epochs if old else 0,
                               seconds_per_sample, alpha), (old.epochs if old else 0) + 1)
        return replace(self, learned={**self.learned, (workload, cls): new})


def table_from(stored: Mapping[tuple[str, str], tuple[float, int]], classes: Mapping[str, GpuClass],
               priors: SpeedPriors) -> SpeedTable:
    """A table from what `SpeedStore.read` returns."""
    return SpeedTable({k: Learned(s, n) for k, (s, n) in stored.items()}, classes, priors)
