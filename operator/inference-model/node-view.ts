/** What the scheduler sees of a Node and its Lease. */
import type { V1Lease, V1Node } from "@kubernetes/client-node";
import { annotations, modelMemoryResource } from "../../crds/api/index.ts";
import { parseQuantity } from "../../crds/api/quantity.ts";
import type { NodeView } from "../scheduler/schedule.ts";

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
