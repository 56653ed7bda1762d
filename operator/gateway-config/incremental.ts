/**
 * Compiles the gateway config into its stored parts, redoing only what changed
 * since the last compilation. Measured at 100,000 keys, a full compile, its
 * validation and the gzip of every bucket took about 0.2 s + 0.1–0.4 s +
 * 0.5 s for a one-key change; here a key is compiled and validated once per
 * version of its ApiKey object, and a bucket is sorted and gzipped again only
 * when the set of keys in it changed. The per-change cost left is one pass
 * over the keys doing map lookups, and the models and policies (about 1,000),
 * which are small. The output is byte for byte what `encodeGatewayConfig` of
 * the full compilation gives (test/gateway-config-delta.test.ts).
 */
import {
  type ApiKey,
  bucketOfHash,
  type CorePart,
  encodeKeyBucket,
  type GatewayKey,
  gatewayConfig,
  gatewayKey,
  KEY_BUCKETS,
} from "../../crds/api/index.ts";
import type { Logger } from "../runtime/log.ts";
import {
  compileGatewayConfig,
  compileKey,
  expiresAtMsOf,
  type GatewayConfigInputs,
  keyServes,
  policyNamesOf,
} from "./compile.ts";

interface CompiledKey {
  /** The ApiKey's resourceVersion it was compiled from: an object changed in place is compiled again. */
  resourceVersion: string | undefined;
  key: GatewayKey | undefined;
  bucket: number;
  expiresAtMs: number | undefined;
}

interface StoredBucket {
  members: ReadonlySet<GatewayKey>;
  bytes: Buffer;
  sha256: string;
}

export interface CompiledParts {
  /** The core part but for its version and time, which publication adds. */
  core: Omit<CorePart, "version" | "generatedAt">;
  buckets: readonly { bytes: Buffer; sha256: string }[];
  /** Equal for equal configs: what the loop compares to skip a publication. */
  fingerprint: string;
}

export class GatewayConfigCompiler {
  private readonly compiled = new WeakMap<ApiKey, CompiledKey>();
  private stored: StoredBucket[] = [];
  private readonly log: Logger | undefined;

  constructor(log?: Logger) {
    this.log = log;
  }

  compile(inputs: GatewayConfigInputs): CompiledParts {
    const compiled = compileGatewayConfig({ ...inputs, keys: [] });
    // Validated as the gateway will validate them; an invalid model or policy stops the publication.
    const models = gatewayConfig.shape.models.parse(compiled.models);
    const policies = gatewayConfig.shape.policies.parse(compiled.policies);

    const policyNames = policyNamesOf(inputs.policies);
    const now = inputs.now.getTime();
    const byBucket: GatewayKey[][] = Array.from({ length: KEY_BUCKETS }, () => []);
    for (const k of inputs.keys) {
      const c = this.compiledKey(k);
      if (c.key && keyServes(c.key, c.expiresAtMs, policyNames, now)) byBucket[c.bucket]?.push(c.key);
    }
    this.stored = byBucket.map((keys, i) => {
      const before = this.stored[i];
      if (before && before.members.size === keys.length && keys.every((k) => before.members.has(k))) return before;
      keys.sort((a, b) => (a.hash < b.hash ? -1 : 1));
      return { members: new Set(keys), ...encodeKeyBucket(keys) };
    });
    const core = { models, policies, buckets: this.stored.map((b) => b.sha256) };
    return { core, buckets: this.stored, fingerprint: JSON.stringify(core) };
  }

  private compiledKey(k: ApiKey): CompiledKey {
    const resourceVersion = k.metadata.resourceVersion;
    const known = this.compiled.get(k);
    if (known && known.resourceVersion === resourceVersion) return known;
    let key = compileKey(k);
    if (key) {
      const valid = gatewayKey.safeParse(key);
      if (valid.success) key = valid.data;
      else {
        // One malformed key must not hold back every other change (a revocation among them): it is left out.
        this.log?.warn("ApiKey left out of the gateway config: invalid entry", {
          namespace: k.metadata.namespace,
          name: k.metadata.name,
          error: valid.error.issues[0]?.message,
        });
        key = undefined;
      }
    }
    const c: CompiledKey = {
      resourceVersion,
      key,
      bucket: key ? bucketOfHash(key.hash) : 0,
      expiresAtMs: key ? expiresAtMsOf(key) : undefined,
    };
    this.compiled.set(k, c);
    return c;
  }
}
