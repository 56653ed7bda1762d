// One gateway's limiter, as a separate process: fires `count` admissions at once against a shared Redis.
import type { GatewayPolicy } from "../crds/api/index.ts";
import { RedisLimiter } from "../gateway/limits/redis-limiter.ts";
import { createMetrics } from "../gateway/metrics.ts";

const [url, countText, prefix, policyJson] = process.argv.slice(2);
const policy = JSON.parse(policyJson ?? "{}") as GatewayPolicy;
const limiter = new RedisLimiter({ url: url ?? "", onFailure: "deny", metrics: createMetrics(), prefix });
// The limiter connects lazily and fails fast while disconnected: wait until it answers.
const warmup = { policy: { ...policy, name: "warmup" }, counterKey: "warmup" };
for (let i = 0; i < 100; i++) {
  const answered = await limiter.admit({ requestId: "warmup", checks: [warmup], tokens: 0, nowMs: Date.now() }).then(
    () => true,
    () => false,
  );
  if (answered) break;
  await new Promise((r) => setTimeout(r, 50));
}
const check = { policy, counterKey: `${policy.namespace}/${policy.name}|key:bench` };
const results = await Promise.all(
  Array.from({ length: Number(countText) }, (_, i) =>
    limiter.admit({ requestId: `${process.pid}-${i}`, checks: [check], tokens: 10, nowMs: Date.now() }),
  ),
);
console.log(JSON.stringify({ admitted: results.filter((r) => r.ok).length }));
await limiter.close();
