/**
 * The real gateway app in its own process with a fixed config handed over on the command line instead of
 * watched from the API server, so a benchmark measures the serving path without Kubernetes. Limits are
 * in memory, or in Redis when a URL is given (as with POMONA_REDIS_URL). Every other setting (timeouts,
 * body limit, log level) is the gateway's own default from gateway/config.ts, as `npm start` and the
 * chart run it (bench/_user-config.ts). Reports its port over IPC.
 *
 * With `nodeTls` in the spec it reaches the node over mutual TLS with that client credential, as the
 * gateway does by default (POMONA_NODE_TLS=mutual); else over plain HTTP.
 *
 *   node bench/_static-gateway.ts '<StaticGatewaySpec as JSON>'
 */
import type { AddressInfo } from "node:net";
import { buildApp } from "../gateway/app.ts";
import { defaultClientLimits } from "../gateway/client-connections.ts";
import { ConfigHolder } from "../gateway/config-source/config-holder.ts";
import { HashingKeysHolder } from "../gateway/key-hashing.ts";
import type { Limiter } from "../gateway/limits/limiter.ts";
import { MemoryLimiter } from "../gateway/limits/memory-limiter.ts";
import { RedisLimiter } from "../gateway/limits/redis-limiter.ts";
import { createMetrics } from "../gateway/metrics.ts";
import { MutualTlsTransport } from "../gateway/upstream/node-transport.ts";
import { BENCH_HASHING_KEY, type StaticGatewaySpec } from "./_gateway-config.ts";
import { answerLoopStats } from "./_loop-stats.ts";
import { defaultGatewaySettings } from "./_user-config.ts";

// Only when a benchmark looks inside: the delay monitor's 1 ms timer is work the other benchmarks should not pay.
if (process.env.POMONA_BENCH_LOOP_STATS === "1") answerLoopStats();
const spec = JSON.parse(process.argv[2] ?? "{}") as StaticGatewaySpec;
const settings = defaultGatewaySettings(spec.nodeToken);
const holder = new ConfigHolder();
holder.offer(spec.config);
const metrics = createMetrics();
let limiter: Limiter = new MemoryLimiter();
if (spec.redisUrl) {
  const shared = new RedisLimiter({ url: spec.redisUrl, onFailure: "deny", metrics });
  // As gateway/gateway.ts does: take traffic only once Redis answers, so no request is decided by the failure mode.
  // "deny" rather than the default "allow": a Redis failure during a run shows as refused requests (which
  // fail the benchmark) instead of quietly skipping the limiter and looking faster.
  if (!(await shared.connected(10_000))) throw new Error(`Redis at ${spec.redisUrl} did not answer`);
  limiter = shared;
}
let nodeTransport: MutualTlsTransport | undefined;
if (spec.nodeTls) {
  nodeTransport = new MutualTlsTransport();
  nodeTransport.use(spec.nodeTls);
}
const app = await buildApp({
  holder,
  limiter,
  metrics,
  nodeToken: spec.nodeToken,
  nodeTransport,
  upstream: settings.upstream,
  queue: settings.queue,
  bodyLimitBytes: settings.bodyLimitBytes,
  hashingKeys: new HashingKeysHolder({ current: BENCH_HASHING_KEY }),
  // One load generator stands in for many clients: the per-address connection cap would count them as one.
  clients: { ...defaultClientLimits, maxConnectionsPerClient: 100_000 },
  // Access logs at the default level, as in production; the benchmarks discard this process's stdout.
  logLevel: settings.logLevel,
});
await app.listen({ port: 0, host: "127.0.0.1" });
process.send?.({ port: (app.server.address() as AddressInfo).port });
const stop = () => {
  void app
    .close()
    .then(() => limiter.close())
    .finally(() => process.exit(0));
};
process.once("disconnect", stop);
// SIGINT too, so `node --cpu-prof` can write its profile of this process.
process.once("SIGINT", stop);
