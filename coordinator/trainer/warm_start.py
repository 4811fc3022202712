"""Warm starts: which published models a job may start from, and telling "could not load its init
weights" apart from any other trainer failure.

**Which models.** Each model a job publishes is kept on its config's list (`Keys.models`) with the
fingerprint of the trainer command that wrote it (`published_entry`). A new job is offered only
the models written by its own command (`offered_models`): a model of another trainer (the stub's
JSON `model.pt` after switching to the reference trainer) is never passed as `--init-weights`.
The fingerprint is of the whole command template, so a flag that changes the architecture
(RingRift's `--model-version`) also stops the offer. Entries written before fingerprints were kept
(a bare path) are still offered: the failure handling below covers a bad one.

**Failed while loading its init weights.** A batch system cannot tell why a program exited; RQ
retries by count, Slurm requeues on exit codes the user chose. The contract here is the same: a
trainer that cannot load `--init-weights` exits with `INIT_WEIGHTS_EXIT` (66, sysexits'
EX_NOINPUT, "an input file could not be read"); the reference trainer does. For a trainer that
does not know this contract, `init_weights_failure` also accepts, when the attempt was given init
weights and failed before its first progress line, a stderr tail with a line that names the
init-weights file together with an error word, or (when no checkpoint was resumed, so no other
model file was being read) a torch/pickle load error. A wrong guess costs one attempt from
scratch that is not counted against the breakers; a missed one is an ordinary trainer failure.
The worker then retries the job once from scratch (no init weights), and says so
(`warm_start_dropped` on TRAINING_STARTED and the job record).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

# A trainer's exit status for "could not load --init-weights" (sysexits.h EX_NOINPUT).
INIT_WEIGHTS_EXIT = 66
# Words of a line that reports a failure (checked only on a line naming the init-weights file).
_FAILURE_WORDS = re.compile(r"error|could not|cannot|can't|failed|not found|no such|invalid|corrupt", re.I)
# What torch.load / load_state_dict / pickle say about a file they cannot read.
_LOAD_ERRORS = re.compile(
    r"UnpicklingError|invalid load key|PytorchStreamReader|Error\(s\) in loading state_dict|size mismatch for|"
    r"Missing key\(s\) in state_dict|Unexpected key\(s\) in state_dict|Weights only load failed|"
    r"not a zip file|EOFError: Ran out of input")


def command_fingerprint(command: Sequence[str]) -> str:
    """A short, stable name for a trainer command template (the models it writes go together)."""
    return hashlib.sha256(json.dumps(list(command)).encode()).hexdigest()[:16]


def published_entry(model_path: str, fingerprint: str) -> str:
    """How a published model is kept on its config's list: the path and its command's fingerprint."""
    return json.dumps({"model": model_path, "command": fingerprint}, separators=(",", ":"))


def read_entry(entry: str) -> tuple[str, str | None]:
    """(model path, command fingerprint or None for an entry written before fingerprints)."""
    if entry.startswith("{"):
        try:
            value = json.loads(entry)
            return str(value["model"]), str(value.get("command") or "") or None
        except (ValueError, KeyError, TypeError):
            pass
    return entry, None


def offered_models(entries: Sequence[str], fingerprint: str) -> tuple[list[str], int]:
    """(the models a job of command `fingerprint` may start from, newest first; how many were left
    out because another command wrote them)."""
    offered, skipped = [], 0
    for path, written_by in map(read_entry, entries):
        if written_by is None or written_by == fingerprint:
            offered.append(path)
        else:
            skipped += 1
    return offered, skipped


def init_weights_failure(init_weights: str | None, returncode: int, progressed: bool, stderr_tail: str,
                         resumed: bool) -> str | None:
    """Why this ended attempt failed while loading its init weights (a line of its stderr, or its
    exit status), or None when it did not (or it cannot be told). `progressed`: it printed a
    progress line; `resumed`: it was also given a checkpoint to resume from."""
    if not init_weights or progressed or returncode == 0:
        return None
    lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()]
    if returncode == INIT_WEIGHTS_EXIT:
        return lines[-1] if lines else f"exit status {INIT_WEIGHTS_EXIT}"
    for line in reversed(lines):
        if init_weights in line and _FAILURE_WORDS.search(line):
            return line
    if not resumed:
        for line in reversed(lines):
            if _LOAD_ERRORS.search(line):
                return line
    return None
