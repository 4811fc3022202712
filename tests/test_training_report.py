"""Issue 25 item 9: what a training reports. An early-stopped run publishes its best-validation
model, so TRAINING_COMPLETE and the record carry `best_val_loss`, `best_epoch` and `early_stopped`
beside `final_loss` (the last epoch's training loss), and `jobs` and the dashboard show them. The
RingRift stand-in prints RingRift's own lines (its summary's `loss` is the best validation loss);
it runs under a real `rq worker training` on a real redis-server."""

from __future__ import annotations

import json

from coordinator import TrainingOrchestrator
from coordinator.ops.dashboard.data import DashboardData
from coordinator.trainer.checkpoints import RINGRIFT_CHECKPOINT_PATTERN
from coordinator.trainer.npz_data import write_synthetic_npz
from coordinator.trainer.output import RINGRIFT_PROGRESS, RINGRIFT_SUMMARY, OutputParser, result_figures
from tests.support.polling import wait_for
from tests.support.streams import stream_events
from workers import ringrift_stand_in
from workers.train import parse_args, train


def test_ringrift_early_stopping_line_and_summary_fill_the_report(tmp_path):
    parser = OutputParser(RINGRIFT_PROGRESS, RINGRIFT_SUMMARY)
    log = "2026-12-07 10:00:00,000 - app.training.train - INFO - "
    for epoch, val in ((1, 1.05), (2, 0.7), (3, 0.71), (4, 0.72)):
        parser.feed(f"{log}Epoch [{epoch}/10], Train Loss: {2.0 / (epoch + 1):.4f}, Val Loss: {val:.4f}")
    parser.feed(f"{log}Early stopping triggered at epoch 4 (best loss: 0.7000)")
    parser.feed("TRAINING_SUMMARY: loss=0.7000 samples=5 games=1 epochs=10")
    assert parser.summary == {"early_stopped": True, "best_val_loss": 0.7, "samples": 5, "games": 1,
                              "total_epochs": 10}  # the two lines add up
    history = [{"epoch": e, "total_epochs": 10, "train_loss": 2.0 / (e + 1), "val_loss": v}
               for e, v in ((1, 1.05), (2, 0.7), (3, 0.71), (4, 0.72))]
    figures = result_figures(tmp_path, parser.summary, history, tmp_path / "m.pth")
    assert (figures["final_loss"], figures["best_val_loss"], figures["best_epoch"]) == (0.4, 0.7, 2)
    assert (figures["epochs_completed"], figures["early_stopped"]) == (4, True)
    # Without the early-stopping line: fewer epochs than asked still says it.
    assert result_figures(tmp_path, {"total_epochs": 10}, history, tmp_path / "m.pth")["early_stopped"] is True


def test_the_reference_trainer_reports_its_best_epoch(tmp_path):
    npz = write_synthetic_npz(tmp_path / "hex8_2p.npz", "hex8", 2, samples=128)
    metrics = train(parse_args(["--board-type", "hex8", "--num-players", "2", "--data", str(npz),
                                "--output-dir", str(tmp_path / "out"), "--epochs", "3", "--batch-size", "64"]))
    best = min(metrics["history"], key=lambda h: h["val_loss"])
    assert metrics["best_epoch"] == best["epoch"]
    assert round(metrics["best_val_loss"], 6) == best["val_loss"]
    assert metrics["early_stopped"] is (metrics["epochs_completed"] < 3)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["best_epoch"] == best["epoch"]


def test_an_early_stopped_ringrift_run_reports_its_best_epoch_everywhere(redis_server, real_conn, make_settings,
                                                                        rq_workers, tmp_path, monkeypatch, capsys):
    npz = tmp_path / "hex8_2p.npz"
    npz.write_bytes(b"x" * 100)
    command = [*ringrift_stand_in.COMMAND, "--overfit-after", "2"]  # val loss rises after epoch 2
    settings = make_settings(redis_server.url, command=command, progress_patterns=RINGRIFT_PROGRESS,
                             summary_pattern=RINGRIFT_SUMMARY, checkpoint_pattern=RINGRIFT_CHECKPOINT_PATTERN)
    orch = TrainingOrchestrator(settings, real_conn, consumer_name="t")
    job_id = orch.submit_training_sync("hex8", 2, str(npz), samples=7, epochs=10, early_stopping_patience=2)
    rq_workers(1)
    record = wait_for(lambda: orch.jobs.get(job_id)["state"] in ("complete", "failed") and orch.jobs.get(job_id),
                      timeout_s=60)
    assert record["state"] == "complete", record.get("error")
    [done] = [e for e in stream_events(real_conn, "TRAINING_COMPLETE") if e.fields["job_id"] == job_id]
    for fields in (done.fields, record):  # stopped at 4 of 10; the model is epoch 2's (val 2.1/3)
        assert (fields["epochs_completed"], fields["final_loss"]) == ("4", "0.4")
        assert (fields["best_val_loss"], fields["best_epoch"], fields["early_stopped"]) == ("0.7", "2", "true")

    from coordinator.ops import cli

    monkeypatch.setattr(cli, "connect", lambda _url: real_conn)
    assert cli.main(["jobs"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    [row] = [r.split() for r in rows if r.startswith(job_id)]
    columns = header.split()
    assert columns[5:10] == ["final", "loss", "best", "val", "best@"] and columns[10] == "early"
    assert row[5:9] == ["0.4000", "0.7000", "2", "yes"]

    [shown] = [j for j in DashboardData(real_conn, settings).page()["jobs"] if j["job_id"] == job_id]
    assert (shown["final_loss"], shown["best_val_loss"], shown["best_epoch"], shown["early_stopped"]) == (
        "0.4", "0.7", "2", True)
