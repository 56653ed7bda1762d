/**
 * A shared cache of one kind, filled by the client's list-watch. The client
 * relists after 410 Gone but stops on any other error, so this wrapper starts
 * it again with backoff, and reports whether the first list has arrived.
 */
import { type KubeConfig, type KubernetesObject, KubernetesObjectApi, ListWatch, Watch } from "@kubernetes/client-node";
import type { Logger } from "./log.ts";

export type Handler<T> = (obj: T, old?: T) => void;

export interface InformerSource {
  /** e.g. `/apis/pomona.dev/v1alpha1/inferencemodels` or `/api/v1/nodes`. */
  path: string;
  apiVersion: string;
  kind: string;
  /** Only this namespace; unset watches all. */
  namespace?: string;
  labelSelector?: string;
}

export class Informer<T extends KubernetesObject> {
  readonly source: InformerSource;
  private readonly listWatch: ListWatch<T>;
  private readonly handlers: Handler<T>[] = [];
  private synced = false;
  private stopped = false;
  private restartDelayMs = 0;
  private readonly log: Logger;

  constructor(kubeConfig: KubeConfig, source: InformerSource, log: Logger) {
    this.source = source;
    this.log = log;
    const objects = KubernetesObjectApi.makeApiClient(kubeConfig);
    const listFn = () =>
      objects.list<T>(
        source.apiVersion,
        source.kind,
        source.namespace,
        undefined,
        undefined,
        undefined,
        undefined,
        source.labelSelector,
      );
    this.listWatch = new ListWatch<T>(source.path, new Watch(kubeConfig), listFn, false, source.labelSelector);
    this.listWatch.on("add", (o) => this.emit(o));
    this.listWatch.on("update", (o) => this.emit(o));
    this.listWatch.on("delete", (o) => this.emit(o));
    this.listWatch.on("connect", () => {
      this.restartDelayMs = 0;
    });
    this.listWatch.on("error", (err) => this.restart(err));
  }

  /** Called with every added, changed or deleted object. */
  onChange(handler: Handler<T>): void {
    this.handlers.push(handler);
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  async start(): Promise<void> {
    this.stopped = false;
    try {
      await this.listWatch.start();
      this.synced = true;
    } catch (err) {
      this.restart(err);
    }
  }

  stop(): void {
    this.stopped = true;
    void this.listWatch.stop();
  }

  get(name: string, namespace?: string): T | undefined {
    return this.listWatch.get(name, namespace);
  }

  list(namespace?: string): readonly T[] {
    return this.listWatch.list(namespace);
  }

  private emit(obj: T): void {
    for (const h of this.handlers) h(obj);
  }

  private restart(err: unknown): void {
    if (this.stopped) return;
    this.restartDelayMs = Math.min(30_000, this.restartDelayMs ? this.restartDelayMs * 2 : 500);
    this.log.warn("watch stopped; restarting", {
      kind: this.source.kind,
      error: (err as Error)?.message ?? String(err),
      retryInMs: this.restartDelayMs,
    });
    setTimeout(() => {
      if (!this.stopped) void this.start();
    }, this.restartDelayMs).unref();
  }
}

export const keyOf = (o: KubernetesObject): string =>
  o.metadata?.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : (o.metadata?.name ?? "");

export function splitKey(key: string): { namespace: string; name: string } {
  const i = key.indexOf("/");
  return i < 0 ? { namespace: "", name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}
