// A ModelReplica of model `stories` bound to a test node-agent's node, created in the real API server as the
// operator would, and the wait until the agent has settled it.
import { CustomObjectsApi } from "@kubernetes/client-node";
import {
  API_VERSION,
  type EngineSettings,
  GROUP,
  labels,
  type ModelReplica,
  type ModelReplicaStatus,
  type ModelSource,
  VERSION,
} from "../../crds/api/index.ts";
import { kubeConfig } from "./kube.ts";
import { type TestAgent, tinyModel } from "./node-agent.ts";
import { eventually } from "./processes.ts";

export interface ReplicaOptions {
  /** Over the defaults: a context of 512 shared by 2 sequences, no embeddings. */
  engine?: Partial<EngineSettings>;
  /** The fixture model on disk unless given. */
  source?: ModelSource;
}

export type ReadyReplica = ModelReplica & { status: ModelReplicaStatus & { endpoint: string } };

const modelReplicas = (namespace: string) => ({ group: GROUP, version: VERSION, namespace, plural: "modelreplicas" });

export async function createReplica(
  agent: TestAgent,
  namespace: string,
  name: string,
  options: ReplicaOptions = {},
): Promise<void> {
  const replica: ModelReplica = {
    apiVersion: API_VERSION,
    kind: "ModelReplica",
    metadata: { name, namespace, labels: { [labels.model]: "stories" } },
    spec: {
      model: "stories",
      nodeName: agent.nodeName,
      source: options.source ?? { path: tinyModel },
      engine: { contextSize: 512, parallelSequences: 2, embeddings: false, ...options.engine },
      memoryBytes: 0,
      templateHash: "test",
    },
  };
  await kubeConfig()
    .makeApiClient(CustomObjectsApi)
    .createNamespacedCustomObject({ ...modelReplicas(namespace), body: replica });
}

/** The replica once the agent has made it Ready or Failed; the agent's exit or the timeout fails with its output. */
export async function settledReplica(
  agent: TestAgent,
  namespace: string,
  name: string,
  timeoutMs = 180_000,
): Promise<ModelReplica> {
  const custom = kubeConfig().makeApiClient(CustomObjectsApi);
  let last: ModelReplica | undefined;
  const settled = await eventually(
    `${name} Ready or Failed`,
    async () => {
      if (agent.process.child.exitCode !== null) return "the node-agent exited";
      last = (await custom.getNamespacedCustomObject({ ...modelReplicas(namespace), name })) as ModelReplica;
      return last.status?.phase === "Ready" || last.status?.phase === "Failed" ? last : undefined;
    },
    timeoutMs,
  ).catch((err: Error) => err.message);
  if (typeof settled === "string") {
    throw new Error(
      `${settled}; status ${JSON.stringify(last?.status)}; agent:\n${agent.process.output().slice(-3000)}`,
    );
  }
  return settled;
}

/** Creates the replica and waits until the agent serves it; a Failed replica fails at once. */
export async function readyReplica(
  agent: TestAgent,
  namespace: string,
  name: string,
  options: ReplicaOptions = {},
): Promise<ReadyReplica> {
  await createReplica(agent, namespace, name, options);
  const replica = await settledReplica(agent, namespace, name);
  if (replica.status?.phase !== "Ready" || !replica.status.endpoint) {
    throw new Error(`${name} failed: ${replica.status?.message}; agent:\n${agent.process.output().slice(-3000)}`);
  }
  return replica as ReadyReplica;
}
