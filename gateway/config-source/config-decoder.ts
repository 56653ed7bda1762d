/**
 * Assembles a gateway config with decodeGatewayConfig in a worker thread, so
 * a large config (100,000 keys) does not stall requests while it is decoded
 * and validated. Errors come back as the codec's: ConfigNotReadyError while
 * buckets do not match, InvalidConfigError for anything malformed. If the
 * worker cannot run, decoding happens inline rather than not at all.
 */
import { Worker } from "node:worker_threads";
import { ConfigNotReadyError, type CorePart, decodeGatewayConfig, type GatewayConfig } from "../../crds/api/index.ts";

export class InvalidConfigError extends Error {
  readonly code = "INVALID_CONFIG";
}

interface Reply {
  id: number;
  config?: GatewayConfig;
  error?: { notReady: boolean; message: string };
}

export class ConfigDecoder {
  private worker: Worker | undefined;
  private broken = false;
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (c: GatewayConfig) => void; reject: (e: Error) => void }>();

  decode(core: CorePart, buckets: (Uint8Array | undefined)[]): Promise<GatewayConfig> {
    const worker = this.workerOrUndefined();
    if (!worker) return Promise.resolve().then(() => decodeInline(core, buckets));
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, core, buckets });
    });
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    this.broken = true;
    if (worker) await worker.terminate();
  }

  private workerOrUndefined(): Worker | undefined {
    if (this.worker || this.broken) return this.worker;
    try {
      const worker = new Worker(new URL("./decode-worker.ts", import.meta.url));
      worker.unref();
      worker.on("message", (reply: Reply) => {
        const waiting = this.pending.get(reply.id);
        if (!waiting) return;
        this.pending.delete(reply.id);
        if (reply.config) waiting.resolve(reply.config);
        else if (reply.error?.notReady) waiting.reject(new ConfigNotReadyError(reply.error.message));
        else waiting.reject(new InvalidConfigError(reply.error?.message ?? "invalid config"));
      });
      worker.on("error", (err) => this.fail(err));
      worker.on("exit", () => this.fail(new Error("config decoder worker exited")));
      this.worker = worker;
    } catch {
      this.broken = true;
    }
    return this.worker;
  }

  /** The worker died: fail what it held, and decode inline from now on. */
  private fail(err: Error): void {
    this.worker = undefined;
    this.broken = true;
    for (const waiting of this.pending.values()) waiting.reject(err);
    this.pending.clear();
  }
}

function decodeInline(core: CorePart, buckets: (Uint8Array | undefined)[]): GatewayConfig {
  try {
    return decodeGatewayConfig(core, buckets);
  } catch (err) {
    if (err instanceof ConfigNotReadyError) throw err;
    throw new InvalidConfigError(err instanceof Error ? err.message : String(err));
  }
}
