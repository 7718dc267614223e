/* Playground: a streamed chat over the socket (chat → chat_chunk… → chat_done), with a stop button. */
"use strict";

(function (LG) {
  let history = [];
  let current = null; // {requestId, node, text, started}

  function log() { return LG.$("chat-log"); }

  function addMessage(role, text, extra = {}) {
    const empty = log().querySelector(".chat-empty");
    if (empty) empty.remove();
    const node = LG.el("div", { class: `msg msg-${role}`, "data-testid": `chat-msg-${role}`, ...extra }, text);
    log().append(node);
    log().scrollTop = log().scrollHeight;
    return node;
  }

  function setBusy(busy) {
    LG.$("chat-send").disabled = busy;
    LG.$("chat-stop").disabled = !busy;
  }

  function status(text) { LG.$("chat-status").textContent = text; }

  function finish(extraClass) {
    if (!current) return;
    current.node.classList.remove("streaming");
    if (extraClass) current.node.classList.add(extraClass);
    current = null;
    setBusy(false);
  }

  function newRequestId() {
    const random = (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`).replace(/-/g, "");
    return `chat-${random.slice(0, 20)}`;
  }

  async function send(event) {
    if (event) event.preventDefault();
    const input = LG.$("chat-input");
    const content = input.value.trim();
    if (!content || current) return;
    const model = LG.$("chat-model").value;
    const maxTokens = Number(LG.$("chat-max-tokens").value);
    if (!Number.isInteger(maxTokens) || maxTokens < 1) {
      LG.toast("Max tokens must be a positive whole number", "error");
      return;
    }
    const system = LG.$("chat-system").value.trim();
    history.push({ role: "user", content });
    addMessage("user", content);
    input.value = "";
    const messages = system ? [{ role: "system", content: system }, ...history] : [...history];
    const requestId = newRequestId();
    const node = addMessage("assistant", "", { class: "msg msg-assistant streaming", "data-request-id": requestId });
    current = { requestId, node, text: "", started: performance.now(), firstChunk: null };
    setBusy(true);
    status("waiting for the model…");
    try {
      const ack = await LG.live.request("chat", {
        request_id: requestId, model: model || undefined, messages, max_tokens: maxTokens,
        temperature: Number(LG.$("chat-temperature").value), top_p: Number(LG.$("chat-top-p").value),
      }, 120000);
      if (!ack || ack.success === false) throw Object.assign(new Error((ack && ack.error && ack.error.message) || "refused"),
        { code: ack && ack.error && ack.error.code });
      if (ack.request_id && current && current.requestId === requestId) current.requestId = ack.request_id;
    } catch (error) {
      failed(requestId, error);
    }
  }

  function failed(requestId, error) {
    if (!current || current.requestId !== requestId) return;
    current.node.remove();
    addMessage("error", `${error.code ? `${error.code}: ` : ""}${error.message || error}`);
    history.pop();
    finish();
    status("");
    LG.showError(error, "Chat");
  }

  function stop() {
    if (!current) return;
    LG.live.emit("chat_cancel", { request_id: current.requestId });
    status("stopping…");
  }

  LG.live.on("chat_chunk", (chunk) => {
    if (!current || chunk.request_id !== current.requestId) return;
    if (current.firstChunk === null) current.firstChunk = performance.now();
    current.text += chunk.text || "";
    current.node.textContent = current.text;
    log().scrollTop = log().scrollHeight;
    status("streaming…");
  });

  LG.live.on("chat_done", (done) => {
    if (!current || done.request_id !== current.requestId) return;
    const text = done.text != null && done.text.length >= current.text.length ? done.text : current.text;
    current.node.textContent = text.trimEnd();
    history.push({ role: "assistant", content: text });
    const usage = done.usage || {};
    const seconds = done.inference_time != null ? done.inference_time : (performance.now() - current.started) / 1000;
    const ttft = current.firstChunk !== null ? (current.firstChunk - current.started) / 1000 : null;
    const rate = usage.completion_tokens && seconds ? usage.completion_tokens / seconds : null;
    const meta = `${done.model || ""} · ${usage.completion_tokens ?? "?"} tokens · ${LG.fmt.num(seconds, 2)} s` +
      `${rate ? ` · ${LG.fmt.num(rate)} tok/s` : ""} · ${done.finish_reason || "done"}`;
    current.node.after(LG.el("div", { class: "msg-meta", "data-testid": "chat-meta" }, meta));
    LG.fill(LG.$("chat-usage"),
      LG.el("div", {}, `Prompt tokens: ${usage.prompt_tokens ?? "—"}`),
      LG.el("div", {}, `Completion tokens: ${usage.completion_tokens ?? "—"}`),
      LG.el("div", {}, `Time to first chunk: ${LG.fmt.ms(ttft)}`),
      LG.el("div", {}, `Inference time: ${LG.fmt.num(seconds, 2)} s`),
      LG.el("div", {}, `Finish reason: ${done.finish_reason || "—"}`));
    finish(done.finish_reason === "cancelled" ? "cancelled" : null);
    status(done.finish_reason === "cancelled" ? "stopped" : "done");
  });

  LG.live.on("chat_error", (data) => {
    if (!current || data.request_id !== current.requestId) return;
    const error = data.error || {};
    if (error.code === "CANCELLED" || error.code === "REQUEST_CANCELLED") {
      current.node.after(LG.el("div", { class: "msg-meta" }, "stopped"));
      if (current.text) history.push({ role: "assistant", content: current.text });
      finish();
      status("stopped");
      return;
    }
    failed(current.requestId, error);
  });

  LG.live.on("disconnect", () => {
    if (current) failed(current.requestId, { code: "DISCONNECTED", message: "the live connection dropped" });
  });

  function fillModels(models) {
    const select = LG.$("chat-model");
    const previous = select.value;
    const usable = models.filter((m) => (m.capabilities || []).some((c) => c === "chat" || c === "text-generation"));
    LG.fill(select, LG.el("option", { value: "" }, "default model"),
      usable.map((m) => LG.el("option", { value: m.id }, `${m.name || m.id}${m.loaded ? " (loaded)" : ""}`)));
    if (usable.some((m) => m.id === previous)) select.value = previous;
  }
  LG.onModels(fillModels);

  LG.pages = LG.pages || {};
  LG.pages.playground = {
    init() {
      LG.$("chat-form").addEventListener("submit", send);
      LG.$("chat-stop").addEventListener("click", stop);
      LG.$("chat-clear").addEventListener("click", () => {
        if (current) stop();
        history = [];
        LG.fill(log(), LG.el("div", { class: "chat-empty muted" }, "Send a message to start a streamed chat."));
        LG.fill(LG.$("chat-usage"));
        status("");
      });
      LG.$("chat-input").addEventListener("keydown", (e) => {
        if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(e);
      });
      for (const id of ["chat-temperature", "chat-top-p"]) {
        const input = LG.$(id);
        input.addEventListener("input", () => { LG.$(`${id}-out`).textContent = input.value; });
      }
    },
    show() { LG.fetchModels().catch((e) => LG.showError(e, "Models")); },
    reset() { history = []; current = null; setBusy(false); },
  };
})(window.LG);
