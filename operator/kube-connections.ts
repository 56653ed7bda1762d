/**
 * One connection pool per API server and credentials for a KubeConfig.
 * @kubernetes/client-node 2.0 builds a new undici Agent for every request
 * (KubeConfig.createDispatcher, called from applySecurityAuthentication), so
 * every call opens its own TLS connection, which then lingers until undici's
 * keep-alive timeout: measured here, 600 calls made 600 TLS handshakes and
 * took a process to 276 MiB; with this, 1 handshake (docs/decisions.md,
 * "One connection pool per API server").
 */
import { createHash } from "node:crypto";
import type { Cluster, KubeConfig } from "@kubernetes/client-node";
import type { Dispatcher } from "undici";

type CreateDispatcher = (cluster: Cluster | null, agentOptions: Record<string, unknown>) => Dispatcher | undefined;

/** Bound on distinct pools: one per server and credentials, a handful at most; beyond it the oldest is closed. */
const MAX_POOLS = 8;

/** Makes every API client of `kubeConfig` share one dispatcher per distinct connection settings. */
export function reuseConnections(kubeConfig: KubeConfig): void {
  const target = kubeConfig as unknown as { createDispatcher?: CreateDispatcher };
  const create = target.createDispatcher;
  // A client-node that no longer has the method (or caches itself) is left as it is.
  if (typeof create !== "function") return;
  const pools = new Map<string, Dispatcher | undefined>();
  target.createDispatcher = (cluster, agentOptions) => {
    // The connection settings, TLS material included: new client certificates get a new pool.
    const key = createHash("sha256")
      .update(JSON.stringify(kubeConfig.createDispatcherOptions(cluster, agentOptions)))
      .update(cluster?.server ?? "")
      .digest("hex");
    if (pools.has(key)) return pools.get(key);
    const dispatcher = create.call(kubeConfig, cluster, agentOptions);
    pools.set(key, dispatcher);
    if (pools.size > MAX_POOLS) {
      const [oldest, pool] = pools.entries().next().value as [string, Dispatcher | undefined];
      pools.delete(oldest);
      void pool?.close().catch(() => {});
    }
    return dispatcher;
  };
}
