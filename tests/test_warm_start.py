"""Issue 25 item 4: a warm start that cannot load. Models of another trainer command are not
offered; an attempt that fails loading its init weights is retried once from scratch, says so, and
is no failure for the breakers. The worker tests run real trainers under an RQ SimpleWorker on a
real redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator import TrainingOrchestrator
from coordinator.core.keys import Keys
from coordinator.trainer.npz_data import write_synthetic_npz
from coordinator.trainer.warm_start import (
    INIT_WEIGHTS_EXIT,
    command_fingerprint,
    init_weights_failure,
    offered_models,
    published_entry,
)
from tests.support.burst import work
from tests.support.streams import stream_events

STUB = ("{python}", "-m", "workers.stub_train")
REFERENCE = ("{python}", "-m", "workers.train")
KEYS = Keys("ringrift")
NODE = "gpu-node-1"


# -- telling a load failure from any other ------------------------------------------------------------
@pytest.mark.parametrize("returncode, progressed, tail, resumed, expected", [
    (INIT_WEIGHTS_EXIT, False, "train.py: cannot load --init-weights /m/a.pt: boom\n", False,
     "train.py: cannot load --init-weights /m/a.pt: boom"),
    (1, False, "Traceback ...\n_pickle.UnpicklingError: invalid load key, '{'.\n", False,
     "_pickle.UnpicklingError: invalid load key, '{'."),
    (1, False, "ERROR - Could not read /m/a.pt: truncated\n", True, "ERROR - Could not read /m/a.pt: truncated"),
    (1, False, "_pickle.UnpicklingError: invalid load key\n", True, None),  # the checkpoint may be the bad file
    (1, True, "_pickle.UnpicklingError: invalid load key\n", False, None),  # it trained an epoch first
    (1, False, "init weights: 10 of 10 tensors from /m/a.pt\nCUDA out of memory\n", False, None),
    (0, False, "", False, None),
])
def test_a_load_failure_is_told_by_exit_status_or_stderr(returncode, progressed, tail, resumed, expected):
    assert init_weights_failure("/m/a.pt", returncode, progressed, tail, resumed) == expected
    assert init_weights_failure(None, returncode, progressed, tail, resumed) is None  # none given: never


def test_only_models_of_the_same_command_are_offered():
    mine, other = command_fingerprint(REFERENCE), command_fingerprint(STUB)
    entries = [published_entry("/m/3.pt", other), published_entry("/m/2.pt", mine), "/m/1.pt"]
    assert offered_models(entries, mine) == (["/m/2.pt", "/m/1.pt"], 1)  # a bare (older) entry: unknown
    assert mine != command_fingerprint((*REFERENCE, "--model-version", "v3"))


def test_the_reference_trainer_exits_66_naming_a_file_it_cannot_load(tmp_path):
    npz = write_synthetic_npz(tmp_path / "hex8_2p.npz", "hex8", 2, samples=64)
    stub_model = tmp_path / "model.pt"
    stub_model.write_text(json.dumps({"stub": True}))  # what the stub trainer publishes
    run = subprocess.run([sys.executable, "-m", "workers.train", "--board-type", "hex8", "--num-players", "2",
                          "--data", str(npz), "--output-dir", str(tmp_path / "out"), "--epochs", "1",
                          "--init-weights", str(stub_model)], capture_output=True, text=True, timeout=120)
    assert run.returncode == INIT_WEIGHTS_EXIT, run.stderr
    assert f"cannot load --init-weights {stub_model}: UnpicklingError" in run.stderr
    assert "Traceback" not in run.stderr


# -- through the worker --------------------------------------------------------------------------------
@pytest.fixture
def npz(tmp_path):
    return write_synthetic_npz(tmp_path / "data" / "hex8_2p.npz", "hex8", 2, samples=128)


def run_job(conn, settings, npz: Path) -> tuple[TrainingOrchestrator, str]:
    """Submit a job for hex8_2p with `settings` and run what RQ has queued on one SimpleWorker."""
    orch = TrainingOrchestrator(settings, conn, consumer_name="t")
    job_id = orch.submit_training_sync("hex8", 2, str(npz), samples=10, epochs=1)
    work(conn)
    return orch, job_id


def of_job(conn, job_id: str, event_type: str):
    return [e for e in stream_events(conn, event_type) if e.fields["job_id"] == job_id]


def test_a_model_of_another_trainer_command_is_not_offered(real_conn, make_settings, npz, monkeypatch):
    """The issue's case: `training.command` switched from the stub to the reference trainer."""
    monkeypatch.setenv("RINGRIFT_NODE", NODE)
    orch, stub_job = run_job(real_conn, make_settings(command=STUB), npz)
    stub_model = orch.jobs.get(stub_job)["model_path"]
    [entry] = [e.decode() for e in real_conn.lrange(KEYS.models("hex8_2p"), 0, -1)]
    assert json.loads(entry) == {"model": stub_model, "command": command_fingerprint(STUB)}

    orch, job_id = run_job(real_conn, make_settings(command=REFERENCE), npz)
    record = orch.jobs.get(job_id)
    assert (record["warm_start_from"], record["warm_start_skipped"]) == ("[]", "1")
    assert record["state"] == "complete", record.get("error")
    [started] = of_job(real_conn, job_id, "TRAINING_STARTED")
    assert started.fields["init_weights"] == "" and record["parent_model"] == ""
    assert not of_job(real_conn, job_id, "TRAINING_FAILED")


def test_an_init_weights_load_failure_is_retried_once_from_scratch(real_conn, make_settings, npz, monkeypatch):
    """Same command, unreadable model (a truncated file): attempt 1 fails loading it, attempt 2 trains
    from scratch; neither the breakers nor the job's failure counts hear of it."""
    monkeypatch.setenv("RINGRIFT_NODE", NODE)
    settings = make_settings(command=REFERENCE)
    orch, first = run_job(real_conn, settings, npz)
    parent = Path(orch.jobs.get(first)["model_path"])
    parent.write_bytes(parent.read_bytes()[:100])  # half a file, as a full disk leaves it

    orch, job_id = run_job(real_conn, settings, npz)
    record = orch.jobs.get(job_id)
    assert (record["state"], record["reason"], record["failure_class"]) == (
        "retrying", "init_weights_failed", "warm_start"), record.get("error")
    assert record["init_weights_failed"] == str(parent)
    assert f"cannot load --init-weights {parent}" in record["warm_start_dropped"]
    assert not any(k.startswith("failures_") for k in record)  # no retry of any class used up
    for breaker in (KEYS.breaker("node", NODE), KEYS.breaker("config", "hex8_2p")):  # as job 1's success left it
        assert (real_conn.hget(breaker, "failures"), real_conn.hget(breaker, "last_failure_at")) == (b"0", None)
    [failed] = of_job(real_conn, job_id, "TRAINING_FAILED")
    assert (failed.fields["will_retry"], failed.fields["retry_in_s"]) == ("true", "0.0")

    assert orch.jobs.requeue_delayed(settings, job_id)  # due at once (the orchestrator's tick does this)
    work(real_conn)
    record = orch.jobs.get(job_id)
    assert (record["state"], record["attempts"], record["parent_model"]) == ("complete", "2", "")
    first_try, retry = of_job(real_conn, job_id, "TRAINING_STARTED")
    assert first_try.fields["init_weights"] == str(parent) and "warm_start_dropped" not in first_try.fields
    assert retry.fields["init_weights"] == "" and retry.fields["warm_start_dropped"] == record["warm_start_dropped"]
