/**
 * The free sequences of one replica's context. A request takes one (or waits in a bounded queue when all
 * are busy) and gives it back on every path, so concurrent requests decode together in the context's
 * shared batches — continuous batching.
 */
export class QueueFullError extends Error {
  readonly code = "QUEUE_FULL";
  /** Whole seconds, at least 1, until a place in the queue is likely to be free. */
  readonly retryAfterSeconds: number;
  constructor(retryAfterSeconds: number) {
    super("every sequence of this replica is busy and its queue is full; retry shortly");
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

export class PoolClosedError extends Error {
  readonly code = "POOL_CLOSED";
  constructor() {
    super("this replica is unloading");
  }
}

interface Waiter<T> {
  resolve: (item: T) => void;
  reject: (err: Error) => void;
}

/** Weight of the newest hold time in the running average that Retry-After is estimated from. */
const holdSmoothing = 0.2;
/** Retry-After never promises more than this; a client should come back and ask again. */
const maxRetryAfterSeconds = 60;

export class SequencePool<T> {
  private readonly free: T[];
  private readonly waiters: Waiter<T>[] = [];
  private readonly queueLimit: number;
  private readonly takenAt = new Map<T, number>();
  private closed = false;
  readonly size: number;
  /** Sequences in use now, and the most ever in use at once. */
  busy = 0;
  maxBusy = 0;
  /** Running average of how long a request holds a sequence, in milliseconds; undefined until one is back. */
  averageHoldMs: number | undefined;

  constructor(items: T[], queueLimit: number) {
    this.free = [...items];
    this.size = items.length;
    this.queueLimit = queueLimit;
  }

  get queued(): number {
    return this.waiters.length;
  }

  /**
   * Admission: throws at once (QueueFullError, PoolClosedError) when there is no sequence and no place in
   * the queue; otherwise the caller holds a sequence or a place, and the promise gives the sequence.
   */
  admit(signal?: AbortSignal): Promise<T> {
    if (this.closed) throw new PoolClosedError();
    const item = this.free.pop();
    if (item !== undefined) return Promise.resolve(this.take(item));
    if (this.waiters.length >= this.queueLimit) throw new QueueFullError(this.retryAfterSeconds());
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter<T> = {
        resolve: (i) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(this.take(i));
        },
        reject: (err) => {
          signal?.removeEventListener("abort", onAbort);
          reject(err);
        },
      };
      const onAbort = () => {
        const at = this.waiters.indexOf(waiter);
        if (at >= 0) this.waiters.splice(at, 1);
        reject(signal?.reason instanceof Error ? signal.reason : new Error("aborted"));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  release(item: T): void {
    this.busy--;
    const since = this.takenAt.get(item);
    this.takenAt.delete(item);
    if (since !== undefined) {
      const held = performance.now() - since;
      this.averageHoldMs =
        this.averageHoldMs === undefined ? held : this.averageHoldMs + holdSmoothing * (held - this.averageHoldMs);
    }
    const next = this.waiters.shift();
    if (next) next.resolve(item);
    else this.free.push(item);
  }

  /**
   * When a full queue is likely to have room again: a place frees each time some sequence is given back,
   * which with every sequence busy happens about once per (average hold time ÷ sequences).
   */
  retryAfterSeconds(): number {
    const perRelease = (this.averageHoldMs ?? 1000) / this.size / 1000;
    return Math.min(maxRetryAfterSeconds, Math.max(1, Math.ceil(perRelease)));
  }

  /** Refuse new work and fail everyone still waiting. */
  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.reject(new PoolClosedError());
  }

  private take(item: T): T {
    this.busy++;
    this.maxBusy = Math.max(this.maxBusy, this.busy);
    this.takenAt.set(item, performance.now());
    return item;
  }
}
