"""The reference trainer on real (synthetic) NPZ files."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from coordinator.trainer.command import STOPPED_EXIT
from coordinator.trainer.npz_data import BadTrainingData, load_training_data, write_synthetic_npz
from workers.train import load_model, main, parse_args, train


def _args(npz, out, *extra, board="hex8", players="2", epochs="4"):
    return parse_args(["--board-type", board, "--num-players", players, "--data", str(npz),
                       "--output-dir", str(out), "--epochs", epochs, "--batch-size", "64", *extra])


@pytest.fixture(scope="module")
def hex8_npz(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "hex8_2p.npz", "hex8", 2, samples=384)


def test_training_lowers_the_loss_and_writes_a_loadable_model(hex8_npz, tmp_path):
    metrics = train(_args(hex8_npz, tmp_path))
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert metrics["final_loss"] < history[0]["train_loss"]
    assert metrics["epochs_completed"] == 4 and metrics["device"] in ("cpu", "cuda")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["model_path"] == str((tmp_path / "model.pt").resolve())
    model = load_model(saved["model_path"])
    data = load_training_data(hex8_npz, "hex8")
    logits, values = model(torch.from_numpy(data.features[:5]), torch.from_numpy(data.globals[:5]))
    assert logits.shape == (5, 4500) and values.shape == (5, 4)
    assert torch.all(values.abs() <= 1)


def test_resume_continues_from_the_last_epoch(hex8_npz, tmp_path):
    train(_args(hex8_npz, tmp_path, epochs="2"))
    metrics = train(_args(hex8_npz, tmp_path, "--resume", epochs="3"))
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]  # one new epoch, history kept
    assert metrics["epochs_completed"] == 3


def test_a_resume_into_a_new_directory_brings_the_best_model(hex8_npz, tmp_path):
    first = train(_args(hex8_npz, tmp_path / "attempt-1", epochs="2"))
    # Stopped after its last epoch's checkpoint: the next attempt trains no epoch that could write
    # a model of its own, and must still end with the best one.
    metrics = train(_args(hex8_npz, tmp_path / "attempt-2", "--resume", first["checkpoint_path"], epochs="2"))
    assert metrics["epochs_completed"] == 2 and Path(metrics["model_path"]).is_file()
    assert load_model(metrics["model_path"]).config == load_model(first["model_path"]).config


def test_init_weights_starts_from_a_previous_model(hex8_npz, tmp_path):
    first = train(_args(hex8_npz, tmp_path / "a", epochs="3"))
    fresh = train(_args(hex8_npz, tmp_path / "b", epochs="1"))
    warm = train(_args(hex8_npz, tmp_path / "c", "--init-weights", first["model_path"], epochs="1"))
    assert warm["history"][0]["train_loss"] < fresh["history"][0]["train_loss"]


def test_early_stopping_honours_patience(hex8_npz, tmp_path):
    # A learning rate this high makes validation worse at once: stop after `patience` bad epochs.
    metrics = train(_args(hex8_npz, tmp_path, "--patience", "1", "--learning-rate", "5.0", epochs="30"))
    assert metrics["early_stopped"] and metrics["epochs_completed"] < 30


def test_channels_come_from_the_data(tmp_path):
    npz = write_synthetic_npz(tmp_path / "hex8_3p.npz", "hex8", 3, samples=64, channels=64)
    metrics = train(_args(npz, tmp_path / "out", board="hex8", players="3", epochs="1"))
    assert metrics["channels"] == 64
    assert load_model(metrics["model_path"]).config["in_channels"] == 64


def test_scalar_values_without_values_mp(tmp_path):
    src = write_synthetic_npz(tmp_path / "s.npz", "square8", 2, samples=64)
    with np.load(src, allow_pickle=True) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in ("values_mp", "num_players")}
    np.savez_compressed(tmp_path / "plain.npz", **arrays)
    data = load_training_data(tmp_path / "plain.npz", "square8")
    assert data.value_mask[:, 0].all() and not data.value_mask[:, 1:].any()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.pop("policy_values"), "missing required arrays: policy_values"),
        (lambda a: a.update(globals=a["globals"][:, :5]), "globals must be"),
        (lambda a: a.update(features=a["features"][:, :, :5, :5]), "features must be"),
    ],
)
def test_bad_data_is_rejected_with_the_reason(tmp_path, mutate, message):
    src = write_synthetic_npz(tmp_path / "s.npz", "hex8", 2, samples=16)
    with np.load(src, allow_pickle=True) as npz:
        arrays = {k: npz[k] for k in npz.files}
    mutate(arrays)
    np.savez_compressed(tmp_path / "bad.npz", **arrays)
    with pytest.raises(BadTrainingData, match=message):
        load_training_data(tmp_path / "bad.npz", "hex8")


def test_wrong_board_for_the_data_exits_2_with_a_message(hex8_npz, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "workers.train", "--board-type", "square19", "--num-players", "2",
         "--data", str(hex8_npz), "--output-dir", str(tmp_path), "--epochs", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "features must be (N>0, C, 19, 19) for square19" in proc.stderr


def test_corrupt_file_is_bad_input(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    assert main(["--board-type", "hex8", "--num-players", "2", "--data", str(tmp_path / "junk.npz"),
                 "--output-dir", str(tmp_path / "o")]) == 2


def test_init_weights_loads_the_tensors_that_fit(hex8_npz, tmp_path):
    other = write_synthetic_npz(tmp_path / "hex8_64ch.npz", "hex8", 2, samples=64, channels=64)
    donor = train(_args(other, tmp_path / "donor", epochs="1"))
    warm = train(_args(hex8_npz, tmp_path / "warm", "--init-weights", donor["model_path"], epochs="1"))
    assert warm["init_weights"] == donor["model_path"]
    # Only the stem's first convolution depends on the channels: everything else is taken.
    assert warm["init_tensors_total"] - warm["init_tensors_loaded"] == 1
    donor_model, warm_model = load_model(donor["model_path"]), torch.load(
        tmp_path / "warm" / "checkpoint.pt", weights_only=False)
    assert donor_model.stem[0].weight.shape != warm_model["model"]["stem.0.weight"].shape
    fresh = train(_args(hex8_npz, tmp_path / "fresh", epochs="1"))
    assert fresh["init_weights"] is None


def test_a_stop_mid_epoch_saves_a_checkpoint_and_writes_no_metrics(hex8_npz, tmp_path):
    calls = []

    def stop_in_epoch_2() -> bool:  # about 7 batches an epoch here (345 rows at 64, then validation)
        calls.append(1)
        return len(calls) > 10

    stopped = train(_args(hex8_npz, tmp_path, epochs="4"), stop_in_epoch_2)
    assert stopped["stopped"] and stopped["epoch"] == 1
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 1
    assert not (tmp_path / "metrics.json").exists()
    resumed = train(_args(hex8_npz, tmp_path, "--resume", epochs="2"))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def _wait_for_first_line_then_sigterm(argv):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, json.loads(first), stderr


def test_sigterm_stops_the_reference_trainer_with_a_checkpoint(hex8_npz, tmp_path):
    returncode, first, stderr = _wait_for_first_line_then_sigterm(
        [sys.executable, "-m", "workers.train", "--board-type", "hex8", "--num-players", "2", "--data", str(hex8_npz),
         "--output-dir", str(tmp_path), "--epochs", "1000", "--batch-size", "16"])
    assert returncode == STOPPED_EXIT, stderr
    assert first["epoch"] == 1 and "checkpoint saved" in stderr
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] >= 1
    assert not (tmp_path / "metrics.json").exists()


def test_sigterm_stops_the_stub_trainer_with_its_checkpoint(tmp_path, npz):
    returncode, first, stderr = _wait_for_first_line_then_sigterm(
        [sys.executable, "-m", "workers.stub_train", "--data", str(npz), "--output-dir", str(tmp_path / "o"),
         "--epochs", "1000", "--epoch-seconds", "0.2"])
    assert returncode == STOPPED_EXIT and first["epoch"] == 1 and "stopped during epoch" in stderr
    assert json.loads((tmp_path / "o" / "checkpoint.json").read_text())["epoch"] >= 1
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_the_stub_trainer_records_its_init_weights(tmp_path, npz):
    from workers.stub_train import main as stub_main

    assert stub_main(["--data", str(npz), "--output-dir", str(tmp_path), "--init-weights", "/m/parent.pt"]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["init_weights"] == "/m/parent.pt"
    assert json.loads((tmp_path / "model.pt").read_text())["init_weights"] == "/m/parent.pt"
