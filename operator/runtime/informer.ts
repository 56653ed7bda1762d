/**
 * A shared cache of one kind for the operator's controllers, filled by the list/watch loop every
 * component shares (kube/list-watch.ts: paged list, resume from resourceVersion, relist on 410 Gone,
 * backoff with jitter, trimmed objects). Handlers hear every added, changed or deleted object; `synced`
 * resolves once the first list is in the cache.
 */
import type { KubeConfig, KubernetesObject } from "@kubernetes/client-node";
import { ListWatch, type ListWatchEventType } from "../../kube/list-watch.ts";
import { CacheIndex } from "./cache-index.ts";
import type { Logger } from "./log.ts";

export type Handler<T> = (obj: T, old?: T) => void;

export interface InformerSource {
  /** e.g. `/apis/pomona.dev/v1alpha1/inferencemodels` or `/api/v1/nodes`. */
  path: string;
  /** For logs and errors. */
  kind: string;
  labelSelector?: string;
}

export class Informer<T extends KubernetesObject> {
  readonly source: InformerSource;
  private readonly listWatch: ListWatch<T>;
  private readonly handlers: Handler<T>[] = [];
  private readonly deleteHandlers: Handler<T>[] = [];
  private readonly indexes = new Map<string, CacheIndex<T>>();

  constructor(kubeConfig: KubeConfig, source: InformerSource, log: Logger) {
    this.source = source;
    this.listWatch = new ListWatch<T>({
      kubeConfig,
      path: source.path,
      labelSelector: source.labelSelector,
      log: (level, message, fields) => {
        if (level !== "debug") log[level](message, { kind: source.kind, ...fields });
      },
    });
    this.listWatch.on((type: ListWatchEventType, obj: T, old?: T) => {
      // Indexes first, so a handler that reads one sees this change.
      for (const index of this.indexes.values()) index.update(type, obj);
      for (const h of this.handlers) h(obj, old);
      if (type === "deleted") for (const h of this.deleteHandlers) h(obj);
    });
  }

  /** Called with every added, changed or deleted object. */
  onChange(handler: Handler<T>): void {
    this.handlers.push(handler);
  }

  /** Called after each complete list (the first, and any after 410 Gone). */
  onListed(handler: () => void): void {
    this.listWatch.onSynced(() => handler());
  }

  /** Called when an object is gone, so state kept per object can be dropped. */
  onDelete(handler: Handler<T>): void {
    this.deleteHandlers.push(handler);
  }

  /** Files every object, now and as the cache changes, under the values `valuesOf` gives it (see byIndex). */
  addIndex(name: string, valuesOf: (obj: T) => string[]): void {
    const index = new CacheIndex(valuesOf);
    for (const obj of this.list()) index.update("added", obj);
    this.indexes.set(name, index);
  }

  /** The cached objects filed under `value` in the index `name`, in the time of the answer. */
  byIndex(name: string, value: string): T[] {
    const index = this.indexes.get(name);
    if (!index) throw new Error(`the ${this.source.kind} informer has no index ${name}`);
    return index.get(value);
  }

  get hasSynced(): boolean {
    return this.listWatch.hasSynced;
  }

  /** Resolves once the first list is in the cache. */
  get synced(): Promise<void> {
    return this.listWatch.synced;
  }

  /** Start listing and watching; resolves when the cache has synced. */
  start(): Promise<void> {
    this.listWatch.start();
    return this.listWatch.synced;
  }

  stop(): void {
    this.listWatch.stop();
  }

  get(name: string, namespace?: string): T | undefined {
    return this.listWatch.get(name, namespace);
  }

  list(namespace?: string): readonly T[] {
    return this.listWatch.list(namespace);
  }
}

export function splitKey(key: string): { namespace: string; name: string } {
  const i = key.indexOf("/");
  return i < 0 ? { namespace: "", name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}
