"""End to end on a real redis-server: `ringrift-train run` + real `rq worker training` processes.

Events are sent the way exporters send them: `redis-cli XADD` with plain string fields.
"""

from __future__ import annotations

from itertools import combinations

import pytest

from coordinator.stores.jobs import JobStore
from coordinator.trainer.npz_data import write_synthetic_npz
from tests.support.exports import xadd_like_an_exporter
from tests.support.gated_train import hold, release
from tests.support.polling import wait_for
from tests.support.races import GATED_STUB, wait_until_handled
from tests.support.streams import stream_events
from workers.train import load_model

pytestmark = pytest.mark.integration


def test_exporter_xadd_trains_a_model_end_to_end(redis_server, real_conn, service, rq_workers, tmp_path):
    npz = write_synthetic_npz(tmp_path / "data" / "hex8_2p.npz", "hex8", 2, samples=512)
    service(["{python}", "-m", "workers.train"], epochs=4)
    rq_workers(1)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "board_type", "hex8", "num_players", "2",
                          "npz_path", str(npz), "samples", "512")
    [done] = wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=180)
    types = [e.type for e in stream_events(real_conn) if e.type.startswith("TRAINING")]
    assert types == ["TRAINING_STARTED"] + ["TRAINING_PROGRESS"] * 4 + ["TRAINING_COMPLETE"]
    started = stream_events(real_conn, "TRAINING_STARTED")[0]
    assert started.fields["node"] == "node-0" and started.fields["worker"] == "test-worker-0"
    first_epoch = stream_events(real_conn, "TRAINING_PROGRESS")[0]
    assert float(done.fields["final_loss"]) < float(first_epoch.fields["train_loss"])
    model = load_model(done.fields["model_path"])
    assert model.config["policy_size"] == 4500
    record = JobStore(real_conn, _keys()).get(done.fields["job_id"])
    assert record["state"] == "complete" and record["model_path"] == done.fields["model_path"]
    assert real_conn.hget("ringrift:config:hex8_2p", "latest_model").decode() == done.fields["model_path"]
    assert real_conn.xpending("ringrift:events", "orchestrator")["pending"] == 0


def test_corrupt_npz_ends_in_training_failed_with_stderr(redis_server, real_conn, service, rq_workers, tmp_path):
    bad = tmp_path / "square8_2p.npz"
    bad.write_bytes(b"this is not an npz")
    service(["{python}", "-m", "workers.train"])
    rq_workers(1)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", "square8_2p",
                          "output_path", str(bad), "samples_exported", "10")
    [failed] = wait_for(lambda: stream_events(real_conn, "TRAINING_FAILED"), timeout_s=120)
    # The worker's check catches it before the trainer (and its GPU) starts: poison, never retried.
    assert failed.fields["error"].endswith("not an NPZ (zip) file")
    assert (failed.fields["reason"], failed.fields["failure_class"], failed.fields["will_retry"]) == (
        "bad_input", "poison", "false")
    assert not stream_events(real_conn, "TRAINING_PROGRESS")


def test_malformed_event_is_dead_lettered_and_service_keeps_going(redis_server, real_conn, service, rq_workers,
                                                                  tmp_path):
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"stub")
    service(["{python}", "-m", "workers.stub_train"])
    rq_workers(1)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "board_type", "hex8", "num_players", "7",
                          "npz_path", str(npz))
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "board_type", "hex8", "num_players", "3",
                          "npz_path", str(npz), "samples", "100")
    wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=60)
    [(_, dead)] = real_conn.xrange("ringrift:events:dead")
    assert dead[b"num_players"] == b"7" and b"num_players must be 2..4" in dead[b"dead_reason"]


def test_two_workers_many_exports_one_training_per_config_at_a_time(redis_server, real_conn, service, rq_workers,
                                                                     tmp_path):
    """hex8_2p's first training is held running while its newer exports arrive and the other
    worker is free: it trains again only once the first has ended."""
    service(GATED_STUB, epochs=3)
    rq_workers(2)
    configs = [("hex8", "2"), ("square8", "3"), ("square19", "4")]
    store = JobStore(real_conn, _keys())

    def export(version: int) -> None:
        for board, players in configs:
            npz = tmp_path / f"{board}_{players}p_v{version}.npz"
            npz.write_bytes(b"stub")
            xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "board_type", board,
                                  "num_players", players, "npz_path", str(npz), "samples", str(version * 100))

    def settled(config_keys: list[str]):
        """Every job of these configs complete, the newest of each on the v3 export."""
        jobs = [j for j in store.list(100) if j["config_key"] in config_keys]
        newest = {j["config_key"]: j for j in sorted(jobs, key=lambda j: float(j["created_at"]))}
        done = all(j["state"] == "complete" for j in jobs) and len(newest) == len(config_keys)
        return done and all(j["npz_path"].endswith("_v3.npz") for j in newest.values()) and jobs

    held = tmp_path / "hex8_2p_v1.npz"
    hold(held, 1)  # hex8_2p's first training pauses after its first epoch
    export(1)
    wait_for(lambda: [j for j in store.list(100) if j["npz_path"] == str(held) and j.get("epoch") == "1"
                      and j["state"] == "running"], timeout_s=60)
    export(2)
    export(3)
    # The other worker trains the other two configs to their newest export, hex8_2p's newer
    # exports waiting all along: no second hex8_2p training while the first runs.
    wait_for(lambda: settled(["square8_3p", "square19_4p"]), timeout_s=120)
    hex8_runs = [j for j in store.list(100) if j["config_key"] == "hex8_2p"]
    assert [(j["npz_path"], j["state"]) for j in hex8_runs] == [(str(held), "running")]
    release(held)
    jobs = wait_for(lambda: settled([f"{b}_{p}p" for b, p in configs]), timeout_s=120)
    runs = {f"{b}_{p}p": sorted((float(j["started_at"]), float(j["finished_at"])) for j in jobs
                                if j["config_key"] == f"{b}_{p}p") for b, p in configs}
    assert len(runs["hex8_2p"]) == 2 and all(1 <= len(r) <= 3 for r in runs.values())
    for config_runs in runs.values():  # every pair of a config's trainings, not only neighbours
        assert all(a_end <= b_start or b_end <= a_start
                   for (a_start, a_end), (b_start, b_end) in combinations(config_runs, 2))
    nodes = {e.fields["node"] for e in stream_events(real_conn, "TRAINING_STARTED")}
    assert nodes == {"node-0", "node-1"}


def _keys():
    from coordinator.core.keys import Keys

    return Keys("ringrift")


def test_priority_decides_what_the_one_free_gpu_trains_next(redis_server, real_conn, service, rq_workers, tmp_path):
    """One GPU, busy; three configs wait; they start in curriculum-weight order on a real worker."""
    first, npz = tmp_path / "first.npz", tmp_path / "x.npz"
    for path in (first, npz):
        path.write_bytes(b"stub")
    service(GATED_STUB, epochs=2, hosts={"gpu-node": 1}, scheduler={"prefetch": 0})
    rq_workers(1)
    hold(first, 1)  # the GPU stays busy until every event below has been handled
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", "hexagonal_2p",
                          "npz_path", str(first), "samples", "10")
    wait_for(lambda: stream_events(real_conn, "TRAINING_STARTED"), timeout_s=30)  # the GPU is now busy
    xadd_like_an_exporter(redis_server, "type", "CURRICULUM_WEIGHTS_UPDATED", "hex8_2p", "0.5",
                          "square8_2p", "1.0", "square19_2p", "1.5")
    for config_key in ("hex8_2p", "square8_2p", "square19_2p"):
        xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", config_key,
                              "npz_path", str(npz), "samples", "1000")
    wait_until_handled(real_conn)
    assert len(stream_events(real_conn, "TRAINING_STARTED")) == 1  # nothing else could start yet
    release(first)
    wait_for(lambda: len(stream_events(real_conn, "TRAINING_COMPLETE")) == 4, timeout_s=60)
    order = [e.fields["config_key"] for e in stream_events(real_conn, "TRAINING_STARTED")]
    assert order == ["hexagonal_2p", "square19_2p", "square8_2p", "hex8_2p"]


def test_next_config_is_one_command_at_any_number_of_configs(real_conn):
    from coordinator.core.keys import Keys
    from coordinator.core.settings import SchedulerSettings
    from coordinator.scheduling.scheduler import TrainingScheduler

    scheduler = TrainingScheduler(real_conn, Keys("ringrift"), SchedulerSettings())
    boards = ("hex8", "square8", "square19", "hexagonal")
    keys = [f"{boards[i % 4]}_{2 + i % 3}p" for i in range(12)] + [f"hex8_{i}_2p" for i in range(988)]
    with real_conn.pipeline(transaction=False) as pipe:
        for i, key in enumerate(keys):
            pipe.hset(f"ringrift:config:{key}", mapping={"new_samples": 100 + i, "exported_at": 1.8e9})
        pipe.execute()
    scheduler.configs.set_curriculum_weights(dict.fromkeys(keys, 1.0))
    assert scheduler.rescore() == 1000
    before = int(real_conn.info("stats")["total_commands_processed"])
    best = scheduler.get_next_training_config()
    after = int(real_conn.info("stats")["total_commands_processed"])
    assert after - before == 2  # ZREVRANGEBYSCORE, and the INFO that measured it
    assert best == max(keys, key=lambda k: (real_conn.zscore("ringrift:training:priority", k), k))


def test_priorities_command_explains_the_ranking(redis_server, real_conn, make_settings):
    import json
    import subprocess

    from coordinator import TrainingOrchestrator
    from tests.support.tools import console_script

    orch = TrainingOrchestrator(make_settings(redis_server.url), real_conn, consumer_name="t")
    orch.prepare()
    real_conn.xadd("ringrift:events", {"type": "CURRICULUM_WEIGHTS_UPDATED", "hex8_2p": "1.5", "square8_2p": "0"})
    for key in ("hex8_2p", "square8_2p"):
        real_conn.xadd("ringrift:events", {"type": "NPZ_EXPORT_COMPLETE", "config_key": key,
                                           "npz_path": "/d/x.npz", "samples": "500"})
    real_conn.xadd("ringrift:events", {"type": "NPZ_EXPORT_COMPLETE", "config_key": "square19_2p",
                                       "npz_path": "/d/x.npz", "samples": "0"})
    orch.process_once(block_ms=None)
    env = {"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([console_script("ringrift-train"), "priorities", "--json"], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    ranking = {p["config_key"]: p for p in json.loads(out)}
    assert ranking["hex8_2p"]["why"] == [f"queued or running ({orch.jobs.active_job('hex8_2p')})"]
    assert ranking["square8_2p"]["why"] == ["curriculum weight 0"]
    assert ranking["square19_2p"]["why"] == ["0 new samples < minimum 1"]
    table = subprocess.run([console_script("ringrift-train"), "priorities", "--weights", "square8_2p=1"],
                           env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=60,
                           check=True).stdout
    assert "square8_2p" in table and "eligible" in table


def test_demo_command_runs_end_to_end(tmp_path):
    """The README's first command (after the install): embedded Redis, two real workers, three configs,
    then a second export of one config, warm-started from its first model."""
    import subprocess

    from tests.support.tools import console_script

    proc = subprocess.run([console_script("ringrift-train"), "demo", "--epochs", "2", "--output", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("complete") >= 3 and "training priorities" in proc.stdout
    assert proc.stdout.count("complete") >= 4
    models = sorted((tmp_path / "models" / "hex8_2p").glob("*/attempt-1/model.pt"), key=lambda p: p.stat().st_mtime)
    assert len(list((tmp_path / "models").glob("*/*/attempt-1/model.pt"))) == 4 and len(models) == 2
    # The second round of hex8_2p starts from the first's model, and the summary says so.
    first_job = models[0].parent.parent.name
    assert f"model of {first_job}" in proc.stdout  # ids are printed whole (the other commands take them)


def test_a_cold_stop_takes_the_running_trainer_down_with_the_worker(redis_server, real_conn, service, rq_workers,
                                                                    tmp_path):
    """stop_workers(cold=True), as test teardown uses it: the second SIGTERM (after RQ's 1 s window
    for duplicates) is RQ's cold shutdown: the work horse is killed and its trainer gets its death
    signal, instead of the worker waiting for a 60 s training to finish."""
    import psutil

    from coordinator.ops.workers_pool import stop_workers

    npz = tmp_path / "x.npz"
    npz.write_bytes(b"stub")
    service(["{python}", "-m", "workers.stub_train", "--epoch-seconds", "20"], epochs=3)
    [worker] = rq_workers(1)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", "hex8_2p",
                          "npz_path", str(npz), "samples", "100")
    wait_for(lambda: stream_events(real_conn, "TRAINING_STARTED"), timeout_s=30)
    trainers = wait_for(lambda: [p for p in psutil.Process(worker.pid).children(recursive=True)
                                 if "workers.stub_train" in p.cmdline()], timeout_s=10)
    stop_workers([worker], cold=True)
    assert worker.returncode is not None
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in trainers), timeout_s=10)
    assert "cold shut down" in (tmp_path / "worker-0.log").read_text()
    assert not stream_events(real_conn, "TRAINING_COMPLETE")
