"""The RQ job on one in-process SimpleWorker (fakeredis); the trainer is a real subprocess."""

import json
import sys
from pathlib import Path

import pytest
from rq import Queue, SimpleWorker
from rq.job import Job

from coordinator import TrainingOrchestrator
from coordinator.core.keys import TRAINING_QUEUE
from coordinator.trainer.command import attempt_paths, build_argv, record_values
from tests.support.processes import alive
from tests.support.streams import stream_events
from tests.support.trainers import STUB_TRAINER, stub_trainer, write_npz


def run_one_job(conn, make_settings, tmp_path, command=STUB_TRAINER, create_npz=True, **training):
    npz = tmp_path / "hex8_2p.npz"
    if create_npz:  # not an NPZ: the check_npz test and the real trainer's bad-input test rely on that
        npz.write_bytes(b"stub data")
    orch = TrainingOrchestrator(make_settings(command=command, **training), conn, consumer_name="t")
    job_id = orch.submit_training_sync("hex8", 2, str(npz), samples=10)
    queue = Queue(TRAINING_QUEUE, connection=conn)
    SimpleWorker([queue], connection=conn).work(burst=True)
    return orch.jobs.get(job_id), stream_events(conn)


def test_job_runs_to_complete_with_progress_events(fake_conn, make_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("RINGRIFT_NODE", "gpu-node-7")
    record, events = run_one_job(fake_conn, make_settings, tmp_path)
    assert record["state"] == "complete"
    assert [e.type for e in events] == ["TRAINING_STARTED"] + ["TRAINING_PROGRESS"] * 3 + ["TRAINING_COMPLETE"]
    started, *progress, complete = events
    assert started.fields["node"] == "gpu-node-7" and started.fields["attempt"] == "1"
    assert [p.fields["epoch"] for p in progress] == ["1", "2", "3"]
    assert progress[-1].fields["total_epochs"] == "3"
    assert complete.fields["model_path"] == record["model_path"]
    assert float(complete.fields["final_loss"]) < float(complete.fields["first_loss"])
    assert [h["epoch"] for h in complete.payload["history"]] == [1, 2, 3]
    assert record["epoch"] == "3" and record["node"] == "gpu-node-7"
    assert fake_conn.hget("ringrift:config:hex8_2p", "latest_model").decode() == record["model_path"]
    assert fake_conn.hget("ringrift:training:active", "hex8_2p") is None
    rq_job = Job.fetch(record["job_id"], connection=fake_conn)  # what `rq info` / rq-dashboard show
    assert rq_job.description == f"train hex8_2p from {record['npz_path']}, attempt 1"
    assert (rq_job.meta["epoch"], rq_job.meta["config_key"]) == (3, "hex8_2p")


def test_failing_trainer_becomes_training_failed_with_stderr_tail(fake_conn, make_settings, tmp_path):
    record, events = run_one_job(fake_conn, make_settings, tmp_path, command=stub_trainer("--fail-with", "3"))
    assert record["state"] == "retrying"  # a trainer failure is retried once by default
    failed = events[-1]
    assert failed.type == "TRAINING_FAILED"
    assert failed.fields["error"] == "trainer exited with status 3"
    assert "failing on purpose with status 3" in failed.fields["stderr_tail"]
    assert (failed.fields["reason"], failed.fields["failure_class"]) == ("trainer_error", "trainer")
    assert failed.fields["attempt"] == "1" and failed.fields["will_retry"] == "true"
    assert Queue(TRAINING_QUEUE, connection=fake_conn).failed_job_registry.count == 1


def test_missing_npz_fails_without_running_the_trainer(fake_conn, make_settings, tmp_path):
    record, events = run_one_job(fake_conn, make_settings, tmp_path, create_npz=False)
    assert record["state"] == "failed"  # poison input: never retried
    assert events[-1].fields["error"].startswith("npz_path not found")
    assert (events[-1].fields["failure_class"], events[-1].fields["will_retry"]) == ("poison", "false")
    assert not any(e.type == "TRAINING_PROGRESS" for e in events)


def test_a_bad_npz_is_caught_before_the_trainer_starts(fake_conn, make_settings, tmp_path):
    record, events = run_one_job(fake_conn, make_settings, tmp_path, check_npz=True)  # b"stub data": no zip
    assert (record["state"], record["reason"], record["failure_class"]) == ("failed", "bad_input", "poison")
    assert record["error"].endswith("not an NPZ (zip) file")
    assert not any(e.type == "TRAINING_PROGRESS" for e in events)


def test_the_trainers_stderr_tail_is_kept_when_it_rejects_its_input(fake_conn, make_settings, tmp_path):
    record, events = run_one_job(fake_conn, make_settings, tmp_path, command=("{python}", "-m", "workers.train"))
    assert (record["reason"], record["failure_class"]) == ("bad_input", "poison")
    assert "train.py: bad input" in events[-1].fields["stderr_tail"]


def test_trainer_past_its_timeout_is_stopped(fake_conn, make_settings, tmp_path):
    slow = stub_trainer("--epoch-seconds", "30")
    record, events = run_one_job(fake_conn, make_settings, tmp_path, command=slow, timeout_s=1)
    assert record["state"] == "retrying" and events[-1].fields["reason"] == "timeout"
    assert events[-1].fields["error"] == "trainer timed out after 1 s"
    assert float(record["duration_s"]) < 10


def test_argv_is_a_list_with_the_workers_python(fake_conn, make_settings, tmp_path):
    orch = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="t")
    job_id = orch.submit_training_sync("square19", 3, "/data/x y.npz", learning_rate=0.01)
    record = orch.jobs.get(job_id)
    argv = build_argv(json.loads(record["command"]), record_values(record, attempt_paths("/models/out", 1), 1))
    assert argv[:3] == [sys.executable, "-m", "workers.train"]
    pairs = dict(zip(argv[3::2], argv[4::2]))
    assert pairs["--data"] == "/data/x y.npz"  # one argument, no shell splitting
    assert pairs["--board-type"] == "square19" and pairs["--num-players"] == "3"
    assert pairs["--learning-rate"] == "0.01" and pairs["--epochs"] == "3"
    assert pairs["--output-dir"] == "/models/out/attempt-1"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
def test_trainer_dies_with_its_parent(tmp_path):
    """A trainer whose worker is SIGKILLed does not keep running (and keep a GPU)."""
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    child_code = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    (tmp_path / "child.py").write_text(child_code)
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys\nfrom workers.trainer_process import run_trainer\n"
        f"run_trainer([sys.executable, {str(tmp_path / 'child.py')!r}], 60, 1, print)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)])
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "child never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(child):
        assert time.monotonic() < deadline, "trainer outlived its killed parent"
        time.sleep(0.05)


def test_progress_lines_are_parsed_from_the_trainers_stdout(tmp_path):
    from workers.trainer_process import run_trainer

    seen = []
    lines = [json.dumps({"epoch": 1, "train_loss": 2.0}), "not json", json.dumps({"no_epoch": 1}), "{broken"]
    code = "import sys\n" + "".join(f"print({line!r})\n" for line in lines) + "sys.stderr.write('warn\\n')\n"
    result = run_trainer([sys.executable, "-c", code], 30, 1, seen.append)
    assert seen == [{"epoch": 1, "train_loss": 2.0}]
    assert result.returncode == 0 and not result.timed_out and result.stderr_tail == "warn\n"


def test_a_quality_block_without_until_holds_the_job_as_the_scheduler_would(fake_conn, make_settings, tmp_path):
    """No `until`: the block lasts quality_block_hours (the scheduler's rule, used by the worker too)."""
    import time

    from coordinator.scheduling.scheduler import ConfigInputs, compute_priority

    npz = write_npz(tmp_path / "hex8_2p.npz")
    settings = make_settings(command=STUB_TRAINER)
    orch = TrainingOrchestrator(settings, fake_conn, consumer_name="t")
    job_id = orch.submit_training_sync("hex8", 2, str(npz), samples=10)
    blocked_at = time.time()
    fake_conn.hset(orch.keys.config("hex8_2p"), mapping={"quality_blocked_at": blocked_at,
                                                         "exported_at": blocked_at - 1})
    SimpleWorker([Queue(TRAINING_QUEUE, connection=fake_conn)], connection=fake_conn).work(burst=True)
    record = orch.jobs.get(job_id)
    assert record["state"] == "queued" and "blocked by quality" in record["deferred_reason"]
    inputs = ConfigInputs("hex8_2p", new_samples=10, exported_at=blocked_at - 1, quality_blocked_at=blocked_at)
    assert any("blocked by quality" in why for why in compute_priority(inputs, settings.scheduler, blocked_at + 1).why)


def test_a_lost_release_and_a_lost_move_to_running_are_counted(fake_conn, make_settings, tmp_path, monkeypatch):
    from coordinator.core.keys import STAT_MARK_RUNNING_LOST, STAT_RELEASE_LOST
    from coordinator.stores.jobs import JobStore
    from coordinator.stores.leases import LeaseManager

    monkeypatch.setattr(LeaseManager, "release", lambda _self, _lease: False)  # expired or taken over
    monkeypatch.setattr(JobStore, "mark_running", lambda _self, _job_id, _config_key: False)
    record, _events = run_one_job(fake_conn, make_settings, tmp_path)
    stats = {k.decode(): int(v) for k, v in fake_conn.hgetall("ringrift:stats").items()}
    assert (stats[STAT_RELEASE_LOST], stats[STAT_MARK_RUNNING_LOST]) == (1, 1)


def test_training_worker_registers_its_node(fake_conn, monkeypatch):
    from coordinator.ops.status import WORKER_NODE_FIELD
    from workers.worker import TrainingWorker

    monkeypatch.setenv("RINGRIFT_NODE", "gpu-node-3")
    worker = TrainingWorker([Queue(TRAINING_QUEUE, connection=fake_conn)], connection=fake_conn, name="w1")
    worker.register_birth()
    assert fake_conn.hget(worker.key, WORKER_NODE_FIELD) == b"gpu-node-3"


def _two_rounds(conn, make_settings, tmp_path, between=lambda first: None, **training):
    first, _ = run_one_job(conn, make_settings, tmp_path, command=STUB_TRAINER, **training)
    between(first)
    second, events = run_one_job(conn, make_settings, tmp_path, command=STUB_TRAINER, **training)
    return first, second, [e for e in events if e.fields.get("job_id") == second["job_id"]]


def test_second_training_of_a_config_starts_from_the_firsts_model(fake_conn, make_settings, tmp_path):
    first, second, events = _two_rounds(fake_conn, make_settings, tmp_path)
    assert first["state"] == second["state"] == "complete"
    assert first["parent_model"] == ""  # a config's first training starts from scratch
    assert second["parent_model"] == first["model_path"]
    started, complete = events[0], events[-1]
    assert started.type == "TRAINING_STARTED" and started.fields["init_weights"] == first["model_path"]
    assert json.loads(Path(second["model_path"]).read_text())["init_weights"] == first["model_path"]
    assert complete.type == "TRAINING_COMPLETE"
    assert complete.fields["parent_model"] == first["model_path"]
    assert (complete.fields["data_version"], complete.fields["samples"]) == (second["data_version"], "10")
    for event in events:  # every lifecycle event names the board and players beside the config
        assert (event.fields["board_type"], event.fields["num_players"]) == ("hex8", "2"), event.type


def test_warm_start_falls_back_to_an_earlier_model_whose_file_exists(fake_conn, make_settings, tmp_path):
    first, second, _ = _two_rounds(fake_conn, make_settings, tmp_path)
    Path(second["model_path"]).unlink()  # the newest model is gone
    third, events = run_one_job(fake_conn, make_settings, tmp_path)
    assert third["parent_model"] == first["model_path"]
    for record in (first, third):
        Path(record["model_path"]).unlink()
    fourth, _ = run_one_job(fake_conn, make_settings, tmp_path)  # none left: from scratch
    assert fourth["state"] == "complete" and fourth["parent_model"] == ""


def test_warm_start_off_for_one_config(fake_conn, make_settings, tmp_path):
    from coordinator.core.settings import TrainerOverride

    _, second, events = _two_rounds(fake_conn, make_settings, tmp_path,
                                    per_config={"hex8_2p": TrainerOverride(warm_start=False)})
    assert second["parent_model"] == "" and events[0].fields["init_weights"] == ""


def test_exit_0_without_a_model_is_no_model(fake_conn, make_settings, tmp_path):
    record, events = run_one_job(fake_conn, make_settings, tmp_path, command=("{python}", "-c", "pass"))
    assert (record["reason"], record["failure_class"]) == ("no_model", "trainer")
    assert events[-1].fields["error"].endswith("attempt-1/model.pt")


def test_a_preempt_request_on_the_renewal_reply_ends_the_attempt_preempted(fake_conn, make_settings, tmp_path):
    """The request is read from the lease renewal's reply (TTL/3), the trainer is signalled and the
    attempt ends preempted: no retry, no failure, no breaker count."""
    import threading

    npz = write_npz(tmp_path / "hex8_2p.npz")
    settings = make_settings(command=stub_trainer("--epoch-seconds", "0.5"))
    orch = TrainingOrchestrator(settings, fake_conn, consumer_name="t")
    job_id = orch.submit_training_sync("hex8", 2, str(npz), samples=10, epochs=60)
    asked = threading.Timer(2.0, lambda: fake_conn.hset(orch.keys.job(job_id), "preempt_requested_at", "1"))
    asked.start()
    SimpleWorker([Queue(TRAINING_QUEUE, connection=fake_conn)], connection=fake_conn).work(burst=True)
    asked.join()
    record = orch.jobs.get(job_id)
    events = stream_events(fake_conn)
    assert record["state"] == "preempted" and record.get("preemptions") == "1"
    assert events[-1].type == "TRAINING_PREEMPTED" and events[-1].fields["board_type"] == "hex8"
    assert 1 <= int(events[-1].fields["epoch"]) < 60
    assert not any(e.type == "TRAINING_FAILED" for e in events)
    assert not fake_conn.exists(orch.keys.breaker("config", "hex8_2p"))


def test_jobs_command_shows_each_jobs_parent(fake_conn, make_settings, tmp_path, monkeypatch, capsys):
    from coordinator.ops import cli

    first, second, _ = _two_rounds(fake_conn, make_settings, tmp_path)
    monkeypatch.setattr(cli, "connect", lambda _url: fake_conn)
    assert cli.main(["jobs"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert f" {first['job_id']}/attempt-1/model.pt " in rows[second["job_id"]]
    assert rows[first["job_id"]].split()[9] == "-"  # parent: from scratch (after final loss, best val, best@, early)


def test_progress_is_one_command_and_stream_maxlen_0_trims_nothing(fake_conn, keys):
    from coordinator.stores.jobs import JobStore

    store = JobStore(fake_conn, keys, stream_maxlen=0)
    fake_conn.xadd(keys.events, {"type": "OTHER"})
    for epoch in (1, 2, 3):
        store.progress("j1", "hex8_2p", {"epoch": epoch, "train_loss": 1.0 / epoch}, ("rq:job:j1", b"meta"))
    assert fake_conn.xlen(keys.events) == 4
    assert fake_conn.hget(keys.job("j1"), "epoch") == b"3" and fake_conn.hget("rq:job:j1", "meta") == b"meta"
