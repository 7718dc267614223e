/* The REST client: the login token, `Authorization: Bearer`, and the error envelope. */
"use strict";

(function (LG) {
  const TOKEN = "llama_gpu.token", USER = "llama_gpu.user", OPEN = "llama_gpu.open";

  /** An error from the API's envelope: {success: false, error: {code, message, details}}. */
  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }
  LG.ApiError = ApiError;

  LG.session = {
    get token() { return sessionStorage.getItem(TOKEN); },
    get user() {
      try { return JSON.parse(sessionStorage.getItem(USER) || "null"); } catch (_) { return null; }
    },
    save(token, user) {
      sessionStorage.setItem(TOKEN, token);
      sessionStorage.setItem(USER, JSON.stringify(user || null));
    },
    /** The server runs with LLAMA_GPU_AUTH=off: no login, every caller is an admin. */
    get open() { return sessionStorage.getItem(OPEN) === "1"; },
    get active() { return !!LG.session.token || LG.session.open; },
    saveOpen() {
      sessionStorage.setItem(OPEN, "1");
      sessionStorage.setItem(USER, JSON.stringify({
        username: "open access", role: "auth off", permissions: ["read", "write", "admin"],
      }));
    },
    clear() { sessionStorage.removeItem(TOKEN); sessionStorage.removeItem(USER); sessionStorage.removeItem(OPEN); },
    can(permission) {
      const user = LG.session.user;
      return !!user && (user.permissions || []).includes(permission);
    },
  };

  /**
   * Call the API: `LG.api("GET", "/api/v1/models")`. Resolves with the JSON body; rejects
   * with an ApiError carrying the envelope's code and message. A 401 ends the session.
   */
  LG.api = async function (method, path, body) {
    const headers = { Accept: "application/json" };
    const token = LG.session.token;
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (error) {
      throw new ApiError(0, "NETWORK_ERROR", `the server cannot be reached (${error.message})`);
    }
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok || (data && data.success === false)) {
      const error = (data && data.error) || {};
      const failure = new ApiError(
        response.status,
        error.code || `HTTP_${response.status}`,
        error.message || response.statusText || "request failed",
        error.details,
      );
      if (response.status === 401 && token && path !== "/api/v1/auth/login" && LG.onUnauthorized) {
        LG.onUnauthorized(failure);
      }
      throw failure;
    }
    return data;
  };

  /** Whether the server runs without authentication (LLAMA_GPU_AUTH=off; the page says so). */
  LG.openAccess = () => document.body.dataset.auth === "off";

  /** Log in and keep the token for this browser tab. */
  LG.login = async function (username, password) {
    const data = await LG.api("POST", "/api/v1/auth/login", { username, password });
    LG.session.save(data.token, data.user);
    return data;
  };

  /** Revoke the login token on the server (best effort: the tab forgets it either way). */
  LG.logout = async function () {
    if (!LG.session.token) return;
    try { await LG.api("POST", "/api/v1/auth/logout"); } catch (_) { /* expired or unreachable: nothing to revoke */ }
  };
})(window.LG);
