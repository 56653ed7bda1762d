/**
 * Every ModelReplica in the cluster, handed to the agent, which keeps those bound to its node
 * (spec.nodeName is a CRD field, so the API server cannot filter on it). The list/watch loop is the one
 * every component shares (kube/list-watch.ts): resume from the last resourceVersion, relist on 410 Gone
 * (replicas deleted meanwhile come as removals), backoff with jitter.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import type { FastifyBaseLogger } from "fastify";
import { GROUP, type ModelReplica, modelReplicaDefinition, VERSION } from "../crds/api/index.ts";
import { ListWatch } from "../kube/list-watch.ts";

export interface ReplicaEvents {
  upsert: (replica: ModelReplica) => void;
  remove: (replica: ModelReplica) => void;
  /** After each (re)list: every replica that exists now, so the agent can drop those deleted while it was away. */
  synced: (all: ModelReplica[]) => void;
}

export class ReplicaWatch {
  private readonly listWatch: ListWatch<ModelReplica & { metadata: object }>;

  constructor(kubeConfig: KubeConfig, events: ReplicaEvents, log: FastifyBaseLogger) {
    this.listWatch = new ListWatch({
      kubeConfig,
      path: `/apis/${GROUP}/${VERSION}/${modelReplicaDefinition.plural}`,
      log: (level, message, fields) => log[level](fields ?? {}, `replicas: ${message}`),
    });
    this.listWatch.on((type, replica) => {
      if (type === "deleted") events.remove(replica);
      else events.upsert(replica);
    });
    this.listWatch.onSynced((all) => events.synced(all));
  }

  start(): void {
    this.listWatch.start();
  }

  stop(): void {
    this.listWatch.stop();
  }
}
