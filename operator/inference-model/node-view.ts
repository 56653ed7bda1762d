/** What the scheduler sees of a Node and its Lease. */
import type { V1Lease, V1Node } from "@kubernetes/client-node";
import { annotations, modelMemoryResource } from "../../crds/api/index.ts";
import { parseQuantity } from "../../crds/api/quantity.ts";
import type { NodeView } from "../scheduler/schedule.ts";

/** Where nodes keep their heartbeat Leases, one per node, named after it. */
export const nodeLeaseNamespace = "kube-node-lease";

/** Milliseconds since the Lease stopped being valid; negative while it is fresh; Infinity without one. */
export function leaseExpiredForMs(lease: V1Lease | undefined, now: number): number {
  const renewed = lease?.spec?.renewTime ?? lease?.spec?.acquireTime;
  if (!renewed) return Number.POSITIVE_INFINITY;
  return now - (new Date(renewed).getTime() + (lease?.spec?.leaseDurationSeconds ?? 40) * 1000);
}

export function nodeView(node: V1Node, lease: V1Lease | undefined, now: number): NodeView {
  const allocatable = node.status?.allocatable?.[modelMemoryResource];
  return {
    name: node.metadata?.name ?? "",
    labels: node.metadata?.labels ?? {},
    taints: (node.spec?.taints ?? []).map((t) => ({ key: t.key, value: t.value, effect: t.effect })),
    ready: node.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false,
    leaseFresh: leaseExpiredForMs(lease, now) < 0,
    modelMemoryBytes: allocatable ? (parseQuantity(allocatable) ?? 0) : 0,
    cachedModels: (node.metadata?.annotations?.[annotations.cachedModels] ?? "").split(",").filter(Boolean),
  };
}

/**
 * How far past the grace the node is: positive means lost. The one rule the node-loss tracker and the
 * InferenceModel plan share. No Node: lost. A Node without a Lease yet (a kubelet registers the Node
 * first) gets the grace from its creation; otherwise the grace runs from its Lease's expiry.
 */
export function nodeOverdueMs(node: V1Node | undefined, lease: V1Lease | undefined, graceMs: number, now: number) {
  if (!node) return Number.POSITIVE_INFINITY;
  const created = node.metadata?.creationTimestamp ? new Date(node.metadata.creationTimestamp).getTime() : 0;
  return (lease ? leaseExpiredForMs(lease, now) : now - created) - graceMs;
}

export const isNodeLost = (node: V1Node | undefined, lease: V1Lease | undefined, graceMs: number, now: number) =>
  nodeOverdueMs(node, lease, graceMs, now) > 0;
