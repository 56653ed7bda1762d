/**
 * The gateway config as a pure function of the API objects: models with their
 * names and the endpoints of their Ready replicas, usable keys by hash, the
 * policies. Linear in the number of objects, so 100,000 keys stay cheap.
 */
import type {
  ApiKey,
  GatewayConfig,
  GatewayKey,
  GatewayModel,
  GatewayPolicy,
  InferenceModel,
  ModelReplica,
  RateLimitPolicy,
} from "../../crds/api/index.ts";
import { labels, perSequenceContext } from "../../crds/api/index.ts";

export interface GatewayConfigInputs {
  models: readonly InferenceModel[];
  replicas: readonly ModelReplica[];
  keys: readonly ApiKey[];
  policies: readonly RateLimitPolicy[];
  now: Date;
}

export type CompiledConfig = Omit<GatewayConfig, "version" | "generatedAt">;

export function compileGatewayConfig(inputs: GatewayConfigInputs): CompiledConfig {
  const policyNames = policyNamesOf(inputs.policies);
  const endpointsByModel = new Map<string, GatewayModel["endpoints"]>();
  for (const r of inputs.replicas) {
    if (r.status?.phase !== "Ready" || !r.status.endpoint || r.metadata.deletionTimestamp) continue;
    const model = `${r.metadata.namespace}/${r.metadata.labels?.[labels.model] ?? r.spec.model}`;
    const list = endpointsByModel.get(model) ?? [];
    const tps = r.status.tokensPerSecond;
    list.push({
      url: r.status.endpoint,
      replica: r.metadata.name ?? "",
      node: r.spec.nodeName,
      weight: tps && tps > 0 ? tps : 1,
      // The replica's own figure: it was loaded with these sequences, whatever the model says now.
      slots: r.spec.engine.parallelSequences,
    });
    endpointsByModel.set(model, list);
  }
  const byName = (a: { namespace: string; name: string }, b: { namespace: string; name: string }) =>
    a.namespace === b.namespace ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a.namespace < b.namespace ? -1 : 1;

  const models: GatewayModel[] = inputs.models
    .filter((m) => !m.metadata.deletionTimestamp)
    .map((m) => {
      const namespace = m.metadata.namespace ?? "";
      const name = m.metadata.name ?? "";
      const policy = m.spec.rateLimitPolicy;
      return {
        namespace,
        name,
        aliases: m.spec.aliases ?? [],
        endpoints: (endpointsByModel.get(`${namespace}/${name}`) ?? []).sort((a, b) =>
          a.replica < b.replica ? -1 : 1,
        ),
        fallbacks: m.spec.fallbacks ?? [],
        // Named even when missing: the gateway then refuses the model rather than serve it unlimited.
        ...(policy ? { rateLimitPolicy: policy } : {}),
        embeddings: m.spec.engine.embeddings,
        contextSize: m.spec.engine.contextSize,
        sequenceContextSize: perSequenceContext(m.spec.engine),
      };
    })
    .sort(byName);

  const now = inputs.now.getTime();
  const keys: GatewayKey[] = [];
  for (const k of inputs.keys) {
    const key = compileKey(k);
    if (key && keyServes(key, expiresAtMsOf(key), policyNames, now)) keys.push(key);
  }
  keys.sort((a, b) => (a.hash < b.hash ? -1 : 1));

  const policies: GatewayPolicy[] = inputs.policies
    .map((p) => ({
      namespace: p.metadata.namespace ?? "",
      name: p.metadata.name ?? "",
      ...pick(p.spec),
      scope: p.spec.scope,
      priorityClass: p.spec.priorityClass,
    }))
    .sort(byName);
  return { models, keys, policies };
}

export const policyNamesOf = (policies: readonly RateLimitPolicy[]): ReadonlySet<string> =>
  new Set(policies.map((p) => `${p.metadata.namespace}/${p.metadata.name}`));

/**
 * A key's entry in the config, or undefined while it has no hash, or when it is
 * disabled or being deleted. Whether it serves right now (expiry, its policy
 * exists) is `keyServes`, decided at every compilation.
 */
export function compileKey(k: ApiKey): GatewayKey | undefined {
  const hash = k.status?.hash;
  if (!hash || k.spec.disabled || k.metadata.deletionTimestamp) return undefined;
  const policy = k.spec.rateLimitPolicy;
  return {
    hash,
    namespace: k.metadata.namespace ?? "",
    name: k.metadata.name ?? "",
    owner: k.spec.owner,
    ...(k.spec.models ? { models: k.spec.models } : {}),
    ...(policy ? { rateLimitPolicy: policy } : {}),
    ...(k.spec.expiresAt ? { expiresAt: k.spec.expiresAt } : {}),
  };
}

export const expiresAtMsOf = (key: GatewayKey): number | undefined =>
  key.expiresAt ? new Date(key.expiresAt).getTime() : undefined;

export function keyServes(
  key: GatewayKey,
  expiresAtMs: number | undefined,
  policyNames: ReadonlySet<string>,
  nowMs: number,
): boolean {
  if (expiresAtMs !== undefined && expiresAtMs <= nowMs) return false;
  // A key whose policy is missing is left out: refusing it is safer than serving it unlimited.
  return !key.rateLimitPolicy || policyNames.has(`${key.namespace}/${key.rateLimitPolicy}`);
}

function pick(spec: RateLimitPolicy["spec"]) {
  const out: Partial<
    Record<"requestsPerMinute" | "tokensPerMinute" | "tokensPerDay" | "concurrentRequests" | "burst", number>
  > = {};
  for (const field of [
    "requestsPerMinute",
    "tokensPerMinute",
    "tokensPerDay",
    "concurrentRequests",
    "burst",
  ] as const) {
    const v = spec[field];
    if (v !== undefined) out[field] = v;
  }
  return out;
}
