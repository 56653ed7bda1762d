/**
 * Follows one Secret by name, the way the gateway's Role allows (get and watch by name only): the shared
 * list/watch loop (kube/list-watch.ts) with a get by name in place of the list and a field selector on
 * the watch, so resume from resourceVersion, relist on 410 Gone and backoff with jitter are the ones every
 * component uses. Each version seen goes to `onSecret` (again every `resyncMs`); a missing or deleted
 * Secret to `onMissing`.
 */
import type { KubeConfig, V1Secret } from "@kubernetes/client-node";
import type { FastifyBaseLogger } from "fastify";
import { type ListResult, ListWatch } from "../../kube/list-watch.ts";
import { KubeApiError, KubeRest, secretsPath } from "../../kube/rest.ts";

export interface NamedSecretWatchOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  name: string;
  log: FastifyBaseLogger;
  onSecret: (secret: V1Secret) => void;
  onMissing?: () => void;
  /** Hand the Secret to `onSecret` again this often even without a watch event. */
  resyncMs?: number;
}

export class NamedSecretWatch {
  private readonly rest: KubeRest;
  private readonly options: NamedSecretWatchOptions;
  private readonly listWatch: ListWatch<V1Secret>;

  constructor(options: NamedSecretWatchOptions) {
    this.options = options;
    this.rest = new KubeRest(options.kubeConfig);
    const { name, namespace, log } = options;
    this.listWatch = new ListWatch<V1Secret>({
      kubeConfig: options.kubeConfig,
      path: `/api/v1/namespaces/${namespace}/secrets`,
      fieldSelector: `metadata.name=${name}`,
      list: () => this.get(),
      resyncMs: options.resyncMs ?? 30_000,
      log: (level, message, fields) => log[level]({ secret: name, ...fields }, `Secret watch: ${message}`),
    });
    this.listWatch.on((type, secret) => {
      if (type === "deleted") options.onMissing?.();
      else options.onSecret(secret);
    });
    this.listWatch.onSynced((items) => {
      if (items.length === 0) options.onMissing?.();
    });
  }

  start(): void {
    this.listWatch.start();
  }

  stop(): void {
    this.listWatch.stop();
  }

  /** Read the Secret now and hand it on, whatever the watch has seen. */
  async refresh(): Promise<void> {
    const { name, log } = this.options;
    try {
      const { items } = await this.get();
      if (items[0]) this.options.onSecret(items[0]);
      else this.options.onMissing?.();
    } catch (err) {
      log.warn({ secret: name, err: String(err) }, "cannot read a Secret the gateway follows; keeping what it has");
    }
  }

  /**
   * The "list" of one Secret: a get. The watch after it starts at the newest state (no resourceVersion),
   * not at the Secret's own resourceVersion: that is the version of its last change, which may be days
   * old and so older than the server keeps, and a watch from it would be answered 410 Gone after every
   * get. From the newest state the server first sends the Secret as it is now (ADDED, handed on only if
   * it differs from what the get returned), then its changes.
   */
  private async get(): Promise<ListResult<V1Secret>> {
    const { name, namespace } = this.options;
    try {
      const secret = await this.rest.get<V1Secret>(`${secretsPath(namespace)}/${name}`);
      return { items: [secret], resourceVersion: undefined };
    } catch (err) {
      // Missing: the watch starts at the newest state and sends the Secret as ADDED when it appears.
      if (err instanceof KubeApiError && err.code === 404) return { items: [], resourceVersion: undefined };
      throw err;
    }
  }
}
