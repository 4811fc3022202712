// The RingRift training dashboard: polls api/page every POLL_MS and redraws the five panels.
// Charts: uPlot (vendored beside this file). No other library, nothing fetched from elsewhere.
"use strict";
const POLL_MS = 2000;
const FACTOR_COLORS = { curriculum: "#4e79a7", staleness: "#f28e2b", freshness: "#59a14f", elo_velocity: "#b07aa1" };
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

function lossChart(target, curve, width, height) {
  const data = [curve.map(p => p[0]), curve.map(p => p[1]), curve.map(p => p[2])];
  return new uPlot({
    width, height, scales: { x: { time: false } }, legend: { show: true },
    axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] }, { label: "loss" }],
    series: [{ label: "epoch" }, { label: "train", stroke: "#4e79a7", width: 2, points: { show: true } },
             { label: "val", stroke: "#e15759", width: 2, points: { show: true } }],
  }, data, target);
}

function renderConfigs(page) {
  const legend = document.getElementById("legend");
  legend.replaceChildren(...page.factors.flatMap(f => [el("span", { class: "swatch", style: `background:${FACTOR_COLORS[f]}` }), f]));
  const max = Math.max(1e-9, ...page.configs.map(c => Object.values(c.contributions).reduce((a, b) => a + b, 0)));
  const rows = page.configs.map(c => {
    const bar = el("div", { class: "bar", title: page.factors.map(f => `${f} ${c.contributions[f]}`).join(", ") },
      ...page.factors.map(f => el("span", { style: `width:${100 * c.contributions[f] / max}%;background:${FACTOR_COLORS[f]}` })));
    const notes = [...c.why, ...c.flags].join("; ") || "eligible";
    return el("tr", { class: "clickable" + (c.eligible ? "" : " ineligible"), "data-config": c.config_key,
                      "data-rank": c.rank == null ? "" : c.rank, "data-eligible": c.eligible ? "1" : "0",
                      onclick: () => showConfig(c.config_key) },
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
    card.setAttribute("data-points", j.curve.length);
    card.querySelector(".meta").replaceChildren(
      el("b", {}, j.config_key), ` ${j.job_id} · epoch ${j.epoch}/${j.epochs} · ETA ${dur(j.eta_s)} · node ${j.node}`
      + ` · attempt ${j.attempt}` + (j.resumed_epoch ? ` (resumed at epoch ${j.resumed_epoch})` : "") + ` · fence ${j.fence}`);
    const data = [j.curve.map(p => p[0]), j.curve.map(p => p[1]), j.curve.map(p => p[2])];
    if (charts[j.job_id]) charts[j.job_id].setData(data);
    else charts[j.job_id] = lossChart(card.querySelector(".chart"), j.curve, 420, 180);
  }
  for (const card of [...box.children]) {
    const id = card.getAttribute("data-job");
    if (!seen.has(id)) { charts[id] && charts[id].destroy(); delete charts[id]; card.remove(); }
  }
  if (!page.running.length && !box.querySelector(".idle")) box.append(el("p", { class: "idle" }, "no training running"));
  if (page.running.length) box.querySelectorAll(".idle").forEach(e => e.remove());
  document.querySelector("#jobs tbody").replaceChildren(...page.jobs.map(j =>
    el("tr", { class: "clickable", "data-job": j.job_id, onclick: () => showJob(j.job_id) },
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

function renderTimeline(page) {
  const t = page.timeline, canvas = document.getElementById("timeline");
  const lanes = [];  // one per GPU slot: {node, busyUntil}
  for (const n of t.nodes) for (let g = 0; g < Math.max(1, n.gpus); g++) lanes.push({ node: n.node, status: n.status, ends: [] });
  const laneOf = {}; t.nodes.forEach(n => laneOf[n.node] = lanes.filter(l => l.node === n.node));
  const bars = t.bars.map(b => Object.fromEntries(t.fields.map((f, i) => [f, b[i]]))).sort((a, b) => a.start - b.start);
  for (const b of bars) {
    let own = laneOf[b.node];
    if (!own) { own = laneOf[b.node] = [{ node: b.node, status: "unknown", ends: [] }]; lanes.push(own[0]); }
    const lane = own.find(l => !l.ends.length || l.ends[l.ends.length - 1] <= b.start) || own[0];
    lane.ends.push(b.end); b.lane = lanes.indexOf(lane);
  }
  const rowH = 18, left = 110, width = canvas.clientWidth || 1300;
  canvas.width = width; canvas.height = Math.max(40, lanes.length * rowH + 24);
  canvas.setAttribute("data-bars", bars.length);
  const ctx = canvas.getContext("2d"), span = t.until - t.since, x = s => left + (width - left - 10) * (s - t.since) / span;
  ctx.clearRect(0, 0, canvas.width, canvas.height); ctx.font = "11px system-ui";
  lanes.forEach((l, i) => { ctx.fillStyle = l.status === "down" ? "#b00" : "#333";
    ctx.fillText(`${l.node}${l.status === "down" ? " (down)" : ""}`, 4, i * rowH + 13);
    ctx.fillStyle = "#f3f3f3"; ctx.fillRect(left, i * rowH + 2, width - left - 10, rowH - 4); });
  for (const b of bars) {
    const x0 = Math.max(left, x(b.start)), x1 = Math.max(x0 + 2, x(b.end)), y = b.lane * rowH + 2;
    ctx.globalAlpha = b.state === "retried" ? 0.45 : 1; ctx.fillStyle = color(b.config_key);
    ctx.fillRect(x0, y, x1 - x0, rowH - 4); ctx.globalAlpha = 1;
    if (["failed", "retried", "stale"].includes(b.state) || b.reason === "lease_lost") {
      ctx.strokeStyle = "#b00"; ctx.lineWidth = 2; ctx.strokeRect(x0, y, x1 - x0, rowH - 4);
      ctx.fillStyle = "#b00"; ctx.fillText("✕", x1 - 9, y + 11);
    }
    if (b.attempts > 1) { ctx.fillStyle = "#000"; ctx.fillText(`#${b.attempts}`, x0 + 2, y + 11); }
  }
  ctx.fillStyle = "#555"; const y = lanes.length * rowH + 16;
  for (let i = 0; i <= 6; i++) { const s = t.since + span * i / 6; ctx.fillText(new Date(s * 1000).toLocaleTimeString(), x(s) - 25, y); }
  const configs = [...new Set(bars.map(b => b.config_key))].slice(0, 30);
  document.getElementById("timeline-legend").replaceChildren(...configs.flatMap(c => [el("span", { class: "swatch", style: `background:${color(c)}` }), c]),
    " · red outline ✕: failed, retried (faded), fenced or preempted; #n: attempt n");
}

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
      ` ${f.error} ${f.will_retry === "true" ? "(will retry)" : ""}`, f.stderr_tail ? el("pre", {}, f.stderr_tail) : ""))),
    el("h3", {}, `Dead letters (${t.dead_letters.length})`),
    el("table", { id: "dead" }, ...t.dead_letters.map(d => el("tr", {}, el("td", {}, d.id), el("td", {}, d.type),
      el("td", { class: "wrap" }, d.reason)))));
}

function showDetail(title, ...children) {
  document.getElementById("detail-panel").hidden = false;
  document.getElementById("detail-title").textContent = title;
  document.getElementById("detail").replaceChildren(...children);
}
function showJob(id) {
  api("api/job/" + encodeURIComponent(id)).then(j => {
    const chart = el("div", { "data-points": j.curve.length });
    showDetail(`job ${j.job_id} (${j.state})`, el("p", {}, `${j.config_key} · node ${j.node} · attempt ${j.attempt} · epoch ${j.epoch}/${j.epochs}`
      + ` · final loss ${fmt(j.final_loss)} · ${j.reason} ${j.error}`), chart);
    if (j.curve.length) lossChart(chart, j.curve, 600, 220); else chart.append("no epochs on the stream for this job");
  });
}
function showConfig(key) {
  api("api/config/" + encodeURIComponent(key)).then(c => {
    const chart = el("div", {});
    const s = c.stored;
    showDetail(`config ${key}`, el("p", {}, `score ${fmt(s.score)} · ${s.why || "eligible"} · model ${s.latest_model || "-"}`
      + ` · data v${s.data_version || "-"} (trained on v${s.trained_data_version || "-"})`), chart,
      el("table", {}, ...c.jobs.map(j => el("tr", { class: "clickable", onclick: () => showJob(j.job_id) },
        el("td", {}, j.job_id), el("td", {}, j.state), el("td", {}, j.node), el("td", {}, fmt(j.final_loss))))));
    if (c.elo.length) eloChartFor(chart, [key], { [key]: c.elo }, { [key]: c.trainings }, 700);
    else chart.append("no evaluations yet");
  });
}

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
