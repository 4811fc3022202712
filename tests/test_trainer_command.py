"""The trainer's argument template: placeholders, absent values dropping out with their flag."""

import sys
from pathlib import Path

import pytest

from coordinator.trainer.command import (
    DEFAULT_COMMAND,
    MODEL_FILE,
    attempt_paths,
    build_argv,
    record_values,
    template_problems,
)
from tests.support.trainers import stub_trainer

RINGRIFT = ["{python}", "-m", "app.training.train", "--board-type", "{board_type}", "--num-players", "{num_players}",
            "--data-path", "{npz_path}", "--save-path", "{model_path}", "--epochs", "{epochs}",
            "--checkpoint-dir", "{checkpoint_dir}", "--init-weights", "{init_weights}", "--resume", "{resume}",
            "--allow-stale-data"]
RECORD = {"job_id": "j1", "config_key": "hex8_2p", "board_type": "hex8", "num_players": "2",
          "npz_path": "/data/a b.npz", "epochs": "3", "batch_size": "512", "learning_rate": "0.001",
          "early_stopping_patience": "5", "samples": "1200"}


def _values(resume=None, init_weights=None, attempt=2):
    return record_values(RECORD, attempt_paths("/models/hex8_2p/j1", attempt), attempt, resume, init_weights)


def test_the_default_is_todays_reference_argv_exactly():
    out = "/models/hex8_2p/j1/attempt-2"
    today = [sys.executable, "-m", "workers.train", "--board-type", "hex8", "--num-players", "2",
             "--data", "/data/a b.npz", "--epochs", "3", "--batch-size", "512", "--learning-rate", "0.001",
             "--patience", "5", "--output-dir", out]
    assert build_argv(DEFAULT_COMMAND, _values()) == today
    assert build_argv(DEFAULT_COMMAND, _values(resume="/c.pt")) == [*today, "--resume", "/c.pt"]
    assert build_argv(DEFAULT_COMMAND, _values(init_weights="/m.pt"))[-2:] == ["--init-weights", "/m.pt"]


def test_a_prefix_with_extra_options_keeps_them_before_the_reference_arguments():
    argv = build_argv(stub_trainer("--epoch-seconds", "2"), _values())
    assert argv[:5] == [sys.executable, "-m", "workers.stub_train", "--epoch-seconds", "2"]
    assert argv[5:7] == ["--board-type", "hex8"]


def test_absent_values_drop_out_with_their_flag():
    argv = build_argv(RINGRIFT, _values())
    assert "--init-weights" not in argv and "--resume" not in argv
    assert argv[-1] == "--allow-stale-data"  # a flag with no value after it stays
    argv = build_argv(RINGRIFT, _values(resume="/ck/checkpoint_epoch_5.pth", init_weights="/m/canonical.pth"))
    pairs = dict(zip(argv[3::2], argv[4::2]))
    assert pairs["--init-weights"] == "/m/canonical.pth" and pairs["--resume"] == "/ck/checkpoint_epoch_5.pth"
    assert pairs["--save-path"] == f"/models/hex8_2p/j1/attempt-2/{MODEL_FILE}"
    assert pairs["--checkpoint-dir"] == "/models/hex8_2p/j1/attempt-2"
    assert pairs["--data-path"] == "/data/a b.npz"  # one argument: nothing is split


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (["--resume={resume}", "--x"], ["--x"]),  # the flag=value form goes whole
        (["in", "{resume}", "out"], ["in", "out"]),  # no flag before it: only the value goes
        (["--tag={job_id}", "{resume}"], ["--tag=j1"]),  # the argument before is not a bare flag
        (["--a", "{resume}-{job_id}"], ["--a"]),  # not exactly one placeholder: the flag stays
        (["--a", "{resume}", "{init_weights}"], []),  # the second has no flag left before it
        (["--save={output_dir}/m.pth", "x{{y}}", "{job_id}_{attempt}"],
         ["--save=/models/hex8_2p/j1/attempt-2/m.pth", "x{y}", "j1_2"]),
    ],
)
def test_drop_rule_and_literals(template, expected):
    assert build_argv(template, _values()) == expected


def test_values_are_never_expanded_again():
    record = {**RECORD, "npz_path": "/data/{job_id} $(rm -rf x).npz"}
    argv = build_argv(["{npz_path}"], record_values(record, attempt_paths("/m", 1), 1))
    assert argv == ["/data/{job_id} $(rm -rf x).npz"]


def test_unknown_placeholders_are_named():
    problems = template_problems(["{python}", "--data", "{npz}", "--x={epochs:03d}", "{bad"])
    assert len(problems) == 3
    assert "argument 2 '{npz}': unknown placeholder {npz}" in problems[0]
    assert "npz_path" in problems[0]  # the known names are listed
    assert "{epochs} takes no format" in problems[1]
    assert problems[2].startswith("argument 4 '{bad'")
    assert template_problems(RINGRIFT) == [] and template_problems(list(DEFAULT_COMMAND)) == []
    with pytest.raises(ValueError, match="unknown placeholder {npz}"):
        build_argv(["{npz}"], _values())


def test_attempt_paths_put_each_attempt_in_its_own_directory():
    paths = attempt_paths(Path("/models/c/j"), 3)
    assert paths.output_dir == Path("/models/c/j/attempt-3") == paths.checkpoint_dir
    assert paths.model_path == Path("/models/c/j/attempt-3") / MODEL_FILE
