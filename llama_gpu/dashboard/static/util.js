/* Small DOM and formatting helpers shared by the dashboard's pages (window.LG). */
"use strict";
window.LG = window.LG || {};

(function (LG) {
  /** The element with this id. */
  LG.$ = (id) => document.getElementById(id);

  /**
   * Build an element: el("td", {class: "x", dataset: {id: 1}, onclick: f}, "text", child…).
   * Text is always set as text (never parsed as HTML).
   */
  LG.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };

  /** Replace the children of `node`. */
  LG.fill = (node, ...children) => { node.replaceChildren(...children.flat().filter((c) => c != null)); };

  LG.fmt = {
    num(value, digits = 1) {
      if (value === null || value === undefined || Number.isNaN(Number(value))) return "—";
      return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
    },
    pct(value, digits = 1) { return value === null || value === undefined ? "—" : `${LG.fmt.num(value, digits)}%`; },
    bytes(value) {
      if (value === null || value === undefined) return "—";
      if (typeof value === "string") return value;
      const units = ["B", "KB", "MB", "GB", "TB"];
      let size = Number(value), unit = 0;
      while (size >= 1024 && unit < units.length - 1) { size /= 1024; unit += 1; }
      return `${size.toFixed(unit ? 1 : 0)} ${units[unit]}`;
    },
    ms(seconds) {
      if (seconds === null || seconds === undefined) return "—";
      const ms = Number(seconds) * 1000;
      return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
    },
    duration(seconds) {
      if (seconds === null || seconds === undefined) return "—";
      let s = Math.floor(Number(seconds));
      const d = Math.floor(s / 86400); s -= d * 86400;
      const h = Math.floor(s / 3600); s -= h * 3600;
      const m = Math.floor(s / 60); s -= m * 60;
      if (d) return `${d}d ${h}h`;
      if (h) return `${h}h ${m}m`;
      if (m) return `${m}m ${s}s`;
      return `${s}s`;
    },
    time(iso) {
      if (!iso) return "—";
      const date = typeof iso === "number" ? new Date(iso * 1000) : new Date(iso);
      return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleTimeString([], { hour12: false });
    },
    datetime(iso) {
      if (!iso) return "—";
      const date = typeof iso === "number" ? new Date(iso * 1000) : new Date(iso);
      return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString([], { hour12: false });
    },
  };

  /** A badge whose colour follows a status word. */
  LG.badge = function (text, kind) {
    const word = String(text || "unknown");
    const tone = kind || ({
      loaded: "ok", ok: "ok", healthy: "ok", running: "ok", active: "ok", resolved: "ok", online: "ok",
      loading: "info", available: "", unloaded: "", disabled: "warn", warning: "warn", degraded: "warn",
      failed: "danger", error: "danger", firing: "danger", critical: "danger", revoked: "danger", expired: "warn",
    })[word.toLowerCase()] || "";
    return LG.el("span", { class: `badge${tone ? ` badge-${tone}` : ""}` }, word);
  };

  /** A short notice in the corner; errors stay longer. */
  LG.toast = function (message, kind = "info", code) {
    const node = LG.el("div", { class: `toast toast-${kind}`, "data-testid": `toast-${kind}`, role: "status" },
      code ? LG.el("span", { class: "toast-code" }, code) : null, message);
    LG.$("toasts").append(node);
    setTimeout(() => node.remove(), kind === "error" ? 8000 : 4000);
  };

  /** The message of an error, with the field errors of a validation failure ("priority: …"). */
  LG.errorMessage = function (error) {
    let message = (error && error.message) || String(error);
    const errors = error && error.details && error.details.errors;
    if (errors && typeof errors === "object") {
      const flat = [];
      const walk = (value, path) => {
        if (Array.isArray(value) && value.every((v) => typeof v === "string")) flat.push(`${path}: ${value.join(" ")}`);
        else if (value && typeof value === "object") for (const [k, v] of Object.entries(value)) walk(v, path ? `${path}.${k}` : k);
        else flat.push(`${path}: ${value}`);
      };
      walk(errors, "");
      if (flat.length) message += ` (${flat.slice(0, 4).join("; ")})`;
    }
    return message;
  };

  /** Replace a table body with one row that says what went wrong. */
  LG.errorRow = function (body, colspan, error) {
    LG.fill(body, LG.el("tr", {}, LG.el("td", { colspan, class: "form-error", "data-testid": "table-error" },
      `${error.code ? `${error.code}: ` : ""}${LG.errorMessage(error)}`)));
  };

  /** Show an error from the API envelope (or any exception) to the user. */
  LG.showError = function (error, context) {
    const message = LG.errorMessage(error);
    LG.toast(context ? `${context}: ${message}` : message, "error", error && error.code);
  };

  /**
   * A modal dialog. `body` is a node; `onConfirm` may return a promise and throw to keep
   * the dialog open with the error shown. Resolves true when confirmed, false when cancelled.
   */
  LG.modal = function ({ title, body, confirmText = "OK", danger = false, onConfirm }) {
    const backdrop = LG.$("modal"), confirm = LG.$("modal-confirm"), cancel = LG.$("modal-cancel");
    const errorBox = LG.$("modal-error");
    LG.$("modal-title").textContent = title;
    LG.fill(LG.$("modal-body"), body || []);
    confirm.textContent = confirmText;
    confirm.className = `btn ${danger ? "btn-danger" : "btn-primary"}`;
    errorBox.hidden = true;
    backdrop.hidden = false;
    return new Promise((resolve) => {
      const close = (result) => {
        backdrop.hidden = true;
        confirm.onclick = cancel.onclick = null;
        resolve(result);
      };
      cancel.onclick = () => close(false);
      confirm.onclick = async () => {
        confirm.disabled = true;
        try {
          if (onConfirm) await onConfirm();
          close(true);
        } catch (error) {
          errorBox.textContent = error.code ? `${error.code}: ${LG.errorMessage(error)}` : LG.errorMessage(error);
          errorBox.hidden = false;
        } finally {
          confirm.disabled = false;
        }
      };
    });
  };
})(window.LG);
