/**
 * Proves a provisioned Pomona (by `pulumi up` or `helm install`) is coherent: its gateway, operator and
 * node-agent run as local processes with exactly the configuration of the objects on the API server
 * (test/support/local-kubelet.ts), and the gateway answers the official `openai` client with the
 * fixture model.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import OpenAI from "openai";
import { kubectl, kubectlOk } from "./kubectl.ts";
import { type LocalKubelet, startLocalKubelet, type Workload } from "./local-kubelet.ts";
import { tinyModel } from "./node-agent.ts";
import { eventually, repoRoot } from "./processes.ts";

const components = ["pomona-operator", "pomona-node-agent", "pomona-gateway"] as const;

/**
 * Variables a workload sets that its component does not read, by docs/components.md (the components'
 * contract): a misspelt name with a default behind it would otherwise go unnoticed.
 */
export function undocumentedVariables(workload: Workload): string[] {
  const contract = readFileSync(join(repoRoot, "docs", "components.md"), "utf8");
  const component = workload.metadata.name.replace(/^pomona-/, "");
  const start = contract.indexOf(`## ${component} (`);
  if (start < 0) return [`(docs/components.md has no section for ${component})`];
  const table = contract.slice(start, contract.indexOf("\n## ", start + 1));
  const names = workload.spec.template.spec.containers.flatMap((c) => (c.env ?? []).map((e) => e.name));
  return names.filter((name) => name !== "HOME" && !table.includes(`\`${name}\``));
}

/** The Deployments and the DaemonSet of the stack in `namespace`, as the API server holds them. */
async function workloads(namespace: string): Promise<Map<string, Workload>> {
  const list = JSON.parse(await kubectlOk(["get", "deployments,daemonsets", "-n", namespace, "-o", "json"])) as {
    items: Workload[];
  };
  return new Map(
    list.items.map((item) => [item.metadata.name, { ...item, metadata: { ...item.metadata, namespace } }]),
  );
}

export interface ServedAnswer {
  content: string;
  /** Seconds from the first process start to the answer. */
  seconds: number;
}

/**
 * Starts the operator, the node-agent (on a stand-in Node matching the DaemonSet's node selector) and the
 * gateway from the objects in `namespace`, applies an InferenceModel and an ApiKey there, and returns the
 * gateway's answer to a chat completion. Everything it started or applied is removed again.
 */
export async function serveThroughProvisionedStack(namespace: string): Promise<ServedAnswer> {
  const started = Date.now();
  const objects = await workloads(namespace);
  for (const name of components) {
    const workload = objects.get(name);
    if (!workload) throw new Error(`${namespace} has no workload ${name}`);
    const unknown = undocumentedVariables(workload);
    if (unknown.length > 0)
      throw new Error(`${name} sets variables its component does not read: ${unknown.join(", ")}`);
  }
  const agent = objects.get("pomona-node-agent")!;
  const kubelet: LocalKubelet = await startLocalKubelet(
    `${namespace}-node`,
    agent.spec.template.spec.nodeSelector ?? {},
  );
  try {
    await kubelet.run(objects.get("pomona-operator")!);
    await kubelet.run(objects.get("pomona-node-agent")!);
    const gateway = await kubelet.run(objects.get("pomona-gateway")!);
    await kubectlOk(
      ["apply", "-n", namespace, "-f", "-"],
      JSON.stringify({
        apiVersion: "v1",
        kind: "List",
        items: [
          {
            apiVersion: "pomona.dev/v1alpha1",
            kind: "InferenceModel",
            metadata: { name: "stories" },
            spec: { source: { path: tinyModel }, replicas: 1, memory: "64Mi" },
          },
          {
            apiVersion: "pomona.dev/v1alpha1",
            kind: "ApiKey",
            metadata: { name: "provisioned" },
            spec: { owner: "test" },
          },
        ],
      }),
    );
    const key = await eventually(
      "the operator to mint the ApiKey's key",
      async () => {
        const result = await kubectl(["get", "secret", "provisioned", "-n", namespace, "-o", "jsonpath={.data.key}"]);
        return result.code === 0 && result.stdout ? Buffer.from(result.stdout, "base64").toString("utf8") : undefined;
      },
      120_000,
    );
    const client = new OpenAI({
      apiKey: key,
      baseURL: `http://127.0.0.1:${gateway.ports.get("http")}/v1`,
      maxRetries: 0,
    });
    // The model loads and the gateway learns the replica's endpoint asynchronously: ask until it answers.
    const content = await eventually(
      "a chat completion through the gateway",
      async () => {
        const completion = await client.chat.completions.create({
          model: "stories",
          messages: [{ role: "user", content: "Once upon a time" }],
          max_tokens: 8,
        });
        return completion.choices[0]?.message.content ?? undefined;
      },
      240_000,
    );
    return { content, seconds: Math.round((Date.now() - started) / 1000) };
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${kubelet.outputs()}`);
  } finally {
    // Removed while the operator still runs, so nothing it owns is left behind.
    await kubectl(["delete", "-n", namespace, "inferencemodel/stories", "apikey/provisioned", "--ignore-not-found"]);
    await kubelet.stop();
  }
}
