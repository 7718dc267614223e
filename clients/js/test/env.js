// The live servers the tests run against, from the environment (tests/test_js_client.py sets them).
function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests through tests/test_js_client.py (see README.md)`);
  return value;
}

export const URL = required("LLAMA_GPU_URL");
export const ADMIN_KEY = required("LLAMA_GPU_API_KEY");
export const READ_KEY = required("LLAMA_GPU_READ_KEY");
export const TIGHT_URL = required("LLAMA_GPU_TIGHT_URL");
export const TIGHT_KEY = required("LLAMA_GPU_TIGHT_KEY");
export const GEMMA = "gemma-3-270m";
export const QWEN = "qwen2.5-coder-0.5b-instruct";
