// The whole serving path for a suite: the real node-agent (virtual mode) loads the tiny stories model from a
// ModelReplica in the real API server, and real gateways, fed by the config watcher, route to it.
import type { GatewayPolicy } from "../../crds/api/index.ts";
import { installCrds } from "./crds.ts";
import { ConfigFeed, model, startGateway, type TestGateway, type TestKey } from "./gateway.ts";
import { createNamespace } from "./kube.ts";
import { readyReplica } from "./model-replica.ts";
import { NODE_AGENT_TOKEN, startAgent, type TestAgent } from "./node-agent.ts";

/** The replica's parallel sequences, which are the model's slots at the gateway, as the operator compiles them. */
export const SEQUENCES = 2;

/** A gateway's settings over the stack's (upstream timeouts long enough for a busy machine). */
type StackGatewayOptions = Pick<NonNullable<Parameters<typeof startGateway>[1]>, "upstream" | "queue">;

export interface InferenceStack {
  agent: TestAgent;
  /** The replica's own address, for requests straight to the node. */
  endpoint: string;
  /** The first gateway (the only one unless more were asked for). */
  gateway: TestGateway;
  gateways: TestGateway[];
  /** The first gateway's tokens counter for the model `stories` and a key owner, read from /metrics. */
  tokensCounted: (owner: string, direction: "prompt" | "completion") => Promise<number>;
  stop: () => Promise<void>;
}

/**
 * Model `stories` (alias `tiny-stories`), SEQUENCES sequences sharing a context of 512 unless given, served to
 * the given keys; embeddings only when asked; the gateway's per-request context as given (else the helper's
 * default). One gateway unless `gateways` lists the settings of each.
 */
export async function startInferenceStack(
  ns: string,
  parts: {
    keys: TestKey[];
    policies?: GatewayPolicy[];
    contextSize?: number;
    sequenceContextSize?: number;
    embeddings?: boolean;
    /** The node-agent's queue limit (POMONA_QUEUE_LIMIT), for tests that fill it. */
    nodeQueueLimit?: number;
    gateways?: [StackGatewayOptions, ...StackGatewayOptions[]];
    /** More models served by the same replica with their own slots (e.g. one, so service order is completion order). */
    moreModels?: { name: string; slots: number }[];
  },
): Promise<InferenceStack> {
  const contextSize = parts.contextSize ?? 512;
  const embeddings = parts.embeddings ?? false;
  await installCrds();
  await createNamespace(ns);
  const agent = await startAgent(
    `${ns}-node`,
    parts.nodeQueueLimit === undefined ? {} : { POMONA_QUEUE_LIMIT: String(parts.nodeQueueLimit) },
  );
  const gateways: TestGateway[] = [];
  const stop = async () => {
    for (const gateway of gateways) await gateway.close();
    await agent.process.stop();
  };
  try {
    const replicaName = `${ns}-stories`;
    const { endpoint } = (
      await readyReplica(agent, ns, replicaName, {
        engine: { contextSize, parallelSequences: SEQUENCES, embeddings },
      })
    ).status;
    for (const options of parts.gateways ?? [{}]) {
      gateways.push(
        await startGateway(ns, {
          nodeToken: NODE_AGENT_TOKEN,
          upstream: { firstByteTimeoutMs: 60_000, totalTimeoutMs: 120_000, ...options.upstream },
          queue: options.queue,
        }),
      );
    }
    const servedBy = (name: string, slots: number) =>
      model(ns, name, {
        endpoints: [{ url: endpoint, replica: replicaName, node: agent.nodeName, weight: 1, slots }],
        contextSize,
        ...(parts.sequenceContextSize ? { sequenceContextSize: parts.sequenceContextSize } : {}),
        embeddings,
      });
    const feed = new ConfigFeed(ns);
    await feed.publish({
      models: [
        { ...servedBy("stories", SEQUENCES), aliases: ["tiny-stories"] },
        ...(parts.moreModels ?? []).map((m) => servedBy(m.name, m.slots)),
      ],
      keys: parts.keys,
      policies: parts.policies ?? [],
    });
    for (const gateway of gateways) await gateway.waitForVersion(feed.version);
    const [gateway] = gateways as [TestGateway];
    return {
      agent,
      endpoint,
      gateway,
      gateways,
      tokensCounted: async (owner, direction) => {
        const text = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
        const line = new RegExp(
          `^pomona_gateway_tokens_total\\{model="stories",owner="${owner}",direction="${direction}"\\} (\\d+)`,
          "m",
        );
        return Number(line.exec(text)?.[1] ?? 0);
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
