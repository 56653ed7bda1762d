// Node loss from Lease events (operator/inference-model/node-loss.ts), against the real API server: the
// test writes Nodes and their Leases in kube-node-lease as node-agents do, and the tracker follows them
// through the operator's informers.
// Must hold: a node whose Lease stops being renewed is lost once the Lease's duration and the grace have
// passed since the last renewal, never sooner; each renewal moves the node's one timer; a renewal after
// loss brings the node back; deleting a Node reports it lost and clears its timer, and once its Lease is
// gone too nothing is kept for it.
import { CoordinationV1Api, CoreV1Api, type V1Lease, V1MicroTime, type V1Node } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NodeLossTracker } from "../operator/inference-model/node-loss.ts";
import { isNodeLost, nodeLeaseNamespace } from "../operator/inference-model/node-view.ts";
import { Informer } from "../operator/runtime/informer.ts";
import type { Logger } from "../operator/runtime/log.ts";
import { kubeConfig } from "./operator-support.ts";
import { eventually } from "./support/processes.ts";

const graceMs = 1_000;
const leaseSeconds = 1;
const log: Logger = { info: () => {}, warn: () => {}, error: () => {}, child: () => log };
const core = kubeConfig().makeApiClient(CoreV1Api);
const leasesApi = kubeConfig().makeApiClient(CoordinationV1Api);
const nodes = new Informer<V1Node>(kubeConfig(), { path: "/api/v1/nodes", kind: "Node" }, log);
const leases = new Informer<V1Lease>(
  kubeConfig(),
  {
    path: `/apis/coordination.k8s.io/v1/namespaces/${nodeLeaseNamespace}/leases`,
    kind: "Lease",
  },
  log,
);

type Seen = { node: string; what: "lost" | "back"; at: number };
const seen: Seen[] = [];
const waiters: { match: (s: Seen) => boolean; resolve: (s: Seen) => void }[] = [];
const record = (s: Seen) => {
  seen.push(s);
  for (const w of waiters.filter((w) => w.match(s))) w.resolve(s);
};
/** Resolves when the tracker reports `what` for `node` (or already has since `from`). */
function reported(node: string, what: Seen["what"], from = 0): Promise<Seen> {
  const match = (s: Seen) => s.node === node && s.what === what && s.at >= from;
  const already = seen.find(match);
  if (already) return Promise.resolve(already);
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`timed out waiting for ${node} ${what}`)), 60_000);
    waiters.push({
      match,
      resolve: (s) => {
        clearTimeout(deadline);
        resolve(s);
      },
    });
  });
}

const tracker = new NodeLossTracker({
  nodes,
  leases,
  graceMs,
  boundNodes: () => [],
  onLost: (node) => record({ node, what: "lost", at: Date.now() }),
  onBack: (node) => record({ node, what: "back", at: Date.now() }),
});

/** Write the node's Lease as renewed now; returns the renewal time it holds. */
async function renew(name: string, durationSeconds = leaseSeconds): Promise<number> {
  const now = new V1MicroTime();
  const spec = { holderIdentity: name, leaseDurationSeconds: durationSeconds, renewTime: now };
  try {
    const lease = await leasesApi.readNamespacedLease({ name, namespace: nodeLeaseNamespace });
    lease.spec = spec;
    await leasesApi.replaceNamespacedLease({ name, namespace: nodeLeaseNamespace, body: lease });
  } catch (err) {
    if ((err as { code?: number }).code !== 404) throw err;
    await leasesApi.createNamespacedLease({ namespace: nodeLeaseNamespace, body: { metadata: { name }, spec } });
  }
  return now.getTime();
}

/** Resolves once the informer holds the Lease renewed at `renewedAt` and the tracker has moved its timer. */
const timerMovedTo = (name: string, renewedAt: number, durationSeconds = leaseSeconds) =>
  eventually(`${name}'s timer to follow its renewal`, async () => {
    const due = tracker.dueAt(name);
    return due !== undefined && due >= renewedAt + durationSeconds * 1000 + graceMs ? due : undefined;
  });

/** The shared rule (node-view.ts) on what the informers hold now. */
const lostByRule = (name: string) =>
  isNodeLost(nodes.get(name), leases.get(name, nodeLeaseNamespace), graceMs, Date.now());

const created: string[] = [];
async function createNode(name: string): Promise<void> {
  created.push(name);
  await core.createNode({ body: { metadata: { name, labels: { "pomona.dev/test": "node-loss" } } } });
}

beforeAll(async () => {
  await Promise.all([nodes.start(), leases.start()]);
  tracker.start();
});

afterAll(async () => {
  tracker.stop();
  nodes.stop();
  leases.stop();
  for (const name of created) {
    await core.deleteNode({ name }).catch(() => {});
    await leasesApi.deleteNamespacedLease({ name, namespace: nodeLeaseNamespace }).catch(() => {});
  }
});

describe("node loss from Lease events", () => {
  it("loses a node only after its Lease's duration and the grace, moves the timer on each renewal, and brings it back on renewal", async () => {
    const name = "node-loss-a";
    await createNode(name);
    let renewedAt = await renew(name);
    await timerMovedTo(name, renewedAt);
    // Two renewals, each moving the one timer forward; the node is never lost meanwhile.
    for (let i = 0; i < 2; i++) {
      renewedAt = await renew(name);
      await timerMovedTo(name, renewedAt);
    }
    expect(seen.filter((s) => s.node === name)).toEqual([]);

    // The renewals stop: lost, and not before the last renewal plus the Lease's duration plus the grace.
    const lost = await reported(name, "lost");
    expect(lost.at).toBeGreaterThanOrEqual(renewedAt + leaseSeconds * 1000 + graceMs);
    // The plan's rule, on the same caches, agrees.
    expect(lostByRule(name)).toBe(true);
    expect(tracker.dueAt(name)).toBeUndefined();

    // Renewing again brings it back, with a timer again.
    const backFrom = Date.now();
    renewedAt = await renew(name, 60);
    await reported(name, "back", backFrom);
    expect(lostByRule(name)).toBe(false);
    await timerMovedTo(name, renewedAt, 60);
  }, 90_000);

  it("reports a deleted Node lost at once, clears its timer, and forgets it when its Lease goes too", async () => {
    const name = "node-loss-b";
    await createNode(name);
    // A long Lease: only the deletion can make this node lost during the test.
    const renewedAt = await renew(name, 300);
    await timerMovedTo(name, renewedAt, 300);

    const from = Date.now();
    await core.deleteNode({ name });
    await reported(name, "lost", from);
    expect(tracker.dueAt(name)).toBeUndefined();
    expect(tracker.tracks(name)).toBe(true);

    await leasesApi.deleteNamespacedLease({ name, namespace: nodeLeaseNamespace });
    await eventually(`${name} to be forgotten`, async () => (tracker.tracks(name) ? undefined : true));
    expect(seen.filter((s) => s.node === name && s.what === "lost")).toHaveLength(1);
  }, 60_000);
});
