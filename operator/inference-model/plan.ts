/**
 * What an InferenceModel's replicas and status should be, as a pure function
 * of the cached objects: which replicas to delete (Failed, on a lost node,
 * surplus, outdated as the rollout allows), which to create and where (the
 * scheduler), the Events to record and the status to write. No API calls and
 * no clock: the controller (reconcile.ts) reads the cache, calls this and
 * applies the result.
 */
import type { InferenceModel, InferenceModelStatus, ModelReplica } from "../../crds/api/index.ts";
import { API_VERSION, labels } from "../../crds/api/index.ts";
import { type ConditionInput, setCondition } from "../runtime/conditions.ts";
import { sameJson } from "../same-json.ts";
import type { MemoryFigure } from "../scheduler/memory.ts";
import { type NodeView, scheduleReplicas } from "../scheduler/schedule.ts";
import { templateHash } from "./template.ts";

/** How soon a model whose memory could not be read (e.g. the Hub unreachable) is tried again. */
export const memoryRetryMs = 60_000;
/** How soon a model with replicas that found no node looks again. */
export const unplacedRetryMs = 5_000;

/** Replacing Failed replicas backs off: 1 s doubling to 5 min, until the model is back to its ready count. */
export interface FailureBackoff {
  count: number;
  /** No replica is created before this time (ms since the epoch). */
  notBefore: number;
}

export interface Degradation {
  reason: string;
  message: string;
}

export interface PlannedEvent {
  type: "Normal" | "Warning";
  reason: string;
  message: string;
}

export interface ModelPlanInput {
  model: InferenceModel;
  /** Replicas labelled with this model in the cache, less those the operator has already deleted. */
  replicas: readonly ModelReplica[];
  /** Memory one replica needs, or why it is unknown. */
  memory: MemoryFigure;
  /** Whether the RateLimitPolicy the model names exists (ignored when it names none). */
  policyExists: boolean;
  /** Whether a node lost its replicas: gone, or its Lease expired for longer than the grace period. */
  nodeLost: (nodeName: string) => boolean;
  /** Nodes as the scheduler sees them, and the model memory already bound to each. */
  nodes: readonly NodeView[];
  usedBytes: ReadonlyMap<string, number>;
  /** What the previous passes left: the failure backoff and the degradation still reported. */
  failures: FailureBackoff | undefined;
  degraded: Degradation | undefined;
  now: number;
  /** A fresh replica name for the model (random in the controller, predictable in tests). */
  nameReplica: (model: string) => string;
}

export interface ModelPlan {
  delete: ModelReplica[];
  /** Replicas to create, bound to their nodes. */
  create: ModelReplica[];
  events: PlannedEvent[];
  /** Replicas wanted that no node could take. */
  unplaced: number;
  status: InferenceModelStatus;
  /** Whether `status` differs from the model's status in the cache. */
  statusChanged: boolean;
  /** State to keep for the next pass (undefined: forget it). */
  failures: FailureBackoff | undefined;
  degraded: Degradation | undefined;
  requeueAfterMs: number | undefined;
}

const isReady = (r: ModelReplica) => r.status?.phase === "Ready";
/** Not-ready replicas first: they are the ones to give up. */
const notReadyFirst = (a: ModelReplica, b: ModelReplica) => Number(isReady(a)) - Number(isReady(b));

export function planModel(input: ModelPlanInput): ModelPlan {
  const { model, memory, now } = input;
  const { namespace = "", name = "", generation, uid } = model.metadata;
  const spec = model.spec;
  const events: PlannedEvent[] = [];
  const requeue: number[] = [];
  const deleted = new Set<ModelReplica>();
  const remove = (r: ModelReplica) => deleted.add(r);
  let conditions = model.status?.conditions;
  const condition = (c: ConditionInput) => {
    conditions = setCondition(conditions, c, generation, new Date(now));
  };

  const policyName = spec.rateLimitPolicy;
  if (policyName && !input.policyExists) {
    condition({
      type: "PolicyResolved",
      status: "False",
      reason: "PolicyNotFound",
      message: `RateLimitPolicy ${policyName} does not exist in namespace ${namespace}; the gateway refuses the model's requests until it does.`,
    });
  } else if (policyName) {
    condition({
      type: "PolicyResolved",
      status: "True",
      reason: "PolicyFound",
      message: `RateLimitPolicy ${policyName} applies to every request.`,
    });
  }

  const present = input.replicas.filter((r) => !r.metadata.deletionTimestamp);
  // Replicas of an earlier model of the same name (another uid) are not this model's to manage.
  let all = present.filter((r) => r.metadata.ownerReferences?.some((o) => o.uid === uid) ?? true);

  // Failed replicas and replicas on lost nodes are replaced.
  // A loss stays reported until the model is back to its ready count.
  let degraded = input.degraded;
  let failures = input.failures;
  for (const r of all) {
    if (r.status?.phase === "Failed") {
      const count = (failures?.count ?? 0) + 1;
      failures = { count, notBefore: now + Math.min(300_000, 1000 * 2 ** (count - 1)) };
      degraded = {
        reason: "ReplicaFailed",
        message: `Replica ${r.metadata.name} failed: ${r.status.message ?? r.status.reason ?? "no reason given"}`,
      };
      events.push({ type: "Warning", reason: "ReplicaFailed", message: `${degraded.message}; replacing it.` });
      remove(r);
    } else if (input.nodeLost(r.spec.nodeName)) {
      degraded = {
        reason: "NodeLost",
        message: `Node ${r.spec.nodeName} stopped renewing its Lease; replica ${r.metadata.name} is replaced.`,
      };
      events.push({ type: "Warning", reason: "NodeLost", message: degraded.message });
      remove(r);
    }
  }
  all = all.filter((r) => !deleted.has(r));

  const desired = spec.replicas;
  const create: ModelReplica[] = [];
  let unplaced = 0;
  if ("error" in memory) {
    condition({ type: "Scheduled", status: "False", reason: memory.reason, message: memory.error });
    events.push({ type: "Warning", reason: memory.reason, message: memory.error });
    requeue.push(memoryRetryMs);
  } else {
    const bytes = memory.bytes;
    const hash = templateHash(spec, bytes);
    let current = all.filter((r) => r.spec.templateHash === hash);
    let old = all.filter((r) => r.spec.templateHash !== hash);
    const { maxSurge, maxUnavailable } = spec.rollout;

    // Too many current replicas: drop those that are not ready first.
    if (current.length > desired) {
      const surplus = [...current].sort(notReadyFirst).slice(0, current.length - desired);
      for (const r of surplus) remove(r);
      current = current.filter((r) => !deleted.has(r));
      events.push({ type: "Normal", reason: "ScaledDown", message: `Scaled down to ${desired} replicas.` });
    }
    // Outdated replicas go while enough replicas stay ready.
    const minReady = Math.max(0, desired - maxUnavailable);
    let ready = current.filter(isReady).length + old.filter(isReady).length;
    const currentReady = current.filter(isReady).length;
    for (const r of [...old].sort(notReadyFirst)) {
      const wasReady = isReady(r);
      const unneeded = current.length >= desired && currentReady >= desired;
      if (!wasReady || ready - 1 >= minReady || unneeded) {
        remove(r);
        old = old.filter((o) => o !== r);
        if (wasReady) ready--;
      }
    }
    // New replicas, within the surge allowance while outdated ones remain.
    const room =
      old.length > 0 ? Math.max(0, desired + maxSurge - current.length - old.length) : desired - current.length;
    const wanted = Math.max(0, Math.min(desired - current.length, room));
    let unplacedReason: string | undefined;
    if (wanted > 0 && failures && failures.notBefore > now) {
      requeue.push(failures.notBefore - now);
    } else if (wanted > 0) {
      const placement = scheduleReplicas(
        {
          memoryBytes: bytes,
          nodeSelector: spec.placement.nodeSelector,
          tolerations: spec.placement.tolerations,
          strategy: spec.placement.strategy,
          sha256: spec.source.sha256,
          avoidNodes: [...current, ...old].map((r) => r.spec.nodeName),
        },
        [...input.nodes],
        input.usedBytes,
        wanted,
      );
      for (const node of placement.placed) {
        const replica = desiredReplica(model, input.nameReplica(name), node, bytes, hash);
        create.push(replica);
        events.push({
          type: "Normal",
          reason: "ReplicaScheduled",
          message: `Replica ${replica.metadata.name} bound to node ${node}.`,
        });
      }
      if (placement.unplaced > 0) {
        unplaced = placement.unplaced;
        unplacedReason = `${placement.unplaced} of ${desired} replicas cannot be placed: ${placement.reason}.`;
        events.push({ type: "Warning", reason: "FailedScheduling", message: unplacedReason });
        requeue.push(unplacedRetryMs);
      }
    }
    condition(
      unplacedReason
        ? { type: "Scheduled", status: "False", reason: "Unschedulable", message: unplacedReason }
        : {
            type: "Scheduled",
            status: "True",
            reason: "ReplicasBound",
            message: `All ${desired} replicas are bound to nodes.`,
          },
    );
  }

  // Status from what exists once this plan is applied: the replicas left and the ones created.
  const live = [...present.filter((r) => !deleted.has(r)), ...create];
  const readyReplicas = live.filter(isReady);
  const readyCount = readyReplicas.length;
  const hashNow = "bytes" in memory ? templateHash(spec, memory.bytes) : undefined;
  condition(
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
  );
  condition(
    degraded
      ? { type: "Degraded", status: "True", ...degraded }
      : { type: "Degraded", status: "False", reason: "AsExpected", message: "No replica has failed or been lost." },
  );
  const status: InferenceModelStatus = {
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
  return {
    delete: [...deleted],
    create,
    events,
    unplaced,
    status,
    statusChanged: !sameJson(status, model.status ?? {}),
    failures: readyCount >= desired ? undefined : failures,
    degraded: degraded && readyCount < desired ? degraded : undefined,
    requeueAfterMs: requeue.length ? Math.min(...requeue) : undefined,
  };
}

/** A replica of the model bound to a node. */
export function desiredReplica(
  model: InferenceModel,
  name: string,
  node: string,
  memoryBytes: number,
  templateHash: string,
): ModelReplica {
  const modelName = model.metadata.name ?? "";
  return {
    apiVersion: API_VERSION,
    kind: "ModelReplica",
    metadata: {
      name,
      namespace: model.metadata.namespace,
      labels: { [labels.model]: modelName },
      ownerReferences: [
        {
          apiVersion: API_VERSION,
          kind: "InferenceModel",
          name: modelName,
          uid: model.metadata.uid ?? "",
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: {
      model: modelName,
      nodeName: node,
      source: model.spec.source,
      engine: model.spec.engine,
      memoryBytes,
      templateHash,
    },
  };
}
