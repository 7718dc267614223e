// Types of llama-gpu-client (ES module and CommonJS).
import type { Socket } from "socket.io-client";

export declare const VERSION: string;

export interface ClientOptions {
  /** The server, e.g. "http://127.0.0.1:5000". */
  baseUrl?: string;
  /** An API key (lgk_…) or a login token. */
  apiKey?: string | null;
  /** Milliseconds one HTTP call may take (default 120000). */
  timeout?: number;
  /** Retries of a 429/503 answer (default 2). */
  maxRetries?: number;
  /** Milliseconds: a longer Retry-After is not waited for (default 30000). */
  maxRetryWait?: number;
  /** Milliseconds of the first backoff when the server sent no Retry-After (default 500). */
  backoff?: number;
  fetch?: typeof fetch;
}

export interface SamplingOptions {
  model?: string;
  maxTokens?: number;
  temperature?: number;
  topP?: number;
}

export interface InferenceResult {
  generatedText: string;
  tokensGenerated: number;
  inferenceTime: number;
  modelUsed: string;
  backend: string;
  requestId: string | null;
  processingTime: number | null;
  raw: Record<string, unknown>;
}

export interface StreamToken {
  text: string;
  position: number;
  isComplete: boolean;
  finalText: string | null;
  requestId: string;
}

export interface BatchInput {
  id?: string;
  text: string;
  maxTokens?: number;
}

export interface BatchItemResult {
  id: string;
  generatedText: string;
  tokensGenerated: number;
  inferenceTime: number;
}

export interface BatchResult {
  results: BatchItemResult[];
  batchId: string;
  totalProcessingTime: number;
  itemsProcessed: number;
  backend: string;
  raw: Record<string, unknown>;
}

export interface Model {
  id: string;
  name: string;
  type: string;
  loaded: boolean;
  backend: string | null;
  capabilities: string[];
  size: string | null;
  memoryUsage: string | null;
  estimatedMemory: string | null;
  raw: Record<string, unknown>;
}

export interface ModelDetails {
  id: string;
  name: string;
  loaded: boolean;
  status: string;
  backend: string | null;
  architecture: string | null;
  parameters: number | null;
  contextLength: number | null;
  quantization: string | null;
  format: string | null;
  type: string;
  capabilities: string[];
  memoryUsage: string | null;
  performance: Record<string, unknown>;
  runtime: Record<string, unknown> | null;
  engine: Record<string, unknown> | null;
  raw: Record<string, unknown>;
}

export interface LoadModelOptions {
  backend?: string;
  quantization?: string;
  maxMemory?: string | number;
  preferGpu?: boolean;
  nCtx?: number;
}

export interface ModelLoadResult {
  id: string;
  loaded: boolean;
  backend: string;
  memoryUsage: string | null;
  loadTime: number;
  message: string;
  raw: Record<string, unknown>;
}

export interface ModelUnloadResult {
  message: string;
  freedMemory: string | null;
  raw: Record<string, unknown>;
}

export interface PluginConfig {
  enabled?: boolean;
  priority?: number;
  settings?: Record<string, unknown>;
}

export interface Plugin {
  id: string;
  name: string;
  version: string | null;
  status: string;
  loaded: boolean;
  category: string | null;
  essential: boolean;
  priority: number | null;
  config: PluginConfig;
  hooks: string[];
  raw: Record<string, unknown>;
}

export interface PluginLoadResult {
  id: string;
  status: string;
  loadTime: number;
  config: { enabled: boolean; priority: number };
  message: string;
  raw: Record<string, unknown>;
}

export interface SystemStatus {
  status: string;
  uptime: number;
  version: string;
  instance: string | null;
  cpuUsage: number | null;
  memoryUsage: number | null;
  diskUsage: number | null;
  gpuCount: number;
  gpuUsage: unknown[];
  gpuMemory: unknown[];
  services: Record<string, string>;
  engine: Record<string, unknown>;
  statistics: Record<string, unknown>;
  alertsActive: number;
  raw: Record<string, unknown>;
}

export interface GpuInfo {
  gpuCount: number;
  gpus: Record<string, unknown>[];
  nvmlError: string | null;
  raw: Record<string, unknown>;
}

export interface Metrics {
  timeframe: string;
  granularity: string;
  timestamps: string[];
  requestRate: (number | null)[];
  responseTime: (number | null)[];
  errorRate: (number | null)[];
  gpuUtilization: (number | null)[];
  memoryUsage: (number | null)[];
  cpuUsage: (number | null)[];
  tokensPerSecond: (number | null)[];
  raw: Record<string, unknown>;
}

export interface LogEntry {
  timestamp: string;
  level: string;
  component: string;
  logger: string;
  message: string;
  metadata: Record<string, unknown>;
}

export interface LoginResult {
  token: string;
  expiresIn: number;
  user: { id: number; username: string; role: string; permissions: string[] };
}

export interface RateLimitInfo {
  limit: number;
  remaining: number;
  reset: number;
}

export interface ChatMessage {
  role: "system" | "user" | "assistant" | string;
  content: string;
}

export interface ChatOptions extends SamplingOptions {
  seed?: number;
  stop?: string | string[];
  onChunk?: (text: string) => void;
  requestId?: string;
  /** Milliseconds for the whole chat (default 300000). */
  timeout?: number;
}

export interface ChatResult {
  requestId: string;
  text: string;
  finishReason: string | null;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  inferenceTime: number;
  model: string | null;
  chunks: string[];
}

export declare class LlamaGPUClient {
  constructor(options?: ClientOptions);
  baseUrl: string;
  apiKey: string | null;
  timeout: number;
  maxRetries: number;
  rateLimit: RateLimitInfo | null;
  lastRequestId: string | null;
  infer(text: string, options?: SamplingOptions): Promise<InferenceResult>;
  streamInfer(
    text: string,
    options?: SamplingOptions & { requestId?: string; signal?: AbortSignal },
  ): AsyncGenerator<StreamToken, void, undefined>;
  batchInfer(
    inputs: (string | BatchInput)[],
    options?: { model?: string; maxTokens?: number; temperature?: number },
  ): Promise<BatchResult>;
  cancelRequest(requestId: string): Promise<boolean>;
  listModels(): Promise<Model[]>;
  getModel(modelId: string): Promise<ModelDetails>;
  loadModel(modelId: string, options?: LoadModelOptions): Promise<ModelLoadResult>;
  unloadModel(modelId: string): Promise<ModelUnloadResult>;
  listPlugins(): Promise<Plugin[]>;
  loadPlugin(pluginId: string, config?: PluginConfig): Promise<PluginLoadResult>;
  unloadPlugin(pluginId: string): Promise<string>;
  updatePluginConfig(pluginId: string, config: PluginConfig): Promise<Required<PluginConfig>>;
  getSystemStatus(): Promise<SystemStatus>;
  getGpuInfo(): Promise<GpuInfo>;
  getMetrics(options?: { timeframe?: "1h" | "6h" | "24h" | "7d"; granularity?: "1m" | "5m" | "15m" | "1h" }): Promise<Metrics>;
  getLogs(options?: { level?: string; limit?: number; since?: Date | string; component?: string }): Promise<LogEntry[]>;
  login(username: string, password: string): Promise<LoginResult>;
  createSocket(options?: { transports?: ("websocket" | "polling")[]; timeout?: number }): Promise<LlamaGPUSocket>;
}

export declare class LlamaGPUSocket {
  constructor(baseUrl: string, token: string | null, options?: { transports?: string[]; timeout?: number });
  /** The socket.io-client Socket underneath. */
  socket: Socket;
  user: { kind: string; id: string; roles: string[] } | null;
  channels: string[];
  readonly connected: boolean;
  connect(): Promise<this>;
  on(event: string, handler: (data: any) => void): this;
  off(event: string, handler: (data: any) => void): this;
  waitFor(event: string, predicate?: (data: any) => boolean, timeout?: number): Promise<any>;
  subscribe(channels: string[]): Promise<string[]>;
  unsubscribe(channels: string[]): Promise<string[]>;
  chat(messages: ChatMessage[], options?: ChatOptions): Promise<ChatResult>;
  cancelChat(requestId: string): Promise<void>;
  disconnect(): void;
}

export interface ErrorOptions {
  code?: string;
  status?: number | null;
  details?: Record<string, any>;
  requestId?: string | null;
  retryAfter?: number | null;
}

export declare class LlamaGPUError extends Error {
  constructor(message: string, options?: ErrorOptions);
  code: string;
  status: number | null;
  details: Record<string, any>;
  requestId: string | null;
  /** Seconds the server asked to wait (Retry-After). */
  retryAfter: number | null;
}
export declare class APIConnectionError extends LlamaGPUError {}
export declare class InvalidInputError extends LlamaGPUError {}
export declare class PayloadTooLargeError extends InvalidInputError {}
export declare class AuthenticationError extends LlamaGPUError {}
export declare class PermissionDeniedError extends LlamaGPUError {}
export declare class NotFoundError extends LlamaGPUError {}
export declare class ModelNotFoundError extends NotFoundError {}
export declare class PluginNotFoundError extends NotFoundError {}
export declare class ConflictError extends LlamaGPUError {}
export declare class ModelNotLoadedError extends ConflictError {}
export declare class PluginNotLoadedError extends ConflictError {}
export declare class PluginEssentialError extends ConflictError {}
export declare class RequestCancelledError extends ConflictError {}
export declare class RateLimitError extends LlamaGPUError {}
export declare class ServiceUnavailableError extends LlamaGPUError {}
export declare class ServerOverloadedError extends ServiceUnavailableError {}
export declare class ServerError extends LlamaGPUError {}
export declare function errorForCode(code: string | null | undefined, status?: number | null): typeof LlamaGPUError;
