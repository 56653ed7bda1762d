/**
 * ApiKey → its key Secret and status. Mints a key into a Secret it owns (or
 * reads the user's Secret), records only the prefix and hash, and reports
 * whether the key is usable (disabled, expired, policy missing). Deleting a
 * minted Secret rotates the key: the next pass mints a new one.
 */
import { CoreV1Api, type V1Secret } from "@kubernetes/client-node";
import { API_VERSION, type ApiKey } from "../../crds/api/index.ts";
import { type Cluster, mintedKeyLabel } from "../cluster.ts";
import { type ConditionInput, setCondition } from "../runtime/conditions.ts";
import type { Result } from "../runtime/controller.ts";
import { splitKey } from "../runtime/informer.ts";
import { hashKey, keyPrefix, mintKey } from "./key-material.ts";

/** Longest wait before looking again at a user's Secret, which is not watched. */
const adoptedSecretRecheckMs = 60_000;

export function createApiKeyReconciler(cluster: Cluster) {
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);

  async function mintedSecret(apiKey: ApiKey): Promise<string> {
    const { name, namespace, uid } = apiKey.metadata;
    const cached = cluster.keySecrets.get(name ?? "", namespace);
    const existing = cached?.data?.key;
    if (existing) return Buffer.from(existing, "base64").toString("utf8");
    const key = mintKey();
    const secret: V1Secret = {
      metadata: {
        name,
        namespace,
        labels: { [mintedKeyLabel]: "true" },
        ownerReferences: [
          {
            apiVersion: API_VERSION,
            kind: "ApiKey",
            name: name ?? "",
            uid: uid ?? "",
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      type: "Opaque",
      data: { key: Buffer.from(key).toString("base64") },
    };
    try {
      await core.createNamespacedSecret({ namespace: namespace ?? "", body: secret });
      cluster.events.record(apiKey, "Normal", "KeyMinted", `A new key was minted into Secret ${name}.`);
      return key;
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
      // It exists but the cache has not seen it yet: read it instead of minting over it.
      const read = await core.readNamespacedSecret({ name: name ?? "", namespace: namespace ?? "" });
      const data = read.data?.key;
      if (!data) throw new Error(`Secret ${name} exists without data key "key"`);
      return Buffer.from(data, "base64").toString("utf8");
    }
  }

  async function adoptedSecret(apiKey: ApiKey, ref: { name: string; key: string }): Promise<string | ConditionInput> {
    try {
      const secret = await core.readNamespacedSecret({ name: ref.name, namespace: apiKey.metadata.namespace ?? "" });
      const data = secret.data?.[ref.key];
      if (!data) {
        return {
          type: "Ready",
          status: "False",
          reason: "SecretKeyMissing",
          message: `Secret ${ref.name} has no data key ${ref.key}.`,
        };
      }
      return Buffer.from(data, "base64").toString("utf8");
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      return {
        type: "Ready",
        status: "False",
        reason: "SecretNotFound",
        message: `Secret ${ref.name} does not exist.`,
      };
    }
  }

  return async function reconcileApiKey(key: string): Promise<Result | undefined> {
    const { namespace, name } = splitKey(key);
    const apiKey = cluster.keys.get(name, namespace) as ApiKey | undefined;
    if (!apiKey || apiKey.metadata.deletionTimestamp) return undefined;
    const generation = apiKey.metadata.generation;
    const spec = apiKey.spec;
    const ref = spec.secretRef;
    const material = ref ? await adoptedSecret(apiKey, ref) : await mintedSecret(apiKey);
    const now = Date.now();
    const expiresAt = spec.expiresAt ? new Date(spec.expiresAt).getTime() : undefined;
    let ready: ConditionInput;
    if (typeof material !== "string") ready = material;
    else if (spec.disabled)
      ready = {
        type: "Ready",
        status: "False",
        reason: "Disabled",
        message: "The key is disabled; the gateway refuses it.",
      };
    else if (expiresAt !== undefined && expiresAt <= now)
      ready = { type: "Ready", status: "False", reason: "Expired", message: `The key expired at ${spec.expiresAt}.` };
    else if (spec.rateLimitPolicy && !cluster.policies.get(spec.rateLimitPolicy, namespace))
      ready = {
        type: "Ready",
        status: "False",
        reason: "PolicyNotFound",
        message: `RateLimitPolicy ${spec.rateLimitPolicy} does not exist in namespace ${namespace}; the key is refused until it does.`,
      };
    else ready = { type: "Ready", status: "True", reason: "KeyActive", message: "The gateway accepts this key." };

    const status = {
      observedGeneration: generation,
      secretName: ref?.name ?? name,
      ...(typeof material === "string" ? { prefix: keyPrefix(material), hash: hashKey(material) } : {}),
      conditions: setCondition(apiKey.status?.conditions, ready, generation),
    };
    if (JSON.stringify(status) !== JSON.stringify(apiKey.status ?? {})) {
      if (apiKey.status?.hash && status.hash && apiKey.status.hash !== status.hash) {
        cluster.events.record(apiKey, "Normal", "KeyRotated", `The key changed; its prefix is now ${status.prefix}.`);
      }
      if (ready.status === "False") cluster.events.record(apiKey, "Warning", ready.reason, ready.message);
      await cluster.applier.applyStatus(
        { apiVersion: API_VERSION, kind: "ApiKey", metadata: { name, namespace }, status },
        "apikeys",
      );
    }
    const waits: number[] = [];
    if (expiresAt !== undefined && expiresAt > now) waits.push(expiresAt - now + 100);
    if (ref) waits.push(adoptedSecretRecheckMs);
    return waits.length ? { requeueAfterMs: Math.min(...waits, 2 ** 31 - 1) } : undefined;
  };
}
