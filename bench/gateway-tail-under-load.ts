/**
 * Tail latency under load: the latency the gateway adds at p99 under an open-loop load at half of its
 * own measured saturation rate, divided by the p99 it adds at one client; and the same for LiteLLM at
 * half of its own saturation rate. Non-streaming chat completions against the fast stand-in upstream
 * (bench/_overhead-upstream.ts), as in bench/gateway-overhead.ts.
 *
 * Each proxy first warms up (closed loop, not counted). Then each round, for each proxy:
 * 1. saturation: requests per second with CONNECTIONS always in flight (closed loop);
 * 2. one client: p99 of sequential requests, through the proxy and directly, taken in turn;
 * 3. under load: an open-loop schedule at half of that saturation rate for OPEN_SECONDS, through the
 *    proxy and directly at the same rate, taken in turn, each after a short run at that rate not counted;
 *    latency counts from each request's scheduled send time (bench/_load.ts), so a stall cannot hide by
 *    delaying the next sends. Meanwhile the gateway and the upstream report their event-loop delay, GC
 *    pauses and CPU (bench/_loop-stats.ts), and the machine's run queue is sampled: where the tail comes from.
 * Added p99 = the proxy's p99 − the direct p99 at the same load in the same round. Ratio = added p99
 * under load ÷ added p99 at one client, per round; the report gives the medians over rounds.
 *
 * The gateway is the real app at its default settings (bench/_static-gateway.ts), LiteLLM as
 * bench/_litellm.ts runs it. Load generator, proxy and upstream share the machine's cores.
 */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { askLoopStats, type BenchChild } from "./_child.ts";
import { BENCH_NODE_TOKEN } from "./_gateway-config.ts";
import { LITELLM_VERSION, type LiteLLMProxy, startLiteLLM } from "./_litellm.ts";
import {
  chatBody,
  chatTarget,
  closedLoopRate,
  type HttpTarget,
  MAX_IN_FLIGHT,
  openLoop,
  sequential,
  startUpstreamAndGateways,
} from "./_load.ts";
import type { LoopStats } from "./_loop-stats.ts";
import { QUICK, quickNote, size } from "./_size.ts";
import { median, percentile } from "./_stats.ts";
import { targetTable } from "./_targets.ts";

const LITELLM_KEY = "sk-litellm-bench";
const ROUNDS = size(3, 1);
const SATURATION_SECONDS = size(4, 1);
const CONNECTIONS = 32;
const SEQUENTIAL = size(2_000, 200);
const SEQUENTIAL_MAX_SECONDS = size(10, 2);
const WARMUP = size(200, 20);
const OPEN_SECONDS = size(10, 2);
/**
 * Discarded before the first round: a process fresh from start runs its code unoptimised and its heap at
 * its smallest, so its first seconds measured a start, not a load (saturation rose by half over the first
 * rounds without it).
 */
const PROXY_WARMUP_SECONDS = size(5, 1);
/**
 * Discarded before each open-loop phase, at the phase's rate: the load generator opens the connections that
 * rate needs (its pools' idle connections closed during the other phases) and the process under test
 * resumes from idle, so the phase measures a steady load. A stall within the phase still counts in full.
 */
const OPEN_WARMUP_SECONDS = size(1, 0.5);
const TARGET_RATIO = 2;

const body = chatBody();

interface ProxyRound {
  saturation: number;
  rate: number;
  singleP99: number;
  directSingleP99: number;
  loadedP99: number;
  directLoadedP99: number;
  achieved: number;
  dropped: number;
  /** Inside the processes during each open-loop phase; the gateway's only for the gateway. */
  inside?: { direct: Inside; proxy: Inside };
}

/**
 * What one process did during an open-loop phase: the children report all of LoopStats, the load generator
 * (this process) only its event-loop delay and CPU.
 */
type ProcessInside = Pick<LoopStats, "cpuSeconds" | "seconds"> & {
  delay: Pick<LoopStats["delay"], "p99" | "max">;
  gc?: LoopStats["gc"];
  heap?: LoopStats["heap"];
};

/** What each process did during one open-loop phase, and how many threads wanted a core. */
interface Inside {
  gateway?: LoopStats;
  upstream: LoopStats;
  generator: ProcessInside;
  /** Runnable threads on the whole machine (/proc/stat procs_running, sampled every 10 ms): mean and p99. */
  runnable: { mean: number; p99: number };
}

const stack = await startUpstreamAndGateways([{}], { loopStats: true });
const [gateway] = stack.gateways as [BenchChild];
let litellm: LiteLLMProxy | undefined;
let litellmProblem: string | undefined;
try {
  litellm = await startLiteLLM({
    model: "tiny",
    apiBase: `${stack.upstreamBase}/v1`,
    upstreamKey: BENCH_NODE_TOKEN,
    masterKey: LITELLM_KEY,
  });
} catch (err) {
  litellmProblem = (err as Error).message;
}

// Enough connections for an open-loop burst; undici opens them as needed.
const CONNECTIONS_PER_POOL = 512;
const direct = stack.direct(body, CONNECTIONS_PER_POOL);
const proxies: HttpTarget[] = [stack.through(gateway, "gateway", body, CONNECTIONS_PER_POOL)];
if (litellm)
  proxies.push(
    chatTarget({
      label: "LiteLLM",
      port: litellm.port,
      authorization: `Bearer ${LITELLM_KEY}`,
      body,
      connections: CONNECTIONS_PER_POOL,
    }),
  );

const runnableNow = () => Number(/procs_running (\d+)/.exec(readFileSync("/proc/stat", "utf8"))?.[1] ?? Number.NaN);

/**
 * An open-loop phase, watched from inside: the gateway's and the upstream's event-loop delay, GC pauses and
 * CPU (bench/_loop-stats.ts), the load generator's own, and the machine's run queue.
 */
async function watched(target: HttpTarget, rate: number, withGateway: boolean) {
  await openLoop(target, rate, OPEN_WARMUP_SECONDS);
  if (withGateway) await askLoopStats(gateway.child);
  await askLoopStats(stack.upstream.child);
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const runnable: number[] = [];
  const sampler = setInterval(() => runnable.push(runnableNow()), 10);
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const result = await openLoop(target, rate, OPEN_SECONDS);
  const cpu = process.cpuUsage(cpuBefore);
  clearInterval(sampler);
  delay.disable();
  const inside: Inside = {
    gateway: withGateway ? await askLoopStats(gateway.child) : undefined,
    upstream: await askLoopStats(stack.upstream.child),
    generator: {
      delay: { p99: delay.percentile(99) / 1e6, max: delay.max / 1e6 },
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      seconds: (performance.now() - started) / 1000,
    },
    runnable: {
      mean: runnable.reduce((a, b) => a + b, 0) / Math.max(1, runnable.length),
      p99: percentile(runnable, 99),
    },
  };
  return { result, inside };
}

async function measureRound(proxy: HttpTarget): Promise<ProxyRound> {
  const saturation = await closedLoopRate(proxy, CONNECTIONS, SATURATION_SECONDS);
  const rate = saturation / 2;
  const directSingle = await sequential(direct, SEQUENTIAL, SEQUENTIAL_MAX_SECONDS, WARMUP);
  const single = await sequential(proxy, SEQUENTIAL, SEQUENTIAL_MAX_SECONDS, WARMUP);
  const isGateway = proxy.label === "gateway";
  const directWatched = await watched(direct, rate, isGateway);
  const proxyWatched = await watched(proxy, rate, isGateway);
  const directLoaded = directWatched.result;
  const loaded = proxyWatched.result;
  for (const r of [directLoaded, loaded])
    if (r.failed > 0) throw new Error(`${r.failed} requests failed under load: ${r.firstError}`);
  return {
    saturation,
    rate,
    singleP99: percentile(single, 99),
    directSingleP99: percentile(directSingle, 99),
    loadedP99: percentile(loaded.latencies, 99),
    directLoadedP99: percentile(directLoaded.latencies, 99),
    achieved: loaded.achievedRate,
    dropped: loaded.dropped,
    inside: isGateway ? { direct: directWatched.inside, proxy: proxyWatched.inside } : undefined,
  };
}

const f = (n: number | undefined, digits = 3) => (n === undefined || Number.isNaN(n) ? "–" : n.toFixed(digits));

try {
  const rounds = new Map<HttpTarget, ProxyRound[]>(proxies.map((p) => [p, []]));
  for (let round = -1; round < ROUNDS; round++) {
    for (const [proxy, list] of rounds) {
      try {
        if (round < 0) await closedLoopRate(proxy, CONNECTIONS, PROXY_WARMUP_SECONDS);
        else list.push(await measureRound(proxy));
      } catch (err) {
        // Only LiteLLM may drop out; a failure of the direct path or the gateway is a failed benchmark.
        if (proxy.label === "gateway") throw err;
        litellmProblem = `failed during the run: ${(err as Error).message}`;
        rounds.delete(proxy);
      }
    }
  }
  const rows: string[] = [];
  const ratios = new Map<string, number>();
  const ratioNotes: string[] = [];
  for (const [proxy, list] of rounds) {
    const med = (pick: (r: ProxyRound) => number) => median(list.map(pick));
    const addedSingle = (r: ProxyRound) => r.singleP99 - r.directSingleP99;
    const addedLoaded = (r: ProxyRound) => r.loadedP99 - r.directLoadedP99;
    // A ratio needs a positive added p99 at one client; a round where the proxy's p99 was not above the
    // direct one (noise) has no ratio and is left out (the report says how many rounds gave one).
    const valid = list.filter((r) => addedSingle(r) > 0);
    const ratio = valid.length ? median(valid.map((r) => addedLoaded(r) / addedSingle(r))) : Number.NaN;
    if (valid.length < list.length)
      ratioNotes.push(`${proxy.label}: ${valid.length} of ${list.length} rounds gave a ratio`);
    ratios.set(proxy.label, ratio);
    rows.push(
      `| ${proxy.label} | ${f(
        med((r) => r.saturation),
        0,
      )} | ${f(
        med((r) => r.rate),
        0,
      )} (${f(
        med((r) => r.achieved),
        0,
      )} answered/s, ${med((r) => r.dropped)} dropped) | ${f(med((r) => r.directSingleP99))} / ${f(med((r) => r.singleP99))} | ${f(med(addedSingle))} | ${f(med((r) => r.directLoadedP99))} / ${f(med((r) => r.loadedP99))} | ${f(med(addedLoaded))} | **${f(ratio, 2)}×** |`,
    );
  }
  const insideRows: string[] = [];
  const gatewayRounds = (rounds.get(proxies[0] as HttpTarget) ?? []).flatMap((r) => (r.inside ? [r.inside] : []));
  for (const phase of ["direct", "proxy"] as const) {
    const list = gatewayRounds.map((r) => r[phase]);
    if (list.length === 0) continue;
    const med = (pick: (i: Inside) => number | undefined) => median(list.map((i) => pick(i) ?? Number.NaN));
    const phaseName = phase === "direct" ? "direct" : "through the gateway";
    /** Figures of one cell, "–" when the process reports none of them. */
    const cell = (...figures: string[]) => (figures.every((x) => x === "–") ? "–" : figures.join(" / "));
    const processRow = (name: string, of: (i: Inside) => ProcessInside | undefined) => {
      const m = (pick: (p: ProcessInside) => number | undefined, digits: number) =>
        f(
          med((i) => {
            const p = of(i);
            return p && pick(p);
          }),
          digits,
        );
      return `| ${phaseName} | ${name} | ${m((p) => p.cpuSeconds / p.seconds, 2)} | ${cell(
        m((p) => p.delay.p99, 1),
        m((p) => p.delay.max, 1),
      )} | ${cell(
        m((p) => p.gc?.scavenges, 0),
        m((p) => p.gc?.scavengeMs, 0),
        m((p) => p.gc?.scavengeMaxMs, 1),
      )} | ${cell(
        m((p) => p.gc?.others, 0),
        m((p) => p.gc?.otherMs, 0),
        m((p) => p.gc?.otherMaxMs, 1),
      )} | ${cell(m((p) => p.heap?.youngMB, 0))} |`;
    };
    if (phase === "proxy") insideRows.push(processRow("gateway", (i) => i.gateway));
    insideRows.push(processRow("stand-in upstream", (i) => i.upstream));
    insideRows.push(processRow("load generator", (i) => i.generator));
    insideRows.push(
      `| ${phaseName} | whole machine: runnable threads mean / p99 | ${f(
        med((i) => i.runnable.mean),
        1,
      )} / ${f(
        med((i) => i.runnable.p99),
        0,
      )} | | | | |`,
    );
  }
  const g = ratios.get("gateway");
  const l = ratios.get("LiteLLM");
  console.log(`### Added latency p99 under an open-loop load at half saturation ÷ at one client (median of ${ROUNDS} round${ROUNDS > 1 ? "s" : ""})
${quickNote()}
Non-streaming chat completions against the fast stand-in upstream. Saturation: ${CONNECTIONS} connections for ${SATURATION_SECONDS} s (closed loop). One client: ${SEQUENTIAL} sequential requests (or as many as fit in ${SEQUENTIAL_MAX_SECONDS} s). Each proxy warmed up with ${PROXY_WARMUP_SECONDS} s of closed loop before the first round. Under load: each proxy's own half-saturation rate for ${OPEN_SECONDS} s on a fixed schedule after ${OPEN_WARMUP_SECONDS} s at that rate not counted, latency from the scheduled send time (at most ${MAX_IN_FLIGHT} in flight; more are dropped and counted); the direct path at the same rate and schedule for the subtraction. Gateway at its default settings; LiteLLM ${LITELLM_VERSION}, one uvicorn worker (bench/_litellm.ts).
${litellmProblem ? `\n**LiteLLM could not be measured: ${litellmProblem}**\n` : ""}
| proxy | saturation req/s | open-loop rate req/s | one client: direct / proxy p99 ms | added p99 at one client ms | under load: direct / proxy p99 ms | added p99 under load ms | ratio |
|---|---|---|---|---|---|---|---|
${rows.join("\n")}

${targetTable([
  {
    target: `gateway: added p99 under load ÷ at one client ≤ ${TARGET_RATIO}`,
    measured:
      g === undefined || Number.isNaN(g)
        ? "not measured (no round had a positive added p99 at one client)"
        : `${f(g, 2)}×${ratioNotes.length ? ` (${ratioNotes.join("; ")})` : ""}`,
    met: g === undefined || Number.isNaN(g) ? undefined : g <= TARGET_RATIO,
  },
])}

Inside the processes during the gateway's open-loop phases (medians over rounds): CPU share is CPU seconds per second of the phase (${availableParallelism()} cores in all); event-loop delay from perf_hooks.monitorEventLoopDelay; GC pauses from the 'gc' performance entries (count / total ms / longest ms).

| phase | process | CPU share | event-loop delay p99 / max ms | scavenges | other GCs | young generation MB |
|---|---|---|---|---|---|---|
${insideRows.join("\n")}

LiteLLM's ratio for comparison (no target): ${l === undefined ? "not measured" : `${f(l, 2)}×`}.${QUICK ? "" : "\n\nA ratio is taken per round and the median given; the other columns are medians of their own."}`);
} finally {
  for (const target of [direct, ...proxies]) await target.pool.close();
  await litellm?.stop();
  await stack.stop();
}
