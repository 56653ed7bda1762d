/**
 * How the gateway config is stored in the cluster. One object may hold at most
 * 1 MiB, and 100,000 keys are far more, so the config is cut into parts kept in
 * Secrets with fixed names (so RBAC can name them): keys go to one of
 * `KEY_BUCKETS` buckets by their hash, everything else to the core part. The
 * core part also holds the sha256 of every bucket, so a gateway knows when it
 * has read a consistent set. Each part is gzipped JSON. The operator writes the
 * buckets first and the core last; a gateway reads the core, then the buckets,
 * and retries while a bucket's hash does not match yet.
 */
import { createHash } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { z } from "zod";
import { type GatewayConfig, gatewayConfig, gatewayKey, gatewayModel, gatewayPolicy } from "./gateway-config.ts";

export const KEY_BUCKETS = 64;
export const CONFIG_DATA_KEY = "config.json.gz";
export const coreSecretName = "pomona-gateway-config";
export const bucketSecretName = (bucket: number) => `pomona-gateway-config-keys-${bucket.toString().padStart(2, "0")}`;
export const allConfigSecretNames = (): string[] => [
  coreSecretName,
  ...Array.from({ length: KEY_BUCKETS }, (_, i) => bucketSecretName(i)),
];

export const bucketOfHash = (hash: string) => Number.parseInt(hash.slice(0, 4), 16) % KEY_BUCKETS;

export const corePart = z.object({
  version: gatewayConfig.shape.version,
  generatedAt: gatewayConfig.shape.generatedAt,
  models: z.array(gatewayModel),
  policies: z.array(gatewayPolicy),
  /** sha256 (hex) of each bucket's stored bytes, by bucket index. */
  buckets: z.array(z.string().regex(/^[a-f0-9]{64}$/)).length(KEY_BUCKETS),
});
const bucketPart = z.object({ keys: z.array(gatewayKey) });
export type CorePart = z.infer<typeof corePart>;

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const pack = (value: unknown) => gzipSync(JSON.stringify(value), { level: 6 });

export interface EncodedConfig {
  core: Buffer;
  /** Stored bytes of each bucket, by index, and their sha256. */
  buckets: { bytes: Buffer; sha256: string }[];
}

/** One key bucket's stored bytes; `keys` should already be in the bucket (bucketOfHash) and sorted by hash. */
export function encodeKeyBucket(keys: readonly GatewayConfig["keys"][number][]): { bytes: Buffer; sha256: string } {
  const bytes = pack({ keys });
  return { bytes, sha256: sha256(bytes) };
}

/** The core part's stored bytes. */
export function encodeCorePart(core: CorePart): Buffer {
  return pack(core);
}

/** Cut a config into its stored parts. */
export function encodeGatewayConfig(config: GatewayConfig): EncodedConfig {
  const keysByBucket: GatewayConfig["keys"][] = Array.from({ length: KEY_BUCKETS }, () => []);
  for (const key of config.keys) keysByBucket[bucketOfHash(key.hash)]?.push(key);
  const buckets = keysByBucket.map((keys) => encodeKeyBucket(keys));
  const core: CorePart = {
    version: config.version,
    generatedAt: config.generatedAt,
    models: config.models,
    policies: config.policies,
    buckets: buckets.map((b) => b.sha256),
  };
  return { core: encodeCorePart(core), buckets };
}

export class ConfigNotReadyError extends Error {
  readonly code = "CONFIG_NOT_READY";
}

/** Read the core part; its bucket hashes say which bucket contents belong to it. */
export function decodeCorePart(bytes: Uint8Array): CorePart {
  return corePart.parse(JSON.parse(gunzipSync(bytes).toString("utf8")));
}

/** sha256 (hex) of a part's stored bytes, as the core lists them. */
export const partSha256 = sha256;

/**
 * Read one key bucket on its own, as a gateway applying only the buckets that
 * changed does. Every key must belong to this bucket (by its hash), or a
 * lookup by hash could never find it; anything malformed throws.
 */
export function decodeKeyBucket(bucket: number, bytes: Uint8Array): GatewayConfig["keys"] {
  const { keys } = bucketPart.parse(JSON.parse(gunzipSync(bytes).toString("utf8")));
  for (const key of keys) {
    if (bucketOfHash(key.hash) !== bucket)
      throw new Error(`key bucket ${bucket} holds a key of bucket ${bucketOfHash(key.hash)}`);
  }
  return keys;
}

/**
 * Assemble a config from its core and the buckets read for it. A bucket whose
 * hash differs from the core's was written for another version: the reader
 * should read again shortly (ConfigNotReadyError). Anything malformed throws.
 */
export function decodeGatewayConfig(core: CorePart, buckets: (Uint8Array | undefined)[]): GatewayConfig {
  const keys: GatewayConfig["keys"] = [];
  core.buckets.forEach((expected, i) => {
    const bytes = buckets[i];
    if (!bytes || sha256(bytes) !== expected) {
      throw new ConfigNotReadyError(`key bucket ${i} does not match config version ${core.version} yet`);
    }
    keys.push(...decodeKeyBucket(i, bytes));
  });
  return gatewayConfig.parse({
    version: core.version,
    generatedAt: core.generatedAt,
    models: core.models,
    policies: core.policies,
    keys,
  });
}
