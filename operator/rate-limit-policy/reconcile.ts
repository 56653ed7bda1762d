/** The RateLimitPolicy controller: reads the policy and what names it from the cache, plans its status (plan.ts), writes it. */
import { API_VERSION, type RateLimitPolicy } from "../../crds/api/index.ts";
import { byPolicy, type Cluster } from "../cluster.ts";
import type { Result } from "../runtime/controller.ts";
import { splitKey } from "../runtime/informer.ts";
import { planPolicy } from "./plan.ts";

export function createPolicyReconciler(cluster: Cluster) {
  return async function reconcilePolicy(key: string): Promise<Result | undefined> {
    const { namespace, name } = splitKey(key);
    const policy = cluster.policies.get(name, namespace) as RateLimitPolicy | undefined;
    if (!policy) return undefined;
    const plan = planPolicy({
      policy,
      keys: cluster.keys.byIndex(byPolicy, key),
      models: cluster.models.byIndex(byPolicy, key),
      now: Date.now(),
    });
    if (plan.invalid) cluster.events.record(policy, "Warning", "Invalid", plan.invalid);
    if (plan.statusChanged) {
      await cluster.applier.applyStatus(
        { apiVersion: API_VERSION, kind: "RateLimitPolicy", metadata: { name, namespace }, status: plan.status },
        "ratelimitpolicies",
      );
    }
    return undefined;
  };
}
