// Runs decodeGatewayConfig off the event loop (see config-decoder.ts): gunzip, JSON and validation of
// 100,000 keys take a few hundred milliseconds that requests should not wait for.
import { parentPort } from "node:worker_threads";
import { ConfigNotReadyError, type CorePart, decodeGatewayConfig } from "../../crds/api/index.ts";

interface DecodeRequest {
  id: number;
  core: CorePart;
  buckets: (Uint8Array | undefined)[];
}

parentPort?.on("message", ({ id, core, buckets }: DecodeRequest) => {
  try {
    parentPort?.postMessage({ id, config: decodeGatewayConfig(core, buckets) });
  } catch (err) {
    parentPort?.postMessage({
      id,
      error: {
        notReady: err instanceof ConfigNotReadyError,
        message: err instanceof Error ? err.message : String(err),
      },
    });
  }
});
