/**
 * The configuration users really get, read in one place so the benchmarks follow it when it changes:
 * the gateway's settings as gateway/config.ts parses them from an environment with no overrides (the
 * defaults `npm start` and the chart use), where each component serves its /metrics, the node-agent's
 * default thread count, and the quickstart model's engine settings (examples/quickstart.yaml, what
 * `npm start` serves).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import type { InferenceModel } from "../crds/api/index.ts";
import { loadSettings } from "../gateway/config.ts";
import { usableCpus } from "../node-agent/hardware.ts";

const root = join(import.meta.dirname, "..");

/** The gateway's own defaults for everything but the node token (which has none). */
export function defaultGatewaySettings(nodeToken: string) {
  return loadSettings({ POMONA_NODE_TOKEN: nodeToken });
}

/** Where the gateway serves /metrics: its internal port (POMONA_GATEWAY_ADMIN_PORT, default 9090). */
export function gatewayMetricsUrl(gatewayAdminUrl: string): string {
  return `${gatewayAdminUrl}/metrics`;
}

/** Where the node-agent serves /metrics: its one port. */
export function agentMetricsUrl(agentBaseUrl: string): string {
  return `${agentBaseUrl}/metrics`;
}

/**
 * What node-agent/main.ts picks when POMONA_THREADS is not set: today the CPUs this process may use.
 * Used only where a benchmark must name a count for a replica it loads itself; the benchmarks that run
 * `npm start` read the count the node-agent logged instead.
 */
export const defaultAgentThreads = () => usableCpus();

/** Variables that would hand-tune what `npm start` runs; removed from its environment in the benchmarks. */
export const HAND_TUNING_VARIABLES = ["POMONA_THREADS", "POMONA_QUEUE_LIMIT", "KUBECONFIG"] as const;

/** The quickstart model's engine settings: what `npm start` serves. */
export function quickstartEngine(): { name: string; contextSize: number; parallelSequences: number } {
  const docs = parseAllDocuments(readFileSync(join(root, "examples", "quickstart.yaml"), "utf8"));
  const model = docs.map((d) => d.toJS()).find((o) => o?.kind === "InferenceModel") as InferenceModel | undefined;
  const engine = model?.spec.engine;
  if (!model || !engine?.contextSize || !engine.parallelSequences)
    throw new Error("examples/quickstart.yaml has no InferenceModel with contextSize and parallelSequences");
  return {
    name: model.metadata?.name ?? "stories",
    contextSize: engine.contextSize,
    parallelSequences: engine.parallelSequences,
  };
}
