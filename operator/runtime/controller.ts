/**
 * A controller: keys from its informers go into one work queue; workers call
 * the reconcile function with one key at a time. `for` watches the primary
 * kind, `owns` maps owned objects to their controller owner, `watches` maps
 * any object to keys with a function. Predicates are pure functions that say
 * whether a change is worth a reconcile. As controller-runtime's sources, the
 * handlers act only while the controller runs, and start() first hands every
 * object already in the caches to them: the informers of a standby fill their
 * caches long before it leads, and its queues stay empty until it does.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import { objectKey } from "../../kube/list-watch.ts";
import { TerminalError } from "./errors.ts";
import type { Informer } from "./informer.ts";
import type { Logger } from "./log.ts";
import type { OperatorMetrics } from "./metrics.ts";
import { WorkQueue } from "./workqueue.ts";

export interface Result {
  requeueAfterMs?: number;
}

export type Reconcile = (key: string) => Promise<Result | undefined>;
export type Predicate<T> = (obj: T) => boolean;

export class Controller {
  readonly name: string;
  readonly queue = new WorkQueue();
  private readonly reconcile: Reconcile;
  private readonly log: Logger;
  private readonly metrics: OperatorMetrics;
  private running = false;
  private reconciled = false;
  /** One per source: hands every cached object of that source to its handler. */
  private readonly replays: (() => void)[] = [];
  private workers: Promise<void>[] = [];

  constructor(name: string, reconcile: Reconcile, log: Logger, metrics: OperatorMetrics) {
    this.name = name;
    this.reconcile = reconcile;
    this.log = log.child({ controller: name });
    this.metrics = metrics;
  }

  for<T extends KubernetesObject>(informer: Informer<T>, predicate: Predicate<T> = () => true): this {
    return this.source(informer, (o) => {
      if (predicate(o)) this.queue.add(objectKey(o));
    });
  }

  /** Objects whose controller owner is of `ownerKind` wake that owner. */
  owns<T extends KubernetesObject>(informer: Informer<T>, ownerKind: string): this {
    return this.source(informer, (o) => {
      const owner = o.metadata?.ownerReferences?.find((r) => r.controller && r.kind === ownerKind);
      if (owner) this.queue.add(`${o.metadata?.namespace}/${owner.name}`);
    });
  }

  watches<T extends KubernetesObject>(informer: Informer<T>, map: (obj: T) => string[]): this {
    return this.source(informer, (o) => {
      for (const key of map(o)) this.queue.add(key);
    });
  }

  /** Start with the objects the caches hold now (no list: they are in memory), then follow their events. */
  start(workers = 2): void {
    this.running = true;
    for (const replay of this.replays) replay();
    for (let i = 0; i < workers; i++) this.workers.push(this.work());
  }

  private source<T extends KubernetesObject>(informer: Informer<T>, handle: (obj: T) => void): this {
    informer.onChange((o) => {
      if (this.running) handle(o);
    });
    this.replays.push(() => {
      for (const o of informer.list()) handle(o);
    });
    return this;
  }

  /** Stop taking keys; resolves when the reconciles in flight have finished. */
  stop(): Promise<void> {
    this.running = false;
    this.queue.shutdown();
    const workers = this.workers;
    this.workers = [];
    return Promise.all(workers).then(() => undefined);
  }

  private async work(): Promise<void> {
    while (this.running) {
      const key = await this.queue.get();
      if (key === undefined) return;
      this.metrics.queueLatency.observe({ controller: this.name }, this.queue.waited(key) / 1000);
      this.metrics.queueDepth.set({ controller: this.name }, this.queue.depth);
      const started = performance.now();
      try {
        const result = await this.reconcile(key);
        this.queue.forget(key);
        if (result?.requeueAfterMs !== undefined) this.queue.addAfter(key, result.requeueAfterMs);
        this.metrics.reconciles.inc({ controller: this.name, result: "success" });
      } catch (err) {
        const terminal = err instanceof TerminalError;
        this.metrics.reconciles.inc({ controller: this.name, result: terminal ? "terminal" : "error" });
        this.metrics.errors.inc({ controller: this.name });
        if (terminal) {
          this.queue.forget(key);
          this.log.warn("reconcile refused", { key, error: (err as Error).message });
        } else {
          const retryInMs = this.queue.addRateLimited(key);
          this.log.warn("reconcile failed", { key, error: (err as Error).message, retryInMs });
        }
      } finally {
        this.metrics.reconcileSeconds.observe({ controller: this.name }, (performance.now() - started) / 1000);
        this.queue.done(key);
      }
      // Once: the moment a new leader is working (the takeover drill measures up to it).
      if (!this.reconciled) {
        this.reconciled = true;
        this.log.info("first reconcile done", { key });
      }
    }
  }
}
