/**
 * The hashing keys of API keys (crds/api/key-hashing.ts), followed from the
 * Secret pomona-key-hashing in the system namespace: watched by name (the
 * gateway's Role names it), read again now and then in case a watch missed a
 * change. A malformed Secret is refused and the keys in use are kept.
 */
import { ApiException, CoreV1Api, type KubeConfig, type V1Secret, Watch } from "@kubernetes/client-node";
import type { FastifyBaseLogger } from "fastify";
import { type HashingKeys, keyHashingSecret, parseHashingKeys } from "../crds/api/index.ts";

/** What authenticate() reads: the current hashing keys, or undefined before the first were read. */
export class HashingKeysHolder {
  current: HashingKeys | undefined;
  constructor(initial?: HashingKeys) {
    this.current = initial;
  }
}

export interface HashingKeysWatcherOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  holder: HashingKeysHolder;
  log: FastifyBaseLogger;
  resyncMs?: number;
}

export class HashingKeysWatcher {
  private readonly core: CoreV1Api;
  private readonly watch: Watch;
  private readonly options: HashingKeysWatcherOptions;
  private stopped = false;
  private watchAbort: AbortController | undefined;
  private readonly timers = new Set<NodeJS.Timeout>();
  private backoffMs = 500;

  constructor(options: HashingKeysWatcherOptions) {
    this.options = options;
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.watch = new Watch(options.kubeConfig);
  }

  start(): void {
    this.startWatch();
    this.resync();
  }

  stop(): void {
    this.stopped = true;
    this.watchAbort?.abort();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  /** Read the Secret now. */
  async refresh(): Promise<void> {
    try {
      const secret = await this.core.readNamespacedSecret({
        name: keyHashingSecret,
        namespace: this.options.namespace,
      });
      this.take(secret);
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) {
        this.options.log.warn({ secret: keyHashingSecret }, "API key hashing secret missing; keeping the keys in use");
        return;
      }
      this.options.log.warn({ err: String(err) }, "cannot read the API key hashing secret; keeping the keys in use");
    }
  }

  private take(secret: V1Secret): void {
    try {
      const keys = parseHashingKeys(secret.data);
      const before = this.options.holder.current;
      this.options.holder.current = keys;
      if (before?.current.id !== keys.current.id || before?.previous?.id !== keys.previous?.id) {
        this.options.log.info(
          { current: keys.current.id, previous: keys.previous?.id ?? null },
          "API key hashing keys in use",
        );
      }
    } catch (err) {
      // The message names the Secret and the data key, never a value.
      this.options.log.error(
        { err: (err as Error).message },
        "API key hashing secret refused; keeping the keys in use",
      );
    }
  }

  private resync(): void {
    if (this.stopped) return;
    void this.refresh();
    this.later(this.options.resyncMs ?? 30_000, () => this.resync());
  }

  private later(ms: number, fn: () => void): void {
    if (this.stopped) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    t.unref();
    this.timers.add(t);
  }

  private startWatch(): void {
    if (this.stopped) return;
    const restart = (err: unknown) => {
      if (this.stopped) return;
      if (err && (err as { name?: string }).name !== "TimeoutError")
        this.options.log.warn({ err: String(err) }, "API key hashing secret watch ended; restarting");
      this.later(this.backoffMs, () => this.startWatch());
      this.backoffMs = Math.min(this.backoffMs * 2, 10_000);
      void this.refresh();
    };
    this.watch
      .watch(
        `/api/v1/namespaces/${this.options.namespace}/secrets`,
        { fieldSelector: `metadata.name=${keyHashingSecret}` },
        (phase, secret: V1Secret) => {
          this.backoffMs = 500;
          if (phase === "ADDED" || phase === "MODIFIED") this.take(secret);
        },
        restart,
      )
      .then((abort) => {
        this.watchAbort = abort;
        if (this.stopped) abort.abort();
      })
      .catch(restart);
  }
}
