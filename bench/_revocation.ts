/**
 * `kubectl delete apikey` → the key refused by the gateway, end to end: the
 * operator and the gateway each in their own process as deployed (default
 * debounce), against a real API server. Keys are minted by the operator; each
 * round deletes one with kubectl (its start included) while the key is asked
 * for `/v1/models` every 10 ms, and the time to its first 401 is recorded.
 * Used by operator-scale.ts; run alone for a small run:
 *   node bench/_revocation.ts   (starts its own control plane; POMONA_BENCH_ROUNDS, default 7)
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, startControlPlane } from "../controlplane/local-control-plane.ts";
import { nodeFlagsFor } from "../crds/api/well-known.ts";

const root = join(import.meta.dirname, "..");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await Promise.resolve()
      .then(check)
      .catch(() => undefined);
    if (v !== undefined) return v;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function startProcess(script: string, env: Record<string, string>) {
  const child = spawn(process.execPath, [...nodeFlagsFor(script), join(root, script)], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let log = "";
  child.stdout?.on("data", (c: Buffer) => {
    log = (log + c).slice(-100_000);
  });
  return {
    log: () => log,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

export interface RevocationFigures {
  /** ms from the start of `kubectl delete` to the gateway's first 401, per round. */
  rounds: number[];
  keys: number;
}

/** Runs against a control plane whose CRDs are installed; uses namespaces of its own. */
export async function measureRevocation(
  kubeconfigPath: string,
  kubectlPath: string,
  rounds: number,
): Promise<RevocationFigures> {
  const ns = "bench-revoke";
  const system = "bench-revoke-system";
  const kubectl = (args: string[], input?: string) =>
    execFileSync(kubectlPath, args, { env: { ...process.env, KUBECONFIG: kubeconfigPath }, input }).toString();
  for (const n of [ns, system]) kubectl(["create", "namespace", n]);
  const env = { KUBECONFIG: kubeconfigPath, POMONA_NAMESPACE: system };
  const operator = startProcess("operator/main.ts", { ...env, POMONA_OPERATOR_PORT: String(await freePort()) });
  const gatewayPort = await freePort();
  const gateway = startProcess("gateway/main.ts", {
    ...env,
    POMONA_GATEWAY_PORT: String(gatewayPort),
    POMONA_GATEWAY_HOST: "127.0.0.1",
    POMONA_GATEWAY_ADMIN_PORT: String(await freePort()),
    POMONA_NODE_TOKEN: "bench-node-token",
    POMONA_LOG_LEVEL: "warn",
  });
  const url = `http://127.0.0.1:${gatewayPort}`;
  try {
    const names = Array.from({ length: rounds }, (_, i) => `revoke-${i}`);
    kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: "v1",
        kind: "List",
        items: names.map((name) => ({
          apiVersion: "pomona.dev/v1alpha1",
          kind: "ApiKey",
          metadata: { name, namespace: ns },
          spec: { owner: "bench" },
        })),
      }),
    );
    const status = async (key: string) =>
      (await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status;
    const keys = new Map<string, string>();
    for (const name of names) {
      const key = await until(`the Secret of ${name}`, () => {
        const out = kubectl(["get", "secret", name, "-n", ns, "-o", "jsonpath={.data.key}", "--ignore-not-found"]);
        return out ? Buffer.from(out, "base64").toString("utf8") : undefined;
      });
      keys.set(name, key);
      await until(`the gateway to accept ${name}`, async () => ((await status(key)) === 200 ? true : undefined));
    }
    const results: number[] = [];
    for (const name of names) {
      const key = keys.get(name) ?? "";
      // A quiet spell before each delete, as a lone change in a real cluster is.
      await sleep(500);
      const started = performance.now();
      const deleting = new Promise<void>((resolve, reject) => {
        const child = spawn(kubectlPath, ["delete", "apikey", name, "-n", ns, "--wait=false"], {
          env: { ...process.env, KUBECONFIG: kubeconfigPath },
          stdio: "ignore",
        });
        child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`kubectl delete exited ${code}`))));
      });
      // Asked every 10 ms (until's 50 ms would blur the figure).
      const deadline = Date.now() + 60_000;
      while ((await status(key)) !== 401) {
        if (Date.now() > deadline) throw new Error(`the gateway still accepts ${name} a minute after its deletion`);
        await sleep(10);
      }
      results.push(performance.now() - started);
      await deleting;
    }
    return { rounds: results, keys: names.length };
  } finally {
    await gateway.stop();
    await operator.stop();
    for (const n of [ns, system]) kubectl(["delete", "namespace", n, "--wait=false"]);
  }
}

if (import.meta.main) {
  const dir = mkdtempSync(join(tmpdir(), "pomona-bench-revoke-"));
  const cp = await startControlPlane({ dir });
  try {
    execFileSync(cp.binaries.kubectl, ["apply", "--server-side", "-f", join(root, "crds")], {
      env: { ...process.env, KUBECONFIG: cp.kubeconfigPath },
    });
    execFileSync(
      cp.binaries.kubectl,
      ["wait", "--for=condition=Established", "--timeout=60s", "crd/apikeys.pomona.dev"],
      { env: { ...process.env, KUBECONFIG: cp.kubeconfigPath } },
    );
    const figures = await measureRevocation(
      cp.kubeconfigPath,
      cp.binaries.kubectl,
      Number(process.env.POMONA_BENCH_ROUNDS ?? 7),
    );
    const sorted = [...figures.rounds].sort((a, b) => a - b);
    console.log(
      `kubectl delete apikey → refused: median ${sorted[sorted.length >> 1]?.toFixed(0)} ms; rounds ${figures.rounds.map((r) => r.toFixed(0)).join(", ")} ms`,
    );
  } finally {
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
