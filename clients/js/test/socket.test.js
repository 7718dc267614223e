// The Socket.IO wrapper against the live server: auth, channels, events, chat on the real chat model.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import {
  AuthenticationError,
  InvalidInputError,
  LlamaGPUClient,
  PermissionDeniedError,
  RequestCancelledError,
} from "llama-gpu-client";

import { ADMIN_KEY, GEMMA, QWEN, READ_KEY, URL } from "./env.js";

const admin = new LlamaGPUClient({ baseUrl: URL, apiKey: ADMIN_KEY });
const opened = [];
const open = async (client = admin, options) => {
  const socket = await client.createSocket(options);
  opened.push(socket);
  return socket;
};
after(() => opened.forEach((s) => s.disconnect()));

test("refused connections are mapped", async () => {
  for (const apiKey of [null, "lgk_not-a-key"]) {
    await assert.rejects(new LlamaGPUClient({ baseUrl: URL, apiKey }).createSocket(), AuthenticationError);
  }
});

test("subscribe and receive inference events", async () => {
  const socket = await open();
  assert.ok(socket.connected);
  assert.equal(socket.socket.io.engine.transport.name, "websocket");
  assert.deepEqual(socket.user.roles, ["admin", "read", "write"]);
  assert.deepEqual(await socket.subscribe(["inference_events", "system_metrics"]), ["inference_events", "system_metrics"]);
  const completed = [];
  socket.on("inference_completed", (event) => completed.push(event));
  const result = await admin.infer("Hello there", { model: GEMMA, maxTokens: 3 });
  const done = await socket.waitFor("inference_completed", (e) => e.request_id === result.requestId, 30000);
  assert.equal(done.model, GEMMA);
  assert.equal(done.tokens_generated, result.tokensGenerated);
  assert.ok(completed.some((e) => e.request_id === result.requestId));
  assert.ok(await socket.waitFor("system_metrics", undefined, 10000));
  assert.deepEqual(await socket.unsubscribe(["inference_events"]), ["inference_events"]);
  await assert.rejects(socket.waitFor("no_such_event", undefined, 200), /no no_such_event event/);
  socket.disconnect();
  assert.equal(socket.connected, false);
});

test("unknown channels are refused", async () => {
  const socket = await open(admin, { transports: ["polling"] });
  assert.equal(socket.socket.io.engine.transport.name, "polling");
  await assert.rejects(socket.subscribe(["nope"]), (err) => {
    assert.ok(err instanceof InvalidInputError);
    assert.deepEqual(err.details.unknown, ["nope"]);
    assert.deepEqual(err.details.known, socket.channels);
    return true;
  });
});

test("chat on the real chat model", async () => {
  const socket = await open();
  const chunks = [];
  const answer = await socket.chat([{ role: "user", content: "What is the capital of France? Answer in one word." }], {
    model: QWEN,
    maxTokens: 12,
    temperature: 0,
    seed: 1,
    onChunk: (text) => chunks.push(text),
  });
  assert.match(answer.text.toLowerCase(), /paris/);
  assert.equal(chunks.join(""), answer.text);
  assert.equal(answer.model, QWEN);
  assert.ok(answer.usage.completion_tokens >= 1);
  await assert.rejects(socket.chat([], { model: QWEN }), InvalidInputError);
});

test("chat needs write and can be cancelled", async () => {
  const reader = await open(new LlamaGPUClient({ baseUrl: URL, apiKey: READ_KEY }));
  await assert.rejects(reader.chat([{ role: "user", content: "hi" }], { model: QWEN }), PermissionDeniedError);
  const socket = await open();
  let cancelled = false;
  await assert.rejects(
    socket.chat([{ role: "user", content: "Write a very long essay about rivers." }], {
      model: QWEN,
      maxTokens: 400,
      requestId: "js-chat-cancel",
      onChunk: () => {
        if (!cancelled) {
          cancelled = true;
          socket.cancelChat("js-chat-cancel");
        }
      },
    }),
    RequestCancelledError,
  );
  assert.ok(cancelled);
  await assert.rejects(
    socket.chat([{ role: "user", content: "Write a long poem." }], { model: QWEN, maxTokens: 400, timeout: 500 }),
    /did not finish within 500 ms/,
  );
});
