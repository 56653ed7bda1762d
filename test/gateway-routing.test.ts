// Endpoint choice: weights, least outstanding requests by power of two choices, and conversation affinity.
// Pure functions, plus one pass through the gateway with two fake nodes (test/support/fake-node.ts), which
// only have to say who answered.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayEndpoint } from "../crds/api/index.ts";
import {
  AFFINITY_SLACK,
  conversationAffinity,
  EndpointLoad,
  pickEndpoint,
} from "../gateway/routing/endpoint-picker.ts";
import { FakeNode } from "./support/fake-node.ts";
import {
  ConfigFeed,
  createNamespace,
  makeKey,
  model,
  NODE_TOKEN,
  startGateway,
  type TestGateway,
} from "./support/gateway.ts";

const endpoint = (name: string, weight = 1): GatewayEndpoint => ({
  url: `http://${name}.test:8090/replicas/ns/${name}`,
  replica: name,
  node: name,
  weight,
  slots: 64,
});

/** A seeded generator, so the distribution checks are exact run to run. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1_664_525 + 1_013_904_223) >>> 0;
    return s / 2 ** 32;
  };
}

describe("choosing an endpoint", () => {
  it("shares outstanding requests by weight", () => {
    const heavy = endpoint("heavy", 3);
    const light = endpoint("light", 1);
    const random = seeded(7);
    const load = new EndpointLoad();
    for (let i = 0; i < 400; i++) load.acquire(pickEndpoint([heavy, light], load, undefined, random)!.url);
    expect(load.of(heavy.url)).toBeGreaterThanOrEqual(295);
    expect(load.of(heavy.url)).toBeLessThanOrEqual(305);
    expect(load.of(light.url)).toBe(400 - load.of(heavy.url));
  });

  it("keeps outstanding requests even across endpoints under load", () => {
    const endpoints = ["a", "b", "c", "d"].map((n) => endpoint(n));
    const load = new EndpointLoad();
    const random = seeded(11);
    for (let i = 0; i < 400; i++) load.acquire(pickEndpoint(endpoints, load, undefined, random)!.url);
    const outstanding = endpoints.map((e) => load.of(e.url));
    expect(outstanding.reduce((a, b) => a + b, 0)).toBe(400);
    expect(Math.max(...outstanding) - Math.min(...outstanding)).toBeLessThanOrEqual(4);
  });

  it("sends a conversation to the same endpoint unless it is much busier than the least busy", () => {
    const endpoints = ["a", "b", "c"].map((n) => endpoint(n));
    const load = new EndpointLoad();
    const affinity = conversationAffinity([
      { role: "system", content: "You are terse." },
      { role: "user", content: "Tell me about pears." },
    ])!;
    const first = pickEndpoint(endpoints, load, affinity)!;
    for (let i = 0; i < 50; i++) expect(pickEndpoint(endpoints, load, affinity)).toBe(first);
    for (let i = 0; i < AFFINITY_SLACK; i++) load.acquire(first.url);
    expect(pickEndpoint(endpoints, load, affinity)).toBe(first);
    load.acquire(first.url);
    for (let i = 0; i < 50; i++) expect(pickEndpoint(endpoints, load, affinity)).not.toBe(first);
  });

  it("gives every turn of a conversation the same affinity, and different conversations different ones", () => {
    const opening = [
      { role: "system", content: "You are terse." },
      { role: "user", content: "Tell me about pears." },
    ];
    const later = [...opening, { role: "assistant", content: "Pears are fruit." }, { role: "user", content: "More." }];
    expect(conversationAffinity(later)).toBe(conversationAffinity(opening));
    expect(conversationAffinity([{ role: "user", content: "Tell me about apples." }])).not.toBe(
      conversationAffinity(opening),
    );
    const spread = new Set(
      Array.from(
        { length: 60 },
        (_, i) =>
          pickEndpoint(
            ["a", "b", "c"].map((n) => endpoint(n)),
            new EndpointLoad(),
            conversationAffinity([{ role: "user", content: `question ${i}` }]),
          )?.replica,
      ),
    );
    expect(spread.size).toBe(3);
  });
});

describe("affinity through the gateway", () => {
  const ns = "gw-routing";
  const nodes = [
    new FakeNode({ name: "mac-1", token: NODE_TOKEN }),
    new FakeNode({ name: "mac-2", token: NODE_TOKEN }),
  ];
  const key = makeKey(ns, "k");
  let gateway: TestGateway;

  beforeAll(async () => {
    await createNamespace(ns);
    for (const n of nodes) await n.start();
    gateway = await startGateway(ns);
    const feed = new ConfigFeed(ns);
    await feed.publish({
      models: [model(ns, "tiny", { endpoints: nodes.map((n) => n.endpoint(ns, `tiny-${n.options.name}`)) })],
      keys: [key],
    });
    await gateway.waitForVersion(feed.version);
  });

  afterAll(async () => {
    await gateway?.close();
    for (const n of nodes) await n.kill();
  });

  it("answers every turn of a conversation from one node", async () => {
    const client = new OpenAI({ apiKey: key.secret, baseURL: `${gateway.url}/v1`, maxRetries: 0 });
    for (const topic of ["pears", "plums", "quinces", "medlars"]) {
      const messages: OpenAI.ChatCompletionMessageParam[] = [
        { role: "system", content: "You are terse." },
        { role: "user", content: `Tell me about ${topic}.` },
      ];
      const answeredBy = new Set<string>();
      for (let turn = 0; turn < 4; turn++) {
        const answer = await client.chat.completions.create({ model: "tiny", messages });
        const content = answer.choices[0]?.message.content ?? "";
        answeredBy.add(content);
        messages.push({ role: "assistant", content }, { role: "user", content: `And turn ${turn}?` });
      }
      expect(answeredBy.size, topic).toBe(1);
    }
  });
});
