/**
 * The free sequences of one replica's context. A request takes one (or waits in a bounded queue when all
 * are busy) and gives it back on every path, so concurrent requests decode together in the context's
 * shared batches — continuous batching.
 */
export class QueueFullError extends Error {
  readonly code = "QUEUE_FULL";
  constructor() {
    super("every sequence of this replica is busy and its queue is full; retry shortly");
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

export class SequencePool<T> {
  private readonly free: T[];
  private readonly waiters: Waiter<T>[] = [];
  private readonly queueLimit: number;
  private closed = false;
  readonly size: number;
  /** Sequences in use now, and the most ever in use at once. */
  busy = 0;
  maxBusy = 0;

  constructor(items: T[], queueLimit: number) {
    this.free = [...items];
    this.size = items.length;
    this.queueLimit = queueLimit;
  }

  get queued(): number {
    return this.waiters.length;
  }

  acquire(signal?: AbortSignal): Promise<T> {
    if (this.closed) return Promise.reject(new PoolClosedError());
    const item = this.free.pop();
    if (item !== undefined) return Promise.resolve(this.take(item));
    if (this.waiters.length >= this.queueLimit) return Promise.reject(new QueueFullError());
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter<T> = {
        resolve: (i) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(this.take(i));
        },
        reject,
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
    const next = this.waiters.shift();
    if (next) next.resolve(item);
    else this.free.push(item);
  }

  /** Refuse new work and fail everyone still waiting. */
  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.reject(new PoolClosedError());
  }

  private take(item: T): T {
    this.busy++;
    this.maxBusy = Math.max(this.maxBusy, this.busy);
    return item;
  }
}
