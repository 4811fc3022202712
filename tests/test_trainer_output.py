"""Reading trainers' output: JSON lines, configured patterns (RingRift's preset), the summary."""

import json
import math

import pytest

from coordinator.trainer.output import (
    RINGRIFT_PROGRESS,
    RINGRIFT_SUMMARY,
    OutputParser,
    pattern_problems,
    result_figures,
)

EPOCH_LINE = ("2026-12-01 10:00:00,123 - app.training.train - INFO - "
              "Epoch [3/50], Train Loss: 1.2345, Val Loss: 1.3456, Policy Acc: 41.5%")


def test_ringrift_epoch_line_gives_its_figures():
    parser = OutputParser(RINGRIFT_PROGRESS, RINGRIFT_SUMMARY)
    assert parser.feed(EPOCH_LINE + "\n") == {"epoch": 3, "total_epochs": 50, "train_loss": 1.2345,
                                              "val_loss": 1.3456, "policy_accuracy_pct": 41.5}
    with_buffer = EPOCH_LINE + ", Hot Buffer: 10/100 games"
    assert parser.feed(with_buffer)["epoch"] == 3
    nan = parser.feed("Epoch [1/2], Train Loss: nan, Val Loss: inf")
    assert math.isnan(nan["train_loss"]) and nan["val_loss"] == math.inf and "policy_accuracy_pct" not in nan
    assert parser.feed("2026 - app.training.train - INFO - Current LR: 0.000500") is None
    assert parser.summary == {}


def test_ringrift_summary_line_fills_the_summary():
    parser = OutputParser(RINGRIFT_PROGRESS, RINGRIFT_SUMMARY)
    assert parser.feed("TRAINING_SUMMARY: loss=0.9876 samples=120000 games=37 epochs=50") is None
    # RingRift prints its best validation loss as `loss` and the epochs it was asked for as `epochs`.
    assert parser.summary == {"best_val_loss": 0.9876, "samples": 120000, "games": 37, "total_epochs": 50}
    parser.feed("TRAINING_SUMMARY: loss=0.5 samples=1 games=1 epochs=2")
    assert parser.summary["best_val_loss"] == 0.5  # the last one wins
    assert parser.feed("note: TRAINING_SUMMARY: loss=9 samples=9 games=9 epochs=9") is None
    assert parser.summary["best_val_loss"] == 0.5  # anchored at the start of the line


def test_json_lines_as_today_and_together_with_patterns():
    line = json.dumps({"epoch": 2, "total_epochs": 4, "train_loss": 0.5})
    assert OutputParser().feed(line) == {"epoch": 2, "total_epochs": 4, "train_loss": 0.5}
    assert OutputParser().feed('{"no_epoch": 1}') is None
    assert OutputParser().feed(EPOCH_LINE) is None  # no patterns configured: log lines are not progress
    assert OutputParser(RINGRIFT_PROGRESS).feed(line)["epoch"] == 2
    assert OutputParser(RINGRIFT_PROGRESS, json_lines=False).feed(line) is None


def test_other_numeric_groups_become_fields_and_text_groups_do_not():
    parser = OutputParser([r"ep=(?P<epoch>\d+) lr=(?P<lr>\S+) gpu=(?P<gpu>\w+)(?: eta=(?P<eta_s>\d+))?"])
    assert parser.feed("ep=4 lr=3e-4 gpu=h100") == {"epoch": 4, "lr": 0.0003}


def test_pattern_problems_are_named():
    problems = pattern_problems(["(unclosed", r"loss=(?P<train_loss>\S+)"], "TRAINING_SUMMARY")
    assert "progress pattern 0 '(unclosed': not a valid regular expression" in problems[0]
    assert "progress pattern 1" in problems[1] and "(?P<epoch>...)" in problems[1]
    assert "summary pattern 'TRAINING_SUMMARY': has no named group" in problems[2]
    assert pattern_problems(RINGRIFT_PROGRESS, RINGRIFT_SUMMARY) == []
    with pytest.raises(ValueError, match="needs a named group"):
        OutputParser([r"loss=(?P<train_loss>\S+)"])


def test_result_figures_from_summary_and_progress(tmp_path):
    history = [{"epoch": 1, "train_loss": 2.0, "val_loss": 2.1}, {"epoch": 2, "train_loss": 1.0, "val_loss": 1.1}]
    figures = result_figures(tmp_path, {"final_loss": 0.9, "samples": 7}, history, tmp_path / "m.pth")
    assert figures["model_path"] == str(tmp_path / "m.pth")
    assert figures["final_loss"] == 0.9 and figures["samples"] == 7  # the summary says
    assert figures["epochs_completed"] == 2 and figures["first_loss"] == 2.0  # the progress lines say
    assert result_figures(tmp_path, {}, history, tmp_path / "m.pth")["final_loss"] == 1.0  # the last train loss


def test_result_figures_prefer_the_reference_metrics_file(tmp_path):
    metrics = {"model_path": "/x/model.pt", "epochs_completed": 4, "final_loss": 0.25,
               "history": [{"epoch": 4, "train_loss": 0.25}]}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    figures = result_figures(tmp_path, {}, [{"epoch": 9, "train_loss": 9.0}], tmp_path / "model.pt")
    assert figures["model_path"] == "/x/model.pt" and figures["epochs_completed"] == 4
    assert figures["history"] == metrics["history"] and figures["first_loss"] == 0.25
