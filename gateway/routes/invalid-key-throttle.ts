/**
 * Slows an address that keeps sending invalid keys: each address has a bucket
 * of `burst` failures that refills at `refillPerMinute`; with the bucket empty
 * the address is answered 429 with Retry-After before its key is even looked
 * at. The map of addresses is bounded (the least recently failing address is
 * forgotten first), and a full bucket is dropped, so only addresses that
 * failed lately take memory. Addresses behind one NAT share a bucket: a
 * client with a valid key there is slowed too while someone else guesses.
 */
export interface InvalidKeyThrottleOptions {
  burst: number;
  refillPerMinute: number;
  maxAddresses: number;
  now?: () => number;
}

interface Bucket {
  tokens: number;
  atMs: number;
  throttled: boolean;
}

export class InvalidKeyThrottle {
  private readonly buckets = new Map<string, Bucket>();
  private readonly options: Required<InvalidKeyThrottleOptions>;

  constructor(options: InvalidKeyThrottleOptions) {
    this.options = { now: Date.now, ...options };
  }

  /** Milliseconds the address must wait before it may try a key again; 0 when it may now. */
  retryAfterMs(address: string): number {
    const bucket = this.refilled(address);
    if (!bucket || bucket.tokens >= 1) return 0;
    return Math.ceil(((1 - bucket.tokens) * 60_000) / this.options.refillPerMinute);
  }

  /** Count one invalid key; true when this failure emptied the address's bucket (it is throttled from now). */
  recordFailure(address: string): boolean {
    const bucket = this.refilled(address) ?? { tokens: this.options.burst, atMs: this.options.now(), throttled: false };
    bucket.tokens = Math.max(0, bucket.tokens - 1);
    // Most recently failing last, so the oldest is the first key of the map.
    this.buckets.delete(address);
    if (this.buckets.size >= this.options.maxAddresses) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
    this.buckets.set(address, bucket);
    if (bucket.tokens < 1 && !bucket.throttled) {
      bucket.throttled = true;
      return true;
    }
    return false;
  }

  get trackedAddresses(): number {
    return this.buckets.size;
  }

  private refilled(address: string): Bucket | undefined {
    const bucket = this.buckets.get(address);
    if (!bucket) return undefined;
    const now = this.options.now();
    bucket.tokens = Math.min(
      this.options.burst,
      bucket.tokens + ((now - bucket.atMs) * this.options.refillPerMinute) / 60_000,
    );
    bucket.atMs = now;
    if (bucket.tokens >= 1) bucket.throttled = false;
    if (bucket.tokens >= this.options.burst) {
      this.buckets.delete(address);
      return undefined;
    }
    return bucket;
  }
}
