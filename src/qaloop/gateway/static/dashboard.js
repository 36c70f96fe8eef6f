// qaloop live dashboard: polls /v1/dashboard-data every 2 s and redraws (uPlot charts).
"use strict";
(function () {
  const POLL_MS = 2000;
  const COLORS = ["#2f6fdb", "#1a7f37", "#c2410c", "#7c3aed", "#0e7490", "#b91c1c", "#a16207"];
  const charts = {};

  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
  const num = (x, d) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));

  function setText(id, value) {
    const el = $(id);
    if (el) el.textContent = value;
  }

  function rows(tableId, data, empty) {
    const body = $(tableId).querySelector("tbody");
    body.innerHTML = "";
    if (!data.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.className = "empty";
      td.colSpan = 8;
      td.textContent = empty;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    for (const cells of data) {
      const tr = document.createElement("tr");
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function chart(id, names, data, opts) {
    const el = $(id);
    const width = Math.max(240, el.clientWidth);
    if (!charts[id] || charts[id].names.join() !== names.join()) {
      if (charts[id]) charts[id].plot.destroy();
      const series = [{}].concat(
        names.map((name, i) => ({
          label: name, stroke: COLORS[i % COLORS.length], width: 2,
          points: { show: false }, spanGaps: true,
        }))
      );
      const axes = [{}, { size: 50 }];
      const scales = opts && opts.range ? { y: { range: opts.range } } : {};
      const plot = new uPlot({ width: width, height: 180, series, axes, scales }, data, el);
      charts[id] = { plot, names };
    } else {
      charts[id].plot.setData(data);
    }
  }

  function render(d) {
    const t = d.totals, f = d.flow, c = d.cache, s = d.series;
    setText("mode", d.mode);
    setText("kpi-asked", fmt(t.asked));
    setText("kpi-accepted", fmt(t.outcomes.accepted || 0));
    setText("kpi-validated", fmt(t.validated));
    setText("kpi-failed", fmt(t.gave_up));
    setText("kpi-llm", fmt(t.llm_calls));
    setText("kpi-hit-rate", pct(c.hit_rate));
    setText("kpi-in-flight", fmt(f.in_flight));
    const recent = s.asked.slice(-10);
    setText("kpi-rps", recent.length ? num(recent.reduce((a, b) => a + b, 0) / recent.length, 1) : "–");

    setText("flow-accepted", fmt(f.accepted));
    setText("flow-waiting-worker", fmt(f.waiting_for_worker));
    setText("flow-generating", fmt(f.generating));
    setText("flow-waiting-judge", fmt(f.waiting_for_judge));
    setText("flow-validated", fmt(f.validated));
    setText("flow-failed", fmt(f.failed));
    setText("flow-parked", fmt(f.parked));
    setText("flow-waiting-store", fmt(f.waiting_for_store));

    chart("chart-throughput", ["asked", "LLM calls", "validated", "failed"],
      [s.t, s.asked, s.llm_calls, s.validated, s.failed]);
    const groups = Object.keys(s.lag).sort();
    if (groups.length) chart("chart-lag", groups, [s.t].concat(groups.map((g) => s.lag[g])));
    chart("chart-cache", ["hit rate"], [s.t, s.hit_rate], { range: [0, 1] });

    rows("attempts", d.per_attempt.map((a) => [
      a.attempt, fmt(a.decided), fmt(a.validated), fmt(a.regenerated), fmt(a.gave_up),
      pct(a.pass_rate), num(a.mean_score, 3),
    ]), "no answers scored yet");
    rows("errors", Object.entries(d.errors).map(([k, n]) => [k, fmt(n)]), "no errors");
    rows("retries", [
      ["retried in process", fmt(t.retries)],
      ["parked", fmt(t.parked_total)],
      ["resumed from park", fmt(t.resumed)],
      ["recovered after an error", fmt(t.recovered)],
      ["dead letters", fmt(t.dead_letters)],
    ], "");
    rows("cache", [
      ["hits / misses", fmt(c.hits) + " / " + fmt(c.misses)],
      ["hit rate", pct(c.hit_rate)],
      ["entries / capacity", fmt(c.entries) + " / " + fmt(c.capacity)],
      ["evictions", fmt(c.evictions)],
      ["mean request (ms)", num(t.mean_request_ms, 2)],
      ["mean LLM call (ms)", num(t.mean_llm_ms, 1)],
      ["mean time to answer (s)", num(t.mean_time_to_answer_s, 2)],
    ], "");
    rows("storage", Object.entries(d.storage).sort().map(([k, n]) => [k, fmt(n)]), "no questions stored");
    const when = new Date(d.now * 1000).toLocaleTimeString();
    const status = $("status");
    status.textContent = "updated " + when;
    status.className = "meta";
    document.body.dataset.loaded = "1";
  }

  async function poll() {
    try {
      const r = await fetch("/v1/dashboard-data", { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
    } catch (e) {
      const status = $("status");
      status.textContent = "stale: " + e.message;
      status.className = "meta stale";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }
  poll();
})();
