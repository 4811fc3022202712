"""Reading any trainer's output: per-epoch progress and the closing summary, from stdout or stderr.

Every line of either stream goes through `OutputParser.feed`:
- a JSON object with an `epoch` key is a progress line (the reference trainer's form);
- a line matched (`re.search`) by one of the progress patterns is a progress line: its named
  groups that matched and read as numbers are its fields (`epoch`, `total_epochs`,
  `train_loss`, `val_loss` by convention; any other numeric group becomes a field too);
- a line matched by the summary pattern adds to the summary (a field of a later line wins): its
  numeric named groups, by convention `final_loss` (the last epoch's training loss),
  `best_val_loss` (the lowest validation loss: the published model's, when the trainer keeps its
  best weights), `best_epoch`, `epochs_completed`, `total_epochs` (the epochs it was asked for),
  `samples`, `games`; a group named in `FLAG_GROUPS` (`early_stopped`) is true when it matched
  at all. The pattern may be an alternation of several lines' forms (distinct group names).

`RINGRIFT_PROGRESS` and `RINGRIFT_SUMMARY` read RingRift's own trainer
(`python -m app.training.train`): its logging lines on stderr,
`... - INFO - Epoch [3/50], Train Loss: 1.2345, Val Loss: 1.3456, Policy Acc: 41.5%` and, when
it stops early, `... - INFO - Early stopping triggered at epoch 10 (best loss: 3.6700)`; and its
`TRAINING_SUMMARY: loss=0.9876 samples=120000 games=3 epochs=50` on stdout, whose `loss` is its
best validation loss and `epochs` the epochs it was asked for (not those it ran).

`pattern_problems` lists what is wrong with configured patterns (for `check-config`);
`result_figures` combines what a finished trainer left (metrics.json, summary, progress).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+|nan|inf)"
RINGRIFT_PROGRESS: tuple[str, ...] = (
    rf"Epoch \[(?P<epoch>\d+)/(?P<total_epochs>\d+)\], Train Loss: (?P<train_loss>{_NUMBER}), "
    rf"Val Loss: (?P<val_loss>{_NUMBER})(?:, Policy Acc: (?P<policy_accuracy_pct>{_NUMBER})%)?",
)
RINGRIFT_SUMMARY = (
    rf"^TRAINING_SUMMARY: loss=(?P<best_val_loss>{_NUMBER}) samples=(?P<samples>\d+) games=(?P<games>\d+) "
    r"epochs=(?P<total_epochs>\d+)"
    r"|(?P<early_stopped>Early stopping triggered) at epoch \d+"
)
# Summary groups that are true when they matched (whatever text they matched).
FLAG_GROUPS = ("early_stopped",)
# The metrics file the reference trainer writes into its output directory at the end.
METRICS_FILE = "metrics.json"


def pattern_problems(progress: Sequence[str], summary: str | None) -> list[str]:
    """What is wrong with configured patterns, one sentence each (empty: fine)."""
    problems: list[str] = []
    for index, text in enumerate(progress):
        compiled = _compile(text, f"progress pattern {index}", problems)
        if compiled is not None and "epoch" not in compiled.groupindex:
            problems.append(f"progress pattern {index} {text!r}: needs a named group (?P<epoch>...)")
    if summary is not None:
        compiled = _compile(summary, "summary pattern", problems)
        if compiled is not None and not compiled.groupindex:
            problems.append(f"summary pattern {summary!r}: has no named group (e.g. (?P<final_loss>...))")
    return problems


class OutputParser:
    """Reads a trainer's lines (from several threads: one per stream); keeps the summary."""

    def __init__(self, progress: Sequence[str] = (), summary: str | None = None, json_lines: bool = True) -> None:
        problems = pattern_problems(progress, summary)
        if problems:
            raise ValueError("; ".join(problems))
        self._progress = [re.compile(p) for p in progress]
        self._summary = re.compile(summary) if summary else None
        self._json_lines = json_lines
        self._lock = threading.Lock()
        self.summary: dict[str, float | int] = {}

    def feed(self, line: str) -> dict[str, Any] | None:
        """The progress figures on this line, or None; a summary line updates `summary`."""
        line = line.strip()
        if not line:
            return None
        if self._json_lines and line.startswith("{"):
            figures = _json_progress(line)
            if figures is not None:
                return figures
        for pattern in self._progress:
            match = pattern.search(line)
            if match:
                return _numbers(match.groupdict())
        if self._summary is not None:
            match = self._summary.search(line)
            if match:
                groups = match.groupdict()
                flags = {name: True for name in FLAG_GROUPS if groups.get(name) is not None}
                with self._lock:
                    self.summary = {**self.summary, **_numbers(groups), **flags}
        return None


def result_figures(output_dir: Path, summary: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                   model_path: Path) -> dict[str, Any]:
    """What a finished attempt reports: the reference trainer's metrics.json where present, then
    the summary line's figures over it, then what the progress lines say for what is still missing:
    `final_loss` the last epoch's training loss; `best_epoch` the first epoch whose validation loss
    is the `best_val_loss` the trainer reported; `early_stopped` whether it ran fewer epochs than
    asked (`total_epochs`, from the summary or the progress lines)."""
    try:
        metrics = json.loads((output_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        metrics = {}
    history = list(metrics.get("history") or history)
    figures: dict[str, Any] = {**metrics, **summary, "history": history}
    figures.setdefault("model_path", str(model_path))
    if history:
        figures.setdefault("epochs_completed", history[-1].get("epoch"))
        figures.setdefault("final_loss", history[-1].get("train_loss", history[-1].get("val_loss")))
        figures.setdefault("first_loss", history[0].get("train_loss"))
        figures.setdefault("total_epochs", history[-1].get("total_epochs"))
        if figures.get("best_val_loss") is not None and figures.get("best_epoch") is None:
            figures["best_epoch"] = _epoch_of(history, figures["best_val_loss"])
    done, asked = figures.get("epochs_completed"), figures.get("total_epochs")
    if figures.get("early_stopped") is None and done is not None and asked:
        figures["early_stopped"] = done < asked
    return figures


def _epoch_of(history: Sequence[Mapping[str, Any]], val_loss: float) -> int | None:
    """The first epoch whose validation loss is `val_loss` as far as the printed digits go (trainers
    round their log lines to 4 decimals), or None."""
    for row in history:
        seen = row.get("val_loss")
        if isinstance(seen, (int, float)) and math.isclose(seen, val_loss, rel_tol=1e-6, abs_tol=5e-5):
            return row.get("epoch")
    return None


def _compile(text: str, what: str, problems: list[str]) -> re.Pattern[str] | None:
    try:
        return re.compile(text)
    except re.error as exc:
        problems.append(f"{what} {text!r}: not a valid regular expression: {exc}")
        return None


def _json_progress(line: str) -> dict[str, Any] | None:
    try:
        figures = json.loads(line)
    except ValueError:
        return None
    return figures if isinstance(figures, dict) and "epoch" in figures else None


def _numbers(groups: Mapping[str, str | None]) -> dict[str, float | int]:
    """The named groups that matched and read as numbers: int where integral text, else float."""
    out: dict[str, float | int] = {}
    for name, text in groups.items():
        if text is None:
            continue
        try:
            out[name] = int(text)
        except ValueError:
            try:
                out[name] = float(text)
            except ValueError:  # a text group: not a figure
                continue
    return out
