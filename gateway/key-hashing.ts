/**
 * The hashing keys of API keys (crds/api/key-hashing.ts), followed from the
 * Secret pomona-key-hashing in the system namespace: watched by name (the
 * gateway's Role names it), read again now and then in case a watch missed a
 * change. A malformed Secret is refused and the keys in use are kept.
 */
import type { KubeConfig, V1Secret } from "@kubernetes/client-node";
import type { FastifyBaseLogger } from "fastify";
import { type HashingKeys, keyHashingSecret, parseHashingKeys } from "../crds/api/index.ts";
import { NamedSecretWatch } from "./config-source/named-secret-watch.ts";

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
  private readonly options: HashingKeysWatcherOptions;
  private readonly secret: NamedSecretWatch;

  constructor(options: HashingKeysWatcherOptions) {
    this.options = options;
    this.secret = new NamedSecretWatch({
      kubeConfig: options.kubeConfig,
      namespace: options.namespace,
      name: keyHashingSecret,
      log: options.log,
      resyncMs: options.resyncMs,
      onSecret: (secret) => this.take(secret),
      onMissing: () =>
        options.log.warn({ secret: keyHashingSecret }, "API key hashing secret missing; keeping the keys in use"),
    });
  }

  start(): void {
    this.secret.start();
  }

  stop(): void {
    this.secret.stop();
  }

  /** Read the Secret now. */
  refresh(): Promise<void> {
    return this.secret.refresh();
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
}
