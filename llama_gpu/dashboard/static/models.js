/* Models: the catalog, load with live progress (model_status events), unload, figures. */
"use strict";

(function (LG) {
  /** Per model: the latest model_status event (progress, eta, load_time…). */
  const live = {};
  let models = [];
  const details = {};

  function statusOf(model) {
    const event = live[model.id];
    if (event && event.status === "loading") return "loading";
    if (model.unavailable) return "unavailable";
    if (model.loaded) return "loaded";
    if (event && event.status === "failed") return "failed";
    return model.status || "available";
  }

  function progressCell(model) {
    const event = live[model.id] || {};
    const status = statusOf(model);
    const percent = status === "loaded" ? 100 : status === "loading" ? Number(event.progress || 0) : 0;
    const bar = LG.el("div", {
      class: `progress-bar${status === "loaded" ? " done" : status === "failed" ? " failed" : ""}`,
      style: `width: ${percent}%`,
    });
    const wrap = LG.el("div", {
      class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": percent,
      "data-testid": `model-progress-${model.id}`, dataset: { status },
    }, bar);
    let note = null;
    if (status === "loading") {
      note = LG.el("div", { class: "cell-sub", "data-testid": `model-progress-text-${model.id}` },
        `${percent}%${event.eta_seconds != null ? ` · ~${LG.fmt.num(event.eta_seconds)} s left` : ""}`);
    } else if (status === "failed") {
      note = LG.el("div", { class: "cell-sub" }, event.message || event.error || "load failed");
    } else if (model.unavailable) {
      note = LG.el("div", { class: "cell-sub", title: model.unavailable }, "packages missing");
    }
    return LG.el("td", {},
      LG.el("span", { "data-testid": `model-status-${model.id}` }, LG.badge(status)),
      status === "loading" || status === "loaded" || status === "failed" ? wrap : null, note);
  }

  function figures(model) {
    const d = details[model.id];
    const event = live[model.id] || {};
    const lines = [];
    if (model.loaded) {
      const perf = (d && d.performance) || {};
      lines.push(`${LG.fmt.num(perf.tokens_per_second)} tok/s · ${LG.fmt.num(perf.total_requests, 0)} requests`);
      if (event.load_time != null) lines.push(`loaded in ${LG.fmt.num(event.load_time, 2)} s`);
      if (d && d.runtime && d.runtime.device) lines.push(`device ${d.runtime.device}`);
    }
    return LG.el("td", { class: "cell-sub" }, lines.length ? lines.map((l) => LG.el("div", {}, l)) : "—");
  }

  function row(model) {
    const status = statusOf(model);
    const admin = LG.session.can("admin");
    const busy = status === "loading";
    return LG.el("tr", { "data-model-id": model.id, "data-testid": `model-row-${model.id}` },
      LG.el("td", {}, LG.el("div", { class: "cell-title" }, model.name || model.id),
        LG.el("div", { class: "cell-sub mono" }, model.id)),
      LG.el("td", {}, model.type || "—",
        LG.el("div", { class: "cell-sub" }, (model.capabilities || []).join(", "))),
      LG.el("td", {}, model.size || "—"),
      LG.el("td", {}, model.backend || "—"),
      LG.el("td", {}, model.loaded ? model.memory_usage || "—"
        : LG.el("span", { class: "muted", title: "estimated" }, model.estimated_memory ? `~${model.estimated_memory}` : "—")),
      figures(model),
      progressCell(model),
      LG.el("td", { class: "actions" },
        model.loaded
          ? LG.el("button", {
            class: "btn btn-sm btn-danger", "data-testid": `model-unload-${model.id}`, disabled: !admin,
            onclick: () => unload(model),
          }, "Unload")
          : LG.el("button", {
            class: "btn btn-sm btn-primary", "data-testid": `model-load-${model.id}`,
            disabled: !admin || busy || !!model.unavailable, title: model.unavailable || "",
            onclick: () => load(model),
          }, busy ? "Loading…" : "Load")));
  }

  function render() {
    const body = LG.$("models-body");
    if (!models.length) {
      LG.fill(body, LG.el("tr", {}, LG.el("td", { colspan: 8, class: "muted" }, "No models are known.")));
      return;
    }
    LG.fill(body, models.map(row));
  }

  async function refresh() {
    try {
      const data = await LG.api("GET", "/api/v1/models");
      models = data.models || [];
      render();
      await Promise.all(models.filter((m) => m.loaded).map(async (m) => {
        try { details[m.id] = (await LG.api("GET", `/api/v1/models/${encodeURIComponent(m.id)}`)).model; } catch (_) { /* shown as — */ }
      }));
      render();
      LG.emitModels(models);
    } catch (error) {
      if (!models.length) LG.errorRow(LG.$("models-body"), 8, error);
      LG.showError(error, "Models");
    }
  }

  async function load(model) {
    live[model.id] = { status: "loading", progress: 0 };
    render();
    try {
      const data = await LG.api("POST", `/api/v1/models/${encodeURIComponent(model.id)}/load`, {});
      live[model.id] = { ...(live[model.id] || {}), status: "loaded", progress: 100, load_time: data.model.load_time };
      LG.toast(`${model.id} loaded in ${LG.fmt.num(data.model.load_time, 2)} s`, "ok");
    } catch (error) {
      live[model.id] = { status: "failed", message: error.message, error: error.code };
      LG.showError(error, `Loading ${model.id}`);
    }
    await refresh();
  }

  function unload(model) {
    LG.modal({
      title: `Unload ${model.name || model.id}?`,
      body: LG.el("p", {}, "Requests for this model will load it again when autoload is on."),
      confirmText: "Unload", danger: true,
      onConfirm: async () => {
        const data = await LG.api("DELETE", `/api/v1/models/${encodeURIComponent(model.id)}/unload`);
        delete live[model.id];
        LG.toast(`${model.id} unloaded${data.freed_memory ? `, ${data.freed_memory} freed` : ""}`, "ok");
        await refresh();
      },
    });
  }

  LG.live.on("model_status", (event) => {
    if (!event || !event.model) return;
    live[event.model] = { ...(live[event.model] || {}), ...event };
    const known = models.find((m) => m.id === event.model);
    if (known && (event.status === "loaded" || event.status === "unloaded")) {
      known.loaded = event.status === "loaded";
      if (LG.router.current === "models") refresh();
    }
    if (LG.router.current === "models") render();
  });

  /** Listeners of the model list (the playground's model choice). */
  const listeners = [];
  LG.onModels = (fn) => listeners.push(fn);
  LG.emitModels = (list) => listeners.forEach((fn) => fn(list));
  LG.fetchModels = async () => {
    const data = await LG.api("GET", "/api/v1/models");
    models = data.models || [];
    LG.emitModels(models);
    return models;
  };

  LG.pages = LG.pages || {};
  LG.pages.models = {
    init() { LG.$("models-refresh").addEventListener("click", refresh); },
    show: refresh,
    reset() { models = []; for (const k of Object.keys(live)) delete live[k]; },
  };
})(window.LG);
