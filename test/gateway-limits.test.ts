// Every limit type admits exactly its budget under concurrent requests and recovers after its window,
// with the in-memory limiter and with the Redis one (a real redis-server). The limits' clock is
// injected, so windows pass without sleeping. The fake node (test/support/fake-node.ts) holds its
// answers until a burst is fully admitted or refused, so no request settles its tokens mid-burst.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../controlplane/local-control-plane.ts";
import type { Limiter } from "../gateway/limits/limiter.ts";
import { MemoryLimiter } from "../gateway/limits/memory-limiter.ts";
import { RedisLimiter } from "../gateway/limits/redis-limiter.ts";
import { createMetrics } from "../gateway/metrics.ts";
import { FakeNode } from "./support/fake-node.ts";
import {
  ConfigFeed,
  createNamespace,
  makeKey,
  model,
  NODE_TOKEN,
  policy,
  startGateway,
  type TestGateway,
  type TestKey,
} from "./support/gateway.ts";
import { eventually } from "./support/processes.ts";
import { startRedis, type TestRedis } from "./support/redis.ts";

const ns = "gw-limits";
const MINUTE = 60_000;
const DAY = 86_400_000;

interface Outcome {
  status: number;
  code?: string;
  headers: Headers;
}

async function ask(gateway: TestGateway, key: TestKey, extra: Record<string, unknown> = {}, signal?: AbortSignal) {
  const response = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key.secret}`, "content-type": "application/json" },
    // "hi" is estimated at 1 token; with max_tokens 20 each request reserves 21.
    body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 20, ...extra }),
    signal,
  });
  const body = (await response.json()) as { error?: { code: string } };
  return { status: response.status, code: body.error?.code, headers: response.headers } satisfies Outcome;
}

/**
 * Fire `count` requests at once. The node holds every answer until each request is either at the node
 * or refused, so every admission of the burst happens before any request settles its tokens.
 */
async function burst(gateway: TestGateway, key: TestKey, count: number): Promise<Outcome[]> {
  const release = node.hold();
  const arrivedBefore = node.arrived;
  let refused = 0;
  const pending = Array.from({ length: count }, () =>
    ask(gateway, key).then((o) => {
      if (o.status !== 200) refused++;
      return o;
    }),
  );
  try {
    await eventually(
      "every request of the burst admitted or refused",
      async () => (node.arrived - arrivedBefore + refused === count ? true : undefined),
      30_000,
    );
  } finally {
    release();
  }
  return Promise.all(pending);
}

const admitted = (outcomes: Outcome[]) => outcomes.filter((o) => o.status === 200).length;

const node = new FakeNode({ name: "mac-l", token: NODE_TOKEN, completionTokens: 3 });
const keys = {
  rpm: makeKey(ns, "rpm", { rateLimitPolicy: "rpm" }),
  tpm: makeKey(ns, "tpm", { rateLimitPolicy: "tpm" }),
  tpd: makeKey(ns, "tpd", { rateLimitPolicy: "tpd" }),
  conc: makeKey(ns, "conc", { rateLimitPolicy: "conc" }),
  perModelA: makeKey(ns, "pm-a"),
  perModelB: makeKey(ns, "pm-b"),
};
let feed: ConfigFeed;

beforeAll(async () => {
  await createNamespace(ns);
  await node.start();
  feed = new ConfigFeed(ns);
  await feed.publish({
    models: [
      model(ns, "tiny", { endpoints: [node.endpoint(ns, "tiny-a")] }),
      model(ns, "shared", { endpoints: [node.endpoint(ns, "shared-a")], rateLimitPolicy: "model-rpm" }),
      model(ns, "unguarded", { endpoints: [node.endpoint(ns, "unguarded-a")], rateLimitPolicy: "deleted" }),
    ],
    keys: Object.values(keys),
    policies: [
      policy(ns, "rpm", { requestsPerMinute: 60, burst: 3, scope: "PerKey" }),
      policy(ns, "tpm", { tokensPerMinute: 100, scope: "PerKey" }),
      policy(ns, "tpd", { tokensPerDay: 50, scope: "PerKey" }),
      policy(ns, "conc", { concurrentRequests: 2, scope: "PerKey" }),
      policy(ns, "model-rpm", { requestsPerMinute: 3, scope: "PerModel" }),
    ],
  });
});

afterAll(async () => {
  await node.kill();
});

const limiters: [string, () => Promise<{ limiter: Limiter; cleanup: () => Promise<void> }>][] = [
  ["in memory", async () => ({ limiter: new MemoryLimiter(), cleanup: async () => {} })],
  [
    "in Redis",
    async () => {
      const redis: TestRedis = await startRedis();
      return {
        limiter: new RedisLimiter({ url: redis.url, onFailure: "deny", metrics: createMetrics() }),
        cleanup: () => redis.stop(),
      };
    },
  ],
];

describe.each(limiters)("limits kept %s", (_name, makeLimiter) => {
  // One second into a UTC day, so minute and day windows are where the test expects them.
  let clock = Date.UTC(2026, 0, 1) + 1_000;
  let gateway: TestGateway;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    const made = await makeLimiter();
    cleanup = made.cleanup;
    gateway = await startGateway(ns, { limiter: made.limiter, now: () => clock });
    await gateway.waitForVersion(feed.version);
  });

  afterAll(async () => {
    await gateway?.close();
    await cleanup?.();
  });

  it("requests per minute: admits the burst at once, then refills at the per-minute pace", async () => {
    const first = await burst(gateway, keys.rpm, 8);
    expect(admitted(first)).toBe(3);
    const refused = first.find((o) => o.status === 429)!;
    expect(refused.code).toBe("rate_limit_exceeded");
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(refused.headers.get("x-ratelimit-limit-requests")).toBe("60");
    clock += 1_000; // one more request's worth at 60 per minute
    expect(admitted(await burst(gateway, keys.rpm, 4))).toBe(1);
    clock += 10_000; // refills up to the burst, not beyond
    expect(admitted(await burst(gateway, keys.rpm, 8))).toBe(3);
  });

  it("tokens per minute: reserves prompt + max_tokens up front, settles to real usage, frees them a minute later", async () => {
    // 21 tokens reserved each: 4 fit in 100.
    const first = await burst(gateway, keys.tpm, 8);
    expect(admitted(first)).toBe(4);
    expect(first.find((o) => o.status === 429)?.headers.get("x-ratelimit-limit-tokens")).toBe("100");
    // Each answered request used 8 tokens, so 4 × 8 = 32 are spent: 3 more reservations of 21 fit.
    expect(admitted(await burst(gateway, keys.tpm, 8))).toBe(3);
    // The window slides: the next minute boundary frees nothing (56 spent, 44 left: 2 fit, where a fresh
    // window would admit 4); a full minute (and a 500 ms slice) after the spending frees it all.
    clock = (Math.floor(clock / MINUTE) + 1) * MINUTE + 1;
    expect(admitted(await burst(gateway, keys.tpm, 8))).toBe(2);
    clock += MINUTE + 500;
    expect(admitted(await burst(gateway, keys.tpm, 8))).toBe(4);
  });

  it("tokens per day: holds across minutes and midnight, frees the tokens a day after they were spent", async () => {
    expect(admitted(await burst(gateway, keys.tpd, 5))).toBe(2); // 42 of 50 reserved, settled to 16
    expect(admitted(await burst(gateway, keys.tpd, 5))).toBe(1); // 16 + 21 = 37; 58 would not fit; settled to 24
    clock += 5 * MINUTE;
    // A new minute does not reset a day: 24 + 21 fits once (a reset would admit two), settled to 32.
    expect(admitted(await burst(gateway, keys.tpd, 5))).toBe(1);
    const refused = await burst(gateway, keys.tpd, 3);
    expect(admitted(refused)).toBe(0);
    expect(Number(refused[0]!.headers.get("retry-after"))).toBeGreaterThan(3_600);
    // Midnight brings no fresh budget; a day (and a 12-minute slice) after the last spending, all is free.
    clock = (Math.floor(clock / DAY) + 1) * DAY + 1;
    expect(admitted(await burst(gateway, keys.tpd, 3))).toBe(0);
    clock += DAY + DAY / 120;
    expect(admitted(await burst(gateway, keys.tpd, 5))).toBe(2);
  });

  it("concurrent requests: admits the limit in flight and frees slots on every exit, client abort included", async () => {
    const first = await burst(gateway, keys.conc, 6);
    expect(admitted(first)).toBe(2);
    expect(first.filter((o) => o.code === "rate_limit_exceeded")).toHaveLength(4);
    // Two clients give up while their requests wait on the node; their slots must come back.
    const release = node.hold();
    const arrivedBefore = node.arrived;
    const aborts = [new AbortController(), new AbortController()];
    const gone = aborts.map((a) => ask(gateway, keys.conc, {}, a.signal).catch((e: unknown) => e));
    await eventually(
      "both requests at the node",
      async () => (node.arrived - arrivedBefore === 2 ? true : undefined),
      30_000,
    );
    for (const a of aborts) a.abort();
    await Promise.all(gone);
    await eventually("the node to see both leave", async () => (node.active === 0 ? true : undefined), 30_000);
    release();
    expect(admitted(await burst(gateway, keys.conc, 6))).toBe(2);
  });

  it("a model's policy counts per model, across keys", async () => {
    const asks = [keys.perModelA, keys.perModelB, keys.perModelA, keys.perModelB, keys.perModelA];
    const outcomes = await Promise.all(asks.map((k) => ask(gateway, k, { model: "shared" })));
    expect(admitted(outcomes)).toBe(3);
  });

  it("a model whose policy does not exist is refused, not served unlimited", async () => {
    const arrived = node.arrived;
    const outcome = await ask(gateway, keys.perModelA, { model: "unguarded" });
    expect(outcome.status).toBe(503);
    expect(outcome.code).toBe("rate_limit_policy_missing");
    expect(node.arrived).toBe(arrived);
  });
});

describe("when Redis cannot be reached", () => {
  it("denies with 503 in deny mode and admits in allow mode, counting both", async () => {
    const nowhere = `redis://127.0.0.1:${await freePort()}`;
    for (const mode of ["deny", "allow"] as const) {
      const metrics = createMetrics();
      const limiter = new RedisLimiter({ url: nowhere, onFailure: mode, metrics });
      const gateway = await startGateway(ns, { limiter, metrics });
      try {
        await gateway.waitForVersion(feed.version);
        const outcome = await ask(gateway, keys.rpm);
        if (mode === "deny") {
          expect(outcome.status).toBe(503);
          expect(outcome.code).toBe("limits_unavailable");
        } else {
          expect(outcome.status).toBe(200);
        }
        const text = await (await fetch(`${gateway.url}/metrics`)).text();
        expect(text).toContain(`pomona_gateway_limits_on_redis_failure{mode="${mode}"} 1`);
        expect(text).toMatch(new RegExp(`pomona_gateway_limiter_failures_total\\{mode="${mode}"\\} 1`));
      } finally {
        await gateway.close();
      }
    }
  });
});
