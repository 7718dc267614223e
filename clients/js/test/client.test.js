// Every REST method of LlamaGPUClient against the live server with the real GGUF models.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  AuthenticationError,
  LlamaGPUClient,
  ModelNotLoadedError,
  NotFoundError,
  RequestCancelledError,
} from "llama-gpu-client";

import { ADMIN_KEY, GEMMA, QWEN, URL } from "./env.js";

const admin = new LlamaGPUClient({ baseUrl: URL, apiKey: ADMIN_KEY });

test("infer with a real model", async () => {
  const result = await admin.infer("The capital of France is", { model: GEMMA, maxTokens: 8, temperature: 0.5, topP: 0.9 });
  assert.ok(result.generatedText.trim());
  assert.ok(result.tokensGenerated >= 1 && result.tokensGenerated <= 8);
  assert.equal(result.modelUsed, GEMMA);
  assert.equal(result.backend, "llamacpp");
  assert.ok(result.inferenceTime > 0);
  assert.equal(result.requestId, admin.lastRequestId);
  assert.equal(admin.rateLimit.limit, 1000);
  const before = admin.rateLimit.remaining;
  await admin.infer("1, 2, 3,", { model: GEMMA, maxTokens: 2 });
  assert.equal(admin.rateLimit.remaining, before - 1);
});

test("streamInfer yields tokens then the final text", async () => {
  const tokens = [];
  for await (const token of admin.streamInfer("Once upon a time", { model: GEMMA, maxTokens: 12 })) tokens.push(token);
  assert.ok(tokens.length >= 1 && tokens.length <= 12);
  assert.deepEqual(tokens.map((t) => t.position), [...tokens.keys()]);
  assert.deepEqual(tokens.map((t) => t.isComplete), [...Array(tokens.length - 1).fill(false), true]);
  assert.equal(tokens.at(-1).finalText, tokens.map((t) => t.text).join(""));
  assert.match(tokens[0].requestId, /^sdk-/);
});

test("cancelRequest stops a stream; a finished one is not found", async () => {
  const stream = admin.streamInfer("Write a long story about a dragon.", {
    model: GEMMA,
    maxTokens: 400,
    requestId: "js-cancel-1",
  });
  const first = await stream.next();
  assert.equal(first.value.isComplete, false);
  assert.equal(await admin.cancelRequest("js-cancel-1"), true);
  await assert.rejects(async () => {
    for (;;) if ((await stream.next()).done) break;
  }, RequestCancelledError);
  await assert.rejects(admin.cancelRequest("js-cancel-1"), NotFoundError);
});

test("breaking out of a stream frees the sequence", async () => {
  for await (const token of admin.streamInfer("Count: 1, 2, 3,", { model: GEMMA, maxTokens: 300 })) {
    assert.equal(token.isComplete, false);
    break;
  }
  const deadline = Date.now() + 10000;
  while ((await admin.getModel(GEMMA)).engine.running && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.equal((await admin.getModel(GEMMA)).engine.running, 0);
});

test("batchInfer keeps ids and order", async () => {
  const batch = await admin.batchInfer([{ id: "b", text: "The sky is", maxTokens: 4 }, "Water is"], {
    model: GEMMA,
    maxTokens: 3,
  });
  assert.deepEqual(batch.results.map((r) => r.id), ["b", "1"]);
  assert.ok(batch.results.every((r) => r.generatedText && r.tokensGenerated >= 1));
  assert.ok(batch.results[0].tokensGenerated <= 4 && batch.results[1].tokensGenerated <= 3);
  assert.equal(batch.itemsProcessed, 2);
  assert.match(batch.batchId, /^batch_/);
  await assert.rejects(admin.batchInfer("no"), TypeError);
});

test("listModels, getModel, loadModel, unloadModel", async () => {
  const models = Object.fromEntries((await admin.listModels()).map((m) => [m.id, m]));
  assert.ok(models[GEMMA] && models[QWEN] && models.echo);
  assert.equal(models[QWEN].type, "chat");
  const loaded = await admin.loadModel(QWEN, { backend: "llamacpp", nCtx: 2048 });
  assert.equal(loaded.id, QWEN);
  assert.equal(loaded.loaded, true);
  assert.match(loaded.memoryUsage, /MB$/);
  const details = await admin.getModel(QWEN);
  assert.equal(details.status, "loaded");
  assert.equal(details.architecture, "qwen2");
  assert.equal(details.runtime.n_ctx, 2048);
  const unloaded = await admin.unloadModel(QWEN);
  assert.ok(unloaded.freedMemory);
  assert.equal((await admin.getModel(QWEN)).loaded, false);
  await assert.rejects(admin.unloadModel(QWEN), ModelNotLoadedError);
  await assert.rejects(admin.getModel(""), TypeError);
});

test("listPlugins, loadPlugin, updatePluginConfig, unloadPlugin", async () => {
  const plugins = Object.fromEntries((await admin.listPlugins()).map((p) => [p.id, p]));
  assert.ok(plugins.core.essential && plugins.core.loaded);
  const loaded = await admin.loadPlugin("echo", { priority: 30, settings: { mode: "reverse" } });
  assert.equal(loaded.status, "loaded");
  assert.equal(loaded.config.priority, 30);
  assert.equal((await admin.infer("one two three", { model: "echo" })).generatedText, "three two one");
  const config = await admin.updatePluginConfig("echo", { settings: { mode: "upper" } });
  assert.equal(config.settings.mode, "upper");
  assert.equal((await admin.infer("one two", { model: "echo" })).generatedText, "ONE TWO");
  assert.equal(await admin.unloadPlugin("echo"), "echo");
  assert.notEqual((await admin.listPlugins()).find((p) => p.id === "echo").status, "loaded");
  await admin.loadPlugin("echo", { priority: 50, settings: { mode: "echo" } });
  assert.equal((await admin.infer("back again", { model: "echo" })).generatedText, "back again");
});

test("getSystemStatus, getGpuInfo, getMetrics, getLogs", async () => {
  const status = await admin.getSystemStatus();
  assert.ok(["healthy", "degraded"].includes(status.status));
  assert.ok(status.uptime > 0 && status.version);
  assert.equal(status.gpuCount, status.gpuUsage.length);
  assert.equal(status.services.inference_engine, "running");
  const gpu = await admin.getGpuInfo();
  assert.equal(gpu.gpuCount, gpu.gpus.length);
  assert.ok(gpu.gpuCount > 0 || gpu.nvmlError);
  const metrics = await admin.getMetrics({ timeframe: "1h", granularity: "5m" });
  assert.equal(metrics.timeframe, "1h");
  assert.equal(metrics.granularity, "5m");
  assert.ok(metrics.timestamps.length >= 11);
  assert.equal(metrics.cpuUsage.length, metrics.timestamps.length);
  const logs = await admin.getLogs({ level: "INFO", limit: 200 });
  assert.ok(logs.length >= 1 && logs.length <= 200);
  assert.ok(logs.some((e) => e.component === "kernel.registry" && e.message.includes(GEMMA)));
  assert.deepEqual(await admin.getLogs({ since: new Date(Date.now() + 3600_000) }), []);
});

test("login stores the token", async () => {
  const client = new LlamaGPUClient({ baseUrl: URL });
  await assert.rejects(client.listModels(), AuthenticationError);
  const login = await client.login("admin", "correct horse battery staple");
  assert.equal(login.user.role, "admin");
  assert.equal(client.apiKey, login.token);
  assert.ok((await client.listPlugins()).length > 0);
  await assert.rejects(new LlamaGPUClient({ baseUrl: URL }).login("admin", "wrong password"), (err) => {
    assert.ok(err instanceof AuthenticationError);
    assert.equal(err.status, 401);
    return true;
  });
});

test("the constructor refuses bad options", () => {
  assert.throws(() => new LlamaGPUClient({ baseUrl: "127.0.0.1:5000" }), TypeError);
  assert.throws(() => new LlamaGPUClient({ baseUrl: URL, maxRetries: -1 }), RangeError);
  assert.throws(() => new LlamaGPUClient({ baseUrl: URL, timeout: 0 }), RangeError);
});
