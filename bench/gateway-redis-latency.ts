/**
 * Added latency with the Redis limiter, measured directly: a gateway whose limits live in Redis (as with
 * POMONA_REDIS_URL) and whose key's policy has limits that never bind, against the same upstream called
 * directly, one request at a time. A gateway with in-memory limits is measured in the same rounds for
 * comparison. Added p50 = the gateway's p50 − the direct p50 of the same round; the median over rounds.
 *
 * Real redis-server on loopback (test/support/redis.ts), the real gateway app at its default settings
 * (bench/_static-gateway.ts), the fast stand-in upstream (bench/_overhead-upstream.ts); each its own
 * process. The three targets take turns within each round.
 */
import { Redis } from "ioredis";
import { startRedis } from "../test/support/redis.ts";
import type { BenchChild } from "./_child.ts";
import { generousPolicy } from "./_gateway-config.ts";
import { chatBody, type HttpTarget, sequential, startUpstreamAndGateways } from "./_load.ts";
import { quickNote, size } from "./_size.ts";
import { median, percentile } from "./_stats.ts";
import { targetTable } from "./_targets.ts";

const ROUNDS = size(5, 1);
const SEQUENTIAL = size(2_000, 200);
const SEQUENTIAL_MAX_SECONDS = size(10, 2);
const WARMUP = size(200, 20);
const TARGET_MS = 0.5;

const redis = await startRedis();
const redisClient = new Redis(redis.url);
/** Script calls Redis has run since its statistics were last reset (INFO commandstats). */
async function scriptCalls(): Promise<number> {
  const stats = await redisClient.info("commandstats");
  let calls = 0;
  for (const m of stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) calls += Number(m[1]);
  return calls;
}
const stack = await startUpstreamAndGateways([{ redisUrl: redis.url }, {}]);
const [withRedis, inMemory] = stack.gateways as [BenchChild, BenchChild];
const body = chatBody();
const direct = stack.direct(body, 1);
const redisGateway = stack.through(withRedis, "gateway, Redis limits", body, 1);
const memoryGateway = stack.through(inMemory, "gateway, in-memory limits", body, 1);
const targets = [direct, redisGateway, memoryGateway];

const f = (n: number) => (Number.isNaN(n) ? "–" : n.toFixed(3));
try {
  const p50 = new Map<HttpTarget, number[]>(targets.map((t) => [t, []]));
  const p99 = new Map<HttpTarget, number[]>(targets.map((t) => [t, []]));
  let calls = 0;
  let redisRequests = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (const t of targets) {
      if (t === redisGateway) await redisClient.config("RESETSTAT");
      const l = await sequential(t, SEQUENTIAL, SEQUENTIAL_MAX_SECONDS, WARMUP);
      if (t === redisGateway) {
        calls += await scriptCalls();
        redisRequests += WARMUP + l.length;
      }
      p50.get(t)?.push(percentile(l, 50));
      p99.get(t)?.push(percentile(l, 99));
    }
  }
  const d50 = p50.get(direct) ?? [];
  const d99 = p99.get(direct) ?? [];
  const added = (t: HttpTarget, m: Map<HttpTarget, number[]>, d: number[]) =>
    median((m.get(t) ?? []).map((v, i) => v - (d[i] ?? Number.NaN)));
  const rows = targets.map(
    (t) =>
      `| ${t.label} | ${f(median(p50.get(t) ?? []))} / ${f(median(p99.get(t) ?? []))} | ${t === direct ? "–" : `${f(added(t, p50, d50))} / ${f(added(t, p99, d99))}`} |`,
  );
  const redisAdded = added(redisGateway, p50, d50);
  const memoryAdded = added(memoryGateway, p50, d50);
  console.log(`### Added latency with the Redis limiter, measured directly (median of ${ROUNDS} round${ROUNDS > 1 ? "s" : ""})
${quickNote()}
${SEQUENTIAL} sequential non-streaming requests per target and round (or as many as fit in ${SEQUENTIAL_MAX_SECONDS} s) after ${WARMUP} warm-up requests; the targets take turns. The key's policy has limits that never bind (${generousPolicy.requestsPerMinute} requests and tokens per minute, ${generousPolicy.concurrentRequests} concurrent), so every request runs the Redis limiter and is admitted (these limits are large enough to lease: most admissions are decided against budget leased from Redis, with a round trip per 500-ms slice). Redis on loopback, each part its own process.

| target | p50 / p99 ms | added p50 / p99 ms |
|---|---|---|
${rows.join("\n")}

Of the added p50 with Redis, ${f(redisAdded - memoryAdded)} ms is the Redis limiter (Redis − in-memory gateway, same rounds) and ${f(memoryAdded)} ms the rest of the gateway. Redis ran ${(calls / redisRequests).toFixed(3)} script calls per request through the Redis gateway (counted by Redis during its turns, warm-up included).

${targetTable([
  {
    target: `added p50 with the Redis limiter ≤ ${TARGET_MS} ms`,
    measured: `${f(redisAdded)} ms`,
    met: Number.isNaN(redisAdded) ? undefined : redisAdded <= TARGET_MS,
  },
])}`);
} finally {
  for (const t of targets) await t.pool.close();
  redisClient.disconnect();
  await stack.stop();
  await redis.stop();
}
