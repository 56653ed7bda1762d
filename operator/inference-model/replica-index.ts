/**
 * The cached ModelReplicas indexed by model and the model memory bound per
 * node, kept up to date from the informer's events, so a reconcile looks up
 * its model's replicas and the nodes' used memory without scanning every
 * replica (at 1,000 models a scan per reconcile made convergence quadratic).
 *
 * The cache lags behind this operator's own writes, and the models and
 * replicas watches are not ordered with each other, so a pass may run before
 * the cache shows what the pass before it did. Two kinds of "expectation", as
 * in kube-controller-manager, cover that gap:
 * - replicas created but not yet seen are "assumed" (as in kube-scheduler's
 *   assume cache): they are among their model's replicas (with no status, so
 *   not ready) and their memory counts as used, until the cache shows them;
 * - replicas being deleted are left out of their model's replicas until the
 *   cache shows them gone, or the delete fails (then they count again and the
 *   next pass deletes them again).
 * Either is forgotten after `expectForMs` if the cache never confirms it.
 */
import { labels, type ModelReplica } from "../../crds/api/index.ts";
import { objectKey } from "../../kube/list-watch.ts";

/** An expectation the cache never confirms (e.g. created and deleted between two watch events) is dropped after this. */
const expectForMs = 120_000;

export class ReplicaIndex {
  private readonly replicas = new Map<string, ModelReplica>();
  /** `namespace/model` → keys of its replicas, cached and assumed. */
  private readonly byModel = new Map<string, Set<string>>();
  private readonly bytesOnNode = new Map<string, number>();
  /** Created, not yet in the cache: key → the object sent and when. */
  private readonly assumed = new Map<string, { replica: ModelReplica; at: number }>();
  /** Being deleted, maybe still in the cache: key → when the delete was sent. */
  private readonly deleting = new Map<string, number>();

  /**
   * The cache's current object for `key` (undefined once it is gone). Called
   * from the informer's change handler with what the cache holds, so add,
   * update and delete need no telling apart.
   */
  observe(key: string, replica: ModelReplica | undefined): void {
    if (!replica) this.deleting.delete(key);
    const before = this.replicas.get(key);
    if (before === replica) return;
    if (before) {
      this.unbind(before.spec.nodeName, before.spec.memoryBytes);
      this.replicas.delete(key);
      this.unindex(key, before);
    }
    if (replica) {
      const assumed = this.assumed.get(key);
      if (assumed) {
        this.assumed.delete(key);
        this.unindex(key, assumed.replica);
      }
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

  /** The model's replicas: those in the cache that are not being deleted, and those assumed. */
  ofModel(namespace: string, model: string, now: number): ModelReplica[] {
    this.expire(now);
    const out: ModelReplica[] = [];
    for (const key of this.byModel.get(`${namespace}/${model}`) ?? []) {
      if (this.deleting.has(key)) continue;
      const r = this.replicas.get(key) ?? this.assumed.get(key)?.replica;
      if (r) out.push(r);
    }
    return out;
  }

  /** Model memory bound per node: replicas in the cache, plus those assumed. */
  usedBytes(now: number): Map<string, number> {
    this.expire(now);
    const used = new Map(this.bytesOnNode);
    for (const { replica } of this.assumed.values())
      used.set(replica.spec.nodeName, (used.get(replica.spec.nodeName) ?? 0) + replica.spec.memoryBytes);
    return used;
  }

  /** A create is being sent: the replica counts from now on. */
  assume(replica: ModelReplica, now: number): void {
    const key = objectKey(replica);
    if (this.replicas.has(key)) return;
    this.assumed.set(key, { replica, at: now });
    const model = modelKey(replica);
    const keys = this.byModel.get(model) ?? new Set();
    keys.add(key);
    this.byModel.set(model, keys);
  }

  /** The create failed: the replica and its memory count no more. */
  unassume(key: string): void {
    const assumed = this.assumed.get(key);
    if (!assumed) return;
    this.assumed.delete(key);
    if (!this.replicas.has(key)) this.unindex(key, assumed.replica);
  }

  /** A delete is being sent: the replica counts no more (its memory stays bound until it is gone). */
  deleteSent(key: string, now: number): void {
    this.deleting.set(key, now);
    this.unassume(key);
  }

  /** The delete failed: the replica counts again, so the next pass deletes it again. */
  deleteFailed(key: string): void {
    this.deleting.delete(key);
  }

  private expire(now: number): void {
    for (const [key, a] of this.assumed) if (now - a.at > expectForMs) this.unassume(key);
    for (const [key, at] of this.deleting) if (now - at > expectForMs) this.deleting.delete(key);
  }

  private unindex(key: string, replica: ModelReplica): void {
    const model = modelKey(replica);
    const keys = this.byModel.get(model);
    keys?.delete(key);
    if (keys?.size === 0) this.byModel.delete(model);
  }

  private unbind(node: string, bytes: number): void {
    const left = (this.bytesOnNode.get(node) ?? 0) - bytes;
    if (left > 0) this.bytesOnNode.set(node, left);
    else this.bytesOnNode.delete(node);
  }
}

const modelKey = (r: ModelReplica) => `${r.metadata.namespace}/${r.metadata.labels?.[labels.model] ?? ""}`;
