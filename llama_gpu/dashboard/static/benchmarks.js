/* Benchmarks: start a run, follow it live (benchmark.* events on the "benchmarks" channel), results and charts. */
"use strict";

(function (LG) {
  const EVENTS = ["benchmark.started", "benchmark.progress", "benchmark.completed", "benchmark.failed"];
  const ACTIVE = ["queued", "running"];
  const TONES = { queued: "", running: "info", completed: "ok", failed: "danger", cancelled: "warn" };
  /** Per benchmark id: the latest event (status, progress figures). */
  const live = {};
  let runs = [];
  let selected = null;
  let charts = [];

  function statusOf(run) {
    const event = live[run.benchmark_id];
    return event && event.status ? event.status : run.status;
  }

  function percentOf(run) {
    const status = statusOf(run);
    if (status === "completed") return 100;
    const p = { ...(run.progress || {}), ...(live[run.benchmark_id] || {}) };
    if (!p.runs_total) return 0;
    const target = p.requests_target;
    const within = target ? ((p.completed || 0) + (p.errors || 0)) / target
      : (p.max_time ? (p.elapsed || 0) / p.max_time : 0);
    return Math.max(0, Math.min(100, Math.round((100 * ((p.run_index || 0) + Math.min(within, 1))) / p.runs_total)));
  }

  function progressCell(run) {
    const status = statusOf(run);
    const percent = percentOf(run);
    const p = { ...(run.progress || {}), ...(live[run.benchmark_id] || {}) };
    const bar = LG.el("div", {
      class: `progress-bar${status === "completed" ? " done" : ["failed", "cancelled"].includes(status) ? " failed" : ""}`,
      style: `width: ${percent}%`,
    });
    const note = status === "running" && p.runs_total
      ? `run ${(p.run_index || 0) + 1}/${p.runs_total} · ${p.num_users} users · ${p.completed || 0} done` +
        `${p.errors ? ` · ${p.errors} errors` : ""}`
      : run.error && status !== "completed" && run.error !== status ? run.error : null;
    return LG.el("td", {},
      LG.el("span", { "data-testid": `bench-status-${run.benchmark_id}` }, LG.badge(status, TONES[status])),
      LG.el("div", {
        class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": percent,
        "data-testid": `bench-progress-${run.benchmark_id}`,
      }, bar),
      note ? LG.el("div", { class: "cell-sub", "data-testid": `bench-note-${run.benchmark_id}`, title: note },
        note.slice(0, 90)) : null);
  }

  function row(run) {
    const status = statusOf(run);
    const summary = run.summary || {};
    return LG.el("tr", { "data-testid": `bench-row-${run.benchmark_id}`, class: selected === run.benchmark_id ? "selected" : "" },
      LG.el("td", {}, LG.el("div", { class: "cell-title" }, run.name || `#${run.benchmark_id}`),
        LG.el("div", { class: "cell-sub mono" }, `#${run.benchmark_id} · ${run.target || "self"}`)),
      LG.el("td", { class: "mono" }, run.model || "—"),
      progressCell(run),
      LG.el("td", { class: "cell-sub" },
        summary.requests != null ? `${LG.fmt.num(summary.requests, 0)} req · ${LG.fmt.num(summary.output_throughput)} tok/s` : "—"),
      LG.el("td", { class: "cell-sub" }, LG.fmt.datetime(run.created_at)),
      LG.el("td", { class: "actions" },
        ACTIVE.includes(status)
          ? LG.el("button", {
            class: "btn btn-sm btn-danger", "data-testid": `bench-cancel-${run.benchmark_id}`,
            disabled: !LG.session.can("write"), onclick: () => cancel(run),
          }, "Cancel")
          : LG.el("button", {
            class: "btn btn-sm", "data-testid": `bench-results-${run.benchmark_id}`,
            disabled: status === "failed", onclick: () => showResults(run.benchmark_id),
          }, "Results")));
  }

  function render() {
    const body = LG.$("bench-body");
    if (!runs.length) {
      LG.fill(body, LG.el("tr", {}, LG.el("td", { colspan: 6, class: "muted" }, "No benchmarks yet: start one above.")));
      return;
    }
    LG.fill(body, runs.map(row));
  }

  async function refresh() {
    try {
      runs = (await LG.api("GET", "/api/v1/benchmarks?limit=50")).benchmarks || [];
      render();
    } catch (error) {
      if (!runs.length) LG.errorRow(LG.$("bench-body"), 6, error);
      LG.showError(error, "Benchmarks");
    }
  }

  function models(list) {
    const select = LG.$("bench-model");
    const current = select.value;
    LG.fill(select, list.filter((m) => !m.unavailable && (m.type || "text") !== "embedding")
      .map((m) => LG.el("option", { value: m.id, selected: m.id === current }, m.id)));
  }

  async function start(event) {
    event.preventDefault();
    const users = LG.$("bench-users").value.split(",").map((v) => Number(v.trim())).filter((v) => v);
    const config = {
      api_model_name: LG.$("bench-model").value,
      endpoint: LG.$("bench-endpoint").value,
      traffic_scenario: [LG.$("bench-scenario").value.trim()],
      num_users: users,
      max_requests_per_run: LG.$("bench-requests").value.trim() ? Number(LG.$("bench-requests").value) : null,
      max_time_per_run: Number(LG.$("bench-time").value),
    };
    const button = LG.$("bench-start");
    button.disabled = true;
    try {
      const data = await LG.api("POST", "/api/v1/benchmarks", { config });
      LG.toast(`Benchmark #${data.benchmark_id} queued`, "ok");
      selected = data.benchmark_id;
      await refresh();
    } catch (error) {
      LG.showError(error, "Starting a benchmark");
    } finally {
      button.disabled = false;
    }
  }

  function cancel(run) {
    LG.modal({
      title: `Cancel benchmark #${run.benchmark_id}?`,
      body: LG.el("p", {}, "What it measured so far is kept."),
      confirmText: "Cancel benchmark", danger: true,
      onConfirm: async () => {
        const data = await LG.api("POST", `/api/v1/benchmarks/${run.benchmark_id}/cancel`);
        live[run.benchmark_id] = { ...(live[run.benchmark_id] || {}), status: data.status };
        await refresh();
      },
    });
  }

  const MS = (v) => (v == null ? null : Number(v) * 1000);

  function resultsTable(list) {
    const head = ["Scenario", "Users", "Requests", "Errors", "Req/s", "Output tok/s", "TTFT p50", "TTFT p90",
      "E2E p50", "E2E p90", "TPOT p50"];
    return LG.el("table", { class: "table table-compact", "data-testid": "bench-results-table" },
      LG.el("thead", {}, LG.el("tr", {}, head.map((h) => LG.el("th", {}, h)))),
      LG.el("tbody", {}, list.map((r) => {
        const m = r.aggregated_metrics || {};
        const q = (name, p) => (m[name] || {})[p];
        return LG.el("tr", { "data-testid": "bench-result-row" },
          LG.el("td", { class: "mono" }, r.scenario), LG.el("td", {}, r.num_users),
          LG.el("td", {}, LG.fmt.num(m.requests, 0)), LG.el("td", {}, LG.fmt.num(m.errors, 0)),
          LG.el("td", {}, LG.fmt.num(m.requests_per_second, 2)), LG.el("td", {}, LG.fmt.num(m.output_throughput)),
          LG.el("td", {}, LG.fmt.ms(q("ttft", "p50"))), LG.el("td", {}, LG.fmt.ms(q("ttft", "p90"))),
          LG.el("td", {}, LG.fmt.ms(q("e2e_latency", "p50"))), LG.el("td", {}, LG.fmt.ms(q("e2e_latency", "p90"))),
          LG.el("td", {}, LG.fmt.ms(q("tpot", "p50"))));
      })));
  }

  function chart(id, labels, datasets, yTitle) {
    return new Chart(LG.$(id), {
      type: "line",
      data: { labels, datasets: datasets.map((d, i) => ({
        ...d, borderWidth: 2, pointRadius: 3, tension: 0.2,
        borderColor: ["#3b6cf6", "#e0731b", "#1a9a5c"][i], backgroundColor: ["#3b6cf6", "#e0731b", "#1a9a5c"][i],
      })) },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        plugins: { legend: { labels: { boxWidth: 10, font: { size: 11 } } } },
        scales: {
          x: { title: { display: true, text: "concurrent users" }, ticks: { font: { size: 10 } } },
          y: { beginAtZero: true, title: { display: true, text: yTitle }, ticks: { font: { size: 10 } } },
        },
      },
    });
  }

  async function showResults(id) {
    selected = id;
    render();
    const box = LG.$("bench-results");
    try {
      const data = await LG.api("GET", `/api/v1/benchmarks/${id}/results`);
      const list = (data.results && data.results.runs) || [];
      const info = (data.results && data.results.benchmark_info) || {};
      LG.$("bench-results-title").textContent =
        `Results of #${id} · ${info.model || ""} · ${data.status}${info.cancelled ? " (cancelled: partial)" : ""}`;
      LG.fill(LG.$("bench-results-table-wrap"), resultsTable(list));
      charts.forEach((c) => c.destroy());
      const labels = list.map((r) => `${r.num_users}${list.some((o) => o.scenario !== r.scenario) ? ` · ${r.scenario}` : ""}`);
      const metric = (name, p) => list.map((r) => MS(((r.aggregated_metrics || {})[name] || {})[p]));
      charts = [
        chart("bench-chart-throughput", labels, [
          { label: "output tok/s", data: list.map((r) => (r.aggregated_metrics || {}).output_throughput) },
          { label: "total tok/s", data: list.map((r) => (r.aggregated_metrics || {}).total_throughput) },
        ], "tokens / s"),
        chart("bench-chart-latency", labels, [
          { label: "TTFT p90 (ms)", data: metric("ttft", "p90") },
          { label: "E2E p90 (ms)", data: metric("e2e_latency", "p90") },
          { label: "TPOT p50 (ms)", data: metric("tpot", "p50") },
        ], "milliseconds"),
      ];
      box.hidden = false;
    } catch (error) {
      LG.showError(error, `Results of #${id}`);
    }
  }

  function onEvent(name, payload) {
    if (!payload || payload.benchmark_id == null) return;
    const id = payload.benchmark_id;
    live[id] = { ...(live[id] || {}), ...payload };
    if (LG.router.current !== "benchmarks") return;
    if (!runs.some((r) => r.benchmark_id === id) || name !== "benchmark.progress") {
      refresh().then(() => {
        if (name === "benchmark.completed" && selected === id) showResults(id);
      });
    } else {
      render();
    }
  }

  /** The shell subscribes to its own channels; this page adds "benchmarks" on every (re)connection. */
  LG.live.on("connected", () => {
    const socket = LG.live.socket;
    if (!socket) return;
    socket.emit("subscribe", { channels: ["benchmarks"] }, (ack) => {
      if (ack && ack.success === false) LG.showError(ack.error || {}, "Benchmark updates");
    });
    for (const name of EVENTS) socket.on(name, (payload) => onEvent(name, payload));
  });

  LG.pages = LG.pages || {};
  LG.pages.benchmarks = {
    init() {
      LG.$("bench-form").addEventListener("submit", start);
      LG.$("bench-refresh").addEventListener("click", refresh);
      LG.onModels(models);
    },
    show: refresh,
    hide() {},
    reset() {
      runs = [];
      selected = null;
      charts.forEach((c) => c.destroy());
      charts = [];
      LG.$("bench-results").hidden = true;
      for (const k of Object.keys(live)) delete live[k];
    },
  };
})(window.LG);
