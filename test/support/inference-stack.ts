// The whole serving path for a suite: the real node-agent (virtual mode) loads the tiny stories model from a
// ModelReplica in the real API server, and a real gateway, fed by the config watcher, routes to it.
import { CustomObjectsApi } from "@kubernetes/client-node";
import { API_VERSION, type GatewayPolicy, GROUP, labels, type ModelReplica, VERSION } from "../../crds/api/index.ts";
import { installCrds } from "./crds.ts";
import {
  ConfigFeed,
  createNamespace,
  kubeConfig,
  model,
  startGateway,
  type TestGateway,
  type TestKey,
} from "./gateway.ts";
import { NODE_AGENT_TOKEN, startAgent, type TestAgent, tinyModel } from "./node-agent.ts";
import { eventually } from "./processes.ts";

export interface InferenceStack {
  agent: TestAgent;
  gateway: TestGateway;
  /** The gateway's tokens counter for the model `stories` and a key owner, read from /metrics. */
  tokensCounted: (owner: string, direction: "prompt" | "completion") => Promise<number>;
  stop: () => Promise<void>;
}

/**
 * Model `stories` (alias `tiny-stories`), two sequences sharing a context of 512 unless given, served to the
 * given keys; embeddings only when asked; the gateway's per-request context as given (else the helper's default).
 */
export async function startInferenceStack(
  ns: string,
  parts: {
    keys: TestKey[];
    policies?: GatewayPolicy[];
    contextSize?: number;
    sequenceContextSize?: number;
    embeddings?: boolean;
  },
): Promise<InferenceStack> {
  const contextSize = parts.contextSize ?? 512;
  const embeddings = parts.embeddings ?? false;
  await installCrds();
  await createNamespace(ns);
  const agent = await startAgent(`${ns}-node`);
  const replicaName = `${ns}-stories`;
  const custom = kubeConfig().makeApiClient(CustomObjectsApi);
  const replica: ModelReplica = {
    apiVersion: API_VERSION,
    kind: "ModelReplica",
    metadata: { name: replicaName, namespace: ns, labels: { [labels.model]: "stories" } },
    spec: {
      model: "stories",
      nodeName: agent.nodeName,
      source: { path: tinyModel },
      engine: { contextSize, parallelSequences: 2, embeddings },
      memoryBytes: 0,
      templateHash: "wire-test",
    },
  };
  await custom.createNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    namespace: ns,
    plural: "modelreplicas",
    body: replica,
  });
  let last: ModelReplica | undefined;
  const endpoint = await eventually(
    "the replica Ready",
    async () => {
      if (agent.process.child.exitCode !== null) throw new Error("the node-agent exited");
      last = (await custom.getNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: ns,
        plural: "modelreplicas",
        name: replicaName,
      })) as ModelReplica;
      if (last.status?.phase === "Failed") throw new Error(`replica failed: ${last.status.message}`);
      return last.status?.phase === "Ready" ? last.status.endpoint : undefined;
    },
    180_000,
  ).catch((err: Error) => {
    throw new Error(
      `${err.message}; status ${JSON.stringify(last?.status)}; agent:\n${agent.process.output().slice(-3000)}`,
    );
  });
  const gateway = await startGateway(ns, {
    nodeToken: NODE_AGENT_TOKEN,
    upstream: { firstByteTimeoutMs: 60_000, totalTimeoutMs: 120_000 },
  });
  const feed = new ConfigFeed(ns);
  await feed.publish({
    models: [
      model(ns, "stories", {
        aliases: ["tiny-stories"],
        endpoints: [{ url: endpoint!, replica: replicaName, node: agent.nodeName, weight: 1, slots: 2 }],
        contextSize,
        ...(parts.sequenceContextSize ? { sequenceContextSize: parts.sequenceContextSize } : {}),
        embeddings,
      }),
    ],
    keys: parts.keys,
    policies: parts.policies ?? [],
  });
  await gateway.waitForVersion(feed.version);
  return {
    agent,
    gateway,
    tokensCounted: async (owner, direction) => {
      const text = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
      const line = new RegExp(
        `^pomona_gateway_tokens_total\\{model="stories",owner="${owner}",direction="${direction}"\\} (\\d+)`,
        "m",
      );
      return Number(line.exec(text)?.[1] ?? 0);
    },
    stop: async () => {
      await gateway.close();
      await agent.process.stop();
    },
  };
}
