/* The Socket.IO channel: connect with the login token, subscribe, fan events out to pages. */
"use strict";

(function (LG) {
  const CHANNELS = [
    "system_metrics", "gpu_metrics", "inference_stats", "inference_events", "plugin_events", "model_events",
  ];
  const EVENTS = [
    "system_metrics", "gpu_metrics", "inference_stats", "inference_started", "inference_completed",
    "inference_failed", "plugin_loaded", "plugin_unloaded", "plugin_configured", "plugin_error",
    "plugin_disabled", "model_status", "alert", "chat_chunk", "chat_done", "chat_error",
  ];
  const handlers = {};
  let socket = null;

  function setState(text, tone) {
    LG.$("conn-status").textContent = text;
    LG.$("conn-dot").className = `dot dot-${tone}`;
  }

  LG.live = {
    /** Call `handler(payload)` for every socket event `name`. */
    on(name, handler) { (handlers[name] = handlers[name] || []).push(handler); },

    get socket() { return socket; },
    get connected() { return !!socket && socket.connected; },

    /** Connect (again) with the session's token. */
    connect() {
      LG.live.disconnect();
      socket = io({ auth: { token: LG.session.token }, reconnectionDelayMax: 5000 });
      setState("connecting…", "off");
      socket.on("connect", () => setState("live", "on"));
      socket.on("connected", (info) => {
        const known = (info && info.channels) || CHANNELS;
        const wanted = CHANNELS.filter((c) => known.includes(c));
        socket.emit("subscribe", { channels: wanted }, (ack) => {
          if (ack && ack.success === false) LG.showError(ack.error || {}, "Live updates");
        });
        dispatch("connected", info);
      });
      socket.on("disconnect", (reason) => {
        setState("offline", "off");
        dispatch("disconnect", reason);
      });
      socket.on("connect_error", (error) => {
        setState("refused", "bad");
        const data = error && error.data;
        const message = (data && data.message) || (error && error.message) || "connection refused";
        if (!socket.active) LG.toast(`Live updates refused: ${message}`, "error", data && data.code);
      });
      for (const name of EVENTS) socket.on(name, (payload) => dispatch(name, payload));
    },

    disconnect() {
      if (socket) {
        socket.removeAllListeners();
        socket.disconnect();
        socket = null;
      }
      setState("offline", "off");
    },

    /** Emit with an acknowledgement; resolves with the ack (rejects when none comes in `timeout` ms). */
    request(name, payload, timeout = 15000) {
      return new Promise((resolve, reject) => {
        if (!socket || !socket.connected) {
          reject(new LG.ApiError(0, "NOT_CONNECTED", "the live connection is down; try again in a moment"));
          return;
        }
        socket.timeout(timeout).emit(name, payload, (error, ack) => {
          if (error) reject(new LG.ApiError(0, "TIMEOUT", `no answer to ${name}`));
          else resolve(ack);
        });
      });
    },

    emit(name, payload) { if (socket) socket.emit(name, payload); },
  };

  function dispatch(name, payload) {
    for (const handler of handlers[name] || []) {
      try { handler(payload); } catch (error) { console.error(`handler of ${name} failed`, error); }
    }
  }
})(window.LG);
