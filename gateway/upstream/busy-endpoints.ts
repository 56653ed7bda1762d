/**
 * Endpoints whose node answered busy (its sequences and queue are full, likely
 * with other gateways' requests), left alone until the node's Retry-After
 * (capped) has passed; then `onFree` is called with the endpoint's model so its
 * waiting line can try again. One entry per endpoint at most, and entries of
 * endpoints that left the config are dropped.
 */
export const MAX_BUSY_BACKOFF_MS = 30_000;

export class BusyEndpoints {
  private readonly until = new Map<string, { timer: NodeJS.Timeout; model: string; at: number }>();
  private readonly onFree: (model: string) => void;

  constructor(onFree: (model: string) => void) {
    this.onFree = onFree;
  }

  has(url: string): boolean {
    return this.until.has(url);
  }

  mark(url: string, model: string, retryAfterMs: number): void {
    const old = this.until.get(url);
    if (old) clearTimeout(old.timer);
    const timer = setTimeout(
      () => {
        this.until.delete(url);
        this.onFree(model);
      },
      Math.min(Math.max(retryAfterMs, 1), MAX_BUSY_BACKOFF_MS),
    );
    timer.unref();
    this.until.set(url, { timer, model, at: performance.now() + Math.min(retryAfterMs, MAX_BUSY_BACKOFF_MS) });
  }

  /** How long until the first of these endpoints that is busy may be tried again; 0 if none is busy. */
  soonestFreeMs(urls: readonly string[]): number {
    let soonest = Number.POSITIVE_INFINITY;
    for (const url of urls) {
      const entry = this.until.get(url);
      if (entry) soonest = Math.min(soonest, entry.at - performance.now());
    }
    return Number.isFinite(soonest) ? Math.max(0, soonest) : 0;
  }

  retain(urls: ReadonlySet<string>): void {
    for (const [url, entry] of this.until) {
      if (urls.has(url)) continue;
      clearTimeout(entry.timer);
      this.until.delete(url);
    }
  }

  clear(): void {
    this.retain(new Set());
  }
}
