/**
 * What the operator tests share. There are no real node-agents here: the test
 * plays them, as a node-agent in virtual mode does, by registering Nodes with
 * the inference labels, taint and model memory, renewing their Leases in
 * kube-node-lease, and patching ModelReplica status to Ready with an endpoint.
 */
import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  V1MicroTime,
} from "@kubernetes/client-node";
import { inject } from "vitest";
import { freePort } from "../controlplane/local-control-plane.ts";
import {
  bucketSecretName,
  CONFIG_DATA_KEY,
  coreSecretName,
  decodeCorePart,
  decodeGatewayConfig,
  type GatewayConfig,
  inferenceNodeTaint,
  KEY_BUCKETS,
  labels,
  type ModelReplica,
  modelMemoryResource,
} from "../crds/api/index.ts";
import { kubeConfig } from "./support/kube.ts";
import { kubectlOk } from "./support/kubectl.ts";
import { startNode, type TestProcess } from "./support/processes.ts";

// The operator suites take these from here with the rest of their set-up.
export { createNamespaces, kubeConfig } from "./support/kube.ts";

export interface VirtualNode {
  name: string;
  memory: string;
  /** Stop renewing the Lease, as a node-agent that died. */
  renewing: boolean;
}

/** Plays the node-agents of virtual nodes: registers their Nodes and renews their Leases every second. */
export class VirtualNodes {
  private readonly core = kubeConfig().makeApiClient(CoreV1Api);
  private readonly leases = kubeConfig().makeApiClient(CoordinationV1Api);
  readonly nodes = new Map<string, VirtualNode>();
  private timer: NodeJS.Timeout | undefined;

  async add(name: string, memory: string, extraLabels: Record<string, string> = {}): Promise<void> {
    const node = { name, memory, renewing: true };
    this.nodes.set(name, node);
    await this.renew(node);
    await this.core.createNode({
      body: {
        metadata: {
          name,
          labels: {
            [labels.inferenceNode]: "true",
            [labels.accelerator]: "cpu",
            [labels.nodeMode]: "virtual",
            ...extraLabels,
          },
        },
        spec: { taints: [{ ...inferenceNodeTaint }] },
      },
    });
    await this.core.patchNodeStatus(
      {
        name,
        body: {
          status: {
            capacity: { [modelMemoryResource]: memory },
            allocatable: { [modelMemoryResource]: memory },
            conditions: [
              {
                type: "Ready",
                status: "True",
                reason: "NodeAgentReady",
                message: "test plays the node-agent",
                lastHeartbeatTime: new Date(),
                lastTransitionTime: new Date(),
              },
            ],
          },
        },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    this.timer ??= setInterval(() => {
      for (const n of this.nodes.values()) if (n.renewing) void this.renew(n).catch(() => {});
    }, 1_000);
  }

  private async renew(node: VirtualNode): Promise<void> {
    const now = new V1MicroTime();
    try {
      const lease = await this.leases.readNamespacedLease({ name: node.name, namespace: "kube-node-lease" });
      lease.spec = { holderIdentity: node.name, leaseDurationSeconds: 4, renewTime: now };
      await this.leases.replaceNamespacedLease({ name: node.name, namespace: "kube-node-lease", body: lease });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      await this.leases.createNamespacedLease({
        namespace: "kube-node-lease",
        body: {
          metadata: { name: node.name },
          spec: { holderIdentity: node.name, leaseDurationSeconds: 4, renewTime: now, acquireTime: now },
        },
      });
    }
  }

  async removeAll(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    for (const name of this.nodes.keys()) {
      await this.core.deleteNode({ name }).catch(() => {});
      await this.leases.deleteNamespacedLease({ name, namespace: "kube-node-lease" }).catch(() => {});
    }
  }
}

const custom = () => kubeConfig().makeApiClient(CustomObjectsApi);

export async function listReplicas(namespace: string, model?: string): Promise<ModelReplica[]> {
  const list = (await custom().listNamespacedCustomObject({
    group: "pomona.dev",
    version: "v1alpha1",
    namespace,
    plural: "modelreplicas",
    ...(model ? { labelSelector: `${labels.model}=${model}` } : {}),
  })) as { items: ModelReplica[] };
  return list.items.filter((r) => !r.metadata.deletionTimestamp);
}

/** As the node-agent does once a replica is loaded: phase Ready and the endpoint it serves at. */
export async function markReady(replica: ModelReplica): Promise<void> {
  const ns = replica.metadata.namespace ?? "";
  const name = replica.metadata.name ?? "";
  await kubectlOk([
    "patch",
    "modelreplica",
    name,
    "-n",
    ns,
    "--subresource=status",
    "--type=merge",
    "-p",
    JSON.stringify({
      status: { phase: "Ready", endpoint: `http://10.0.0.1:8090/replicas/${ns}/${name}`, tokensPerSecond: 20 },
    }),
  ]);
}

/** The published gateway config, read back the way a gateway does; undefined until there is one. */
export async function readGatewayConfig(systemNamespace: string): Promise<GatewayConfig | undefined> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const read = async (name: string) => {
    const s = await core.readNamespacedSecret({ name, namespace: systemNamespace });
    const data = s.data?.[CONFIG_DATA_KEY];
    return data ? Buffer.from(data, "base64") : undefined;
  };
  let coreBytes: Buffer | undefined;
  try {
    coreBytes = await read(coreSecretName);
  } catch {
    return undefined;
  }
  if (!coreBytes) return undefined;
  const corePart = decodeCorePart(coreBytes);
  const buckets = await Promise.all(Array.from({ length: KEY_BUCKETS }, (_, i) => read(bucketSecretName(i))));
  return decodeGatewayConfig(corePart, buckets);
}

export interface TestOperator {
  process: TestProcess;
  port: number;
}

export async function startOperator(
  systemNamespace: string,
  extra: Record<string, string> = {},
): Promise<TestOperator> {
  const port = await freePort();
  const process = startNode("operator/main.ts", [], {
    KUBECONFIG: inject("kubeconfig"),
    POMONA_NAMESPACE: systemNamespace,
    POMONA_OPERATOR_PORT: String(port),
    POMONA_NODE_LOST_AFTER_SECONDS: "2",
    ...extra,
  });
  await process.waitFor(/operator started/);
  return { process, port };
}
