/**
 * The form in which a decoded config part crosses from the decoder worker to
 * the event loop: its lists cut into short JSON strings. A structured-clone
 * reply is deserialized in one go before any code sees it (1,000 models or
 * 1,600 keys: about 2 ms of the event loop in one slice); strings cost a copy,
 * and the event loop then parses one chunk per turn (config-decoder.ts). The
 * strings were written from the validated part, so parsing them needs no
 * second validation, and equal strings stand for equal content: a chunk of
 * models the previous core already held is taken over without parsing.
 */
import { type CorePart, decodeCorePart, decodeKeyBucket } from "../../crds/api/index.ts";

/** Models per chunk: about 30 KB of JSON, a tenth of a millisecond to parse. */
export const MODELS_PER_CHUNK = 100;
/** Keys per chunk: about 50 KB of JSON. */
export const KEYS_PER_CHUNK = 250;

export interface CoreChunks {
  version: number;
  generatedAt: string;
  buckets: string[];
  /** JSON of the policies (one string: a few dozen of them). */
  policies: string;
  /** JSON arrays of at most MODELS_PER_CHUNK models, in order. */
  models: string[];
}

/** JSON arrays of at most KEYS_PER_CHUNK keys, in order. */
export type KeyChunks = string[];

function chunked(items: readonly unknown[], size: number): string[] {
  const chunks: string[] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(JSON.stringify(items.slice(i, i + size)));
  return chunks;
}

/** Decode and validate a core part (throws on anything malformed), cut into chunks. */
export function coreChunksOf(bytes: Uint8Array): CoreChunks {
  const core: CorePart = decodeCorePart(bytes);
  return {
    version: core.version,
    generatedAt: core.generatedAt,
    buckets: core.buckets,
    policies: JSON.stringify(core.policies),
    models: chunked(core.models, MODELS_PER_CHUNK),
  };
}

/** Decode and validate a key bucket (throws on anything malformed), cut into chunks. */
export function keyChunksOf(bucket: number, bytes: Uint8Array): KeyChunks {
  return chunked(decodeKeyBucket(bucket, bytes), KEYS_PER_CHUNK);
}
