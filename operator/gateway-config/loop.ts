/**
 * Keeps the published gateway config in step with the cluster: any change
 * marks it stale; a change after a quiet spell is published at once, and
 * changes that follow it within `quietMs` are gathered into one publication
 * (at most `maxDelayMs` after the first of them). Compilation redoes only what
 * changed (incremental.ts), and only changed key buckets are written.
 */
import type { V1Secret } from "@kubernetes/client-node";
import { CONFIG_DATA_KEY, coreSecretName, decodeCorePart, encodeCorePart } from "../../crds/api/index.ts";
import type { Cluster } from "../cluster.ts";
import { GatewayConfigCompiler } from "./incremental.ts";
import { GatewayConfigPublisher } from "./publish.ts";

export interface GatewayConfigLoopOptions {
  namespace: string;
  quietMs?: number;
  maxDelayMs?: number;
}

/**
 * The next config version: the wall clock in milliseconds, or one more than the
 * last version when that is ahead. Versions so move forward even when the
 * operator's own state (its memory, the core Secret holding the last version)
 * is lost: a fresh start begins at the clock, past everything published before
 * (docs/decisions.md, "Config versions from the clock").
 */
export const nextConfigVersion = (previous: number, nowMs: number): number => Math.max(previous + 1, Math.floor(nowMs));

export function createGatewayConfigLoop(cluster: Cluster, options: GatewayConfigLoopOptions) {
  const publisher = new GatewayConfigPublisher(cluster.applier.rest, options.namespace);
  const compiler = new GatewayConfigCompiler(cluster.log);
  let version: number | undefined;
  let lastFingerprint = "";

  async function storedVersion(): Promise<number> {
    try {
      const secret = await cluster.applier.rest.get<V1Secret>(
        `/api/v1/namespaces/${options.namespace}/secrets/${coreSecretName}`,
      );
      const data = secret.data?.[CONFIG_DATA_KEY];
      return data ? decodeCorePart(Buffer.from(data, "base64")).version : 0;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return 0;
      throw err;
    }
  }

  /** The reconcile of the single key "gateway-config". */
  async function publishIfChanged(): Promise<undefined> {
    const started = performance.now();
    const compiled = compiler.compile({
      models: cluster.models.list(),
      replicas: cluster.replicas.list(),
      keys: cluster.keys.list(),
      policies: cluster.policies.list(),
      now: new Date(),
    });
    if (compiled.fingerprint === lastFingerprint) return undefined;
    const compiledMs = performance.now() - started;
    version ??= await storedVersion();
    const next = nextConfigVersion(version, Date.now());
    const coreBytes = encodeCorePart({ version: next, generatedAt: new Date().toISOString(), ...compiled.core });
    const publishing = performance.now();
    const written = await publisher.publishEncoded({ core: coreBytes, buckets: [...compiled.buckets] }, next);
    version = next;
    lastFingerprint = compiled.fingerprint;
    cluster.metrics.gatewayConfigPublications.inc();
    cluster.log.info("gateway config published", {
      version: next,
      models: compiled.core.models.length,
      bucketsWritten: written.bucketsWritten,
      compileMs: Math.round(compiledMs),
      publishMs: Math.round(performance.now() - publishing),
    });
    return undefined;
  }

  return { publishIfChanged, quietMs: options.quietMs ?? 100, maxDelayMs: options.maxDelayMs ?? 500 };
}

/**
 * Calls `fire` at once for a call after a quiet spell of `quietMs`; calls that
 * come sooner are gathered into one call `quietMs` after the last of them, but
 * no later than `maxDelayMs` after the first. So a lone change (a key deleted)
 * waits for nothing, and a burst (a thousand keys applied) is still one call
 * per `quietMs` or so.
 */
export function debounce(fire: () => void, quietMs: number, maxDelayMs: number): () => void {
  let timer: NodeJS.Timeout | undefined;
  let first = 0;
  let lastFired = Number.NEGATIVE_INFINITY;
  const fireNow = (now: number) => {
    lastFired = now;
    fire();
  };
  return () => {
    const now = Date.now();
    if (!timer && now - lastFired >= quietMs) {
      fireNow(now);
      return;
    }
    if (!timer) first = now;
    else clearTimeout(timer);
    const wait = Math.max(0, Math.min(quietMs, first + maxDelayMs - now));
    timer = setTimeout(() => {
      timer = undefined;
      fireNow(Date.now());
    }, wait);
  };
}
