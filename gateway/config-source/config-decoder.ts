/**
 * Decodes the stored parts of the gateway config (the core, one key bucket)
 * in a worker thread, so a large config (100,000 keys) does not stall requests
 * while it is decoded and validated. The worker answers in chunks of JSON
 * (part-chunks.ts), parsed here one per turn of the event loop, so no slice of
 * a change holds requests up for more than a fraction of a millisecond; the
 * chunks of models the previous core already held are taken over as they were
 * parsed then (a one-key change parses no model, a one-model change one chunk).
 * Anything malformed comes back as an InvalidConfigError. If the worker cannot
 * run, decoding happens inline rather than not at all.
 */
import { Worker } from "node:worker_threads";
import type { CorePart, GatewayKey, GatewayModel, GatewayPolicy } from "../../crds/api/index.ts";
import type { DecodeRequest } from "./decode-worker.ts";
import { nextTurn } from "./next-turn.ts";
import { type CoreChunks, coreChunksOf, type KeyChunks, keyChunksOf } from "./part-chunks.ts";

export class InvalidConfigError extends Error {
  readonly code = "INVALID_CONFIG";
}

interface Reply {
  id: number;
  value?: unknown;
  error?: string;
}

type Part = { part: "core" } | { part: "bucket"; bucket: number };

/** The models and policies of the last core decoded, with the JSON they were parsed from. */
interface ParsedCore {
  policiesJson: string;
  policies: GatewayPolicy[];
  modelChunks: string[];
  modelsByChunk: GatewayModel[][];
  models: GatewayModel[];
}

export class ConfigDecoder {
  private worker: Worker | undefined;
  private broken = false;
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** One core's worth: what the next core can take over where its JSON is the same. */
  private last: ParsedCore | undefined;

  /**
   * The core part. Its `models` and `policies` are the very arrays of the previous core when their JSON did
   * not change (route-table.ts then keeps its model lookups), and are shared, so never modified.
   */
  async decodeCore(bytes: Uint8Array): Promise<CorePart> {
    const chunks = (await this.decode(bytes, { part: "core" })) as CoreChunks;
    const last = this.last;
    const modelsByChunk: GatewayModel[][] = [];
    for (const [i, json] of chunks.models.entries()) {
      const known = last?.modelChunks[i] === json ? last.modelsByChunk[i] : undefined;
      if (known) {
        modelsByChunk.push(known);
        continue;
      }
      await nextTurn();
      modelsByChunk.push(JSON.parse(json) as GatewayModel[]);
    }
    const sameModels =
      last !== undefined &&
      last.modelChunks.length === chunks.models.length &&
      modelsByChunk.every((c, i) => c === last.modelsByChunk[i]);
    const models = sameModels ? last.models : modelsByChunk.flat();
    const policies =
      last?.policiesJson === chunks.policies ? last.policies : (JSON.parse(chunks.policies) as GatewayPolicy[]);
    this.last = { policiesJson: chunks.policies, policies, modelChunks: chunks.models, modelsByChunk, models };
    return { version: chunks.version, generatedAt: chunks.generatedAt, models, policies, buckets: chunks.buckets };
  }

  /** One key bucket's keys, parsed a chunk per turn of the event loop. */
  async decodeBucket(bucket: number, bytes: Uint8Array): Promise<GatewayKey[]> {
    const chunks = (await this.decode(bytes, { part: "bucket", bucket })) as KeyChunks;
    const keys: GatewayKey[] = [];
    for (const json of chunks) {
      await nextTurn();
      for (const key of JSON.parse(json) as GatewayKey[]) keys.push(key);
    }
    return keys;
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
    return part.part === "core" ? coreChunksOf(bytes) : keyChunksOf(part.bucket, bytes);
  } catch (err) {
    throw new InvalidConfigError(err instanceof Error ? err.message : String(err));
  }
}
