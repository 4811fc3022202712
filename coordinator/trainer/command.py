"""The trainer's command line: an argument template with named placeholders, filled per attempt.

`training.command` is a list of argument strings (never a shell string). An argument may hold
placeholders, `{name}`, anywhere in it (`{npz_path}`, `--save-path={model_path}`,
`{output_dir}/log.txt`); `{{` and `}}` are literal braces. The names are `PLACEHOLDERS`.

Rules, in this order:
1. **Prefix form.** A command with no placeholder other than `{python}` is the start of the
   reference trainer's command line: `REFERENCE_ARGS` are appended to it. This is today's form
   (`["{python}", "-m", "workers.train"]`, `[..., "workers.stub_train", "--epoch-seconds", "2"]`)
   and gives exactly today's argument list.
2. **Absent values drop out.** A value is absent when it is missing, None or "" (no parent
   model on a config's first training: `{init_weights}`; no checkpoint on a first attempt:
   `{resume}`). An argument that refers to an absent value is dropped. When that argument is
   exactly one placeholder (`{resume}`) and the argument before it is a flag (starts with `-`
   and holds no placeholder), the flag is dropped with it. `--resume={resume}` is dropped whole.
3. Every other placeholder is replaced by its value's text. Values never pass through a shell.

`template_problems` lists what is wrong with a template (unknown placeholders, by name) for
`check-config`; `build_argv` fills one; `attempt_paths` is where an attempt's files go.

Multi-GPU trainings (a torchrun-style template, README "Multi-GPU trainings"): `gpu_values` gives
`{gpus}` and `{nproc_per_node}` (how many GPUs the attempt's lease holds), `{devices}` (their
indices on the node, "0,1": also the trainer's CUDA_VISIBLE_DEVICES, `visible_devices_env`) and
`{master_port}`: `gpus.master_port_base` plus the lowest device index the lease holds. Two
trainings running at once on a node never hold the same device, so they never share a port.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Formatter

PLACEHOLDERS = frozenset({
    "python", "board_type", "num_players", "config_key", "npz_path", "epochs", "batch_size",
    "learning_rate", "patience", "output_dir", "model_path", "checkpoint_dir", "init_weights",
    "resume", "samples", "job_id", "attempt", "gpu_model", "gpu_memory_gb", "gpu_class",
    "gpus", "nproc_per_node", "devices", "master_port", "checkpoint_interval",
})
# What the reference trainer (workers.train, workers.stub_train) takes after its module name.
# `--init-weights` is last so that without a parent model the list is exactly the old one.
REFERENCE_ARGS: tuple[str, ...] = (
    "--board-type", "{board_type}", "--num-players", "{num_players}", "--data", "{npz_path}",
    "--epochs", "{epochs}", "--batch-size", "{batch_size}", "--learning-rate", "{learning_rate}",
    "--patience", "{patience}", "--output-dir", "{output_dir}", "--resume", "{resume}",
    "--init-weights", "{init_weights}",
)
DEFAULT_COMMAND: tuple[str, ...] = ("{python}", "-m", "workers.train")
# Inside an attempt's directory: where the trainer must write its model ({model_path}).
MODEL_FILE = "model.pt"
# The exit status of a trainer that got SIGTERM, saved a checkpoint and stopped on purpose
# (128 + SIGTERM, as a shell reports it): never a completed training, whatever files it left.
STOPPED_EXIT = 143
ATTEMPT_DIR_PREFIX = "attempt-"

_FORMATTER = Formatter()


@dataclass(frozen=True)
class AttemptPaths:
    """Where one attempt's trainer writes: each attempt its own directory, so a stale attempt
    never overwrites a published model. Checkpoints go into the same directory."""

    output_dir: Path
    checkpoint_dir: Path
    model_path: Path


def attempt_paths(job_dir: str | Path, attempt: int) -> AttemptPaths:
    out = Path(job_dir) / f"{ATTEMPT_DIR_PREFIX}{attempt}"
    return AttemptPaths(out, out, out / MODEL_FILE)


def placeholders_in(argument: str) -> list[str]:
    """The placeholder names an argument refers to, in order. Raises ValueError on a malformed
    argument (an unmatched brace)."""
    return [field for _, field, _, _ in _FORMATTER.parse(argument) if field is not None]


def template_problems(command: Sequence[str]) -> list[str]:
    """What is wrong with a command template, one sentence each (empty: fine)."""
    problems: list[str] = []
    for index, argument in enumerate(command):
        try:
            fields = list(_FORMATTER.parse(argument))
        except ValueError as exc:
            problems.append(f"argument {index} {argument!r}: {exc} (write {{{{ and }}}} for literal braces)")
            continue
        for _, name, spec, conversion in fields:
            if name is None:
                continue
            if name not in PLACEHOLDERS:
                problems.append(f"argument {index} {argument!r}: unknown placeholder {{{name}}} "
                                f"(known: {', '.join(sorted(PLACEHOLDERS))})")
            elif spec or conversion:
                problems.append(f"argument {index} {argument!r}: placeholder {{{name}}} takes no format "
                                "or conversion")
    return problems


def is_prefix_form(command: Sequence[str]) -> bool:
    return all(name == "python" for argument in command for name in placeholders_in(argument))


def build_argv(command: Sequence[str], values: Mapping[str, object]) -> list[str]:
    """The argument list for one attempt. `values` maps placeholder names to values (str(value)
    is used); `python` defaults to this interpreter. Raises ValueError on a template that
    `template_problems` rejects."""
    problems = template_problems(command)
    if problems:
        raise ValueError("; ".join(problems))
    filled = {"python": sys.executable, **{k: v for k, v in values.items() if not _absent(v)}}
    template = [*command, *REFERENCE_ARGS] if is_prefix_form(command) else list(command)
    argv: list[str] = []
    flag_pending = False  # argv[-1] is a flag with no placeholder, so droppable with its value
    for argument in template:
        names = placeholders_in(argument)
        if any(name not in filled for name in names):
            if flag_pending and argument == f"{{{names[0]}}}" and len(names) == 1:
                argv.pop()
            flag_pending = False
            continue
        argv.append(argument.format_map({name: filled[name] for name in names}) if names else
                    argument.replace("{{", "{").replace("}}", "}"))
        flag_pending = not names and argument.startswith("-")
    return argv


def record_values(record: Mapping[str, str], paths: AttemptPaths, attempt: int,
                  resume: str | None = None, init_weights: str | None = None) -> dict[str, object]:
    """The placeholder values of one attempt of the job whose record (the job hash) is given."""
    return {
        "board_type": record["board_type"], "num_players": record["num_players"],
        "config_key": record["config_key"], "npz_path": record["npz_path"], "epochs": record["epochs"],
        # The attempt's own (its GPU's class, or kept from its first attempt), else the job's.
        "batch_size": record.get("batch_size_used") or record["batch_size"], "learning_rate": record["learning_rate"],
        "patience": record["early_stopping_patience"], "samples": record.get("samples"),
        "job_id": record["job_id"], "attempt": attempt, "output_dir": paths.output_dir,
        "model_path": paths.model_path, "checkpoint_dir": paths.checkpoint_dir,
        "init_weights": init_weights, "resume": resume,
        "gpu_model": record.get("gpu_model"), "gpu_memory_gb": record.get("gpu_memory_gb"),
        "gpu_class": record.get("gpu_class"),
        # Epochs between checkpoints: `nodes.checkpoint_interval_stable` / `_ephemeral`, by the attempt's host.
        "checkpoint_interval": record.get("checkpoint_interval") or 1,
    }


def gpu_values(devices: Sequence[int], master_port_base: int) -> dict[str, object]:
    """The multi-GPU placeholders of an attempt whose lease holds `devices` (none known: one GPU,
    no device list, the base port)."""
    return {"gpus": max(1, len(devices)), "nproc_per_node": max(1, len(devices)),
            "devices": ",".join(str(d) for d in devices),
            "master_port": master_port_base + (min(devices) if devices else 0)}


def visible_devices_env(devices: Sequence[int]) -> dict[str, str]:
    """The trainer's CUDA_VISIBLE_DEVICES: exactly the devices its lease holds (none: left as the
    worker's)."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(d) for d in devices)} if devices else {}


def _absent(value: object) -> bool:
    return value is None or value == ""
