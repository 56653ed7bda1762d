/**
 * Limits shared through Redis, measured with real gateways: two gateway processes (the real app with a
 * fixed config, bench/_static-gateway.ts, each with its own Redis limiter as POMONA_REDIS_URL gives it)
 * in front of a fast stand-in upstream, one redis-server.
 *
 * 1. Over-admission: 1,000 requests sent at once, half to each gateway, against a tight per-key limit;
 *    each run uses a fresh key, so counters start empty. What may pass:
 *    - requests per minute: the burst plus what the bucket refills while the run lasts;
 *    - concurrent requests: the upstream holds every answer HOLD_MS and reports the most it had in flight;
 *    - tokens per minute: the real usage (13 tokens per answer) charged for admitted requests; each
 *      request reserves 19 (3 estimated prompt + max_tokens 16), more than its usage, as when max_tokens
 *      bounds the answer. Runs keep clear of a minute boundary, where a fixed window starts afresh.
 * 2. Cost per request: the limiter alone (admit + settle, in memory and in Redis, where the generous policy
 *    is leased: gateway/limits/leases.ts), and in the request
 *    path: sequential latency through a gateway with in-memory limits against one with Redis limits.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { Pool } from "undici";
import type { GatewayPolicy } from "../crds/api/index.ts";
import type { Limiter } from "../gateway/limits/limiter.ts";
import { MemoryLimiter } from "../gateway/limits/memory-limiter.ts";
import { RedisLimiter } from "../gateway/limits/redis-limiter.ts";
import { createMetrics } from "../gateway/metrics.ts";
import { startRedis } from "../test/support/redis.ts";
import { type BenchChild, startBenchChild, startStaticGateway } from "./_child.ts";
import { benchKey, generousPolicy, staticGatewaySpec } from "./_gateway-config.ts";
import { quickNote, size } from "./_size.ts";
import { median, percentile } from "./_stats.ts";
import { targetTable } from "./_targets.ts";

const RUNS = size(5, 1);
const REQUESTS = size(1_000, 300);
const HOLD_MS = 1_000;
const USAGE_TOKENS = 13;
const LATENCY_REQUESTS = size(2_000, 200);
const LATENCY_ROUNDS = size(3, 1);
const COST_ROUNDS_MEMORY = size(20_000, 2_000);
const COST_ROUNDS_REDIS = size(2_000, 200);
const body = JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "Say hello." }], max_tokens: 16 });

interface Scenario {
  label: string;
  policy: GatewayPolicy;
  /** The upstream's hold time for this scenario's runs. */
  hold: boolean;
}
const tight = (name: string, limits: Partial<GatewayPolicy>): GatewayPolicy => ({
  namespace: "bench",
  name,
  scope: "PerKey",
  ...limits,
});
const scenarios: Scenario[] = [
  { label: "requests per minute = 100", policy: tight("rpm", { requestsPerMinute: 100 }), hold: false },
  { label: "concurrent requests = 50", policy: tight("concurrent", { concurrentRequests: 50 }), hold: true },
  { label: "tokens per minute = 2,000", policy: tight("tpm", { tokensPerMinute: 2_000 }), hold: false },
];
const secretOf = (scenario: number, run: number) => `sk-bench-limits-${scenario}-${run}`;
const GENEROUS_KEY = "sk-bench-generous";

/** Microseconds per admit+settle of the limiter alone, median of 5 rounds. */
async function limiterCost(limiter: Limiter, n: number): Promise<number> {
  const check = { policy: generousPolicy, counterKey: "bench/generous|key:cost" };
  // A Redis limiter connects lazily and fails fast until connected.
  for (let i = 0; i < 100; i++) {
    const answered = await limiter.admit({ requestId: "warmup", checks: [check], tokens: 0, nowMs: Date.now() }).then(
      () => true,
      () => false,
    );
    if (answered) break;
    await sleep(50);
  }
  const rounds: number[] = [];
  for (let round = 0; round < 5; round++) {
    const started = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      const result = await limiter.admit({
        requestId: `${round}-${i}`,
        checks: [check],
        tokens: 10,
        nowMs: Date.now(),
      });
      if (result.ok) await limiter.finish(result.ticket, 12);
    }
    rounds.push(Number(process.hrtime.bigint() - started) / 1000 / n);
  }
  return median(rounds);
}

/** Sends REQUESTS requests at once, alternating between the gateways; counts answers by status. */
async function burst(pools: Pool[], key: string): Promise<{ ok: number; other: string[]; seconds: number }> {
  const started = performance.now();
  const answers = await Promise.all(
    Array.from({ length: REQUESTS }, async (_, i) => {
      const pool = pools[i % pools.length] as Pool;
      const res = await pool.request({
        method: "POST",
        path: "/v1/chat/completions",
        headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
        body,
      });
      const text = await res.body.text();
      if (res.statusCode === 200 || res.statusCode === 429) return String(res.statusCode);
      // Anything else is named by its status and the gateway's error code, for the report.
      const code = /"code":"([a-z_]+)"/.exec(text)?.[1] ?? "no code";
      return `${res.statusCode} ${code}`;
    }),
  );
  return {
    ok: answers.filter((a) => a === "200").length,
    other: answers.filter((a) => a !== "200" && a !== "429"),
    seconds: (performance.now() - started) / 1000,
  };
}

/** The most requests the upstream had in flight since the last ask. */
function peakInFlight(upstream: BenchChild): Promise<number> {
  return new Promise((resolve) => {
    upstream.child.once("message", (m) => resolve((m as { peak: number }).peak));
    upstream.child.send("peak");
  });
}

/** Sequential latencies through one gateway, in ms. */
async function latencies(pool: Pool): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < 200 + LATENCY_REQUESTS; i++) {
    const started = performance.now();
    const res = await pool.request({
      method: "POST",
      path: "/v1/chat/completions",
      headers: { "content-type": "application/json", authorization: `Bearer ${GENEROUS_KEY}` },
      body,
    });
    await res.body.text();
    if (res.statusCode !== 200) throw new Error(`gateway answered ${res.statusCode}`);
    if (i >= 200) out.push(performance.now() - started);
  }
  return out;
}

const redis = await startRedis();
const children: BenchChild[] = [];
const pools: Pool[] = [];
try {
  const fast = await startBenchChild("_overhead-upstream.ts");
  const held = await startBenchChild("_overhead-upstream.ts", [String(HOLD_MS)]);
  children.push(fast, held);
  const keys = [
    benchKey(GENEROUS_KEY, generousPolicy.name),
    ...scenarios.flatMap((s, i) => Array.from({ length: RUNS }, (_, run) => benchKey(secretOf(i, run), s.policy.name))),
  ];
  const policies = [generousPolicy, ...scenarios.map((s) => s.policy)];
  const gatewaysFor = async (upstream: BenchChild, redisUrl: string | undefined, count: number) => {
    const spec = staticGatewaySpec({
      model: "tiny",
      endpoint: `http://127.0.0.1:${upstream.port}/replicas/bench/tiny-a`,
      contextSize: 4096,
      keys,
      policies,
      redisUrl,
    });
    const started = await Promise.all(Array.from({ length: count }, () => startStaticGateway([JSON.stringify(spec)])));
    children.push(...started);
    const p = started.map((g) => new Pool(`http://127.0.0.1:${g.port}`, { connections: REQUESTS }));
    pools.push(...p);
    return p;
  };
  const onFast = await gatewaysFor(fast, redis.url, 2);
  const onHeld = await gatewaysFor(held, redis.url, 2);
  const [memoryGateway] = await gatewaysFor(fast, undefined, 1);

  // 1. Over-admission.
  const rows: string[] = [];
  const targets: Parameters<typeof targetTable>[0] = [];
  for (const [i, scenario] of scenarios.entries()) {
    const admitted: number[] = [];
    const over: number[] = [];
    const others: string[] = [];
    for (let run = 0; run < RUNS; run++) {
      // A fixed token window restarts at each UTC minute: keep the run inside one.
      if (scenario.policy.tokensPerMinute && Date.now() % 60_000 > 50_000) await sleep(60_000 - (Date.now() % 60_000));
      if (scenario.hold) await peakInFlight(held);
      const result = await burst(scenario.hold ? onHeld : onFast, secretOf(i, run));
      others.push(...result.other);
      const p = scenario.policy;
      if (p.requestsPerMinute) {
        const allowed = p.requestsPerMinute + Math.floor((p.requestsPerMinute * result.seconds) / 60);
        admitted.push(result.ok);
        over.push(result.ok - allowed);
      } else if (p.concurrentRequests) {
        const peak = await peakInFlight(held);
        admitted.push(peak);
        over.push(peak - p.concurrentRequests);
      } else if (p.tokensPerMinute) {
        admitted.push(result.ok * USAGE_TOKENS);
        over.push(result.ok * USAGE_TOKENS - p.tokensPerMinute);
      }
    }
    const measure = scenario.policy.concurrentRequests
      ? "most in flight at the upstream"
      : scenario.policy.tokensPerMinute
        ? "tokens charged (real usage)"
        : "requests admitted";
    const worst = Math.max(...over);
    const otherCounts = new Map<string, number>();
    for (const o of others) otherCounts.set(o, (otherCounts.get(o) ?? 0) + 1);
    const otherText = [...otherCounts].map(([what, n]) => `${n}× ${what}`).join(", ") || "none";
    rows.push(
      `| ${scenario.label} | ${measure} | ${median(admitted)} | ${worst > 0 ? `**${worst}**` : worst === 0 ? "none" : `none (${-worst} under)`} | ${otherText} |`,
    );
    targets.push({
      target: `no over-admission: ${scenario.label}`,
      measured: worst > 0 ? `${worst} over in the worst run` : "none",
      met: worst <= 0,
    });
  }

  // 2. Cost per request.
  const memoryCost = await limiterCost(new MemoryLimiter(), COST_ROUNDS_MEMORY);
  const shared = new RedisLimiter({
    url: redis.url,
    onFailure: "deny",
    metrics: createMetrics(),
    prefix: "bench:cost:",
  });
  const redisCost = await limiterCost(shared, COST_ROUNDS_REDIS);
  await shared.close();
  const p50 = { memory: [] as number[], redis: [] as number[] };
  for (let round = 0; round < LATENCY_ROUNDS; round++) {
    p50.memory.push(percentile(await latencies(memoryGateway as Pool), 50));
    p50.redis.push(percentile(await latencies(onFast[0] as Pool), 50));
  }
  const inPath = median(p50.redis.map((r, i) => r - (p50.memory[i] ?? 0)));

  console.log(`### Over-admission: two gateways sharing one Redis, ${REQUESTS} requests at once (${RUNS} runs)
${quickNote()}
Half the requests go to each gateway process; every run uses a fresh key with the policy below.

| limit (per key) | measured as | median | worst over the limit | answers other than 200/429, all runs |
|---|---|---|---|---|
${rows.join("\n")}

### Limiter cost per request

| what | cost |
|---|---|
| in-memory limiter alone (admit + settle, median of 5 rounds) | ${memoryCost.toFixed(2)} µs |
| Redis limiter alone (admit + settle; limits this large are leased, so a Lua round trip on loopback only for the counter's first request of each 500-ms slice; median of 5 rounds) | ${redisCost.toFixed(1)} µs |
| gateway p50 latency, Redis limits minus in-memory limits (${LATENCY_REQUESTS} sequential requests, median of ${LATENCY_ROUNDS} rounds) | ${(inPath * 1000).toFixed(0)} µs |

${targetTable(targets)}`);
} finally {
  for (const pool of pools) await pool.close();
  for (const child of children.reverse()) await child.stop();
  await redis.stop();
}
