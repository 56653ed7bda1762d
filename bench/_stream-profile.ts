/**
 * A tool for looking at the per-token cost of one stream, not a benchmark of the suite: the real node-agent
 * and gateway as child processes (as bench/inference-stack.ts starts them, mutual TLS between them), one
 * stream at a time through the agent alone and through gateway + agent, and node-llama-cpp in this
 * process, taking turns. Prints each path's median tokens/s and its ratio to direct. With PROFILE_DIR set,
 * the agent and the gateway run under `--cpu-prof` and write their profiles there when they stop. With
 * COMPARE_ROOT set to another checkout of Pomona, its agent and gateway run too, taking turns with these
 * (a before/after comparison in one run).
 *
 *   node bench/_stream-profile.ts [streams per path, default 20] [max tokens, default 480]
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { LlamaCompletion } from "node-llama-cpp";
import { Agent } from "undici";
import { BENCH_ENGINE, BENCH_MODEL, BENCH_PROMPT, BENCH_THREADS, benchContext } from "./_bench-model.ts";
import { cpuSeconds, startBenchChild, startStaticGateway } from "./_child.ts";
import { BENCH_NODE_TOKEN, benchKey, generousPolicy, staticGatewaySpec } from "./_gateway-config.ts";
import { benchNodeTls } from "./_node-tls.ts";
import { readCompletionStream } from "./_sse-stream.ts";
import { median } from "./_stats.ts";

const STREAMS = Number(process.argv[2] ?? 20);
const MAX_TOKENS = Number(process.argv[3] ?? 480);
const API_KEY = "sk-pomona-bench";
const profileEnv: Record<string, string> = process.env.PROFILE_DIR
  ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.PROFILE_DIR}` }
  : {};

const tls = await benchNodeTls();
const asGateway = new Agent({ connect: { cert: tls.gateway.cert, key: tls.gateway.key, ca: tls.gateway.ca } });

/** The agent and gateway of one checkout (this one, or COMPARE_ROOT's for a side-by-side run). */
async function startStack(root: string) {
  const agent = await startBenchChild(
    join(root, "bench", "_agent-replica.ts"),
    [BENCH_MODEL, String(BENCH_THREADS), BENCH_NODE_TOKEN, JSON.stringify(tls.node)],
    profileEnv,
  );
  const replicaBase = `https://127.0.0.1:${agent.port}/replicas/bench/replica`;
  const gateway = await startStaticGateway(
    [
      JSON.stringify(
        staticGatewaySpec({
          model: "bench",
          endpoint: replicaBase,
          contextSize: BENCH_ENGINE.contextSize,
          keys: [benchKey(API_KEY, generousPolicy.name)],
          policies: [generousPolicy],
          nodeTls: tls.gateway,
        }),
      ),
    ],
    profileEnv,
    join(root, "bench", "_static-gateway.ts"),
  );
  return { agent, gateway, replicaBase };
}
const roots: [string, string][] = [["", join(import.meta.dirname, "..")]];
if (process.env.COMPARE_ROOT) roots.push(["base ", process.env.COMPARE_ROOT]);
const stacks = await Promise.all(roots.map(async ([label, root]) => ({ label, ...(await startStack(root)) })));
// Diagnostic: PIN_AGENT=<cpu> keeps each agent's threads on that CPU (run this script under `taskset` to
// keep the rest off it), to tell scheduling from work.
if (process.env.PIN_AGENT)
  for (const { agent } of stacks)
    execFileSync("taskset", ["-a", "-p", "-c", process.env.PIN_AGENT, String(agent.child.pid)]);
const { context, close } = await benchContext();
const sequence = context.getSequence();

interface Run {
  tokens: number;
  seconds: number;
  firstTextMs: number;
}

async function direct(): Promise<Run> {
  const started = performance.now();
  let tokens = 0;
  const completion = new LlamaCompletion({ contextSequence: sequence, autoDisposeSequence: false });
  await sequence.clearHistory();
  await completion.generateCompletion(BENCH_PROMPT, {
    maxTokens: MAX_TOKENS,
    temperature: 0,
    repeatPenalty: false,
    onToken: (t) => {
      tokens += t.length;
    },
    onTextChunk: () => {},
  });
  completion.dispose({ disposeSequence: false });
  return { tokens, seconds: (performance.now() - started) / 1000, firstTextMs: Number.NaN };
}

/** One stream read to its end, as a client reads it. */
async function http(url: string, authorization: string, dispatcher?: Agent): Promise<Run> {
  const body = { model: "bench", prompt: BENCH_PROMPT, max_tokens: MAX_TOKENS };
  const { tokens, seconds, firstTextMs } = await readCompletionStream(url, authorization, body, dispatcher);
  return { tokens, seconds, firstTextMs: firstTextMs ?? Number.NaN };
}

interface Path {
  label: string;
  run: () => Promise<Run>;
  /** Processes whose CPU time per token is reported (this process is the client, or the engine when direct). */
  processes: [string, number | undefined][];
}
const paths: Path[] = [{ label: "node-llama-cpp", run: direct, processes: [] }];
for (const { label, replicaBase, gateway, agent } of stacks)
  paths.push(
    {
      label: `${label}agent alone`,
      run: () => http(`${replicaBase}/v1/completions`, `Bearer ${BENCH_NODE_TOKEN}`, asGateway),
      processes: [["agent", agent.child.pid]],
    },
    {
      label: `${label}gateway + agent`,
      run: () => http(`http://127.0.0.1:${gateway.port}/v1/completions`, `Bearer ${API_KEY}`),
      processes: [
        ["agent", agent.child.pid],
        ["gateway", gateway.child.pid],
      ],
    },
  );
interface Figures {
  tps: number[];
  firstTextMs: number[];
  tokens: number;
  /** CPU seconds per process name, "client" being this process. */
  cpu: Map<string, number>;
}
const figures = new Map<string, Figures>(
  paths.map(({ label }) => [label, { tps: [], firstTextMs: [], tokens: 0, cpu: new Map() }]),
);
const clientCpu = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};
try {
  for (let round = 0; round <= STREAMS; round++)
    for (const { label, run, processes } of paths) {
      const before = processes.map(([, pid]) => cpuSeconds(pid) ?? Number.NaN);
      const clientBefore = clientCpu();
      const r = await run();
      if (round === 0) continue;
      const f = figures.get(label)!;
      f.tps.push(r.tokens / r.seconds);
      f.firstTextMs.push(r.firstTextMs);
      f.tokens += r.tokens;
      const self = label === "node-llama-cpp" ? "engine" : "client";
      f.cpu.set(self, (f.cpu.get(self) ?? 0) + clientCpu() - clientBefore);
      processes.forEach(([name, pid], i) => {
        f.cpu.set(name, (f.cpu.get(name) ?? 0) + (cpuSeconds(pid) ?? Number.NaN) - before[i]!);
      });
    }
  const directTps = median(figures.get("node-llama-cpp")!.tps);
  for (const [label, f] of figures) {
    const tps = median(f.tps);
    const addedMs = 1000 / tps - 1000 / directTps;
    const cpu = [...f.cpu].map(([name, s]) => `${name} ${((s / f.tokens) * 1e6).toFixed(0)}`).join(", ");
    console.log(
      `${label.padEnd(22)} ${tps.toFixed(0).padStart(6)} tok/s  ${(tps / directTps).toFixed(3)} of direct  +${addedMs.toFixed(3)} ms/token  first text ${median(f.firstTextMs).toFixed(1)} ms  CPU µs/token: ${cpu}`,
    );
  }
} finally {
  await close();
  for (const { agent, gateway } of stacks) {
    await gateway.stop();
    await agent.stop();
  }
  await asGateway.close();
}
