// The ApiKey and RateLimitPolicy controllers' decisions as plain functions: no API server (their real-server
// tests are operator.test.ts and keys-security.test.ts).
import type { V1Secret } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import {
  API_VERSION,
  type ApiKey,
  apiKeySpec,
  hashingKey,
  keyedHash,
  type RateLimitPolicy,
} from "../crds/api/index.ts";
import { adoptedKey, mintedSecretFor, planApiKeyStatus, planKeySource } from "../operator/api-key/plan.ts";
import { planPolicy } from "../operator/rate-limit-policy/plan.ts";

const now = Date.parse("2026-01-01T00:00:00Z");
const hashing = hashingKey(Buffer.alloc(32, 7));
const plaintext = "sk-pomona-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

function apiKey(spec: Record<string, unknown> = {}, status?: ApiKey["status"]): ApiKey {
  return {
    apiVersion: API_VERSION,
    kind: "ApiKey",
    metadata: { name: "k", namespace: "ns", uid: "uid-k", generation: 2 },
    spec: apiKeySpec.parse({ owner: "team", ...spec }),
    ...(status ? { status } : {}),
  };
}

const secret = (extra: Partial<V1Secret["metadata"]> = {}, data: Record<string, string> = {}): V1Secret => ({
  metadata: { name: "k", namespace: "ns", ...extra },
  data,
});
const b64 = (s: string) => Buffer.from(s).toString("base64");

describe("planKeySource", () => {
  it("mints into a new Secret owned by the ApiKey, then reads the key from it", () => {
    const key = apiKey();
    expect(planKeySource(key, true, undefined)).toEqual({ mint: true });
    const minted = mintedSecretFor(key, plaintext);
    expect(minted.metadata?.ownerReferences).toEqual([
      { apiVersion: API_VERSION, kind: "ApiKey", name: "k", uid: "uid-k", controller: true, blockOwnerDeletion: true },
    ]);
    expect(planKeySource(key, true, minted)).toEqual({ key: plaintext });
  });

  it("never reads a Secret it did not mint for this ApiKey, even one forging the label", () => {
    const forged = secret({ labels: { "pomona.dev/api-key": "true" } }, { key: b64(plaintext) });
    const source = planKeySource(apiKey(), true, forged);
    expect(source).toMatchObject({ refused: { status: "False", reason: "SecretNotOwned" } });
    expect(JSON.stringify(source)).not.toContain(plaintext);
    const otherUid = mintedSecretFor({ ...apiKey(), metadata: { ...apiKey().metadata, uid: "old" } }, plaintext);
    expect(planKeySource(apiKey(), true, otherUid)).toMatchObject({ refused: { reason: "SecretNotOwned" } });
  });

  it("refuses a namespace the operator does not serve, and reads a referenced Secret only when it opted in", () => {
    expect(planKeySource(apiKey(), false, undefined)).toMatchObject({ refused: { reason: "NamespaceNotServed" } });
    const ref = { name: "mine", key: "token" };
    const key = apiKey({ secretRef: ref });
    expect(planKeySource(key, true, undefined)).toEqual({ read: ref });
    expect(adoptedKey(key, ref, undefined)).toMatchObject({ refused: { reason: "SecretNotFound" } });
    const notOptedIn = secret({ name: "mine" }, { token: b64(plaintext) });
    expect(adoptedKey(key, ref, notOptedIn)).toMatchObject({ refused: { reason: "SecretNotOptedIn" } });
    const optedIn = secret({ name: "mine", annotations: { "pomona.dev/api-key": "k" } }, { token: b64(plaintext) });
    expect(adoptedKey(key, ref, optedIn)).toEqual({ key: plaintext });
    expect(adoptedKey(key, { name: "mine", key: "other" }, optedIn)).toMatchObject({
      refused: { reason: "SecretKeyMissing" },
    });
  });
});

describe("planApiKeyStatus", () => {
  const plan = (
    key: ApiKey,
    material: Parameters<typeof planApiKeyStatus>[0]["material"] = { key: plaintext },
    policyExists = true,
  ) => planApiKeyStatus({ apiKey: key, material, hashing, policyExists, now });
  const ready = (p: ReturnType<typeof plan>) => p.status.conditions?.find((c) => c.type === "Ready");

  it("records the prefix and the keyed hash, never the key, and is quiet once written", () => {
    const p = plan(apiKey());
    expect(p.status).toMatchObject({
      observedGeneration: 2,
      secretName: "k",
      prefix: plaintext.slice(0, 14),
      hash: keyedHash(plaintext, hashing),
      hashKeyId: hashing.id,
    });
    expect(ready(p)).toMatchObject({ status: "True", reason: "KeyActive" });
    expect(JSON.stringify(p)).not.toContain(plaintext);
    expect(p.statusChanged).toBe(true);
    expect(plan(apiKey({}, p.status)).statusChanged).toBe(false);
  });

  it("says why a key is refused: disabled, expired, its policy missing", () => {
    expect(ready(plan(apiKey({ disabled: true })))).toMatchObject({ status: "False", reason: "Disabled" });
    expect(ready(plan(apiKey({ expiresAt: "2025-12-31T00:00:00Z" })))).toMatchObject({ reason: "Expired" });
    const missing = plan(apiKey({ rateLimitPolicy: "gold" }), { key: plaintext }, false);
    expect(ready(missing)).toMatchObject({ reason: "PolicyNotFound" });
    expect(missing.events).toEqual([{ type: "Warning", reason: "PolicyNotFound", message: ready(missing)?.message }]);
  });

  it("looks again when the key expires, and every minute at a Secret it does not watch", () => {
    expect(plan(apiKey({ expiresAt: "2026-01-01T00:00:10Z" })).requeueAfterMs).toBe(10_100);
    expect(plan(apiKey({ secretRef: { name: "mine", key: "token" } })).requeueAfterMs).toBe(60_000);
    expect(plan(apiKey()).requeueAfterMs).toBeUndefined();
  });

  it("reports a rotation only when the hash changed under the same hashing key", () => {
    const before = plan(apiKey()).status;
    const rotated = plan(apiKey({}, before), { key: `${plaintext}x` });
    expect(rotated.events.map((e) => e.reason)).toEqual(["KeyRotated"]);
    const rehashed = planApiKeyStatus({
      apiKey: apiKey({}, before),
      material: { key: plaintext },
      hashing: hashingKey(Buffer.alloc(32, 8)),
      policyExists: true,
      now,
    });
    expect(rehashed.statusChanged).toBe(true);
    expect(rehashed.events).toEqual([]);
  });
});

describe("planPolicy", () => {
  const policy = (spec: Record<string, unknown>, status?: RateLimitPolicy["status"]): RateLimitPolicy => ({
    apiVersion: API_VERSION,
    kind: "RateLimitPolicy",
    metadata: { name: "gold", namespace: "ns", generation: 1 },
    spec: spec as RateLimitPolicy["spec"],
    ...(status ? { status } : {}),
  });
  const named = { spec: { rateLimitPolicy: "gold" } };
  const other = { spec: { rateLimitPolicy: "silver" } };

  it("counts the keys and models that name it", () => {
    const p = planPolicy({
      policy: policy({ requestsPerMinute: 60, scope: "PerKey" }),
      keys: [named, named, other] as ApiKey[],
      models: [named] as never[],
      now,
    });
    expect(p.status).toMatchObject({ observedGeneration: 1, keys: 2, models: 1 });
    expect(p.status.conditions?.[0]).toMatchObject({ status: "True", message: "Used by 2 keys and 1 models." });
    expect(p.invalid).toBeUndefined();
    expect(
      planPolicy({
        policy: policy({ requestsPerMinute: 60, scope: "PerKey" }, p.status),
        keys: [named, named] as ApiKey[],
        models: [named] as never[],
        now,
      }).statusChanged,
    ).toBe(false);
  });

  it("reports a policy written before a rule existed as invalid", () => {
    const p = planPolicy({ policy: policy({ requestsPerMinute: -1 }), keys: [], models: [], now });
    expect(p.status.conditions?.[0]).toMatchObject({ status: "False", reason: "Invalid" });
    expect(p.invalid).toBe(p.status.conditions?.[0]?.message);
  });
});
