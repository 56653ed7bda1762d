/**
 * Where replicas go: a pure function of the nodes, what is already bound to
 * them and what a replica needs. It filters (inference-node label, selector,
 * taints, Ready, a fresh Lease, free model memory), scores (Spread or BinPack,
 * plus a bonus for a node that already caches the file) and never overcommits,
 * also across replicas placed in the same call.
 */
import type { Toleration } from "../../crds/api/index.ts";
import { inferenceNodeTaint, labels } from "../../crds/api/index.ts";
import { formatBytes } from "./format-bytes.ts";

export interface Taint {
  key: string;
  value?: string;
  effect: string;
}

export interface NodeView {
  name: string;
  labels: Record<string, string>;
  taints: Taint[];
  ready: boolean;
  /** Whether the node's Lease was renewed recently enough. */
  leaseFresh: boolean;
  /** Allocatable pomona.dev/model-memory in bytes; 0 when the node offers none. */
  modelMemoryBytes: number;
  /** sha256 digests of files in the node's cache. */
  cachedModels: string[];
}

export interface ReplicaRequest {
  memoryBytes: number;
  nodeSelector?: Record<string, string>;
  tolerations?: Toleration[];
  strategy: "Spread" | "BinPack";
  /** The file's sha256, when known, to prefer nodes that hold it. */
  sha256?: string;
  /** Nodes this model already has replicas on; Spread avoids them first. */
  avoidNodes?: string[];
}

export type Placement = { placed: string[]; unplaced: number; reason?: string };

/**
 * Taints the node lifecycle controller derives from the Ready condition. The
 * scheduler checks Ready and the Lease itself, and virtual nodes may live in a
 * cluster where no lifecycle controller removes the taint added at creation.
 */
const conditionTaints = new Set(["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]);

export function tolerates(tolerations: Toleration[], taint: Taint): boolean {
  if (taint.effect === "PreferNoSchedule") return true;
  if (taint.key === inferenceNodeTaint.key || conditionTaints.has(taint.key)) return true;
  return tolerations.some(
    (t) =>
      (t.effect === undefined || t.effect === taint.effect) &&
      (t.operator === "Exists"
        ? t.key === undefined || t.key === taint.key
        : t.key === taint.key && (t.value ?? "") === (taint.value ?? "")),
  );
}

type Refusal = "notInference" | "selector" | "taint" | "notReady" | "leaseExpired" | "memory";

function refusal(node: NodeView, request: ReplicaRequest, free: number): Refusal | undefined {
  if (node.labels[labels.inferenceNode] !== "true") return "notInference";
  for (const [k, v] of Object.entries(request.nodeSelector ?? {})) if (node.labels[k] !== v) return "selector";
  if (!node.taints.every((t) => tolerates(request.tolerations ?? [], t))) return "taint";
  if (!node.ready) return "notReady";
  if (!node.leaseFresh) return "leaseExpired";
  if (free < request.memoryBytes) return "memory";
  return undefined;
}

/**
 * Place `count` replicas. `usedBytes` is memory already bound per node; it is
 * not modified. Returns the chosen node per placed replica, and a sentence
 * explaining why the rest could not be placed.
 */
export function scheduleReplicas(
  request: ReplicaRequest,
  nodes: NodeView[],
  usedBytes: ReadonlyMap<string, number>,
  count: number,
): Placement {
  const used = new Map(usedBytes);
  const onNode = new Map<string, number>();
  for (const n of request.avoidNodes ?? []) onNode.set(n, (onNode.get(n) ?? 0) + 1);
  const placed: string[] = [];
  let lastRefusals = new Map<Refusal, number>();
  let mostFree = 0;
  for (let i = 0; i < count; i++) {
    const refusals = new Map<Refusal, number>();
    mostFree = 0;
    let best: { node: NodeView; score: number } | undefined;
    for (const node of nodes) {
      const free = node.modelMemoryBytes - (used.get(node.name) ?? 0);
      const why = refusal(node, request, free);
      if (why) {
        refusals.set(why, (refusals.get(why) ?? 0) + 1);
        if (why === "memory") mostFree = Math.max(mostFree, free);
        continue;
      }
      const score = scoreNode(node, free, request, onNode.get(node.name) ?? 0);
      if (!best || score > best.score || (score === best.score && node.name < best.node.name)) best = { node, score };
    }
    if (!best) {
      lastRefusals = refusals;
      return {
        placed,
        unplaced: count - placed.length,
        reason: explain(nodes.length, lastRefusals, request.memoryBytes, mostFree),
      };
    }
    placed.push(best.node.name);
    used.set(best.node.name, (used.get(best.node.name) ?? 0) + request.memoryBytes);
    onNode.set(best.node.name, (onNode.get(best.node.name) ?? 0) + 1);
  }
  return { placed, unplaced: 0 };
}

function scoreNode(node: NodeView, free: number, request: ReplicaRequest, sameModel: number): number {
  const capacity = Math.max(1, node.modelMemoryBytes);
  const freeAfter = (free - request.memoryBytes) / capacity;
  // Spread prefers free room and nodes without this model; BinPack prefers the fullest node that fits.
  let score = request.strategy === "Spread" ? freeAfter * 100 - sameModel * 1000 : (1 - freeAfter) * 100;
  if (request.sha256 && node.cachedModels.includes(request.sha256)) score += 50;
  return score;
}

const phrases: Record<Refusal, (n: number) => string> = {
  notInference: (n) => `${n} ${n === 1 ? "is not an inference node" : "are not inference nodes"}`,
  selector: (n) => `${n} ${n === 1 ? "does" : "do"} not match the node selector`,
  taint: (n) => `${n} ${n === 1 ? "has a taint" : "have taints"} the model does not tolerate`,
  notReady: (n) => `${n} ${n === 1 ? "is" : "are"} not Ready`,
  leaseExpired: (n) => `${n} ${n === 1 ? "has" : "have"} an expired Lease`,
  memory: (n) => `${n} lack memory`,
};

function explain(total: number, refusals: Map<Refusal, number>, need: number, mostFree: number): string {
  const parts = [...refusals.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([why, n]) =>
      why === "memory"
        ? `${phrases.memory(n)} (need ${formatBytes(need)}, most free ${formatBytes(Math.max(0, mostFree))})`
        : phrases[why](n),
    );
  return `0/${total} nodes fit${parts.length ? `: ${parts.join(", ")}` : ""}`;
}
