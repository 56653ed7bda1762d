/**
 * Keeps the published gateway config in step with the cluster: any change
 * marks it stale; after a short quiet period (at most `maxDelayMs` after the
 * first change) it is compiled, validated and published once, under a version
 * that continues from the one already stored.
 */
import { CoreV1Api } from "@kubernetes/client-node";
import { CONFIG_DATA_KEY, coreSecretName, decodeCorePart, gatewayConfig } from "../../crds/api/index.ts";
import type { Cluster } from "../cluster.ts";
import { compileGatewayConfig } from "./compile.ts";
import { GatewayConfigPublisher } from "./publish.ts";

export interface GatewayConfigLoopOptions {
  namespace: string;
  quietMs?: number;
  maxDelayMs?: number;
}

export function createGatewayConfigLoop(cluster: Cluster, options: GatewayConfigLoopOptions) {
  const publisher = new GatewayConfigPublisher(cluster.applier.objects, options.namespace);
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  let version: number | undefined;
  let lastContent = "";

  async function storedVersion(): Promise<number> {
    try {
      const secret = await core.readNamespacedSecret({ name: coreSecretName, namespace: options.namespace });
      const data = secret.data?.[CONFIG_DATA_KEY];
      return data ? decodeCorePart(Buffer.from(data, "base64")).version : 0;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return 0;
      throw err;
    }
  }

  /** The reconcile of the single key "gateway-config". */
  async function publishIfChanged(): Promise<undefined> {
    const compiled = compileGatewayConfig({
      models: cluster.models.list(),
      replicas: cluster.replicas.list(),
      keys: cluster.keys.list(),
      policies: cluster.policies.list(),
      now: new Date(),
    });
    const content = JSON.stringify(compiled);
    if (content === lastContent) return undefined;
    version ??= await storedVersion();
    const config = gatewayConfig.parse({ version: version + 1, generatedAt: new Date().toISOString(), ...compiled });
    const started = performance.now();
    const written = await publisher.publish(config);
    version = config.version;
    lastContent = content;
    cluster.metrics.gatewayConfigPublications.inc();
    cluster.log.info("gateway config published", {
      version: config.version,
      models: config.models.length,
      keys: config.keys.length,
      bucketsWritten: written.bucketsWritten,
      ms: Math.round(performance.now() - started),
    });
    return undefined;
  }

  return { publishIfChanged, quietMs: options.quietMs ?? 100, maxDelayMs: options.maxDelayMs ?? 500 };
}

/** Calls `fire` once after a burst: `quietMs` after the last call, but no later than `maxDelayMs` after the first. */
export function debounce(fire: () => void, quietMs: number, maxDelayMs: number): () => void {
  let timer: NodeJS.Timeout | undefined;
  let first = 0;
  return () => {
    const now = Date.now();
    if (!timer) first = now;
    else clearTimeout(timer);
    const wait = Math.max(0, Math.min(quietMs, first + maxDelayMs - now));
    timer = setTimeout(() => {
      timer = undefined;
      fire();
    }, wait);
  };
}
