/**
 * The cached ModelReplicas indexed by model and the model memory bound per
 * node, kept up to date from the informer's events, so a reconcile looks up
 * its model's replicas and the nodes' used memory without scanning every
 * replica (at 1,000 models a scan per reconcile made convergence quadratic).
 * Replicas created but not yet seen in the cache are "assumed", as in
 * kube-scheduler's assume cache: their memory counts as used until they arrive.
 */
import { labels, type ModelReplica } from "../../crds/api/index.ts";

/** An assumed replica that never shows up (deleted before the watch saw it) is forgotten after this. */
const assumeForMs = 120_000;

interface Assumed {
  node: string;
  bytes: number;
  at: number;
}

export class ReplicaIndex {
  private readonly replicas = new Map<string, ModelReplica>();
  /** `namespace/model` → keys of its replicas. */
  private readonly byModel = new Map<string, Set<string>>();
  private readonly bytesOnNode = new Map<string, number>();
  private readonly assumed = new Map<string, Assumed>();

  /**
   * The cache's current object for `key` (undefined once it is gone). Called
   * from the informer's change handler with what the cache holds, so add,
   * update and delete need no telling apart.
   */
  observe(key: string, replica: ModelReplica | undefined): void {
    const before = this.replicas.get(key);
    if (before === replica) return;
    if (before) {
      this.unbind(before.spec.nodeName, before.spec.memoryBytes);
      const model = modelKey(before);
      const keys = this.byModel.get(model);
      keys?.delete(key);
      if (keys?.size === 0) this.byModel.delete(model);
      this.replicas.delete(key);
    }
    if (replica) {
      this.assumed.delete(key);
      this.replicas.set(key, replica);
      this.bytesOnNode.set(
        replica.spec.nodeName,
        (this.bytesOnNode.get(replica.spec.nodeName) ?? 0) + replica.spec.memoryBytes,
      );
      const model = modelKey(replica);
      const keys = this.byModel.get(model) ?? new Set();
      keys.add(key);
      this.byModel.set(model, keys);
    }
  }

  /** Replicas labelled with this model. */
  ofModel(namespace: string, model: string): ModelReplica[] {
    const out: ModelReplica[] = [];
    for (const key of this.byModel.get(`${namespace}/${model}`) ?? []) {
      const r = this.replicas.get(key);
      if (r) out.push(r);
    }
    return out;
  }

  has(key: string): boolean {
    return this.replicas.has(key);
  }

  /** Model memory bound per node: replicas in the cache, plus those assumed. */
  usedBytes(now: number): Map<string, number> {
    const used = new Map(this.bytesOnNode);
    for (const [key, a] of this.assumed) {
      if (now - a.at > assumeForMs) this.assumed.delete(key);
      else used.set(a.node, (used.get(a.node) ?? 0) + a.bytes);
    }
    return used;
  }

  assume(key: string, node: string, bytes: number, now: number): void {
    if (!this.replicas.has(key)) this.assumed.set(key, { node, bytes, at: now });
  }

  /** The create failed: its memory is free again. */
  unassume(key: string): void {
    this.assumed.delete(key);
  }

  private unbind(node: string, bytes: number): void {
    const left = (this.bytesOnNode.get(node) ?? 0) - bytes;
    if (left > 0) this.bytesOnNode.set(node, left);
    else this.bytesOnNode.delete(node);
  }
}

const modelKey = (r: ModelReplica) => `${r.metadata.namespace}/${r.metadata.labels?.[labels.model] ?? ""}`;
