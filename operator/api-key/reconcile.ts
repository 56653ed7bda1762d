/**
 * ApiKey → its key Secret and status. Mints a key into a Secret it owns (or
 * reads the user's Secret when that Secret opted in), records only the prefix
 * and the keyed hash, and reports whether the key is usable (disabled,
 * expired, policy missing). Deleting a minted Secret rotates the key: the
 * next pass mints a new one. A Secret the operator did not mint for this
 * ApiKey, or one that did not opt in, is never read for a key: the ApiKey
 * gets Ready=False and nothing is published for it.
 */
import { CoreV1Api, type V1Secret } from "@kubernetes/client-node";
import { API_VERSION, type ApiKey } from "../../crds/api/index.ts";
import { type Cluster, cachedKeySecret, mintedKeyLabel, servesNamespace } from "../cluster.ts";
import { type ConditionInput, setCondition } from "../runtime/conditions.ts";
import type { Result } from "../runtime/controller.ts";
import { splitKey } from "../runtime/informer.ts";
import { cachedHashingKeys, ensureHashingSecret } from "./hashing-keys.ts";
import { hashKey, keyPrefix, mintKey, secretOptInAnnotation } from "./key-material.ts";

/** Longest wait before looking again at a Secret that is not watched (a user's, or a refused one). */
const unwatchedSecretRecheckMs = 60_000;

const notReady = (reason: string, message: string): ConditionInput => ({
  type: "Ready",
  status: "False",
  reason,
  message,
});

/** Minted by the operator for this very ApiKey: its label and a controller reference to this ApiKey's uid. */
export const mintedFor = (secret: V1Secret, apiKey: ApiKey): boolean =>
  secret.metadata?.labels?.[mintedKeyLabel] === "true" &&
  (secret.metadata.ownerReferences ?? []).some(
    (o) => o.controller === true && o.kind === "ApiKey" && o.uid === apiKey.metadata.uid,
  );

export function createApiKeyReconciler(cluster: Cluster) {
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);

  const foreignSecret = (name: string) =>
    notReady(
      "SecretNotOwned",
      `Secret ${name} already exists and was not minted by the operator for this ApiKey, so it is not used. Delete or rename that Secret, or give the ApiKey another name; to use a key you hold, set spec.secretRef and annotate the Secret with ${secretOptInAnnotation}=${name}.`,
    );

  const keyIn = (secret: V1Secret, dataKey: string): string | undefined => {
    const data = secret.data?.[dataKey];
    return data ? Buffer.from(data, "base64").toString("utf8") : undefined;
  };

  async function mintedSecret(apiKey: ApiKey): Promise<string | ConditionInput> {
    const { name = "", namespace = "", uid } = apiKey.metadata;
    const cached = cachedKeySecret(cluster, name, namespace);
    if (cached) {
      if (!mintedFor(cached, apiKey)) return foreignSecret(name);
      const existing = keyIn(cached, "key");
      if (existing) return existing;
    }
    const key = mintKey();
    const secret: V1Secret = {
      metadata: {
        name,
        namespace,
        labels: { [mintedKeyLabel]: "true" },
        ownerReferences: [
          { apiVersion: API_VERSION, kind: "ApiKey", name, uid: uid ?? "", controller: true, blockOwnerDeletion: true },
        ],
      },
      type: "Opaque",
      data: { key: Buffer.from(key).toString("base64") },
    };
    try {
      await core.createNamespacedSecret({ namespace, body: secret });
      cluster.events.record(apiKey, "Normal", "KeyMinted", `A new key was minted into Secret ${name}.`);
      return key;
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
      // It exists: ours but not in the cache yet, or somebody else's Secret that must not become a key.
      const read = await core.readNamespacedSecret({ name, namespace });
      if (!mintedFor(read, apiKey)) return foreignSecret(name);
      return keyIn(read, "key") ?? notReady("SecretKeyMissing", `Secret ${name} has no data key "key".`);
    }
  }

  async function adoptedSecret(apiKey: ApiKey, ref: { name: string; key: string }): Promise<string | ConditionInput> {
    const name = apiKey.metadata.name ?? "";
    let secret: V1Secret;
    try {
      secret = await core.readNamespacedSecret({ name: ref.name, namespace: apiKey.metadata.namespace ?? "" });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      return notReady("SecretNotFound", `Secret ${ref.name} does not exist.`);
    }
    // Opting in is checked before anything else about the Secret, so an ApiKey learns nothing of a Secret that did not.
    if (secret.metadata?.annotations?.[secretOptInAnnotation] !== name) {
      return notReady(
        "SecretNotOptedIn",
        `Secret ${ref.name} has not opted in to be used by this ApiKey, so it is not read. If it holds your key, annotate it: kubectl annotate secret ${ref.name} ${secretOptInAnnotation}=${name}`,
      );
    }
    return keyIn(secret, ref.key) ?? notReady("SecretKeyMissing", `Secret ${ref.name} has no data key ${ref.key}.`);
  }

  return async function reconcileApiKey(key: string): Promise<Result | undefined> {
    const { namespace, name } = splitKey(key);
    const apiKey = cluster.keys.get(name, namespace) as ApiKey | undefined;
    if (!apiKey || apiKey.metadata.deletionTimestamp) return undefined;
    const generation = apiKey.metadata.generation;
    const spec = apiKey.spec;
    const ref = spec.secretRef;
    const hashing = cachedHashingKeys(cluster)?.current;
    if (!hashing) {
      // Deleted (or not seen yet): create it again; the informer brings it, and this key comes back then.
      await ensureHashingSecret(cluster);
      throw new Error(`waiting for the API key hashing secret in namespace ${cluster.scope.namespace}`);
    }
    const served = servesNamespace(cluster, namespace);
    const material = !served
      ? notReady(
          "NamespaceNotServed",
          `The operator does not serve namespace ${namespace}; add it to the operator's watchNamespaces setting.`,
        )
      : ref
        ? await adoptedSecret(apiKey, ref)
        : await mintedSecret(apiKey);
    const now = Date.now();
    const expiresAt = spec.expiresAt ? new Date(spec.expiresAt).getTime() : undefined;
    let ready: ConditionInput;
    if (typeof material !== "string") ready = material;
    else if (spec.disabled) ready = notReady("Disabled", "The key is disabled; the gateway refuses it.");
    else if (expiresAt !== undefined && expiresAt <= now)
      ready = notReady("Expired", `The key expired at ${spec.expiresAt}.`);
    else if (spec.rateLimitPolicy && !cluster.policies.get(spec.rateLimitPolicy, namespace))
      ready = notReady(
        "PolicyNotFound",
        `RateLimitPolicy ${spec.rateLimitPolicy} does not exist in namespace ${namespace}; the key is refused until it does.`,
      );
    else ready = { type: "Ready", status: "True", reason: "KeyActive", message: "The gateway accepts this key." };

    const status = {
      observedGeneration: generation,
      secretName: ref?.name ?? name,
      ...(typeof material === "string"
        ? { prefix: keyPrefix(material), hash: hashKey(material, hashing), hashKeyId: hashing.id }
        : {}),
      conditions: setCondition(apiKey.status?.conditions, ready, generation),
    };
    if (JSON.stringify(status) !== JSON.stringify(apiKey.status ?? {})) {
      const old = apiKey.status;
      // A new hashing key changes every hash; only a new hash under the same hashing key means a new key.
      if (old?.hash && status.hash && old.hash !== status.hash && old.hashKeyId === status.hashKeyId) {
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
    if (ref || (typeof material !== "string" && material.reason === "SecretNotOwned"))
      waits.push(unwatchedSecretRecheckMs);
    return waits.length ? { requeueAfterMs: Math.min(...waits, 2 ** 31 - 1) } : undefined;
  };
}
