// Starts one real control plane for the whole test run and hands its kubeconfig to every suite.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { startControlPlane } from "../../controlplane/local-control-plane.ts";

declare module "vitest" {
  export interface ProvidedContext {
    kubeconfig: string;
    kubectlPath: string;
    kubernetesVersion: string;
  }
}

export default async function setup(project: TestProject) {
  const dir = mkdtempSync(join(tmpdir(), "pomona-test-"));
  const controlPlane = await startControlPlane({ dir, log: (line) => console.log(`[control plane] ${line}`) });
  console.log(`[control plane] kube-apiserver ${controlPlane.version} at ${controlPlane.server}`);
  project.provide("kubeconfig", controlPlane.kubeconfigPath);
  project.provide("kubectlPath", controlPlane.binaries.kubectl);
  project.provide("kubernetesVersion", controlPlane.version);
  return async () => {
    await controlPlane.stop();
    rmSync(dir, { recursive: true, force: true });
  };
}
