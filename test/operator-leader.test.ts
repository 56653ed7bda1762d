// Two operator processes against the real API server: one leads, the other waits with its caches already
// synced (its metrics and log say so); killing the leader hands over within the Lease duration, the new
// leader's first reconcile comes with no list made after it won, and it adopts the replicas instead of
// duplicating them. On SIGTERM a leader gives its Lease up only if its reconciles finished within the grace.
// An operator whose caches cannot all sync (a kind it may not list) never campaigns: it exits 1 naming
// them, without ever holding the Lease.
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

const readLease = async (namespace = system) => {
  try {
    return await kubeConfig()
      .makeApiClient(CoordinationV1Api)
      .readNamespacedLease({ name: operatorLeaseName, namespace });
  } catch (err) {
    if ((err as { code?: number }).code === 404) return undefined;
    throw err;
  }
};
const holder = async (namespace = system) => (await readLease(namespace))?.spec?.holderIdentity;

/** An operator's /metrics, each metric's samples summed over its labels. */
async function scrape(port: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const sums = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^(\w+)(?:\{[^}]*\})? (\S+)$/.exec(line);
    if (m?.[1] && m[2]) sums.set(m[1], (sums.get(m[1]) ?? 0) + Number(m[2]));
  }
  return sums;
}

/** The operator's JSON log lines, in order. */
const logLines = (o: TestOperator) =>
  o.process
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { time: string; msg: string });

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
  it("one of two operators acts; the standby, caches already synced, takes over within the Lease duration and works without listing", async () => {
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
    if (!standby) throw new Error("no standby");
    // The standby's caches are warm before it leads: synced, ready, each informer listed once; it has
    // reconciled nothing and started no controller.
    await standby.process.waitFor(/caches synced/);
    const beforeTakeover = await scrape(standby.port);
    expect(beforeTakeover.get("pomona_operator_caches_synced")).toBe(1);
    expect(beforeTakeover.get("pomona_operator_leader")).toBe(0);
    expect(beforeTakeover.get("pomona_operator_reconciles_total") ?? 0).toBe(0);
    const listsBeforeTakeover = beforeTakeover.get("pomona_operator_cache_lists_total") ?? 0;
    expect(listsBeforeTakeover).toBeGreaterThan(0);
    expect((await fetch(`http://127.0.0.1:${standby.port}/readyz`)).status).toBe(200);
    expect(standby.process.output()).not.toMatch(/controllers started/);

    const killedAt = Date.now();
    await leader?.process.stop("SIGKILL");
    // The dead leader's last renewal: the Lease is free from its expiry on.
    const lastRenewal = await readLease();
    const expiresAt =
      new Date(lastRenewal?.spec?.renewTime ?? 0).getTime() + (lastRenewal?.spec?.leaseDurationSeconds ?? 0) * 1000;
    await standby.process.waitFor(/became leader/, leaseDurationMs + 10_000);
    const handover = Date.now() - killedAt;
    expect(handover).toBeLessThan(leaseDurationMs + 5_000);
    expect(await holder()).not.toBe(leaderId);

    // Its first reconcile as leader needed no list: the lists counted are those made before it won.
    await standby.process.waitFor(/first reconcile done/);
    expect((await scrape(standby.port)).get("pomona_operator_cache_lists_total")).toBe(listsBeforeTakeover);
    const lines = logLines(standby);
    const at = (msg: string) => lines.findIndex((l) => l.msg === msg);
    expect(lines.filter((l) => l.msg === "caches synced")).toHaveLength(1);
    expect(at("caches synced")).toBeLessThan(at("became leader"));
    expect(at("became leader")).toBeLessThan(at("first reconcile done"));
    const timeOf = (msg: string) => new Date(lines[at(msg)]?.time ?? 0).getTime();
    console.log(
      `takeover: Lease expiry → became leader ${timeOf("became leader") - expiresAt} ms (a standby tries every 2 s), ` +
        `became leader → first reconcile done ${timeOf("first reconcile done") - timeOf("became leader")} ms, ` +
        `Lease expiry → first reconcile done ${timeOf("first reconcile done") - expiresAt} ms`,
    );

    // The new leader adopts what exists: the same two replicas, no duplicates.
    await standby.process.waitFor(/controllers started/);
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
    await standby.process.waitFor(/leadership lost/, 15_000);
    await eventually("the deposed leader to exit", async () =>
      standby.process.child.exitCode !== null ? true : undefined,
    );
  }, 90_000);

  it("on SIGTERM a leader finishes, gives its Lease up and exits 0, so a standby need not wait for expiry", async () => {
    // The previous test left the Lease with a made-up holder: free it as an expired holder would.
    await kubectl(["delete", "lease", operatorLeaseName, "-n", system]);
    const third = await startOperator(system, { POMONA_OPERATOR_ID: "operator-three" });
    operators.push(third);
    await third.process.waitFor(/controllers started/);
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
      await fourth.process.waitFor(/controllers started/, leaseDurationMs + 30_000);
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

  it("an operator whose caches do not sync in time is not ready, never campaigns, names the informers that did not and exits 1", async () => {
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
    // Nodes can never be listed: not ready from the start (it exits 3 s later).
    expect((await fetch(`http://127.0.0.1:${limited.port}/readyz`)).status).toBe(503);
    const code = await exited;
    rmSync(path, { force: true });
    expect(code).toBe(1);
    const output = limited.process.output();
    expect(output).not.toMatch(/became leader/);
    expect(await readLease(unsynced)).toBeUndefined();
    expect(output).toMatch(/caches did not sync in time; exiting/);
    const line = output.split("\n").find((l) => l.includes("caches did not sync in time"));
    expect(JSON.parse(line ?? "{}").notSynced).toEqual(["/api/v1/nodes"]);
    expect(output).not.toMatch(/caches synced/);
  }, 90_000);
});
