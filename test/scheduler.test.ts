// The scheduler as plain functions: no API server, the same decisions the operator makes.
import { describe, expect, it } from "vitest";
import { inferenceNodeTaint, labels } from "../crds/api/index.ts";
import { parseQuantity } from "../crds/api/quantity.ts";
import { replicaMemory } from "../operator/scheduler/memory.ts";
import { type ReplicaRequest, scheduleReplicas, tolerates } from "../operator/scheduler/schedule.ts";
import { nodeView as node } from "./support/node-view.ts";

const GiB = 2 ** 30;
const request = (gib: number, extra: Partial<ReplicaRequest> = {}): ReplicaRequest => ({
  memoryBytes: gib * GiB,
  strategy: "Spread",
  ...extra,
});
const none = new Map<string, number>();

describe("scheduleReplicas", () => {
  it("spreads replicas over the emptiest nodes, and bin-packs onto the fullest that fits", () => {
    const nodes = [node("a", 8), node("b", 8), node("c", 8)];
    const used = new Map([["a", 4 * GiB]]);
    expect(scheduleReplicas(request(1), nodes, used, 3).placed.sort()).toEqual(["a", "b", "c"]);
    expect(scheduleReplicas(request(1), nodes, used, 1).placed).toEqual(["b"]);
    expect(scheduleReplicas(request(1, { strategy: "BinPack" }), nodes, used, 3).placed).toEqual(["a", "a", "a"]);
  });

  it("never overcommits, also across replicas placed in the same pass", () => {
    const result = scheduleReplicas(request(3), [node("a", 8), node("b", 4)], new Map([["b", 2 * GiB]]), 4);
    expect(result.placed.sort()).toEqual(["a", "a"]);
    expect(result.unplaced).toBe(2);
    expect(result.reason).toBe("0/2 nodes fit: 2 lack memory (need 3.0 GiB, most free 2.0 GiB)");
  });

  it("explains every reason a node was refused", () => {
    const nodes = [
      node("small", 2),
      node("small2", 1),
      node("down", 64, { ready: false }),
      node("silent", 64, { leaseFresh: false }),
      node("plain", 64, { labels: {} }),
      node("gpu", 64, { taints: [{ key: "gpu", value: "true", effect: "NoSchedule" }] }),
    ];
    const result = scheduleReplicas(request(3.1), nodes, none, 1);
    expect(result.placed).toEqual([]);
    expect(result.reason).toBe(
      "0/6 nodes fit: 2 lack memory (need 3.1 GiB, most free 2.0 GiB), 1 is not Ready, 1 has an expired Lease, 1 is not an inference node, 1 has a taint the model does not tolerate",
    );
  });

  it("honours the node selector and tolerations; the inference-node taint is tolerated implicitly", () => {
    const nodes = [
      node("cpu", 16, { labels: { [labels.inferenceNode]: "true", [labels.accelerator]: "cpu" } }),
      node("metal", 16, {
        labels: { [labels.inferenceNode]: "true", [labels.accelerator]: "metal" },
        taints: [{ ...inferenceNodeTaint }, { key: "dedicated", value: "ml", effect: "NoSchedule" }],
      }),
    ];
    const selector = { [labels.accelerator]: "metal" };
    expect(scheduleReplicas(request(1, { nodeSelector: selector }), nodes, none, 1).reason).toMatch(
      /1 does not match the node selector, 1 has a taint/,
    );
    const tolerated = request(1, {
      nodeSelector: selector,
      tolerations: [{ key: "dedicated", operator: "Equal", value: "ml", effect: "NoSchedule" }],
    });
    expect(scheduleReplicas(tolerated, nodes, none, 1).placed).toEqual(["metal"]);
    expect(
      tolerates([{ key: "dedicated", operator: "Exists" }], { key: "dedicated", value: "x", effect: "NoExecute" }),
    ).toBe(true);
    expect(
      tolerates([{ key: "dedicated", operator: "Equal", value: "ml" }], {
        key: "dedicated",
        value: "x",
        effect: "NoSchedule",
      }),
    ).toBe(false);
    expect(tolerates([], { key: "anything", effect: "PreferNoSchedule" })).toBe(true);
  });

  it("prefers a node that already caches the file, and spreads away from nodes holding the model", () => {
    const nodes = [node("a", 8), node("b", 8, { cachedModels: ["abc"] })];
    expect(scheduleReplicas(request(1, { sha256: "abc" }), nodes, none, 1).placed).toEqual(["b"]);
    expect(scheduleReplicas(request(1, { avoidNodes: ["a"] }), [node("a", 8), node("b", 6)], none, 1).placed).toEqual([
      "b",
    ]);
  });
});

describe("replica memory", () => {
  it("takes spec.memory as a quantity", async () => {
    expect(parseQuantity("64Mi")).toBe(64 * 2 ** 20);
    expect(parseQuantity("3.5Gi")).toBe(3.5 * GiB);
    expect(parseQuantity("2G")).toBe(2e9);
    expect(parseQuantity("lots")).toBeUndefined();
    const spec = {
      source: { hf: "hf:a/b:Q4" },
      engine: { contextSize: 4096, parallelSequences: 4, embeddings: true },
      replicas: 1,
      placement: { strategy: "Spread" as const },
      rollout: { maxSurge: 1, maxUnavailable: 0 },
      memory: "1Gi",
    };
    expect(await replicaMemory(spec)).toEqual({ bytes: GiB });
  });

  it("estimates from the header as weights + context + overhead, and refuses when it cannot read it", async () => {
    const base = {
      engine: { contextSize: 4096, parallelSequences: 4, embeddings: true },
      replicas: 1,
      placement: { strategy: "Spread" as const },
      rollout: { maxSurge: 1, maxUnavailable: 0 },
    };
    const header = async () => ({ weightsBytes: 400 * 2 ** 20, contextBytes: 100 * 2 ** 20 });
    expect(await replicaMemory({ ...base, source: { path: "/models/x.gguf" } }, { readHeader: header })).toEqual({
      bytes: 564 * 2 ** 20,
    });
    const hf = await replicaMemory({ ...base, source: { hf: "hf:a/b:Q4" } });
    expect(hf).toMatchObject({ error: expect.stringMatching(/set spec.memory/) });
    const read: string[] = [];
    const hfFile = await replicaMemory(
      { ...base, source: { hf: "hf:a/b/dir/x.gguf" } },
      {
        hfEndpoint: "http://mirror.example",
        readHeader: async (location) => {
          read.push(location);
          return header();
        },
      },
    );
    expect(hfFile).toEqual({ bytes: 564 * 2 ** 20 });
    expect(read).toEqual(["http://mirror.example/a/b/resolve/main/dir/x.gguf"]);
    const missing = await replicaMemory({ ...base, source: { path: "/nonexistent/model.gguf" } });
    expect(missing).toMatchObject({ error: expect.stringMatching(/could not be read/) });
  });
});
