// The node-agent in attached mode (a DaemonSet on a kubelet's Node) and its refusal of bad settings. The
// test registers the Node itself, standing in for the kubelet that would on a real cluster.
import { CoordinationV1Api, CoreV1Api } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { inferenceNodeTaint, labels, modelMemoryResource } from "../crds/api/index.ts";
import { installCrds } from "./support/crds.ts";
import { kubeConfig } from "./support/gateway.ts";
import { kubectlOk } from "./support/kubectl.ts";
import { startAgent, type TestAgent } from "./support/node-agent.ts";
import { eventually, startNode } from "./support/processes.ts";

const nodeName = "pomona-test-kubelet-node";
let agent: TestAgent;

beforeAll(async () => {
  await installCrds();
  await kubectlOk(
    ["apply", "-f", "-"],
    JSON.stringify({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: nodeName, labels: { "kubernetes.io/os": "linux" } },
    }),
  );
  agent = await startAgent(nodeName, { POMONA_NODE_MODE: "attached", POMONA_MODEL_MEMORY: "3Gi" });
}, 120_000);

afterAll(async () => {
  await agent?.process.stop();
});

describe("attached mode", () => {
  it("adds Pomona's labels and the model-memory capacity to the kubelet's Node, and nothing else", async () => {
    const core = kubeConfig().makeApiClient(CoreV1Api);
    const node = await eventually("model memory on the Node", async () => {
      const n = await core.readNode({ name: nodeName });
      return n.status?.capacity?.[modelMemoryResource] ? n : undefined;
    });
    expect(node.status?.capacity?.[modelMemoryResource]).toBe(String(3 * 1024 ** 3));
    expect(node.status?.allocatable?.[modelMemoryResource]).toBe(String(3 * 1024 ** 3));
    expect(node.metadata?.labels?.[labels.nodeMode]).toBe("attached");
    expect(node.metadata?.labels?.[labels.inferenceNode]).toBe("true");
    expect(node.metadata?.labels?.["kubernetes.io/os"]).toBe("linux");
    // The kubelet owns the taints, conditions and Lease of an attached Node.
    expect((node.spec?.taints ?? []).map((t) => t.key)).not.toContain(inferenceNodeTaint.key);
    expect(node.status?.conditions ?? []).toEqual([]);
    const lease = await kubeConfig()
      .makeApiClient(CoordinationV1Api)
      .readNamespacedLease({ name: nodeName, namespace: "kube-node-lease" })
      .catch((e: { code?: number }) => e.code);
    expect(lease).toBe(404);
  });
});

describe("bad settings", () => {
  it.each([
    { variable: "POMONA_AGENT_PORT", env: { POMONA_AGENT_PORT: "not-a-port" } },
    { variable: "POMONA_MODEL_MEMORY", env: { POMONA_MODEL_MEMORY: "lots" } },
    { variable: "POMONA_NODE_TOKEN", env: { POMONA_NODE_TOKEN: undefined } },
  ])("a bad or missing $variable stops the agent at start with a message naming it", async ({ env, variable }) => {
    const p = startNode("node-agent/main.ts", [], {
      KUBECONFIG: inject("kubeconfig"),
      POMONA_NODE_NAME: "never-registered",
      POMONA_NODE_TOKEN: "a-secret-token-value",
      ...env,
    });
    const code = await new Promise<number | null>((resolve) => p.child.once("exit", (c) => resolve(c)));
    expect(code).toBe(2);
    expect(p.output()).toContain(variable);
    expect(p.output()).not.toContain("a-secret-token-value");
  });
});
