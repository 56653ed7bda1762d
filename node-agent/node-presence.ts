/**
 * The node-agent's Node, as a kubelet keeps it: in virtual mode it registers the Node (labels, taint,
 * model-memory capacity, Ready condition) and renews its Lease in kube-node-lease; in attached mode a
 * kubelet owns the Node and the agent only adds Pomona's labels and the model-memory capacity.
 */
import { isIP } from "node:net";
import type { KubeConfig, V1Lease, V1Node } from "@kubernetes/client-node";
// A Lease's times are MicroTime (six fractional digits); the types module alone, as the operator's leader takes it.
import { V1MicroTime } from "@kubernetes/client-node/dist/types.js";
import type { FastifyBaseLogger as Logger } from "fastify";
import { annotations, inferenceNodeTaint, labels, modelMemoryResource } from "../crds/api/index.ts";
import { errorText, KubeApiError, KubeRest } from "../kube/rest.ts";
import type { Hardware } from "./hardware.ts";

const nodesPath = "/api/v1/nodes";
const leasesPath = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
/** As a kubelet does: the Lease lasts four renewal intervals (40 s at the default 10 s), so one missed renewal is not a lost node. */
const renewalsPerLease = 4;

export interface NodePresenceOptions {
  kubeConfig: KubeConfig;
  nodeName: string;
  mode: "virtual" | "attached";
  /** Where the agent serves; a virtual Node registers it, and the operator signs certificates only for it. */
  address: string;
  hardware: Hardware;
  modelMemoryBytes: number;
  renewSeconds: number;
  log: Logger;
}

export class NodePresence {
  private readonly api: KubeRest;
  private readonly options: NodePresenceOptions;
  private timer: NodeJS.Timeout | undefined;
  private cachedDigests = "";
  private ready = true;
  /** When Ready last changed, which is what the condition's lastTransitionTime means (not the last heartbeat). */
  private readySince = new Date().toISOString();

  constructor(options: NodePresenceOptions) {
    this.options = options;
    this.api = new KubeRest(options.kubeConfig);
  }

  private labels(): Record<string, string> {
    const h = this.options.hardware;
    return {
      [labels.accelerator]: h.accelerator,
      [labels.chip]: h.chip,
      [labels.unifiedMemory]: String(h.memoryBytes),
      [labels.inferenceNode]: "true",
      [labels.nodeMode]: this.options.mode,
    };
  }

  /** Register or adopt the Node, then keep its status and Lease fresh until stop(). */
  async start(): Promise<void> {
    await this.ensureNode();
    await this.heartbeat();
    this.timer = setInterval(() => {
      this.heartbeat().catch((err) => this.options.log.warn({ err: errorText(err) }, "node heartbeat failed"));
    }, this.options.renewSeconds * 1000);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** The sha256 digests of cached model files, for the scheduler to prefer this node. */
  async setCachedModels(digests: string[]): Promise<void> {
    const value = [...digests].sort().join(",");
    if (value === this.cachedDigests) return;
    this.cachedDigests = value;
    await this.api.patch(
      this.nodePath(),
      { metadata: { annotations: { [annotations.cachedModels]: value } } },
      "merge",
    );
  }

  /** A draining agent reports NotReady so no new replicas come here. */
  async setReady(ready: boolean): Promise<void> {
    if (ready !== this.ready) this.readySince = new Date().toISOString();
    this.ready = ready;
    if (this.options.mode === "virtual") await this.patchStatus();
  }

  private nodePath(): string {
    return `${nodesPath}/${this.options.nodeName}`;
  }

  private async ensureNode(): Promise<void> {
    const { nodeName, mode } = this.options;
    let existing: V1Node | undefined;
    try {
      existing = await this.api.get<V1Node>(this.nodePath());
    } catch (err) {
      if (!(err instanceof KubeApiError && err.code === 404)) throw err;
    }
    if (!existing) {
      if (mode === "attached") throw new Error(`node ${nodeName} does not exist; attached mode needs a kubelet's Node`);
      await this.api.create(nodesPath, {
        metadata: { name: nodeName, labels: { ...this.labels(), "kubernetes.io/hostname": nodeName } },
        spec: { taints: [{ ...inferenceNodeTaint }] },
      });
      this.options.log.info({ node: nodeName }, "registered virtual node");
      return;
    }
    const taints = existing.spec?.taints ?? [];
    const hasTaint = taints.some((t) => t.key === inferenceNodeTaint.key && t.effect === inferenceNodeTaint.effect);
    const spec = mode === "virtual" && !hasTaint ? { taints: [...taints, { ...inferenceNodeTaint }] } : undefined;
    await this.api.patch(this.nodePath(), { metadata: { labels: this.labels() }, spec }, "merge");
    this.options.log.info({ node: nodeName, mode }, "adopted node");
  }

  private async heartbeat(): Promise<void> {
    if (this.options.mode === "virtual") {
      await this.patchStatus();
      await this.renewLease();
    } else {
      await this.patchCapacity();
    }
  }

  private async patchCapacity(): Promise<void> {
    const memory = String(this.options.modelMemoryBytes);
    await this.api.patch(
      `${this.nodePath()}/status`,
      { status: { capacity: { [modelMemoryResource]: memory }, allocatable: { [modelMemoryResource]: memory } } },
      "merge",
    );
  }

  private async patchStatus(): Promise<void> {
    const now = new Date().toISOString();
    const h = this.options.hardware;
    const memory = String(this.options.modelMemoryBytes);
    const resources = { [modelMemoryResource]: memory, memory: String(h.memoryBytes), pods: "0" };
    await this.api.patch(
      `${this.nodePath()}/status`,
      {
        status: {
          capacity: resources,
          allocatable: resources,
          addresses: [{ type: isIP(this.options.address) ? "InternalIP" : "Hostname", address: this.options.address }],
          conditions: [
            {
              type: "Ready",
              status: this.ready ? "True" : "False",
              reason: this.ready ? "NodeAgentReady" : "NodeAgentDraining",
              message: this.ready ? "the Pomona node-agent is serving" : "the Pomona node-agent is shutting down",
              lastHeartbeatTime: now,
              lastTransitionTime: this.readySince,
            },
          ],
          nodeInfo: {
            architecture: process.arch,
            operatingSystem: process.platform,
            kubeletVersion: "pomona-node-agent",
            bootID: "",
            containerRuntimeVersion: "",
            kernelVersion: "",
            kubeProxyVersion: "",
            machineID: "",
            osImage: process.platform,
            systemUUID: "",
          },
        },
      },
      "merge",
    );
  }

  private async renewLease(): Promise<void> {
    const name = this.options.nodeName;
    const leaseDurationSeconds = Math.ceil(this.options.renewSeconds * renewalsPerLease);
    const spec = { holderIdentity: name, leaseDurationSeconds, renewTime: new V1MicroTime() };
    const path = `${leasesPath}/${name}`;
    try {
      // The Lease read carries its resourceVersion: a concurrent change fails the replace with 409.
      const lease = await this.api.get<V1Lease>(path);
      await this.api.replace(path, { ...lease, spec: { ...lease.spec, ...spec } });
    } catch (err) {
      if (!(err instanceof KubeApiError && err.code === 404)) throw err;
      await this.api.create(leasesPath, { metadata: { name }, spec });
    }
  }
}
