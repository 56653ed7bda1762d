/**
 * `npm start`'s own stack against node-llama-cpp alone, same machine, same run:
 * 1. time to first token p50/p99 at 1, 4, 8 and 16 concurrent streams, through the gateway and the
 *    node-agent, against node-llama-cpp called directly in this process;
 * 2. tokens/s of one stream through the stack ÷ node-llama-cpp at its best thread count.
 *
 * The stack is `node cli/pomona.ts up` itself (bench/_pomona-up.ts): its control plane, operator,
 * node-agent and gateway at their defaults, serving the quickstart model from the fixture file — so the
 * node-agent runs llama.cpp with the thread count its default configuration picks, whatever that is
 * (the count it logged is printed). The only change is a key whose policy never binds, and the same
 * limits on the quickstart's policy, so the limiter runs but never refuses.
 *
 * The direct side loads the same file with the quickstart's engine settings (sequences and per-sequence
 * context) at each candidate thread count (1, 2 and every usable CPU, at most the usable CPUs), in one
 * process with the same model, and first finds the best count by tokens/s (threadTrial); the comparison
 * then runs against that count and the agent's, and for each figure takes the better of them: the lowest
 * p99 time to first token at each concurrency, the highest tokens/s for one stream. A stream's time to first token runs from the
 * request to the first piece of text (the first SSE event carrying text over HTTP), including any wait
 * for a free sequence; its tokens/s are its completion tokens over the time from the request to its last
 * token. The paths take turns batch by batch, never together, after a warm-up of each path that is not
 * counted. The HTTP client is undici's `request` with keep-alive (bench/_sse-stream.ts), the leanest
 * client at hand, so the figures hold the stack's cost and as little of the client's as possible.
 *
 * To tell where a stack stream's wait comes from, the report also gives, per concurrency, the gateway's
 * own waiting-line time (`x-pomona-queue-ms` of each answer, as a histogram), the busy answers the node
 * gave the gateway (its upstream-attempt counter), and the CPU this process's threads other than its main
 * thread used while the stack's batches ran (on Linux): node-llama-cpp's threads here must be idle then,
 * or the direct side would steal the node-agent's core. Measured so far: they are (a few ms of V8 helper
 * threads per batch, no llama.cpp thread), with the direct contexts loaded, idle or taking turns alike.
 * Beside the stack and the direct side, a third path takes turns with them in the time-to-first-token
 * batches: the floor of any two-process HTTP path on this machine, a bare Node relay (bench/_bare-relay.ts)
 * in front of a stand-in upstream that answers at once (bench/_overhead-upstream.ts), with no model and none
 * of the gateway's or the node-agent's work. Its time to first token is what the two hops alone cost, to
 * be read against the target's slack over direct.
 * It also gives the CPU each of the stack's processes used over the whole time-to-first-token phase (on
 * Linux): what the control plane and the operator take from the cores the request path runs on (measured:
 * ~3 % of one core; docs/decisions.md, "npm start keeps its control plane and operator at the default CPU
 * priority").
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { usableCpus } from "../node-agent/hardware.ts";
import { BENCH_PROMPT, FIXTURE_MODEL } from "./_bench-model.ts";
import { type BenchChild, processStat, startBenchChild } from "./_child.ts";
import { type DirectEngine, loadDirect } from "./_direct-llama.ts";
import { metricSum } from "./_metrics.ts";
import { startPomonaUp } from "./_pomona-up.ts";
import { quickNote, size } from "./_size.ts";
import { readCompletionStream, type StreamFigures } from "./_sse-stream.ts";
import { median, percentile } from "./_stats.ts";
import { targetTable } from "./_targets.ts";
import { agentMetricsUrl, gatewayMetricsUrl, quickstartEngine } from "./_user-config.ts";

const CONCURRENCY = [1, 4, 8, 16];
/** Time-to-first-token samples per path and concurrency (batches of `concurrency` streams until reached). */
const TTFT_SAMPLES = size(100, 4);
const TTFT_MAX_TOKENS = size(64, 16);
/**
 * Batches of 1 and of 8 streams each path runs before anything counts. A fresh stack's first few hundred
 * requests run code V8 has not optimised yet (measured: time to first token p50 ~5 ms over the first
 * ~300 streams, ~3.3 ms after); a user's long-running gateway and node-agent are past that.
 */
const WARM_UP_BATCHES = size(40, 1);
const TPS_ROUNDS = size(5, 1);
const TPS_MAX_TOKENS = size(200, 32);
const TTFT_FACTOR = 1.1;
const TTFT_SLACK_MS = 2;
const TPS_TARGET = 0.9;
/** Streams per candidate thread count when finding node-llama-cpp's best one (median tokens/s). */
const TRIAL_ROUNDS = size(5, 1);

const engine = quickstartEngine();
const cpus = usableCpus();
const candidates = [...new Set([1, 2, cpus])].filter((t) => t <= cpus).sort((a, b) => a - b);

type Run = (maxTokens: number) => Promise<StreamFigures>;

/** CPU ms used so far by this process's threads other than its main thread (Linux; 0 elsewhere). */
function helperThreadsCpuMs(): number {
  if (!existsSync("/proc/self/task")) return 0;
  let ticks = 0;
  for (const task of readdirSync("/proc/self/task")) {
    if (Number(task) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/self/task/${task}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // The thread ended meanwhile.
    }
  }
  return ticks * 10; // USER_HZ is 100 on Linux
}

/** CPU each of the stack's processes used since `before` was read. */
function stackCpuSince(before: Map<number, number>): { name: string; cpuMs: number; nice: number }[] {
  return up.processes().flatMap(({ name, pid }) => {
    const now = processStat(pid);
    return now ? [{ name, cpuMs: (now.cpuSeconds - (before.get(pid) ?? 0)) * 1000, nice: now.nice }] : [];
  });
}
const stackCpuNow = () => new Map(up.processes().map(({ pid }) => [pid, processStat(pid)?.cpuSeconds ?? 0]));

/** Where the stack's time to first token goes: the path's counters, read before and after each concurrency. */
async function pathCounters(): Promise<Record<"busy" | "gwSum" | "gwCount" | "nodeSum" | "nodeCount", number>> {
  const gw = gatewayMetricsUrl(up.gatewayAdminUrl);
  const node = agentMetricsUrl(up.agentUrl);
  const read = async (url: string, name: string, ca?: string, having?: string) =>
    (await metricSum(url, name, ca, having)) ?? Number.NaN;
  return {
    busy: await read(gw, "pomona_gateway_upstream_attempts_total", undefined, 'outcome="busy"'),
    gwSum: await read(gw, "pomona_gateway_time_to_first_token_seconds_sum"),
    gwCount: await read(gw, "pomona_gateway_time_to_first_token_seconds_count"),
    nodeSum: await read(node, "pomona_node_time_to_first_token_seconds_sum", up.agentCa),
    nodeCount: await read(node, "pomona_node_time_to_first_token_seconds_count", up.agentCa),
  };
}

/** Counts of waiting-line times: none, under 10 ms, under 100 ms, 100 ms or more. */
function queueHistogram(ms: number[]): string {
  const bins = [0, 0, 0, 0];
  for (const m of ms) bins[m <= 0 ? 0 : m < 10 ? 1 : m < 100 ? 2 : 3]!++;
  return `0 ms: ${bins[0]}, 1–9: ${bins[1]}, 10–99: ${bins[2]}, ≥ 100: ${bins[3]}`;
}

async function batch(concurrency: number, run: Run, maxTokens: number): Promise<StreamFigures[]> {
  return Promise.all(Array.from({ length: concurrency }, () => run(maxTokens)));
}

const up = await startPomonaUp();
const direct = await loadDirect(FIXTURE_MODEL, engine, candidates).catch(async (err) => {
  await up.stop();
  throw err;
});

/**
 * node-llama-cpp's best thread count, found first on its own: each candidate's median tokens/s over a few
 * streams. Only the best and the agent's count stay loaded for the comparison: an idle context of more
 * threads than the best is not idle here (measured: with a 2-thread context beside them, whose threads
 * keep polling after each of its turns, the stack's p99 at 8 streams was 39.0 ms instead of 19.9 and its
 * one-stream tokens/s 0.80 of direct instead of 0.84, in back-to-back runs).
 */
async function threadTrial(engines: DirectEngine[]): Promise<Map<number, number>> {
  const tps = new Map<number, number>();
  for (const e of engines) {
    await e.stream(BENCH_PROMPT, TPS_MAX_TOKENS); // warm-up, not counted
    const runs: number[] = [];
    for (let r = 0; r < TRIAL_ROUNDS; r++) {
      const s = await e.stream(BENCH_PROMPT, TPS_MAX_TOKENS);
      runs.push(s.tokens / s.seconds);
    }
    tps.set(e.threads, median(runs));
  }
  return tps;
}
const trial = await threadTrial(direct.engines);
const bestThreads = [...trial].reduce((a, b) => (b[1] > a[1] ? b : a))[0];
const kept = direct.engines.filter((e) => e.threads === bestThreads || e.threads === up.agentThreads);
for (const e of direct.engines) if (!kept.includes(e)) await e.dispose();
const stackRun: Run = (maxTokens) =>
  readCompletionStream(`${up.gatewayUrl}/v1/completions`, `Bearer ${up.key}`, {
    model: up.model,
    prompt: BENCH_PROMPT,
    max_tokens: maxTokens,
  });
const directRun =
  (e: DirectEngine): Run =>
  (maxTokens) =>
    e.stream(BENCH_PROMPT, maxTokens);
const paths: [string, Run][] = [
  ["stack", stackRun],
  ...kept.map((e): [string, Run] => [`direct ${e.threads}t`, directRun(e)]),
];

// The floor: two bare hops, no model (a stand-in upstream answering at once).
const bareChildren: BenchChild[] = [];
const bareRun: Run = await (async () => {
  const upstream = await startBenchChild("_overhead-upstream.ts");
  bareChildren.push(upstream);
  const relay = await startBenchChild("_bare-relay.ts", [String(upstream.port)]);
  bareChildren.push(relay);
  return (maxTokens: number) =>
    readCompletionStream(`http://127.0.0.1:${relay.port}/v1/completions`, "Bearer none", {
      model: "tiny",
      prompt: BENCH_PROMPT,
      max_tokens: maxTokens,
    });
})().catch(async (err) => {
  for (const c of bareChildren) await c.stop();
  await direct.close();
  await up.stop();
  throw err;
});
const BARE = "two bare hops";
const ttftPaths: [string, Run][] = [...paths, [BARE, bareRun]];

const f = (n: number | undefined, digits = 1) => (n === undefined || Number.isNaN(n) ? "–" : n.toFixed(digits));

try {
  for (const [, run] of ttftPaths)
    for (let b = 0; b < WARM_UP_BATCHES; b++) {
      await batch(1, run, TTFT_MAX_TOKENS);
      await batch(8, run, TTFT_MAX_TOKENS);
    }

  // 1. Time to first token.
  const ttft = new Map<string, Map<number, number[]>>(
    ttftPaths.map(([l]) => [l, new Map(CONCURRENCY.map((c) => [c, []]))]),
  );
  // Where the stack's waits come from, per concurrency.
  const queued = new Map<number, number[]>(CONCURRENCY.map((c) => [c, []]));
  const counters = new Map<number, Awaited<ReturnType<typeof pathCounters>>>();
  const helperCpu = new Map<number, { cpuMs: number; wallMs: number }>();
  const ttftStarted = performance.now();
  const stackCpuBefore = stackCpuNow();
  for (const c of CONCURRENCY) {
    const batches = Math.ceil(TTFT_SAMPLES / c);
    const before = await pathCounters();
    const cpu = { cpuMs: 0, wallMs: 0 };
    for (let b = 0; b < batches; b++) {
      for (const [label, run] of ttftPaths) {
        const cpuBefore = label === "stack" ? helperThreadsCpuMs() : 0;
        const wallBefore = performance.now();
        const streams = await batch(c, run, TTFT_MAX_TOKENS);
        if (label === "stack") {
          cpu.cpuMs += helperThreadsCpuMs() - cpuBefore;
          cpu.wallMs += performance.now() - wallBefore;
          queued.get(c)?.push(...streams.map((s) => s.queueMs ?? 0));
        }
        if (streams.some((s) => s.firstTextMs === undefined)) throw new Error(`${label}: a stream sent no text`);
        ttft
          .get(label)
          ?.get(c)
          ?.push(...streams.map((s) => s.firstTextMs as number));
      }
    }
    const after = await pathCounters();
    counters.set(c, {
      busy: after.busy - before.busy,
      gwSum: after.gwSum - before.gwSum,
      gwCount: after.gwCount - before.gwCount,
      nodeSum: after.nodeSum - before.nodeSum,
      nodeCount: after.nodeCount - before.nodeCount,
    });
    helperCpu.set(c, cpu);
  }
  const stackCpu = stackCpuSince(stackCpuBefore);
  const ttftSeconds = (performance.now() - ttftStarted) / 1000;
  // 2. Tokens/s of one stream.
  const tps = new Map<string, number[]>(paths.map(([l]) => [l, []]));
  for (let r = 0; r < TPS_ROUNDS; r++) {
    for (const [label, run] of paths) {
      const [s] = await batch(1, run, TPS_MAX_TOKENS);
      if (s) tps.get(label)?.push(s.tokens / s.seconds);
    }
  }

  const at = (label: string, c: number) => ttft.get(label)?.get(c) ?? [];
  const average = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const directLabels = kept.map((e) => `direct ${e.threads}t`);
  const show = (label: string) => label.replace(/^direct (\d+)t$/, "$1 thread(s)");
  // node-llama-cpp alone at the thread count the node-agent chose, when it is among the candidates: the
  // stack against it is the cost of the HTTP path; it against the best is the cost of the thread count.
  const agentLabel = directLabels.find((l) => l === `direct ${up.agentThreads}t`);
  const ttftRows: string[] = [];
  const targets: Parameters<typeof targetTable>[0] = [];
  for (const c of CONCURRENCY) {
    const best = directLabels.reduce((a, b) => (percentile(at(b, c), 99) < percentile(at(a, c), 99) ? b : a));
    const stackP99 = percentile(at("stack", c), 99);
    const directP99 = percentile(at(best, c), 99);
    const limit = TTFT_FACTOR * directP99 + TTFT_SLACK_MS;
    ttftRows.push(
      `| ${c} | ${f(percentile(at("stack", c), 50))} / ${f(stackP99)} | ${directLabels.map((l) => `${f(percentile(at(l, c), 50))} / ${f(percentile(at(l, c), 99))}`).join(" | ")} | ${f(percentile(at(BARE, c), 50))} / ${f(percentile(at(BARE, c), 99))} | ${show(best)} | ${f(stackP99 / directP99, 2)}× | ${agentLabel ? `${f(stackP99 / percentile(at(agentLabel, c), 99), 2)}×` : "–"} |`,
    );
    targets.push({
      target: `TTFT p99 at ${c} stream${c > 1 ? "s" : ""} ≤ ${TTFT_FACTOR} × direct + ${TTFT_SLACK_MS} ms`,
      measured: `${f(stackP99)} ms vs limit ${f(limit)} ms`,
      met: Number.isNaN(stackP99) || Number.isNaN(directP99) ? undefined : stackP99 <= limit,
    });
  }
  const tpsOf = (l: string) => median(tps.get(l) ?? []);
  const bestTps = directLabels.reduce((a, b) => (tpsOf(b) > tpsOf(a) ? b : a));
  const ratio = tpsOf("stack") / tpsOf(bestTps);
  targets.push({
    target: `one stream through npm start's stack ÷ node-llama-cpp at its best thread count ≥ ${TPS_TARGET}`,
    measured: `${f(ratio, 3)} (${f(tpsOf("stack"), 0)} ÷ ${f(tpsOf(bestTps), 0)} tokens/s at ${show(bestTps)})`,
    met: Number.isNaN(ratio) ? undefined : ratio >= TPS_TARGET,
  });
  // The gap split in two, from this run's figures: the thread count the default picks, and the rest.
  const cause = agentLabel
    ? ` Split of the one-stream gap: node-llama-cpp alone at the agent's ${show(agentLabel)} gives ${f(tpsOf(agentLabel) / tpsOf(bestTps), 3)} of its best (the thread count), and the stack gives ${f(tpsOf("stack") / tpsOf(agentLabel), 3)} of node-llama-cpp at that same count (the HTTP path, the gateway and the processes beside it).`
    : ` The agent's thread count (${up.agentThreads ?? "not logged"}) is not among the counts measured directly, so the gap cannot be split here.`;
  const samples = CONCURRENCY.map((c) => `${Math.ceil(TTFT_SAMPLES / c) * c}`).join("/");
  console.log(`### \`npm start\`'s stack against node-llama-cpp alone: time to first token and tokens/s
${quickNote()}
\`node cli/pomona.ts up\` in a temp state dir (its own control plane, operator, node-agent and gateway at their defaults; the quickstart model from the fixture file, context ${engine.contextSize} over ${engine.parallelSequences} sequences). Its node-agent started llama.cpp with **${up.agentThreads ?? "an unlogged number of"} thread(s)** — what its default configuration picks on this machine (${cpus} usable CPUs); no thread setting was passed. node-llama-cpp alone in this process with the same file and engine settings; its thread count tried first at ${[...trial].map(([t, v]) => `${t} (${f(v, 0)} tokens/s)`).join(", ")}, median of ${TRIAL_ROUNDS} streams of up to ${TPS_MAX_TOKENS} tokens each: the best (${bestThreads}) and the agent's count kept, any other freed before the comparison. Prompt "${BENCH_PROMPT}", temperature 0.

Time to first token (ms, p50 / p99): ${samples} streams per path at 1/4/8/16 concurrent (batches of that many, paths taking turns), up to ${TTFT_MAX_TOKENS} tokens each, after ${WARM_UP_BATCHES} warm-up batches of 1 and of 8 streams per path not counted; includes any wait for one of the ${engine.parallelSequences} sequences. Client: undici request() with keep-alive. Two bare hops: the floor of any two-process HTTP path here, a bare Node relay in front of a stand-in upstream that answers at once, no model, no TLS and none of the gateway's or the node-agent's work (bench/_bare-relay.ts), taking turns with the other paths; its p99 is to be read against the target's slack of ${TTFT_SLACK_MS} ms + ${Math.round((TTFT_FACTOR - 1) * 100)} % of direct.

| streams | stack p50 / p99 | ${directLabels.map((l) => `direct, ${show(l)} p50 / p99`).join(" | ")} | two bare hops, no model p50 / p99 | best direct | stack p99 ÷ best direct p99 | stack p99 ÷ direct p99 at the agent's thread count |
|---|---|${directLabels.map(() => "---|").join("")}---|---|---|---|
${ttftRows.join("\n")}

Where the stack's streams waited (per concurrency: the gateway's waiting-line time of each stream, \`x-pomona-queue-ms\`; busy answers from the node to the gateway; mean time to first token as the client, the gateway (from its handler's start) and the node-agent (from the request's admission call, the wait for a sequence included) each measured it, from their histograms' sums; CPU of this process's threads other than its main thread while the stack's batches ran, against their wall time):

${CONCURRENCY.map((c) => {
  const n = counters.get(c);
  const perStream = (sum = Number.NaN, count = Number.NaN) => f((1000 * sum) / count);
  return `- ${c} stream${c > 1 ? "s" : ""}: waiting line ${queueHistogram(queued.get(c) ?? [])}; busy answers ${f(n?.busy, 0)}; mean TTFT client ${f(average(at("stack", c)))} ms, gateway ${perStream(n?.gwSum, n?.gwCount)} ms, node-agent ${perStream(n?.nodeSum, n?.nodeCount)} ms; helper threads ${f(helperCpu.get(c)?.cpuMs, 0)} ms CPU in ${f(helperCpu.get(c)?.wallMs, 0)} ms`;
}).join("\n")}

CPU each of the stack's processes used over the whole time-to-first-token phase (${f(ttftSeconds)} s wall, both paths' batches; all threads, with the process's nice value): ${stackCpu.map((p) => `${p.name} ${f(p.cpuMs, 0)} ms (nice ${p.nice})`).join(", ") || "not measured (no /proc)"}.

Tokens/s of one stream (median of ${TPS_ROUNDS}, up to ${TPS_MAX_TOKENS} tokens): stack ${f(tpsOf("stack"), 0)}; ${directLabels.map((l) => `direct at ${show(l)} ${f(tpsOf(l), 0)}`).join("; ")}.${cause}

${targetTable(targets)}`);
} finally {
  for (const c of bareChildren) await c.stop();
  await direct.close();
  await up.stop();
}
