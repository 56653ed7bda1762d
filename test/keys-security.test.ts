// API keys across the trust boundary between users' Secrets, the operator and the gateway (issue 13), with the
// real API server, the operator and the gateway as processes, and the `pomona` command line: a Secret the
// operator did not mint, or one that did not opt in, never becomes a key; hashes are keyed; the hashing key
// rotates without refusing a key; an address sending invalid keys is slowed; `keys create` refuses an existing
// name and `keys rotate` replaces a key.
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { promisify } from "node:util";
import { CoreV1Api, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type ApiKey, keyedHash, keyHashingDataKeys, keyHashingSecret, parseHashingKeys } from "../crds/api/index.ts";
import {
  createNamespaces,
  kubeConfig,
  readGatewayConfig,
  startOperator,
  type TestOperator,
} from "./operator-support.ts";
import { installCrds } from "./support/crds.ts";
import { type GatewayProcess, startGatewayProcess } from "./support/gateway-process.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";
import { eventually, repoRoot } from "./support/processes.ts";

const ns = "keys-sec";
const system = "keys-sec-system";
const core = () => kubeConfig().makeApiClient(CoreV1Api);
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

let operator: TestOperator;
let gateway: GatewayProcess;

beforeAll(async () => {
  await installCrds();
  await createNamespaces(ns, system);
  operator = await startOperator(system);
  gateway = await startGatewayProcess(system);
}, 180_000);

afterAll(async () => {
  await gateway?.process.stop();
  await operator?.process.stop();
  await kubectl(["delete", "namespace", ns, system, "--wait=false"]);
});

const getApiKey = async (name: string): Promise<ApiKey> =>
  JSON.parse(await kubectlOk(["get", "apikey", name, "-n", ns, "-o", "json"])) as ApiKey;

const readyOf = (k: ApiKey) => k.status?.conditions?.find((c) => c.type === "Ready");

async function applyApiKey(name: string, spec: Record<string, unknown> = {}): Promise<void> {
  await kubectlOk(
    ["apply", "-f", "-"],
    JSON.stringify({
      apiVersion: "pomona.dev/v1alpha1",
      kind: "ApiKey",
      metadata: { name, namespace: ns },
      spec: { owner: "team-a", ...spec },
    }),
  );
}

async function createSecret(
  name: string,
  value: string,
  meta: { labels?: Record<string, string>; annotations?: Record<string, string> } = {},
): Promise<void> {
  await core().createNamespacedSecret({
    namespace: ns,
    body: { metadata: { name, ...meta }, data: { key: Buffer.from(value).toString("base64") } },
  });
}

const statusFor = async (key: string) =>
  (await fetch(`${gateway.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status;

async function hashingKeys() {
  const secret = await core().readNamespacedSecret({ name: keyHashingSecret, namespace: system });
  return parseHashingKeys(secret.data);
}

/** Refused the way issue 13 asks: Ready=False with the reason, no prefix or hash, nothing published, value nowhere. */
async function expectRefused(apiKeyName: string, value: string, reason: string): Promise<void> {
  const refused = await eventually(`${apiKeyName} to be refused with ${reason}`, async () => {
    const k = await getApiKey(apiKeyName);
    return readyOf(k)?.reason === reason ? k : undefined;
  });
  expect(readyOf(refused)?.status).toBe("False");
  expect(refused.status?.prefix).toBeUndefined();
  expect(refused.status?.hash).toBeUndefined();
  const text = JSON.stringify(refused);
  expect(text.includes(value.slice(0, 8)), "status holds part of the Secret's value").toBe(false);
  const events = await kubectlOk(["get", "events", "-n", ns, "-o", "json"]);
  expect(events.includes(value.slice(0, 8)), "an Event holds part of the Secret's value").toBe(false);
  const config = await eventually("a published gateway config", () => readGatewayConfig(system));
  const hashes = new Set(config.keys.map((k) => k.hash));
  expect(hashes.has(sha256(value))).toBe(false);
  expect(hashes.has(keyedHash(value, (await hashingKeys()).current))).toBe(false);
  expect(config.keys.some((k) => k.name === apiKeyName)).toBe(false);
  expect(await statusFor(value)).toBe(401);
}

describe("Secrets that must not become keys", () => {
  it("refuses an ApiKey whose name collides with a Secret the operator did not mint", {
    timeout: 120_000,
  }, async () => {
    const value = `sk-foreign-${randomBytes(16).toString("hex")}`;
    await createSecret("db-password", value);
    await applyApiKey("db-password");
    await expectRefused("db-password", value, "SecretNotOwned");
    expect(readyOf(await getApiKey("db-password"))?.message).toMatch(/not minted by the operator for this ApiKey/);
    // The Secret was left as it was.
    const after = await core().readNamespacedSecret({ name: "db-password", namespace: ns });
    expect(Buffer.from(after.data?.key ?? "", "base64").toString()).toBe(value);
    expect(after.metadata?.ownerReferences).toBeUndefined();
  });

  it("refuses a Secret that only forges the minted label, without an owner reference to the ApiKey", {
    timeout: 120_000,
  }, async () => {
    const value = `sk-forged-${randomBytes(16).toString("hex")}`;
    await createSecret("forged", value, { labels: { "pomona.dev/api-key": "true" } });
    await applyApiKey("forged");
    await expectRefused("forged", value, "SecretNotOwned");
  });

  it("refuses a secretRef to a Secret that has not opted in", { timeout: 120_000 }, async () => {
    const value = `sk-plain-${randomBytes(16).toString("hex")}`;
    await createSecret("plain", value);
    await applyApiKey("plain-ref", { secretRef: { name: "plain" } });
    await expectRefused("plain-ref", value, "SecretNotOptedIn");
    expect(readyOf(await getApiKey("plain-ref"))?.message).toContain("pomona.dev/api-key=plain-ref");
  });
});

describe("a key brought in a Secret that opted in", () => {
  const value = `sk-byo-${randomBytes(24).toString("base64url")}`;

  it("is accepted, published under its keyed hash (not its sha256), and served by the gateway", {
    timeout: 120_000,
  }, async () => {
    await createSecret("byo", value, { annotations: { "pomona.dev/api-key": "byo-key" } });
    await applyApiKey("byo-key", { secretRef: { name: "byo" } });
    const accepted = await eventually("byo-key to be ready", async () => {
      const k = await getApiKey("byo-key");
      return readyOf(k)?.status === "True" ? k : undefined;
    });
    const hashing = (await hashingKeys()).current;
    expect(accepted.status?.prefix).toBe(value.slice(0, 14));
    expect(accepted.status?.hash).toBe(keyedHash(value, hashing));
    expect(accepted.status?.hash).not.toBe(sha256(value));
    const config = await eventually("byo-key in the published config", async () => {
      const c = await readGatewayConfig(system);
      return c?.keys.some((k) => k.name === "byo-key") ? c : undefined;
    });
    const published = config.keys.find((k) => k.name === "byo-key");
    expect(published?.hash).toBe(keyedHash(value, hashing));
    expect(config.keys.some((k) => k.hash === sha256(value))).toBe(false);
    await eventually("the gateway to accept the key", async () =>
      (await statusFor(value)) === 200 ? true : undefined,
    );
  });

  it("keeps working through a rotation of the hashing key, and after the previous one is dropped", {
    timeout: 180_000,
  }, async () => {
    const before = await hashingKeys();
    const fresh = randomBytes(32);
    await core().patchNamespacedSecret(
      {
        name: keyHashingSecret,
        namespace: system,
        body: {
          data: {
            [keyHashingDataKeys.current]: fresh.toString("base64"),
            [keyHashingDataKeys.previous]: before.current.bytes.toString("base64"),
          },
        },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    const during = await hashingKeys();
    expect(during.previous?.id).toBe(before.current.id);
    // Every answer while the operator hashes again and the gateways follow must be 200.
    const answers: number[] = [];
    await eventually("byo-key to be hashed under the new hashing key and published", async () => {
      answers.push(await statusFor(value));
      const k = await getApiKey("byo-key");
      const c = await readGatewayConfig(system);
      return k.status?.hashKeyId === during.current.id &&
        c?.keys.some((p) => p.hash === keyedHash(value, during.current))
        ? true
        : undefined;
    });
    expect(answers.filter((s) => s !== 200)).toEqual([]);
    // The config now holds the new hash only; once the gateway serves it, dropping the previous key is safe.
    const config = await readGatewayConfig(system);
    await eventually("the gateway to serve the re-hashed config", async () => {
      const metrics = await (await fetch(`${gateway.url}/metrics`)).text();
      const version = Number(metrics.match(/^pomona_gateway_config_version (\d+)/m)?.[1]);
      return version >= (config?.version ?? Number.POSITIVE_INFINITY) ? true : undefined;
    });
    await core().patchNamespacedSecret(
      {
        name: keyHashingSecret,
        namespace: system,
        body: [{ op: "remove", path: `/data/${keyHashingDataKeys.previous}` }],
      },
      setHeaderOptions("Content-Type", PatchStrategy.JsonPatch),
    );
    // Its third set of hashing keys: at start, with the previous key, and now without it.
    await eventually("the gateway to drop the previous hashing key", async () =>
      (gateway.process.output().match(/API key hashing keys in use/g) ?? []).length >= 3 ? true : undefined,
    );
    expect(await statusFor(value)).toBe(200);
  });
});

/** The `pomona` command line against this API server. */
async function pomona(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(
      process.execPath,
      [join(repoRoot, "cli/pomona.ts"), ...args, "-n", ns, "--kubeconfig", inject("kubeconfig")],
      { cwd: repoRoot },
    );
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : 1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

describe("pomona keys", () => {
  it("create refuses an existing name without printing its key or changing its owner", {
    timeout: 120_000,
  }, async () => {
    const first = await pomona("keys", "create", "cli-key", "--owner", "alice");
    expect(first.code).toBe(0);
    const key = first.stdout.trim();
    expect(key).toMatch(/^sk-pomona-/);
    const again = await pomona("keys", "create", "cli-key", "--owner", "mallory");
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/already exists.*pomona keys rotate cli-key/);
    expect(again.stdout.includes(key) || again.stderr.includes(key)).toBe(false);
    expect((await getApiKey("cli-key")).spec.owner).toBe("alice");
  });

  it("create on the name of a foreign Secret says why and prints nothing of it", { timeout: 120_000 }, async () => {
    const value = `sk-other-${randomBytes(16).toString("hex")}`;
    await createSecret("cli-collide", value);
    const result = await pomona("keys", "create", "cli-collide");
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/not minted by the operator/);
    expect(result.stdout.includes(value) || result.stderr.includes(value)).toBe(false);
  });

  it("rotate mints a new key: the old one is refused once the gateway's config moved, the new one accepted", {
    timeout: 180_000,
  }, async () => {
    const old = (await pomona("keys", "create", "rotating")).stdout.trim();
    await eventually("the gateway to accept the first key", async () =>
      (await statusFor(old)) === 200 ? true : undefined,
    );
    const rotated = await pomona("keys", "rotate", "rotating");
    expect(rotated.code, rotated.stderr).toBe(0);
    const fresh = rotated.stdout.trim();
    expect(fresh).toMatch(/^sk-pomona-/);
    expect(fresh).not.toBe(old);
    // The old hash leaves the config in the same publication that brings the new one.
    await eventually("the gateway to accept the new key", async () =>
      (await statusFor(fresh)) === 200 ? true : undefined,
    );
    expect(await statusFor(old)).toBe(401);
    const missing = await pomona("keys", "rotate", "no-such-key");
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/does not exist/);
  });
});

describe("an address that keeps sending invalid keys", () => {
  it("is answered 429 with Retry-After after a burst, counted in metrics without the key or the address", {
    timeout: 120_000,
  }, async () => {
    const strict = await startGatewayProcess(system, {
      POMONA_INVALID_KEY_BURST: "5",
      POMONA_INVALID_KEY_REFILL_PER_MINUTE: "1",
    });
    try {
      const guess = `sk-pomona-${randomBytes(32).toString("base64url")}`;
      const statuses: number[] = [];
      let retryAfter: string | null = null;
      for (let i = 0; i < 8; i++) {
        const res = await fetch(`${strict.url}/v1/models`, { headers: { authorization: `Bearer ${guess}` } });
        statuses.push(res.status);
        if (res.status === 429) {
          retryAfter = res.headers.get("retry-after");
          expect(((await res.json()) as { error: { code: string } }).error.code).toBe("too_many_invalid_api_keys");
        } else await res.body?.cancel();
      }
      expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429, 429]);
      expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
      const metrics = await (await fetch(`${strict.url}/metrics`)).text();
      expect(metrics).toMatch(/^pomona_gateway_auth_failures_total\{reason="invalid"\} 5$/m);
      expect(metrics).toMatch(/^pomona_gateway_auth_throttled_total 3$/m);
      expect(metrics).toMatch(/^pomona_gateway_auth_throttled_addresses_total 1$/m);
      expect(metrics.includes(guess)).toBe(false);
      expect(metrics.includes("127.0.0.1")).toBe(false);
      await strict.process.waitFor(/address throttled after repeated invalid API keys/);
      expect(strict.process.output().includes(guess)).toBe(false);
    } finally {
      await strict.process.stop();
    }
  });
});
