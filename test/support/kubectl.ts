// kubectl as a user types it, against the test control plane.
import { spawn } from "node:child_process";
import { inject } from "vitest";

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** kubectl against the test control plane, or against the cluster of another kubeconfig. */
export function kubectl(args: string[], input?: string, kubeconfig = inject("kubeconfig")): Promise<KubectlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(inject("kubectlPath"), args, {
      env: { ...process.env, KUBECONFIG: kubeconfig },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c;
    });
    child.stderr.on("data", (c: Buffer) => {
      stderr += c;
    });
    child.on("error", reject);
    // kubectl may exit (e.g. on a bad flag) before reading its input; that is its answer, not a test failure.
    child.stdin.on("error", () => {});
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input ?? "");
  });
}

/** kubectl that must succeed; its output otherwise fails the test with stderr. */
export async function kubectlOk(args: string[], input?: string, kubeconfig?: string): Promise<string> {
  const result = await kubectl(args, input, kubeconfig);
  if (result.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed (${result.code}): ${result.stderr}`);
  return result.stdout;
}
