// Decodes the parts of the gateway config off the event loop (see config-decoder.ts): gunzip, JSON and
// validation of a part take milliseconds that requests should not wait for, and a whole config of 100,000
// keys a few hundred. One part per message, answered as chunks of JSON (part-chunks.ts) that the event loop
// parses one per turn.
import { parentPort } from "node:worker_threads";
import { coreChunksOf, keyChunksOf } from "./part-chunks.ts";

export type DecodeRequest = { id: number; bytes: Uint8Array } & ({ part: "core" } | { part: "bucket"; bucket: number });

parentPort?.on("message", (request: DecodeRequest) => {
  try {
    const value = request.part === "core" ? coreChunksOf(request.bytes) : keyChunksOf(request.bucket, request.bytes);
    parentPort?.postMessage({ id: request.id, value });
  } catch (err) {
    parentPort?.postMessage({ id: request.id, error: err instanceof Error ? err.message : String(err) });
  }
});
