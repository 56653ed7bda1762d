/** `pomona status`: models, replicas, nodes and the gateway's breakers in readable tables. */
import type { V1Node } from "@kubernetes/client-node";
import { type InferenceModel, labels, type ModelReplica, modelMemoryResource } from "../crds/api/index.ts";
import { gatewayAdminUrlFor, kubeconfigFor } from "./cluster.ts";
import { connect } from "./kube.ts";
import { table } from "./table.ts";

const gib = (bytes: string | number | undefined) =>
  bytes === undefined ? undefined : `${(Number(bytes) / 2 ** 30).toFixed(1)} GiB`;

async function list<T>(kube: ReturnType<typeof connect>, namespace: string, plural: string): Promise<T[]> {
  const res = (await kube.custom.listNamespacedCustomObject({
    group: "pomona.dev",
    version: "v1alpha1",
    namespace,
    plural,
  })) as {
    items: T[];
  };
  return res.items;
}

/** Breaker states from the metrics on the gateway's internal listener: model, replica, node, state. */
async function breakerRows(adminUrl: string): Promise<string[][]> {
  const res = await fetch(`${adminUrl}/metrics`, { signal: AbortSignal.timeout(5_000) }).catch(() => undefined);
  if (!res?.ok) return [];
  const rows: string[][] = [];
  for (const line of (await res.text()).split("\n")) {
    const match = line.match(/^pomona_gateway_breaker_state\{([^}]*)\}\s+(\S+)/);
    if (!match) continue;
    const label = (name: string) => match[1]?.match(new RegExp(`${name}="([^"]*)"`))?.[1] ?? "";
    const state = { "0": "closed", "1": "open", "2": "half-open" }[match[2] ?? ""] ?? "";
    rows.push([label("model"), label("replica"), label("node"), state]);
  }
  return rows;
}

export async function status(options: { kubeconfig?: string; stateDir: string; namespace: string }): Promise<void> {
  const kube = connect(kubeconfigFor(options));
  const models = await list<InferenceModel>(kube, options.namespace, "inferencemodels");
  const replicas = await list<ModelReplica>(kube, options.namespace, "modelreplicas");
  const nodes = (await kube.core.listNode({ labelSelector: `${labels.inferenceNode}=true` })).items as V1Node[];

  const ready = (m: InferenceModel) => m.status?.conditions?.find((c) => c.type === "Ready");
  let out = `MODELS (namespace ${options.namespace})\n`;
  out += table(
    ["NAME", "READY", "ALIASES", "STATUS", "MESSAGE"],
    models.map((m) => [
      m.metadata.name,
      `${m.status?.readyReplicas ?? 0}/${m.spec.replicas}`,
      m.spec.aliases?.join(","),
      ready(m)?.reason,
      ready(m)?.status === "True" ? "" : ready(m)?.message,
    ]),
  );
  out += "\nREPLICAS\n";
  out += table(
    ["NAME", "MODEL", "NODE", "PHASE", "TOKENS/S", "MESSAGE"],
    replicas.map((r) => [
      r.metadata.name,
      r.spec.model,
      r.spec.nodeName,
      r.status?.phase,
      r.status?.tokensPerSecond?.toFixed(0),
      r.status?.message,
    ]),
  );
  out += "\nNODES\n";
  out += table(
    ["NAME", "ACCELERATOR", "CHIP", "MODEL MEMORY", "READY"],
    nodes.map((n) => [
      n.metadata?.name,
      n.metadata?.labels?.[labels.accelerator],
      n.metadata?.labels?.[labels.chip],
      gib(n.status?.allocatable?.[modelMemoryResource]),
      n.status?.conditions?.find((c) => c.type === "Ready")?.status,
    ]),
  );
  const breakers = await breakerRows(gatewayAdminUrlFor(options.stateDir));
  out += "\nGATEWAY BREAKERS\n";
  out +=
    breakers.length > 0
      ? table(["MODEL", "REPLICA", "NODE", "STATE"], breakers)
      : "(gateway's internal port not reachable, or no endpoints yet)\n";
  process.stdout.write(out);
}
