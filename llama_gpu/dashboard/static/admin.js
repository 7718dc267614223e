/* Logs (level filter), API keys (create — shown once — and revoke), alerts (REST and live). */
"use strict";

(function (LG) {
  LG.pages = LG.pages || {};

  // ------------------------------------------------------------------ logs
  let logsTimer = null;
  const LEVEL_TONE = { DEBUG: "", INFO: "info", WARNING: "warn", ERROR: "danger", CRITICAL: "danger" };

  async function refreshLogs() {
    const level = LG.$("logs-level").value;
    const body = LG.$("logs-body");
    try {
      const data = await LG.api("GET", `/api/v1/system/logs?level=${encodeURIComponent(level)}&limit=200`);
      const logs = (data.logs || []).slice().reverse(); // newest first on screen
      LG.fill(body, logs.length ? logs.map((r) => {
        const meta = r.metadata && Object.keys(r.metadata).length ? JSON.stringify(r.metadata) : "";
        return LG.el("tr", { "data-testid": "log-row", dataset: { level: r.level } },
          LG.el("td", { class: "mono nowrap", title: r.timestamp }, LG.fmt.datetime(r.timestamp)),
          LG.el("td", {}, LG.badge(r.level, LEVEL_TONE[r.level] || "")),
          LG.el("td", { class: "mono" }, r.component || "—"),
          LG.el("td", {}, LG.el("div", { class: "log-msg" }, r.message),
            meta ? LG.el("div", { class: "log-meta mono" }, meta) : null));
      }) : LG.el("tr", {}, LG.el("td", { colspan: 4, class: "muted" }, `No records at ${level} or above.`)));
    } catch (error) {
      LG.errorRow(body, 4, error);
      LG.showError(error, "Logs");
    }
  }

  function autoLogs() {
    clearInterval(logsTimer);
    if (LG.$("logs-auto").checked) logsTimer = setInterval(refreshLogs, 5000);
  }

  LG.pages.logs = {
    init() {
      LG.$("logs-level").addEventListener("change", refreshLogs);
      LG.$("logs-refresh").addEventListener("click", refreshLogs);
      LG.$("logs-auto").addEventListener("change", autoLogs);
    },
    show() { refreshLogs(); autoLogs(); },
    hide() { clearInterval(logsTimer); },
  };

  // ------------------------------------------------------------------ API keys
  function keyState(k) {
    if (k.revoked_at) return "revoked";
    if (k.expires_at && new Date(k.expires_at) < new Date()) return "expired";
    return "active";
  }

  async function refreshKeys() {
    const body = LG.$("keys-body");
    try {
      const keys = (await LG.api("GET", "/api/v1/auth/keys")).keys || [];
      keys.sort((a, b) => (keyState(a) === "active" ? 0 : 1) - (keyState(b) === "active" ? 0 : 1) || b.id - a.id);
      LG.fill(body, keys.length ? keys.map((k) => {
        const state = keyState(k);
        return LG.el("tr", { "data-key-id": k.id, "data-testid": `key-row-${k.id}`, dataset: { state } },
          LG.el("td", { class: "cell-title" }, k.name),
          LG.el("td", { class: "mono" }, `${k.prefix}…`),
          LG.el("td", {}, (k.permissions || []).map((p) => LG.badge(p, p === "admin" ? "warn" : "info")), " "),
          LG.el("td", {}, LG.fmt.datetime(k.created_at)),
          LG.el("td", {}, k.expires_at ? LG.fmt.datetime(k.expires_at) : "never"),
          LG.el("td", {}, k.last_used_at ? LG.fmt.datetime(k.last_used_at) : "never"),
          LG.el("td", { "data-testid": `key-status-${k.id}` }, LG.badge(state)),
          LG.el("td", { class: "actions" }, state === "active"
            ? LG.el("button", {
              class: "btn btn-sm btn-danger", "data-testid": `key-revoke-${k.id}`, onclick: () => revoke(k),
            }, "Revoke") : null));
      }) : LG.el("tr", {}, LG.el("td", { colspan: 8, class: "muted" }, "No keys yet.")));
    } catch (error) {
      LG.errorRow(body, 8, error);
      LG.showError(error, "API keys");
    }
  }

  async function createKey(event) {
    event.preventDefault();
    const name = LG.$("key-name").value.trim();
    const permissions = [...document.querySelectorAll("input[name=key-perm]:checked")].map((i) => i.value);
    if (!name) { LG.toast("Give the key a name", "error"); return; }
    if (!permissions.length) { LG.toast("Choose at least one permission", "error"); return; }
    const expires = LG.$("key-expires").value;
    const button = LG.$("key-create");
    button.disabled = true;
    try {
      const data = await LG.api("POST", "/v1/auth/keys", { name, permissions, expires_in: expires || null });
      LG.$("key-secret").textContent = data.api_key;
      LG.$("key-created").dataset.keyId = String(data.key_id);
      LG.$("key-created").hidden = false;
      LG.$("key-name").value = "";
      LG.toast(`Key "${name}" created`, "ok");
      await refreshKeys();
    } catch (error) {
      LG.showError(error, "Creating the key");
    } finally {
      button.disabled = false;
    }
  }

  function hideSecret() {
    LG.$("key-secret").textContent = "";
    LG.$("key-created").hidden = true;
  }

  function revoke(k) {
    LG.modal({
      title: `Revoke key "${k.name}"?`,
      body: LG.el("p", {}, "Applications using ", LG.el("code", {}, `${k.prefix}…`), " will be refused at once."),
      confirmText: "Revoke", danger: true,
      onConfirm: async () => {
        await LG.api("DELETE", `/api/v1/auth/keys/${k.id}`);
        if (LG.$("key-created").dataset.keyId === String(k.id)) hideSecret();
        LG.toast(`Key "${k.name}" revoked`, "ok");
        await refreshKeys();
      },
    });
  }

  LG.pages.keys = {
    init() {
      LG.$("key-form").addEventListener("submit", createKey);
      LG.$("key-dismiss").addEventListener("click", hideSecret);
      LG.$("key-copy").addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(LG.$("key-secret").textContent);
          LG.toast("Copied to the clipboard", "ok");
        } catch (_) {
          const range = document.createRange();
          range.selectNodeContents(LG.$("key-secret"));
          getSelection().removeAllRanges();
          getSelection().addRange(range);
          LG.toast("Selected: press Ctrl+C to copy", "info");
        }
      });
    },
    show: refreshKeys,
    hide: hideSecret, // the secret is shown once: leaving the page forgets it
    reset: hideSecret,
  };

  // ------------------------------------------------------------------ alerts
  const active = new Map();
  const alertEvents = [];
  const SEVERITY_TONE = { critical: "danger", error: "danger", warning: "warn", info: "info" };

  function renderAlerts() {
    const list = [...active.values()];
    LG.fill(LG.$("alerts-body"), list.length ? list.map((a) => LG.el("tr", { "data-testid": `alert-row-${a.id}` },
      LG.el("td", {}, LG.badge(a.severity || "warning", SEVERITY_TONE[a.severity] || "warn")),
      LG.el("td", { class: "mono" }, a.rule),
      LG.el("td", {}, a.message),
      LG.el("td", {}, LG.fmt.num(a.value, 2)),
      LG.el("td", {}, LG.fmt.num(a.threshold, 2)),
      LG.el("td", {}, LG.fmt.datetime(a.started_at))))
      : LG.el("tr", {}, LG.el("td", { colspan: 6, class: "muted" }, "No active alerts. All clear.")));
    const badge = LG.$("alert-badge");
    badge.textContent = String(list.length);
    badge.hidden = list.length === 0;
  }

  function renderAlertEvents() {
    LG.fill(LG.$("alert-events"), alertEvents.length ? alertEvents.map((a) => LG.el("li", {},
      LG.el("time", {}, LG.fmt.time(a.state === "resolved" ? a.resolved_at || a.timestamp : a.started_at || a.timestamp)),
      LG.badge(a.state), ` ${a.rule}: ${a.message || ""}`)) : LG.el("li", { class: "muted" }, "None yet."));
  }

  async function refreshAlerts() {
    try {
      const data = await LG.api("GET", "/api/v1/monitoring/alerts");
      active.clear();
      for (const a of data.alerts || []) active.set(a.id, a);
      renderAlerts();
      LG.fill(LG.$("rules-body"), (data.rules || []).map((r) => LG.el("tr", {},
        LG.el("td", { class: "mono" }, r.name), LG.el("td", { class: "mono" }, r.metric),
        LG.el("td", { class: "mono" }, `${r.op} ${r.threshold}`),
        LG.el("td", {}, LG.badge(r.severity, SEVERITY_TONE[r.severity] || "")))));
    } catch (error) {
      LG.errorRow(LG.$("alerts-body"), 6, error);
      LG.showError(error, "Alerts");
    }
  }

  LG.live.on("alert", (a) => {
    if (!a) return;
    if (a.state === "firing") {
      active.set(a.id, a);
      LG.toast(`Alert: ${a.message || a.rule}`, "error", a.severity);
    } else {
      active.delete(a.id);
    }
    alertEvents.unshift(a);
    alertEvents.length = Math.min(alertEvents.length, 50);
    renderAlerts();
    renderAlertEvents();
  });

  LG.pages.alerts = {
    init() { LG.$("alerts-refresh").addEventListener("click", refreshAlerts); },
    show: refreshAlerts,
    start: refreshAlerts, // the nav badge counts active alerts from the start
    reset() { active.clear(); alertEvents.length = 0; renderAlerts(); renderAlertEvents(); },
  };
})(window.LG);
