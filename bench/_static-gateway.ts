// The gateway for the overhead benchmark: the real app with a fixed config (one model on the bench
// upstream, one key with a generous policy so the limiter runs), without Kubernetes, in its own process.
import { createHash } from "node:crypto";
import type { AddressInfo } from "node:net";
import { buildApp } from "../gateway/app.ts";
import { ConfigHolder } from "../gateway/config-source/config-holder.ts";
import { MemoryLimiter } from "../gateway/limits/memory-limiter.ts";
import { createMetrics } from "../gateway/metrics.ts";

const [upstreamPort, apiKey] = process.argv.slice(2);
const holder = new ConfigHolder();
holder.offer({
  version: 1,
  generatedAt: new Date().toISOString(),
  models: [
    {
      namespace: "bench",
      name: "tiny",
      aliases: [],
      endpoints: [
        { url: `http://127.0.0.1:${upstreamPort}/replicas/bench/tiny-a`, replica: "tiny-a", node: "n", weight: 1 },
      ],
      fallbacks: [],
      embeddings: false,
      contextSize: 4096,
    },
  ],
  keys: [
    {
      hash: createHash("sha256")
        .update(apiKey ?? "")
        .digest("hex"),
      namespace: "bench",
      name: "bench",
      owner: "bench",
      rateLimitPolicy: "generous",
    },
  ],
  policies: [
    {
      namespace: "bench",
      name: "generous",
      scope: "PerKey",
      requestsPerMinute: 1e9,
      tokensPerMinute: 1e9,
      concurrentRequests: 1e6,
    },
  ],
});
const app = await buildApp({
  holder,
  limiter: new MemoryLimiter(),
  metrics: createMetrics(),
  nodeToken: "bench-node-token",
  upstream: { firstByteTimeoutMs: 30_000, totalTimeoutMs: 60_000, breakerResetMs: 5_000 },
  bodyLimitBytes: 4 * 1024 * 1024,
  // Access logs on, as in production; the benchmark discards this process's stdout.
  logLevel: "info",
});
await app.listen({ port: 0, host: "127.0.0.1" });
process.send?.({ port: (app.server.address() as AddressInfo).port });
// Exit cleanly on SIGINT so `node --cpu-prof` can write its profile of this process.
process.once("SIGINT", () => process.exit(0));
