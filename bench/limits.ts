/**
 * Limits: what one admission costs (in memory and in Redis), and how many of
 * 1,000 simultaneous requests two gateways sharing Redis admit against a tight
 * limit (the target is never more than the limit).
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { freePort } from "../controlplane/local-control-plane.ts";
import type { GatewayPolicy } from "../crds/api/index.ts";
import type { Limiter } from "../gateway/limits/limiter.ts";
import { MemoryLimiter } from "../gateway/limits/memory-limiter.ts";
import { RedisLimiter } from "../gateway/limits/redis-limiter.ts";
import { createMetrics } from "../gateway/metrics.ts";
import { median } from "./_stats.ts";

const run = promisify(execFile);
const policy = (limits: Partial<GatewayPolicy>): GatewayPolicy => ({
  namespace: "bench",
  name: "tight",
  scope: "PerKey",
  ...limits,
});

async function startRedis(): Promise<{ url: string; process: ChildProcess }> {
  const port = await freePort();
  const redis = spawn("redis-server", ["--port", `${port}`, "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  for (let i = 0; i < 50; i++) {
    const ok = await run("redis-cli", ["-p", `${port}`, "ping"]).then(
      () => true,
      () => false,
    );
    if (ok) break;
    await sleep(100);
  }
  return { url: `redis://127.0.0.1:${port}`, process: redis };
}

/** Microseconds per admit+finish, median of 5 rounds. */
async function costPerRequest(limiter: Limiter, n: number): Promise<number> {
  const generous = policy({ requestsPerMinute: 1e9, tokensPerMinute: 1e9, concurrentRequests: 1e9 });
  const check = { policy: generous, counterKey: "bench/generous|key:cost" };
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

async function overAdmission(url: string, limit: Partial<GatewayPolicy>, limitValue: number, run: number) {
  const p = JSON.stringify(policy(limit));
  const worker = join(import.meta.dirname, "_limits-worker.ts");
  const outputs = await Promise.all(
    [0, 1].map(
      () =>
        new Promise<number>((resolve, reject) => {
          const child = spawn(process.execPath, [worker, url, "500", `bench:${run}:`, p], {
            stdio: ["ignore", "pipe", "inherit"],
          });
          let out = "";
          child.stdout.on("data", (c: Buffer) => {
            out += c;
          });
          child.on("close", (code) =>
            code === 0
              ? resolve((JSON.parse(out) as { admitted: number }).admitted)
              : reject(new Error(`worker ${code}`)),
          );
        }),
    ),
  );
  const admitted = outputs.reduce((a, b) => a + b, 0);
  return { admitted, over: Math.max(0, admitted - limitValue) };
}

const redis = await startRedis();
try {
  const memory = await costPerRequest(new MemoryLimiter(), 20_000);
  const shared = new RedisLimiter({
    url: redis.url,
    onFailure: "deny",
    metrics: createMetrics(),
    prefix: "bench:cost:",
  });
  const redisCost = await costPerRequest(shared, 2_000);
  await shared.close();

  const rows: string[] = [];
  for (const [label, limit, value] of [
    ["requests per minute = 100", { requestsPerMinute: 100 }, 100],
    ["concurrent requests = 50", { concurrentRequests: 50 }, 50],
    ["tokens per minute = 2,000 (10 per request)", { tokensPerMinute: 2000 }, 200],
  ] as const) {
    const runs = [];
    for (let r = 0; r < 5; r++) runs.push(await overAdmission(redis.url, limit, value, Date.now() + r));
    rows.push(
      `| ${label} | ${value} | ${median(runs.map((x) => x.admitted))} | ${Math.max(...runs.map((x) => x.over))} |`,
    );
  }

  console.log(`### Limiter cost per request (admit + settle, median of 5 rounds)

| limiter | µs per request |
|---|---|
| in memory | ${memory.toFixed(2)} |
| Redis (one Lua round trip each way, loopback) | ${redisCost.toFixed(1)} |

### Over-admission: two gateways' limiters, 500 simultaneous requests each, one Redis (5 runs)

| limit | allowed | admitted (median) | worst over-admission |
|---|---|---|---|
${rows.join("\n")}`);
} finally {
  redis.process.kill();
}
