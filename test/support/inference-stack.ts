// The whole serving path for a suite: the real node-agent (virtual mode) loads the tiny stories model from a
// ModelReplica in the real API server, and a real gateway, fed by the config watcher, routes to it.
import type { GatewayPolicy } from "../../crds/api/index.ts";
import { installCrds } from "./crds.ts";
import { ConfigFeed, createNamespace, model, startGateway, type TestGateway, type TestKey } from "./gateway.ts";
import { readyReplica } from "./model-replica.ts";
import { NODE_AGENT_TOKEN, startAgent, type TestAgent } from "./node-agent.ts";

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
  const { endpoint } = (
    await readyReplica(agent, ns, replicaName, { engine: { contextSize, parallelSequences: 2, embeddings } })
  ).status;
  const gateway = await startGateway(ns, {
    nodeToken: NODE_AGENT_TOKEN,
    upstream: { firstByteTimeoutMs: 60_000, totalTimeoutMs: 120_000 },
  });
  const feed = new ConfigFeed(ns);
  await feed.publish({
    models: [
      model(ns, "stories", {
        aliases: ["tiny-stories"],
        endpoints: [{ url: endpoint, replica: replicaName, node: agent.nodeName, weight: 1, slots: 2 }],
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
