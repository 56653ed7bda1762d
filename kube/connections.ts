/**
 * One connection pool per API server and credentials for a KubeConfig.
 * @kubernetes/client-node 2.0 builds a new undici Agent for every request
 * (KubeConfig.createDispatcher, called from applySecurityAuthentication), so
 * every call opens its own TLS connection, which then lingers until undici's
 * keep-alive timeout: measured here, 600 calls made 600 TLS handshakes and
 * took a process to 276 MiB; with this, 1 handshake (docs/decisions.md,
 * "One connection pool per API server").
 */
import type { Cluster, KubeConfig } from "@kubernetes/client-node";
import type { Dispatcher } from "undici";

type CreateDispatcher = (cluster: Cluster | null, agentOptions: Record<string, unknown>) => Dispatcher | undefined;

/** Bound on distinct pools: one per server and credentials, a handful at most; beyond it the oldest is closed. */
const MAX_POOLS = 8;

interface Pool {
  settings: unknown[];
  dispatcher: Dispatcher | undefined;
}

/** Makes every API client of `kubeConfig` share one dispatcher per distinct connection settings. */
export function reuseConnections(kubeConfig: KubeConfig): void {
  const target = kubeConfig as unknown as { createDispatcher?: CreateDispatcher };
  const create = target.createDispatcher;
  // A client-node that no longer has the method (or caches itself) is left as it is.
  if (typeof create !== "function") return;
  const pools: Pool[] = [];
  target.createDispatcher = (cluster, agentOptions) => {
    const settings = settingsOf(cluster, kubeConfig.createDispatcherOptions(cluster, agentOptions));
    const known = pools.find((p) => sameSettings(p.settings, settings));
    if (known) return known.dispatcher;
    const dispatcher = create.call(kubeConfig, cluster, agentOptions);
    pools.push({ settings, dispatcher });
    if (pools.length > MAX_POOLS)
      void pools
        .shift()
        ?.dispatcher?.close()
        .catch(() => {});
    return dispatcher;
  };
}

/** The connection settings as a flat list, TLS material included: new client certificates get a new pool. */
function settingsOf(cluster: Cluster | null, options: object): unknown[] {
  const out: unknown[] = [cluster?.server];
  const add = (value: unknown): void => {
    if (value && typeof value === "object" && !Buffer.isBuffer(value)) {
      for (const [k, v] of Object.entries(value).sort(([a], [b]) => (a < b ? -1 : 1))) {
        out.push(k);
        add(v);
      }
    } else out.push(value);
  };
  add(options);
  return out;
}

const sameSettings = (a: unknown[], b: unknown[]): boolean =>
  a.length === b.length &&
  a.every((v, i) => {
    const w = b[i];
    return Buffer.isBuffer(v) && Buffer.isBuffer(w) ? v.equals(w) : v === w;
  });
