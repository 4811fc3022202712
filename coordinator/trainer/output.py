"""Reading any trainer's output: per-epoch progress and the closing summary, from stdout or stderr.

Every line of either stream goes through `OutputParser.feed`:
- a JSON object with an `epoch` key is a progress line (the reference trainer's form);
- a line matched (`re.search`) by one of the progress patterns is a progress line: its named
  groups that matched and read as numbers are its fields (`epoch`, `total_epochs`,
  `train_loss`, `val_loss` by convention; any other numeric group becomes a field too);
- a line matched by the summary pattern fills the summary (the last such line wins): its
  numeric named groups, by convention `final_loss`, `samples`, `games`, `epochs_completed`.

`RINGRIFT_PROGRESS` and `RINGRIFT_SUMMARY` read RingRift's own trainer
(`python -m app.training.train`): its logging lines on stderr,
`... - INFO - Epoch [3/50], Train Loss: 1.2345, Val Loss: 1.3456, Policy Acc: 41.5%`, and its
`TRAINING_SUMMARY: loss=0.9876 samples=120000 games=3 epochs=50` on stdout.

`pattern_problems` lists what is wrong with configured patterns (for `check-config`);
`result_figures` combines what a finished trainer left (metrics.json, summary, progress).
"""

from __future__ import annotations

import json
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
    rf"^TRAINING_SUMMARY: loss=(?P<final_loss>{_NUMBER}) samples=(?P<samples>\d+) games=(?P<games>\d+) "
    r"epochs=(?P<epochs_completed>\d+)"
)
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
                with self._lock:
                    self.summary = _numbers(match.groupdict())
        return None


def result_figures(output_dir: Path, summary: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                   model_path: Path) -> dict[str, Any]:
    """What a finished attempt reports: the reference trainer's metrics.json where present, then
    the summary line's figures over it, then what the progress lines say for what is still missing."""
    try:
        metrics = json.loads((output_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        metrics = {}
    history = list(metrics.get("history") or history)
    figures: dict[str, Any] = {**metrics, **summary, "history": history}
    figures.setdefault("model_path", str(model_path))
    if history:
        figures.setdefault("epochs_completed", history[-1].get("epoch"))
        figures.setdefault("final_loss", history[-1].get("val_loss", history[-1].get("train_loss")))
        figures.setdefault("first_loss", history[0].get("train_loss"))
    return figures


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
