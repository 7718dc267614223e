// The README's ```js examples run, in order, as one module against the live server.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const readme = readFileSync(join(here, "..", "README.md"), "utf8");
const blocks = [...readme.matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1]);

test("the README has the examples", () => {
  const all = blocks.join("\n");
  for (const call of ["infer(", "streamInfer(", "batchInfer(", "listModels(", "loadModel(", "getSystemStatus(", "createSocket(", "subscribe("]) {
    assert.ok(all.includes(call), call);
  }
});

test("the README examples run", async () => {
  // the first block shows both import styles and is not part of the program
  const program = blocks.slice(1).join("\n");
  // inside the package folder, so that "llama-gpu-client" resolves to this package (self-reference)
  const dir = mkdtempSync(join(here, ".readme-"));
  const file = join(dir, "readme.mjs");
  writeFileSync(file, program);
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [file], { timeout: 240000, env: process.env });
    assert.match(stdout, /MODEL_NOT_FOUND 404/);
    assert.match(stdout, /done: req_/);
    assert.match(stdout, /tokens in .*s on llamacpp/);
  } catch (err) {
    assert.fail(`the README program failed:\n${err.stdout ?? ""}\n${err.stderr ?? err.message}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
