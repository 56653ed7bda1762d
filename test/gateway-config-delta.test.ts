// A config change travels as a delta: the operator re-encodes only the key buckets whose keys changed, and the
// gateway rebuilds only the buckets whose sha256 changed, taking over the others from the table in use. Both must
// give exactly what the full path gives, whatever the change: property tests over random configs and one change
// (a key added, removed or changed, a model changed), and over several changes of which the gateway saw only the
// last (a resync after missed events). The gateway side runs the real worker decoder.
import { createHash } from "node:crypto";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import {
  type ApiKey,
  bucketOfHash,
  decodeCorePart,
  decodeGatewayConfig,
  type EncodedConfig,
  encodeCorePart,
  encodeGatewayConfig,
  type GatewayConfig,
  type GatewayKey,
  type GatewayModel,
  gatewayConfig,
  type InferenceModel,
  type RateLimitPolicy,
} from "../crds/api/index.ts";
import { assembleRouteTable, bucketsToRead } from "../gateway/config-source/config-assembler.ts";
import { ConfigDecoder } from "../gateway/config-source/config-decoder.ts";
import { MODELS_PER_CHUNK } from "../gateway/config-source/part-chunks.ts";
import { keyMayUse, RouteTable } from "../gateway/config-source/route-table.ts";
import { compileGatewayConfig } from "../operator/gateway-config/compile.ts";
import { GatewayConfigCompiler } from "../operator/gateway-config/incremental.ts";

const decoder = new ConfigDecoder();
afterAll(() => decoder.close());

const hashOf = (i: number) => createHash("sha256").update(`sk-${i}`).digest("hex");
const namespaces = ["a", "b"];
// Model names and aliases drawn from one small pool, so aliases collide with names and with each other.
const names = ["m0", "m1", "m2", "m3", "x", "y"];

const arbModel = (namespace: string, name: string): fc.Arbitrary<GatewayModel> =>
  fc.record({
    namespace: fc.constant(namespace),
    name: fc.constant(name),
    aliases: fc.uniqueArray(fc.constantFrom(...names), { maxLength: 3 }),
    endpoints: fc.array(
      fc.record({
        url: fc.constantFrom("http://10.0.0.1:8090/r/1", "http://10.0.0.2:8090/r/2"),
        replica: fc.constantFrom("r1", "r2"),
        node: fc.constantFrom("n1", "n2"),
        weight: fc.constantFrom(1, 20),
        slots: fc.constantFrom(1, 4),
      }),
      { maxLength: 2 },
    ),
    fallbacks: fc.uniqueArray(fc.constantFrom(...names), { maxLength: 2 }),
    embeddings: fc.boolean(),
    contextSize: fc.constantFrom(512, 4096),
    sequenceContextSize: fc.constantFrom(128, 512),
  });

const arbKey = (i: number): fc.Arbitrary<GatewayKey> =>
  fc
    .record({
      namespace: fc.constantFrom(...namespaces),
      owner: fc.constantFrom("o1", "o2"),
      models: fc.option(fc.uniqueArray(fc.constantFrom(...names, "nothing"), { maxLength: 3 }), { nil: undefined }),
      rateLimitPolicy: fc.option(fc.constant("standard"), { nil: undefined }),
      expiresAt: fc.option(fc.constantFrom("2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"), { nil: undefined }),
    })
    .map((k) => {
      const key: GatewayKey = { hash: hashOf(i), namespace: k.namespace, name: `key-${i}`, owner: k.owner };
      if (k.models) key.models = k.models;
      if (k.rateLimitPolicy) key.rateLimitPolicy = k.rateLimitPolicy;
      if (k.expiresAt) key.expiresAt = k.expiresAt;
      return key;
    });

const arbModels: fc.Arbitrary<GatewayModel[]> = fc
  .tuple(...namespaces.flatMap((ns) => names.slice(0, 4).map((n) => fc.option(arbModel(ns, n), { nil: undefined }))))
  .map((ms) => ms.filter((m) => m !== undefined));

const arbConfig: fc.Arbitrary<GatewayConfig> = fc
  .tuple(
    arbModels,
    fc.uniqueArray(fc.nat(200), { maxLength: 60 }).chain((ids) => fc.tuple(...ids.map(arbKey))),
  )
  .map(([models, keys]) => ({
    version: 1,
    generatedAt: "2026-01-01T00:00:00.000Z",
    models,
    keys,
    policies: namespaces.map((ns) => ({ namespace: ns, name: "standard", requestsPerMinute: 60, scope: "PerKey" })),
  }));

type Change = (c: GatewayConfig) => fc.Arbitrary<GatewayConfig>;
const addKey: Change = (c) =>
  fc.integer({ min: 201, max: 400 }).chain((i) => arbKey(i).map((k) => ({ ...c, keys: [...c.keys, k] })));
const removeKey: Change = (c) =>
  fc.nat(Math.max(0, c.keys.length - 1)).map((i) => ({ ...c, keys: c.keys.filter((_, j) => j !== i) }));
const changeKey: Change = (c) =>
  c.keys.length === 0
    ? addKey(c)
    : fc.nat(c.keys.length - 1).chain((i) => {
        const old = c.keys[i]!;
        return arbKey(Number.parseInt(old.name.slice(4), 10)).map((k) => ({
          ...c,
          keys: c.keys.map((x, j) => (j === i ? k : x)),
        }));
      });
const changeModel: Change = (c) =>
  fc
    .tuple(fc.constantFrom(...namespaces), fc.constantFrom(...names.slice(0, 4)))
    .chain(([ns, name]) => fc.option(arbModel(ns, name), { nil: undefined }).map((m) => ({ ns, name, m })))
    .map(({ ns, name, m }) => ({
      ...c,
      models: [...c.models.filter((x) => !(x.namespace === ns && x.name === name)), ...(m ? [m] : [])],
    }));
const arbChange = fc.constantFrom(
  ["add key", addKey],
  ["remove key", removeKey],
  ["change key", changeKey],
  ["change model", changeModel],
) as fc.Arbitrary<[string, Change]>;

/** Everything a request can observe of a table, as plain data. */
function observe(table: RouteTable, config: GatewayConfig, extraHashes: string[]) {
  const hashes = [...new Set([...config.keys.map((k) => k.hash), ...extraHashes])].sort();
  const keys = hashes.map((h) => {
    const r = table.keyByHash(h);
    if (!r) return [h, null];
    const mayUse = namespaces.flatMap((ns) => table.modelsOf(ns).map((m) => `${m.name}:${keyMayUse(table, r, m)}`));
    return [h, r.key, r.allowed ? [...r.allowed].sort() : null, r.expiresAtMs ?? null, mayUse];
  });
  const resolution = namespaces.flatMap((ns) =>
    [...names, "nothing"].map((n) => `${ns}/${n}->${table.resolveModel(ns, n)?.name ?? "-"}`),
  );
  return {
    version: table.version,
    generatedAt: table.generatedAt,
    models: table.models,
    policies: namespaces.map((ns) => table.policy(ns, "standard") ?? null),
    keyCount: table.keyCount,
    keys,
    resolution,
  };
}

const bytesOf = (encoded: EncodedConfig) => new Map(encoded.buckets.map((b, i) => [i, b.bytes] as const));

/** What the watcher does with a newly published config: read only the buckets the table lacks, build from it. */
async function applyDelta(current: RouteTable | undefined, encoded: EncodedConfig) {
  const core = await decoder.decodeCore(encoded.core);
  const wanted = new Set(bucketsToRead(current, core));
  const read = new Map([...bytesOf(encoded)].filter(([i]) => wanted.has(i)));
  return assembleRouteTable(current, core, read, decoder);
}

/** The full path: decode every part at once and build the table from scratch. */
function fullTable(encoded: EncodedConfig): RouteTable {
  return RouteTable.fromConfig(
    decodeGatewayConfig(
      decodeCorePart(encoded.core),
      encoded.buckets.map((b) => b.bytes),
    ),
  );
}

describe("the gateway applies a config change as a delta", () => {
  it("gives exactly the table a full decode gives, rebuilding at most the one changed bucket", async () => {
    await fc.assert(
      fc.asyncProperty(
        arbConfig.chain((base) =>
          arbChange.chain(([what, change]) => change(base).map((next) => ({ base, what, next }))),
        ),
        async ({ base, what, next }) => {
          const before = encodeGatewayConfig(base);
          const after = encodeGatewayConfig({ ...next, version: 2 });
          const start = await applyDelta(undefined, before);
          const delta = await applyDelta(start.table, after);
          const allHashes = [...base.keys, ...next.keys].map((k) => k.hash);
          expect(observe(delta.table, next, allHashes)).toEqual(observe(fullTable(after), next, allHashes));
          if (what === "change model") expect(delta.rebuilt).toBe(0);
          else expect(delta.rebuilt).toBeLessThanOrEqual(1);
          // Every bucket not rebuilt is the very same object as before: nothing else was touched.
          const taken = delta.table.buckets.filter((b, i) => b === start.table.buckets[i]).length;
          expect(taken).toBe(64 - delta.rebuilt);
        },
      ),
      { numRuns: 150 },
    );
  }, 120_000);

  it("catches up from an old table after missed changes, as a resync does", async () => {
    await fc.assert(
      fc.asyncProperty(
        arbConfig.chain((base) =>
          fc
            .array(arbChange, { minLength: 2, maxLength: 5 })
            .chain((changes) =>
              changes.reduce<fc.Arbitrary<GatewayConfig[]>>(
                (acc, [, change]) => acc.chain((seen) => change(seen.at(-1)!).map((c) => [...seen, c])),
                fc.constant([base]),
              ),
            ),
        ),
        async (configs) => {
          const start = await applyDelta(undefined, encodeGatewayConfig(configs[0]!));
          // Only the last version reaches the gateway; every one between was missed.
          const last = configs.at(-1)!;
          const encoded = encodeGatewayConfig({ ...last, version: configs.length });
          const caught = await applyDelta(start.table, encoded);
          const allHashes = configs.flatMap((c) => c.keys.map((k) => k.hash));
          expect(observe(caught.table, last, allHashes)).toEqual(observe(fullTable(encoded), last, allHashes));
        },
      ),
      { numRuns: 60 },
    );
  }, 120_000);

  it("allows a model exactly when a name on the key's list resolves to it (no alias shadowed by another model)", () => {
    fc.assert(
      fc.property(arbConfig, (config) => {
        const table = RouteTable.fromConfig(config);
        for (const key of config.keys) {
          const resolved = table.keyByHash(key.hash)!;
          // The rule as it was when allowed lists were resolved once per config: each entry to a model name.
          const names = key.models && new Set(key.models.map((m) => table.resolveModel(key.namespace, m)?.name));
          for (const model of table.modelsOf(key.namespace)) {
            expect(keyMayUse(table, resolved, model)).toBe(names === undefined || names.has(model.name));
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it("refuses a bucket holding a key of another bucket, in the delta path as in the full one", async () => {
    const config = encodeGatewayConfig({
      version: 1,
      generatedAt: "2026-01-01T00:00:00.000Z",
      models: [],
      policies: [],
      keys: [{ hash: hashOf(1), namespace: "a", name: "k", owner: "o" }],
    });
    const core = decodeCorePart(config.core);
    const home = bucketOfHash(hashOf(1));
    const other = home === 0 ? 1 : 0;
    // The key's bucket bytes stored under another bucket's index, with a core that names them there.
    const buckets = config.buckets.map((b) => b.bytes);
    const swapped = [...buckets];
    swapped[other] = buckets[home]!;
    swapped[home] = buckets[other]!;
    const shas = [...core.buckets];
    shas[other] = core.buckets[home]!;
    shas[home] = core.buckets[other]!;
    const bad: EncodedConfig = {
      core: encodeCorePart({ ...core, buckets: shas }),
      buckets: swapped.map((bytes, i) => ({ bytes, sha256: shas[i]! })),
    };
    await expect(applyDelta(undefined, bad)).rejects.toThrow(/holds a key of bucket/);
    expect(() => fullTable(bad)).toThrow(/holds a key of bucket/);
  });
});

// Past MODELS_PER_CHUNK models the core reaches the event loop in several chunks of JSON, and a chunk equal to
// the previous core's is taken over as it was parsed then: the table must still be exactly the full one.
describe("the gateway takes over the models a change did not touch", () => {
  const manyModels = (count: number): GatewayModel[] =>
    Array.from({ length: count }, (_, i) => ({
      namespace: namespaces[i % 2]!,
      name: `model-${i}`,
      // Every fifth model claims the next one's name as an alias: shadowed, so it must not resolve.
      aliases: i % 5 === 0 ? [`alias-${i}`, `model-${i + 1}`] : [`alias-${i}`],
      endpoints: [{ url: `http://10.0.0.${i % 250}:8090/r/${i}`, replica: `r${i}`, node: "n1", weight: 1, slots: 4 }],
      fallbacks: [],
      embeddings: false,
      contextSize: 4096,
      sequenceContextSize: 1024,
    }));
  const configOf = (version: number, models: GatewayModel[], keyCount: number): GatewayConfig => ({
    version,
    generatedAt: "2026-01-01T00:00:00.000Z",
    models,
    policies: namespaces.map((ns) => ({ namespace: ns, name: "standard", requestsPerMinute: 60, scope: "PerKey" })),
    keys: Array.from({ length: keyCount }, (_, i) => ({
      hash: hashOf(i),
      namespace: "a",
      name: `key-${i}`,
      owner: "o",
      models: ["model-1", "alias-2"],
    })),
  });
  /** Every model lookup a request can make, as plain data. */
  const lookupsOf = (table: RouteTable, models: GatewayModel[]) => ({
    models: table.models,
    resolved: models.flatMap((m) =>
      [m.name, ...m.aliases].map((n) => `${m.namespace}/${n}->${table.resolveModel(m.namespace, n)?.name ?? "-"}`),
    ),
    byNamespace: namespaces.map((ns) => table.modelsOf(ns).map((m) => m.name)),
    mayUse: namespaces.flatMap((ns) => table.modelsOf(ns).map((m) => keyMayUse(table, table.keyByHash(hashOf(0))!, m))),
  });
  const arbModelChange = fc.constantFrom("key only", "change", "insert", "remove");

  it("parses again only the chunks that changed, and gives the table a full decode gives", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 350 }), fc.nat(), arbModelChange, async (count, at, what) => {
        const before = manyModels(count);
        const j = count === 0 ? 0 : at % count;
        const after = [...before];
        if (what === "change" && count > 0) after[j] = { ...before[j]!, endpoints: [] };
        if (what === "insert") after.splice(j, 0, { ...manyModels(1)[0]!, name: "inserted" });
        if (what === "remove" && count > 0) after.splice(j, 1);
        const start = await applyDelta(undefined, encodeGatewayConfig(configOf(1, before, 3)));
        const encoded = encodeGatewayConfig(configOf(2, after, 4));
        const delta = await applyDelta(start.table, encoded);
        expect(lookupsOf(delta.table, after)).toEqual(lookupsOf(fullTable(encoded), after));
        if (what === "key only") expect(delta.table.models).toBe(start.table.models);
        if (what === "change") {
          // Models outside the changed one's chunk are the very objects parsed for the table before.
          const chunkOf = (i: number) => Math.floor(i / MODELS_PER_CHUNK);
          const kept = after.map((_, i) => delta.table.models[i] === start.table.models[i]);
          expect(kept).toEqual(after.map((_, i) => chunkOf(i) !== chunkOf(j)));
        }
      }),
      { numRuns: 40 },
    );
  }, 120_000);
});

// The operator side: the incremental compiler against compileGatewayConfig + validation + encodeGatewayConfig.
const now = new Date("2026-06-01T00:00:00Z");
const policies: RateLimitPolicy[] = namespaces.map((ns) => ({
  apiVersion: "pomona.dev/v1alpha1",
  kind: "RateLimitPolicy",
  metadata: { name: "standard", namespace: ns },
  spec: { requestsPerMinute: 60, scope: "PerKey" },
})) as RateLimitPolicy[];
const models: InferenceModel[] = [
  {
    apiVersion: "pomona.dev/v1alpha1",
    kind: "InferenceModel",
    metadata: { name: "m0", namespace: "a" },
    spec: {
      source: { hf: "hf:a/b:Q4" },
      engine: { contextSize: 4096, parallelSequences: 4, embeddings: true },
      replicas: 1,
      placement: { strategy: "Spread" },
      aliases: ["x"],
    },
  } as InferenceModel,
];
let resourceVersion = 0;
const apiKey = (
  i: number,
  k: fc.Arbitrary<GatewayKey> extends fc.Arbitrary<infer K> ? K : never,
  extra: { disabled: boolean; policy: "standard" | "missing" | undefined },
): ApiKey =>
  ({
    apiVersion: "pomona.dev/v1alpha1",
    kind: "ApiKey",
    metadata: { name: `key-${i}`, namespace: k.namespace, resourceVersion: String(++resourceVersion) },
    spec: {
      owner: k.owner,
      disabled: extra.disabled,
      ...(k.models ? { models: k.models } : {}),
      ...(extra.policy ? { rateLimitPolicy: extra.policy } : {}),
      ...(k.expiresAt ? { expiresAt: k.expiresAt } : {}),
    },
    status: { hash: hashOf(i) },
  }) as ApiKey;
const arbApiKey = (i: number) =>
  fc
    .tuple(arbKey(i), fc.record({ disabled: fc.boolean(), policy: fc.constantFrom("standard", "missing", undefined) }))
    .map(([k, extra]) => apiKey(i, k, extra as { disabled: boolean; policy: "standard" | "missing" | undefined }));

describe("the operator compiles a change incrementally", () => {
  it("gives byte for byte the parts of a full compilation, after any sequence of key changes", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.nat(150), { maxLength: 50 }).chain((ids) => fc.tuple(...ids.map(arbApiKey))),
        fc.array(fc.tuple(fc.nat(150), fc.constantFrom("set", "delete")), { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 0, max: 1_000_000 }),
        (initial, changes, seed) => {
          const compiler = new GatewayConfigCompiler();
          let keys: ApiKey[] = [...initial];
          const check = () => {
            const parts = compiler.compile({ models, replicas: [], keys, policies, now });
            const full = gatewayConfig.parse({
              version: 1,
              generatedAt: now.toISOString(),
              ...compileGatewayConfig({ models, replicas: [], keys, policies, now }),
            });
            const encoded = encodeGatewayConfig(full);
            expect(parts.buckets.map((b) => b.sha256)).toEqual(encoded.buckets.map((b) => b.sha256));
            expect(parts.core.models).toEqual(full.models);
            expect(parts.core.policies).toEqual(full.policies);
          };
          check();
          for (const [id, what] of changes) {
            const name = `key-${id}`;
            if (what === "delete") keys = keys.filter((k) => k.metadata.name !== name);
            else {
              // As the informer does: the changed object replaces the old one, with a new resourceVersion.
              const next = fc.sample(arbApiKey(id), { numRuns: 1, seed: seed + id })[0]!;
              keys = [...keys.filter((k) => k.metadata.name !== name), next];
            }
            check();
          }
        },
      ),
      { numRuns: 100 },
    );
  });

  it("re-encodes only the bucket a one-key change touches", () => {
    const keys = Array.from({ length: 2_000 }, (_, i) =>
      apiKey(
        i,
        { hash: hashOf(i), namespace: "a", name: `key-${i}`, owner: "o" },
        { disabled: false, policy: undefined },
      ),
    );
    const compiler = new GatewayConfigCompiler();
    const first = compiler.compile({ models, replicas: [], keys, policies, now });
    const changed = [...keys];
    changed[7] = apiKey(
      7,
      { hash: hashOf(7), namespace: "a", name: "key-7", owner: "someone else" },
      {
        disabled: false,
        policy: undefined,
      },
    );
    const second = compiler.compile({ models, replicas: [], keys: changed, policies, now });
    const differing = second.buckets.filter((b, i) => b !== first.buckets[i]);
    expect(differing).toHaveLength(1);
    expect(second.fingerprint).not.toBe(first.fingerprint);
    // Compiling the same objects again changes nothing at all.
    expect(compiler.compile({ models, replicas: [], keys: changed, policies, now }).fingerprint).toBe(
      second.fingerprint,
    );
  });
});
