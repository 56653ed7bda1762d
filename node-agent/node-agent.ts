/**
 * The node-agent: the kubelet of Pomona for one inference node. `startNodeAgent(config)` composes the
 * parts; the process reads its environment (docs/components.md) and drains on SIGTERM/SIGINT: new work
 * gets 503, running streams finish, replicas report Terminating. Started by main.ts.
 */

import type { Server as HttpsServer } from "node:https";
import { KubeConfig } from "@kubernetes/client-node/dist/config.js";
import { getLlama } from "node-llama-cpp";
import { reuseConnections } from "../kube/connections.ts";
import { errorText } from "../kube/rest.ts";
import { buildApp, createLogger, tlsOptions } from "./app.ts";
import { loadConfig, type NodeAgentConfig } from "./config.ts";
import { detectHardware, usableCpus } from "./hardware.ts";
import { createMetrics } from "./metrics.ts";
import { ModelCache } from "./model-cache.ts";
import { NodePresence } from "./node-presence.ts";
import { ReplicaManager } from "./replica-manager.ts";
import { ReplicaWatch } from "./replica-watch.ts";
import { ServingIdentity } from "./serving-identity.ts";

interface RunningNodeAgent {
  port: number;
  /** Drain and stop; resolves when everything is closed. */
  stop: (drainMs?: number) => Promise<void>;
}

async function startNodeAgent(config: NodeAgentConfig): Promise<RunningNodeAgent> {
  const kubeConfig = new KubeConfig();
  if (process.env.KUBECONFIG) kubeConfig.loadFromFile(process.env.KUBECONFIG);
  else kubeConfig.loadFromCluster();
  // One connection to the API server for every call (lease renewals, status, the replica watch) instead of a
  // TLS handshake each, which blocked the thread that serves requests for milliseconds (docs/decisions.md).
  reuseConnections(kubeConfig);

  const hardware = detectHardware();
  const modelMemoryBytes = config.modelMemoryBytes ?? hardware.modelMemoryBytes;
  const threads = config.threads ?? usableCpus();
  // Metal on a Mac; CPU elsewhere, where a GPU backend would only be probed and fail.
  const llama = await getLlama({
    gpu: hardware.accelerator === "metal" ? "auto" : false,
    build: "never",
    progressLogs: false,
    maxThreads: threads,
  });
  const cache = new ModelCache(config.cacheDir, config.cacheMaxBytes, config.hfEndpoint, config.modelSources);
  await cache.init();

  let draining = false;
  let ready = false;
  let manager: ReplicaManager | undefined;
  const metrics = createMetrics(() => manager?.gauges() ?? []);
  // The node registers first: the operator signs a serving certificate only for a registered address.
  const log = createLogger(config.logLevel);
  const presence = new NodePresence({
    kubeConfig,
    nodeName: config.nodeName,
    mode: config.nodeMode,
    address: config.address,
    hardware,
    modelMemoryBytes,
    renewSeconds: config.leaseRenewSeconds,
    log,
  });
  await presence.start();
  let app: ReturnType<typeof buildApp> | undefined;
  const identity =
    config.tls === "mutual"
      ? new ServingIdentity(kubeConfig, {
          nodeName: config.nodeName,
          address: config.address,
          log,
          onRenewed: (credential) => {
            // Only a server started with TLS renews; new handshakes take the new certificate, open ones go on.
            (app?.server as unknown as HttpsServer | undefined)?.setSecureContext(tlsOptions(credential));
          },
        })
      : undefined;
  const tls = await identity?.start();
  app = buildApp({
    manager: { ready: (namespace, name) => manager?.ready(namespace, name) },
    metrics,
    nodeToken: config.nodeToken,
    log,
    isDraining: () => draining,
    isReady: () => ready,
    timing: { keepAliveMs: config.keepAliveMs, stallMs: config.stallTimeoutMs },
    tls,
  });
  log.info(
    {
      node: config.nodeName,
      mode: config.nodeMode,
      accelerator: hardware.accelerator,
      chip: hardware.chip,
      modelMemoryBytes,
      threads,
    },
    `node-agent starting; replicas use at most ${threads} llama.cpp thread(s)`,
  );

  const publishCache = () =>
    void cache
      .digests()
      .then((d) => presence.setCachedModels(d))
      .catch((err) => log.warn({ err: errorText(err) }, "cannot publish cached models"));
  manager = new ReplicaManager({
    kubeConfig,
    nodeName: config.nodeName,
    llama,
    cache,
    modelMemoryBytes,
    threads,
    queueLimit: config.queueLimit,
    endpointBase: `${tls ? "https" : "http"}://${config.address}:${config.port}`,
    metrics,
    log,
    onCacheChanged: publishCache,
  });
  const activeManager = manager;
  const activeApp = app;
  await activeApp.listen({ port: config.port, host: "0.0.0.0" });
  publishCache();
  const watch = new ReplicaWatch(
    kubeConfig,
    {
      upsert: (r) => activeManager.upsert(r),
      remove: (r) => activeManager.remove(r),
      synced: (all) => activeManager.synced(all),
    },
    log,
  );
  watch.start();
  ready = true;
  log.info({ port: config.port }, "node-agent ready");

  let stopping: Promise<void> | undefined;
  const stop = (drainMs = 30_000) => {
    stopping ??= (async () => {
      draining = true;
      watch.stop();
      identity?.stop();
      await presence.setReady(false).catch(() => {});
      await activeManager.drain(drainMs);
      presence.stop();
      await activeApp.close();
      await llama.dispose().catch(() => {});
      log.info("node-agent stopped");
    })();
    return stopping;
  };
  return { port: config.port, stop };
}

async function main(): Promise<void> {
  let config: NodeAgentConfig;
  try {
    config = loadConfig();
  } catch (err) {
    console.error((err as Error).message);
    process.exit(2);
  }
  const agent = await startNodeAgent(config);
  const onSignal = (signal: string) => {
    console.error(`node-agent: ${signal}, draining`);
    agent.stop().then(
      () => process.exit(0),
      (err) => {
        console.error(`node-agent: shutdown failed: ${errorText(err)}`);
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => onSignal("SIGTERM"));
  process.once("SIGINT", () => onSignal("SIGINT"));
}

await main().catch((err) => {
  console.error(`node-agent failed to start: ${errorText(err)}`);
  process.exit(1);
});
