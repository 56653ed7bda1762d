/** RateLimitPolicy → status: which keys and models name it, and whether it is valid. */
import { API_VERSION, type RateLimitPolicy, rateLimitPolicySpec } from "../../crds/api/index.ts";
import type { Cluster } from "../cluster.ts";
import { setCondition } from "../runtime/conditions.ts";
import type { Result } from "../runtime/controller.ts";
import { splitKey } from "../runtime/informer.ts";

export function createPolicyReconciler(cluster: Cluster) {
  return async function reconcilePolicy(key: string): Promise<Result | undefined> {
    const { namespace, name } = splitKey(key);
    const policy = cluster.policies.get(name, namespace) as RateLimitPolicy | undefined;
    if (!policy) return undefined;
    const keys = cluster.keys.list(namespace).filter((k) => k.spec.rateLimitPolicy === name).length;
    const models = cluster.models.list(namespace).filter((m) => m.spec.rateLimitPolicy === name).length;
    // The API server validates too; this catches objects written before a rule existed.
    const parsed = rateLimitPolicySpec.safeParse(policy.spec);
    const generation = policy.metadata.generation;
    const conditions = setCondition(
      policy.status?.conditions,
      parsed.success
        ? { type: "Ready", status: "True", reason: "Valid", message: `Used by ${keys} keys and ${models} models.` }
        : {
            type: "Ready",
            status: "False",
            reason: "Invalid",
            message: parsed.error.issues.map((i) => i.message).join("; "),
          },
      generation,
    );
    const status = { observedGeneration: generation, keys, models, conditions };
    if (JSON.stringify(status) !== JSON.stringify(policy.status ?? {})) {
      if (!parsed.success)
        cluster.events.record(
          policy,
          "Warning",
          "Invalid",
          conditions.find((c) => c.type === "Ready")?.message ?? "invalid",
        );
      await cluster.applier.applyStatus(
        { apiVersion: API_VERSION, kind: "RateLimitPolicy", metadata: { name, namespace }, status },
        "ratelimitpolicies",
      );
    }
    return undefined;
  };
}
