// Fault drill: the API server restarts (etcd and its data stay). This suite runs its own control plane,
// so the shared one stays up for the others; the operator and the gateway run as deployed processes.
// Must hold: while the API server is away the gateway keeps serving with its last config and nothing
// crashes; afterwards the operator and the gateway resume their watches, so a key created after the
// restart is accepted and a key deleted after it refused, each within a bound. An operator that could
// not renew its leader Lease for its renew deadline (10 s) exits on purpose, as controller-runtime's
// managers do, and is started again, as its Deployment (or `pomona up`) would.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningControlPlane, startControlPlane } from "../controlplane/local-control-plane.ts";
import { startOperator, type TestOperator } from "./operator-support.ts";
import { installCrds } from "./support/crds.ts";
import { type GatewayProcess, startGatewayProcess } from "./support/gateway-process.ts";
import { kubectlOk } from "./support/kubectl.ts";
import { eventually } from "./support/processes.ts";

const ns = "drill-restart";
const system = "drill-restart-system";
/** Recovery after the restart, bounded well above what it takes (a watch resumes within seconds). */
const recoveryBoundMs = 30_000;
let dir: string;
let cluster: RunningControlPlane;
let operator: TestOperator;
let gateway: GatewayProcess;

const k = (args: string[], input?: string) => kubectlOk(args, input, cluster.kubeconfigPath);
const keyManifest = (name: string) =>
  `apiVersion: pomona.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: ${name}, namespace: ${ns}}\nspec: {owner: drill}\n`;

async function mintedKey(name: string): Promise<string> {
  await k(["apply", "-f", "-"], keyManifest(name));
  return eventually(`the Secret of ${name}`, async () => {
    const out = await k(["get", "secret", name, "-n", ns, "-o", "jsonpath={.data.key}", "--ignore-not-found"]);
    return out ? Buffer.from(out, "base64").toString("utf8") : undefined;
  });
}

/** The gateway's answer to a key: 200 when it knows it, 401 when not. */
const statusFor = async (key: string) =>
  (await fetch(`${gateway.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "pomona-drill-restart-"));
  cluster = await startControlPlane({ dir });
  await installCrds(cluster.kubeconfigPath);
  await k(["create", "namespace", ns]);
  await k(["create", "namespace", system]);
  operator = await startOperator(system, { KUBECONFIG: cluster.kubeconfigPath });
}, 300_000);

afterAll(async () => {
  await gateway?.process.stop();
  await operator?.process.stop();
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("the API server restarts", () => {
  it("leaves the gateway serving meanwhile, and changes made after it reach the gateway", {
    timeout: 180_000,
  }, async () => {
    const first = await mintedKey("first");
    gateway = await startGatewayProcess(system, {}, cluster.kubeconfigPath);
    await eventually("the gateway to know the first key", async () =>
      (await statusFor(first)) === 200 ? true : undefined,
    );

    // Requests all through the restart: every one is answered from the config the gateway holds.
    let restarting = true;
    const statuses: number[] = [];
    const traffic = (async () => {
      while (restarting) {
        statuses.push(await statusFor(first));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const restartStarted = Date.now();
    await cluster.restartApiserver();
    const restartedAt = Date.now();
    restarting = false;
    await traffic;
    console.log(
      `API server away for ${((restartedAt - restartStarted) / 1000).toFixed(1)} s; ${statuses.length} requests meanwhile`,
    );
    expect(statuses.length).toBeGreaterThan(10);
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect(gateway.process.child.exitCode).toBeNull();
    if (operator.process.child.exitCode !== null) {
      expect(operator.process.output()).toContain("leadership lost; exiting");
      console.log("the operator gave up its Lease during the outage and exited; started again");
      operator = await startOperator(system, { KUBECONFIG: cluster.kubeconfigPath });
    }

    const second = await mintedKey("second");
    await eventually(
      "the gateway to accept a key created after the restart",
      async () => ((await statusFor(second)) === 200 ? true : undefined),
      recoveryBoundMs,
    );
    const accepted = Date.now();
    await k(["delete", "apikey", "first", "-n", ns]);
    await eventually(
      "the gateway to refuse a key deleted after the restart",
      async () => ((await statusFor(first)) === 401 ? true : undefined),
      recoveryBoundMs,
    );
    console.log(
      `after the restart: new key accepted ${((accepted - restartedAt) / 1000).toFixed(1)} s later, deleted key refused ${((Date.now() - accepted) / 1000).toFixed(1)} s after its deletion`,
    );
    expect(operator.process.child.exitCode).toBeNull();
    expect(gateway.process.child.exitCode).toBeNull();
  });
});
