// Fault drill: Redis, which holds the shared limits, stops under traffic and comes back.
// The node is the fake node (test/support/fake-node.ts): inference is not the subject here.
// Must hold: with the default (allow) the gateway keeps serving and counts the failures; with deny it
// answers 503 limits_unavailable in OpenAI's shape; once Redis is back, limits apply again; no crash.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeNode } from "./support/fake-node.ts";
import { ConfigFeed, createNamespace, makeKey, model, NODE_TOKEN, policy } from "./support/gateway.ts";
import { type GatewayProcess, startGatewayProcess } from "./support/gateway-process.ts";
import { eventually } from "./support/processes.ts";
import { startRedis, type TestRedis } from "./support/redis.ts";

const ns = "drill-redis";
const node = new FakeNode({ name: "mac-r", token: NODE_TOKEN });
const key = makeKey(ns, "k", { rateLimitPolicy: "five" });
let redis: TestRedis;
const gateways: Record<"allow" | "deny", GatewayProcess | undefined> = { allow: undefined, deny: undefined };

async function ask(
  gateway: GatewayProcess,
): Promise<{ status: number; retryAfter: string | null; body: { error?: { code?: string } } }> {
  const res = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key.secret}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 4 }),
  });
  return {
    status: res.status,
    retryAfter: res.headers.get("retry-after"),
    body: (await res.json()) as { error?: { code?: string } },
  };
}

const metric = async (gateway: GatewayProcess, pattern: RegExp) =>
  Number((await (await fetch(`${gateway.adminUrl}/metrics`)).text()).match(pattern)?.[1] ?? 0);

beforeAll(async () => {
  await createNamespace(ns);
  await node.start();
  redis = await startRedis();
  await new ConfigFeed(ns).publish({
    models: [model(ns, "tiny", { endpoints: [node.endpoint(ns, "tiny-a")] })],
    keys: [key],
    // Five requests, refilled at one a minute: the drill is over long before a sixth fits.
    policies: [policy(ns, "five", { requestsPerMinute: 1, burst: 5, scope: "PerKey" })],
  });
  for (const mode of ["allow", "deny"] as const) {
    gateways[mode] = await startGatewayProcess(ns, {
      POMONA_REDIS_URL: redis.url,
      POMONA_LIMITS_ON_REDIS_FAILURE: mode,
    });
  }
});

afterAll(async () => {
  for (const g of Object.values(gateways)) await g?.process.stop();
  await redis?.stop();
  await node.kill();
});

describe("Redis stops and comes back", () => {
  it("keeps serving in allow mode, refuses with 503 in deny mode, and limits again once Redis is back", async () => {
    const allow = gateways.allow!;
    const deny = gateways.deny!;
    // With Redis up: the five requests of the budget, shared by both gateways, then 429.
    const before = [await ask(allow), await ask(deny), await ask(allow), await ask(deny), await ask(allow)];
    expect(before.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect((await ask(deny)).status).toBe(429);

    await redis.stop();
    const stoppedAt = Date.now();
    const allowed = await Promise.all(Array.from({ length: 10 }, () => ask(allow)));
    expect(allowed.map((r) => r.status)).toEqual(Array(10).fill(200));
    const denied = await ask(deny);
    expect(denied.status).toBe(503);
    expect(denied.body.error?.code).toBe("limits_unavailable");
    // Unavailable for a moment, not failed: the client is told when to come back.
    expect(denied.retryAfter).toBe("1");
    expect(await metric(allow, /^pomona_gateway_limiter_failures_total\{mode="allow"\} (\d+)/m)).toBeGreaterThanOrEqual(
      10,
    );
    expect(Date.now() - stoppedAt).toBeLessThan(15_000);

    // Redis returns empty (no persistence): the budget starts again and is enforced again, across both gateways.
    redis = await startRedis(redis.port);
    const recovered = await eventually("limits applied again", async () => {
      const r = await ask(deny);
      return r.status === 200 ? Date.now() : undefined;
    });
    console.log(`limits back ${((recovered - stoppedAt) / 1000).toFixed(1)} s after Redis stopped (restarted at once)`);
    const after = await Promise.all(Array.from({ length: 8 }, (_, i) => ask(i % 2 ? allow : deny)));
    expect(after.filter((r) => r.status === 200).length).toBeLessThanOrEqual(4);
    expect(after.filter((r) => r.status === 429).length).toBeGreaterThanOrEqual(4);
    expect(allow.process.child.exitCode).toBeNull();
    expect(deny.process.child.exitCode).toBeNull();
  });
});
