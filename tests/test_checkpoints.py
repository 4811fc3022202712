"""Finding the newest checkpoint of earlier attempts: the reference trainer's and by pattern."""

import json
import os

import pytest

from coordinator.trainer.checkpoints import RINGRIFT_CHECKPOINT_PATTERN, checkpoint_pattern_problems, newest_checkpoint


def _touch(path, mtime=None, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _reference(job, attempt, epoch, with_checkpoint=True):
    d = job / f"attempt-{attempt}"
    _touch(d / "checkpoint.json", text=json.dumps({"epoch": epoch}))
    if with_checkpoint:
        _touch(d / "checkpoint.pt")


def test_reference_trainer_checkpoints_as_today(tmp_path):
    assert newest_checkpoint(tmp_path / "none") == (None, 0)
    _reference(tmp_path, 1, 3)
    _reference(tmp_path, 2, 5, with_checkpoint=False)  # the info file without its checkpoint
    _reference(tmp_path, 3, 0)  # no completed epoch
    _touch(tmp_path / "attempt-4" / "checkpoint.json", text="{half")
    assert newest_checkpoint(tmp_path) == (str(tmp_path / "attempt-1" / "checkpoint.pt"), 3)


def test_ringrift_names_highest_epoch_first(tmp_path):
    _touch(tmp_path / "attempt-1" / "checkpoint_epoch_5.pth")
    _touch(tmp_path / "attempt-1" / "checkpoint_epoch_10.pth")
    _touch(tmp_path / "attempt-2" / "checkpoint_emergency_epoch_12.pth")
    _touch(tmp_path / "attempt-2" / "checkpoint_epoch_15.pth.tmp")  # half-written
    _touch(tmp_path / "attempt-2" / "checkpoint_emergency_epoch_0.pth")
    _touch(tmp_path / "attempt-2" / "model.pth")
    _touch(tmp_path / "other" / "checkpoint_epoch_99.pth")  # not an attempt directory
    found = newest_checkpoint(tmp_path, RINGRIFT_CHECKPOINT_PATTERN)
    assert found == (str(tmp_path / "attempt-2" / "checkpoint_emergency_epoch_12.pth"), 12)
    _touch(tmp_path / "attempt-3" / "checkpoint_final_epoch_20.pth")
    assert newest_checkpoint(tmp_path, RINGRIFT_CHECKPOINT_PATTERN)[1] == 20


def test_equal_epochs_take_the_newest_file(tmp_path):
    _touch(tmp_path / "attempt-1" / "checkpoint_epoch_4.pth", mtime=2000)
    _touch(tmp_path / "attempt-2" / "checkpoint_emergency_epoch_4.pth", mtime=1000)
    assert newest_checkpoint(tmp_path, RINGRIFT_CHECKPOINT_PATTERN)[0].endswith("attempt-1/checkpoint_epoch_4.pth")


def test_a_pattern_with_a_directory_and_no_match(tmp_path):
    _touch(tmp_path / "attempt-1" / "ckpt" / "e7.pt")
    assert newest_checkpoint(tmp_path, "ckpt/e{epoch}.pt") == (str(tmp_path / "attempt-1" / "ckpt" / "e7.pt"), 7)
    assert newest_checkpoint(tmp_path, "e{epoch}.pt") == (None, 0)
    assert newest_checkpoint(tmp_path, "ckpt/e?{epoch}.pt") == (None, 0)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("checkpoint_*.pth", "exactly one {epoch}"), ("/abs/{epoch}.pt", "relative"),
     ("../x/{epoch}.pt", "relative"), ("c*/e{epoch}.pt", "wildcards only in the file name")],
)
def test_bad_patterns_are_named(tmp_path, pattern, message):
    assert any(message in p for p in checkpoint_pattern_problems(pattern))
    _touch(tmp_path / "attempt-1" / "x")
    with pytest.raises(ValueError, match=message):
        newest_checkpoint(tmp_path, pattern)
