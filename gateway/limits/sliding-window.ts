/**
 * A sliding window of admitted amounts (requests or tokens), kept in slices of windowMs / SLICES_PER_WINDOW.
 * An amount admitted in slice b counts until the end of b is a full window old, i.e. while
 * b >= floor(now / slice) - SLICES_PER_WINDOW. So the window always covers at least the last windowMs
 * (never more than the limit in any window-length span) and at most one slice more (the price: steady
 * traffic gets SLICES_PER_WINDOW / (SLICES_PER_WINDOW + 1) of the limit).
 *
 * State: `head`, the oldest slice still counted; `sum`, what all kept slices hold; the non-empty slices.
 * Slices older than the head are dropped as time passes, each once, so an admission costs O(1) amortised.
 * The Redis limiter keeps the same state in a hash and runs the same steps in Lua (redis-limiter.ts);
 * test/gateway-limiter-parity.test.ts holds the two to the same answers.
 */
import { SLICES_PER_WINDOW } from "./limiter.ts";

export class SlidingWindow {
  /** NaN while empty (the Redis hash does not exist). */
  private head = Number.NaN;
  private sum = 0;
  private readonly slices = new Map<number, number>();
  private readonly windowMs: number;
  private readonly sliceMs: number;

  constructor(windowMs: number) {
    this.windowMs = windowMs;
    this.sliceMs = windowMs / SLICES_PER_WINDOW;
  }

  /** What the window holds at `now`, after dropping the slices that left it. */
  used(now: number): number {
    if (Number.isNaN(this.head)) return 0;
    const cutoff = Math.floor(now / this.sliceMs) - SLICES_PER_WINDOW;
    if (cutoff <= this.head) return this.sum;
    if (cutoff > this.head + SLICES_PER_WINDOW) {
      this.clear();
      return 0;
    }
    for (let b = this.head; b < cutoff; b++) {
      this.sum -= this.slices.get(b) ?? 0;
      this.slices.delete(b);
    }
    this.head = cutoff;
    return this.sum;
  }

  /** Milliseconds until `amount` more fits under `limit`; call after used(now) said it does not. */
  retryAfterMs(now: number, amount: number, limit: number): number {
    if (amount > limit || Number.isNaN(this.head)) return this.windowMs;
    let freed = 0;
    for (let b = this.head; b <= this.head + SLICES_PER_WINDOW; b++) {
      freed += this.slices.get(b) ?? 0;
      if (this.sum - freed + amount <= limit) return (b + 1) * this.sliceMs + this.windowMs - now;
    }
    return this.windowMs;
  }

  /** Adds `amount` in now's slice, or in the oldest kept one if the clock went back further than that. */
  add(now: number, amount: number): void {
    const current = Math.floor(now / this.sliceMs);
    if (Number.isNaN(this.head)) this.head = current - SLICES_PER_WINDOW;
    const slice = Math.max(current, this.head);
    this.slices.set(slice, (this.slices.get(slice) ?? 0) + amount);
    this.sum += amount;
  }

  /** Corrects what was added at `admittedAt` by `delta`, if its slice is still kept (a refund is negative). */
  settle(admittedAt: number, delta: number): void {
    const slice = Math.floor(admittedAt / this.sliceMs);
    const held = this.slices.get(slice);
    if (held === undefined) return;
    this.slices.set(slice, held + delta);
    this.sum += delta;
  }

  private clear(): void {
    this.head = Number.NaN;
    this.sum = 0;
    this.slices.clear();
  }
}
