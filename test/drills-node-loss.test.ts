// Fault drill: a node-agent dies (SIGKILL) under load. Two real node-agents each serve the tiny model,
// behind the real gateway process; the official openai client sends the load.
// Must hold: no admitted non-streaming request is lost (the gateway retries another replica before the
// first byte); a stream cut off on the dead node ends in an error the client sees, never a hang; new
// streams go to the live node; the gateway keeps running.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installCrds } from "./support/crds.ts";
import { ConfigFeed, createNamespace, makeKey, model } from "./support/gateway.ts";
import { type GatewayProcess, startGatewayProcess } from "./support/gateway-process.ts";
import { readyReplica } from "./support/model-replica.ts";
import { NODE_AGENT_TOKEN, startAgent, type TestAgent } from "./support/node-agent.ts";
import { eventually } from "./support/processes.ts";

const ns = "drill-node-loss";
const key = makeKey(ns, "k");
const agents: TestAgent[] = [];
let gateway: GatewayProcess;
let feed: ConfigFeed;

/** A replica on the agent's node, as the operator would place it; its endpoint once Ready. */
const replicaOn = async (agent: TestAgent, name: string) =>
  (await readyReplica(agent, ns, name, { engine: { contextSize: 1024, parallelSequences: 4 } })).status.endpoint;

/** Both replicas routed, as the operator would publish them. */
async function route(endpoints: { url: string; agent: TestAgent; replica: string }[]) {
  await feed.publish({
    models: [
      model(ns, "stories", {
        contextSize: 1024,
        sequenceContextSize: 256,
        embeddings: false,
        endpoints: endpoints.map((e) => ({
          url: e.url,
          replica: e.replica,
          node: e.agent.nodeName,
          weight: 1,
          slots: 4,
        })),
      }),
    ],
    keys: [key],
  });
}

/** Until the gateway process serves this config version (its metric says so). */
const servesVersion = (version: number) =>
  eventually(`gateway on config version ${version}`, async () => {
    const text = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
    const served = Number(text.match(/^pomona_gateway_config_version (\d+)/m)?.[1] ?? 0);
    return served >= version ? true : undefined;
  });

const client = () => new OpenAI({ apiKey: key.secret, baseURL: `${gateway.url}/v1`, maxRetries: 0, timeout: 60_000 });

beforeAll(async () => {
  await installCrds();
  await createNamespace(ns);
  feed = new ConfigFeed(ns);
  // The gateway is ready only with a config; the replicas come later.
  await feed.publish({ models: [], keys: [key] });
  // The breaker resets slowly here so a dead node stays shunned for the whole drill.
  gateway = await startGatewayProcess(ns, {
    POMONA_NODE_TOKEN: NODE_AGENT_TOKEN,
    POMONA_BREAKER_RESET_MS: "60000",
    POMONA_UPSTREAM_FIRST_BYTE_TIMEOUT_MS: "20000",
  });
}, 300_000);

afterAll(async () => {
  await gateway?.process.stop();
  for (const a of agents) await a.process.stop("SIGKILL");
});

describe("a node-agent killed under load", () => {
  it("loses no admitted non-streaming request", { timeout: 300_000 }, async () => {
    const [a, b] = [await startAgent("drill-node-a"), await startAgent("drill-node-b")];
    agents.push(a, b);
    await route([
      { url: await replicaOn(a, "stories-a"), agent: a, replica: "stories-a" },
      { url: await replicaOn(b, "stories-b"), agent: b, replica: "stories-b" },
    ]);
    await servesVersion(feed.version);

    const total = 120;
    let sent = 0;
    let answered = 0;
    const failures: unknown[] = [];
    const worker = async () => {
      while (sent < total) {
        sent++;
        try {
          const answer = await client().chat.completions.create({
            model: "stories",
            messages: [{ role: "user", content: "Once upon a time" }],
            max_tokens: 8,
          });
          if (answer.choices[0]?.message.content) answered++;
        } catch (err) {
          failures.push(err);
        }
        if (answered === 30 && b.process.child.exitCode === null) void b.process.stop("SIGKILL");
      }
    };
    await Promise.all(Array.from({ length: 6 }, worker));
    expect(b.process.child.signalCode).toBe("SIGKILL");
    expect(failures).toEqual([]);
    expect(answered).toBe(total);
    expect((await fetch(`${gateway.adminUrl}/healthz`)).status).toBe(200);
  });

  it("ends the streams cut off with an error the client sees, and serves new streams", {
    timeout: 300_000,
  }, async () => {
    const [a] = agents;
    const c = await startAgent("drill-node-c");
    agents.push(c);
    await route([{ url: await replicaOn(c, "stories-c"), agent: c, replica: "stories-c" }]);
    await servesVersion(feed.version);
    // Long streams, all on node c; it dies once every one of them has begun.
    let begun = 0;
    const streams = Array.from({ length: 4 }, async () => {
      let chunks = 0;
      try {
        const stream = await client().chat.completions.create({
          model: "stories",
          messages: [{ role: "user", content: "Tell me a long story" }],
          max_tokens: 250,
          stream: true,
        });
        for await (const _ of stream) if (chunks++ === 0) begun++;
        return { chunks, error: undefined };
      } catch (error) {
        return { chunks, error };
      }
    });
    await eventually("every stream to begin", async () => (begun === 4 ? true : undefined), 60_000);
    await c.process.stop("SIGKILL");
    const outcomes = await Promise.all(streams);
    // Each stream had begun; it either finished before the kill or ended with an error the client sees,
    // and none hangs (the test would time out).
    for (const o of outcomes) {
      expect(o.chunks).toBeGreaterThan(0);
      expect(o.error === undefined || o.error instanceof Error).toBe(true);
    }
    expect(outcomes.some((o) => o.error !== undefined)).toBe(true);

    // Node a is alive: with it routed again, new streams complete.
    const aEndpoint = `${a!.url}/replicas/${ns}/stories-a`;
    await route([{ url: aEndpoint, agent: a!, replica: "stories-a" }]);
    await servesVersion(feed.version);
    const text = await eventually("a new stream served by the live node", async () => {
      try {
        const stream = await client().chat.completions.create({
          model: "stories",
          messages: [{ role: "user", content: "Once" }],
          max_tokens: 8,
          stream: true,
        });
        let out = "";
        for await (const chunk of stream) out += chunk.choices[0]?.delta?.content ?? "";
        return out || undefined;
      } catch {
        return undefined;
      }
    });
    expect(text.length).toBeGreaterThan(0);
    expect(gateway.process.child.exitCode).toBeNull();
  });
});
