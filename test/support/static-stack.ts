/**
 * The real gateway and the real node-agent serving the fixture model with llama.cpp, each in its own
 * process, without Kubernetes: the gateway gets a fixed config instead of watching the API server, and the
 * agent holds one loaded replica instead of reconciling ModelReplicas (the benchmarks' helpers,
 * bench/_static-gateway.ts and bench/_agent-replica.ts). For tests of the OpenAI wire format, where the
 * control plane adds nothing.
 */
import OpenAI from "openai";
import { FIXTURE_MODEL } from "../../bench/_bench-model.ts";
import { type BenchChild, startBenchChild } from "../../bench/_child.ts";
import { BENCH_NODE_TOKEN, benchKey, generousPolicy, staticGatewaySpec } from "../../bench/_gateway-config.ts";

export interface StaticStack {
  gatewayUrl: string;
  /** The node-agent's own address (its /metrics is open). */
  agentUrl: string;
  client: OpenAI;
  close: () => Promise<void>;
}

const API_KEY = "sk-pomona-static-stack";
/** The agent's replica: 8 sequences of 512 tokens (bench/_bench-model.ts). */
export const SEQUENCE_CONTEXT = 512;

export async function startStaticStack(): Promise<StaticStack> {
  const children: BenchChild[] = [];
  try {
    const agent = await startBenchChild("_agent-replica.ts", [FIXTURE_MODEL, "1", BENCH_NODE_TOKEN]);
    children.push(agent);
    const gateway = await startBenchChild("_static-gateway.ts", [
      JSON.stringify(
        staticGatewaySpec({
          model: "stories",
          endpoint: `http://127.0.0.1:${agent.port}/replicas/bench/replica`,
          contextSize: SEQUENCE_CONTEXT,
          keys: [benchKey(API_KEY, generousPolicy.name)],
          policies: [generousPolicy],
        }),
      ),
    ]);
    children.push(gateway);
    const gatewayUrl = `http://127.0.0.1:${gateway.port}`;
    return {
      gatewayUrl,
      agentUrl: `http://127.0.0.1:${agent.port}`,
      client: new OpenAI({ apiKey: API_KEY, baseURL: `${gatewayUrl}/v1`, maxRetries: 0 }),
      close: async () => {
        for (const c of children.reverse()) await c.stop();
      },
    };
  } catch (err) {
    for (const c of children.reverse()) await c.stop();
    throw err;
  }
}
