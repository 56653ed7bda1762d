// Two gateway processes (gateway/main.ts, as deployed) sharing one real redis-server never admit more
// than a limit in total. The node is the fake node (test/support/fake-node.ts), which counts what reaches
// it and reports usage equal to the reservation, so token counts do not depend on timing.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeNode } from "./support/fake-node.ts";
import { ConfigFeed, createNamespace, makeKey, model, NODE_TOKEN, policy, type TestKey } from "./support/gateway.ts";
import { type GatewayProcess, startGatewayProcess } from "./support/gateway-process.ts";
import { startRedis, type TestRedis } from "./support/redis.ts";

const ns = "gw-shared-limits";
// "hi" is estimated at 1 token, plus max_tokens 20: 21 reserved; the node reports 5 + 16 = 21 used.
const node = new FakeNode({ name: "mac-s", token: NODE_TOKEN, completionTokens: 16, answerDelayMs: 400 });
const keys = {
  requests: makeKey(ns, "requests", { rateLimitPolicy: "twenty-requests" }),
  tokens: makeKey(ns, "tokens", { rateLimitPolicy: "ten-requests-of-tokens" }),
  concurrent: makeKey(ns, "concurrent", { rateLimitPolicy: "four-at-once" }),
};
let redis: TestRedis;
const gateways: GatewayProcess[] = [];

beforeAll(async () => {
  await createNamespace(ns);
  await node.start();
  redis = await startRedis();
  const feed = new ConfigFeed(ns);
  await feed.publish({
    models: [model(ns, "tiny", { endpoints: [node.endpoint(ns, "tiny-a")] })],
    keys: Object.values(keys),
    policies: [
      // A bucket of 20 refilled at 1 a minute: the test is over long before another request fits.
      policy(ns, "twenty-requests", { requestsPerMinute: 1, burst: 20, scope: "PerKey" }),
      policy(ns, "ten-requests-of-tokens", { tokensPerDay: 210, scope: "PerKey" }),
      policy(ns, "four-at-once", { concurrentRequests: 4, scope: "PerKey" }),
    ],
  });
  const env = { POMONA_REDIS_URL: redis.url };
  gateways.push(await startGatewayProcess(ns, env), await startGatewayProcess(ns, env));
});

afterAll(async () => {
  for (const g of gateways) await g.process.stop();
  await redis?.stop();
  await node.kill();
});

async function spread(key: TestKey, count: number): Promise<number[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const response = await fetch(`${gateways[i % 2]!.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key.secret}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 20 }),
      });
      await response.arrayBuffer();
      return response.status;
    }),
  );
}

const count = (statuses: number[], status: number) => statuses.filter((s) => s === status).length;

describe("two gateways sharing Redis", () => {
  it("admit exactly the request budget in total", async () => {
    const statuses = await spread(keys.requests, 60);
    expect(count(statuses, 200)).toBe(20);
    expect(count(statuses, 429)).toBe(40);
  });

  it("admit exactly the token budget in total", async () => {
    const statuses = await spread(keys.tokens, 40);
    expect(count(statuses, 200)).toBe(10);
    expect(count(statuses, 429)).toBe(30);
  });

  it("never run more than the concurrency limit at once", async () => {
    node.maxActive = 0;
    const statuses = await spread(keys.concurrent, 40);
    expect(node.maxActive).toBeLessThanOrEqual(4);
    expect(node.maxActive).toBeGreaterThanOrEqual(2);
    expect(count(statuses, 200) + count(statuses, 429)).toBe(40);
    // Slots come back: once all is done, four run at once again.
    node.maxActive = 0;
    const again = await spread(keys.concurrent, 4);
    expect(count(again, 200)).toBe(4);
  });

  it("log every request without any key or token", async () => {
    await spread(keys.requests, 2);
    const bad = await fetch(`${gateways[0]!.url}/v1/models`, {
      headers: { authorization: "Bearer sk-pomona-wrong-key" },
    });
    expect(bad.status).toBe(401);
    for (const g of gateways) {
      const output = g.process.output();
      expect(output).toMatch(/"msg":"request"/);
      expect(output).toContain('"owner":"team-requests"');
      for (const k of Object.values(keys)) {
        expect(output).not.toContain(k.secret);
        expect(output).not.toContain(k.key.hash);
      }
      expect(output).not.toContain(NODE_TOKEN);
      expect(output).not.toContain("sk-pomona-wrong-key");
    }
  });
});
