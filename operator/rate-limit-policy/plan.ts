/** A RateLimitPolicy's status as a pure function of the cached objects: which keys and models name it, and whether it is valid. */
import {
  type ApiKey,
  type InferenceModel,
  type RateLimitPolicy,
  type RateLimitPolicyStatus,
  rateLimitPolicySpec,
} from "../../crds/api/index.ts";
import { setCondition } from "../runtime/conditions.ts";
import { sameJson } from "../same-json.ts";

export interface PolicyPlanInput {
  policy: RateLimitPolicy;
  /** ApiKeys and InferenceModels that may name the policy (the controller passes only those that do). */
  keys: readonly ApiKey[];
  models: readonly InferenceModel[];
  now: number;
}

export interface PolicyPlan {
  status: RateLimitPolicyStatus;
  statusChanged: boolean;
  /** Why the policy is invalid, for a Warning Event; undefined when it is valid or unchanged. */
  invalid: string | undefined;
}

export function planPolicy({ policy, keys, models, now }: PolicyPlanInput): PolicyPlan {
  const name = policy.metadata.name;
  const keyCount = keys.filter((k) => k.spec.rateLimitPolicy === name).length;
  const modelCount = models.filter((m) => m.spec.rateLimitPolicy === name).length;
  // The API server validates too; this catches objects written before a rule existed.
  const parsed = rateLimitPolicySpec.safeParse(policy.spec);
  const generation = policy.metadata.generation;
  const conditions = setCondition(
    policy.status?.conditions,
    parsed.success
      ? {
          type: "Ready",
          status: "True",
          reason: "Valid",
          message: `Used by ${keyCount} keys and ${modelCount} models.`,
        }
      : {
          type: "Ready",
          status: "False",
          reason: "Invalid",
          message: parsed.error.issues.map((i) => i.message).join("; "),
        },
    generation,
    new Date(now),
  );
  const status = { observedGeneration: generation, keys: keyCount, models: modelCount, conditions };
  const statusChanged = !sameJson(status, policy.status ?? {});
  return {
    status,
    statusChanged,
    invalid:
      statusChanged && !parsed.success ? (conditions.find((c) => c.type === "Ready")?.message ?? "invalid") : undefined,
  };
}
