// Ferry dashboard: renders what the monitor streams (server-sent events); it never polls.
// Libraries (vendored, pinned: see vendor/VENDOR.json): Cytoscape.js + cytoscape-dagre for the
// flow graph's layout, Chart.js for the curves.
(() => {
  "use strict";

  const COLORS = {
    PENDING: "#9aa3ad", SCHEDULED: "#64b5f6", RUNNING: "#1e88e5", SUCCEEDED: "#2e7d32", FAILED: "#c62828",
    SUSPENDING: "#ffb300", SUSPENDED: "#f57c00", RESUMING: "#4fc3f7", CANCELLING: "#757575",
    CANCELLED: "#424242", RETRYING: "#ef6c00", UNPLANNED: "#cfd4da",
  };
  const PALETTE = ["#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#00acc1", "#e53935", "#6d4c41", "#3949ab"];
  // chart -> [metric, suffix]; a series' label is its party ("global" for the aggregator)
  const CHARTS = {
    accuracy: { title: "Accuracy per round", metrics: [["accuracy", ""], ["server_accuracy", " (server-side)"]] },
    loss: { title: "Loss per round", metrics: [["train_loss", " train"], ["loss", " eval"], ["server_loss", " server-side"]] },
    bytes: { title: "Bytes per round", metrics: [["bytes_received", " received"], ["bytes_sent", " sent"]] },
    time: { title: "Round time (s)", metrics: [["round_s", " round"], ["train_s", " local training"]] },
  };

  cytoscape.use(cytoscapeDagre);
  const ui = {
    flows: new Map(), flowId: null, detail: null, rounds: new Map(), charts: new Map(),
    source: null, cy: null, graphKey: "", lastAction: null,
  };
  window.ferryDashboard = ui;  // for the browser tests and the curious

  const $ = (sel) => document.querySelector(sel);
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const color = (status) => COLORS[status || "UNPLANNED"] || "#999";
  const badge = (status) => `<span class="status" data-status="${esc(status || "UNPLANNED")}" style="background:${color(status)}">${esc(status || "UNPLANNED")}</span>`;

  function age(ms) {
    if (!ms) return "";
    let s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function clock(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  function route() {
    const m = location.hash.match(/^#\/flows\/(.+)$/);
    return m ? decodeURIComponent(m[1]) : null;
  }

  // -- the stream ---------------------------------------------------------------------------------

  function connect() {
    if (ui.source) ui.source.close();
    ui.flowId = route();
    ui.detail = null;
    ui.rounds = new Map();
    for (const group of ui.charts.values()) for (const chart of Object.values(group.charts)) chart.destroy();
    ui.charts = new Map();
    $("#charts").innerHTML = "";
    ui.graphKey = "";
    if (ui.cy) { ui.cy.destroy(); ui.cy = null; }  // nothing of the previous flow may linger
    for (const sel of ["#members tbody", "#history tbody"]) $(sel).innerHTML = "";
    for (const sel of ["#flow-title", "#flow-reason", "#flow-age"]) $(sel).textContent = "";
    delete $("#flow-age").dataset.since;
    $("#flow-status").outerHTML = `<span id="flow-status" class="badge"></span>`;
    $("#detail").hidden = !ui.flowId;
    $("#action-result").textContent = "";
    const url = "/dashboard/events" + (ui.flowId ? "?flow=" + encodeURIComponent(ui.flowId) : "");
    const source = new EventSource(url);
    ui.source = source;
    setConnection("connecting");
    source.onopen = () => setConnection("live");
    source.onerror = () => setConnection("lost");  // EventSource reconnects on its own
    source.addEventListener("flows", (e) => {
      for (const f of JSON.parse(e.data)) ui.flows.set(f.flow_id, f);
      renderFlows();
    });
    source.addEventListener("flow", (e) => { ui.detail = JSON.parse(e.data); renderDetail(); });
    source.addEventListener("rounds", (e) => { mergeRounds(JSON.parse(e.data)); renderCharts(); });
    source.addEventListener("missing", (e) => {
      const id = JSON.parse(e.data).flow_id;
      $("#flow-title").textContent = id;
      $("#flow-status").outerHTML = `<span id="flow-status" class="badge" style="background:#999">UNKNOWN</span>`;
      $("#flow-reason").textContent = "The monitor knows no such flow (yet): it appears here once it is planned.";
    });
  }

  function setConnection(state) {
    const el = $("#connection");
    el.dataset.state = state;
    el.textContent = { connecting: "connecting…", live: "live", lost: "reconnecting…" }[state];
  }

  // -- flow list ----------------------------------------------------------------------------------

  function renderFlows() {
    const flows = [...ui.flows.values()].sort((a, b) => b.updated_at_ms - a.updated_at_ms || a.flow_id.localeCompare(b.flow_id));
    $("#no-flows").hidden = flows.length > 0;
    $("#flows tbody").innerHTML = flows.map((f) => `
      <tr data-flow="${esc(f.flow_id)}" class="${f.flow_id === ui.flowId ? "selected" : ""}">
        <td><code>${esc(f.flow_id)}</code></td><td>${badge(f.status)}</td>
        <td>${f.steps_succeeded}/${f.steps}</td>
        <td>${f.total_rounds ? `${f.round}/${f.total_rounds}` : ""}</td>
        <td class="age" data-since="${f.started_at_ms}">${age(f.started_at_ms)}</td></tr>`).join("");
  }

  $("#flows").addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-flow]");
    if (row) location.hash = "#/flows/" + encodeURIComponent(row.dataset.flow);
  });

  // -- one flow -----------------------------------------------------------------------------------

  function renderDetail() {
    const d = ui.detail;
    $("#flow-title").textContent = d.flow_id;
    $("#flow-status").outerHTML = `<span id="flow-status" class="badge" data-status="${esc(d.status)}" style="background:${color(d.status)}">${esc(d.status)}</span>`;
    $("#flow-age").dataset.since = d.started_at_ms;
    $("#flow-age").textContent = "started " + age(d.started_at_ms) + " ago";
    $("#flow-reason").textContent = d.reason ? "last change: " + d.reason : "";
    renderGraph(d);
    renderMembers(d);
    renderHistory(d);
  }

  function graphElements(d) {
    const nodes = [], edges = [];
    for (const t of d.tasks) {
      const progress = t.algos.find((a) => a.total_rounds);
      const rounds = progress ? ` · round ${Math.max(...t.algos.map((a) => a.round))}/${progress.total_rounds}` : "";
      nodes.push({ data: { id: "t:" + t.task_id, kind: "step", status: t.status || "UNPLANNED",
        color: color(t.status), label: `${t.step} (${t.algorithm}) — ${t.status || "UNPLANNED"}${rounds}` } });
      for (const a of t.algos) {
        nodes.push({ data: { id: "a:" + a.algo_task_id, parent: "t:" + t.task_id, kind: "party", status: a.status,
          color: color(a.status), attempt: a.attempt,
          label: `${a.party}\n${a.role} · ${a.status}\nattempt ${a.attempt}${a.total_rounds ? ` · ${a.round}/${a.total_rounds}` : ""}` } });
      }
    }
    const byId = new Set(d.tasks.map((t) => t.task_id));
    for (const t of d.tasks) {
      for (const dep of t.depends_on) {
        if (byId.has(dep)) edges.push({ data: { id: `e:${dep}->${t.task_id}`, source: "t:" + dep, target: "t:" + t.task_id } });
      }
    }
    return { nodes, edges };
  }

  function renderGraph(d) {
    const { nodes, edges } = graphElements(d);
    const key = [...nodes.map((n) => n.data.id), ...edges.map((e) => e.data.id)].join("|");
    if (ui.cy && key === ui.graphKey) {  // same shape: recolour and relabel, keep the layout
      ui.cy.batch(() => { for (const n of nodes) ui.cy.getElementById(n.data.id).data(n.data); });
      ui.cy.fit(undefined, 16);  // labels grow (round r/R, longer statuses): keep them in view
      return;
    }
    ui.graphKey = key;
    if (ui.cy) ui.cy.destroy();
    ui.cy = cytoscape({
      container: $("#dag"), elements: [...nodes, ...edges], wheelSensitivity: 0.3,
      style: [
        { selector: "node[kind='step']", style: {
          "background-color": "data(color)", "background-opacity": 0.12, "border-color": "data(color)",
          "border-width": 3, label: "data(label)", "text-valign": "top", "text-halign": "center",
          "font-size": 12, "font-weight": 600, padding: 14, shape: "round-rectangle" } },
        { selector: "node[kind='party']", style: {
          "background-color": "data(color)", label: "data(label)", color: "#fff", "text-wrap": "wrap",
          "text-valign": "center", "text-halign": "center", "font-size": 10, shape: "round-rectangle",
          width: 120, height: 52 } },
        { selector: "edge", style: {
          width: 2, "line-color": "#8a94a3", "target-arrow-color": "#8a94a3", "target-arrow-shape": "triangle",
          "curve-style": "bezier" } },
      ],
      layout: { name: "dagre", rankDir: "LR", nodeSep: 24, rankSep: 80, padding: 16 },
    });
  }

  function renderMembers(d) {
    const rows = [];
    for (const t of d.tasks) {
      for (const a of t.algos) {
        rows.push(`<tr data-algo="${esc(a.algo_task_id)}" data-step="${esc(t.step)}">
          <td>${esc(t.step)}</td><td>${esc(a.party)}</td><td>${esc(a.role)}</td><td>${badge(a.status)}</td>
          <td>${a.attempt}</td><td>${a.total_rounds ? `${a.round}/${a.total_rounds}` : ""}</td>
          <td>${esc(a.stage)}</td><td>${esc(a.reason)}</td></tr>`);
      }
    }
    $("#members tbody").innerHTML = rows.join("");
  }

  function renderHistory(d) {
    const rows = d.history.map((r) => ({ ...r, entity: "flow" }));
    for (const t of d.tasks) {
      rows.push(...t.history.map((r) => ({ ...r, entity: `step ${t.step}` })));
      for (const a of t.algos) rows.push(...a.history.map((r) => ({ ...r, entity: `${t.step} / ${a.party} (${a.role})` })));
    }
    rows.sort((a, b) => b.at_ms - a.at_ms);
    $("#history tbody").innerHTML = rows.slice(0, 400).map((r) => `
      <tr data-outcome="${esc(r.outcome)}"><td>${clock(r.at_ms)}</td><td>${esc(r.entity)}</td><td>${esc(r.outcome)}</td>
      <td>${r.to ? `${esc(r.from || "—")} → ${esc(r.to)}` : esc(r.from || "")}</td><td>${r.attempt || ""}</td>
      <td><code title="${esc(r.event_id)}">${esc(r.cause)}</code></td><td>${esc(r.reason)}</td></tr>`).join("");
  }

  // -- controls -----------------------------------------------------------------------------------

  document.querySelectorAll(".controls button").forEach((button) => button.addEventListener("click", async () => {
    const verb = button.dataset.verb, out = $("#action-result");
    out.className = "";
    out.textContent = `${verb}…`;
    let status = 0, text = "";
    try {
      const response = await fetch(`/flows/${encodeURIComponent(ui.flowId)}/${verb}`, { method: "POST" });
      status = response.status;
      const body = await response.json().catch(() => ({}));
      const detail = body.detail;
      text = response.ok ? `${verb} accepted (command ${body.command_id})`
        : `${verb} refused: HTTP ${status} — ${typeof detail === "string" ? detail : JSON.stringify(detail)}`;
      out.className = response.ok ? "ok" : "error";
    } catch (err) {
      text = `${verb} failed: the monitor could not be reached (${err})`;
      out.className = "error";
    }
    out.textContent = text;
    out.dataset.status = String(status);
    ui.lastAction = { verb, status, text };
  }));

  // -- curves -------------------------------------------------------------------------------------

  function mergeRounds(tasks) {
    for (const t of tasks) {
      const entry = ui.rounds.get(t.task_id) || { step: t.step, total: t.total_rounds, series: new Map() };
      entry.total = t.total_rounds;
      for (const s of t.series) {
        const series = entry.series.get(s.algo_task_id) || { party: s.party, role: s.role, points: new Map() };
        for (const p of s.points) series.points.set(p.round, p);
        entry.series.set(s.algo_task_id, series);
      }
      ui.rounds.set(t.task_id, entry);
    }
  }

  function seriesLabel(s) {
    return /aggregat|server/.test(s.role) ? `global (${s.party})` : s.party;
  }

  function datasetsFor(entry, chartName) {
    const out = [];
    let i = 0;
    const sorted = [...entry.series.values()].sort((a, b) => seriesLabel(a).localeCompare(seriesLabel(b)));
    for (const s of sorted) {
      const global = /aggregat|server/.test(s.role);
      for (const [metric, suffix] of CHARTS[chartName].metrics) {
        const data = [...s.points.values()].filter((p) => p.metrics[metric] != null)
          .sort((a, b) => a.round - b.round).map((p) => ({ x: p.round, y: p.metrics[metric] }));
        if (!data.length) continue;
        const c = global ? "#111" : PALETTE[i % PALETTE.length];
        out.push({ label: seriesLabel(s) + suffix, data, borderColor: c, backgroundColor: c,
          borderWidth: global ? 3 : 1.5, borderDash: suffix.includes("train") || suffix.includes("sent") ? [] : (suffix ? [5, 3] : []),
          pointRadius: 2, tension: 0.15 });
      }
      if (!global) i++;
    }
    return out;
  }

  function renderCharts() {
    for (const [taskId, entry] of ui.rounds) {
      let group = ui.charts.get(taskId);
      if (!group) {
        const box = document.createElement("div");
        box.className = "step-charts";
        box.style.display = "contents";
        box.innerHTML = `<h3 class="step-title">Training curves: step ${esc(entry.step)}</h3>` +
          Object.entries(CHARTS).map(([name, c]) => `<div class="chart-card" data-chart="${name}"><h4>${esc(c.title)}</h4>
            <div class="canvas-box"><canvas data-task="${esc(taskId)}" data-chart="${name}"></canvas></div></div>`).join("");
        $("#charts").appendChild(box);
        group = { charts: {} };
        for (const name of Object.keys(CHARTS)) {
          group.charts[name] = new Chart(box.querySelector(`canvas[data-chart="${name}"]`), {
            type: "line", data: { datasets: [] },
            options: {
              animation: false, responsive: true, maintainAspectRatio: false, parsing: true,
              scales: { x: { type: "linear", title: { display: true, text: "round" }, ticks: { precision: 0 }, min: 1 },
                y: { beginAtZero: name !== "loss" && name !== "accuracy" } },
              plugins: { legend: { position: "bottom", labels: { boxWidth: 10, font: { size: 10 } } } },
            },
          });
        }
        ui.charts.set(taskId, group);
      }
      for (const [name, chart] of Object.entries(group.charts)) {
        chart.data.datasets = datasetsFor(entry, name);
        chart.options.scales.x.max = entry.total || undefined;
        chart.update("none");
      }
    }
  }

  // Ages tick on the page's own clock; the data only changes when the monitor says so.
  setInterval(() => document.querySelectorAll("[data-since]").forEach((el) => {
    const since = Number(el.dataset.since);
    el.textContent = el.id === "flow-age" ? "started " + age(since) + " ago" : age(since);
  }), 1000);

  window.addEventListener("hashchange", connect);
  connect();
})();
