/**
 * A node-agent HTTP server holding one replica of a model, without Kubernetes: the agent's real app and
 * replica engine with the benchmarks' engine settings (bench/_bench-model.ts), so a benchmark measures
 * the serving path alone. Serves /replicas/bench/replica/v1/...; reports its port to the parent over IPC.
 *
 *   node bench/_agent-replica.ts <model.gguf> <threads> <node token> [serving credential as JSON]
 *
 * With a serving credential (bench/_node-tls.ts) it serves HTTPS and asks for the gateway's client
 * certificate, as a node-agent does by default.
 */
import type { AddressInfo } from "node:net";
import { buildApp, createLogger } from "../node-agent/app.ts";
import { createMetrics } from "../node-agent/metrics.ts";
import { ReplicaEngine } from "../node-agent/replica-engine.ts";
import type { ReplicaSlot } from "../node-agent/replica-manager.ts";
import { BENCH_ENGINE, benchLlama } from "./_bench-model.ts";

const [modelPath, threadsText, token, tlsText] = process.argv.slice(2);
const threads = Number(threadsText);
const llama = await benchLlama(threads);
const engine = await ReplicaEngine.load(
  llama,
  modelPath!,
  { ...BENCH_ENGINE, threads },
  { maxThreads: threads, queueLimit: 64 },
);
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
  // Fastify's request logs on, as the agent runs by default; the benchmarks discard this process's stdout.
  log: createLogger("info"),
  isDraining: () => false,
  isReady: () => true,
  tls: tlsText ? JSON.parse(tlsText) : undefined,
});
await app.listen({ port: 0, host: "127.0.0.1" });
process.send?.({ port: (app.server.address() as AddressInfo).port });
process.on("disconnect", () => {
  void app
    .close()
    .then(() => engine.dispose())
    .then(() => process.exit(0));
});
