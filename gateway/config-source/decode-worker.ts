// Decodes the parts of the gateway config off the event loop (see config-decoder.ts): gunzip, JSON and
// validation of a part take milliseconds that requests should not wait for, and a whole config of 100,000
// keys a few hundred. One part per message, so the event loop takes each answer in its own short turn.
import { parentPort } from "node:worker_threads";
import { decodeCorePart, decodeKeyBucket } from "../../crds/api/index.ts";

export type DecodeRequest = { id: number; bytes: Uint8Array } & ({ part: "core" } | { part: "bucket"; bucket: number });

parentPort?.on("message", (request: DecodeRequest) => {
  try {
    const value =
      request.part === "core" ? decodeCorePart(request.bytes) : decodeKeyBucket(request.bucket, request.bytes);
    parentPort?.postMessage({ id: request.id, value });
  } catch (err) {
    parentPort?.postMessage({ id: request.id, error: err instanceof Error ? err.message : String(err) });
  }
});
