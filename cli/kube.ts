import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  loadAllYaml,
  PatchStrategy,
} from "@kubernetes/client-node";

export interface Kube {
  config: KubeConfig;
  core: CoreV1Api;
  custom: CustomObjectsApi;
  objects: KubernetesObjectApi;
}

export function connect(kubeconfigPath: string): Kube {
  const config = new KubeConfig();
  config.loadFromFile(kubeconfigPath);
  return {
    config,
    core: config.makeApiClient(CoreV1Api),
    custom: config.makeApiClient(CustomObjectsApi),
    objects: KubernetesObjectApi.makeApiClient(config),
  };
}

/** Server-side apply, as `kubectl apply --server-side` does, owned by the `pomona` CLI. */
export async function apply(kube: Kube, object: KubernetesObject): Promise<void> {
  await kube.objects.patch(object, undefined, undefined, "pomona-cli", true, PatchStrategy.ServerSideApply);
}

/**
 * Manifests as client-node's own models: it renames fields such as a schema's `default` and
 * `x-kubernetes-validations` when it sends them, and would drop them from plain parsed YAML.
 */
export function parseManifests(text: string): KubernetesObject[] {
  return loadAllYaml(text).filter((o): o is KubernetesObject => o !== null && o !== undefined);
}

export const isNotFound = (error: unknown) => (error as { code?: number }).code === 404;

/** An answer worth waiting out: the API server warming up (429), failing over (5xx) or not reachable yet. */
export function isTransient(error: unknown): boolean {
  const { code, cause } = error as { code?: unknown; cause?: { code?: unknown } };
  if (typeof code === "number") return code === 429 || code >= 500;
  const systemCode = typeof code === "string" ? code : cause?.code;
  return typeof systemCode === "string" && /^E[A-Z]+$/.test(systemCode);
}
