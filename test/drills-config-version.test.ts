// Drill (issue 13, "Revocation can be undone by a restart"): the operator loses every piece of its own state
// (the core config Secret that held the last version, and its memory, by a restart), and a key is deleted
// afterwards. Config versions must still move forward, so the gateway takes the restarted operator's configs
// and refuses the deleted key as soon as the config without it is applied. Real API server, the operator and
// the gateway as deployed processes; every wait is on an event (the published config, the gateway's
// config-version metric), never on the clock.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { coreSecretName } from "../crds/api/index.ts";
import { createNamespaces, readGatewayConfig, startOperator, type TestOperator } from "./operator-support.ts";
import { installCrds } from "./support/crds.ts";
import { type GatewayProcess, startGatewayProcess } from "./support/gateway-process.ts";
import { kubectlOk } from "./support/kubectl.ts";
import { eventually } from "./support/processes.ts";

const ns = "drill-version";
const system = "drill-version-system";
let operator: TestOperator;
let gateway: GatewayProcess;

const keyManifest = (name: string) =>
  `apiVersion: pomona.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: ${name}, namespace: ${ns}}\nspec: {owner: drill}\n`;

async function mintedKey(name: string): Promise<{ key: string; hash: string }> {
  await kubectlOk(["apply", "-f", "-"], keyManifest(name));
  const key = await eventually(`the Secret of ${name}`, async () => {
    const out = await kubectlOk(["get", "secret", name, "-n", ns, "-o", "jsonpath={.data.key}", "--ignore-not-found"]);
    return out ? Buffer.from(out, "base64").toString("utf8") : undefined;
  });
  const hash = await eventually(`the hash of ${name}`, async () => {
    const out = await kubectlOk(["get", "apikey", name, "-n", ns, "-o", "jsonpath={.status.hash}"]);
    return out || undefined;
  });
  return { key, hash };
}

const statusFor = async (key: string) =>
  (await fetch(`${gateway.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status;

/** The version the gateway serves, from its metric. */
async function servedVersion(): Promise<number> {
  const text = await (await fetch(`${gateway.url}/metrics`)).text();
  return Number(/^pomona_gateway_config_version (\S+)$/m.exec(text)?.[1] ?? 0);
}

const servesAtLeast = (version: number, what: string) =>
  eventually(what, async () => ((await servedVersion()) >= version ? true : undefined), 120_000);

beforeAll(async () => {
  await installCrds();
  await createNamespaces(ns, system);
  operator = await startOperator(system);
}, 300_000);

afterAll(async () => {
  await gateway?.process.stop();
  await operator?.process.stop();
});

describe("config versions only move forward", () => {
  it("after the core Secret is lost and the operator restarts, a deleted key is refused with the next config", {
    timeout: 300_000,
  }, async () => {
    const victim = await mintedKey("victim");
    const witness = await mintedKey("witness");
    gateway = await startGatewayProcess(system);
    await eventually("the gateway to know both keys", async () =>
      (await statusFor(victim.key)) === 200 && (await statusFor(witness.key)) === 200 ? true : undefined,
    );
    const before = await servedVersion();
    expect(before).toBeGreaterThan(0);

    // Every piece of the operator's state: the Secret holding the last version, and its memory.
    await kubectlOk(["delete", "secret", coreSecretName, "-n", system]);
    await operator.process.stop();
    operator = await startOperator(system);
    // The restarted operator publishes again from nothing; the gateway must take it.
    const republished = await eventually("the restarted operator's config", async () => {
      const config = await readGatewayConfig(system).catch(() => undefined);
      return config && config.version > 0 ? config : undefined;
    });
    expect(republished.version).toBeGreaterThan(before);
    await servesAtLeast(republished.version, "the gateway to apply the restarted operator's config");

    await kubectlOk(["delete", "apikey", "victim", "-n", ns]);
    const without = await eventually("a published config without the deleted key", async () => {
      const config = await readGatewayConfig(system).catch(() => undefined);
      return config && !config.keys.some((k) => k.hash === victim.hash) ? config : undefined;
    });
    expect(without.keys.some((k) => k.hash === witness.hash)).toBe(true);
    await servesAtLeast(without.version, "the gateway to apply the config without the deleted key");
    // As soon as that config is applied: no waiting on the clock.
    expect(await statusFor(victim.key)).toBe(401);
    expect(await statusFor(witness.key)).toBe(200);
    expect(gateway.process.child.exitCode).toBeNull();
  });
});
