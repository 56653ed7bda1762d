// Child processes a test starts: output captured, stopped on every path.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { nodeFlagsFor } from "../../crds/api/well-known.ts";

export const repoRoot = join(import.meta.dirname, "..", "..");

export interface TestProcess {
  child: ChildProcess;
  output: () => string;
  /** Resolves with the first match of the pattern in the output. */
  waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<RegExpMatchArray>;
  stop: (signal?: NodeJS.Signals) => Promise<void>;
}

/** Start `node <script>` from the repository with Node 24 (the one running the tests). */
export function startNode(script: string, args: string[], env: Record<string, string | undefined>): TestProcess {
  // An undefined value removes the variable, e.g. KUBECONFIG for a process that must start its own cluster.
  const merged = Object.fromEntries(
    Object.entries({ ...process.env, ...env }).filter((e): e is [string, string] => e[1] !== undefined),
  );
  const child = spawn(process.execPath, [...nodeFlagsFor(script), join(repoRoot, script), ...args], {
    cwd: repoRoot,
    env: merged,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (c: Buffer) => {
    output += c;
  });
  child.stderr?.on("data", (c: Buffer) => {
    output += c;
  });
  return {
    child,
    output: () => output,
    async waitFor(pattern, timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const match = output.match(pattern);
        if (match) return match;
        if (child.exitCode !== null)
          throw new Error(`${script} exited (${child.exitCode}) before ${pattern}:\n${output}`);
        await sleep(100);
      }
      throw new Error(`${script} did not print ${pattern} within ${timeoutMs} ms:\n${output.slice(-4000)}`);
    },
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Poll until the check returns a value other than undefined. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ""}`);
}
