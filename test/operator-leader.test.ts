// Two operator processes against the real API server: one leads, the other waits; killing the leader
// hands over within the Lease duration, and the new leader adopts the replicas instead of duplicating them.
// The test plays the node-agents (test/operator-support.ts).
import { CoordinationV1Api } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { operatorLeaseName } from "../crds/api/index.ts";
import {
  createNamespaces,
  kubeConfig,
  listReplicas,
  startOperator,
  type TestOperator,
  VirtualNodes,
} from "./operator-support.ts";
import { installCrds } from "./support/crds.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";
import { eventually } from "./support/processes.ts";

const ns = "op-leader";
const system = "op-leader-system";
const nodes = new VirtualNodes();
const operators: TestOperator[] = [];
/** The operator's Lease duration (operator/main.ts). */
const leaseDurationMs = 15_000;

const holder = async () => {
  const lease = await kubeConfig()
    .makeApiClient(CoordinationV1Api)
    .readNamespacedLease({ name: operatorLeaseName, namespace: system });
  return lease.spec?.holderIdentity;
};

beforeAll(async () => {
  await installCrds();
  await createNamespaces(ns, system);
  await nodes.add("op-leader-node-a", "8Gi");
  await nodes.add("op-leader-node-b", "8Gi");
  const [one, two] = await Promise.all([
    startOperator(system, { POMONA_OPERATOR_ID: "operator-one" }),
    startOperator(system, { POMONA_OPERATOR_ID: "operator-two" }),
  ]);
  operators.push(one, two);
});

afterAll(async () => {
  for (const o of operators) await o.process.stop();
  await nodes.removeAll();
  await kubectl(["delete", "namespace", ns, system, "--wait=false"]);
});

describe("operator leader election", () => {
  it("one of two operators acts; the standby takes over within the Lease duration without duplicating replicas", async () => {
    const leaderId = await eventually("a leader", async () => (await holder()) ?? undefined);
    const leader = operators.find(
      (o) => o.process.output().includes(`"identity":"${leaderId}"`) && o.process.output().includes("became leader"),
    );
    const standby = operators.find((o) => o !== leader);
    expect(leader).toBeDefined();
    expect(standby?.process.output()).not.toMatch(/became leader/);

    await kubectlOk(
      ["apply", "-n", ns, "-f", "-"],
      JSON.stringify({
        apiVersion: "pomona.dev/v1alpha1",
        kind: "InferenceModel",
        metadata: { name: "pair" },
        spec: { source: { url: "https://example.invalid/pair.gguf" }, memory: "1Gi", replicas: 2 },
      }),
    );
    const before = await eventually("two replicas", async () => {
      const r = await listReplicas(ns, "pair");
      return r.length === 2 ? r : undefined;
    });
    // The standby wrote nothing: every replica's creator is the one field manager of the leader's process.
    expect(standby?.process.output()).not.toMatch(/caches synced/);

    const killedAt = Date.now();
    await leader?.process.stop("SIGKILL");
    await standby?.process.waitFor(/became leader/, leaseDurationMs + 10_000);
    const handover = Date.now() - killedAt;
    expect(handover).toBeLessThan(leaseDurationMs + 5_000);
    expect(await holder()).not.toBe(leaderId);

    // The new leader adopts what exists: the same two replicas, no duplicates.
    await standby?.process.waitFor(/caches synced/);
    await new Promise((r) => setTimeout(r, 2_000));
    const after = await listReplicas(ns, "pair");
    expect(after.map((r) => r.metadata.name).sort()).toEqual(before.map((r) => r.metadata.name).sort());

    // And it acts.
    await kubectlOk(["scale", "inferencemodel", "pair", "-n", ns, "--replicas=3"]);
    await eventually("three replicas from the new leader", async () =>
      (await listReplicas(ns, "pair")).length === 3 ? true : undefined,
    );
    console.log(`leader handover took ${handover} ms`);
    // A leader that finds the Lease held by someone else stops acting at once: it exits.
    const renewTime = new Date().toISOString().replace("Z", "000Z");
    await kubectlOk([
      "patch",
      "lease",
      operatorLeaseName,
      "-n",
      system,
      "--type=merge",
      "-p",
      JSON.stringify({ spec: { holderIdentity: "someone-else", renewTime, leaseDurationSeconds: 60 } }),
    ]);
    await standby?.process.waitFor(/leadership lost/, 15_000);
    await eventually("the deposed leader to exit", async () =>
      standby?.process.child.exitCode !== null ? true : undefined,
    );
  }, 90_000);

  it("on SIGTERM a leader finishes, gives its Lease up and exits 0, so a standby need not wait for expiry", async () => {
    // The previous test left the Lease with a made-up holder: free it as an expired holder would.
    await kubectl(["delete", "lease", operatorLeaseName, "-n", system]);
    const third = await startOperator(system, { POMONA_OPERATOR_ID: "operator-three" });
    operators.push(third);
    await third.process.waitFor(/caches synced/);
    expect(await holder()).toBe("operator-three");

    const exited = new Promise<number | null>((resolve) => third.process.child.once("exit", (code) => resolve(code)));
    third.process.child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(third.process.output()).toMatch(/shutting down/);
    // Released, not merely left to expire (it would still name operator-three for 15 s).
    expect(await holder()).toBeUndefined();
  }, 90_000);
});
