/**
 * Limits shared by every gateway replica through Redis. Most admissions are decided in this process
 * against budget leased from Redis in advance (leases.ts); the others, and the first of each counter in a
 * slice, run one Lua script that checks every applicable limit and, only if all pass, takes from each,
 * atomic across replicas, and leases fresh budget in the same call. The same call first settles the
 * requests that ended since the last one (tokens charged to real usage, concurrency slots freed) and gives
 * back unused leases, so ending a request costs no round trip of its own and never delays an answer; when
 * no call comes within SETTLE_DELAY_MS, the settlements go alone. Clocks: the gateway passes its own time,
 * so replicas must keep their clocks in sync (NTP), as they do anyway.
 */
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import type { LimitKind } from "../errors.ts";
import type { GatewayMetrics } from "../metrics.ts";
import { daySliceOf, type Grant, LeaseBook, type LeaseOp } from "./leases.ts";
import {
  type Admission,
  type AdmissionResult,
  CONCURRENCY_LEASE_MS,
  DAY_SLICE_MS,
  type LimitCheck,
  type Limiter,
  limitValueOf,
  MINUTE_SLICE_MS,
  SLICES_PER_WINDOW,
  type Ticket,
} from "./limiter.ts";
import { ADMIT } from "./redis-admission-script.ts";

const KINDS: LimitKind[] = ["requests", "tokens_per_minute", "tokens_per_day", "concurrent_requests"];

type ScriptRunner = (numKeys: number, ...args: (string | number)[]) => Promise<unknown>;

/**
 * Settlements wait at most this long for the next admission to carry them; a lone one then goes alone.
 * So a slot freed here is free for other gateways within about this much (it is free for this gateway's
 * next admission at once, which settles before it checks).
 */
export const SETTLE_DELAY_MS = 1;
/** Settlements carried by one script call at most: bounds the call's size and the queue. */
export const SETTLE_BATCH = 64;

interface Settlement {
  /** The keys it touches (3 per check) and its 5 arguments, as the script takes them. */
  keys: string[];
  args: (string | number)[];
}

export interface RedisLimiterOptions {
  url: string;
  onFailure: "allow" | "deny";
  metrics: GatewayMetrics;
  /** Prefix of every key, so several Pomona installations can share one Redis. */
  prefix?: string;
}

export class LimitsUnavailable extends Error {
  readonly code = "LIMITS_UNAVAILABLE";
}

export class RedisLimiter implements Limiter {
  private readonly redis: Redis;
  private readonly options: RedisLimiterOptions;
  private readonly prefix: string;
  private readonly admitScript: ScriptRunner;
  /** Names this gateway's concurrency blocks in Redis. */
  private readonly id = randomUUID();
  private readonly leases = new LeaseBook();
  /** Tickets admitted against leases, not in Redis one by one. */
  private readonly leased = new WeakSet<Ticket>();
  /** Ended requests not yet settled in Redis and leases not yet given back, oldest first, at most SETTLE_BATCH. */
  private pending: Settlement[] = [];
  private returns: LeaseOp[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweepAt = Number.POSITIVE_INFINITY;
  private lastFlush: Promise<void> = Promise.resolve();

  constructor(options: RedisLimiterOptions) {
    this.options = options;
    this.prefix = options.prefix ?? "pomona:limits:";
    // Fail fast while Redis is away instead of queueing admissions behind a reconnect.
    this.redis = new Redis(options.url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: 500,
      retryStrategy: (attempt) => Math.min(attempt * 100, 2_000),
    });
    this.redis.on("error", () => {
      // Reported per admission through the failure metric; ioredis reconnects by itself.
    });
    // ioredis sends the script's text once per connection, then only its SHA1 (EVALSHA).
    this.redis.defineCommand("pomonaAdmit", { lua: ADMIT });
    this.admitScript = (this.redis as unknown as Record<string, ScriptRunner>).pomonaAdmit!.bind(this.redis);
    options.metrics.limiterFailureMode.set({ mode: options.onFailure }, 1);
  }

  /** Resolves true once connected, false if not within the time given (admissions then use the failure mode). */
  async connected(timeoutMs: number): Promise<boolean> {
    if (this.redis.status === "ready") return true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.redis.off("ready", onReady);
        resolve(false);
      }, timeoutMs);
      const onReady = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.redis.once("ready", onReady);
    });
  }

  private keysOf(counterKey: string) {
    const base = `${this.prefix}${counterKey}`;
    return {
      bucket: `${base}:burst`,
      requests: `${base}:rw`,
      minute: `${base}:tw`,
      day: `${base}:dw`,
      concurrency: `${base}:conc`,
      blocks: `${base}:cb`,
    };
  }

  /**
   * One script call at `nowMs`: the pending settlements and lease returns, then the admission's checks (none:
   * the call only settles and leases), then the lease ops' takes.
   */
  private call(admission: Admission | undefined, ops: LeaseOp[], nowMs: number): Promise<unknown> {
    const checks = admission?.checks ?? [];
    const keys: string[] = [];
    const args: (string | number)[] = [
      nowMs,
      admission?.requestId ?? "",
      admission?.tokens ?? 0,
      checks.length,
      SLICES_PER_WINDOW,
      MINUTE_SLICE_MS,
      DAY_SLICE_MS,
      CONCURRENCY_LEASE_MS,
      this.id,
    ];
    for (const check of checks) {
      const k = this.keysOf(check.counterKey);
      keys.push(k.bucket, k.requests, k.minute, k.day, k.concurrency, k.blocks);
      const p = check.policy;
      args.push(
        p.requestsPerMinute ?? 0,
        p.burst ?? 0,
        p.tokensPerMinute ?? 0,
        p.tokensPerDay ?? 0,
        p.concurrentRequests ?? 0,
      );
    }
    const settlements = this.takePending();
    args.push(settlements.length);
    for (const s of settlements) {
      keys.push(...s.keys);
      args.push(...s.args);
    }
    const allOps = [...this.takeReturns(), ...ops];
    args.push(allOps.length);
    for (const op of allOps) {
      const k = this.keysOf(op.counterKey);
      keys.push(k.requests, k.minute, k.day, k.concurrency, k.blocks);
      const { back, take } = op;
      args.push(back.slice, daySliceOf(back.slice), back.requests, back.minute, back.day, back.slots);
      if (take) {
        const p = take.policy;
        const w = take.sizes;
        args.push(take.ahead ? 3 : take.strict ? 2 : 1, take.tokens, w.requests, w.minute, w.day, w.slots);
        args.push(p.requestsPerMinute ?? 0, p.tokensPerMinute ?? 0, p.tokensPerDay ?? 0, p.concurrentRequests ?? 0);
      } else args.push(0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    }
    // The returns taken from the queue come first: the grants of `ops` follow theirs.
    const skipped = allOps.length - ops.length;
    return this.admitScript(keys.length, ...keys, ...args).then((result) => {
      const r = result as number[];
      if (r[0] !== -1) return r;
      const grants: Grant[] = [];
      for (let i = 0; i < ops.length; i++) {
        const at = 1 + (skipped + i) * 4;
        grants.push([r[at] ?? 0, r[at + 1] ?? 0, r[at + 2] ?? 0, r[at + 3] ?? 0]);
      }
      return [-1, grants];
    });
  }

  private takePending(): Settlement[] {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const taken = this.pending;
    this.pending = [];
    return taken;
  }

  private takeReturns(): LeaseOp[] {
    const taken = this.returns;
    this.returns = [];
    return taken;
  }

  async admit(admission: Admission): Promise<AdmissionResult> {
    const back: LeaseOp[] = [];
    const local = this.leases.admitLocally(admission, back);
    if (back.length > 0) this.returns.push(...back);
    if (local) {
      if (back.length > 0) this.queued();
      const ticket: Ticket = { admission, unlimited: false };
      this.leased.add(ticket);
      const topUps = this.leases.topUps(admission);
      if (topUps.length > 0) void this.lease(topUps, admission.nowMs);
      return { ok: true, ticket };
    }
    const ops = this.leases.forAdmission(admission);
    let result: unknown;
    try {
      result = await this.call(admission, ops, admission.nowMs);
    } catch {
      // Settlements and returns that went with it are lost: slots come back with their lease, tokens stay charged.
      this.granted(ops, undefined, admission.nowMs);
      this.options.metrics.limiterFailures.inc({ mode: this.options.onFailure });
      if (this.options.onFailure === "deny") throw new LimitsUnavailable("the shared limiter cannot be reached");
      return { ok: true, ticket: { admission, unlimited: true } };
    }
    const [index, kind, retryAfterMs] = result as [number, unknown, number?];
    if (index < 0) {
      this.granted(ops, kind as Grant[], admission.nowMs);
      return { ok: true, ticket: { admission, unlimited: false } };
    }
    this.granted(ops, undefined, admission.nowMs);
    const check = admission.checks[index]!;
    const limit = KINDS[((kind as number | undefined) ?? 1) - 1] ?? "requests";
    return {
      ok: false,
      rejection: { check, limit, limitValue: limitValueOf(check.policy, limit), retryAfterMs: retryAfterMs ?? 1000 },
    };
  }

  /** Tops up leases in the background: no admission waits on it. */
  private async lease(ops: LeaseOp[], nowMs: number): Promise<void> {
    try {
      const [, grants] = (await this.call(undefined, ops, nowMs)) as [number, Grant[]];
      this.granted(ops, grants, nowMs);
    } catch {
      this.granted(ops, undefined, nowMs);
      this.options.metrics.limiterFailures.inc({ mode: this.options.onFailure });
    }
  }

  private granted(ops: LeaseOp[], grants: Grant[] | undefined, nowMs: number): void {
    if (ops.length === 0) return;
    this.giveBack(this.leases.granted(ops, grants, nowMs));
    // What was granted is due back at its slice's end (by this process's clock).
    if (grants) this.scheduleSweep(Date.now() + (Math.floor(nowMs / MINUTE_SLICE_MS) + 1) * MINUTE_SLICE_MS - nowMs);
  }

  /** Queues lease returns; they go with the next call, or alone within SETTLE_DELAY_MS. */
  private giveBack(ops: LeaseOp[]): void {
    if (ops.length === 0) return;
    this.returns.push(...ops);
    this.queued();
  }

  private queued(): void {
    if (this.pending.length + this.returns.length >= SETTLE_BATCH) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), SETTLE_DELAY_MS);
  }

  /** Gives back, at their slice's end, the leases nobody used up: the sweep runs at `at` unless due sooner. */
  private scheduleSweep(at: number | undefined): void {
    if (at === undefined || at >= this.sweepAt) return;
    clearTimeout(this.sweepTimer);
    this.sweepAt = at;
    this.sweepTimer = setTimeout(
      () => {
        this.sweepAt = Number.POSITIVE_INFINITY;
        this.sweepTimer = undefined;
        const back = this.leases.sweep();
        if (back.length > 0) {
          this.returns.push(...back);
          this.flush();
        }
        this.scheduleSweep(this.leases.nextSweepAt());
      },
      Math.max(0, at - Date.now()),
    );
    this.sweepTimer.unref();
  }

  /**
   * Queues the settlement; it reaches Redis with this gateway's next call (one round trip for both)
   * or alone after SETTLE_DELAY_MS, so it never delays an answer. Resolves once queued: this limiter's next
   * admission sees it. A request admitted against a lease settles into the lease while its slice lasts.
   */
  async finish(ticket: Ticket, actualTokens: number | undefined): Promise<void> {
    if (ticket.unlimited || ticket.admission.checks.length === 0) return;
    const { admission } = ticket;
    const delta = actualTokens === undefined ? 0 : actualTokens - admission.tokens;
    let checks: LimitCheck[] = admission.checks;
    if (this.leased.delete(ticket)) {
      const back: LeaseOp[] = [];
      checks = this.leases.finishLocal(admission, delta, back);
      this.returns.push(...back);
      if (checks.length === 0) {
        if (back.length > 0) this.queued();
        return;
      }
    }
    const keys: string[] = [];
    for (const check of checks) {
      const k = this.keysOf(check.counterKey);
      keys.push(k.minute, k.day, k.concurrency);
    }
    this.pending.push({
      keys,
      args: [
        delta,
        admission.requestId,
        Math.floor(admission.nowMs / MINUTE_SLICE_MS),
        Math.floor(admission.nowMs / DAY_SLICE_MS),
        checks.length,
      ],
    });
    this.queued();
  }

  /** Sends the pending settlements and lease returns on their own. */
  private flush(): void {
    if (this.pending.length + this.returns.length === 0) return;
    this.lastFlush = this.call(undefined, [], 0).then(
      () => undefined,
      () => {
        // The slots' leases reclaim them; the tokens stay charged at the reservation.
        this.options.metrics.limiterFailures.inc({ mode: this.options.onFailure });
      },
    );
  }

  async close(): Promise<void> {
    clearTimeout(this.sweepTimer);
    this.returns.push(...this.leases.sweep(true));
    this.flush();
    await this.lastFlush;
    this.redis.disconnect();
  }
}
