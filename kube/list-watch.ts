/**
 * The one list/watch loop of Pomona, shared by the operator's informers, the gateway's config source and
 * the node-agent's replica watch. It lists (in pages), then watches from the list's resourceVersion and
 * keeps a store of what it has seen:
 * - a watch that ends (the server's timeout, the idle cut below, a dropped connection) resumes from the
 *   last resourceVersion seen, bookmarks included, without listing again. client-node cuts a watch that
 *   has received nothing for 30 s; the API server sends a bookmark about once a minute, so with that cut
 *   a quiet watch never saw one, never advanced, and after the server's history moved on was answered
 *   410 and listed everything again. The cut is raised to `watchIdleTimeoutMs`, above the bookmarks;
 * - 410 Gone (the resourceVersion is older than the server keeps) lists again, and the difference
 *   between the old store and the new list goes out as added, modified and deleted events, so nothing
 *   deleted meanwhile stays behind in anyone's state;
 * - any other failure waits with exponential backoff and jitter, capped, then resumes;
 * - `resyncMs` hands every stored object to the handlers again now and then.
 * `transform` trims each object before it is stored (by default: managedFields and the last-applied
 * annotation, which no component reads and which are often most of an object's bytes).
 */
import type { KubeConfig, KubernetesObject } from "@kubernetes/client-node";
// The watch module alone: the package's index loads every generated API (see kube/rest.ts).
import { Watch } from "@kubernetes/client-node/dist/watch.js";
import { errorText, KubeRest } from "./rest.ts";

export type ListWatchEventType = "added" | "modified" | "deleted" | "resync";
export type ListWatchHandler<T> = (type: ListWatchEventType, object: T, old?: T) => void;
export type ListWatchLog = (
  level: "debug" | "info" | "warn",
  message: string,
  fields?: Record<string, unknown>,
) => void;

export interface ListResult<T> {
  items: T[];
  /** Where the watch starts; undefined starts it at the newest state, the server sending each object as ADDED. */
  resourceVersion: string | undefined;
}

export interface ListWatchOptions<T extends KubernetesObject> {
  kubeConfig: KubeConfig;
  /** The collection's path, e.g. `/api/v1/namespaces/x/secrets` or `/apis/pomona.dev/v1alpha1/modelreplicas`. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Replaces the default paged list, e.g. with a get by name where the caller may not list. */
  list?: () => Promise<ListResult<T>>;
  /** Trims an object before it is stored and handed on; defaults to `stripUnusedFields`. */
  transform?: (object: T) => T;
  /** Hand every stored object to the handlers again this often; 0 or unset: never. */
  resyncMs?: number;
  backoff?: BackoffOptions;
  /** Items per list page. */
  pageSize?: number;
  log?: ListWatchLog;
}

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

const defaultBackoff: BackoffOptions = { initialMs: 250, maxMs: 30_000 };

/**
 * A watch that has received nothing (no event, no bookmark) for this long is cut and resumed. Above the
 * API server's bookmark interval (about a minute), so a live but quiet watch gets its bookmarks.
 */
export const watchIdleTimeoutMs = 90_000;

/**
 * The wait before retry number `attempt` (0-based): initialMs·2^attempt capped at maxMs, of which a random
 * half is taken off, so many clients cut off at once do not come back at once. Never above maxMs.
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random = Math.random): number {
  const ceiling = Math.min(options.maxMs, options.initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

const lastApplied = "kubectl.kubernetes.io/last-applied-configuration";

/** Drops what no Pomona component reads: managedFields and kubectl's last-applied copy of the object. */
export function stripUnusedFields<T extends KubernetesObject>(object: T): T {
  const metadata = object.metadata;
  if (!metadata) return object;
  if (metadata.managedFields) delete metadata.managedFields;
  if (metadata.annotations?.[lastApplied] !== undefined) {
    delete metadata.annotations[lastApplied];
    if (Object.keys(metadata.annotations).length === 0) delete metadata.annotations;
  }
  return object;
}

export const objectKey = (o: KubernetesObject): string =>
  o.metadata?.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : (o.metadata?.name ?? "");

/** The server said the resourceVersion is too old (410 Gone): list again. */
class GoneError extends Error {}

export class ListWatch<T extends KubernetesObject> {
  private readonly options: ListWatchOptions<T>;
  private readonly watcher: Watch;
  private readonly rest: KubeRest;
  private readonly handlers: ListWatchHandler<T>[] = [];
  private readonly syncedHandlers: ((items: T[]) => void)[] = [];
  /** namespace ("" for cluster-scoped) → name → object. Empty namespaces are dropped. */
  private store = new Map<string, Map<string, T>>();
  private resourceVersion: string | undefined;
  private listed = false;
  private running = false;
  private stopped = false;
  private failures = 0;
  /** 410 Gone answers in a row with no event between them; from the second on, the loop backs off. */
  private gones = 0;
  private abort: AbortController | undefined;
  private sleeping: { timer: NodeJS.Timeout; wake: () => void } | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private resolveSynced!: () => void;
  /** Resolves once the first list is in the store. */
  readonly synced: Promise<void> = new Promise((resolve) => {
    this.resolveSynced = resolve;
  });
  /** Lists and watch requests made so far (the tests check that a dropped watch does not relist). */
  readonly stats = { lists: 0, watches: 0, relistsAfterGone: 0 };

  constructor(options: ListWatchOptions<T>) {
    this.options = options;
    this.watcher = new Watch(options.kubeConfig);
    // client-node 2.0 has no option for it: the field is private (test/kube-list-watch.test.ts checks it
    // still exists, so an upgrade that renames it fails there rather than silently going back to 30 s).
    // The same timer also bounds the wait for the watch's answer; a server that does not answer for
    // 90 s is as good as down, and the failure backoff follows.
    (this.watcher as unknown as { requestTimeoutMs: number }).requestTimeoutMs = watchIdleTimeoutMs;
    this.rest = new KubeRest(options.kubeConfig);
  }

  on(handler: ListWatchHandler<T>): void {
    this.handlers.push(handler);
  }

  /** Called after each complete list with everything that exists now. */
  onSynced(handler: (items: T[]) => void): void {
    this.syncedHandlers.push(handler);
  }

  get hasSynced(): boolean {
    return this.listed;
  }

  /** Start listing and watching; a second call does nothing. Once stopped, it cannot start again. */
  start(): void {
    // A loop stopped while awaiting a list or watch only sees `stopped` after that await; starting again
    // would clear it and leave two loops writing one store.
    if (this.stopped) throw new Error(`list/watch of ${this.options.path} was stopped; make a new one`);
    if (this.running) return;
    this.running = true;
    void this.run();
    const resyncMs = this.options.resyncMs ?? 0;
    if (resyncMs > 0) {
      this.resyncTimer = setInterval(() => this.resync(), resyncMs);
      this.resyncTimer.unref();
    }
  }

  /** Stop for good. */
  stop(): void {
    this.stopped = true;
    this.abort?.abort();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.sleeping?.wake();
  }

  get(name: string, namespace?: string): T | undefined {
    return this.store.get(namespace ?? "")?.get(name);
  }

  list(namespace?: string): T[] {
    if (namespace !== undefined) return [...(this.store.get(namespace)?.values() ?? [])];
    const all: T[] = [];
    for (const objects of this.store.values()) for (const o of objects.values()) all.push(o);
    return all;
  }

  private log(level: "debug" | "info" | "warn", message: string, fields?: Record<string, unknown>): void {
    this.options.log?.(level, message, { path: this.options.path, ...fields });
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.resourceVersion === undefined || !this.listed) await this.relist();
        if (this.stopped) return;
        await this.watchOnce();
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof GoneError) {
          this.stats.relistsAfterGone++;
          this.resourceVersion = undefined;
          this.listed = false;
          // A list whose resourceVersion is already too old would be answered 410 again at once: from
          // the second 410 in a row, wait as after any failure, so no list function can make it spin.
          if (this.gones++ === 0) {
            this.log("info", "resourceVersion expired (410 Gone); listing again");
            continue;
          }
          const retryInMs = backoffDelay(this.gones - 2, this.options.backoff ?? defaultBackoff);
          this.log("warn", "resourceVersion expired again (410 Gone); listing again after a wait", { retryInMs });
          await this.sleep(retryInMs);
          continue;
        }
        const retryInMs = backoffDelay(this.failures++, this.options.backoff ?? defaultBackoff);
        this.log("warn", "list/watch failed; retrying", { error: errorText(err), retryInMs });
        await this.sleep(retryInMs);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleeping = undefined;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleeping = { timer, wake };
    });
  }

  private async relist(): Promise<void> {
    this.stats.lists++;
    const result = await (this.options.list ?? (() => this.listPages()))();
    if (this.stopped) return;
    this.replace(result.items);
    this.resourceVersion = result.resourceVersion;
    this.listed = true;
    const items = this.list();
    for (const h of this.syncedHandlers) h(items);
    this.resolveSynced();
  }

  /** The default list: pages of `pageSize`, all at the first page's resourceVersion. */
  private async listPages(): Promise<ListResult<T>> {
    const { path, fieldSelector, labelSelector, pageSize = 500 } = this.options;
    const items: T[] = [];
    let resourceVersion: string | undefined;
    let continueToken: string | undefined;
    do {
      let page: { items: T[]; metadata?: { resourceVersion?: string; continue?: string } };
      try {
        page = await this.rest.get(path, { fieldSelector, labelSelector, limit: pageSize, continue: continueToken });
      } catch (err) {
        // An expired continue token: start the list over.
        if (continueToken && (err as { code?: number }).code === 410) {
          items.length = 0;
          continueToken = undefined;
          resourceVersion = undefined;
          continue;
        }
        throw err;
      }
      resourceVersion ??= page.metadata?.resourceVersion;
      for (const item of page.items) items.push(item);
      continueToken = page.metadata?.continue || undefined;
    } while (continueToken);
    return { items, resourceVersion };
  }

  /** Take a full list as the new store, handing on only what differs from the old one. */
  private replace(items: T[]): void {
    const old = this.store;
    this.store = new Map();
    for (const raw of items) {
      const object = this.trim(raw);
      const key = object.metadata?.name ?? "";
      const ns = object.metadata?.namespace ?? "";
      const before = old.get(ns)?.get(key);
      old.get(ns)?.delete(key);
      this.put(object);
      if (!before) this.emit("added", object);
      else if (before.metadata?.resourceVersion !== object.metadata?.resourceVersion)
        this.emit("modified", object, before);
    }
    for (const objects of old.values()) for (const gone of objects.values()) this.emit("deleted", gone);
  }

  /** One watch request; resolves when it ends normally or idles out, rejects on failures and 410. */
  private watchOnce(): Promise<void> {
    this.stats.watches++;
    const { path, labelSelector, fieldSelector } = this.options;
    return new Promise<void>((resolve, reject) => {
      let gone = false;
      let failure: unknown;
      this.watcher
        .watch(
          path,
          {
            resourceVersion: this.resourceVersion,
            allowWatchBookmarks: true,
            // As client-go: 5 to 10 minutes, so many watchers do not all come back at once.
            timeoutSeconds: Math.round(300 + Math.random() * 300),
            labelSelector,
            fieldSelector,
          },
          (type: string, object: T & { code?: number; message?: string }) => {
            if (type === "ERROR") {
              if (object.code === 410) gone = true;
              else failure = new Error(`watch error ${object.code}: ${object.message}`);
              return;
            }
            this.failures = 0;
            this.gones = 0;
            const rv = object.metadata?.resourceVersion;
            if (rv) this.resourceVersion = rv;
            if (type === "BOOKMARK") return;
            const trimmed = this.trim(object);
            if (type === "ADDED" || type === "MODIFIED") {
              const before = this.put(trimmed);
              // A watch started at the newest state sends what the list already had: nothing changed.
              if (before && before.metadata?.resourceVersion === trimmed.metadata?.resourceVersion) return;
              this.emit(before ? "modified" : "added", trimmed, before);
            } else if (type === "DELETED") {
              this.emit("deleted", this.remove(trimmed) ?? trimmed);
            }
          },
          (err: unknown) => {
            // 410 comes either as an ERROR event in the stream or as the status of the watch request itself.
            if (gone || (err as { statusCode?: number } | null)?.statusCode === 410) reject(new GoneError());
            else if (failure) reject(failure);
            else if (!err || (err as Error).name === "AbortError") resolve();
            else if ((err as Error).name === "TimeoutError") {
              // Nothing for watchIdleTimeoutMs, not even a bookmark: resume at once.
              this.log("debug", "watch idle; resuming");
              resolve();
            } else reject(err);
          },
        )
        .then((controller) => {
          this.abort = controller;
          // Not "the server is back" yet: a watch answered 200 that then fails at once must keep backing
          // off, so only an event (above) resets the failure count.
          if (this.stopped) controller.abort();
        })
        .catch(reject);
    });
  }

  private trim(object: T): T {
    return (this.options.transform ?? stripUnusedFields)(object);
  }

  private put(object: T): T | undefined {
    const ns = object.metadata?.namespace ?? "";
    let objects = this.store.get(ns);
    if (!objects) {
      objects = new Map();
      this.store.set(ns, objects);
    }
    const name = object.metadata?.name ?? "";
    const before = objects.get(name);
    objects.set(name, object);
    return before;
  }

  private remove(object: T): T | undefined {
    const ns = object.metadata?.namespace ?? "";
    const objects = this.store.get(ns);
    const name = object.metadata?.name ?? "";
    const before = objects?.get(name);
    if (!objects || !before) return undefined;
    objects.delete(name);
    if (objects.size === 0) this.store.delete(ns);
    return before;
  }

  private resync(): void {
    if (!this.listed) return;
    for (const object of this.list()) this.emit("resync", object);
  }

  private emit(type: ListWatchEventType, object: T, old?: T): void {
    for (const h of this.handlers) {
      try {
        h(type, object, old);
      } catch (err) {
        this.log("warn", "list/watch handler failed", { error: errorText(err) });
      }
    }
  }
}
