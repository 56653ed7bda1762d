/**
 * Which limits apply to a request: the key's policy and the model's policy, each counted by its scope.
 * A model whose policy is missing is refused, not served unlimited (keys with a missing policy never
 * reach the config at all).
 */
import type { GatewayKey, GatewayModel } from "../../crds/api/index.ts";
import type { RouteTable } from "../config-source/route-table.ts";
import { PolicyMissingError } from "../errors.ts";
import type { LimitCheck } from "./limiter.ts";

export function limitChecks(table: RouteTable, key: GatewayKey, model: GatewayModel): LimitCheck[] {
  const checks = new Map<string, LimitCheck>();
  const keyId = `key:${key.namespace}/${key.name}`;
  const modelId = `model:${model.namespace}/${model.name}`;

  const keyPolicy = table.policy(key.namespace, key.rateLimitPolicy);
  if (keyPolicy) {
    const subject =
      keyPolicy.scope === "PerKey" ? keyId : keyPolicy.scope === "PerModel" ? modelId : `${keyId}|${modelId}`;
    const counterKey = `${keyPolicy.namespace}/${keyPolicy.name}|${subject}`;
    checks.set(counterKey, { policy: keyPolicy, counterKey });
  }
  // A policy named by a model counts per model, unless it asks for per key and model.
  const modelPolicy = table.policy(model.namespace, model.rateLimitPolicy);
  if (model.rateLimitPolicy && !modelPolicy) throw new PolicyMissingError(model.name, model.rateLimitPolicy);
  if (modelPolicy) {
    const subject = modelPolicy.scope === "PerKeyAndModel" ? `${keyId}|${modelId}` : modelId;
    const counterKey = `${modelPolicy.namespace}/${modelPolicy.name}|${subject}`;
    checks.set(counterKey, { policy: modelPolicy, counterKey });
  }
  return [...checks.values()];
}
