// Two operator processes against the real API server: one leads, the other waits; killing the leader
// hands over within the Lease duration, and the new leader adopts the replicas instead of duplicating them.
// On SIGTERM a leader gives its Lease up only if its reconciles finished within the grace.
// A leader whose caches cannot all sync (a kind it may not list) gives up and exits 1 rather than hold
// the Lease without working.
// The test plays the node-agents (test/operator-support.ts).
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoordinationV1Api } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { parse, stringify } from "yaml";
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
import { startModelHost } from "./support/node-agent.ts";
import { eventually } from "./support/processes.ts";

const ns = "op-leader";
const system = "op-leader-system";
const unsynced = "op-leader-unsynced";
/** A user with every right the operator needs except listing Nodes (bound in the test). */
const noNodesUser = "pomona-test-no-nodes";
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
  await createNamespaces(ns, system, unsynced);
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
  await kubectl(["delete", "namespace", ns, system, unsynced, "--wait=false"]);
  await kubectl(["delete", "clusterrole,clusterrolebinding", noNodesUser, "--ignore-not-found"]);
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
  it("on SIGTERM with a reconcile still running after the grace, a leader leaves its Lease to expire", async () => {
    // A model host that accepts the request and never answers: the pass reading its GGUF header is
    // still running when the 10 s grace ends (the header fetch's own idle cut is 60 s).
    const host = await startModelHost();
    try {
      const fourth = await startOperator(system, {
        POMONA_OPERATOR_ID: "operator-four",
        POMONA_MODEL_ALLOWED_HOSTS: host.url,
        NODE_EXTRA_CA_CERTS: host.caFile,
      });
      operators.push(fourth);
      await fourth.process.waitFor(/caches synced/, leaseDurationMs + 30_000);
      await kubectlOk(
        ["apply", "-n", ns, "-f", "-"],
        JSON.stringify({
          apiVersion: "pomona.dev/v1alpha1",
          kind: "InferenceModel",
          metadata: { name: "stuck" },
          spec: { source: { url: `${host.url}/hang` } },
        }),
      );
      await host.hangRequested;

      const exited = new Promise<number | null>((resolve) => fourth.process.child.once("exit", (c) => resolve(c)));
      fourth.process.child.kill("SIGTERM");
      expect(await exited).toBe(0);
      expect(fourth.process.output()).toMatch(/reconciles still running after the grace; leaving the lease to expire/);
      // Not given up: it still names operator-four until it expires.
      expect(await holder()).toBe("operator-four");
    } finally {
      await kubectl(["delete", "inferencemodel", "stuck", "-n", ns, "--wait=false"]);
      await host.close();
    }
  }, 120_000);

  it("a leader whose caches do not sync in time names the informers that did not and exits 1", async () => {
    const rules = [
      { apiGroups: ["pomona.dev", "coordination.k8s.io", "certificates.k8s.io", "events.k8s.io"], resources: ["*"] },
      { apiGroups: [""], resources: ["secrets", "events", "configmaps", "namespaces"] },
    ].map((r) => ({ ...r, verbs: ["*"] }));
    await kubectlOk(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: "v1",
        kind: "List",
        items: [
          { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name: noNodesUser }, rules },
          {
            apiVersion: "rbac.authorization.k8s.io/v1",
            kind: "ClusterRoleBinding",
            metadata: { name: noNodesUser },
            roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: noNodesUser },
            subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: noNodesUser }],
          },
        ],
      }),
    );
    // The test's admin kubeconfig, acting as that user.
    const config = parse(readFileSync(inject("kubeconfig"), "utf8")) as { users: { user: Record<string, unknown> }[] };
    for (const u of config.users) u.user.as = noNodesUser;
    const path = join(tmpdir(), `op-leader-no-nodes-${process.pid}.kubeconfig`);
    writeFileSync(path, stringify(config), { mode: 0o600 });

    const limited = await startOperator(unsynced, {
      KUBECONFIG: path,
      POMONA_OPERATOR_ID: "operator-no-nodes",
      POMONA_CACHE_SYNC_TIMEOUT_SECONDS: "3",
    });
    operators.push(limited);
    const exited = new Promise<number | null>((resolve) => limited.process.child.once("exit", (code) => resolve(code)));
    const code = await exited;
    rmSync(path, { force: true });
    expect(code).toBe(1);
    const output = limited.process.output();
    expect(output).toMatch(/became leader/);
    expect(output).toMatch(/caches did not sync in time; exiting/);
    const line = output.split("\n").find((l) => l.includes("caches did not sync in time"));
    expect(JSON.parse(line ?? "{}").notSynced).toEqual(["/api/v1/nodes"]);
    expect(output).not.toMatch(/caches synced/);
  }, 90_000);
});
