// The ES module entry point: the implementation is index.cjs (one source for both formats).
import client from "./index.cjs";

export const {
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
} = client;
export default client;
