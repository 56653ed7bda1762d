/**
 * One gateway config turned into the lookups a request needs: keys by hash,
 * models by name or alias within their namespace, policies by name.
 *
 * Keys are held per key bucket (the same buckets the config is stored in), and
 * a bucket's lookups never depend on the models, so a new table can take over
 * every bucket that did not change from the table before it: one key changed
 * rebuilds about 1/64 of the keys, and one model changed rebuilds none. This is
 * why a key's allowed models are kept as written and resolved at request time
 * (`keyMayUse`) rather than resolved once per table.
 */
import {
  bucketOfHash,
  type CorePart,
  type GatewayConfig,
  type GatewayKey,
  type GatewayModel,
  type GatewayPolicy,
  KEY_BUCKETS,
} from "../../crds/api/index.ts";

export interface ResolvedKey {
  key: GatewayKey;
  /** Allowed model names or aliases, as the key lists them; undefined allows every model of the namespace. */
  allowed: ReadonlySet<string> | undefined;
  expiresAtMs: number | undefined;
}

/** The lookups of one key bucket, named by the sha256 of the stored bytes they were built from. */
export interface KeyBucket {
  readonly sha256: string;
  readonly keys: ReadonlyMap<string, ResolvedKey>;
}

/** The parts of a config besides its keys (the core part without its bucket hashes). */
export type RouteTableCore = Pick<CorePart, "version" | "generatedAt" | "models" | "policies">;

const scoped = (namespace: string, name: string) => `${namespace}/${name}`;

/** Build one bucket's lookups from its keys. Cheap enough for the event loop: about 1,600 keys at 100,000. */
export function buildKeyBucket(sha256: string, keys: readonly GatewayKey[]): KeyBucket {
  const map = new Map<string, ResolvedKey>();
  for (const key of keys) {
    map.set(key.hash, {
      key,
      allowed: key.models ? new Set(key.models) : undefined,
      expiresAtMs: key.expiresAt ? Date.parse(key.expiresAt) : undefined,
    });
  }
  return { sha256, keys: map };
}

/** Models by name or alias, by namespace, and policies by name: rebuilt only when models or policies change. */
interface ModelLookups {
  readonly byName: ReadonlyMap<string, GatewayModel>;
  readonly byNamespace: ReadonlyMap<string, GatewayModel[]>;
  readonly policies: ReadonlyMap<string, GatewayPolicy>;
}

function modelLookupsOf(models: readonly GatewayModel[], policyList: readonly GatewayPolicy[]): ModelLookups {
  const byName = new Map<string, GatewayModel>();
  const byNamespace = new Map<string, GatewayModel[]>();
  const policies = new Map<string, GatewayPolicy>();
  // Names first, then aliases, so an alias never shadows another model's real name.
  for (const model of models) byName.set(scoped(model.namespace, model.name), model);
  for (const model of models) {
    for (const alias of model.aliases) {
      const k = scoped(model.namespace, alias);
      if (!byName.has(k)) byName.set(k, model);
    }
    const list = byNamespace.get(model.namespace) ?? [];
    list.push(model);
    byNamespace.set(model.namespace, list);
  }
  for (const policy of policyList) policies.set(scoped(policy.namespace, policy.name), policy);
  return { byName, byNamespace, policies };
}

export class RouteTable {
  readonly version: number;
  readonly generatedAt: string;
  readonly models: readonly GatewayModel[];
  readonly policyList: readonly GatewayPolicy[];
  /** By bucket index; shared with the tables before and after this one where they did not change. */
  readonly buckets: readonly KeyBucket[];
  private readonly lookups: ModelLookups;

  /**
   * `previous` (the table in use) lends its model lookups when `core` holds the very same models and
   * policies arrays (config-decoder.ts reuses them when their JSON did not change): a key change builds none.
   */
  constructor(core: RouteTableCore, buckets: readonly KeyBucket[], previous?: RouteTable) {
    if (buckets.length !== KEY_BUCKETS) throw new Error(`a route table needs ${KEY_BUCKETS} key buckets`);
    this.version = core.version;
    this.generatedAt = core.generatedAt;
    this.models = core.models;
    this.policyList = core.policies;
    this.buckets = buckets;
    this.lookups =
      previous && previous.models === core.models && previous.policyList === core.policies
        ? previous.lookups
        : modelLookupsOf(core.models, core.policies);
  }

  /** A whole config at once (start-up paths, tests and benchmarks); the watcher builds bucket by bucket. */
  static fromConfig(config: GatewayConfig): RouteTable {
    const byBucket: GatewayKey[][] = Array.from({ length: KEY_BUCKETS }, () => []);
    for (const key of config.keys) byBucket[bucketOfHash(key.hash)]?.push(key);
    // Not built from stored bytes, so named by nothing a stored bucket's sha256 could equal: a watcher
    // taking over from this table rebuilds every bucket.
    const buckets = byBucket.map((keys, i) => buildKeyBucket(`unstored-${i}`, keys));
    return new RouteTable(config, buckets);
  }

  keyByHash(hash: string): ResolvedKey | undefined {
    return this.buckets[bucketOfHash(hash)]?.keys.get(hash);
  }

  resolveModel(namespace: string, nameOrAlias: string): GatewayModel | undefined {
    return this.lookups.byName.get(scoped(namespace, nameOrAlias));
  }

  modelsOf(namespace: string): readonly GatewayModel[] {
    return this.lookups.byNamespace.get(namespace) ?? [];
  }

  policy(namespace: string, name: string | undefined): GatewayPolicy | undefined {
    return name === undefined ? undefined : this.lookups.policies.get(scoped(namespace, name));
  }

  get keyCount(): number {
    let n = 0;
    for (const bucket of this.buckets) n += bucket.keys.size;
    return n;
  }
}

/**
 * Whether a key may use a model: some name on its allowed list resolves, in
 * the key's namespace and in this table, to that model. An alias that another
 * model's name (or an earlier alias) shadows resolves elsewhere, so it grants nothing.
 */
export function keyMayUse(table: RouteTable, resolved: ResolvedKey, model: GatewayModel): boolean {
  const allowed = resolved.allowed;
  if (allowed === undefined) return true;
  const namespace = resolved.key.namespace;
  const resolvesHere = (name: string) => allowed.has(name) && table.resolveModel(namespace, name)?.name === model.name;
  return resolvesHere(model.name) || model.aliases.some(resolvesHere);
}
