/**
 * A node-agent HTTP server holding one replica of a model, without Kubernetes: the agent's real app and
 * replica engine, so bench/node-agent-throughput.ts measures the serving path alone. Reports its port
 * to the parent over IPC.
 */
import type { AddressInfo } from "node:net";
import { getLlama } from "node-llama-cpp";
import { buildApp } from "../node-agent/app.ts";
import { createMetrics } from "../node-agent/metrics.ts";
import { ReplicaEngine } from "../node-agent/replica-engine.ts";
import type { ReplicaSlot } from "../node-agent/replica-manager.ts";

const [modelPath, threadsText, token] = process.argv.slice(2);
const threads = Number(threadsText);
const engineSettings = { contextSize: 2048, parallelSequences: 1, embeddings: false };
const llama = await getLlama({
  gpu: process.platform === "darwin" ? "auto" : false,
  build: "never",
  progressLogs: false,
  maxThreads: threads,
});
const engine = await ReplicaEngine.load(llama, modelPath!, engineSettings, { threads, queueLimit: 8 });
const slot: ReplicaSlot = {
  namespace: "bench",
  name: "replica",
  uid: "bench",
  generation: 1,
  model: "bench",
  embeddings: false,
  phase: "Ready",
  engine,
  memoryBytes: 0,
  stop: new AbortController(),
  cachedPath: modelPath,
};
const metrics = createMetrics(() => []);
const app = buildApp({
  manager: { ready: () => slot },
  metrics,
  nodeToken: token!,
  logLevel: "silent",
  isDraining: () => false,
  isReady: () => true,
});
await app.listen({ port: 0, host: "127.0.0.1" });
process.send?.({ port: (app.server.address() as AddressInfo).port });
process.on("disconnect", () => {
  void app
    .close()
    .then(() => engine.dispose())
    .then(() => process.exit(0));
});
