/**
 * InferenceModel → ModelReplicas. Level-triggered: from the cached model, its
 * replicas, the nodes and their Leases it works out what to delete (Failed,
 * lost, surplus, outdated as the rollout allows) and what to create (placed by
 * the scheduler), then writes the model's status.
 */
import type { ModelReplica } from "../../crds/api/index.ts";
import { API_VERSION, type InferenceModel, labels } from "../../crds/api/index.ts";
import type { ModelSourcePolicy } from "../../model-source/guarded-fetch.ts";
import { type Cluster, replicasOfModel } from "../cluster.ts";
import { setCondition } from "../runtime/conditions.ts";
import type { Result } from "../runtime/controller.ts";
import { splitKey } from "../runtime/informer.ts";
import { Mutex } from "../runtime/mutex.ts";
import { type MemoryFigure, replicaMemory } from "../scheduler/memory.ts";
import { scheduleReplicas } from "../scheduler/schedule.ts";
import { leaseExpiredForMs, nodeView } from "./node-view.ts";
import { replicaName, templateHash } from "./template.ts";

/** How soon a model whose memory could not be read (e.g. the Hub unreachable) is tried again. */
const memoryRetryMs = 60_000;

export interface ModelControllerOptions {
  nodeLostAfterSeconds: number;
  hfEndpoint: string;
  /** Where GGUF headers may be read from; defaults to the Hub's hosts and the HF endpoint. */
  modelSources?: ModelSourcePolicy;
}

export function createModelReconciler(cluster: Cluster, options: ModelControllerOptions) {
  const placing = new Mutex();
  /** Replicas created but not yet seen in the cache: their memory counts as used (as kube-scheduler's assume cache). */
  const assumed = new Map<string, { node: string; bytes: number; namespace: string; model: string }>();
  // Once the cache has shown a replica (even only its deletion) it counts from the cache: the assumption goes.
  cluster.replicas.onChange((r) => assumed.delete(`${r.metadata.namespace}/${r.metadata.name}`));
  /** Per model key: the memory figure of one uid/generation (a new generation replaces it; deletion drops it). */
  const memoryCache = new Map<string, { of: string; figure: MemoryFigure }>();
  const failures = new Map<string, { count: number; notBefore: number }>();
  const degradations = new Map<string, { reason: string; message: string }>();
  /** uids of replicas this operator deleted that the cache may still show. */
  const deleted = new Set<string>();
  const gone = (r: ModelReplica) => Boolean(r.metadata.deletionTimestamp) || deleted.has(r.metadata.uid ?? "");

  const isLost = (nodeName: string, now: number) => {
    const node = cluster.nodes.get(nodeName);
    if (!node) return true;
    return (
      leaseExpiredForMs(cluster.nodeLeases.get(nodeName, "kube-node-lease"), now) > options.nodeLostAfterSeconds * 1000
    );
  };

  const usedBytes = () => {
    const used = new Map<string, number>();
    const seen = new Set<string>();
    for (const r of cluster.replicas.list()) {
      seen.add(`${r.metadata.namespace}/${r.metadata.name}`);
      used.set(r.spec.nodeName, (used.get(r.spec.nodeName) ?? 0) + r.spec.memoryBytes);
    }
    for (const [key, a] of assumed) {
      if (seen.has(key)) assumed.delete(key);
      else used.set(a.node, (used.get(a.node) ?? 0) + a.bytes);
    }
    return used;
  };

  const remove = async (r: ModelReplica) => {
    deleted.add(r.metadata.uid ?? "");
    try {
      await cluster.applier.objects.delete(
        {
          apiVersion: API_VERSION,
          kind: "ModelReplica",
          metadata: { name: r.metadata.name, namespace: r.metadata.namespace },
        },
        undefined,
        undefined,
        undefined,
        undefined,
        "Background",
      );
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
    }
  };

  return async function reconcileModel(key: string): Promise<Result | undefined> {
    const { namespace, name } = splitKey(key);
    const model = cluster.models.get(name, namespace) as InferenceModel | undefined;
    if (!model || model.metadata.deletionTimestamp) {
      failures.delete(key);
      degradations.delete(key);
      memoryCache.delete(key);
      return undefined;
    }
    const now = Date.now();
    const generation = model.metadata.generation;
    const spec = model.spec;
    const memoryKey = `${model.metadata.uid}/${generation}`;
    const cached = memoryCache.get(key);
    let memory = cached?.of === memoryKey ? cached.figure : undefined;
    if (!memory) {
      memory = await replicaMemory(spec, { hfEndpoint: options.hfEndpoint, sources: options.modelSources });
      // An unreadable header may be a passing network failure: only a figure is kept, an error is retried.
      if (!("error" in memory)) memoryCache.set(key, { of: memoryKey, figure: memory });
    }
    let conditions = model.status?.conditions;
    const requeue: number[] = [];

    const policyName = spec.rateLimitPolicy;
    if (policyName && !cluster.policies.get(policyName, namespace)) {
      conditions = setCondition(
        conditions,
        {
          type: "PolicyResolved",
          status: "False",
          reason: "PolicyNotFound",
          message: `RateLimitPolicy ${policyName} does not exist in namespace ${namespace}; the gateway refuses the model's requests until it does.`,
        },
        generation,
      );
    } else if (policyName) {
      conditions = setCondition(
        conditions,
        {
          type: "PolicyResolved",
          status: "True",
          reason: "PolicyFound",
          message: `RateLimitPolicy ${policyName} applies to every request.`,
        },
        generation,
      );
    }

    let all = replicasOfModel(cluster, namespace, name).filter(
      (r) => r.metadata.ownerReferences?.some((o) => o.uid === model.metadata.uid) ?? true,
    );
    // Failed replicas and replicas on lost nodes are replaced.
    // A loss stays reported until the model is back to its ready count.
    let degradedReason = degradations.get(key);
    all = all.filter((r) => !gone(r));
    for (const r of all) {
      if (r.status?.phase === "Failed") {
        const f = failures.get(key) ?? { count: 0, notBefore: 0 };
        f.count++;
        f.notBefore = now + Math.min(300_000, 1000 * 2 ** (f.count - 1));
        failures.set(key, f);
        degradedReason = {
          reason: "ReplicaFailed",
          message: `Replica ${r.metadata.name} failed: ${r.status.message ?? r.status.reason ?? "no reason given"}`,
        };
        cluster.events.record(model, "Warning", "ReplicaFailed", `${degradedReason.message}; replacing it.`);
        await remove(r);
      } else if (isLost(r.spec.nodeName, now)) {
        degradedReason = {
          reason: "NodeLost",
          message: `Node ${r.spec.nodeName} stopped renewing its Lease; replica ${r.metadata.name} is replaced.`,
        };
        cluster.events.record(model, "Warning", "NodeLost", degradedReason.message);
        await remove(r);
      }
    }
    all = all.filter((r) => !gone(r));

    const desired = spec.replicas;
    let unplacedReason: string | undefined;
    if ("error" in memory) {
      conditions = setCondition(
        conditions,
        { type: "Scheduled", status: "False", reason: memory.reason, message: memory.error },
        generation,
      );
      cluster.events.record(model, "Warning", memory.reason, memory.error);
      requeue.push(memoryRetryMs);
    } else {
      const bytes = memory.bytes;
      const hash = templateHash(spec, bytes);
      const isReady = (r: ModelReplica) => r.status?.phase === "Ready";
      let current = all.filter((r) => r.spec.templateHash === hash);
      let old = all.filter((r) => r.spec.templateHash !== hash);
      const { maxSurge, maxUnavailable } = spec.rollout;

      // Too many current replicas: drop those that are not ready first.
      if (current.length > desired) {
        const surplus = [...current]
          .sort((a, b) => Number(isReady(a)) - Number(isReady(b)))
          .slice(0, current.length - desired);
        for (const r of surplus) await remove(r);
        current = current.filter((r) => !surplus.includes(r));
        cluster.events.record(model, "Normal", "ScaledDown", `Scaled down to ${desired} replicas.`);
      }
      // Outdated replicas go while enough replicas stay ready.
      const minReady = Math.max(0, desired - maxUnavailable);
      let ready = current.filter(isReady).length + old.filter(isReady).length;
      for (const r of [...old].sort((a, b) => Number(isReady(a)) - Number(isReady(b)))) {
        const wasReady = isReady(r);
        const unneeded = current.length >= desired && current.filter(isReady).length >= desired;
        if (!wasReady || ready - 1 >= minReady || unneeded) {
          await remove(r);
          old = old.filter((o) => o !== r);
          if (wasReady) ready--;
        }
      }
      // New replicas, within the surge allowance while outdated ones remain.
      const room =
        old.length > 0 ? Math.max(0, desired + maxSurge - current.length - old.length) : desired - current.length;
      const wanted = Math.max(0, Math.min(desired - current.length, room));
      const backoff = failures.get(key);
      if (wanted > 0 && backoff && backoff.notBefore > now) {
        requeue.push(backoff.notBefore - now);
      } else if (wanted > 0) {
        await placing.run(async () => {
          const nodes = cluster.nodes
            .list()
            .map((n) => nodeView(n, cluster.nodeLeases.get(n.metadata?.name ?? "", "kube-node-lease"), now));
          const placement = scheduleReplicas(
            {
              memoryBytes: bytes,
              nodeSelector: spec.placement.nodeSelector,
              tolerations: spec.placement.tolerations,
              strategy: spec.placement.strategy,
              sha256: spec.source.sha256,
              avoidNodes: [...current, ...old].map((r) => r.spec.nodeName),
            },
            nodes,
            usedBytes(),
            wanted,
          );
          for (const node of placement.placed) {
            const replica = await createReplica(model, node, bytes, hash);
            assumed.set(`${namespace}/${replica}`, { node, bytes, namespace, model: name });
            cluster.events.record(model, "Normal", "ReplicaScheduled", `Replica ${replica} bound to node ${node}.`);
          }
          if (placement.unplaced > 0) {
            unplacedReason = `${placement.unplaced} of ${desired} replicas cannot be placed: ${placement.reason}.`;
            cluster.metrics.schedulingFailures.inc(placement.unplaced);
            cluster.events.record(model, "Warning", "FailedScheduling", unplacedReason);
          }
        });
        if (unplacedReason) requeue.push(5_000);
      }
      conditions = unplacedReason
        ? setCondition(
            conditions,
            { type: "Scheduled", status: "False", reason: "Unschedulable", message: unplacedReason },
            generation,
          )
        : setCondition(
            conditions,
            {
              type: "Scheduled",
              status: "True",
              reason: "ReplicasBound",
              message: `All ${desired} replicas are bound to nodes.`,
            },
            generation,
          );
    }

    // Status from what exists now (the cache catches up with the writes above on the next pass).
    const inCache = replicasOfModel(cluster, namespace, name);
    const live = inCache.filter((r) => !gone(r));
    const readyReplicas = live.filter((r) => r.status?.phase === "Ready");
    const hashNow = "bytes" in memory ? templateHash(spec, memory.bytes) : undefined;
    const readyCount = readyReplicas.length;
    conditions = setCondition(
      conditions,
      readyCount >= desired
        ? {
            type: "Ready",
            status: "True",
            reason: desired === 0 ? "ScaledToZero" : "ReplicasReady",
            message: `${readyCount}/${desired} replicas are ready.`,
          }
        : {
            type: "Ready",
            status: "False",
            reason: "ReplicasNotReady",
            message: `${readyCount}/${desired} replicas are ready.`,
          },
      generation,
    );
    conditions = setCondition(
      conditions,
      degradedReason
        ? { type: "Degraded", status: "True", ...degradedReason }
        : { type: "Degraded", status: "False", reason: "AsExpected", message: "No replica has failed or been lost." },
      generation,
    );
    const status = {
      observedGeneration: generation,
      replicas: live.length,
      readyReplicas: readyCount,
      updatedReplicas: live.filter((r) => r.spec.templateHash === hashNow).length,
      ...("bytes" in memory ? { memoryBytes: memory.bytes } : {}),
      endpoints: readyReplicas
        .filter((r) => r.status?.endpoint)
        .slice(0, 100)
        .map((r) => ({ replica: r.metadata.name ?? "", node: r.spec.nodeName, url: r.status?.endpoint ?? "" })),
      conditions,
    };
    if (JSON.stringify(status) !== JSON.stringify(model.status ?? {})) {
      await cluster.applier.applyStatus(
        { apiVersion: API_VERSION, kind: "InferenceModel", metadata: { name, namespace }, status },
        "inferencemodels",
      );
    }
    if (degradedReason && readyCount < desired) degradations.set(key, degradedReason);
    else degradations.delete(key);
    if (readyCount >= desired) failures.delete(key);
    pruneDeleted();
    return requeue.length ? { requeueAfterMs: Math.min(...requeue) } : undefined;
  };

  /** Forget deletions the cache has caught up with. */
  function pruneDeleted() {
    if (deleted.size < 1000) return;
    const present = new Set(cluster.replicas.list().map((r) => r.metadata.uid));
    for (const uid of deleted) if (!present.has(uid)) deleted.delete(uid);
  }

  async function createReplica(model: InferenceModel, node: string, bytes: number, hash: string): Promise<string> {
    const name = replicaName(model.metadata.name ?? "");
    const replica: ModelReplica = {
      apiVersion: API_VERSION,
      kind: "ModelReplica",
      metadata: {
        name,
        namespace: model.metadata.namespace,
        labels: { [labels.model]: model.metadata.name ?? "" },
        ownerReferences: [
          {
            apiVersion: API_VERSION,
            kind: "InferenceModel",
            name: model.metadata.name ?? "",
            uid: model.metadata.uid ?? "",
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      spec: {
        model: model.metadata.name ?? "",
        nodeName: node,
        source: model.spec.source,
        engine: model.spec.engine,
        memoryBytes: bytes,
        templateHash: hash,
      },
    };
    // create, not apply: a name collision must fail rather than take over another replica.
    await cluster.applier.objects.create(replica, undefined, undefined, "pomona-operator");
    return name;
  }
}

/** Models whose replicas sit on a node: they must look again when it is lost. */
export function modelsOnNode(cluster: Cluster, node: string): string[] {
  const keys = new Set<string>();
  for (const r of cluster.replicas.list())
    if (r.spec.nodeName === node) keys.add(`${r.metadata.namespace}/${r.spec.model}`);
  return [...keys];
}
