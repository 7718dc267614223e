/* Overview: status cards from /system/status, live charts from the metric events. */
"use strict";

(function (LG) {
  const MAX_POINTS = 90;
  const charts = {};
  let samples = 0;
  let statusTimer = null;

  const SERIES = {
    cpu: { label: "CPU %", color: "#3b6cf6", max: 100 },
    memory: { label: "Memory %", color: "#8b5cf6", max: 100 },
    gpu: { label: "GPU %", color: "#1f9d62", max: 100, second: { label: "GPU memory %", color: "#9bd3b6" } },
    requests: { label: "Requests / min", color: "#d98a0b" },
    tokens: { label: "Tokens / s", color: "#0ea5b7" },
    latency: { label: "Avg latency (ms)", color: "#d64545", second: { label: "p95 (ms)", color: "#f2a3a3" } },
  };

  function makeChart(name) {
    const spec = SERIES[name];
    const dataset = (s) => ({
      label: s.label, data: [], borderColor: s.color, backgroundColor: `${s.color}22`, fill: !s.second,
      borderWidth: 2, tension: 0.3,
      // no dots on a line; a lone value between gaps (no requests before or after) gets one
      pointRadius: (ctx) => {
        const data = ctx.dataset.data, i = ctx.dataIndex;
        return data[i] != null && data[i - 1] == null && data[i + 1] == null ? 3 : 0;
      },
    });
    const datasets = [dataset(spec)];
    if (spec.second) datasets.push({ ...dataset(spec.second), fill: false, borderDash: [4, 3] });
    return new Chart(LG.$(`chart-${name}`), {
      type: "line",
      data: { labels: [], datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { display: !!spec.second, labels: { boxWidth: 10, font: { size: 11 } } } },
        scales: {
          x: { ticks: { maxTicksLimit: 6, font: { size: 10 }, color: "#8a93a8" }, grid: { display: false } },
          y: {
            beginAtZero: true, suggestedMax: spec.max, max: spec.max,
            ticks: { maxTicksLimit: 5, font: { size: 10 }, color: "#8a93a8" }, grid: { color: "#eef1f6" },
          },
        },
      },
    });
  }

  /** Append one point (values per dataset) to a chart, keeping the last MAX_POINTS. */
  function push(name, label, ...values) {
    const chart = charts[name];
    if (!chart) return;
    chart.data.labels.push(label);
    chart.data.datasets.forEach((ds, i) => ds.data.push(values[i] ?? null));
    while (chart.data.labels.length > MAX_POINTS) {
      chart.data.labels.shift();
      chart.data.datasets.forEach((ds) => ds.data.shift());
    }
    chart.canvas.dataset.points = String(chart.data.labels.length);
    chart.update("none");
  }

  function mean(list) {
    const values = (list || []).filter((v) => typeof v === "number");
    return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
  }

  function setNow(name, text) { LG.$(`now-${name}`).textContent = text; }

  /** Seed the charts from the stored series (the last hour, by minute). */
  async function seed() {
    try {
      const data = await LG.api("GET", "/api/v1/system/metrics?timeframe=1h&granularity=1m");
      const m = data.metrics || {};
      const keys = ["cpu_usage", "memory_usage", "gpu_utilization", "request_rate", "response_time", "tokens_per_second"];
      (m.timestamps || []).forEach((ts, i) => {
        const at = (key) => (m[key] && m[key][i] !== undefined ? m[key][i] : null);
        if (keys.every((key) => at(key) === null)) return; // nothing was stored in that minute
        const label = LG.fmt.time(ts);
        const scaled = (key, factor) => (at(key) === null ? null : at(key) * factor);
        push("cpu", label, at("cpu_usage"));
        push("memory", label, at("memory_usage"));
        push("gpu", label, at("gpu_utilization"), null);
        push("requests", label, scaled("request_rate", 60)); // stored per second, shown per minute
        push("tokens", label, at("tokens_per_second"));
        push("latency", label, scaled("response_time", 1000), null); // stored in seconds, shown in ms
      });
    } catch (error) {
      LG.showError(error, "Metric history");
    }
  }

  async function refreshStatus() {
    try {
      const s = await LG.api("GET", "/api/v1/system/status");
      LG.fill(LG.$("stat-status"), LG.badge(s.status || "unknown"));
      LG.$("stat-version").textContent = `version ${s.version || "?"}`;
      LG.$("stat-uptime").textContent = LG.fmt.duration(s.uptime);
      const services = Object.entries(s.services || {});
      const up = services.filter(([, v]) => ["running", "healthy", "ok", "active", true].includes(v)).length;
      LG.$("stat-services").textContent = services.length ? `${up}/${services.length} services up` : "—";
      LG.$("stat-services").title = services.map(([k, v]) => `${k}: ${v}`).join("\n");
      const st = s.statistics || {};
      LG.$("stat-requests").textContent = LG.fmt.num(st.total_requests, 0);
      LG.$("stat-requests-sub").textContent =
        `${LG.fmt.num(st.requests_per_minute)} / min · ${LG.fmt.pct((st.error_rate || 0) * 100)} errors`;
      LG.$("stat-latency").textContent = LG.fmt.ms(st.avg_response_time);
      LG.$("stat-latency-sub").textContent = `${LG.fmt.num(st.successful_requests, 0)} successful`;
      const sys = s.system || {};
      LG.$("stat-gpus").textContent = LG.fmt.num(sys.gpu_count, 0);
      LG.$("stat-gpus-sub").textContent = sys.gpu_count ? `${LG.fmt.pct(mean(sys.gpu_usage))} busy` : "CPU only";
    } catch (error) {
      LG.showError(error, "System status");
    }
  }

  function renderGpus(data) {
    const gpus = (data && data.gpus) || [];
    const box = LG.$("gpu-list");
    if (!gpus.length) {
      box.className = "muted";
      box.textContent = "No GPU detected: models run on the CPU.";
      return;
    }
    box.className = "gpu-grid";
    LG.fill(box, gpus.map((g) => LG.el("div", { class: "gpu", "data-testid": `gpu-${g.id}` },
      LG.el("div", { class: "cell-title" }, `#${g.id} ${g.name || "GPU"}`),
      LG.el("dl", {},
        LG.el("dt", {}, "Utilization"), LG.el("dd", {}, LG.fmt.pct(g.utilization, 0)),
        LG.el("dt", {}, "Memory"), LG.el("dd", {}, `${LG.fmt.bytes(g.memory_used)} / ${LG.fmt.bytes(g.memory_total)}`),
        LG.el("dt", {}, "Temperature"), LG.el("dd", {}, g.temperature == null ? "—" : `${g.temperature} °C`),
        LG.el("dt", {}, "Power"), LG.el("dd", {}, g.power_usage == null ? "—"
          : `${LG.fmt.num(g.power_usage, 0)} / ${LG.fmt.num(g.power_limit, 0)} W`),
        LG.el("dt", {}, "Driver / CUDA"), LG.el("dd", {}, `${g.driver_version || "—"} / ${g.cuda_version || "—"}`),
      ))));
  }

  LG.live.on("system_metrics", (m) => {
    samples += 1;
    LG.$("live-samples").textContent = String(samples);
    LG.$("live-updated").textContent = LG.fmt.time(m.timestamp);
    const label = LG.fmt.time(m.timestamp);
    const gpu = mean(m.gpu_usage), gpuMemory = mean(m.gpu_memory);
    push("cpu", label, m.cpu_usage);
    push("memory", label, m.memory_usage);
    push("gpu", label, gpu, gpuMemory);
    setNow("cpu", LG.fmt.pct(m.cpu_usage));
    setNow("memory", `${LG.fmt.pct(m.memory_usage)} · ${LG.fmt.bytes(m.memory_used)}`);
    setNow("gpu", m.gpu_count ? LG.fmt.pct(gpu) : "no GPU");
  });

  LG.live.on("inference_stats", (s) => {
    const label = LG.fmt.time(s.timestamp);
    push("requests", label, s.requests_per_minute);
    push("tokens", label, s.tokens_per_second);
    push("latency", label, s.avg_latency == null ? null : s.avg_latency * 1000,
      s.p95_latency == null ? null : s.p95_latency * 1000);
    setNow("requests", `${LG.fmt.num(s.requests_per_minute)} / min`);
    setNow("tokens", LG.fmt.num(s.tokens_per_second));
    setNow("latency", LG.fmt.ms(s.avg_latency));
    LG.$("stat-models").textContent = LG.fmt.num(s.models_loaded, 0);
    LG.$("stat-queue").textContent = `${s.requests_running ?? 0} running · ${s.requests_waiting ?? 0} waiting`;
  });

  LG.live.on("gpu_metrics", renderGpus);

  // a finished request changes the totals: refresh the cards soon after (the request log is written in batches)
  let soon = null;
  for (const name of ["inference_completed", "inference_failed"]) {
    LG.live.on(name, () => {
      if (LG.router.current !== "overview" || soon) return;
      soon = setTimeout(() => { soon = null; refreshStatus(); }, 1500);
    });
  }

  LG.pages = LG.pages || {};
  LG.pages.overview = {
    /** Build the charts once per session. */
    init() {
      for (const name of Object.keys(SERIES)) if (!charts[name]) charts[name] = makeChart(name);
      seed();
      LG.api("GET", "/api/v1/system/gpu").then(renderGpus).catch((e) => LG.showError(e, "GPUs"));
    },
    show() {
      refreshStatus();
      clearInterval(statusTimer);
      statusTimer = setInterval(refreshStatus, 10000);
    },
    hide() { clearInterval(statusTimer); },
    reset() {
      for (const name of Object.keys(charts)) { charts[name].destroy(); delete charts[name]; }
      samples = 0;
      LG.$("live-samples").textContent = "0";
      LG.$("live-updated").textContent = "—";
    },
  };
})(window.LG);
