// compileGatewayConfig as a plain function, the debounce that turns a burst of changes into one publication, and
// the publisher against the real API server.
import { createHash } from "node:crypto";
import { CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { describe, expect, inject, it, vi } from "vitest";
import {
  type ApiKey,
  bucketSecretName,
  CONFIG_DATA_KEY,
  gatewayConfig,
  type InferenceModel,
  KEY_BUCKETS,
  type ModelReplica,
  type RateLimitPolicy,
} from "../crds/api/index.ts";
import { KubeRest } from "../kube/rest.ts";
import { compileGatewayConfig } from "../operator/gateway-config/compile.ts";
import { debounce, nextConfigVersion } from "../operator/gateway-config/loop.ts";
import { GatewayConfigPublisher } from "../operator/gateway-config/publish.ts";

const ns = "team";
const hash = (s: string) => createHash("sha256").update(s).digest("hex");
const model = (name: string, extra: Partial<InferenceModel["spec"]> = {}): InferenceModel => ({
  apiVersion: "pomona.dev/v1alpha1",
  kind: "InferenceModel",
  metadata: { name, namespace: ns },
  spec: {
    source: { hf: "hf:a/b:Q4" },
    engine: { contextSize: 4096, parallelSequences: 4, embeddings: true },
    replicas: 2,
    placement: { strategy: "Spread" },
    rollout: { maxSurge: 1, maxUnavailable: 0 },
    ...extra,
  },
});
const replica = (name: string, model: string, status: ModelReplica["status"]): ModelReplica => ({
  apiVersion: "pomona.dev/v1alpha1",
  kind: "ModelReplica",
  metadata: { name, namespace: ns, labels: { "pomona.dev/model": model } },
  spec: {
    model,
    nodeName: "mac-1",
    source: { hf: "hf:a/b:Q4" },
    engine: { contextSize: 4096, parallelSequences: 4, embeddings: true },
    memoryBytes: 1,
    templateHash: "x",
  },
  status,
});
const key = (name: string, spec: Partial<ApiKey["spec"]> = {}, withHash = true): ApiKey => ({
  apiVersion: "pomona.dev/v1alpha1",
  kind: "ApiKey",
  metadata: { name, namespace: ns },
  spec: { owner: "o", disabled: false, ...spec },
  ...(withHash ? { status: { hash: hash(name) } } : {}),
});
const policy: RateLimitPolicy = {
  apiVersion: "pomona.dev/v1alpha1",
  kind: "RateLimitPolicy",
  metadata: { name: "standard", namespace: ns },
  spec: { requestsPerMinute: 60, scope: "PerKey", priorityClass: "batch" },
};

describe("compileGatewayConfig", () => {
  it("routes only to Ready replicas with an endpoint, weighted by measured tokens/s, each with its sequences as slots", () => {
    const compiled = compileGatewayConfig({
      models: [
        model("chat", { aliases: ["small"], fallbacks: ["other"], rateLimitPolicy: "standard" }),
        model("idle", { rateLimitPolicy: "missing" }),
      ],
      replicas: [
        replica("chat-aaaaa", "chat", {
          phase: "Ready",
          endpoint: "http://n1/replicas/team/chat-aaaaa",
          tokensPerSecond: 42,
        }),
        replica("chat-bbbbb", "chat", { phase: "Ready", endpoint: "http://n2/replicas/team/chat-bbbbb" }),
        replica("chat-ccccc", "chat", { phase: "Loading" }),
      ],
      keys: [],
      policies: [policy],
      now: new Date(),
    });
    const chat = compiled.models.find((m) => m.name === "chat");
    expect(chat?.endpoints.map((e) => [e.replica, e.weight, e.slots])).toEqual([
      ["chat-aaaaa", 42, 4],
      ["chat-bbbbb", 1, 4],
    ]);
    expect(chat).toMatchObject({ aliases: ["small"], fallbacks: ["other"], rateLimitPolicy: "standard" });
    const idle = compiled.models.find((m) => m.name === "idle");
    expect(idle?.endpoints).toEqual([]);
    // Kept though missing, so the gateway refuses the model instead of serving it unlimited.
    expect(idle?.rateLimitPolicy).toBe("missing");
  });

  it("carries what /v1/models reports: the context one request holds and whether the model embeds", () => {
    const compiled = compileGatewayConfig({
      models: [
        model("chat"),
        model("narrow", { engine: { contextSize: 1000, parallelSequences: 3, embeddings: false } }),
      ],
      replicas: [],
      keys: [],
      policies: [],
      now: new Date(),
    });
    expect(compiled.models.map((m) => [m.name, m.contextSize, m.sequenceContextSize, m.embeddings])).toEqual([
      ["chat", 4096, 1024, true],
      // Rounded down, as the node-agent sizes each of the 3 sequences.
      ["narrow", 1000, 333, false],
    ]);
  });

  it("lists usable keys by hash and leaves out disabled, expired, unminted and policy-less ones", () => {
    const compiled = compileGatewayConfig({
      models: [],
      replicas: [],
      keys: [
        key("good", { models: ["chat"], rateLimitPolicy: "standard", expiresAt: "2099-01-01T00:00:00Z" }),
        key("off", { disabled: true }),
        key("old", { expiresAt: "2020-01-01T00:00:00Z" }),
        key("pending", {}, false),
        key("orphan", { rateLimitPolicy: "missing" }),
      ],
      policies: [policy],
      now: new Date(),
    });
    expect(compiled.keys).toEqual([
      {
        hash: hash("good"),
        namespace: ns,
        name: "good",
        owner: "o",
        models: ["chat"],
        rateLimitPolicy: "standard",
        expiresAt: "2099-01-01T00:00:00Z",
      },
    ]);
    expect(compiled.policies).toEqual([
      { namespace: ns, name: "standard", requestsPerMinute: 60, scope: "PerKey", priorityClass: "batch" },
    ]);
  });

  it("compiles 100,000 keys into a config the schema accepts", () => {
    const keys = Array.from({ length: 100_000 }, (_, i) => key(`k-${i}`));
    const compiled = compileGatewayConfig({ models: [], replicas: [], keys, policies: [], now: new Date() });
    const config = gatewayConfig.parse({ version: 1, generatedAt: new Date().toISOString(), ...compiled });
    expect(config.keys).toHaveLength(100_000);
    expect(new Set(config.keys.map((k) => k.hash)).size).toBe(100_000);
  });
});

describe("debounce", () => {
  // Fake timers: the clock is the subject here, and a loaded machine must not change the answer.
  it("fires a lone change at once, and turns a burst after it into one call no later than the maximum delay", () => {
    vi.useFakeTimers();
    try {
      let calls = 0;
      const fire = debounce(() => calls++, 50, 150);
      fire();
      expect(calls).toBe(1);
      // Changes right after it are gathered: one call, 50 ms after the last of them.
      for (let t = 0; t < 100; t += 10) {
        fire();
        vi.advanceTimersByTime(10);
      }
      expect(calls).toBe(1);
      vi.advanceTimersByTime(50);
      expect(calls).toBe(2);
      // A burst that never pauses still fires once the maximum delay has passed.
      for (let t = 0; t < 200; t += 10) {
        fire();
        vi.advanceTimersByTime(10);
      }
      expect(calls).toBe(3);
      vi.advanceTimersByTime(1000);
      expect(calls).toBe(4);
      // After a quiet spell, the next change again waits for nothing.
      fire();
      expect(calls).toBe(5);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("nextConfigVersion", () => {
  it("starts at the clock without any state, and stays above the last version when that is ahead", () => {
    expect(nextConfigVersion(0, 1_764_000_000_000)).toBe(1_764_000_000_000);
    // Versions from before this rule (small counters) are passed at once.
    expect(nextConfigVersion(41, 1_764_000_000_000)).toBe(1_764_000_000_000);
    // Two publications in one millisecond, or a clock that stepped back: still strictly increasing.
    expect(nextConfigVersion(1_764_000_000_000, 1_764_000_000_000)).toBe(1_764_000_000_001);
    expect(nextConfigVersion(1_764_000_005_000, 1_764_000_000_000)).toBe(1_764_000_005_001);
  });
});

describe("GatewayConfigPublisher", () => {
  it("writes every bucket once, a restarted operator none, and a bucket edited by hand again", async () => {
    const kc = new KubeConfig();
    kc.loadFromFile(inject("kubeconfig"));
    const objects = new KubeRest(kc);
    const core = kc.makeApiClient(CoreV1Api);
    const namespace = `publish-${Date.now()}`;
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    const keys = Array.from({ length: 500 }, (_, i) => key(`k-${i}`));
    const compiled = compileGatewayConfig({ models: [], replicas: [], keys, policies: [], now: new Date() });
    const config = gatewayConfig.parse({ version: 1, generatedAt: new Date().toISOString(), ...compiled });

    expect((await new GatewayConfigPublisher(objects, namespace).publish(config)).bucketsWritten).toBe(KEY_BUCKETS);
    const restarted = new GatewayConfigPublisher(objects, namespace);
    expect((await restarted.publish({ ...config, version: 2 })).bucketsWritten).toBe(0);

    await core.patchNamespacedSecret(
      { name: bucketSecretName(3), namespace, body: { data: { [CONFIG_DATA_KEY]: "AA==" } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    const again = new GatewayConfigPublisher(objects, namespace);
    expect((await again.publish({ ...config, version: 3 })).bucketsWritten).toBe(1);
    await core.deleteNamespace({ name: namespace });
  });
});
