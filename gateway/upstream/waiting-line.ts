/**
 * The gateway's bounded waiting line, one per model: a request that finds no
 * endpoint of its model with room (every one at its slots, or answering busy)
 * waits here until a place frees, its deadline passes, or its client leaves.
 *
 * Order: interactive before batch, except that batch gets one turn in every
 * BATCH_TURN_EVERY places served while both wait, so a steady interactive load
 * slows batch down but never stops it (and a batch request never waits past
 * its deadline anyway). Within a class, the key with the fewest requests in
 * service goes first, ties in turn (FairQueue); callers report requests in
 * service with `began`, whether they waited or not. A full line makes room for a newcomer by evicting the newest
 * waiter of the party holding the most places (batch first for an interactive
 * newcomer), when that party holds more than the newcomer's would: so a flood
 * from one key cannot fill the line against everyone else.
 *
 * The line never picks endpoints itself: each waiter brings a `take` function
 * that claims a place (an endpoint slot) if there is one, and `pump(model)` —
 * called when a slot frees, the config changes or a busy node's Retry-After
 * ends — offers places to waiters in turn until one finds none. A place
 * claimed is handed to exactly one waiter, so a newcomer cannot steal it.
 *
 * The deadline is given per wait (an absolute time), not fixed per line, so a
 * caller can give a model that is scaling up from zero a longer one.
 */
import type { GatewayMetrics } from "../metrics.ts";
import { FairQueue } from "./fair-queue.ts";
import { ClientGoneError } from "./node-client.ts";

export type PriorityClass = "interactive" | "batch";

export const BATCH_TURN_EVERY = 8;

/** A party counts as active on a model while it has a request in service or waiting, or had one this recently. */
export const ACTIVE_WINDOW_MS = 2_000;

export type LineExit = "full" | "deadline" | "closed";

/** Why a wait ended without a place: the line was full, the deadline passed, or the model left the config. */
export class LineRefusal extends Error {
  readonly code = "LINE_REFUSAL";
  readonly reason: LineExit;
  constructor(reason: LineExit) {
    super(`left the waiting line: ${reason}`);
    this.reason = reason;
  }
}

export interface WaitOptions<G> {
  /** Whose request this is (the key); turns are taken per party. */
  party: string;
  priority: PriorityClass;
  /** Absolute time (performance.now() clock) after which the wait ends with LineRefusal("deadline"). */
  deadlineAt: number;
  signal: AbortSignal;
  /** Claim a place now if there is one; undefined when there is none. */
  take: () => G | undefined;
  /** A waiter coming back after its place did not work out (the node was busy): head of its party's queue. */
  resume?: boolean;
}

interface Waiter<G> {
  options: WaitOptions<G>;
  since: number;
  resolve: (grant: G) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
  onAbort: () => void;
}

class ModelLine<G> {
  readonly interactive = new FairQueue<Waiter<G>>();
  readonly batch = new FairQueue<Waiter<G>>();
  /** Interactive places served in a row while batch waited. */
  interactiveStreak = 0;

  get size(): number {
    return this.interactive.size + this.batch.size;
  }

  queueOf(priority: PriorityClass): FairQueue<Waiter<G>> {
    return priority === "batch" ? this.batch : this.interactive;
  }

  /** The class whose turn it is. */
  nextClass(): PriorityClass | undefined {
    if (this.interactive.size === 0) return this.batch.size === 0 ? undefined : "batch";
    if (this.batch.size === 0) return "interactive";
    return this.interactiveStreak >= BATCH_TURN_EVERY - 1 ? "batch" : "interactive";
  }
}

export class WaitingLine<G> {
  private readonly lines = new Map<string, ModelLine<G>>();
  /** Requests in service per model and party (only non-zero counts are kept). */
  private readonly serving = new Map<string, Map<string, number>>();
  /** When each party was last active on each model; entries older than ACTIVE_WINDOW_MS are dropped. */
  private readonly active = new Map<string, Map<string, number>>();
  /** Models with series in the metrics, so those of a model that left the config can be removed. */
  private readonly labelled = new Set<string>();
  private readonly maxPerModel: number;
  private readonly metrics: GatewayMetrics;

  constructor(options: { maxPerModel: number; metrics: GatewayMetrics }) {
    this.maxPerModel = options.maxPerModel;
    this.metrics = options.metrics;
  }

  length(model: string): number {
    return this.lines.get(model)?.size ?? 0;
  }

  /** A request of the party holds a place of the model; call the returned function (once or more) when it ends. */
  began(model: string, party: string): () => void {
    this.touch(model, party);
    let parties = this.serving.get(model);
    if (!parties) {
      parties = new Map();
      this.serving.set(model, parties);
    }
    parties.set(party, (parties.get(party) ?? 0) + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.touch(model, party);
      const of = this.serving.get(model);
      const n = (of?.get(party) ?? 1) - 1;
      if (n > 0) of?.set(party, n);
      else {
        of?.delete(party);
        if (of?.size === 0) this.serving.delete(model);
      }
    };
  }

  /** Requests of the party in service on the model. */
  servingOf(model: string, party: string): number {
    return this.serving.get(model)?.get(party) ?? 0;
  }

  /**
   * The most of the model's `slots` the party may hold now: an equal share among the parties active on the
   * model. A key flooding the model then leaves a slot free for a key that sends one request at a time,
   * instead of making it wait for one of the flood's answers to end; alone, a key may use every slot.
   */
  shareOf(model: string, party: string, slots: number): number {
    this.touch(model, party);
    const parties = this.active.get(model)!;
    const now = performance.now();
    // Oldest first: stop at the first party active within the window.
    for (const [p, at] of parties) {
      if (now - at <= ACTIVE_WINDOW_MS) break;
      if (this.servingOf(model, p) === 0) parties.delete(p);
    }
    return Math.max(1, Math.ceil(slots / parties.size));
  }

  private touch(model: string, party: string): void {
    let parties = this.active.get(model);
    if (!parties) {
      parties = new Map();
      this.active.set(model, parties);
    }
    // Re-inserted, so the map stays in order of last activity.
    parties.delete(party);
    parties.set(party, performance.now());
  }

  /** Wait for a place of the model; rejects with LineRefusal, or ClientGoneError when the signal aborts. */
  wait(model: string, options: WaitOptions<G>): Promise<G> {
    if (options.signal.aborted) return Promise.reject(new ClientGoneError());
    this.touch(model, options.party);
    const line = this.lines.get(model) ?? new ModelLine<G>();
    if (line.size >= this.maxPerModel && !this.evictFor(model, line, options)) {
      this.observe(model, options.priority, "full", 0);
      return Promise.reject(new LineRefusal("full"));
    }
    // A line exists in the map only while someone waits in it.
    this.lines.set(model, line);
    const promise = new Promise<G>((resolve, reject) => {
      const waiter: Waiter<G> = {
        options,
        since: performance.now(),
        resolve,
        reject,
        timer: undefined,
        onAbort: () => this.leave(model, waiter, new ClientGoneError(), "gone"),
      };
      waiter.timer = setTimeout(
        () => this.leave(model, waiter, new LineRefusal("deadline"), "deadline"),
        Math.max(0, options.deadlineAt - performance.now()),
      );
      options.signal.addEventListener("abort", waiter.onAbort, { once: true });
      line.queueOf(options.priority).push(options.party, waiter, options.resume === true);
    });
    this.labelled.add(model);
    this.metrics.queueLength.set({ model }, line.size);
    // A place may be free already (one freed while others were still being served).
    this.pump(model);
    return promise;
  }

  /** Offer free places of the model to its waiters, in turn, until one finds none. */
  pump(model: string): void {
    const line = this.lines.get(model);
    if (!line) return;
    const parties = this.serving.get(model);
    const servingOf = (party: string) => parties?.get(party) ?? 0;
    for (;;) {
      const priority = line.nextClass();
      if (priority === undefined) break;
      const queue = line.queueOf(priority);
      const { party, waiter } = queue.peek(servingOf)!;
      const grant = waiter.options.take();
      if (grant === undefined) break;
      queue.shift(party);
      if (priority === "batch") line.interactiveStreak = 0;
      else if (line.batch.size > 0) line.interactiveStreak++;
      this.settle(model, waiter, "served");
      waiter.resolve(grant);
    }
    this.afterChange(model, line);
  }

  pumpAll(): void {
    for (const model of [...this.lines.keys()]) this.pump(model);
  }

  /** Follow a new config: the lines of models no longer in it are closed, their waiters refused. */
  retain(models: ReadonlySet<string>): void {
    for (const [model, line] of this.lines) {
      if (models.has(model)) continue;
      for (const waiter of [...line.interactive.drain(), ...line.batch.drain()]) {
        this.settle(model, waiter, "closed");
        waiter.reject(new LineRefusal("closed"));
      }
      this.lines.delete(model);
    }
    for (const model of [...this.active.keys(), ...this.serving.keys()]) {
      if (models.has(model)) continue;
      this.active.delete(model);
      this.serving.delete(model);
    }
    for (const model of this.labelled) if (!models.has(model)) this.forget(model);
  }

  close(): void {
    this.retain(new Set());
  }

  private evictFor(model: string, line: ModelLine<G>, newcomer: WaitOptions<G>): boolean {
    const own = line.queueOf(newcomer.priority).countOf(newcomer.party);
    let victim: { party: string; waiter: Waiter<G>; queue: FairQueue<Waiter<G>> } | undefined;
    const heaviestBatch = line.batch.heaviest();
    if (newcomer.priority === "interactive" && heaviestBatch) {
      victim = { party: heaviestBatch.party, waiter: heaviestBatch.newest, queue: line.batch };
    } else {
      const heaviest = line.queueOf(newcomer.priority).heaviest();
      if (heaviest && heaviest.party !== newcomer.party && heaviest.count > own + 1) {
        victim = { party: heaviest.party, waiter: heaviest.newest, queue: line.queueOf(newcomer.priority) };
      }
    }
    if (!victim) return false;
    victim.queue.remove(victim.party, victim.waiter);
    this.settle(model, victim.waiter, "full");
    victim.waiter.reject(new LineRefusal("full"));
    return true;
  }

  private leave(model: string, waiter: Waiter<G>, err: Error, outcome: "gone" | "deadline"): void {
    const line = this.lines.get(model);
    if (!line?.queueOf(waiter.options.priority).remove(waiter.options.party, waiter)) return;
    this.settle(model, waiter, outcome);
    waiter.reject(err);
    this.afterChange(model, line);
  }

  private settle(model: string, waiter: Waiter<G>, outcome: string): void {
    clearTimeout(waiter.timer);
    waiter.options.signal.removeEventListener("abort", waiter.onAbort);
    this.observe(model, waiter.options.priority, outcome, performance.now() - waiter.since);
  }

  private observe(model: string, priority: PriorityClass, outcome: string, ms: number): void {
    this.labelled.add(model);
    this.metrics.queueWait.observe({ model, priority, outcome }, ms / 1000);
  }

  /** An empty line is dropped, so the map holds only models with waiters. */
  private afterChange(model: string, line: ModelLine<G>): void {
    if (line.size > 0) {
      this.metrics.queueLength.set({ model }, line.size);
      return;
    }
    if (this.lines.get(model) === line) this.lines.delete(model);
    this.metrics.queueLength.set({ model }, 0);
  }

  private forget(model: string): void {
    this.labelled.delete(model);
    this.metrics.queueLength.remove({ model });
    for (const priority of ["interactive", "batch"]) {
      for (const outcome of ["served", "full", "deadline", "gone", "closed"]) {
        this.metrics.queueWait.remove({ model, priority, outcome });
      }
    }
  }
}
