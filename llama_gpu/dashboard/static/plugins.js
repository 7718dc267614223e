/* Plugins: list with versions and status, load, unload, edit the config as JSON. */
"use strict";

(function (LG) {
  let plugins = [];
  const events = [];

  function row(p) {
    const admin = LG.session.can("admin");
    const loaded = p.status === "loaded";
    return LG.el("tr", { "data-plugin-id": p.id, "data-testid": `plugin-row-${p.id}` },
      LG.el("td", {}, LG.el("div", { class: "cell-title" }, p.name || p.id),
        LG.el("div", { class: "cell-sub", title: p.description || "" }, LG.el("span", { class: "mono" }, p.id),
          p.description ? ` · ${p.description}` : "")),
      LG.el("td", { class: "mono" }, p.version || "—"),
      LG.el("td", {}, p.category || "—"),
      LG.el("td", {}, p.source || "—", p.package ? LG.el("div", { class: "cell-sub" }, p.package) : null),
      LG.el("td", {}, LG.fmt.num(p.priority, 0)),
      LG.el("td", {},
        LG.el("span", { "data-testid": `plugin-status-${p.id}` }, LG.badge(p.status)),
        p.essential ? LG.el("span", { class: "badge", style: "margin-left:6px" }, "essential") : null,
        p.last_error || p.status_detail
          ? LG.el("div", { class: "cell-sub", title: p.last_error || p.status_detail },
            (p.status_detail || p.last_error).slice(0, 80)) : null),
      LG.el("td", { class: "actions" },
        LG.el("button", {
          class: "btn btn-sm", "data-testid": `plugin-config-${p.id}`, disabled: !admin, onclick: () => editConfig(p),
        }, "Config"),
        loaded
          ? LG.el("button", {
            class: "btn btn-sm btn-danger", "data-testid": `plugin-unload-${p.id}`, disabled: !admin || p.essential,
            title: p.essential ? "essential plugins cannot be unloaded" : "", onclick: () => unload(p),
          }, "Unload")
          : LG.el("button", {
            class: "btn btn-sm btn-primary", "data-testid": `plugin-load-${p.id}`, disabled: !admin,
            onclick: () => load(p),
          }, "Load")));
  }

  function render() {
    const body = LG.$("plugins-body");
    LG.fill(body, plugins.length ? plugins.map(row)
      : LG.el("tr", {}, LG.el("td", { colspan: 7, class: "muted" }, "No plugins.")));
  }

  async function refresh() {
    try {
      plugins = (await LG.api("GET", "/api/v1/plugins")).plugins || [];
      render();
    } catch (error) {
      if (!plugins.length) LG.errorRow(LG.$("plugins-body"), 7, error);
      LG.showError(error, "Plugins");
    }
  }

  async function load(p) {
    try {
      const data = await LG.api("POST", `/api/v1/plugins/${encodeURIComponent(p.id)}/load`, {});
      LG.toast(`${p.id}: ${data.message || "loaded"}`, "ok");
    } catch (error) {
      LG.showError(error, `Loading ${p.id}`);
    }
    refresh();
  }

  function unload(p) {
    LG.modal({
      title: `Unload plugin ${p.name || p.id}?`,
      body: LG.el("p", {}, "Its hooks stop running at once; you can load it again later."),
      confirmText: "Unload", danger: true,
      onConfirm: async () => {
        await LG.api("DELETE", `/api/v1/plugins/${encodeURIComponent(p.id)}/unload`);
        LG.toast(`${p.id} unloaded`, "ok");
        await refresh();
      },
    });
  }

  function editConfig(p) {
    const text = LG.el("textarea", { id: "plugin-config-text", "data-testid": "plugin-config-text", spellcheck: "false" });
    text.value = JSON.stringify(p.config || { enabled: true, priority: p.priority, settings: {} }, null, 2);
    LG.modal({
      title: `Configure ${p.name || p.id}`,
      body: [LG.el("p", { class: "muted small" }, "enabled (true/false), priority (−1000…1000), settings (object)."),
        text],
      confirmText: "Save",
      onConfirm: async () => {
        let config;
        try { config = JSON.parse(text.value); } catch (error) {
          throw new LG.ApiError(0, "INVALID_JSON", `not valid JSON: ${error.message}`);
        }
        if (!config || typeof config !== "object" || Array.isArray(config)) {
          throw new LG.ApiError(0, "INVALID_JSON", "the configuration must be a JSON object");
        }
        await LG.api("PUT", `/api/v1/plugins/${encodeURIComponent(p.id)}/config`, { config });
        LG.toast(`${p.id} configuration saved`, "ok");
        await refresh();
      },
    });
  }

  function addEvent(name, data) {
    events.unshift({ name, data, at: new Date() });
    events.length = Math.min(events.length, 50);
    const feed = LG.$("plugin-events");
    LG.fill(feed, events.map((e) => LG.el("li", {},
      LG.el("time", {}, e.at.toLocaleTimeString([], { hour12: false })),
      LG.badge(e.name.replace("plugin_", ""), e.name === "plugin_error" || e.name === "plugin_disabled" ? "danger" : ""),
      ` ${e.data.plugin_id || ""}`, e.data.error || e.data.reason ? ` — ${e.data.error || e.data.reason}` : "")));
    if (LG.router.current === "plugins") refresh();
  }
  for (const name of ["plugin_loaded", "plugin_unloaded", "plugin_configured", "plugin_error", "plugin_disabled"]) {
    LG.live.on(name, (data) => addEvent(name, data || {}));
  }

  LG.pages = LG.pages || {};
  LG.pages.plugins = {
    init() { LG.$("plugins-refresh").addEventListener("click", refresh); },
    show: refresh,
    reset() { plugins = []; events.length = 0; },
  };
})(window.LG);
