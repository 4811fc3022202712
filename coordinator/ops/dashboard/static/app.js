// The RingRift training dashboard: polls api/page every POLL_MS and redraws the five panels.
// Charts: uPlot (vendored beside this file). No other library, nothing fetched from elsewhere.
"use strict";
const POLL_MS = 2000;
// One colour per factor of coordinator/scheduling/scheduler.py FACTORS (tests/test_dashboard_drawn.py
// fails when one is missing: a factor without a colour draws an invisible segment).
const FACTOR_COLORS = { curriculum: "#4e79a7", staleness: "#f28e2b", freshness: "#59a14f", elo_velocity: "#b07aa1",
                        value_per_gpu_hour: "#edc948" };
const BAR_PX = 240;  // the longest bar (the highest sum of contributions)
const STDERR_LINES = 12;  // the trouble panel shows a failure's last lines: the error is at the end
const MIN_BAR_PX = 6;  // a timeline bar is never narrower: a one-minute attempt in a day is a pixel
const params = new URLSearchParams(location.search);
const token = params.get("token");
const charts = {};  // job id -> uPlot of a running job
let eloChart = null, eloKey = "";

function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  return fetch(path, { headers, cache: "no-store" }).then(r => r.ok ? r.json() : Promise.reject(r.status));
}
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") e.onclick = v; else if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}
function color(key) {
  let h = 0;
  for (const ch of key) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360}, 60%, 48%)`;
}
const fmt = (x, d = 3) => x == null || x === "" ? "-" : Number(x).toFixed(d);
const dur = s => s == null ? "-" : s >= 3600 ? (s / 3600).toFixed(1) + " h" : s >= 60 ? (s / 60).toFixed(1) + " min" : s.toFixed(0) + " s";
const when = t => t ? new Date(t * 1000).toLocaleString() : "-";

const curveData = curve => [curve.map(p => p[0]), curve.map(p => p[1]), curve.map(p => p[2])];
function lossRange(u, min, max) {  // a span around the losses, so the axis has several ticks even for one point
  if (min == null || max == null) return [0, 1];
  const pad = max > min ? 0.1 * (max - min) : Math.max(0.05 * Math.abs(max), 0.05);
  return [Math.max(0, min - pad), max + pad];
}
function showLatest(u) {  // the legend shows the newest epoch's values while the cursor is not on the chart
  if (u.cursor.idx == null && u.data[0].length && u.legend.idx !== u.data[0].length - 1) u.setLegend({ idx: u.data[0].length - 1 });
}
// A loss chart over the whole run (epoch 1 to `epochs`), not only the epochs done so far.
function lossChart(target, curve, epochs, width, height) {
  const last = () => Math.max(epochs, ...curve.map(p => p[0]), 2);
  const u = new uPlot({
    width, height, legend: { show: true }, hooks: { setLegend: [showLatest], ready: [showLatest] },
    scales: { x: { time: false, range: () => [1, last()] }, y: { range: lossRange } },
    axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] }, { label: "loss", size: 60 }],
    series: [{ label: "epoch" }, { label: "train", stroke: "#4e79a7", width: 2, points: { show: true } },
             { label: "val", stroke: "#e15759", width: 2, points: { show: true } }],
  }, curveData(curve), target);
  u.update = next => { curve = next; u.setData(curveData(next)); showLatest(u); };
  return u;
}
const panelWidth = box => Math.max(300, box.clientWidth - 8);
window.addEventListener("resize", () => {
  const box = document.getElementById("running");
  for (const u of Object.values(charts)) u.setSize({ width: panelWidth(box), height: u.height });
});

const factorColor = f => FACTOR_COLORS[f] || color(f);  // a factor added later still draws
function renderConfigs(page) {
  const legend = document.getElementById("legend");
  legend.replaceChildren(...page.factors.flatMap(f => [el("span", { class: "swatch", style: `background:${factorColor(f)}` }), f]));
  const max = Math.max(1e-9, ...page.configs.map(c => Object.values(c.contributions).reduce((a, b) => a + b, 0)));
  const rows = page.configs.map(c => {
    // Segment widths in pixels: every bar on one scale, its length the sum of its contributions (the score).
    const bar = el("div", { class: "bar", style: `width:${BAR_PX}px`, title: page.factors.map(f => `${f} ${c.contributions[f]}`).join(", ") },
      ...page.factors.map(f => el("span", { "data-factor": f,
                                            style: `width:${BAR_PX * c.contributions[f] / max}px;background:${factorColor(f)}` })));
    const notes = [...c.why, ...c.flags].join("; ") || "eligible";
    return el("tr", { class: "clickable" + (c.eligible ? "" : " ineligible"), "data-config": c.config_key,
                      "data-rank": c.rank == null ? "" : c.rank, "data-eligible": c.eligible ? "1" : "0",
                      onclick: () => openConfig(c.config_key) },
      el("td", {}, c.rank == null ? "-" : c.rank), el("td", {}, c.config_key), el("td", {}, fmt(c.score)),
      el("td", {}, bar), el("td", { class: "wrap" }, notes),
      el("td", { title: c.latest_model || "" }, c.latest_model ? c.latest_model.split("/").slice(-3).join("/") : "-"),
      el("td", {}, `${c.trained_data_version || "-"} / ${c.data_version || "-"}`));
  });
  document.querySelector("#configs tbody").replaceChildren(...rows);
}

function renderRunning(page) {
  const box = document.getElementById("running");
  const seen = new Set();
  for (const j of page.running) {
    seen.add(j.job_id);
    let card = box.querySelector(`[data-job="${CSS.escape(j.job_id)}"]`);
    if (!card) {
      card = el("div", { class: "job", "data-job": j.job_id }, el("div", { class: "meta" }), el("div", { class: "chart" }));
      box.append(card);
    }
    const chart = card.querySelector(".chart");
    card.setAttribute("data-points", j.curve.length);
    card.querySelector(".meta").replaceChildren(
      el("b", {}, j.config_key), ` ${j.job_id} · epoch ${j.epoch}/${j.epochs} · ETA ${dur(j.eta_s)} · node ${j.node}`
      + ` · attempt ${j.attempt}` + (j.resumed_epoch ? ` (resumed at epoch ${j.resumed_epoch})` : "") + ` · fence ${j.fence}`);
    if (charts[j.job_id]) charts[j.job_id].update(j.curve);
    else if (j.curve.length) { chart.replaceChildren(); charts[j.job_id] = lossChart(chart, j.curve, j.epochs, panelWidth(box), 200); }
    else chart.replaceChildren(el("p", { class: "empty" }, `waiting for the first epoch (0 of ${j.epochs || "?"} done`
      + `, running ${dur(j.elapsed_s)})`));
  }
  for (const card of [...box.children]) {
    const id = card.getAttribute("data-job");
    if (!seen.has(id)) { charts[id] && charts[id].destroy(); delete charts[id]; card.remove(); }
  }
  if (!page.running.length && !box.querySelector(".idle")) box.append(el("p", { class: "idle" }, "no training running"));
  if (page.running.length) box.querySelectorAll(".idle").forEach(e => e.remove());
  document.querySelector("#jobs tbody").replaceChildren(...page.jobs.map(j =>
    el("tr", { class: "clickable", "data-job": j.job_id, onclick: () => openJob(j.job_id) },
      el("td", {}, j.job_id), el("td", { class: j.state === "failed" ? "bad" : j.state === "complete" ? "ok" : "" }, j.state),
      el("td", {}, j.node), el("td", {}, j.attempt), el("td", {}, `${j.epoch}/${j.epochs}`),
      el("td", {}, fmt(j.final_loss || j.train_loss)), el("td", { class: "wrap" }, j.reason))));
}

function eloData(configs, points) {
  const xs = [...new Set(configs.flatMap(c => points[c].map(p => p[0])))].sort((a, b) => a - b);
  return [xs, ...configs.map(c => { const m = new Map(points[c]); return xs.map(x => m.has(x) ? m.get(x) : null); })];
}
function trainingMarks(marks) {  // a uPlot plugin: one dashed vertical line per published model
  return { hooks: { draw: u => {
    const ctx = u.ctx; ctx.save(); ctx.setLineDash([4, 4]); ctx.lineWidth = 1;
    for (const [key, list] of Object.entries(marks)) for (const t of list) {
      const x = u.valToPos(t.at, "x", true);
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
      ctx.strokeStyle = color(key); ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
    }
    ctx.restore();
  } } };
}
function eloChartFor(target, configs, points, marks, width) {
  return new uPlot({
    width, height: 220, plugins: [trainingMarks(marks)], axes: [{}, { label: "Elo" }],
    scales: { x: { time: true, range: (u, min, max) => {  // trainings after the last evaluation stay in view
      const ats = Object.values(marks).flat().map(t => t.at);
      return [Math.min(min, ...ats), Math.max(max, ...ats) + 60];
    } } },
    series: [{}, ...configs.map(c => ({ label: c, stroke: color(c), width: 2, spanGaps: true, points: { show: true } }))],
  }, eloData(configs, points), target);
}
function renderElo(page) {
  const box = document.getElementById("elo");
  const e = page.elo;
  box.setAttribute("data-configs", e.configs.join(","));
  if (!e.configs.length) { eloChart && eloChart.destroy(); eloChart = null; eloKey = "";
    box.replaceChildren(el("p", {}, "no EVALUATION_COMPLETED yet")); return; }
  const key = e.configs.join(",") + JSON.stringify(e.trainings);
  if (eloChart && key === eloKey) { eloChart.setData(eloData(e.configs, e.points)); return; }
  eloChart && eloChart.destroy(); box.replaceChildren(); eloKey = key;
  eloChart = eloChartFor(box, e.configs, e.points, e.trainings, Math.max(400, box.clientWidth - 10));
}

const isFailure = b => ["failed", "retried", "stale"].includes(b.state) || b.reason === "lease_lost";
// The bars of each lane as drawn blocks, left to right: none narrower than MIN_BAR_PX or its label, none
// over the one before it; failures that would overlap are one block with their count ("✕6": six attempts).
function timelineBlocks(bars, laneCount, x, ctx) {
  const blocks = [], ends = new Array(laneCount).fill(-Infinity);
  for (const b of bars) {
    let k = blocks.findLast(prev => prev.lane === b.lane);
    if (k && isFailure(b) && k.failure && x(b.start) < ends[b.lane] + MIN_BAR_PX) {
      k.count += 1; k.x1 = Math.max(k.x1, x(b.end)); k.states.add(b.state);
    } else {
      k = { lane: b.lane, x0: Math.max(x(b.start), ends[b.lane] + 1), x1: x(b.end), count: 1, failure: isFailure(b),
            attempts: b.attempts, config_key: b.config_key, states: new Set([b.state]) };
      blocks.push(k);
    }
    k.label = (k.count === 1 && k.attempts > 1 ? `#${k.attempts} ` : "") + (k.failure ? "✕" + (k.count > 1 ? k.count : "") : "");
    k.x1 = Math.max(k.x1, k.x0 + MIN_BAR_PX, k.x0 + (k.label ? ctx.measureText(k.label).width + 4 : 0));
    ends[b.lane] = k.x1;
  }
  return blocks;
}
function drawBlock(ctx, k, rowH) {
  const y = k.lane * rowH + 2, w = k.x1 - k.x0;
  ctx.globalAlpha = k.states.has("retried") && k.states.size === 1 ? 0.45 : 1; ctx.fillStyle = color(k.config_key);
  ctx.fillRect(k.x0, y, w, rowH - 4); ctx.globalAlpha = 1;
  if (k.failure) { ctx.strokeStyle = "#b00"; ctx.lineWidth = 2; ctx.strokeRect(k.x0, y, w, rowH - 4); }
  if (k.label) { ctx.fillStyle = k.failure ? "#b00" : "#000"; ctx.fillText(k.label, k.x0 + 2, y + 11); }
}
function renderTimeline(page) {
  const t = page.timeline, canvas = document.getElementById("timeline");
  const lanes = [];  // one per GPU slot: {node, busyUntil}
  for (const n of t.nodes) for (let g = 0; g < Math.max(1, n.gpus); g++) {
    const slot = (n.slot_gpus || [])[g], gpu = slot ? slot[1] : n.gpu;  // each lane's GPU: its worker slot's, else the node's
    lanes.push({ node: n.node, status: n.status, gpu: gpu && gpu !== "unknown" ? gpu.split(",")[0] : "", ends: [] });
  }
  const laneOf = {}; t.nodes.forEach(n => laneOf[n.node] = lanes.filter(l => l.node === n.node));
  const bars = t.bars.map(b => Object.fromEntries(t.fields.map((f, i) => [f, b[i]]))).sort((a, b) => a.start - b.start);
  for (const b of bars) {
    let own = laneOf[b.node];
    if (!own) { own = laneOf[b.node] = [{ node: b.node, status: "unknown", ends: [] }]; lanes.push(own[0]); }
    const lane = own.find(l => !l.ends.length || l.ends[l.ends.length - 1] <= b.start) || own[0];
    lane.ends.push(b.end); b.lane = lanes.indexOf(lane);
  }
  const rowH = 18, left = lanes.some(l => l.gpu) ? 200 : 110, width = canvas.clientWidth || 1300;
  canvas.width = width; canvas.height = Math.max(40, lanes.length * rowH + 24);
  canvas.setAttribute("data-bars", bars.length);
  const ctx = canvas.getContext("2d"), span = t.until - t.since, x = s => left + (width - left - 10) * (s - t.since) / span;
  ctx.clearRect(0, 0, canvas.width, canvas.height); ctx.font = "11px system-ui";
  lanes.forEach((l, i) => { ctx.fillStyle = l.status === "down" ? "#b00" : "#333";
    ctx.fillText(`${l.node}${l.gpu ? " · " + l.gpu.slice(0, 16) : ""}${l.status === "down" ? " (down)" : ""}`, 4, i * rowH + 13);
    ctx.fillStyle = "#f3f3f3"; ctx.fillRect(left, i * rowH + 2, width - left - 10, rowH - 4); });
  for (const block of timelineBlocks(bars, lanes.length, x, ctx)) drawBlock(ctx, block, rowH);
  ctx.fillStyle = "#555"; const y = lanes.length * rowH + 16;
  for (let i = 0; i <= 6; i++) {  // each label inside the canvas: the last one ends at the right edge
    const s = t.since + span * i / 6, label = new Date(s * 1000).toLocaleTimeString(), w = ctx.measureText(label).width;
    ctx.fillText(label, Math.min(Math.max(0, x(s) - w / 2), width - w - 2), y);
  }
  const configs = [...new Set(bars.map(b => b.config_key))].slice(0, 30);
  document.getElementById("timeline-legend").replaceChildren(...configs.flatMap(c => [el("span", { class: "swatch", style: `background:${color(c)}` }), c]),
    " · red outline ✕: failed, retried (faded), fenced or preempted; ✕n: n such attempts too short to draw apart; #n: attempt n");
}

const lastLines = text => text.replace(/\s+$/, "").split("\n").slice(-STDERR_LINES).join("\n");
function renderTrouble(page) {
  const t = page.trouble, q = page.queue;
  const lag = t.consumer_groups.map(g => `${g.name}: lag ${g.lag ?? "?"}, pending ${g.pending}, ${g.consumers} consumer(s)`).join("; ");
  document.getElementById("trouble").replaceChildren(
    el("p", {}, `queue ${q.depth}, delayed ${q.delayed} · consumer groups: ${lag || "none"} · nodes down: ${t.nodes_down.join(", ") || "none"}`),
    el("h3", {}, `Open circuit breakers (${t.breakers.length})`),
    el("ul", { id: "breakers" }, ...t.breakers.map(b => el("li", {}, `${b.kind} ${b.name}: ${b.why}`))),
    el("h3", {}, `Recent failures (${t.failures.length})`),
    el("div", { id: "failures" }, ...t.failures.slice(0, 10).map(f => el("div", {},
      el("b", { class: "bad" }, `${when(f.at)} ${f.config_key} ${f.job_id} attempt ${f.attempt} on ${f.node}: ${f.reason}`),
      ` ${f.error} ${f.will_retry === "true" ? "(will retry)" : ""}`, f.stderr_tail ? el("pre", { class: "stderr" }, lastLines(f.stderr_tail)) : ""))),
    el("h3", {}, `Dead letters (${t.dead_letters.length})`),
    el("table", { id: "dead" }, ...t.dead_letters.map(d => el("tr", {}, el("td", {}, d.id), el("td", {}, d.type),
      el("td", { class: "wrap" }, d.reason)))));
  document.querySelectorAll("#failures pre").forEach(pre => { pre.scrollTop = pre.scrollHeight; });  // the end shows
}

function showDetail(title, ...children) {
  document.getElementById("detail-panel").hidden = false;
  document.getElementById("detail-title").textContent = title;
  document.getElementById("detail").replaceChildren(...children);
}
function showJob(id) {
  api("api/job/" + encodeURIComponent(id)).then(j => {
    const chart = el("div", { "data-points": j.curve.length, class: "chart" });
    showDetail(`job ${j.job_id} (${j.state})`, el("p", {}, `${j.config_key} · node ${j.node} · attempt ${j.attempt} · epoch ${j.epoch}/${j.epochs}`
      + ` · final loss ${fmt(j.final_loss)} · ${j.reason} ${j.error}`), chart);
    if (j.curve.length) lossChart(chart, j.curve, j.epochs, panelWidth(document.getElementById("detail")), 240);
    else chart.append(el("p", { class: "empty" }, "no epochs on the stream for this job"));
    document.getElementById("detail-panel").scrollIntoView();
  }).catch(e => showDetail(`job ${id}`, el("p", { class: "bad" }, `cannot load it: ${e}`)));
}
function showConfig(key) {
  api("api/config/" + encodeURIComponent(key)).then(c => {
    const chart = el("div", {});
    const s = c.stored;
    showDetail(`config ${key}`, el("p", {}, `score ${fmt(s.score)} · ${s.why || "eligible"} · model ${s.latest_model || "-"}`
      + ` · data v${s.data_version || "-"} (trained on v${s.trained_data_version || "-"})`), chart,
      el("table", {}, ...c.jobs.map(j => el("tr", { class: "clickable", onclick: () => openJob(j.job_id) },
        el("td", {}, j.job_id), el("td", {}, j.state), el("td", {}, j.node), el("td", {}, fmt(j.final_loss))))));
    if (c.elo.length) eloChartFor(chart, [key], { [key]: c.elo }, { [key]: c.trainings }, 700);
    else chart.append("no evaluations yet");
  });
}

// A job's or a config's detail has an address (#job=<id>, #config=<key>): a finished job's curves can be linked.
const openJob = id => { location.hash = "job=" + encodeURIComponent(id); };
const openConfig = key => { location.hash = "config=" + encodeURIComponent(key); };
function showFromHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.get("job")) showJob(h.get("job")); else if (h.get("config")) showConfig(h.get("config"));
}
window.addEventListener("hashchange", showFromHash);

function render(page) {
  document.getElementById("summary").textContent = `${page.configs.length} configs · ${page.running.length} running · `
    + `queue ${page.queue.depth} · updated ${new Date(page.at * 1000).toLocaleTimeString()}`;
  renderConfigs(page); renderRunning(page); renderElo(page); renderTimeline(page); renderTrouble(page);
  document.body.setAttribute("data-updated", page.at);
}
function poll() {
  api("api/page").then(render).catch(e => { document.getElementById("summary").textContent = "error: " + e; })
    .finally(() => setTimeout(poll, POLL_MS));
}
poll();
showFromHash();
