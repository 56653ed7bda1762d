// The test control plane as a client sees it: its kubeconfig, and namespaces to work in.
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { inject } from "vitest";

/** The test control plane's kubeconfig, or another cluster's. */
export function kubeConfig(path: string = inject("kubeconfig")): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return kc;
}

/** Creates the namespace; one already there is fine, so suites can share it or run again. */
export async function createNamespace(name: string): Promise<void> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  try {
    await core.createNamespace({ body: { metadata: { name } } });
  } catch (err) {
    if ((err as { code?: number }).code !== 409) throw err;
  }
}

export async function createNamespaces(...names: string[]): Promise<void> {
  for (const name of names) await createNamespace(name);
}
