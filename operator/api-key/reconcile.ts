/**
 * The ApiKey controller. Mints a key into a Secret it owns (or reads the
 * user's Secret when that Secret opted in), records only the prefix and the
 * keyed hash, and reports whether the key is usable (disabled, expired,
 * policy missing). Deleting a minted Secret rotates the key: the next pass
 * mints a new one. A Secret the operator did not mint for this ApiKey, or one
 * that did not opt in, is never read for a key: the ApiKey gets Ready=False
 * and nothing is published for it. The decisions are in plan.ts; this file
 * reads the cache, calls them and applies (Secret, Events, status).
 */
import type { V1Secret } from "@kubernetes/client-node";
import { API_VERSION, type ApiKey } from "../../crds/api/index.ts";
import { secretsPath } from "../../kube/rest.ts";
import { type Cluster, cachedKeySecret, servesNamespace } from "../cluster.ts";
import type { Result } from "../runtime/controller.ts";
import { splitKey } from "../runtime/informer.ts";
import { cachedHashingKeys, ensureHashingSecret } from "./hashing-keys.ts";
import { mintKey } from "./key-material.ts";
import { adoptedKey, type KeyMaterial, mintedKey, mintedSecretFor, planApiKeyStatus, planKeySource } from "./plan.ts";

export function createApiKeyReconciler(cluster: Cluster) {
  const { rest } = cluster.applier;

  async function readSecret(name: string, namespace: string): Promise<V1Secret | undefined> {
    try {
      return await rest.get<V1Secret>(`${secretsPath(namespace)}/${name}`);
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      return undefined;
    }
  }

  async function mint(apiKey: ApiKey): Promise<KeyMaterial> {
    const { name = "", namespace = "" } = apiKey.metadata;
    const key = mintKey();
    try {
      await rest.create(secretsPath(namespace), mintedSecretFor(apiKey, key));
      cluster.events.record(apiKey, "Normal", "KeyMinted", `A new key was minted into Secret ${name}.`);
      return { key };
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
      // It exists: ours but not in the cache yet, or somebody else's Secret that must not become a key.
      return mintedKey(apiKey, await rest.get<V1Secret>(`${secretsPath(namespace)}/${name}`));
    }
  }

  return async function reconcileApiKey(key: string): Promise<Result | undefined> {
    const { namespace, name } = splitKey(key);
    const apiKey = cluster.keys.get(name, namespace) as ApiKey | undefined;
    if (!apiKey || apiKey.metadata.deletionTimestamp) return undefined;
    const hashing = cachedHashingKeys(cluster)?.current;
    if (!hashing) {
      // Deleted (or not seen yet): create it again; the informer brings it, and this key comes back then.
      await ensureHashingSecret(cluster);
      throw new Error(`waiting for the API key hashing secret in namespace ${cluster.scope.namespace}`);
    }
    const source = planKeySource(
      apiKey,
      servesNamespace(cluster, namespace),
      cachedKeySecret(cluster, name, namespace),
    );
    const material =
      "read" in source
        ? adoptedKey(apiKey, source.read, await readSecret(source.read.name, namespace))
        : "mint" in source
          ? await mint(apiKey)
          : source;
    const plan = planApiKeyStatus({
      apiKey,
      material,
      hashing,
      policyExists: Boolean(
        apiKey.spec.rateLimitPolicy && cluster.policies.get(apiKey.spec.rateLimitPolicy, namespace),
      ),
      now: Date.now(),
    });
    for (const e of plan.events) cluster.events.record(apiKey, e.type, e.reason, e.message);
    if (plan.statusChanged) {
      await cluster.applier.applyStatus(
        { apiVersion: API_VERSION, kind: "ApiKey", metadata: { name, namespace }, status: plan.status },
        "apikeys",
      );
    }
    return plan.requeueAfterMs === undefined ? undefined : { requeueAfterMs: plan.requeueAfterMs };
  };
}
