/**
 * Events for `kubectl describe`. The same reason and message for the same
 * object are sent once, so a requeue loop does not flood the namespace. What
 * was last sent is forgotten when the object is deleted (`forget`, wired to
 * the informers' delete events), and is remembered for the most recent
 * objects only (a bounded map in least-recently-used order) in any case.
 */
import type { KubeConfig, KubernetesObject } from "@kubernetes/client-node";
import { KubeRest } from "../../kube/rest.ts";
import type { Logger } from "./log.ts";

/** Objects remembered; beyond it the oldest is forgotten and its events may be sent once more. */
const REMEMBERED = 10_000;

const objectId = (obj: KubernetesObject) => `${obj.kind}/${obj.metadata?.namespace ?? "default"}/${obj.metadata?.name}`;

export class EventRecorder {
  private readonly api: KubeRest;
  /** Object → reason → the message last sent. */
  private readonly last = new Map<string, Map<string, string>>();
  private readonly log: Logger;

  constructor(kubeConfig: KubeConfig, log: Logger) {
    this.api = new KubeRest(kubeConfig);
    this.log = log;
  }

  record(obj: KubernetesObject, type: "Normal" | "Warning", reason: string, message: string): void {
    const ns = obj.metadata?.namespace ?? "default";
    const id = objectId(obj);
    const sent = this.last.get(id) ?? new Map<string, string>();
    if (sent.get(reason) === message) return;
    sent.set(reason, message);
    // Delete before set moves the entry to the end of the Map's insertion order: the newest.
    this.last.delete(id);
    this.last.set(id, sent);
    if (this.last.size > REMEMBERED) this.last.delete(this.last.keys().next().value!);
    const now = new Date();
    this.api
      .create(`/api/v1/namespaces/${ns}/events`, {
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
      })
      .catch((err: Error) => this.log.warn("event not recorded", { reason, error: err.message }));
  }

  /** The object is gone: drop what was sent for it. */
  forget(obj: KubernetesObject): void {
    this.last.delete(objectId(obj));
  }
}
