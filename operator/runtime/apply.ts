/** Server-side apply with the operator's one field manager, for objects and their status. */
import {
  CustomObjectsApi,
  type KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { fieldManagers } from "../../crds/api/index.ts";

export class Applier {
  readonly objects: KubernetesObjectApi;
  private readonly custom: CustomObjectsApi;

  constructor(kubeConfig: KubeConfig) {
    this.custom = kubeConfig.makeApiClient(CustomObjectsApi);
    this.objects = KubernetesObjectApi.makeApiClient(kubeConfig);
  }

  apply<T extends KubernetesObject>(obj: T): Promise<T> {
    return this.objects.patch(obj, undefined, undefined, fieldManagers.operator, true, PatchStrategy.ServerSideApply);
  }

  /** Apply to the status subresource: only the status fields this manager owns. */
  async applyStatus(obj: KubernetesObject & { status: unknown }, plural: string): Promise<void> {
    const [group = "", version = ""] = (obj.apiVersion ?? "").split("/");
    await this.custom.patchNamespacedCustomObjectStatus(
      {
        group,
        version,
        namespace: obj.metadata?.namespace ?? "",
        plural,
        name: obj.metadata?.name ?? "",
        body: {
          apiVersion: obj.apiVersion,
          kind: obj.kind,
          metadata: { name: obj.metadata?.name },
          status: obj.status,
        },
        fieldManager: fieldManagers.operator,
        force: true,
      },
      setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
    );
  }
}
