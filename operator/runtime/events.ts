/**
 * Events for `kubectl describe`. The same reason and message for the same
 * object are sent once, so a requeue loop does not flood the namespace. What
 * was last sent is remembered for the most recent objects only (a bounded map
 * in least-recently-used order), so deleted objects do not accumulate.
 */
import { CoreV1Api, type KubeConfig, type KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "./log.ts";

/** Object/reason pairs remembered; beyond it the oldest is forgotten and may be sent once more. */
const REMEMBERED = 10_000;

export class EventRecorder {
  private readonly api: CoreV1Api;
  private readonly last = new Map<string, string>();
  private readonly log: Logger;

  constructor(kubeConfig: KubeConfig, log: Logger) {
    this.api = kubeConfig.makeApiClient(CoreV1Api);
    this.log = log;
  }

  record(obj: KubernetesObject, type: "Normal" | "Warning", reason: string, message: string): void {
    const ns = obj.metadata?.namespace ?? "default";
    const id = `${obj.kind}/${ns}/${obj.metadata?.name}/${reason}`;
    if (this.last.get(id) === message) return;
    // Delete before set moves the entry to the end of the Map's insertion order: the newest.
    this.last.delete(id);
    this.last.set(id, message);
    if (this.last.size > REMEMBERED) this.last.delete(this.last.keys().next().value!);
    const now = new Date();
    this.api
      .createNamespacedEvent({
        namespace: ns,
        body: {
          metadata: { generateName: `${obj.metadata?.name}.`, namespace: ns },
          involvedObject: {
            apiVersion: obj.apiVersion,
            kind: obj.kind,
            name: obj.metadata?.name,
            namespace: ns,
            uid: obj.metadata?.uid,
          },
          type,
          reason,
          message,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
          source: { component: "pomona-operator" },
          reportingComponent: "pomona-operator",
        },
      })
      .catch((err: Error) => this.log.warn("event not recorded", { reason, error: err.message }));
  }
}
