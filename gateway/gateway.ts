/**
 * Starts a gateway: settings from the environment, the config watcher, the limiter, the public HTTP
 * server and the internal one for probes and metrics.
 */
import { KubeConfig } from "@kubernetes/client-node/dist/config.js";
import { reuseConnections } from "../kube/connections.ts";
import { buildAdminApp } from "./admin-app.ts";
import { buildApp } from "./app.ts";
import { loadSettings } from "./config.ts";
import { ConfigHolder } from "./config-source/config-holder.ts";
import { GatewayConfigWatcher } from "./config-source/secret-watcher.ts";
import { HashingKeysHolder, HashingKeysWatcher } from "./key-hashing.ts";
import type { Limiter } from "./limits/limiter.ts";
import { MemoryLimiter } from "./limits/memory-limiter.ts";
import { RedisLimiter } from "./limits/redis-limiter.ts";
import { createMetrics } from "./metrics.ts";
import { closeGracefully } from "./shutdown.ts";
import { watchNodeCredential } from "./upstream/node-credential-watch.ts";
import { MutualTlsTransport, plainTransport } from "./upstream/node-transport.ts";

/** Time streams in flight get to finish when the gateway is asked to stop. */
const SHUTDOWN_GRACE_MS = 20_000;

async function main(): Promise<void> {
  let settings: ReturnType<typeof loadSettings>;
  try {
    settings = loadSettings();
  } catch (err) {
    console.error((err as Error).message);
    process.exit(2);
  }
  const metrics = createMetrics();
  const holder = new ConfigHolder();
  const hashingKeys = new HashingKeysHolder();
  let limiter: Limiter = new MemoryLimiter();
  let redisConnected: Promise<boolean> | undefined;
  if (settings.redisUrl) {
    const shared = new RedisLimiter({ url: settings.redisUrl, onFailure: settings.limitsOnRedisFailure, metrics });
    redisConnected = shared.connected(5_000);
    limiter = shared;
  }
  const mutualTls = settings.nodeTls === "mutual" ? new MutualTlsTransport() : undefined;
  const app = await buildApp({
    holder,
    limiter,
    metrics,
    nodeTransport: mutualTls ?? plainTransport(),
    nodeToken: settings.nodeToken,
    upstream: settings.upstream,
    queue: settings.queue,
    bodyLimitBytes: settings.bodyLimitBytes,
    hashingKeys,
    invalidKeys: settings.invalidKeys,
    answerLimitBytes: settings.answerLimitBytes,
    clients: settings.clients,
    corsOrigins: settings.corsOrigins,
    logLevel: settings.logLevel,
  });
  const admin = await buildAdminApp({ holder, hashingKeys, metrics, logLevel: settings.logLevel });
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromDefault();
  // One connection to the API server for every call instead of a TLS handshake each (docs/decisions.md).
  reuseConnections(kubeConfig);
  const watcher = new GatewayConfigWatcher({
    kubeConfig,
    namespace: settings.namespace,
    holder,
    log: app.log,
    metrics,
  });
  watcher.start();
  const hashingWatcher = new HashingKeysWatcher({
    kubeConfig,
    namespace: settings.namespace,
    holder: hashingKeys,
    log: app.log,
  });
  hashingWatcher.start();

  const credentials = mutualTls
    ? watchNodeCredential(kubeConfig, settings.namespace, (c) => mutualTls.use(c), app.log)
    : undefined;
  credentials?.start();

  process.on("unhandledRejection", (err) => app.log.error({ err }, "unhandled rejection"));
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.log.info({ signal }, "stopping");
    watcher.stop();
    hashingWatcher.stop();

    credentials?.stop();
    await closeGracefully(app, SHUTDOWN_GRACE_MS);
    await admin.close();
    await limiter.close();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));

  // Give Redis a moment before taking traffic, so the first requests are not decided by the failure mode.
  if (redisConnected && !(await redisConnected)) {
    app.log.warn(
      { onRedisFailure: settings.limitsOnRedisFailure },
      "Redis not reachable yet; limits follow the failure mode until it is",
    );
  }
  // Probes and metrics first: the kubelet finds the gateway alive while it waits for its first config.
  const adminAddress = await admin.listen({ port: settings.admin.port, host: settings.admin.host });
  const address = await app.listen({ port: settings.port, host: settings.host });
  app.log.info(
    {
      address,
      adminAddress,
      trustedProxies: settings.clients.trustedProxies,
      corsOrigins: settings.corsOrigins,
      namespace: settings.namespace,
      limits: settings.redisUrl ? "redis" : "memory",
      onRedisFailure: settings.limitsOnRedisFailure,
      nodeTls: settings.nodeTls,
    },
    "gateway listening",
  );
}

await main();
