// The operator as a real process against the real API server, driven with kubectl as a user types it.
// The test plays the node-agents (see test/operator-support.ts): virtual Nodes, their Leases, and
// ModelReplica status set to Ready.
import { createHash } from "node:crypto";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../controlplane/local-control-plane.ts";
import { type ApiKey, type InferenceModel, keyedHash, keyHashingSecret, parseHashingKeys } from "../crds/api/index.ts";
import {
  createNamespaces,
  listReplicas,
  markReady,
  readGatewayConfig,
  startOperator,
  type TestOperator,
  VirtualNodes,
} from "./operator-support.ts";
import { installCrds, repoRoot } from "./support/crds.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";
import { eventually } from "./support/processes.ts";

const ns = "op-examples";
const system = "op-examples-system";
const nodes = new VirtualNodes();
let operator: TestOperator;

const getJson = async <T>(args: string[]): Promise<T> => JSON.parse(await kubectlOk([...args, "-o", "json"])) as T;
const model = (name: string) => getJson<InferenceModel>(["get", "inferencemodel", name, "-n", ns]);
const condition = (m: InferenceModel, type: string) => m.status?.conditions?.find((c) => c.type === type);

beforeAll(async () => {
  await installCrds();
  await createNamespaces(ns, system);
  await nodes.add("op-node-a", "4Gi");
  await nodes.add("op-node-b", "4Gi");
  await nodes.add("op-node-c", "2Gi");
  // The Hub is outside our control: it is made unreachable (a closed local port), as it is offline.
  operator = await startOperator(system, { POMONA_HF_ENDPOINT: `http://127.0.0.1:${await freePort()}` });
});

afterAll(async () => {
  await operator?.process.stop();
  await nodes.removeAll();
  await kubectl(["delete", "namespace", ns, system, "--wait=false"]);
});

describe("operator", () => {
  it("places the examples on virtual nodes and routes to them once their replicas are Ready", async () => {
    await kubectlOk(["apply", "-n", ns, "-f", join(repoRoot, "examples")]);

    // The example model comes from hf: without spec.memory; with the Hub out of reach its size cannot be read, so it
    // is refused, not guessed.
    const refused = await eventually("the hf: model to be refused for unknown memory", async () => {
      const m = await model("qwen2.5-0.5b-instruct");
      return condition(m, "Scheduled")?.reason === "MemoryUnknown" ? m : undefined;
    });
    expect(condition(refused, "Scheduled")?.message).toMatch(
      /spec.memory is unset and the GGUF header of http:\/\/127.0.0.1:\d+\/bartowski\/\S+ could not be read/,
    );
    expect(await listReplicas(ns, "qwen2.5-0.5b-instruct")).toHaveLength(0);

    await kubectlOk([
      "patch",
      "inferencemodel",
      "qwen2.5-0.5b-instruct",
      "-n",
      ns,
      "--type=merge",
      "-p",
      '{"spec":{"memory":"1Gi"}}',
    ]);
    const replicas = await eventually("one replica per example model", async () => {
      const all = await listReplicas(ns);
      return all.length === 2 ? all : undefined;
    });
    for (const r of replicas) {
      expect(r.metadata.name).toMatch(new RegExp(`^${r.spec.model.replace(/\./g, "\\.")}-[a-z]{5}$`));
      expect(["op-node-a", "op-node-b", "op-node-c"]).toContain(r.spec.nodeName);
      expect(r.metadata.ownerReferences?.[0]).toMatchObject({
        kind: "InferenceModel",
        name: r.spec.model,
        controller: true,
      });
      expect(r.spec.memoryBytes).toBe(r.spec.model === "stories" ? 64 * 2 ** 20 : 2 ** 30);
    }

    for (const r of replicas) await markReady(r);
    const config = await eventually("a gateway config that routes to both replicas", async () => {
      const c = await readGatewayConfig(system);
      const routed = c?.models.filter((m) => m.namespace === ns && m.endpoints.length === 1) ?? [];
      return routed.length === 2 ? c : undefined;
    });
    const qwen = config?.models.find((m) => m.name === "qwen2.5-0.5b-instruct");
    expect(qwen?.aliases).toEqual(["qwen-small"]);
    expect(qwen?.rateLimitPolicy).toBe("standard");
    expect(qwen?.endpoints[0]).toMatchObject({
      replica: replicas.find((r) => r.spec.model === qwen?.name)?.metadata.name,
      weight: 20,
    });
    expect(config?.policies.map((p) => p.name).sort()).toEqual(["quickstart", "standard"]);

    // The policy both example objects name reports them; the model reports the policy found.
    const standard = await eventually("standard to count its users", async () => {
      const p = await getJson<{
        status?: { keys?: number; models?: number; conditions?: { type: string; status: string }[] };
      }>(["get", "ratelimitpolicy", "standard", "-n", ns]);
      return p.status?.keys === 1 && p.status.models === 1 ? p : undefined;
    });
    expect(standard.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
    expect(condition(await model("qwen2.5-0.5b-instruct"), "PolicyResolved")?.status).toBe("True");

    const ready = await eventually("the model to report Ready", async () => {
      const m = await model("stories");
      return condition(m, "Ready")?.status === "True" ? m : undefined;
    });
    expect(ready.status).toMatchObject({
      readyReplicas: 1,
      replicas: 1,
      updatedReplicas: 1,
      observedGeneration: ready.metadata.generation,
    });
    expect(ready.status?.endpoints?.[0]?.url).toMatch(/^http:\/\/10\.0\.0\.1:8090\/replicas\/op-examples\/stories-/);
  });

  it("mints a key into a Secret whose hash is the status hash, and the key appears nowhere else", async () => {
    const apiKey = await eventually("demo-key to get its hash", async () => {
      const k = await getJson<ApiKey>(["get", "apikey", "demo-key", "-n", ns]);
      return k.status?.hash ? k : undefined;
    });
    const secret = await getJson<{ data: { key: string }; metadata: { ownerReferences: { kind: string }[] } }>([
      "get",
      "secret",
      "demo-key",
      "-n",
      ns,
    ]);
    const key = Buffer.from(secret.data.key, "base64").toString("utf8");
    expect(key).toMatch(/^sk-pomona-[A-Za-z0-9_-]{43}$/);
    // Keyed: the HMAC under the operator's hashing key, not a plain sha256 anyone could check guesses against.
    const hashing = parseHashingKeys(
      (await getJson<{ data: Record<string, string> }>(["get", "secret", keyHashingSecret, "-n", system])).data,
    ).current;
    expect(apiKey.status?.hash).toBe(keyedHash(key, hashing));
    expect(apiKey.status?.hash).not.toBe(createHash("sha256").update(key).digest("hex"));
    expect(apiKey.status?.hashKeyId).toBe(hashing.id);
    expect(apiKey.status?.prefix).toBe(key.slice(0, 14));
    expect(secret.metadata.ownerReferences[0]?.kind).toBe("ApiKey");

    const config = await eventually("the key in the gateway config", async () => {
      const c = await readGatewayConfig(system);
      return c?.keys.some((k) => k.hash === apiKey.status?.hash) ? c : undefined;
    });
    expect(config.keys.find((k) => k.hash === apiKey.status?.hash)).toMatchObject({
      owner: "demo-team",
      rateLimitPolicy: "standard",
    });

    // Every object of every kind we may list, but the Secret itself, and the operator's logs.
    const kinds = (await kubectlOk(["api-resources", "--verbs=list", "-o", "name"])).split("\n").filter(Boolean);
    const encoded = secret.data.key;
    for (const kind of kinds) {
      const out = await kubectl(["get", kind, "-A", "-o", "json"]);
      const text = kind === "secrets" ? out.stdout.replace(`"key": "${encoded}"`, "") : out.stdout;
      expect(text.includes(key), `${kind} holds the key`).toBe(false);
      expect(text.includes(encoded), `${kind} holds the encoded key`).toBe(false);
    }
    expect(operator.process.output().includes(key)).toBe(false);

    // Rotation: delete the Secret, a new key is minted and the hash follows.
    await kubectlOk(["delete", "secret", "demo-key", "-n", ns]);
    const rotated = await eventually("a new hash after rotation", async () => {
      const k = await getJson<ApiKey>(["get", "apikey", "demo-key", "-n", ns]);
      return k.status?.hash && k.status.hash !== apiKey.status?.hash ? k : undefined;
    });
    const fresh = Buffer.from(
      (await getJson<{ data: { key: string } }>(["get", "secret", "demo-key", "-n", ns])).data.key,
      "base64",
    ).toString();
    expect(rotated.status?.hash).toBe(keyedHash(fresh, hashing));
  });

  it("scales a model up across nodes and back down", async () => {
    await kubectlOk(["scale", "inferencemodel", "stories", "-n", ns, "--replicas=3"]);
    const three = await eventually("three stories replicas", async () => {
      const r = await listReplicas(ns, "stories");
      return r.length === 3 ? r : undefined;
    });
    // Spread: one per node while every node has room.
    expect(new Set(three.map((r) => r.spec.nodeName)).size).toBe(3);
    await kubectlOk(["scale", "inferencemodel", "stories", "-n", ns, "--replicas=1"]);
    await eventually("one stories replica", async () =>
      (await listReplicas(ns, "stories")).length === 1 ? true : undefined,
    );
    // It stays at one: nothing recreates what scale-down removed.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await listReplicas(ns, "stories")).toHaveLength(1);
  });

  it("reports a model too large for any node as unschedulable, with the reason", async () => {
    await kubectlOk(
      ["apply", "-n", ns, "-f", "-"],
      JSON.stringify({
        apiVersion: "pomona.dev/v1alpha1",
        kind: "InferenceModel",
        metadata: { name: "huge" },
        spec: { source: { url: "https://example.invalid/huge.gguf" }, memory: "100Gi", replicas: 1 },
      }),
    );
    const m = await eventually("huge to be unschedulable", async () => {
      const got = await model("huge");
      return condition(got, "Scheduled")?.reason === "Unschedulable" ? got : undefined;
    });
    expect(condition(m, "Scheduled")?.message).toMatch(
      /0\/\d+ nodes fit: 3 lack memory \(need 100\.0 GiB, most free [\d.]+ GiB\)/,
    );
    expect(condition(m, "Ready")?.status).toBe("False");
    const events = await eventually("a FailedScheduling event", async () => {
      const out = await kubectlOk([
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=huge,reason=FailedScheduling",
        "-o",
        "json",
      ]);
      const items = (JSON.parse(out) as { items: { message: string }[] }).items;
      return items.length > 0 ? items : undefined;
    });
    expect(events[0]?.message).toMatch(/lack memory/);
    expect(await listReplicas(ns, "huge")).toHaveLength(0);
    const metrics = await (await fetch(`http://127.0.0.1:${operator.port}/metrics`)).text();
    expect(Number(/pomona_operator_scheduling_failures_total (\d+)/.exec(metrics)?.[1])).toBeGreaterThan(0);

    await kubectlOk(["delete", "inferencemodel", "huge", "-n", ns]);
  });

  it("moves replicas off a node whose Lease is no longer renewed", async () => {
    const [before] = await listReplicas(ns, "stories");
    expect(before).toBeDefined();
    const lostNode = before?.spec.nodeName ?? "";
    const node = nodes.nodes.get(lostNode);
    if (node) node.renewing = false;
    const after = await eventually(
      "the replica to be replaced on another node",
      async () => {
        const r = await listReplicas(ns, "stories");
        return r.length === 1 && r[0]?.spec.nodeName !== lostNode ? r : undefined;
      },
      30_000,
    );
    expect(after[0]?.metadata.name).not.toBe(before?.metadata.name);
    const m = await model("stories");
    expect(condition(m, "Degraded")).toMatchObject({ status: "True", reason: "NodeLost" });
    if (node) node.renewing = true;
  });

  it("replaces a replica its node-agent reports Failed", async () => {
    const [failed] = await listReplicas(ns, "stories");
    if (!failed) throw new Error("stories has no replica");
    await kubectlOk([
      "patch",
      "modelreplica",
      failed.metadata.name ?? "",
      "-n",
      ns,
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify({ status: { phase: "Failed", reason: "LoadFailed", message: "the file is not a GGUF model" } }),
    ]);
    const replaced = await eventually("a new replica in place of the Failed one", async () => {
      const r = await listReplicas(ns, "stories");
      return r.length === 1 && r[0]?.metadata.name !== failed.metadata.name ? r : undefined;
    });
    expect(replaced[0]?.status?.phase).toBeUndefined();
    const m = await model("stories");
    expect(condition(m, "Degraded")).toMatchObject({ status: "True", reason: "ReplicaFailed" });
    expect(condition(m, "Degraded")?.message).toMatch(/not a GGUF model/);
  });

  it("rolls out a changed spec without dropping below the ready count", async () => {
    const [old] = await listReplicas(ns, "stories");
    if (!old) throw new Error("stories has no replica");
    await markReady(old);
    await kubectlOk([
      "patch",
      "inferencemodel",
      "stories",
      "-n",
      ns,
      "--type=merge",
      "-p",
      '{"spec":{"engine":{"contextSize":1024}}}',
    ]);
    // maxSurge 1, maxUnavailable 0: a new replica comes first, the ready old one stays.
    const surged = await eventually("a surge replica next to the old one", async () => {
      const r = await listReplicas(ns, "stories");
      return r.length === 2 ? r : undefined;
    });
    const fresh = surged.find((r) => r.metadata.name !== old.metadata.name);
    expect(fresh?.spec.engine.contextSize).toBe(1024);
    expect(fresh?.spec.templateHash).not.toBe(old.spec.templateHash);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await listReplicas(ns, "stories")).map((r) => r.metadata.name)).toContain(old.metadata.name);
    if (fresh) await markReady(fresh);
    const done = await eventually("the old replica to go once the new one is Ready", async () => {
      const r = await listReplicas(ns, "stories");
      return r.length === 1 && r[0]?.metadata.name === fresh?.metadata.name ? r : undefined;
    });
    expect(done[0]?.spec.engine.contextSize).toBe(1024);
    const m = await eventually("updatedReplicas 1", async () => {
      const got = await model("stories");
      return got.status?.updatedReplicas === 1 && got.status.readyReplicas === 1 ? got : undefined;
    });
    expect(condition(m, "Ready")?.status).toBe("True");
  });

  it("continues the gateway config version after a restart", async () => {
    const before = await readGatewayConfig(system);
    expect(before).toBeDefined();
    await operator.process.stop();
    operator = await startOperator(system);
    await kubectlOk(["scale", "inferencemodel", "stories", "-n", ns, "--replicas=2"]);
    const after = await eventually("a newer config from the restarted operator", async () => {
      const c = await readGatewayConfig(system);
      return c && c.version > (before?.version ?? 0) ? c : undefined;
    });
    expect(after.version).toBeGreaterThan(before?.version ?? 0);
    await kubectlOk(["scale", "inferencemodel", "stories", "-n", ns, "--replicas=1"]);
  });

  it("deleting a model removes its replicas and its route", async () => {
    await kubectlOk(["delete", "inferencemodel", "qwen2.5-0.5b-instruct", "-n", ns]);
    await eventually("garbage collection of the replicas", async () =>
      (await listReplicas(ns, "qwen2.5-0.5b-instruct")).length === 0 ? true : undefined,
    );
    const config = await eventually("the route to go", async () => {
      const c = await readGatewayConfig(system);
      return c && !c.models.some((m) => m.name === "qwen2.5-0.5b-instruct") ? c : undefined;
    });
    expect(config.models.some((m) => m.name === "stories")).toBe(true);
  });
});
