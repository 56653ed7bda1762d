/**
 * `npm start`'s own stack for a benchmark: `node cli/pomona.ts up` with a state dir in a temp folder and
 * free ports, exactly as a user runs it (its own local control plane, operator, node-agent and gateway,
 * the quickstart model), minus any variable that would hand-tune it (bench/_user-config.ts). Resolves
 * once it printed its endpoint and key, then adds a key whose policy never binds, so a benchmark measures
 * the path and not the quickstart's limits (the limiter still runs on every request).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { apply, connect, type Kube } from "../cli/kube.ts";
import { freePort } from "../controlplane/local-control-plane.ts";
import { HAND_TUNING_VARIABLES, quickstartEngine } from "./_user-config.ts";

const root = join(import.meta.dirname, "..");
const NAMESPACE = "default";
const BENCH_KEY = "bench";
const NEVER_BINDS = { requestsPerMinute: 1_000_000_000, tokensPerMinute: 1_000_000_000, concurrentRequests: 1_000_000 };

export interface PomonaUp {
  gatewayUrl: string;
  /** The gateway's internal port: /metrics, /healthz, /readyz. */
  gatewayAdminUrl: string;
  /** The node-agent serves HTTPS with a certificate of the node CA, `agentCa`. */
  agentUrl: string;
  agentCa: string;
  /** The quickstart model's name. */
  model: string;
  /** A key whose policy never binds. */
  key: string;
  kube: Kube;
  /** The threads the node-agent says it started llama.cpp with, as it logged them; undefined if not found. */
  agentThreads: number | undefined;
  logDir: string;
  pids: () => { gateway: number | undefined; agent: number | undefined };
  /** Every process of the stack (`pomona up` itself and what it started), named by what it runs. */
  processes: () => { name: string; pid: number }[];
  /** The last part of `pomona up`'s own output. */
  output: () => string;
  stop: () => Promise<void>;
}

/** Children and grandchildren of a pid, from /proc (Linux). */
function descendants(pid: number): { pid: number; cmdline: string }[] {
  const all = readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .flatMap((d) => {
      try {
        const stat = readFileSync(`/proc/${d}/stat`, "utf8");
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        const cmdline = readFileSync(`/proc/${d}/cmdline`, "utf8").replaceAll("\0", " ");
        return [{ pid: Number(d), ppid, cmdline }];
      } catch {
        return [];
      }
    });
  const found: { pid: number; cmdline: string }[] = [];
  const walk = (parent: number) => {
    for (const p of all.filter((q) => q.ppid === parent)) {
      found.push(p);
      walk(p.pid);
    }
  };
  walk(pid);
  return found;
}

export async function startPomonaUp(timeoutMs = 600_000): Promise<PomonaUp> {
  const stateDir = mkdtempSync(join(tmpdir(), "pomona-bench-up-"));
  const [gatewayPort, adminPort, agentPort, operatorPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const env = { ...process.env };
  for (const name of HAND_TUNING_VARIABLES) delete env[name];
  const child: ChildProcess = spawn(
    process.execPath,
    [
      join(root, "cli", "pomona.ts"),
      "up",
      ...["--state-dir", stateDir, "--gateway-port", `${gatewayPort}`, "--gateway-admin-port", `${adminPort}`],
      ...["--agent-port", `${agentPort}`, "--operator-port", `${operatorPort}`],
    ],
    { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  const collect = (c: Buffer) => {
    output = (output + c).slice(-20_000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGINT");
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(stateDir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + timeoutMs;
    while (!/Press Ctrl-C to stop/.test(output)) {
      if (child.exitCode !== null) throw new Error(`pomona up exited with ${child.exitCode}:\n${output.slice(-3_000)}`);
      if (Date.now() > deadline)
        throw new Error(`pomona up was not serving within ${timeoutMs} ms:\n${output.slice(-3_000)}`);
      await sleep(200);
    }
    const kubeconfig = output.match(/export KUBECONFIG=(\S+)/)?.[1];
    if (!kubeconfig) throw new Error(`pomona up printed no kubeconfig:\n${output.slice(-3_000)}`);
    const kube = connect(kubeconfig);
    const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
    const model = quickstartEngine().name;
    const key = await benchKey(kube, gatewayUrl, model);
    const logDir = join(stateDir, "logs");
    const threads = await replicaThreads(kube, model);
    const caSecret = await kube.core.readNamespacedSecret({
      name: "pomona-gateway-node-client",
      namespace: "pomona-system",
    });
    const agentCa = Buffer.from(caSecret.data?.["ca.crt"] ?? "", "base64").toString("utf8");
    const processes = () => {
      // kube-apiserver's command line names etcd too, so it is looked for first.
      const named = (cmdline: string) =>
        [
          "kube-controller-manager",
          "kube-apiserver",
          "etcd",
          "operator/main.ts",
          "node-agent/main.ts",
          "gateway/main.ts",
        ]
          .find((n) => cmdline.includes(n))
          ?.replace("/main.ts", "") ?? cmdline.slice(0, 40);
      const tree = child.pid ? descendants(child.pid).map((p) => ({ name: named(p.cmdline), pid: p.pid })) : [];
      return child.pid ? [{ name: "pomona up", pid: child.pid }, ...tree] : tree;
    };
    const pids = () => {
      const all = processes();
      return {
        gateway: all.find((p) => p.name === "gateway")?.pid,
        agent: all.find((p) => p.name === "node-agent")?.pid,
      };
    };
    return {
      gatewayUrl,
      gatewayAdminUrl: `http://127.0.0.1:${adminPort}`,
      agentUrl: `https://127.0.0.1:${agentPort}`,
      agentCa,
      model,
      key,
      kube,
      agentThreads: threads,
      logDir,
      pids,
      processes,
      output: () => output,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** An ApiKey bound to a policy that never binds, and the model's own policy made the same; waits until served. */
async function benchKey(kube: Kube, gatewayUrl: string, model: string): Promise<string> {
  const policy = (name: string) => ({
    apiVersion: "pomona.dev/v1alpha1",
    kind: "RateLimitPolicy",
    metadata: { name, namespace: NAMESPACE },
    spec: NEVER_BINDS,
  });
  // The quickstart model names the policy "quickstart"; its limits are raised so they never bind either.
  await apply(kube, policy("quickstart"));
  await apply(kube, policy(BENCH_KEY));
  await apply(kube, {
    apiVersion: "pomona.dev/v1alpha1",
    kind: "ApiKey",
    metadata: { name: BENCH_KEY, namespace: NAMESPACE },
    spec: { owner: "bench", rateLimitPolicy: BENCH_KEY },
  } as never);
  const deadline = Date.now() + 120_000;
  let key = "";
  let last = "";
  while (Date.now() < deadline) {
    if (!key) {
      const data = await kube.core.readNamespacedSecret({ name: BENCH_KEY, namespace: NAMESPACE }).then(
        (s) => s.data?.key,
        () => undefined,
      );
      key = data ? Buffer.from(data, "base64").toString("utf8") : "";
    }
    if (key) {
      const res = await fetch(`${gatewayUrl}/v1/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model, prompt: "Hi", max_tokens: 1 }),
      }).catch(() => undefined);
      last = `${res?.status ?? "no answer"} ${(await res?.text().catch(() => "")) ?? ""}`.slice(0, 300);
      if (res?.status === 200) return key;
    }
    await sleep(250);
  }
  throw new Error(`the bench key was not served within 120 s (last answer: ${last})`);
}

/** The llama.cpp threads the model's replica runs with, as its node-agent measured and reported them. */
async function replicaThreads(kube: Kube, model: string): Promise<number | undefined> {
  const list = (await kube.custom.listNamespacedCustomObject({
    group: "pomona.dev",
    version: "v1alpha1",
    namespace: "default",
    plural: "modelreplicas",
  })) as { items: { spec: { model: string }; status?: { phase?: string; threads?: number } }[] };
  return list.items.find((r) => r.spec.model === model && r.status?.phase === "Ready")?.status?.threads;
}
