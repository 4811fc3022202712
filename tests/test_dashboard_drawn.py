"""What the dashboard draws, asked of a real headless Chromium over the DevTools protocol
(tests/support/chromium_cdp.py): the priority bars' coloured lengths, the loss charts' axes and legends,
the GPU timeline's bars and labels, the trouble panel's stderr, and a job opened by its address.
The cluster is written by the orchestrator on a real redis-server (tests/test_dashboard.py covers
the data and the server; this file covers the page)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from coordinator.core.keys import Keys
from coordinator.ops.dashboard.server import serve_in_thread
from coordinator.ops.local_redis import free_port
from coordinator.scheduling.scheduler import FACTORS
from coordinator.service.orchestrator import TrainingOrchestrator
from tests.support.chromium_cdp import chromium
from tests.support.jobs import end_job, take_job
from tests.support.polling import get_json, wait_for
from tests.support.tools import require

pytestmark = pytest.mark.integration

APP_JS = Path(__file__).parent.parent / "coordinator" / "ops" / "dashboard" / "static" / "app.js"
CLUMP = 6  # one-minute attempts of one job, retried one after the other
STDERR = "\n".join([f"  File \"train.py\", line {n}, in step" for n in range(60)]
                   + ["RuntimeError: CUDA out of memory (the line that says what went wrong)"])


def test_every_factor_has_a_colour():
    """A factor without an entry in FACTOR_COLORS draws a segment nobody sees (the bar looks short)."""
    palette = re.search(r"const FACTOR_COLORS = \{(.*?)\};", APP_JS.read_text(), re.S)
    assert palette, "app.js defines FACTOR_COLORS"
    colours = dict(re.findall(r"(\w+): \"(#[0-9a-f]{6})\"", palette[1]))
    assert set(FACTORS) <= set(colours), f"no colour for {set(FACTORS) - set(colours)}"
    assert len(set(colours.values())) == len(colours)  # told apart


def _failed_event(conn, keys: Keys, at_ms: int, job_id: str, config_key: str, node: str, duration_s: float,
                  will_retry: bool, stderr: str = "") -> None:
    conn.xadd(keys.events, {"type": "TRAINING_FAILED", "job_id": job_id, "config_key": config_key, "node": node,
                            "attempt": "1", "reason": "trainer_error", "error": "trainer exited with status 1",
                            "will_retry": "true" if will_retry else "false", "duration_s": str(duration_s),
                            "stderr_tail": stderr}, id=f"{at_ms}-0")


@pytest.fixture
def cluster(redis_server, real_conn, make_settings, tmp_path):
    """A day on the cluster: attempts that failed earlier (one long, six of a minute in a row, one with a
    long traceback), then, as the orchestrator: a job running at epoch 2 of 3, one at epoch 0, a
    finished one, and configs waiting with every factor scored. Returns the dashboard's address."""
    settings = replace(make_settings(redis_server.url), hosts={"node-a": 2, "node-b": 1})
    settings = replace(settings, scheduler=replace(settings.scheduler, prefetch=0))
    keys = Keys(settings.redis.prefix)
    now_ms = int(float("{}.{:06d}".format(*real_conn.time())) * 1000)
    # The stream's past, before the orchestrator's group exists (it starts after them: nothing to act on).
    _failed_event(real_conn, keys, now_ms - 1_800_000, "square8_4p-long", "square8_4p", "node-b", 8 * 3600, True)
    for k in range(CLUMP):
        _failed_event(real_conn, keys, now_ms - 1_200_000 + k * 61_000, "hex8_3p-clump", "hex8_3p", "node-a", 60,
                      True)
    _failed_event(real_conn, keys, now_ms - 600_000, "hex8_4p-oom", "hex8_4p", "node-b", 30, False, STDERR)
    real_conn.xgroup_create(keys.events, settings.events.group, id="$")
    orch = TrainingOrchestrator(settings, real_conn, consumer_name="t")
    orch.prepare()
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"stub")
    configs = ("hex8_2p", "square8_3p", "hexagonal_4p", "square19_2p", "hexagonal_2p")
    for config_key in configs:
        real_conn.xadd(keys.events, {"type": "NPZ_EXPORT_COMPLETE", "config_key": config_key,
                                     "npz_path": str(npz), "samples": "5000"})
    while orch.process_once(block_ms=None):
        pass
    # Three slots, no prefetch: three configs get a job (the best ranked), two wait, eligible.
    jobs = [(c, orch.jobs.active_job(c)) for c in configs if orch.jobs.active_job(c)]
    (hot, running), (done_config, done), (cold, starting) = jobs
    take_job(orch, running, hot, node="node-a")
    for epoch in (1, 2):
        orch.jobs.progress(running, hot, {"epoch": epoch, "total_epochs": 3, "train_loss": 1.0 / epoch,
                                          "val_loss": 1.2 / epoch})
    take_job(orch, done, done_config, node="node-b")
    for epoch in (1, 2, 3):
        orch.jobs.progress(done, done_config, {"epoch": epoch, "total_epochs": 3, "train_loss": 1.0 / epoch,
                                               "val_loss": 1.1 / epoch})
    end_job(orch.jobs, done, done_config)
    take_job(orch, starting, cold, node="node-a")
    orch.scheduler.rescore()
    port = free_port()
    serve_in_thread(settings, port)
    return {"address": f"http://127.0.0.1:{port}/", "running": running, "done": done, "starting": starting,
            "conn": real_conn, "keys": keys}


def _browser():
    return chromium(require("chromium"))


BARS = """[...document.querySelectorAll("#configs tbody tr")].map(tr => ({
  config: tr.dataset.config, eligible: tr.dataset.eligible === "1", score: Number(tr.children[2].textContent),
  bar: tr.querySelector(".bar").getBoundingClientRect().width,
  drawn: [...tr.querySelectorAll(".bar span")].filter(s => getComputedStyle(s).backgroundColor !== "rgba(0, 0, 0, 0)")
           .reduce((sum, s) => sum + s.getBoundingClientRect().width, 0),
  sums: [...tr.querySelectorAll(".bar span")].length }))"""


def test_priority_bars_are_as_long_as_the_scores(cluster):
    """Each eligible config's coloured segments, measured as laid out, add up to its score (on the
    scale where the longest bar fills the bar's box), every factor's segment included."""
    page = _api_page(cluster)
    waiting = [c for c in page["configs"] if c["eligible"]]
    assert len(waiting) == 2 and all(c["contributions"]["value_per_gpu_hour"] > 0 for c in waiting)
    longest = max(sum(c["contributions"].values()) for c in page["configs"])
    with _browser() as browser:
        browser.open(cluster["address"])
        rows = browser.wait(f"(() => {{ const r = {BARS}; return r.length === 5 && r; }})()")
    by_config = {r["config"]: r for r in rows}
    for c in waiting:
        row = by_config[c["config_key"]]
        assert row["sums"] == len(FACTORS)
        assert row["drawn"] == pytest.approx(row["bar"] * c["score"] / longest, abs=1.0), row


def _api_page(cluster) -> dict:
    return wait_for(lambda: get_json(cluster["address"] + "api/page"), timeout_s=20)



def _drawn(browser, canvas: str) -> list[dict]:
    return browser.evaluate(f"({canvas}).__drawn")


def _ticks(drawn: list[dict], align: str) -> list[float]:
    """uPlot's tick labels: the x axis's centred under it, the y axis's right-aligned beside it."""
    return [float(d["args"][0]) for d in drawn if d["op"] == "fillText" and d["align"] == align
            and re.fullmatch(r"-?[\d.]+", d["args"][0])]


def test_loss_charts_span_the_run_and_read_without_hovering(cluster):
    card = f'document.querySelector(\'[data-job="{cluster["running"]}"]\')'
    with _browser() as browser:
        browser.open(cluster["address"])
        browser.wait(f"{card} && {card}.querySelector('canvas') && {card}.querySelector('canvas').__drawn")
        drawn = _drawn(browser, f"{card}.querySelector('canvas')")
        assert _ticks(drawn, "center") == [1, 2, 3]  # epochs 1..3 though only 2 are done
        assert len(_ticks(drawn, "right")) >= 2  # a loss scale, not one lone tick
        # The legend shows the newest epoch's values with no cursor on the chart.
        legend = browser.evaluate(f"[...{card}.querySelectorAll('.u-legend .u-value')].map(e => e.textContent)")
        assert legend == ["2", "0.5", "0.6"]
        chart, panel = browser.evaluate(f"[{card}.querySelector('canvas').getBoundingClientRect().width, "
                                        "document.getElementById('running').getBoundingClientRect().width]")
        assert chart >= panel - 30  # the panel's width, not a fixed 420 px
        # A job at epoch 0 says so rather than drawing empty axes.
        starting = f'document.querySelector(\'[data-job="{cluster["starting"]}"]\')'
        assert browser.evaluate(f"{starting}.querySelector('canvas') === null")
        assert "waiting for the first epoch (0 of 3 done" in browser.evaluate(f"{starting}.textContent")


def test_timeline_draws_short_attempts_apart_and_every_label_whole(cluster):
    with _browser() as browser:
        browser.open(cluster["address"])
        drawn = browser.wait("(() => { const d = document.getElementById('timeline').__drawn;"
                             " return d && d.some(x => x.fill === '#555555') && d; })()")
    width = drawn[0]["canvasWidth"]
    bars = [d for d in drawn if d["op"] == "fillRect" and d["fill"] != "#f3f3f3"]
    texts = [d for d in drawn if d["op"] == "fillText"]
    for lane in {b["args"][1] for b in bars}:  # a lane's bars (and their labels) side by side, none over another
        row = sorted((b["args"][0], b["args"][0] + b["args"][2]) for b in bars if b["args"][1] == lane)
        assert all(x1 - x0 >= 6 for x0, x1 in row), row
        assert all(a[1] <= b[0] for a, b in zip(row, row[1:])), row
        labels = sorted((t["args"][1], t["args"][1] + t["width"]) for t in texts if lane < t["args"][2] < lane + 14)
        assert all(a[1] <= b[0] for a, b in zip(labels, labels[1:])), labels
    assert any(t["args"][0] == f"✕{CLUMP}" for t in texts)  # the six one-minute attempts, counted
    times = [t for t in texts if t["fill"] == "#555555"]
    assert len(times) == 7 and all(0 <= t["args"][1] and t["args"][1] + t["width"] <= width for t in times), times


def test_trouble_panel_shows_the_end_of_stderr(cluster):
    failure = "[...document.querySelectorAll('#failures > div')].find(d => d.textContent.includes('hex8_4p-oom'))"
    with _browser() as browser:
        browser.open(cluster["address"])
        browser.wait(f"{failure} && {failure}.querySelector('pre')")
        text, top, height, scroll = browser.evaluate(
            f"(() => {{ const pre = {failure}.querySelector('pre'); "
            "return [pre.textContent, pre.scrollTop, pre.clientHeight, pre.scrollHeight]; })()")
    assert text.splitlines()[-1] == STDERR.splitlines()[-1]
    assert top + height >= scroll - 1  # the last line is in view, not the traceback's top


def test_a_finished_job_opens_from_its_address(cluster):
    with _browser() as browser:
        browser.open(f"{cluster['address']}#job={cluster['done']}")
        title = browser.wait("!document.getElementById('detail-panel').hidden"
                             " && document.querySelector('#detail canvas') && document.getElementById('detail-title')"
                             ".textContent")
        assert title == f"job {cluster['done']} (complete)"
        assert _ticks(_drawn(browser, "document.querySelector('#detail canvas')"), "center") == [1, 2, 3]
        # A click on a job in the list gives it an address too (and opens it).
        browser.wait(f"document.querySelector('#jobs tr[data-job=\"{cluster['running']}\"]')")
        browser.evaluate(f"document.querySelector('#jobs tr[data-job=\"{cluster['running']}\"]').click()")
        assert browser.wait(f"document.getElementById('detail-title').textContent.includes('{cluster['running']}')"
                            " && location.hash") == f"#job={cluster['running']}"
