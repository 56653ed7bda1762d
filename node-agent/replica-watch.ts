/**
 * A list-watch of every ModelReplica in the cluster, handing each one to the agent, which keeps those bound
 * to its node (spec.nodeName is a CRD field, so the API server cannot filter on it). The watch resumes from
 * the last resourceVersion after any error, with backoff, and relists when the API server answers 410 Gone.
 */
import { CustomObjectsApi, type KubeConfig, Watch } from "@kubernetes/client-node";
import type { FastifyBaseLogger } from "fastify";
import { GROUP, type ModelReplica, modelReplicaDefinition, VERSION } from "../crds/api/index.ts";
import { errorText } from "./node-presence.ts";

export interface ReplicaEvents {
  upsert: (replica: ModelReplica) => void;
  remove: (replica: ModelReplica) => void;
  /** After each (re)list: every replica that exists now, so the agent can drop those deleted while it was away. */
  synced: (all: ModelReplica[]) => void;
}

class GoneError extends Error {}

export class ReplicaWatch {
  private readonly api: CustomObjectsApi;
  private readonly watch: Watch;
  private readonly events: ReplicaEvents;
  private readonly log: FastifyBaseLogger;
  private resourceVersion: string | undefined;
  private abort: AbortController | undefined;
  private stopped = false;
  private backoffMs = 250;

  constructor(kubeConfig: KubeConfig, events: ReplicaEvents, log: FastifyBaseLogger) {
    this.api = kubeConfig.makeApiClient(CustomObjectsApi);
    this.watch = new Watch(kubeConfig);
    this.events = events;
    this.log = log;
  }

  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.resourceVersion === undefined) await this.list();
        await this.watchOnce();
        this.backoffMs = 250;
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof GoneError) {
          this.log.info("replica watch expired (410 Gone); listing again");
          this.resourceVersion = undefined;
          continue;
        }
        // client-node ends a watch that has been quiet for 30 s: resume at once, without a warning.
        if ((err as { name?: string }).name === "TimeoutError") {
          this.log.debug("replica watch idle; resuming");
          continue;
        }
        this.log.warn({ err: errorText(err), retryInMs: this.backoffMs }, "replica watch failed; resuming");
        await new Promise((r) => setTimeout(r, this.backoffMs));
        this.backoffMs = Math.min(this.backoffMs * 2, 10_000);
      }
    }
  }

  private async list(): Promise<void> {
    const list = (await this.api.listClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: modelReplicaDefinition.plural,
    })) as { items: ModelReplica[]; metadata: { resourceVersion?: string } };
    for (const replica of list.items) this.events.upsert(replica);
    this.events.synced(list.items);
    this.resourceVersion = list.metadata.resourceVersion;
  }

  /** One watch request; resolves when the server ends it, rejects on errors. */
  private watchOnce(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let gone = false;
      this.watch
        .watch(
          `/apis/${GROUP}/${VERSION}/${modelReplicaDefinition.plural}`,
          { resourceVersion: this.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 300 },
          (type: string, object: ModelReplica & { code?: number }) => {
            if (type === "ERROR") {
              if (object.code === 410) gone = true;
              return;
            }
            const rv = object.metadata?.resourceVersion;
            if (rv) this.resourceVersion = rv;
            if (type === "ADDED" || type === "MODIFIED") this.events.upsert(object);
            else if (type === "DELETED") this.events.remove(object);
          },
          (err: unknown) => {
            // 410 comes either as an ERROR event in the stream or as the status of the watch request itself.
            if (gone || (err as { statusCode?: number } | null)?.statusCode === 410) reject(new GoneError());
            else if (err && !(err instanceof Error && err.name === "AbortError")) reject(err);
            else resolve();
          },
        )
        .then((controller) => {
          this.abort = controller;
          if (this.stopped) controller.abort();
        })
        .catch(reject);
    });
  }
}
