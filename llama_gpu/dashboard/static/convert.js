/* Conversion: re-quantize a GGUF model as a background job (convert.* events on the "convert" channel). */
"use strict";

(function (LG) {
  const EVENTS = ["convert.started", "convert.progress", "convert.completed", "convert.failed"];
  const TONES = { queued: "", running: "info", processing: "info", completed: "ok", failed: "danger", cancelled: "warn" };
  /** Per job id: the latest event (status, phase, progress). */
  const live = {};
  let jobs = [];

  /** The row's own state (queued / running / completed…), the live event's when newer. */
  function statusOf(job) {
    const event = live[job.job_id] || {};
    if (event.status && event.status !== "processing") return event.status;
    if (["completed", "failed", "cancelled"].includes(job.state)) return job.state;
    if (event.status === "processing") return "running";
    return job.state || job.status;
  }

  function percentOf(job) {
    const status = statusOf(job);
    if (status === "completed") return 100;
    const event = live[job.job_id] || {};
    const fraction = event.progress != null ? event.progress : job.progress;
    return Math.max(0, Math.min(100, Math.round(100 * Number(fraction || 0))));
  }

  function progressCell(job) {
    const status = statusOf(job);
    const percent = percentOf(job);
    const event = live[job.job_id] || {};
    const phase = event.phase || job.phase;
    const bar = LG.el("div", {
      class: `progress-bar${status === "completed" ? " done" : ["failed", "cancelled"].includes(status) ? " failed" : ""}`,
      style: `width: ${percent}%`,
    });
    const error = event.error || job.error;
    const note = status === "running" ? `${percent}%${phase ? ` · ${phase}` : ""}`
      : ["failed", "cancelled"].includes(status) && error && error !== status ? error : null;
    return LG.el("td", {},
      LG.el("span", { "data-testid": `convert-status-${job.job_id}` }, LG.badge(status, TONES[status])),
      LG.el("div", {
        class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": percent,
        "data-testid": `convert-progress-${job.job_id}`,
      }, bar),
      note ? LG.el("div", { class: "cell-sub", "data-testid": `convert-note-${job.job_id}`, title: note },
        note.slice(0, 120)) : null);
  }

  function sizeCell(job) {
    if (job.output_bytes == null || job.size_reduction == null) {
      return LG.el("td", { class: "cell-sub" }, job.source_bytes != null ? `${LG.fmt.bytes(job.source_bytes)} →` : "—");
    }
    const change = -100 * Number(job.size_reduction);
    const sign = change > 0 ? "+" : "";
    return LG.el("td", {},
      LG.el("div", { class: "cell-title", "data-testid": `convert-size-${job.job_id}` },
        `${LG.fmt.bytes(job.source_bytes)} → ${LG.fmt.bytes(job.output_bytes)}`),
      LG.el("div", { class: "cell-sub", "data-testid": `convert-reduction-${job.job_id}` },
        `${sign}${LG.fmt.num(change, 1)}% size${change > 0 ? " (larger)" : change < 0 ? " (smaller)" : ""}`));
  }

  function row(job) {
    const status = statusOf(job);
    const active = ["queued", "running", "processing"].includes(status);
    return LG.el("tr", { "data-testid": `convert-row-${job.job_id}` },
      LG.el("td", {}, LG.el("div", { class: "cell-title mono" }, job.source_model || "—"),
        LG.el("div", { class: "cell-sub mono" }, `#${job.job_id} · ${LG.fmt.datetime(job.created_at)}`)),
      LG.el("td", { class: "mono" }, job.quantization || "—"),
      progressCell(job),
      LG.el("td", {},
        LG.el("div", { class: "mono", "data-testid": `convert-output-${job.job_id}` }, job.output_file || "—"),
        job.model_id ? LG.el("div", { class: "cell-sub" }, `model ${job.model_id}`) : null),
      sizeCell(job),
      LG.el("td", { class: "cell-sub", "data-testid": `convert-duration-${job.job_id}` },
        job.duration != null ? LG.fmt.ms(job.duration)
          : job.estimated_duration != null && active ? `~${LG.fmt.ms(job.estimated_duration)}` : "—"),
      LG.el("td", { class: "actions" },
        active
          ? LG.el("button", {
            class: "btn btn-sm btn-danger", "data-testid": `convert-cancel-${job.job_id}`,
            disabled: !LG.session.can("admin"), onclick: () => cancel(job),
          }, "Cancel")
          : null));
  }

  function render() {
    const body = LG.$("convert-body");
    if (!jobs.length) {
      LG.fill(body, LG.el("tr", {}, LG.el("td", { colspan: 7, class: "muted" }, "No conversions yet: start one above.")));
      return;
    }
    LG.fill(body, jobs.map(row));
  }

  async function refresh() {
    try {
      jobs = (await LG.api("GET", "/v1/convert?limit=50")).data || [];
      for (const job of jobs) {
        if (["completed", "failed", "cancelled"].includes(job.state)) delete live[job.job_id];
      }
      render();
    } catch (error) {
      if (!jobs.length) LG.errorRow(LG.$("convert-body"), 7, error);
      LG.showError(error, "Conversions");
    }
  }

  /** Sources: GGUF models served by llama.cpp. */
  function models(list) {
    const select = LG.$("convert-source");
    const current = select.value;
    const usable = list.filter((m) => !m.unavailable && (m.backend === "llamacpp" || (m.format || "").toLowerCase() === "gguf"));
    LG.fill(select, usable.length
      ? usable.map((m) => LG.el("option", { value: m.id, selected: m.id === current }, m.id))
      : LG.el("option", { value: "" }, "no GGUF models"));
  }

  function showFormError(error) {
    const box = LG.$("convert-error");
    if (!error) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.textContent = `${error.code ? `${error.code}: ` : ""}${LG.errorMessage(error)}`;
    box.hidden = false;
  }

  async function start(event) {
    event.preventDefault();
    showFormError(null);
    const button = LG.$("convert-start");
    button.disabled = true;
    try {
      const data = await LG.api("POST", "/v1/convert", {
        source_model: LG.$("convert-source").value,
        target_format: "gguf",
        quantization: LG.$("convert-quantization").value,
      });
      LG.toast(`Conversion #${data.job_id} queued: ${data.output_file}`, "ok");
      await refresh();
    } catch (error) {
      showFormError(error);
      LG.showError(error, "Starting a conversion");
    } finally {
      button.disabled = false;
    }
  }

  function cancel(job) {
    LG.modal({
      title: `Cancel conversion #${job.job_id}?`,
      body: LG.el("p", {}, "Its partial output is removed."),
      confirmText: "Cancel conversion", danger: true,
      onConfirm: async () => {
        const data = await LG.api("POST", `/v1/convert/${job.job_id}/cancel`);
        live[job.job_id] = { ...(live[job.job_id] || {}), status: data.state || data.status };
        await refresh();
      },
    });
  }

  function onEvent(name, payload) {
    if (!payload || payload.job_id == null) return;
    const id = payload.job_id;
    live[id] = { ...(live[id] || {}), ...payload };
    if (name === "convert.completed") LG.fetchModels().catch(() => {}); // the new model is in the catalog
    if (LG.router.current !== "convert") return;
    if (!jobs.some((j) => j.job_id === id) || name !== "convert.progress") refresh();
    else render();
  }

  /** The shell subscribes to its own channels; this page adds "convert" on every (re)connection. */
  LG.live.on("connected", (info) => {
    const socket = LG.live.socket;
    if (!socket) return;
    // "convert" needs admin: the server lists the channels this caller may subscribe to
    if (info && Array.isArray(info.channels) && !info.channels.includes("convert")) return;
    socket.emit("subscribe", { channels: ["convert"] }, (ack) => {
      if (ack && ack.success === false) LG.showError(ack.error || {}, "Conversion updates");
    });
    for (const name of EVENTS) socket.on(name, (payload) => onEvent(name, payload));
  });

  LG.pages = LG.pages || {};
  LG.pages.convert = {
    init() {
      LG.$("convert-form").addEventListener("submit", start);
      LG.$("convert-refresh").addEventListener("click", refresh);
      LG.onModels(models);
    },
    show() {
      showFormError(null);
      LG.fetchModels().catch(() => {});
      return refresh();
    },
    hide() {},
    reset() {
      jobs = [];
      showFormError(null);
      for (const k of Object.keys(live)) delete live[k];
    },
  };
})(window.LG);
