/**
 * Gateway overhead: latency added by the gateway (p50/p99) and the most requests per second through it,
 * against calling the same upstream directly and through LiteLLM's proxy, for non-streaming and
 * streaming chat completions, measured side by side in one run on loopback.
 *
 * The upstream is a fast stand-in that does no inference (bench/_overhead-upstream.ts); the gateway is
 * the real app with a fixed config, its limiter and access log on (bench/_static-gateway.ts); LiteLLM
 * is installed from PyPI and set up as bench/_litellm.ts describes (one worker, no database, no
 * callbacks, access log off). Each runs in its own process, and the load comes from this one. Targets
 * are taken round by round in turn, so drift on a shared machine hits all alike. Latency is measured
 * one request at a time (a load any machine sustains); throughput with CONNECTIONS requests always in
 * flight, which on a small machine is bounded by the cores that load generator, proxy and upstream
 * share, so each proxy's requests per CPU-second of its own process are reported too.
 */
import { BENCH_NODE_TOKEN } from "./_gateway-config.ts";
import { LITELLM_VERSION, type LiteLLMProxy, startLiteLLM } from "./_litellm.ts";
import {
  chatBody,
  chatTarget,
  closedLoopRateAndCpu,
  type HttpTarget,
  sequential,
  startUpstreamAndGateways,
} from "./_load.ts";
import { quickNote, size } from "./_size.ts";
import { median, percentile } from "./_stats.ts";
import { targetTable } from "./_targets.ts";

const LITELLM_KEY = "sk-litellm-bench";
const SEQUENTIAL = size(2_000, 200);
const WARMUP = size(200, 20);
// A slow proxy stops early rather than stretch the run: at ~20 ms a request, LiteLLM still gives 500 samples.
const SEQUENTIAL_MAX_SECONDS = size(10, 2);
const THROUGHPUT_SECONDS = size(4, 1);
const CONNECTIONS = 32;
const ROUNDS = size(3, 1);

interface Round {
  p50: number;
  p99: number;
  rps: number;
  perCpuSecond: number | undefined;
}

async function measure(target: HttpTarget): Promise<Round> {
  const l = await sequential(target, SEQUENTIAL, SEQUENTIAL_MAX_SECONDS, WARMUP);
  return {
    p50: percentile(l, 50),
    p99: percentile(l, 99),
    ...(await closedLoopRateAndCpu(target, CONNECTIONS, THROUGHPUT_SECONDS)),
  };
}

const stack = await startUpstreamAndGateways();
const [gateway] = stack.gateways;
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

const ms = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? "–" : n.toFixed(3));
const int = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? "–" : n.toFixed(0));
const times = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? "–" : `${n.toFixed(1)}×`);

const pools: HttpTarget[] = [];
try {
  const latencyRows: string[] = [];
  const throughputRows: string[] = [];
  const targets: Parameters<typeof targetTable>[0] = [];
  for (const stream of [false, true]) {
    const body = chatBody(stream);
    const direct = stack.direct(body, CONNECTIONS);
    const through = stack.through(gateway!, "gateway", body, CONNECTIONS);
    const viaLiteLLM =
      litellm &&
      chatTarget({
        label: "LiteLLM",
        port: litellm.port,
        authorization: `Bearer ${LITELLM_KEY}`,
        body,
        connections: CONNECTIONS,
        pid: litellm.pid,
      });
    pools.push(direct, through, ...(viaLiteLLM ? [viaLiteLLM] : []));
    const rounds = new Map<HttpTarget, Round[]>([
      [direct, []],
      [through, []],
    ]);
    if (viaLiteLLM) rounds.set(viaLiteLLM, []);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [target, list] of rounds) {
        try {
          list.push(await measure(target));
        } catch (err) {
          // Only LiteLLM may drop out; a failure of the direct path or the gateway is a failed benchmark.
          if (target !== viaLiteLLM) throw err;
          litellmProblem = `failed during the run: ${(err as Error).message}`;
          rounds.delete(target);
        }
      }
    }
    // Added latency is taken round by round against the direct figure of the same round, then the median.
    const d = rounds.get(direct) ?? [];
    const added = (list: Round[] | undefined, p: "p50" | "p99") =>
      list?.length === d.length ? median(list.map((r, i) => r[p] - (d[i]?.[p] ?? 0))) : undefined;
    const med = (list: Round[] | undefined, f: (r: Round) => number | undefined) => {
      const values = (list ?? []).map(f).filter((v): v is number => v !== undefined);
      return values.length ? median(values) : undefined;
    };
    const g = rounds.get(through);
    const l = viaLiteLLM ? rounds.get(viaLiteLLM) : undefined;
    const mode = stream ? "streaming (8 chunks + usage)" : "non-streaming";
    latencyRows.push(
      `| ${mode} | ${ms(med(d, (r) => r.p50))} / ${ms(med(d, (r) => r.p99))} | ${ms(added(g, "p50"))} / ${ms(added(g, "p99"))} | ${ms(added(l, "p50"))} / ${ms(added(l, "p99"))} |`,
    );
    const gRps = med(g, (r) => r.rps);
    const lRps = med(l, (r) => r.rps);
    const gCpu = med(g, (r) => r.perCpuSecond);
    const lCpu = med(l, (r) => r.perCpuSecond);
    throughputRows.push(
      `| ${mode} | ${int(med(d, (r) => r.rps))} | ${int(gRps)} | ${int(lRps)} | ${times(gRps && lRps ? gRps / lRps : undefined)} | ${int(gCpu)} | ${int(lCpu)} | ${times(gCpu && lCpu ? gCpu / lCpu : undefined)} |`,
    );
    const p50 = added(g, "p50");
    const p99 = added(g, "p99");
    targets.push(
      { target: `added p50 < 0.5 ms (${mode})`, measured: `${ms(p50)} ms`, met: p50 !== undefined && p50 < 0.5 },
      { target: `added p99 < 2 ms (${mode})`, measured: `${ms(p99)} ms`, met: p99 !== undefined && p99 < 2 },
      {
        target: `≥ 5× LiteLLM's req/s (${mode})`,
        measured: gRps && lRps ? times(gRps / lRps) : "not measured",
        met: gRps && lRps ? gRps / lRps >= 5 : undefined,
      },
    );
  }
  console.log(`### Gateway overhead on loopback (median of ${ROUNDS} rounds)
${quickNote()}
Latency: ${SEQUENTIAL} sequential requests per round (or as many as fit in ${SEQUENTIAL_MAX_SECONDS} s) after ${WARMUP} warm-up requests. Throughput: ${CONNECTIONS} connections for ${THROUGHPUT_SECONDS} s per round. Load generator, upstream and proxy each in their own process, sharing the machine's cores. LiteLLM ${LITELLM_VERSION}, one uvicorn worker, no database or callbacks (bench/_litellm.ts).
${litellmProblem ? `\n**LiteLLM could not be measured: ${litellmProblem}**\n` : ""}
| request | direct p50 / p99 ms | gateway added p50 / p99 ms | LiteLLM added p50 / p99 ms |
|---|---|---|---|
${latencyRows.join("\n")}

| request | direct req/s | gateway req/s | LiteLLM req/s | gateway / LiteLLM | gateway req per CPU-s | LiteLLM req per CPU-s | gateway / LiteLLM per CPU-s |
|---|---|---|---|---|---|---|---|
${throughputRows.join("\n")}

${targetTable(targets)}`);
} finally {
  for (const target of pools) await target.pool.close();
  await litellm?.stop();
  await stack.stop();
}
