/**
 * One gateway config turned into the lookups a request needs, built once per
 * config: keys by hash, models by name or alias within their namespace,
 * policies by name, and each key's allowed models resolved to model names.
 */
import type { GatewayConfig, GatewayKey, GatewayModel, GatewayPolicy } from "../../crds/api/index.ts";

export interface ResolvedKey {
  key: GatewayKey;
  /** Allowed model names (aliases resolved); undefined allows every model of the namespace. */
  allowed: ReadonlySet<string> | undefined;
  expiresAtMs: number | undefined;
}

const scoped = (namespace: string, name: string) => `${namespace}/${name}`;

export class RouteTable {
  readonly version: number;
  readonly config: GatewayConfig;
  private readonly keys = new Map<string, ResolvedKey>();
  private readonly models = new Map<string, GatewayModel>();
  private readonly modelsByNamespace = new Map<string, GatewayModel[]>();
  private readonly policies = new Map<string, GatewayPolicy>();

  constructor(config: GatewayConfig) {
    this.version = config.version;
    this.config = config;
    // Names first, then aliases, so an alias never shadows another model's real name.
    for (const model of config.models) this.models.set(scoped(model.namespace, model.name), model);
    for (const model of config.models) {
      for (const alias of model.aliases) {
        const k = scoped(model.namespace, alias);
        if (!this.models.has(k)) this.models.set(k, model);
      }
      const list = this.modelsByNamespace.get(model.namespace) ?? [];
      list.push(model);
      this.modelsByNamespace.set(model.namespace, list);
    }
    for (const policy of config.policies) this.policies.set(scoped(policy.namespace, policy.name), policy);
    for (const key of config.keys) {
      const allowed = key.models
        ? new Set(key.models.map((m) => this.resolveModel(key.namespace, m)?.name ?? `\0unresolved:${m}`))
        : undefined;
      const expiresAtMs = key.expiresAt ? Date.parse(key.expiresAt) : undefined;
      this.keys.set(key.hash, { key, allowed, expiresAtMs });
    }
  }

  keyByHash(hash: string): ResolvedKey | undefined {
    return this.keys.get(hash);
  }

  resolveModel(namespace: string, nameOrAlias: string): GatewayModel | undefined {
    return this.models.get(scoped(namespace, nameOrAlias));
  }

  modelsOf(namespace: string): readonly GatewayModel[] {
    return this.modelsByNamespace.get(namespace) ?? [];
  }

  policy(namespace: string, name: string | undefined): GatewayPolicy | undefined {
    return name === undefined ? undefined : this.policies.get(scoped(namespace, name));
  }

  get keyCount(): number {
    return this.keys.size;
  }
}

export const keyMayUse = (resolved: ResolvedKey, model: GatewayModel) =>
  resolved.allowed === undefined || resolved.allowed.has(model.name);
