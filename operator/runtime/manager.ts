/**
 * Runs the operator's controllers as controller-runtime's manager does: it owns the shared informers
 * (one per watched source, whoever asks for it), the controllers and other runnables, leader election,
 * the health endpoints and shutdown. Every replica fills its caches at start, so a standby that takes
 * over works from memory at once; only leader work waits for the Lease. A replica campaigns only once
 * its caches have synced, so one that cannot list a kind never holds the Lease; caches that do not sync
 * within `cacheSyncTimeoutMs` mean exit, naming the informers that did not. On becoming leader it runs
 * the setup the wiring gives it (which registers controllers and makes what they need), then starts the
 * controllers (which begin with every cached object) and runnables. Leadership lost means stop and exit,
 * so a new standby starts clean; a signal means finish the reconciles in flight, give the lease up and
 * stop (or, if they do not finish within the grace, leave the lease to expire).
 */
import type { Server } from "node:http";
import type { KubeConfig, KubernetesObject } from "@kubernetes/client-node";
import { serveHealth } from "../health.ts";
import { Controller, type Reconcile } from "./controller.ts";
import { Informer, type InformerSource } from "./informer.ts";
import { LeaderElector } from "./leader.ts";
import type { Logger } from "./log.ts";
import type { OperatorMetrics } from "./metrics.ts";

/** Something that runs while this operator leads (the caches have synced by then). */
export interface Runnable {
  start(): void;
  stop(): void | Promise<void>;
}

export interface ManagerOptions {
  kubeConfig: KubeConfig;
  log: Logger;
  metrics: OperatorMetrics;
  /** Port of /healthz, /readyz and /metrics. */
  healthPort: number;
  leaderElection: { namespace: string; name: string; identity: string; leaseDurationSeconds: number; renewMs: number };
  /** How long shutdown waits for the reconciles in flight. */
  shutdownGraceMs?: number;
  /** How long a replica waits for every informer's first list before it gives up and exits; default 2 min. */
  cacheSyncTimeoutMs?: number;
}

export class Manager {
  readonly kubeConfig: KubeConfig;
  readonly log: Logger;
  readonly metrics: OperatorMetrics;
  private readonly options: ManagerOptions;
  private readonly informers = new Map<string, Informer<KubernetesObject>>();
  private readonly controllers: { controller: Controller; workers: number }[] = [];
  private readonly runnables: Runnable[] = [];
  private readonly elector: LeaderElector;
  private server: Server | undefined;
  private started = false;
  private synced = false;
  private stopping: Promise<void> | undefined;
  private setup: () => Promise<void> = async () => {};

  constructor(options: ManagerOptions) {
    this.options = options;
    this.kubeConfig = options.kubeConfig;
    this.log = options.log;
    this.metrics = options.metrics;
    this.elector = new LeaderElector(
      options.kubeConfig,
      {
        ...options.leaderElection,
        onStartedLeading: () => {
          this.metrics.isLeader.set(1);
          void this.lead();
        },
        // Acting without the lease could fight the new leader: stop and exit, to start over as a standby.
        onStoppedLeading: () => {
          this.metrics.isLeader.set(0);
          for (const { controller } of this.controllers) void controller.stop();
          this.log.error("leadership lost; exiting");
          process.exit(1);
        },
      },
      options.log,
    );
  }

  /** The shared informer of a source: asking twice for the same path and selector gives the same cache. */
  informer<T extends KubernetesObject>(source: InformerSource): Informer<T> {
    const id = `${source.path}?${source.labelSelector ?? ""}`;
    let informer = this.informers.get(id) as Informer<T> | undefined;
    if (!informer) {
      informer = new Informer<T>(this.kubeConfig, source, this.log);
      informer.onListed(() => this.metrics.cacheLists.inc({ kind: source.kind }));
      this.informers.set(id, informer as unknown as Informer<KubernetesObject>);
      if (this.started) void informer.start();
    }
    return informer;
  }

  /** A controller started with `workers` workers once this replica leads. */
  controller(name: string, reconcile: Reconcile, workers = 1): Controller {
    const controller = new Controller(name, reconcile, this.log, this.metrics);
    this.controllers.push({ controller, workers });
    return controller;
  }

  /** Anything else that runs while leading, started after the controllers. */
  add(runnable: Runnable): void {
    this.runnables.push(runnable);
  }

  /**
   * Serve health, start every informer, and campaign for the lease once their first lists are in.
   * `setup` runs once on becoming leader: it registers controllers and runnables and does what they
   * need first (writes only a leader may make).
   */
  async run(setup: () => Promise<void>): Promise<void> {
    this.setup = setup;
    this.server = await serveHealth(this.options.healthPort, this.metrics.registry, () => this.synced);
    this.started = true;
    for (const informer of this.informers.values()) void informer.start();
    void this.campaignOnceSynced();
  }

  private async campaignOnceSynced(): Promise<void> {
    await this.syncOrExit();
    if (this.stopping) return;
    this.synced = true;
    this.metrics.cachesSynced.set(1);
    this.log.info("caches synced", {
      informers: this.informers.size,
      objects: [...this.informers.values()].reduce((n, i) => n + i.list().length, 0),
    });
    this.elector.start();
  }

  /**
   * Wait for every informer's first list. A kind that cannot be listed (no right to, CRD missing) would
   * leave a replica that could never work: give up after the deadline and exit, so it neither takes the
   * Lease nor passes for a standby, and a restart tries again.
   */
  private async syncOrExit(): Promise<void> {
    const informers = [...this.informers.values()];
    if (await this.syncedWithin(informers, this.options.cacheSyncTimeoutMs ?? 120_000)) return;
    if (this.stopping) return;
    const notSynced = informers
      .filter((i) => !i.hasSynced)
      .map((i) =>
        i.source.labelSelector ? `${i.source.path}?labelSelector=${i.source.labelSelector}` : i.source.path,
      );
    this.log.error("caches did not sync in time; exiting", { notSynced });
    process.exit(1);
  }

  private async lead(): Promise<void> {
    try {
      await this.setup();
      // Informers the setup asked for that were not there at start: none today, but they must be in too.
      await this.syncOrExit();
    } catch (err) {
      this.log.error("cannot start leading; exiting", { error: (err as Error).message });
      process.exit(1);
    }
    if (this.stopping) return;
    for (const { controller, workers } of this.controllers) controller.start(workers);
    for (const runnable of this.runnables) runnable.start();
    this.log.info("controllers started", { controllers: this.controllers.length });
  }

  private async syncedWithin(informers: Informer<KubernetesObject>[], ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    });
    try {
      return await Promise.race([Promise.all(informers.map((i) => i.synced)).then(() => true), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Stop taking work, let the reconciles in flight finish (within the grace), give the lease up. If they
   * did not finish, the lease is kept until it expires: a standby taking over at once could run its
   * passes while this one's are still creating or deleting replicas.
   */
  shutdown(): Promise<void> {
    this.stopping ??= (async () => {
      await Promise.all(this.runnables.map((r) => r.stop()));
      const drained = Promise.all(this.controllers.map(({ controller }) => controller.stop())).then(() => true);
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), this.options.shutdownGraceMs ?? 10_000);
        timer.unref();
      });
      const finished = await Promise.race([drained, grace]);
      clearTimeout(timer);
      for (const informer of this.informers.values()) informer.stop();
      if (!finished) this.log.warn("reconciles still running after the grace; leaving the lease to expire");
      await this.elector.stop(finished);
      await new Promise((resolve) => (this.server ? this.server.close(resolve) : resolve(undefined)));
    })();
    return this.stopping;
  }
}
