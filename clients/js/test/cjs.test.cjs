// The CommonJS entry point exports the same client as the ES module one.
const assert = require("node:assert/strict");
const { test } = require("node:test");

test("require() gives the client and the errors", async () => {
  const cjs = require("llama-gpu-client");
  const esm = await import("llama-gpu-client");
  assert.equal(cjs.LlamaGPUClient, esm.LlamaGPUClient);
  assert.equal(cjs.ModelNotFoundError, esm.ModelNotFoundError);
  const error = new cjs.ModelNotFoundError("gone");
  assert.ok(error instanceof cjs.NotFoundError && error instanceof cjs.LlamaGPUError && error instanceof Error);
  assert.equal(error.code, "MODEL_NOT_FOUND");
  assert.equal(error.name, "ModelNotFoundError");
});
