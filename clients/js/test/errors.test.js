// Error mapping against real server errors, and the retries of 429/503 with Retry-After.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  APIConnectionError,
  AuthenticationError,
  ConflictError,
  InvalidInputError,
  LlamaGPUClient,
  LlamaGPUError,
  ModelNotFoundError,
  NotFoundError,
  PermissionDeniedError,
  PluginEssentialError,
  PluginNotFoundError,
  RateLimitError,
  ServerError,
  ServerOverloadedError,
  ServiceUnavailableError,
  errorForCode,
} from "llama-gpu-client";

import { ADMIN_KEY, GEMMA, READ_KEY, TIGHT_KEY, TIGHT_URL, URL } from "./env.js";

const admin = new LlamaGPUClient({ baseUrl: URL, apiKey: ADMIN_KEY });

const rejectsWith = (promise, cls, check = () => {}) =>
  assert.rejects(promise, (err) => {
    assert.ok(err instanceof cls, `${err.name}: ${err.message} is not a ${cls.name}`);
    assert.ok(err instanceof LlamaGPUError);
    check(err);
    return true;
  });

test("401 without or with a bad key", async () => {
  for (const apiKey of [null, "lgk_not-a-real-key"]) {
    await rejectsWith(new LlamaGPUClient({ baseUrl: URL, apiKey }).listModels(), AuthenticationError, (err) => {
      assert.equal(err.status, 401);
      assert.equal(err.code, "AUTHENTICATION_FAILED");
      assert.match(err.requestId, /^req_/);
    });
  }
});

test("403 for a role without the permission", async () => {
  const reader = new LlamaGPUClient({ baseUrl: URL, apiKey: READ_KEY });
  assert.ok((await reader.listModels()).length > 0);
  await rejectsWith(reader.infer("hello", { model: GEMMA }), PermissionDeniedError, (err) => assert.equal(err.status, 403));
  await rejectsWith(reader.loadModel(GEMMA), PermissionDeniedError);
});

test("404 model and plugin not found", async () => {
  await rejectsWith(admin.infer("x", { model: "no-such-model" }), ModelNotFoundError, (err) => {
    assert.equal(err.status, 404);
    assert.ok(err.details.available.includes(GEMMA));
  });
  await rejectsWith(admin.streamInfer("x", { model: "no-such-model" }).next(), ModelNotFoundError);
  await rejectsWith(admin.loadPlugin("no-such-plugin"), PluginNotFoundError, (err) => {
    assert.ok(err instanceof NotFoundError);
    assert.equal(err.details.plugin_id, "no-such-plugin");
  });
});

test("400 invalid input names the field", async () => {
  await rejectsWith(admin.infer("x", { model: GEMMA, maxTokens: 0 }), InvalidInputError, (err) => {
    assert.equal(err.status, 400);
    assert.ok("max_tokens" in err.details.errors);
  });
  await rejectsWith(admin.getMetrics({ timeframe: "2h" }), InvalidInputError, (err) => assert.ok("timeframe" in err.details.errors));
  await rejectsWith(admin.batchInfer([]), InvalidInputError);
});

test("409 essential plugin", async () => {
  await rejectsWith(admin.unloadPlugin("core"), PluginEssentialError, (err) => {
    assert.ok(err instanceof ConflictError);
    assert.equal(err.status, 409);
  });
});

test("no server: APIConnectionError", async () => {
  await rejectsWith(new LlamaGPUClient({ baseUrl: "http://127.0.0.1:9", maxRetries: 0 }).listModels(), APIConnectionError, (err) =>
    assert.equal(err.status, null),
  );
});

test("unknown codes fall back on the status", () => {
  assert.equal(errorForCode("SOMETHING_NEW", 503), ServiceUnavailableError);
  assert.equal(errorForCode("SOMETHING_NEW", 502), ServerError);
  assert.equal(errorForCode("SOMETHING_NEW", 418), LlamaGPUError);
});

function counting() {
  const calls = { sent: 0 };
  calls.fetch = (...args) => {
    calls.sent++;
    return fetch(...args);
  };
  return calls;
}

test("429 carries Retry-After and is not waited through", async () => {
  const calls = counting();
  const client = new LlamaGPUClient({ baseUrl: TIGHT_URL, apiKey: TIGHT_KEY, maxRetries: 3, fetch: calls.fetch });
  // the tight server allows 3 "system" calls per hour per key; the Python test of the same server may have used some
  for (let n = 0; n < 3 && (client.rateLimit?.remaining ?? 1) > 0; n++) {
    try {
      await client.getGpuInfo();
    } catch (err) {
      if (!(err instanceof RateLimitError)) throw err;
      break;
    }
  }
  const sent = calls.sent;
  await rejectsWith(client.getSystemStatus(), RateLimitError, (err) => {
    assert.equal(err.status, 429);
    assert.equal(err.details.group, "system");
    assert.ok(err.retryAfter >= 1 && err.retryAfter <= 3600);
  });
  assert.equal(calls.sent, sent + 1); // refused once, and not retried
});

test("503 overloaded: thrown without retries, served with them", async () => {
  const tight = new LlamaGPUClient({ baseUrl: TIGHT_URL, apiKey: TIGHT_KEY, maxRetries: 0 });
  await tight.updatePluginConfig("echo", { settings: { token_delay: 0.1 } });
  try {
    await tight.infer("warm up", { model: "echo" });
    const words = Array.from({ length: 15 }, (_, n) => `w${n}`).join(" ");
    const busy = tight.infer(words, { model: "echo", maxTokens: 1000 });
    // wait until the server runs it (its only sequence is then taken), however slow the machine
    const deadline = Date.now() + 60_000;
    while (!(await tight.getModel("echo")).engine.running) {
      assert.ok(Date.now() < deadline, "the busy request never started");
      await new Promise((r) => setTimeout(r, 20));
    }
    await rejectsWith(tight.infer("x", { model: "echo" }), ServerOverloadedError, (err) => {
      assert.equal(err.status, 503);
      assert.equal(err.retryAfter, 1);
    });
    const calls = counting();
    const patient = new LlamaGPUClient({ baseUrl: TIGHT_URL, apiKey: TIGHT_KEY, maxRetries: 5, fetch: calls.fetch });
    const started = Date.now();
    assert.equal((await patient.infer("finally served", { model: "echo" })).generatedText, "finally served");
    assert.ok(calls.sent >= 2, `sent ${calls.sent}`);
    assert.ok(Date.now() - started >= 900);
    await busy;
  } finally {
    await tight.updatePluginConfig("echo", { settings: { token_delay: 0.0 } });
  }
});
