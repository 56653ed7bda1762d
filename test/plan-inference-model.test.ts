// The InferenceModel controller's decisions as a plain function: plain objects in, the replicas to delete and
// create, the Events and the status out. No API server: the controller's real-server tests are in operator.test.ts.
import { V1MicroTime } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { API_VERSION, type InferenceModel, inferenceModelSpec, labels, type ModelReplica } from "../crds/api/index.ts";
import { isNodeLost } from "../operator/inference-model/node-view.ts";
import { type ModelPlanInput, planModel } from "../operator/inference-model/plan.ts";
import { ReplicaIndex } from "../operator/inference-model/replica-index.ts";
import { replicaWrites } from "../operator/inference-model/replica-writes.ts";
import { templateHash } from "../operator/inference-model/template.ts";
import { sameJson } from "../operator/same-json.ts";
import { nodeView as node } from "./support/node-view.ts";

const GiB = 2 ** 30;
const now = Date.parse("2026-01-01T00:00:00Z");

function model(spec: Record<string, unknown> = {}, status?: InferenceModel["status"]): InferenceModel {
  return {
    apiVersion: API_VERSION,
    kind: "InferenceModel",
    metadata: { name: "m", namespace: "ns", uid: "uid-m", generation: 1 },
    spec: inferenceModelSpec.parse({ source: { url: "https://models.example/m.gguf" }, memory: "1Gi", ...spec }),
    ...(status ? { status } : {}),
  };
}

function replica(
  name: string,
  nodeName: string,
  phase?: "Ready" | "Failed" | "Loading",
  of: InferenceModel = model(),
): ModelReplica {
  return {
    apiVersion: API_VERSION,
    kind: "ModelReplica",
    metadata: {
      name,
      namespace: "ns",
      uid: `uid-${name}`,
      labels: { [labels.model]: "m" },
      ownerReferences: [{ apiVersion: API_VERSION, kind: "InferenceModel", name: "m", uid: "uid-m", controller: true }],
    },
    spec: {
      model: "m",
      nodeName,
      source: of.spec.source,
      engine: of.spec.engine,
      memoryBytes: GiB,
      templateHash: templateHash(of.spec, GiB),
    },
    ...(phase
      ? {
          status: { phase, ...(phase === "Ready" ? { endpoint: `http://${nodeName}:8090` } : { message: "bad file" }) },
        }
      : {}),
  } as ModelReplica;
}

function plan(overrides: Partial<ModelPlanInput> = {}) {
  let n = 0;
  return planModel({
    model: model(),
    replicas: [],
    memory: { bytes: GiB },
    policyExists: true,
    nodeLost: () => false,
    nodes: [node("a"), node("b"), node("c")],
    usedBytes: new Map(),
    failures: undefined,
    degraded: undefined,
    now,
    nameReplica: (m) => `${m}-${++n}`,
    ...overrides,
  });
}

const condition = (p: ReturnType<typeof plan>, type: string) => p.status.conditions?.find((c) => c.type === type);

describe("planModel", () => {
  it("binds a new model's replica to the emptiest node and reports it in the status at once", () => {
    const p = plan({ usedBytes: new Map([["a", 4 * GiB]]) });
    expect(p.delete).toEqual([]);
    expect(p.create).toHaveLength(1);
    const created = p.create[0]!;
    expect(created.metadata).toMatchObject({
      name: "m-1",
      namespace: "ns",
      labels: { [labels.model]: "m" },
      ownerReferences: [{ kind: "InferenceModel", name: "m", uid: "uid-m", controller: true }],
    });
    expect(created.spec).toMatchObject({ nodeName: "b", memoryBytes: GiB, model: "m" });
    expect(p.events).toEqual([{ type: "Normal", reason: "ReplicaScheduled", message: "Replica m-1 bound to node b." }]);
    expect(p.status).toMatchObject({ observedGeneration: 1, replicas: 1, readyReplicas: 0, updatedReplicas: 1 });
    expect(condition(p, "Scheduled")).toMatchObject({ status: "True", reason: "ReplicasBound" });
    expect(condition(p, "Ready")).toMatchObject({ status: "False", message: "0/1 replicas are ready." });
    expect(p.statusChanged).toBe(true);
    expect(p.requeueAfterMs).toBeUndefined();
  });

  it("changes nothing once the replica exists and the status says so", () => {
    const first = plan();
    const again = plan({ model: model({}, first.status), replicas: first.create });
    expect(again.create).toEqual([]);
    expect(again.delete).toEqual([]);
    expect(again.statusChanged).toBe(false);
  });

  it("refuses to guess an unknown memory figure and looks again in a minute", () => {
    const p = plan({ memory: { error: "hf: sources need spec.memory", reason: "MemoryUnknown" } });
    expect(p.create).toEqual([]);
    expect(condition(p, "Scheduled")).toMatchObject({ status: "False", reason: "MemoryUnknown" });
    expect(p.events).toContainEqual({
      type: "Warning",
      reason: "MemoryUnknown",
      message: "hf: sources need spec.memory",
    });
    expect(p.requeueAfterMs).toBe(60_000);
    expect(p.status.memoryBytes).toBeUndefined();
  });

  it("explains a replica no node can take, counts it, and looks again in 5 s", () => {
    const p = plan({ nodes: [node("a", 0.5)] });
    expect(p.create).toEqual([]);
    expect(p.unplaced).toBe(1);
    const message =
      "1 of 1 replicas cannot be placed: 0/1 nodes fit: 1 lack memory (need 1.0 GiB, most free 512.0 MiB).";
    expect(condition(p, "Scheduled")).toMatchObject({ status: "False", reason: "Unschedulable", message });
    expect(p.events).toContainEqual({ type: "Warning", reason: "FailedScheduling", message });
    expect(p.requeueAfterMs).toBe(5_000);
  });

  it("replaces a Failed replica after a backoff, and reports the failure until the model is ready again", () => {
    const failed = replica("m-old", "a", "Failed");
    const p = plan({ replicas: [failed] });
    expect(p.delete).toEqual([failed]);
    // The first failure backs off a second before the replacement.
    expect(p.create).toEqual([]);
    expect(p.failures).toEqual({ count: 1, notBefore: now + 1000 });
    expect(p.requeueAfterMs).toBe(1000);
    expect(p.degraded).toEqual({ reason: "ReplicaFailed", message: "Replica m-old failed: bad file" });
    expect(condition(p, "Degraded")).toMatchObject({ status: "True", reason: "ReplicaFailed" });
    expect(p.events[0]).toMatchObject({ type: "Warning", reason: "ReplicaFailed" });
    expect(p.status.replicas).toBe(0);

    const later = plan({ failures: p.failures, degraded: p.degraded, now: now + 1000 });
    expect(later.create).toHaveLength(1);
    expect(condition(later, "Degraded")).toMatchObject({ status: "True", reason: "ReplicaFailed" });
    const ready = { ...later.create[0]!, status: { phase: "Ready" as const, endpoint: "http://b:8090" } };
    const recovered = plan({ replicas: [ready], failures: later.failures, degraded: later.degraded });
    expect(recovered.failures).toBeUndefined();
    expect(recovered.degraded).toBeUndefined();
    expect(recovered.status.endpoints).toEqual([{ replica: "m-1", node: "a", url: "http://b:8090" }]);
    // Nothing is remembered any more, so the next pass reports the model as it is.
    const next = plan({ model: model({}, recovered.status), replicas: [ready] });
    expect(condition(next, "Degraded")).toMatchObject({ status: "False", reason: "AsExpected" });
  });

  it("doubles the backoff with every failure", () => {
    const p = plan({ replicas: [replica("m-x", "a", "Failed")], failures: { count: 3, notBefore: 0 } });
    expect(p.failures).toEqual({ count: 4, notBefore: now + 8000 });
  });

  it("moves a replica off a lost node to another node", () => {
    const lost = replica("m-old", "a", "Ready");
    const p = plan({
      replicas: [lost],
      nodeLost: (n) => n === "a",
      nodes: [node("a", 8, { leaseFresh: false }), node("b")],
    });
    expect(p.delete).toEqual([lost]);
    expect(p.create.map((r) => r.spec.nodeName)).toEqual(["b"]);
    expect(p.degraded?.reason).toBe("NodeLost");
    expect(p.events.map((e) => e.reason)).toEqual(["NodeLost", "ReplicaScheduled"]);
  });

  it("scales down the replicas that are not ready first", () => {
    const replicas = [replica("m-1", "a", "Ready"), replica("m-2", "b"), replica("m-3", "c", "Ready")];
    const p = plan({ model: model({ replicas: 2 }), replicas });
    expect(p.delete.map((r) => r.metadata.name)).toEqual(["m-2"]);
    expect(p.events).toContainEqual({ type: "Normal", reason: "ScaledDown", message: "Scaled down to 2 replicas." });
    expect(p.status).toMatchObject({ replicas: 2, readyReplicas: 2 });
  });

  it("rolls out within the surge and keeps outdated ready replicas until new ones are ready", () => {
    const before = model();
    const after = model({ engine: { contextSize: 8192, parallelSequences: 4, embeddings: true } });
    const old = replica("m-old", "a", "Ready", before);
    const step1 = plan({ model: after, replicas: [old] });
    expect(step1.delete).toEqual([]);
    expect(step1.create).toHaveLength(1);
    expect(step1.status).toMatchObject({ replicas: 2, updatedReplicas: 1, readyReplicas: 1 });

    const fresh = { ...step1.create[0]!, metadata: { ...step1.create[0]!.metadata, uid: "uid-new" } };
    const notYet = plan({ model: after, replicas: [old, fresh] });
    expect(notYet.delete).toEqual([]);
    expect(notYet.create).toEqual([]);

    const readyNow = { ...fresh, status: { phase: "Ready" as const, endpoint: "http://b:8090" } };
    const done = plan({ model: after, replicas: [old, readyNow] });
    expect(done.delete).toEqual([old]);
    expect(done.status).toMatchObject({ replicas: 1, updatedReplicas: 1, readyReplicas: 1 });
  });

  it("leaves replicas of an earlier model of the same name alone", () => {
    const foreign = replica("m-foreign", "a", "Failed");
    foreign.metadata.ownerReferences = [{ apiVersion: API_VERSION, kind: "InferenceModel", name: "m", uid: "other" }];
    const p = plan({ replicas: [foreign] });
    expect(p.delete).toEqual([]);
    expect(p.create).toHaveLength(1);
  });

  it("reports whether the named RateLimitPolicy exists", () => {
    const missing = plan({ model: model({ rateLimitPolicy: "gold" }), policyExists: false });
    expect(condition(missing, "PolicyResolved")).toMatchObject({ status: "False", reason: "PolicyNotFound" });
    const found = plan({ model: model({ rateLimitPolicy: "gold" }), policyExists: true });
    expect(condition(found, "PolicyResolved")).toMatchObject({ status: "True", reason: "PolicyFound" });
    expect(condition(plan(), "PolicyResolved")).toBeUndefined();
  });

  it("never spends memory another replica already holds", () => {
    const p = plan({ nodes: [node("a", 2), node("b", 2)], usedBytes: new Map([["a", 2 * GiB]]) });
    expect(p.create.map((r) => r.spec.nodeName)).toEqual(["b"]);
  });
});

// The reconciler feeds the plan from the replica index and notes the plan's writes in it (replica-writes.ts)
// before they are sent. Only the API server's answers are faked here: a create that succeeds and a delete
// that fails with a 500, which a real server gives only when something is broken.
describe("the replica index between passes", () => {
  const api = (deleteError?: Error) => ({
    create: async () => {},
    delete: async () => {
      if (deleteError) throw deleteError;
    },
  });

  it("counts a created replica the cache has not shown yet, so the next pass does not create it again", async () => {
    const index = new ReplicaIndex();
    const writes = replicaWrites(index, api());
    const first = plan({ replicas: index.ofModel("ns", "m", now), usedBytes: index.usedBytes(now) });
    expect(first.create).toHaveLength(1);
    writes.expect(first, now);
    await Promise.all(first.create.map(writes.create));

    // The models watch woke the next pass before the replicas watch delivered the new replica.
    const second = plan({
      model: model({}, first.status),
      replicas: index.ofModel("ns", "m", now + 1000),
      usedBytes: index.usedBytes(now + 1000),
    });
    expect(second.create).toEqual([]);
    expect(second.delete).toEqual([]);
    // Assumed, it has no status: not ready.
    expect(second.status).toMatchObject({ replicas: 1, readyReplicas: 0 });
    expect(second.statusChanged).toBe(false);

    // Once the cache shows it, it counts once, not twice.
    const created = { ...first.create[0]!, metadata: { ...first.create[0]!.metadata, uid: "uid-new" } };
    index.observe("ns/m-1", created);
    expect(index.ofModel("ns", "m", now + 2000)).toEqual([created]);
    expect(index.usedBytes(now + 2000)).toEqual(new Map([[created.spec.nodeName, GiB]]));
  });

  it("counts a replica again when its delete fails, so the next pass deletes it again", async () => {
    const index = new ReplicaIndex();
    const failed = replica("m-old", "a", "Failed");
    index.observe("ns/m-old", failed);
    const writes = replicaWrites(index, api(Object.assign(new Error("etcd unavailable"), { code: 500 })));
    const first = plan({ replicas: index.ofModel("ns", "m", now) });
    expect(first.delete).toEqual([failed]);
    writes.expect(first, now);
    // While the delete is under way the replica is not the model's any more.
    expect(index.ofModel("ns", "m", now)).toEqual([]);
    await expect(writes.delete(failed)).rejects.toThrow("etcd unavailable");

    const again = plan({ replicas: index.ofModel("ns", "m", now + 1000), now: now + 1000 });
    expect(again.delete).toEqual([failed]);
  });

  it("hides a deleted replica until the cache shows it gone; a 404 is a delete done", async () => {
    const index = new ReplicaIndex();
    const failed = replica("m-old", "a", "Failed");
    index.observe("ns/m-old", failed);
    const writes = replicaWrites(index, api(Object.assign(new Error("not found"), { code: 404 })));
    writes.expect({ create: [], delete: [failed] }, now);
    await writes.delete(failed);
    expect(index.ofModel("ns", "m", now)).toEqual([]);
    index.observe("ns/m-old", undefined);
    expect(index.ofModel("ns", "m", now)).toEqual([]);
    expect(index.usedBytes(now)).toEqual(new Map());
  });
});

// The node-loss tracker and the plan's nodeLost both use this rule (node-view.ts).
describe("isNodeLost", () => {
  const graceMs = 40_000;
  const created = (ms: number) => ({ metadata: { name: "a", creationTimestamp: new Date(ms) } });
  const lease = (renewed: number) => ({
    metadata: { name: "a" },
    spec: { renewTime: new V1MicroTime(renewed), leaseDurationSeconds: 40 },
  });

  it("gives a Node without a Lease yet the grace from its creation, not lost at once", () => {
    expect(isNodeLost(created(now - 1000), undefined, graceMs, now)).toBe(false);
    expect(isNodeLost(created(now - graceMs - 1), undefined, graceMs, now)).toBe(true);
  });

  it("loses a node the grace after its Lease expired, and a node whose Node is gone at once", () => {
    expect(isNodeLost(created(0), lease(now - 40_000 - graceMs), graceMs, now)).toBe(false);
    expect(isNodeLost(created(0), lease(now - 40_000 - graceMs - 1), graceMs, now)).toBe(true);
    expect(isNodeLost(undefined, lease(now), graceMs, now)).toBe(true);
  });
});

describe("sameJson", () => {
  it("ignores the order of object keys and undefined fields, not values or array order", () => {
    expect(sameJson({ a: 1, b: [1, { c: 2 }] }, { b: [1, { c: 2 }], a: 1, d: undefined })).toBe(true);
    expect(sameJson({ a: 1 }, { a: 2 })).toBe(false);
    expect(sameJson([1, 2], [2, 1])).toBe(false);
    expect(sameJson({ a: 1 }, {})).toBe(false);
  });
});
