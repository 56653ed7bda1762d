/**
 * The InferenceModel controller: reads the model, its replicas, the nodes and
 * their Leases from the cache, asks the plan (plan.ts) what to delete, create
 * and report, and applies it: deletes, creates, Events, the status. Level-
 * triggered: every pass starts from the cache, whatever woke it.
 */
import { API_VERSION, fieldManagers, type InferenceModel, type ModelReplica } from "../../crds/api/index.ts";
import { objectKey } from "../../kube/list-watch.ts";
import type { ModelSourcePolicy } from "../../model-source/guarded-fetch.ts";
import type { Cluster } from "../cluster.ts";
import type { Result } from "../runtime/controller.ts";
import { splitKey } from "../runtime/informer.ts";
import { type MemoryFigure, replicaMemory } from "../scheduler/memory.ts";
import type { NodeView } from "../scheduler/schedule.ts";
import { isNodeLost, leaseExpiredForMs, nodeLeaseNamespace, nodeView } from "./node-view.ts";
import { type Degradation, type FailureBackoff, planModel } from "./plan.ts";
import { ReplicaIndex } from "./replica-index.ts";
import { replicaWrites } from "./replica-writes.ts";
import { replicaName } from "./template.ts";

export interface ModelControllerOptions {
  nodeLostAfterSeconds: number;
  hfEndpoint: string;
  /** Where GGUF headers may be read from; defaults to the Hub's hosts and the HF endpoint. */
  modelSources?: ModelSourcePolicy;
}

export function createModelReconciler(cluster: Cluster, options: ModelControllerOptions) {
  const index = new ReplicaIndex();
  const observe = (r: ModelReplica) => {
    const { namespace, name } = r.metadata;
    index.observe(objectKey(r), cluster.replicas.get(name ?? "", namespace));
  };
  for (const r of cluster.replicas.list()) observe(r);
  cluster.replicas.onChange(observe);
  const replicas = (namespace: string | undefined) => `/apis/${API_VERSION}/namespaces/${namespace}/modelreplicas`;
  const writes = replicaWrites(index, {
    // create, not apply: a name collision must fail rather than take over another replica.
    create: async (r) =>
      void (await cluster.applier.rest.create(replicas(r.metadata.namespace), r, {
        fieldManager: fieldManagers.operator,
      })),
    delete: async (r) =>
      await cluster.applier.rest.delete(`${replicas(r.metadata.namespace)}/${r.metadata.name}`, {
        propagationPolicy: "Background",
      }),
  });

  /** Memory per model, for one uid and generation; an unreadable header is not kept, so it is tried again. */
  const memoryCache = new Map<string, { of: string; memory: MemoryFigure }>();
  const failures = new Map<string, FailureBackoff>();
  const degradations = new Map<string, Degradation>();
  const nodeViews = new NodeViews(cluster);

  const isLost = (nodeName: string, now: number) =>
    isNodeLost(
      cluster.nodes.get(nodeName),
      cluster.nodeLeases.get(nodeName, nodeLeaseNamespace),
      options.nodeLostAfterSeconds * 1000,
      now,
    );

  async function memoryOf(key: string, model: InferenceModel): Promise<MemoryFigure> {
    const of = `${model.metadata.uid}/${model.metadata.generation}`;
    const known = memoryCache.get(key);
    if (known?.of === of) return known.memory;
    const memory = await replicaMemory(model.spec, { hfEndpoint: options.hfEndpoint, sources: options.modelSources });
    // An unreadable header may be a passing network failure: only a figure is kept, an error is retried.
    if (!("error" in memory)) memoryCache.set(key, { of, memory });
    return memory;
  }

  return async function reconcileModel(key: string): Promise<Result | undefined> {
    const { namespace, name } = splitKey(key);
    let model = cluster.models.get(name, namespace) as InferenceModel | undefined;
    if (!model || model.metadata.deletionTimestamp) return forget(key);
    const memory = await memoryOf(key, model);
    // Read again after the wait: from here to the assumption of the new replicas nothing awaits, so no
    // other pass can spend the same free memory in between.
    model = cluster.models.get(name, namespace) as InferenceModel | undefined;
    if (!model || model.metadata.deletionTimestamp) return forget(key);
    const now = Date.now();
    const plan = planModel({
      model,
      replicas: index.ofModel(namespace, name, now),
      memory,
      policyExists: !model.spec.rateLimitPolicy || Boolean(cluster.policies.get(model.spec.rateLimitPolicy, namespace)),
      nodeLost: (node) => isLost(node, now),
      nodes: nodeViews.at(now),
      usedBytes: index.usedBytes(now),
      failures: failures.get(key),
      degraded: degradations.get(key),
      now,
      nameReplica: replicaName,
    });
    writes.expect(plan, now);
    setOrDelete(failures, key, plan.failures);
    setOrDelete(degradations, key, plan.degraded);

    for (const e of plan.events) cluster.events.record(model, e.type, e.reason, e.message);
    if (plan.unplaced > 0) cluster.metrics.schedulingFailures.inc(plan.unplaced);
    await Promise.all([...plan.delete.map(writes.delete), ...plan.create.map(writes.create)]);
    if (plan.statusChanged) {
      await cluster.applier.applyStatus(
        { apiVersion: API_VERSION, kind: "InferenceModel", metadata: { name, namespace }, status: plan.status },
        "inferencemodels",
      );
    }
    return plan.requeueAfterMs === undefined ? undefined : { requeueAfterMs: plan.requeueAfterMs };
  };

  /** The model is gone: nothing is kept for it. */
  function forget(key: string): undefined {
    failures.delete(key);
    degradations.delete(key);
    memoryCache.delete(key);
    return undefined;
  }
}

function setOrDelete<T>(map: Map<string, T>, key: string, value: T | undefined): void {
  if (value === undefined) map.delete(key);
  else map.set(key, value);
}

/**
 * The scheduler's view of every node, built again only when a Node or Lease
 * changed or a Lease that was fresh expires, rather than at every pass (at
 * 100 nodes, rebuilding it per pass was a tenth of the operator's CPU).
 */
class NodeViews {
  private views: NodeView[] | undefined;
  /** When the first fresh Lease expires, so the views must be built again. */
  private validUntil = 0;
  private readonly cluster: Cluster;

  constructor(cluster: Cluster) {
    this.cluster = cluster;
    const changed = () => {
      this.views = undefined;
    };
    cluster.nodes.onChange(changed);
    cluster.nodeLeases.onChange(changed);
  }

  at(now: number): readonly NodeView[] {
    if (this.views && now < this.validUntil) return this.views;
    this.validUntil = Number.POSITIVE_INFINITY;
    this.views = this.cluster.nodes.list().map((node) => {
      const lease = this.cluster.nodeLeases.get(node.metadata?.name ?? "", nodeLeaseNamespace);
      const expiredForMs = leaseExpiredForMs(lease, now);
      if (expiredForMs < 0) this.validUntil = Math.min(this.validUntil, now - expiredForMs);
      return nodeView(node, lease, now);
    });
    return this.views;
  }
}

/** Models whose replicas sit on a node: they must look again when it is lost. */
export function modelsOnNode(cluster: Cluster, node: string): string[] {
  const keys = new Set<string>();
  for (const r of cluster.replicas.list())
    if (r.spec.nodeName === node) keys.add(`${r.metadata.namespace}/${r.spec.model}`);
  return [...keys];
}
