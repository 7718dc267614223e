"use strict";
/**
 * llama-gpu-client: the JavaScript/Node client of the LLaMA GPU inference server.
 *
 * The native REST API (/api/v1) over fetch, Server-Sent Events as an async iterator, and the
 * Socket.IO live channel over socket.io-client. Errors are mapped by the server's error code;
 * 429/503 answers are retried after their Retry-After, up to maxRetries.
 *
 * This file is the implementation (CommonJS); index.js re-exports it as an ES module.
 */

const { io } = require("socket.io-client");

const VERSION = "0.1.0";
const RETRY_STATUSES = new Set([429, 503]);

// ------------------------------------------------------------------ errors
/** Base of every error: code (the server's), status (HTTP), details, requestId, retryAfter (seconds). */
class LlamaGPUError extends Error {
  constructor(message, { code, status = null, details = {}, requestId = null, retryAfter = null } = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code || new.target.defaultCode;
    this.status = status;
    this.details = details || {};
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}
LlamaGPUError.defaultCode = "INTERNAL_ERROR";

function errorClass(name, defaultCode, Base = LlamaGPUError) {
  const cls = { [name]: class extends Base {} }[name];
  cls.defaultCode = defaultCode;
  return cls;
}

const APIConnectionError = errorClass("APIConnectionError", "CONNECTION_ERROR");
const InvalidInputError = errorClass("InvalidInputError", "INVALID_INPUT");
const PayloadTooLargeError = errorClass("PayloadTooLargeError", "PAYLOAD_TOO_LARGE", InvalidInputError);
const AuthenticationError = errorClass("AuthenticationError", "AUTHENTICATION_FAILED");
const PermissionDeniedError = errorClass("PermissionDeniedError", "PERMISSION_DENIED");
const NotFoundError = errorClass("NotFoundError", "NOT_FOUND");
const ModelNotFoundError = errorClass("ModelNotFoundError", "MODEL_NOT_FOUND", NotFoundError);
const PluginNotFoundError = errorClass("PluginNotFoundError", "PLUGIN_NOT_FOUND", NotFoundError);
const ConflictError = errorClass("ConflictError", "CONFLICT");
const ModelNotLoadedError = errorClass("ModelNotLoadedError", "MODEL_NOT_LOADED", ConflictError);
const PluginNotLoadedError = errorClass("PluginNotLoadedError", "PLUGIN_NOT_LOADED", ConflictError);
const PluginEssentialError = errorClass("PluginEssentialError", "PLUGIN_ESSENTIAL", ConflictError);
const RequestCancelledError = errorClass("RequestCancelledError", "REQUEST_CANCELLED", ConflictError);
const RateLimitError = errorClass("RateLimitError", "RATE_LIMIT_EXCEEDED");
const ServiceUnavailableError = errorClass("ServiceUnavailableError", "SERVICE_UNAVAILABLE");
const ServerOverloadedError = errorClass("ServerOverloadedError", "SERVER_OVERLOADED", ServiceUnavailableError);
const ServerError = errorClass("ServerError", "INTERNAL_ERROR");

const BY_CODE = {
  INVALID_INPUT: InvalidInputError,
  UNSUPPORTED_MEDIA_TYPE: InvalidInputError,
  PAYLOAD_TOO_LARGE: PayloadTooLargeError,
  AUTHENTICATION_FAILED: AuthenticationError,
  PERMISSION_DENIED: PermissionDeniedError,
  NOT_FOUND: NotFoundError,
  MODEL_NOT_FOUND: ModelNotFoundError,
  PLUGIN_NOT_FOUND: PluginNotFoundError,
  CONFLICT: ConflictError,
  MODEL_NOT_LOADED: ModelNotLoadedError,
  PLUGIN_NOT_LOADED: PluginNotLoadedError,
  PLUGIN_ESSENTIAL: PluginEssentialError,
  REQUEST_CANCELLED: RequestCancelledError,
  RATE_LIMIT_EXCEEDED: RateLimitError,
  SERVICE_UNAVAILABLE: ServiceUnavailableError,
  INSUFFICIENT_MEMORY: ServiceUnavailableError,
  BACKEND_UNAVAILABLE: ServiceUnavailableError,
  SERVER_OVERLOADED: ServerOverloadedError,
  INTERNAL_ERROR: ServerError,
  INFERENCE_FAILED: ServerError,
  MODEL_LOAD_FAILED: ServerError,
  PLUGIN_LOAD_FAILED: ServerError,
  PLUGIN_FAILED: ServerError,
};
const BY_STATUS = {
  400: InvalidInputError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  413: PayloadTooLargeError,
  415: InvalidInputError,
  429: RateLimitError,
  503: ServiceUnavailableError,
};

/** The error class of a server error code (or, for an unknown code, of the HTTP status). */
function errorForCode(code, status = null) {
  if (code && BY_CODE[code]) return BY_CODE[code];
  if (status && BY_STATUS[status]) return BY_STATUS[status];
  if (status && status >= 500) return ServerError;
  return LlamaGPUError;
}

/** The error for the `error` object of an envelope, a socket ack or an SSE event. */
function buildError(error, { status = null, requestId = null, retryAfter = null, fallback = "request failed" } = {}) {
  const e = error && typeof error === "object" ? error : {};
  const details = e.details && typeof e.details === "object" ? e.details : {};
  if (retryAfter == null && typeof details.retry_after === "number") retryAfter = details.retry_after;
  // the /v1 endpoints send the OpenAI shape, with the code in lower case
  const given = typeof e.code === "string" ? e.code.toUpperCase() : undefined;
  const cls = errorForCode(given, status);
  const code = given || (cls === LlamaGPUError && status ? `HTTP_${status}` : undefined);
  return new cls(typeof e.message === "string" ? e.message : fallback, { code, status, details, requestId, retryAfter });
}

function parseRetryAfter(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, (when - Date.now()) / 1000);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function randomId() {
  return `sdk-${globalThis.crypto.randomUUID().replace(/-/g, "")}`;
}

function pathId(value, what) {
  if (typeof value !== "string" || !value) throw new TypeError(`${what} must be a non-empty string`);
  return encodeURIComponent(value);
}

function clean(object) {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined && v !== null));
}

// ------------------------------------------------------------------ results
const inference = (body) => ({
  generatedText: body.result.generated_text,
  tokensGenerated: body.result.tokens_generated,
  inferenceTime: body.result.inference_time,
  modelUsed: body.result.model_used,
  backend: body.result.backend,
  requestId: body.metadata?.request_id ?? null,
  processingTime: body.metadata?.processing_time ?? null,
  raw: body,
});

const batchItem = (r) => ({
  id: r.id,
  generatedText: r.generated_text,
  tokensGenerated: r.tokens_generated,
  inferenceTime: r.inference_time,
});

const model = (m) => ({
  id: m.id,
  name: m.name,
  type: m.type,
  loaded: Boolean(m.loaded),
  backend: m.backend ?? null,
  capabilities: m.capabilities ?? [],
  size: m.size ?? null,
  memoryUsage: m.memory_usage ?? null,
  estimatedMemory: m.estimated_memory ?? null,
  raw: m,
});

const modelDetails = (m) => ({
  id: m.id,
  name: m.name,
  loaded: Boolean(m.loaded),
  status: m.status,
  backend: m.backend ?? null,
  architecture: m.architecture ?? null,
  parameters: m.parameters ?? null,
  contextLength: m.context_length ?? null,
  quantization: m.quantization ?? null,
  format: m.format ?? null,
  type: m.type,
  capabilities: m.capabilities ?? [],
  memoryUsage: m.memory_usage ?? null,
  performance: m.performance ?? {},
  runtime: m.runtime ?? null,
  engine: m.engine ?? null,
  raw: m,
});

const plugin = (p) => ({
  id: p.id,
  name: p.name,
  version: p.version ?? null,
  status: p.status,
  loaded: p.status === "loaded",
  category: p.category ?? null,
  essential: Boolean(p.essential),
  priority: p.priority ?? null,
  config: p.config ?? {},
  hooks: p.hooks ?? [],
  raw: p,
});

const systemStatus = (b) => ({
  status: b.status,
  uptime: b.uptime,
  version: b.version,
  instance: b.instance ?? null,
  cpuUsage: b.system?.cpu_usage ?? null,
  memoryUsage: b.system?.memory_usage ?? null,
  diskUsage: b.system?.disk_usage ?? null,
  gpuCount: b.system?.gpu_count ?? 0,
  gpuUsage: b.system?.gpu_usage ?? [],
  gpuMemory: b.system?.gpu_memory ?? [],
  services: b.services ?? {},
  engine: b.engine ?? {},
  statistics: b.statistics ?? {},
  alertsActive: b.alerts_active ?? 0,
  raw: b,
});

const metrics = (b) => {
  const m = b.metrics ?? {};
  return {
    timeframe: b.timeframe,
    granularity: b.granularity,
    timestamps: m.timestamps ?? [],
    requestRate: m.request_rate ?? [],
    responseTime: m.response_time ?? [],
    errorRate: m.error_rate ?? [],
    gpuUtilization: m.gpu_utilization ?? [],
    memoryUsage: m.memory_usage ?? [],
    cpuUsage: m.cpu_usage ?? [],
    tokensPerSecond: m.tokens_per_second ?? [],
    raw: b,
  };
};

// ------------------------------------------------------------------ client
/** A client of one LLaMA GPU server. */
class LlamaGPUClient {
  /**
   * @param {object} options baseUrl, apiKey (an API key or login token), timeout (ms), maxRetries,
   *   maxRetryWait (ms: a longer Retry-After is not waited for), backoff (ms, without Retry-After).
   */
  constructor({
    baseUrl = "http://127.0.0.1:5000",
    apiKey = null,
    timeout = 120000,
    maxRetries = 2,
    maxRetryWait = 30000,
    backoff = 500,
    fetch: fetchImpl = globalThis.fetch,
  } = {}) {
    if (typeof baseUrl !== "string" || !/^https?:\/\//.test(baseUrl)) {
      throw new TypeError(`baseUrl must be an http:// or https:// URL, got ${JSON.stringify(baseUrl)}`);
    }
    if (!Number.isInteger(maxRetries) || maxRetries < 0) throw new RangeError("maxRetries must be an integer >= 0");
    if (!(timeout > 0)) throw new RangeError("timeout must be > 0");
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.apiKey = apiKey;
    this.timeout = timeout;
    this.maxRetries = maxRetries;
    this.maxRetryWait = maxRetryWait;
    this.backoff = backoff;
    /** The X-RateLimit-* headers of the latest response that carried them. */
    this.rateLimit = null;
    /** The X-Request-ID of the latest response. */
    this.lastRequestId = null;
    this._fetch = fetchImpl;
  }

  _headers(requestId) {
    const headers = { Accept: "application/json" };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    if (requestId) headers["X-Request-ID"] = requestId;
    return headers;
  }

  _remember(response) {
    const h = response.headers;
    this.lastRequestId = h.get("x-request-id") ?? this.lastRequestId;
    const limit = h.get("x-ratelimit-limit");
    if (limit !== null) {
      this.rateLimit = {
        limit: Number(limit),
        remaining: Number(h.get("x-ratelimit-remaining")),
        reset: Number(h.get("x-ratelimit-reset")),
      };
    }
  }

  async _error(response) {
    let body = null;
    const text = await response.text().catch(() => "");
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    return buildError(body?.error, {
      status: response.status,
      requestId: body?.request_id ?? response.headers.get("x-request-id"),
      retryAfter: parseRetryAfter(response.headers.get("retry-after")),
      fallback: `HTTP ${response.status}: ${text.slice(0, 200)}`,
    });
  }

  /** Send one call, retrying 429/503; throws the mapped error for a non-2xx answer. */
  async _send(method, path, { body, query, stream = false, requestId, timeout, signal } = {}) {
    let url = this.baseUrl + path;
    if (query) {
      const params = new URLSearchParams(clean(query));
      if ([...params].length) url += `?${params}`;
    }
    const headers = this._headers(requestId);
    if (body !== undefined) headers["Content-Type"] = "application/json";
    for (let attempt = 0; ; attempt++) {
      const controller = new AbortController();
      const limit = timeout ?? this.timeout;
      const timer = setTimeout(() => controller.abort(new Error(`timed out after ${limit} ms`)), limit);
      const onAbort = () => controller.abort(signal.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      let response;
      try {
        response = await this._fetch(url, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: controller.signal,
        });
      } catch (err) {
        clearTimeout(timer);
        throw new APIConnectionError(`${method} ${path} failed: ${err.cause?.message ?? err.message}`);
      }
      if (!stream) clearTimeout(timer);
      this._remember(response);
      if (response.ok) {
        if (stream) response._clearTimeout = () => clearTimeout(timer);
        return response;
      }
      clearTimeout(timer);
      const error = await this._error(response);
      const wait = error.retryAfter != null ? error.retryAfter * 1000 : this.backoff * 2 ** attempt;
      if (!RETRY_STATUSES.has(response.status) || attempt >= this.maxRetries || wait > this.maxRetryWait) throw error;
      await sleep(wait);
    }
  }

  async _json(method, path, options) {
    const response = await this._send(method, path, options);
    return response.json();
  }

  // -------------------------------------------------------------- inference
  /** Generate a completion of text (POST /api/v1/infer). */
  async infer(text, { model: modelId = "default", maxTokens = 100, temperature = 1.0, topP = 1.0 } = {}) {
    const body = { text, model: modelId, max_tokens: maxTokens, temperature, top_p: topP };
    return inference(await this._json("POST", "/api/v1/infer", { body }));
  }

  /**
   * Generate a completion token by token (POST /api/v1/stream_infer, Server-Sent Events): an async
   * iterator of {text, position, isComplete, finalText}. Refusals throw at the first iteration;
   * breaking out of the loop (or aborting `signal`) closes the connection and the server cancels.
   */
  async *streamInfer(
    text,
    { model: modelId = "default", maxTokens = 100, temperature = 1.0, topP = 1.0, requestId, signal } = {},
  ) {
    const body = { text, model: modelId, max_tokens: maxTokens, temperature, top_p: topP };
    const id = requestId ?? randomId();
    const response = await this._send("POST", "/api/v1/stream_infer", { body, stream: true, requestId: id, signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (err) {
          throw new APIConnectionError(`the stream broke: ${err.message}`, { requestId: id });
        }
        if (chunk.done) return;
        buffer += decoder.decode(chunk.value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = frame
            .split("\n")
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).trim())
            .join("\n");
          if (!data) continue;
          const event = JSON.parse(data);
          if (event.error) throw buildError(event.error, { status: response.status, requestId: id });
          const token = {
            text: event.token ?? "",
            position: event.position ?? 0,
            isComplete: Boolean(event.is_complete),
            finalText: event.final_text ?? null,
            requestId: id,
          };
          yield token;
          if (token.isComplete) return;
        }
      }
    } finally {
      response._clearTimeout?.();
      await reader.cancel().catch(() => {});
    }
  }

  /** Generate completions of several prompts at once: strings or {id, text, maxTokens}. */
  async batchInfer(inputs, { model: modelId = "default", maxTokens = 100, temperature = 1.0 } = {}) {
    if (!Array.isArray(inputs)) throw new TypeError("inputs must be an array of prompts or {id, text} objects");
    const items = inputs.map((item, n) => {
      if (typeof item === "string") return { id: String(n), text: item, max_tokens: maxTokens };
      if (item && typeof item === "object") {
        return { id: String(item.id ?? n), text: item.text, max_tokens: item.maxTokens ?? item.max_tokens ?? maxTokens };
      }
      throw new TypeError(`inputs[${n}] must be a string or an object`);
    });
    const body = await this._json("POST", "/api/v1/batch_infer", {
      body: { inputs: items, model: modelId, temperature },
    });
    return {
      results: body.results.map(batchItem),
      batchId: body.metadata?.batch_id,
      totalProcessingTime: body.metadata?.total_processing_time,
      itemsProcessed: body.metadata?.items_processed,
      backend: body.metadata?.backend,
      raw: body,
    };
  }

  /** Cancel a running or queued request (NotFoundError when it is not running). */
  async cancelRequest(requestId) {
    const body = await this._json("DELETE", `/api/v1/requests/${pathId(requestId, "requestId")}`);
    return Boolean(body.cancelled);
  }

  // -------------------------------------------------------------- models
  /** Every model the server knows. */
  async listModels() {
    return (await this._json("GET", "/api/v1/models")).models.map(model);
  }

  /** One model's facts, state and engine figures. */
  async getModel(modelId) {
    return modelDetails((await this._json("GET", `/api/v1/models/${pathId(modelId, "modelId")}`)).model);
  }

  /** Load a model (admin): {backend, quantization, maxMemory, preferGpu, nCtx}. */
  async loadModel(modelId, { backend, quantization, maxMemory, preferGpu, nCtx } = {}) {
    const body = clean({ backend, quantization, max_memory: maxMemory, prefer_gpu: preferGpu, n_ctx: nCtx });
    const path = `/api/v1/models/${pathId(modelId, "modelId")}/load`;
    const answer = await this._json("POST", path, { body, timeout: Math.max(this.timeout, 600000) });
    const m = answer.model;
    return {
      id: m.id,
      loaded: m.loaded,
      backend: m.backend,
      memoryUsage: m.memory_usage,
      loadTime: m.load_time,
      message: answer.message,
      raw: answer,
    };
  }

  /** Unload a model (admin): {message, freedMemory}. */
  async unloadModel(modelId) {
    const answer = await this._json("DELETE", `/api/v1/models/${pathId(modelId, "modelId")}/unload`);
    return { message: answer.message, freedMemory: answer.freed_memory, raw: answer };
  }

  // -------------------------------------------------------------- plugins
  /** Every installed plugin. */
  async listPlugins() {
    return (await this._json("GET", "/api/v1/plugins")).plugins.map(plugin);
  }

  /** Load an installed, allowed plugin (admin) with config {enabled, priority, settings}. */
  async loadPlugin(pluginId, config = {}) {
    const answer = await this._json("POST", `/api/v1/plugins/${pathId(pluginId, "pluginId")}/load`, {
      body: { config },
    });
    return { ...answer.plugin, loadTime: answer.plugin.load_time, message: answer.message, raw: answer };
  }

  /** Unload a plugin (admin); its id. */
  async unloadPlugin(pluginId) {
    return (await this._json("DELETE", `/api/v1/plugins/${pathId(pluginId, "pluginId")}/unload`)).plugin_id;
  }

  /** Change a plugin's enabled, priority or settings (admin); its configuration now. */
  async updatePluginConfig(pluginId, config) {
    const path = `/api/v1/plugins/${pathId(pluginId, "pluginId")}/config`;
    return (await this._json("PUT", path, { body: { config } })).config;
  }

  // -------------------------------------------------------------- system
  /** Status, uptime, version, machine use (cpuUsage, gpuUsage…), services, statistics. */
  async getSystemStatus() {
    return systemStatus(await this._json("GET", "/api/v1/system/status"));
  }

  /** Every GPU: {gpuCount, gpus, nvmlError}. */
  async getGpuInfo() {
    const b = await this._json("GET", "/api/v1/system/gpu");
    return { gpuCount: b.gpu_count ?? 0, gpus: b.gpus ?? [], nvmlError: b.nvml_error ?? null, raw: b };
  }

  /** Stored series: timeframe 1h|6h|24h|7d, granularity 1m|5m|15m|1h. */
  async getMetrics({ timeframe = "1h", granularity = "1m" } = {}) {
    return metrics(await this._json("GET", "/api/v1/system/metrics", { query: { timeframe, granularity } }));
  }

  /** The server's newest log records (admin): {level, limit, since, component}. */
  async getLogs({ level, limit, since, component } = {}) {
    const query = { level, limit, since: since instanceof Date ? since.toISOString() : since, component };
    return (await this._json("GET", "/api/v1/system/logs", { query })).logs;
  }

  // -------------------------------------------------------------- access
  /** Log in; the client uses the token from then on. */
  async login(username, password) {
    const b = await this._json("POST", "/api/v1/auth/login", { body: { username, password } });
    this.apiKey = b.token;
    return { token: b.token, expiresIn: b.expires_in, user: b.user };
  }

  // -------------------------------------------------------------- socket
  /** A connected Socket.IO connection with this client's credentials. */
  async createSocket({ transports = ["websocket"], timeout = 10000 } = {}) {
    const socket = new LlamaGPUSocket(this.baseUrl, this.apiKey, { transports, timeout });
    await socket.connect();
    return socket;
  }
}

// ------------------------------------------------------------------ socket
/** A Socket.IO connection to a LLaMA GPU server: subscribe, on, waitFor, chat, disconnect. */
class LlamaGPUSocket {
  constructor(baseUrl, token, { transports = ["websocket"], timeout = 10000 } = {}) {
    this.baseUrl = baseUrl;
    this.timeout = timeout;
    /** Who the server says you are ({kind, id, roles}), and the channels it offers. */
    this.user = null;
    this.channels = [];
    this._seen = [];
    this._waiters = new Set();
    this._chats = new Map();
    this.socket = io(baseUrl, {
      auth: token ? { token } : {},
      transports,
      reconnection: false,
      autoConnect: false,
      timeout,
    });
    this.socket.onAny((event, data) => this._record(event, data));
    for (const kind of ["chat_chunk", "chat_done", "chat_error"]) {
      this.socket.on(kind, (data) => this._chats.get(data?.request_id)?.(kind, data));
    }
  }

  _record(event, data) {
    if (event === "connected") {
      this.user = data?.user ?? null;
      this.channels = data?.channels ?? [];
    }
    this._seen.push([event, data]);
    if (this._seen.length > 1000) this._seen.shift();
    for (const waiter of this._waiters) waiter(event, data);
  }

  /** Connect; a refusal rejects with AuthenticationError or PermissionDeniedError. */
  connect() {
    return new Promise((resolve, reject) => {
      const fail = (err) => {
        this.socket.off("connected", ok);
        const data = err?.data;
        if (data && typeof data === "object" && data.code) reject(buildError(data, { fallback: err.message }));
        else reject(new APIConnectionError(`could not connect to ${this.baseUrl}: ${err?.message ?? err}`));
      };
      const ok = () => {
        this.socket.off("connect_error", fail);
        resolve(this);
      };
      this.socket.once("connect_error", fail);
      this.socket.once("connected", ok);
      this.socket.connect();
    });
  }

  /** Whether the socket is connected. */
  get connected() {
    return this.socket.connected;
  }

  /** Call handler(data) for every event (several handlers per event). */
  on(event, handler) {
    this.socket.on(event, handler);
    return this;
  }

  /** Stop calling handler for event. */
  off(event, handler) {
    this.socket.off(event, handler);
    return this;
  }

  /** Resolve with the data of the first event (already received or to come) matching predicate. */
  waitFor(event, predicate = () => true, timeout = 10000) {
    const seen = this._seen.find(([e, d]) => e === event && predicate(d));
    if (seen) return Promise.resolve(seen[1]);
    return new Promise((resolve, reject) => {
      const waiter = (e, d) => {
        if (e === event && predicate(d)) {
          clearTimeout(timer);
          this._waiters.delete(waiter);
          resolve(d);
        }
      };
      const timer = setTimeout(() => {
        this._waiters.delete(waiter);
        reject(new Error(`no ${event} event within ${timeout} ms`));
      }, timeout);
      this._waiters.add(waiter);
    });
  }

  async _call(event, data, timeout = this.timeout) {
    let ack;
    try {
      ack = await this.socket.timeout(timeout).emitWithAck(event, data);
    } catch (err) {
      throw new APIConnectionError(`no answer to ${event} within ${timeout} ms: ${err.message}`);
    }
    if (!ack || !ack.success) throw buildError(ack?.error, { fallback: `${event} refused` });
    return ack;
  }

  /** Join channels (all or none: an unknown name rejects with InvalidInputError); the channels joined. */
  async subscribe(channels) {
    return (await this._call("subscribe", { channels })).channels;
  }

  /** Leave channels. */
  async unsubscribe(channels) {
    return (await this._call("unsubscribe", { channels })).channels;
  }

  /**
   * Run a chat on the server's engine (needs write): resolves with {requestId, text, finishReason,
   * usage, inferenceTime, model, chunks}; onChunk(text) is called per chunk.
   */
  async chat(messages, options = {}) {
    const { model: modelId = "default", maxTokens, temperature, topP, seed, stop, onChunk, requestId } = options;
    const timeout = options.timeout ?? 300000;
    const id = requestId ?? randomId();
    const chunks = [];
    let timer;
    const done = new Promise((resolve, reject) => {
      timer = setTimeout(() => {
        this._chats.delete(id);
        this.cancelChat(id).catch(() => {});
        reject(new Error(`chat ${id} did not finish within ${timeout} ms`));
      }, timeout);
      this._chats.set(id, (kind, data) => {
        if (kind === "chat_chunk") {
          chunks.push(data.text);
          onChunk?.(data.text);
          return;
        }
        clearTimeout(timer);
        this._chats.delete(id);
        if (kind === "chat_done") {
          resolve({
            requestId: id,
            text: data.text,
            finishReason: data.finish_reason,
            usage: data.usage,
            inferenceTime: data.inference_time,
            model: data.model,
            chunks,
          });
        } else {
          reject(buildError(data.error, { requestId: id, fallback: "chat failed" }));
        }
      });
    });
    const body = clean({
      request_id: id,
      model: modelId,
      messages,
      max_tokens: maxTokens,
      temperature,
      top_p: topP,
      seed,
      stop,
    });
    try {
      await this._call("chat", body, Math.max(this.timeout, 120000));
    } catch (err) {
      clearTimeout(timer);
      this._chats.delete(id);
      done.catch(() => {});
      throw err;
    }
    return done;
  }

  /** Cancel a running chat of this client (its chat() rejects with RequestCancelledError). */
  async cancelChat(requestId) {
    await this._call("chat_cancel", { request_id: requestId });
  }

  /** Disconnect (the server cancels this client's running chats). */
  disconnect() {
    this.socket.disconnect();
  }
}

module.exports = {
  VERSION,
  LlamaGPUClient,
  LlamaGPUSocket,
  LlamaGPUError,
  APIConnectionError,
  InvalidInputError,
  PayloadTooLargeError,
  AuthenticationError,
  PermissionDeniedError,
  NotFoundError,
  ModelNotFoundError,
  PluginNotFoundError,
  ConflictError,
  ModelNotLoadedError,
  PluginNotLoadedError,
  PluginEssentialError,
  RequestCancelledError,
  RateLimitError,
  ServiceUnavailableError,
  ServerOverloadedError,
  ServerError,
  errorForCode,
};
