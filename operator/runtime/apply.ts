/** The operator's writes: server-side apply of status with its one field manager, and plain REST calls. */
import type { KubeConfig, KubernetesObject } from "@kubernetes/client-node";
import { fieldManagers } from "../../crds/api/index.ts";
import { KubeRest } from "../../kube/rest.ts";

export class Applier {
  readonly rest: KubeRest;

  constructor(kubeConfig: KubeConfig) {
    this.rest = new KubeRest(kubeConfig);
  }

  /** Apply to the status subresource: only the status fields this manager owns. */
  async applyStatus(obj: KubernetesObject & { status: unknown }, plural: string): Promise<void> {
    const namespace = obj.metadata?.namespace ?? "";
    const name = obj.metadata?.name ?? "";
    await this.rest.patch(
      `/apis/${obj.apiVersion}/namespaces/${namespace}/${plural}/${name}/status`,
      { apiVersion: obj.apiVersion, kind: obj.kind, metadata: { name }, status: obj.status },
      "apply",
      { fieldManager: fieldManagers.operator, force: true },
    );
  }
}
