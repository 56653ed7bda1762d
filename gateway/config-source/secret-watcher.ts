/**
 * Follows the gateway config the operator publishes in Secrets
 * (crds/api/gateway-config-codec.ts): watches the core Secret, reads only the
 * key buckets whose sha256 differs from those of the table in use, builds the
 * next table from the one in use (config-assembler.ts: a one-key change
 * rebuilds one bucket) and installs it in the holder. A core
 * whose buckets are not all written yet is read again shortly; an invalid
 * config is refused, counted and logged, and the last good one stays.
 */
import { createHash } from "node:crypto";
import type { KubeConfig, V1Secret } from "@kubernetes/client-node";
import type { FastifyBaseLogger } from "fastify";
import {
  bucketSecretName,
  CONFIG_DATA_KEY,
  ConfigNotReadyError,
  type CorePart,
  coreSecretName,
  KEY_BUCKETS,
} from "../../crds/api/index.ts";
import { KubeApiError, KubeRest, secretsPath } from "../../kube/rest.ts";
import type { GatewayMetrics } from "../metrics.ts";
import { assembleRouteTable, bucketsToRead } from "./config-assembler.ts";
import { ConfigDecoder, InvalidConfigError } from "./config-decoder.ts";
import type { ConfigHolder } from "./config-holder.ts";
import { NamedSecretWatch } from "./named-secret-watch.ts";

export interface SecretWatcherOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  holder: ConfigHolder;
  log: FastifyBaseLogger;
  metrics: GatewayMetrics;
  /** Pause before reading again while buckets do not match the core yet. */
  notReadyRetryMs?: number;
  /** Read the core again this often even without a watch event. */
  resyncMs?: number;
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

export class GatewayConfigWatcher {
  private readonly rest: KubeRest;
  private readonly coreWatch: NamedSecretWatch;
  private readonly decoder = new ConfigDecoder();
  private readonly options: SecretWatcherOptions;
  /** Bucket bytes by their sha256, read for a config not applied yet (its other buckets were not written yet). */
  private buckets = new Map<string, Buffer>();
  private stopped = false;
  private loading: Promise<void> | undefined;
  private loadAgain = false;
  private timers = new Set<NodeJS.Timeout>();
  private readBackoffMs = 1_000;
  /** The last core refused, so the same invalid bytes are not reported on every resync. */
  private refusedCoreSha: string | undefined;
  /** The core in use, so a resync that finds it unchanged costs one read and no decoding. */
  private appliedCoreSha: string | undefined;

  constructor(options: SecretWatcherOptions) {
    this.options = options;
    this.rest = new KubeRest(options.kubeConfig);
    // The core names the buckets, so a new core is the one change to follow; every version seen
    // (and the one in use, again every resyncMs) is read in full, and an unchanged one costs no decoding.
    this.coreWatch = new NamedSecretWatch({
      kubeConfig: options.kubeConfig,
      namespace: options.namespace,
      name: coreSecretName,
      log: options.log,
      resyncMs: options.resyncMs ?? 30_000,
      onSecret: () => void this.refresh(),
    });
  }

  start(): void {
    this.coreWatch.start();
  }

  stop(): void {
    this.stopped = true;
    this.coreWatch.stop();
    void this.decoder.close();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  /** Read the published config now; concurrent calls collapse into one more read. */
  refresh(): Promise<void> {
    if (this.loading) {
      this.loadAgain = true;
      return this.loading;
    }
    this.loading = (async () => {
      do {
        this.loadAgain = false;
        await this.loadOnce();
      } while (this.loadAgain && !this.stopped);
    })().finally(() => {
      this.loading = undefined;
    });
    return this.loading;
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

  private async readSecretData(name: string): Promise<Buffer | undefined> {
    try {
      const secret = await this.rest.get<V1Secret>(`${secretsPath(this.options.namespace)}/${name}`);
      const data = secret.data?.[CONFIG_DATA_KEY];
      return data === undefined ? undefined : Buffer.from(data, "base64");
    } catch (err) {
      if (err instanceof KubeApiError && err.code === 404) return undefined;
      throw err;
    }
  }

  private async loadOnce(): Promise<void> {
    const { holder, log, metrics } = this.options;
    let coreBytes: Buffer | undefined;
    try {
      coreBytes = await this.readSecretData(coreSecretName);
    } catch (err) {
      log.warn({ err: String(err) }, "cannot read the gateway config; keeping the one in use");
      // The API server may be away for a while: keep trying, more slowly each time.
      this.later(this.readBackoffMs, () => void this.refresh());
      this.readBackoffMs = Math.min(this.readBackoffMs * 2, 30_000);
      return;
    }
    this.readBackoffMs = 1_000;
    if (!coreBytes) return;
    const coreSha = sha256(coreBytes);
    // Nothing new (a resync, or a watch event for a core already applied or refused): no decoding at all.
    if (coreSha === this.refusedCoreSha || coreSha === this.appliedCoreSha) return;
    let core: CorePart;
    try {
      core = await this.decoder.decodeCore(coreBytes);
    } catch (err) {
      if (err instanceof InvalidConfigError) this.refuse(coreSha, err);
      else this.decoderFailed(err);
      return;
    }
    if (core.version <= holder.version) return;

    // Only the buckets the table in use does not hold are read (or taken from the cache) and decoded.
    const wanted = bucketsToRead(holder.current, core);
    const read = new Map<number, Buffer | undefined>();
    try {
      await Promise.all(
        wanted.map(async (i) => {
          const expected = core.buckets[i] ?? "";
          let bytes = this.buckets.get(expected);
          if (!bytes) {
            bytes = await this.readSecretData(bucketSecretName(i));
            metrics.configBucketReads.inc();
            // Bounded: a core that never becomes complete cannot make the cache grow without end.
            if (this.buckets.size >= 2 * KEY_BUCKETS) this.buckets.clear();
            if (bytes) this.buckets.set(sha256(bytes), bytes);
          }
          read.set(i, bytes);
        }),
      );
    } catch (err) {
      // The API server could not be read: not the config's fault, so try again later.
      log.warn({ err: String(err) }, "cannot read the gateway config buckets; keeping the one in use");
      this.later(1_000, () => void this.refresh());
      return;
    }
    let assembled: Awaited<ReturnType<typeof assembleRouteTable>>;
    try {
      assembled = await assembleRouteTable(holder.current, core, read, this.decoder);
    } catch (err) {
      if (err instanceof ConfigNotReadyError) {
        log.debug({ version: core.version }, "gateway config buckets not written yet; reading again shortly");
        this.later(this.options.notReadyRetryMs ?? 250, () => void this.refresh());
        return;
      }
      if (err instanceof InvalidConfigError) this.refuse(coreSha, err);
      else this.decoderFailed(err);
      return;
    }
    // A newer config may have been applied while this one was assembled.
    if (assembled.table.version <= holder.version) return;
    // Bucket bytes are kept only until they are built into a table, and never more than one config's worth.
    this.buckets.clear();
    if (holder.install(assembled.table) === "applied") {
      this.appliedCoreSha = coreSha;
      metrics.configVersion.set(core.version);
      metrics.configBucketsApplied.inc(assembled.rebuilt);
      log.info(
        {
          version: core.version,
          models: core.models.length,
          keys: assembled.table.keyCount,
          bucketsRebuilt: assembled.rebuilt,
        },
        "gateway config in use",
      );
    }
  }

  /** The decoder itself failed (its worker died): not the config's fault, so try again. */
  private decoderFailed(err: unknown): void {
    this.options.log.warn({ err: String(err) }, "cannot decode the gateway config now; trying again");
    this.later(1_000, () => void this.refresh());
  }

  private refuse(coreSha: string, err: unknown): void {
    this.refusedCoreSha = coreSha;
    this.options.metrics.configRejected.inc();
    this.options.log.error(
      { err: err instanceof Error ? err.message.slice(0, 2000) : String(err), inUse: this.options.holder.version },
      "refused an invalid gateway config; keeping the last good one",
    );
  }
}
