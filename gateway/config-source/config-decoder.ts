/**
 * Decodes the stored parts of the gateway config (the core, one key bucket)
 * in a worker thread, so a large config (100,000 keys) does not stall requests
 * while it is decoded and validated. Anything malformed comes back as an
 * InvalidConfigError. If the worker cannot run, decoding happens inline rather
 * than not at all.
 */
import { Worker } from "node:worker_threads";
import { type CorePart, decodeCorePart, decodeKeyBucket, type GatewayKey } from "../../crds/api/index.ts";
import type { DecodeRequest } from "./decode-worker.ts";

export class InvalidConfigError extends Error {
  readonly code = "INVALID_CONFIG";
}

interface Reply {
  id: number;
  value?: unknown;
  error?: string;
}

type Part = { part: "core" } | { part: "bucket"; bucket: number };

export class ConfigDecoder {
  private worker: Worker | undefined;
  private broken = false;
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  decodeCore(bytes: Uint8Array): Promise<CorePart> {
    return this.decode(bytes, { part: "core" }) as Promise<CorePart>;
  }

  decodeBucket(bucket: number, bytes: Uint8Array): Promise<GatewayKey[]> {
    return this.decode(bytes, { part: "bucket", bucket }) as Promise<GatewayKey[]>;
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    this.broken = true;
    if (worker) await worker.terminate();
  }

  private decode(bytes: Uint8Array, part: Part): Promise<unknown> {
    const worker = this.workerOrUndefined();
    if (!worker) return Promise.resolve().then(() => decodeInline(bytes, part));
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, bytes, ...part } satisfies DecodeRequest);
    });
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
        if (reply.error === undefined) waiting.resolve(reply.value);
        else waiting.reject(new InvalidConfigError(reply.error));
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

function decodeInline(bytes: Uint8Array, part: Part): unknown {
  try {
    return part.part === "core" ? decodeCorePart(bytes) : decodeKeyBucket(part.bucket, bytes);
  } catch (err) {
    throw new InvalidConfigError(err instanceof Error ? err.message : String(err));
  }
}
