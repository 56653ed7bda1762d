/**
 * Follows one Secret by name, the way the gateway's Role allows (get and watch by name only): a watch
 * with a field selector, restarted with backoff when it ends, and a read now and then in case a watch
 * missed a change. Each version read or watched goes to `onSecret`; a missing Secret to `onMissing`.
 */
import { ApiException, CoreV1Api, type KubeConfig, type V1Secret, Watch } from "@kubernetes/client-node";
import type { FastifyBaseLogger } from "fastify";

export interface NamedSecretWatchOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  name: string;
  log: FastifyBaseLogger;
  onSecret: (secret: V1Secret) => void;
  onMissing?: () => void;
  /** Read it again this often even without a watch event. */
  resyncMs?: number;
}

export class NamedSecretWatch {
  private readonly core: CoreV1Api;
  private readonly watch: Watch;
  private readonly options: NamedSecretWatchOptions;
  private stopped = false;
  private watchAbort: AbortController | undefined;
  private readonly timers = new Set<NodeJS.Timeout>();
  private backoffMs = 500;

  constructor(options: NamedSecretWatchOptions) {
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
    const { name, namespace, log } = this.options;
    try {
      this.options.onSecret(await this.core.readNamespacedSecret({ name, namespace }));
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) this.options.onMissing?.();
      else
        log.warn({ secret: name, err: String(err) }, "cannot read a Secret the gateway follows; keeping what it has");
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
    const { name, namespace, log } = this.options;
    const restart = (err: unknown) => {
      if (this.stopped) return;
      // client-node ends a watch that has been quiet for 30 s; that is routine, anything else is worth a warning.
      if (err && (err as { name?: string }).name !== "TimeoutError")
        log.warn({ secret: name, err: String(err) }, "Secret watch ended; restarting");
      this.later(this.backoffMs, () => this.startWatch());
      this.backoffMs = Math.min(this.backoffMs * 2, 10_000);
      // A watch that ended may have missed a change.
      void this.refresh();
    };
    this.watch
      .watch(
        `/api/v1/namespaces/${namespace}/secrets`,
        { fieldSelector: `metadata.name=${name}` },
        (phase, secret: V1Secret) => {
          this.backoffMs = 500;
          if (phase === "ADDED" || phase === "MODIFIED") this.options.onSecret(secret);
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
