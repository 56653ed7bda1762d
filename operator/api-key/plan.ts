/**
 * What an ApiKey's Secret and status should be, as pure functions of the
 * cached objects: where its key comes from (the Secret the operator minted
 * for it, a Secret the user opted in, or a new one to mint), and, once the
 * key is known, its status, Events and when to look again. No API calls and
 * no clock: the controller (reconcile.ts) reads, calls these and applies.
 */
import type { V1Secret } from "@kubernetes/client-node";
import { API_VERSION, type ApiKey, type ApiKeyStatus, type HashingKey } from "../../crds/api/index.ts";
import { mintedKeyLabel } from "../cluster.ts";
import { type ConditionInput, setCondition } from "../runtime/conditions.ts";
import { sameJson } from "../same-json.ts";
import { hashKey, keyPrefix, secretOptInAnnotation } from "./key-material.ts";

/** Longest wait before looking again at a Secret that is not watched (a user's, or a refused one). */
export const unwatchedSecretRecheckMs = 60_000;

/** The plaintext key, or why there is none (a Ready=False condition). */
export type KeyMaterial = { key: string } | { refused: ConditionInput };

/** Where the key comes from: known already, a Secret to read (not cached), or a Secret to mint. */
export type KeySource = KeyMaterial | { read: { name: string; key: string } } | { mint: true };

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

const foreignSecret = (name: string) =>
  notReady(
    "SecretNotOwned",
    `Secret ${name} already exists and was not minted by the operator for this ApiKey, so it is not used. Delete or rename that Secret, or give the ApiKey another name; to use a key you hold, set spec.secretRef and annotate the Secret with ${secretOptInAnnotation}=${name}.`,
  );

const keyIn = (secret: V1Secret, dataKey: string): string | undefined => {
  const data = secret.data?.[dataKey];
  return data ? Buffer.from(data, "base64").toString("utf8") : undefined;
};

/**
 * Where the key of an ApiKey comes from. `mintedSecret` is the cached Secret
 * named like the ApiKey in a served namespace (minted Secrets are watched).
 */
export function planKeySource(apiKey: ApiKey, served: boolean, mintedSecret: V1Secret | undefined): KeySource {
  const namespace = apiKey.metadata.namespace ?? "";
  if (!served)
    return {
      refused: notReady(
        "NamespaceNotServed",
        `The operator does not serve namespace ${namespace}; add it to the operator's watchNamespaces setting.`,
      ),
    };
  if (apiKey.spec.secretRef) return { read: apiKey.spec.secretRef };
  if (!mintedSecret) return { mint: true };
  const known = mintedKey(apiKey, mintedSecret);
  // A minted Secret without a key: minting is tried; its create finds the Secret (unless the cache was
  // behind a deletion) and the Secret read back decides.
  return "refused" in known && known.refused.reason === "SecretKeyMissing" ? { mint: true } : known;
}

/** The key in a Secret named like the ApiKey: only one minted for this very ApiKey is read. */
export function mintedKey(apiKey: ApiKey, secret: V1Secret): KeyMaterial {
  const name = apiKey.metadata.name ?? "";
  if (!mintedFor(secret, apiKey)) return { refused: foreignSecret(name) };
  const key = keyIn(secret, "key");
  return key ? { key } : { refused: notReady("SecretKeyMissing", `Secret ${name} has no data key "key".`) };
}

/** The key in the user's Secret of `spec.secretRef` (undefined: it does not exist). */
export function adoptedKey(
  apiKey: ApiKey,
  ref: { name: string; key: string },
  secret: V1Secret | undefined,
): KeyMaterial {
  const name = apiKey.metadata.name ?? "";
  if (!secret) return { refused: notReady("SecretNotFound", `Secret ${ref.name} does not exist.`) };
  // Opting in is checked before anything else about the Secret, so an ApiKey learns nothing of a Secret that did not.
  if (secret.metadata?.annotations?.[secretOptInAnnotation] !== name) {
    return {
      refused: notReady(
        "SecretNotOptedIn",
        `Secret ${ref.name} has not opted in to be used by this ApiKey, so it is not read. If it holds your key, annotate it: kubectl annotate secret ${ref.name} ${secretOptInAnnotation}=${name}`,
      ),
    };
  }
  const key = keyIn(secret, ref.key);
  return key ? { key } : { refused: notReady("SecretKeyMissing", `Secret ${ref.name} has no data key ${ref.key}.`) };
}

/** The Secret a new key is minted into: labelled, and owned by the ApiKey so it goes with it. */
export function mintedSecretFor(apiKey: ApiKey, key: string): V1Secret {
  const { name = "", namespace = "", uid } = apiKey.metadata;
  return {
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
}

export interface ApiKeyPlanInput {
  apiKey: ApiKey;
  material: KeyMaterial;
  hashing: HashingKey;
  policyExists: boolean;
  now: number;
}

export interface ApiKeyPlan {
  status: ApiKeyStatus;
  statusChanged: boolean;
  events: { type: "Normal" | "Warning"; reason: string; message: string }[];
  requeueAfterMs: number | undefined;
}

/** The ApiKey's status from its key: usable, or why not (disabled, expired, its policy missing). */
export function planApiKeyStatus({ apiKey, material, hashing, policyExists, now }: ApiKeyPlanInput): ApiKeyPlan {
  const { spec } = apiKey;
  const { generation, name = "", namespace = "" } = apiKey.metadata;
  const expiresAt = spec.expiresAt ? new Date(spec.expiresAt).getTime() : undefined;
  let ready: ConditionInput;
  if ("refused" in material) ready = material.refused;
  else if (spec.disabled) ready = notReady("Disabled", "The key is disabled; the gateway refuses it.");
  else if (expiresAt !== undefined && expiresAt <= now)
    ready = notReady("Expired", `The key expired at ${spec.expiresAt}.`);
  else if (spec.rateLimitPolicy && !policyExists)
    ready = notReady(
      "PolicyNotFound",
      `RateLimitPolicy ${spec.rateLimitPolicy} does not exist in namespace ${namespace}; the key is refused until it does.`,
    );
  else ready = { type: "Ready", status: "True", reason: "KeyActive", message: "The gateway accepts this key." };

  const status: ApiKeyStatus = {
    observedGeneration: generation,
    secretName: spec.secretRef?.name ?? name,
    ...("key" in material
      ? { prefix: keyPrefix(material.key), hash: hashKey(material.key, hashing), hashKeyId: hashing.id }
      : {}),
    conditions: setCondition(apiKey.status?.conditions, ready, generation, new Date(now)),
  };
  const statusChanged = !sameJson(status, apiKey.status ?? {});
  const events: ApiKeyPlan["events"] = [];
  if (statusChanged) {
    const old = apiKey.status;
    // A new hashing key changes every hash; only a new hash under the same hashing key means a new key.
    if (old?.hash && status.hash && old.hash !== status.hash && old.hashKeyId === status.hashKeyId) {
      events.push({
        type: "Normal",
        reason: "KeyRotated",
        message: `The key changed; its prefix is now ${status.prefix}.`,
      });
    }
    if (ready.status === "False") events.push({ type: "Warning", reason: ready.reason, message: ready.message });
  }
  const waits: number[] = [];
  if (expiresAt !== undefined && expiresAt > now) waits.push(expiresAt - now + 100);
  if (spec.secretRef || ("refused" in material && material.refused.reason === "SecretNotOwned"))
    waits.push(unwatchedSecretRecheckMs);
  return {
    status,
    statusChanged,
    events,
    requeueAfterMs: waits.length ? Math.min(...waits, 2 ** 31 - 1) : undefined,
  };
}
